//! [`ClinicUserStore`] on SQLite (see [`crate::users`]).

use followup_domain::ids::{DeviceId, RecordId, UserId};
use rusqlite::{params, OptionalExtension};

use super::{append_audit_tx, audit_head, SqlResult, SqliteStorage};
use crate::audit::AuditEntry;
use crate::storage::{did, h32, rid, StorageResult};
use crate::users::{ClinicUserStore, UserRecord};

/// Created when missing when the database is opened.
pub(super) const USERS_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS clinic_users (
    id BLOB PRIMARY KEY,
    clinic BLOB NOT NULL,
    name TEXT NOT NULL,
    code_hash BLOB NOT NULL,
    code_expires_ms INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    removed_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS clinic_users_clinic ON clinic_users(clinic, created_at_ms);
CREATE TABLE IF NOT EXISTS user_devices (
    user_id BLOB NOT NULL,
    device BLOB NOT NULL,
    activated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, device)
);
"#;

const COLS: &str = "id, clinic, name, code_hash, code_expires_ms, created_at_ms, removed_at_ms";

type Raw = (Vec<u8>, Vec<u8>, String, Vec<u8>, i64, i64, Option<i64>);

fn raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<Raw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn user_of(raw: Raw) -> StorageResult<UserRecord> {
    Ok(UserRecord {
        id: UserId(rid(raw.0)?.0),
        clinic: rid(raw.1)?,
        name: raw.2,
        code_hash: h32(&raw.3, "activation code hash")?,
        code_expires_ms: raw.4,
        created_at_ms: raw.5,
        removed_at_ms: raw.6,
    })
}

impl ClinicUserStore for SqliteStorage {
    fn insert_clinic_user(&self, u: &UserRecord, audit: &AuditEntry) -> StorageResult<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO clinic_users (id, clinic, name, code_hash, code_expires_ms,
                     created_at_ms, removed_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    u.id.0.to_vec(),
                    u.clinic.0.to_vec(),
                    u.name,
                    u.code_hash.to_vec(),
                    u.code_expires_ms,
                    u.created_at_ms,
                    u.removed_at_ms
                ],
            )
            .db()?;
            let mut head = audit_head(tx)?;
            append_audit_tx(tx, &mut head, audit)
        })
    }

    fn clinic_user(&self, id: UserId) -> StorageResult<Option<UserRecord>> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT {COLS} FROM clinic_users WHERE id = ?1"))
                .db()?
                .query_row(params![id.0.to_vec()], raw)
                .optional()
                .db()?
                .map(user_of)
                .transpose()
        })
    }

    fn clinic_users(&self, clinic: RecordId) -> StorageResult<Vec<UserRecord>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {COLS} FROM clinic_users WHERE clinic = ?1 ORDER BY created_at_ms, id"
                ))
                .db()?;
            let rows = st.query_map(params![clinic.0.to_vec()], raw).db()?;
            rows.map(|r| user_of(r.db()?)).collect()
        })
    }

    fn remove_clinic_user(
        &self,
        id: UserId,
        now_ms: i64,
        audit: &AuditEntry,
    ) -> StorageResult<bool> {
        self.write(|tx| {
            let n = tx
                .execute(
                    "UPDATE clinic_users SET removed_at_ms = ?2
                     WHERE id = ?1 AND removed_at_ms IS NULL",
                    params![id.0.to_vec(), now_ms],
                )
                .db()?;
            if n == 1 {
                let mut head = audit_head(tx)?;
                append_audit_tx(tx, &mut head, audit)?;
            }
            Ok(n == 1)
        })
    }

    fn activate_user(
        &self,
        user: UserId,
        device: DeviceId,
        now_ms: i64,
        audit: &AuditEntry,
    ) -> StorageResult<bool> {
        self.write(|tx| {
            let n = tx
                .execute(
                    "INSERT INTO user_devices (user_id, device, activated_at_ms)
                     VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    params![user.0.to_vec(), device.0.to_vec(), now_ms],
                )
                .db()?;
            if n == 1 {
                let mut head = audit_head(tx)?;
                append_audit_tx(tx, &mut head, audit)?;
            }
            Ok(n == 1)
        })
    }

    fn user_devices(&self, user: UserId) -> StorageResult<Vec<DeviceId>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT device FROM user_devices WHERE user_id = ?1 ORDER BY activated_at_ms",
                )
                .db()?;
            let rows = st
                .query_map(params![user.0.to_vec()], |r| r.get::<_, Vec<u8>>(0))
                .db()?;
            rows.map(|r| did(r.db()?)).collect()
        })
    }
}
