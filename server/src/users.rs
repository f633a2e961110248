//! Clinic users on shared tablets, the registry's side (`docs/security.md`, "Users on a shared
//! tablet"; messages in [`followup_domain::users`]).
//!
//! | route | auth | body |
//! |---|---|---|
//! | `POST /v1/admin/clinic-users` | admin token | [`CreateClinicUserRequest`] → [`CreateClinicUserResponse`] (the activation code, once) |
//! | `GET /v1/admin/clinic-users?clinic=ID` | admin token | → `[ClinicUserRow]` |
//! | `POST /v1/admin/clinic-users/{id}/remove` | admin token | → [`ClinicUserRow`] |
//! | `POST /v1/users/activate` | device signature | [`ActivateUserRequest`] → [`ClinicUserInfo`] |
//! | `POST /v1/users` | device signature | `{}` → [`ClinicUsersResponse`] |
//!
//! Rules the push path enforces ([`check_change_users`]): a change whose message names a user
//! (`u:<id>`) is accepted only from a clinic device, for a user of that device's clinic who is
//! not removed and who was activated on that very device. Anything else refuses the whole
//! document (`foreign_actor` on the wire, `user_not_enrolled` in the message and the server's
//! rejections table). The users of every accepted change are written into its audit entry, in
//! the order of each one's last change (the last is the user who wrote last: the read model's
//! `rm_records.last_user`).

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use followup_domain::ids::{DeviceId, RecordId, UserId};
use followup_domain::model::{change_user, ChangeUser};
use followup_domain::protocol::{DeviceRole, ErrorCode};
use followup_domain::users::{
    ActivateUserRequest, ClinicDeviceInfo, ClinicUserInfo, ClinicUserRow, ClinicUsersResponse,
    CreateClinicUserRequest, CreateClinicUserResponse, ACTIVATION_CODE_TTL_MS, USERS_PATH,
    USER_ACTIVATE_PATH,
};

use crate::api::{blocking, code_hash, new_code, normalise_code, parse_json, read_body, AppState};
use crate::audit::AuditEntry;
use crate::auth::{authenticate, now_ms};
use crate::authz::Principal;
use crate::error::ApiError;
use crate::storage::{Storage, StorageResult};

/// Audit event names of this module.
pub mod event {
    pub const USER_CREATED: &str = "user_created";
    pub const USER_ACTIVATED: &str = "user_activated";
    pub const USER_REMOVED: &str = "user_removed";
}

/// The rejection code recorded on the server for a change attributed to a user who may not
/// make it (the wire carries `foreign_actor`, which every protocol version knows).
pub const USER_NOT_ENROLLED: &str = "user_not_enrolled";

/// A clinic user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: UserId,
    pub clinic: RecordId,
    pub name: String,
    /// SHA-256 of the normalised activation code.
    pub code_hash: [u8; 32],
    pub code_expires_ms: i64,
    pub created_at_ms: i64,
    pub removed_at_ms: Option<i64>,
}

/// Persistence of clinic users and their activations (SQLite and PostgreSQL).
pub trait ClinicUserStore {
    /// Store a new user (audited).
    fn insert_clinic_user(&self, user: &UserRecord, audit: &AuditEntry) -> StorageResult<()>;
    /// One user.
    fn clinic_user(&self, id: UserId) -> StorageResult<Option<UserRecord>>;
    /// Every user of a clinic, removed ones included, oldest first.
    fn clinic_users(&self, clinic: RecordId) -> StorageResult<Vec<UserRecord>>;
    /// Mark a user removed (audited); `false` if unknown or already removed.
    fn remove_clinic_user(
        &self,
        id: UserId,
        now_ms: i64,
        audit: &AuditEntry,
    ) -> StorageResult<bool>;
    /// Record that `user` was activated on `device` (audited once); `false` if it already was.
    fn activate_user(
        &self,
        user: UserId,
        device: DeviceId,
        now_ms: i64,
        audit: &AuditEntry,
    ) -> StorageResult<bool>;
    /// The devices a user was activated on.
    fn user_devices(&self, user: UserId) -> StorageResult<Vec<DeviceId>>;
}

