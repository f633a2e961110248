//! The sync wire protocol: message types and codec, shared by the device's sync client and the
//! registry server. The design, with the client's and the server's duties step by step, is in
//! `docs/sync-protocol.md`.
//!
//! * Sync messages ([`SyncRequest`], [`SyncResponse`]) are binary: postcard, then one zstd frame
//!   ([`encode_body`] / [`decode_body`]), content type [`SYNC_CONTENT_TYPE`]. Automerge changes
//!   travel uncompressed inside so that zstd finds the redundancy across documents.
//! * Enrolment, admin and error bodies are JSON.
//! * Record ids travel as their 32-character hex text everywhere (in binary messages too: the
//!   document's own header holds the same text, which zstd then matches); change hashes travel as
//!   32 raw bytes in binary messages.

use std::io::{Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, RecordId};

/// The protocol version this build speaks; the first field of every binary message.
///
/// * Version 2 added the `adjudication_case`, `case_reply` and `definition` record kinds and the
///   `rule_violation` reject code. A server answers a request in the request's version: a
///   version-1 device is never sent a record of a newer kind, and gets a newer reject code as
///   `malformed` (with the same message).
/// * Version 3 changes the transport only: its messages are version 2's, but a version 3 device
///   carries each exchange over the resumable routes ([`SYNC_RESUMABLE_PATH`]) instead of one
///   `POST /v1/sync`. A server that has them lists 3 in `/health`'s `protocol_versions`; one
///   that does not answers them `404`, and the device then falls back to `POST /v1/sync` with a
///   [`ONE_SHOT_VERSION`] message (and to version 1 if the server says it speaks only that).
///   `POST /v1/sync` stays served for version 1 and 2 clients.
pub const PROTOCOL_VERSION: u16 = 3;
/// Every version this build can talk (a server may speak several during a migration).
pub const SUPPORTED_VERSIONS: &[u16] = &[1, 2, PROTOCOL_VERSION];
/// The newest version carried by the one-shot `POST /v1/sync` (what a version 3 device sends
/// to a server without the resumable routes).
pub const ONE_SHOT_VERSION: u16 = 2;
/// The first version that uses the resumable routes.
pub const RESUMABLE_VERSION: u16 = 3;

/// The first protocol version whose devices can read records of this kind.
pub fn kind_min_version(kind: crate::model::RecordKind) -> u16 {
    use crate::model::RecordKind as K;
    match kind {
        K::AdjudicationCase | K::CaseReply | K::Definition => 2,
        K::Clinic
        | K::Enrolment
        | K::Procedure
        | K::Response
        | K::AdverseEvent
        | K::Adjudication => 1,
    }
}
/// Content type of binary sync bodies.
pub const SYNC_CONTENT_TYPE: &str = "application/vnd.followup.sync+zstd";
/// Route of the one-shot sync exchange (one request, one response): protocol versions 1 and 2.
pub const SYNC_PATH: &str = "/v1/sync";
/// Prefix of the resumable routes of protocol version 3: `POST {SYNC_RESUMABLE_PATH}/{sha256
/// hex}?offset=O&length=T` uploads a piece of the request body, `GET {SYNC_RESUMABLE_PATH}/
/// {sha256 hex}?offset=R` downloads the stored response from byte `R` (`docs/sync-protocol.md`,
/// "Version 3").
pub const SYNC_RESUMABLE_PATH: &str = "/v3/sync";
/// A version 3 upload is this many random bytes (the exchange's id, which makes its SHA-256
/// name unique) followed by the encoded [`SyncRequest`].
pub const EXCHANGE_ID_LEN: usize = 16;
/// Largest piece of a version 3 upload in one request.
pub const MAX_UPLOAD_PIECE: usize = 1024 * 1024;
/// Header of a version 3 response body: the stored response's whole length (a `GET` from an
/// offset carries only the rest).
pub const RESPONSE_LENGTH_HEADER: &str = "x-followup-response-length";
/// Route of device enrolment.
pub const ENROL_PATH: &str = "/v1/enrol";
/// zstd level of [`encode_body`], meant for devices: on a slow link every kilobyte costs more
/// time than compressing harder (a 1,000-response push: 1.1 MB raw → 107 KB at 19, 135 KB at 3).
pub const ZSTD_LEVEL_DEVICE: i32 = 19;
/// zstd level the server uses for its responses (many devices share its cores).
pub const ZSTD_LEVEL_SERVER: i32 = 9;
/// Largest zstd window a decoder accepts (2^24 = 16 MiB): bounds the decoder's memory whatever
/// the frame header claims.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 24;
/// Default limit on a decompressed body ([`decode_body`]'s `max_decompressed`).
pub const DEFAULT_MAX_DECOMPRESSED: usize = 64 * 1024 * 1024;

