//! Per-user key slots of a shared tablet (`docs/security.md`, "Users on a shared tablet").
//!
//! ```text
//!  user's PIN or passphrase ── PBKDF2-HMAC-SHA256 (600,000 iterations, 16-byte salt) ──┐
//!  device pepper (32 random bytes, wrapped by the platform key / device passphrase) ───┤
//!                                                                                        ▼
//!        HKDF-SHA256(salt = slot salt, IKM = PBKDF2 output ‖ pepper,
//!                    info = "followup/user-slot/v1" ‖ store id ‖ user id)  →  slot KEK
//!                                                                                        │
//!  data key ◄── AES-256-GCM, AAD = version ‖ store id ‖ user id ‖ 0 ‖ purpose 5 ‖ iterations
//! ```
//!
//! A PIN alone is too small to resist an offline search of a copied file, so the slot's key also
//! needs the pepper, which only the device key (in the platform keystore) releases. The slot is
//! bound to its store and to its user: a slot copied to another user id or store does not open.

use ring::hkdf;

use super::{
    aes_key, open_with, random_bytes, seal_with, wipe, Aad, CryptoError, DataKey, Purpose,
    SecretBytes, KEY_LEN, PBKDF2_ITERATIONS, PBKDF2_MAX_ITERATIONS, SALT_LEN,
};
use followup_domain::ids::{StoreId, UserId};

const HKDF_INFO: &[u8] = b"followup/user-slot/v1";

/// A user's PIN or passphrase, zeroed on drop, never printed.
pub struct UserPin {
    secret: super::Passphrase,
}

impl UserPin {
    /// A PIN or passphrase used with the default [`PBKDF2_ITERATIONS`].
    pub fn new(pin: impl Into<String>) -> Self {
        Self {
            secret: super::Passphrase::new(pin),
        }
    }

    /// **For tests and benchmarks only**: fewer PBKDF2 iterations than the default, so test
    /// suites are not slow. A slot made with it keeps that weak count; never for real data.
    pub fn with_iterations(pin: impl Into<String>, iterations: u32) -> Self {
        let mut secret = super::Passphrase::new(pin);
        secret.iterations = iterations.max(1);
        Self { secret }
    }

    /// The iteration count a new slot made with this PIN uses.
    pub fn iterations(&self) -> u32 {
        self.secret.iterations
    }

    /// The PIN's text (for the strength check).
    pub(crate) fn text(&self) -> &str {
        &self.secret.secret
    }
}

impl std::fmt::Debug for UserPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserPin(***)")
    }
}

/// The stored form of one user's slot: the data key wrapped under the user's slot key. Not
/// secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSlot {
    pub user: UserId,
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub wrapped: Vec<u8>,
}

/// A fresh random device pepper (32 bytes).
pub(crate) fn new_pepper() -> SecretBytes {
    let mut bytes: [u8; KEY_LEN] = random_bytes();
    let out = SecretBytes::new(bytes.to_vec());
    wipe(&mut bytes);
    out
}

/// The pepper as a [`DataKey`]-shaped value, so the existing key slot (platform key or device
/// passphrase) can wrap it.
pub(crate) fn pepper_as_key(pepper: &SecretBytes) -> Result<DataKey, CryptoError> {
    DataKey::from_bytes(pepper.expose())
}

/// The raw bytes of a pepper unwrapped from the store's key slot.
pub(crate) fn pepper_of(key: &DataKey) -> SecretBytes {
    SecretBytes::new(key.raw().to_vec())
}

fn aad(store: &StoreId, user: &UserId, iterations: u32) -> Aad {
    Aad::build(
        store,
        user.as_bytes(),
        0,
        Purpose::UserWrap,
        &iterations.to_be_bytes(),
    )
}

struct OkmLen;

impl hkdf::KeyType for OkmLen {
    fn len(&self) -> usize {
        KEY_LEN
    }
}

