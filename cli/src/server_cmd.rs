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
        None => {
            // Build the configuration exactly as `followup-server` parses it (same defaults, same
            // environment variables, same checks).
            use clap::Parser as _;
            let mut argv: Vec<std::ffi::OsString> = vec!["followup-server".into()];
            let mut opt = |name: &str, v: Option<std::ffi::OsString>| {
                if let Some(v) = v {
                    argv.push(format!("--{name}").into());
                    argv.push(v);
                }
            };
            opt("listen", args.listen.map(Into::into));
            opt("data-dir", args.data_dir.map(Into::into));
            opt("database", args.database.map(Into::into));
            opt("admin-token", args.admin_token.map(Into::into));
            opt("tls-cert", args.tls_cert.map(Into::into));
            opt("tls-key", args.tls_key.map(Into::into));
            opt("anchor-key", args.anchor_key.map(Into::into));
            let config = Config::try_parse_from(argv).map_err(|e| {
                CliError::new(format!("the server could not start: {}", e.kind()))
                    .hint("see `followup server --help` and `followup-server --help`")
            })?;
            rt.block_on(serve(config))
        }
        Some(cmd) => rt.block_on(staff(cmd)),
    }
}

async fn serve(config: Config) -> Result<(), CliError> {
    init_logging();
    config.validate().map_err(|e| {
        CliError::new(format!("the server could not start: {e}"))
            .hint("see `followup server --help` for each option and its environment variable")
    })?;
    let storage = match &config.database {
        Some(_) => "PostgreSQL (--database)".to_string(),
        None => format!("SQLite in {}", config.data_dir.display()),
    };
    let admin_on = config.admin_token.is_some();
    let mut server = Server::start(config).await.map_err(|e| {
        let e = CliError::new(format!("the server could not start: {e}"));
        if e.message.contains("listen") {
            e.hint("choose another --listen address or stop what uses that port")
        } else if e.message.contains("already using") {
            e.hint("stop the other server, or give this one its own --data-dir")
        } else {
            e.hint("check --data-dir (a writable directory), --database, --tls-cert/--tls-key and --admin-token (16+ characters)")
        }
    })?;
    eprintln!(
        "followup registry listening on {} (storage: {storage}; admin API {})",
        server.url(),
        if admin_on {
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
    crate::admin::connect(
        &conn.server,
        conn.admin_token.as_deref(),
        conn.ca_cert.as_deref(),
    )
}

fn parse_record(what: &str, s: &str) -> Result<RecordId, CliError> {
    s.trim().parse().map_err(|_| {
        CliError::new(format!("{s:?} is not a {what} id"))
            .hint("ids are 32 hexadecimal characters, as printed when the record was created")
    })
}

/// `followup server add-staff`: create a staff account directly in the database.
#[allow(clippy::too_many_arguments)]
fn add_staff(
    data: &std::path::Path,
    database: Option<&str>,
    email: &str,
    role: &str,
    clinic: Option<&str>,
    link: Option<&str>,
    totp: bool,
) -> Result<(), CliError> {
    use followup_server::staff::{self, FirstSignIn, Role};
    use followup_server::storage::{PostgresStorage, SqliteStorage, Storage};
    let role = Role::from_code(role).ok_or_else(|| {
        CliError::new(format!("unknown role {role:?}")).hint("use admin, monitor or coordinator")
    })?;
    let clinic = clinic.map(|c| parse_record("clinic", c)).transpose()?;
    let storage: Box<dyn Storage> = match database {
        Some(url) => Box::new(
            PostgresStorage::connect(url)
                .map_err(|e| CliError::new(format!("cannot open the database: {e}")))?,
        ),
        None => Box::new(SqliteStorage::open(data).map_err(|e| {
            CliError::new(format!(
                "cannot open the registry in {}: {e}",
                data.display()
            ))
            .hint("--data is the server's data directory")
        })?),
    };
    let first = if link.is_some() {
        FirstSignIn::Link
    } else {
        FirstSignIn::Password
    };
    let created = staff::create_staff(
        storage.as_ref(),
        email,
        role,
        clinic,
        first,
        totp,
        staff::BOOTSTRAP_ACTOR,
        followup_server::auth::now_ms(),
    )
    .map_err(|e| CliError::new(format!("could not add the staff member: {e}")))?;
    println!(
        "staff member {} created ({}{})",
        created.staff.email,
        created.staff.role.label(),
        clinic
            .map(|c| format!(" of clinic {c}"))
            .unwrap_or_default()
    );
    if let Some(p) = &created.password {
        println!("password (shown once; sign in at /console/login): {p}");
    }
    if let (Some(base), Some(t)) = (link, &created.set_password_token) {
        println!(
            "set-password link (valid 24 hours, shown once): {}/console/set-password?token={t}",
            base.trim_end_matches('/')
        );
    }
    if let (Some(secret), Some(url)) = (&created.totp_secret, &created.totp_url) {
        println!("authenticator secret (shown once): {secret}");
        println!("authenticator URL: {url}");
    }
    Ok(())
}

async fn staff(cmd: StaffCommand) -> Result<(), CliError> {
    match cmd {
        StaffCommand::AddStaff {
            data,
            database,
            email,
            role,
            clinic,
            link,
            totp,
        } => {
            tokio::task::spawn_blocking(move || {
                add_staff(
                    &data,
                    database.as_deref(),
                    &email,
                    &role,
                    clinic.as_deref(),
                    link.as_deref(),
                    totp,
                )
            })
            .await
            .map_err(|e| CliError::new(format!("add-staff failed: {e}")))??;
        }
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
        StaffCommand::CreateUser { conn, clinic, name } => {
            let clinic = parse_record("clinic", &clinic)?;
            let r = client(&conn)?.create_clinic_user(clinic, &name).await?;
            if conn.json {
                output::print_json(&r)?;
            } else {
                println!("user {} created: {}", name.trim(), r.user);
                println!(
                    "activation code: {} (valid until {}; give it to the user, it is shown once)",
                    r.activation_code,
                    output::ms_to_utc(r.expires_at_ms)
                );
                println!(
                    "next: on a tablet of the clinic, followup device user add --id {} --code {}",
                    r.user, r.activation_code
                );
            }
        }
        StaffCommand::Users { conn, clinic } => {
            let clinic = parse_record("clinic", &clinic)?;
            let rows = client(&conn)?.clinic_users(clinic).await?;
            if conn.json {
                output::print_json(&rows)?;
                return Ok(());
            }
            if rows.is_empty() {
                println!("clinic {clinic} has no users");
            }
            for r in rows {
                let state = match r.removed_at_ms {
                    Some(at) => format!("removed {}", output::ms_to_utc(at)),
                    None => "active".into(),
                };
                println!(
                    "{}  {}  {}  on {} device(s)",
                    r.id,
                    r.name,
                    state,
                    r.devices.len()
                );
            }
        }
        StaffCommand::RemoveUser { conn, user } => {
            let id: followup_domain::ids::UserId = user.trim().parse().map_err(|_| {
                CliError::new(format!("{user:?} is not a user id"))
                    .hint("user ids are 32 hexadecimal characters (see `followup server users`)")
            })?;
            let r = client(&conn)?.remove_clinic_user(id).await?;
            if conn.json {
                output::print_json(&r)?;
            } else {
                println!(
                    "user {} ({}) removed: their changes are refused, and each of their {} \
                     tablet(s) drops them at its next sync",
                    r.name,
                    r.id,
                    r.devices.len()
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
        StaffCommand::Publish { conn, file, draft } => {
            let json = std::fs::read_to_string(&file)
                .map_err(|e| CliError::new(format!("cannot read {}: {e}", file.display())))?;
            // Check locally first, for the same message without a round trip.
            followup_domain::definitions::Definition::parse_strict(&json).map_err(|e| {
                CliError::new(format!("{} is not a valid definition: {e}", file.display()))
                    .hint("see docs/definitions.md for the format; nothing was published")
            })?;
            let c = client(&conn)?;
            let r = c.publish_definition(&json, draft).await?;
            if conn.json {
                output::print_json(&r)?;
            } else {
                use followup_domain::definitions::PublishOutcome as O;
                let what = format!("{} {} version {}", r.definition, r.id, r.version);
                match r.outcome {
                    O::Published => {
                        println!("published {what}: devices receive it at their next sync")
                    }
                    O::Drafted => println!("uploaded {what} as a draft (no device receives it)"),
                    O::Unchanged => {
                        println!("{what} was already there ({}); nothing changed", r.state)
                    }
                    O::Retired => println!("{what} is retired"),
                }
            }
        }
        StaffCommand::Definitions { conn } => {
            let c = client(&conn)?;
            let list = c.definitions().await?;
            if conn.json {
                output::print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|d| {
                        vec![
                            d.definition.clone(),
                            d.id.clone(),
                            d.version.clone(),
                            d.state.clone(),
                            d.languages.join(","),
                        ]
                    })
                    .collect();
                output::print_table(&["type", "id", "version", "state", "languages"], &rows);
            }
        }
        StaffCommand::Retire {
            conn,
            id,
            version,
            definition,
        } => {
            let c = client(&conn)?;
            let r = c.retire_definition(&definition, &id, &version).await?;
            if conn.json {
                output::print_json(&r)?;
            } else {
                println!(
                    "{} {} version {} retired: devices no longer offer it for new responses",
                    r.definition, r.id, r.version
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
        StaffCommand::RebuildReadModel {
            data,
            database,
            json,
        } => {
            let r = tokio::task::spawn_blocking(move || {
                followup_server::readmodel::rebuild_database(&data, database.as_deref())
            })
            .await
            .map_err(|e| CliError::new(format!("the rebuild stopped: {e}")))?
            .map_err(|e| {
                CliError::new(format!("could not rebuild the read model: {e}")).hint(
                    "check --data (the server's data directory) or --database (its PostgreSQL URL)",
                )
            })?;
            if json {
                output::print_json(&r)?;
            } else {
                println!(
                    "read model rebuilt: {} documents ({} unreadable), {} rows, {}",
                    r.documents,
                    r.problems,
                    r.rows,
                    output::duration(std::time::Duration::from_millis(r.millis))
                );
            }
        }
        StaffCommand::Export {
            conn,
            format,
            clinic,
            since,
            out,
            identified,
        } => export(conn, format, clinic, since, out, identified).await?,
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
        StaffCommand::Duplicates { conn, clinic } => {
            let clinic = clinic.map(|c| parse_record("clinic", &c)).transpose()?;
            let c = client(&conn)?;
            let dups = c.duplicate_study_codes(clinic).await?;
            if conn.json {
                output::print_json(&dups)?;
            } else if dups.is_empty() {
                println!("no study code is enrolled twice in a clinic");
            } else {
                let rows: Vec<Vec<String>> = dups
                    .iter()
                    .flat_map(|d| {
                        d.enrolments.iter().map(move |e| {
                            vec![
                                d.clinic.to_hex()[..8].to_string(),
                                d.study_code.clone(),
                                e.patient.to_hex(),
                                e.enrolled_on.clone().unwrap_or_default(),
                                e.device
                                    .map(|x| x.to_hex()[..8].to_string())
                                    .unwrap_or_default(),
                            ]
                        })
                    })
                    .collect();
                output::print_table(
                    &[
                        "clinic",
                        "study code",
                        "patient",
                        "enrolled on",
                        "by device",
                    ],
                    &rows,
                );
                println!(
                    "next: the clinic keeps one patient per code (each tablet lists these under `followup device conflicts`)"
                );
            }
        }
        StaffCommand::Cases {
            conn,
            clinic,
            state,
        } => {
            let clinic = clinic.map(|c| parse_record("clinic", &c)).transpose()?;
            let c = client(&conn)?;
            let cases = c.cases(clinic, state.as_deref()).await?;
            if conn.json {
                output::print_json(&cases)?;
            } else if cases.is_empty() {
                println!("no adjudication case");
            } else {
                let rows: Vec<Vec<String>> = cases
                    .iter()
                    .map(|k| {
                        vec![
                            k.state.clone(),
                            k.deadline.clone(),
                            format!("{} ({})", k.rule, k.policy),
                            k.clinic.to_hex()[..8].to_string(),
                            k.adverse_event.to_hex(),
                            k.escalations.last().cloned().unwrap_or_default(),
                            k.disputes.last().cloned().unwrap_or_default(),
                        ]
                    })
                    .collect();
                output::print_table(
                    &[
                        "state",
                        "deadline",
                        "rule",
                        "clinic",
                        "adverse event",
                        "last escalation",
                        "patient's dispute",
                    ],
                    &rows,
                );
            }
        }
        StaffCommand::Escalate { conn, id, note } => {
            let id = parse_record("case or adverse event", &id)?;
            let c = client(&conn)?;
            let k = c.escalate(id, &note).await?;
            if conn.json {
                output::print_json(&k)?;
            } else {
                println!(
                    "case of adverse event {} escalated ({}, deadline {}): the clinic reads the note after its next sync",
                    k.adverse_event, k.state, k.deadline
                );
            }
        }
        StaffCommand::CloseCase { conn, id, note } => {
            let id = parse_record("case or adverse event", &id)?;
            let c = client(&conn)?;
            let k = c.close_case(id, &note).await?;
            if conn.json {
                output::print_json(&k)?;
            } else {
                println!("case of adverse event {} closed", k.adverse_event);
            }
        }
    }
    Ok(())
}

/// `followup server export`: download the zip from the admin API into a temporary file beside
/// `--out`, then unpack it there (refusing a cut-off download), and say what was written.
async fn export(
    conn: StaffConn,
    format: String,
    clinic: Option<String>,
    since: Option<String>,
    out: std::path::PathBuf,
    identified: bool,
) -> Result<(), CliError> {
    let clinic = clinic
        .map(|c| {
            c.parse::<RecordId>().map_err(|e| {
                CliError::new(e.to_string()).hint("give the clinic id printed by create-clinic")
            })
        })
        .transpose()?;
    if let Some(s) = &since {
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
            CliError::new(format!("--since {s:?} is not a date")).hint("write it as YYYY-MM-DD")
        })?;
    }
    if out.exists()
        && std::fs::read_dir(&out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(CliError::new(format!("{} is not empty", out.display()))
            .hint("choose a new or empty directory for --out"));
    }
    let c = client(&conn)?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".followup-export-")
        .suffix(".zip")
        .tempfile_in(&parent)?;
    let params = followup_staff_client::ExportParams {
        format,
        clinic,
        since,
        identified,
    };
    let bytes = c.export(&params, tmp.as_file_mut()).await?;
    let files = followup_server::export::sink::unpack_zip(tmp.path(), &out)
        .map_err(|e| CliError::new(e.to_string()))?;
    if conn.json {
        output::print_json(&serde_json::json!({
            "out": out.display().to_string(),
            "zip_bytes": bytes,
            "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            "identified": identified,
        }))?;
    } else {
        println!(
            "{} export written to {} ({} files, {} KB zipped){}; see README.txt there",
            if identified {
                "IDENTIFIED"
            } else {
                "de-identified"
            },
            out.display(),
            files.len(),
            bytes / 1024,
            if identified {
                ": it holds exact dates and free text, handle it as identifiable health information"
            } else {
                ""
            }
        );
    }
    Ok(())
}
