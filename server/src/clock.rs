//! The registry's clock for adjudication: the time the server stamps on a case (the event's
//! acceptance, decisions, replies, escalations) and judges deadlines by. It is the system clock;
//! an embedding program (the demo, end-to-end tests) may move it forward to show what happens
//! when time passes. There is no flag or route for that: a deployed server always runs on the
//! system clock. Request freshness (`auth`) always uses the system clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A shared handle on the registry's clock.
#[derive(Debug, Clone, Default)]
pub struct RegistryClock {
    offset_ms: Arc<AtomicI64>,
}

impl RegistryClock {
    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        crate::auth::now_ms().saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Move the clock forward (embedding programs only: see the module documentation).
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}
