//! Exports for analysis and interoperability (design and field mapping: `docs/export.md`).
//!
//! * **CSV** ([`csv_out`]): one file per record kind, one per questionnaire version (a row per
//!   response, a column per item, coded values), a REDCap-style `data_dictionary.csv`, RFC 4180,
//!   UTF-8.
//! * **FHIR R4** ([`fhir_out`]): NDJSON per resource type, as a FHIR Bulk Data export writes it.
//! * **De-identified by default** ([`deid`], HIPAA Safe Harbor as the reference); `identified`
//!   (registry admins only) keeps exact dates, free text and the registry's ids.
//! * **Authorized by scope** ([`authorize`]): a clinic coordinator exports its own clinic only.
//! * **Audited**: [`export_from_storage`] appends an `export` entry (who, role, scope, options) to
//!   the hash-chained audit log before the first byte is produced.
//! * **Streaming**: records are read a page at a time ([`source`]); each output file is spooled
//!   to an anonymous temporary file and copied into the [`sink`] (a directory or a streamed zip).
//!   Memory holds one page of documents plus one entry per procedure (the date anchors) and per
//!   adjudication, never the responses.
//!
//! The console's download and the admin API call [`export_from_storage`] with a [`ZipSink`]
//! over the response body; the CLI unpacks that zip into `--out DIR`.

pub mod csv_out;
pub mod deid;
pub mod fhir_out;
pub mod fhir_questionnaire;
pub mod http;
pub mod readme;
pub mod sink;
pub mod source;

use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, NaiveDate};
use followup_domain::ids::RecordId;
use followup_domain::model::{Adjudication, RecordKind, ResponseStatus};
use followup_domain::questionnaire::{instrument_ref, Questionnaire};

use crate::audit::AuditEntry;
use crate::storage::{Storage, StorageError};
use deid::{parse_date, Anchors, Pseudonymizer};
pub use sink::{DirSink, Sink, ZipSink};
use source::{Body, ExportSource, SourceItem, SourceQuery, SourceRecord, StorageSource};

/// The audit event of an export.
pub const AUDIT_EVENT: &str = "export";

/// Why an export was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The requester may not make this export (scope or `identified`).
    #[error("{0}")]
    Forbidden(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The named clinic does not exist.
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Writing the output failed (disk full, client gone).
    #[error("could not write the export: {0}")]
    Output(String),
    #[error("internal export error: {0}")]
    Internal(String),
}

impl From<csv::Error> for ExportError {
    fn from(e: csv::Error) -> Self {
        ExportError::Output(e.to_string())
    }
}

impl From<std::io::Error> for ExportError {
    fn from(e: std::io::Error) -> Self {
        ExportError::Output(e.to_string())
    }
}

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Csv,
    Fhir,
}

impl ExportFormat {
    pub fn code(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Fhir => "fhir",
        }
    }

    pub fn from_code(s: &str) -> Option<Self> {
        match s {
            "csv" => Some(ExportFormat::Csv),
            "fhir" => Some(ExportFormat::Fhir),
            _ => None,
        }
    }
}

/// What an export may see, by the requester's role (the roles of `docs/registry-console.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaffRole {
    /// Registry administrator (and the admin token, for automation): everything; the only role
    /// that may make an identified export.
    RegistryAdmin,
    /// Registry monitor: every clinic, de-identified only.
    RegistryMonitor,
    /// A clinic's coordinator: that clinic only, de-identified only.
    ClinicCoordinator { clinic: RecordId },
}

impl StaffRole {
    pub fn code(&self) -> &'static str {
        match self {
            StaffRole::RegistryAdmin => "registry_admin",
            StaffRole::RegistryMonitor => "registry_monitor",
            StaffRole::ClinicCoordinator { .. } => "clinic_coordinator",
        }
    }
}

/// Who asks for an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// The staff member's id or e-mail, or `admin-token` (recorded in the audit log).
    pub who: String,
    pub role: StaffRole,
}

