//! Persistence behind one trait, [`Storage`], with two backends: [`SqliteStorage`] (the default:
//! one file in the data directory, one server process) and [`PostgresStorage`] (several
//! stateless server processes over one PostgreSQL database, chosen with `--database
//! postgres://…` or `FOLLOWUP_DATABASE_URL`; see `docs/operations.md`).
//!
//! Every piece of state lives in the database: documents, the write log and its sequence counter,
//! devices, enrolment codes, the nonce replay cache, the audit chain, rejections. Nothing is held
//! in a process's memory between requests, so any process may serve any request.
//!
//! Contract every backend keeps (`server/tests/contract/mod.rs` checks it on both):
//! * **Sequence numbers become visible in order**: a reader that sees log seq *n* sees every
//!   seq < *n*. SQLite gets it from its single writer; PostgreSQL takes the counter row's lock
//!   (`log_head ... FOR UPDATE`) inside the writing transaction, so writers commit in seq order
//!   (a `SEQUENCE` commits out of order).
//! * [`Storage::commit_writes`] is atomic per call and compare-and-sets each document on its
//!   `version`, so two processes merging into the same document never lose a merge: the loser
//!   gets [`WriteOutcome::Conflict`] and the caller re-merges.
//! * The audit chain is appended inside the same transaction as the write it records, with
//!   [`crate::audit::entry_hash`], under a lock that serialises appenders (SQLite's write lock;
//!   PostgreSQL's `audit_head ... FOR UPDATE`).
//! * A transient failure (lock or pool timeout, deadlock, lost connection, database restarting)
//!   is [`StorageError::Busy`], answered 503 so that the device retries; the failed transaction
//!   left nothing behind.
//!
//! * The read model (`crate::readmodel`) is written in the same transaction as the documents it
//!   is derived from: [`Storage::commit_writes`] and [`Storage::create_clinic`] call
//!   [`crate::readmodel::apply`] for every committed write before committing.
//!
//! The tables, the same in both backends: `clinics`, `devices`, `enrolment_codes`, `docs` (each
//! record's Automerge bytes, header columns, heads and CAS `version`), `log` (the write log the
//! pulls read), `audit` (append-only, hash-chained), `nonces`, `rejections`; PostgreSQL adds
//! `log_head` and `audit_head` (the lock rows) and `followup_schema` (the schema version; SQLite
//! uses `PRAGMA user_version`). The read model's tables (`rm_*`, `rm_meta`, `device_activity`)
//! are defined once in `crate::readmodel::schema`.
//!
//! The methods are blocking; the HTTP layer calls them from `spawn_blocking`.

mod postgres;
mod sqlite;
pub mod staging;

pub use self::postgres::{PostgresOptions, PostgresStorage};
pub use sqlite::SqliteStorage;
pub use staging::{UploadStaging, UploadState};

use automerge::ChangeHash;
use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::model::{DocHeader, RecordKind};
use followup_domain::protocol::{DeviceRole, StatsResponse};

use crate::audit::{AuditEntry, AuditRow};
use crate::readmodel::{RebuildReport, Val};

/// A storage failure. Busy/locked maps to HTTP 503, the rest to 500.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A PostgreSQL error that is not transient (those are [`StorageError::Busy`]).
    #[error("database error: {}", error_chain(.0))]
    Postgres(::postgres::Error),
    #[error("the database is busy; retry")]
    Busy,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("could not open the data directory {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("internal storage error: {0}")]
    Internal(String),
}

pub type StorageResult<T> = Result<T, StorageError>;

/// An error with its causes (`postgres::Error` alone says "db error" or "error connecting to
/// server"; the reason is in its source).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// An enrolled device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub public_key: [u8; 32],
    pub role: DeviceRole,
    pub clinic: RecordId,
    /// The patient's enrolment record (patient devices).
    pub patient: Option<RecordId>,
    pub label: Option<String>,
    pub enrolled_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// A device about to be enrolled (its role comes from the code).
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub id: DeviceId,
    pub public_key: [u8; 32],
    pub label: Option<String>,
}

/// A one-time enrolment code, stored as the SHA-256 of its normalised text.
#[derive(Debug, Clone)]
pub struct EnrolmentCode {
    pub code_hash: [u8; 32],
    pub role: DeviceRole,
    pub clinic: RecordId,
    pub patient: Option<RecordId>,
    pub expires_at_ms: i64,
}

/// A clinic row (its record document is written with it).
#[derive(Debug, Clone)]
pub struct ClinicRow {
    pub id: RecordId,
    pub name: String,
    pub country: String,
}

/// A document as stored.
#[derive(Debug, Clone)]
pub struct StoredDoc {
    pub header: DocHeader,
    /// `Automerge::save()` bytes.
    pub bytes: Vec<u8>,
    pub heads: Vec<ChangeHash>,
    /// The log seq of the document's last write; the compare-and-set token.
    pub version: u64,
}