/// The Automerge actor id of changes made by the registry itself (e.g. a clinic record created by
/// an administrator): 16 zero bytes, never a random device id.
pub const REGISTRY_ACTOR: [u8; 16] = [0u8; 16];

/// The registry's Automerge actor.
pub fn registry_actor() -> automerge::ActorId {
    automerge::ActorId::from(&REGISTRY_ACTOR[..])
}

// ------------------------------------------------------------------------------------------
// Codec
// ------------------------------------------------------------------------------------------

/// Everything that can go wrong encoding or decoding a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Serialisation failed (a type the format cannot express; a bug).
    #[error("could not encode the message: {0}")]
    Encode(String),
    /// The body is not a valid zstd frame (garbage, truncated, checksum mismatch).
    #[error("the body is not valid zstd-compressed data: {0}")]
    Decompress(String),
    /// The body decompresses to more than the allowed size (a zip bomb or an oversized batch).
    #[error("the body decompresses to more than {limit} bytes")]
    TooLarge { limit: usize },
    /// The decompressed bytes are not the expected message.
    #[error("the body is not a valid message: {0}")]
    Decode(String),
    /// The message's protocol version is not one this side speaks.
    #[error("protocol version {got} is not supported (supported: {supported:?})")]
    UnsupportedVersion { got: u16, supported: Vec<u16> },
}

/// Encode a message: postcard, then one zstd frame with its checksum, at [`ZSTD_LEVEL_DEVICE`].
pub fn encode_body<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtocolError> {
    encode_body_with_level(msg, ZSTD_LEVEL_DEVICE)
}

/// [`encode_body`] at a chosen zstd level (1–22).
pub fn encode_body_with_level<T: Serialize>(msg: &T, level: i32) -> Result<Vec<u8>, ProtocolError> {
    let raw = postcard::to_stdvec(msg).map_err(|e| ProtocolError::Encode(e.to_string()))?;
    compress_with_level(&raw, level)
}

/// zstd-compress bytes as [`encode_body`] does (one frame, checksum on).
pub fn compress(raw: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    compress_with_level(raw, ZSTD_LEVEL_DEVICE)
}

/// [`compress`] at a chosen level.
pub fn compress_with_level(raw: &[u8], level: i32) -> Result<Vec<u8>, ProtocolError> {
    let enc_err = |e: std::io::Error| ProtocolError::Encode(e.to_string());
    let mut enc = zstd::stream::Encoder::new(Vec::with_capacity(raw.len() / 4 + 64), level)
        .map_err(enc_err)?;
    enc.include_checksum(true).map_err(enc_err)?;
    enc.set_pledged_src_size(Some(raw.len() as u64))
        .map_err(enc_err)?;
    enc.write_all(raw).map_err(enc_err)?;
    enc.finish().map_err(enc_err)
}

/// Decompress at most `max_decompressed` bytes of a zstd body. Garbage, a truncated frame, a
/// checksum mismatch or a frame larger than the limit give an error, never a panic or an
/// unbounded allocation.
pub fn decompress(body: &[u8], max_decompressed: usize) -> Result<Vec<u8>, ProtocolError> {
    let dec_err = |e: std::io::Error| ProtocolError::Decompress(e.to_string());
    if body.is_empty() {
        return Err(ProtocolError::Decompress("empty body".into()));
    }
    let mut dec = zstd::stream::Decoder::new(body).map_err(dec_err)?;
    dec.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(dec_err)?;
    let mut out = Vec::new();
    let limit = u64::try_from(max_decompressed)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    dec.take(limit).read_to_end(&mut out).map_err(dec_err)?;
    if out.len() > max_decompressed {
        return Err(ProtocolError::TooLarge {
            limit: max_decompressed,
        });
    }
    Ok(out)
}

/// Decode a message made by [`encode_body`], decompressing at most `max_decompressed` bytes.
/// Trailing bytes after the message are an error.
pub fn decode_body<T: DeserializeOwned>(
    body: &[u8],
    max_decompressed: usize,
) -> Result<T, ProtocolError> {
    let raw = decompress(body, max_decompressed)?;
    decode_raw(&raw)
}

fn decode_raw<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ProtocolError> {
    let (msg, rest) =
        postcard::take_from_bytes::<T>(raw).map_err(|e| ProtocolError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ProtocolError::Decode(format!(
            "{} unexpected bytes after the message",
            rest.len()
        )));
    }
    Ok(msg)
}

