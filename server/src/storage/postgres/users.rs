//! [`ClinicUserStore`] on PostgreSQL (see [`crate::users`]).

use followup_domain::ids::{DeviceId, RecordId, UserId};
use postgres::Row;

use super::{audit_only, col, PgResult, PostgresStorage, MIGRATION_LOCK};
use crate::audit::AuditEntry;
use crate::storage::{did, h32, rid, StorageResult};
use crate::users::{ClinicUserStore, UserRecord};

/// Created when missing at connect (under the migration lock).
const USERS_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS clinic_users (
    id BYTEA PRIMARY KEY,
    clinic BYTEA NOT NULL,
    name TEXT NOT NULL,
    code_hash BYTEA NOT NULL,
    code_expires_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    removed_at_ms BIGINT
);
CREATE INDEX IF NOT EXISTS clinic_users_clinic ON clinic_users (clinic, created_at_ms);
CREATE TABLE IF NOT EXISTS user_devices (
    user_id BYTEA NOT NULL,
    device BYTEA NOT NULL,
    activated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, device)
);
"#;

impl PostgresStorage {
    /// Create the clinic-user tables when missing.
    pub(super) fn migrate_users(&self) -> StorageResult<()> {
        let mut pooled = self.pool.get()?;
        let conn = pooled.conn()?;
        let mut tx = conn.client.transaction().db()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .db()?;
        let row = tx
            .query_one(
                "SELECT to_regclass('clinic_users') IS NOT NULL \
                 AND to_regclass('user_devices') IS NOT NULL",
                &[],
            )
            .db()?;
        if !col::<bool>(&row, 0)? {
            tx.batch_execute(USERS_SCHEMA).db()?;
        }
        tx.commit().db()?;
        Ok(())
    }
}

fn user_of(r: &Row) -> StorageResult<UserRecord> {
    Ok(UserRecord {
        id: UserId(rid(col(r, 0)?)?.0),
        clinic: rid(col(r, 1)?)?,
        name: col(r, 2)?,
        code_hash: h32(&col::<Vec<u8>>(r, 3)?, "activation code hash")?,
        code_expires_ms: col(r, 4)?,
        created_at_ms: col(r, 5)?,
        removed_at_ms: col(r, 6)?,
    })
}

impl ClinicUserStore for PostgresStorage {
    fn insert_clinic_user(&self, u: &UserRecord, audit: &AuditEntry) -> StorageResult<()> {
        let (id, clinic, hash) = (u.id.0.to_vec(), u.clinic.0.to_vec(), u.code_hash.to_vec());
        self.write(|q| {
            q.execute(
                "INSERT INTO clinic_users (id, clinic, name, code_hash, code_expires_ms,
                     created_at_ms, removed_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &id,
                    &clinic,
                    &u.name,
                    &hash,
                    &u.code_expires_ms,
                    &u.created_at_ms,
                    &u.removed_at_ms,
                ],
            )?;
            audit_only(q, audit)
        })
    }

    fn clinic_user(&self, id: UserId) -> StorageResult<Option<UserRecord>> {
        let id = id.0.to_vec();
        self.read(|q| {
            q.query_opt(
                "SELECT id, clinic, name, code_hash, code_expires_ms, created_at_ms, removed_at_ms
                 FROM clinic_users WHERE id = $1",
                &[&id],
            )?
            .as_ref()
            .map(user_of)
            .transpose()
        })
    }

    fn clinic_users(&self, clinic: RecordId) -> StorageResult<Vec<UserRecord>> {
        let clinic = clinic.0.to_vec();
        self.read(|q| {
            q.query(
                "SELECT id, clinic, name, code_hash, code_expires_ms, created_at_ms, removed_at_ms
                 FROM clinic_users WHERE clinic = $1 ORDER BY created_at_ms, id",
                &[&clinic],
            )?
            .iter()
            .map(user_of)
            .collect()
        })
    }

    fn remove_clinic_user(
        &self,
        id: UserId,
        now_ms: i64,
        audit: &AuditEntry,
    ) -> StorageResult<bool> {
        let id = id.0.to_vec();
        self.write(|q| {
            let n = q.execute(
                "UPDATE clinic_users SET removed_at_ms = $2
                 WHERE id = $1 AND removed_at_ms IS NULL",
                &[&id, &now_ms],
            )?;
            if n == 1 {
                audit_only(q, audit)?;
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
        let (user, device) = (user.0.to_vec(), device.0.to_vec());
        self.write(|q| {
            let n = q.execute(
                "INSERT INTO user_devices (user_id, device, activated_at_ms)
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&user, &device, &now_ms],
            )?;
            if n == 1 {
                audit_only(q, audit)?;
            }
            Ok(n == 1)
        })
    }

    fn user_devices(&self, user: UserId) -> StorageResult<Vec<DeviceId>> {
        let user = user.0.to_vec();
        self.read(|q| {
            q.query(
                "SELECT device FROM user_devices WHERE user_id = $1 ORDER BY activated_at_ms",
                &[&user],
            )?
            .iter()
            .map(|r| did(col(r, 0)?))
            .collect()
        })
    }
}
