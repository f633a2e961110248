//! The default backend: one SQLite file (`registry.sqlite3`) in the data directory, WAL mode.
//!
//! One writer connection behind a mutex (writes are serialised, which also orders log sequence
//! numbers), a small pool of reader connections (WAL readers never block the writer), and
//! `busy_timeout` so that another process on the same file waits rather than fails.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use automerge::ChangeHash;
use followup_domain::definitions::REGISTRY_SCOPE;
use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::model::DocHeader;
use followup_domain::protocol::{DeviceRole, StatsResponse};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::{
    did, h32, header_from_row, heads_from_blob, heads_to_blob, i64_of, rid, u64_of, ClinicRow,
    DeviceRecord, DocWrite, EnrolmentCode, ExportDoc, ExportDocsQuery, NewDevice, ReadScope,
    Rejection, Storage, StorageError, StorageResult, StoredDoc, WriteOutcome,
};
use crate::audit::{self, AuditEntry, AuditRow};
use crate::readmodel::{self, schema, Committed, Dialect, RebuildReport, RmTx, Val};

mod staff;
mod users;

mod staging;

const DB_FILE: &str = "registry.sqlite3";
const SCHEMA_VERSION: i64 = 1;
const MAX_IDLE_READERS: usize = 16;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS clinics (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    country TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    id BLOB PRIMARY KEY,
    public_key BLOB NOT NULL,
    role TEXT NOT NULL,
    clinic BLOB NOT NULL,
    patient BLOB,
    label TEXT,
    enrolled_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS enrolment_codes (
    code_hash BLOB PRIMARY KEY,
    role TEXT NOT NULL,
    clinic BLOB NOT NULL,
    patient BLOB,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    used_at_ms INTEGER,
    used_by BLOB
);
CREATE TABLE IF NOT EXISTS docs (
    id BLOB PRIMARY KEY,
    kind TEXT NOT NULL,
    clinic BLOB NOT NULL,
    patient BLOB,
    created_by BLOB,
    data BLOB NOT NULL,
    heads BLOB NOT NULL,
    version INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY,
    doc BLOB NOT NULL,
    clinic BLOB NOT NULL,
    patient BLOB,
    heads BLOB NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS docs_patient_kind ON docs(patient, kind);
CREATE INDEX IF NOT EXISTS docs_clinic_kind ON docs(clinic, kind);
CREATE INDEX IF NOT EXISTS log_doc ON log(doc, seq);
CREATE INDEX IF NOT EXISTS log_clinic ON log(clinic, seq);
CREATE INDEX IF NOT EXISTS log_patient ON log(patient, seq);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    event TEXT NOT NULL,
    device BLOB,
    doc BLOB,
    log_seq INTEGER,
    change_hashes BLOB NOT NULL,
    detail TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_seq ON audit(log_seq);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS nonces (
    device BLOB NOT NULL,
    nonce BLOB NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (device, nonce)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces(expires_at_ms);
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    device BLOB NOT NULL,
    doc BLOB NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL
);
"#;

/// SQLite storage in a data directory.
pub struct SqliteStorage {
    path: std::path::PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    nonce_inserts: std::sync::atomic::AtomicU64,
}

fn map_err(e: rusqlite::Error) -> StorageError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
            StorageError::Busy
        }
        _ => StorageError::Sqlite(e),
    }
}

trait SqlResult<T> {
    fn db(self) -> StorageResult<T>;
}
impl<T> SqlResult<T> for rusqlite::Result<T> {
    fn db(self) -> StorageResult<T> {
        self.map_err(map_err)
    }
}

/// The writer's page cache, KiB (SQLite's default is 2 MiB): a push inserts rows at random
/// places of big B-trees (documents, the read model's answers and records, all keyed by random
/// ids), and with the default cache most of those pages are read again from the file each time.
/// Measured on a 1,000-response push into a registry of 100,000 responses: docs/registry-console.md,
/// "Projection cost".
const WRITER_CACHE_KIB: u32 = 32 * 1024;
/// Each reader's page cache, KiB (up to [`MAX_IDLE_READERS`] are kept).
const READER_CACHE_KIB: u32 = 8 * 1024;