/// Decode a versioned message (whose first field is its `u16` protocol version): the version is
/// checked before the rest is decoded, so a newer or older peer gets
/// [`ProtocolError::UnsupportedVersion`] rather than a confusing decode error.
pub fn decode_versioned<T: DeserializeOwned>(
    body: &[u8],
    max_decompressed: usize,
) -> Result<T, ProtocolError> {
    let raw = decompress(body, max_decompressed)?;
    let (version, _) = postcard::take_from_bytes::<u16>(&raw)
        .map_err(|e| ProtocolError::Decode(format!("no protocol version: {e}")))?;
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(ProtocolError::UnsupportedVersion {
            got: version,
            supported: SUPPORTED_VERSIONS.to_vec(),
        });
    }
    decode_raw(&raw)
}

// ------------------------------------------------------------------------------------------
// Automerge payloads
// ------------------------------------------------------------------------------------------

/// Automerge's chunk magic bytes.
const AUTOMERGE_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Automerge's chunk type of an uncompressed change.
const CHUNK_TYPE_CHANGE: u8 = 1;

/// Split a [`PushDoc::data`] / [`PullDoc::data`] payload into its changes.
///
/// A payload is zero or more **uncompressed change chunks** back to back, exactly what
/// `Automerge::save_after(&heads)` produces. Document chunks, DEFLATE-compressed changes and
/// bundles are refused: they would let a peer make the receiver inflate unbounded data, and raw
/// changes are the smallest after zstd anyway. Each change's hash is computed from its bytes.
pub fn split_changes(mut data: &[u8]) -> Result<Vec<automerge::Change>, ProtocolError> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 10 || data[..4] != AUTOMERGE_MAGIC {
            return Err(ProtocolError::Decode(
                "payload is not a sequence of Automerge change chunks".into(),
            ));
        }
        if data[8] != CHUNK_TYPE_CHANGE {
            return Err(ProtocolError::Decode(format!(
                "Automerge chunk type {} is not accepted (only uncompressed changes)",
                data[8]
            )));
        }
        // uLEB128 length, at most 8 bytes (a chunk is far below 2^56 bytes).
        let mut len: u64 = 0;
        let mut pos = 9;
        let mut shift = 0;
        loop {
            let Some(&b) = data.get(pos) else {
                return Err(ProtocolError::Decode(
                    "truncated Automerge chunk header".into(),
                ));
            };
            pos += 1;
            len |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift >= 56 {
                return Err(ProtocolError::Decode(
                    "Automerge chunk length overflows".into(),
                ));
            }
        }
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| pos.checked_add(l))
            .filter(|&e| e <= data.len())
            .ok_or_else(|| ProtocolError::Decode("truncated Automerge change".into()))?;
        let change = automerge::Change::try_from(&data[..end])
            .map_err(|e| ProtocolError::Decode(format!("invalid Automerge change: {e}")))?;
        out.push(change);
        data = &data[end..];
    }
    Ok(out)
}

/// Concatenate changes' raw (uncompressed) bytes: the inverse of [`split_changes`].
pub fn join_changes<'a>(changes: impl IntoIterator<Item = &'a automerge::Change>) -> Vec<u8> {
    let mut out = Vec::new();
    for c in changes {
        out.extend_from_slice(c.raw_bytes());
    }
    out
}

// ------------------------------------------------------------------------------------------
// Binary field helpers
// ------------------------------------------------------------------------------------------

/// A change hash on the wire: 32 raw bytes (`automerge::ChangeHash`'s own serde form is hex).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hash(pub [u8; 32]);

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hash({})", hex::encode(self.0))
    }
}

impl From<automerge::ChangeHash> for Hash {
    fn from(h: automerge::ChangeHash) -> Self {
        Hash(h.0)
    }
}

impl From<Hash> for automerge::ChangeHash {
    fn from(h: Hash) -> Self {
        automerge::ChangeHash(h.0)
    }
}

/// Wire hashes from Automerge heads.
pub fn hashes_from_heads(heads: &[automerge::ChangeHash]) -> Vec<Hash> {
    heads.iter().copied().map(Hash::from).collect()
}

/// Automerge heads from wire hashes.
pub fn heads_from_hashes(hashes: &[Hash]) -> Vec<automerge::ChangeHash> {
    hashes
        .iter()
        .copied()
        .map(automerge::ChangeHash::from)
        .collect()
}

// ------------------------------------------------------------------------------------------
// Sync messages (binary)
// ------------------------------------------------------------------------------------------

