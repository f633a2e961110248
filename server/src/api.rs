//! HTTP routes and handlers.
//!
//! | route | auth | body |
//! |---|---|---|
//! | `GET /health` | none | JSON [`HealthResponse`] |
//! | `POST /v1/enrol` | one-time code | JSON [`EnrolRequest`] → [`EnrolResponse`] |
//! | `POST /v1/sync` | device signature | binary [`SyncRequest`] → [`SyncResponse`] |
//! | `POST /v1/admin/clinics` | admin token | JSON [`CreateClinicRequest`] → [`CreateClinicResponse`] |
//! | `POST /v1/admin/enrolment-codes` | admin token | JSON [`IssueEnrolmentCodeRequest`] → [`IssueEnrolmentCodeResponse`] |
//! | `POST /v1/admin/devices/{id}/revoke` | admin token | → [`RevokeDeviceResponse`] |
//! | `GET /v1/admin/audit/verify` | admin token | → [`AuditVerifyResponse`] |
//! | `GET /v1/admin/stats` | admin token | → [`StatsResponse`] |
//! | `POST /v1/admin/definitions[?state=draft]` | admin token | a definition file (JSON) → `PublishResponse`; validated strictly, published (or drafted) |
//! | `GET /v1/admin/definitions` | admin token | → `[DefinitionSummary]`, drafts included |
//! | `GET /v1/admin/definitions/{type}/{id}/{version}` | admin token | → the definition file as published |
//! | `POST /v1/admin/definitions/{type}/{id}/{version}/retire` | admin token | → `PublishResponse` |
//! | `GET /v1/admin/cases?clinic=ID&state=S` | admin token | → [`CasesResponse`] (refreshed to the registry's clock) |
//! | `POST /v1/admin/cases/{id}/escalate` | admin token | JSON [`CaseNoteRequest`] → [`CaseSummary`] (`id`: the case or its adverse event) |
//! | `POST /v1/admin/cases/{id}/close` | admin token | JSON [`CaseNoteRequest`] → [`CaseSummary`] |
//! | `GET /v1/admin/duplicate-study-codes[?clinic=ID]` | admin token | → [`DuplicateStudyCodesResponse`] (study codes enrolled twice in one clinic) |
//! | `GET /v1/admin/export?format=csv\|fhir[&clinic=ID][&since=YYYY-MM-DD][&identified=true]` | admin token | → a zip, streamed ([`crate::export`]) |
//! | `/v1/admin/clinic-users`, `/v1/users`, `/v1/users/activate` | admin token / device signature | clinic users on shared tablets ([`crate::users`]) |

use std::sync::Arc;

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ROOT};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use followup_domain::identity::parse_public_key;
use followup_domain::ids::{random_bytes, DeviceId, RecordId};
use followup_domain::model::{DocHeader, RecordKind};
use followup_domain::protocol::{
    decode_sync_request, encode_body_with_level, registry_actor, CreateClinicRequest,
    CreateClinicResponse, DeviceRole, EnrolRequest, EnrolResponse, EnrolmentGrant, ErrorCode,
    HealthResponse, IssueEnrolmentCodeRequest, IssueEnrolmentCodeResponse, RevokeDeviceResponse,
    ENROL_PATH, SUPPORTED_VERSIONS, SYNC_CONTENT_TYPE, SYNC_PATH, SYNC_RESUMABLE_PATH,
    ZSTD_LEVEL_SERVER,
};
use ring::digest::{digest, SHA256};
use serde::de::DeserializeOwned;

use crate::anchor::{Anchor, SignedHead, HEADER_AUDIT_HEAD};
use crate::audit::{self, event};
use crate::auth::{finish_authentication, now_ms, pre_authenticate, AdminToken};
use crate::authz::Principal;
use crate::cases;
use crate::error::ApiError;
use crate::guard::{self, DeviceSlots, RouteLimiter};
use crate::storage::{ClinicRow, DocWrite, EnrolmentCode, NewDevice, Storage};
use crate::sync::{self, SyncLimits};
use followup_domain::model::CaseState;
use followup_domain::protocol::{
    CaseNoteRequest, CaseSummary, CasesResponse, DuplicateStudyCodesResponse,
};

