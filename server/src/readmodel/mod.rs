//! # The read model
//!
//! Relational tables projected from every accepted record, for the staff console and the exports.
//! The documents stay the truth; these tables are derived from them and can always be rebuilt
//! (`followup server rebuild-read-model`). `docs/registry-console.md` describes every table and
//! column.
//!
//! | module | what it holds |
//! |---|---|
//! | [`schema`] | the tables, defined once; DDL and statements for SQLite and PostgreSQL |
//! | [`project`] | the projection: one document → its rows (pure; conflicts kept as conflicts) |
//! | [`query`] | what the console and the exports ask: overview, completion, follow-up lists, the adverse-event queue, a patient's timeline, clinic statistics, paged iteration |
//! | this module | applying projections inside the storage transaction, and the rebuild |
//!
//! ## How it stays current
//!
//! The sync handler projects each record it is about to commit (outside the transaction, from the
//! merged document it already holds) and hands the projection to [`crate::storage::Storage::commit_writes`]
//! in the [`crate::storage::DocWrite`]. The backend writes the document, the log row and the audit
//! entry, then calls [`apply`] in the **same transaction**: the record's old rows are replaced by
//! its new ones, and the done state of the visits its procedure reference touches is recounted. A
//! write without a projection (an administrative write) is projected from its bytes there.
//!
//! Each table is a function of one document, except two columns kept current across documents:
//! `rm_visits.done_count` / `done_response` (from the submitted responses answering the visit) and
//! the `rm_records` meta (first and last accepted write, from the log and audit). Both are
//! recomputed the same way by [`rebuild`], which is why a rebuilt read model equals the
//! incrementally kept one (`server/tests/readmodel.rs` proves it after randomized histories, on
//! both backends).

pub mod duplicates;
pub mod project;
pub mod query;
pub mod schema;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use automerge::Automerge;
use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::model::{DocHeader, RecordKind};
use followup_domain::schedule::Schedule;

pub use project::{adjudication_policy_days, date_of_day, day_number, project, Projection};
pub use schema::Dialect;

use crate::storage::{StorageError, StorageResult};

/// A clinic's id (clinics are records).
pub type ClinicId = RecordId;

/// The version of the projection. A database whose read model was built by another version is
/// rebuilt when the server opens it.
/// Version 2: adjudication cases and patients' case replies (`rm_cases`, `rm_case_entries`,
/// `rm_case_replies`).
pub const PROJECTION_VERSION: i64 = 2;

/// A value in a read-model row, the same on both backends.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
    /// A list of blobs, for `= ANY($n)` (PostgreSQL only).
    BlobList(Vec<Vec<u8>>),
}