/// One document write: the merged document and what is new in it.
#[derive(Debug, Clone)]
pub struct DocWrite {
    pub header: DocHeader,
    pub bytes: Vec<u8>,
    pub heads: Vec<ChangeHash>,
    /// `None`: the document must not exist yet; `Some(v)`: its stored version must still be `v`.
    pub expected_version: Option<u64>,
    /// Who wrote it (`None`: the registry itself).
    pub device: Option<DeviceId>,
    /// The changes this write adds (audited).
    pub new_changes: Vec<ChangeHash>,
    /// The audit event name (`accepted`, `clinic_created`).
    pub event: &'static str,
    /// The clinic users the new changes are attributed to (audited; empty without users).
    pub users: Vec<followup_domain::ids::UserId>,
    /// The record's read-model rows, projected before the transaction (the sync handler does it
    /// from the merged document it holds). `None`: the backend projects it from `bytes`.
    pub projection: Option<std::sync::Arc<crate::readmodel::Projection>>,
}

/// What happened to one [`DocWrite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored with this log sequence number.
    Committed { seq: u64 },
    /// The document changed (or appeared) since it was read: re-merge and retry.
    Conflict,
}

/// The documents a device may read: those of one clinic or one patient, and in both cases
/// every registry-wide record (clinic `definitions::REGISTRY_SCOPE`: published definitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadScope {
    Clinic(RecordId),
    Patient(RecordId),
}

/// A refused push, kept for operators.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub at_ms: i64,
    pub device: DeviceId,
    pub doc: RecordId,
    pub code: &'static str,
    pub message: String,
}

/// The registry's persistence. See the module documentation for the contract.
pub trait Storage:
    crate::staff::store::StaffStore
    + crate::users::ClinicUserStore
    + UploadStaging
    + Send
    + Sync
    + 'static
{
    /// Create a clinic and its record document (log + audit `clinic_created`), atomically.
    fn create_clinic(&self, clinic: &ClinicRow, doc: &DocWrite, now_ms: i64) -> StorageResult<u64>;
    /// Whether a clinic exists.
    fn clinic_exists(&self, id: RecordId) -> StorageResult<bool>;

    /// Store a new enrolment code (audited as `code_issued`).
    fn insert_enrolment_code(&self, code: &EnrolmentCode, now_ms: i64) -> StorageResult<()>;
    /// Redeem a code atomically: if it exists, is unused and unexpired, mark it used and enrol the
    /// device with the code's role (audited as `device_enrolled`). `None` otherwise.
    fn redeem_enrolment_code(
        &self,
        code_hash: &[u8; 32],
        device: &NewDevice,
        now_ms: i64,
    ) -> StorageResult<Option<DeviceRecord>>;

    fn device(&self, id: DeviceId) -> StorageResult<Option<DeviceRecord>>;
    /// Revoke a device (audited). `None` if unknown; `Some((newly_revoked, revoked_at_ms))`.
    fn revoke_device(&self, id: DeviceId, now_ms: i64) -> StorageResult<Option<(bool, i64)>>;

    /// Record `(device, nonce)` until `expires_at_ms`. `false` if it is already recorded (a
    /// replay). Expired nonces may be purged at any time.
    fn remember_nonce(
        &self,
        device: DeviceId,
        nonce: &[u8; 16],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> StorageResult<bool>;

    fn load_doc(&self, id: RecordId) -> StorageResult<Option<StoredDoc>>;
    /// The header only (cheap).
    fn doc_header(&self, id: RecordId) -> StorageResult<Option<DocHeader>>;
    /// Store document writes in one transaction, each compare-and-set on its version; every
    /// committed write gets the next log seq, a log row and an audit entry.
    fn commit_writes(&self, writes: &[DocWrite], now_ms: i64) -> StorageResult<Vec<WriteOutcome>>;
    fn record_rejections(&self, rejections: &[Rejection]) -> StorageResult<()>;

    /// The log's highest seq (0 when empty).
    fn max_seq(&self) -> StorageResult<u64>;
    /// Documents in `scope` with a log entry in `(after, upto]`, with their first such seq,
    /// ordered by it; at most `limit`.
    fn changed_docs(
        &self,
        scope: ReadScope,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> StorageResult<Vec<(RecordId, u64)>>;
    /// The ids of the documents of one kind (in `scope`, or all when `None`), in id order.
    fn docs_of_kind(
        &self,
        kind: RecordKind,
        scope: Option<ReadScope>,
    ) -> StorageResult<Vec<RecordId>>;
    /// A document's heads as of log seq `seq` (empty if it had no write by then).
    fn heads_at(&self, doc: RecordId, seq: u64) -> StorageResult<Vec<ChangeHash>>;

    /// Append an audit entry on its own (admin events without a document write).
    fn append_audit(&self, entry: &AuditEntry) -> StorageResult<()>;
    /// Audit rows with `seq > after`, ascending, at most `limit`.
    fn audit_rows(&self, after: u64, limit: usize) -> StorageResult<Vec<AuditRow>>;
    /// A log seq that has no `accepted`/`clinic_created` audit entry, if any.
    fn unaudited_log_seq(&self) -> StorageResult<Option<u64>>;
    /// The audit chain's last `(seq, hash)`, if it has any entry.
    fn audit_head(&self) -> StorageResult<Option<(u64, [u8; 32])>>;

    fn stats(&self) -> StorageResult<StatsResponse>;

    /// One page of documents for an export: those of `q.kind` (in `q.clinic` when given, last
    /// written at or after `q.since_ms` when given) with an id above `after`, in id order, at
    /// most `limit`. Keyset paging, so an export holds one page at a time.
    fn export_docs_page(
        &self,
        q: &ExportDocsQuery,
        after: Option<RecordId>,
        limit: usize,
    ) -> StorageResult<Vec<ExportDoc>>;

    /// Run a read-model query: portable SQL with `$n` parameters (see [`crate::readmodel::query`],
    /// which is the intended caller), rows as [`Val`]s.
    fn rm_query(&self, sql: &'static str, params: &[Val]) -> StorageResult<Vec<Vec<Val>>>;
    /// Re-derive every read-model table from the stored documents, in one transaction that
    /// holds the write lock (writers wait; readers see the old tables until it commits).
    fn rebuild_read_model(&self, now_ms: i64) -> StorageResult<RebuildReport>;
}

/// Which documents an export reads ([`Storage::export_docs_page`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportDocsQuery {
    pub kind: RecordKind,
    pub clinic: Option<RecordId>,
    pub since_ms: Option<i64>,
}

/// A document read for an export.
#[derive(Debug, Clone)]
pub struct ExportDoc {
    pub header: DocHeader,
    /// `Automerge::save()` bytes.
    pub bytes: Vec<u8>,
    /// When the server last wrote it (ms since the epoch).
    pub updated_at_ms: i64,
}

/// Heads as stored: 32-byte hashes back to back.
pub(crate) fn heads_to_blob(heads: &[ChangeHash]) -> Vec<u8> {
    let mut out = Vec::with_capacity(heads.len() * 32);
    for h in heads {
        out.extend_from_slice(&h.0);
    }
    out
}

pub(crate) fn heads_from_blob(blob: &[u8]) -> StorageResult<Vec<ChangeHash>> {
    if blob.len() & 31 != 0 {
        return Err(StorageError::Corrupt(
            "heads blob is not a multiple of 32 bytes".into(),
        ));
    }
    Ok(blob
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            ChangeHash(h)
        })
        .collect())
}