/// Shared state of the handlers (no registry state: everything lives in the database; only
/// per-process guards — rate limiters, in-flight counts — are in memory).
#[derive(Clone)]
pub struct AppState {
    /// The registry's clock for adjudication deadlines and case times.
    pub clock: crate::clock::RegistryClock,
    pub storage: Arc<dyn Storage>,
    pub admin: AdminToken,
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub limits: SyncLimits,
    /// Time allowed to receive a request body.
    pub body_timeout: std::time::Duration,
    /// Sync requests one device may have in flight.
    pub max_syncs_per_device: u32,
    pub slots: DeviceSlots,
    pub enrol_limiter: RouteLimiter,
    pub admin_limiter: RouteLimiter,
    /// Signs the audit head returned with every sync (see [`crate::anchor`]).
    pub anchor: Option<Arc<Anchor>>,
    /// The staff console's settings (participation rules, session and throttling policies).
    pub console: crate::console::ConsoleConfig,
}

/// Largest JSON body (enrolment, admin).
const MAX_JSON_BODY: usize = 64 * 1024;

/// Default and maximum lifetime of an enrolment code.
const DEFAULT_CODE_TTL_SECS: u64 = 24 * 3600;
const MAX_CODE_TTL_SECS: u64 = 30 * 24 * 3600;
/// Crockford base32: no I, L, O, U; easy to read aloud and type.
const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The router.
pub fn router(state: AppState) -> Router {
    let enrol_routes =
        Router::new()
            .route(ENROL_PATH, post(enrol))
            .route_layer(middleware::from_fn_with_state(
                state.enrol_limiter.clone(),
                guard::rate_limit,
            ));
    let admin_routes = Router::new()
        .route("/v1/admin/clinics", post(create_clinic))
        .route("/v1/admin/enrolment-codes", post(issue_code))
        .route("/v1/admin/devices/{id}/revoke", post(revoke_device))
        .route("/v1/admin/audit/verify", get(verify_audit))
        .route("/v1/admin/stats", get(stats))
        .route(
            "/v1/admin/definitions",
            get(crate::definitions::http::list).post(crate::definitions::http::publish),
        )
        .route(
            "/v1/admin/definitions/{definition}/{id}/{version}",
            get(crate::definitions::http::content),
        )
        .route(
            "/v1/admin/definitions/{definition}/{id}/{version}/retire",
            post(crate::definitions::http::retire),
        )
        .route("/v1/admin/cases", get(list_cases))
        .route("/v1/admin/cases/{id}/escalate", post(escalate_case))
        .route("/v1/admin/cases/{id}/close", post(close_case))
        .route(
            "/v1/admin/duplicate-study-codes",
            get(duplicate_study_codes),
        )
        .route("/v1/admin/export", get(export))
        .merge(crate::users::admin_router())
        .route_layer(middleware::from_fn_with_state(
            state.admin_limiter.clone(),
            guard::rate_limit,
        ));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi))
        .route(SYNC_PATH, post(sync_handler))
        .merge(crate::users::device_router())
        .route(
            &format!("{SYNC_RESUMABLE_PATH}/{{hash}}"),
            post(crate::resumable::upload).get(crate::resumable::download),
        )
        .merge(enrol_routes)
        .merge(admin_routes)
        .merge(crate::console::router())
        .fallback(|| async { ApiError::not_found(ErrorCode::NotFound, "no such route") })
        // Bodies are read with an explicit limit in each handler (with a JSON error).
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// Refuse a body whose declared length is over `limit` before reading any of it.
pub(crate) fn check_declared_length(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => Err(ApiError::too_large(format!(
            "the request body exceeds {limit} bytes"
        ))),
        _ => Ok(()),
    }
}

/// Read a body of at most `limit` bytes within `timeout`.
async fn read_body_timed(
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<axum::body::Bytes, ApiError> {
    match tokio::time::timeout(timeout, read_body(body, limit)).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::BadRequest,
            format!(
                "the request body did not arrive within {} s",
                timeout.as_secs()
            ),
        )),
    }
}

