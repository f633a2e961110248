//! `followup device`: act as a device on an encrypted store.
//!
//! The store's passphrase comes from the environment variable [`PASSPHRASE_ENV`] or, when it is
//! not set, from a prompt on the terminal — never from a flag, which other users could read in
//! the process list.

use std::path::Path;

use chrono::{NaiveDate, Utc};
use followup_device::crypto::KeySource;
use followup_device::device::{Device, Enrolled};
use followup_device::store::Query;
use followup_device::sync::{
    CancelToken, SyncClient, SyncOptions, SyncPhase, SyncProgress, SyncReport,
};
use followup_domain::ids::RecordId;
use followup_domain::model::{
    AdverseEvent, AeOutcome, Answers, Consent, Enrolment, Procedure, RecordKind, Reporter, Sex,
};
use followup_domain::protocol::DeviceRole;
use followup_domain::schedule::VisitState;

use crate::args::{DeviceArgs, DeviceCommand};
use crate::error::CliError;
use crate::output;

/// The environment variable holding the store passphrase.
pub const PASSPHRASE_ENV: &str = "FOLLOWUP_PASSPHRASE";
/// **Test only**: PBKDF2 iterations for stores created by `device init` (default 600,000). Test
/// suites set it low so they are not slow; never set it for real stores.
pub const TEST_ITERATIONS_ENV: &str = "FOLLOWUP_TEST_PBKDF2_ITERATIONS";

/// The passphrase: from the environment, or asked for (twice when `confirm`).
pub fn passphrase(confirm: bool) -> Result<String, CliError> {
    if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
        if p.is_empty() {
            return Err(CliError::new(format!("{PASSPHRASE_ENV} is set but empty"))
                .hint("set it to the store's passphrase, or unset it to be asked"));
        }
        return Ok(p);
    }
    let no_terminal = || {
        CliError::new(
            "no passphrase: FOLLOWUP_PASSPHRASE is not set and there is no terminal to ask on",
        )
        .hint("set FOLLOWUP_PASSPHRASE, or run the command in a terminal")
    };
    let p = rpassword::prompt_password("Store passphrase: ").map_err(|_| no_terminal())?;
    if confirm {
        if p.chars().count() < 8 {
            return Err(CliError::new("the passphrase is too short")
                .hint("use at least 8 characters (a few words are best)"));
        }
        let again =
            rpassword::prompt_password("Repeat the passphrase: ").map_err(|_| no_terminal())?;
        if again != p {
            return Err(CliError::new("the two passphrases differ").hint("run the command again"));
        }
    }
    Ok(p)
}

/// The key source for a new store (honours [`TEST_ITERATIONS_ENV`]).
pub fn new_store_key(passphrase: String) -> KeySource {
    match std::env::var(TEST_ITERATIONS_ENV)
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
    {
        Some(n) => KeySource::passphrase_with_iterations(passphrase, n),
        None => KeySource::passphrase(passphrase),
    }
}

/// Open an existing store with the passphrase.
pub fn open(path: &Path) -> Result<Device, CliError> {
    if !path.exists() {
        return Err(
            CliError::new(format!("no store at {}", path.display())).hint(
                "create one with `followup device init`, or point --store / FOLLOWUP_STORE at it",
            ),
        );
    }
    let device = crate::device_users::open_locked(path)?;
    crate::device_users::sign_in_if_needed(&device)?;
    Ok(device)
}

fn parse_date(s: &str, what: &str) -> Result<NaiveDate, CliError> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| {
        CliError::new(format!("{what} {s:?} is not a date")).hint("write dates as YYYY-MM-DD")
    })
}

/// A patient given by study code or record id.
pub fn resolve_patient(device: &Device, given: Option<&str>) -> Result<RecordId, CliError> {
    let Some(given) = given.map(str::trim) else {
        return match device.enrolment() {
            Some(Enrolled {
                patient: Some(p), ..
            }) => Ok(p),
            _ => Err(CliError::new("no patient given").hint("pass --patient STUDY_CODE")),
        };
    };
    if let Ok(id) = given.parse::<RecordId>() {
        return Ok(id);
    }
    let patients = device.list_patients()?;
    patients
        .iter()
        .find(|p| p.study_code.eq_ignore_ascii_case(given))
        .map(|p| p.id)
        .ok_or_else(|| {
            CliError::new(format!("no patient {given:?} on this device"))
                .hint("see `followup device patients`, or sync to fetch the clinic's patients")
        })
}

