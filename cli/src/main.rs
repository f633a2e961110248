//! `followup`: the command line (see the library's documentation).

use clap::Parser;

/// `followup device due | head`: when the reader of stdout goes away, stop quietly with the
/// status a shell expects (141, SIGPIPE), like other command-line tools, instead of a panic
/// message from `println!`. Every other panic keeps the default report.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> std::process::ExitCode {
    quiet_on_closed_stdout();
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