pub(crate) async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        // http-body-util's LengthLimitError ("length limit exceeded") somewhere in the chain.
        let mut too_large = false;
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = cur {
            too_large |= err.to_string().contains("length limit");
            cur = err.source();
        }
        if too_large {
            ApiError::too_large(format!("the request body exceeds {limit} bytes"))
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"))
        }
    })
}

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedBody,
            format!("invalid JSON body: {e}"),
        )
    })
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await?
}

async fn health() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
        server_version: env!("CARGO_PKG_VERSION").into(),
        protocol_versions: SUPPORTED_VERSIONS.to_vec(),
    })
}

pub(crate) fn normalise_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        })
        .collect()
}

pub(crate) fn code_hash(normalised: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, normalised.as_bytes()).as_ref());
    out
}

/// A new 12-character code (60 random bits), shown as `XXXX-XXXX-XXXX`.
pub(crate) fn new_code() -> String {
    let bits = u64::from_le_bytes(random_bytes::<8>());
    let mut s = String::with_capacity(14);
    for i in 0..12 {
        if i > 0 && i % 4 == 0 {
            s.push('-');
        }
        let idx = ((bits >> (i * 5)) & 31) as usize;
        s.push(char::from(CODE_ALPHABET[idx]));
    }
    s
}

/// `GET /ready`: 200 when the database answers, 503 otherwise (for load balancers and
/// orchestrators; `/health` only says the process is alive).
async fn ready(State(st): State<AppState>) -> Response {
    let storage = st.storage.clone();
    let probe = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::task::spawn_blocking(move || storage.max_seq()),
    )
    .await;
    match probe {
        Ok(Ok(Ok(_))) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        _ => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "the database does not answer",
        )
        .into_response(),
    }
}

/// `GET /metrics`: Prometheus text exposition ([`crate::metrics`]).
async fn metrics_text() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::render(),
    )
        .into_response()
}

/// `GET /openapi.json`: the OpenAPI document of the JSON routes.
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::DOCUMENT,
    )
        .into_response()
}

