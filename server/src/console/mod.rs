//! The registry staff console (`/console`) and the public participation page (`/participation`).
//!
//! Server-rendered HTML (askama templates in `server/templates/console/`), readable without
//! JavaScript; htmx (embedded, see [`assets`]) only swaps result tables in place when filters
//! change. Every page reads the read model (`crate::readmodel::query`) with the signed-in staff
//! member's clinic scope, so a clinic coordinator's pages cannot contain another clinic's rows;
//! a request naming another clinic's clinic, patient or event is answered 403.
//!
//! Sessions and CSRF: see [`crate::staff`] and `docs/registry-console.md`. Every POST carries the
//! session's CSRF token in a hidden `csrf` field, compared in constant time before anything runs.

pub mod assets;
pub mod charts;
mod names;
mod pager;
mod pages;
pub mod participation;

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use followup_domain::ids::RecordId;

use crate::api::AppState;
use crate::staff::{self, SessionPolicy, StaffError, StaffMember, ThrottlePolicy};
use crate::storage::StorageError;

pub use participation::Rules;

/// The session cookie (`HttpOnly; Secure; SameSite=Strict`, path `/console`).
pub const SESSION_COOKIE: &str = "followup_session";
/// The sign-in form's CSRF cookie (double submit, before there is a session).
pub const LOGIN_COOKIE: &str = "followup_login";

/// The console's settings.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    pub rules: Arc<Rules>,
    pub sessions: SessionPolicy,
    pub throttle: ThrottlePolicy,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            rules: Arc::new(Rules::builtin()),
            sessions: SessionPolicy::default(),
            throttle: ThrottlePolicy::default(),
        }
    }
}

/// The console's routes (merged into the API router).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/participation", get(pages::participation))
        .route("/console/assets/{name}", get(assets::serve))
        .route("/console/login", get(pages::login_form).post(pages::login))
        .route(
            "/console/set-password",
            get(pages::set_password_form).post(pages::set_password),
        )
        .route("/console/logout", post(pages::logout))
        .route("/console", get(pages::overview))
        .route("/console/", get(pages::overview))
        .route(
            "/console/clinics",
            get(pages::clinics).post(pages::invite_clinic),
        )
        .route("/console/clinics/{id}", get(pages::clinic))
        .route("/console/clinics/{id}/codes", post(pages::issue_code))
        .route("/console/clinics/{id}/events", post(pages::clinic_event))
        .route("/console/followup", get(pages::followup))
        .route("/console/adverse-events", get(pages::ae_queue))
        .route("/console/adverse-events/{id}", get(pages::ae_detail))
        .route("/console/adverse-events/{id}/notes", post(pages::ae_note))
        .route("/console/patients", get(pages::find_patient))
        .route("/console/patients/{id}", get(pages::timeline))
        .route("/console/devices", get(pages::devices))
        .route("/console/devices/{id}/revoke", post(pages::revoke_device))
        .route("/console/audit", get(pages::audit))
        .route(
            "/console/export",
            get(pages::export_form).post(pages::export_download),
        )
        .route(
            "/console/staff",
            get(pages::staff_list).post(pages::add_staff),
        )
}

/// The client's address, for sign-in throttling (`unknown` when the server was not started with
/// connection info).
pub struct ClientIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string())
                .unwrap_or_else(|| "unknown".into()),
        ))
    }
}

/// A console failure, answered as an HTML page.
#[derive(Debug)]
pub enum ConsoleError {
    /// No valid session: go to the sign-in page.
    SignIn,
    Forbidden(String),
    NotFound(String),
    BadRequest(String),
    /// A POST without the session's CSRF token.
    Csrf,
    Busy,
    Internal(String),
}

impl From<StorageError> for ConsoleError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Busy => ConsoleError::Busy,
            other => {
                tracing::error!(error = %other, "console: storage error");
                ConsoleError::Internal("storage".into())
            }
        }
    }
}

impl From<StaffError> for ConsoleError {
    fn from(e: StaffError) -> Self {
        match e {
            StaffError::Storage(s) => s.into(),
            StaffError::Hash(h) => {
                tracing::error!(error = %h, "console: password hashing");
                ConsoleError::Internal("password hashing".into())
            }
            other => ConsoleError::BadRequest(other.to_string()),
        }
    }
}

impl From<crate::error::ApiError> for ConsoleError {
    fn from(e: crate::error::ApiError) -> Self {
        match e.status {
            StatusCode::NOT_FOUND => ConsoleError::NotFound(e.body.message),
            StatusCode::BAD_REQUEST => ConsoleError::BadRequest(e.body.message),
            StatusCode::FORBIDDEN => ConsoleError::Forbidden(e.body.message),
            StatusCode::SERVICE_UNAVAILABLE => ConsoleError::Busy,
            _ => ConsoleError::Internal(e.body.message),
        }
    }
}

