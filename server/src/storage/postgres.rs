//! The PostgreSQL backend, for several stateless server processes over one database.
//!
//! Blocking `postgres` (rust-postgres: pure Rust, no libpq) with a small pool of our own
//! ([`Pool`]): at most `max_connections` per process, a bounded wait for a free one (then
//! [`StorageError::Busy`], answered 503), broken connections discarded, and a per-connection cache
//! of prepared statements so that each query is one round trip.
//!
//! How the contract of [`super::Storage`] is kept across processes:
//! * **Sequence numbers in visible order.** The write counter is one row, `log_head`. Every
//!   transaction that writes documents first takes `SELECT seq FROM log_head ... FOR UPDATE`, so
//!   such transactions run one after another *and commit in seq order*: the next one cannot read
//!   the counter until the previous one has committed and become visible. A reader that sees seq
//!   *n* therefore sees every seq below it. (A `SEQUENCE` would hand out numbers that commit out of
//!   order, and a device could move its cursor past a seq still in flight and never pull it.)
//! * **Compare-and-set per document** on `docs.version` (`UPDATE ... WHERE version = $expected`,
//!   `INSERT ... ON CONFLICT DO NOTHING` for a new one); zero rows is
//!   [`super::WriteOutcome::Conflict`].
//! * **Audit chain** appended in the same transaction as the write it records, under
//!   `SELECT ... FROM audit_head ... FOR UPDATE` (the chain head: last seq and hash). Locks are
//!   always taken in the order `log_head`, then `audit_head`, so appenders cannot deadlock.
//!   Triggers refuse `UPDATE`, `DELETE` and `TRUNCATE` on `audit`; the hash chain catches whoever
//!   disables them.
//! * Transactions run at `READ COMMITTED` (set per session, whatever the database's default):
//!   with the row locks above, a blocked `FOR UPDATE` or `UPDATE` re-reads the newest committed row
//!   instead of failing. Deadlocks and serialization failures (which this design should not
//!   produce) are retried twice, then reported as [`StorageError::Busy`], as are lock and statement
//!   timeouts, a full pool, a lost connection and a database that is restarting.
//! * The nonce replay cache is a table keyed `(device, nonce)`; expired rows are purged in small
//!   batches (`FOR UPDATE SKIP LOCKED`, so purging processes never wait for each other).
//!
//! TLS: connections use `NoTls`, which suits a database on the same host or a private network.
//! An operator who needs TLS to the database can tunnel it (stunnel, WireGuard, an SSH tunnel)
//! or build with a TLS connector (`postgres-rustls` / `tokio-postgres-rustls`) in place of
//! `NoTls` in [`Pool::connect`]. A URL asking for `sslmode=require` is refused at connect time
//! rather than silently sent in clear.
//!
//! Schema: created on first connect, under a transaction-scoped advisory lock so that processes
//! starting together do not race; `followup_schema.version` records which migrations ran.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use automerge::ChangeHash;
use followup_domain::definitions::REGISTRY_SCOPE;
use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::model::DocHeader;
use followup_domain::protocol::{DeviceRole, StatsResponse};
use postgres::error::SqlState;
use postgres::types::{FromSql, ToSql};
use postgres::{Client, GenericClient, NoTls, Row, Statement, Transaction};

use super::{
    did, error_chain, h32, header_from_row, heads_from_blob, heads_to_blob, i64_of, rid, u64_of,
    ClinicRow, DeviceRecord, DocWrite, EnrolmentCode, ExportDoc, ExportDocsQuery, NewDevice,
    ReadScope, Rejection, Storage, StorageError, StorageResult, StoredDoc, WriteOutcome,
};
use crate::audit::{self, AuditEntry, AuditRow};
use crate::readmodel::{self, schema, Committed, Dialect, RebuildReport, RmTx, Val};

mod staff;
mod users;

mod staging;

/// The schema version this server writes; a database with a newer one is refused.
const SCHEMA_VERSION: i32 = 2;
/// `pg_advisory_xact_lock` key for migrations ("Followup" in ASCII).
const MIGRATION_LOCK: i64 = 0x466f_6c6c_6f77_7570;
/// Transactions aborted by a deadlock or serialization failure are run this many times in all.
const WRITE_ATTEMPTS: usize = 3;
/// Expired nonces deleted per purge statement.
const NONCE_PURGE_BATCH: i64 = 1000;

/// Migration *n* (1-based) brings the schema from version *n - 1* to *n*. Each runs once, in the
/// same transaction as the version bump; each is written to be harmless if run again.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE IF NOT EXISTS clinics (
    id BYTEA PRIMARY KEY,
    name TEXT NOT NULL,
    country TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    id BYTEA PRIMARY KEY,
    public_key BYTEA NOT NULL,
    role TEXT NOT NULL,
    clinic BYTEA NOT NULL,
    patient BYTEA,
    label TEXT,
    enrolled_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);