/// What is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest {
    pub format: ExportFormat,
    /// One clinic, or (`None`) every clinic the requester may see.
    pub clinic: Option<RecordId>,
    /// Only responses and adverse events (with their adjudications) accepted or changed on or
    /// after this day (UTC); clinics, patients and procedures of the scope are always complete
    /// so that every reference resolves.
    pub since: Option<NaiveDate>,
    /// Keep exact dates, free text and registry ids (registry admins only).
    pub identified: bool,
}

/// An authorized export: the request with its scope resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportPlan {
    pub requester: Requester,
    pub request: ExportRequest,
    /// The clinic the export is limited to (`None`: the whole registry).
    pub clinic: Option<RecordId>,
    /// When the export was made (ms since the epoch).
    pub at_ms: i64,
}

impl ExportPlan {
    fn since_ms(&self) -> Option<i64> {
        self.request.since.and_then(|d| {
            d.and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc().timestamp_millis())
        })
    }

    /// The audit detail: who, role, format, scope, options (no patient data).
    pub fn audit_detail(&self) -> String {
        format!(
            "who={} role={} format={} scope={} since={} identified={}",
            self.requester.who.replace(char::is_whitespace, "_"),
            self.requester.role.code(),
            self.request.format.code(),
            self.clinic
                .map(|c| format!("clinic:{}", c.to_hex()))
                .unwrap_or_else(|| "registry".into()),
            self.request
                .since
                .map(|d| d.to_string())
                .unwrap_or_else(|| "-".into()),
            self.request.identified
        )
    }

    /// The audit entry recording this export.
    pub fn audit_entry(&self) -> AuditEntry {
        AuditEntry {
            at_ms: self.at_ms,
            event: AUDIT_EVENT.into(),
            device: None,
            doc: self.clinic,
            log_seq: None,
            change_hashes: vec![],
            detail: self.audit_detail(),
        }
    }

    /// The folder name of the export (inside a zip, or suggested for a directory).
    pub fn folder_name(&self) -> String {
        let day = chrono::DateTime::from_timestamp_millis(self.at_ms)
            .map(|t| t.format("%Y%m%d-%H%M%S").to_string())
            .unwrap_or_else(|| "export".into());
        format!(
            "followup-{}-{}{}",
            self.request.format.code(),
            day,
            if self.request.identified {
                "-IDENTIFIED"
            } else {
                ""
            }
        )
    }
}

/// Decide whether `requester` may make `request`, and on what scope. The only place export
/// permissions are decided.
pub fn authorize(
    requester: &Requester,
    request: ExportRequest,
    at_ms: i64,
) -> Result<ExportPlan, ExportError> {
    if request.identified && requester.role != StaffRole::RegistryAdmin {
        return Err(ExportError::Forbidden(
            "only a registry administrator may make an identified export".into(),
        ));
    }
    let clinic = match (requester.role, request.clinic) {
        (StaffRole::ClinicCoordinator { clinic: own }, Some(asked)) if asked != own => {
            return Err(ExportError::Forbidden(
                "a clinic coordinator may export only their own clinic".into(),
            ));
        }
        (StaffRole::ClinicCoordinator { clinic: own }, _) => Some(own),
        (_, asked) => asked,
    };
    Ok(ExportPlan {
        requester: requester.clone(),
        request,
        clinic,
        at_ms,
    })
}

/// Questionnaire definitions by id and exact version, for the data dictionary and the columns.
pub trait Definitions: Send + Sync {
    fn get(&self, id: &str, version: &str) -> Option<Questionnaire>;
}

/// The registry's shipped instruments (until definitions are published as records).
pub struct ShippedDefinitions;

