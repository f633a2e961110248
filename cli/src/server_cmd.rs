//! `followup server`: run the registry sync server, or act as registry staff on a running one.

use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::protocol::EnrolmentGrant;
use followup_server::{Config, Server};

use crate::admin::AdminClient;
use crate::args::{ServerArgs, StaffCommand, StaffConn};
use crate::error::CliError;
use crate::output;

/// Run `followup server ...`.
pub fn run(args: ServerArgs) -> Result<(), CliError> {
    let rt = crate::runtime()?;
    match args.staff {
        None => rt.block_on(serve(args.listen, args.data, args.admin_token)),
        Some(cmd) => rt.block_on(staff(cmd)),
    }
}

async fn serve(
    listen: std::net::SocketAddr,
    data: std::path::PathBuf,
    admin_token: Option<String>,
) -> Result<(), CliError> {
    init_logging();
    let mut config = Config::for_tests(&data, admin_token.as_deref());
    config.listen = listen;
    let mut server = Server::start(config).await.map_err(|e| {
        let e = CliError::new(format!("the server could not start: {e}"));
        match e.message.contains("listen") {
            true => e.hint("choose another --listen address or stop what uses that port"),
            false => {
                e.hint("check --data (a writable directory) and --admin-token (16+ characters)")
            }
        }
    })?;
    eprintln!(
        "followup registry listening on {} (data in {}; admin API {})",
        server.url(),
        data.display(),
        if admin_token.is_some() {
            "on"
        } else {
            "off: set FOLLOWUP_ADMIN_TOKEN to enable it"
        }
    );
    let trigger = server.trigger_shutdown();
    tokio::spawn(async move {
        shutdown_signal().await;
        eprintln!("shutting down: finishing in-flight requests");
        if let Some(tx) = trigger {
            let _ = tx.send(());
        }
    });
    server
        .wait()
        .await
        .map_err(|e| CliError::new(format!("the server stopped with an error: {e}")))
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn client(conn: &StaffConn) -> Result<AdminClient, CliError> {
    crate::admin::connect(&conn.server, conn.admin_token.as_deref())
}

fn parse_record(what: &str, s: &str) -> Result<RecordId, CliError> {
    s.trim().parse().map_err(|_| {
        CliError::new(format!("{s:?} is not a {what} id"))
            .hint("ids are 32 hexadecimal characters, as printed when the record was created")
    })
}

async fn staff(cmd: StaffCommand) -> Result<(), CliError> {
    match cmd {
        StaffCommand::CreateClinic {
            conn,
            name,
            country,
        } => {
            let c = client(&conn)?;
            let id = c.create_clinic(&name, &country).await?;
            if conn.json {
                output::print_json(&serde_json::json!({ "clinic": id }))?;
            } else {
                println!("clinic {name:?} ({}) created: {id}", country.to_uppercase());
                println!("issue a tablet's code with: followup server issue-code --clinic {id}");
            }
        }
        StaffCommand::IssueCode {
            conn,
            clinic,
            patient,
            hours,
        } => {
            let grant = match (clinic, patient) {
                (Some(c), _) => EnrolmentGrant::ClinicDevice {
                    clinic: parse_record("clinic", &c)?,
                },
                (None, Some(p)) => EnrolmentGrant::PatientDevice {
                    patient: parse_record("patient", &p)?,
                },
                (None, None) => {
                    return Err(CliError::new("no --clinic or --patient given")
                        .hint("say whom the code enrols: --clinic ID or --patient ID"))
                }
            };
            let c = client(&conn)?;
            let r = c
                .issue_code(grant, hours.map(|h| h.saturating_mul(3600)))
                .await?;
            if conn.json {
                output::print_json(&r)?;
            } else {
                println!("enrolment code: {}", r.code);
                println!(
                    "  enrols a {} of clinic {}{}, once, until {}",
                    r.role.as_str().replace('_', " "),
                    r.clinic,
                    r.patient
                        .map(|p| format!(" for patient {p}"))
                        .unwrap_or_default(),
                    output::ms_to_utc(r.expires_at_ms)
                );
                println!(
                    "  on the device: followup device enrol --server {} --code {}",
                    c.base(),
                    r.code
                );
            }
        }
        StaffCommand::RevokeDevice { conn, device } => {
            let id: DeviceId = device.trim().parse().map_err(|_| {
                CliError::new(format!("{device:?} is not a device id"))
                    .hint("device ids are 32 hexadecimal characters")
            })?;
            let c = client(&conn)?;
            let r = c.revoke(id).await?;
            if conn.json {
                output::print_json(&r)?;
            } else if r.newly_revoked {
                println!("device {id} revoked: its syncs are refused from now on");
            } else {
                println!(
                    "device {id} was already revoked (since {})",
                    output::ms_to_utc(r.revoked_at_ms)
                );
            }
        }
        StaffCommand::VerifyAudit { conn } => {
            let c = client(&conn)?;
            let r = c.verify_audit().await?;
            if conn.json {
                output::print_json(&r)?;
            }
            if !r.ok {
                return Err(CliError::new(format!(
                    "the audit log is BROKEN at entry {}: {}",
                    r.first_bad_seq.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
                    r.problem.unwrap_or_default()
                ))
                .hint("the database was modified outside the server; restore it from a backup and investigate"));
            }
            if !conn.json {
                println!(
                    "audit log intact: {} entries, head {}",
                    r.entries, r.head_hash
                );
            }
        }
        StaffCommand::Stats { conn } => {
            let c = client(&conn)?;
            let s = c.stats().await?;
            if conn.json {
                output::print_json(&s)?;
            } else {
                output::print_table(
                    &[
                        "documents",
                        "clinics",
                        "devices",
                        "revoked",
                        "log seq",
                        "audit",
                        "rejections",
                    ],
                    &[vec![
                        s.documents.to_string(),
                        s.clinics.to_string(),
                        s.devices.to_string(),
                        s.revoked_devices.to_string(),
                        s.log_seq.to_string(),
                        s.audit_entries.to_string(),
                        s.rejections.to_string(),
                    ]],
                );
            }
        }
    }
    Ok(())
}
