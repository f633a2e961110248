//! The CSV export: RFC 4180 (comma, `"` quoting, CRLF line ends), UTF-8 without BOM, a header
//! row in every file.
//!
//! | file | one row per |
//! |---|---|
//! | `clinics.csv` | clinic |
//! | `patients.csv` | enrolment |
//! | `procedures.csv` | procedure |
//! | `responses.csv` | response (its metadata; any questionnaire) |
//! | `responses__<questionnaire>__<version>.csv` | response to that questionnaire version: one column per item, coded |
//! | `adverse_events.csv` | adverse event |
//! | `adjudications.csv` | adjudication |
//! | `data_dictionary.csv` | column of every file above (REDCap-style) |
//! | `README.txt` | the export: scope, options, de-identification applied, counts |

use std::collections::BTreeMap;
use std::sync::Arc;

use followup_domain::model::{RecordKind, ResponseStatus};
use followup_domain::questionnaire::{AnswerValue, Item, ItemType, Questionnaire};

use super::deid::{
    age, birth_year_withheld, export_date, is_code, is_currency, is_slug, is_token_with_digit,
    procedure_type_code, ExportDate, IdKind,
};
use super::sink::{Sink, Spool};
use super::source::{Body, SourceRecord};
use super::{AdjudicationRec, Ctx, ExportError, FormatWriter};

/// One column of a fixed table.
#[derive(Debug, Clone, Copy)]
pub struct Col {
    pub name: &'static str,
    pub label: &'static str,
    /// Dictionary type: `id`, `text`, `code`, `integer`, `decimal`, `boolean`, `year`, `day`,
    /// `date`, `datetime`, `list`.
    pub typ: &'static str,
    /// What de-identification does to it.
    pub deid: &'static str,
    /// Present only in identified exports.
    pub identified_only: bool,
}

const fn c(name: &'static str, label: &'static str, typ: &'static str) -> Col {
    Col {
        name,
        label,
        typ,
        deid: "",
        identified_only: false,
    }
}
const fn d(name: &'static str, label: &'static str, typ: &'static str, deid: &'static str) -> Col {
    Col {
        name,
        label,
        typ,
        deid,
        identified_only: false,
    }
}
const fn idf(name: &'static str, label: &'static str, typ: &'static str) -> Col {
    Col {
        name,
        label,
        typ,
        deid: "withheld (identified exports only)",
        identified_only: true,
    }
}

const KEYED: &str = "re-keyed per export (HMAC-SHA256, random key never stored)";
const YEAR: &str = "year only";
const DAY: &str = "days from the procedure date (the record's procedure, else the patient's first)";
const CODED: &str = "kept only when it is a code; otherwise empty (withheld)";

pub const CLINICS: &[Col] = &[
    d("clinic_id", "Clinic", "id", KEYED),
    c("name", "Clinic name", "text"),
    c("country", "Country (ISO 3166-1 alpha-2)", "code"),
    c("participation", "Participation in the registry", "code"),
    c(
        "accreditations",
        "Accreditations: body:since:until, separated by ;",
        "list",
    ),
];

pub const PATIENTS: &[Col] = &[
    d("patient_id", "Patient (pseudonymous)", "id", KEYED),
    d("clinic_id", "Enrolling clinic", "id", KEYED),
    idf(
        "study_code",
        "The clinic's study code for the patient",
        "text",
    ),
    c("sex", "Sex", "code"),
    d(
        "birth_year",
        "Birth year",
        "year",
        "empty when the patient is 90 or older",
    ),
    d(
        "age_at_procedure",
        "Age in years at the first procedure",
        "text",
        "90 and over grouped as 90+; empty for a patient aged 90 or over today",
    ),
    c("age_90_or_over", "Aged 90 or over today", "boolean"),
    d(
        "consent_form_version",
        "Consent form version",
        "text",
        CODED,
    ),
    d(
        "consent_scope",
        "Consent scope codes, separated by ;",
        "list",
        CODED,
    ),
    d("consent_year", "Consent signed: year", "year", YEAR),
    d("consent_day", "Consent signed: day", "day", DAY),
    idf("consent_date", "Consent signed: date", "date"),
    d("enrolled_year", "Enrolled: year", "year", YEAR),
    d("enrolled_day", "Enrolled: day", "day", DAY),
    idf("enrolled_date", "Enrolled: date", "date"),
    c(
        "conflicted_fields",
        "Fields two devices set to different values, separated by ; (this row has the value the registry shows)",
        "list",
    ),
];

