//! `followup device show | drafts | discard | resolve`, the file formats `add-procedure --format`
//! and `fill --format` print, and the allowed choices listed when a value is not one of them.
//! Names, not hex ids: a patient is shown by study code, a visit by its label, this device as
//! "this device".

use std::collections::BTreeMap;

use followup_device::app::{Discarded, RecordBodyView};
use followup_device::device::Device;
use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::model::{
    AeOutcome, CellType, Manipulation, Origin, Procedure, RegulatoryStatus, Route, SourceTissue,
};
use followup_domain::questionnaire::{AnswerValue, Problem, ProblemCode, Questionnaire};

use crate::device_cmd::study_codes;
use crate::error::CliError;
use crate::output;

static STORE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Remember the store the command works on, for the "next:" hints.
pub fn set_store(path: &std::path::Path) {
    let _ = STORE.set(path.display().to_string());
}

/// `followup device --store PATH REST`: a command that runs as shown (the store is named unless
/// it is the default one or FOLLOWUP_STORE names it).
pub fn device_cmd(rest: &str) -> String {
    let store = STORE
        .get()
        .map(String::as_str)
        .unwrap_or("followup-device.db");
    let named_by_env = std::env::var("FOLLOWUP_STORE").is_ok_and(|s| s == store);
    if store == "followup-device.db" || named_by_env {
        format!("followup device {rest}")
    } else if store
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
    {
        format!("followup device --store {store} {rest}")
    } else {
        format!(
            "followup device --store '{}' {rest}",
            store.replace('\'', "'\\''")
        )
    }
}

/// Print a "next:" hint for a device command.
pub fn next(rest: &str) {
    println!("next: {}", device_cmd(rest));
}

/// A record id given on the command line.
pub fn parse_record(s: &str) -> Result<RecordId, CliError> {
    s.trim().parse().map_err(|_| {
        CliError::new(format!("{s:?} is not a record id"))
            .hint("ids are 32 hexadecimal characters, as printed when the record was saved")
    })
}

/// Who wrote something, in words.
pub fn who(device: &Device, d: Option<DeviceId>) -> String {
    let me = device.enrolment().map(|e| e.device_id);
    match d {
        Some(d) if Some(d) == me => "this device".into(),
        Some(d) => format!("device {}", &d.to_hex()[..8]),
        None => "the registry".into(),
    }
}

/// A patient's study code, or their id when the device does not hold their enrolment.
pub fn patient_name(codes: &BTreeMap<RecordId, String>, p: Option<RecordId>) -> String {
    match p {
        Some(p) => codes.get(&p).cloned().unwrap_or_else(|| p.to_hex()),
        None => "-".into(),
    }
}

/// A visit id with its label (`d7 (Day 7 clinician follow-up)`), from the schedules the device
/// holds.
pub fn visit_name(device: &Device, visit: Option<&str>) -> String {
    let Some(v) = visit else {
        return "-".into();
    };
    let catalogue = device.catalogue().ok();
    let label: Option<String> = catalogue.as_ref().and_then(|cat| {
        cat.schedules()
            .iter()
            .find_map(|s| s.visit(v).map(|visit| visit.label.clone()))
    });
    match label {
        Some(l) => format!("{v} ({l})"),
        None => v.to_string(),
    }
}

/// A record in words: `response 3f… — patient KX-1, clinician-followup, visit d7 (Day 7 …)`.
pub fn describe(device: &Device, codes: &BTreeMap<RecordId, String>, id: RecordId) -> String {
    let Ok(view) = device.record(id) else {
        return format!("record {id}");
    };
    let mut s = format!(
        "{} {id} — patient {}",
        view.header.kind.code().replace('_', " "),
        patient_name(codes, view.header.patient)
    );
    if let RecordBodyView::Response { response, .. } = &view.body {
        s.push_str(&format!(", {}", response.questionnaire));
        if response.visit.is_some() {
            s.push_str(&format!(
                ", visit {}",
                visit_name(device, response.visit.as_deref())
            ));
        }
    }
    s
}

fn json_value(v: &AnswerValue) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| format!("{v:?}"))
}

