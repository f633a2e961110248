//! # followup-staff-client
//!
//! The one client of the registry server's admin HTTP API (`/v1/admin/…`, see
//! `server/src/api.rs`): create a clinic, issue an enrolment code, revoke a device, verify the
//! audit chain, read statistics, download an export. The CLI's staff commands, the demo, the bench and the
//! end-to-end tests all use it, so the admin API has exactly one client in the workspace.
//!
//! It holds no domain logic (that is `followup-domain`, whose wire types it sends) and must never
//! depend on the device crate or the server crate.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::sync::Arc;
use std::time::Duration;

use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::protocol::{
    AuditVerifyResponse, CaseNoteRequest, CaseSummary, CasesResponse, CreateClinicRequest,
    CreateClinicResponse, DuplicateStudyCode, DuplicateStudyCodesResponse, EnrolmentGrant,
    ErrorBody, IssueEnrolmentCodeRequest, IssueEnrolmentCodeResponse, RevokeDeviceResponse,
    StatsResponse,
};
use serde::de::DeserializeOwned;

/// What can go wrong talking to the admin API. Each message says what happened; the CLI adds
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum StaffClientError {
    /// No admin token was given.
    #[error("no admin token")]
    NoToken,
    /// The server URL is not an http(s) URL.
    #[error("{0:?} is not a server URL")]
    BadUrl(String),
    /// Plain `http://` to a host other than this machine: the admin token would travel in clear.
    #[error("{0} is plain http to another machine; the admin token must travel over https")]
    InsecureUrl(String),
    /// The TLS or HTTP client could not be set up.
    #[error("{0}")]
    Setup(String),
    /// The server did not answer in time.
    #[error("the registry at {0} did not answer in time")]
    Timeout(String),
    /// The server could not be reached.
    #[error("cannot reach the registry at {0}")]
    Unreachable(String),
    /// The request failed in transit.
    #[error("request to the registry at {base} failed: {message}")]
    Transport { base: String, message: String },
    /// The server answered with an error status.
    #[error("the registry refused ({status}): {message}")]
    Refused { status: u16, message: String },
    /// The server's answer could not be understood.
    #[error("the registry's answer is not what this version expects: {0}")]
    BadAnswer(String),
}

/// An HTTP client that speaks TLS with the Mozilla root set (and plain HTTP on loopback).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, StaffClientError> {
    http_client_with_roots(timeout, &[])
}