/// The admin routes of this module (merged into [`crate::api::router`]'s rate-limited admin
/// routes).
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/clinic-users", post(create_user).get(list_users))
        .route("/v1/admin/clinic-users/{id}/remove", post(remove_user))
}

/// The device routes of this module (signed like a sync request).
pub fn device_router() -> Router<AppState> {
    Router::new()
        .route(USER_ACTIVATE_PATH, post(activate))
        .route(USERS_PATH, post(device_users))
}

fn row(storage: &dyn Storage, u: UserRecord) -> StorageResult<ClinicUserRow> {
    Ok(ClinicUserRow {
        devices: storage.user_devices(u.id)?,
        id: u.id,
        clinic: u.clinic,
        name: u.name,
        created_at_ms: u.created_at_ms,
        removed_at_ms: u.removed_at_ms,
    })
}

fn user_audit(
    event: &str,
    device: Option<DeviceId>,
    clinic: RecordId,
    detail: String,
    at_ms: i64,
) -> AuditEntry {
    AuditEntry {
        at_ms,
        event: event.to_string(),
        device,
        doc: Some(clinic),
        log_seq: None,
        change_hashes: vec![],
        detail,
    }
}

/// Create a clinic user and their activation code (blocking; the admin API comes here).
pub fn create_clinic_user(
    storage: &dyn Storage,
    clinic: RecordId,
    name: &str,
    now_ms: i64,
) -> Result<CreateClinicUserResponse, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 80 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "a user's name must be 1 to 80 characters without control characters",
        ));
    }
    if !storage.clinic_exists(clinic)? {
        return Err(ApiError::not_found(
            ErrorCode::NotFound,
            format!("no clinic {clinic}"),
        ));
    }
    let code = new_code();
    let user = UserRecord {
        id: UserId::random(),
        clinic,
        name: name.to_string(),
        code_hash: code_hash(&normalise_code(&code)),
        code_expires_ms: now_ms + ACTIVATION_CODE_TTL_MS,
        created_at_ms: now_ms,
        removed_at_ms: None,
    };
    let audit = user_audit(
        event::USER_CREATED,
        None,
        clinic,
        format!("user={}", user.id),
        now_ms,
    );
    storage.insert_clinic_user(&user, &audit)?;
    tracing::info!(user = %user.id, clinic = %clinic, "clinic user created");
    Ok(CreateClinicUserResponse {
        user: user.id,
        activation_code: code,
        expires_at_ms: user.code_expires_ms,
    })
}

async fn create_user(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<CreateClinicUserResponse>), ApiError> {
    st.admin.check(&headers)?;
    let bytes = read_body(body, 64 * 1024).await?;
    let req: CreateClinicUserRequest = parse_json(&bytes)?;
    let storage = st.storage.clone();
    let resp =
        blocking(move || create_clinic_user(storage.as_ref(), req.clinic, &req.name, now_ms()))
            .await?;
    Ok((StatusCode::CREATED, Json(resp)))
}

#[derive(serde::Deserialize)]
struct ListQuery {
    clinic: RecordId,
}

