//! Protocol version 3: the sync exchange resumable at any byte ("Version 3" in
//! `docs/sync-protocol.md`).
//!
//! * `POST /v3/sync/{h}?offset=O&length=T`: one piece of the request body `B` (`h` =
//!   SHA-256 of `B`, `T` = its length), authenticated from the headers alone (the signature's
//!   body hash is `h`), streamed into the staging tables **as it arrives**, so a connection cut
//!   at any byte keeps every byte that reached the server. The piece that completes the upload
//!   runs the exchange ([`crate::sync::run`], exactly as version 1) and stores the response.
//! * `GET /v3/sync/{h}?offset=R`: the stored response from byte `R`, or where the upload stands.
//!
//! The streaming, the persisting and the exchange itself run in a task of their own: they finish
//! even when the device's connection (and with it this handler) is gone.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use followup_domain::ids::DeviceId;
use followup_domain::protocol::{
    decode_sync_request, encode_body_with_level, ErrorBody, ErrorCode, PushResult, EXCHANGE_ID_LEN,
    MAX_UPLOAD_PIECE, RESPONSE_LENGTH_HEADER, SYNC_CONTENT_TYPE, ZSTD_LEVEL_SERVER,
};
use http_body_util::BodyExt;
use ring::digest::{digest, SHA256};
use serde::Deserialize;
use tokio::sync::watch;

use crate::anchor::HEADER_AUDIT_HEAD;
use crate::api::check_declared_length;
use crate::api::AppState;
use crate::auth::{finish_authentication_hashed, now_ms, pre_authenticate};
use crate::authz::Principal;
use crate::error::ApiError;
use crate::guard::DeviceSlot;
use crate::storage::{Storage, UploadState};
use crate::sync;

/// Received bytes are written to the staging tables at least this often (and whenever the
/// stream ends, cleanly or not).
const FLUSH_BYTES: usize = 64 * 1024;

/// Longest a request waits for a running exchange before answering `202 processing`: well
/// under the lifetime of a link that drops every few seconds, so that the device hears from
/// the server (and knows it is working) between drops, however long the exchange takes.
const PROCESSING_WAIT: Duration = Duration::from_secs(2);
/// Longest wait a device may ask for with `wait=S` (a device on a steady link asks for a long
/// one, so that even a slow merge is one round trip; after a drop it asks for a short one).
const MAX_PROCESSING_WAIT: Duration = Duration::from_secs(50);

fn processing_wait(asked: Option<u64>) -> Duration {
    asked.map_or(PROCESSING_WAIT, |s| {
        Duration::from_secs(s).min(MAX_PROCESSING_WAIT)
    })
}

/// What a finished exchange gave: the encoded response, or the error to answer.
type Outcome = Result<Arc<Vec<u8>>, (StatusCode, ErrorBody)>;

/// Exchanges running in this process, by device and upload name. A request for an exchange
/// that is already running waits for it instead of running it a second time (each run of a
/// large push costs seconds of CPU; a device on a dropping link asks again after every drop).
/// Several processes may still each run it once: [`complete`] is idempotent.
type Running = HashMap<(DeviceId, [u8; 32]), watch::Receiver<Option<Outcome>>>;
static RUNNING: LazyLock<Mutex<Running>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn running() -> std::sync::MutexGuard<'static, Running> {
    RUNNING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Run (or join) the exchange of a complete upload, in a task of its own, and wait at most
/// [`PROCESSING_WAIT`] for it: `None` if it is still running.
async fn finish(
    st: AppState,
    principal: Principal,
    hash: [u8; 32],
    wait: Duration,
) -> Result<Option<Arc<Vec<u8>>>, ApiError> {
    let key = (principal.device, hash);
    let mut rx = {
        let mut map = running();
        match map.get(&key) {
            Some(rx) => rx.clone(),
            None => {
                let (tx, rx) = watch::channel(None);
                map.insert(key, rx.clone());
                tokio::spawn(async move {
                    let r = blocking(move || complete(&st, &principal, &hash)).await;
                    let outcome = r.map(Arc::new).map_err(|e| (e.status, e.body));
                    // Forget it first: a request arriving now finds the stored response.
                    running().remove(&key);
                    let _ = tx.send(Some(outcome));
                });
                rx
            }
        }
    };
    let outcome = match tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await {
        Err(_) => return Ok(None),
        Ok(Err(_)) => None,
        Ok(Ok(v)) => v.clone(),
    };
    match outcome {
        Some(Ok(out)) => Ok(Some(out)),
        Some(Err((status, body))) => Err(ApiError { status, body }),
        None => Err(ApiError::internal(
            "staging",
            "an exchange ended without a result",
        )),
    }
}