impl From<tokio::task::JoinError> for ConsoleError {
    fn from(e: tokio::task::JoinError) -> Self {
        tracing::error!(error = %e, "console: worker task");
        ConsoleError::Internal("worker task".into())
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
    css: String,
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            ConsoleError::SignIn => return Redirect::to("/console/login").into_response(),
            ConsoleError::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m.clone()),
            ConsoleError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m.clone()),
            ConsoleError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Cannot do that", m.clone()),
            ConsoleError::Csrf => (
                StatusCode::FORBIDDEN,
                "Form refused",
                "This form was not sent from a page of this console (its security token is \
                 missing or wrong). Go back, reload the page and send it again."
                    .to_string(),
            ),
            ConsoleError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                "The registry is busy; retry in a moment.".to_string(),
            ),
            ConsoleError::Internal(what) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Server error",
                format!("Something went wrong on the server ({what}); it has been logged."),
            ),
        };
        let page = ErrorPage {
            status: status.as_u16(),
            title,
            message: &message,
            css: assets::url("console.css"),
        };
        (status, html(page.render())).into_response()
    }
}

/// Headers every console page carries.
fn secure_headers(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// A rendered template as an HTML response (500 if rendering failed).
fn html(rendered: Result<String, askama::Error>) -> Response {
    let mut r = match rendered {
        Ok(body) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console: template");
            (StatusCode::INTERNAL_SERVER_ERROR, "template error").into_response()
        }
    };
    secure_headers(&mut r);
    r
}

/// The value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: `HttpOnly; Secure; SameSite=Strict`, path `/console`.
fn set_cookie(name: &str, value: &str, max_age_secs: i64) -> String {
    format!(
        "{name}={value}; Path=/console; Max-Age={max_age_secs}; HttpOnly; Secure; SameSite=Strict"
    )
}

/// The signed-in staff member of a request.
pub struct Ctx {
    pub staff: StaffMember,
    pub csrf: String,
    pub cookie: String,
}

impl Ctx {
    /// The clinic scope for a page asked about `requested` (a `?clinic=` filter or the clinic of
    /// the record asked for): a coordinator gets its own clinic, and 403 for any other.
    pub fn scope(&self, requested: Option<RecordId>) -> Result<Option<RecordId>, ConsoleError> {
        match (self.staff.clinic_scope(), requested) {
            (None, r) => Ok(r),
            (Some(own), None) => Ok(Some(own)),
            (Some(own), Some(r)) if r == own => Ok(Some(own)),
            (Some(_), Some(_)) => Err(ConsoleError::Forbidden(
                "This page belongs to another clinic; your account sees only your clinic.".into(),
            )),
        }
    }

    /// 403 unless the signed-in member may see clinic `c`.
    pub fn check_clinic(&self, c: RecordId) -> Result<(), ConsoleError> {
        self.scope(Some(c)).map(|_| ())
    }

    /// 403 unless a registry admin.
    pub fn require_admin(&self) -> Result<(), ConsoleError> {
        if self.staff.is_admin() {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden(
                "Only a registry admin may do this.".into(),
            ))
        }
    }

    /// 403 for clinic coordinators (registry-wide pages such as the audit log).
    pub fn require_registry(&self) -> Result<(), ConsoleError> {
        if self.staff.clinic_scope().is_none() {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden(
                "This page covers every clinic; your account sees only your clinic.".into(),
            ))
        }
    }

    /// 403 unless `given` is this session's CSRF token.
    pub fn check_csrf(&self, given: &str) -> Result<(), ConsoleError> {
        if staff::csrf_matches(&self.csrf, given) {
            Ok(())
        } else {
            tracing::warn!(staff = %self.staff.id, "console: form without a valid CSRF token");
            Err(ConsoleError::Csrf)
        }
    }
}

/// The session of a request, or [`ConsoleError::SignIn`].
pub async fn require_staff(st: &AppState, headers: &HeaderMap) -> Result<Ctx, ConsoleError> {
    let Some(token) = cookie(headers, SESSION_COOKIE)
        .filter(|t| t.len() == 64)
        .map(str::to_string)
    else {
        return Err(ConsoleError::SignIn);
    };
    let storage = st.storage.clone();
    let policy = st.console.sessions;
    let t = token.clone();
    let found = tokio::task::spawn_blocking(move || {
        staff::session_for(storage.as_ref(), &t, policy, crate::auth::now_ms())
    })
    .await??;
    match found {
        Some((staff, session)) => Ok(Ctx {
            staff,
            csrf: session.csrf,
            cookie: token,
        }),
        None => Err(ConsoleError::SignIn),
    }
}

/// Run blocking storage work.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ConsoleError> + Send + 'static,
) -> Result<T, ConsoleError> {
    tokio::task::spawn_blocking(f).await?
}

/// `1 event`, `3 events`: a count with its noun in the right number.
pub fn count(n: impl TryInto<i64>, one: &str, many: &str) -> String {
    let n: i64 = n.try_into().unwrap_or(i64::MAX);
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `2026-01-12 14:03 UTC`.
pub fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "?".into())
}

/// `2026-01-12`.
pub fn fmt_day(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "?".into())
}

/// The server's date (UTC), for due / overdue / missed.
pub fn today() -> chrono::NaiveDate {
    chrono::Utc::now().date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(count(1u64, "event", "events"), "1 event");
        assert_eq!(count(0usize, "event", "events"), "0 events");
        assert_eq!(count(2i64, "entry", "entries"), "2 entries");
        assert_eq!(count(-1i64, "day", "days"), "-1 days");
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; followup_session_x=2; followup_session=abc"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "a"), Some("1"));
        assert_eq!(cookie(&h, "b"), None);
        let c = set_cookie(SESSION_COOKIE, "v", 60);
        for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/console"] {
            assert!(c.contains(attr), "{c}");
        }
    }
}
