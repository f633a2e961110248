//! `followup demo`.
use crate::args::DemoArgs;
use crate::error::CliError;

/// Run the demo.
pub fn run(_args: &DemoArgs) -> Result<(), CliError> {
    Err(CliError::new("not yet"))
}