/// The procedure a response follows up: the one given, or the patient's latest.
pub fn resolve_procedure(
    device: &Device,
    patient: RecordId,
    given: Option<&str>,
) -> Result<Option<RecordId>, CliError> {
    if let Some(p) = given {
        return p.trim().parse().map(Some).map_err(|_| {
            CliError::new(format!("{p:?} is not a procedure id"))
                .hint("ids are 32 hexadecimal characters (see `followup device due`)")
        });
    }
    let procs = device.store().list(&Query {
        kind: Some(RecordKind::Procedure),
        patient: Some(patient),
        ..Default::default()
    })?;
    Ok(procs.iter().max_by_key(|m| m.date).map(|m| m.id))
}

/// Read a JSON answers file: an object of item id to value.
pub fn read_answers(path: &Path) -> Result<Answers, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::new(format!(
            "cannot read the answers file {}: {e}",
            path.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        CliError::new(format!(
            "the answers file {} is not a JSON object of answers: {e}",
            path.display()
        ))
        .hint(r#"write it as {"item_id": value, ...}, e.g. {"visit_date": "2026-02-05", "symptom_pain": 3}"#)
    })
}

/// Run `followup device ...`.
pub fn run(args: DeviceArgs) -> Result<(), CliError> {
    let path = args.store.as_path();
    crate::device_app::set_store(path);
    crate::device_users::set_sign_in_user(args.user.clone());
    match args.command {
        DeviceCommand::Init => init(path),
        DeviceCommand::User { command } => crate::device_users::run(path, command),
        DeviceCommand::Enrol {
            server,
            code,
            label,
            attempts,
        } => {
            let device = open(path)?;
            crate::runtime()?.block_on(enrol(&device, &server, &code, &label, attempts))
        }
        DeviceCommand::Status => status(&open(path)?),
        DeviceCommand::AddPatient {
            study_code,
            birth_year,
            sex,
            consent_date,
            consent_version,
        } => {
            let device = open(path)?;
            let sex = Sex::from_code(&sex.to_lowercase()).ok_or_else(|| {
                CliError::new(format!("unknown sex {sex:?}"))
                    .hint("use female, male, intersex or unknown")
            })?;
            let today = Utc::now().date_naive().format("%Y-%m-%d").to_string();
            let date = match consent_date {
                Some(d) => parse_date(&d, "consent date")?
                    .format("%Y-%m-%d")
                    .to_string(),
                None => today.clone(),
            };
            let id = device.enrol_patient(&Enrolment {
                study_code: study_code.clone(),
                consent: Consent {
                    form_version: consent_version,
                    date: date.clone(),
                    scope: vec!["registry".into()],
                },
                birth_year,
                sex,
                enrolled_on: date,
            })?;
            println!("patient {study_code} enrolled: {id}");
            Ok(())
        }
        DeviceCommand::AddProcedure {
            patient,
            file,
            format,
        } => {
            if format {
                println!("{}", crate::device_app::procedure_format());
                return Ok(());
            }
            let (Some(patient), Some(file)) = (patient, file) else {
                return Err(CliError::new("add-procedure needs --patient and --file")
                    .hint("see the file format with `followup device add-procedure --format`"));
            };
            let device = open(path)?;
            let patient = resolve_patient(&device, Some(&patient))?;
            let text = std::fs::read_to_string(&file)
                .map_err(|e| CliError::new(format!("cannot read {}: {e}", file.display())))?;
            let procedure: Procedure = serde_json::from_str(&text).map_err(|e| {
                CliError::new(format!("{} is not a procedure: {e}", file.display()))
                    .hint("see every field and code with `followup device add-procedure --format`")
            })?;
            let id = device.record_procedure(patient, &procedure)?;
            println!("procedure of {} recorded: {id}", procedure.date);
            crate::device_app::next(&format!("show {id}"));
            Ok(())
        }
        DeviceCommand::Patients { json } => patients(&open(path)?, json),
        DeviceCommand::Questionnaires { all, json } => {
            let device = open(path)?;
            let list: Vec<_> = device
                .definitions()?
                .into_iter()
                .filter(|d| all || d.definition == "questionnaire")
                .collect();
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|d| {
                    let mut row = vec![
                        d.id.clone(),
                        d.version.clone(),
                        d.state.code().to_string(),
                        d.languages.join(","),
                        match &d.usability {
                            followup_domain::definitions::Usability::Usable => "ok".into(),
                            followup_domain::definitions::Usability::NeedsUpdate(_) => {
                                "needs an app update".into()
                            }
                        },
                    ];
                    if all {
                        row.insert(0, d.definition.clone());
                    }
                    row
                })
                .collect();
            if json {
                let v: Vec<serde_json::Value> = list
                    .iter()
                    .map(|d| {
                        serde_json::json!({
                            "definition": d.definition,
                            "id": d.id,
                            "version": d.version,
                            "state": d.state.code(),
                            "languages": d.languages,
                            "usable": d.usability.is_usable(),
                            "needs_update": match &d.usability {
                                followup_domain::definitions::Usability::NeedsUpdate(why) => Some(why.clone()),
                                _ => None,
                            },
                        })
                    })
                    .collect();
                output::print_json(&v)?;
            } else if rows.is_empty() {
                println!(
                    "no questionnaire on this device yet: sync to receive the registry's forms"
                );
            } else {
                let mut header = vec!["id", "version", "state", "languages", "app"];
                if all {
                    header.insert(0, "type");
                }
                output::print_table(&header, &rows);
            }
            Ok(())
        }
        DeviceCommand::Due { as_of, all, json } => {
            let device = open(path)?;
            let as_of = match as_of {
                Some(d) => parse_date(&d, "--as-of")?,
                None => Utc::now().date_naive(),
            };
            due(&device, as_of, all, json)
        }
        DeviceCommand::Fill {
            patient,
            questionnaire,
            answers,
            procedure,
            visit,
            draft,
            lang,
            resume,
            format,
        } => {
            if format {
                let Some(questionnaire) = questionnaire else {
                    return Err(CliError::new("--format needs --questionnaire").hint(
                        "e.g. followup device fill --questionnaire clinician-followup --format",
                    ));
                };
                println!(
                    "{}",
                    crate::device_app::answers_format(&questionnaire_named(&questionnaire)?)
                );
                return Ok(());
            }
            let Some(answers) = answers else {
                return Err(CliError::new("fill needs --answers FILE").hint(
                    "see the format with `followup device fill --questionnaire ID --format`",
                ));
            };
            let device = open(path)?;
            let answers = read_answers(&answers)?;
            if let Some(draft_id) = resume {
                let id = crate::device_app::parse_record(&draft_id)?;
                return resume_draft(&device, id, &answers, !draft, &lang);
            }
            let Some(questionnaire) = questionnaire else {
                return Err(CliError::new(
                    "fill needs --questionnaire (or --resume DRAFT)",
                ));
            };
            let patient = resolve_patient(&device, patient.as_deref())?;
            let procedure = match (&visit, procedure.as_deref()) {
                (None, None) => None,
                (_, given) => resolve_procedure(&device, patient, given)?,
            };
            let id = fill_in(
                &device,
                patient,
                &questionnaire,
                procedure,
                visit.as_deref(),
                &answers,
                !draft,
                &lang,
            )?;
            println!(
                "{} {} saved: {id}",
                questionnaire,
                if draft { "draft" } else { "response" }
            );
            crate::device_app::next(&format!("show {id}"));
            Ok(())
        }
        DeviceCommand::ReportAe {
            patient,
            category,
            onset,
            severity,
            description,
            seriousness,
            outcome,
        } => {
            let device = open(path)?;
            let patient = resolve_patient(&device, patient.as_deref())?;
            let onset = parse_date(&onset, "onset")?.format("%Y-%m-%d").to_string();
            let outcome = AeOutcome::from_code(&outcome).ok_or_else(|| {
                CliError::new(format!("unknown outcome {outcome:?}")).hint(
                    "use recovered, recovering, not_recovered, recovered_with_sequelae, fatal or unknown",
                )
            })?;
            let procedure = resolve_procedure(&device, patient, None)?;
            let id = device.report_adverse_event(
                patient,
                &AdverseEvent {
                    reporter: Reporter::Clinic,
                    category,
                    onset,
                    severity,
                    seriousness,
                    outcome,
                    description,
                    procedure: procedure.map(|p| p.to_hex()),
                    answers: Answers::new(),
                },
            )?;
            println!("adverse event reported: {id} (sync to send it to the registry)");
            Ok(())
        }
        DeviceCommand::Queue { json } => queue(&open(path)?, json),
        DeviceCommand::Events { patient, json } => {
            let device = open(path)?;
            let patient = match patient {
                Some(p) => Some(resolve_patient(&device, Some(&p))?),
                None => None,
            };
            events(&device, patient, json)
        }
        DeviceCommand::Adjudicate {
            event,
            relatedness,
            action,
            remedy,
            status,
        } => {
            let device = open(path)?;
            let event = parse_record_id(&event, "adverse event")?;
            let relatedness = relatedness
                .map(|r| {
                    followup_domain::model::Relatedness::from_code(&r).ok_or_else(|| {
                        CliError::new(format!("unknown relatedness {r:?}"))
                            .hint("use not_related, unlikely, possible, probable or definite")
                    })
                })
                .transpose()?;
            let status = followup_domain::model::AdjudicationStatus::from_code(&status)
                .filter(|s| *s != followup_domain::model::AdjudicationStatus::Disputed)
                .ok_or_else(|| {
                    CliError::new(format!("unknown status {status:?}")).hint(
                        "use open, responded or resolved (the patient disputes, not the clinic)",
                    )
                })?;
            let id = device.adjudicate(event, |a| {
                if relatedness.is_some() {
                    a.relatedness = relatedness;
                }
                if let Some(x) = action {
                    a.action = x;
                }
                if let Some(x) = remedy {
                    a.remedy = x;
                }
                a.status = status;
            })?;
            println!("adjudication saved: {id} (sync to send it to the registry)");
            Ok(())
        }
        DeviceCommand::Reply {
            event,
            accept,
            dispute: _,
            comment,
        } => {
            let device = open(path)?;
            let event = parse_record_id(&event, "adverse event")?;
            let verdict = if accept {
                followup_domain::model::Verdict::Accepted
            } else {
                followup_domain::model::Verdict::Disputed
            };
            let id = device.reply_to_adjudication(event, verdict, &comment)?;
            println!("reply saved: {id} ({verdict}; sync to send it to the registry)");
            Ok(())
        }
        DeviceCommand::Sync { json, attempts } => {
            let device = open(path)?;
            crate::runtime()?.block_on(sync(&device, json, attempts))
        }
        DeviceCommand::Conflicts { record, json } => {
            conflicts(&open(path)?, record.as_deref(), json)
        }
        DeviceCommand::Show { record, json } => {
            crate::device_app::show(&open(path)?, &record, json)
        }
        DeviceCommand::Drafts { patient, json } => {
            let device = open(path)?;
            let patient = match patient.as_deref() {
                Some(p) => Some(resolve_patient(&device, Some(p))?),
                None => None,
            };
            crate::device_app::drafts(&device, patient, json)
        }
        DeviceCommand::Discard { record } => crate::device_app::discard(&open(path)?, &record),
        DeviceCommand::Resolve {
            record,
            item,
            value,
        } => crate::device_app::resolve(&open(path)?, &record, &item, &value),
    }
}