/// `202 processing`: the upload is complete, the exchange still running.
fn processing(length: u64) -> Response {
    let mut e = ApiError::new(
        StatusCode::ACCEPTED,
        ErrorCode::Processing,
        "the upload is complete and the exchange is running: ask for the response again",
    );
    e.body.received = Some(length);
    e.body.length = Some(length);
    e.into_response()
}

#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    offset: u64,
    length: u64,
    /// Seconds the device is willing to wait for the exchange to run (see [`finish`]).
    #[serde(default)]
    wait: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct DownloadQuery {
    #[serde(default)]
    offset: u64,
    /// As [`UploadQuery::wait`].
    #[serde(default)]
    wait: Option<u64>,
}

fn parse_hash(h: &str) -> Result<[u8; 32], ApiError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(h, &mut out)
        .map_err(|_| ApiError::bad_request("the upload name is not a 64-character SHA-256 hex"))?;
    Ok(out)
}

fn path_of(uri: &Uri) -> &str {
    uri.path_and_query().map_or(uri.path(), |p| p.as_str())
}

/// `409` with where the upload stands.
fn status_error(code: ErrorCode, state: Option<UploadState>, message: &str) -> ApiError {
    let mut e = ApiError::new(StatusCode::CONFLICT, code, message);
    e.body.received = Some(state.map_or(0, |s| s.received));
    e.body.length = state.map(|s| s.length);
    e
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await?
}

/// The stored response from `offset`, with the signed audit head as on `POST /v1/sync`.
async fn respond(st: &AppState, bytes: &[u8], offset: u64) -> Result<Response, ApiError> {
    let mut resp = response_bytes(bytes, offset)?;
    if let Some(anchor) = st.anchor.clone() {
        let storage = st.storage.clone();
        let head = tokio::task::spawn_blocking(move || {
            crate::api::signed_audit_head(storage.as_ref(), &anchor)
        })
        .await
        .ok()
        .flatten();
        if let Some(v) = head.and_then(|h| header::HeaderValue::from_str(&h).ok()) {
            resp.headers_mut().insert(HEADER_AUDIT_HEAD, v);
        }
    }
    Ok(resp)
}