pub const PROCEDURES: &[Col] = &[
    d("procedure_id", "Procedure", "id", KEYED),
    d("patient_id", "Patient", "id", KEYED),
    d("clinic_id", "Clinic", "id", KEYED),
    d("procedure_year", "Procedure: year", "year", YEAR),
    d(
        "procedure_day",
        "Procedure: days from the patient's first procedure",
        "day",
        DAY,
    ),
    idf("procedure_date", "Procedure: date", "date"),
    idf("condition", "Condition treated (free text)", "text"),
    d(
        "procedure_type",
        "Procedure type (ahsct, allo_hsct, cell_infusion, cell_injection, other)",
        "code",
        CODED,
    ),
    idf("procedure_type_text", "Procedure type as recorded", "text"),
    c("route", "Route of administration", "code"),
    c("cell_type", "Cell type", "code"),
    c("source_tissue", "Source tissue", "code"),
    c("origin", "Autologous or allogeneic", "code"),
    c("manipulation", "Manipulation", "code"),
    c("regulatory_status", "Regulatory status", "code"),
    d(
        "trial_registration",
        "Trial registration (e.g. NCT number)",
        "text",
        "kept only when it is one registration token",
    ),
    idf(
        "promised_benefits",
        "Promised benefits and measures: benefit => measure, separated by ;",
        "text",
    ),
    c(
        "cost_amount_minor",
        "Cost in minor units (cents)",
        "integer",
    ),
    d("cost_currency", "Cost currency (ISO 4217)", "code", CODED),
    c(
        "conflicted_fields",
        "Fields two devices set to different values, separated by ; (this row has the value the registry shows)",
        "list",
    ),
];

pub const RESPONSES: &[Col] = &[
    d("response_id", "Response", "id", KEYED),
    d("patient_id", "Patient", "id", KEYED),
    d("clinic_id", "Clinic", "id", KEYED),
    d("procedure_id", "Procedure followed up", "id", KEYED),
    c("questionnaire", "Questionnaire id", "code"),
    c("questionnaire_version", "Questionnaire version", "text"),
    c("visit", "Schedule visit (d7, m1, m3, ...)", "code"),
    c("status", "draft or submitted", "code"),
    c("completed_by", "nurse or patient", "code"),
    d("submitted_year", "Submitted: year", "year", YEAR),
    d("submitted_day", "Submitted: day", "day", DAY),
    idf("submitted_at", "Submitted: date-time (UTC)", "datetime"),
    c(
        "items_file",
        "The file holding this response's answers",
        "text",
    ),
    c(
        "conflicted_fields",
        "Fields two devices set to different values, separated by ; (this row has the value the registry shows)",
        "list",
    ),
];

pub const ADVERSE_EVENTS: &[Col] = &[
    d("adverse_event_id", "Adverse event", "id", KEYED),
    d("patient_id", "Patient", "id", KEYED),
    d("clinic_id", "Clinic", "id", KEYED),
    d("procedure_id", "Suspected procedure", "id", KEYED),
    c("reporter", "patient or clinic", "code"),
    d("category", "Category code", "code", CODED),
    d("onset_year", "Onset: year", "year", YEAR),
    d("onset_day", "Onset: day", "day", DAY),
    idf("onset_date", "Onset: date", "date"),
    c(
        "severity_grade",
        "Severity grade 1-5 (CTCAE-style)",
        "integer",
    ),
    c("serious", "Any seriousness criterion met", "boolean"),
    d(
        "seriousness",
        "Seriousness criteria, separated by ;",
        "list",
        CODED,
    ),
    c("outcome", "Outcome", "code"),
    idf("description", "Description (free text)", "text"),
    c("adjudications", "Number of adjudications", "integer"),
    c(
        "conflicted_fields",
        "Fields two devices set to different values, separated by ; (this row has the value the registry shows)",
        "list",
    ),
];

pub const ADJUDICATIONS: &[Col] = &[
    d("adjudication_id", "Adjudication", "id", KEYED),
    d("adverse_event_id", "Adverse event", "id", KEYED),
    d("patient_id", "Patient", "id", KEYED),
    d("clinic_id", "Adjudicating clinic", "id", KEYED),
    c("relatedness", "Relatedness to the procedure", "code"),
    c("status", "Adjudication status", "code"),
    d("deadline_year", "Deadline: year", "year", YEAR),
    d("deadline_day", "Deadline: day", "day", DAY),
    idf("deadline_date", "Deadline: date", "date"),
    d("decided_year", "Last decision: year", "year", YEAR),
    d("decided_day", "Last decision: day", "day", DAY),
    idf("decided_at", "Last decision: date-time (UTC)", "datetime"),
    idf("action", "Action taken (free text)", "text"),
    idf("remedy", "Remedy offered (free text)", "text"),
    c(
        "conflicted_fields",
        "Fields two devices set to different values, separated by ; (this row has the value the registry shows)",
        "list",
    ),
];

