//! The device's Ed25519 identity and request signing, shared by the sync client (which signs) and
//! the server (which verifies), so both build the same canonical string.
//!
//! A device generates its key pair once ([`DeviceIdentity::generate`]) and keeps the PKCS#8 bytes
//! among the encrypted store's secrets; the server learns the public key at enrolment.
//!
//! Canonical string (UTF-8, `\n`-separated, no trailing newline):
//!
//! ```text
//! FOLLOWUP-SIG-V1
//! <METHOD upper-case>
//! <path>
//! <device id hex>
//! <timestamp unix ms>
//! <nonce, 16 random bytes, hex>
//! <SHA-256 of the body, lower-case hex>
//! ```
//!
//! It travels in four headers ([`HEADER_DEVICE`], [`HEADER_TIMESTAMP`], [`HEADER_NONCE`],
//! [`HEADER_SIGNATURE`], the signature base64 standard padded). The freshness window
//! ([`MAX_CLOCK_SKEW_MS`]) and the nonce replay cache are the server's job.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::digest::{digest, SHA256};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use crate::ids::{random_bytes, DeviceId};

pub const HEADER_DEVICE: &str = "x-followup-device";
pub const HEADER_TIMESTAMP: &str = "x-followup-timestamp";
pub const HEADER_NONCE: &str = "x-followup-nonce";
pub const HEADER_SIGNATURE: &str = "x-followup-signature";

/// A signed request's timestamp may differ from the server's clock by at most this much.
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// Domain separation tag, first line of the canonical string.
const SIG_DOMAIN: &str = "FOLLOWUP-SIG-V1";

/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;

/// Errors of identity handling and signature checking.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("could not generate a device key")]
    KeyGeneration,
    #[error("the stored device key is invalid: {0}")]
    InvalidKey(String),
    #[error("the public key is invalid: expected {PUBLIC_KEY_LEN} bytes in base64")]
    InvalidPublicKey,
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("malformed header {header}: {reason}")]
    BadHeader {
        header: &'static str,
        reason: String,
    },
    #[error("the request signature does not verify")]
    BadSignature,
    #[error("the request timestamp is {skew_ms} ms away from the server's clock (allowed ±{MAX_CLOCK_SKEW_MS} ms)")]
    StaleTimestamp { skew_ms: i64 },
}

/// A device's signing identity.
pub struct DeviceIdentity {
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceIdentity(public {})",
            hex::encode(self.public_key())
        )
    }
}

impl DeviceIdentity {
    /// A new identity and its PKCS#8 v2 bytes (secret: keep them in the encrypted store).
    pub fn generate() -> Result<(DeviceIdentity, Vec<u8>), IdentityError> {
        let rng = SystemRandom::new();
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| IdentityError::KeyGeneration)?;
        let bytes = pkcs8.as_ref().to_vec();
        let id = Self::from_pkcs8(&bytes)?;
        Ok((id, bytes))
    }

    /// The identity from PKCS#8 bytes made by [`DeviceIdentity::generate`].
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<DeviceIdentity, IdentityError> {
        let key = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|e| IdentityError::InvalidKey(e.to_string()))?;
        Ok(DeviceIdentity { key })
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        let mut out = [0u8; PUBLIC_KEY_LEN];
        out.copy_from_slice(self.key.public_key().as_ref());
        out
    }

    /// The public key as sent in `EnrolRequest::public_key`.
    pub fn public_key_base64(&self) -> String {
        B64.encode(self.public_key())
    }

    /// Sign a request with a fresh random nonce.
    pub fn sign_request(
        &self,
        device: DeviceId,
        method: &str,
        path: &str,
        body: &[u8],
        timestamp_ms: i64,
    ) -> SignedHeaders {
        self.sign_request_with_nonce(device, method, path, body, timestamp_ms, random_bytes())
    }

    /// Sign a request whose canonical string carries `body_hash` (the SHA-256 of the whole
    /// upload) instead of the hash of its HTTP body: protocol version 3's resumable routes, where
    /// one upload travels in pieces and the server authenticates each request before reading it.
    pub fn sign_request_hashed(
        &self,
        device: DeviceId,
        method: &str,
        path: &str,
        body_hash: &[u8; 32],
        timestamp_ms: i64,
    ) -> SignedHeaders {
        let nonce: [u8; 16] = random_bytes();
        let msg = canonical_string_hashed(method, path, device, timestamp_ms, &nonce, body_hash);
        let signature = self.key.sign(msg.as_bytes()).as_ref().to_vec();
        SignedHeaders {
            device,
            timestamp_ms,
            nonce,
            signature,
        }
    }

    /// Sign a request with a given nonce (tests; a client always uses [`Self::sign_request`]).
    pub fn sign_request_with_nonce(
        &self,
        device: DeviceId,
        method: &str,
        path: &str,
        body: &[u8],
        timestamp_ms: i64,
        nonce: [u8; 16],
    ) -> SignedHeaders {
        let msg = canonical_string(method, path, device, timestamp_ms, &nonce, body);
        let signature = self.key.sign(msg.as_bytes()).as_ref().to_vec();
        SignedHeaders {
            device,
            timestamp_ms,
            nonce,
            signature,
        }
    }
}