async fn enrol(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<EnrolResponse>, ApiError> {
    check_declared_length(&headers, MAX_JSON_BODY)?;
    let bytes = read_body_timed(body, MAX_JSON_BODY, st.body_timeout).await?;
    let req: EnrolRequest = parse_json(&bytes)?;
    let public_key =
        parse_public_key(&req.public_key).map_err(|e| ApiError::bad_request(e.to_string()))?;
    // Strict keys: a small-order, mixed-order or non-canonical key is refused.
    crate::keys::check_public_key(&public_key).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if req.label.as_ref().is_some_and(|l| l.len() > 200) {
        return Err(ApiError::bad_request(
            "the label is longer than 200 characters",
        ));
    }
    let hash = code_hash(&normalise_code(&req.code));
    let new = NewDevice {
        id: DeviceId::random(),
        public_key,
        label: req.label,
    };
    let storage = st.storage.clone();
    let now = now_ms();
    let device = blocking(move || Ok(storage.redeem_enrolment_code(&hash, &new, now)?))
        .await?
        .ok_or_else(|| {
            tracing::warn!("enrolment with an invalid, used or expired code");
            ApiError::not_found(
                ErrorCode::InvalidCode,
                "this enrolment code is unknown, already used or expired",
            )
        })?;
    tracing::info!(device = %device.id, role = device.role.as_str(), clinic = %device.clinic, "device enrolled");
    Ok(Json(EnrolResponse {
        device_id: device.id,
        role: device.role,
        clinic: device.clinic,
        patient: device.patient,
        server_time_ms: now,
    }))
}

async fn sync_handler(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let r = sync_exchange(st, headers, body).await;
    crate::metrics::sync_finished(match &r {
        Ok(resp) => resp.status().as_u16(),
        Err(e) => e.status.as_u16(),
    });
    r
}

async fn sync_exchange(st: AppState, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
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
    check_declared_length(&headers, st.max_body_bytes)?;
    // The device and the timestamp from the headers, before a byte of the body is read.
    let pre = pre_authenticate(&st.storage, &headers).await?;
    let _slot = st
        .slots
        .try_take(pre.device.id, st.max_syncs_per_device)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::Unavailable,
                format!(
                    "this device already has {} syncs in progress; wait for them",
                    st.max_syncs_per_device
                ),
            )
        })?;
    let bytes = read_body_timed(body, st.max_body_bytes, st.body_timeout).await?;
    let device = finish_authentication(&st.storage, pre, "POST", SYNC_PATH, &bytes).await?;
    let started = std::time::Instant::now();
    let storage = st.storage.clone();
    let max = st.max_decompressed_bytes;
    let limits = st.limits;
    let principal = Principal::from(&device);
    let clock = st.clock.clone();
    let anchor = st.anchor.clone();
    let (resp_bytes, stats, head) = blocking(move || {
        let req = decode_sync_request(&bytes, max)?;
        let resp = sync::run(storage.as_ref(), &principal, &req, &limits, clock.now_ms())?;
        let accepted = resp
            .results
            .iter()
            .filter(|r| matches!(r, followup_domain::protocol::PushResult::Accepted { .. }))
            .count();
        let out = encode_body_with_level(&resp, ZSTD_LEVEL_SERVER)?;
        let head = match &anchor {
            Some(a) => signed_audit_head(storage.as_ref(), a),
            None => None,
        };
        Ok((
            out,
            (
                req.push.len(),
                accepted,
                resp.pull.len(),
                resp.cursor,
                resp.more,
                bytes.len(),
            ),
            head,
        ))
    })
    .await?;
    let (pushed, accepted, pulled, cursor, more, req_len) = stats;
    crate::metrics::sync_served(device.id, req_len, resp_bytes.len(), started.elapsed());
    tracing::info!(
        device = %device.id,
        pushed, accepted, pulled, cursor, more,
        request_bytes = req_len,
        response_bytes = resp_bytes.len(),
        ms = started.elapsed().as_millis() as u64,
        "sync"
    );
    let mut resp = ([(header::CONTENT_TYPE, SYNC_CONTENT_TYPE)], resp_bytes).into_response();
    if let Some(v) = head.and_then(|h| header::HeaderValue::from_str(&h).ok()) {
        resp.headers_mut().insert(HEADER_AUDIT_HEAD, v);
    }
    Ok(resp)
}

/// The audit chain's head, signed, and appended to the anchor log when new. Failures are logged
/// and leave the response without a head: the sync itself succeeded.
pub(crate) fn signed_audit_head(storage: &dyn Storage, anchor: &Anchor) -> Option<String> {
    let head = match storage.audit_head() {
        Ok(Some(h)) => h,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(%e, "cannot read the audit head");
            return None;
        }
    };
    let signed = anchor.sign(head.0, head.1, now_ms());
    if let Err(e) = anchor.record(&signed) {
        tracing::error!(%e, "cannot append to the audit anchor log");
    }
    Some(signed.encode())
}

/// The clinic record document, authored by the registry.
fn clinic_document(
    id: RecordId,
    req: &CreateClinicRequest,
) -> Result<Automerge, automerge::AutomergeError> {
    let mut doc = automerge::AutoCommit::new().with_actor(registry_actor());
    doc.put(ROOT, "id", id.to_hex())?;
    doc.put(ROOT, "kind", RecordKind::Clinic.code())?;
    doc.put(ROOT, "clinic", id.to_hex())?;
    doc.put(ROOT, "created_by", "registry")?;
    let body = doc.put_object(ROOT, "body", ObjType::Map)?;
    doc.put(&body, "name", req.name.as_str())?;
    doc.put(&body, "country", req.country.as_str())?;
    doc.put_object(&body, "accreditations", ObjType::List)?;
    doc.put(&body, "participation", "invited")?;
    doc.commit();
    Ok(doc.document().clone())
}

async fn create_clinic(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<CreateClinicResponse>), ApiError> {
    st.admin.check(&headers)?;
    check_declared_length(&headers, MAX_JSON_BODY)?;
    let bytes = read_body_timed(body, MAX_JSON_BODY, st.body_timeout).await?;
    let req: CreateClinicRequest = parse_json(&bytes)?;
    let storage = st.storage.clone();
    let id = blocking(move || create_clinic_record(storage.as_ref(), req, now_ms())).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreateClinicResponse { clinic: id }),
    ))
}