impl Val {
    pub fn int(&self) -> Option<i64> {
        match self {
            Val::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn real(&self) -> Option<f64> {
        match self {
            Val::Real(f) => Some(*f),
            Val::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
    pub fn text(&self) -> Option<&str> {
        match self {
            Val::Text(s) => Some(s),
            _ => None,
        }
    }
    pub fn into_text(self) -> Option<String> {
        match self {
            Val::Text(s) => Some(s),
            _ => None,
        }
    }
    pub fn blob(&self) -> Option<&[u8]> {
        match self {
            Val::Blob(b) => Some(b),
            _ => None,
        }
    }
    /// A 16-byte id column.
    pub fn record_id(&self) -> Option<RecordId> {
        self.blob().and_then(RecordId::from_slice)
    }
    pub fn device_id(&self) -> Option<DeviceId> {
        self.blob().and_then(DeviceId::from_slice)
    }
    pub fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }
}

impl From<RecordId> for Val {
    fn from(id: RecordId) -> Self {
        Val::Blob(id.0.to_vec())
    }
}

/// The registry's follow-up schedule, against which visits are projected (the default schedule
/// the devices also use).
pub fn schedule() -> &'static Schedule {
    static S: OnceLock<Schedule> = OnceLock::new();
    S.get_or_init(Schedule::default_registry)
}

/// What a backend offers the read model inside a write transaction.
pub trait RmTx {
    fn dialect(&self) -> Dialect;
    /// Insert rows into table `schema::ALL[table]` (`rm_records` rows are upserted).
    fn insert(&mut self, table: usize, rows: &[&Vec<Val>]) -> StorageResult<()>;
    /// Run a statement (portable SQL with `$n` parameters).
    fn exec(&mut self, sql: &'static str, params: &[Val]) -> StorageResult<u64>;
    /// Run a query (portable SQL with `$n` parameters).
    fn query(&mut self, sql: &'static str, params: &[Val]) -> StorageResult<Vec<Vec<Val>>>;
}

/// Time spent keeping the read model current, in this process (for the benchmark and logs).
pub mod metrics {
    use super::*;

    pub(super) static PROJECT_NS: AtomicU64 = AtomicU64::new(0);
    pub(super) static APPLY_NS: AtomicU64 = AtomicU64::new(0);
    pub(super) static DOCS: AtomicU64 = AtomicU64::new(0);

    /// Totals since start (or the last [`take`]).
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Totals {
        /// Nanoseconds spent projecting documents (outside the transaction).
        pub project_ns: u64,
        /// Nanoseconds spent writing rows (inside the transaction).
        pub apply_ns: u64,
        /// Documents projected.
        pub docs: u64,
    }

    /// Read and reset the totals.
    pub fn take() -> Totals {
        Totals {
            project_ns: PROJECT_NS.swap(0, Ordering::Relaxed),
            apply_ns: APPLY_NS.swap(0, Ordering::Relaxed),
            docs: DOCS.swap(0, Ordering::Relaxed),
        }
    }
}

fn elapsed_ns(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Project a document about to be committed (timed into [`metrics`]).
pub fn project_for_write(doc: &Automerge, header: &DocHeader) -> Arc<Projection> {
    let t = Instant::now();
    let p = project(doc, header, schedule());
    metrics::PROJECT_NS.fetch_add(elapsed_ns(t), Ordering::Relaxed);
    metrics::DOCS.fetch_add(1, Ordering::Relaxed);
    Arc::new(p)
}

/// Project a stored document from its bytes (writes that came without a projection, and the
/// rebuild). Bytes that do not load as a document give a projection with only its `problem`:
/// one unreadable record harms only itself.
pub fn project_bytes(header: &DocHeader, bytes: &[u8]) -> StorageResult<Arc<Projection>> {
    match Automerge::load(bytes) {
        Ok(doc) => Ok(project_for_write(&doc, header)),
        Err(e) => Ok(Arc::new(Projection::unreadable(
            header,
            format!("the stored document does not load: {e}"),
        ))),
    }
}

/// One committed write, as the read model sees it.
pub struct Committed {
    pub projection: Arc<Projection>,
    /// The write-log seq of this write.
    pub seq: u64,
    /// The server time of the write.
    pub at_ms: i64,
    /// The device that wrote it (`None`: the registry).
    pub device: Option<DeviceId>,
    /// First write of the record (no old rows to replace).
    pub is_new: bool,
    /// For a rebuild: the record's first write (seq, time); `None`: this write is the first.
    pub first: Option<(u64, i64)>,
}

/// The tables a record of this kind has rows in, besides `rm_records`.
fn kind_tables(kind: RecordKind) -> &'static [&'static schema::Table] {
    use schema::*;
    match kind {
        RecordKind::Clinic => &[&CLINICS, &CONFLICTS],
        RecordKind::Enrolment => &[&ENROLMENTS, &CONFLICTS],
        RecordKind::Procedure => &[&PROCEDURES, &VISITS, &CONFLICTS],
        RecordKind::Response => &[&RESPONSES, &ANSWERS, &CONFLICTS],
        RecordKind::AdverseEvent => &[&ADVERSE_EVENTS, &ANSWERS, &CONFLICTS],
        RecordKind::Adjudication => &[&ADJUDICATIONS, &CONFLICTS],
        RecordKind::AdjudicationCase => &[&CASES, &CASE_ENTRIES, &CONFLICTS],
        RecordKind::CaseReply => &[&CASE_REPLIES, &CONFLICTS],
        // Definitions are read from their records (`definitions::list`), not projected.
        RecordKind::Definition => &[&CONFLICTS],
    }
}

fn i64_of(v: u64) -> StorageResult<i64> {
    i64::try_from(v).map_err(|_| StorageError::Internal("sequence number overflow".into()))
}

/// The visits' done state recounted from the responses (one procedure, or all).
const RECOUNT: &str = "UPDATE rm_visits SET
    done_count = (SELECT COUNT(*) FROM rm_responses r WHERE r.procedure = rm_visits.procedure
        AND r.visit = rm_visits.visit AND r.patient = rm_visits.patient
        AND r.questionnaire = rm_visits.questionnaire AND r.status = 'submitted'),
    done_response = (SELECT r.id FROM rm_responses r WHERE r.procedure = rm_visits.procedure
        AND r.visit = rm_visits.visit AND r.patient = rm_visits.patient
        AND r.questionnaire = rm_visits.questionnaire AND r.status = 'submitted'
        ORDER BY r.id LIMIT 1)";
const RECOUNT_ONE: &str = "UPDATE rm_visits SET
    done_count = (SELECT COUNT(*) FROM rm_responses r WHERE r.procedure = rm_visits.procedure
        AND r.visit = rm_visits.visit AND r.patient = rm_visits.patient
        AND r.questionnaire = rm_visits.questionnaire AND r.status = 'submitted'),
    done_response = (SELECT r.id FROM rm_responses r WHERE r.procedure = rm_visits.procedure
        AND r.visit = rm_visits.visit AND r.patient = rm_visits.patient
        AND r.questionnaire = rm_visits.questionnaire AND r.status = 'submitted'
        ORDER BY r.id LIMIT 1)
    WHERE procedure = $1";
const RECOUNT_MANY: &str = "UPDATE rm_visits SET
    done_count = (SELECT COUNT(*) FROM rm_responses r WHERE r.procedure = rm_visits.procedure
        AND r.visit = rm_visits.visit AND r.patient = rm_visits.patient
        AND r.questionnaire = rm_visits.questionnaire AND r.status = 'submitted'),
    done_response = (SELECT r.id FROM rm_responses r WHERE r.procedure = rm_visits.procedure
        AND r.visit = rm_visits.visit AND r.patient = rm_visits.patient
        AND r.questionnaire = rm_visits.questionnaire AND r.status = 'submitted'
        ORDER BY r.id LIMIT 1)
    WHERE procedure = ANY($1)";

/// Replace the rows of the committed records, inside the caller's transaction.
pub fn apply(tx: &mut dyn RmTx, items: &[Committed]) -> StorageResult<()> {
    apply_inner(tx, items, true)
}

fn apply_inner(tx: &mut dyn RmTx, items: &[Committed], recount: bool) -> StorageResult<()> {
    if items.is_empty() {
        return Ok(());
    }
    let t = Instant::now();
    let pg = tx.dialect() == Dialect::Postgres;
    let stmts = schema::statements(tx.dialect());
    let mut touched: BTreeSet<Vec<u8>> = BTreeSet::new();

    // Old rows of records written before: remember which procedures their responses counted
    // for, then delete them table by table.
    let updated: Vec<&Committed> = items.iter().filter(|c| !c.is_new).collect();
    if !updated.is_empty() {
        let responses: Vec<Vec<u8>> = updated
            .iter()
            .filter(|c| c.projection.header.kind == RecordKind::Response)
            .map(|c| c.projection.header.id.0.to_vec())
            .collect();
        if pg && !responses.is_empty() {
            for row in tx.query(
                "SELECT procedure FROM rm_responses WHERE id = ANY($1) AND procedure IS NOT NULL",
                &[Val::BlobList(responses)],
            )? {
                if let Some(Val::Blob(b)) = row.into_iter().next() {
                    touched.insert(b);
                }
            }
        } else {
            for id in responses {
                for row in tx.query(
                    "SELECT procedure FROM rm_responses WHERE id = $1 AND procedure IS NOT NULL",
                    &[Val::Blob(id)],
                )? {
                    if let Some(Val::Blob(b)) = row.into_iter().next() {
                        touched.insert(b);
                    }
                }
            }
        }
        let mut by_table: BTreeMap<usize, Vec<Vec<u8>>> = BTreeMap::new();
        for c in &updated {
            for table in kind_tables(c.projection.header.kind) {
                by_table
                    .entry(schema::table_index(table))
                    .or_default()
                    .push(c.projection.header.id.0.to_vec());
            }
        }
        for (ti, ids) in by_table {
            if pg {
                tx.exec(&stmts.delete_many[ti], &[Val::BlobList(ids)])?;
            } else {
                for id in ids {
                    tx.exec(&stmts.delete_one[ti], &[Val::Blob(id)])?;
                }
            }
        }
    }

    // New rows, table by table (one bulk statement per table on PostgreSQL).
    // Rows by table, borrowed from the projections (row 0: `rm_records`, built here).
    let mut records: Vec<Vec<Val>> = Vec::with_capacity(items.len());
    let mut rows: Vec<Vec<&Vec<Val>>> = vec![Vec::new(); schema::ALL.len()];
    for c in items {
        let p = &c.projection;
        let h = &p.header;
        let (first_seq, first_ms) = c.first.unwrap_or((c.seq, c.at_ms));
        records.push(vec![
            Val::Blob(h.id.0.to_vec()),
            Val::Text(h.kind.code().into()),
            Val::Blob(h.clinic.0.to_vec()),
            h.patient.map_or(Val::Null, Val::from),
            h.created_by.map_or(Val::Null, |d| Val::Blob(d.0.to_vec())),
            Val::Null,
            p.created_at_s.map_or(Val::Null, Val::Int),
            Val::Int(i64_of(first_seq)?),
            Val::Int(first_ms),
            Val::Int(i64_of(c.seq)?),
            Val::Int(c.at_ms),
            c.device.map_or(Val::Null, |d| Val::Blob(d.0.to_vec())),
            Val::Null,
            Val::Int(p.conflicts),
            p.problem.clone().map_or(Val::Null, Val::Text),
        ]);
        for (ti, r) in &p.rows {
            if let Some(slot) = rows.get_mut(*ti) {
                slot.push(r);
            }
        }
        touched.extend(p.procedures.iter().map(|id| id.0.to_vec()));
    }
    if !records.is_empty() {
        tx.insert(0, &records.iter().collect::<Vec<_>>())?;
    }
    for (ti, table_rows) in rows.iter().enumerate().skip(1) {
        if !table_rows.is_empty() {
            tx.insert(ti, table_rows)?;
        }
    }

    if recount && !touched.is_empty() {
        if pg {
            tx.exec(
                RECOUNT_MANY,
                &[Val::BlobList(touched.into_iter().collect())],
            )?;
        } else {
            for id in touched {
                tx.exec(RECOUNT_ONE, &[Val::Blob(id)])?;
            }
        }
    }
    metrics::APPLY_NS.fetch_add(elapsed_ns(t), Ordering::Relaxed);
    Ok(())
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RebuildReport {
    /// Documents projected.
    pub documents: u64,
    /// Documents whose body could not be projected (listed in `rm_records.problem`).
    pub problems: u64,
    /// Rows written, all tables.
    pub rows: u64,
    /// Wall time, milliseconds.
    pub millis: u64,
}

/// Documents per page while rebuilding (bounds memory).
const REBUILD_PAGE: i64 = 256;

/// Re-derive every table from the stored documents, inside the caller's transaction (which must
/// hold the backend's write lock so that no write interleaves).
pub fn rebuild(tx: &mut dyn RmTx, now_ms: i64) -> StorageResult<RebuildReport> {
    let started = Instant::now();
    let stmts = schema::statements(tx.dialect());
    for sql in &stmts.clear {
        tx.exec(sql, &[])?;
    }
    let mut report = RebuildReport::default();
    let mut after: Vec<u8> = Vec::new();
    loop {
        let page = tx.query(
            "SELECT id, kind, clinic, patient, created_by, data FROM docs WHERE id > $1
             ORDER BY id LIMIT $2",
            &[Val::Blob(after.clone()), Val::Int(REBUILD_PAGE)],
        )?;
        let (Some(first), Some(last)) = (page.first(), page.last()) else {
            break;
        };
        let lo = first.first().cloned().unwrap_or(Val::Null);
        let hi = last.first().cloned().unwrap_or(Val::Null);
        // Each document's first and last write, and who made the last one, from the log and the
        // audit chain.
        let mut meta: BTreeMap<Vec<u8>, WriteSpan> = BTreeMap::new();
        for row in tx.query(
            "SELECT l.doc, l.seq, l.at_ms, a.device FROM log l
             LEFT JOIN audit a ON a.log_seq = l.seq
             WHERE l.doc >= $1 AND l.doc <= $2 ORDER BY l.doc, l.seq",
            &[lo, hi],
        )? {
            let mut it = row.into_iter();
            let (Some(Val::Blob(doc)), Some(Val::Int(seq)), Some(Val::Int(at)), Some(dev)) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                return Err(StorageError::Corrupt("unexpected log row".into()));
            };
            let seq = u64::try_from(seq)
                .map_err(|_| StorageError::Corrupt("negative sequence number".into()))?;
            let span = meta.entry(doc).or_insert(WriteSpan {
                first: (seq, at),
                last: (seq, at),
                device: None,
            });
            span.last = (seq, at);
            span.device = dev.device_id();
        }
        let mut items = Vec::with_capacity(page.len());
        for row in &page {
            let header = header_of(row)?;
            let Some(Val::Blob(data)) = row.get(5) else {
                return Err(StorageError::Corrupt("document without data".into()));
            };
            let projection = match Automerge::load(data) {
                Ok(doc) => Arc::new(project(&doc, &header, schedule())),
                Err(e) => Arc::new(Projection::unreadable(
                    &header,
                    format!("the stored document does not load: {e}"),
                )),
            };
            let span = meta.get(&header.id.0[..]).ok_or_else(|| {
                StorageError::Corrupt(format!("document {} has no write-log entry", header.id))
            })?;
            report.documents += 1;
            report.problems += u64::from(projection.problem.is_some());
            report.rows += 1 + projection.rows.len() as u64;
            items.push(Committed {
                projection,
                seq: span.last.0,
                at_ms: span.last.1,
                device: span.device,
                is_new: true,
                first: Some(span.first),
            });
        }
        apply_inner(tx, &items, false)?;
        after = match last.first() {
            Some(Val::Blob(b)) => b.clone(),
            _ => return Err(StorageError::Corrupt("document id is not a blob".into())),
        };
    }
    tx.exec(RECOUNT, &[])?;
    write_meta(tx, now_ms)?;
    report.millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

struct WriteSpan {
    first: (u64, i64),
    last: (u64, i64),
    device: Option<DeviceId>,
}

fn header_of(row: &[Val]) -> StorageResult<DocHeader> {
    let bad = |what: &str| StorageError::Corrupt(format!("docs row: {what}"));
    let id = row
        .first()
        .and_then(Val::record_id)
        .ok_or_else(|| bad("id"))?;
    let kind = row
        .get(1)
        .and_then(Val::text)
        .and_then(RecordKind::from_code)
        .ok_or_else(|| bad("kind"))?;
    let clinic = row
        .get(2)
        .and_then(Val::record_id)
        .ok_or_else(|| bad("clinic"))?;
    let patient = match row.get(3) {
        Some(Val::Null) | None => None,
        Some(v) => Some(v.record_id().ok_or_else(|| bad("patient"))?),
    };
    let created_by = match row.get(4) {
        Some(Val::Null) | None => None,
        Some(v) => Some(v.device_id().ok_or_else(|| bad("created_by"))?),
    };
    Ok(DocHeader {
        id,
        kind,
        clinic,
        patient,
        created_by,
    })
}

fn write_meta(tx: &mut dyn RmTx, now_ms: i64) -> StorageResult<()> {
    tx.exec(
        "INSERT INTO rm_meta (id, projection_version, rebuilt_at_ms) VALUES (1, $1, $2)
         ON CONFLICT (id) DO UPDATE SET projection_version = excluded.projection_version,
         rebuilt_at_ms = excluded.rebuilt_at_ms",
        &[Val::Int(PROJECTION_VERSION), Val::Int(now_ms)],
    )?;
    Ok(())
}

/// `rebuild-read-model`: open the registry's database (PostgreSQL at `database` if given, else
/// SQLite in `data_dir`) and re-derive every read-model table from the stored documents. Safe
/// while servers run on the same database: writers wait for the rebuild's transaction (on SQLite
/// up to their busy timeout, then they answer 503 and devices retry).
pub fn rebuild_database(
    data_dir: &std::path::Path,
    database: Option<&str>,
) -> StorageResult<RebuildReport> {
    let storage: Box<dyn crate::storage::Storage> = match database {
        Some(url) => Box::new(crate::storage::PostgresStorage::connect(url)?),
        None => {
            if !data_dir.join("registry.sqlite3").is_file() {
                return Err(StorageError::Internal(format!(
                    "no registry database in {}",
                    data_dir.display()
                )));
            }
            Box::new(crate::storage::SqliteStorage::open(data_dir)?)
        }
    };
    storage.rebuild_read_model(chrono::Utc::now().timestamp_millis())
}

/// Whether the read model must be rebuilt (built by another projection version, or never built
/// while documents exist). Records the version on an empty database.
pub fn ensure_current(tx: &mut dyn RmTx, now_ms: i64) -> StorageResult<Option<RebuildReport>> {
    let version = tx
        .query("SELECT projection_version FROM rm_meta WHERE id = 1", &[])?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .and_then(|v| v.int());
    if version == Some(PROJECTION_VERSION) {
        return Ok(None);
    }
    let any_doc = !tx.query("SELECT id FROM docs LIMIT 1", &[])?.is_empty();
    if !any_doc {
        write_meta(tx, now_ms)?;
        return Ok(None);
    }
    tracing::info!(
        from = ?version,
        to = PROJECTION_VERSION,
        "read model out of date: rebuilding it from the stored documents"
    );
    rebuild(tx, now_ms).map(Some)
}
