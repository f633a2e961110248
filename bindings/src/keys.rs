//! The platform's key store, seen from Rust.
//!
//! The app implements [`KeyProvider`] over the Android Keystore or the iOS Keychain (the
//! idiomatic layers ship one each): it wraps and unwraps the store's data key with a key that
//! never leaves secure hardware. Core has the same-shaped trait, `followup_device::crypto::KeyProvider`;
//! [`PlatformKeys`] adapts one to the other, so core never sees uniffi.

use std::sync::Arc;

use crate::error::FollowupError;

/// Wraps and unwraps the store's data key with a platform-held key.
///
/// `wrap` must be deterministic only in what it can undo: `unwrap(wrap(k)) == k`. Throw
/// `FollowupError.WrongKey` from `unwrap` when the platform key cannot open `wrapped` (e.g.
/// AES-GCM tag failure); any other exception arrives in Rust as `KeyProviderFailed`.
#[uniffi::export(with_foreign)]
pub trait KeyProvider: Send + Sync {
    /// Encrypts `data_key` (32 bytes) with the platform key; returns the wrapped bytes to store.
    fn wrap(&self, data_key: Vec<u8>) -> Result<Vec<u8>, FollowupError>;
    /// Reverses [`KeyProvider::wrap`].
    fn unwrap(&self, wrapped: Vec<u8>) -> Result<Vec<u8>, FollowupError>;
    /// A stable name for the platform key (e.g. the Keystore alias), stored beside the wrapped
    /// key so a store knows which key it needs.
    fn key_id(&self) -> String;
}

/// A platform [`KeyProvider`] as core wants it. Every call is guarded: a foreign implementation
/// that misbehaves (or a uniffi callback failure that panics) becomes a `FollowupError`, never an
/// unwinding panic.
#[derive(Clone)]
pub(crate) struct PlatformKeys(pub(crate) Arc<dyn KeyProvider>);

impl PlatformKeys {
    pub(crate) fn wrap(&self, data_key: &[u8]) -> Result<Vec<u8>, FollowupError> {
        crate::error::guard(|| self.0.wrap(data_key.to_vec()))
    }

    pub(crate) fn unwrap(&self, wrapped: &[u8]) -> Result<Vec<u8>, FollowupError> {
        crate::error::guard(|| self.0.unwrap(wrapped.to_vec()))
    }

    pub(crate) fn key_id(&self) -> Result<String, FollowupError> {
        crate::error::guard(|| Ok(self.0.key_id()))
    }
}

/// What core calls: the platform provider, its errors mapped onto core's
/// [`KeyProviderError`](followup_device::crypto::KeyProviderError). Pass
/// `Arc::new(PlatformKeys(provider))` wherever core wants a `KeyProvider`.
impl followup_device::crypto::KeyProvider for PlatformKeys {
    fn key_id(&self) -> String {
        // key_id cannot fail in core's trait; a panicking platform implementation yields an
        // empty id rather than unwinding (the id is bookkeeping only).
        PlatformKeys::key_id(self).unwrap_or_default()
    }

    fn wrap(&self, data_key: &[u8]) -> Result<Vec<u8>, followup_device::crypto::KeyProviderError> {
        PlatformKeys::wrap(self, data_key).map_err(to_core)
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<Vec<u8>, followup_device::crypto::KeyProviderError> {
        PlatformKeys::unwrap(self, wrapped).map_err(to_core)
    }
}

fn to_core(e: FollowupError) -> followup_device::crypto::KeyProviderError {
    use followup_device::crypto::KeyProviderError as K;
    match e {
        FollowupError::WrongKey { .. } => K::WrongKey,
        other => K::Failed(other.reason().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use followup_device::crypto::{KeyProvider as CoreKeyProvider, KeyProviderError};

    struct Refuses;
    impl KeyProvider for Refuses {
        fn wrap(&self, k: Vec<u8>) -> Result<Vec<u8>, FollowupError> {
            Ok(k)
        }
        fn unwrap(&self, _: Vec<u8>) -> Result<Vec<u8>, FollowupError> {
            Err(FollowupError::wrong_key())
        }
        fn key_id(&self) -> String {
            "r".into()
        }
    }

    #[test]
    fn platform_errors_map_onto_core() {
        let keys = PlatformKeys(Arc::new(Refuses));
        assert_eq!(CoreKeyProvider::key_id(&keys), "r");
        assert_eq!(
            CoreKeyProvider::unwrap(&keys, b"x"),
            Err(KeyProviderError::WrongKey)
        );
    }
}
