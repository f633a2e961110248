//! Staging of resumable (protocol version 3) sync exchanges: a request body uploaded in pieces
//! under its content hash, then the response stored in its place so that it can be downloaded
//! from any offset. See "Version 3" in `docs/sync-protocol.md`.
//!
//! Tables (both backends): `sync_uploads` (one row per `(device, hash)`: the upload's length, the
//! bytes received so far, the stored response once the exchange ran) and `sync_upload_parts`
//! (the received bytes, one row per append, keyed by offset). A device keeps at most one
//! incomplete upload and one stored response: starting a new upload drops the device's other
//! incomplete ones, finishing one drops its other rows, and rows idle for a day are deleted.

use followup_domain::ids::DeviceId;

use super::StorageResult;

/// Rows untouched for this long are deleted when an exchange finishes.
pub const STAGING_TTL_MS: i64 = 24 * 3600 * 1000;

/// Where a staged exchange stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadState {
    /// The whole request body's length.
    pub length: u64,
    /// Bytes of it the server holds (a prefix).
    pub received: u64,
    /// The stored response's length, once the exchange ran.
    pub response_len: Option<u64>,
}

/// Persistence of staged exchanges; every method is one short transaction.
pub trait UploadStaging {
    /// The state of `(device, hash)`, if staged.
    fn upload_state(&self, device: DeviceId, hash: &[u8; 32])
        -> StorageResult<Option<UploadState>>;

    /// Append `bytes` at `offset` of the upload `(device, hash)` of `length` bytes, creating it
    /// (and dropping the device's other incomplete uploads) when `offset` is 0 and it is not
    /// staged. Compare-and-set: the bytes are stored only if the server holds exactly `offset`
    /// bytes, the length matches and no response is stored yet. Returns the state after.
    fn upload_append(
        &self,
        device: DeviceId,
        hash: &[u8; 32],
        length: u64,
        offset: u64,
        bytes: &[u8],
        now_ms: i64,
    ) -> StorageResult<Option<UploadState>>;

    /// The bytes received so far, in order.
    fn upload_bytes(&self, device: DeviceId, hash: &[u8; 32]) -> StorageResult<Vec<u8>>;

    /// Store the exchange's response in place of its request bytes; drop the device's other
    /// staged rows and every row idle for [`STAGING_TTL_MS`]. `false` if a response was already
    /// stored (another process finished it first; that one stands).
    fn upload_finish(
        &self,
        device: DeviceId,
        hash: &[u8; 32],
        response: &[u8],
        now_ms: i64,
    ) -> StorageResult<bool>;

    /// The stored response of `(device, hash)`, if the exchange ran.
    fn upload_response(&self, device: DeviceId, hash: &[u8; 32]) -> StorageResult<Option<Vec<u8>>>;

    /// Forget `(device, hash)` (its bytes did not hash to its name).
    fn upload_discard(&self, device: DeviceId, hash: &[u8; 32]) -> StorageResult<()>;
}