/// Check a new clinic's name and country, then create the clinic and its record document
/// (the admin API and the console's "invite a clinic" both come here). Blocking.
pub(crate) fn create_clinic_record(
    storage: &dyn Storage,
    req: CreateClinicRequest,
    now_ms: i64,
) -> Result<RecordId, ApiError> {
    let name = req.name.trim();
    if name.is_empty() || name.len() > 300 {
        return Err(ApiError::bad_request(
            "the clinic name must be 1 to 300 characters",
        ));
    }
    let country = req.country.trim();
    if country.len() != 2 || !country.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(ApiError::bad_request(
            "the country must be an ISO 3166-1 alpha-2 code",
        ));
    }
    let req = CreateClinicRequest {
        name: name.to_string(),
        country: country.to_ascii_uppercase(),
    };
    let id = RecordId::random();
    let doc = clinic_document(id, &req).map_err(|e| ApiError::internal("clinic document", e))?;
    let header = DocHeader {
        id,
        kind: RecordKind::Clinic,
        clinic: id,
        patient: None,
        created_by: None,
    };
    let write = DocWrite {
        header: header.clone(),
        bytes: doc.save(),
        heads: doc.get_heads(),
        expected_version: None,
        device: None,
        new_changes: doc.get_changes(&[]).iter().map(|c| c.hash()).collect(),
        event: event::CLINIC_CREATED,
        users: Vec::new(),
        projection: Some(crate::readmodel::project_for_write(&doc, &header)),
    };
    let row = ClinicRow {
        id,
        name: req.name,
        country: req.country,
    };
    storage.create_clinic(&row, &write, now_ms)?;
    tracing::info!(clinic = %id, "clinic created");
    Ok(id)
}

async fn issue_code(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<IssueEnrolmentCodeResponse>), ApiError> {
    st.admin.check(&headers)?;
    check_declared_length(&headers, MAX_JSON_BODY)?;
    let bytes = read_body_timed(body, MAX_JSON_BODY, st.body_timeout).await?;
    let req: IssueEnrolmentCodeRequest = parse_json(&bytes)?;
    let storage = st.storage.clone();
    let resp = blocking(move || {
        issue_enrolment_code(storage.as_ref(), req.grant, req.expires_in_secs, now_ms())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(resp)))
}

/// Issue a one-time enrolment code for a clinic's tablet or a patient's phone (the admin API and
/// the console both come here). Blocking.
pub(crate) fn issue_enrolment_code(
    storage: &dyn Storage,
    grant: EnrolmentGrant,
    expires_in_secs: Option<u64>,
    now: i64,
) -> Result<IssueEnrolmentCodeResponse, ApiError> {
    let ttl = expires_in_secs.unwrap_or(DEFAULT_CODE_TTL_SECS);
    if ttl == 0 || ttl > MAX_CODE_TTL_SECS {
        return Err(ApiError::bad_request(format!(
            "expires_in_secs must be between 1 and {MAX_CODE_TTL_SECS}"
        )));
    }
    let expires_at_ms = now.saturating_add(i64::try_from(ttl * 1000).unwrap_or(i64::MAX));
    let code = new_code();
    let hash = code_hash(&normalise_code(&code));
    let (role, clinic, patient) = match grant {
        EnrolmentGrant::ClinicDevice { clinic } => {
            if !storage.clinic_exists(clinic)? {
                return Err(ApiError::not_found(
                    ErrorCode::NotFound,
                    format!("no clinic {clinic}"),
                ));
            }
            (DeviceRole::ClinicDevice, clinic, None)
        }
        EnrolmentGrant::PatientDevice { patient } => {
            let h = storage
                .doc_header(patient)?
                .filter(|h| h.kind == RecordKind::Enrolment)
                .ok_or_else(|| {
                    ApiError::not_found(
                        ErrorCode::NotFound,
                        format!(
                            "no enrolment {patient} on the registry yet (sync the clinic's device first)"
                        ),
                    )
                })?;
            (DeviceRole::PatientDevice, h.clinic, Some(patient))
        }
    };
    storage.insert_enrolment_code(
        &EnrolmentCode {
            code_hash: hash,
            role,
            clinic,
            patient,
            expires_at_ms,
        },
        now,
    )?;
    tracing::info!(role = role.as_str(), clinic = %clinic, "enrolment code issued");
    Ok(IssueEnrolmentCodeResponse {
        code,
        expires_at_ms,
        role,
        clinic,
        patient,
    })
}