fn slot_kek(
    pin: &UserPin,
    pepper: &SecretBytes,
    store: &StoreId,
    user: &UserId,
    salt: &[u8],
    iterations: u32,
) -> Result<SecretBytes, CryptoError> {
    if iterations > PBKDF2_MAX_ITERATIONS {
        return Err(CryptoError::BadKeySlot(format!(
            "PBKDF2 iteration count {iterations} is out of range"
        )));
    }
    let stretched = pin.secret.derive_kek(salt, iterations)?;
    let mut ikm = Vec::with_capacity(2 * KEY_LEN);
    ikm.extend_from_slice(stretched.expose());
    ikm.extend_from_slice(pepper.expose());
    let ikm = SecretBytes::new(ikm);
    let mut info = Vec::with_capacity(HKDF_INFO.len() + 32);
    info.extend_from_slice(HKDF_INFO);
    info.extend_from_slice(store.as_bytes());
    info.extend_from_slice(user.as_bytes());
    let info_parts = [info.as_slice()];
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm.expose());
    let okm = prk
        .expand(&info_parts, OkmLen)
        .map_err(|_| CryptoError::BadKeySlot("key derivation failed".into()))?;
    let mut out = vec![0u8; KEY_LEN];
    okm.fill(&mut out)
        .map_err(|_| CryptoError::BadKeySlot("key derivation failed".into()))?;
    Ok(SecretBytes::new(out))
}

impl UserSlot {
    /// Wrap `key` (store `store`'s data key) for `user` with their PIN and the device pepper.
    pub fn wrap(
        user: UserId,
        pin: &UserPin,
        pepper: &SecretBytes,
        store: &StoreId,
        key: &DataKey,
    ) -> Result<Self, CryptoError> {
        let salt: [u8; SALT_LEN] = random_bytes();
        let iterations = pin.iterations();
        let kek = slot_kek(pin, pepper, store, &user, &salt, iterations)?;
        let wrapped = seal_with(
            &aes_key(kek.expose())?,
            aad(store, &user, iterations).as_bytes(),
            key.raw(),
        )?;
        Ok(UserSlot {
            user,
            iterations,
            salt: salt.to_vec(),
            wrapped,
        })
    }

    /// Unwrap the data key; [`CryptoError::WrongKey`] for a wrong PIN (or a slot moved to
    /// another user or store, or a wrong pepper).
    pub fn unwrap(
        &self,
        pin: &UserPin,
        pepper: &SecretBytes,
        store: &StoreId,
    ) -> Result<DataKey, CryptoError> {
        if self.salt.len() != SALT_LEN {
            return Err(CryptoError::BadKeySlot(
                "a user slot's salt is malformed".into(),
            ));
        }
        let kek = slot_kek(pin, pepper, store, &self.user, &self.salt, self.iterations)?;
        let raw = match open_with(
            &aes_key(kek.expose())?,
            aad(store, &self.user, self.iterations).as_bytes(),
            &self.wrapped,
        ) {
            Ok(raw) => SecretBytes::new(raw),
            Err(CryptoError::Authentication) => return Err(CryptoError::WrongKey),
            Err(e) => return Err(e),
        };
        DataKey::from_bytes(raw.expose())
    }
}

/// The default iteration count of a user slot (the same as a passphrase's).
pub const USER_SLOT_ITERATIONS: u32 = PBKDF2_ITERATIONS;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_slot_opens_with_its_pin_and_pepper_only() {
        let store = StoreId::random();
        let key = DataKey::generate();
        let pepper = new_pepper();
        let user = UserId::random();
        let pin = UserPin::with_iterations("482916", 10);
        let slot = UserSlot::wrap(user, &pin, &pepper, &store, &key).unwrap();
        let back = slot.unwrap(&pin, &pepper, &store).unwrap();
        assert_eq!(back.raw(), key.raw());
        let wrong = |r: Result<DataKey, CryptoError>| {
            assert_eq!(r.unwrap_err(), CryptoError::WrongKey);
        };
        wrong(slot.unwrap(&UserPin::with_iterations("482917", 10), &pepper, &store));
        // The PIN alone (another device's pepper) does not open it.
        wrong(slot.unwrap(&pin, &new_pepper(), &store));
        wrong(slot.unwrap(&pin, &pepper, &StoreId::random()));
        // Moved to another user, or with a doctored iteration count.
        let mut moved = slot.clone();
        moved.user = UserId::random();
        wrong(moved.unwrap(&pin, &pepper, &store));
        let mut doctored = slot.clone();
        doctored.iterations = 9;
        wrong(doctored.unwrap(&pin, &pepper, &store));
        assert_eq!(UserPin::new("x").iterations(), USER_SLOT_ITERATIONS);
        assert_eq!(format!("{pin:?}"), "UserPin(***)");
    }
}
