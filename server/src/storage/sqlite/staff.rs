//! [`StaffStore`] on SQLite: staff accounts, sessions, sign-in throttling and the console's own
//! records (see `crate::staff::store` for the tables).

use followup_domain::ids::RecordId;
use rusqlite::{params, Connection, OptionalExtension};

use super::{append_audit_tx, audit_head, SqlResult, SqliteStorage};
use crate::audit::AuditEntry;
use crate::staff::store::{
    hash32, AeNote, ClinicEvent, ClinicListRow, SessionRow, StaffRow, StaffStore,
};
use crate::storage::{rid, StorageResult};

/// Created when missing when the database is opened (after the main schema).
pub(super) const STAFF_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS staff (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    clinic BLOB,
    password_hash TEXT,
    totp_secret BLOB,
    totp_last_step INTEGER,
    set_password_hash BLOB,
    set_password_expires_ms INTEGER,
    created_at_ms INTEGER NOT NULL,
    disabled_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS staff_set_password ON staff(set_password_hash);
CREATE TABLE IF NOT EXISTS staff_sessions (
    token_hash BLOB PRIMARY KEY,
    staff_id TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS staff_sessions_expiry ON staff_sessions(expires_at_ms);
CREATE TABLE IF NOT EXISTS staff_login_failures (
    key TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS staff_login_failures_key ON staff_login_failures(key, at_ms);
CREATE TABLE IF NOT EXISTS clinic_events (
    id INTEGER PRIMARY KEY,
    clinic BLOB NOT NULL,
    kind TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    staff_id TEXT NOT NULL,
    note TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ae_notes (
    id INTEGER PRIMARY KEY,
    ae BLOB NOT NULL,
    clinic BLOB NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    staff_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ae_notes_ae ON ae_notes(ae, at_ms);
"#;

const STAFF_COLS: &str = "id, email, role, clinic, password_hash, totp_secret, totp_last_step, \
     set_password_hash, set_password_expires_ms, created_at_ms, disabled_at_ms";

type RawStaff = (
    String,
    String,
    String,
    Option<Vec<u8>>,
    Option<String>,
    Option<Vec<u8>>,
    Option<i64>,
    Option<Vec<u8>>,
    Option<i64>,
    i64,
    Option<i64>,
);

fn raw_staff(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawStaff> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
    ))
}

fn staff_of(raw: RawStaff) -> StorageResult<StaffRow> {
    Ok(StaffRow {
        id: raw.0,
        email: raw.1,
        role: raw.2,
        clinic: raw.3.map(rid).transpose()?,
        password_hash: raw.4,
        totp_secret: raw.5,
        totp_last_step: raw.6,
        set_password_hash: raw.7.as_deref().map(hash32).transpose()?,
        set_password_expires_ms: raw.8,
        created_at_ms: raw.9,
        disabled_at_ms: raw.10,
    })
}

fn one_staff(
    c: &Connection,
    filter: &str,
    p: &dyn rusqlite::ToSql,
) -> StorageResult<Option<StaffRow>> {
    let sql = format!("SELECT {STAFF_COLS} FROM staff WHERE {filter}");
    c.query_row(&sql, [p], raw_staff)
        .optional()
        .db()?
        .map(staff_of)
        .transpose()
}

fn audit_tx(tx: &rusqlite::Transaction<'_>, e: &AuditEntry) -> StorageResult<()> {
    let mut head = audit_head(tx)?;
    append_audit_tx(tx, &mut head, e)
}

impl StaffStore for SqliteStorage {
    fn insert_staff(&self, s: &StaffRow, audit: &AuditEntry) -> StorageResult<bool> {
        self.write(|tx| {
            let n = tx
                .execute(
                    "INSERT INTO staff (id, email, role, clinic, password_hash, totp_secret,
                         totp_last_step, set_password_hash, set_password_expires_ms,
                         created_at_ms, disabled_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (email) DO NOTHING",
                    params![
                        s.id,
                        s.email,
                        s.role,
                        s.clinic.map(|c| c.0.to_vec()),
                        s.password_hash,
                        s.totp_secret,
                        s.totp_last_step,
                        s.set_password_hash.map(|h| h.to_vec()),
                        s.set_password_expires_ms,
                        s.created_at_ms,
                        s.disabled_at_ms,
                    ],
                )
                .db()?;
            if n == 1 {
                audit_tx(tx, audit)?;
            }
            Ok(n == 1)
        })
    }

    fn staff_by_email(&self, email: &str) -> StorageResult<Option<StaffRow>> {
        self.read(|c| one_staff(c, "email = ?1", &email))
    }

    fn staff_by_id(&self, id: &str) -> StorageResult<Option<StaffRow>> {
        self.read(|c| one_staff(c, "id = ?1", &id))
    }

    fn list_staff(&self) -> StorageResult<Vec<StaffRow>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(&format!("SELECT {STAFF_COLS} FROM staff ORDER BY email"))
                .db()?;
            let rows = st.query_map([], raw_staff).db()?;
            rows.map(|r| staff_of(r.db()?)).collect()
        })
    }

    fn set_staff_password(&self, id: &str, hash: &str, audit: &AuditEntry) -> StorageResult<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE staff SET password_hash = ?2, set_password_hash = NULL,
                     set_password_expires_ms = NULL WHERE id = ?1",
                params![id, hash],
            )
            .db()?;
            audit_tx(tx, audit)
        })
    }

    fn use_totp_step(&self, id: &str, step: i64) -> StorageResult<bool> {
        self.write(|tx| {
            let n = tx
                .execute(
                    "UPDATE staff SET totp_last_step = ?2
                     WHERE id = ?1 AND (totp_last_step IS NULL OR totp_last_step < ?2)",
                    params![id, step],
                )
                .db()?;
            Ok(n == 1)
        })
    }

    fn staff_by_set_password_token(
        &self,
        token_hash: &[u8; 32],
        now_ms: i64,
    ) -> StorageResult<Option<StaffRow>> {
        let row = self.read(|c| one_staff(c, "set_password_hash = ?1", &token_hash.to_vec()))?;
        Ok(row.filter(|s| s.set_password_expires_ms.is_some_and(|e| e > now_ms)))
    }

    fn insert_session(&self, s: &SessionRow, audit: &AuditEntry) -> StorageResult<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO staff_sessions (token_hash, staff_id, csrf, created_at_ms,
                     last_seen_ms, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    s.token_hash.to_vec(),
                    s.staff_id,
                    s.csrf,
                    s.created_at_ms,
                    s.last_seen_ms,
                    s.expires_at_ms
                ],
            )
            .db()?;
            audit_tx(tx, audit)
        })
    }

    fn session(&self, token_hash: &[u8; 32]) -> StorageResult<Option<SessionRow>> {
        self.read(|c| {
            let row: Option<(String, String, i64, i64, i64)> = c
                .query_row(
                    "SELECT staff_id, csrf, created_at_ms, last_seen_ms, expires_at_ms
                     FROM staff_sessions WHERE token_hash = ?1",
                    [token_hash.to_vec()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()
                .db()?;
            Ok(
                row.map(|(staff_id, csrf, created, seen, expires)| SessionRow {
                    token_hash: *token_hash,
                    staff_id,
                    csrf,
                    created_at_ms: created,
                    last_seen_ms: seen,
                    expires_at_ms: expires,
                }),
            )
        })
    }

    fn touch_session(&self, token_hash: &[u8; 32], now_ms: i64) -> StorageResult<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE staff_sessions SET last_seen_ms = ?2 WHERE token_hash = ?1",
                params![token_hash.to_vec(), now_ms],
            )
            .db()?;
            Ok(())
        })
    }

    fn delete_session(
        &self,
        token_hash: &[u8; 32],
        now_ms: i64,
        audit: Option<&AuditEntry>,
    ) -> StorageResult<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM staff_sessions WHERE token_hash = ?1 OR expires_at_ms < ?2",
                params![token_hash.to_vec(), now_ms],
            )
            .db()?;
            if let Some(a) = audit {
                audit_tx(tx, a)?;
            }
            Ok(())
        })
    }

    fn record_login_failure(&self, keys: &[String], now_ms: i64) -> StorageResult<()> {
        self.write(|tx| {
            // Failures older than a day are of no use to any throttling window.
            tx.execute(
                "DELETE FROM staff_login_failures WHERE at_ms < ?1",
                [now_ms - 24 * 3600 * 1000],
            )
            .db()?;
            for k in keys {
                tx.execute(
                    "INSERT INTO staff_login_failures (key, at_ms) VALUES (?1, ?2)",
                    params![k, now_ms],
                )
                .db()?;
            }
            Ok(())
        })
    }

    fn login_failures_since(&self, key: &str, since_ms: i64) -> StorageResult<(u64, Option<i64>)> {
        self.read(|c| {
            let (n, oldest): (i64, Option<i64>) = c
                .query_row(
                    "SELECT COUNT(*), MIN(at_ms) FROM staff_login_failures
                     WHERE key = ?1 AND at_ms >= ?2",
                    params![key, since_ms],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .db()?;
            Ok((n.unsigned_abs(), oldest))
        })
    }

    fn clear_login_failures(&self, key: &str) -> StorageResult<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM staff_login_failures WHERE key = ?1", [key])
                .db()?;
            Ok(())
        })
    }

    fn list_clinics(&self) -> StorageResult<Vec<ClinicListRow>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id, name, country, created_at_ms FROM clinics ORDER BY name, id",
                )
                .db()?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .db()?;
            rows.map(|r| {
                let (id, name, country, at) = r.db()?;
                Ok(ClinicListRow {
                    id: rid(id)?,
                    name,
                    country,
                    invited_at_ms: at,
                })
            })
            .collect()
        })
    }

    fn add_clinic_event(&self, e: &ClinicEvent, audit: &AuditEntry) -> StorageResult<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO clinic_events (clinic, kind, at_ms, staff_id, note)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![e.clinic.0.to_vec(), e.kind, e.at_ms, e.staff_id, e.note],
            )
            .db()?;
            audit_tx(tx, audit)
        })
    }

    fn clinic_events(&self) -> StorageResult<Vec<ClinicEvent>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT clinic, kind, at_ms, staff_id, note FROM clinic_events ORDER BY id",
                )
                .db()?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .db()?;
            rows.map(|r| {
                let (clinic, kind, at_ms, staff_id, note) = r.db()?;
                Ok(ClinicEvent {
                    clinic: rid(clinic)?,
                    kind,
                    at_ms,
                    staff_id,
                    note,
                })
            })
            .collect()
        })
    }

    fn add_ae_note(&self, n: &AeNote, audit: &AuditEntry) -> StorageResult<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO ae_notes (ae, clinic, kind, text, staff_id, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    n.ae.0.to_vec(),
                    n.clinic.0.to_vec(),
                    n.kind,
                    n.text,
                    n.staff_id,
                    n.at_ms
                ],
            )
            .db()?;
            audit_tx(tx, audit)
        })
    }

    fn ae_notes(&self, ae: RecordId) -> StorageResult<Vec<AeNote>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT clinic, kind, text, staff_id, at_ms FROM ae_notes
                     WHERE ae = ?1 ORDER BY at_ms, id",
                )
                .db()?;
            let rows = st
                .query_map([ae.0.to_vec()], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })
                .db()?;
            rows.map(|r| {
                let (clinic, kind, text, staff_id, at_ms) = r.db()?;
                Ok(AeNote {
                    ae,
                    clinic: rid(clinic)?,
                    kind,
                    text,
                    staff_id,
                    at_ms,
                })
            })
            .collect()
        })
    }
}
