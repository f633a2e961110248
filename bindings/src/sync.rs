//! Enrolment and sync: [`FollowupStore::enrol`], [`FollowupStore::sync`] and the rejections the
//! registry reported, over core's `SyncClient`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use followup_device::sync::{self as cs, CancelToken, SyncClient, SyncOptions};

use crate::error::{guard, FollowupError};
use crate::progress::{CancellationHandle, Reporter, SyncProgressListener};
use crate::store::FollowupStore;
use crate::types::{record_id, DeviceEnrolment};

/// How this store talks to the registry. Start from `default_sync_settings()`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncSettings {
    /// Longest one HTTP request may take, upload and download included.
    pub timeout_secs: u32,
    /// Attempts of one exchange before giving up with `ServerUnreachable` (at least 1).
    pub max_attempts: u32,
    /// SHA-256 of the registry's leaf certificate (DER, 32 bytes): when set, the server's
    /// certificate must match it as well as verify normally.
    pub pinned_cert_sha256: Option<Vec<u8>>,
    /// Extra trusted root certificates (DER), e.g. a registry's private CA.
    pub extra_root_certs_der: Vec<Vec<u8>>,
}

impl From<&SyncOptions> for SyncSettings {
    fn from(o: &SyncOptions) -> Self {
        Self {
            timeout_secs: u32::try_from(o.timeout.as_secs()).unwrap_or(u32::MAX),
            max_attempts: o.max_attempts,
            pinned_cert_sha256: o.pinned_cert_sha256.map(|p| p.to_vec()),
            extra_root_certs_der: o.extra_roots_der.clone(),
        }
    }
}

impl SyncSettings {
    fn into_options(self) -> Result<SyncOptions, FollowupError> {
        if self.timeout_secs == 0 || self.max_attempts == 0 {
            return Err(FollowupError::invalid_input(
                "timeout_secs and max_attempts must be at least 1",
            ));
        }
        let pinned = match self.pinned_cert_sha256 {
            None => None,
            Some(p) => Some(<[u8; 32]>::try_from(p.as_slice()).map_err(|_| {
                FollowupError::invalid_input(format!(
                    "pinned_cert_sha256 has {} bytes; a SHA-256 has 32",
                    p.len()
                ))
            })?),
        };
        Ok(SyncOptions {
            timeout: Duration::from_secs(u64::from(self.timeout_secs)),
            max_attempts: self.max_attempts,
            pinned_cert_sha256: pinned,
            extra_roots_der: self.extra_root_certs_der,
            ..SyncOptions::default()
        })
    }
}

/// The registry's sync defaults (60 s per request, 6 attempts, no pinning).
#[uniffi::export]
pub fn default_sync_settings() -> SyncSettings {
    (&SyncOptions::default()).into()
}

/// A record the registry refused: none of the refused changes was merged anywhere; the local
/// copy went back to what the registry holds.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Rejection {
    pub record_id: String,
    /// A stable code, e.g. `forbidden_kind`, `forbidden_clinic`.
    pub code: String,
    /// The registry's explanation, for the user.
    pub message: String,
}

impl From<cs::Rejection> for Rejection {
    fn from(r: cs::Rejection) -> Self {
        Self {
            record_id: r.record.to_hex(),
            code: r.code,
            message: r.message,
        }
    }
}

/// What one sync did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncReport {
    /// Successful request/response exchanges.
    pub round_trips: u32,
    /// Requests made, failed ones included.
    pub attempts: u32,
    /// Bytes uploaded (compressed, all attempts).
    pub bytes_up: u64,
    /// Bytes downloaded (compressed, all attempts).
    pub bytes_down: u64,
    /// Raw change bytes in successful requests.
    pub change_bytes_up: u64,
    /// Raw change bytes in successful responses.
    pub change_bytes_down: u64,
    /// Records the registry accepted.
    pub pushed: u64,
    /// Records that received changes from the registry.
    pub pulled: u64,
    /// Records the registry refused in this sync (also listed by `rejections()`).
    pub rejected: Vec<Rejection>,
    pub elapsed_ms: u64,
}