fn response_bytes(bytes: &[u8], offset: u64) -> Result<Response, ApiError> {
    let total = bytes.len() as u64;
    let Some(from) = usize::try_from(offset).ok().filter(|&o| o as u64 <= total) else {
        return Err(ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::BadRequest,
            format!("offset {offset} is beyond the response's {total} bytes"),
        ));
    };
    let body = bytes[from..].to_vec();
    Ok((
        [
            (header::CONTENT_TYPE, SYNC_CONTENT_TYPE.to_string()),
            (
                header::HeaderName::from_static(RESPONSE_LENGTH_HEADER),
                total.to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

/// Run the exchange of a complete upload and store its response (blocking). Idempotent: a
/// second run (another process, a retry after a crash) finds the pushes already merged, and
/// whichever response is stored first is the one every caller gets.
fn complete(st: &AppState, principal: &Principal, hash: &[u8; 32]) -> Result<Vec<u8>, ApiError> {
    let storage = st.storage.as_ref();
    let device = principal.device;
    if let Some(r) = storage.upload_response(device, hash)? {
        return Ok(r);
    }
    let bytes = storage.upload_bytes(device, hash)?;
    if digest(&SHA256, &bytes).as_ref() != hash.as_slice() {
        storage.upload_discard(device, hash)?;
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedBody,
            "the uploaded bytes do not match their SHA-256 name; upload them again",
        ));
    }
    // The exchange id (random, names the upload uniquely), then the encoded request.
    let encoded = bytes.get(EXCHANGE_ID_LEN..).unwrap_or_default();
    let req = match decode_sync_request(encoded, st.max_decompressed_bytes) {
        Ok(r) => r,
        Err(e) => {
            storage.upload_discard(device, hash)?;
            return Err(e.into());
        }
    };
    let started = std::time::Instant::now();
    let resp = sync::run(storage, principal, &req, &st.limits, st.clock.now_ms())?;
    let out = encode_body_with_level(&resp, ZSTD_LEVEL_SERVER)?;
    let accepted = resp
        .results
        .iter()
        .filter(|r| matches!(r, PushResult::Accepted { .. }))
        .count();
    tracing::info!(
        device = %device,
        pushed = req.push.len(), accepted, pulled = resp.pull.len(), cursor = resp.cursor,
        more = resp.more, request_bytes = bytes.len(), response_bytes = out.len(),
        ms = started.elapsed().as_millis() as u64,
        "sync (v3, resumable)"
    );
    crate::metrics::sync_served(device, bytes.len(), out.len(), started.elapsed());
    if storage.upload_finish(device, hash, &out, now_ms())? {
        Ok(out)
    } else {
        storage
            .upload_response(device, hash)?
            .ok_or_else(|| ApiError::internal("staging", "a finished exchange lost its response"))
    }
}

/// What happened to one piece's body.
struct Streamed {
    state: Option<UploadState>,
    /// The body ended before its end (the connection was cut).
    cut: bool,
    /// The piece exceeded [`MAX_UPLOAD_PIECE`].
    too_large: bool,
}

/// Stream one piece into the staging tables.
#[allow(clippy::too_many_arguments)]
async fn stream_piece(
    storage: Arc<dyn Storage>,
    device: DeviceId,
    hash: [u8; 32],
    length: u64,
    offset: u64,
    held: u64,
    mut body: Body,
    idle_timeout: Duration,
) -> Result<Streamed, ApiError> {
    // Bytes of this piece the server already holds are read and dropped.
    let mut skip = held - offset;
    let mut pos = held;
    let mut buf: Vec<u8> = Vec::new();
    let mut read = 0usize;
    let mut state = None;
    let mut cut = false;
    let mut too_large = false;
    let flush = |pos: u64, bytes: Vec<u8>| {
        let storage = storage.clone();
        blocking(move || Ok(storage.upload_append(device, &hash, length, pos, &bytes, now_ms())?))
    };
    loop {
        // The server's body timeout, as an idle limit here, not a limit on the whole piece: a
        // piece arrives at the link's speed (1 MiB at 64 kbit/s is 130 s); a client that stops
        // sending for that long is cut, and what it sent is kept.
        let Ok(next) = tokio::time::timeout(idle_timeout, body.frame()).await else {
            cut = true;
            break;
        };
        match next {
            None => break,
            Some(Err(_)) => {
                cut = true;
                break;
            }
            Some(Ok(frame)) => {
                let Ok(mut data) = frame.into_data() else {
                    continue;
                };
                read += data.len();
                if read > MAX_UPLOAD_PIECE {
                    too_large = true;
                    break;
                }
                if skip > 0 {
                    let n = usize::try_from(skip).unwrap_or(usize::MAX).min(data.len());
                    let _ = data.split_to(n);
                    skip -= n as u64;
                }
                buf.extend_from_slice(&data);
                if buf.len() >= FLUSH_BYTES {
                    let n = buf.len() as u64;
                    let s = flush(pos, std::mem::take(&mut buf)).await?;
                    if s.is_none_or(|s| s.received != pos + n) {
                        // Someone else appended (a racing connection): stop; the device asks.
                        return Ok(Streamed {
                            state: s,
                            cut,
                            too_large,
                        });
                    }
                    pos += n;
                    state = s;
                }
            }
        }
    }
    if !buf.is_empty() || state.is_none() {
        state = flush(pos, buf).await?;
    }
    Ok(Streamed {
        state,
        cut,
        too_large,
    })
}

/// `POST /v3/sync/{h}?offset=O&length=T`.
///
/// The whole of it runs in a task of its own, from authentication on: when the link drops, the
/// connection (and this handler's future) is dropped, but the task still stores what arrived.
pub async fn upload(
    State(st): State<AppState>,
    Path(h): Path<String>,
    Query(q): Query<UploadQuery>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let r = tokio::spawn(upload_piece(st, h, q, uri, headers, body)).await?;
    crate::metrics::sync_finished(match &r {
        Ok(resp) => resp.status().as_u16(),
        Err(e) => e.status.as_u16(),
    });
    r
}

/// The device's slot for one request (the per-device bound on sync requests in flight).
fn take_slot(st: &AppState, device: DeviceId) -> Result<DeviceSlot, ApiError> {
    st.slots
        .try_take(device, st.max_syncs_per_device)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::Unavailable,
                format!(
                    "this device already has {} syncs in progress; wait for them",
                    st.max_syncs_per_device
                ),
            )
        })
}