CREATE TABLE IF NOT EXISTS enrolment_codes (
    code_hash BYTEA PRIMARY KEY,
    role TEXT NOT NULL,
    clinic BYTEA NOT NULL,
    patient BYTEA,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms BIGINT,
    used_by BYTEA
);
CREATE TABLE IF NOT EXISTS docs (
    id BYTEA PRIMARY KEY,
    kind TEXT NOT NULL,
    clinic BYTEA NOT NULL,
    patient BYTEA,
    created_by BYTEA,
    data BYTEA NOT NULL,
    heads BYTEA NOT NULL,
    version BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS log (
    seq BIGINT PRIMARY KEY,
    doc BYTEA NOT NULL,
    clinic BYTEA NOT NULL,
    patient BYTEA,
    heads BYTEA NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS docs_patient_kind ON docs (patient, kind);
CREATE INDEX IF NOT EXISTS docs_clinic_kind ON docs (clinic, kind);
CREATE INDEX IF NOT EXISTS log_doc ON log (doc, seq);
CREATE INDEX IF NOT EXISTS log_clinic ON log (clinic, seq);
CREATE INDEX IF NOT EXISTS log_patient ON log (patient, seq);
CREATE TABLE IF NOT EXISTS log_head (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO log_head (id, seq) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    event TEXT NOT NULL,
    device BYTEA,
    doc BYTEA,
    log_seq BIGINT,
    change_hashes BYTEA NOT NULL,
    detail TEXT NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_seq ON audit (log_seq);
CREATE TABLE IF NOT EXISTS audit_head (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'))
    ON CONFLICT (id) DO NOTHING;
CREATE OR REPLACE FUNCTION followup_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END
$$;
DROP TRIGGER IF EXISTS audit_no_update_delete ON audit;
CREATE TRIGGER audit_no_update_delete BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION followup_audit_append_only();
DROP TRIGGER IF EXISTS audit_no_truncate ON audit;
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION followup_audit_append_only();
CREATE TABLE IF NOT EXISTS nonces (
    device BYTEA NOT NULL,
    nonce BYTEA NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (device, nonce)
);
CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces (expires_at_ms);
CREATE TABLE IF NOT EXISTS rejections (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    device BYTEA NOT NULL,
    doc BYTEA NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL
);
"#,
    staging::MIGRATION,
];

/// Tuning of the PostgreSQL backend.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Most connections this process opens.
    pub max_connections: usize,
    /// How long a request waits for a free connection before [`StorageError::Busy`].
    pub checkout_timeout: Duration,
    /// `lock_timeout`: how long a statement waits for a row lock (e.g. the write counter) before
    /// [`StorageError::Busy`].
    pub lock_timeout: Duration,
    /// `statement_timeout`.
    pub statement_timeout: Duration,
    /// Connect timeout, when the URL does not set one.
    pub connect_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            max_connections: 16,
            checkout_timeout: Duration::from_secs(10),
            lock_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Whether an error is worth retrying: the transaction was rolled back by the database for a
/// reason that another attempt may not meet.
fn is_transient(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    let Some(code) = e.code() else {
        return false;
    };
    let c = code.code();
    // Class 40 (transaction rollback: serialization failure, deadlock), class 08 (connection).
    c.starts_with("40")
        || c.starts_with("08")
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::QUERY_CANCELED
        || *code == SqlState::TOO_MANY_CONNECTIONS
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
}

/// Deadlock or serialization failure: the whole transaction may simply be run again.
fn is_retryable_conflict(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    })
}

fn map_err(e: postgres::Error) -> StorageError {
    if is_transient(&e) {
        tracing::warn!(error = %error_chain(&e), "postgres: transient failure, answering busy");
        StorageError::Busy
    } else {
        StorageError::Postgres(e)
    }
}

trait PgResult<T> {
    fn db(self) -> StorageResult<T>;
}
impl<T> PgResult<T> for Result<T, postgres::Error> {
    fn db(self) -> StorageResult<T> {
        self.map_err(map_err)
    }
}

/// A column of a row, as `T`; a type mismatch is an error, never a panic.
fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> StorageResult<T> {
    row.try_get(i).map_err(StorageError::Postgres)
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A connection with its prepared statements.
struct Conn {
    client: Client,
    stmts: HashMap<&'static str, Statement>,
}

/// Queries through the statement cache, on a client or inside a transaction.
struct Q<'a, C: GenericClient> {
    c: &'a mut C,
    stmts: &'a mut HashMap<&'static str, Statement>,
    /// Set when a statement failed with a deadlock or serialization failure.
    retry: bool,
}

impl<C: GenericClient> Q<'_, C> {
    fn check<T>(&mut self, r: Result<T, postgres::Error>) -> StorageResult<T> {
        r.map_err(|e| {
            self.retry |= is_retryable_conflict(&e);
            map_err(e)
        })
    }
    fn stmt(&mut self, sql: &'static str) -> StorageResult<Statement> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let r = self.c.prepare(sql);
        let s = self.check(r)?;
        self.stmts.insert(sql, s.clone());
        Ok(s)
    }
    fn execute(&mut self, sql: &'static str, p: Params<'_>) -> StorageResult<u64> {
        let s = self.stmt(sql)?;
        let r = self.c.execute(&s, p);
        self.check(r)
    }
    fn query(&mut self, sql: &'static str, p: Params<'_>) -> StorageResult<Vec<Row>> {
        let s = self.stmt(sql)?;
        let r = self.c.query(&s, p);
        self.check(r)
    }
    fn query_opt(&mut self, sql: &'static str, p: Params<'_>) -> StorageResult<Option<Row>> {
        let s = self.stmt(sql)?;
        let r = self.c.query_opt(&s, p);
        self.check(r)
    }
    fn query_one(&mut self, sql: &'static str, p: Params<'_>) -> StorageResult<Row> {
        let s = self.stmt(sql)?;
        let r = self.c.query_one(&s, p);
        self.check(r)
    }
}

type Tx<'q, 't> = Q<'q, Transaction<'t>>;

struct PoolState {
    idle: Vec<Conn>,
    /// Connections open, idle or lent.
    open: usize,
}

/// A bounded pool of blocking clients.
///
/// Our own rather than `r2d2`: what is needed is small (a cap, a bounded wait, discarding closed
/// connections, a prepared-statement cache per connection, and never dropping a client on an
/// async thread, where the blocking client's runtime would panic), and it spares a reaper thread
/// and two dependencies.
struct Pool {
    config: postgres::Config,
    session_setup: String,
    max: usize,
    checkout_timeout: Duration,
    state: Mutex<PoolState>,
    freed: Condvar,
}

/// A connection lent by the pool; returned (or discarded if closed) on drop.
struct Pooled<'p> {
    pool: &'p Pool,
    conn: Option<Conn>,
}

