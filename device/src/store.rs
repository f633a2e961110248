//! The encrypted on-device store: Automerge documents in encrypted chunks in SQLite.
//!
//! ## Design
//!
//! * One SQLite file (WAL mode, `secure_delete=ON`, `temp_store=MEMORY`, foreign keys on,
//!   `synchronous=NORMAL`). The key hierarchy is in [`crate::crypto`]: the store's data key is
//!   wrapped by a [`KeySource`] in a one-row `key_slot` table.
//! * Every record is one Automerge document, stored as an ordered run of **chunks**. Each chunk
//!   is the AES-256-GCM ciphertext of either a full `Automerge::save()` or the changes made since
//!   the previous chunk (`save_after`), sealed with associated data binding store id, record id
//!   and chunk number. Chunk numbers only grow (compaction writes the next number and deletes
//!   the older ones), so no two ciphertexts of a document ever share an AAD.
//! * [`Store::save_doc`] appends one small chunk per save; when a document would exceed
//!   [`COMPACT_AFTER_CHUNKS`] chunks it is compacted into one full save in the same
//!   transaction. [`Store::put_doc`] always writes one full save.
//! * The store itself tracks the heads of what it has saved per document (`saved_heads`, stored
//!   as raw 32-byte change hashes; they are SHA-256 hashes over changes that include random
//!   actor ids and timestamps, so they reveal nothing about content). Callers therefore just
//!   pass the document; they need not remember heads. If the document passed lacks changes the
//!   store already holds (two copies edited concurrently), the store merges them, so a save
//!   never discards stored changes. On load, the rebuilt document's heads must equal
//!   `saved_heads`, which detects missing or rolled-back chunk rows.
//! * A plaintext index per document ([`DocMeta`]: random ids, kind, date, status and visit
//!   codes) answers queries without decrypting. Nothing else is in plaintext, apart from what
//!   is derived from that index:
//! * The `worklist` table (`store/worklist.rs`): one row per procedure with its patient, date
//!   and the visits its submitted responses answer, kept equal to `docs` by SQLite triggers (so
//!   every writer keeps it current), created and filled on open in a store made before it
//!   existed. A clinic's first due list after open or sync reads it.
//! * Sync bookkeeping: per document the heads known to be on the server (`synced_heads`) and a
//!   dirty sequence number (set by every save that adds changes, cleared by
//!   [`Store::set_synced_heads`] once the server holds every saved head).
//! * Secrets (sealed, AAD binds the name) and plaintext settings are small key-value tables.
//!
//! ## Concurrency
//!
//! `Store` is `Send + Sync`. It owns one SQLite connection behind a `Mutex`; every operation
//! takes the lock for its duration (a save holds it for well under a millisecond), so a sync
//! running on one thread and a nurse saving on another interleave safely, one operation at a
//! time. Each write is one `BEGIN IMMEDIATE` transaction. Decryption and Automerge loading in
//! [`Store::load_doc`] run after the lock is released. Other processes may open the same file
//! (the CLI, a debugger): WAL and a 5 s busy timeout serialize them.
//!
//! ## Durability
//!
//! `synchronous=NORMAL` in WAL mode: a committed save survives an app crash or kill; a power
//! loss or OS crash may lose the last few commits since the most recent WAL sync (checkpoint),
//! but never corrupts the file. Patients' phones and tablets have batteries, and unsynced
//! records are also held by the user's memory of the visit; the cost of `FULL` (an fsync per
//! save, several ms on flash) would blow the 2 ms capture budget.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use automerge::{Automerge, ChangeHash};
use chrono::{Datelike, NaiveDate};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::crypto::{Aad, CryptoError, DataKey, KeyMethod, KeySlot, KeySource};
use followup_domain::ids::{RecordId, StoreId};
use followup_domain::model::RecordKind;

/// SQLite `application_id` of a Followup store ("FUP1").
pub const APPLICATION_ID: i32 = 0x4655_5031;
/// The schema/format version written to `user_version` of a store without users.
pub const FORMAT_VERSION: i32 = 1;
/// The format version of a store with users (per-user key slots; see [`users`]): the store's
/// key slot then wraps the device pepper, not the data key, so an app that does not know users
/// must refuse it ("update the app") rather than report a wrong key.
pub const USERS_FORMAT_VERSION: i32 = 2;
/// A document with more chunks than this after a save is compacted into one full save.
pub const COMPACT_AFTER_CHUNKS: u64 = 16;

// ---------------------------------------------------------------------------------------------
// Errors

