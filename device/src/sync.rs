//! The sync client: enrolment with the registry and the batched, resumable, signed sync
//! exchange of `docs/sync-protocol.md` ("What the device does").
//!
//! One [`SyncClient::sync`] call:
//!
//! 1. snapshots the store's dirty documents (enrolments first, then oldest change first);
//! 2. repeatedly builds a request — the changes of as many documents as fit in
//!    `max_push_bytes` (each from its `synced_heads`; a never-synced document from empty heads),
//!    the cursor, the pull budget, documents wanted whole — encodes it (postcard + zstd), signs it
//!    with the device key and sends it (see below);
//! 3. applies the response: moves `synced_heads` of accepted documents, records and rolls back
//!    rejected ones, merges pulled changes into the local documents (re-indexed with
//!    [`crate::device::index_meta`]), and only then moves the cursor forward;
//! 4. goes on while the push has documents left, the pull says `more`, or a document must be
//!    sent or received whole.
//!
//! Each exchange travels over protocol version 3's resumable routes ([`resume`]): the request is
//! uploaded in pieces and continued from the offset the server acknowledges, the response is
//! downloaded from any offset, so a link cut at any byte costs only the bytes in flight.
//! Transport failures (connection refused or cut, timeout, truncated or corrupt body, 5xx) are
//! retried **while attempts make progress**: an attempt after which the server holds more of
//! the request, or the device more of the response, is followed at once by the next; only
//! attempts where nothing got through count, with exponential backoff and jitter, up to
//! [`SyncOptions::max_attempts`] of them in a row, or until [`SyncOptions::deadline`]; then
//! [`SyncError::ServerUnreachable`]. Against a server without the resumable routes (it answers
//! them `404`) the client falls back to one `POST /v1/sync` per exchange, in protocol version 2
//! (version 1 if the server speaks only that); [`SyncOptions::resumable`] `false` does so from
//! the start.
//! Nothing needs undoing: the server's side is idempotent and the device moves its state
//! forward only after a response was applied durably. A cancelled or failed sync leaves the
//! store consistent; the next sync picks up where this one stopped.
//!
//! Sync never blocks capture: the store is locked only for each short store operation, never
//! across a network wait, and a document saved while a sync runs stays dirty (it goes with the
//! next sync). Store and Automerge work (loading, merging) runs on the calling task; encoding
//! and decoding bodies (zstd) runs on tokio's blocking pool.
//!
//! TLS: rustls with the ring provider and the Mozilla roots (`webpki-roots`), plus optional extra
//! roots and optional pinning of the server's leaf certificate by SHA-256
//! ([`SyncOptions::pinned_cert_sha256`]). Plain `http://` is refused except to a loopback
//! address (tests, the demo) unless [`SyncOptions::allow_insecure_http`] is set.

mod users;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::{Automerge, ChangeHash, ReadDoc};
use serde::{Deserialize, Serialize};

use crate::device::{index_meta, Device, Enrolled};
use crate::error::{Error, Result};
use crate::store::Store;
use followup_domain::ids::RecordId;
use followup_domain::model::RecordKind;
use followup_domain::protocol::{
    self, decode_sync_response, encode_body, split_changes, EnrolRequest, EnrolResponse, ErrorBody,
    ErrorCode, PushDoc, PushResult, SyncRequest, SyncResponse, ENROL_PATH, PROTOCOL_VERSION,
    SYNC_CONTENT_TYPE, SYNC_PATH,
};

/// Plaintext setting holding the cursor (a server log position; reveals nothing).
const SETTING_CURSOR: &str = "sync.cursor";
/// Secret (sealed) holding the list of rejections, JSON.
const SECRET_REJECTIONS: &str = "sync.rejections";
/// Prefix of the secret (sealed) holding a rejected document's full version, kept aside.
const SECRET_REJECTED_DOC: &str = "sync.rejected_doc.";

// ---------------------------------------------------------------------------------------------
// Public types

/// How a [`SyncClient`] talks to the registry.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Longest one HTTP request may take, upload and download included. On a 64 kbit/s link a
    /// full 2 MiB-raw batch (~200 KB on the wire) takes ~25 s.
    pub timeout: Duration,
    /// Longest the TCP + TLS connection setup may take.
    pub connect_timeout: Duration,
    /// Failed attempts **in which nothing got through** (no byte acknowledged by the server, no
    /// response byte received), in a row, before giving up with
    /// [`SyncError::ServerUnreachable`]. An attempt that made progress resets the count.
    pub max_attempts: u32,
    /// Longest a whole sync keeps trying; then [`SyncError::ServerUnreachable`] (what got
    /// through is kept: the next sync resumes from it).
    pub deadline: Duration,
    /// Backoff after the first failure; doubled each further failure, with jitter.
    pub initial_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Raw Automerge bytes pushed per request (halved on failure down to one document, doubled
    /// back on success). The default, 2 MiB, carries a 1,000-response backlog (1.1 MB raw,
    /// ~107 KB on the wire) in one request.
    pub max_push_bytes: usize,
    /// Raw change bytes the server may pull into one response (halved / doubled likewise).
    pub max_pull_bytes: usize,
    /// Largest response body accepted, compressed and decompressed.
    pub max_response_bytes: usize,
    /// Most exchanges one sync makes before stopping (a guard against a server that always says
    /// `more`); the next sync continues.
    pub max_exchanges: u32,
    /// SHA-256 of the server's leaf certificate (DER). When set, the certificate must also
    /// match it, after normal verification.
    pub pinned_cert_sha256: Option<[u8; 32]>,
    /// Extra trusted root certificates (DER), e.g. a registry's private CA.
    pub extra_roots_der: Vec<Vec<u8>>,
    /// Allow `http://` to a non-loopback host (never in production: bodies would travel in
    /// clear, though signed).
    pub allow_insecure_http: bool,
    /// Carry exchanges over the resumable routes of protocol version 3 (the default). `false`
    /// uses the one-shot `POST /v1/sync` of versions 1 and 2, where an attempt cut at any byte
    /// restarts from zero (the bench's comparison; a registry without the resumable routes gets
    /// this automatically).
    pub resumable: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(20),
            max_attempts: 6,
            deadline: Duration::from_secs(30 * 60),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_push_bytes: 2 * 1024 * 1024,
            max_pull_bytes: 2 * 1024 * 1024,
            max_response_bytes: protocol::DEFAULT_MAX_DECOMPRESSED,
            max_exchanges: 10_000,
            pinned_cert_sha256: None,
            extra_roots_der: Vec::new(),
            allow_insecure_http: false,
            resumable: true,
        }
    }
}

