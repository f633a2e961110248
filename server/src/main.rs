//! `followup-server`: run the registry sync server.

use clap::Parser;
use followup_server::{Config, Server};
use tracing_subscriber::EnvFilter;

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(%e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(%e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if config.log_format == "json" {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    if let Some(followup_server::config::Command::RebuildReadModel) = config.command {
        let (dir, db) = (config.data_dir.clone(), config.database.clone());
        let r = tokio::task::spawn_blocking(move || {
            followup_server::readmodel::rebuild_database(&dir, db.as_deref())
        })
        .await;
        return match r {
            Ok(Ok(r)) => {
                println!(
                    "read model rebuilt: {} documents ({} unreadable), {} rows, {} ms",
                    r.documents, r.problems, r.rows, r.millis
                );
                std::process::ExitCode::SUCCESS
            }
            Ok(Err(e)) => {
                eprintln!("followup-server: could not rebuild the read model: {e}");
                std::process::ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("followup-server: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let mut server = match Server::start(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%e, "could not start");
            eprintln!("followup-server: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let trigger = server.trigger_shutdown();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        if let Some(tx) = trigger {
            let _ = tx.send(());
        }
    });
    match server.wait().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(%e, "server stopped with an error");
            std::process::ExitCode::FAILURE
        }
    }
}