/// The same, also trusting the given CA certificates (DER), e.g. a registry's private CA. It
/// follows no redirect: an admin request is never redirected, and a redirect to plain http would
/// carry the token in clear.
pub fn http_client_with_roots(
    timeout: Duration,
    extra_roots_der: &[Vec<u8>],
) -> Result<reqwest::Client, StaffClientError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for der in extra_roots_der {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| StaffClientError::Setup(format!("a CA certificate is not usable: {e}")))?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StaffClientError::Setup(format!("TLS set-up failed: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| StaffClientError::Setup(format!("could not create the HTTP client: {e}")))
}

/// An admin API client for one registry server.
#[derive(Clone)]
pub struct StaffClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl std::fmt::Debug for StaffClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaffClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl StaffClient {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`) with the admin token.
    pub fn new(base: &str, token: Option<&str>) -> Result<StaffClient, StaffClientError> {
        Self::with_roots(base, token, &[])
    }

    /// The same, also trusting the given CA certificates (DER). Plain `http://` is refused
    /// unless the host is this machine (a loopback address or `localhost`).
    pub fn with_roots(
        base: &str,
        token: Option<&str>,
        extra_roots_der: &[Vec<u8>],
    ) -> Result<StaffClient, StaffClientError> {
        let token = token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(StaffClientError::NoToken)?
            .to_string();
        let base = base.trim_end_matches('/').to_string();
        let url = reqwest::Url::parse(&base).map_err(|_| StaffClientError::BadUrl(base.clone()))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => return Err(StaffClientError::InsecureUrl(base)),
            _ => return Err(StaffClientError::BadUrl(base)),
        }
        Ok(StaffClient {
            http: http_client_with_roots(Duration::from_secs(30), extra_roots_der)?,
            base,
            token,
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, StaffClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        let resp = req.send().await.map_err(|e| transport(&self.base, &e))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| StaffClientError::BadAnswer(format!("the answer was cut off: {e}")))?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            return Err(StaffClientError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| StaffClientError::BadAnswer(e.to_string()))
    }

    fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StaffClientError> {
        serde_json::to_vec(v)
            .map_err(|e| StaffClientError::Setup(format!("could not encode JSON: {e}")))
    }

    /// Register a clinic.
    pub async fn create_clinic(
        &self,
        name: &str,
        country: &str,
    ) -> Result<RecordId, StaffClientError> {
        let body = Self::json(&CreateClinicRequest {
            name: name.into(),
            country: country.into(),
        })?;
        let r: CreateClinicResponse = self
            .call(reqwest::Method::POST, "/v1/admin/clinics", Some(body))
            .await?;
        Ok(r.clinic)
    }

    /// Issue a one-time enrolment code.
    pub async fn issue_code(
        &self,
        grant: EnrolmentGrant,
        expires_in_secs: Option<u64>,
    ) -> Result<IssueEnrolmentCodeResponse, StaffClientError> {
        let body = Self::json(&IssueEnrolmentCodeRequest {
            grant,
            expires_in_secs,
        })?;
        self.call(
            reqwest::Method::POST,
            "/v1/admin/enrolment-codes",
            Some(body),
        )
        .await
    }

    /// Create a clinic user (a nurse who signs in on the clinic's tablets); the answer holds
    /// the one-time activation code to give them.
    pub async fn create_clinic_user(
        &self,
        clinic: RecordId,
        name: &str,
    ) -> Result<followup_domain::users::CreateClinicUserResponse, StaffClientError> {
        let body = Self::json(&followup_domain::users::CreateClinicUserRequest {
            clinic,
            name: name.into(),
        })?;
        self.call(reqwest::Method::POST, "/v1/admin/clinic-users", Some(body))
            .await
    }

    /// A clinic's users, removed ones included.
    pub async fn clinic_users(
        &self,
        clinic: RecordId,
    ) -> Result<Vec<followup_domain::users::ClinicUserRow>, StaffClientError> {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/admin/clinic-users?clinic={clinic}"),
            None,
        )
        .await
    }

    /// Remove a clinic user: their changes are refused from now on, and each tablet deletes
    /// their key slot at its next sync.
    pub async fn remove_clinic_user(
        &self,
        user: followup_domain::ids::UserId,
    ) -> Result<followup_domain::users::ClinicUserRow, StaffClientError> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/admin/clinic-users/{user}/remove"),
            None,
        )
        .await
    }

    /// Revoke a device.
    pub async fn revoke(&self, device: DeviceId) -> Result<RevokeDeviceResponse, StaffClientError> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/admin/devices/{device}/revoke"),
            None,
        )
        .await
    }

    /// Verify the audit chain.
    pub async fn verify_audit(&self) -> Result<AuditVerifyResponse, StaffClientError> {
        self.call(reqwest::Method::GET, "/v1/admin/audit/verify", None)
            .await
    }

    /// Verify the audit chain and a signed audit head kept by a device (its witness: see
    /// `followup_device::sync::audit_witness`).
    pub async fn verify_audit_with_witness(
        &self,
        witness: &str,
    ) -> Result<AuditVerifyResponse, StaffClientError> {
        let mut url = reqwest::Url::parse(&format!("{}/v1/admin/audit/verify", self.base))
            .map_err(|_| StaffClientError::BadUrl(self.base.clone()))?;
        url.query_pairs_mut().append_pair("witness", witness.trim());
        let path = format!("/v1/admin/audit/verify?{}", url.query().unwrap_or_default());
        self.call(reqwest::Method::GET, &path, None).await
    }

    /// Server statistics.
    pub async fn stats(&self) -> Result<StatsResponse, StaffClientError> {
        self.call(reqwest::Method::GET, "/v1/admin/stats", None)
            .await
    }

    /// Publish a definition file (validated strictly by the registry), or upload it as a draft
    /// that no device sees. Publishing a version again with the same content is a no-op.
    pub async fn publish_definition(
        &self,
        json: &str,
        draft: bool,
    ) -> Result<followup_domain::definitions::PublishResponse, StaffClientError> {
        let path = if draft {
            "/v1/admin/definitions?state=draft"
        } else {
            "/v1/admin/definitions"
        };
        self.call(reqwest::Method::POST, path, Some(json.as_bytes().to_vec()))
            .await
    }

    /// Every definition version the registry holds, drafts included.
    pub async fn definitions(
        &self,
    ) -> Result<Vec<followup_domain::definitions::DefinitionSummary>, StaffClientError> {
        self.call(reqwest::Method::GET, "/v1/admin/definitions", None)
            .await
    }

    /// Retire a published version: devices stop offering it for new responses.
    pub async fn retire_definition(
        &self,
        definition: &str,
        id: &str,
        version: &str,
    ) -> Result<followup_domain::definitions::PublishResponse, StaffClientError> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/admin/definitions/{definition}/{id}/{version}/retire"),
            None,
        )
        .await
    }

    /// Adjudication cases (of one clinic; in one state: `open`, `responded`, `overdue`,
    /// `escalated`, `disputed`, `closed`), at the registry's clock, earliest deadline first.
    pub async fn cases(
        &self,
        clinic: Option<RecordId>,
        state: Option<&str>,
    ) -> Result<Vec<CaseSummary>, StaffClientError> {
        let mut query = Vec::new();
        if let Some(c) = clinic {
            query.push(format!("clinic={c}"));
        }
        if let Some(s) = state {
            if !s.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                return Err(StaffClientError::Setup(format!(
                    "{s:?} is not a case state"
                )));
            }
            query.push(format!("state={s}"));
        }
        let path = if query.is_empty() {
            "/v1/admin/cases".to_string()
        } else {
            format!("/v1/admin/cases?{}", query.join("&"))
        };
        let r: CasesResponse = self.call(reqwest::Method::GET, &path, None).await?;
        Ok(r.cases)
    }

    /// Study codes enrolled twice in one clinic (two tablets offline), all clinics or one.
    pub async fn duplicate_study_codes(
        &self,
        clinic: Option<RecordId>,
    ) -> Result<Vec<DuplicateStudyCode>, StaffClientError> {
        let path = match clinic {
            Some(c) => format!("/v1/admin/duplicate-study-codes?clinic={c}"),
            None => "/v1/admin/duplicate-study-codes".to_string(),
        };
        let r: DuplicateStudyCodesResponse = self.call(reqwest::Method::GET, &path, None).await?;
        Ok(r.duplicates)
    }

    /// Escalate a case (given by its id or its adverse event's) with a note the clinic reads on
    /// its tablet after its next sync.
    pub async fn escalate(
        &self,
        id: RecordId,
        note: &str,
    ) -> Result<CaseSummary, StaffClientError> {
        let body = Self::json(&CaseNoteRequest { note: note.into() })?;
        self.call(
            reqwest::Method::POST,
            &format!("/v1/admin/cases/{id}/escalate"),
            Some(body),
        )
        .await
    }

    /// Close a case (a remedy agreed outside the app, a report withdrawn), saying why.
    pub async fn close_case(
        &self,
        id: RecordId,
        note: &str,
    ) -> Result<CaseSummary, StaffClientError> {
        let body = Self::json(&CaseNoteRequest { note: note.into() })?;
        self.call(
            reqwest::Method::POST,
            &format!("/v1/admin/cases/{id}/close"),
            Some(body),
        )
        .await
    }
    /// Download an export (`GET /v1/admin/export`): the zip is written to `out` as it arrives;
    /// returns its size in bytes. Exports of a large registry take minutes, so this request
    /// has its own, longer time limit.
    pub async fn export(
        &self,
        params: &ExportParams,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64, StaffClientError> {
        let mut query = format!("format={}", params.format);
        if let Some(c) = params.clinic {
            query.push_str(&format!("&clinic={c}"));
        }
        if let Some(s) = &params.since {
            if !s.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
                return Err(StaffClientError::Setup(format!(
                    "since {s:?} is not a date YYYY-MM-DD"
                )));
            }
            query.push_str(&format!("&since={s}"));
        }
        if params.identified {
            query.push_str("&identified=true");
        }
        let url = format!("{}/v1/admin/export?{query}", self.base);
        let http = http_client(EXPORT_TIMEOUT)?;
        let mut resp = http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| transport(&self.base, &e))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.unwrap_or_default();
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            return Err(StaffClientError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        let mut total = 0u64;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| StaffClientError::BadAnswer(format!("the export was cut off: {e}")))?
        {
            out.write_all(&chunk)
                .map_err(|e| StaffClientError::Setup(format!("could not write the export: {e}")))?;
            total += chunk.len() as u64;
        }
        Ok(total)
    }
}

