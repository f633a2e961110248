//! `followup bench`.
use crate::args::BenchArgs;
use crate::error::CliError;

/// Run the benchmark.
pub fn run(_args: &BenchArgs) -> Result<(), CliError> {
    Err(CliError::new("not yet"))
}