fn id16(blob: &[u8], what: &str) -> StorageResult<[u8; 16]> {
    <[u8; 16]>::try_from(blob).map_err(|_| StorageError::Corrupt(format!("{what} is not 16 bytes")))
}
pub(crate) fn rid(blob: Vec<u8>) -> StorageResult<RecordId> {
    id16(&blob, "record id").map(RecordId)
}
pub(crate) fn did(blob: Vec<u8>) -> StorageResult<DeviceId> {
    id16(&blob, "device id").map(DeviceId)
}
pub(crate) fn h32(blob: &[u8], what: &str) -> StorageResult<[u8; 32]> {
    <[u8; 32]>::try_from(blob).map_err(|_| StorageError::Corrupt(format!("{what} is not 32 bytes")))
}
pub(crate) fn u64_of(v: i64) -> StorageResult<u64> {
    u64::try_from(v).map_err(|_| StorageError::Corrupt("negative sequence number".into()))
}
pub(crate) fn i64_of(v: u64) -> StorageResult<i64> {
    i64::try_from(v).map_err(|_| StorageError::Internal("sequence number overflow".into()))
}

/// The header columns of a docs row.
pub(crate) fn header_from_row(
    id: Vec<u8>,
    kind: String,
    clinic: Vec<u8>,
    patient: Option<Vec<u8>>,
    created_by: Option<Vec<u8>>,
) -> StorageResult<DocHeader> {
    Ok(DocHeader {
        id: rid(id)?,
        kind: RecordKind::from_code(&kind)
            .ok_or_else(|| StorageError::Corrupt(format!("unknown kind {kind:?}")))?,
        clinic: rid(clinic)?,
        patient: patient.map(rid).transpose()?,
        created_by: created_by.map(did).transpose()?,
    })
}