async fn list_users(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<ClinicUserRow>>, ApiError> {
    st.admin.check(&headers)?;
    let storage = st.storage.clone();
    let rows = blocking(move || {
        let s = storage.as_ref();
        Ok(s.clinic_users(q.clinic)?
            .into_iter()
            .map(|u| row(s, u))
            .collect::<StorageResult<Vec<_>>>()?)
    })
    .await?;
    Ok(Json(rows))
}

async fn remove_user(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ClinicUserRow>, ApiError> {
    st.admin.check(&headers)?;
    let id: UserId = id
        .parse()
        .map_err(|e: followup_domain::ids::InvalidId| ApiError::bad_request(e.to_string()))?;
    let storage = st.storage.clone();
    let out = blocking(move || {
        let s = storage.as_ref();
        let Some(user) = s.clinic_user(id)? else {
            return Err(ApiError::not_found(
                ErrorCode::NotFound,
                format!("no user {id}"),
            ));
        };
        let now = now_ms();
        let audit = user_audit(
            event::USER_REMOVED,
            None,
            user.clinic,
            format!("user={id}"),
            now,
        );
        s.remove_clinic_user(id, now, &audit)?;
        let user = s.clinic_user(id)?.unwrap_or(user);
        Ok(row(s, user)?)
    })
    .await?;
    tracing::info!(user = %id, "clinic user removed");
    Ok(Json(out))
}

fn invalid_activation() -> ApiError {
    // One answer for every reason, so the endpoint tells nothing about which users exist.
    ApiError::forbidden(
        ErrorCode::InvalidCode,
        "the user id and activation code do not match a current user of this device's clinic; \
         ask the clinic's coordinator for a new code",
    )
}

async fn activate(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ClinicUserInfo>, ApiError> {
    let bytes = read_body(body, 64 * 1024).await?;
    let device = authenticate(&st.storage, &headers, "POST", USER_ACTIVATE_PATH, &bytes).await?;
    let req: ActivateUserRequest = parse_json(&bytes)?;
    let storage = st.storage.clone();
    let info = blocking(move || {
        let s = storage.as_ref();
        if device.role != DeviceRole::ClinicDevice {
            return Err(invalid_activation());
        }
        let Some(user) = s.clinic_user(req.user)? else {
            return Err(invalid_activation());
        };
        let now = now_ms();
        let hash = code_hash(&normalise_code(&req.code));
        let code_ok: bool = subtle::ConstantTimeEq::ct_eq(&hash[..], &user.code_hash[..]).into();
        if !code_ok
            || user.clinic != device.clinic
            || user.removed_at_ms.is_some()
            || now > user.code_expires_ms
        {
            tracing::warn!(device = %device.id, user = %req.user, "user activation refused");
            return Err(invalid_activation());
        }
        let audit = user_audit(
            event::USER_ACTIVATED,
            Some(device.id),
            user.clinic,
            format!("user={}", user.id),
            now,
        );
        s.activate_user(user.id, device.id, now, &audit)?;
        tracing::info!(device = %device.id, user = %user.id, "user activated on a device");
        Ok(ClinicUserInfo {
            id: user.id,
            name: user.name,
            active: true,
        })
    })
    .await?;
    Ok(Json(info))
}

async fn device_users(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ClinicUsersResponse>, ApiError> {
    let bytes = read_body(body, 4 * 1024).await?;
    let device = authenticate(&st.storage, &headers, "POST", USERS_PATH, &bytes).await?;
    let storage = st.storage.clone();
    let answer = blocking(move || {
        if device.role != DeviceRole::ClinicDevice {
            return Ok(ClinicUsersResponse {
                users: Vec::new(),
                devices: Vec::new(),
            });
        }
        let users = storage
            .clinic_users(device.clinic)?
            .into_iter()
            .map(|u| ClinicUserInfo {
                id: u.id,
                active: u.removed_at_ms.is_none(),
                name: u.name,
            })
            .collect();
        Ok(ClinicUsersResponse {
            users,
            devices: clinic_devices(storage.as_ref(), device.clinic)?,
        })
    })
    .await?;
    Ok(Json(answer))
}

/// The devices of a clinic for its tablets: id, role, label (tablets only) and whether revoked.
fn clinic_devices(storage: &dyn Storage, clinic: RecordId) -> StorageResult<Vec<ClinicDeviceInfo>> {
    Ok(storage
        .rm_query(
            "SELECT id, role, label, revoked_at_ms FROM devices WHERE clinic = $1
             ORDER BY enrolled_at_ms, id",
            &[crate::readmodel::Val::from(clinic)],
        )?
        .into_iter()
        .filter_map(|row| {
            let id = row.first()?.device_id()?;
            let role = DeviceRole::from_code(row.get(1)?.text()?)?;
            let label = match role {
                DeviceRole::ClinicDevice => row.get(2).and_then(|v| v.text()).map(str::to_string),
                DeviceRole::PatientDevice => None,
            };
            Some(ClinicDeviceInfo {
                id,
                role,
                label,
                revoked: row.get(3).is_some_and(|v| !v.is_null()),
            })
        })
        .collect())
}

/// The users new changes are attributed to, once each is checked: for a clinic device, every
/// user named must belong to its clinic, not be removed, and have been activated on this very
/// device. `Err(message)` refuses the document. `cache` keeps verdicts within one push.
pub fn check_change_users(
    storage: &dyn Storage,
    p: &Principal,
    changes: &[(automerge::ChangeHash, Option<String>)],
    cache: &mut HashMap<UserId, Result<(), String>>,
) -> StorageResult<Result<Vec<UserId>, String>> {
    // In the order of each user's last change in the write, so that the last one is the user
    // who wrote last (the read model's `last_user`; the audit detail keeps this order).
    let mut users: Vec<UserId> = Vec::new();
    for (hash, message) in changes {
        match change_user(message.as_deref()) {
            ChangeUser::None => {}
            ChangeUser::Malformed => {
                return Ok(Err(format!(
                    "{USER_NOT_ENROLLED}: change {hash} carries a message that is not a user \
                     attribution"
                )))
            }
            ChangeUser::User(u) => {
                users.retain(|x| *x != u);
                users.push(u);
            }
        }
    }
    for u in &users {
        let verdict = match cache.get(u) {
            Some(v) => v.clone(),
            None => {
                let v = user_may_write(storage, p, *u)?;
                cache.insert(*u, v.clone());
                v
            }
        };
        if let Err(m) = verdict {
            return Ok(Err(m));
        }
    }
    Ok(Ok(users))
}

fn user_may_write(
    storage: &dyn Storage,
    p: &Principal,
    u: UserId,
) -> StorageResult<Result<(), String>> {
    let refuse = |why: &str| Ok(Err(format!("{USER_NOT_ENROLLED}: user {u} {why}")));
    if p.role != DeviceRole::ClinicDevice {
        return refuse("cannot write from a patient's phone (a phone has no clinic users)");
    }
    let Some(user) = storage.clinic_user(u)? else {
        return refuse("is not known to the registry");
    };
    if user.clinic != p.clinic {
        return refuse("is not a user of this device's clinic");
    }
    if user.removed_at_ms.is_some() {
        return refuse("was removed from the clinic");
    }
    if !storage.user_devices(u)?.contains(&p.device) {
        return refuse("was never activated on this device");
    }
    Ok(Ok(()))
}

/// The audit detail naming the users of an accepted write (empty when none).
pub fn audit_detail(users: &[UserId]) -> String {
    if users.is_empty() {
        return String::new();
    }
    let ids: Vec<String> = users.iter().map(UserId::to_hex).collect();
    format!("users={}", ids.join(","))
}

/// The users an audit entry's detail names ([`audit_detail`]).
pub fn users_in_detail(detail: &str) -> Vec<UserId> {
    detail
        .split(';')
        .filter_map(|part| part.trim().strip_prefix("users="))
        .flat_map(|list| list.split(','))
        .filter_map(|id| id.parse().ok())
        .collect()
}

/// The code recorded in the server's rejections table: [`USER_NOT_ENROLLED`] for a refused
/// user attribution, the wire code's name otherwise.
pub fn rejection_code(code: followup_domain::protocol::RejectCode, message: &str) -> &'static str {
    if code == followup_domain::protocol::RejectCode::ForeignActor
        && message.starts_with(USER_NOT_ENROLLED)
    {
        USER_NOT_ENROLLED
    } else {
        code.as_str()
    }
}