/// The longest an export download may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(4 * 3600);

/// What to export (see `docs/export.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportParams {
    /// `csv` or `fhir`.
    pub format: String,
    /// One clinic, or the whole registry.
    pub clinic: Option<RecordId>,
    /// `YYYY-MM-DD`: only responses and adverse events changed since.
    pub since: Option<String>,
    /// Exact dates and free text (registry administrators only; audited).
    pub identified: bool,
}

/// Whether the URL's host is this machine.
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

fn transport(base: &str, e: &reqwest::Error) -> StaffClientError {
    if e.is_timeout() {
        StaffClientError::Timeout(base.to_string())
    } else if e.is_connect() {
        StaffClientError::Unreachable(base.to_string())
    } else {
        StaffClientError::Transport {
            base: base.to_string(),
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_refused_off_loopback() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:1/",
            "http://[::1]:9",
            "https://registry.example.org",
        ] {
            assert!(StaffClient::new(ok, Some("t")).is_ok(), "{ok}");
        }
        for bad in ["http://registry.example.org", "http://10.0.0.5:8080"] {
            assert!(
                matches!(
                    StaffClient::new(bad, Some("t")),
                    Err(StaffClientError::InsecureUrl(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn refuses_a_missing_token_and_a_non_url() {
        assert!(matches!(
            StaffClient::new("http://127.0.0.1:1", None),
            Err(StaffClientError::NoToken)
        ));
        assert!(matches!(
            StaffClient::new("http://127.0.0.1:1", Some("   ")),
            Err(StaffClientError::NoToken)
        ));
        assert!(matches!(
            StaffClient::new("127.0.0.1:1", Some("t")),
            Err(StaffClientError::BadUrl(_))
        ));
        let c = StaffClient::new("http://127.0.0.1:1/", Some("t")).unwrap();
        assert_eq!(c.base(), "http://127.0.0.1:1");
    }

    #[tokio::test]
    async fn a_server_that_is_not_there_is_reported_as_unreachable() {
        // Port 1 on loopback: nothing listens there.
        let c = StaffClient::new("http://127.0.0.1:1", Some("token")).unwrap();
        let e = c.stats().await.unwrap_err();
        assert!(matches!(e, StaffClientError::Unreachable(_)), "{e:?}");
    }
}