/// `followup device show RECORD`.
pub fn show(device: &Device, record: &str, json: bool) -> Result<(), CliError> {
    let id = parse_record(record)?;
    let view = device.record(id)?;
    let codes = study_codes(device)?;
    let h = &view.header;
    let patient = patient_name(&codes, h.patient);
    let body_json = |v: serde_json::Result<serde_json::Value>| {
        v.map_err(|e| CliError::new(format!("could not encode the record: {e}")))
    };
    if json {
        let (body, scores) = match &view.body {
            RecordBodyView::Clinic(b) => (body_json(serde_json::to_value(b))?, None),
            RecordBodyView::Enrolment(b) => (body_json(serde_json::to_value(b))?, None),
            RecordBodyView::Procedure(b) => (body_json(serde_json::to_value(b))?, None),
            RecordBodyView::Response { response, scores } => {
                (body_json(serde_json::to_value(response))?, Some(scores))
            }
            RecordBodyView::AdverseEvent(b) => (body_json(serde_json::to_value(b))?, None),
            RecordBodyView::Adjudication(b) => (body_json(serde_json::to_value(b))?, None),
        };
        return output::print_json(&serde_json::json!({
            "record": id, "kind": h.kind.code(), "clinic": h.clinic, "patient": h.patient,
            "study_code": h.patient.and_then(|p| codes.get(&p)), "created_by": h.created_by,
            "body": body, "scores": scores,
        }));
    }
    println!("{} {id}", h.kind.code().replace('_', " "));
    println!("  patient      {patient}");
    println!("  created by   {}", who(device, h.created_by));
    match &view.body {
        RecordBodyView::Clinic(c) => {
            println!("  name         {}", c.name);
            println!("  country      {}", c.country);
            println!("  participation {}", c.participation.code());
        }
        RecordBodyView::Enrolment(e) => {
            println!("  study code   {}", e.study_code);
            println!("  enrolled on  {}", e.enrolled_on);
            println!("  birth year   {}", e.birth_year);
            println!("  sex          {}", e.sex.code());
            println!(
                "  consent      form {} of {} ({})",
                e.consent.form_version,
                e.consent.date,
                e.consent.scope.join(", ")
            );
        }
        RecordBodyView::Procedure(p) => {
            println!("  date         {}", p.date);
            println!("  condition    {}", p.condition);
            println!("  type         {}", p.procedure_type);
            println!("  route        {}", p.route.code());
            println!(
                "  cells        {} from {} ({}, {})",
                p.cell_type.code(),
                p.source_tissue.code(),
                p.origin.code(),
                p.manipulation.code()
            );
            println!(
                "  regulatory   {}{}",
                p.regulatory_status.code(),
                p.trial_registration
                    .as_deref()
                    .map(|t| format!(", {t}"))
                    .unwrap_or_default()
            );
            for b in &p.promised_benefits {
                println!("  promised     {} (measured by {})", b.benefit, b.measure);
            }
            if let Some(c) = &p.cost {
                println!(
                    "  cost         {} {}",
                    c.amount_minor as f64 / 100.0,
                    c.currency
                );
            }
        }
        RecordBodyView::Response { response, scores } => {
            println!(
                "  questionnaire {} v{}",
                response.questionnaire, response.questionnaire_version
            );
            println!(
                "  visit        {}",
                visit_name(device, response.visit.as_deref())
            );
            println!("  status       {}", response.status.code());
            if let Some(at) = &response.submitted_at {
                println!("  submitted at {at}");
            }
            println!("  completed by {}", response.completed_by.code());
            // The version the response was started with, as the device holds it.
            let q = device
                .questionnaire_version(&response.questionnaire, &response.questionnaire_version)
                .ok();
            for (item, value) in &response.answers {
                let label = q
                    .as_ref()
                    .and_then(|q| q.item(item))
                    .map(|i| format!("  ({})", i.text))
                    .unwrap_or_default();
                println!("    {item:<24} {}{label}", json_value(value));
            }
            for (score, value) in scores {
                println!(
                    "  score {score:<18} {}",
                    value.map_or("not computable yet".to_string(), |v| format!("{v:.2}"))
                );
            }
        }
        RecordBodyView::AdverseEvent(a) => {
            println!("  reporter     {}", a.reporter.code());
            println!("  category     {}", a.category);
            println!("  onset        {}", a.onset);
            println!("  severity     grade {}", a.severity);
            if !a.seriousness.is_empty() {
                println!("  seriousness  {}", a.seriousness.join(", "));
            }
            println!("  outcome      {}", a.outcome.code());
            println!("  description  {}", a.description);
        }
        RecordBodyView::Adjudication(a) => {
            println!("  adverse event {}", a.adverse_event);
            println!(
                "  relatedness  {}",
                a.relatedness.map_or("not decided", |r| r.code())
            );
            println!("  action       {}", a.action);
            println!("  remedy       {}", a.remedy);
            println!("  status       {}", a.status.code());
            if !a.deadline.is_empty() {
                println!("  deadline     {}", a.deadline);
            }
        }
    }
    let conflicts = device.conflicts(id)?;
    if !conflicts.is_empty() {
        println!(
            "  {} conflicted field(s): see `followup device conflicts {id}`",
            conflicts.len()
        );
    }
    Ok(())
}

