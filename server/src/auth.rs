//! Authentication: device request signatures (Ed25519 over the canonical string of
//! `followup_domain::identity`), the ±5 min freshness window, the nonce replay cache (a database
//! table, shared by every server process), revocation; and the administrators' bearer token.

use std::sync::Arc;

use axum::http::HeaderMap;
use followup_domain::identity::{check_timestamp, SignedHeaders, MAX_CLOCK_SKEW_MS};
use followup_domain::protocol::ErrorCode;
use ring::digest::{digest, SHA256};

use crate::error::ApiError;
use crate::storage::{DeviceRecord, Storage};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &'static str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// What the headers of a signed request establish before its body is read: the signature
/// parameters are well-formed, the timestamp is fresh, and the device is enrolled and not revoked.
/// Only then is the body read ([`finish_authentication`] checks the signature over it), so an
/// unsigned or unknown client never gets a body buffered.
#[derive(Debug, Clone)]
pub struct PreAuthenticated {
    pub device: DeviceRecord,
    signed: SignedHeaders,
}

/// Check a signed device request's headers (see [`PreAuthenticated`]).
pub async fn pre_authenticate(
    storage: &Arc<dyn Storage>,
    headers: &HeaderMap,
) -> Result<PreAuthenticated, ApiError> {
    let signed = SignedHeaders::from_headers(|name| header_str(headers, name)).map_err(|e| {
        ApiError::unauthenticated(ErrorCode::Unauthenticated, format!("unsigned request: {e}"))
    })?;
    let now = now_ms();
    check_timestamp(signed.timestamp_ms, now)
        .map_err(|e| ApiError::unauthenticated(ErrorCode::StaleTimestamp, e.to_string()))?;
    let st = storage.clone();
    let device_id = signed.device;
    let device = tokio::task::spawn_blocking(move || st.device(device_id))
        .await??
        .ok_or_else(|| {
            ApiError::unauthenticated(ErrorCode::UnknownDevice, "this device is not enrolled")
        })?;
    if device.revoked_at_ms.is_some() {
        tracing::warn!(device = %device.id, "revoked device refused");
        return Err(ApiError::forbidden(
            ErrorCode::DeviceRevoked,
            "this device has been revoked; enrol it again",
        ));
    }
    Ok(PreAuthenticated { device, signed })
}

/// Check the signature over the body, then the nonce; returns the device.
pub async fn finish_authentication(
    storage: &Arc<dyn Storage>,
    pre: PreAuthenticated,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<DeviceRecord, ApiError> {
    finish_authentication_hashed(storage, pre, method, path, &sha256(body)).await
}

/// [`finish_authentication`] for a request whose signature covers `body_hash` rather than the
/// hash of its HTTP body: the resumable routes of protocol version 3, where it is the SHA-256 of
/// the whole upload (named in the path), so the request is fully authenticated — signature and
/// nonce — before a byte of its body is read.
pub async fn finish_authentication_hashed(
    storage: &Arc<dyn Storage>,
    pre: PreAuthenticated,
    method: &str,
    path: &str,
    body_hash: &[u8; 32],
) -> Result<DeviceRecord, ApiError> {
    let PreAuthenticated { device, signed } = pre;
    // Strict verification: a weak stored key or a malleable signature never verifies.
    if !crate::keys::verify_strict_hashed(&device.public_key, method, path, body_hash, &signed) {
        tracing::warn!(device = %device.id, "bad request signature");
        return Err(ApiError::unauthenticated(
            ErrorCode::BadSignature,
            "the request signature does not verify",
        ));
    }
    // Nonces need be kept only as long as their timestamp is acceptable.
    let now = now_ms();
    let expires = signed.timestamp_ms.saturating_add(2 * MAX_CLOCK_SKEW_MS);
    let st = storage.clone();
    let nonce = signed.nonce;
    let device_id = device.id;
    let fresh =
        tokio::task::spawn_blocking(move || st.remember_nonce(device_id, &nonce, expires, now))
            .await??;
    if !fresh {
        tracing::warn!(device = %device.id, "replayed nonce refused");
        return Err(ApiError::unauthenticated(
            ErrorCode::ReplayedNonce,
            "this request was already received (replayed nonce); sign each request anew",
        ));
    }
    Ok(device)
}

/// Authenticate a signed device request whose body is already read; returns the device.
pub async fn authenticate(
    storage: &Arc<dyn Storage>,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<DeviceRecord, ApiError> {
    let pre = pre_authenticate(storage, headers).await?;
    finish_authentication(storage, pre, method, path, body).await
}

/// The configured admin token, kept as its SHA-256 so comparison time does not depend on how
/// much of a guess matches.
#[derive(Clone)]
pub struct AdminToken(Option<[u8; 32]>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "AdminToken(set)"
        } else {
            "AdminToken(none)"
        })
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, b).as_ref());
    out
}

impl AdminToken {
    pub fn new(token: Option<&str>) -> Self {
        AdminToken(token.map(|t| sha256(t.as_bytes())))
    }

    /// Check `Authorization: Bearer <token>`.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = self.0 else {
            return Err(ApiError::forbidden(
                ErrorCode::Forbidden,
                "the admin API is disabled (no admin token configured)",
            ));
        };
        let given = header_str(headers, "authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::unauthenticated(ErrorCode::Unauthenticated, "admin token required")
            })?;
        let given = sha256(given.trim().as_bytes());
        // Compare digests without early exit.
        let diff = given
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(ApiError::forbidden(
                ErrorCode::Forbidden,
                "wrong admin token",
            ));
        }
        Ok(())
    }
}
