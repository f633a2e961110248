//! [`UploadStaging`] on SQLite.

use followup_domain::ids::DeviceId;
use rusqlite::{params, OptionalExtension};

use super::{SqlResult, SqliteStorage};
use crate::storage::staging::{UploadStaging, UploadState, STAGING_TTL_MS};
use crate::storage::{i64_of, u64_of, StorageResult};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS sync_uploads (
    device BLOB NOT NULL,
    hash BLOB NOT NULL,
    length INTEGER NOT NULL,
    received INTEGER NOT NULL,
    response BLOB,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (device, hash)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sync_uploads_updated ON sync_uploads(updated_at_ms);
CREATE TABLE IF NOT EXISTS sync_upload_parts (
    device BLOB NOT NULL,
    hash BLOB NOT NULL,
    offset INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (device, hash, offset)
) WITHOUT ROWID;
"#;

fn state_of(
    conn: &rusqlite::Connection,
    device: &[u8],
    hash: &[u8],
) -> StorageResult<Option<UploadState>> {
    let row: Option<(i64, i64, Option<i64>)> = conn
        .query_row(
            "SELECT length, received, length(response) FROM sync_uploads
             WHERE device = ?1 AND hash = ?2",
            params![device, hash],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .db()?;
    row.map(|(length, received, resp)| {
        Ok(UploadState {
            length: u64_of(length)?,
            received: u64_of(received)?,
            response_len: resp.map(u64_of).transpose()?,
        })
    })
    .transpose()
}

fn delete_rows(
    tx: &rusqlite::Transaction<'_>,
    filter: &str,
    p: &[&dyn rusqlite::ToSql],
) -> StorageResult<()> {
    tx.execute(
        &format!(
            "DELETE FROM sync_upload_parts WHERE (device, hash) IN
               (SELECT device, hash FROM sync_uploads WHERE {filter})"
        ),
        p,
    )
    .db()?;
    tx.execute(&format!("DELETE FROM sync_uploads WHERE {filter}"), p)
        .db()?;
    Ok(())
}

impl UploadStaging for SqliteStorage {
    fn upload_state(
        &self,
        device: DeviceId,
        hash: &[u8; 32],
    ) -> StorageResult<Option<UploadState>> {
        self.read(|c| state_of(c, &device.0, hash))
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
        self.write(|tx| {
            let d = &device.0[..];
            let h = &hash[..];
            let mut state = state_of(tx, d, h)?;
            if state.is_none() && offset == 0 {
                // A new exchange: the device's other incomplete uploads are abandoned.
                delete_rows(
                    tx,
                    "device = ?1 AND hash <> ?2 AND response IS NULL",
                    &[&d, &h],
                )?;
                tx.execute(
                    "INSERT INTO sync_uploads (device, hash, length, received, response, updated_at_ms)
                     VALUES (?1, ?2, ?3, 0, NULL, ?4)",
                    params![d, h, len_i, now_ms],
                )
                .db()?;
                state = state_of(tx, d, h)?;
            }
            let Some(s) = state else { return Ok(None) };
            if s.received != offset || s.length != length || s.response_len.is_some() || end > len_i
            {
                return Ok(Some(s));
            }
            if !bytes.is_empty() {
                tx.execute(
                    "INSERT INTO sync_upload_parts (device, hash, offset, data) VALUES (?1, ?2, ?3, ?4)",
                    params![d, h, off_i, bytes],
                )
                .db()?;
            }
            tx.execute(
                "UPDATE sync_uploads SET received = ?3, updated_at_ms = ?4 WHERE device = ?1 AND hash = ?2",
                params![d, h, end, now_ms],
            )
            .db()?;
            state_of(tx, d, h)
        })
    }

    fn upload_bytes(&self, device: DeviceId, hash: &[u8; 32]) -> StorageResult<Vec<u8>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT data FROM sync_upload_parts WHERE device = ?1 AND hash = ?2 ORDER BY offset",
                )
                .db()?;
            let rows = stmt
                .query_map(params![&device.0[..], &hash[..]], |r| r.get::<_, Vec<u8>>(0))
                .db()?;
            let mut out = Vec::new();
            for r in rows {
                out.extend_from_slice(&r.db()?);
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
        self.write(|tx| {
            let d = &device.0[..];
            let h = &hash[..];
            let n = tx
                .execute(
                    "UPDATE sync_uploads SET response = ?3, updated_at_ms = ?4
                     WHERE device = ?1 AND hash = ?2 AND response IS NULL",
                    params![d, h, response, now_ms],
                )
                .db()?;
            tx.execute(
                "DELETE FROM sync_upload_parts WHERE device = ?1 AND hash = ?2",
                params![d, h],
            )
            .db()?;
            delete_rows(tx, "device = ?1 AND hash <> ?2", &[&d, &h])?;
            delete_rows(tx, "updated_at_ms < ?1", &[&(now_ms - STAGING_TTL_MS)])?;
            Ok(n == 1)
        })
    }

    fn upload_response(&self, device: DeviceId, hash: &[u8; 32]) -> StorageResult<Option<Vec<u8>>> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT response FROM sync_uploads WHERE device = ?1 AND hash = ?2",
                params![&device.0[..], &hash[..]],
                |r| r.get::<_, Option<Vec<u8>>>(0),
            )
            .optional()
            .db()?
            .flatten())
        })
    }

    fn upload_discard(&self, device: DeviceId, hash: &[u8; 32]) -> StorageResult<()> {
        self.write(|tx| {
            let d = &device.0[..];
            let h = &hash[..];
            delete_rows(tx, "device = ?1 AND hash = ?2", &[&d, &h])
        })
    }
}
