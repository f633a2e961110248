//! The key hierarchy of the on-device store.
//!
//! ```text
//!  platform key (Android Keystore / iOS Keychain, never leaves it)   or   passphrase
//!        │ KeyProvider::wrap / unwrap                                        │ PBKDF2-HMAC-SHA256,
//!        │                                                                   │ 600,000 iterations,
//!        │                                                                   │ 16-byte random salt
//!        ▼                                                                   ▼
//!  wrapped data key  ◄──────────────────────────────────────────  key-encryption key (KEK)
//!        │                                                      AES-256-GCM, AAD binds the store
//!        ▼
//!  data key: 32 random bytes, one per store, never written to disk unwrapped
//!        │ AES-256-GCM, 96-bit random nonce per ciphertext
//!        ▼
//!  every document chunk and every secret, with associated data binding
//!  version ‖ store id ‖ record id ‖ chunk number ‖ purpose ‖ (secret name)
//! ```
//!
//! * A [`KeySource`] is what the user or the platform supplies to open a store: a
//!   [`KeyProvider`] (a platform keystore that wraps and unwraps the data key, possibly without
//!   ever exposing its own key) or a [`Passphrase`].
//! * A [`KeySlot`] is the stored, wrapped form of the data key plus what is needed to unwrap it
//!   (method, platform key id, PBKDF2 salt and iteration count). Rotating the key replaces the
//!   slot only; no record is re-encrypted.
//! * A [`DataKey`] seals and opens ciphertexts. Every ciphertext is
//!   `version (1 byte) ‖ nonce (12 bytes) ‖ AES-256-GCM ciphertext ‖ tag (16 bytes)`, and its
//!   associated data ([`Aad`]) names where it belongs, so a ciphertext moved to another row,
//!   record, chunk, purpose or store fails to authenticate.
//!
//! Secrets in memory (the data key's bytes, passphrases) are zeroed when dropped, best effort:
//! ring's expanded AES key schedule and copies made by the platform are out of our reach.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{compiler_fence, Ordering};
use std::sync::Arc;

use ring::aead::{self, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::pbkdf2;

use followup_domain::ids::{random_bytes, StoreId};

mod user_slot;
pub(crate) use user_slot::{new_pepper, pepper_as_key, pepper_of};
pub use user_slot::{UserPin, UserSlot, USER_SLOT_ITERATIONS};

/// Length of a data key and of a key-encryption key, in bytes.
pub const KEY_LEN: usize = 32;
/// Default (and minimum recommended) PBKDF2-HMAC-SHA256 iteration count for passphrases.
/// The count used is stored in each store's key slot, so it can be raised later.
pub const PBKDF2_ITERATIONS: u32 = 600_000;
/// Largest iteration count accepted from a key slot (guards against a doctored slot that would
/// make opening take days).
pub const PBKDF2_MAX_ITERATIONS: u32 = 100_000_000;
/// Length of the random PBKDF2 salt, in bytes.
pub const SALT_LEN: usize = 16;
/// The format version byte that prefixes every ciphertext.
pub const CIPHERTEXT_VERSION: u8 = 1;
/// Length of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Length of an AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes a ciphertext adds to its plaintext: version byte, nonce and tag.
pub const CIPHERTEXT_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// Associated data of the static key provider's wrapping (it knows nothing of stores).
const STATIC_PROVIDER_AAD: &[u8] = b"followup/static-key-provider/v1";
/// The plaintext of a store's key-check value.
const KEY_CHECK_PLAINTEXT: &[u8] = b"followup/key-check/v1";

// ---------------------------------------------------------------------------------------------
// Errors

/// Errors a [`KeyProvider`] reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyProviderError {
    /// The wrapped key was not made by this provider's key (authentication failed).
    #[error(
        "the device key does not match this store (it was protected by another key); \
         use the key the store was created with, or restore the store from the server"
    )]
    WrongKey,
    /// The platform keystore cannot be used right now (locked device, key invalidated by a
    /// biometric change, keystore service unavailable).
    #[error("the device keystore is unavailable: {0}; unlock the device and try again")]
    Unavailable(String),
    /// Any other keystore failure.
    #[error("the device keystore failed: {0}")]
    Failed(String),
}

