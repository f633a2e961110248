//! The staff commands' view of the registry's admin API: the workspace's one client
//! ([`followup_staff_client::StaffClient`]), with its errors mapped to the CLI's one-line error
//! and what to do about it.

use followup_staff_client::StaffClientError;

use crate::error::CliError;

pub use followup_staff_client::StaffClient as AdminClient;

/// A client for `base` with the admin token, or a CLI error saying how to fix the arguments.
pub fn connect(
    base: &str,
    token: Option<&str>,
    ca_cert: Option<&std::path::Path>,
) -> Result<AdminClient, CliError> {
    let roots = match ca_cert {
        None => Vec::new(),
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            use rustls::pki_types::CertificateDer;
            let certs: Result<Vec<Vec<u8>>, _> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.map(|c| c.map(|c| c.to_vec())).collect());
            match certs {
                Ok(c) if !c.is_empty() => c,
                Ok(_) | Err(_) => {
                    return Err(CliError::new(format!(
                        "cannot read a PEM certificate from {}",
                        path.display()
                    ))
                    .hint("give --ca-cert the registry's CA certificate in PEM form"))
                }
            }
        }
    };
    Ok(AdminClient::with_roots(base, token, &roots)?)
}

impl From<StaffClientError> for CliError {
    fn from(e: StaffClientError) -> Self {
        let err = CliError::new(e.to_string());
        match &e {
            StaffClientError::NoToken => err.hint(
                "set FOLLOWUP_ADMIN_TOKEN (or pass --admin-token) to the token the server was started with",
            ),
            StaffClientError::BadUrl(_) => err.hint("give it as http://host:port or https://host"),
            StaffClientError::InsecureUrl(_) => err.hint(
                "use the registry's https:// address (plain http is only for this machine: 127.0.0.1 or localhost)",
            ),
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