impl From<cs::SyncReport> for SyncReport {
    fn from(r: cs::SyncReport) -> Self {
        Self {
            round_trips: r.round_trips,
            attempts: r.attempts,
            bytes_up: r.bytes_up,
            bytes_down: r.bytes_down,
            change_bytes_up: r.change_bytes_up,
            change_bytes_down: r.change_bytes_down,
            pushed: r.pushed,
            pulled: r.pulled,
            rejected: r.rejected.into_iter().map(Into::into).collect(),
            elapsed_ms: u64::try_from(r.elapsed.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// A store's sync client (made on first use) and the syncs under way, so that closing the store
/// cancels them.
#[derive(Default)]
pub(crate) struct SyncState {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    options: Option<SyncOptions>,
    client: Option<Arc<SyncClient>>,
    running: Vec<(u64, CancelToken)>,
    next: u64,
}

impl SyncState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere mid-update of plain data; go on.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn client(&self) -> Result<Arc<SyncClient>, FollowupError> {
        let mut inner = self.lock();
        if let Some(c) = &inner.client {
            return Ok(c.clone());
        }
        let client = Arc::new(SyncClient::new(inner.options.clone().unwrap_or_default())?);
        inner.client = Some(client.clone());
        Ok(client)
    }

    fn set_options(&self, options: SyncOptions) -> Result<(), FollowupError> {
        let client = Arc::new(SyncClient::new(options.clone())?);
        let mut inner = self.lock();
        inner.options = Some(options);
        inner.client = Some(client);
        Ok(())
    }

    fn settings(&self) -> SyncSettings {
        self.lock()
            .options
            .as_ref()
            .map(Into::into)
            .unwrap_or_else(default_sync_settings)
    }

    fn start(self: &Arc<Self>, token: CancelToken) -> Running {
        let mut inner = self.lock();
        let id = inner.next;
        inner.next += 1;
        inner.running.push((id, token.clone()));
        Running {
            state: self.clone(),
            id,
            token,
            finished: false,
        }
    }

    pub(crate) fn cancel_all(&self) {
        for (_, t) in &self.lock().running {
            t.cancel();
        }
    }
}

/// A sync under way. Dropped unfinished (the Kotlin coroutine or Swift task was cancelled, so
/// uniffi dropped the future) it cancels the sync, which runs on its own task.
struct Running {
    state: Arc<SyncState>,
    id: u64,
    token: CancelToken,
    finished: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.finished {
            self.token.cancel();
        }
        self.state.lock().running.retain(|(id, _)| *id != self.id);
    }
}

/// Runs a core future on its own tokio task, so a panic in it becomes `Internal`.
async fn spawn<T: Send + 'static>(
    f: impl std::future::Future<Output = Result<T, FollowupError>> + Send + 'static,
) -> Result<T, FollowupError> {
    match tokio::spawn(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(FollowupError::internal(crate::error::panic_text(
            &*e.into_panic(),
        ))),
        Err(e) => Err(FollowupError::internal(e)),
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl FollowupStore {
    /// Enrols this device with the registry at `server_url` (`https://…`; `http://` only to
    /// loopback) using a one-time `code` from registry staff; `label` names the device for them
    /// (e.g. "Tablet 2, ward B"). A device enrols once.
    ///
    /// The forms (questionnaires, schedules) come from the registry, not from the app: once
    /// enrolled, this also syncs once, so that the device can capture offline from the start.
    /// Enrolment stands even if that sync fails; the forms then come with the next `sync`.
    pub async fn enrol(
        &self,
        server_url: String,
        code: String,
        label: String,
    ) -> Result<DeviceEnrolment, FollowupError> {
        let device = self.device()?;
        let client = self.sync.client()?;
        spawn(async move {
            let enrolled = client.enrol(&device, &server_url, &code, &label).await?;
            // Best effort (see above): the outcome of this first sync is the next sync's to
            // report, so it is not an error of the enrolment.
            let _first_sync = client.sync(&device, &|_| {}, &CancelToken::new()).await;
            Ok(enrolled.into())
        })
        .await
    }

    /// Sends this device's changes to the registry and brings back everyone else's it may see.
    /// Progress goes to `listener` (on a background thread); `cancel` stops it at once, and so
    /// does cancelling the calling coroutine / task. Records the registry refuses are in the
    /// report's `rejected` (and `rejections()`), not an error. Capture may go on meanwhile.
    pub async fn sync(
        &self,
        listener: Option<Arc<dyn SyncProgressListener>>,
        cancel: Option<Arc<CancellationHandle>>,
    ) -> Result<SyncReport, FollowupError> {
        let device = self.device()?;
        let client = self.sync.client()?;
        let token = cancel.map(|c| c.token()).unwrap_or_default();
        let mut running = self.sync.start(token.clone());
        let reporter = Reporter::new(listener);
        let result = spawn(async move {
            let progress = move |p: cs::SyncProgress| reporter.report(p.into());
            Ok(client.sync(&device, &progress, &token).await?.into())
        })
        .await;
        running.finished = true;
        result
    }

    /// Changes how this store talks to the registry (timeouts, attempts, certificate pinning).
    /// Applies to the next `enrol` or `sync`.
    pub fn set_sync_settings(&self, settings: SyncSettings) -> Result<(), FollowupError> {
        guard(|| self.sync.set_options(settings.into_options()?))
    }

    /// The settings in force.
    pub fn sync_settings(&self) -> SyncSettings {
        self.sync.settings()
    }

    /// Records the registry refused, newest last, until dismissed.
    pub fn rejections(&self) -> Result<Vec<Rejection>, FollowupError> {
        guard(|| {
            let d = self.device()?;
            Ok(cs::rejections(&d)?.into_iter().map(Into::into).collect())
        })
    }

    /// Forgets a rejection once the user has seen it. `false` if there was none for the record.
    pub fn dismiss_rejection(&self, record_id: String) -> Result<bool, FollowupError> {
        guard(|| {
            let d = self.device()?;
            let id = record_id_arg(&record_id)?;
            Ok(cs::dismiss_rejection(&d, id)?)
        })
    }
}

fn record_id_arg(s: &str) -> Result<followup_device::RecordId, FollowupError> {
    record_id(s, "record id")
}
