//! # followup-cli
//!
//! The `followup` command line — one binary that is the front door for a newcomer, the tool a
//! registry operator runs, and the way a developer exercises a device without a phone:
//!
//! | command | module | what it does |
//! |---|---|---|
//! | `followup demo` | [`demo`] | a registry server, two clinic tablets and a patient's phone living through months of follow-ups, a conflict, an adverse event and its adjudication, and a sync over a bad link; prints what happened (or one JSON summary) |
//! | `followup server` | [`server_cmd`] | runs the registry sync server; its subcommands are the registry staff's (create a clinic, issue an enrolment code, revoke a device, verify the audit log, publish definitions; [`fhir_cmd`]: questionnaire definitions to and from FHIR R4) |
//! | `followup device` | [`device_cmd`] | acts as a device on an encrypted store: init, enrol, patients, due visits, fill a questionnaire, report an adverse event, sync, conflicts |
//! | `followup bench` | [`bench`] | the sync and capture benchmark on the brief's generated workload |
//!
//! Every command returns a [`CliError`] on failure: one line that says what went wrong and what
//! to do; `main` prints it and exits non-zero. Progress goes to stderr, results to stdout.

#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod args;
pub mod bench;
pub mod demo;
pub mod device_app;
pub mod device_cmd;
pub mod device_users;
pub mod error;
pub mod fhir_cmd;
pub mod output;
pub mod server_cmd;

pub use args::{Cli, Command};
pub use error::CliError;

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Demo(a) => demo::run(&a),
        Command::Server(a) => server_cmd::run(a),
        Command::Device(a) => device_cmd::run(a),
        Command::Bench(a) => bench::run(&a),
    }
}

/// A multi-threaded tokio runtime for one command.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("could not start the async runtime: {e}")))
}