/// The signature and its parameters, as carried in the four headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub device: DeviceId,
    pub timestamp_ms: i64,
    pub nonce: [u8; 16],
    pub signature: Vec<u8>,
}

impl SignedHeaders {
    /// `(header name, value)` pairs to add to the request.
    pub fn to_header_pairs(&self) -> [(&'static str, String); 4] {
        [
            (HEADER_DEVICE, self.device.to_hex()),
            (HEADER_TIMESTAMP, self.timestamp_ms.to_string()),
            (HEADER_NONCE, hex::encode(self.nonce)),
            (HEADER_SIGNATURE, B64.encode(&self.signature)),
        ]
    }

    /// Parse the headers; `get` returns a header's value by (lower-case) name.
    pub fn from_headers<'a>(
        get: impl Fn(&'static str) -> Option<&'a str>,
    ) -> Result<SignedHeaders, IdentityError> {
        let need = |h: &'static str| get(h).ok_or(IdentityError::MissingHeader(h));
        let bad = |header: &'static str, reason: &str| IdentityError::BadHeader {
            header,
            reason: reason.to_string(),
        };
        let device: DeviceId = need(HEADER_DEVICE)?
            .trim()
            .parse()
            .map_err(|_| bad(HEADER_DEVICE, "expected 32 hex characters"))?;
        let timestamp_ms: i64 = need(HEADER_TIMESTAMP)?
            .trim()
            .parse()
            .map_err(|_| bad(HEADER_TIMESTAMP, "expected unix milliseconds"))?;
        let mut nonce = [0u8; 16];
        hex::decode_to_slice(need(HEADER_NONCE)?.trim(), &mut nonce)
            .map_err(|_| bad(HEADER_NONCE, "expected 32 hex characters"))?;
        let signature = B64
            .decode(need(HEADER_SIGNATURE)?.trim())
            .map_err(|_| bad(HEADER_SIGNATURE, "expected base64"))?;
        if signature.len() != 64 {
            return Err(bad(
                HEADER_SIGNATURE,
                "expected a 64-byte Ed25519 signature",
            ));
        }
        Ok(SignedHeaders {
            device,
            timestamp_ms,
            nonce,
            signature,
        })
    }
}

/// The canonical string a request signature covers.
pub fn canonical_string(
    method: &str,
    path: &str,
    device: DeviceId,
    timestamp_ms: i64,
    nonce: &[u8; 16],
    body: &[u8],
) -> String {
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest(&SHA256, body).as_ref());
    canonical_string_hashed(method, path, device, timestamp_ms, nonce, &hash)
}

/// [`canonical_string`] from the body's SHA-256 (or, on protocol version 3's resumable routes,
/// the whole upload's).
pub fn canonical_string_hashed(
    method: &str,
    path: &str,
    device: DeviceId,
    timestamp_ms: i64,
    nonce: &[u8; 16],
    body_hash: &[u8; 32],
) -> String {
    let body_hash = hex::encode(body_hash);
    format!(
        "{SIG_DOMAIN}\n{}\n{path}\n{}\n{timestamp_ms}\n{}\n{body_hash}",
        method.to_ascii_uppercase(),
        device.to_hex(),
        hex::encode(nonce),
    )
}

/// Decode an enrolment public key (base64, 32 bytes).
pub fn parse_public_key(b64: &str) -> Result<[u8; PUBLIC_KEY_LEN], IdentityError> {
    let raw = B64
        .decode(b64.trim())
        .map_err(|_| IdentityError::InvalidPublicKey)?;
    <[u8; PUBLIC_KEY_LEN]>::try_from(raw.as_slice()).map_err(|_| IdentityError::InvalidPublicKey)
}

/// Check a request's signature against the device's public key. Freshness and replay are checked
/// separately ([`check_timestamp`] and the server's nonce cache).
pub fn verify_request(
    public_key: &[u8],
    method: &str,
    path: &str,
    body: &[u8],
    headers: &SignedHeaders,
) -> Result<(), IdentityError> {
    let msg = canonical_string(
        method,
        path,
        headers.device,
        headers.timestamp_ms,
        &headers.nonce,
        body,
    );
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(msg.as_bytes(), &headers.signature)
        .map_err(|_| IdentityError::BadSignature)
}