impl Definitions for ShippedDefinitions {
    fn get(&self, id: &str, version: &str) -> Option<Questionnaire> {
        instrument_ref(id)
            .filter(|q| q.version() == version)
            .cloned()
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExportSummary {
    /// File name → data rows (CSV) or resources (NDJSON); README and dictionary included.
    pub files: BTreeMap<String, u64>,
    /// Records exported, by record kind code.
    pub records: BTreeMap<String, u64>,
    /// Exported records with conflicted fields, by kind code (named in the README; each row or
    /// resource names its fields).
    pub conflicted: BTreeMap<String, u64>,
    /// Records that could not be read, by kind code (named in the README, left out).
    pub unreadable: BTreeMap<String, u64>,
    /// Values left out by de-identification, by reason.
    pub withheld: BTreeMap<String, u64>,
    /// The folder the files are in (inside a zip).
    pub folder: String,
}

/// Shared state of one export run, passed to the format writers.
pub struct Ctx<'a> {
    pub pseudo: Pseudonymizer,
    pub anchors: Anchors,
    pub identified: bool,
    pub defs: &'a dyn Definitions,
    /// The year ages are computed at (the export's).
    pub now_year: i32,
    pub plan: &'a ExportPlan,
    pub summary: ExportSummary,
    /// Definitions already looked up, by (id, version).
    def_cache: HashMap<(String, String), Option<std::sync::Arc<Questionnaire>>>,
}

impl Ctx<'_> {
    pub fn withhold(&mut self, reason: &str) {
        *self.summary.withheld.entry(reason.to_string()).or_default() += 1;
    }

    /// Count an exported record, and whether it has conflicted fields.
    pub fn count_record(&mut self, kind: RecordKind, conflicted: &[String]) {
        *self
            .summary
            .records
            .entry(kind.code().to_string())
            .or_default() += 1;
        if !conflicted.is_empty() {
            *self
                .summary
                .conflicted
                .entry(kind.code().to_string())
                .or_default() += 1;
        }
    }

    pub fn definition(&mut self, id: &str, version: &str) -> Option<std::sync::Arc<Questionnaire>> {
        let key = (id.to_string(), version.to_string());
        if let Some(q) = self.def_cache.get(&key) {
            return q.clone();
        }
        let q = self.defs.get(id, version).map(std::sync::Arc::new);
        self.def_cache.insert(key, q.clone());
        q
    }
}

/// An adjudication with its record data, attached to its adverse event.
#[derive(Debug, Clone)]
pub struct AdjudicationRec {
    pub id: RecordId,
    pub updated_at_ms: i64,
    pub body: Adjudication,
    /// Its conflicted fields ([`SourceRecord::conflicted`]).
    pub conflicted: Vec<String>,
}