fn open_conn(path: &Path, cache_kib: u32) -> StorageResult<Connection> {
    let conn = Connection::open(path).db()?;
    conn.busy_timeout(std::time::Duration::from_secs(10)).db()?;
    // A push uses more distinct statements than rusqlite's default cache of 16 (the write path,
    // the audit chain and the read model's inserts per table): keep them all prepared.
    conn.set_prepared_statement_cache_capacity(128);
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;
         PRAGMA cache_size = -{cache_kib};"
    ))
    .db()?;
    Ok(conn)
}

struct AuditHead {
    seq: u64,
    hash: [u8; 32],
}

fn audit_head(tx: &Transaction<'_>) -> StorageResult<AuditHead> {
    let row: Option<(i64, Vec<u8>)> = tx
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .db()?;
    match row {
        None => Ok(AuditHead {
            seq: 0,
            hash: audit::GENESIS,
        }),
        Some((seq, hash)) => Ok(AuditHead {
            seq: u64_of(seq)?,
            hash: h32(&hash, "audit hash")?,
        }),
    }
}

fn append_audit_tx(
    tx: &Transaction<'_>,
    head: &mut AuditHead,
    e: &AuditEntry,
) -> StorageResult<()> {
    let seq = head.seq + 1;
    let hash = audit::entry_hash(&head.hash, seq, e);
    let hashes: Vec<u8> = e.change_hashes.iter().flat_map(|h| h.0).collect();
    tx.execute(
        "INSERT INTO audit (seq, at_ms, event, device, doc, log_seq, change_hashes, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            i64_of(seq)?,
            e.at_ms,
            e.event,
            e.device.map(|d| d.0.to_vec()),
            e.doc.map(|d| d.0.to_vec()),
            e.log_seq.map(i64_of).transpose()?,
            hashes,
            e.detail,
            head.hash.to_vec(),
            hash.to_vec(),
        ],
    )
    .db()?;
    head.seq = seq;
    head.hash = hash;
    Ok(())
}

fn max_seq_tx(conn: &Connection) -> StorageResult<u64> {
    let v: Option<i64> = conn
        .query_row("SELECT MAX(seq) FROM log", [], |r| r.get(0))
        .db()?;
    u64_of(v.unwrap_or(0))
}

/// Write one document inside a transaction. `Ok(None)` on a compare-and-set conflict.
fn write_doc_tx(
    tx: &Transaction<'_>,
    w: &DocWrite,
    seq: u64,
    now_ms: i64,
    head: &mut AuditHead,
) -> StorageResult<Option<u64>> {
    let h = &w.header;
    let heads = heads_to_blob(&w.heads);
    let seq_i = i64_of(seq)?;
    let changed = match w.expected_version {
        None => tx
            .execute(
                "INSERT INTO docs (id, kind, clinic, patient, created_by, data, heads, version, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(id) DO NOTHING",
                params![
                    h.id.0.to_vec(),
                    h.kind.code(),
                    h.clinic.0.to_vec(),
                    h.patient.map(|p| p.0.to_vec()),
                    h.created_by.map(|d| d.0.to_vec()),
                    w.bytes,
                    heads,
                    seq_i,
                    now_ms
                ],
            )
            .db()?,
        Some(v) => tx
            .execute(
                "UPDATE docs SET data = ?2, heads = ?3, version = ?4, updated_at_ms = ?5
                 WHERE id = ?1 AND version = ?6",
                params![h.id.0.to_vec(), w.bytes, heads, seq_i, now_ms, i64_of(v)?],
            )
            .db()?,
    };
    if changed == 0 {
        return Ok(None);
    }
    tx.execute(
        "INSERT INTO log (seq, doc, clinic, patient, heads, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            seq_i,
            h.id.0.to_vec(),
            h.clinic.0.to_vec(),
            h.patient.map(|p| p.0.to_vec()),
            heads_to_blob(&w.heads),
            now_ms
        ],
    )
    .db()?;
    append_audit_tx(tx, head, &AuditEntry::document_write(w, seq, now_ms))?;
    Ok(Some(seq))
}