/// [`verify_request`] against a body hash given directly (see
/// [`DeviceIdentity::sign_request_hashed`]).
pub fn verify_request_hashed(
    public_key: &[u8],
    method: &str,
    path: &str,
    body_hash: &[u8; 32],
    headers: &SignedHeaders,
) -> Result<(), IdentityError> {
    let msg = canonical_string_hashed(
        method,
        path,
        headers.device,
        headers.timestamp_ms,
        &headers.nonce,
        body_hash,
    );
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(msg.as_bytes(), &headers.signature)
        .map_err(|_| IdentityError::BadSignature)
}

/// Check that a timestamp is within [`MAX_CLOCK_SKEW_MS`] of `now_ms`.
pub fn check_timestamp(timestamp_ms: i64, now_ms: i64) -> Result<(), IdentityError> {
    let skew_ms = timestamp_ms.saturating_sub(now_ms);
    if skew_ms.checked_abs().is_none_or(|a| a > MAX_CLOCK_SKEW_MS) {
        return Err(IdentityError::StaleTimestamp { skew_ms });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_round_trip_through_headers() {
        let (id, pkcs8) = DeviceIdentity::generate().unwrap();
        let again = DeviceIdentity::from_pkcs8(&pkcs8).unwrap();
        assert_eq!(id.public_key(), again.public_key());
        let dev = DeviceId::random();
        let body = b"hello";
        let signed = id.sign_request(dev, "post", "/v1/sync", body, 1_700_000_000_000);
        let pairs = signed.to_header_pairs();
        let parsed = SignedHeaders::from_headers(|name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        })
        .unwrap();
        assert_eq!(parsed, signed);
        let pk = parse_public_key(&id.public_key_base64()).unwrap();
        verify_request(&pk, "POST", "/v1/sync", body, &parsed).unwrap();
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let (id, _) = DeviceIdentity::generate().unwrap();
        let (other, _) = DeviceIdentity::generate().unwrap();
        let dev = DeviceId::random();
        let s = id.sign_request(dev, "POST", "/v1/sync", b"body", 1000);
        let pk = id.public_key();
        assert_eq!(
            verify_request(&pk, "POST", "/v1/sync", b"bodx", &s),
            Err(IdentityError::BadSignature)
        );
        assert!(verify_request(&pk, "POST", "/v1/enrol", b"body", &s).is_err());
        assert!(verify_request(&pk, "GET", "/v1/sync", b"body", &s).is_err());
        assert!(verify_request(&other.public_key(), "POST", "/v1/sync", b"body", &s).is_err());
        let mut t = s.clone();
        t.timestamp_ms += 1;
        assert!(verify_request(&pk, "POST", "/v1/sync", b"body", &t).is_err());
        let mut t = s.clone();
        t.nonce[0] ^= 1;
        assert!(verify_request(&pk, "POST", "/v1/sync", b"body", &t).is_err());
        let mut t = s.clone();
        t.device = DeviceId::random();
        assert!(verify_request(&pk, "POST", "/v1/sync", b"body", &t).is_err());
        // Garbage public key: an error, not a panic.
        assert!(verify_request(&[1, 2, 3], "POST", "/v1/sync", b"body", &s).is_err());
    }

    #[test]
    fn nonces_differ_and_headers_are_validated() {
        let (id, _) = DeviceIdentity::generate().unwrap();
        let dev = DeviceId::random();
        let a = id.sign_request(dev, "POST", "/p", b"", 1);
        let b = id.sign_request(dev, "POST", "/p", b"", 1);
        assert_ne!(a.nonce, b.nonce);
        assert_eq!(
            SignedHeaders::from_headers(|_| None),
            Err(IdentityError::MissingHeader(HEADER_DEVICE))
        );
        let r = SignedHeaders::from_headers(|h| match h {
            HEADER_DEVICE => Some("00"),
            _ => Some("x"),
        });
        assert!(matches!(r, Err(IdentityError::BadHeader { .. })));
        assert!(DeviceIdentity::from_pkcs8(b"not a key").is_err());
        assert!(parse_public_key("AAAA").is_err());
    }

    #[test]
    fn timestamp_window() {
        assert!(check_timestamp(1_000_000, 1_000_000 + MAX_CLOCK_SKEW_MS).is_ok());
        assert!(check_timestamp(1_000_000, 1_000_001 + MAX_CLOCK_SKEW_MS).is_err());
        assert!(check_timestamp(1_000_001 + MAX_CLOCK_SKEW_MS, 1_000_000).is_err());
        assert!(check_timestamp(i64::MIN, i64::MAX).is_err());
    }
}