async fn revoke_device(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RevokeDeviceResponse>, ApiError> {
    st.admin.check(&headers)?;
    let id: DeviceId = id
        .parse()
        .map_err(|e: followup_domain::ids::InvalidId| ApiError::bad_request(e.to_string()))?;
    let storage = st.storage.clone();
    let (newly, at) = blocking(move || Ok(storage.revoke_device(id, now_ms())?))
        .await?
        .ok_or_else(|| ApiError::not_found(ErrorCode::NotFound, format!("no device {id}")))?;
    tracing::info!(device = %id, newly, "device revoked");
    Ok(Json(RevokeDeviceResponse {
        device_id: id,
        newly_revoked: newly,
        revoked_at_ms: at,
    }))
}

/// `GET /v1/admin/audit/verify[?witness=<signed head>]`: the chain, then the anchored heads (the
/// anchor log's last one, and a witness head copied from a device or an earlier answer).
async fn verify_audit(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<VerifyQuery>,
) -> Result<Json<followup_domain::protocol::AuditVerifyResponse>, ApiError> {
    st.admin.check(&headers)?;
    let mut heads = Vec::new();
    if let Some(w) = q.witness.as_deref() {
        heads.push(SignedHead::parse(w).ok_or_else(|| {
            ApiError::bad_request(
                "the witness is not a signed audit head (seq.hash.time.signature)",
            )
        })?);
    }
    let storage = st.storage.clone();
    let anchor = st.anchor.clone();
    let r = blocking(move || match anchor {
        Some(a) => {
            if let Some(h) = a
                .last_logged_head()
                .map_err(|e| ApiError::internal("audit anchor log", e))?
            {
                heads.insert(0, h);
            }
            Ok(audit::verify_anchored(
                storage.as_ref(),
                &a.public_key(),
                &heads,
            )?)
        }
        None => Ok(audit::verify(storage.as_ref())?),
    })
    .await?;
    if !r.ok {
        tracing::error!(problem = ?r.problem, "audit chain verification failed");
    }
    Ok(Json(r))
}

/// Query of `GET /v1/admin/audit/verify`.
#[derive(Debug, serde::Deserialize)]
pub struct VerifyQuery {
    pub witness: Option<String>,
}

async fn stats(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<followup_domain::protocol::StatsResponse>, ApiError> {
    st.admin.check(&headers)?;
    let storage = st.storage.clone();
    Ok(Json(blocking(move || Ok(storage.stats()?)).await?))
}

/// `GET /v1/admin/cases` filters.
#[derive(Debug, serde::Deserialize)]
struct CasesQuery {
    clinic: Option<String>,
    state: Option<String>,
}

async fn list_cases(
    State(st): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<CasesQuery>,
) -> Result<Json<CasesResponse>, ApiError> {
    st.admin.check(&headers)?;
    let clinic = q
        .clinic
        .map(|c| c.parse::<RecordId>())
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("clinic: {e}")))?;
    let state = q
        .state
        .map(|s| {
            CaseState::from_code(&s).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "state {s:?} is not a case state: use open, responded, overdue, escalated, disputed or closed"
                ))
            })
        })
        .transpose()?;
    let storage = st.storage.clone();
    let now = st.clock.now_ms();
    let list = blocking(move || Ok(cases::list(storage.as_ref(), clinic, state, now)?)).await?;
    Ok(Json(CasesResponse { cases: list }))
}

