//! [`UploadStaging`] on PostgreSQL.

use followup_domain::ids::DeviceId;
use postgres::GenericClient;

use super::{col, PostgresStorage, Q};
use crate::storage::staging::{UploadStaging, UploadState, STAGING_TTL_MS};
use crate::storage::{i64_of, u64_of, StorageResult};

/// Migration 2: the staging tables.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE IF NOT EXISTS sync_uploads (
    device BYTEA NOT NULL,
    hash BYTEA NOT NULL,
    length BIGINT NOT NULL,
    received BIGINT NOT NULL,
    response BYTEA,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (device, hash)
);
CREATE INDEX IF NOT EXISTS sync_uploads_updated ON sync_uploads (updated_at_ms);
CREATE TABLE IF NOT EXISTS sync_upload_parts (
    device BYTEA NOT NULL,
    hash BYTEA NOT NULL,
    "offset" BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (device, hash, "offset")
);
"#;

fn state_of<C: GenericClient>(
    q: &mut Q<'_, C>,
    device: &[u8],
    hash: &[u8],
    lock: bool,
) -> StorageResult<Option<UploadState>> {
    let sql = if lock {
        "SELECT length, received, octet_length(response)::BIGINT FROM sync_uploads
         WHERE device = $1 AND hash = $2 FOR UPDATE"
    } else {
        "SELECT length, received, octet_length(response)::BIGINT FROM sync_uploads
         WHERE device = $1 AND hash = $2"
    };
    let Some(row) = q.query_opt(sql, &[&device, &hash])? else {
        return Ok(None);
    };
    Ok(Some(UploadState {
        length: u64_of(col(&row, 0)?)?,
        received: u64_of(col(&row, 1)?)?,
        response_len: col::<Option<i64>>(&row, 2)?.map(u64_of).transpose()?,
    }))
}

impl UploadStaging for PostgresStorage {
    fn upload_state(
        &self,
        device: DeviceId,
        hash: &[u8; 32],
    ) -> StorageResult<Option<UploadState>> {
        self.read(|q| state_of(q, &device.0, hash, false))
    }

    fn upload_append(
        &self,
        device: DeviceId,
        hash: &[u8; 32],
        length: u64,
        offset: u64,
        bytes: &[u8],
        now_ms: i64,
    ) -> StorageResult<Option<UploadState>> {
        let (len_i, off_i) = (i64_of(length)?, i64_of(offset)?);
        let end = i64_of(offset.saturating_add(bytes.len() as u64))?;
        self.write(|q| {
            let d = &device.0[..];
            let h = &hash[..];
            let mut state = state_of(q, d, h, true)?;
            if state.is_none() && offset == 0 {
                q.execute(
                    "DELETE FROM sync_upload_parts p USING sync_uploads u
                     WHERE p.device = u.device AND p.hash = u.hash
                       AND u.device = $1 AND u.hash <> $2 AND u.response IS NULL",
                    &[&d, &h],
                )?;
                q.execute(
                    "DELETE FROM sync_uploads WHERE device = $1 AND hash <> $2 AND response IS NULL",
                    &[&d, &h],
                )?;
                q.execute(
                    "INSERT INTO sync_uploads (device, hash, length, received, response, updated_at_ms)
                     VALUES ($1, $2, $3, 0, NULL, $4) ON CONFLICT (device, hash) DO NOTHING",
                    &[&d, &h, &len_i, &now_ms],
                )?;
                state = state_of(q, d, h, true)?;
            }
            let Some(s) = state else { return Ok(None) };
            if s.received != offset || s.length != length || s.response_len.is_some() || end > len_i
            {
                return Ok(Some(s));
            }
            if !bytes.is_empty() {
                q.execute(
                    "INSERT INTO sync_upload_parts (device, hash, \"offset\", data) VALUES ($1, $2, $3, $4)",
                    &[&d, &h, &off_i, &bytes],
                )?;
            }
            q.execute(
                "UPDATE sync_uploads SET received = $3, updated_at_ms = $4 WHERE device = $1 AND hash = $2",
                &[&d, &h, &end, &now_ms],
            )?;
            state_of(q, d, h, false)
        })
    }

    fn upload_bytes(&self, device: DeviceId, hash: &[u8; 32]) -> StorageResult<Vec<u8>> {
        self.read(|q| {
            let rows = q.query(
                "SELECT data FROM sync_upload_parts WHERE device = $1 AND hash = $2 ORDER BY \"offset\"",
                &[&&device.0[..], &&hash[..]],
            )?;
            let mut out = Vec::new();
            for r in &rows {
                out.extend_from_slice(&col::<Vec<u8>>(r, 0)?);
            }
            Ok(out)
        })
    }

    fn upload_finish(
        &self,
        device: DeviceId,
        hash: &[u8; 32],
        response: &[u8],
        now_ms: i64,
    ) -> StorageResult<bool> {
        let stale = now_ms - STAGING_TTL_MS;
        self.write(|q| {
            let d = &device.0[..];
            let h = &hash[..];
            let n = q.execute(
                "UPDATE sync_uploads SET response = $3, updated_at_ms = $4
                 WHERE device = $1 AND hash = $2 AND response IS NULL",
                &[&d, &h, &response, &now_ms],
            )?;
            // This exchange's request bytes and any other staged exchange of the device.
            q.execute("DELETE FROM sync_upload_parts WHERE device = $1", &[&d])?;
            q.execute(
                "DELETE FROM sync_uploads WHERE device = $1 AND hash <> $2",
                &[&d, &h],
            )?;
            q.execute(
                "DELETE FROM sync_upload_parts p USING sync_uploads u
                 WHERE p.device = u.device AND p.hash = u.hash AND u.updated_at_ms < $1",
                &[&stale],
            )?;
            q.execute(
                "DELETE FROM sync_uploads WHERE updated_at_ms < $1",
                &[&stale],
            )?;
            Ok(n == 1)
        })
    }

    fn upload_response(&self, device: DeviceId, hash: &[u8; 32]) -> StorageResult<Option<Vec<u8>>> {
        self.read(|q| {
            let row = q.query_opt(
                "SELECT response FROM sync_uploads WHERE device = $1 AND hash = $2",
                &[&&device.0[..], &&hash[..]],
            )?;
            row.map(|r| col::<Option<Vec<u8>>>(&r, 0))
                .transpose()
                .map(Option::flatten)
        })
    }

    fn upload_discard(&self, device: DeviceId, hash: &[u8; 32]) -> StorageResult<()> {
        self.write(|q| {
            let d = &device.0[..];
            let h = &hash[..];
            q.execute(
                "DELETE FROM sync_upload_parts WHERE device = $1 AND hash = $2",
                &[&d, &h],
            )?;
            q.execute(
                "DELETE FROM sync_uploads WHERE device = $1 AND hash = $2",
                &[&d, &h],
            )?;
            Ok(())
        })
    }
}