/// The data dictionary's columns (REDCap's, adapted).
const DICTIONARY: [&str; 15] = [
    "file",
    "variable",
    "label",
    "type",
    "choices",
    "min",
    "max",
    "decimals",
    "max_length",
    "required",
    "branching_logic",
    "questionnaire",
    "questionnaire_version",
    "deidentification",
    "note",
];

/// A CSV file being filled, with the columns it keeps.
struct Table {
    name: String,
    cols: &'static [Col],
    keep: Vec<bool>,
    out: csv::Writer<Spool>,
    rows: u64,
}

fn writer(spool: Spool) -> csv::Writer<Spool> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(spool)
}

impl Table {
    fn new(name: &str, cols: &'static [Col], identified: bool) -> Result<Self, ExportError> {
        let keep: Vec<bool> = cols
            .iter()
            .map(|c| identified || !c.identified_only)
            .collect();
        let mut out = writer(Spool::new()?);
        out.write_record(
            cols.iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(c, _)| c.name),
        )?;
        Ok(Table {
            name: name.to_string(),
            cols,
            keep,
            out,
            rows: 0,
        })
    }

    /// Write a row given a value for every column (identified-only values are dropped here in a
    /// de-identified export, whatever the caller passed).
    fn row(&mut self, values: &[String]) -> Result<(), ExportError> {
        if values.len() != self.cols.len() {
            return Err(ExportError::Internal(format!(
                "{}: {} values for {} columns",
                self.name,
                values.len(),
                self.cols.len()
            )));
        }
        self.out.write_record(
            values
                .iter()
                .zip(&self.keep)
                .filter(|(_, k)| **k)
                .map(|(v, _)| v.as_str()),
        )?;
        self.rows += 1;
        Ok(())
    }

    fn finish(self, ctx: &mut Ctx<'_>, sink: &mut dyn Sink) -> Result<(), ExportError> {
        let spool = self
            .out
            .into_inner()
            .map_err(|e| ExportError::Output(e.error().to_string()))?;
        ctx.summary.files.insert(self.name.clone(), self.rows);
        spool.into_sink(&self.name, sink)
    }
}

/// One column of a questionnaire file.
#[derive(Debug, Clone)]
enum QCol {
    /// The item's value (boolean 1/0, number, choice code, text).
    Value(usize),
    /// One choice of a multiple-choice item: 1 selected, 0 not (empty when unanswered).
    Choice(usize, String),
    DateYear(usize),
    DateDay(usize),
    DateExact(usize),
    Score(String),
}

const QFILE_KEYS: [&str; 6] = [
    "response_id",
    "patient_id",
    "procedure_id",
    "visit",
    "status",
    "completed_by",
];

struct QFile {
    name: String,
    def: Arc<Questionnaire>,
    cols: Vec<(String, QCol)>,
    out: csv::Writer<Spool>,
    rows: u64,
}

fn qfile_name(id: &str, version: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("responses__{}__{}.csv", clean(id), clean(version))
}

fn item_columns(q: &Questionnaire, identified: bool) -> Vec<(String, QCol)> {
    let mut cols = Vec::new();
    for (i, item) in q.items().iter().enumerate() {
        match item.item_type {
            ItemType::MultipleChoice => {
                for ch in &item.choices {
                    cols.push((
                        format!("{}___{}", item.id, ch.code),
                        QCol::Choice(i, ch.code.clone()),
                    ));
                }
            }
            ItemType::Date => {
                cols.push((format!("{}_year", item.id), QCol::DateYear(i)));
                cols.push((format!("{}_day", item.id), QCol::DateDay(i)));
                if identified {
                    cols.push((item.id.clone(), QCol::DateExact(i)));
                }
            }
            ItemType::Text => {
                if identified {
                    cols.push((item.id.clone(), QCol::Value(i)));
                }
            }
            _ => cols.push((item.id.clone(), QCol::Value(i))),
        }
    }
    for s in q.score_definitions() {
        cols.push((format!("score__{}", s.id), QCol::Score(s.id.clone())));
    }
    cols
}

fn num(v: f64) -> String {
    if v.is_finite() {
        v.to_string()
    } else {
        String::new()
    }
}