async fn upload_piece(
    st: AppState,
    h: String,
    q: UploadQuery,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let hash = parse_hash(&h)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.eq_ignore_ascii_case(SYNC_CONTENT_TYPE) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!("expected Content-Type {SYNC_CONTENT_TYPE}"),
        ));
    }
    // Nothing of the body is read before the device is authenticated: the signature covers
    // the upload's name (its SHA-256), so headers and path suffice, nonce included.
    let pre = pre_authenticate(&st.storage, &headers).await?;
    let device =
        finish_authentication_hashed(&st.storage, pre, "POST", path_of(&uri), &hash).await?;
    let _slot = take_slot(&st, device.id)?;
    // A device stages at most one upload (starting one drops its others), of at most the body
    // limit: its staged bytes are capped at `max_body_bytes`.
    if q.length == 0 || q.length > st.max_body_bytes as u64 {
        return Err(ApiError::too_large(format!(
            "an upload is 1 to {} bytes",
            st.max_body_bytes
        )));
    }
    check_declared_length(&headers, MAX_UPLOAD_PIECE)?;
    if q.offset > q.length {
        return Err(ApiError::bad_request(
            "the offset is beyond the upload's length",
        ));
    }
    let storage = st.storage.clone();
    let id = device.id;
    let state = blocking(move || Ok(storage.upload_state(id, &hash)?)).await?;
    if let Some(s) = state {
        if s.length != q.length {
            return Err(ApiError::bad_request(format!(
                "this upload is {} bytes long, not {}",
                s.length, q.length
            )));
        }
    }
    let held = state.map_or(0, |s| s.received);
    let principal = Principal::from(&device);
    if state.is_some_and(|s| s.response_len.is_some() || s.received == s.length) {
        // Already complete: the device lost the answer. Give it (running the exchange if a
        // crash left it undone; waiting for it if it is running).
        return match finish(st.clone(), principal, hash, processing_wait(q.wait)).await? {
            Some(out) => respond(&st, &out, 0).await,
            None => Ok(processing(q.length)),
        };
    }
    if q.offset > held {
        return Err(status_error(
            ErrorCode::UploadOffset,
            state,
            "the server holds fewer bytes of this upload than the offset: resume from `received`",
        ));
    }
    let storage = st.storage.clone();
    let length = q.length;
    let offset = q.offset;
    // (In the detached task: it persists what arrives and runs the exchange even if the
    // connection is cut.)
    let streamed = stream_piece(
        storage,
        id,
        hash,
        length,
        offset,
        held,
        body,
        st.body_timeout,
    )
    .await?;
    if streamed.state.is_some_and(|x| x.received == x.length) {
        return match finish(st.clone(), principal, hash, processing_wait(q.wait)).await? {
            Some(out) => respond(&st, &out, 0).await,
            None => Ok(processing(length)),
        };
    }
    if streamed.too_large {
        return Err(ApiError::too_large(format!(
            "a piece is at most {MAX_UPLOAD_PIECE} bytes"
        )));
    }
    if streamed.cut {
        tracing::debug!(device = %id, "upload piece cut; bytes kept");
    }
    let mut e = status_error(ErrorCode::UploadIncomplete, streamed.state, "piece stored");
    e.status = StatusCode::ACCEPTED;
    Ok(e.into_response())
}

/// `GET /v3/sync/{h}?offset=R`.
pub async fn download(
    State(st): State<AppState>,
    Path(h): Path<String>,
    Query(q): Query<DownloadQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let r = download_from(st, h, q, uri, headers).await;
    crate::metrics::sync_finished(match &r {
        Ok(resp) => resp.status().as_u16(),
        Err(e) => e.status.as_u16(),
    });
    r
}

async fn download_from(
    st: AppState,
    h: String,
    q: DownloadQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let hash = parse_hash(&h)?;
    let pre = pre_authenticate(&st.storage, &headers).await?;
    let device =
        finish_authentication_hashed(&st.storage, pre, "GET", path_of(&uri), &hash).await?;
    let _slot = take_slot(&st, device.id)?;
    let storage = st.storage.clone();
    let id = device.id;
    let state = blocking(move || Ok(storage.upload_state(id, &hash)?)).await?;
    match state {
        Some(s) if s.response_len.is_some() || s.received == s.length => {
            let principal = Principal::from(&device);
            match finish(st.clone(), principal, hash, processing_wait(q.wait)).await? {
                Some(out) => respond(&st, &out, q.offset).await,
                None => Ok(processing(s.length)),
            }
        }
        other => Err(status_error(
            ErrorCode::UploadIncomplete,
            other,
            "the upload is not complete: continue it from `received`",
        )),
    }
}