fn device_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok(DeviceRow {
        id: r.get(0)?,
        public_key: r.get(1)?,
        role: r.get(2)?,
        clinic: r.get(3)?,
        patient: r.get(4)?,
        label: r.get(5)?,
        enrolled_at_ms: r.get(6)?,
        revoked_at_ms: r.get(7)?,
    })
}

struct DeviceRow {
    id: Vec<u8>,
    public_key: Vec<u8>,
    role: String,
    clinic: Vec<u8>,
    patient: Option<Vec<u8>>,
    label: Option<String>,
    enrolled_at_ms: i64,
    revoked_at_ms: Option<i64>,
}

impl DeviceRow {
    fn into_record(self) -> StorageResult<DeviceRecord> {
        Ok(DeviceRecord {
            id: did(self.id)?,
            public_key: h32(&self.public_key, "public key")?,
            role: DeviceRole::from_code(&self.role)
                .ok_or_else(|| StorageError::Corrupt(format!("unknown role {:?}", self.role)))?,
            clinic: rid(self.clinic)?,
            patient: self.patient.map(rid).transpose()?,
            label: self.label,
            enrolled_at_ms: self.enrolled_at_ms,
            revoked_at_ms: self.revoked_at_ms,
        })
    }
}

const DEVICE_COLS: &str =
    "id, public_key, role, clinic, patient, label, enrolled_at_ms, revoked_at_ms";

impl SqliteStorage {
    /// Open (creating if needed) the database in `data_dir`.
    pub fn open(data_dir: &Path) -> StorageResult<SqliteStorage> {
        std::fs::create_dir_all(data_dir).map_err(|source| StorageError::Io {
            path: data_dir.display().to_string(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let conn = open_conn(&path, WRITER_CACHE_KIB)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .db()?;
        if version > SCHEMA_VERSION {
            return Err(StorageError::Internal(format!(
                "the database schema is version {version}, newer than this server's {SCHEMA_VERSION}"
            )));
        }
        conn.execute_batch(SCHEMA).db()?;
        conn.execute_batch(staging::SCHEMA).db()?;
        conn.execute_batch(staff::STAFF_SCHEMA).db()?;
        conn.execute_batch(users::USERS_SCHEMA).db()?;
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))
            .db()?;
        conn.execute_batch(&schema::ddl(Dialect::Sqlite)).db()?;
        let storage = SqliteStorage {
            path,
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            nonce_inserts: std::sync::atomic::AtomicU64::new(0),
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        if let Some(r) = storage.write(|tx| readmodel::ensure_current(&mut SqliteRm(tx), now_ms))? {
            tracing::info!(
                documents = r.documents,
                millis = r.millis,
                "read model rebuilt"
            );
        }
        Ok(storage)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn writer(&self) -> StorageResult<MutexGuard<'_, Connection>> {
        self.writer
            .lock()
            .map_err(|_| StorageError::Internal("writer lock poisoned".into()))
    }

    /// Run `f` in an IMMEDIATE transaction on the writer connection; commit if it returns `Ok`.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> StorageResult<T>) -> StorageResult<T> {
        let mut conn = self.writer()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db()?;
        let out = f(&tx)?;
        tx.commit().db()?;
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> StorageResult<T>) -> StorageResult<T> {
        let pooled = self
            .readers
            .lock()
            .map_err(|_| StorageError::Internal("reader pool poisoned".into()))?
            .pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_conn(&self.path, READER_CACHE_KIB)?,
        };
        let out = f(&conn);
        if let Ok(mut pool) = self.readers.lock() {
            if pool.len() < MAX_IDLE_READERS {
                pool.push(conn);
            }
        }
        out
    }
}