/// `GET /v1/admin/duplicate-study-codes` filter.
#[derive(Debug, serde::Deserialize)]
struct ClinicFilter {
    clinic: Option<String>,
}

async fn duplicate_study_codes(
    State(st): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<ClinicFilter>,
) -> Result<Json<DuplicateStudyCodesResponse>, ApiError> {
    st.admin.check(&headers)?;
    let clinic = q
        .clinic
        .map(|c| c.parse::<RecordId>())
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("clinic: {e}")))?;
    let storage = st.storage.clone();
    let duplicates = blocking(move || {
        Ok(crate::readmodel::duplicates::duplicate_study_codes(
            storage.as_ref(),
            clinic,
        )?)
    })
    .await?;
    Ok(Json(DuplicateStudyCodesResponse { duplicates }))
}

/// Longest escalation or closing note.
const MAX_NOTE: usize = 2000;

async fn case_note(
    st: &AppState,
    headers: &HeaderMap,
    id: &str,
    body: Body,
) -> Result<(RecordId, String), ApiError> {
    st.admin.check(headers)?;
    let id: RecordId = id
        .parse()
        .map_err(|e: followup_domain::ids::InvalidId| ApiError::bad_request(e.to_string()))?;
    let bytes = read_body(body, 64 * 1024).await?;
    let req: CaseNoteRequest = parse_json(&bytes)?;
    let note = req.note.trim().to_string();
    if note.is_empty() || note.chars().count() > MAX_NOTE {
        return Err(ApiError::bad_request(format!(
            "the note must be 1 to {MAX_NOTE} characters"
        )));
    }
    Ok((id, note))
}

fn case_error(e: cases::CaseActionError) -> ApiError {
    match e {
        cases::CaseActionError::NotFound(id) => ApiError::not_found(
            ErrorCode::NotFound,
            format!("no adjudication case for {id} (give the case's or its adverse event's id)"),
        ),
        cases::CaseActionError::Closed => ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::BadRequest,
            "the case is closed",
        ),
        cases::CaseActionError::Storage(e) => e.into(),
    }
}

async fn escalate_case(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<CaseSummary>, ApiError> {
    let (id, note) = case_note(&st, &headers, &id, body).await?;
    let storage = st.storage.clone();
    let now = st.clock.now_ms();
    let summary =
        blocking(move || cases::escalate(storage.as_ref(), id, &note, now).map_err(case_error))
            .await?;
    tracing::info!(case = %summary.case, "case escalated");
    Ok(Json(summary))
}

async fn close_case(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<CaseSummary>, ApiError> {
    let (id, note) = case_note(&st, &headers, &id, body).await?;
    let storage = st.storage.clone();
    let now = st.clock.now_ms();
    let summary =
        blocking(move || cases::close(storage.as_ref(), id, &note, now).map_err(case_error))
            .await?;
    tracing::info!(case = %summary.case, "case closed");
    Ok(Json(summary))
}

/// `GET /v1/admin/export`: the admin token acts as a registry administrator (automation and the
/// CLI's `followup server export`). Authorized and audited before the first byte; then the zip
/// streams as it is produced.
async fn export(
    State(st): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<crate::export::http::ExportQuery>,
) -> Result<Response, ApiError> {
    st.admin.check(&headers)?;
    let request = q.request()?;
    let requester = crate::export::Requester {
        who: "admin-token".into(),
        role: crate::export::StaffRole::RegistryAdmin,
    };
    let storage = st.storage.clone();
    let plan = blocking(move || {
        Ok(crate::export::begin_export(
            storage.as_ref(),
            &requester,
            request,
            now_ms(),
        )?)
    })
    .await?;
    let disposition = crate::export::http::content_disposition(&plan);
    let body = crate::export::http::zip_body(
        st.storage.clone(),
        Arc::new(crate::export::ShippedDefinitions),
        plan,
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_readable_and_normalise() {
        let c = new_code();
        assert_eq!(c.len(), 14);
        let n = normalise_code(&c.to_lowercase());
        assert_eq!(n.len(), 12);
        assert_eq!(normalise_code("ab0o-1Il"), "AB00111");
        assert_ne!(new_code(), new_code());
    }
}
