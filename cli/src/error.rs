//! The command line's error: one clear line saying what went wrong and what to do.

use std::fmt;

use followup_device::store::StoreError;
use followup_domain::questionnaire::Problem;

/// A failed command. `main` prints [`CliError`]'s one line (after any `details`, one per line)
/// and exits with a non-zero status.
#[derive(Debug, Clone, PartialEq)]
pub struct CliError {
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// Lines printed before the error line (e.g. one per validation problem).
    pub details: Vec<String>,
}

impl CliError {
    /// An error with no hint.
    pub fn new(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            hint: None,
            details: Vec::new(),
        }
    }

    /// Add what the user should do.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Prefix the message with what was being done.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// Validation problems, one line each, then one summary line.
    pub fn validation(problems: &[Problem], what_to_do: &str) -> Self {
        CliError {
            message: format!(
                "the answers break {} rule{} of the questionnaire",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            ),
            hint: Some(what_to_do.to_string()),
            details: problems
                .iter()
                .map(|p| format!("  - {}", p.message))
                .collect(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " — {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CliError {}

impl From<followup_device::Error> for CliError {
    fn from(e: followup_device::Error) -> Self {
        use followup_device::Error as E;
        match e {
            E::Store(StoreError::WrongKey) => CliError::new(
                "wrong passphrase: it does not open this store",
            )
            .hint("check FOLLOWUP_PASSPHRASE (or what you typed) and try again"),
            E::Store(s) => CliError::new(s.to_string()),
            E::NotEnrolled => CliError::new("this device is not enrolled with a registry")
                .hint("run `followup device enrol --server URL --code CODE` with a code from the registry staff"),
            E::Validation(problems) => {
                CliError::validation(&problems, "fix the answers and try again")
            }
            E::AlreadyRecorded { record, visit } => CliError::new(format!(
                "visit {visit} is already recorded by response {record}"
            ))
            .hint(format!("see it with `followup device show {record}`")),
            E::NotFound(what) => CliError::new(format!("not found: {what}"))
                .hint("check the id (see `followup device patients`), or sync to fetch it"),
            other => CliError::new(other.to_string()),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::new(e.to_string())
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        followup_device::Error::Store(e).into()
    }
}
