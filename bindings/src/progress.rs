//! Progress reporting and cancellation for long operations (sync, key derivation, opening a
//! large store).
//!
//! Kotlin gets a `Flow<SyncProgress>` over [`SyncProgressListener`] and Swift an
//! `AsyncStream<SyncProgress>` from the idiomatic layers; both pass a [`CancellationHandle`] they
//! cancel when the coroutine or `Task` is cancelled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::FollowupError;

/// Which part of a sync is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum SyncStage {
    /// Getting ready: deriving keys, reading what is pending, opening the connection.
    Preparing,
    /// Sending this device's changes.
    Pushing,
    /// Receiving other devices' changes.
    Pulling,
    /// Merging received changes into the store.
    Applying,
    /// Finished; `done == total`.
    Finished,
}

/// One progress report. `done` and `total` count units of the stage (documents, or iterations
/// while preparing); `total` may grow while a stage runs.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncProgress {
    pub stage: SyncStage,
    pub done: u64,
    pub total: u64,
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

    pub(crate) fn report(&self, stage: SyncStage, done: u64, total: u64) {
        if let Some(listener) = &self.0 {
            let p = SyncProgress { stage, done, total };
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _ = listener.on_progress(p);
            }));
        }
    }
}

/// Cancels a long operation. Create one, pass it to the call, call `cancel()` from anywhere; the
/// operation ends with `FollowupError.Cancelled` at its next safe point, having changed nothing
/// it has not committed.
#[derive(Debug, Default, uniffi::Object)]
pub struct CancellationHandle {
    cancelled: AtomicBool,
    notify: tokio::sync::Notify,
}

#[uniffi::export]
impl CancellationHandle {
    #[uniffi::constructor]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Asks the operation to stop. Idempotent; safe from any thread.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

impl CancellationHandle {
    /// Resolves once `cancel()` has been called (for `tokio::select!` in async operations).
    #[allow(dead_code)] // used by the sync wrapper in phase 2
    pub(crate) async fn cancelled(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// `true` when an optional handle has been cancelled.
pub(crate) fn is_cancelled(handle: &Option<Arc<CancellationHandle>>) -> bool {
    handle.as_ref().is_some_and(|h| h.is_cancelled())
}