/// Errors of the cryptographic layer. The store adds context (which record, which chunk).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The key given does not unwrap the data key.
    #[error("wrong passphrase or key: it does not open this store")]
    WrongKey,
    /// A ciphertext failed to authenticate: modified, moved, or sealed under another key.
    #[error(
        "a ciphertext failed authentication: it was modified, moved or sealed under another key"
    )]
    Authentication,
    /// A ciphertext is shorter than its fixed overhead or otherwise unparsable.
    #[error("a ciphertext is truncated or malformed")]
    Malformed,
    /// A ciphertext or key slot of a format this version does not know.
    #[error("ciphertext format version {0} is not supported by this version of Followup; update the app")]
    UnsupportedVersion(u8),
    /// The key slot's parameters are unusable (e.g. an absurd iteration count).
    #[error("the store's key record is invalid: {0}")]
    BadKeySlot(String),
    /// The platform key provider failed.
    #[error(transparent)]
    KeyProvider(#[from] KeyProviderError),
    /// Sealing failed (only possible for absurdly long inputs).
    #[error("encryption failed")]
    Seal,
}

// ---------------------------------------------------------------------------------------------
// Zeroization helpers (no `zeroize` dependency in this crate)

/// Overwrite a buffer with zeros in a way the optimizer does not remove.
fn wipe(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference to a u8.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    compiler_fence(Ordering::SeqCst);
}