/// One sync exchange's request: the push and the pull's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// [`PROTOCOL_VERSION`]; always the first field.
    pub version: u16,
    /// The last cursor whose pull the device has durably applied (0 at first).
    pub cursor: u64,
    /// Budget for the pull: the server stops adding documents once their raw change bytes reach
    /// it (it always sends at least one document, and caps the budget itself).
    pub max_pull_bytes: u32,
    /// Documents with changes the server lacks.
    pub push: Vec<PushDoc>,
    /// Documents the device wants resent from empty heads (a pulled change lacked its deps).
    pub want_full: Vec<RecordId>,
}

impl SyncRequest {
    /// A request at this build's protocol version.
    pub fn new(cursor: u64, max_pull_bytes: u32, push: Vec<PushDoc>) -> Self {
        SyncRequest {
            version: PROTOCOL_VERSION,
            cursor,
            max_pull_bytes,
            push,
            want_full: Vec::new(),
        }
    }

    /// The raw Automerge bytes this request pushes (what `max_push_bytes` bounds).
    pub fn push_bytes(&self) -> usize {
        self.push.iter().map(|p| p.data.len()).sum()
    }
}

/// One document's push.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushDoc {
    /// Travels as its 32-character hex text, the very string the document's own `id` field holds,
    /// so zstd encodes it as a short back-reference for a new document (−12 % on a 1,000-document
    /// push) and as ~16 bytes otherwise.
    pub doc: RecordId,
    /// Uncompressed Automerge bytes: `doc.save_after(&synced_heads)` (concatenated change
    /// chunks) or, for a document the server has never acknowledged, `doc.save_nocompress()`.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for PushDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushDoc")
            .field("doc", &self.doc)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// One sync exchange's response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    /// [`PROTOCOL_VERSION`]; always the first field.
    pub version: u16,
    /// One result per [`SyncRequest::push`] entry, in the same order.
    pub results: Vec<PushResult>,
    /// Documents changed after the request's cursor that the device may read, each with only the
    /// changes the device lacks.
    pub pull: Vec<PullDoc>,
    /// The new cursor: send it in the next request once `pull` is durably applied.
    pub cursor: u64,
    /// The pull was cut short (budget or page size): sync again.
    pub more: bool,
}

/// What the server did with one pushed document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushResult {
    /// Merged, or already known (idempotent). The device sets `synced_heads` to the heads it
    /// pushed. `server_heads` is `None` when the server's heads are exactly those; `Some` when the
    /// server also holds changes the device lacks (they come in a pull, now or on a later page).
    Accepted { server_heads: Option<Vec<Hash>> },
    /// Refused; nothing of this push was merged. The device must not resend it as is.
    Rejected { code: RejectCode, message: String },
    /// The server lacks dependencies of the pushed changes: resend the document from empty heads.
    NeedFullDoc,
}

/// Why a push was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectCode {
    /// The bytes do not load as Automerge, or the header is missing or malformed.
    Malformed,
    /// The root `id` is not the pushed document id.
    WrongId,
    /// An immutable field (header, `completed_by`, `reporter`) differs from the server's copy.
    HeaderChanged,
    /// The record belongs to a clinic the device may not write.
    ForbiddenClinic,
    /// The record belongs to a patient the device may not write.
    ForbiddenPatient,
    /// The device's role may not write this kind of record.
    ForbiddenKind,
    /// A patient device wrote a record not authored by the patient.
    ForbiddenAuthor,
    /// A new change's actor is not the pushing device, or `created_by` is not the device.
    ForeignActor,
    /// The record's enrolment is not on the server yet: push the enrolment first, then retry.
    UnknownPatient,
    /// The server could not commit in time (contention): retry.
    Busy,
    /// The record breaks a clinical rule (`followup_domain::rules`); the message lists each.
    /// (Version 2; a version-1 device gets `Malformed`.)
    RuleViolation,
}

impl RejectCode {
    /// Stable snake_case name (logs, the rejections table, user messages).
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectCode::Malformed => "malformed",
            RejectCode::WrongId => "wrong_id",
            RejectCode::HeaderChanged => "header_changed",
            RejectCode::ForbiddenClinic => "forbidden_clinic",
            RejectCode::ForbiddenPatient => "forbidden_patient",
            RejectCode::ForbiddenKind => "forbidden_kind",
            RejectCode::ForbiddenAuthor => "forbidden_author",
            RejectCode::ForeignActor => "foreign_actor",
            RejectCode::UnknownPatient => "unknown_patient",
            RejectCode::Busy => "busy",
            RejectCode::RuleViolation => "rule_violation",
        }
    }

    /// The code as a device speaking protocol `version` can decode it.
    pub fn for_version(self, version: u16) -> RejectCode {
        match self {
            RejectCode::RuleViolation if version < 2 => RejectCode::Malformed,
            c => c,
        }
    }

    /// Whether resending the same push later may succeed (the device keeps it queued).
    pub fn is_retriable(&self) -> bool {
        matches!(self, RejectCode::UnknownPatient | RejectCode::Busy)
    }
}