/// Everything that can go wrong in the store. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The passphrase or device key does not unwrap the store's data key.
    #[error(
        "wrong passphrase or device key: it does not open this store. Check the passphrase; \
         if the device key was lost (e.g. the app was reinstalled), the records must be \
         restored from the registry server"
    )]
    WrongKey,
    /// A document chunk failed to authenticate, or is missing.
    #[error(
        "record {record} (chunk {chunk}) failed its integrity check: the store file was \
         modified outside Followup or is damaged. Remove the record and sync it again from \
         the registry server, or restore the store from a backup"
    )]
    Tampered {
        /// The record whose chunk failed.
        record: RecordId,
        /// The chunk number that failed or is missing.
        chunk: u64,
    },
    /// A document's chunks decrypt but do not add up to what was saved (rows deleted or
    /// rolled back).
    #[error(
        "record {record} is incomplete: {detail}. The store file was modified outside \
         Followup or restored from an older copy; sync the record again from the registry server"
    )]
    Incomplete {
        /// The record.
        record: RecordId,
        /// What does not add up.
        detail: String,
    },
    /// A sealed secret failed to authenticate.
    #[error(
        "the stored secret {name:?} failed its integrity check: the store file was modified \
         outside Followup; re-enrol the device"
    )]
    TamperedSecret {
        /// The secret's name.
        name: String,
    },
    /// The file is not a Followup store (not SQLite, or another application's database).
    #[error(
        "{path} is not a Followup store ({reason}); choose the right file or create a new store"
    )]
    NotAFollowupStore {
        /// The file.
        path: PathBuf,
        /// Why it is not.
        reason: String,
    },
    /// No file at the path given to [`Store::open`].
    #[error("no Followup store at {0}; create one first")]
    NotFound(PathBuf),
    /// [`Store::create`] was given a path that already exists.
    #[error("{0} already exists; open it instead, or choose another path")]
    AlreadyExists(PathBuf),
    /// The file is a Followup store but its structure is damaged.
    #[error(
        "the store is corrupted: {0}. Restore it from a backup, or create a new store and \
         sync again from the registry server"
    )]
    Corrupted(String),
    /// The store was written by a newer version of Followup.
    #[error(
        "the store has format version {found}, this app supports up to {supported}; update the app"
    )]
    UnsupportedFormat {
        /// The file's version.
        found: i32,
        /// The newest this code supports.
        supported: i32,
    },
    /// The platform keystore failed.
    #[error("the device keystore failed: {0}")]
    KeyProvider(String),
    /// A [`DocMeta`] field that would be written in plaintext is not a short code (a bug in
    /// the caller: free text must never reach the plaintext index).
    #[error("invalid index entry: {0} (status and visit must be short codes such as \"draft\" or \"m3\")")]
    InvalidMeta(String),
    /// The store has users and nobody is signed in (or the session idled out).
    #[error("the device is locked: sign in with your user and PIN first")]
    Locked,
    /// The PIN or passphrase is not the user's.
    #[error(
        "wrong PIN for this user; {attempts_left} attempt(s) left before the user is locked on \
         this device"
    )]
    WrongPin {
        /// Attempts left before the user's slot locks.
        attempts_left: u32,
    },
    /// Too many wrong PINs in a row: wait before the next attempt.
    #[error("too many wrong PINs: wait {seconds} s before trying again")]
    TryLater {
        /// Seconds to wait.
        seconds: u64,
    },
    /// The user's slot locked after too many wrong PINs.
    #[error(
        "this user is locked on this device after too many wrong PINs: ask the clinic's \
         coordinator for a new activation code and add the user again"
    )]
    UserLocked,
    /// No such user on this device.
    #[error(
        "user {0} is not set up on this device: add the user with their activation code first"
    )]
    UnknownUser(String),
    /// A PIN or passphrase too weak to protect a slot.
    #[error("{0}")]
    WeakPin(String),
    /// A user operation that does not fit the store's state.
    #[error("{0}")]
    Users(String),
    /// A cryptographic failure not covered above (e.g. a ciphertext of a newer format).
    #[error("encryption error: {0}")]
    Crypto(CryptoError),
    /// An SQLite error (disk full, I/O error, locked by another process...).
    #[error("database error: {0}; if it persists, check free storage space and restart the app")]
    Sqlite(#[from] rusqlite::Error),
    /// Automerge could not load or save a document.
    #[error("document error: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    /// A file-system error.
    #[error("file error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<CryptoError> for StoreError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::WrongKey => StoreError::WrongKey,
            CryptoError::KeyProvider(p) => match p {
                crate::crypto::KeyProviderError::WrongKey => StoreError::WrongKey,
                other => StoreError::KeyProvider(other.to_string()),
            },
            other => StoreError::Crypto(other),
        }
    }
}

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------------
// Public types

/// The plaintext index entry of one document. Only random ids, dates and short codes: the
/// store never writes anything else about a record in plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocMeta {
    /// The record.
    pub id: RecordId,
    /// Its kind.
    pub kind: RecordKind,
    /// The owning clinic.
    pub clinic: RecordId,
    /// The enrolment it belongs to (`None` for a clinic record).
    pub patient: Option<RecordId>,
    /// A date for ordering and due-date queries (procedure date, visit date, onset...).
    pub date: Option<NaiveDate>,
    /// A short status code such as `"draft"`, `"submitted"`, `"open"`.
    pub status: Option<String>,
    /// A schedule visit code such as `"m3"`.
    pub visit: Option<String>,
    /// The record this one refers to: the procedure a response follows up, the procedure an
    /// adverse event is suspected of, the adverse event an adjudication decides.
    pub subject: Option<RecordId>,
}

/// A query over the plaintext index; `None` fields match anything. Results are ordered by
/// date (documents without a date first), then id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Only this kind.
    pub kind: Option<RecordKind>,
    /// Only this clinic.
    pub clinic: Option<RecordId>,
    /// Only this enrolment.
    pub patient: Option<RecordId>,
    /// Only this status code.
    pub status: Option<String>,
    /// Only this visit code.
    pub visit: Option<String>,
    /// Only records referring to this record.
    pub subject: Option<RecordId>,
}

/// What a save wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveOutcome {
    /// Number of chunk rows written (0 when the document had no new changes).
    pub chunks_written: usize,
    /// Ciphertext bytes written.
    pub bytes: usize,
    /// The document's chunks were replaced by one full save.
    pub compacted: bool,
    /// The store held changes the given document lacked; they were merged in (reload the
    /// document with [`Store::load_doc`] to see them).
    pub merged: bool,
}

/// Which key protects the store (for rotation bookkeeping; not secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Provider or passphrase.
    pub method: KeyMethod,
    /// The provider's key id, or `"passphrase"`.
    pub key_id: String,
    /// PBKDF2 iterations (0 for a provider).
    pub iterations: u32,
}

// ---------------------------------------------------------------------------------------------
// Schema