impl Pooled<'_> {
    fn conn(&mut self) -> StorageResult<&mut Conn> {
        self.conn
            .as_mut()
            .ok_or_else(|| StorageError::Internal("pooled connection already returned".into()))
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.put(c);
        }
    }
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // The state is two plain values that every holder leaves consistent: recover from poison.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn connect(&self) -> Result<Conn, postgres::Error> {
        let mut client = self.config.connect(NoTls)?;
        client.batch_execute(&self.session_setup)?;
        Ok(Conn {
            client,
            stmts: HashMap::new(),
        })
    }

    fn get(&self) -> StorageResult<Pooled<'_>> {
        let deadline = Instant::now() + self.checkout_timeout;
        let mut st = self.lock();
        loop {
            while let Some(c) = st.idle.pop() {
                if !c.client.is_closed() {
                    return Ok(Pooled {
                        pool: self,
                        conn: Some(c),
                    });
                }
                st.open = st.open.saturating_sub(1);
            }
            if st.open < self.max {
                st.open += 1;
                drop(st);
                return match self.connect() {
                    Ok(c) => Ok(Pooled {
                        pool: self,
                        conn: Some(c),
                    }),
                    Err(e) => {
                        let mut st = self.lock();
                        st.open = st.open.saturating_sub(1);
                        drop(st);
                        self.freed.notify_one();
                        tracing::warn!(error = %error_chain(&e), "postgres: cannot connect; answering busy");
                        Err(StorageError::Busy)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(max = self.max, "postgres: no free connection in time");
                return Err(StorageError::Busy);
            }
            st = self
                .freed
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn put(&self, c: Conn) {
        let mut st = self.lock();
        if c.client.is_closed() {
            st.open = st.open.saturating_sub(1);
            drop(st);
            drop(c);
        } else {
            st.idle.push(c);
            drop(st);
        }
        self.freed.notify_one();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let idle = std::mem::take(&mut self.lock().idle);
        if idle.is_empty() {
            return;
        }
        // Closing a blocking client runs its own runtime, which panics on an async thread (a
        // server dropped at the end of an async test): close them on a thread of their own.
        if tokio::runtime::Handle::try_current().is_ok() {
            let spawned = std::thread::Builder::new()
                .name("followup-pg-close".into())
                .spawn(move || drop(idle));
            if let Err(e) = spawned {
                tracing::warn!(%e, "could not close PostgreSQL connections cleanly");
            }
        } else {
            drop(idle);
        }
    }
}

/// PostgreSQL storage. See the module documentation.
pub struct PostgresStorage {
    pool: Pool,
    description: String,
    nonce_inserts: AtomicU64,
}

struct AuditHead {
    seq: u64,
    hash: [u8; 32],
    dirty: bool,
}

/// Lock the audit chain head (serialises appenders until commit) and read it.
fn lock_audit_head(q: &mut Tx<'_, '_>) -> StorageResult<AuditHead> {
    let row = q.query_one(
        "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
        &[],
    )?;
    Ok(AuditHead {
        seq: u64_of(col(&row, 0)?)?,
        hash: h32(col(&row, 1)?, "audit head hash")?,
        dirty: false,
    })
}

fn store_audit_head(q: &mut Tx<'_, '_>, head: &AuditHead) -> StorageResult<()> {
    if head.dirty {
        q.execute(
            "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1",
            &[&i64_of(head.seq)?, &head.hash.as_slice()],
        )?;
    }
    Ok(())
}

fn append_audit_tx(q: &mut Tx<'_, '_>, head: &mut AuditHead, e: &AuditEntry) -> StorageResult<()> {
    let seq = head.seq + 1;
    let hash = audit::entry_hash(&head.hash, seq, e);
    let hashes: Vec<u8> = e.change_hashes.iter().flat_map(|h| h.0).collect();
    let device = e.device.map(|d| d.0.to_vec());
    let doc = e.doc.map(|d| d.0.to_vec());
    let log_seq = e.log_seq.map(i64_of).transpose()?;
    q.execute(
        "INSERT INTO audit (seq, at_ms, event, device, doc, log_seq, change_hashes, detail, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &i64_of(seq)?,
            &e.at_ms,
            &e.event,
            &device,
            &doc,
            &log_seq,
            &hashes,
            &e.detail,
            &head.hash.as_slice(),
            &hash.as_slice(),
        ],
    )?;
    head.seq = seq;
    head.hash = hash;
    head.dirty = true;
    Ok(())
}

/// Append one audit entry in a transaction that takes no other chain lock.
fn audit_only(q: &mut Tx<'_, '_>, e: &AuditEntry) -> StorageResult<()> {
    let mut head = lock_audit_head(q)?;
    append_audit_tx(q, &mut head, e)?;
    store_audit_head(q, &head)
}

/// Lock the write counter until commit and read it.
fn lock_log_head(q: &mut Tx<'_, '_>) -> StorageResult<u64> {
    let row = q.query_one("SELECT seq FROM log_head WHERE id = 1 FOR UPDATE", &[])?;
    u64_of(col(&row, 0)?)
}

/// Write one document; `Ok(None)` on a compare-and-set conflict.
fn write_doc_tx(
    q: &mut Tx<'_, '_>,
    w: &DocWrite,
    seq: u64,
    now_ms: i64,
    head: &mut AuditHead,
) -> StorageResult<Option<u64>> {
    let h = &w.header;
    let heads = heads_to_blob(&w.heads);
    let seq_i = i64_of(seq)?;
    let id = h.id.0.as_slice();
    let clinic = h.clinic.0.as_slice();
    let patient = h.patient.map(|p| p.0.to_vec());
    let changed = match w.expected_version {
        None => {
            let created_by = h.created_by.map(|d| d.0.to_vec());
            q.execute(
                "INSERT INTO docs (id, kind, clinic, patient, created_by, data, heads, version, updated_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
                &[
                    &id,
                    &h.kind.code(),
                    &clinic,
                    &patient,
                    &created_by,
                    &w.bytes,
                    &heads,
                    &seq_i,
                    &now_ms,
                ],
            )?
        }
        Some(v) => q.execute(
            "UPDATE docs SET data = $2, heads = $3, version = $4, updated_at_ms = $5
             WHERE id = $1 AND version = $6",
            &[&id, &w.bytes, &heads, &seq_i, &now_ms, &i64_of(v)?],
        )?,
    };
    if changed == 0 {
        return Ok(None);
    }
    q.execute(
        "INSERT INTO log (seq, doc, clinic, patient, heads, at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&seq_i, &id, &clinic, &patient, &heads, &now_ms],
    )?;
    append_audit_tx(q, head, &AuditEntry::document_write(w, seq, now_ms))?;
    Ok(Some(seq))
}

/// Write documents with the counter locked; the counter is advanced by what committed.
fn write_docs_tx(
    q: &mut Tx<'_, '_>,
    writes: &[DocWrite],
    now_ms: i64,
) -> StorageResult<Vec<WriteOutcome>> {
    let start = lock_log_head(q)?;
    let mut head = lock_audit_head(q)?;
    let mut seq = start;
    let mut out = Vec::with_capacity(writes.len());
    let mut committed = Vec::with_capacity(writes.len());
    for w in writes {
        match write_doc_tx(q, w, seq + 1, now_ms, &mut head)? {
            Some(s) => {
                seq = s;
                out.push(WriteOutcome::Committed { seq: s });
                let projection = match &w.projection {
                    Some(p) => p.clone(),
                    None => readmodel::project_bytes(&w.header, &w.bytes)?,
                };
                committed.push(Committed {
                    projection,
                    seq: s,
                    at_ms: now_ms,
                    device: w.device,
                    user: w.users.last().copied(),
                    is_new: w.expected_version.is_none(),
                    first: None,
                });
            }
            None => out.push(WriteOutcome::Conflict),
        }
    }
    readmodel::apply(&mut PgRm(q), &committed)?;
    if seq != start {
        q.execute(
            "UPDATE log_head SET seq = $1 WHERE id = 1",
            &[&i64_of(seq)?],
        )?;
    }
    store_audit_head(q, &head)?;
    Ok(out)
}

const DEVICE_SELECT: &str = "SELECT id, public_key, role, clinic, patient, label, enrolled_at_ms, revoked_at_ms FROM devices WHERE id = $1";

fn device_from_row(r: &Row) -> StorageResult<DeviceRecord> {
    let role: String = col(r, 2)?;
    Ok(DeviceRecord {
        id: did(col(r, 0)?)?,
        public_key: h32(col(r, 1)?, "public key")?,
        role: DeviceRole::from_code(&role)
            .ok_or_else(|| StorageError::Corrupt(format!("unknown role {role:?}")))?,
        clinic: rid(col(r, 3)?)?,
        patient: col::<Option<Vec<u8>>>(r, 4)?.map(rid).transpose()?,
        label: col(r, 5)?,
        enrolled_at_ms: col(r, 6)?,
        revoked_at_ms: col(r, 7)?,
    })
}

fn doc_header_from_row(r: &Row) -> StorageResult<DocHeader> {
    header_from_row(col(r, 0)?, col(r, 1)?, col(r, 2)?, col(r, 3)?, col(r, 4)?)
}

impl PostgresStorage {
    /// Connect with default options and create or migrate the schema.
    pub fn connect(url: &str) -> StorageResult<PostgresStorage> {
        Self::connect_with(url, PostgresOptions::default())
    }

    /// Connect (one connection now, more on demand) and create or migrate the schema.
    pub fn connect_with(url: &str, options: PostgresOptions) -> StorageResult<PostgresStorage> {
        // The parser's message could quote the URL, password included: keep it out.
        let mut config: postgres::Config = url.parse().map_err(|_| {
            StorageError::Internal(
                "the database URL is not a valid PostgreSQL URL (postgres://user:password@host:port/db)"
                    .into(),
            )
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("followup-server");
        }
        let description = describe(&config);
        let session_setup = format!(
            "SET default_transaction_isolation = 'read committed';
             SET lock_timeout = '{}ms';
             SET statement_timeout = '{}ms';
             SET idle_in_transaction_session_timeout = '{}ms';",
            options.lock_timeout.as_millis(),
            options.statement_timeout.as_millis(),
            options.statement_timeout.as_millis().max(1000),
        );
        let pool = Pool {
            config,
            session_setup,
            max: options.max_connections.max(1),
            checkout_timeout: options.checkout_timeout,
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        };
        // The first connection reports its real error: a server that cannot reach its database
        // must say why at start-up, not answer 503 forever.
        let first = pool.connect().map_err(StorageError::Postgres)?;
        pool.lock().open += 1;
        pool.put(first);
        let storage = PostgresStorage {
            pool,
            description,
            nonce_inserts: AtomicU64::new(0),
        };
        storage.migrate()?;
        storage.migrate_staff()?;
        storage.migrate_users()?;
        storage.prepare_read_model()?;
        Ok(storage)
    }

    /// Where the database is, for logs: hosts, ports, database and user; never the password.
    pub fn description(&self) -> &str {
        &self.description
    }

    fn migrate(&self) -> StorageResult<()> {
        let mut pooled = self.pool.get()?;
        let conn = pooled.conn()?;
        let mut tx = conn.client.transaction().db()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .db()?;
        // Create the version table only when missing: a role without CREATE (granted only
        // SELECT/INSERT/UPDATE/DELETE once the schema exists) can still start.
        let exists = tx
            .query_one("SELECT to_regclass('followup_schema') IS NOT NULL", &[])
            .db()?;
        if !col::<bool>(&exists, 0)? {
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS followup_schema (
                     id SMALLINT PRIMARY KEY CHECK (id = 1),
                     version INTEGER NOT NULL
                 )",
            )
            .db()?;
        }
        let version: i32 = match tx
            .query_opt("SELECT version FROM followup_schema WHERE id = 1", &[])
            .db()?
        {
            Some(row) => col(&row, 0)?,
            None => 0,
        };
        if version > SCHEMA_VERSION {
            return Err(StorageError::Internal(format!(
                "the database schema is version {version}, newer than this server's {SCHEMA_VERSION}"
            )));
        }
        let from = usize::try_from(version).unwrap_or(0);
        for (i, m) in MIGRATIONS.iter().enumerate().skip(from) {
            tracing::info!(version = i + 1, "postgres: applying schema migration");
            tx.batch_execute(m).db()?;
        }
        if version < SCHEMA_VERSION {
            tx.execute(
                "INSERT INTO followup_schema (id, version) VALUES (1, $1)
                 ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version",
                &[&SCHEMA_VERSION],
            )
            .db()?;
        }
        tx.commit().db()?;
        Ok(())
    }

    /// Create the read model's tables if missing and rebuild it if it was built by another
    /// projection version, under the migration lock (so processes starting together do it once)
    /// and the write counter's lock (so no write interleaves).
    fn prepare_read_model(&self) -> StorageResult<()> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let report = self.write(|q| {
            q.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            // Run the DDL (which needs CREATE) only when something is missing or stale: a
            // database an older server made lacks a newer index or keeps a replaced one.
            let wanted = schema::relations();
            let stale = q.query_one(
                "SELECT (SELECT COUNT(*) FROM unnest($1::text[]) AS n WHERE to_regclass(n) IS NULL)
                      + (SELECT COUNT(*) FROM unnest($2::text[]) AS n WHERE to_regclass(n) IS NOT NULL)",
                &[&wanted, &schema::DROPPED_INDEXES],
            )?;
            if col::<i64>(&stale, 0)? > 0 {
                let r = q.c.batch_execute(&schema::ddl(Dialect::Postgres));
                q.check(r)?;
            }
            lock_log_head(q)?;
            readmodel::ensure_current(&mut PgRm(q), now_ms)
        })?;
        if let Some(r) = report {
            tracing::info!(
                documents = r.documents,
                millis = r.millis,
                "read model rebuilt"
            );
        }
        Ok(())
    }

    /// Run `f` in a transaction and commit it; a deadlock or serialization failure runs it
    /// again (up to [`WRITE_ATTEMPTS`] in all), then answers busy.
    fn write<T>(&self, mut f: impl FnMut(&mut Tx<'_, '_>) -> StorageResult<T>) -> StorageResult<T> {
        let mut pooled = self.pool.get()?;
        let conn = pooled.conn()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut retry = false;
            match write_once(conn, &mut f, &mut retry) {
                Ok(out) => return Ok(out),
                Err(_) if retry && attempt < WRITE_ATTEMPTS => {
                    tracing::debug!(
                        attempt,
                        "postgres: transaction rolled back; running it again"
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn read<T>(&self, f: impl FnOnce(&mut Q<'_, Client>) -> StorageResult<T>) -> StorageResult<T> {
        let mut pooled = self.pool.get()?;
        let conn = pooled.conn()?;
        let mut q = Q {
            c: &mut conn.client,
            stmts: &mut conn.stmts,
            retry: false,
        };
        f(&mut q)
    }

    /// Delete expired nonces, in batches; returns how many. Also run every 256th
    /// [`Storage::remember_nonce`] of a process (one batch).
    pub fn purge_expired_nonces(&self, now_ms: i64) -> StorageResult<u64> {
        let mut total = 0;
        loop {
            let n = self.purge_nonce_batch(now_ms)?;
            total += n;
            if n < NONCE_PURGE_BATCH.unsigned_abs() {
                return Ok(total);
            }
        }
    }

    fn purge_nonce_batch(&self, now_ms: i64) -> StorageResult<u64> {
        self.read(|q| {
            q.execute(
                "DELETE FROM nonces WHERE ctid = ANY (ARRAY(
                     SELECT ctid FROM nonces WHERE expires_at_ms < $1
                     LIMIT $2 FOR UPDATE SKIP LOCKED))",
                &[&now_ms, &NONCE_PURGE_BATCH],
            )
        })
    }
}

/// One attempt of [`PostgresStorage::write`]; `retry` tells whether running it again may succeed.
fn write_once<T>(
    conn: &mut Conn,
    f: &mut impl FnMut(&mut Tx<'_, '_>) -> StorageResult<T>,
    retry: &mut bool,
) -> StorageResult<T> {
    fn check(retry: &mut bool, e: postgres::Error) -> StorageError {
        *retry |= is_retryable_conflict(&e);
        map_err(e)
    }
    let mut tx = conn.client.transaction().map_err(|e| check(retry, e))?;
    let out = {
        let mut q = Q {
            c: &mut tx,
            stmts: &mut conn.stmts,
            retry: false,
        };
        let out = f(&mut q);
        *retry |= q.retry;
        out?
    };
    tx.commit().map_err(|e| check(retry, e))?;
    Ok(out)
}

fn describe(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "postgresql host={} port={} dbname={} user={}",
        hosts.join(","),
        if ports.is_empty() {
            "5432".to_string()
        } else {
            ports.join(",")
        },
        config.get_dbname().unwrap_or("(default)"),
        config.get_user().unwrap_or("(default)"),
    )
}

impl Storage for PostgresStorage {
    fn create_clinic(&self, clinic: &ClinicRow, doc: &DocWrite, now_ms: i64) -> StorageResult<u64> {
        self.write(|q| {
            q.execute(
                "INSERT INTO clinics (id, name, country, created_at_ms) VALUES ($1, $2, $3, $4)",
                &[
                    &clinic.id.0.as_slice(),
                    &clinic.name,
                    &clinic.country,
                    &now_ms,
                ],
            )?;
            match write_docs_tx(q, std::slice::from_ref(doc), now_ms)?.first() {
                Some(WriteOutcome::Committed { seq }) => Ok(*seq),
                _ => Err(StorageError::Internal(
                    "clinic document already exists".into(),
                )),
            }
        })
    }

    fn clinic_exists(&self, id: RecordId) -> StorageResult<bool> {
        self.read(|q| {
            Ok(
                q.query_opt("SELECT 1 FROM clinics WHERE id = $1", &[&id.0.as_slice()])?
                    .is_some(),
            )
        })
    }

    fn insert_enrolment_code(&self, code: &EnrolmentCode, now_ms: i64) -> StorageResult<()> {
        self.write(|q| {
            let patient = code.patient.map(|p| p.0.to_vec());
            q.execute(
                "INSERT INTO enrolment_codes (code_hash, role, clinic, patient, created_at_ms, expires_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &code.code_hash.as_slice(),
                    &code.role.as_str(),
                    &code.clinic.0.as_slice(),
                    &patient,
                    &now_ms,
                    &code.expires_at_ms,
                ],
            )?;
            audit_only(
                q,
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
        self.write(|q| {
            // One statement claims the code: of two processes redeeming it at once, the second
            // re-checks `used_at_ms IS NULL` on the committed row and gets nothing.
            let row = q.query_opt(
                "UPDATE enrolment_codes SET used_at_ms = $2, used_by = $3
                 WHERE code_hash = $1 AND used_at_ms IS NULL AND expires_at_ms > $2
                 RETURNING role, clinic, patient",
                &[&code_hash.as_slice(), &now_ms, &device.id.0.as_slice()],
            )?;
            let Some(row) = row else {
                return Ok(None);
            };
            let role: String = col(&row, 0)?;
            let role = DeviceRole::from_code(&role)
                .ok_or_else(|| StorageError::Corrupt(format!("unknown role {role:?}")))?;
            let rec = DeviceRecord {
                id: device.id,
                public_key: device.public_key,
                role,
                clinic: rid(col(&row, 1)?)?,
                patient: col::<Option<Vec<u8>>>(&row, 2)?.map(rid).transpose()?,
                label: device.label.clone(),
                enrolled_at_ms: now_ms,
                revoked_at_ms: None,
            };
            let patient = rec.patient.map(|p| p.0.to_vec());
            q.execute(
                "INSERT INTO devices (id, public_key, role, clinic, patient, label, enrolled_at_ms, revoked_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
                &[
                    &rec.id.0.as_slice(),
                    &rec.public_key.as_slice(),
                    &rec.role.as_str(),
                    &rec.clinic.0.as_slice(),
                    &patient,
                    &rec.label,
                    &now_ms,
                ],
            )?;
            audit_only(
                q,
                &AuditEntry::device_enrolled(&rec, now_ms),
            )?;
            Ok(Some(rec))
        })
    }

    fn device(&self, id: DeviceId) -> StorageResult<Option<DeviceRecord>> {
        self.read(|q| {
            q.query_opt(DEVICE_SELECT, &[&id.0.as_slice()])?
                .as_ref()
                .map(device_from_row)
                .transpose()
        })
    }

    fn revoke_device(&self, id: DeviceId, now_ms: i64) -> StorageResult<Option<(bool, i64)>> {
        self.write(|q| {
            let row = q.query_opt(
                "SELECT revoked_at_ms FROM devices WHERE id = $1 FOR UPDATE",
                &[&id.0.as_slice()],
            )?;
            let Some(row) = row else {
                return Ok(None);
            };
            if let Some(at) = col::<Option<i64>>(&row, 0)? {
                return Ok(Some((false, at)));
            }
            q.execute(
                "UPDATE devices SET revoked_at_ms = $2 WHERE id = $1",
                &[&id.0.as_slice(), &now_ms],
            )?;
            audit_only(q, &AuditEntry::device_revoked(id, now_ms))?;
            Ok(Some((true, now_ms)))
        })
    }

    fn remember_nonce(
        &self,
        device: DeviceId,
        nonce: &[u8; 16],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> StorageResult<bool> {
        let n = self.nonce_inserts.fetch_add(1, Ordering::Relaxed);
        if n & 255 == 0 {
            // Housekeeping: a failure here must not fail the request.
            if let Err(e) = self.purge_nonce_batch(now_ms) {
                tracing::warn!(error = %e, "postgres: could not purge expired nonces");
            }
        }
        self.read(|q| {
            // A concurrent insert of the same key waits for the first to commit, then does
            // nothing: exactly one of two replays at once is accepted.
            let inserted = q.execute(
                "INSERT INTO nonces (device, nonce, expires_at_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (device, nonce) DO NOTHING",
                &[&device.0.as_slice(), &nonce.as_slice(), &expires_at_ms],
            )?;
            if inserted == 1 {
                q.execute(
                    "INSERT INTO device_activity (device, last_seen_ms, requests) VALUES ($1, $2, 1)
                     ON CONFLICT (device) DO UPDATE SET
                       last_seen_ms = GREATEST(device_activity.last_seen_ms, excluded.last_seen_ms),
                       requests = device_activity.requests + 1",
                    &[&device.0.as_slice(), &now_ms],
                )?;
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
        let kind = q.kind.code();
        let clinic = q.clinic.map(|c| c.0.to_vec());
        let after = after.map(|a| a.0.to_vec());
        self.read(|db| {
            let rows = db.query(
                "SELECT id, kind, clinic, patient, created_by, data, updated_at_ms FROM docs \
                 WHERE kind = $1 AND ($2::bytea IS NULL OR clinic = $2) \
                 AND ($3::bigint IS NULL OR updated_at_ms >= $3) \
                 AND ($4::bytea IS NULL OR id > $4) ORDER BY id LIMIT $5",
                &[&kind, &clinic, &q.since_ms, &after, &limit],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(ExportDoc {
                        header: doc_header_from_row(r)?,
                        bytes: col(r, 5)?,
                        updated_at_ms: col(r, 6)?,
                    })
                })
                .collect()
        })
    }

    fn load_doc(&self, id: RecordId) -> StorageResult<Option<StoredDoc>> {
        self.read(|q| {
            let Some(row) = q.query_opt(
                "SELECT id, kind, clinic, patient, created_by, data, heads, version FROM docs WHERE id = $1",
                &[&id.0.as_slice()],
            )?
            else {
                return Ok(None);
            };
            let heads: Vec<u8> = col(&row, 6)?;
            Ok(Some(StoredDoc {
                header: doc_header_from_row(&row)?,
                bytes: col(&row, 5)?,
                heads: heads_from_blob(&heads)?,
                version: u64_of(col(&row, 7)?)?,
            }))
        })
    }

    fn docs_of_kind(
        &self,
        kind: followup_domain::model::RecordKind,
        scope: Option<ReadScope>,
    ) -> StorageResult<Vec<RecordId>> {
        self.read(|q| {
            let rows = match scope {
                Some(ReadScope::Clinic(c)) => q.query(
                    "SELECT id FROM docs WHERE clinic = $1 AND kind = $2 ORDER BY id",
                    &[&c.0.as_slice(), &kind.code()],
                )?,
                Some(ReadScope::Patient(p)) => q.query(
                    "SELECT id FROM docs WHERE patient = $1 AND kind = $2 ORDER BY id",
                    &[&p.0.as_slice(), &kind.code()],
                )?,
                None => q.query(
                    "SELECT id FROM docs WHERE kind = $1 ORDER BY id",
                    &[&kind.code()],
                )?,
            };
            rows.iter().map(|r| rid(col(r, 0)?)).collect()
        })
    }

    fn doc_header(&self, id: RecordId) -> StorageResult<Option<DocHeader>> {
        self.read(|q| {
            q.query_opt(
                "SELECT id, kind, clinic, patient, created_by FROM docs WHERE id = $1",
                &[&id.0.as_slice()],
            )?
            .as_ref()
            .map(doc_header_from_row)
            .transpose()
        })
    }

    fn commit_writes(&self, writes: &[DocWrite], now_ms: i64) -> StorageResult<Vec<WriteOutcome>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|q| write_docs_tx(q, writes, now_ms))
    }

    fn record_rejections(&self, rejections: &[Rejection]) -> StorageResult<()> {
        if rejections.is_empty() {
            return Ok(());
        }
        self.write(|q| {
            for r in rejections {
                q.execute(
                    "INSERT INTO rejections (at_ms, device, doc, code, message) VALUES ($1, $2, $3, $4, $5)",
                    &[
                        &r.at_ms,
                        &r.device.0.as_slice(),
                        &r.doc.0.as_slice(),
                        &r.code,
                        &r.message,
                    ],
                )?;
            }
            Ok(())
        })
    }

    fn max_seq(&self) -> StorageResult<u64> {
        self.read(|q| {
            let row = q.query_one("SELECT COALESCE(MAX(seq), 0) FROM log", &[])?;
            u64_of(col(&row, 0)?)
        })
    }

    fn audit_head(&self) -> StorageResult<Option<(u64, [u8; 32])>> {
        self.read(|q| {
            let row = q.query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])?;
            match row {
                None => Ok(None),
                Some(r) => Ok(Some((
                    u64_of(col(&r, 0)?)?,
                    h32(col(&r, 1)?, "audit hash")?,
                ))),
            }
        })
    }

    fn changed_docs(
        &self,
        scope: ReadScope,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> StorageResult<Vec<(RecordId, u64)>> {
        let (sql, key) = match scope {
            ReadScope::Clinic(c) => (
"SELECT doc, MIN(seq) AS first FROM log WHERE clinic IN ($1, $5) AND seq > $2 AND seq <= $3
                 GROUP BY doc ORDER BY first LIMIT $4",
                c,
            ),
            ReadScope::Patient(p) => (
"SELECT doc, MIN(seq) AS first FROM log WHERE (patient = $1 OR clinic = $5) AND seq > $2 AND seq <= $3
                 GROUP BY doc ORDER BY first LIMIT $4",
                p,
            ),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|q| {
            let rows = q.query(
                sql,
                &[
                    &key.0.as_slice(),
                    &i64_of(after)?,
                    &i64_of(upto)?,
                    &limit,
                    &REGISTRY_SCOPE.0.as_slice(),
                ],
            )?;
            rows.iter()
                .map(|r| Ok((rid(col(r, 0)?)?, u64_of(col(r, 1)?)?)))
                .collect()
        })
    }

    fn heads_at(&self, doc: RecordId, seq: u64) -> StorageResult<Vec<ChangeHash>> {
        self.read(|q| {
            match q.query_opt(
                "SELECT heads FROM log WHERE doc = $1 AND seq <= $2 ORDER BY seq DESC LIMIT 1",
                &[&doc.0.as_slice(), &i64_of(seq)?],
            )? {
                Some(row) => heads_from_blob(&col::<Vec<u8>>(&row, 0)?),
                None => Ok(Vec::new()),
            }
        })
    }

    fn append_audit(&self, entry: &AuditEntry) -> StorageResult<()> {
        self.write(|q| audit_only(q, entry))
    }

    fn audit_rows(&self, after: u64, limit: usize) -> StorageResult<Vec<AuditRow>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|q| {
            let rows = q.query(
                "SELECT seq, at_ms, event, device, doc, log_seq, change_hashes, detail, prev_hash, hash
                 FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&i64_of(after)?, &limit],
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let hashes: Vec<u8> = col(r, 6)?;
                out.push(AuditRow {
                    seq: u64_of(col(r, 0)?)?,
                    entry: AuditEntry {
                        at_ms: col(r, 1)?,
                        event: col(r, 2)?,
                        device: col::<Option<Vec<u8>>>(r, 3)?.map(did).transpose()?,
                        doc: col::<Option<Vec<u8>>>(r, 4)?.map(rid).transpose()?,
                        log_seq: col::<Option<i64>>(r, 5)?.map(u64_of).transpose()?,
                        change_hashes: heads_from_blob(&hashes)
                            .map_err(|_| StorageError::Corrupt("audit change hashes".into()))?,
                        detail: col(r, 7)?,
                    },
                    prev_hash: h32(col(r, 8)?, "audit prev_hash")?,
                    hash: h32(col(r, 9)?, "audit hash")?,
                });
            }
            Ok(out)
        })
    }

    fn unaudited_log_seq(&self) -> StorageResult<Option<u64>> {
        self.read(|q| {
            q.query_opt(
                "SELECT l.seq FROM log l WHERE NOT EXISTS
                   (SELECT 1 FROM audit a WHERE a.log_seq = l.seq) ORDER BY l.seq LIMIT 1",
                &[],
            )?
            .map(|r| u64_of(col(&r, 0)?))
            .transpose()
        })
    }

    fn rm_query(&self, sql: &'static str, params: &[Val]) -> StorageResult<Vec<Vec<Val>>> {
        self.read(|q| PgRm(q).query(sql, params))
    }

    fn rebuild_read_model(&self, now_ms: i64) -> StorageResult<RebuildReport> {
        self.write(|q| {
            // Writers wait for the rebuild; no write can land between the clear and the commit.
            lock_log_head(q)?;
            readmodel::rebuild(&mut PgRm(q), now_ms)
        })
    }

    fn stats(&self) -> StorageResult<StatsResponse> {
        self.read(|q| {
            // One statement: one snapshot.
            let r = q.query_one(
                "SELECT (SELECT COUNT(*) FROM docs),
                        (SELECT COUNT(*) FROM clinics),
                        (SELECT COUNT(*) FROM devices),
                        (SELECT COUNT(*) FROM devices WHERE revoked_at_ms IS NOT NULL),
                        (SELECT COALESCE(MAX(seq), 0) FROM log),
                        (SELECT COUNT(*) FROM audit),
                        (SELECT COUNT(*) FROM rejections)",
                &[],
            )?;
            Ok(StatsResponse {
                documents: u64_of(col(&r, 0)?)?,
                clinics: u64_of(col(&r, 1)?)?,
                devices: u64_of(col(&r, 2)?)?,
                revoked_devices: u64_of(col(&r, 3)?)?,
                log_seq: u64_of(col(&r, 4)?)?,
                audit_entries: u64_of(col(&r, 5)?)?,
                rejections: u64_of(col(&r, 6)?)?,
            })
        })
    }
}

/// The read model's access to a PostgreSQL connection or transaction.
struct PgRm<'q, 'c, C: GenericClient>(&'q mut Q<'c, C>);

impl ToSql for Val {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::{IsNull, Type};
        match self {
            Val::Null => Ok(IsNull::Yes),
            // Parameters get the type PostgreSQL inferred (`$1 = 0` is an int4): convert.
            Val::Int(i) => match *ty {
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Val::Real(f) => f.to_sql(ty, out),
            Val::Text(s) => s.as_str().to_sql(ty, out),
            Val::Blob(b) => b.as_slice().to_sql(ty, out),
            Val::BlobList(l) => {
                let v: Vec<&[u8]> = l.iter().map(Vec::as_slice).collect();
                v.to_sql(ty, out)
            }
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn pg_val(row: &Row, i: usize) -> StorageResult<Val> {
    use postgres::types::Type;
    let ty = row
        .columns()
        .get(i)
        .map(|c| c.type_().clone())
        .ok_or_else(|| StorageError::Internal("column out of range".into()))?;
    Ok(match ty {
        Type::INT8 => col::<Option<i64>>(row, i)?.map_or(Val::Null, Val::Int),
        Type::INT4 => col::<Option<i32>>(row, i)?.map_or(Val::Null, |v| Val::Int(v.into())),
        Type::INT2 => col::<Option<i16>>(row, i)?.map_or(Val::Null, |v| Val::Int(v.into())),
        Type::BOOL => col::<Option<bool>>(row, i)?.map_or(Val::Null, |v| Val::Int(v.into())),
        Type::FLOAT8 => col::<Option<f64>>(row, i)?.map_or(Val::Null, Val::Real),
        Type::FLOAT4 => col::<Option<f32>>(row, i)?.map_or(Val::Null, |v| Val::Real(v.into())),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
            col::<Option<String>>(row, i)?.map_or(Val::Null, Val::Text)
        }
        Type::BYTEA => col::<Option<Vec<u8>>>(row, i)?.map_or(Val::Null, Val::Blob),
        other => {
            return Err(StorageError::Internal(format!(
                "read model: unsupported column type {other}"
            )))
        }
    })
}

impl<C: GenericClient> RmTx for PgRm<'_, '_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn insert(&mut self, table: usize, rows: &[&Vec<Val>]) -> StorageResult<()> {
        let (Some(t), Some(sql)) = (
            schema::ALL.get(table),
            schema::statements(Dialect::Postgres).insert.get(table),
        ) else {
            return Err(StorageError::Internal(format!(
                "no read-model table {table}"
            )));
        };
        // One statement per table: each column as an array, unnested into rows.
        let mut arrays: Vec<Box<dyn ToSql + Sync>> = Vec::with_capacity(t.cols.len());
        for (i, (name, ty)) in t.cols.iter().enumerate() {
            let cell = |r: &&Vec<Val>| r.get(i).cloned().unwrap_or(Val::Null);
            let bad = |v: &Val| {
                StorageError::Internal(format!("read model: {}.{name} cannot hold {v:?}", t.name))
            };
            arrays.push(match ty {
                schema::ColType::Int => Box::new(
                    rows.iter()
                        .map(|r| match cell(r) {
                            Val::Null => Ok(None),
                            Val::Int(v) => Ok(Some(v)),
                            v => Err(bad(&v)),
                        })
                        .collect::<StorageResult<Vec<Option<i64>>>>()?,
                ),
                schema::ColType::Real => Box::new(
                    rows.iter()
                        .map(|r| match cell(r) {
                            Val::Null => Ok(None),
                            Val::Real(v) => Ok(Some(v)),
                            Val::Int(v) => Ok(Some(v as f64)),
                            v => Err(bad(&v)),
                        })
                        .collect::<StorageResult<Vec<Option<f64>>>>()?,
                ),
                schema::ColType::Text => Box::new(
                    rows.iter()
                        .map(|r| match cell(r) {
                            Val::Null => Ok(None),
                            Val::Text(v) => Ok(Some(v)),
                            v => Err(bad(&v)),
                        })
                        .collect::<StorageResult<Vec<Option<String>>>>()?,
                ),
                schema::ColType::Blob => Box::new(
                    rows.iter()
                        .map(|r| match cell(r) {
                            Val::Null => Ok(None),
                            Val::Blob(v) => Ok(Some(v)),
                            v => Err(bad(&v)),
                        })
                        .collect::<StorageResult<Vec<Option<Vec<u8>>>>>()?,
                ),
            });
        }
        let refs: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(|b| b.as_ref()).collect();
        self.0.execute(sql, &refs)?;
        Ok(())
    }

    fn exec(&mut self, sql: &'static str, params: &[Val]) -> StorageResult<u64> {
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as _).collect();
        self.0.execute(sql, &refs)
    }

    fn query(&mut self, sql: &'static str, params: &[Val]) -> StorageResult<Vec<Vec<Val>>> {
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as _).collect();
        let rows = self.0.query(sql, &refs)?;
        rows.iter()
            .map(|row| (0..row.len()).map(|i| pg_val(row, i)).collect())
            .collect()
    }
}