fn init(path: &Path) -> Result<(), CliError> {
    if path.exists() {
        return Err(CliError::new(format!("{} already exists", path.display()))
            .hint("choose another --store path, or use the existing store"));
    }
    let pass = passphrase(true)?;
    let spin = output::spinner("creating the encrypted store", false);
    let device = Device::create(path, new_store_key(pass));
    spin.finish_and_clear();
    let device = device
        .map_err(|e| CliError::from(e).context(format!("cannot create {}", path.display())))?;
    println!(
        "store created at {} (store {})",
        path.display(),
        device.store().store_id()
    );
    println!(
        "next: enrol it with the registry's URL and a code from its staff: {}",
        crate::device_app::device_cmd("enrol --server URL --code CODE")
    );
    Ok(())
}

fn status(device: &Device) -> Result<(), CliError> {
    println!("store      {}", device.store().store_id());
    match device.enrolment() {
        None => println!("enrolment  none (run `followup device enrol`)"),
        Some(e) => {
            println!("device     {}", e.device_id);
            println!("role       {}", e.role.as_str().replace('_', " "));
            println!("clinic     {}", e.clinic);
            if let Some(p) = e.patient {
                println!("patient    {p}");
            }
            println!("registry   {}", e.server_url);
        }
    }
    println!("records    {}", device.store().count(None)?);
    println!(
        "unsynced   {}",
        device.store().dirty_docs(usize::MAX)?.len()
    );
    Ok(())
}