/// One document's pull.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullDoc {
    /// Hex text, as in [`PushDoc::doc`].
    pub doc: RecordId,
    /// Uncompressed Automerge change chunks the device lacks ([`split_changes`], then
    /// `apply_changes`).
    pub data: Vec<u8>,
    /// The server's heads for the document, the device's `synced_heads` once `data` is applied;
    /// **empty when they are exactly the [`frontier`] of the changes in `data`** (the common
    /// case: 32 incompressible bytes saved per document). Use [`PullDoc::server_heads`].
    pub heads: Vec<Hash>,
}

impl PullDoc {
    /// The server's heads, given the changes split from `data`.
    pub fn server_heads(&self, changes: &[automerge::Change]) -> Vec<automerge::ChangeHash> {
        if self.heads.is_empty() {
            frontier(changes)
        } else {
            heads_from_hashes(&self.heads)
        }
    }
}

/// The heads of a set of changes: the hashes no other change of the set depends on, sorted.
pub fn frontier(changes: &[automerge::Change]) -> Vec<automerge::ChangeHash> {
    let deps: std::collections::HashSet<automerge::ChangeHash> = changes
        .iter()
        .flat_map(|c| c.deps().iter().copied())
        .collect();
    let mut out: Vec<automerge::ChangeHash> = changes
        .iter()
        .map(|c| c.hash())
        .filter(|h| !deps.contains(h))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

impl std::fmt::Debug for PullDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullDoc")
            .field("doc", &self.doc)
            .field("bytes", &self.data.len())
            .field("heads", &self.heads)
            .finish()
    }
}

/// Decode a [`SyncRequest`] (version checked first).
pub fn decode_sync_request(
    body: &[u8],
    max_decompressed: usize,
) -> Result<SyncRequest, ProtocolError> {
    decode_versioned(body, max_decompressed)
}

/// Decode a [`SyncResponse`] (version checked first).
pub fn decode_sync_response(
    body: &[u8],
    max_decompressed: usize,
) -> Result<SyncResponse, ProtocolError> {
    decode_versioned(body, max_decompressed)
}

// ------------------------------------------------------------------------------------------
// Enrolment (JSON)
// ------------------------------------------------------------------------------------------

/// What an enrolled device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceRole {
    /// A clinic's shared tablet: reads and writes its clinic's records.
    ClinicDevice,
    /// A patient's phone: reads its own records, writes its outcome surveys and adverse events.
    PatientDevice,
}

impl DeviceRole {
    pub fn as_str(&self) -> &'static str {
        match self {
            DeviceRole::ClinicDevice => "clinic_device",
            DeviceRole::PatientDevice => "patient_device",
        }
    }
    pub fn from_code(s: &str) -> Option<Self> {
        match s {
            "clinic_device" => Some(DeviceRole::ClinicDevice),
            "patient_device" => Some(DeviceRole::PatientDevice),
            _ => None,
        }
    }
}

/// `POST /v1/enrol` (unsigned): redeem a one-time code for a device identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolRequest {
    /// The one-time code (case and dashes ignored).
    pub code: String,
    /// The device's Ed25519 public key, 32 bytes, base64 (standard, padded).
    pub public_key: String,
    /// A free label for operators ("tablet 2, ward B"); no patient identifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// The answer to a successful enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolResponse {
    /// The device's id: sign requests with it, and use `device_id.actor()` as Automerge actor.
    pub device_id: DeviceId,
    pub role: DeviceRole,
    pub clinic: RecordId,
    /// The patient's enrolment record id (patient devices only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<RecordId>,
    /// The server's clock, so the device can warn when its own is off by minutes.
    pub server_time_ms: i64,
}

// ------------------------------------------------------------------------------------------
// Admin (JSON, bearer admin token)
// ------------------------------------------------------------------------------------------

/// `POST /v1/admin/clinics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateClinicRequest {
    pub name: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateClinicResponse {
    /// The clinic's id, which is also its clinic record document's id.
    pub clinic: RecordId,
}

/// The role an enrolment code grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum EnrolmentGrant {
    ClinicDevice {
        clinic: RecordId,
    },
    /// `patient` is the patient's enrolment record id; the server must already hold it.
    PatientDevice {
        patient: RecordId,
    },
}