/// What a sync is doing, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPhase {
    /// Reading the store, building a request.
    Preparing,
    /// Uploading a request.
    Sending,
    /// Downloading a response (`bytes_received` grows as it arrives).
    Receiving,
    /// Saving what came back.
    Applying,
    /// An attempt failed; waiting before attempt `attempt`.
    Retrying { attempt: u32 },
    /// Finished.
    Done,
}

/// Progress of a sync, reported through the callback of [`SyncClient::sync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncProgress {
    pub phase: SyncPhase,
    /// Documents pushed (accepted or rejected) and pulled so far.
    pub docs_done: u64,
    /// Documents to push at the start, plus documents pulled so far (the pull's size is not
    /// known in advance).
    pub docs_total: u64,
    /// Request body bytes sent so far (all attempts).
    pub bytes_sent: u64,
    /// Response body bytes received so far (all attempts).
    pub bytes_received: u64,
    /// Bytes of the current exchange's request the server acknowledged holding.
    pub upload_done: u64,
    /// The current exchange's request body length.
    pub upload_total: u64,
    /// Bytes of the current exchange's response received.
    pub download_done: u64,
    /// The current exchange's response length (0 until known).
    pub download_total: u64,
}

/// A document the server refused: nothing of the refused changes was merged anywhere. The
/// local copy was rolled back to what the server holds; the refused version is kept aside
/// ([`rejected_copy`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub record: RecordId,
    /// Stable snake_case code (`protocol::RejectCode::as_str`), e.g. `forbidden_kind`.
    pub code: String,
    /// The server's explanation, for the user.
    pub message: String,
}

/// A document the server sent that this device could not read (its changes do not parse or
/// apply, or the result has no readable header): it was set aside, not stored, and the rest of
/// the sync went on. Kept (sealed) for [`quarantined`] so that support can see it; the registry
/// reports the same document on its side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    pub record: RecordId,
    /// Why it could not be read.
    pub reason: String,
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Successful HTTP exchanges (request + response).
    pub round_trips: u32,
    /// HTTP requests made, failed ones included.
    pub attempts: u32,
    /// Request body bytes on the wire (compressed), all attempts.
    pub bytes_up: u64,
    /// Response body bytes on the wire (compressed), all attempts.
    pub bytes_down: u64,
    /// Raw Automerge change bytes in successful requests.
    pub change_bytes_up: u64,
    /// Raw Automerge change bytes in successful responses.
    pub change_bytes_down: u64,
    /// Documents the server accepted.
    pub pushed: u64,
    /// Documents that received changes from the server.
    pub pulled: u64,
    /// Documents the server refused in this sync (also kept for [`rejections`], except the
    /// retriable `unknown_patient` / `busy`, which stay dirty and go again next sync).
    pub rejected: Vec<Rejection>,
    /// Documents received in this sync that could not be read and were set aside (see
    /// [`Quarantined`]); the sync went on without them.
    pub quarantined: Vec<Quarantined>,
    pub elapsed: Duration,
}

/// Cancels a running sync from another thread or task. Cloning shares the token.
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<CancelInner>,
}

#[derive(Default)]
struct CancelInner {
    cancelled: AtomicBool,
    notify: tokio::sync::Notify,
}

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CancelToken(cancelled: {})", self.is_cancelled())
    }
}

impl CancelToken {
    /// A token not cancelled yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask the sync to stop: it stops at once (an in-flight request is dropped), leaving the
    /// store consistent. A response already received is applied first.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Resolves once cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// Why a sync or an enrolment failed. Every message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// The server could not be reached, or every attempt failed in transit.
    #[error(
        "could not reach the registry server after {attempts} attempt(s) ({last}). Nothing was \
         lost: records stay on this device; check the connection and sync again later"
    )]
    ServerUnreachable { attempts: u32, last: String },
    /// [`CancelToken::cancel`] was called.
    #[error("the sync was cancelled. Nothing was lost; sync again to finish")]
    Cancelled,
    /// The registry revoked this device.
    #[error(
        "this device was revoked by the registry and can no longer sync. Its unsynced records \
         stay on the device; contact the registry to enrol a device again"
    )]
    Revoked,
    /// The server does not know this device (its data was reset, or enrolment did not finish).
    #[error("the registry does not know this device ({0}); enrol it again with a new code")]
    UnknownDevice(String),
    /// The device's clock is too far from the server's for a signed request to be accepted.
    #[error(
        "this device's clock is wrong{}: set the date, time and time zone correctly, then sync again",
        match .skew_secs { Some(s) => format!(" by about {} (server {})", human_secs(*s), if *s > 0 { "ahead" } else { "behind" }), None => String::new() }
    )]
    ClockSkew {
        /// Server time minus device time, seconds, when the server's `Date` told.
        skew_secs: Option<i64>,
    },
    /// The server refused the request's signature.
    #[error("the registry refused this device's signature ({0}); if it persists, enrol the device again")]
    Unauthenticated(String),
    /// Device and server cannot talk (protocol versions).
    #[error(
        "this app speaks sync protocol version {ours} but the registry speaks {supported:?}: \
         update the app"
    )]
    VersionMismatch { ours: u16, supported: Vec<u16> },
    /// The enrolment code is unknown, already used or expired.
    #[error("the enrolment code was not accepted ({0}); ask the registry for a new code")]
    InvalidCode(String),
    /// This device is already enrolled.
    #[error("this device is already enrolled (device {0}); a device enrols only once")]
    AlreadyEnrolled(String),
    /// The server URL or the TLS settings are not usable.
    #[error("invalid sync settings: {0}")]
    Config(String),
    /// The server answered something this client cannot use (not a transient failure).
    #[error("the registry server answered {status} {code}: {message}")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    /// The server sent a record this version of the app cannot read.
    #[error(
        "the registry sent record {record} that this app cannot read ({reason}); update the app"
    )]
    UnreadableRecord { record: String, reason: String },
}

fn human_secs(s: i64) -> String {
    let a = s.unsigned_abs();
    if a >= 86_400 {
        format!("{} day(s)", a / 86_400)
    } else if a >= 3_600 {
        format!("{} hour(s)", a / 3_600)
    } else if a >= 60 {
        format!("{} minute(s)", a / 60)
    } else {
        format!("{a} second(s)")
    }
}

// ---------------------------------------------------------------------------------------------
// Rejections kept for the UI

