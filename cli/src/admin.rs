//! The staff commands' view of the registry's admin API: the workspace's one client
//! ([`followup_staff_client::StaffClient`]), with its errors mapped to the CLI's one-line error
//! and what to do about it.

use followup_staff_client::StaffClientError;

use crate::error::CliError;

pub use followup_staff_client::StaffClient as AdminClient;

/// A client for `base` with the admin token, or a CLI error saying how to fix the arguments.
pub fn connect(base: &str, token: Option<&str>) -> Result<AdminClient, CliError> {
    Ok(AdminClient::new(base, token)?)
}

impl From<StaffClientError> for CliError {
    fn from(e: StaffClientError) -> Self {
        let err = CliError::new(e.to_string());
        match &e {
            StaffClientError::NoToken => err.hint(
                "set FOLLOWUP_ADMIN_TOKEN (or pass --admin-token) to the token the server was started with",
            ),
            StaffClientError::BadUrl(_) => err.hint("give it as http://host:port or https://host"),
            StaffClientError::Timeout(_) => err.hint("check the network and try again"),
            StaffClientError::Unreachable(_) => err.hint(
                "check that the server is running and the URL (--server / FOLLOWUP_SERVER_URL) is right",
            ),
            StaffClientError::Refused { status, .. } => match status {
                401 | 403 => err.hint("check the admin token (FOLLOWUP_ADMIN_TOKEN)"),
                404 => err.hint("check the id you gave"),
                _ => err,
            },
            StaffClientError::BadAnswer(_) => {
                err.hint("check that the server and this command are the same version")
            }
            StaffClientError::Setup(_) | StaffClientError::Transport { .. } => err,
        }
    }
}
