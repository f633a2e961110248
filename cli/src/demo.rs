//! `followup demo`: a stretch of clinic life against an in-process registry.
//!
//! A registry server starts on `127.0.0.1:0` (its SQLite database in the data directory), the
//! registry creates a clinic and enrolment codes, and three devices — nurse Amara's tablet,
//! the ward's second tablet and patient KX-0417's phone — each with its own encrypted store,
//! live through about 200 simulated days:
//!
//! 1. four patients enrolled and their procedures recorded on tablet A; both tablets sync;
//! 2. the patient's phone is enrolled and syncs their own records;
//! 3. follow-ups captured offline on both tablets over the first month (the device takes the
//!    dates it is given: visit dates in the answers, `as_of` dates for the schedule) — tablet A's
//!    work list is wrong until it syncs;
//! 4. the patient's month-1 outcome survey and a complication reported from the phone;
//! 5. everyone syncs: what merged; the adjudication queue; the clinic adjudicates;
//! 6. the same month-3 follow-up corrected on both tablets while offline → a visible conflict,
//!    with each device's value;
//! 7. tablet B comes back from an outreach trip with a backlog and syncs over a simulated
//!    64 kbit/s, 500 ms link that drops every few seconds ([`followup_testkit::linksim`]);
//! 8. a final sync of every device, the work list and queue on day 200, the audit chain, and a
//!    convergence check that compares every replica's documents (their heads) with the server's.
//!
//! Device stores are protected by [`DEMO_PASSPHRASE`] (so that, with `--data`, they can be
//! opened afterwards with `followup device`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate, Utc};
use followup_device::crypto::KeySource;
use followup_device::device::Device;
use followup_device::store::Query;
use followup_device::sync::{SyncClient, SyncOptions, SyncReport};
use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::model::{
    AdjudicationStatus, AdverseEvent, AeOutcome, Answers, CellType, Consent, Cost, Enrolment,
    Manipulation, Origin, Procedure, PromisedBenefit, RegulatoryStatus, Relatedness, Reporter,
    Route, Sex, SourceTissue,
};
use followup_domain::protocol::{DeviceRole, EnrolmentGrant};
use followup_domain::questionnaire::AnswerValue;
use followup_domain::schedule::VisitState;
use followup_server::storage::{ReadScope, Storage};
use followup_server::{Config, RunningServer, Server};
use followup_testkit::linksim::{CutPolicy, LinkConfig, LinkSim};
use serde::Serialize;

use crate::args::DemoArgs;
use crate::device_cmd::{self, fill};
use crate::error::CliError;
use crate::output;

/// The passphrase of the demo's device stores.
pub const DEMO_PASSPHRASE: &str = "demo passphrase, not for real patients";

/// Texts the demo records that must never reach a device's disk in plaintext: free-text
/// answers, patient attributes, conditions and procedure details. (Tests look for them in every
/// file of `--data DIR` except the server's database.)
pub const PLAINTEXT_PROBES: &[&str] = &[
    "KX-0417",
    "KX-0422",
    "KX-0431",
    "KX-0436",
    "knee osteoarthritis",
    "relapsing-remitting multiple sclerosis",
    "chronic obstructive pulmonary disease",
    "spinal cord injury",
    "NCT04867330",
    "Knee swollen, red and hot since last week",
    "redness and swelling at the injection site",
    "pain down after physiotherapy",
    "still limping on the stairs",
    "oral antibiotics and wound care",
    "treatment and review at no cost",
    "numbness in the left hand",
    "BV-0102",
    "rash and itching on both arms",
];

/// How long the demo's story lasts, in days from the first procedure.
const STORY_DAYS: u64 = 200;

/// The staff console's address and the admin login the demo created.
#[derive(Debug, Clone, Serialize)]
pub struct ConsoleLogin {
    pub url: String,
    pub email: String,
    pub password: String,
}

/// One JSON summary of the demo (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The staff console and its login.
    pub console: ConsoleLogin,
    /// Records each device holds at the end.
    pub records_per_device: BTreeMap<String, u64>,
    /// Documents on the registry server.
    pub server_documents: u64,
    /// Conflicts seen (fields edited concurrently on two devices).
    pub conflicts_seen: Vec<ConflictSeen>,
    /// Syncs made, all devices.
    pub syncs: u32,
    /// Successful HTTP round trips, all syncs.
    pub round_trips: u32,
    /// HTTP requests made, failed ones included.
    pub attempts: u32,
    /// Request bytes on the wire, all syncs.
    pub bytes_up: u64,
    /// Response bytes on the wire, all syncs.
    pub bytes_down: u64,
    /// Time spent syncing, all syncs, in milliseconds.
    pub sync_ms: u64,
    /// The sync over the simulated bad link.
    pub bad_link: BadLink,
    /// Open items of the adjudication queue at the end.
    pub adjudication_queue: usize,
    /// Overdue and due visits on tablet A at the end.
    pub visits_overdue: usize,
    pub visits_due: usize,
    /// Whether the server's audit chain verified.
    pub audit_ok: bool,
    /// Every replica's documents and heads equal the server's, for its scope.
    pub converged: bool,
    pub replicas: Vec<Replica>,
    /// Total run time, milliseconds.
    pub elapsed_ms: u64,
    /// Where the stores and the database are (only with `--data`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

/// A conflict the demo made visible.
#[derive(Debug, Clone, Serialize)]
pub struct ConflictSeen {
    pub record: RecordId,
    pub field: String,
    /// Device name → value.
    pub values: BTreeMap<String, serde_json::Value>,
    /// The device whose value is shown.
    pub shown: Option<String>,
}

/// Figures of the bad-link sync.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BadLink {
    pub documents: u64,
    pub round_trips: u32,
    pub attempts: u32,
    pub cuts: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub elapsed_ms: u64,
}