/// The rejections recorded by past syncs (newest last), for the UI.
pub fn rejections(device: &Device) -> Result<Vec<Rejection>> {
    load_rejections(device.store())
}

/// The version of a rejected record that the server refused (kept aside, encrypted), if any.
pub fn rejected_copy(device: &Device, record: RecordId) -> Result<Option<Automerge>> {
    match device
        .store()
        .get_secret(&format!("{SECRET_REJECTED_DOC}{}", record.to_hex()))?
    {
        None => Ok(None),
        Some(bytes) => Ok(Some(Automerge::load(&bytes)?)),
    }
}

/// Forget a rejection (the user has seen it), and the refused version kept aside.
pub fn dismiss_rejection(device: &Device, record: RecordId) -> Result<bool> {
    let store = device.store();
    let mut list = load_rejections(store)?;
    let before = list.len();
    list.retain(|r| r.record != record);
    save_rejections(store, &list)?;
    store.delete_secret(&format!("{SECRET_REJECTED_DOC}{}", record.to_hex()))?;
    Ok(list.len() != before)
}

/// Sealed secret: the documents set aside as unreadable (most recent last, at most
/// [`MAX_QUARANTINED`]).
const SECRET_QUARANTINE: &str = "sync.quarantine";
const MAX_QUARANTINED: usize = 1000;

/// Documents received from the registry that this device could not read (see [`Quarantined`]).
pub fn quarantined(device: &Device) -> Result<Vec<Quarantined>> {
    load_quarantine(device.store())
}

fn load_quarantine(store: &Store) -> Result<Vec<Quarantined>> {
    match store.get_secret(SECRET_QUARANTINE)? {
        None => Ok(Vec::new()),
        Some(json) => serde_json::from_slice(&json).map_err(|e| Error::MalformedRecord {
            id: String::new(),
            reason: format!("quarantine list: {e}"),
        }),
    }
}

fn add_to_quarantine(store: &Store, q: &Quarantined) -> Result<()> {
    let mut list = load_quarantine(store)?;
    list.retain(|x| x.record != q.record);
    list.push(q.clone());
    if list.len() > MAX_QUARANTINED {
        let extra = list.len() - MAX_QUARANTINED;
        list.drain(..extra);
    }
    let json = serde_json::to_vec(&list).map_err(|e| Error::MalformedRecord {
        id: String::new(),
        reason: format!("quarantine list: {e}"),
    })?;
    store.put_secret(SECRET_QUARANTINE, &json)?;
    Ok(())
}

/// The last signed audit head the registry returned (plaintext setting: a position and a hash,
/// no record content). Registry staff can check it with `verify-audit --witness`: a device is a
/// witness of the audit chain that the registry's database cannot rewrite.
pub fn audit_witness(device: &Device) -> Result<Option<String>> {
    Ok(device.store().get_setting(SETTING_AUDIT_HEAD)?)
}

/// Plaintext setting: the last signed audit head seen ([`audit_witness`]).
const SETTING_AUDIT_HEAD: &str = "sync.audit_head";
/// The response header carrying it (server: `anchor::HEADER_AUDIT_HEAD`).
const HEADER_AUDIT_HEAD: &str = "x-followup-audit-head";

fn load_rejections(store: &Store) -> Result<Vec<Rejection>> {
    match store.get_secret(SECRET_REJECTIONS)? {
        None => Ok(Vec::new()),
        Some(json) => serde_json::from_slice(&json).map_err(|e| Error::MalformedRecord {
            id: "sync rejections".into(),
            reason: e.to_string(),
        }),
    }
}

fn save_rejections(store: &Store, list: &[Rejection]) -> Result<()> {
    let json = serde_json::to_vec(list).map_err(|e| Error::MalformedRecord {
        id: "sync rejections".into(),
        reason: e.to_string(),
    })?;
    store.put_secret(SECRET_REJECTIONS, &json)?;
    Ok(())
}

/// The cursor of the last durably applied pull.
pub fn cursor(device: &Device) -> Result<u64> {
    Ok(device
        .store()
        .get_setting(SETTING_CURSOR)?
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

// ---------------------------------------------------------------------------------------------
// TLS

mod tls {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    /// Verifies the chain normally, then requires the leaf's SHA-256 to be the pin.
    #[derive(Debug)]
    pub struct PinnedVerifier {
        pub inner: Arc<WebPkiServerVerifier>,
        pub pin: [u8; 32],
    }

    impl ServerCertVerifier for PinnedVerifier {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            let ok = self.inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            )?;
            let got = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
            if got.as_ref() != self.pin.as_slice() {
                return Err(rustls::Error::General(
                    "the server's certificate does not match the pinned certificate".into(),
                ));
            }
            Ok(ok)
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    }

    /// A rustls client configuration: ring, Mozilla roots + extra roots, optional pin.
    pub fn client_config(
        extra_roots_der: &[Vec<u8>],
        pin: Option<[u8; 32]>,
    ) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for der in extra_roots_der {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| format!("an extra root certificate is invalid: {e}"))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?;
        let mut config = match pin {
            None => builder.with_root_certificates(roots).with_no_client_auth(),
            Some(pin) => {
                let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| format!("TLS setup failed: {e}"))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(PinnedVerifier { inner, pin }))
                    .with_no_client_auth()
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

// ---------------------------------------------------------------------------------------------
// The client

mod resume;

/// The sync client. Cheap to clone; hold one per app (it keeps a connection pool).
#[derive(Clone)]
pub struct SyncClient {
    http: reqwest::Client,
    options: SyncOptions,
    /// The signed audit head of the last response, kept by the device as a witness.
    last_audit_head: Arc<std::sync::Mutex<Option<String>>>,
}

impl std::fmt::Debug for SyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncClient")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// One failed attempt: retry or stop.
enum Failure {
    /// The server has no resumable routes: use the one-shot `POST /v1/sync`.
    OldServer,
    /// Worth retrying (transport, timeout, 5xx, corrupt body).
    Transient(String),
    /// Final.
    Fatal(SyncError),
    /// Cancelled while waiting.
    Cancelled,
}

/// A document in the request being built.
struct Pushed {
    id: RecordId,
    heads: Vec<ChangeHash>,
    synced: Vec<ChangeHash>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn jitter_fraction() -> f64 {
    let b: [u8; 4] = followup_domain::ids::random_bytes();
    f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
}

/// Follow at most 5 redirects, and never to plain `http://` off loopback (unless insecure HTTP
/// is allowed): a redirect must not take the signed request and the records out of TLS.
fn redirect_policy(allow_insecure_http: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 {
            return attempt.error("too many redirects");
        }
        let url = attempt.url().clone();
        match url.scheme() {
            "https" => attempt.follow(),
            "http" if allow_insecure_http || is_loopback_host(&url) => attempt.follow(),
            _ => attempt.error(format!(
                "refused a redirect to {url}: the registry must be reached over https"
            )),
        }
    })
}

fn is_loopback_host(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// A failure's description with its sources (reqwest's own message is terse).
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Largest error body read (JSON `ErrorBody`).
const MAX_ERROR_BODY: usize = 64 * 1024;

async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
    mut on_chunk: impl FnMut(usize),
) -> Result<Vec<u8>, Failure> {
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > cap {
                    return Err(Failure::Fatal(SyncError::Server {
                        status: 200,
                        code: "too_large".into(),
                        message: format!("the response exceeds {cap} bytes"),
                    }));
                }
                on_chunk(chunk.len());
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf),
            Err(e) => return Err(Failure::Transient(describe(&e))),
        }
    }
}

