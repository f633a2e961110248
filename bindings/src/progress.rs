//! Progress reporting and cancellation for long operations (sync above all).
//!
//! Kotlin gets a `Flow` over [`SyncProgressListener`] and Swift an `AsyncStream` from the
//! idiomatic layers; both pass a [`CancellationHandle`] they cancel when the coroutine or `Task`
//! is cancelled.

use std::sync::Arc;

use followup_device::sync as cs;

use crate::error::FollowupError;

/// What a sync is doing, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum SyncStage {
    /// Reading the store, building a request.
    Preparing,
    /// Uploading this device's changes.
    Sending,
    /// Downloading the registry's changes (`bytes_received` grows as they arrive).
    Receiving,
    /// Saving what came back.
    Applying,
    /// An attempt failed (no connection, timeout); waiting before attempt `attempt`.
    Retrying { attempt: u32 },
    /// Finished.
    Done,
}

impl From<cs::SyncPhase> for SyncStage {
    fn from(p: cs::SyncPhase) -> Self {
        match p {
            cs::SyncPhase::Preparing => Self::Preparing,
            cs::SyncPhase::Sending => Self::Sending,
            cs::SyncPhase::Receiving => Self::Receiving,
            cs::SyncPhase::Applying => Self::Applying,
            cs::SyncPhase::Retrying { attempt } => Self::Retrying { attempt },
            cs::SyncPhase::Done => Self::Done,
        }
    }
}

/// One progress report of a sync.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncProgress {
    pub stage: SyncStage,
    /// Records pushed (accepted or refused) and pulled so far.
    pub docs_done: u64,
    /// Records to push, plus records pulled so far (a pull's size is not known in advance, so
    /// this may grow).
    pub docs_total: u64,
    /// Bytes uploaded so far (compressed, all attempts).
    pub bytes_sent: u64,
    /// Bytes downloaded so far (compressed, all attempts).
    pub bytes_received: u64,
}

impl From<cs::SyncProgress> for SyncProgress {
    fn from(p: cs::SyncProgress) -> Self {
        Self {
            stage: p.phase.into(),
            docs_done: p.docs_done,
            docs_total: p.docs_total,
            bytes_sent: p.bytes_sent,
            bytes_received: p.bytes_received,
        }
    }
}

/// Implemented by the app to receive progress. Called on a background thread: hop to the UI
/// thread yourself (the Kotlin `Flow` and Swift `AsyncStream` adapters do).
///
/// Declared fallible only so that an exception thrown by the app's listener reaches Rust as an
/// ordinary error (uniffi turns an exception from an infallible callback into a Rust panic); the
/// error is ignored and the operation goes on. Swift implementations need not be `throws`.
#[uniffi::export(with_foreign)]
pub trait SyncProgressListener: Send + Sync {
    fn on_progress(&self, progress: SyncProgress) -> Result<(), FollowupError>;
}

/// Reports to an optional listener; a listener that fails (or panics) is ignored rather than
/// allowed to abort the operation.
pub(crate) struct Reporter(Option<Arc<dyn SyncProgressListener>>);

impl Reporter {
    pub(crate) fn new(listener: Option<Arc<dyn SyncProgressListener>>) -> Self {
        Self(listener)
    }

    pub(crate) fn report(&self, p: SyncProgress) {
        if let Some(listener) = &self.0 {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _ = listener.on_progress(p);
            }));
        }
    }
}

/// Cancels a long operation. Create one, pass it to the call, call `cancel()` from anywhere; the
/// operation ends with `FollowupError.Cancelled` at once, leaving the store consistent (a sync
/// pushes what it has not pushed next time).
#[derive(Debug, Default, uniffi::Object)]
pub struct CancellationHandle {
    token: cs::CancelToken,
}

#[uniffi::export]
impl CancellationHandle {
    #[uniffi::constructor]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Asks the operation to stop. Idempotent; safe from any thread.
    pub fn cancel(&self) {
        self.token.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }
}

impl CancellationHandle {
    /// The core token this handle cancels.
    pub(crate) fn token(&self) -> cs::CancelToken {
        self.token.clone()
    }
}