/// `followup device drafts`.
pub fn drafts(device: &Device, patient: Option<RecordId>, json: bool) -> Result<(), CliError> {
    let list = device.drafts(patient)?;
    let codes = study_codes(device)?;
    if json {
        let v: Vec<_> = list
            .iter()
            .map(|d| {
                serde_json::json!({
                    "record": d.id, "patient": d.patient, "study_code": codes.get(&d.patient),
                    "questionnaire": d.questionnaire, "visit": d.visit,
                    "answered": d.answered, "last_saved": d.last_saved,
                })
            })
            .collect();
        return output::print_json(&v);
    }
    if list.is_empty() {
        println!("no drafts on this device");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            vec![
                patient_name(&codes, Some(d.patient)),
                d.questionnaire.clone(),
                visit_name(device, d.visit.as_deref()),
                d.answered.to_string(),
                d.last_saved
                    .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                    .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default(),
                d.id.to_hex(),
            ]
        })
        .collect();
    output::print_table(
        &[
            "patient",
            "questionnaire",
            "visit",
            "answered",
            "last saved",
            "draft",
        ],
        &rows,
    );
    if let Some(d) = list.first() {
        println!(
            "next: {}   (or: {})",
            device_cmd(&format!("fill --resume {} --answers ANSWERS.json", d.id)),
            device_cmd(&format!("discard {}", d.id))
        );
    }
    Ok(())
}

/// `followup device discard RECORD`.
pub fn discard(device: &Device, record: &str) -> Result<(), CliError> {
    let id = parse_record(record)?;
    match device.discard_draft(id)? {
        Discarded::Deleted => println!("draft {id} deleted (the registry never had it)"),
        Discarded::MarkedDiscarded => {
            println!("draft {id} marked discarded");
            next("sync");
        }
    }
    Ok(())
}

/// The value a user typed for an answer: JSON (`3`, `true`, `"text"`, `["a","b"]`) or, when it
/// is not JSON, the text itself (`improved`).
pub fn parse_answer(s: &str) -> AnswerValue {
    serde_json::from_str::<AnswerValue>(s.trim()).unwrap_or_else(|_| AnswerValue::Text(s.into()))
}