/// Map a non-2xx answer to a failure.
async fn error_from(resp: reqwest::Response) -> Failure {
    let status = resp.status().as_u16();
    let date = resp
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| chrono::DateTime::parse_from_rfc2822(s).ok())
        .map(|d| d.timestamp_millis());
    let body = match read_capped(resp, MAX_ERROR_BODY, |_| {}).await {
        Ok(b) => b,
        Err(f) => return f,
    };
    let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
    let (code, message) = match &parsed {
        Some(b) => (Some(b.code), b.message.clone()),
        None => (
            None,
            String::from_utf8_lossy(&body).chars().take(200).collect(),
        ),
    };
    let code_str = parsed
        .as_ref()
        .and_then(|b| serde_json::to_value(b.code).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    match (status, code) {
        (500..=599 | 408 | 429, _) => {
            Failure::Transient(format!("the server answered {status}: {message}"))
        }
        (_, Some(ErrorCode::ReplayedNonce)) => {
            // Only a duplicate of our own request can reuse a nonce; re-signing fixes it.
            Failure::Transient(format!("the server saw this request twice: {message}"))
        }
        (_, Some(ErrorCode::StaleTimestamp)) => Failure::Fatal(SyncError::ClockSkew {
            skew_secs: date.map(|d| (d - now_ms()) / 1000),
        }),
        (_, Some(ErrorCode::UnknownDevice)) => Failure::Fatal(SyncError::UnknownDevice(message)),
        (_, Some(ErrorCode::DeviceRevoked)) => Failure::Fatal(SyncError::Revoked),
        (426, _) | (_, Some(ErrorCode::UnsupportedVersion)) => {
            Failure::Fatal(SyncError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                supported: parsed
                    .and_then(|b| b.supported_versions)
                    .unwrap_or_default(),
            })
        }
        (_, Some(ErrorCode::InvalidCode)) => Failure::Fatal(SyncError::InvalidCode(message)),
        (401, _) => Failure::Fatal(SyncError::Unauthenticated(message)),
        _ => Failure::Fatal(SyncError::Server {
            status,
            code: code_str,
            message,
        }),
    }
}

/// Mutable state of one sync.
struct Session<'a> {
    store: &'a Store,
    queue: VecDeque<RecordId>,
    want_full: Vec<RecordId>,
    asked_full: HashSet<RecordId>,
    resent_full: HashSet<RecordId>,
    push_limit: usize,
    pull_limit: usize,
    progress: SyncProgress,
    report: SyncReport,
    /// `Some(version)`: exchanges go as one `POST /v1/sync` in this protocol version (the
    /// server has no resumable routes, or [`SyncOptions::resumable`] is off).
    one_shot: Option<u16>,
    /// Failed attempts in a row in which nothing got through.
    stalled: u32,
}

const SETTING_WANT_FULL: &str = "sync.want_full";

fn load_want_full(store: &Store) -> Result<Vec<RecordId>> {
    Ok(store
        .get_setting(SETTING_WANT_FULL)?
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect())
}

fn save_want_full(store: &Store, ids: &[RecordId]) -> Result<()> {
    if ids.is_empty() {
        store.delete_setting(SETTING_WANT_FULL)?;
    } else {
        let s: Vec<String> = ids.iter().map(RecordId::to_hex).collect();
        store.put_setting(SETTING_WANT_FULL, &s.join(","))?;
    }
    Ok(())
}