/// A byte buffer zeroed on drop. Its `Debug` does not print the bytes.
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Take ownership of `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes({} bytes)", self.0.len())
    }
}

// ---------------------------------------------------------------------------------------------
// Associated data

/// What a ciphertext is for; part of its associated data so one kind cannot pass for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Purpose {
    /// A chunk of a document's Automerge changes.
    DocChunk = 1,
    /// A named secret (device identity key, settings).
    Secret = 2,
    /// The store's key-check value, proving the data key is right.
    KeyCheck = 3,
    /// The data key wrapped under a passphrase-derived KEK.
    PassphraseWrap = 4,
    /// The data key wrapped under a user's slot key (PIN and device pepper).
    UserWrap = 5,
}

/// Associated data of one ciphertext:
/// `version ‖ store id (16) ‖ record id (16) ‖ chunk (u64 BE) ‖ purpose (1) ‖ extra`.
/// All fields but `extra` have fixed lengths, so the encoding is unambiguous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aad(Vec<u8>);

impl Aad {
    fn build(
        store: &StoreId,
        record: &[u8; 16],
        chunk: u64,
        purpose: Purpose,
        extra: &[u8],
    ) -> Self {
        let mut v = Vec::with_capacity(1 + 16 + 16 + 8 + 1 + extra.len());
        v.push(CIPHERTEXT_VERSION);
        v.extend_from_slice(store.as_bytes());
        v.extend_from_slice(record);
        v.extend_from_slice(&chunk.to_be_bytes());
        v.push(purpose as u8);
        v.extend_from_slice(extra);
        Self(v)
    }

    /// Chunk `chunk` of record `record`'s document in store `store`.
    pub fn doc_chunk(store: &StoreId, record: &followup_domain::ids::RecordId, chunk: u64) -> Self {
        Self::build(store, record.as_bytes(), chunk, Purpose::DocChunk, &[])
    }

    /// The secret named `name` in store `store`.
    pub fn secret(store: &StoreId, name: &str) -> Self {
        Self::build(store, &[0; 16], 0, Purpose::Secret, name.as_bytes())
    }

    /// The key-check value of store `store`.
    pub fn key_check(store: &StoreId) -> Self {
        Self::build(store, &[0; 16], 0, Purpose::KeyCheck, &[])
    }

    /// The passphrase wrapping of store `store`'s data key with `iterations` PBKDF2 rounds.
    pub fn passphrase_wrap(store: &StoreId, iterations: u32) -> Self {
        Self::build(
            store,
            &[0; 16],
            0,
            Purpose::PassphraseWrap,
            &iterations.to_be_bytes(),
        )
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

// ---------------------------------------------------------------------------------------------
// Low-level AEAD with the version/nonce framing

fn aes_key(bytes: &[u8]) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::BadKeySlot(format!("a key must be {KEY_LEN} bytes")))
}

/// `version ‖ nonce ‖ ciphertext ‖ tag` with a fresh random nonce.
fn seal_with(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let nonce_bytes: [u8; NONCE_LEN] = random_bytes();
    let mut out = Vec::with_capacity(CIPHERTEXT_OVERHEAD + plaintext.len());
    out.push(CIPHERTEXT_VERSION);
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce_bytes),
            aead::Aad::from(aad),
            &mut out[1 + NONCE_LEN..],
        )
        .map_err(|_| CryptoError::Seal)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

fn open_with(key: &LessSafeKey, aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if ciphertext.len() < CIPHERTEXT_OVERHEAD {
        return Err(CryptoError::Malformed);
    }
    if ciphertext[0] != CIPHERTEXT_VERSION {
        return Err(CryptoError::UnsupportedVersion(ciphertext[0]));
    }
    let nonce = Nonce::try_assume_unique_for_key(&ciphertext[1..1 + NONCE_LEN])
        .map_err(|_| CryptoError::Malformed)?;
    let mut buf = ciphertext[1 + NONCE_LEN..].to_vec();
    let len = key
        .open_in_place(nonce, aead::Aad::from(aad), &mut buf)
        .map_err(|_| CryptoError::Authentication)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

// ---------------------------------------------------------------------------------------------
// Data key

/// A store's data key: 32 random bytes sealing every chunk and secret of one store.
pub struct DataKey {
    raw: SecretBytes,
    key: LessSafeKey,
}

impl DataKey {
    /// A new random data key.
    pub fn generate() -> Self {
        let mut bytes: [u8; KEY_LEN] = random_bytes();
        let key = Self::from_bytes(&bytes);
        wipe(&mut bytes);
        // A 32-byte key is always accepted by AES-256-GCM.
        match key {
            Ok(k) => k,
            Err(_) => unreachable!("AES-256-GCM accepts any 32-byte key"),
        }
    }

    /// From raw bytes (as unwrapped from a key slot); `WrongKey` unless exactly 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::WrongKey);
        }
        Ok(Self {
            raw: SecretBytes::new(bytes.to_vec()),
            key: aes_key(bytes)?,
        })
    }

    /// Seal `plaintext` under this key with associated data `aad`.
    pub fn seal(&self, aad: &Aad, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        seal_with(&self.key, aad.as_bytes(), plaintext)
    }

    /// Open a ciphertext made by [`DataKey::seal`] with the same `aad`.
    /// [`CryptoError::Authentication`] if it was modified, moved or sealed under another key.
    pub fn open(&self, aad: &Aad, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        open_with(&self.key, aad.as_bytes(), ciphertext)
    }

    /// The key-check value for store `store`: proves, at open, that an unwrapped key is right
    /// even when a platform provider does not authenticate what it unwraps.
    pub fn key_check(&self, store: &StoreId) -> Result<Vec<u8>, CryptoError> {
        self.seal(&Aad::key_check(store), KEY_CHECK_PLAINTEXT)
    }

    /// Verify a key-check value; [`CryptoError::WrongKey`] if this is not the store's key.
    pub fn verify_key_check(&self, store: &StoreId, check: &[u8]) -> Result<(), CryptoError> {
        match self.open(&Aad::key_check(store), check) {
            Ok(p) if p == KEY_CHECK_PLAINTEXT => Ok(()),
            Ok(_) | Err(CryptoError::Authentication) => Err(CryptoError::WrongKey),
            Err(e) => Err(e),
        }
    }

    fn raw(&self) -> &[u8] {
        self.raw.expose()
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

// ---------------------------------------------------------------------------------------------
// Key providers

/// A platform keystore that protects a store's data key.
///
/// Implemented by the app (Android Keystore, iOS Keychain / Secure Enclave) through the
/// bindings. The provider's own key may stay inside hardware: the core only ever hands it the
/// 32-byte data key to wrap and gets back an opaque blob, and hands back that blob to unwrap.
///
/// Contract:
/// * `wrap` must be randomized or at least safe to call repeatedly (AES-GCM with a random
///   nonce, or the platform's ECIES); its output is stored verbatim in the store's key slot.
/// * `unwrap` should authenticate: if `wrapped` was not made by this key, return
///   [`KeyProviderError::WrongKey`]. (The store also checks the result against a key-check
///   value, so a provider that cannot authenticate is still safe, only less precise.)
/// * `key_id` names the platform key (e.g. its keystore alias and version); it is stored next to
///   the wrapped key for rotation bookkeeping and is not secret.
///
/// Methods may block (biometric prompt, keystore IPC); the store calls them only in
/// `create`, `open` and `rotate_key`.
pub trait KeyProvider: Send + Sync {
    /// Which platform key this is; stored in plaintext with the wrapped data key.
    fn key_id(&self) -> String;
    /// Wrap (encrypt and authenticate) a data key.
    fn wrap(&self, data_key: &[u8]) -> Result<Vec<u8>, KeyProviderError>;
    /// Unwrap what [`KeyProvider::wrap`] returned.
    fn unwrap(&self, wrapped: &[u8]) -> Result<Vec<u8>, KeyProviderError>;
}

/// A [`KeyProvider`] holding a 256-bit key in memory; wraps with AES-256-GCM and a random nonce.
///
/// For tests, the CLI and as the reference a platform implementation can mimic (the format is
/// `version ‖ nonce ‖ ciphertext ‖ tag`, associated data `"followup/static-key-provider/v1"`).
pub struct StaticKeyProvider {
    key: LessSafeKey,
    key_id: String,
}

impl StaticKeyProvider {
    /// A provider for `key`, identified by `key_id`.
    pub fn new(key: [u8; KEY_LEN], key_id: impl Into<String>) -> Self {
        let mut key = key;
        let aes = match aes_key(&key) {
            Ok(k) => k,
            Err(_) => unreachable!("AES-256-GCM accepts any 32-byte key"),
        };
        wipe(&mut key);
        Self {
            key: aes,
            key_id: key_id.into(),
        }
    }
}

impl fmt::Debug for StaticKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StaticKeyProvider({:?})", self.key_id)
    }
}

impl KeyProvider for StaticKeyProvider {
    fn key_id(&self) -> String {
        self.key_id.clone()
    }

    fn wrap(&self, data_key: &[u8]) -> Result<Vec<u8>, KeyProviderError> {
        seal_with(&self.key, STATIC_PROVIDER_AAD, data_key)
            .map_err(|e| KeyProviderError::Failed(e.to_string()))
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<Vec<u8>, KeyProviderError> {
        match open_with(&self.key, STATIC_PROVIDER_AAD, wrapped) {
            Ok(k) => Ok(k),
            Err(CryptoError::Authentication) => Err(KeyProviderError::WrongKey),
            Err(e) => Err(KeyProviderError::Failed(e.to_string())),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Passphrases and key sources

/// A passphrase, zeroed on drop, never printed.
pub struct Passphrase {
    secret: String,
    iterations: u32,
}

impl Passphrase {
    /// A passphrase used with the default [`PBKDF2_ITERATIONS`].
    pub fn new(passphrase: impl Into<String>) -> Self {
        Self {
            secret: passphrase.into(),
            iterations: PBKDF2_ITERATIONS,
        }
    }

    /// The PBKDF2 iteration count used when this passphrase wraps a data key.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    fn derive_kek(&self, salt: &[u8], iterations: u32) -> Result<SecretBytes, CryptoError> {
        if iterations > PBKDF2_MAX_ITERATIONS {
            return Err(CryptoError::BadKeySlot(format!(
                "PBKDF2 iteration count {iterations} is out of range"
            )));
        }
        let rounds = NonZeroU32::new(iterations)
            .ok_or_else(|| CryptoError::BadKeySlot("PBKDF2 iteration count is zero".into()))?;
        let mut out = vec![0u8; KEY_LEN];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            rounds,
            salt,
            self.secret.as_bytes(),
            &mut out,
        );
        Ok(SecretBytes::new(out))
    }
}

impl Drop for Passphrase {
    fn drop(&mut self) {
        // SAFETY: writing zero bytes keeps the string valid UTF-8.
        wipe(unsafe { self.secret.as_bytes_mut() });
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(***)")
    }
}

/// How a store's data key is protected: what the user or platform supplies to create, open or
/// re-key a store.
#[derive(Clone)]
pub enum KeySource {
    /// A platform keystore wraps the data key.
    Provider(Arc<dyn KeyProvider>),
    /// A passphrase-derived key (PBKDF2-HMAC-SHA256) wraps the data key.
    Passphrase(Arc<Passphrase>),
}

impl KeySource {
    /// A platform key provider.
    pub fn provider(provider: impl KeyProvider + 'static) -> Self {
        Self::Provider(Arc::new(provider))
    }

    /// A passphrase with the default [`PBKDF2_ITERATIONS`] (600,000).
    pub fn passphrase(passphrase: impl Into<String>) -> Self {
        Self::Passphrase(Arc::new(Passphrase::new(passphrase)))
    }

    /// **For tests and benchmarks only**: a passphrase whose PBKDF2 iteration count is
    /// `iterations` instead of the default 600,000, so test suites are not slow. A store
    /// created or re-keyed with it keeps that weak count until re-keyed; never use it for real
    /// data. Opening a store always uses the count stored in the store, whatever this says.
    pub fn passphrase_with_iterations(passphrase: impl Into<String>, iterations: u32) -> Self {
        Self::Passphrase(Arc::new(Passphrase {
            secret: passphrase.into(),
            iterations: iterations.max(1),
        }))
    }

    /// The method this source uses.
    pub fn method(&self) -> KeyMethod {
        match self {
            KeySource::Provider(_) => KeyMethod::Provider,
            KeySource::Passphrase(_) => KeyMethod::Passphrase,
        }
    }
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Provider(p) => write!(f, "KeySource::Provider({:?})", p.key_id()),
            KeySource::Passphrase(_) => f.write_str("KeySource::Passphrase(***)"),
        }
    }
}

/// Which kind of [`KeySource`] protects a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMethod {
    /// A platform [`KeyProvider`].
    Provider,
    /// A passphrase.
    Passphrase,
}

impl KeyMethod {
    /// The code stored in the key slot.
    pub fn code(&self) -> &'static str {
        match self {
            KeyMethod::Provider => "provider",
            KeyMethod::Passphrase => "passphrase",
        }
    }
    /// From the stored code.
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "provider" => Some(KeyMethod::Provider),
            "passphrase" => Some(KeyMethod::Passphrase),
            _ => None,
        }
    }
}

/// The stored, wrapped form of a data key, with what is needed to unwrap it. Not secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySlot {
    /// Provider or passphrase.
    pub method: KeyMethod,
    /// The provider's [`KeyProvider::key_id`], or `"passphrase"`.
    pub key_id: String,
    /// PBKDF2 iteration count (0 for a provider).
    pub iterations: u32,
    /// PBKDF2 salt (empty for a provider).
    pub salt: Vec<u8>,
    /// The wrapped data key.
    pub wrapped: Vec<u8>,
}

impl KeySlot {
    /// Wrap `key` (the data key of store `store`) with `source`.
    pub fn wrap(source: &KeySource, store: &StoreId, key: &DataKey) -> Result<Self, CryptoError> {
        match source {
            KeySource::Provider(p) => Ok(KeySlot {
                method: KeyMethod::Provider,
                key_id: p.key_id(),
                iterations: 0,
                salt: Vec::new(),
                wrapped: p.wrap(key.raw())?,
            }),
            KeySource::Passphrase(pass) => {
                let salt: [u8; SALT_LEN] = random_bytes();
                let iterations = pass.iterations;
                let kek = pass.derive_kek(&salt, iterations)?;
                let wrapped = seal_with(
                    &aes_key(kek.expose())?,
                    Aad::passphrase_wrap(store, iterations).as_bytes(),
                    key.raw(),
                )?;
                Ok(KeySlot {
                    method: KeyMethod::Passphrase,
                    key_id: "passphrase".into(),
                    iterations,
                    salt: salt.to_vec(),
                    wrapped,
                })
            }
        }
    }

    /// Unwrap the data key of store `store` with `source`. [`CryptoError::WrongKey`] when the
    /// source is not the one that wrapped it (including a passphrase offered to a store
    /// protected by a device key, or the reverse).
    pub fn unwrap(&self, source: &KeySource, store: &StoreId) -> Result<DataKey, CryptoError> {
        match (source, self.method) {
            (KeySource::Provider(p), KeyMethod::Provider) => {
                let raw = SecretBytes::new(match p.unwrap(&self.wrapped) {
                    Ok(raw) => raw,
                    Err(KeyProviderError::WrongKey) => return Err(CryptoError::WrongKey),
                    Err(e) => return Err(e.into()),
                });
                DataKey::from_bytes(raw.expose())
            }
            (KeySource::Passphrase(pass), KeyMethod::Passphrase) => {
                let kek = pass.derive_kek(&self.salt, self.iterations)?;
                let raw = match open_with(
                    &aes_key(kek.expose())?,
                    Aad::passphrase_wrap(store, self.iterations).as_bytes(),
                    &self.wrapped,
                ) {
                    Ok(raw) => SecretBytes::new(raw),
                    Err(CryptoError::Authentication) => return Err(CryptoError::WrongKey),
                    Err(e) => return Err(e),
                };
                DataKey::from_bytes(raw.expose())
            }
            _ => Err(CryptoError::WrongKey),
        }
    }

    /// Whether this slot wraps exactly `key` (a sanity check after wrapping with a provider).
    pub fn holds(&self, source: &KeySource, store: &StoreId, key: &DataKey) -> bool {
        match self.unwrap(source, store) {
            Ok(k) => {
                let (a, b) = (k.raw(), key.raw());
                a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use followup_domain::ids::RecordId;

    fn fast(p: &str) -> KeySource {
        KeySource::passphrase_with_iterations(p, 10)
    }

    #[test]
    fn default_iterations_are_600k() {
        assert_eq!(PBKDF2_ITERATIONS, 600_000);
        assert_eq!(Passphrase::new("x").iterations(), 600_000);
        match KeySource::passphrase("x") {
            KeySource::Passphrase(p) => assert_eq!(p.iterations(), 600_000),
            _ => panic!(),
        }
    }

    #[test]
    fn seal_open_round_trip_and_framing() {
        let k = DataKey::generate();
        let s = StoreId::random();
        let r = RecordId::random();
        let ct = k.seal(&Aad::doc_chunk(&s, &r, 3), b"hello").unwrap();
        assert_eq!(ct.len(), 5 + CIPHERTEXT_OVERHEAD);
        assert_eq!(ct[0], CIPHERTEXT_VERSION);
        assert_eq!(k.open(&Aad::doc_chunk(&s, &r, 3), &ct).unwrap(), b"hello");
        // Two seals of the same plaintext differ (random nonce).
        assert_ne!(ct, k.seal(&Aad::doc_chunk(&s, &r, 3), b"hello").unwrap());
    }

    #[test]
    fn every_aad_component_is_bound() {
        let k = DataKey::generate();
        let (s, r) = (StoreId::random(), RecordId::random());
        let ct = k.seal(&Aad::doc_chunk(&s, &r, 3), b"x").unwrap();
        let fail = |aad: Aad| assert_eq!(k.open(&aad, &ct), Err(CryptoError::Authentication));
        fail(Aad::doc_chunk(&StoreId::random(), &r, 3));
        fail(Aad::doc_chunk(&s, &RecordId::random(), 3));
        fail(Aad::doc_chunk(&s, &r, 4));
        fail(Aad::build(&s, r.as_bytes(), 3, Purpose::Secret, &[]));
        let sec = k.seal(&Aad::secret(&s, "a"), b"x").unwrap();
        assert_eq!(
            k.open(&Aad::secret(&s, "b"), &sec),
            Err(CryptoError::Authentication)
        );
        // Another key.
        assert_eq!(
            DataKey::generate().open(&Aad::doc_chunk(&s, &r, 3), &ct),
            Err(CryptoError::Authentication)
        );
        // Version byte and truncation.
        let mut v2 = ct.clone();
        v2[0] = 2;
        assert_eq!(
            k.open(&Aad::doc_chunk(&s, &r, 3), &v2),
            Err(CryptoError::UnsupportedVersion(2))
        );
        assert_eq!(
            k.open(&Aad::doc_chunk(&s, &r, 3), &ct[..10]),
            Err(CryptoError::Malformed)
        );
    }

    #[test]
    fn passphrase_slot_round_trip_and_wrong_passphrase() {
        let s = StoreId::random();
        let k = DataKey::generate();
        let slot = KeySlot::wrap(&fast("correct horse"), &s, &k).unwrap();
        assert_eq!(slot.iterations, 10);
        assert_eq!(slot.salt.len(), SALT_LEN);
        assert!(slot.holds(&fast("correct horse"), &s, &k));
        assert_eq!(
            slot.unwrap(&fast("wrong"), &s).unwrap_err(),
            CryptoError::WrongKey
        );
        // Bound to the store id.
        assert_eq!(
            slot.unwrap(&fast("correct horse"), &StoreId::random())
                .unwrap_err(),
            CryptoError::WrongKey
        );
        // A doctored iteration count does not open it either.
        let mut doctored = slot.clone();
        doctored.iterations = 1;
        assert_eq!(
            doctored.unwrap(&fast("correct horse"), &s).unwrap_err(),
            CryptoError::WrongKey
        );
        doctored.iterations = 0;
        assert!(matches!(
            doctored.unwrap(&fast("correct horse"), &s).unwrap_err(),
            CryptoError::BadKeySlot(_)
        ));
    }

    #[test]
    fn provider_slot_round_trip_and_wrong_key() {
        let s = StoreId::random();
        let k = DataKey::generate();
        let p = KeySource::provider(StaticKeyProvider::new([7; 32], "test-key-1"));
        let slot = KeySlot::wrap(&p, &s, &k).unwrap();
        assert_eq!(slot.key_id, "test-key-1");
        assert!(slot.holds(&p, &s, &k));
        let other = KeySource::provider(StaticKeyProvider::new([8; 32], "test-key-1"));
        assert_eq!(slot.unwrap(&other, &s).unwrap_err(), CryptoError::WrongKey);
        // Method mismatch.
        assert_eq!(
            slot.unwrap(&fast("x"), &s).unwrap_err(),
            CryptoError::WrongKey
        );
    }

    #[test]
    fn key_check_detects_wrong_key() {
        let s = StoreId::random();
        let k = DataKey::generate();
        let check = k.key_check(&s).unwrap();
        k.verify_key_check(&s, &check).unwrap();
        assert_eq!(
            DataKey::generate().verify_key_check(&s, &check),
            Err(CryptoError::WrongKey)
        );
    }

    #[test]
    fn secrets_do_not_debug_print() {
        assert_eq!(
            format!("{:?}", fast("hunter2")),
            "KeySource::Passphrase(***)"
        );
        assert!(!format!("{:?}", SecretBytes::new(b"abc".to_vec())).contains("97"));
    }
}