fn patients(device: &Device, json: bool) -> Result<(), CliError> {
    let list = device.list_patients()?;
    if json {
        let v: Vec<_> = list
            .iter()
            .map(|p| {
                serde_json::json!({
                    "id": p.id, "study_code": p.study_code, "enrolled_on": p.enrolled_on,
                    "procedures": p.procedures, "responses": p.responses,
                    "open_adverse_events": p.open_adverse_events,
                })
            })
            .collect();
        return output::print_json(&v);
    }
    if list.is_empty() {
        println!("no patients on this device yet");
        return Ok(());
    }
    output::print_table(
        &[
            "study code",
            "enrolled",
            "procedures",
            "responses",
            "adverse events",
            "id",
        ],
        &list
            .iter()
            .map(|p| {
                vec![
                    p.study_code.clone(),
                    p.enrolled_on.map(|d| d.to_string()).unwrap_or_default(),
                    p.procedures.to_string(),
                    p.responses.to_string(),
                    p.open_adverse_events.to_string(),
                    p.id.to_hex(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    Ok(())
}

/// The study code of each patient the device holds.
pub fn study_codes(
    device: &Device,
) -> Result<std::collections::BTreeMap<RecordId, String>, CliError> {
    Ok(device
        .list_patients()?
        .into_iter()
        .map(|p| (p.id, p.study_code))
        .collect())
}

/// Visit rows for display: state, visit, patient, window, procedure.
pub fn due_rows(
    device: &Device,
    as_of: NaiveDate,
    all: bool,
) -> Result<Vec<Vec<String>>, CliError> {
    let states: &[VisitState] = &[VisitState::Overdue, VisitState::Due];
    let codes = study_codes(device)?;
    let visits = if all {
        device.clinic_visits(as_of, None)?
    } else {
        device.clinic_visits(as_of, Some(states))?
    };
    Ok(visits
        .iter()
        .map(|v| {
            vec![
                format!("{:?}", v.visit.state).to_lowercase(),
                v.visit.visit_id.to_string(),
                codes
                    .get(&v.patient)
                    .cloned()
                    .unwrap_or_else(|| v.patient.to_hex()),
                format!("{} .. {}", v.visit.window_start, v.visit.window_end),
                v.visit.label.to_string(),
                v.procedure.to_hex(),
            ]
        })
        .collect())
}

fn due(device: &Device, as_of: NaiveDate, all: bool, json: bool) -> Result<(), CliError> {
    let rows = due_rows(device, as_of, all)?;
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({"state": r[0], "visit": r[1], "patient": r[2], "window": r[3], "label": r[4], "procedure": r[5]})
            })
            .collect();
        return output::print_json(&v);
    }
    if rows.is_empty() {
        println!("nothing due or overdue on {as_of}");
        return Ok(());
    }
    println!("visits as of {as_of}:");
    output::print_table(
        &["state", "visit", "patient", "window", "label", "procedure"],
        &rows,
    );
    Ok(())
}

/// A questionnaire by id, or an error listing the ones there are.
fn questionnaire_named(
    id: &str,
) -> Result<followup_domain::questionnaire::Questionnaire, CliError> {
    followup_domain::questionnaire::instrument(id).ok_or_else(|| {
        CliError::new(format!("no questionnaire {id:?}")).hint(format!(
            "use one of: {}",
            followup_domain::questionnaire::default_instruments()
                .iter()
                .map(|q| q.id().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// A capture failure in the user's words: each broken rule (unknown choices with the choices
/// allowed), or the visit already recorded.
fn capture_error(
    q: &followup_domain::questionnaire::Questionnaire,
    e: followup_device::Error,
) -> CliError {
    match e {
        followup_device::Error::Validation(problems) => crate::device_app::problems_with_choices(
            q,
            &problems,
            "fix the answers file and run again (nothing was saved)",
        ),
        followup_device::Error::AlreadyRecorded { record, visit } => CliError::new(format!(
            "visit {visit} is already recorded by response {record} (nothing was saved)"
        ))
        .hint(format!("see it with `followup device show {record}`")),
        other => other.into(),
    }
}

/// Capture a response in **one change, one transaction** (see `Device::capture_response`):
/// killed at any moment it leaves the whole response or nothing, and run again for a visit
/// already recorded it refuses. Answers are checked first, as given; problems come back one per
/// item, an unknown choice with the choices allowed.
pub fn fill(
    device: &Device,
    patient: RecordId,
    questionnaire: &str,
    procedure: Option<RecordId>,
    visit: Option<&str>,
    answers: &Answers,
    submit: bool,
) -> Result<RecordId, CliError> {
    fill_in(
        device,
        patient,
        questionnaire,
        procedure,
        visit,
        answers,
        submit,
        "en",
    )
}

/// The form as this device holds it (the newest published version), or why it cannot be used.
fn device_questionnaire(
    device: &Device,
    questionnaire: &str,
) -> Result<followup_domain::questionnaire::Questionnaire, CliError> {
    device.questionnaire(questionnaire).map_err(|e| match e {
        followup_device::Error::NeedsUpdate { .. } => {
            CliError::new(format!("the form {questionnaire:?} needs an app update"))
                .hint("update the app; every other form works, and nothing captured is lost")
        }
        _ => CliError::new(format!("no questionnaire {questionnaire:?} on this device")).hint(
            "list the forms with: followup device questionnaires (sync first to receive them)",
        ),
    })
}

/// [`fill`] with problem messages in `lang` (a locale tag, with fallback).
#[allow(clippy::too_many_arguments)]
pub fn fill_in(
    device: &Device,
    patient: RecordId,
    questionnaire: &str,
    procedure: Option<RecordId>,
    visit: Option<&str>,
    answers: &Answers,
    submit: bool,
    lang: &str,
) -> Result<RecordId, CliError> {
    let q = device_questionnaire(device, questionnaire)?;
    device
        .capture_response_in(
            patient,
            questionnaire,
            procedure,
            visit,
            answers,
            submit,
            lang,
        )
        .map_err(|e| capture_error(&q, e))
}

/// `fill --resume DRAFT`: the draft's new answers and (unless `--draft`) its submission, in one
/// change, checked against the questionnaire version the draft was started with.
fn resume_draft(
    device: &Device,
    id: RecordId,
    answers: &Answers,
    submit: bool,
    lang: &str,
) -> Result<(), CliError> {
    let current: followup_domain::model::FollowupResponse = device.get(id)?;
    let q = device.response_questionnaire(id)?;
    device
        .finish_draft_in(id, answers, submit, lang)
        .map_err(|e| capture_error(&q, e))?;
    if submit {
        println!("{} response submitted: {id}", current.questionnaire);
    } else {
        println!("{} draft saved: {id}", current.questionnaire);
    }
    crate::device_app::next(&format!("show {id}"));
    Ok(())
}

fn queue(device: &Device, json: bool) -> Result<(), CliError> {
    let today = Utc::now().date_naive();
    let items = device.adjudication_queue(today)?;
    let codes = study_codes(device)?;
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            vec![
                i.status.code().to_string(),
                i.deadline
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "-".into()),
                if i.overdue {
                    "OVERDUE".into()
                } else {
                    String::new()
                },
                codes
                    .get(&i.patient)
                    .cloned()
                    .unwrap_or_else(|| i.patient.to_hex()),
                i.adverse_event.to_hex(),
            ]
        })
        .collect();
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| serde_json::json!({"status": r[0], "deadline": r[1], "overdue": !r[2].is_empty(), "patient": r[3], "adverse_event": r[4]}))
            .collect();
        return output::print_json(&v);
    }
    if rows.is_empty() {
        println!("no adverse event awaits adjudication");
    } else {
        output::print_table(
            &["status", "deadline", "", "patient", "adverse event"],
            &rows,
        );
    }
    Ok(())
}

fn parse_record_id(s: &str, what: &str) -> Result<RecordId, CliError> {
    s.trim().parse().map_err(|_| {
        CliError::new(format!("{s:?} is not a {what} id"))
            .hint("ids are 32 hexadecimal characters (see `followup device events`)")
    })
}

fn events(device: &Device, patient: Option<RecordId>, json: bool) -> Result<(), CliError> {
    let views = device.adverse_events(patient)?;
    let codes = study_codes(device)?;
    if json {
        let v: Vec<_> = views
            .iter()
            .map(|v| {
                serde_json::json!({
                    "adverse_event": v.id,
                    "patient": codes.get(&v.patient).cloned().unwrap_or_else(|| v.patient.to_hex()),
                    "event": v.event,
                    "case": v.case,
                    "adjudication": v.adjudication.as_ref().map(|(_, a)| a),
                    "replies": v.replies,
                    "open": v.is_open(),
                })
            })
            .collect();
        return output::print_json(&v);
    }
    if views.is_empty() {
        println!("no adverse event");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let e = &v.event;
            let (deadline, state) = match &v.case {
                Some(c) => (c.deadline.clone(), c.state.code().to_string()),
                None => ("-".into(), "not at the registry yet".into()),
            };
            let answer = match &v.adjudication {
                Some((_, a)) => format!(
                    "{} / {} / {}",
                    a.relatedness.map(|r| r.code()).unwrap_or("-"),
                    if a.action.is_empty() { "-" } else { &a.action },
                    if a.remedy.is_empty() { "-" } else { &a.remedy },
                ),
                None => "-".into(),
            };
            vec![
                codes
                    .get(&v.patient)
                    .cloned()
                    .unwrap_or_else(|| v.patient.to_hex()[..8].to_string()),
                e.category.clone(),
                format!(
                    "{}{}",
                    e.severity,
                    if e.seriousness.is_empty() {
                        ""
                    } else {
                        " serious"
                    }
                ),
                e.onset.clone(),
                deadline,
                state,
                answer,
                v.id.to_hex(),
            ]
        })
        .collect();
    output::print_table(
        &[
            "patient",
            "category",
            "grade",
            "onset",
            "deadline",
            "state",
            "relatedness / action / remedy",
            "adverse event",
        ],
        &rows,
    );
    for v in &views {
        if let Some(c) = &v.case {
            for e in &c.escalations {
                println!(
                    "  {} escalated by the registry {}: {}",
                    &v.id.to_hex()[..8],
                    e.at,
                    e.note
                );
            }
            for r in &c.replies {
                println!(
                    "  {} the patient {} {}: {}",
                    &v.id.to_hex()[..8],
                    r.verdict,
                    r.at,
                    r.comment
                );
            }
        }
    }
    Ok(())
}

fn conflicts(device: &Device, record: Option<&str>, json: bool) -> Result<(), CliError> {
    let ids: Vec<RecordId> = match record {
        Some(r) => vec![r.trim().parse().map_err(|_| {
            CliError::new(format!("{r:?} is not a record id"))
                .hint("ids are 32 hexadecimal characters")
        })?],
        None => device
            .store()
            .list(&Query::default())?
            .into_iter()
            .map(|m| m.id)
            .collect(),
    };
    let mut found = Vec::new();
    for id in ids {
        let c = device.conflicts(id)?;
        if !c.is_empty() || record.is_some() {
            found.push((id, c));
        }
    }
    if json {
        let v: Vec<_> = found
            .iter()
            .map(|(id, c)| serde_json::json!({"record": id, "conflicts": c}))
            .collect();
        return output::print_json(&v);
    }
    // Study codes enrolled twice (two tablets offline): a conflict of the clinic's patient list.
    let duplicates = match record {
        None => device.duplicate_study_codes()?,
        Some(_) => Vec::new(),
    };
    if found.iter().all(|(_, c)| c.is_empty()) && duplicates.is_empty() {
        println!("no conflicts");
        return Ok(());
    }
    for d in &duplicates {
        let patients: Vec<String> = d.patients.iter().map(|p| p.to_hex()).collect();
        println!(
            "study code {} is enrolled {} times (on two tablets while offline): patients {}",
            d.study_code,
            d.patients.len(),
            patients.join(", ")
        );
        println!("  keep one patient per study code; the registry sees this too (`followup server duplicates`)");
    }
    let me = device.enrolment().map(|e| e.device_id);
    let codes = study_codes(device)?;
    for (id, cs) in &found {
        println!("{}:", crate::device_app::describe(device, &codes, *id));
        for c in cs {
            println!("  {}", c.path);
            for v in &c.values {
                let who = match v.device {
                    Some(d) if Some(d) == me => "this device".to_string(),
                    other => crate::device_app::who(device, other),
                };
                let when = v
                    .time
                    .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                    .map(|t| t.format(" at %Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default();
                println!(
                    "    {:<24} {}{}{}",
                    v.value.to_string(),
                    who,
                    when,
                    if v.winner { "  (shown)" } else { "" }
                );
            }
        }
    }
    // A command that runs as shown: the first conflicted answer, set to the value shown.
    let example = found.iter().find_map(|(id, cs)| {
        cs.iter().find_map(|c| {
            let item = c.path.strip_prefix("answers.")?;
            let shown = c.values.iter().find(|v| v.winner)?;
            Some(crate::device_app::device_cmd(&format!(
                "resolve {id} {item} '{}'",
                shown.value
            )))
        })
    });
    if let Some(cmd) = example {
        println!("next: {cmd}   (or another of the values listed)");
    }
    Ok(())
}

/// A sync client with the default options, except the number of attempts.
pub fn client(attempts: Option<u32>) -> Result<SyncClient, CliError> {
    let mut options = SyncOptions::default();
    if let Some(n) = attempts {
        options.max_attempts = n.max(1);
    }
    Ok(SyncClient::new(options)?)
}

async fn enrol(
    device: &Device,
    server: &str,
    code: &str,
    label: &str,
    attempts: Option<u32>,
) -> Result<(), CliError> {
    let spin = output::spinner(&format!("enrolling with {server}"), false);
    let c = client(attempts)?;
    let r = c.enrol(device, server, code, label).await;
    spin.finish_and_clear();
    let e = r?;
    println!(
        "enrolled as {} {} of clinic {}{}",
        match e.role {
            DeviceRole::ClinicDevice => "clinic device",
            DeviceRole::PatientDevice => "patient device",
        },
        e.device_id,
        e.clinic,
        e.patient
            .map(|p| format!(", patient {p}"))
            .unwrap_or_default()
    );
    // The forms come from the registry (docs/definitions.md): receive them now, while the
    // device is online, so that it can capture offline from the start. Enrolment has
    // succeeded whatever happens here; a failure only means the forms come at the next sync.
    match sync_with_bar(&c, device, "receiving the registry's forms", false).await {
        Ok(_) => {
            let forms = device
                .definitions()?
                .into_iter()
                .filter(|d| d.definition == "questionnaire")
                .count();
            println!("received the registry's forms: {forms} questionnaire version(s)");
            crate::device_app::next("questionnaires");
        }
        Err(err) => {
            eprintln!(
                "warning: the registry's forms were not received yet ({}); \
                 the device has no form until it syncs",
                err.message
            );
            crate::device_app::next("sync");
        }
    }
    Ok(())
}

/// One line about a sync's figures.
pub fn report_line(r: &SyncReport) -> String {
    format!(
        "{} pushed, {} pulled, {} rejected; {} round trip{} ({} attempt{}), {} up, {} down, {}",
        r.pushed,
        r.pulled,
        r.rejected.len(),
        r.round_trips,
        if r.round_trips == 1 { "" } else { "s" },
        r.attempts,
        if r.attempts == 1 { "" } else { "s" },
        output::bytes(r.bytes_up),
        output::bytes(r.bytes_down),
        output::duration(r.elapsed)
    )
}

/// Sync with a progress bar on stderr (hidden when `quiet` or stderr is not a terminal).
pub async fn sync_with_bar(
    client: &SyncClient,
    device: &Device,
    label: &str,
    quiet: bool,
) -> Result<SyncReport, CliError> {
    let bar = output::bar(0, label, quiet);
    let b = bar.clone();
    let label = label.to_string();
    let progress = move |p: SyncProgress| {
        b.set_length(p.docs_total.max(1));
        b.set_position(p.docs_done.min(p.docs_total));
        let phase = match p.phase {
            SyncPhase::Preparing => "preparing".to_string(),
            SyncPhase::Sending => "sending".into(),
            SyncPhase::Receiving => "receiving".into(),
            SyncPhase::Applying => "applying".into(),
            SyncPhase::Retrying { attempt } => format!("link down, retry {attempt}"),
            SyncPhase::Done => "done".into(),
        };
        b.set_message(format!(
            "{label}: {phase} ↑{} ↓{}",
            output::bytes(p.bytes_sent),
            output::bytes(p.bytes_received)
        ));
    };
    let r = client.sync(device, &progress, &CancelToken::new()).await;
    bar.finish_and_clear();
    Ok(r?)
}

async fn sync(device: &Device, json: bool, attempts: Option<u32>) -> Result<(), CliError> {
    let c = client(attempts)?;
    let r = sync_with_bar(&c, device, "sync", false).await?;
    if json {
        return output::print_json(&serde_json::json!({
            "round_trips": r.round_trips, "attempts": r.attempts,
            "bytes_up": r.bytes_up, "bytes_down": r.bytes_down,
            "change_bytes_up": r.change_bytes_up, "change_bytes_down": r.change_bytes_down,
            "pushed": r.pushed, "pulled": r.pulled,
            "rejected": r.rejected, "elapsed_ms": r.elapsed.as_millis() as u64,
        }));
    }
    println!("synced: {}", report_line(&r));
    for rej in &r.rejected {
        println!(
            "  refused by the registry: record {} ({}): {}",
            rej.record, rej.code, rej.message
        );
    }
    Ok(())
}