impl Storage for SqliteStorage {
    fn create_clinic(&self, clinic: &ClinicRow, doc: &DocWrite, now_ms: i64) -> StorageResult<u64> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO clinics (id, name, country, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![clinic.id.0.to_vec(), clinic.name, clinic.country, now_ms],
            )
            .db()?;
            let mut head = audit_head(tx)?;
            let seq = max_seq_tx(tx)? + 1;
            let seq = write_doc_tx(tx, doc, seq, now_ms, &mut head)?
                .ok_or_else(|| StorageError::Internal("clinic document already exists".into()))?;
            project_committed(tx, &[(doc, seq)], now_ms)?;
            Ok(seq)
        })
    }

    fn clinic_exists(&self, id: RecordId) -> StorageResult<bool> {
        self.read(|c| {
            c.query_row(
                "SELECT 1 FROM clinics WHERE id = ?1",
                [id.0.to_vec()],
                |_| Ok(()),
            )
            .optional()
            .db()
            .map(|o| o.is_some())
        })
    }

    fn insert_enrolment_code(&self, code: &EnrolmentCode, now_ms: i64) -> StorageResult<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO enrolment_codes (code_hash, role, clinic, patient, created_at_ms, expires_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    code.code_hash.to_vec(),
                    code.role.as_str(),
                    code.clinic.0.to_vec(),
                    code.patient.map(|p| p.0.to_vec()),
                    now_ms,
                    code.expires_at_ms
                ],
            )
            .db()?;
            let mut head = audit_head(tx)?;
            append_audit_tx(
                tx,
                &mut head,
                &AuditEntry::code_issued(code, now_ms),
            )
        })
    }

    fn redeem_enrolment_code(
        &self,
        code_hash: &[u8; 32],
        device: &NewDevice,
        now_ms: i64,
    ) -> StorageResult<Option<DeviceRecord>> {
        self.write(|tx| {
            let row: Option<(String, Vec<u8>, Option<Vec<u8>>)> = tx
                .query_row(
                    "SELECT role, clinic, patient FROM enrolment_codes
                     WHERE code_hash = ?1 AND used_at_ms IS NULL AND expires_at_ms > ?2",
                    params![code_hash.to_vec(), now_ms],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .db()?;
            let Some((role, clinic, patient)) = row else {
                return Ok(None);
            };
            let role = DeviceRole::from_code(&role)
                .ok_or_else(|| StorageError::Corrupt(format!("unknown role {role:?}")))?;
            let rec = DeviceRecord {
                id: device.id,
                public_key: device.public_key,
                role,
                clinic: rid(clinic)?,
                patient: patient.map(rid).transpose()?,
                label: device.label.clone(),
                enrolled_at_ms: now_ms,
                revoked_at_ms: None,
            };
            tx.execute(
                "UPDATE enrolment_codes SET used_at_ms = ?2, used_by = ?3 WHERE code_hash = ?1",
                params![code_hash.to_vec(), now_ms, rec.id.0.to_vec()],
            )
            .db()?;
            tx.execute(
                &format!(
                    "INSERT INTO devices ({DEVICE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)"
                ),
                params![
                    rec.id.0.to_vec(),
                    rec.public_key.to_vec(),
                    rec.role.as_str(),
                    rec.clinic.0.to_vec(),
                    rec.patient.map(|p| p.0.to_vec()),
                    rec.label,
                    now_ms
                ],
            )
            .db()?;
            let mut head = audit_head(tx)?;
            append_audit_tx(tx, &mut head, &AuditEntry::device_enrolled(&rec, now_ms))?;
            Ok(Some(rec))
        })
    }

    fn device(&self, id: DeviceId) -> StorageResult<Option<DeviceRecord>> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {DEVICE_COLS} FROM devices WHERE id = ?1"),
                [id.0.to_vec()],
                device_from_row,
            )
            .optional()
            .db()?
            .map(DeviceRow::into_record)
            .transpose()
        })
    }

    fn revoke_device(&self, id: DeviceId, now_ms: i64) -> StorageResult<Option<(bool, i64)>> {
        self.write(|tx| {
            let row: Option<Option<i64>> = tx
                .query_row(
                    "SELECT revoked_at_ms FROM devices WHERE id = ?1",
                    [id.0.to_vec()],
                    |r| r.get(0),
                )
                .optional()
                .db()?;
            match row {
                None => Ok(None),
                Some(Some(at)) => Ok(Some((false, at))),
                Some(None) => {
                    tx.execute(
                        "UPDATE devices SET revoked_at_ms = ?2 WHERE id = ?1",
                        params![id.0.to_vec(), now_ms],
                    )
                    .db()?;
                    let mut head = audit_head(tx)?;
                    append_audit_tx(tx, &mut head, &AuditEntry::device_revoked(id, now_ms))?;
                    Ok(Some((true, now_ms)))
                }
            }
        })
    }

    fn remember_nonce(
        &self,
        device: DeviceId,
        nonce: &[u8; 16],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> StorageResult<bool> {
        let n = self
            .nonce_inserts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.write(|tx| {
            if n & 255 == 0 {
                tx.execute("DELETE FROM nonces WHERE expires_at_ms < ?1", [now_ms])
                    .db()?;
            }
            let inserted = tx
                .execute(
                    "INSERT INTO nonces (device, nonce, expires_at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT(device, nonce) DO NOTHING",
                    params![device.0.to_vec(), nonce.to_vec(), expires_at_ms],
                )
                .db()?;
            if inserted == 1 {
                tx.prepare_cached(
                    "INSERT INTO device_activity (device, last_seen_ms, requests) VALUES (?1, ?2, 1)
                     ON CONFLICT(device) DO UPDATE SET
                       last_seen_ms = MAX(last_seen_ms, excluded.last_seen_ms),
                       requests = requests + 1",
                )
                .db()?
                .execute(params![device.0.to_vec(), now_ms])
                .db()?;
            }
            Ok(inserted == 1)
        })
    }

    fn export_docs_page(
        &self,
        q: &ExportDocsQuery,
        after: Option<RecordId>,
        limit: usize,
    ) -> StorageResult<Vec<ExportDoc>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, kind, clinic, patient, created_by, data, updated_at_ms FROM docs \
                     WHERE kind = ?1 AND (?2 IS NULL OR clinic = ?2) \
                     AND (?3 IS NULL OR updated_at_ms >= ?3) AND (?4 IS NULL OR id > ?4) \
                     ORDER BY id LIMIT ?5",
                )
                .db()?;
            let rows = stmt
                .query_map(
                    params![
                        q.kind.code(),
                        q.clinic.map(|c| c.0.to_vec()),
                        q.since_ms,
                        after.map(|a| a.0.to_vec()),
                        limit
                    ],
                    |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, Vec<u8>>(2)?,
                            r.get::<_, Option<Vec<u8>>>(3)?,
                            r.get::<_, Option<Vec<u8>>>(4)?,
                            r.get::<_, Vec<u8>>(5)?,
                            r.get::<_, i64>(6)?,
                        ))
                    },
                )
                .db()?;
            let mut out = Vec::new();
            for row in rows {
                let (id, kind, clinic, patient, created_by, data, updated_at_ms) = row.db()?;
                out.push(ExportDoc {
                    header: header_from_row(id, kind, clinic, patient, created_by)?,
                    bytes: data,
                    updated_at_ms,
                });
            }
            Ok(out)
        })
    }

    fn load_doc(&self, id: RecordId) -> StorageResult<Option<StoredDoc>> {
        self.read(|c| {
            #[allow(clippy::type_complexity)]
            let row: Option<(
                Vec<u8>,
                String,
                Vec<u8>,
                Option<Vec<u8>>,
                Option<Vec<u8>>,
                Vec<u8>,
                Vec<u8>,
                i64,
            )> = c
                .query_row(
                    "SELECT id, kind, clinic, patient, created_by, data, heads, version FROM docs WHERE id = ?1",
                    [id.0.to_vec()],
                    |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                            r.get(7)?,
                        ))
                    },
                )
                .optional()
                .db()?;
            row.map(|(id, kind, clinic, patient, created_by, data, heads, version)| {
                Ok(StoredDoc {
                    header: header_from_row(id, kind, clinic, patient, created_by)?,
                    bytes: data,
                    heads: heads_from_blob(&heads)?,
                    version: u64_of(version)?,
                })
            })
            .transpose()
        })
    }

    fn doc_header(&self, id: RecordId) -> StorageResult<Option<DocHeader>> {
        self.read(|c| {
            #[allow(clippy::type_complexity)]
            let row: Option<(
                Vec<u8>,
                String,
                Vec<u8>,
                Option<Vec<u8>>,
                Option<Vec<u8>>,
            )> = c
                .query_row(
                    "SELECT id, kind, clinic, patient, created_by FROM docs WHERE id = ?1",
                    [id.0.to_vec()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()
                .db()?;
            row.map(|(id, kind, clinic, patient, created_by)| {
                header_from_row(id, kind, clinic, patient, created_by)
            })
            .transpose()
        })
    }

    fn commit_writes(&self, writes: &[DocWrite], now_ms: i64) -> StorageResult<Vec<WriteOutcome>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|tx| {
            let mut head = audit_head(tx)?;
            let mut seq = max_seq_tx(tx)?;
            let mut out = Vec::with_capacity(writes.len());
            let mut committed = Vec::with_capacity(writes.len());
            for w in writes {
                match write_doc_tx(tx, w, seq + 1, now_ms, &mut head)? {
                    Some(s) => {
                        seq = s;
                        out.push(WriteOutcome::Committed { seq: s });
                        committed.push((w, s));
                    }
                    None => out.push(WriteOutcome::Conflict),
                }
            }
            project_committed(tx, &committed, now_ms)?;
            Ok(out)
        })
    }

    fn record_rejections(&self, rejections: &[Rejection]) -> StorageResult<()> {
        if rejections.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            for r in rejections {
                tx.execute(
                    "INSERT INTO rejections (at_ms, device, doc, code, message) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![r.at_ms, r.device.0.to_vec(), r.doc.0.to_vec(), r.code, r.message],
                )
                .db()?;
            }
            Ok(())
        })
    }

    fn max_seq(&self) -> StorageResult<u64> {
        self.read(max_seq_tx)
    }

    fn audit_head(&self) -> StorageResult<Option<(u64, [u8; 32])>> {
        self.read(|conn| {
            let row: Option<(i64, Vec<u8>)> = conn
                .query_row(
                    "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .db()?;
            row.map(|(seq, hash)| Ok((u64_of(seq)?, h32(&hash, "audit hash")?)))
                .transpose()
        })
    }

    fn changed_docs(
        &self,
        scope: ReadScope,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> StorageResult<Vec<(RecordId, u64)>> {
        // Every scope also reads the registry-wide records (published definitions).
        let (filter, key) = match scope {
            ReadScope::Clinic(c) => ("clinic IN (?1, ?5)", c),
            ReadScope::Patient(p) => ("(patient = ?1 OR clinic = ?5)", p),
        };
        let sql = format!(
            "SELECT doc, MIN(seq) AS first FROM log WHERE {filter} AND seq > ?2 AND seq <= ?3
             GROUP BY doc ORDER BY first LIMIT ?4"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|c| {
            let mut stmt = c.prepare_cached(&sql).db()?;
            let rows = stmt
                .query_map(
                    params![
                        key.0.to_vec(),
                        i64_of(after)?,
                        i64_of(upto)?,
                        limit,
                        REGISTRY_SCOPE.0.to_vec()
                    ],
                    |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)),
                )
                .db()?;
            let mut out = Vec::new();
            for row in rows {
                let (doc, first) = row.db()?;
                out.push((rid(doc)?, u64_of(first)?));
            }
            Ok(out)
        })
    }

    fn docs_of_kind(
        &self,
        kind: followup_domain::model::RecordKind,
        scope: Option<ReadScope>,
    ) -> StorageResult<Vec<RecordId>> {
        let (sql, key) = match scope {
            Some(ReadScope::Clinic(c)) => (
                "SELECT id FROM docs WHERE clinic = ?1 AND kind = ?2 ORDER BY id",
                Some(c),
            ),
            Some(ReadScope::Patient(p)) => (
                "SELECT id FROM docs WHERE patient = ?1 AND kind = ?2 ORDER BY id",
                Some(p),
            ),
            None => ("SELECT id FROM docs WHERE kind = ?2 ORDER BY id", None),
        };
        self.read(|c| {
            let mut stmt = c.prepare_cached(sql).db()?;
            let key = key.map(|k| k.0.to_vec());
            let ids: Vec<Vec<u8>> = match key {
                Some(k) => stmt
                    .query_map(params![k, kind.code()], |r| r.get(0))
                    .db()?
                    .collect::<Result<_, _>>()
                    .db()?,
                None => stmt
                    .query_map(params![rusqlite::types::Null, kind.code()], |r| r.get(0))
                    .db()?
                    .collect::<Result<_, _>>()
                    .db()?,
            };
            ids.into_iter().map(rid).collect()
        })
    }

    fn heads_at(&self, doc: RecordId, seq: u64) -> StorageResult<Vec<ChangeHash>> {
        self.read(|c| {
            let blob: Option<Vec<u8>> = c
                .prepare_cached(
                    "SELECT heads FROM log WHERE doc = ?1 AND seq <= ?2 ORDER BY seq DESC LIMIT 1",
                )
                .db()?
                .query_row(params![doc.0.to_vec(), i64_of(seq)?], |r| r.get(0))
                .optional()
                .db()?;
            blob.map(|b| heads_from_blob(&b))
                .transpose()
                .map(Option::unwrap_or_default)
        })
    }

    fn append_audit(&self, entry: &AuditEntry) -> StorageResult<()> {
        self.write(|tx| {
            let mut head = audit_head(tx)?;
            append_audit_tx(tx, &mut head, entry)
        })
    }

    fn audit_rows(&self, after: u64, limit: usize) -> StorageResult<Vec<AuditRow>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT seq, at_ms, event, device, doc, log_seq, change_hashes, detail, prev_hash, hash
                     FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )
                .db()?;
            let rows = stmt
                .query_map(params![i64_of(after)?, limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<Vec<u8>>>(3)?,
                        r.get::<_, Option<Vec<u8>>>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                        r.get::<_, Vec<u8>>(6)?,
                        r.get::<_, String>(7)?,
                        r.get::<_, Vec<u8>>(8)?,
                        r.get::<_, Vec<u8>>(9)?,
                    ))
                })
                .db()?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, at_ms, ev, device, doc, log_seq, hashes, detail, prev, hash) = row.db()?;
                if hashes.len() & 31 != 0 {
                    return Err(StorageError::Corrupt("audit change hashes".into()));
                }
                out.push(AuditRow {
                    seq: u64_of(seq)?,
                    entry: AuditEntry {
                        at_ms,
                        event: ev,
                        device: device.map(did).transpose()?,
                        doc: doc.map(rid).transpose()?,
                        log_seq: log_seq.map(u64_of).transpose()?,
                        change_hashes: heads_from_blob(&hashes)?,
                        detail,
                    },
                    prev_hash: h32(&prev, "audit prev_hash")?,
                    hash: h32(&hash, "audit hash")?,
                });
            }
            Ok(out)
        })
    }

    fn unaudited_log_seq(&self) -> StorageResult<Option<u64>> {
        self.read(|c| {
            let v: Option<i64> = c
                .query_row(
                    "SELECT l.seq FROM log l WHERE NOT EXISTS
                       (SELECT 1 FROM audit a WHERE a.log_seq = l.seq) ORDER BY l.seq LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .db()?;
            v.map(u64_of).transpose()
        })
    }

    fn rm_query(&self, sql: &'static str, params: &[Val]) -> StorageResult<Vec<Vec<Val>>> {
        self.read(|c| SqliteRm(c).query(sql, params))
    }

    fn rebuild_read_model(&self, now_ms: i64) -> StorageResult<RebuildReport> {
        self.write(|tx| readmodel::rebuild(&mut SqliteRm(tx), now_ms))
    }

    fn stats(&self) -> StorageResult<StatsResponse> {
        self.read(|c| {
            let count = |sql: &str| -> StorageResult<u64> {
                let v: i64 = c.query_row(sql, [], |r| r.get(0)).db()?;
                u64_of(v)
            };
            Ok(StatsResponse {
                documents: count("SELECT COUNT(*) FROM docs")?,
                clinics: count("SELECT COUNT(*) FROM clinics")?,
                devices: count("SELECT COUNT(*) FROM devices")?,
                revoked_devices: count(
                    "SELECT COUNT(*) FROM devices WHERE revoked_at_ms IS NOT NULL",
                )?,
                log_seq: count("SELECT COALESCE(MAX(seq), 0) FROM log")?,
                audit_entries: count("SELECT COUNT(*) FROM audit")?,
                rejections: count("SELECT COUNT(*) FROM rejections")?,
            })
        })
    }
}

