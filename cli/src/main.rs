//! `followup`: the command line (see the library's documentation).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = followup_cli::Cli::parse();
    match followup_cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            for line in &e.details {
                eprintln!("{line}");
            }
            eprintln!("followup: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