/// One replica's convergence check.
#[derive(Debug, Clone, Serialize)]
pub struct Replica {
    pub device: String,
    /// Documents the device holds.
    pub documents: u64,
    /// Documents of its scope on the server.
    pub server_documents: u64,
    /// Documents whose heads differ, or that one side lacks.
    pub differing: u64,
}

/// Run `followup demo`.
pub fn run(args: &DemoArgs) -> Result<(), CliError> {
    let (dir, _temp) = match &args.data {
        Some(d) => {
            if d.exists()
                && std::fs::read_dir(d)
                    .map(|mut r| r.next().is_some())
                    .unwrap_or(true)
            {
                return Err(
                    CliError::new(format!("{} exists and is not empty", d.display()))
                        .hint("give --data a new or empty directory"),
                );
            }
            std::fs::create_dir_all(d)
                .map_err(|e| CliError::new(format!("cannot create {}: {e}", d.display())))?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("followup-demo-")
                .tempdir()
                .map_err(|e| CliError::new(format!("cannot create a temporary directory: {e}")))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let rt = crate::runtime()?;
    let summary = rt.block_on(play(&dir, args))?;
    if args.json && !args.serve {
        output::print_json(&summary)?;
    }
    if !summary.converged {
        return Err(
            CliError::new("the replicas did not converge with the server")
                .hint("this is a bug: please report it with the output above"),
        );
    }
    Ok(())
}

/// The storyteller: prints the narrative unless `--json`.
struct Narrator {
    quiet: bool,
    base: NaiveDate,
}

impl Narrator {
    fn step(&self, day: u64, title: &str) {
        if !self.quiet {
            println!();
            println!("── day {day:>3} · {} · {title}", self.date(day));
        }
    }
    fn say(&self, text: impl AsRef<str>) {
        if !self.quiet {
            for line in text.as_ref().lines() {
                println!("   {line}");
            }
        }
    }
    fn date(&self, day: u64) -> NaiveDate {
        self.base
            .checked_add_days(Days::new(day))
            .unwrap_or(self.base)
    }
    fn iso(&self, day: u64) -> String {
        self.date(day).format("%Y-%m-%d").to_string()
    }
}

/// A device of the story.
struct Actor {
    name: &'static str,
    device: Device,
}

struct Totals {
    syncs: u32,
    round_trips: u32,
    attempts: u32,
    bytes_up: u64,
    bytes_down: u64,
    elapsed: Duration,
}

struct Patient {
    code: &'static str,
    id: RecordId,
    procedure: RecordId,
    /// Day of the procedure.
    day: u64,
}

struct World {
    n: Narrator,
    server: RunningServer,
    client: SyncClient,
    a: Actor,
    b: Actor,
    phone: Option<Actor>,
    names: BTreeMap<DeviceId, &'static str>,
    totals: Totals,
}

fn text(s: &str) -> AnswerValue {
    AnswerValue::Text(s.into())
}

fn answers(pairs: Vec<(&str, AnswerValue)>) -> Answers {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// A clinician follow-up with no complication.
fn followup(visit_date: &str, status: &str, primary: i64, pain: i64, fatigue: i64) -> Answers {
    answers(vec![
        ("visit_date", text(visit_date)),
        ("visit_mode", text("in_person")),
        ("condition_status", text(status)),
        ("symptom_primary", AnswerValue::Int(primary)),
        ("symptom_pain", AnswerValue::Int(pain)),
        ("symptom_fatigue", AnswerValue::Int(fatigue)),
        ("ecog", text("1")),
        ("complications_any", AnswerValue::Bool(false)),
        ("hospitalised", AnswerValue::Bool(false)),
        ("further_cell_therapy", AnswerValue::Bool(false)),
    ])
}

struct PatientSpec {
    code: &'static str,
    birth_year: i64,
    sex: Sex,
    day: u64,
    procedure: fn(String) -> Procedure,
}

fn patients_spec() -> Vec<PatientSpec> {
    vec![
        PatientSpec {
            code: "KX-0417",
            birth_year: 1961,
            sex: Sex::Female,
            day: 0,
            procedure: |date| Procedure {
                date,
                condition: "knee osteoarthritis".into(),
                procedure_type: "cell injection".into(),
                route: Route::IntraArticular,
                cell_type: CellType::StromalVascularFraction,
                source_tissue: SourceTissue::Adipose,
                origin: Origin::Autologous,
                manipulation: Manipulation::Minimal,
                regulatory_status: RegulatoryStatus::Unregulated,
                trial_registration: None,
                promised_benefits: vec![PromisedBenefit {
                    benefit: "less knee pain".into(),
                    measure: "pain 0-10 at 3 and 6 months".into(),
                }],
                cost: Some(Cost {
                    amount_minor: 850_000,
                    currency: "USD".into(),
                }),
            },
        },
        PatientSpec {
            code: "KX-0422",
            birth_year: 1979,
            sex: Sex::Male,
            day: 2,
            procedure: |date| Procedure {
                date,
                condition: "relapsing-remitting multiple sclerosis".into(),
                procedure_type: "autologous haematopoietic stem cell transplant".into(),
                route: Route::Intravenous,
                cell_type: CellType::Haematopoietic,
                source_tissue: SourceTissue::PeripheralBlood,
                origin: Origin::Autologous,
                manipulation: Manipulation::MoreThanMinimal,
                regulatory_status: RegulatoryStatus::RegisteredTrial,
                trial_registration: Some("NCT04867330".into()),
                promised_benefits: vec![PromisedBenefit {
                    benefit: "no new relapses".into(),
                    measure: "EDSS and relapses at 12 months".into(),
                }],
                cost: Some(Cost {
                    amount_minor: 5_400_000,
                    currency: "USD".into(),
                }),
            },
        },
        PatientSpec {
            code: "KX-0431",
            birth_year: 1954,
            sex: Sex::Female,
            day: 5,
            procedure: |date| Procedure {
                date,
                condition: "chronic obstructive pulmonary disease".into(),
                procedure_type: "cell infusion".into(),
                route: Route::Intravenous,
                cell_type: CellType::Mesenchymal,
                source_tissue: SourceTissue::UmbilicalCordBlood,
                origin: Origin::Allogeneic,
                manipulation: Manipulation::MoreThanMinimal,
                regulatory_status: RegulatoryStatus::Unregulated,
                trial_registration: None,
                promised_benefits: vec![PromisedBenefit {
                    benefit: "easier breathing".into(),
                    measure: "six-minute walk".into(),
                }],
                cost: Some(Cost {
                    amount_minor: 1_200_000,
                    currency: "USD".into(),
                }),
            },
        },
        PatientSpec {
            code: "KX-0436",
            birth_year: 1992,
            sex: Sex::Male,
            day: 9,
            procedure: |date| Procedure {
                date,
                condition: "spinal cord injury".into(),
                procedure_type: "cell injection".into(),
                route: Route::Intrathecal,
                cell_type: CellType::Mononuclear,
                source_tissue: SourceTissue::BoneMarrow,
                origin: Origin::Autologous,
                manipulation: Manipulation::Minimal,
                regulatory_status: RegulatoryStatus::Unregulated,
                trial_registration: None,
                promised_benefits: Vec::new(),
                cost: Some(Cost {
                    amount_minor: 2_000_000,
                    currency: "USD".into(),
                }),
            },
        },
    ]
}

fn create_device(dir: &Path, file: &str) -> Result<Device, CliError> {
    let path = dir.join(file);
    Device::create(&path, KeySource::passphrase(DEMO_PASSPHRASE))
        .map_err(|e| CliError::from(e).context(format!("cannot create {}", path.display())))
}

impl World {
    fn name(&self, d: Option<DeviceId>) -> String {
        match d {
            None => "the registry".into(),
            Some(d) => self
                .names
                .get(&d)
                .map(|s| s.to_string())
                .unwrap_or_else(|| format!("device {}", &d.to_hex()[..8])),
        }
    }

    fn actor(&self, which: Who) -> Result<&Actor, CliError> {
        match which {
            Who::A => Ok(&self.a),
            Who::B => Ok(&self.b),
            Who::Phone => self
                .phone
                .as_ref()
                .ok_or_else(|| CliError::new("the phone is not set up yet")),
        }
    }

    fn add(&mut self, r: &SyncReport) {
        self.totals.syncs += 1;
        self.totals.round_trips += r.round_trips;
        self.totals.attempts += r.attempts;
        self.totals.bytes_up += r.bytes_up;
        self.totals.bytes_down += r.bytes_down;
        self.totals.elapsed += r.elapsed;
    }

    async fn sync(&mut self, who: Who) -> Result<SyncReport, CliError> {
        let actor = self.actor(who)?;
        let r = device_cmd::sync_with_bar(&self.client, &actor.device, actor.name, true)
            .await
            .map_err(|e| e.context(format!("{} could not sync", actor.name)))?;
        self.n.say(format!(
            "{} syncs: {}",
            actor.name,
            device_cmd::report_line(&r)
        ));
        for rej in &r.rejected {
            self.n.say(format!(
                "  the registry refused record {} ({}): {}",
                rej.record, rej.code, rej.message
            ));
        }
        self.add(&r);
        Ok(r)
    }

    fn capture(
        &self,
        who: Who,
        p: &Patient,
        visit: &str,
        a: &Answers,
        what: &str,
    ) -> Result<RecordId, CliError> {
        let actor = self.actor(who)?;
        let q = if visit.ends_with("-survey") {
            "patient-outcome-survey"
        } else {
            "clinician-followup"
        };
        let id = fill(
            &actor.device,
            p.id,
            q,
            Some(p.procedure),
            Some(visit),
            a,
            true,
        )?;
        self.n.say(format!(
            "{:<28} {} {:<4} {}",
            actor.name, p.code, visit, what
        ));
        Ok(id)
    }

    /// The clinician follow-up work list of a tablet on a day (at most `limit` rows).
    fn visits(
        &self,
        who: Who,
        day: u64,
        states: &[VisitState],
        limit: usize,
    ) -> Result<(), CliError> {
        let actor = self.actor(who)?;
        let as_of = self.n.date(day);
        let codes = device_cmd::study_codes(&actor.device)?;
        let list: Vec<_> = actor
            .device
            .clinic_visits(as_of, Some(states))?
            .into_iter()
            .filter(|v| v.visit.questionnaire == "clinician-followup")
            .collect();
        if list.is_empty() {
            self.n.say("  (nothing to do)");
        }
        for v in list.iter().take(limit) {
            self.n.say(format!(
                "  {:<8} {:<8} {:<4} window {} .. {}",
                format!("{:?}", v.visit.state).to_lowercase(),
                codes.get(&v.patient).map(String::as_str).unwrap_or("?"),
                v.visit.visit_id,
                v.visit.window_start,
                v.visit.window_end
            ));
        }
        if list.len() > limit {
            self.n.say(format!("  … and {} more", list.len() - limit));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Who {
    A,
    B,
    Phone,
}

async fn play(dir: &Path, args: &DemoArgs) -> Result<Summary, CliError> {
    let started = Instant::now();
    let spin = output::spinner("running the demo", !args.json);
    let today = Utc::now().date_naive();
    let base = today
        .checked_sub_days(Days::new(STORY_DAYS))
        .unwrap_or(today);
    let n = Narrator {
        quiet: args.json,
        base,
    };

    // ---- The registry.
    let token = hex::encode(followup_domain::ids::random_bytes::<16>());
    let server = Server::start(Config::for_tests(dir.join("registry"), Some(&token)))
        .await
        .map_err(|e| CliError::new(format!("the demo's registry server could not start: {e}")))?;
    let admin = crate::admin::connect(&server.url(), Some(&token), None)?;
    n.step(0, "the registry");
    n.say(format!(
        "registry server on {} (SQLite in {})",
        server.url(),
        dir.join("registry").display()
    ));
    let clinic = admin.create_clinic("Clínica Horizonte", "MX").await?;
    n.say(format!(
        "the registry creates clinic \"Clínica Horizonte\" (MX): {clinic}"
    ));

    let client = SyncClient::new(SyncOptions {
        initial_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(2),
        max_attempts: 10,
        ..SyncOptions::default()
    })?;

    let mut names = BTreeMap::new();
    let mut tablets = Vec::new();
    for (file, name, label) in [
        (
            "tablet-a.db",
            "tablet A (nurse Amara)",
            "Tablet A, nurse Amara",
        ),
        ("tablet-b.db", "tablet B (ward 2)", "Tablet B, ward 2"),
    ] {
        let device = create_device(dir, file)?;
        let code = admin
            .issue_code(EnrolmentGrant::ClinicDevice { clinic }, None)
            .await?;
        let e = client
            .enrol(&device, &server.url(), &code.code, label)
            .await?;
        names.insert(e.device_id, name);
        n.say(format!(
            "{name} enrols with one-time code {} → device {}",
            code.code,
            &e.device_id.to_hex()[..8]
        ));
        // Its first sync brings the registry's forms and schedule (the app has none built in).
        let r = client
            .sync(&device, &|_| {}, &followup_device::sync::CancelToken::new())
            .await?;
        n.say(format!(
            "{name} receives the registry's forms and schedule ({} definitions)",
            r.pulled
        ));
        tablets.push(Actor { name, device });
    }
    let (Some(b), Some(a)) = (tablets.pop(), tablets.pop()) else {
        return Err(CliError::new("internal: tablets not created"));
    };
    let mut w = World {
        n,
        server,
        client,
        a,
        b,
        phone: None,
        names,
        totals: Totals {
            syncs: 0,
            round_trips: 0,
            attempts: 0,
            bytes_up: 0,
            bytes_down: 0,
            elapsed: Duration::ZERO,
        },
    };

    // ---- Procedures.
    w.n.step(0, "procedures recorded on tablet A");
    let mut patients = Vec::new();
    for spec in patients_spec() {
        let date = w.n.iso(spec.day);
        let id = w.a.device.enrol_patient(&Enrolment {
            study_code: spec.code.into(),
            consent: Consent {
                form_version: "2.1".into(),
                date: date.clone(),
                scope: vec!["registry".into(), "contact".into()],
            },
            birth_year: spec.birth_year,
            sex: spec.sex,
            enrolled_on: date.clone(),
        })?;
        let proc = (spec.procedure)(date.clone());
        let procedure = w.a.device.record_procedure(id, &proc)?;
        w.n.say(format!(
            "{} ({}, born {}): {} for {} on {}",
            spec.code,
            spec.sex.code(),
            spec.birth_year,
            proc.procedure_type,
            proc.condition,
            date
        ));
        patients.push(Patient {
            code: spec.code,
            id,
            procedure,
            day: spec.day,
        });
    }
    let codes: BTreeMap<RecordId, &str> = patients.iter().map(|p| (p.id, p.code)).collect();
    w.n.step(9, "the clinic's Wi-Fi works today");
    w.sync(Who::A).await?;
    w.sync(Who::B).await?;
    w.n.say(format!(
        "tablet B now holds the {} patients tablet A enrolled",
        w.b.device.list_patients()?.len()
    ));

    // ---- The patient's phone.
    let [p17, p22, p31, p36] = match <[&Patient; 4]>::try_from(patients.iter().collect::<Vec<_>>())
    {
        Ok(v) => v,
        Err(_) => return Err(CliError::new("internal: four patients expected")),
    };
    w.n.step(9, "KX-0417 installs the app on her phone");
    let phone = create_device(dir, "phone-kx0417.db")?;
    let code = admin
        .issue_code(EnrolmentGrant::PatientDevice { patient: p17.id }, None)
        .await?;
    let e = w
        .client
        .enrol(&phone, &w.server.url(), &code.code, "KX-0417's phone")
        .await?;
    w.names.insert(e.device_id, "KX-0417's phone");
    w.n.say(format!(
        "the clinic shows her a one-time code ({}); her phone enrols as device {}",
        code.code,
        &e.device_id.to_hex()[..8]
    ));
    w.phone = Some(Actor {
        name: "KX-0417's phone",
        device: phone,
    });
    w.sync(Who::Phone).await?;
    w.n.say(format!(
        "her phone holds {} records: her own enrolment and procedure, nothing of other patients",
        w.actor(Who::Phone)?.device.store().count(None)?
    ));

    // ---- Offline capture over the first month.
    w.n.step(16, "follow-ups captured offline (no connection for weeks)");
    let nb = Narrator { quiet: true, base };
    let d = |p: &Patient, off: u64| nb.iso(p.day + off);
    w.capture(
        Who::A,
        p17,
        "d7",
        &followup(&d(p17, 7), "stable", 6, 6, 4),
        "day-7 follow-up: pain 6/10, stable",
    )?;
    w.capture(
        Who::A,
        p22,
        "d7",
        &followup(&d(p22, 7), "stable", 5, 2, 7),
        "day-7 follow-up: fatigue 7/10 after conditioning",
    )?;
    w.capture(
        Who::A,
        p31,
        "d7",
        &followup(&d(p31, 7), "stable", 6, 1, 5),
        "day-7 follow-up: stable",
    )?;
    w.capture(
        Who::B,
        p36,
        "d7",
        &followup(&d(p36, 7), "stable", 7, 3, 4),
        "day-7 follow-up on the ward",
    )?;
    let mut m1 = followup(&d(p17, 30), "improved", 4, 4, 3);
    m1.insert("weight_kg".into(), AnswerValue::Decimal(68.5));
    w.capture(
        Who::A,
        p17,
        "m1",
        &m1,
        "month-1 follow-up: pain down to 4/10",
    )?;
    w.capture(
        Who::B,
        p22,
        "m1",
        &followup(&d(p22, 31), "improved", 4, 1, 5),
        "month-1 follow-up (tablet B, offline)",
    )?;
    let mut m1_31 = followup(&d(p31, 29), "worse", 7, 2, 6);
    m1_31.insert(
        "condition_worse_detail".into(),
        text("more breathless on exertion since the infusion"),
    );
    w.capture(
        Who::B,
        p31,
        "m1",
        &m1_31,
        "month-1 follow-up: condition worse",
    )?;

    // ---- The phone: survey and complication.
    w.n.step(31, "on KX-0417's phone (days 31 and 38)");
    let survey = answers(vec![
        ("completed_date", text(&d(p17, 31))),
        ("overall_change", text("better")),
        ("symptom_primary", AnswerValue::Int(4)),
        ("symptom_pain", AnswerValue::Int(5)),
        ("symptom_fatigue", AnswerValue::Int(3)),
        ("symptom_sleep", AnswerValue::Int(3)),
        ("symptom_mood", AnswerValue::Int(2)),
        ("daily_activities", text("slight")),
        ("walking", text("unaided")),
        ("new_problems", AnswerValue::Bool(false)),
        ("satisfaction", AnswerValue::Int(7)),
        ("would_recommend", text("unsure")),
        ("extra_costs", AnswerValue::Bool(false)),
        ("financial_hardship", text("some")),
        ("comments", text("still limping on the stairs")),
    ]);
    w.capture(
        Who::Phone,
        p17,
        "m1-survey",
        &survey,
        "month-1 outcome survey: a little better, satisfaction 7/10",
    )?;
    let ae = AdverseEvent {
        reporter: Reporter::Patient,
        category: "infection".into(),
        onset: d(p17, 38),
        severity: 3,
        seriousness: vec!["hospitalisation".into()],
        outcome: AeOutcome::Recovering,
        description: "Knee swollen, red and hot since last week, with fever at night; redness and swelling at the injection site".into(),
        procedure: Some(p17.procedure.to_hex()),
        answers: Answers::new(),
    };
    let ae_id = w
        .actor(Who::Phone)?
        .device
        .report_adverse_event(p17.id, &ae)?;
    w.n.say(format!(
        "{:<28} {} reports a complication: infection at the injection site, grade 3, hospitalised (onset {})",
        "KX-0417's phone", p17.code, ae.onset
    ));

    w.n.step(45, "tablet A's work list, before it has synced");
    w.visits(
        Who::A,
        45,
        &[VisitState::Overdue, VisitState::Due, VisitState::Missed],
        20,
    )?;
    w.n.say("(tablet B did KX-0422's and KX-0431's month-1 and KX-0436's day-7 visits offline: tablet A cannot know yet)");

    // ---- Everyone syncs.
    w.n.step(45, "the clinic is online again: everyone syncs");
    w.sync(Who::Phone).await?;
    w.sync(Who::A).await?;
    w.sync(Who::B).await?;
    w.sync(Who::A).await?;
    w.n.say(
        "what merged: tablet A now has tablet B's visits and the phone's survey and complication;",
    );
    w.n.say("tablet B has tablet A's visits; records written on different devices never clash.");
    w.n.step(45, "tablet A's work list, after syncing");
    w.visits(
        Who::A,
        45,
        &[VisitState::Overdue, VisitState::Due, VisitState::Missed],
        20,
    )?;

    // ---- Adjudication.
    w.n.step(46, "adverse events awaiting the clinic");
    w.n.say("the registry opened a case when it first accepted the report: the deadline is the");
    w.n.say("registry's (its policy, its clock), not the tablet's; the tablet only reads it");
    let queue = w.a.device.adjudication_queue(today)?;
    for i in &queue {
        let case = w.a.device.adverse_event(i.adverse_event)?.case;
        w.n.say(format!(
            "  {} {} case {}, deadline {}{}",
            codes.get(&i.patient).copied().unwrap_or("?"),
            &i.adverse_event.to_hex()[..8],
            i.state
                .map(|s| s.code())
                .unwrap_or("not at the registry yet"),
            i.deadline
                .map(|d| d.to_string())
                .unwrap_or_else(|| "not set yet".into()),
            case.map(|c| format!(
                " ({} days: rule \"{}\" of {}, opened {})",
                c.days, c.rule, c.policy, c.opened_at
            ))
            .unwrap_or_default()
        ));
    }
    w.a.device.adjudicate(ae_id, |adj| {
        adj.relatedness = Some(Relatedness::Probable);
        adj.action = "oral antibiotics and wound care; knee aspirated".into();
        adj.remedy = "treatment and review at no cost to the patient".into();
        adj.status = AdjudicationStatus::Responded;
    })?;
    let after = w.a.device.adjudication_queue(today)?;
    w.n.say(format!(
        "nurse Amara adjudicates: probably related, antibiotics and wound care, treated at no cost → {}",
        after
            .iter()
            .find(|i| i.adverse_event == ae_id)
            .map(|i| format!(
                "status {}, registry's deadline {}",
                i.status,
                i.deadline.map(|d| d.to_string()).unwrap_or_default()
            ))
            .unwrap_or_else(|| "resolved".into())
    ));
    w.sync(Who::A).await?;
    w.n.say(format!(
        "the registry records the decision: case {}",
        w.a.device
            .adverse_event(ae_id)?
            .state()
            .map(|s| s.code())
            .unwrap_or("?")
    ));

    // ---- The same follow-up edited on both tablets.
    w.n.step(93, "month-3 visit of KX-0422, recorded on tablet A");
    let m3 = w.capture(
        Who::A,
        p22,
        "m3",
        &followup(&d(p22, 91), "improved", 3, 4, 4),
        "month-3 follow-up: pain 4/10",
    )?;
    w.sync(Who::A).await?;
    w.sync(Who::B).await?;
    w.n.step(
        95,
        "both tablets amend the same submitted follow-up while offline",
    );
    w.a.device.amend_response(
        m3,
        &answers(vec![
            ("symptom_pain", AnswerValue::Int(3)),
            ("notes", text("pain down after physiotherapy")),
        ]),
        "pain re-scored after the physiotherapy review",
    )?;
    w.n.say(format!("{:<28} sets pain to 3 and adds a note", w.a.name));
    w.b.device.amend_response(
        m3,
        &answers(vec![
            ("symptom_pain", AnswerValue::Int(5)),
            ("weight_kg", AnswerValue::Decimal(81.2)),
        ]),
        "weight was missing; pain as reported today",
    )?;
    w.n.say(format!(
        "{:<28} sets pain to 5 and records the weight",
        w.b.name
    ));
    w.sync(Who::A).await?;
    w.sync(Who::B).await?;
    w.sync(Who::A).await?;
    let mut conflicts_seen = Vec::new();
    for c in w.a.device.conflicts(m3)? {
        let mut values = BTreeMap::new();
        let mut shown = None;
        for v in &c.values {
            let who = w.name(v.device);
            if v.winner {
                shown = Some(who.clone());
            }
            values.insert(who, v.value.clone());
        }
        w.n.say(format!(
            "CONFLICT on {} of KX-0422's month-3 follow-up:",
            c.path
        ));
        for (who, v) in &values {
            w.n.say(format!(
                "  {who:<28} {v}{}",
                if shown.as_deref() == Some(who.as_str()) {
                    "   ← shown on every device"
                } else {
                    ""
                }
            ));
        }
        conflicts_seen.push(ConflictSeen {
            record: m3,
            field: c.path.clone(),
            values,
            shown,
        });
    }
    let same = w.a.device.load(m3)?.get_heads() == w.b.device.load(m3)?.get_heads();
    w.n.say(format!(
        "the other edits merged (the note from A, the weight from B); both tablets hold the same record: {same}"
    ));

    // ---- The bad link.
    let backlog = if args.quick { 20 } else { 40 };
    w.n.step(150, "tablet B returns from an outreach trip with a backlog");
    let mut backlog_docs = 0u64;
    for i in 0..backlog {
        let day = 100 + (i as u64 % 30);
        let date = w.n.iso(day);
        let id = w.b.device.enrol_patient(&Enrolment {
            study_code: format!("OR-{:03}", i + 1),
            consent: Consent {
                form_version: "2.1".into(),
                date: date.clone(),
                scope: vec!["registry".into()],
            },
            birth_year: 1950 + (i as i64 * 7) % 50,
            sex: if i % 2 == 0 { Sex::Female } else { Sex::Male },
            enrolled_on: date.clone(),
        })?;
        let proc = (patients_spec()[i % 4].procedure)(date);
        let procedure = w.b.device.record_procedure(id, &proc)?;
        let p = Patient {
            code: "OR",
            id,
            procedure,
            day,
        };
        let mut a7 = followup(&w.n.iso(day + 7), "stable", 5, 3, 4);
        a7.insert("notes".into(), text("numbness in the left hand, resolving"));
        fill(
            &w.b.device,
            p.id,
            "clinician-followup",
            Some(procedure),
            Some("d7"),
            &a7,
            true,
        )?;
        let a30 = followup(&w.n.iso(day + 30), "improved", 4, 2, 3);
        fill(
            &w.b.device,
            p.id,
            "clinician-followup",
            Some(procedure),
            Some("m1"),
            &a30,
            true,
        )?;
        backlog_docs += 4;
    }
    w.n.say(format!(
        "{backlog} patients enrolled, their procedures and day-7 and month-1 follow-ups: {backlog_docs} records waiting"
    ));
    let every = Duration::from_millis(if args.quick { 1000 } else { 1500 });
    w.n.say(format!(
        "the clinic's link: 64 kbit/s, 500 ms round trip, and it drops every {}",
        output::duration(every)
    ));
    let link = LinkSim::start(
        w.server.addr,
        LinkConfig {
            cut: CutPolicy::Every(every),
            max_cuts: Some(3),
            ..LinkConfig::slow(8_000, Duration::from_millis(250))
        },
    )
    .await
    .map_err(|e| CliError::new(format!("could not start the link simulator: {e}")))?;
    let mut enrolled =
        w.b.device
            .enrolment()
            .ok_or_else(|| CliError::new("internal: tablet B is not enrolled"))?;
    let direct = enrolled.server_url.clone();
    enrolled.server_url = link.url();
    w.b.device.set_enrolment(enrolled.clone())?;
    let r = w.sync(Who::B).await;
    enrolled.server_url = direct;
    w.b.device.set_enrolment(enrolled)?;
    let r = r?;
    let stats = link.stats();
    let bad_link = BadLink {
        documents: r.pushed + r.pulled,
        round_trips: r.round_trips,
        attempts: r.attempts,
        cuts: stats.cuts,
        bytes_up: r.bytes_up,
        bytes_down: r.bytes_down,
        elapsed_ms: r.elapsed.as_millis() as u64,
    };
    w.n.say(format!(
        "the link was cut {} time(s){}: {} documents in {}, {} attempts for {} round trips",
        stats.cuts,
        if stats.cuts > 0 {
            "; the sync retried with smaller batches, resumed, and finished"
        } else {
            ""
        },
        r.pushed,
        output::duration(r.elapsed),
        r.attempts,
        r.round_trips
    ));
    drop(link);

    // ---- Final sync and checks.
    w.n.step(STORY_DAYS, "final sync of every device");
    for who in [Who::A, Who::B, Who::Phone, Who::A, Who::B, Who::Phone] {
        w.sync(who).await?;
    }
    let phone_dev = &w.actor(Who::Phone)?.device;
    let view = phone_dev.adverse_event(ae_id)?;
    if let Some((_, adj)) = &view.adjudication {
        w.n.say(format!(
            "KX-0417's phone reads the clinic's answer to her complication: {} related; {}; remedy: {} (case {}, deadline {})",
            adj.relatedness.map(|r| r.code()).unwrap_or("?"),
            adj.action,
            adj.remedy,
            view.state().map(|s| s.code()).unwrap_or("?"),
            view.case.as_ref().map(|c| c.deadline.as_str()).unwrap_or("?"),
        ));
        phone_dev.reply_to_adjudication(
            ae_id,
            followup_domain::model::Verdict::Accepted,
            "the knee is fine now; thank you",
        )?;
        w.n.say("she accepts it from her phone");
        w.sync(Who::Phone).await?;
        w.n.say(format!(
            "the registry closes the case: {}",
            w.actor(Who::Phone)?
                .device
                .adverse_event(ae_id)?
                .state()
                .map(|s| s.code())
                .unwrap_or("?")
        ));
        // Both of the clinic's tablets take in the closed case.
        w.sync(Who::A).await?;
        w.sync(Who::B).await?;
    }
    w.n.step(STORY_DAYS, "tablet A's work list today (overdue first)");
    w.visits(
        Who::A,
        STORY_DAYS,
        &[VisitState::Overdue, VisitState::Due],
        10,
    )?;
    let as_of = w.n.date(STORY_DAYS);
    let overdue =
        w.a.device
            .clinic_visits(as_of, Some(&[VisitState::Overdue]))?
            .len();
    let due =
        w.a.device
            .clinic_visits(as_of, Some(&[VisitState::Due]))?
            .len();
    let queue = w.a.device.adjudication_queue(today)?;
    w.n.say(format!(
        "adjudication queue: {} open item(s){}",
        queue.len(),
        queue
            .iter()
            .map(|i| format!(
                "; {} {} (deadline {})",
                codes.get(&i.patient).copied().unwrap_or("?"),
                i.status,
                i.deadline.map(|d| d.to_string()).unwrap_or_default()
            ))
            .collect::<String>()
    ));

    let stats = w
        .server
        .storage()
        .stats()
        .map_err(|e| CliError::new(format!("server statistics: {e}")))?;
    let audit = admin.verify_audit().await?;
    let mut replicas = Vec::new();
    let mut records_per_device = BTreeMap::new();
    for who in [Who::A, Who::B, Who::Phone] {
        let actor = w.actor(who)?;
        let r = check_replica(w.server.storage().as_ref(), actor)?;
        records_per_device.insert(actor.name.to_string(), r.documents);
        replicas.push(r);
    }
    let converged = replicas.iter().all(|r| r.differing == 0);

    // ---- Another clinic ignores an adverse event; the registry escalates it.
    w.n.step(STORY_DAYS, "another clinic ignores an adverse event");
    let clinic2 = admin.create_clinic("Clínica Boa Vista", "BR").await?;
    let tablet_c = create_device(dir, "tablet-c.db")?;
    let code = admin
        .issue_code(EnrolmentGrant::ClinicDevice { clinic: clinic2 }, None)
        .await?;
    let e = w
        .client
        .enrol(
            &tablet_c,
            &w.server.url(),
            &code.code,
            "Tablet C, Boa Vista",
        )
        .await?;
    w.names.insert(e.device_id, "tablet C (Boa Vista)");
    let ago = |n: u64| {
        today
            .checked_sub_days(Days::new(n))
            .unwrap_or(today)
            .format("%Y-%m-%d")
            .to_string()
    };
    let bv = tablet_c.enrol_patient(&Enrolment {
        study_code: "BV-0102".into(),
        consent: Consent {
            form_version: "1.0".into(),
            date: ago(20),
            scope: vec!["registry".into()],
        },
        birth_year: 1958,
        sex: Sex::Male,
        enrolled_on: ago(20),
    })?;
    let spec = patients_spec();
    let bv_proc = tablet_c.record_procedure(bv, &(spec[0].procedure)(ago(20)))?;
    let ae_c = tablet_c.report_adverse_event(
        bv,
        &AdverseEvent {
            reporter: Reporter::Clinic,
            category: "immune_reaction".into(),
            onset: ago(3),
            severity: 2,
            seriousness: Vec::new(),
            outcome: AeOutcome::Recovering,
            description: "rash and itching on both arms after the infusion".into(),
            procedure: Some(bv_proc.to_hex()),
            answers: Answers::new(),
        },
    )?;
    let r = device_cmd::sync_with_bar(&w.client, &tablet_c, "tablet C (Boa Vista)", true)
        .await
        .map_err(|e| e.context("tablet C could not sync"))?;
    w.add(&r);
    let case = tablet_c.adverse_event(ae_c)?.case;
    w.n.say(format!(
        "tablet C (Boa Vista) reports BV-0102's rash (grade 2) and syncs: the registry opens the case, deadline {} ({})",
        case.as_ref().map(|c| c.deadline.as_str()).unwrap_or("?"),
        case.as_ref()
            .map(|c| format!("{} days, rule \"{}\"", c.days, c.rule))
            .unwrap_or_default()
    ));
    w.n.say("the clinic never answers. The registry's clock moves 31 days on (the demo moves it; a deployed server runs on its system clock):");
    w.server
        .advance_registry_clock(Duration::from_secs(31 * 86_400));
    for k in admin.cases(None, Some("overdue")).await? {
        w.n.say(format!(
            "  registry staff see: case of {} at clinic {} is {} (deadline {})",
            &k.adverse_event.to_hex()[..8],
            &k.clinic.to_hex()[..8],
            k.state,
            k.deadline
        ));
    }
    let note =
        "Overdue: adjudicate BV-0102's reaction and tell the patient the remedy within 48 hours";
    let k = admin.escalate(ae_c, note).await?;
    w.n.say(format!("registry staff escalate it → case {}", k.state));
    let r = device_cmd::sync_with_bar(&w.client, &tablet_c, "tablet C (Boa Vista)", true)
        .await
        .map_err(|e| e.context("tablet C could not sync"))?;
    w.add(&r);
    let view = tablet_c.adverse_event(ae_c)?;
    w.n.say(format!(
        "tablet C syncs and shows: case {}, the registry's note: \"{}\"",
        view.state().map(|s| s.code()).unwrap_or("?"),
        view.case
            .as_ref()
            .and_then(|c| c.escalations.last())
            .map(|e| e.note.as_str())
            .unwrap_or("")
    ));

    w.n.step(STORY_DAYS, "the registry");
    w.n.say(format!(
        "{} documents, {} devices, {} audit entries; audit chain {}",
        stats.documents,
        stats.devices,
        stats.audit_entries,
        if audit.ok { "verified" } else { "BROKEN" }
    ));
    for r in &replicas {
        w.n.say(format!(
            "{:<28} {:>3} records, same heads as the server for {} of {}",
            r.device,
            r.documents,
            r.server_documents - r.differing.min(r.server_documents),
            r.server_documents
        ));
    }
    w.n.say(format!(
        "converged: {}",
        if converged {
            "yes, every replica equals the server"
        } else {
            "NO"
        }
    ));
    w.n.say(format!(
        "sync totals: {} syncs, {} round trips ({} attempts), {} up, {} down, {} spent syncing",
        w.totals.syncs,
        w.totals.round_trips,
        w.totals.attempts,
        output::bytes(w.totals.bytes_up),
        output::bytes(w.totals.bytes_down),
        output::duration(w.totals.elapsed)
    ));
    if let Some(d) = &args.data {
        w.n.say(format!(
            "kept in {}: the stores are encrypted; open one with\n  FOLLOWUP_PASSPHRASE='{DEMO_PASSPHRASE}' followup device --store {} patients",
            d.display(),
            d.join("tablet-a.db").display()
        ));
    }
    spin.finish_and_clear();

    // ---- The staff console: an admin account on the demo's registry.
    let console_email = "admin@registry.example".to_string();
    let storage = w.server.storage().clone();
    let created = tokio::task::spawn_blocking(move || {
        followup_server::staff::create_staff(
            storage.as_ref(),
            "admin@registry.example",
            followup_server::staff::Role::RegistryAdmin,
            None,
            followup_server::staff::FirstSignIn::Password,
            false,
            followup_server::staff::BOOTSTRAP_ACTOR,
            followup_server::auth::now_ms(),
        )
    })
    .await
    .map_err(|e| CliError::new(format!("creating the console account failed: {e}")))?
    .map_err(|e| CliError::new(format!("creating the console account failed: {e}")))?;
    let console = ConsoleLogin {
        url: format!("{}/console", w.server.url()),
        email: console_email,
        password: created.password.unwrap_or_default(),
    };
    w.n.step(STORY_DAYS, "the staff console");
    w.n.say(format!("console: {}", console.url));
    w.n.say(format!(
        "sign in as {} with password {}",
        console.email, console.password
    ));
    w.n.say(format!(
        "public participation page: {}/participation",
        w.server.url()
    ));
    if !args.serve {
        w.n.say("(run with --serve to keep the server running and open the console)");
    }

    let summary = Summary {
        records_per_device,
        server_documents: stats.documents,
        conflicts_seen,
        syncs: w.totals.syncs,
        round_trips: w.totals.round_trips,
        attempts: w.totals.attempts,
        bytes_up: w.totals.bytes_up,
        bytes_down: w.totals.bytes_down,
        sync_ms: w.totals.elapsed.as_millis() as u64,
        bad_link,
        adjudication_queue: queue.len(),
        visits_overdue: overdue,
        visits_due: due,
        audit_ok: audit.ok,
        converged,
        replicas,
        elapsed_ms: started.elapsed().as_millis() as u64,
        data_dir: args.data.clone(),
        console,
    };
    let World {
        server,
        a,
        b,
        phone,
        ..
    } = w;
    drop((a, b, phone));
    if args.serve {
        if args.json {
            output::print_json(&summary)?;
        }
        eprintln!(
            "the registry keeps running on {}: open {}/console (Ctrl-C stops it)",
            server.url(),
            server.url()
        );
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
    server
        .shutdown()
        .await
        .map_err(|e| CliError::new(format!("the demo's server did not stop cleanly: {e}")))?;
    Ok(summary)
}

/// Compare a device's documents and heads with the server's documents of its scope.
fn check_replica(storage: &dyn Storage, actor: &Actor) -> Result<Replica, CliError> {
    let se = |e: followup_server::storage::StorageError| {
        CliError::new(format!("reading the server's database: {e}"))
    };
    let enrolled = actor
        .device
        .enrolment()
        .ok_or_else(|| CliError::new(format!("{} is not enrolled", actor.name)))?;
    let scope = match enrolled.role {
        DeviceRole::ClinicDevice => ReadScope::Clinic(enrolled.clinic),
        DeviceRole::PatientDevice => ReadScope::Patient(
            enrolled
                .patient
                .ok_or_else(|| CliError::new("a patient device without a patient"))?,
        ),
    };
    let max = storage.max_seq().map_err(se)?;
    let mut server: BTreeMap<RecordId, Vec<automerge::ChangeHash>> = BTreeMap::new();
    for (id, _) in storage
        .changed_docs(scope, 0, max, usize::MAX)
        .map_err(se)?
    {
        if let Some(doc) = storage.load_doc(id).map_err(se)? {
            let mut h = doc.heads;
            h.sort();
            server.insert(id, h);
        }
    }
    let mut local: BTreeMap<RecordId, Vec<automerge::ChangeHash>> = BTreeMap::new();
    for m in actor.device.store().list(&Query::default())? {
        let mut h = actor.device.load(m.id)?.get_heads();
        h.sort();
        local.insert(m.id, h);
    }
    let differing = server
        .keys()
        .chain(local.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|id| server.get(id) != local.get(id))
        .count() as u64;
    Ok(Replica {
        device: actor.name.to_string(),
        documents: local.len() as u64,
        server_documents: server.len() as u64,
        differing,
    })
}