/// `POST /v1/admin/enrolment-codes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueEnrolmentCodeRequest {
    #[serde(flatten)]
    pub grant: EnrolmentGrant,
    /// Lifetime of the code in seconds (default 24 h, at most 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueEnrolmentCodeResponse {
    /// Show once (QR code or typed); the server keeps only its SHA-256.
    pub code: String,
    pub expires_at_ms: i64,
    pub role: DeviceRole,
    pub clinic: RecordId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<RecordId>,
}

/// `POST /v1/admin/devices/{id}/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeDeviceResponse {
    pub device_id: DeviceId,
    /// False when the device was already revoked.
    pub newly_revoked: bool,
    pub revoked_at_ms: i64,
}

/// `GET /v1/admin/audit/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerifyResponse {
    pub ok: bool,
    pub entries: u64,
    /// Hash of the last entry (hex); pin it elsewhere to detect a rewrite of the whole chain.
    pub head_hash: String,
    /// The first entry found broken, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// `GET /v1/admin/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsResponse {
    pub documents: u64,
    pub clinics: u64,
    pub devices: u64,
    pub revoked_devices: u64,
    /// The write log's last sequence number.
    pub log_seq: u64,
    pub audit_entries: u64,
    pub rejections: u64,
}

/// One adjudication case as registry staff see it (`GET /v1/admin/cases`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseSummary {
    /// The case record.
    pub case: RecordId,
    pub adverse_event: RecordId,
    pub clinic: RecordId,
    pub patient: Option<RecordId>,
    /// `open`, `responded`, `overdue`, `escalated`, `disputed`, `closed` at the server's clock.
    pub state: String,
    /// When the server first accepted the event (RFC 3339, UTC).
    pub opened_at: String,
    /// ISO date.
    pub deadline: String,
    /// The policy that set the deadline, `id@version`, and its rule.
    pub policy: String,
    pub rule: String,
    pub responded_at: Option<String>,
    /// The escalation notes, oldest first.
    pub escalations: Vec<String>,
    /// The patient's dispute comments, oldest first.
    pub disputes: Vec<String>,
}

/// `GET /v1/admin/cases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasesResponse {
    pub cases: Vec<CaseSummary>,
}

/// A study code held by more than one enrolment of one clinic (two tablets enrolled it offline):
/// a conflict for the clinic to resolve (`GET /v1/admin/duplicate-study-codes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateStudyCode {
    pub clinic: RecordId,
    /// Trimmed and upper-cased, as compared.
    pub study_code: String,
    /// Oldest enrolment date first.
    pub enrolments: Vec<DuplicateEnrolment>,
}

/// One of the enrolments sharing a study code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateEnrolment {
    /// The enrolment record (the patient's id).
    pub patient: RecordId,
    /// ISO date, as recorded.
    pub enrolled_on: Option<String>,
    /// The device that created it.
    pub device: Option<DeviceId>,
}

/// `GET /v1/admin/duplicate-study-codes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateStudyCodesResponse {
    pub duplicates: Vec<DuplicateStudyCode>,
}

/// `POST /v1/admin/cases/{id}/escalate` and `/close` (`id`: the case or its adverse event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseNoteRequest {
    /// What the clinic reads (escalation) or why the case is closed; 1 to 2,000 characters.
    pub note: String,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    pub status: String,
    pub server_version: String,
    pub protocol_versions: Vec<u16>,
}

// ------------------------------------------------------------------------------------------
// Errors (JSON, every route)
// ------------------------------------------------------------------------------------------