const SCHEMA: &str = "
CREATE TABLE store_info (
    singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),
    store_id    BLOB NOT NULL,
    dirty_clock INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE key_slot (
    singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),
    method      TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    iterations  INTEGER NOT NULL,
    salt        BLOB NOT NULL,
    wrapped     BLOB NOT NULL,
    key_check   BLOB NOT NULL
);
CREATE TABLE docs (
    id           BLOB PRIMARY KEY,
    kind         TEXT NOT NULL,
    clinic       BLOB NOT NULL,
    patient      BLOB,
    date         INTEGER,
    status       TEXT,
    visit        TEXT,
    subject      BLOB,
    first_chunk  INTEGER NOT NULL,
    next_chunk   INTEGER NOT NULL,
    saved_heads  BLOB NOT NULL,
    synced_heads BLOB NOT NULL DEFAULT x'',
    dirty_seq    INTEGER
) WITHOUT ROWID;
CREATE INDEX docs_kind_clinic ON docs (kind, clinic, date, id, patient, status, visit, subject);
CREATE INDEX docs_patient_kind ON docs (patient, kind, date, id, clinic, status, visit, subject);
CREATE INDEX docs_subject ON docs (subject) WHERE subject IS NOT NULL;
CREATE INDEX docs_visit_links ON docs (kind, status, subject, visit) WHERE subject IS NOT NULL AND visit IS NOT NULL;
CREATE INDEX docs_dirty ON docs (dirty_seq) WHERE dirty_seq IS NOT NULL;
CREATE TABLE chunks (
    doc   BLOB NOT NULL REFERENCES docs (id) ON DELETE CASCADE,
    n     INTEGER NOT NULL,
    data  BLOB NOT NULL,
    PRIMARY KEY (doc, n)
);
CREATE TABLE secrets (
    name  TEXT PRIMARY KEY,
    data  BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
";

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    // journal_mode returns the new mode as a row.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupted(format!(
            "could not switch the database to WAL mode (got {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // The background checkpointer keeps the WAL short; this is only the safety net.
    conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Encoding helpers

fn encode_heads(heads: &[ChangeHash]) -> Vec<u8> {
    let set: BTreeSet<&ChangeHash> = heads.iter().collect();
    let mut out = Vec::with_capacity(set.len() * 32);
    for h in set {
        out.extend_from_slice(&h.0);
    }
    out
}

fn decode_heads(bytes: &[u8]) -> Result<Vec<ChangeHash>> {
    if !bytes.chunks_exact(32).remainder().is_empty() {
        return Err(StoreError::Corrupted(
            "a stored heads list is malformed".into(),
        ));
    }
    bytes
        .chunks_exact(32)
        .map(|c| {
            ChangeHash::try_from(c)
                .map_err(|_| StoreError::Corrupted("a stored heads list is malformed".into()))
        })
        .collect()
}

fn same_heads(a: &[ChangeHash], b: &[ChangeHash]) -> bool {
    a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
}

const META_COLUMNS: &str = "id, kind, clinic, patient, date, status, visit, subject";

/// Days from 0001-01-01 to 1970-01-01 (chrono's `num_days_from_ce` of the Unix epoch).
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// A date as stored: days since 1970-01-01 (sorts correctly; `date(d * 86400, 'unixepoch')`
/// shows it in the sqlite3 shell).
fn date_to_days(d: NaiveDate) -> i64 {
    i64::from(d.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE)
}

fn days_to_date(days: i64) -> Option<NaiveDate> {
    let ce = i32::try_from(days)
        .ok()?
        .checked_add(UNIX_EPOCH_DAYS_FROM_CE)?;
    NaiveDate::from_num_days_from_ce_opt(ce)
}

/// A malformed index column: reported as [`StoreError::Corrupted`].
#[derive(Debug)]
struct BadColumn(&'static str);

impl std::fmt::Display for BadColumn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed index column {}", self.0)
    }
}

impl std::error::Error for BadColumn {}

fn bad(col: usize, name: &'static str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        col,
        rusqlite::types::Type::Blob,
        Box::new(BadColumn(name)),
    )
}

fn id_col(r: &rusqlite::Row<'_>, col: usize, name: &'static str) -> rusqlite::Result<RecordId> {
    RecordId::from_slice(r.get_ref(col)?.as_blob().map_err(|_| bad(col, name))?)
        .ok_or_else(|| bad(col, name))
}

/// Decode one index row (columns [`META_COLUMNS`]) without intermediate allocations.
fn meta_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DocMeta> {
    let kind = r.get_ref(1)?.as_str().map_err(|_| bad(1, "kind"))?;
    Ok(DocMeta {
        id: id_col(r, 0, "id")?,
        kind: RecordKind::from_code(kind).ok_or_else(|| bad(1, "kind"))?,
        clinic: id_col(r, 2, "clinic")?,
        patient: match r.get_ref(3)? {
            rusqlite::types::ValueRef::Null => None,
            _ => Some(id_col(r, 3, "patient")?),
        },
        date: match r.get::<_, Option<i64>>(4)? {
            None => None,
            Some(d) => Some(days_to_date(d).ok_or_else(|| bad(4, "date"))?),
        },
        status: r.get(5)?,
        visit: r.get(6)?,
        subject: match r.get_ref(7)? {
            rusqlite::types::ValueRef::Null => None,
            _ => Some(id_col(r, 7, "subject")?),
        },
    })
}

/// Map a row-decoding failure to `Corrupted`, other SQLite errors to `Sqlite`.
fn index_err(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::FromSqlConversionFailure(_, _, inner) => {
            StoreError::Corrupted(format!("the record index is damaged: {inner}"))
        }
        rusqlite::Error::InvalidColumnType(_, name, _) => {
            StoreError::Corrupted(format!("the record index is damaged: column {name}"))
        }
        other => StoreError::Sqlite(other),
    }
}

fn id_from_blob(b: &[u8]) -> Result<RecordId> {
    RecordId::from_slice(b)
        .ok_or_else(|| StoreError::Corrupted("a stored record id is malformed".into()))
}

/// Longest status or visit code accepted in the plaintext index.
pub const MAX_CODE_LEN: usize = 32;

/// Status and visit codes are written in plaintext, so only short codes are accepted: 1 to
/// [`MAX_CODE_LEN`] ASCII letters, digits, `_`, `-`, `.` or `:`. This keeps free text (which
/// could be clinical) out of the index even if a caller makes a mistake.
fn validate_meta(meta: &DocMeta) -> Result<()> {
    for (name, value) in [("status", &meta.status), ("visit", &meta.visit)] {
        if let Some(v) = value {
            let ok = !v.is_empty()
                && v.len() <= MAX_CODE_LEN
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
            if !ok {
                // The value itself is not echoed: it may be exactly the free text to keep out.
                return Err(StoreError::InvalidMeta(format!(
                    "{name} is not a short code"
                )));
            }
        }
    }
    Ok(())
}

/// The bookkeeping columns of one document row.
struct DocRow {
    first_chunk: u64,
    next_chunk: u64,
    saved_heads: Vec<ChangeHash>,
}

fn to_u64(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupted("a negative chunk number".into()))
}

fn to_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Corrupted("chunk number overflow".into()))
}

