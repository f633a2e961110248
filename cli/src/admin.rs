//! A small client of the registry's admin HTTP API (see `server/src/api.rs`), used by the staff
//! commands and by the demo to set up its registry.

use std::sync::Arc;
use std::time::Duration;

use followup_core::ids::{DeviceId, RecordId};
use followup_core::protocol::{
    AuditVerifyResponse, CreateClinicRequest, CreateClinicResponse, EnrolmentGrant, ErrorBody,
    IssueEnrolmentCodeRequest, IssueEnrolmentCodeResponse, RevokeDeviceResponse, StatsResponse,
};
use serde::de::DeserializeOwned;

use crate::error::CliError;

/// An admin API client for one registry server.
#[derive(Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// An HTTP client that speaks TLS with the Mozilla root set (and plain HTTP on loopback).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, CliError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| CliError::new(format!("TLS set-up failed: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| CliError::new(format!("could not create the HTTP client: {e}")))
}

impl AdminClient {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`) with the admin token.
    pub fn new(base: &str, token: Option<&str>) -> Result<AdminClient, CliError> {
        let token = token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                CliError::new("no admin token")
                    .hint("set FOLLOWUP_ADMIN_TOKEN (or pass --admin-token) to the token the server was started with")
            })?
            .to_string();
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CliError::new(format!("{base:?} is not a server URL"))
                .hint("give it as http://host:port or https://host"));
        }
        Ok(AdminClient {
            http: http_client(Duration::from_secs(30))?,
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
    ) -> Result<T, CliError> {
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
        let resp = req.send().await.map_err(|e| unreachable(&self.base, &e))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CliError::new(format!("the registry's answer was cut off: {e}")))?;
        if !status.is_success() {
            return Err(server_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            CliError::new(format!(
                "the registry's answer is not what this version expects: {e}"
            ))
            .hint("check that the server and this command are the same version")
        })
    }

    fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, CliError> {
        serde_json::to_vec(v).map_err(|e| CliError::new(format!("could not encode JSON: {e}")))
    }

    /// Register a clinic.
    pub async fn create_clinic(&self, name: &str, country: &str) -> Result<RecordId, CliError> {
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
    ) -> Result<IssueEnrolmentCodeResponse, CliError> {
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

    /// Revoke a device.
    pub async fn revoke(&self, device: DeviceId) -> Result<RevokeDeviceResponse, CliError> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/admin/devices/{device}/revoke"),
            None,
        )
        .await
    }

    /// Verify the audit chain.
    pub async fn verify_audit(&self) -> Result<AuditVerifyResponse, CliError> {
        self.call(reqwest::Method::GET, "/v1/admin/audit/verify", None)
            .await
    }

    /// Server statistics.
    pub async fn stats(&self) -> Result<StatsResponse, CliError> {
        self.call(reqwest::Method::GET, "/v1/admin/stats", None)
            .await
    }
}

/// The error for a server that could not be reached.
pub fn unreachable(base: &str, e: &reqwest::Error) -> CliError {
    if e.is_timeout() {
        CliError::new(format!("the registry at {base} did not answer in time"))
            .hint("check the network and try again")
    } else if e.is_connect() {
        CliError::new(format!("cannot reach the registry at {base}"))
            .hint("check that the server is running and the URL (--server / FOLLOWUP_SERVER_URL) is right")
    } else {
        CliError::new(format!("request to the registry at {base} failed: {e}"))
    }
}

fn server_error(status: reqwest::StatusCode, bytes: &[u8]) -> CliError {
    let msg = serde_json::from_slice::<ErrorBody>(bytes)
        .map(|b| b.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).chars().take(200).collect());
    let e = CliError::new(format!("the registry refused ({status}): {msg}"));
    match status.as_u16() {
        401 | 403 => e.hint("check the admin token (FOLLOWUP_ADMIN_TOKEN)"),
        404 => e.hint("check the id you gave"),
        _ => e,
    }
}