/// The passes of an export, implemented by each format.
pub trait FormatWriter {
    fn clinic(&mut self, ctx: &mut Ctx<'_>, rec: &SourceRecord) -> Result<(), ExportError>;
    fn patient(&mut self, ctx: &mut Ctx<'_>, rec: &SourceRecord) -> Result<(), ExportError>;
    fn procedure(&mut self, ctx: &mut Ctx<'_>, rec: &SourceRecord) -> Result<(), ExportError>;
    fn response(&mut self, ctx: &mut Ctx<'_>, rec: &SourceRecord) -> Result<(), ExportError>;
    fn adverse_event(
        &mut self,
        ctx: &mut Ctx<'_>,
        rec: &SourceRecord,
        adjudications: &[AdjudicationRec],
    ) -> Result<(), ExportError>;
    /// Write every file to the sink (the README last, with the final counts).
    fn finish(self: Box<Self>, ctx: &mut Ctx<'_>, sink: &mut dyn Sink) -> Result<(), ExportError>;
}

fn pass(
    source: &dyn ExportSource,
    ctx: &mut Ctx<'_>,
    kind: RecordKind,
    since_ms: Option<i64>,
    f: &mut dyn FnMut(&mut Ctx<'_>, SourceRecord) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let q = SourceQuery {
        kind,
        clinic: ctx.plan.clinic,
        since_ms,
    };
    source.for_each(&q, &mut |item| match item {
        SourceItem::Record(rec) => f(ctx, *rec),
        SourceItem::Unreadable { id, reason } => {
            tracing::warn!(record = %id, kind = kind.code(), %reason, "export: unreadable record left out");
            *ctx.summary
                .unreadable
                .entry(kind.code().to_string())
                .or_default() += 1;
            Ok(())
        }
    })
}

/// Run an authorized export from `source` into `sink`. Does not audit (see
/// [`export_from_storage`]).
pub fn run(
    source: &dyn ExportSource,
    defs: &dyn Definitions,
    plan: &ExportPlan,
    sink: &mut dyn Sink,
) -> Result<ExportSummary, ExportError> {
    let pseudo = if plan.request.identified {
        Pseudonymizer::identity()
    } else {
        Pseudonymizer::keyed()?
    };
    let now_year = chrono::DateTime::from_timestamp_millis(plan.at_ms)
        .map(|t| t.year())
        .unwrap_or(1970);
    let mut ctx = Ctx {
        pseudo,
        anchors: Anchors::default(),
        identified: plan.request.identified,
        defs,
        now_year,
        plan,
        summary: ExportSummary {
            folder: plan.folder_name(),
            ..ExportSummary::default()
        },
        def_cache: HashMap::new(),
    };
    let since_ms = plan.since_ms();

    // Pass 1: the procedure dates every day offset counts from.
    pass(
        source,
        &mut ctx,
        RecordKind::Procedure,
        None,
        &mut |ctx, rec| {
            if let (Body::Procedure(p), Some(patient)) = (&rec.body, rec.header.patient) {
                if let Some(date) = parse_date(&p.date) {
                    ctx.anchors.add_procedure(rec.header.id, patient, date);
                }
            }
            Ok(())
        },
    )?;
    // Pass 2: adjudications, attached to their adverse events.
    let mut adjudications: HashMap<RecordId, Vec<AdjudicationRec>> = HashMap::new();
    pass(
        source,
        &mut ctx,
        RecordKind::Adjudication,
        None,
        &mut |_, rec| {
            if let Body::Adjudication(a) = rec.body {
                if let Ok(ae) = a.adverse_event.parse::<RecordId>() {
                    adjudications.entry(ae).or_default().push(AdjudicationRec {
                        id: rec.header.id,
                        updated_at_ms: rec.updated_at_ms,
                        body: a,
                        conflicted: rec.conflicted,
                    });
                }
            }
            Ok(())
        },
    )?;

    let mut writer: Box<dyn FormatWriter> = match plan.request.format {
        ExportFormat::Csv => Box::new(csv_out::CsvWriter::new(&ctx)?),
        ExportFormat::Fhir => Box::new(fhir_out::FhirWriter::new(&ctx)?),
    };
    pass(
        source,
        &mut ctx,
        RecordKind::Clinic,
        None,
        &mut |ctx, rec| {
            ctx.count_record(RecordKind::Clinic, &rec.conflicted);
            writer.clinic(ctx, &rec)
        },
    )?;
    pass(
        source,
        &mut ctx,
        RecordKind::Enrolment,
        None,
        &mut |ctx, rec| {
            ctx.count_record(RecordKind::Enrolment, &rec.conflicted);
            writer.patient(ctx, &rec)
        },
    )?;
    pass(
        source,
        &mut ctx,
        RecordKind::Procedure,
        None,
        &mut |ctx, rec| {
            ctx.count_record(RecordKind::Procedure, &rec.conflicted);
            writer.procedure(ctx, &rec)
        },
    )?;
    pass(
        source,
        &mut ctx,
        RecordKind::Response,
        since_ms,
        &mut |ctx, rec| {
            // A discarded draft is not a response: nothing of it is exported.
            if matches!(&rec.body, Body::Response(r) if r.status == ResponseStatus::Discarded) {
                *ctx.summary
                    .withheld
                    .entry("discarded drafts (not exported)".into())
                    .or_default() += 1;
                return Ok(());
            }
            ctx.count_record(RecordKind::Response, &rec.conflicted);
            writer.response(ctx, &rec)
        },
    )?;
    pass(
        source,
        &mut ctx,
        RecordKind::AdverseEvent,
        None,
        &mut |ctx, rec| {
            let adjs = adjudications
                .get(&rec.header.id)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            if let Some(since) = since_ms {
                let changed =
                    rec.updated_at_ms >= since || adjs.iter().any(|a| a.updated_at_ms >= since);
                if !changed {
                    return Ok(());
                }
            }
            ctx.count_record(RecordKind::AdverseEvent, &rec.conflicted);
            for a in adjs {
                ctx.count_record(RecordKind::Adjudication, &a.conflicted);
            }
            writer.adverse_event(ctx, &rec, adjs)
        },
    )?;
    writer.finish(&mut ctx, sink)?;
    sink.finish()?;
    Ok(ctx.summary)
}

/// Authorize an export, check its clinic exists and append its audit entry: everything that
/// must happen before the first byte. The console and the admin API call this, answer its
/// error as an HTTP error, then stream [`run`] (see [`http::zip_body`]).
pub fn begin_export(
    storage: &dyn Storage,
    requester: &Requester,
    request: ExportRequest,
    at_ms: i64,
) -> Result<ExportPlan, ExportError> {
    let plan = authorize(requester, request, at_ms)?;
    if let Some(clinic) = plan.clinic {
        if !storage.clinic_exists(clinic)? {
            return Err(ExportError::NotFound(format!("no clinic {clinic}")));
        }
    }
    storage.append_audit(&plan.audit_entry())?;
    tracing::info!(detail = %plan.audit_detail(), "export started");
    Ok(plan)
}

/// Authorize, audit and run an export of the stored documents. The audit entry is appended
/// before anything is written, so an export that fails or is abandoned half-way is recorded too.
pub fn export_from_storage(
    storage: &dyn Storage,
    defs: &dyn Definitions,
    requester: &Requester,
    request: ExportRequest,
    at_ms: i64,
    sink: &mut dyn Sink,
) -> Result<ExportSummary, ExportError> {
    let plan = begin_export(storage, requester, request, at_ms)?;
    let summary = run(&StorageSource::new(storage), defs, &plan, sink)?;
    tracing::info!(records = ?summary.records, "export finished");
    Ok(summary)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req(clinic: Option<RecordId>, identified: bool) -> ExportRequest {
        ExportRequest {
            format: ExportFormat::Csv,
            clinic,
            since: None,
            identified,
        }
    }

    #[test]
    fn coordinators_export_their_own_clinic_only() {
        let (a, b) = (RecordId::random(), RecordId::random());
        let coord = Requester {
            who: "nurse@a".into(),
            role: StaffRole::ClinicCoordinator { clinic: a },
        };
        assert!(matches!(
            authorize(&coord, req(Some(b), false), 0),
            Err(ExportError::Forbidden(_))
        ));
        assert_eq!(
            authorize(&coord, req(None, false), 0).unwrap().clinic,
            Some(a)
        );
        assert_eq!(
            authorize(&coord, req(Some(a), false), 0).unwrap().clinic,
            Some(a)
        );
        assert!(matches!(
            authorize(&coord, req(Some(a), true), 0),
            Err(ExportError::Forbidden(_))
        ));
        let monitor = Requester {
            who: "m".into(),
            role: StaffRole::RegistryMonitor,
        };
        assert_eq!(
            authorize(&monitor, req(None, false), 0).unwrap().clinic,
            None
        );
        assert!(authorize(&monitor, req(None, true), 0).is_err());
        let admin = Requester {
            who: "admin-token".into(),
            role: StaffRole::RegistryAdmin,
        };
        let plan = authorize(&admin, req(Some(b), true), 0).unwrap();
        assert_eq!(plan.clinic, Some(b));
        let detail = plan.audit_detail();
        assert!(detail.contains("who=admin-token"), "{detail}");
        assert!(detail.contains("identified=true"), "{detail}");
        assert!(detail.contains(&b.to_hex()), "{detail}");
    }
}
