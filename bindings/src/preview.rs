//! PHASE 1 PREVIEW SURFACE — to be replaced by the `Device` wrapper in phase 2.
//!
//! These functions exist only to prove the toolchain end to end before core's `Device` facade
//! lands: an async (suspend / async) call running on tokio with progress and cancellation, a
//! platform `KeyProvider` called from Rust, and a structured validation error. Delete this module
//! and its tests once `Device` is wrapped.

use std::collections::HashMap;
use std::sync::Arc;

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{FollowupError, ItemProblem};
use crate::keys::{KeyProvider, PlatformKeys};
use crate::progress::{
    is_cancelled, CancellationHandle, Reporter, SyncProgressListener, SyncStage,
};

const CHUNK: u32 = 10_000;

/// PREVIEW: stretches `passphrase` with `iterations` rounds of SHA-256 on a tokio blocking thread,
/// reporting `Preparing` progress every 10,000 rounds and stopping with `Cancelled` when `cancel`
/// is cancelled. Returns the hex digest.
#[uniffi::export(async_runtime = "tokio")]
pub async fn preview_derive_check(
    passphrase: String,
    iterations: u32,
    listener: Option<Arc<dyn SyncProgressListener>>,
    cancel: Option<Arc<CancellationHandle>>,
) -> Result<String, FollowupError> {
    if passphrase.is_empty() {
        return Err(FollowupError::invalid_input("The passphrase is empty"));
    }
    let work = tokio::task::spawn_blocking(move || {
        let reporter = Reporter::new(listener);
        let total = u64::from(iterations);
        let mut h = digest::digest(&digest::SHA256, passphrase.as_bytes());
        let mut done = 0u32;
        reporter.report(SyncStage::Preparing, 0, total);
        while done < iterations {
            if is_cancelled(&cancel) {
                return Err(FollowupError::cancelled("Key derivation"));
            }
            let n = CHUNK.min(iterations - done);
            for _ in 0..n {
                h = digest::digest(&digest::SHA256, h.as_ref());
            }
            done += n;
            reporter.report(SyncStage::Preparing, u64::from(done), total);
        }
        reporter.report(SyncStage::Finished, total, total);
        Ok(hex_string(h.as_ref()))
    });
    match work.await {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(FollowupError::internal(crate::error::panic_text(
            &*e.into_panic(),
        ))),
        Err(e) => Err(FollowupError::internal(e)),
    }
}

/// PREVIEW: makes a fresh random 32-byte data key, has the platform `provider` wrap it and unwrap
/// the result, and checks it got the same key back (`WrongKey` otherwise). Returns the provider's
/// `key_id`. Errors thrown by the provider come back as they were thrown.
#[uniffi::export]
pub fn preview_key_provider_roundtrip(
    provider: Arc<dyn KeyProvider>,
) -> Result<String, FollowupError> {
    crate::error::guard(|| {
        let keys = PlatformKeys(provider);
        let mut data_key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut data_key)
            .map_err(|_| FollowupError::internal("no system randomness"))?;
        let wrapped = keys.wrap(&data_key)?;
        if wrapped.as_slice() == data_key.as_slice() {
            return Err(FollowupError::KeyProviderFailed {
                reason: "The key provider returned the data key unencrypted. Fix its wrap()."
                    .into(),
            });
        }
        let unwrapped = keys.unwrap(&wrapped)?;
        if unwrapped.as_slice() != data_key.as_slice() {
            return Err(FollowupError::wrong_key());
        }
        keys.key_id()
    })
}

/// PREVIEW: validates a two-item form — `pain` (required integer 0–10) and `fever` (required
/// `true`/`false`) — and fails with `ValidationFailed` listing each problem.
#[uniffi::export]
pub fn preview_validate(answers: HashMap<String, String>) -> Result<(), FollowupError> {
    let mut problems = Vec::new();
    let problem = |item: &str, code: &str, message: &str| ItemProblem {
        item_id: item.into(),
        code: code.into(),
        message: message.into(),
    };
    match answers.get("pain").map(|s| s.trim().parse::<i64>()) {
        None => problems.push(problem("pain", "required", "an answer is required")),
        Some(Ok(v)) if (0..=10).contains(&v) => {}
        Some(Ok(_)) => problems.push(problem("pain", "out_of_range", "must be between 0 and 10")),
        Some(Err(_)) => problems.push(problem("pain", "wrong_type", "must be a whole number")),
    }
    match answers.get("fever").map(String::as_str) {
        None => problems.push(problem("fever", "required", "an answer is required")),
        Some("true" | "false") => {}
        Some(_) => problems.push(problem("fever", "wrong_type", "must be yes or no")),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(FollowupError::validation(problems))
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Xor(u8, &'static str);
    impl KeyProvider for Xor {
        fn wrap(&self, k: Vec<u8>) -> Result<Vec<u8>, FollowupError> {
            Ok(k.iter().map(|b| b ^ self.0).collect())
        }
        fn unwrap(&self, w: Vec<u8>) -> Result<Vec<u8>, FollowupError> {
            Ok(w.iter().map(|b| b ^ self.0).collect())
        }
        fn key_id(&self) -> String {
            self.1.into()
        }
    }

    struct Panicky;
    impl KeyProvider for Panicky {
        fn wrap(&self, _: Vec<u8>) -> Result<Vec<u8>, FollowupError> {
            panic!("keystore exploded")
        }
        fn unwrap(&self, w: Vec<u8>) -> Result<Vec<u8>, FollowupError> {
            Ok(w)
        }
        fn key_id(&self) -> String {
            "p".into()
        }
    }

    #[derive(Default)]
    struct Collect(Mutex<Vec<SyncProgress>>);
    use crate::progress::SyncProgress;
    impl SyncProgressListener for Collect {
        fn on_progress(&self, p: SyncProgress) -> Result<(), FollowupError> {
            self.0.lock().unwrap().push(p);
            Ok(())
        }
    }

    #[test]
    fn roundtrip_returns_key_id() {
        let id = preview_key_provider_roundtrip(Arc::new(Xor(0x5a, "k1"))).unwrap();
        assert_eq!(id, "k1");
    }

    #[test]
    fn panicking_provider_is_internal_error() {
        let e = preview_key_provider_roundtrip(Arc::new(Panicky)).unwrap_err();
        assert!(matches!(e, FollowupError::Internal { .. }), "{e:?}");
    }

    #[test]
    fn validate_lists_problems() {
        let e = preview_validate(HashMap::from([("pain".into(), "11".into())])).unwrap_err();
        let FollowupError::ValidationFailed { problems, .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].code, "out_of_range");
        assert_eq!(problems[1].code, "required");
    }

    #[tokio::test]
    async fn derive_reports_progress_and_cancels() {
        let c = Arc::new(Collect::default());
        let out = preview_derive_check("pw".into(), 25_000, Some(c.clone()), None)
            .await
            .unwrap();
        assert_eq!(out.len(), 64);
        let seen = c.0.lock().unwrap().clone();
        assert_eq!(seen.len(), 5); // 0, 10k, 20k, 25k, finished
        assert_eq!(seen.last().unwrap().stage, SyncStage::Finished);

        let h = CancellationHandle::new();
        h.cancel();
        let e = preview_derive_check("pw".into(), 25_000, None, Some(h))
            .await
            .unwrap_err();
        assert!(matches!(e, FollowupError::Cancelled { .. }));
    }
}