impl Session<'_> {
    /// Pop documents off the queue into a push of at most `push_limit` raw bytes (always at
    /// least one document when any has changes).
    fn build_push(&mut self) -> Result<(Vec<PushDoc>, Vec<Pushed>)> {
        let mut push = Vec::new();
        let mut pushed = Vec::new();
        let mut total = 0usize;
        while let Some(id) = self.queue.pop_front() {
            let Some(doc) = self.store.load_doc(&id)? else {
                continue;
            };
            let synced = self.store.synced_heads(&id)?.unwrap_or_default();
            let heads = doc.get_heads();
            if heads.iter().all(|h| synced.contains(h)) {
                // Nothing the server lacks (e.g. a pulled change made it dirty): clean it.
                self.store.set_synced_heads(&id, &synced)?;
                continue;
            }
            let data = doc.save_after(&synced);
            if data.is_empty() {
                continue;
            }
            if !push.is_empty() && total + data.len() > self.push_limit {
                self.queue.push_front(id);
                break;
            }
            total += data.len();
            pushed.push(Pushed { id, heads, synced });
            push.push(PushDoc { doc: id, data });
            if total >= self.push_limit {
                break;
            }
        }
        Ok((push, pushed))
    }

    /// Put a failed request's documents back at the front of the queue, in order.
    fn unpop(&mut self, pushed: &[Pushed]) {
        for p in pushed.iter().rev() {
            self.queue.push_front(p.id);
        }
    }

    /// Record a rejection and roll the local document back to what the server holds.
    fn reject(&mut self, p: &Pushed, rejection: &Rejection) -> Result<()> {
        let mut list = load_rejections(self.store)?;
        list.retain(|r| r.record != rejection.record);
        list.push(rejection.clone());
        save_rejections(self.store, &list)?;
        // A save may land between the load and the replace: then reload and redo (the refused
        // changes are in it too, so it cannot be pushed as is either).
        for _ in 0..8 {
            let Some(doc) = self.store.load_doc(&p.id)? else {
                return Ok(());
            };
            self.store.put_secret(
                &format!("{SECRET_REJECTED_DOC}{}", p.id.to_hex()),
                &doc.save(),
            )?;
            let synced = self.store.synced_heads(&p.id)?.unwrap_or_default();
            if synced.is_empty() {
                // The server never held any of it: the record goes from this device.
                self.store.delete_doc(&p.id)?;
                return Ok(());
            }
            let forked = doc.fork_at(&synced)?;
            let meta = index_meta(&forked)?;
            if self.store.replace_doc(&meta, &forked, &doc.get_heads())? {
                return Ok(());
            }
        }
        tracing::warn!(record = %p.id, "could not roll back a rejected record: it keeps changing");
        Ok(())
    }

    /// Apply one response durably; the cursor moves last.
    fn apply(&mut self, pushed: &[Pushed], resp: SyncResponse) -> Result<()> {
        if resp.results.len() != pushed.len() {
            return Err(SyncError::Server {
                status: 200,
                code: "bad_response".into(),
                message: format!(
                    "{} results for {} pushed documents",
                    resp.results.len(),
                    pushed.len()
                ),
            }
            .into());
        }
        for (p, result) in pushed.iter().zip(resp.results) {
            match result {
                PushResult::Accepted { .. } => {
                    self.store.set_synced_heads(&p.id, &p.heads)?;
                    self.report.pushed += 1;
                    self.progress.docs_done += 1;
                }
                PushResult::NeedFullDoc => {
                    // The server lacks what we thought it had: resend the whole document, once.
                    if self.resent_full.insert(p.id) && !p.synced.is_empty() {
                        self.store.set_synced_heads(&p.id, &[])?;
                        self.queue.push_front(p.id);
                    } else {
                        tracing::warn!(record = %p.id, "server still lacks dependencies of a full document");
                        self.progress.docs_done += 1;
                    }
                }
                PushResult::Rejected { code, message } => {
                    let rejection = Rejection {
                        record: p.id,
                        code: code.as_str().to_string(),
                        message,
                    };
                    if !code.is_retriable() {
                        self.reject(p, &rejection)?;
                    }
                    self.report.rejected.push(rejection);
                    self.progress.docs_done += 1;
                }
            }
        }
        let mut want_full_changed = false;
        for pd in resp.pull {
            self.report.change_bytes_down += pd.data.len() as u64;
            let stored = self.store.load_doc(&pd.doc)?;
            // Everything done with the received bytes is contained: an error or a library panic
            // sets this one document aside, and the sync goes on.
            let read =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_pulled(stored, &pd)))
                    .unwrap_or_else(|_| Err("the document library failed on it".into()));
            let (doc, server_heads, complete) = match read {
                Ok(x) => x,
                Err(reason) => {
                    tracing::error!(record = %pd.doc, %reason, "unreadable record from the registry; quarantined");
                    let q = Quarantined {
                        record: pd.doc,
                        reason,
                    };
                    add_to_quarantine(self.store, &q)?;
                    self.report.quarantined.push(q);
                    continue;
                }
            };
            if !complete {
                if self.asked_full.insert(pd.doc) && !self.want_full.contains(&pd.doc) {
                    self.want_full.push(pd.doc);
                    want_full_changed = true;
                }
                continue;
            }
            let meta = match index_meta(&doc) {
                Ok(m) if m.id == pd.doc => m,
                Ok(m) => {
                    let q = Quarantined {
                        record: pd.doc,
                        reason: format!("its header names record {}", m.id),
                    };
                    add_to_quarantine(self.store, &q)?;
                    self.report.quarantined.push(q);
                    continue;
                }
                Err(e) => {
                    let q = Quarantined {
                        record: pd.doc,
                        reason: e.to_string(),
                    };
                    tracing::error!(record = %pd.doc, reason = %q.reason, "unreadable record from the registry; quarantined");
                    add_to_quarantine(self.store, &q)?;
                    self.report.quarantined.push(q);
                    continue;
                }
            };
            self.store.save_doc(&meta, &doc)?;
            self.store.set_synced_heads(&pd.doc, &server_heads)?;
            self.report.pulled += 1;
            self.progress.docs_done += 1;
            self.progress.docs_total += 1;
        }
        if want_full_changed {
            save_want_full(self.store, &self.want_full)?;
        }
        self.store
            .put_setting(SETTING_CURSOR, &resp.cursor.to_string())?;
        Ok(())
    }
}

/// Apply a pulled document to the stored copy: the result, the server's heads, and whether the
/// result is complete (no missing dependencies). An error says why the bytes are unreadable.
fn read_pulled(
    stored: Option<Automerge>,
    pd: &protocol::PullDoc,
) -> std::result::Result<(Automerge, Vec<ChangeHash>, bool), String> {
    let changes = split_changes(&pd.data).map_err(|e| e.to_string())?;
    let server_heads = pd.server_heads(&changes);
    let mut doc = stored.unwrap_or_default();
    doc.apply_changes(changes)
        .map_err(|e| format!("its changes do not apply: {e}"))?;
    let complete = doc.get_missing_deps(&[]).is_empty()
        && server_heads
            .iter()
            .all(|h| doc.get_change_by_hash(h).is_some());
    Ok((doc, server_heads, complete))
}