/// The exported value of an answer to a non-date, non-multiple item; `None` = withheld.
fn value_cell(item: &Item, v: &AnswerValue, identified: bool) -> Option<String> {
    match (item.item_type, v) {
        (ItemType::Boolean, AnswerValue::Bool(b)) => Some(if *b { "1" } else { "0" }.into()),
        (ItemType::Integer | ItemType::Scale0To10, AnswerValue::Int(i)) => Some(i.to_string()),
        (ItemType::Decimal, AnswerValue::Int(i)) => Some(i.to_string()),
        (ItemType::Decimal, AnswerValue::Decimal(d)) => Some(num(*d)),
        (ItemType::SingleChoice, AnswerValue::Text(code)) => {
            (identified || item.choice(code).is_some()).then(|| code.clone())
        }
        (ItemType::Text, AnswerValue::Text(t)) => identified.then(|| t.clone()),
        // A value that does not fit its item: only an identified export shows it as stored.
        (_, other) if identified => Some(match other {
            AnswerValue::Bool(b) => b.to_string(),
            AnswerValue::Int(i) => i.to_string(),
            AnswerValue::Decimal(d) => num(*d),
            AnswerValue::Text(t) => t.clone(),
            AnswerValue::Choices(c) => c.join(";"),
        }),
        _ => None,
    }
}

fn date_cells(d: Option<ExportDate>) -> (String, String, String) {
    match d {
        Some(d) => (
            d.year.to_string(),
            d.day.map(|x| x.to_string()).unwrap_or_default(),
            d.exact.unwrap_or_default(),
        ),
        None => Default::default(),
    }
}

fn opt_id(ctx: &Ctx<'_>, kind: IdKind, id: Option<&str>) -> String {
    id.and_then(|i| ctx.pseudo.id_str(kind, i))
        .unwrap_or_default()
}

/// Keep `s` in a de-identified export only if `ok(s)`; count what is withheld.
fn coded(ctx: &mut Ctx<'_>, s: &str, ok: fn(&str) -> bool, reason: &str) -> String {
    if ctx.identified || ok(s) {
        s.to_string()
    } else {
        if !s.trim().is_empty() {
            ctx.withhold(reason);
        }
        String::new()
    }
}

/// Free text: kept in an identified export, else withheld and counted.
fn free(ctx: &mut Ctx<'_>, s: &str, reason: &str) -> String {
    if ctx.identified {
        s.to_string()
    } else {
        if !s.trim().is_empty() {
            ctx.withhold(reason);
        }
        String::new()
    }
}

/// The CSV format.
pub struct CsvWriter {
    clinics: Table,
    patients: Table,
    procedures: Table,
    responses: Table,
    adverse_events: Table,
    adjudications: Table,
    /// Per questionnaire (id, version) seen; `None` when no definition is known.
    qfiles: BTreeMap<(String, String), Option<QFile>>,
}

impl CsvWriter {
    pub fn new(ctx: &Ctx<'_>) -> Result<Self, ExportError> {
        let idf = ctx.identified;
        Ok(CsvWriter {
            clinics: Table::new("clinics.csv", CLINICS, idf)?,
            patients: Table::new("patients.csv", PATIENTS, idf)?,
            procedures: Table::new("procedures.csv", PROCEDURES, idf)?,
            responses: Table::new("responses.csv", RESPONSES, idf)?,
            adverse_events: Table::new("adverse_events.csv", ADVERSE_EVENTS, idf)?,
            adjudications: Table::new("adjudications.csv", ADJUDICATIONS, idf)?,
            qfiles: BTreeMap::new(),
        })
    }

    fn qfile(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: &str,
        version: &str,
    ) -> Result<Option<&mut QFile>, ExportError> {
        let key = (id.to_string(), version.to_string());
        if !self.qfiles.contains_key(&key) {
            let file = match ctx.definition(id, version) {
                None => None,
                Some(def) => {
                    let cols = item_columns(&def, ctx.identified);
                    let mut out = writer(Spool::new()?);
                    out.write_record(
                        QFILE_KEYS
                            .iter()
                            .copied()
                            .chain(cols.iter().map(|(n, _)| n.as_str())),
                    )?;
                    Some(QFile {
                        name: qfile_name(id, version),
                        def,
                        cols,
                        out,
                        rows: 0,
                    })
                }
            };
            self.qfiles.insert(key.clone(), file);
        }
        Ok(self.qfiles.get_mut(&key).and_then(|f| f.as_mut()))
    }
}

