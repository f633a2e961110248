//! [`StaffStore`] on PostgreSQL (see `crate::staff::store` for the tables).

use followup_domain::ids::RecordId;
use postgres::Row;

use super::{audit_only, col, PostgresStorage, MIGRATION_LOCK};
use crate::audit::AuditEntry;
use crate::staff::store::{
    hash32, AeNote, ClinicEvent, ClinicListRow, SessionRow, StaffRow, StaffStore,
};
use crate::storage::{rid, StorageResult};

use super::PgResult;

/// Created when missing at connect (under the migration lock), after the numbered migrations.
const STAFF_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS staff (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    clinic BYTEA,
    password_hash TEXT,
    totp_secret BYTEA,
    totp_last_step BIGINT,
    set_password_hash BYTEA,
    set_password_expires_ms BIGINT,
    created_at_ms BIGINT NOT NULL,
    disabled_at_ms BIGINT
);
CREATE INDEX IF NOT EXISTS staff_set_password ON staff (set_password_hash);
CREATE TABLE IF NOT EXISTS staff_sessions (
    token_hash BYTEA PRIMARY KEY,
    staff_id TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS staff_sessions_expiry ON staff_sessions (expires_at_ms);
CREATE TABLE IF NOT EXISTS staff_login_failures (
    key TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS staff_login_failures_key ON staff_login_failures (key, at_ms);
CREATE TABLE IF NOT EXISTS clinic_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    clinic BYTEA NOT NULL,
    kind TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    staff_id TEXT NOT NULL,
    note TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ae_notes (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ae BYTEA NOT NULL,
    clinic BYTEA NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    staff_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS ae_notes_ae ON ae_notes (ae, at_ms);
"#;

impl PostgresStorage {
    /// Create the staff and console tables when missing (a role without CREATE can still start
    /// once they exist).
    pub(super) fn migrate_staff(&self) -> StorageResult<()> {
        let mut pooled = self.pool.get()?;
        let conn = pooled.conn()?;
        let mut tx = conn.client.transaction().db()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .db()?;
        let row = tx
            .query_one(
                "SELECT to_regclass('ae_notes') IS NOT NULL AND to_regclass('staff') IS NOT NULL",
                &[],
            )
            .db()?;
        if !col::<bool>(&row, 0)? {
            tx.batch_execute(STAFF_SCHEMA).db()?;
        }
        tx.commit().db()?;
        Ok(())
    }
}

fn staff_of(r: &Row) -> StorageResult<StaffRow> {
    Ok(StaffRow {
        id: col(r, 0)?,
        email: col(r, 1)?,
        role: col(r, 2)?,
        clinic: col::<Option<Vec<u8>>>(r, 3)?.map(rid).transpose()?,
        password_hash: col(r, 4)?,
        totp_secret: col(r, 5)?,
        totp_last_step: col(r, 6)?,
        set_password_hash: col::<Option<Vec<u8>>>(r, 7)?
            .as_deref()
            .map(hash32)
            .transpose()?,
        set_password_expires_ms: col(r, 8)?,
        created_at_ms: col(r, 9)?,
        disabled_at_ms: col(r, 10)?,
    })
}

impl StaffStore for PostgresStorage {
    fn insert_staff(&self, s: &StaffRow, audit: &AuditEntry) -> StorageResult<bool> {
        let clinic = s.clinic.map(|c| c.0.to_vec());
        let set_pw = s.set_password_hash.map(|h| h.to_vec());
        self.write(|q| {
            let n = q.execute(
                "INSERT INTO staff (id, email, role, clinic, password_hash, totp_secret,
                     totp_last_step, set_password_hash, set_password_expires_ms,
                     created_at_ms, disabled_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (email) DO NOTHING",
                &[
                    &s.id,
                    &s.email,
                    &s.role,
                    &clinic,
                    &s.password_hash,
                    &s.totp_secret,
                    &s.totp_last_step,
                    &set_pw,
                    &s.set_password_expires_ms,
                    &s.created_at_ms,
                    &s.disabled_at_ms,
                ],
            )?;
            if n == 1 {
                audit_only(q, audit)?;
            }
            Ok(n == 1)
        })
    }

    fn staff_by_email(&self, email: &str) -> StorageResult<Option<StaffRow>> {
        self.read(|q| {
            q.query_opt(
                "SELECT id, email, role, clinic, password_hash, totp_secret, totp_last_step,
                     set_password_hash, set_password_expires_ms, created_at_ms, disabled_at_ms
                 FROM staff WHERE email = $1",
                &[&email],
            )?
            .as_ref()
            .map(staff_of)
            .transpose()
        })
    }

    fn staff_by_id(&self, id: &str) -> StorageResult<Option<StaffRow>> {
        self.read(|q| {
            q.query_opt(
                "SELECT id, email, role, clinic, password_hash, totp_secret, totp_last_step,
                     set_password_hash, set_password_expires_ms, created_at_ms, disabled_at_ms
                 FROM staff WHERE id = $1",
                &[&id],
            )?
            .as_ref()
            .map(staff_of)
            .transpose()
        })
    }

    fn list_staff(&self) -> StorageResult<Vec<StaffRow>> {
        self.read(|q| {
            q.query(
                "SELECT id, email, role, clinic, password_hash, totp_secret, totp_last_step,
                     set_password_hash, set_password_expires_ms, created_at_ms, disabled_at_ms
                 FROM staff ORDER BY email",
                &[],
            )?
            .iter()
            .map(staff_of)
            .collect()
        })
    }

    fn set_staff_password(&self, id: &str, hash: &str, audit: &AuditEntry) -> StorageResult<()> {
        self.write(|q| {
            q.execute(
                "UPDATE staff SET password_hash = $2, set_password_hash = NULL,
                     set_password_expires_ms = NULL WHERE id = $1",
                &[&id, &hash],
            )?;
            audit_only(q, audit)
        })
    }

    fn use_totp_step(&self, id: &str, step: i64) -> StorageResult<bool> {
        self.read(|q| {
            let n = q.execute(
                "UPDATE staff SET totp_last_step = $2
                 WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)",
                &[&id, &step],
            )?;
            Ok(n == 1)
        })
    }

    fn staff_by_set_password_token(
        &self,
        token_hash: &[u8; 32],
        now_ms: i64,
    ) -> StorageResult<Option<StaffRow>> {
        self.read(|q| {
            q.query_opt(
                "SELECT id, email, role, clinic, password_hash, totp_secret, totp_last_step,
                     set_password_hash, set_password_expires_ms, created_at_ms, disabled_at_ms
                 FROM staff WHERE set_password_hash = $1 AND set_password_expires_ms > $2",
                &[&token_hash.as_slice(), &now_ms],
            )?
            .as_ref()
            .map(staff_of)
            .transpose()
        })
    }

    fn insert_session(&self, s: &SessionRow, audit: &AuditEntry) -> StorageResult<()> {
        self.write(|q| {
            q.execute(
                "INSERT INTO staff_sessions (token_hash, staff_id, csrf, created_at_ms,
                     last_seen_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &s.token_hash.as_slice(),
                    &s.staff_id,
                    &s.csrf,
                    &s.created_at_ms,
                    &s.last_seen_ms,
                    &s.expires_at_ms,
                ],
            )?;
            audit_only(q, audit)
        })
    }

    fn session(&self, token_hash: &[u8; 32]) -> StorageResult<Option<SessionRow>> {
        self.read(|q| {
            let Some(r) = q.query_opt(
                "SELECT staff_id, csrf, created_at_ms, last_seen_ms, expires_at_ms
                 FROM staff_sessions WHERE token_hash = $1",
                &[&token_hash.as_slice()],
            )?
            else {
                return Ok(None);
            };
            Ok(Some(SessionRow {
                token_hash: *token_hash,
                staff_id: col(&r, 0)?,
                csrf: col(&r, 1)?,
                created_at_ms: col(&r, 2)?,
                last_seen_ms: col(&r, 3)?,
                expires_at_ms: col(&r, 4)?,
            }))
        })
    }

    fn touch_session(&self, token_hash: &[u8; 32], now_ms: i64) -> StorageResult<()> {
        self.read(|q| {
            q.execute(
                "UPDATE staff_sessions SET last_seen_ms = $2 WHERE token_hash = $1",
                &[&token_hash.as_slice(), &now_ms],
            )?;
            Ok(())
        })
    }

    fn delete_session(
        &self,
        token_hash: &[u8; 32],
        now_ms: i64,
        audit: Option<&AuditEntry>,
    ) -> StorageResult<()> {
        self.write(|q| {
            q.execute(
                "DELETE FROM staff_sessions WHERE token_hash = $1 OR expires_at_ms < $2",
                &[&token_hash.as_slice(), &now_ms],
            )?;
            if let Some(a) = audit {
                audit_only(q, a)?;
            }
            Ok(())
        })
    }

    fn record_login_failure(&self, keys: &[String], now_ms: i64) -> StorageResult<()> {
        let old = now_ms - 24 * 3600 * 1000;
        self.write(|q| {
            q.execute("DELETE FROM staff_login_failures WHERE at_ms < $1", &[&old])?;
            for k in keys {
                q.execute(
                    "INSERT INTO staff_login_failures (key, at_ms) VALUES ($1, $2)",
                    &[k, &now_ms],
                )?;
            }
            Ok(())
        })
    }

    fn login_failures_since(&self, key: &str, since_ms: i64) -> StorageResult<(u64, Option<i64>)> {
        self.read(|q| {
            let r = q.query_one(
                "SELECT COUNT(*), MIN(at_ms) FROM staff_login_failures
                 WHERE key = $1 AND at_ms >= $2",
                &[&key, &since_ms],
            )?;
            let n: i64 = col(&r, 0)?;
            Ok((n.unsigned_abs(), col(&r, 1)?))
        })
    }

    fn clear_login_failures(&self, key: &str) -> StorageResult<()> {
        self.read(|q| {
            q.execute("DELETE FROM staff_login_failures WHERE key = $1", &[&key])?;
            Ok(())
        })
    }

    fn list_clinics(&self) -> StorageResult<Vec<ClinicListRow>> {
        self.read(|q| {
            q.query(
                "SELECT id, name, country, created_at_ms FROM clinics ORDER BY name, id",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(ClinicListRow {
                    id: rid(col(r, 0)?)?,
                    name: col(r, 1)?,
                    country: col(r, 2)?,
                    invited_at_ms: col(r, 3)?,
                })
            })
            .collect()
        })
    }

    fn add_clinic_event(&self, e: &ClinicEvent, audit: &AuditEntry) -> StorageResult<()> {
        self.write(|q| {
            q.execute(
                "INSERT INTO clinic_events (clinic, kind, at_ms, staff_id, note)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &e.clinic.0.as_slice(),
                    &e.kind,
                    &e.at_ms,
                    &e.staff_id,
                    &e.note,
                ],
            )?;
            audit_only(q, audit)
        })
    }

    fn clinic_events(&self) -> StorageResult<Vec<ClinicEvent>> {
        self.read(|q| {
            q.query(
                "SELECT clinic, kind, at_ms, staff_id, note FROM clinic_events ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(ClinicEvent {
                    clinic: rid(col(r, 0)?)?,
                    kind: col(r, 1)?,
                    at_ms: col(r, 2)?,
                    staff_id: col(r, 3)?,
                    note: col(r, 4)?,
                })
            })
            .collect()
        })
    }

    fn add_ae_note(&self, n: &AeNote, audit: &AuditEntry) -> StorageResult<()> {
        self.write(|q| {
            q.execute(
                "INSERT INTO ae_notes (ae, clinic, kind, text, staff_id, at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &n.ae.0.as_slice(),
                    &n.clinic.0.as_slice(),
                    &n.kind,
                    &n.text,
                    &n.staff_id,
                    &n.at_ms,
                ],
            )?;
            audit_only(q, audit)
        })
    }

    fn ae_notes(&self, ae: RecordId) -> StorageResult<Vec<AeNote>> {
        self.read(|q| {
            q.query(
                "SELECT clinic, kind, text, staff_id, at_ms FROM ae_notes
                 WHERE ae = $1 ORDER BY at_ms, id",
                &[&ae.0.as_slice()],
            )?
            .iter()
            .map(|r| {
                Ok(AeNote {
                    ae,
                    clinic: rid(col(r, 0)?)?,
                    kind: col(r, 1)?,
                    text: col(r, 2)?,
                    staff_id: col(r, 3)?,
                    at_ms: col(r, 4)?,
                })
            })
            .collect()
        })
    }
}