impl SyncClient {
    /// A client with its own connection pool and TLS configuration.
    pub fn new(options: SyncOptions) -> Result<SyncClient> {
        let tls = tls::client_config(&options.extra_roots_der, options.pinned_cert_sha256)
            .map_err(SyncError::Config)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout)
            .redirect(redirect_policy(options.allow_insecure_http))
            .user_agent(concat!("followup-core/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                SyncError::Config(format!("HTTP client setup failed: {}", describe(&e)))
            })?;
        Ok(SyncClient {
            http,
            options,
            last_audit_head: Arc::new(std::sync::Mutex::new(None)),
        })
    }

    /// The options in force.
    pub fn options(&self) -> &SyncOptions {
        &self.options
    }

    fn endpoint(&self, server_url: &str, path: &str) -> Result<reqwest::Url, SyncError> {
        let base = reqwest::Url::parse(server_url.trim())
            .map_err(|e| SyncError::Config(format!("{server_url:?} is not a URL: {e}")))?;
        match base.scheme() {
            "https" => {}
            "http" if self.options.allow_insecure_http || is_loopback_host(&base) => {}
            "http" => {
                return Err(SyncError::Config(format!(
                    "{server_url} is plain http: use the registry's https:// address"
                )))
            }
            other => {
                return Err(SyncError::Config(format!(
                    "unsupported URL scheme {other:?}: use the registry's https:// address"
                )))
            }
        }
        let joined = format!("{}{path}", base.as_str().trim_end_matches('/'));
        reqwest::Url::parse(&joined).map_err(|e| SyncError::Config(e.to_string()))
    }

    /// Enrol the device with the registry at `server_url` using a one-time `code` issued by
    /// registry staff; `label` names the device for them (e.g. "Tablet 2, ward B"). Stores and
    /// returns the enrolment. From then on the device's changes carry its registry device id.
    ///
    /// Errors: [`SyncError::InvalidCode`], [`SyncError::AlreadyEnrolled`],
    /// [`SyncError::ServerUnreachable`] (retried only while nothing reached the server, since
    /// a code works once).
    pub async fn enrol(
        &self,
        device: &Device,
        server_url: &str,
        code: &str,
        label: &str,
    ) -> Result<Enrolled> {
        if let Some(e) = device.enrolment() {
            return Err(SyncError::AlreadyEnrolled(e.device_id.to_hex()).into());
        }
        let url = self.endpoint(server_url, ENROL_PATH)?;
        let req = EnrolRequest {
            code: code.trim().to_string(),
            public_key: device.identity()?.public_key_base64(),
            label: (!label.trim().is_empty()).then(|| label.trim().to_string()),
        };
        let body = serde_json::to_vec(&req).map_err(|e| SyncError::Config(e.to_string()))?;
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            match self
                .http
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await
            {
                Ok(r) => break r,
                Err(e) if e.is_connect() && attempt < self.options.max_attempts => {
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Err(e) => {
                    return Err(SyncError::ServerUnreachable {
                        attempts: attempt,
                        last: describe(&e),
                    }
                    .into())
                }
            }
        };
        if !resp.status().is_success() {
            return Err(match error_from(resp).await {
                Failure::Fatal(e) => e,
                Failure::Transient(last) => SyncError::ServerUnreachable {
                    attempts: attempt,
                    last,
                },
                Failure::Cancelled => SyncError::Cancelled,
                Failure::OldServer => SyncError::Server {
                    status: 404,
                    code: "not_found".into(),
                    message: "the registry has no enrolment route".into(),
                },
            }
            .into());
        }
        let bytes = read_capped(resp, MAX_ERROR_BODY, |_| {})
            .await
            .map_err(|f| match f {
                Failure::Fatal(e) => e,
                Failure::Transient(last) => SyncError::ServerUnreachable {
                    attempts: attempt,
                    last,
                },
                Failure::Cancelled => SyncError::Cancelled,
                Failure::OldServer => SyncError::Server {
                    status: 404,
                    code: "not_found".into(),
                    message: "the registry has no enrolment route".into(),
                },
            })?;
        let answer: EnrolResponse =
            serde_json::from_slice(&bytes).map_err(|e| SyncError::Server {
                status: 200,
                code: "bad_response".into(),
                message: format!("the enrolment answer is not understood: {e}"),
            })?;
        let enrolled = Enrolled {
            device_id: answer.device_id,
            role: answer.role,
            clinic: answer.clinic,
            patient: answer.patient,
            server_url: server_url.trim().trim_end_matches('/').to_string(),
        };
        device.set_enrolment(enrolled.clone())?;
        let skew = answer.server_time_ms - now_ms();
        if skew.abs() > followup_domain::identity::MAX_CLOCK_SKEW_MS {
            return Err(SyncError::ClockSkew {
                skew_secs: Some(skew / 1000),
            }
            .into());
        }
        Ok(enrolled)
    }

    /// Backoff before attempt `failures + 1`: exponential, capped, with "equal jitter" (half
    /// fixed, half random) so that many devices dropped together do not retry together.
    fn backoff(&self, failures: u32) -> Duration {
        let base = self
            .options
            .initial_backoff
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(self.options.max_backoff);
        base / 2 + base.mul_f64(jitter_fraction() / 2.0)
    }

    /// Sync the device with its registry: push what the server lacks, pull what the device
    /// lacks, in as few exchanges as the batch limits allow (one when nothing is unusual).
    /// `progress` is called from the calling task at each phase and as bytes arrive;
    /// `cancel` stops the sync at once, leaving the store consistent (a later sync resumes
    /// without resending what the server acknowledged).
    ///
    /// Rejected documents do not fail the sync: they are listed in [`SyncReport::rejected`].
    pub async fn sync(
        &self,
        device: &Device,
        progress: &(dyn Fn(SyncProgress) + Send + Sync),
        cancel: &CancelToken,
    ) -> Result<SyncReport> {
        let started = Instant::now();
        // However the sync ends, the records it wrote are reported once, at the end.
        let _publish = device.publish_on_drop();
        let enrolled = device.enrolment().ok_or(Error::NotEnrolled)?;
        let url = self.endpoint(&enrolled.server_url, SYNC_PATH)?;
        if cancel.is_cancelled() {
            return Err(SyncError::Cancelled.into());
        }
        let store = device.store();
        let queue = dirty_queue(store)?;
        let mut s = Session {
            store,
            progress: SyncProgress {
                phase: SyncPhase::Preparing,
                docs_done: 0,
                docs_total: queue.len() as u64,
                bytes_sent: 0,
                bytes_received: 0,
                upload_done: 0,
                upload_total: 0,
                download_done: 0,
                download_total: 0,
            },
            queue,
            want_full: load_want_full(store)?,
            asked_full: HashSet::new(),
            resent_full: HashSet::new(),
            push_limit: self.options.max_push_bytes.max(1),
            pull_limit: self.options.max_pull_bytes.max(1),
            report: SyncReport::default(),
            one_shot: (!self.options.resumable).then_some(protocol::ONE_SHOT_VERSION),
            stalled: 0,
        };
        progress(s.progress);
        let mut exchanges = 0u32;
        loop {
            if cancel.is_cancelled() {
                return Err(SyncError::Cancelled.into());
            }
            s.progress.phase = SyncPhase::Preparing;
            progress(s.progress);
            let (push, pushed) = s.build_push()?;
            let want_full = std::mem::take(&mut s.want_full);
            let mut req = SyncRequest::new(
                cursor(device)?,
                u32::try_from(s.pull_limit).unwrap_or(u32::MAX),
                push,
            );
            req.want_full = want_full.clone();
            let change_bytes_up = req.push_bytes() as u64;
            let resp = match self
                .run_exchange(
                    &url, device, &enrolled, req, &mut s, started, progress, cancel,
                )
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    s.unpop(&pushed);
                    return Err(e);
                }
            };
            exchanges += 1;
            s.report.change_bytes_up += change_bytes_up;
            let more = resp.more;
            s.progress.phase = SyncPhase::Applying;
            progress(s.progress);
            s.apply(&pushed, resp)?;
            let head = match self.last_audit_head.lock() {
                Ok(mut g) => g.take(),
                Err(p) => p.into_inner().take(),
            };
            if let Some(head) = head {
                store.put_setting(SETTING_AUDIT_HEAD, &head)?;
            }
            if !want_full.is_empty() {
                // Served (`apply` asked again, once, for any still incomplete).
                save_want_full(store, &s.want_full)?;
            }
            let done = !more && s.queue.is_empty() && s.want_full.is_empty();
            if done || exchanges >= self.options.max_exchanges {
                break;
            }
            if cancel.is_cancelled() {
                return Err(SyncError::Cancelled.into());
            }
        }
        // A user the registry removed loses this tablet now (their key slot is deleted).
        self.refresh_after_sync(device, s.report.pulled).await?;
        s.report.bytes_up = s.progress.bytes_sent;
        s.report.bytes_down = s.progress.bytes_received;
        s.report.elapsed = started.elapsed();
        s.progress.phase = SyncPhase::Done;
        progress(s.progress);
        Ok(s.report)
    }

    /// Carry one exchange to its response: over the resumable routes (version 3), attempt after
    /// attempt while they make progress; over the one-shot `POST /v1/sync` (versions 2 and 1)
    /// against a server without them.
    #[allow(clippy::too_many_arguments)]
    async fn run_exchange(
        &self,
        url_v1: &reqwest::Url,
        device: &Device,
        enrolled: &Enrolled,
        mut req: SyncRequest,
        s: &mut Session<'_>,
        started: Instant,
        progress: &(dyn Fn(SyncProgress) + Send + Sync),
        cancel: &CancelToken,
    ) -> Result<SyncResponse> {
        async fn encode(req: &SyncRequest) -> Result<Vec<u8>> {
            let req = req.clone();
            Ok(tokio::task::spawn_blocking(move || encode_body(&req))
                .await
                .map_err(|e| SyncError::Config(format!("encoding failed: {e}")))?
                .map_err(|e| SyncError::Config(e.to_string()))?)
        }
        if let Some(v) = s.one_shot {
            req.version = v;
        }
        let mut body = encode(&req).await?;
        let mut up = resume::Upload::new(body.clone());
        // What had got through at the last failure (`None`: no failure yet in this exchange).
        let mut at_last_failure: Option<u64> = None;
        loop {
            if cancel.is_cancelled() {
                return Err(SyncError::Cancelled.into());
            }
            s.report.attempts += 1;
            let was_upload = s.one_shot.is_some() || up.next_is_post();
            let outcome = if s.one_shot.is_some() {
                self.exchange(
                    url_v1,
                    device,
                    enrolled,
                    body.clone(),
                    &mut s.progress,
                    progress,
                    cancel,
                )
                .await
                .map(resume::Step::Done)
            } else {
                self.attempt_resumable(
                    &enrolled.server_url,
                    device,
                    enrolled,
                    &mut up,
                    &mut s.progress,
                    progress,
                    cancel,
                )
                .await
            };
            let last = match outcome {
                Ok(resume::Step::Done(resp)) => {
                    s.report.round_trips += 1;
                    s.stalled = 0;
                    return Ok(resp);
                }
                Ok(resume::Step::More) => {
                    // The server answered (a piece stored, where the upload stands, or the
                    // exchange still running): it is reachable, so nothing counts as stalled.
                    s.report.round_trips += 1;
                    s.stalled = 0;
                    continue;
                }
                Err(Failure::OldServer) => {
                    tracing::info!(
                        "the registry has no resumable sync routes; using one POST per exchange"
                    );
                    s.one_shot = Some(protocol::ONE_SHOT_VERSION);
                    req.version = protocol::ONE_SHOT_VERSION;
                    body = encode(&req).await?;
                    continue;
                }
                Err(Failure::Fatal(SyncError::VersionMismatch { ours, supported }))
                    if s.one_shot.is_some() =>
                {
                    // An older registry: the newest version both sides speak, if any.
                    let current = req.version;
                    let Some(v) = protocol::SUPPORTED_VERSIONS
                        .iter()
                        .copied()
                        .filter(|v| *v < current && supported.contains(v))
                        .max()
                    else {
                        return Err(SyncError::VersionMismatch { ours, supported }.into());
                    };
                    tracing::info!(
                        version = v,
                        "the registry speaks an older sync protocol; using it"
                    );
                    s.one_shot = Some(v);
                    req.version = v;
                    body = encode(&req).await?;
                    continue;
                }
                Err(Failure::Fatal(e)) => return Err(e.into()),
                Err(Failure::Cancelled) => return Err(SyncError::Cancelled.into()),
                Err(Failure::Transient(last)) => {
                    up.dropped = true;
                    last
                }
            };
            let mark = if s.one_shot.is_some() { 0 } else { up.mark() };
            let progressed = match at_last_failure {
                Some(m) => mark > m,
                None => mark > 0,
            };
            at_last_failure = Some(mark);
            s.stalled = if progressed { 0 } else { s.stalled + 1 };
            if s.stalled >= self.options.max_attempts.max(1) {
                return Err(SyncError::ServerUnreachable {
                    attempts: s.stalled,
                    last,
                }
                .into());
            }
            if started.elapsed() >= self.options.deadline {
                return Err(SyncError::ServerUnreachable {
                    attempts: s.report.attempts,
                    last: format!(
                        "{last}; gave up after the sync's deadline of {} s",
                        self.options.deadline.as_secs()
                    ),
                }
                .into());
            }
            tracing::info!(attempt = s.report.attempts, stalled = s.stalled, reason = %last, "sync attempt failed; resuming");
            s.progress.phase = SyncPhase::Retrying {
                attempt: s.report.attempts + 1,
            };
            progress(s.progress);
            // Back off only when nothing gets through. A cut upload is first followed by a
            // probe (what arrived is not known yet), without waiting.
            if was_upload && s.one_shot.is_none() && s.stalled < 2 {
                // The server learns of the cut only when its end of the connection fails: give
                // it a moment to keep what arrived before asking how much that was.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = cancel.cancelled() => return Err(SyncError::Cancelled.into()),
                }
            }
            if s.stalled >= 2 || (s.stalled == 1 && !was_upload) {
                tokio::select! {
                    _ = tokio::time::sleep(self.backoff(s.stalled)) => {}
                    _ = cancel.cancelled() => return Err(SyncError::Cancelled.into()),
                }
            }
        }
    }

    /// Keep the signed audit head a response carries, for the device to store once the
    /// exchange is applied.
    fn note_audit_head(&self, resp: &reqwest::Response) {
        let head = resp
            .headers()
            .get(HEADER_AUDIT_HEAD)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() < 512)
            .map(str::to_string);
        if let Some(head) = head {
            match self.last_audit_head.lock() {
                Ok(mut g) => *g = Some(head),
                Err(p) => *p.into_inner() = Some(head),
            }
        }
    }

    /// One signed POST and its decoded answer.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        url: &reqwest::Url,
        device: &Device,
        enrolled: &Enrolled,
        body: Vec<u8>,
        prog: &mut SyncProgress,
        progress: &(dyn Fn(SyncProgress) + Send + Sync),
        cancel: &CancelToken,
    ) -> Result<SyncResponse, Failure> {
        let identity = device
            .identity()
            .map_err(|e| Failure::Fatal(SyncError::Config(e.to_string())))?;
        let signed = identity.sign_request(enrolled.device_id, "POST", SYNC_PATH, &body, now_ms());
        let mut rb = self
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, SYNC_CONTENT_TYPE)
            .header(reqwest::header::ACCEPT, SYNC_CONTENT_TYPE);
        for (k, v) in signed.to_header_pairs() {
            rb = rb.header(k, v);
        }
        prog.phase = SyncPhase::Sending;
        prog.bytes_sent += body.len() as u64;
        progress(*prog);
        let max = self.options.max_response_bytes;
        let work = async {
            let resp = rb
                .body(body)
                .send()
                .await
                .map_err(|e| Failure::Transient(describe(&e)))?;
            if !resp.status().is_success() {
                return Err(error_from(resp).await);
            }
            self.note_audit_head(&resp);
            prog.phase = SyncPhase::Receiving;
            progress(*prog);
            let bytes = read_capped(resp, max, |n| {
                prog.bytes_received += n as u64;
                progress(*prog);
            })
            .await?;
            let decoded = tokio::task::spawn_blocking(move || decode_sync_response(&bytes, max))
                .await
                .map_err(|e| Failure::Transient(e.to_string()))?;
            match decoded {
                Ok(r) => Ok(r),
                Err(protocol::ProtocolError::UnsupportedVersion { supported, .. }) => {
                    Err(Failure::Fatal(SyncError::VersionMismatch {
                        ours: PROTOCOL_VERSION,
                        supported,
                    }))
                }
                // Truncated or damaged in transit (the zstd checksum catches it): retry.
                Err(e) => Err(Failure::Transient(format!("damaged response: {e}"))),
            }
        };
        tokio::select! {
            r = work => r,
            _ = cancel.cancelled() => Err(Failure::Cancelled),
        }
    }
}