fn lock_poison_ok(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves the connection consistent: an open transaction is
    // rolled back when its guard drops during unwinding. So a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The store

/// The encrypted on-device store. See the [module documentation](self).
pub struct Store {
    conn: Mutex<Connection>,
    /// The data key, or in users mode the signed-in session ([`access`]).
    access: std::sync::Arc<access::Access>,
    /// What opened the store (the device key), to wrap the pepper when users are enabled and
    /// after a rotation.
    source: Mutex<KeySource>,
    store_id: StoreId,
    path: PathBuf,
    /// Counts committed document writes made through this `Store` (see [`Store::generation`]).
    writes: std::sync::atomic::AtomicU64,
    /// Wakes the background checkpointer (see [`Checkpointer`]); `None` if it could not start.
    checkpointer: Option<Checkpointer>,
    /// The documents written since [`Store::take_changes`] was last called, while someone
    /// observes changes (`None`: nobody does, nothing is collected).
    changes: Mutex<Option<BTreeSet<RecordId>>>,
}

/// Writes between two background checkpoints.
const CHECKPOINT_EVERY_WRITES: u64 = 32;

/// A thread with its own connection that copies the WAL into the database file
/// (`wal_checkpoint(PASSIVE)`) every [`CHECKPOINT_EVERY_WRITES`] writes, so that a save never
/// pays for a checkpoint: SQLite's automatic checkpoint runs *inside* the commit that crosses
/// its threshold (about 5 ms every ~80 saves on the development VM, the whole p99 of a save).
/// A passive checkpoint never blocks writers. The main connection keeps a high automatic
/// threshold as a safety net. The thread ends when the `Store` is dropped.
struct Checkpointer {
    wake: std::sync::mpsc::SyncSender<()>,
}

impl Checkpointer {
    fn start(path: &Path) -> Option<Checkpointer> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ok()?;
        conn.busy_timeout(Duration::from_millis(200)).ok()?;
        let (wake, rx) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("followup-checkpoint".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!("background checkpoint failed: {e}");
                    }
                }
            })
            .ok()?;
        Some(Checkpointer { wake })
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("store_id", &self.store_id)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Create a new store at `path` (which must not exist), protected by `key`.
    pub fn create(path: impl AsRef<Path>, key: KeySource) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        // Claim the path atomically: an empty file is a valid empty SQLite database, and a
        // failure below may then remove only what this call created.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::AlreadyExists(path))
            }
            Err(e) => return Err(e.into()),
        }
        let result = Self::create_inner(&path, &key);
        if result.is_err() {
            // Best effort: do not leave a half-made store behind.
            for suffix in ["", "-wal", "-shm"] {
                let mut p = path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(p));
            }
        }
        result
    }

    fn create_inner(path: &Path, source: &KeySource) -> Result<Store> {
        let store_id = StoreId::random();
        let key = DataKey::generate();
        // Wrap before writing anything; on failure `create` removes the file it claimed.
        let slot = KeySlot::wrap(source, &store_id, &key)?;
        if !slot.holds(source, &store_id, &key) {
            return Err(StoreError::KeyProvider(
                "the key provider did not give back the key it wrapped".into(),
            ));
        }
        let check = key.key_check(&store_id)?;
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", FORMAT_VERSION)?;
        tx.execute_batch(SCHEMA)?;
        worklist::create(&tx)?;
        tx.execute(
            "INSERT INTO store_info (singleton, store_id) VALUES (1, ?1)",
            params![store_id.as_bytes().as_slice()],
        )?;
        write_slot(&tx, &slot, Some(&check))?;
        tx.commit()?;
        Ok(Store {
            conn: Mutex::new(conn),
            access: access::Access::open(key),
            source: Mutex::new(source.clone()),
            store_id,
            checkpointer: Checkpointer::start(path),
            path: path.to_path_buf(),
            writes: Default::default(),
            changes: Mutex::new(None),
        })
    }

    /// Open an existing store at `path` with `key`.
    ///
    /// Errors: [`StoreError::NotFound`], [`StoreError::NotAFollowupStore`] (not SQLite, or
    /// another application's database), [`StoreError::UnsupportedFormat`],
    /// [`StoreError::Corrupted`], [`StoreError::WrongKey`], [`StoreError::KeyProvider`].
    pub fn open(path: impl AsRef<Path>, key: KeySource) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        if !path.is_file() {
            return Err(StoreError::NotFound(path));
        }
        let not_ours = |reason: &str| StoreError::NotAFollowupStore {
            path: path.clone(),
            reason: reason.to_string(),
        };
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let app_id: i32 = match conn.query_row("PRAGMA application_id", [], |r| r.get(0)) {
            Ok(v) => v,
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::NotADatabase =>
            {
                return Err(not_ours("not an SQLite database"))
            }
            Err(rusqlite::Error::SqliteFailure(e, m))
                if e.code == rusqlite::ErrorCode::DatabaseCorrupt =>
            {
                return Err(StoreError::Corrupted(m.unwrap_or_else(|| e.to_string())))
            }
            Err(e) => return Err(e.into()),
        };
        if app_id != APPLICATION_ID {
            return Err(not_ours("another application's database"));
        }
        let version: i32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > USERS_FORMAT_VERSION {
            return Err(StoreError::UnsupportedFormat {
                found: version,
                supported: USERS_FORMAT_VERSION,
            });
        }
        if version < 1 {
            return Err(StoreError::Corrupted("missing format version".into()));
        }
        configure(&conn)?;
        let store_id: Vec<u8> = conn
            .query_row(
                "SELECT store_id FROM store_info WHERE singleton = 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| StoreError::Corrupted(format!("store header unreadable: {e}")))?
            .ok_or_else(|| StoreError::Corrupted("missing store header".into()))?;
        let store_id = StoreId::from_slice(&store_id)
            .ok_or_else(|| StoreError::Corrupted("malformed store id".into()))?;
        let (slot, check) = read_slot(&conn)?;
        let unwrapped = slot.unwrap(&key, &store_id)?;
        let access = if version == USERS_FORMAT_VERSION {
            // The device key yields the pepper; the data key needs a user's sign-in.
            access::Access::locked(crate::crypto::pepper_of(&unwrapped))
        } else {
            unwrapped.verify_key_check(&store_id, &check)?;
            access::Access::open(unwrapped)
        };
        // Schema additions that need no format bump (plaintext index tables kept by triggers).
        worklist::ensure(&mut conn)?;
        let store = Store {
            conn: Mutex::new(conn),
            access,
            source: Mutex::new(key),
            store_id,
            checkpointer: Checkpointer::start(&path),
            path,
            writes: Default::default(),
            changes: Mutex::new(None),
        };
        if store.has_users() {
            store.load_idle_timeout()?;
        }
        Ok(store)
    }

    /// This store's id (bound into every ciphertext).
    /// A value that changes whenever a document or its index entry may have changed: writes
    /// through this `Store`, and commits by any other connection to the file (SQLite's
    /// `data_version`). Caches derived from the index (the device's work list) compare it.
    pub fn generation(&self) -> Result<(u64, i64)> {
        let conn = self.lock()?;
        let data_version: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        Ok((
            self.writes.load(std::sync::atomic::Ordering::SeqCst),
            data_version,
        ))
    }

    fn bump_generation(&self) {
        let n = self
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        if n.is_multiple_of(CHECKPOINT_EVERY_WRITES) {
            if let Some(c) = &self.checkpointer {
                // A full channel means a checkpoint is already pending: nothing to add.
                let _ = c.wake.try_send(());
            }
        }
    }

    /// Start (`true`) or stop collecting the ids of the documents written, for
    /// [`Store::take_changes`]. Stopping forgets what was collected.
    pub fn track_changes(&self, on: bool) {
        if let Ok(mut c) = self.changes.lock() {
            match (on, c.is_some()) {
                (true, false) => *c = Some(BTreeSet::new()),
                (false, _) => *c = None,
                _ => {}
            }
        }
    }

    /// The documents written (saved, replaced or deleted) since the last call, while changes are
    /// tracked; empty otherwise.
    pub fn take_changes(&self) -> BTreeSet<RecordId> {
        match self.changes.lock() {
            Ok(mut c) => c.as_mut().map(std::mem::take).unwrap_or_default(),
            Err(_) => BTreeSet::new(),
        }
    }

    fn note_change(&self, id: &RecordId) {
        if let Ok(mut c) = self.changes.lock() {
            if let Some(set) = c.as_mut() {
                set.insert(*id);
            }
        }
    }

    pub fn store_id(&self) -> StoreId {
        self.store_id
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which key currently protects the store.
    pub fn key_info(&self) -> Result<KeyInfo> {
        let conn = self.lock()?;
        let (slot, _) = read_slot(&conn)?;
        Ok(KeyInfo {
            method: slot.method,
            key_id: slot.key_id,
            iterations: slot.iterations,
        })
    }

    /// Re-wrap the data key with `new` (passphrase change, platform key rotation, or a switch
    /// between the two). Only the key slot is rewritten, atomically; no record is re-encrypted.
    /// Afterwards only `new` opens the store.
    pub fn rotate_key(&self, new: KeySource) -> Result<()> {
        // In users mode the key slot wraps the pepper (and a user must be signed in).
        let key = match self.access.pepper() {
            Some(pepper) => {
                self.access.check()?;
                std::sync::Arc::new(crate::crypto::pepper_as_key(&pepper)?)
            }
            None => self.access.key()?,
        };
        let slot = KeySlot::wrap(&new, &self.store_id, &key)?;
        if !slot.holds(&new, &self.store_id, &key) {
            return Err(StoreError::KeyProvider(
                "the key provider did not give back the key it wrapped".into(),
            ));
        }
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        write_slot(&tx, &slot, None)?;
        tx.commit()?;
        // Best effort: push the new slot into the main file and drop the WAL frames holding
        // the old one. Failure (e.g. another process reading) only delays that.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "checkpoint after key rotation deferred");
        }
        drop(conn);
        *self.source.lock().unwrap_or_else(|e| e.into_inner()) = new;
        tracing::info!(method = slot.method.code(), key_id = %slot.key_id, "store key rotated");
        Ok(())
    }

    /// The connection, once the store is usable: [`StoreError::Locked`] while a store with
    /// users has nobody signed in.
    fn lock(&self) -> Result<MutexGuard<'_, Connection>> {
        self.access.check()?;
        Ok(lock_poison_ok(&self.conn))
    }

    /// The connection whether or not anyone is signed in: plaintext settings and the user
    /// slots only.
    fn lock_raw(&self) -> MutexGuard<'_, Connection> {
        lock_poison_ok(&self.conn)
    }

    // -----------------------------------------------------------------------------------------
    // Documents

    /// Save the changes of `doc` not yet in the store, as one new encrypted chunk, and update
    /// its index entry from `meta`.
    ///
    /// A new document is written as one full save. When the document would have more than
    /// [`COMPACT_AFTER_CHUNKS`] chunks, all its chunks are replaced by one full save in the same
    /// transaction. If the store holds changes `doc` lacks, they are merged (never lost) and
    /// [`SaveOutcome::merged`] is set. A document with nothing new writes no chunk (the index
    /// entry is still updated).
    pub fn save_doc(&self, meta: &DocMeta, doc: &Automerge) -> Result<SaveOutcome> {
        self.write_doc(meta, doc, false)
    }

    /// Write `doc` as one full save, replacing its chunks (for documents received whole, or to
    /// force compaction). Changes the store holds that `doc` lacks are merged, never dropped.
    pub fn put_doc(&self, meta: &DocMeta, doc: &Automerge) -> Result<SaveOutcome> {
        self.write_doc(meta, doc, true)
    }

    fn write_doc(&self, meta: &DocMeta, doc: &Automerge, full: bool) -> Result<SaveOutcome> {
        validate_meta(meta)?;
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row = doc_row(&tx, &meta.id)?;
        let mut outcome = SaveOutcome {
            chunks_written: 0,
            bytes: 0,
            compacted: false,
            merged: false,
        };
        let dirty = match row {
            None => {
                let ct = self.seal_chunk(&meta.id, 0, &doc.save())?;
                upsert_meta(&tx, meta, 0, 1, &doc.get_heads())?;
                insert_chunk(&tx, &meta.id, 0, &ct)?;
                outcome.chunks_written = 1;
                outcome.bytes = ct.len();
                true
            }
            Some(row) => {
                let doc_has_all = row
                    .saved_heads
                    .iter()
                    .all(|h| doc.get_change_meta_by_hash(h).is_some());
                // The document to write: `doc` itself, or the stored one with `doc` merged in.
                let merged_doc;
                let target: &Automerge = if doc_has_all {
                    doc
                } else {
                    let mut stored = self.load_chunks(&tx, &meta.id, &row)?;
                    let mut theirs = doc.clone();
                    stored.merge(&mut theirs)?;
                    outcome.merged = true;
                    merged_doc = stored;
                    &merged_doc
                };
                let new_heads = target.get_heads();
                let unchanged = same_heads(&new_heads, &row.saved_heads);
                if unchanged && !full {
                    upsert_meta(&tx, meta, row.first_chunk, row.next_chunk, &new_heads)?;
                    false
                } else {
                    let n = row.next_chunk;
                    let count_after = n + 1 - row.first_chunk;
                    let compact = full || count_after > COMPACT_AFTER_CHUNKS;
                    let (plain, first) = if compact {
                        (target.save(), n)
                    } else {
                        (target.save_after(&row.saved_heads), row.first_chunk)
                    };
                    let ct = self.seal_chunk(&meta.id, n, &plain)?;
                    upsert_meta(&tx, meta, first, n + 1, &new_heads)?;
                    insert_chunk(&tx, &meta.id, n, &ct)?;
                    if compact {
                        tx.prepare_cached("DELETE FROM chunks WHERE doc = ?1 AND n < ?2")?
                            .execute(params![meta.id.as_bytes().as_slice(), to_i64(n)?])?;
                    }
                    outcome.chunks_written = 1;
                    outcome.bytes = ct.len();
                    outcome.compacted = compact;
                    !unchanged
                }
            }
        };
        if dirty {
            mark_dirty(&tx, &meta.id)?;
        }
        tx.commit()?;
        self.bump_generation();
        self.note_change(&meta.id);
        Ok(outcome)
    }

    /// Replace a document by `doc` **without merging** what the store holds (unlike
    /// [`Store::save_doc`]), as one full save — the sync client's rollback of a change the
    /// server rejected (`doc` is then the stored document forked at its synced heads).
    /// Compare-and-set: nothing is written and `Ok(false)` is returned unless the store's
    /// saved heads are exactly `expected` (a save made meanwhile must not be dropped
    /// silently; reload and try again). The document stays dirty unless its new heads are all
    /// among its synced heads. `Ok(false)` too for an unknown document.
    pub fn replace_doc(
        &self,
        meta: &DocMeta,
        doc: &Automerge,
        expected: &[ChangeHash],
    ) -> Result<bool> {
        validate_meta(meta)?;
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(row) = doc_row(&tx, &meta.id)? else {
            return Ok(false);
        };
        if !same_heads(&row.saved_heads, expected) {
            return Ok(false);
        }
        let n = row.next_chunk;
        let heads = doc.get_heads();
        let ct = self.seal_chunk(&meta.id, n, &doc.save())?;
        upsert_meta(&tx, meta, n, n + 1, &heads)?;
        insert_chunk(&tx, &meta.id, n, &ct)?;
        tx.prepare_cached("DELETE FROM chunks WHERE doc = ?1 AND n < ?2")?
            .execute(params![meta.id.as_bytes().as_slice(), to_i64(n)?])?;
        let synced: Vec<u8> = tx
            .prepare_cached("SELECT synced_heads FROM docs WHERE id = ?1")?
            .query_row(params![meta.id.as_bytes().as_slice()], |r| r.get(0))?;
        let synced = decode_heads(&synced)?;
        if heads.iter().all(|h| synced.contains(h)) {
            tx.prepare_cached("UPDATE docs SET dirty_seq = NULL WHERE id = ?1")?
                .execute(params![meta.id.as_bytes().as_slice()])?;
        } else {
            mark_dirty(&tx, &meta.id)?;
        }
        tx.commit()?;
        self.bump_generation();
        self.note_change(&meta.id);
        Ok(true)
    }

    /// Load a document, or `None` if the store does not hold it. The loaded document has a
    /// random actor id; set the device's actor before changing it.
    ///
    /// Errors: [`StoreError::Tampered`] if a chunk fails to authenticate or is missing,
    /// [`StoreError::Incomplete`] if the chunks do not add up to what was last saved.
    pub fn load_doc(&self, id: &RecordId) -> Result<Option<Automerge>> {
        let (row, chunks) = {
            let conn = self.lock()?;
            let Some(row) = doc_row(&conn, id)? else {
                return Ok(None);
            };
            let chunks = read_chunks(&conn, id)?;
            (row, chunks)
        };
        self.rebuild(id, &row, chunks).map(Some)
    }

    fn load_chunks(&self, conn: &Connection, id: &RecordId, row: &DocRow) -> Result<Automerge> {
        let chunks = read_chunks(conn, id)?;
        self.rebuild(id, row, chunks)
    }

    /// Decrypt chunks in order, check they are complete, and rebuild the document.
    fn rebuild(
        &self,
        id: &RecordId,
        row: &DocRow,
        chunks: Vec<(u64, Vec<u8>)>,
    ) -> Result<Automerge> {
        let mut expected = row.first_chunk;
        let mut doc: Option<Automerge> = None;
        for (n, ct) in chunks {
            if n != expected {
                return Err(StoreError::Tampered {
                    record: *id,
                    chunk: expected,
                });
            }
            let plain = self.open_chunk(id, n, &ct)?;
            match doc.as_mut() {
                None => doc = Some(Automerge::load(&plain)?),
                Some(d) => {
                    d.load_incremental(&plain)?;
                }
            }
            expected += 1;
        }
        if expected != row.next_chunk {
            return Err(StoreError::Tampered {
                record: *id,
                chunk: expected,
            });
        }
        let doc = doc.ok_or_else(|| StoreError::Incomplete {
            record: *id,
            detail: "it has no chunks".into(),
        })?;
        if !same_heads(&doc.get_heads(), &row.saved_heads) {
            return Err(StoreError::Incomplete {
                record: *id,
                detail: "its changes do not match the last save".into(),
            });
        }
        Ok(doc)
    }

    fn seal_chunk(&self, id: &RecordId, n: u64, plain: &[u8]) -> Result<Vec<u8>> {
        Ok(self
            .access
            .key()?
            .seal(&Aad::doc_chunk(&self.store_id, id, n), plain)?)
    }

    fn open_chunk(&self, id: &RecordId, n: u64, ct: &[u8]) -> Result<Vec<u8>> {
        self.access
            .key()?
            .open(&Aad::doc_chunk(&self.store_id, id, n), ct)
            .map_err(|e| match e {
                CryptoError::Authentication | CryptoError::Malformed => StoreError::Tampered {
                    record: *id,
                    chunk: n,
                },
                other => other.into(),
            })
    }

    /// Rewrite a document as one full save (normally automatic; see [`COMPACT_AFTER_CHUNKS`]).
    /// Returns `false` if the store does not hold it.
    pub fn compact_doc(&self, id: &RecordId) -> Result<bool> {
        let Some(meta) = self.meta(id)? else {
            return Ok(false);
        };
        let Some(doc) = self.load_doc(id)? else {
            return Ok(false);
        };
        self.put_doc(&meta, &doc)?;
        Ok(true)
    }

    /// Remove a document and its chunks (e.g. the server says this device may no longer hold
    /// it). With `secure_delete` the freed pages are zeroed. Returns whether it existed.
    pub fn delete_doc(&self, id: &RecordId) -> Result<bool> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Chunks go by ON DELETE CASCADE.
        let n = tx
            .prepare_cached("DELETE FROM docs WHERE id = ?1")?
            .execute(params![id.as_bytes().as_slice()])?;
        tx.commit()?;
        self.bump_generation();
        if n > 0 {
            self.note_change(id);
        }
        Ok(n > 0)
    }

    /// Number of chunk rows a document currently has (0 if absent).
    pub fn chunk_count(&self, id: &RecordId) -> Result<u64> {
        let conn = self.lock()?;
        let n: i64 = conn
            .prepare_cached("SELECT count(*) FROM chunks WHERE doc = ?1")?
            .query_row(params![id.as_bytes().as_slice()], |r| r.get(0))?;
        to_u64(n)
    }

    /// The heads of what the store holds of a document (`None` if absent).
    pub fn saved_heads(&self, id: &RecordId) -> Result<Option<Vec<ChangeHash>>> {
        let conn = self.lock()?;
        Ok(doc_row(&conn, id)?.map(|r| r.saved_heads))
    }

    // -----------------------------------------------------------------------------------------
    // Index queries

    /// The index entry of one document.
    pub fn meta(&self, id: &RecordId) -> Result<Option<DocMeta>> {
        let conn = self.lock()?;
        let meta = conn
            .prepare_cached(&format!("SELECT {META_COLUMNS} FROM docs WHERE id = ?1"))?
            .query_row(params![id.as_bytes().as_slice()], meta_row)
            .optional()
            .map_err(index_err)?;
        Ok(meta)
    }

    /// For every record referred to by documents of `kind` with status `status` that name a
    /// visit: the record and those visit codes, comma-separated (codes never contain a comma).
    /// For responses: which visits of each procedure are answered. One index-only scan,
    /// aggregated by SQLite, unordered; it lists a whole clinic's done visits quickly.
    pub fn visit_links(&self, kind: RecordKind, status: &str) -> Result<Vec<(RecordId, String)>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT subject, group_concat(visit, ',') FROM docs INDEXED BY docs_visit_links \
             WHERE kind = ?1 AND status = ?2 AND subject IS NOT NULL AND visit IS NOT NULL \
             GROUP BY subject",
        )?;
        let rows = stmt
            .query_map(params![kind.code(), status], |r| {
                Ok((id_col(r, 0, "subject")?, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(index_err)?;
        Ok(rows)
    }

    /// Index entries matching `query`, ordered by date then id.
    pub fn list(&self, query: &Query) -> Result<Vec<DocMeta>> {
        let mut sql = format!("SELECT {META_COLUMNS} FROM docs");
        let mut conds: Vec<&str> = Vec::new();
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(k) = query.kind {
            conds.push("kind = ?");
            args.push(k.code().to_string().into());
        }
        if let Some(c) = query.clinic {
            conds.push("clinic = ?");
            args.push(c.as_bytes().to_vec().into());
        }
        if let Some(p) = query.patient {
            conds.push("patient = ?");
            args.push(p.as_bytes().to_vec().into());
        }
        if let Some(s) = &query.status {
            conds.push("status = ?");
            args.push(s.clone().into());
        }
        if let Some(v) = &query.visit {
            conds.push("visit = ?");
            args.push(v.clone().into());
        }
        if let Some(x) = query.subject {
            conds.push("subject = ?");
            args.push(x.as_bytes().to_vec().into());
        }
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql.push_str(" ORDER BY date, id");
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), meta_row)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(index_err)
    }

    /// Number of documents of `kind` (all documents if `None`).
    pub fn count(&self, kind: Option<RecordKind>) -> Result<u64> {
        let conn = self.lock()?;
        let n: i64 = match kind {
            Some(k) => conn
                .prepare_cached("SELECT count(*) FROM docs WHERE kind = ?1")?
                .query_row(params![k.code()], |r| r.get(0))?,
            None => conn
                .prepare_cached("SELECT count(*) FROM docs")?
                .query_row([], |r| r.get(0))?,
        };
        to_u64(n)
    }

    // -----------------------------------------------------------------------------------------
    // Sync bookkeeping

    /// Up to `limit` documents with changes saved since they were last known to be on the
    /// server, oldest change first.
    pub fn dirty_docs(&self, limit: usize) -> Result<Vec<RecordId>> {
        let conn = self.lock()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = conn.prepare_cached(
            "SELECT id FROM docs WHERE dirty_seq IS NOT NULL ORDER BY dirty_seq LIMIT ?1",
        )?;
        let ids = stmt
            .query_map(params![limit], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        ids.iter().map(|b| id_from_blob(b)).collect()
    }

    /// Record that the server holds a document up to `heads`. The document stops being dirty
    /// if every head the store has saved is among `heads` (so a save made while the sync was in
    /// flight keeps it dirty). Returns whether it is now clean; `Ok(false)` for an unknown id.
    pub fn set_synced_heads(&self, id: &RecordId, heads: &[ChangeHash]) -> Result<bool> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(row) = doc_row(&tx, id)? else {
            return Ok(false);
        };
        let synced: BTreeSet<&ChangeHash> = heads.iter().collect();
        let clean = row.saved_heads.iter().all(|h| synced.contains(h));
        tx.prepare_cached(
            "UPDATE docs SET synced_heads = ?2, \
             dirty_seq = CASE WHEN ?3 THEN NULL ELSE dirty_seq END WHERE id = ?1",
        )?
        .execute(params![
            id.as_bytes().as_slice(),
            encode_heads(heads),
            clean
        ])?;
        tx.commit()?;
        Ok(clean)
    }

    /// The heads last recorded with [`Store::set_synced_heads`] (empty if never synced;
    /// `None` for an unknown id).
    pub fn synced_heads(&self, id: &RecordId) -> Result<Option<Vec<ChangeHash>>> {
        let conn = self.lock()?;
        let b: Option<Vec<u8>> = conn
            .prepare_cached("SELECT synced_heads FROM docs WHERE id = ?1")?
            .query_row(params![id.as_bytes().as_slice()], |r| r.get(0))
            .optional()?;
        b.map(|b| decode_heads(&b)).transpose()
    }

    /// Copy the WAL into the main file and truncate it. A background thread already copies it
    /// every few dozen writes without blocking saves; an app may call this when going to the
    /// background so the WAL file is empty while the app sleeps.
    pub fn checkpoint(&self) -> Result<()> {
        let conn = self.lock()?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Secrets and settings

    /// Store a secret (sealed under the data key; the AAD binds `name`).
    pub fn put_secret(&self, name: &str, value: &[u8]) -> Result<()> {
        let ct = self
            .access
            .key()?
            .seal(&Aad::secret(&self.store_id, name), value)?;
        let conn = self.lock()?;
        conn.prepare_cached("INSERT OR REPLACE INTO secrets (name, data) VALUES (?1, ?2)")?
            .execute(params![name, ct])?;
        Ok(())
    }

    /// A secret stored with [`Store::put_secret`]. [`StoreError::TamperedSecret`] if it fails
    /// to authenticate (modified, or moved from another name or store).
    pub fn get_secret(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let ct: Option<Vec<u8>> = {
            let conn = self.lock()?;
            let v = conn
                .prepare_cached("SELECT data FROM secrets WHERE name = ?1")?
                .query_row(params![name], |r| r.get(0))
                .optional()?;
            v
        };
        let Some(ct) = ct else { return Ok(None) };
        match self
            .access
            .key()?
            .open(&Aad::secret(&self.store_id, name), &ct)
        {
            Ok(v) => Ok(Some(v)),
            Err(CryptoError::Authentication | CryptoError::Malformed) => {
                Err(StoreError::TamperedSecret {
                    name: name.to_string(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Remove a secret; returns whether it existed.
    pub fn delete_secret(&self, name: &str) -> Result<bool> {
        let conn = self.lock()?;
        let n = conn
            .prepare_cached("DELETE FROM secrets WHERE name = ?1")?
            .execute(params![name])?;
        Ok(n > 0)
    }

    /// Store a **plaintext**, non-sensitive setting (sync cursor, server URL). Never put patient
    /// data or keys here; use [`Store::put_secret`].
    pub fn put_setting(&self, name: &str, value: &str) -> Result<()> {
        let conn = self.lock_raw();
        conn.prepare_cached("INSERT OR REPLACE INTO settings (name, value) VALUES (?1, ?2)")?
            .execute(params![name, value])?;
        Ok(())
    }

    /// A plaintext setting.
    pub fn get_setting(&self, name: &str) -> Result<Option<String>> {
        let conn = self.lock_raw();
        let v = conn
            .prepare_cached("SELECT value FROM settings WHERE name = ?1")?
            .query_row(params![name], |r| r.get(0))
            .optional()?;
        Ok(v)
    }

    /// Remove a setting; returns whether it existed.
    pub fn delete_setting(&self, name: &str) -> Result<bool> {
        let conn = self.lock_raw();
        let n = conn
            .prepare_cached("DELETE FROM settings WHERE name = ?1")?
            .execute(params![name])?;
        Ok(n > 0)
    }
}

// ---------------------------------------------------------------------------------------------
// SQL helpers (called with the lock held)

fn write_slot(conn: &Connection, slot: &KeySlot, check: Option<&[u8]>) -> Result<()> {
    match check {
        Some(check) => {
            conn.execute(
                "INSERT INTO key_slot (singleton, method, key_id, iterations, salt, wrapped, key_check) \
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
                params![slot.method.code(), slot.key_id, slot.iterations, slot.salt, slot.wrapped, check],
            )?;
        }
        None => {
            let n = conn.execute(
                "UPDATE key_slot SET method = ?1, key_id = ?2, iterations = ?3, salt = ?4, wrapped = ?5 \
                 WHERE singleton = 1",
                params![slot.method.code(), slot.key_id, slot.iterations, slot.salt, slot.wrapped],
            )?;
            if n != 1 {
                return Err(StoreError::Corrupted("missing key record".into()));
            }
        }
    }
    Ok(())
}

fn read_slot(conn: &Connection) -> Result<(KeySlot, Vec<u8>)> {
    let row = conn
        .query_row(
            "SELECT method, key_id, iterations, salt, wrapped, key_check FROM key_slot \
             WHERE singleton = 1",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                ))
            },
        )
        .optional()
        .map_err(|e| StoreError::Corrupted(format!("key record unreadable: {e}")))?
        .ok_or_else(|| StoreError::Corrupted("missing key record".into()))?;
    let (method, key_id, iterations, salt, wrapped, check) = row;
    let method = KeyMethod::from_code(&method)
        .ok_or_else(|| StoreError::Corrupted(format!("unknown key method {method:?}")))?;
    let iterations = u32::try_from(iterations)
        .map_err(|_| StoreError::Corrupted("invalid key derivation parameters".into()))?;
    Ok((
        KeySlot {
            method,
            key_id,
            iterations,
            salt,
            wrapped,
        },
        check,
    ))
}

fn doc_row(conn: &Connection, id: &RecordId) -> Result<Option<DocRow>> {
    let raw = conn
        .prepare_cached("SELECT first_chunk, next_chunk, saved_heads FROM docs WHERE id = ?1")?
        .query_row(params![id.as_bytes().as_slice()], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })
        .optional()?;
    raw.map(|(first, next, heads)| {
        Ok(DocRow {
            first_chunk: to_u64(first)?,
            next_chunk: to_u64(next)?,
            saved_heads: decode_heads(&heads)?,
        })
    })
    .transpose()
}

fn read_chunks(conn: &Connection, id: &RecordId) -> Result<Vec<(u64, Vec<u8>)>> {
    let mut stmt = conn.prepare_cached("SELECT n, data FROM chunks WHERE doc = ?1 ORDER BY n")?;
    let rows = stmt
        .query_map(params![id.as_bytes().as_slice()], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(|(n, d)| Ok((to_u64(n)?, d))).collect()
}

fn insert_chunk(conn: &Connection, id: &RecordId, n: u64, ct: &[u8]) -> Result<()> {
    conn.prepare_cached("INSERT INTO chunks (doc, n, data) VALUES (?1, ?2, ?3)")?
        .execute(params![id.as_bytes().as_slice(), to_i64(n)?, ct])?;
    Ok(())
}

/// Insert or update a document's index row and chunk bookkeeping.
fn upsert_meta(
    conn: &Connection,
    meta: &DocMeta,
    first: u64,
    next: u64,
    heads: &[ChangeHash],
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO docs (id, kind, clinic, patient, date, status, visit, first_chunk, next_chunk, saved_heads, subject) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
         ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, clinic = excluded.clinic, \
         patient = excluded.patient, date = excluded.date, status = excluded.status, \
         visit = excluded.visit, subject = excluded.subject, first_chunk = excluded.first_chunk, \
         next_chunk = excluded.next_chunk, saved_heads = excluded.saved_heads",
    )?
    .execute(params![
        meta.id.as_bytes().as_slice(),
        meta.kind.code(),
        meta.clinic.as_bytes().as_slice(),
        meta.patient.as_ref().map(|p| p.as_bytes().as_slice()),
        meta.date.map(date_to_days),
        meta.status,
        meta.visit,
        to_i64(first)?,
        to_i64(next)?,
        encode_heads(heads),
        meta.subject.as_ref().map(|p| p.as_bytes().as_slice()),
    ])?;
    Ok(())
}

/// Give a document the next dirty sequence number.
fn mark_dirty(conn: &Connection, id: &RecordId) -> Result<()> {
    let seq: i64 = conn
        .prepare_cached(
            "UPDATE store_info SET dirty_clock = dirty_clock + 1 WHERE singleton = 1 \
             RETURNING dirty_clock",
        )?
        .query_row([], |r| r.get(0))?;
    conn.prepare_cached("UPDATE docs SET dirty_seq = ?2 WHERE id = ?1")?
        .execute(params![id.as_bytes().as_slice(), seq])?;
    Ok(())
}

#[cfg(test)]
mod tests;

mod access;
pub use access::DEFAULT_IDLE_TIMEOUT;
pub mod users;
mod worklist;
pub use worklist::WorklistRow;