/// Stable error codes of [`ErrorBody`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    MalformedBody,
    Unauthenticated,
    BadSignature,
    StaleTimestamp,
    ReplayedNonce,
    UnknownDevice,
    DeviceRevoked,
    Forbidden,
    NotFound,
    InvalidCode,
    TooLarge,
    UnsupportedMediaType,
    UnsupportedVersion,
    /// Version 3: the upload's offset is beyond what the server holds (`received` says where to
    /// resume).
    UploadOffset,
    /// Version 3: the upload is not complete, so there is no response yet (`received`); also
    /// the code of the `202` answer to a piece that did not complete the upload.
    UploadIncomplete,
    /// Version 3: the upload is complete and the exchange is running at the server (`202`):
    /// ask for the response again (`GET`); nothing needs sending again.
    Processing,
    Unavailable,
    Internal,
    /// The request conflicts with what the registry holds (e.g. a published definition version
    /// with other content).
    Conflict,
    /// A code this build does not know (a newer server).
    #[serde(other)]
    Other,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// With `unsupported_version`: the versions the server speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_versions: Option<Vec<u16>>,
    /// Version 3 upload status: bytes of the upload the server holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<u64>,
    /// Version 3 upload status: the upload's whole length, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
            supported_versions: None,
            received: None,
            length: None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ObjType, ReadDoc, ROOT};

    fn sample_request() -> SyncRequest {
        let mut req = SyncRequest::new(
            42,
            1 << 20,
            vec![PushDoc {
                doc: RecordId::random(),
                data: vec![1, 2, 3, 4],
            }],
        );
        req.want_full.push(RecordId::random());
        req
    }

    #[test]
    fn round_trip_request_and_response() {
        let req = sample_request();
        let body = encode_body(&req).unwrap();
        assert_eq!(decode_sync_request(&body, 1 << 20).unwrap(), req);

        let resp = SyncResponse {
            version: PROTOCOL_VERSION,
            results: vec![
                PushResult::Accepted { server_heads: None },
                PushResult::Rejected {
                    code: RejectCode::ForbiddenKind,
                    message: "no".into(),
                },
                PushResult::NeedFullDoc,
            ],
            pull: vec![PullDoc {
                doc: RecordId::random(),
                data: vec![9; 100],
                heads: vec![Hash([7; 32])],
            }],
            cursor: 7,
            more: true,
        };
        let body = encode_body(&resp).unwrap();
        assert_eq!(decode_sync_response(&body, 1 << 20).unwrap(), resp);
    }

    #[test]
    fn ids_are_hex_text_on_the_wire() {
        let doc = PushDoc {
            doc: RecordId::random(),
            data: vec![],
        };
        // 1 length byte + 32 hex characters + 1 length byte for the empty data.
        let raw = postcard::to_stdvec(&doc).unwrap();
        assert_eq!(raw.len(), 34);
        assert_eq!(&raw[1..33], doc.doc.to_hex().as_bytes());
    }

    #[test]
    fn version_mismatch_is_reported_as_such() {
        let mut req = sample_request();
        req.version = 99;
        let body = encode_body(&req).unwrap();
        match decode_sync_request(&body, 1 << 20) {
            Err(ProtocolError::UnsupportedVersion { got: 99, supported }) => {
                assert_eq!(supported, SUPPORTED_VERSIONS)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn zip_bomb_is_refused_without_allocating_it() {
        let zeros = vec![0u8; 50 * 1024 * 1024];
        let bomb = compress_with_level(&zeros, 3).unwrap();
        assert!(bomb.len() < 100 * 1024);
        match decode_body::<SyncRequest>(&bomb, 1024 * 1024) {
            Err(ProtocolError::TooLarge { limit }) => assert_eq!(limit, 1024 * 1024),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn truncated_and_corrupted_bodies_are_errors() {
        let body = encode_body(&sample_request()).unwrap();
        for cut in 0..body.len() {
            assert!(
                decode_sync_request(&body[..cut], 1 << 20).is_err(),
                "cut {cut}"
            );
        }
        for i in 0..body.len() {
            let mut bad = body.clone();
            bad[i] ^= 0x5a;
            // Must not panic; most flips are errors, a flip in an unchecked field may decode.
            let _ = decode_sync_request(&bad, 1 << 20);
        }
        // Trailing bytes after a valid message.
        let mut raw = postcard::to_stdvec(&sample_request()).unwrap();
        raw.push(0);
        assert!(matches!(
            decode_sync_request(&compress(&raw).unwrap(), 1 << 20),
            Err(ProtocolError::Decode(_))
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        // A small deterministic xorshift so the test needs no extra dependency.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..3000 {
            let len = (next() % 512) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 && len >= 4 {
                // Start with a genuine zstd magic number so the decoder goes further.
                bytes[..4].copy_from_slice(&[0x28, 0xb5, 0x2f, 0xfd]);
            }
            let _ = decode_sync_request(&bytes, 1 << 16);
            let _ = decode_sync_response(&bytes, 1 << 16);
            // Valid zstd around random postcard bytes.
            let framed = compress_with_level(&bytes, 1).unwrap();
            let _ = decode_sync_request(&framed, 1 << 16);
            let _ = decode_sync_response(&framed, 1 << 16);
        }
    }

    proptest::proptest! {
        #[test]
        fn proptest_garbage_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let _ = decode_sync_request(&bytes, 1 << 16);
            let framed = compress_with_level(&bytes, 1).unwrap();
            let _ = decode_sync_response(&framed, 1 << 16);
        }
    }

    #[test]
    fn split_changes_round_trips_and_refuses_other_chunks() {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "a", 1).unwrap();
        doc.commit();
        doc.put(ROOT, "b", "two").unwrap();
        doc.commit();
        let doc = doc.document().clone();
        let data = doc.save_after(&[]);
        let changes = split_changes(&data).unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(join_changes(&changes), data);
        assert!(split_changes(&[]).unwrap().is_empty());
        // A whole document (DEFLATE inside) is refused.
        assert!(split_changes(&doc.save()).is_err());
        for cut in 1..data.len() {
            let _ = split_changes(&data[..cut]);
        }
        assert!(split_changes(&data[..data.len() - 1]).is_err());
        let mut state: u32 = 7;
        for _ in 0..2000 {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let mut bad = data.clone();
            let i = (state as usize) % bad.len();
            bad[i] ^= (state >> 16) as u8 | 1;
            let _ = split_changes(&bad);
        }
    }

    #[test]
    fn error_body_json_and_unknown_codes() {
        let e = ErrorBody::new(ErrorCode::ReplayedNonce, "seen");
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(s, r#"{"code":"replayed_nonce","message":"seen"}"#);
        let future: ErrorBody =
            serde_json::from_str(r#"{"code":"something_new","message":"x"}"#).unwrap();
        assert_eq!(future.code, ErrorCode::Other);
    }

    #[test]
    fn grant_json_shape() {
        let clinic = RecordId::random();
        let req = IssueEnrolmentCodeRequest {
            grant: EnrolmentGrant::ClinicDevice { clinic },
            expires_in_secs: Some(60),
        };
        let s = serde_json::to_string(&req).unwrap();
        assert_eq!(
            s,
            format!(r#"{{"role":"clinic_device","clinic":"{clinic}","expires_in_secs":60}}"#)
        );
        assert_eq!(
            serde_json::from_str::<IssueEnrolmentCodeRequest>(&s).unwrap(),
            req
        );
    }

    /// Which Automerge encoding of a brand-new document is smallest after whole-body zstd:
    /// raw change chunks, `save_nocompress`, or `save` (DEFLATE per column). Prints the figures
    /// (`cargo test -p followup-core protocol -- --nocapture`).
    #[test]
    fn new_document_encodings_compared_after_zstd() {
        let sentences = [
            "mild headache for two days after the infusion",
            "no change in walking distance this month",
            "slight swelling at the injection site",
            "tired in the evenings, otherwise well",
        ];
        let actor = DeviceId::random();
        let clinic = RecordId::random();
        let mut raw_changes = Vec::new();
        let mut nocompress = Vec::new();
        let mut saved = Vec::new();
        for d in 0..200u64 {
            let mut doc = AutoCommit::new().with_actor(actor.actor());
            let id = RecordId::random();
            doc.put(ROOT, "id", id.to_hex()).unwrap();
            doc.put(ROOT, "kind", "response").unwrap();
            doc.put(ROOT, "clinic", clinic.to_hex()).unwrap();
            doc.put(ROOT, "patient", RecordId::random().to_hex())
                .unwrap();
            doc.put(ROOT, "created_by", actor.to_hex()).unwrap();
            let body = doc.put_object(ROOT, "body", ObjType::Map).unwrap();
            doc.put(&body, "completed_by", "nurse").unwrap();
            let answers = doc.put_object(&body, "answers", ObjType::Map).unwrap();
            for n in 1..=50u64 {
                let key = format!("q{n:02}");
                let x = d * 31 + n * 7;
                match n % 5 {
                    0 => doc.put(&answers, key, (x % 11) as i64).unwrap(),
                    1 => doc.put(&answers, key, x % 2 == 0).unwrap(),
                    2 => doc
                        .put(
                            &answers,
                            key,
                            ["none", "mild", "moderate", "severe"][(x % 4) as usize],
                        )
                        .unwrap(),
                    3 => doc.put(&answers, key, (x % 1000) as f64 / 10.0).unwrap(),
                    _ => doc.put(&answers, key, sentences[(x % 4) as usize]).unwrap(),
                }
            }
            doc.commit();
            let doc = doc.document();
            assert!(doc.get(ROOT, "body").unwrap().is_some());
            for c in doc.get_changes(&[]) {
                raw_changes.extend_from_slice(c.raw_bytes());
            }
            nocompress.extend(doc.save_nocompress());
            saved.extend(doc.save());
        }
        let z = |b: &[u8]| compress(b).unwrap().len();
        println!(
            "200 new 50-answer docs: raw changes {} B -> zstd {} B; save_nocompress {} B -> zstd {} B; save {} B -> zstd {} B",
            raw_changes.len(),
            z(&raw_changes),
            nocompress.len(),
            z(&nocompress),
            saved.len(),
            z(&saved)
        );
        // Automerge's DEFLATE hides cross-document redundancy from zstd.
        assert!(z(&raw_changes) < z(&saved));
    }
}