impl FormatWriter for CsvWriter {
    fn clinic(&mut self, ctx: &mut Ctx<'_>, rec: &SourceRecord) -> Result<(), ExportError> {
        let Body::Clinic(cl) = &rec.body else {
            return Ok(());
        };
        let accreditations = cl
            .accreditations
            .iter()
            .map(|a| {
                format!(
                    "{}:{}:{}",
                    a.body,
                    a.since,
                    a.until.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join(";");
        self.clinics.row(&[
            ctx.pseudo.id(IdKind::Clinic, rec.header.id),
            cl.name.clone(),
            cl.country.clone(),
            cl.participation.code().into(),
            accreditations,
        ])
    }

    fn patient(&mut self, ctx: &mut Ctx<'_>, rec: &SourceRecord) -> Result<(), ExportError> {
        let Body::Enrolment(e) = &rec.body else {
            return Ok(());
        };
        let id = rec.header.id;
        let anchor = ctx.anchors.index_date(id);
        let over = birth_year_withheld(e.birth_year, ctx.now_year);
        if over && !ctx.identified {
            ctx.withhold("birth year of a patient aged 90 or over");
        }
        // For a patient aged 90 or over, the age at the procedure and the procedure's year would
        // give the birth year back: withheld too.
        let age_at = if over && !ctx.identified {
            None
        } else {
            anchor.and_then(|a| age(e.birth_year, chrono::Datelike::year(&a)))
        };
        let (cy, cd, cx) = date_cells(export_date(Some(&e.consent.date), anchor, ctx.identified));
        let (ey, ed, ex) = date_cells(export_date(Some(&e.enrolled_on), anchor, ctx.identified));
        let form = coded(
            ctx,
            &e.consent.form_version,
            is_consent_version,
            "consent form version (not a version token)",
        );
        let scope: Vec<String> = e
            .consent
            .scope
            .iter()
            .map(|s| coded(ctx, s, is_code, "consent scope (not a code)"))
            .filter(|s| !s.is_empty())
            .collect();
        let study_code = free(ctx, &e.study_code, "study code");
        self.patients.row(&[
            ctx.pseudo.id(IdKind::Patient, id),
            ctx.pseudo.id(IdKind::Clinic, rec.header.clinic),
            study_code,
            e.sex.code().into(),
            if over && !ctx.identified {
                String::new()
            } else {
                e.birth_year.to_string()
            },
            age_at.unwrap_or_default(),
            if over { "1" } else { "0" }.into(),
            form,
            scope.join(";"),
            cy,
            cd,
            cx,
            ey,
            ed,
            ex,
            rec.conflicted.join(";"),
        ])
    }

    fn procedure(&mut self, ctx: &mut Ctx<'_>, rec: &SourceRecord) -> Result<(), ExportError> {
        let (Body::Procedure(p), Some(patient)) = (&rec.body, rec.header.patient) else {
            return Ok(());
        };
        let anchor = ctx.anchors.index_date(patient);
        let (y, dd, x) = date_cells(export_date(Some(&p.date), anchor, ctx.identified));
        let condition = free(ctx, &p.condition, "procedure condition (free text)");
        let ptype = match procedure_type_code(&p.procedure_type) {
            Some(code) => code.to_string(),
            None => {
                ctx.withhold("procedure type (free text)");
                String::new()
            }
        };
        let ptype_text = if ctx.identified {
            p.procedure_type.clone()
        } else {
            String::new()
        };
        let trial = p
            .trial_registration
            .as_deref()
            .map(|t| {
                coded(
                    ctx,
                    t,
                    is_token_with_digit,
                    "trial registration (not a registration token)",
                )
            })
            .unwrap_or_default();
        let benefits = p
            .promised_benefits
            .iter()
            .map(|b| format!("{} => {}", b.benefit, b.measure))
            .collect::<Vec<_>>()
            .join("; ");
        let benefits = free(ctx, &benefits, "promised benefits (free text)");
        let (amount, currency) = match &p.cost {
            Some(cost) => (
                cost.amount_minor.to_string(),
                coded(
                    ctx,
                    &cost.currency,
                    is_currency,
                    "cost currency (not ISO 4217)",
                ),
            ),
            None => Default::default(),
        };
        self.procedures.row(&[
            ctx.pseudo.id(IdKind::Procedure, rec.header.id),
            ctx.pseudo.id(IdKind::Patient, patient),
            ctx.pseudo.id(IdKind::Clinic, rec.header.clinic),
            y,
            dd,
            x,
            condition,
            ptype,
            ptype_text,
            p.route.code().into(),
            p.cell_type.code().into(),
            p.source_tissue.code().into(),
            p.origin.code().into(),
            p.manipulation.code().into(),
            p.regulatory_status.code().into(),
            trial,
            benefits,
            amount,
            currency,
            rec.conflicted.join(";"),
        ])
    }

    fn response(&mut self, ctx: &mut Ctx<'_>, rec: &SourceRecord) -> Result<(), ExportError> {
        let (Body::Response(r), Some(patient)) = (&rec.body, rec.header.patient) else {
            return Ok(());
        };
        let anchor = ctx.anchors.anchor(patient, r.procedure.as_deref());
        let identified = ctx.identified;
        let response_id = ctx.pseudo.id(IdKind::Response, rec.header.id);
        let patient_id = ctx.pseudo.id(IdKind::Patient, patient);
        let procedure_id = opt_id(ctx, IdKind::Procedure, r.procedure.as_deref());
        let visit = r
            .visit
            .as_deref()
            .map(|v| coded(ctx, v, is_code, "visit (not a code)"))
            .unwrap_or_default();
        let (sy, sd, sx) = date_cells(export_date(r.submitted_at.as_deref(), anchor, identified));
        let status = match r.status {
            ResponseStatus::Draft => "draft",
            ResponseStatus::Submitted => "submitted",
            ResponseStatus::Discarded => "discarded",
        };
        let questionnaire = coded(
            ctx,
            &r.questionnaire,
            is_slug,
            "questionnaire id (not an id)",
        );
        let questionnaire_version = coded(
            ctx,
            &r.questionnaire_version,
            is_slug,
            "questionnaire version (not a version)",
        );
        // The answers, in the questionnaire version's own file.
        let mut withheld: Vec<&'static str> = Vec::new();
        let items_file = match self.qfile(ctx, &r.questionnaire, &r.questionnaire_version)? {
            None => {
                withheld.push("answers of a response whose questionnaire version is unknown");
                String::new()
            }
            Some(qf) => {
                let mut row: Vec<String> = vec![
                    response_id.clone(),
                    patient_id.clone(),
                    procedure_id.clone(),
                    visit.clone(),
                    status.into(),
                    r.completed_by.code().into(),
                ];
                let items = qf.def.items();
                let scores = qf.def.scores(&r.answers);
                for (_, col) in &qf.cols {
                    let cell = match col {
                        QCol::Value(i) => match r.answers.get(&items[*i].id) {
                            None => String::new(),
                            Some(v) => match value_cell(&items[*i], v, identified) {
                                Some(s) => s,
                                None => {
                                    if items[*i].item_type == ItemType::Text {
                                        withheld.push("free-text answer");
                                    } else {
                                        withheld.push("answer that does not fit its item");
                                    }
                                    String::new()
                                }
                            },
                        },
                        QCol::Choice(i, code) => match r.answers.get(&items[*i].id) {
                            Some(AnswerValue::Choices(sel)) => if sel.iter().any(|s| s == code) {
                                "1"
                            } else {
                                "0"
                            }
                            .into(),
                            _ => String::new(),
                        },
                        QCol::DateYear(i) | QCol::DateDay(i) | QCol::DateExact(i) => {
                            let v = match r.answers.get(&items[*i].id) {
                                Some(AnswerValue::Text(t)) => Some(t.as_str()),
                                _ => None,
                            };
                            let (y, dd, x) = date_cells(export_date(v, anchor, identified));
                            match col {
                                QCol::DateYear(_) => y,
                                QCol::DateDay(_) => dd,
                                _ => x,
                            }
                        }
                        QCol::Score(id) => scores
                            .get(id)
                            .copied()
                            .flatten()
                            .map(num)
                            .unwrap_or_default(),
                    };
                    row.push(cell);
                }
                // Answers to no item of this version (withheld: their type is unknown).
                for key in r.answers.keys() {
                    if qf.def.item(key).is_none() {
                        withheld.push("answer to an item the questionnaire does not have");
                    }
                }
                qf.out.write_record(&row)?;
                qf.rows += 1;
                qf.name.clone()
            }
        };
        for w in withheld {
            ctx.withhold(w);
        }
        self.responses.row(&[
            response_id,
            patient_id,
            ctx.pseudo.id(IdKind::Clinic, rec.header.clinic),
            procedure_id,
            questionnaire,
            questionnaire_version,
            visit,
            status.into(),
            r.completed_by.code().into(),
            sy,
            sd,
            sx,
            items_file,
            rec.conflicted.join(";"),
        ])
    }

    fn adverse_event(
        &mut self,
        ctx: &mut Ctx<'_>,
        rec: &SourceRecord,
        adjudications: &[AdjudicationRec],
    ) -> Result<(), ExportError> {
        let (Body::AdverseEvent(ae), Some(patient)) = (&rec.body, rec.header.patient) else {
            return Ok(());
        };
        let anchor = ctx.anchors.anchor(patient, ae.procedure.as_deref());
        let identified = ctx.identified;
        let ae_id = ctx.pseudo.id(IdKind::AdverseEvent, rec.header.id);
        let patient_id = ctx.pseudo.id(IdKind::Patient, patient);
        let (oy, od, ox) = date_cells(export_date(Some(&ae.onset), anchor, identified));
        let category = coded(
            ctx,
            &ae.category,
            is_code,
            "adverse-event category (not a code)",
        );
        let seriousness: Vec<String> = ae
            .seriousness
            .iter()
            .map(|s| coded(ctx, s, is_code, "seriousness criterion (not a code)"))
            .filter(|s| !s.is_empty())
            .collect();
        let serious = ae.seriousness.iter().any(|s| s != "none");
        let description = free(
            ctx,
            &ae.description,
            "adverse-event description (free text)",
        );
        if !ae.answers.is_empty() {
            // The coded fields above carry the report; its answers are not repeated here.
            ctx.withhold("adverse-event report answers (carried by the coded columns)");
        }
        self.adverse_events.row(&[
            ae_id.clone(),
            patient_id.clone(),
            ctx.pseudo.id(IdKind::Clinic, rec.header.clinic),
            opt_id(ctx, IdKind::Procedure, ae.procedure.as_deref()),
            ae.reporter.code().into(),
            category,
            oy,
            od,
            ox,
            ae.severity.to_string(),
            if serious { "1" } else { "0" }.into(),
            seriousness.join(";"),
            ae.outcome.code().into(),
            description,
            adjudications.len().to_string(),
            rec.conflicted.join(";"),
        ])?;
        for adj in adjudications {
            let a = &adj.body;
            let (dy, dd, dx) = date_cells(export_date(Some(&a.deadline), anchor, identified));
            let (cy, cd, cx) = date_cells(export_date(a.decided_at.as_deref(), anchor, identified));
            let action = free(ctx, &a.action, "adjudication action (free text)");
            let remedy = free(ctx, &a.remedy, "adjudication remedy (free text)");
            self.adjudications.row(&[
                ctx.pseudo.id(IdKind::Adjudication, adj.id),
                ae_id.clone(),
                patient_id.clone(),
                ctx.pseudo.id(IdKind::Clinic, rec.header.clinic),
                a.relatedness
                    .map(|r| r.code().to_string())
                    .unwrap_or_default(),
                a.status.code().into(),
                dy,
                dd,
                dx,
                cy,
                cd,
                cx,
                action,
                remedy,
                adj.conflicted.join(";"),
            ])?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>, ctx: &mut Ctx<'_>, sink: &mut dyn Sink) -> Result<(), ExportError> {
        let me = *self;
        let mut dict = writer(Spool::new()?);
        dict.write_record(DICTIONARY)?;
        let mut dict_rows = 0u64;
        for t in [
            &me.clinics,
            &me.patients,
            &me.procedures,
            &me.responses,
            &me.adverse_events,
            &me.adjudications,
        ] {
            for (col, keep) in t.cols.iter().zip(&t.keep) {
                if !keep {
                    continue;
                }
                dict.write_record([
                    t.name.as_str(),
                    col.name,
                    col.label,
                    col.typ,
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    if ctx.identified && col.identified_only {
                        "exact (identified export)"
                    } else {
                        col.deid
                    },
                    "",
                ])?;
                dict_rows += 1;
            }
        }
        for qf in me.qfiles.values().flatten() {
            dict_rows += dictionary_rows(&mut dict, qf, ctx.identified)?;
        }
        for ((id, version), qf) in &me.qfiles {
            if qf.is_none() {
                dict.write_record([
                    "responses.csv",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    id.as_str(),
                    version.as_str(),
                    "answers withheld",
                    "no definition of this questionnaire version is known to the registry; its responses are listed in responses.csv without answers",
                ])?;
                dict_rows += 1;
            }
        }
        me.clinics.finish(ctx, sink)?;
        me.patients.finish(ctx, sink)?;
        me.procedures.finish(ctx, sink)?;
        me.responses.finish(ctx, sink)?;
        for qf in me.qfiles.into_values().flatten() {
            let spool = qf
                .out
                .into_inner()
                .map_err(|e| ExportError::Output(e.error().to_string()))?;
            ctx.summary.files.insert(qf.name.clone(), qf.rows);
            spool.into_sink(&qf.name, sink)?;
        }
        me.adverse_events.finish(ctx, sink)?;
        me.adjudications.finish(ctx, sink)?;
        let spool = dict
            .into_inner()
            .map_err(|e| ExportError::Output(e.error().to_string()))?;
        ctx.summary
            .files
            .insert("data_dictionary.csv".into(), dict_rows);
        spool.into_sink("data_dictionary.csv", sink)?;
        super::readme::write(ctx, sink)
    }
}

fn is_consent_version(s: &str) -> bool {
    is_token_with_digit(s) || is_code(s)
}

fn dictionary_rows(
    dict: &mut csv::Writer<Spool>,
    qf: &QFile,
    identified: bool,
) -> Result<u64, ExportError> {
    let q = &qf.def;
    let mut n = 0;
    for (name, col) in &qf.cols {
        let (item, typ, deid, choices) = match col {
            QCol::Value(i) => {
                let item = &q.items()[*i];
                let choices = item
                    .choices
                    .iter()
                    .map(|c| format!("{}, {}", c.code, c.label))
                    .collect::<Vec<_>>()
                    .join(" | ");
                let deid = if item.item_type == ItemType::Text {
                    "exact (identified export)"
                } else {
                    ""
                };
                (Some(item), item.item_type.code().to_string(), deid, choices)
            }
            QCol::Choice(i, code) => {
                let item = &q.items()[*i];
                let label = item.choice(code).map(|c| c.label.as_str()).unwrap_or("");
                (
                    Some(item),
                    "checkbox".to_string(),
                    "",
                    format!("1, {label} | 0, not selected"),
                )
            }
            QCol::DateYear(i) => (Some(&q.items()[*i]), "year".into(), YEAR, String::new()),
            QCol::DateDay(i) => (Some(&q.items()[*i]), "day".into(), DAY, String::new()),
            QCol::DateExact(i) => (
                Some(&q.items()[*i]),
                "date".into(),
                "exact (identified export)",
                String::new(),
            ),
            QCol::Score(_) => (None, "decimal".into(), "", String::new()),
        };
        let label = match (item, col) {
            (_, QCol::Score(id)) => q
                .score_definitions()
                .iter()
                .find(|s| &s.id == id)
                .map(|s| {
                    format!(
                        "Score: {} ({:?} of {})",
                        s.label,
                        s.method,
                        s.items.join(", ")
                    )
                })
                .unwrap_or_default(),
            (Some(item), _) => item.text.clone(),
            (None, _) => String::new(),
        };
        let f = |v: Option<f64>| v.map(num).unwrap_or_default();
        let branching = item
            .map(|it| {
                it.enable_when
                    .iter()
                    .map(|c| {
                        format!(
                            "[{}] {} {}",
                            c.item,
                            c.operator.symbol(),
                            c.value
                                .as_ref()
                                .and_then(|v| serde_json::to_string(v).ok())
                                .unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(match it.enable_behavior {
                        followup_domain::questionnaire::EnableBehavior::All => " and ",
                        followup_domain::questionnaire::EnableBehavior::Any => " or ",
                    })
            })
            .unwrap_or_default();
        dict.write_record([
            qf.name.as_str(),
            name.as_str(),
            label.as_str(),
            typ.as_str(),
            choices.as_str(),
            &item.map(|i| f(i.effective_min())).unwrap_or_default(),
            &item.map(|i| f(i.effective_max())).unwrap_or_default(),
            &item
                .and_then(|i| i.decimals)
                .map(|d| d.to_string())
                .unwrap_or_default(),
            &item
                .and_then(|i| i.max_length)
                .map(|d| d.to_string())
                .unwrap_or_default(),
            if item.is_some_and(|i| i.required) {
                "y"
            } else {
                ""
            },
            branching.as_str(),
            q.id(),
            q.version(),
            deid,
            "",
        ])?;
        n += 1;
    }
    // Items left out of the file (free text in a de-identified export) are listed too, so the
    // dictionary names every item of the questionnaire.
    if !identified {
        for item in q.items().iter().filter(|i| i.item_type == ItemType::Text) {
            dict.write_record([
                qf.name.as_str(),
                item.id.as_str(),
                item.text.as_str(),
                "text",
                "",
                "",
                "",
                "",
                &item.max_length.map(|d| d.to_string()).unwrap_or_default(),
                if item.required { "y" } else { "" },
                "",
                q.id(),
                q.version(),
                "withheld: free text (identified exports only)",
                "not a column of this file",
            ])?;
            n += 1;
        }
    }
    Ok(n)
}

/// Which record kinds go to which CSV file (for the README).
pub fn file_of(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Clinic => "clinics.csv",
        RecordKind::Enrolment => "patients.csv",
        RecordKind::Procedure => "procedures.csv",
        RecordKind::Response => "responses.csv",
        RecordKind::AdverseEvent => "adverse_events.csv",
        RecordKind::Adjudication => "adjudications.csv",
        // The registry's own case records and the patients' replies are not exported yet.
        RecordKind::AdjudicationCase | RecordKind::CaseReply => "(not exported)",
        // Definitions are the registry's reference data (see `followup server definitions`).
        RecordKind::Definition => "(not exported)",
    }
}