/// Project the committed writes into the read model, inside the writing transaction.
fn project_committed(
    tx: &Transaction<'_>,
    committed: &[(&DocWrite, u64)],
    now_ms: i64,
) -> StorageResult<()> {
    let mut items = Vec::with_capacity(committed.len());
    for (w, seq) in committed {
        let projection = match &w.projection {
            Some(p) => p.clone(),
            None => readmodel::project_bytes(&w.header, &w.bytes)?,
        };
        items.push(Committed {
            projection,
            seq: *seq,
            at_ms: now_ms,
            device: w.device,
            user: w.users.last().copied(),
            is_new: w.expected_version.is_none(),
            first: None,
        });
    }
    readmodel::apply(&mut SqliteRm(tx), &items)
}

/// The read model's access to a SQLite connection (or transaction).
struct SqliteRm<'a>(&'a Connection);

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Val::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Val::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Val::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Val::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Val::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Val::BlobList(_) => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    "a list parameter is for PostgreSQL only".into(),
                ))
            }
        })
    }
}

fn val_of(v: rusqlite::types::ValueRef<'_>) -> Val {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Val::Null,
        ValueRef::Integer(i) => Val::Int(i),
        ValueRef::Real(f) => Val::Real(f),
        ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Val::Blob(b.to_vec()),
    }
}