/// `followup device resolve RECORD ITEM VALUE`.
pub fn resolve(device: &Device, record: &str, item: &str, value: &str) -> Result<(), CliError> {
    let id = parse_record(record)?;
    let value = parse_answer(value);
    let before = device.conflicts(id)?;
    let path = format!("answers.{item}");
    if !before.iter().any(|c| c.path == path) {
        let listed: Vec<String> = before
            .iter()
            .filter_map(|c| c.path.strip_prefix("answers.").map(str::to_string))
            .collect();
        return Err(
            CliError::new(format!("answer {item:?} of {id} is not in conflict")).hint(
                if listed.is_empty() {
                    "see `followup device conflicts` for the conflicted answers".to_string()
                } else {
                    format!("conflicted answers of this record: {}", listed.join(", "))
                },
            ),
        );
    }
    device.resolve_answer(id, item, &value)?;
    println!("{item} of {id} set to {}", json_value(&value));
    next("sync");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// File formats

fn codes<T: Copy>(all: &[T], code: impl Fn(T) -> &'static str) -> String {
    all.iter().map(|v| code(*v)).collect::<Vec<_>>().join(" | ")
}

/// What `add-procedure --file` expects, with every code allowed.
pub fn procedure_format() -> String {
    let example = Procedure {
        date: "2026-01-05".into(),
        condition: "knee osteoarthritis".into(),
        procedure_type: "cell injection".into(),
        route: Route::IntraArticular,
        cell_type: CellType::Mesenchymal,
        source_tissue: SourceTissue::Adipose,
        origin: Origin::Autologous,
        manipulation: Manipulation::Minimal,
        regulatory_status: RegulatoryStatus::Unregulated,
        trial_registration: None,
        promised_benefits: vec![followup_domain::model::PromisedBenefit {
            benefit: "less pain".into(),
            measure: "pain 0-10".into(),
        }],
        cost: Some(followup_domain::model::Cost {
            amount_minor: 850_000,
            currency: "USD".into(),
        }),
    };
    let json = serde_json::to_string_pretty(&example).unwrap_or_default();
    format!(
        "A procedure file is one JSON object, for example:\n{json}\n\nfields:\n  \
         date                YYYY-MM-DD, the day it was performed\n  \
         condition           text: the condition treated\n  \
         procedure_type      text, e.g. \"autologous haematopoietic stem cell transplant\"\n  \
         route               {}\n  \
         cell_type           {}\n  \
         source_tissue       {}\n  \
         origin              {}\n  \
         manipulation        {}\n  \
         regulatory_status   {}\n  \
         trial_registration  null or a registration such as \"NCT01234567\"\n  \
         promised_benefits   a list of {{\"benefit\": text, \"measure\": text}} (may be empty)\n  \
         cost                null or {{\"amount_minor\": cents, \"currency\": \"USD\"}}",
        codes(Route::ALL, |v| v.code()),
        codes(CellType::ALL, |v| v.code()),
        codes(SourceTissue::ALL, |v| v.code()),
        codes(Origin::ALL, |v| v.code()),
        codes(Manipulation::ALL, |v| v.code()),
        codes(RegulatoryStatus::ALL, |v| v.code()),
    )
}

/// What `fill --answers` expects for a questionnaire: each item with its type, whether it is
/// required, its range or its allowed choices.
pub fn answers_format(q: &Questionnaire) -> String {
    let mut out = format!(
        "An answers file for {} ({} v{}) is one JSON object {{\"item_id\": value, ...}}.\n\
         Types: integer and scale 3; decimal 12.5; boolean true/false; date \"YYYY-MM-DD\";\n\
         text \"...\"; single choice \"code\"; multiple choice [\"code\", ...].\n\
         Items marked * are required when enabled; 'if' items apply only when their condition holds.\n\n",
        q.id(),
        q.title(),
        q.version()
    );
    for item in q.items() {
        let mut line = format!(
            "{}{:<26} {:<16}",
            if item.required { "*" } else { " " },
            item.id,
            item.item_type.code()
        );
        if !item.choices.is_empty() {
            line.push_str(
                &item
                    .choices
                    .iter()
                    .map(|c| c.code.as_str())
                    .collect::<Vec<_>>()
                    .join(" | "),
            );
        } else if let (Some(min), Some(max)) = (item.effective_min(), item.effective_max()) {
            line.push_str(&format!("{min} to {max}"));
        }
        if !item.enable_when.is_empty() {
            line.push_str("   (if: ");
            line.push_str(
                &item
                    .enable_when
                    .iter()
                    .map(|c| c.item.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            line.push(')');
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Validation problems, each unknown choice followed by the choices allowed.
pub fn problems_with_choices(
    q: &Questionnaire,
    problems: &[Problem],
    what_to_do: &str,
) -> CliError {
    let mut e = CliError::validation(problems, what_to_do);
    e.details = problems
        .iter()
        .map(|p| {
            let allowed = match p.code {
                ProblemCode::UnknownChoice => q.item(&p.item).map(|i| {
                    i.choices
                        .iter()
                        .map(|c| c.code.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }),
                ProblemCode::UnknownItem => Some(format!(
                    "items are listed by `followup device fill --questionnaire {} --format`",
                    q.id()
                )),
                _ => None,
            };
            match allowed {
                Some(a) if p.code == ProblemCode::UnknownChoice => {
                    format!("  - {} (allowed: {a})", p.message)
                }
                Some(a) => format!("  - {} ({a})", p.message),
                None => format!("  - {}", p.message),
            }
        })
        .collect();
    e
}

/// The codes of the enums a user types on the command line, for error hints.
pub fn allowed_outcomes() -> String {
    codes(AeOutcome::ALL, |v| v.code()).replace(" | ", ", ")
}
