//! Strict Ed25519 for device keys: the server is the only verifier of device signatures, so the
//! strict rules live here.
//!
//! - [`check_public_key`] (at enrolment): the 32 bytes must be the canonical encoding of a curve
//!   point in the prime-order subgroup. A small-order key (the identity point, or one of the
//!   other 7 torsion points) is refused: for it, `R = identity, S = 0` "verifies" every message,
//!   so anyone who knows the device id could act as the device. A mixed-order key and a
//!   non-canonical encoding (y ≥ p) are refused too: an honest device never makes one.
//! - [`verify_strict`] (every request): `ed25519-dalek`'s `verify_strict`, which also refuses a
//!   weak key (so a key stored before enrolment checked them cannot be abused), a small-order
//!   `R`, and a non-canonical `S`.

use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::{Signature, VerifyingKey};
use followup_domain::identity::{canonical_string_hashed, SignedHeaders};

/// Why a public key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WeakKey {
    #[error("the public key is not a point on Ed25519")]
    NotAPoint,
    #[error("the public key is not canonically encoded")]
    NonCanonical,
    #[error("the public key is of small order (a weak key that would accept forged signatures)")]
    SmallOrder,
    #[error("the public key has a small-order component")]
    MixedOrder,
}

/// Check an enrolment public key (see the module documentation).
pub fn check_public_key(bytes: &[u8; 32]) -> Result<(), WeakKey> {
    let point = CompressedEdwardsY(*bytes)
        .decompress()
        .ok_or(WeakKey::NotAPoint)?;
    if point.compress().to_bytes() != *bytes {
        return Err(WeakKey::NonCanonical);
    }
    if point.is_small_order() {
        return Err(WeakKey::SmallOrder);
    }
    if !point.is_torsion_free() {
        return Err(WeakKey::MixedOrder);
    }
    Ok(())
}

/// Verify a signed request strictly. `false` for any failure, including a weak stored key.
pub fn verify_strict(
    public_key: &[u8],
    method: &str,
    path: &str,
    body: &[u8],
    h: &SignedHeaders,
) -> bool {
    let mut hash = [0u8; 32];
    hash.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, body).as_ref());
    verify_strict_hashed(public_key, method, path, &hash, h)
}

/// [`verify_strict`] against the SHA-256 that the signature's canonical string carries, given
/// directly (protocol version 3's resumable routes sign the whole upload's hash).
pub fn verify_strict_hashed(
    public_key: &[u8],
    method: &str,
    path: &str,
    body_hash: &[u8; 32],
    h: &SignedHeaders,
) -> bool {
    let Ok(pk) = <[u8; 32]>::try_from(public_key) else {
        return false;
    };
    if check_public_key(&pk).is_err() {
        return false;
    }
    let Ok(key) = VerifyingKey::from_bytes(&pk) else {
        return false;
    };
    let Ok(sig) = Signature::from_slice(&h.signature) else {
        return false;
    };
    let msg = canonical_string_hashed(method, path, h.device, h.timestamp_ms, &h.nonce, body_hash);
    key.verify_strict(msg.as_bytes(), &sig).is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use followup_domain::identity::DeviceIdentity;
    use followup_domain::ids::DeviceId;

    #[test]
    fn honest_keys_pass_and_sign() {
        let (id, _) = DeviceIdentity::generate().unwrap();
        check_public_key(&id.public_key()).unwrap();
        let dev = DeviceId::random();
        let h = id.sign_request(dev, "POST", "/v1/sync", b"body", 1);
        assert!(verify_strict(
            &id.public_key(),
            "POST",
            "/v1/sync",
            b"body",
            &h
        ));
        assert!(!verify_strict(
            &id.public_key(),
            "POST",
            "/v1/sync",
            b"bodx",
            &h
        ));
        assert!(!verify_strict(&[1, 2, 3], "POST", "/v1/sync", b"body", &h));
    }

    #[test]
    fn weak_and_non_canonical_keys_are_refused() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(check_public_key(&identity), Err(WeakKey::SmallOrder));
        // The point of order 2: y = -1.
        let mut order2 = [0xffu8; 32];
        order2[0] = 0xec;
        order2[31] = 0x7f;
        assert_eq!(check_public_key(&order2), Err(WeakKey::SmallOrder));
        // y = p is a non-canonical encoding of y = 0.
        let mut y_is_p = [0xffu8; 32];
        y_is_p[0] = 0xed;
        y_is_p[31] = 0x7f;
        assert!(matches!(
            check_public_key(&y_is_p),
            Err(WeakKey::NonCanonical) | Err(WeakKey::NotAPoint) | Err(WeakKey::SmallOrder)
        ));
        // An honest key plus a torsion point: mixed order.
        let (id, _) = DeviceIdentity::generate().unwrap();
        let p = CompressedEdwardsY(id.public_key()).decompress().unwrap();
        let t = CompressedEdwardsY(order2).decompress().unwrap();
        let mixed = (p + t).compress().to_bytes();
        assert_eq!(check_public_key(&mixed), Err(WeakKey::MixedOrder));
        // The forged signature R = identity, S = 0 never verifies for the identity key.
        let (other, _) = DeviceIdentity::generate().unwrap();
        let mut h = other.sign_request(DeviceId::random(), "POST", "/v1/sync", b"", 1);
        let mut forged = vec![0u8; 64];
        forged[0] = 1;
        h.signature = forged;
        assert!(!verify_strict(&identity, "POST", "/v1/sync", b"", &h));
    }
}