/// The dirty documents, enrolments first (the server needs a patient's enrolment before its
/// other records), then in the order they were changed.
fn dirty_queue(store: &Store) -> Result<VecDeque<RecordId>> {
    let ids = store.dirty_docs(usize::MAX)?;
    let mut kinds: HashMap<RecordId, RecordKind> = HashMap::with_capacity(ids.len());
    for id in &ids {
        if let Some(m) = store.meta(id)? {
            kinds.insert(*id, m.kind);
        }
    }
    let (enrolments, rest): (Vec<RecordId>, Vec<RecordId>) = ids
        .into_iter()
        .partition(|id| kinds.get(id) == Some(&RecordKind::Enrolment));
    Ok(enrolments.into_iter().chain(rest).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_https_or_loopback_http_only() {
        let c = SyncClient::new(SyncOptions::default()).unwrap();
        assert_eq!(
            c.endpoint("https://registry.example.org/", SYNC_PATH)
                .unwrap()
                .as_str(),
            "https://registry.example.org/v1/sync"
        );
        assert_eq!(
            c.endpoint("https://example.org/followup", SYNC_PATH)
                .unwrap()
                .as_str(),
            "https://example.org/followup/v1/sync"
        );
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:9",
        ] {
            assert!(c.endpoint(ok, SYNC_PATH).is_ok(), "{ok}");
        }
        for bad in ["http://registry.example.org", "ftp://x", "not a url"] {
            assert!(
                matches!(c.endpoint(bad, SYNC_PATH), Err(SyncError::Config(_))),
                "{bad}"
            );
        }
        let insecure = SyncClient::new(SyncOptions {
            allow_insecure_http: true,
            ..SyncOptions::default()
        })
        .unwrap();
        assert!(insecure.endpoint("http://10.0.0.2", SYNC_PATH).is_ok());
    }

    #[test]
    fn pinning_and_extra_roots_configure() {
        assert!(SyncClient::new(SyncOptions {
            pinned_cert_sha256: Some([7; 32]),
            ..SyncOptions::default()
        })
        .is_ok());
        assert!(matches!(
            SyncClient::new(SyncOptions {
                extra_roots_der: vec![vec![1, 2, 3]],
                ..SyncOptions::default()
            }),
            Err(Error::Sync(SyncError::Config(_)))
        ));
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let c = SyncClient::new(SyncOptions {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..SyncOptions::default()
        })
        .unwrap();
        for failures in 1..40 {
            let b = c.backoff(failures);
            let base = Duration::from_millis(100)
                .saturating_mul(1 << (failures - 1).min(16))
                .min(Duration::from_secs(1));
            assert!(b >= base / 2 && b <= base, "{failures}: {b:?}");
        }
    }

    #[tokio::test]
    async fn cancel_token_wakes_waiters() {
        let t = CancelToken::new();
        let t2 = t.clone();
        let waiter = tokio::spawn(async move { t2.cancelled().await });
        assert!(!t.is_cancelled());
        t.cancel();
        waiter.await.unwrap();
        assert!(t.is_cancelled());
        t.cancelled().await; // already cancelled: returns at once
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = SyncError::ClockSkew {
            skew_secs: Some(-7200),
        };
        assert!(e.to_string().contains("2 hour(s)"), "{e}");
        assert!(SyncError::VersionMismatch {
            ours: 1,
            supported: vec![2]
        }
        .to_string()
        .contains("update the app"));
    }
}