/// The portable SQL's `$n` parameters as SQLite's `?n` (same numbering, whatever the order of
/// first appearance).
fn sqlite_sql(sql: &str) -> std::borrow::Cow<'_, str> {
    if !sql.contains('$') {
        return std::borrow::Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

impl RmTx for SqliteRm<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn insert(&mut self, table: usize, rows: &[&Vec<Val>]) -> StorageResult<()> {
        let sql = schema::statements(Dialect::Sqlite)
            .insert
            .get(table)
            .ok_or_else(|| StorageError::Internal(format!("no read-model table {table}")))?;
        let many = schema::statements(Dialect::Sqlite)
            .insert_many
            .get(table)
            .ok_or_else(|| StorageError::Internal(format!("no read-model table {table}")))?;
        let mut chunks = rows.chunks_exact(schema::SQLITE_ROWS_PER_INSERT);
        if chunks.len() > 0 {
            let mut stmt = self.0.prepare_cached(many).db()?;
            for chunk in &mut chunks {
                stmt.execute(rusqlite::params_from_iter(chunk.iter().copied().flatten()))
                    .db()?;
            }
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut stmt = self.0.prepare_cached(sql).db()?;
            for r in rest {
                stmt.execute(rusqlite::params_from_iter(r.iter())).db()?;
            }
        }
        Ok(())
    }

    fn exec(&mut self, sql: &'static str, params: &[Val]) -> StorageResult<u64> {
        let sql = sqlite_sql(sql);
        let n = self
            .0
            .prepare_cached(&sql)
            .db()?
            .execute(rusqlite::params_from_iter(params.iter()))
            .db()?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &'static str, params: &[Val]) -> StorageResult<Vec<Vec<Val>>> {
        let sql = sqlite_sql(sql);
        let mut stmt = self.0.prepare_cached(&sql).db()?;
        let n = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter())).db()?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().db()? {
            let mut r = Vec::with_capacity(n);
            for i in 0..n {
                r.push(val_of(row.get_ref(i).db()?));
            }
            out.push(r);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod rm_tests {
    use super::sqlite_sql;

    #[test]
    fn dollar_parameters_become_numbered_question_marks() {
        assert_eq!(
            sqlite_sql("SELECT a FROM t WHERE ($1 = 0 OR c = $2) AND x > $10 AND y = '$'"),
            "SELECT a FROM t WHERE (?1 = 0 OR c = ?2) AND x > ?10 AND y = '$'"
        );
    }
}
