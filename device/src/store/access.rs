//! Who may use an open store right now: the in-memory side of the per-user key slots
//! (`docs/security.md`, "Users on a shared tablet").
//!
//! A store without users (a patient's phone, a single-user tablet) holds its data key from
//! `open` to drop, exactly as before users existed. A store with users ("users mode") opens
//! **locked**: the device key only yields the device pepper, and the data key is reachable
//! through a signed-in user's slot only. While nobody is signed in every store operation fails
//! with [`StoreError::Locked`]. A signed-in session ends on [`Access::lock`], on sign-out, or
//! after the idle timeout: the data key is then dropped from memory (a background thread
//! enforces the timeout even if the app makes no call).

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::{Result, StoreError};
use crate::crypto::{DataKey, SecretBytes};
use followup_domain::ids::UserId;

/// Default idle time after which a signed-in user is signed out (5 minutes).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How often the idle watcher looks at most.
const WATCH_TICK: Duration = Duration::from_millis(250);

enum KeyState {
    /// A store without users: the data key is held while the store is open.
    Open(Arc<DataKey>),
    /// A store with users: the pepper the device key unwrapped, and the signed-in session.
    Users {
        pepper: Arc<SecretBytes>,
        session: Option<Session>,
    },
}

struct Session {
    user: UserId,
    key: Arc<DataKey>,
    last_use: Instant,
}

struct Inner {
    state: KeyState,
    idle_timeout: Duration,
    watcher_running: bool,
}

/// The key state of one open store. Cheap to query; every store operation calls
/// [`Access::key`].
pub(crate) struct Access {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Access(..)")
    }
}

impl Access {
    /// A store without users, open with its data key.
    pub(crate) fn open(key: DataKey) -> Arc<Access> {
        Self::new(KeyState::Open(Arc::new(key)))
    }

    /// A store with users, locked until someone signs in.
    pub(crate) fn locked(pepper: SecretBytes) -> Arc<Access> {
        Self::new(KeyState::Users {
            pepper: Arc::new(pepper),
            session: None,
        })
    }

    fn new(state: KeyState) -> Arc<Access> {
        Arc::new(Access {
            inner: Mutex::new(Inner {
                state,
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
                watcher_running: false,
            }),
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Nothing in the critical sections panics; a poisoned lock still holds a valid state.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The data key, if the store is usable now; counts as activity for the idle timeout.
    /// [`StoreError::Locked`] when users mode has nobody signed in (or the session idled out).
    pub(crate) fn key(&self) -> Result<Arc<DataKey>> {
        let mut inner = self.inner();
        let timeout = inner.idle_timeout;
        match &mut inner.state {
            KeyState::Open(k) => Ok(k.clone()),
            KeyState::Users { session, .. } => match session {
                Some(s) if s.last_use.elapsed() < timeout => {
                    s.last_use = Instant::now();
                    Ok(s.key.clone())
                }
                Some(_) => {
                    *session = None;
                    tracing::info!("signed out after the idle timeout");
                    Err(StoreError::Locked)
                }
                None => Err(StoreError::Locked),
            },
        }
    }

    /// Like [`Access::key`] without needing the key: fails when locked.
    pub(crate) fn check(&self) -> Result<()> {
        self.key().map(|_| ())
    }

    /// Whether the store has users (opens locked, needs a sign-in).
    pub(crate) fn has_users(&self) -> bool {
        matches!(self.inner().state, KeyState::Users { .. })
    }

    /// The signed-in user, if any (no activity is counted; an idled-out session is ended).
    pub(crate) fn signed_in(&self) -> Option<UserId> {
        let mut inner = self.inner();
        let timeout = inner.idle_timeout;
        match &mut inner.state {
            KeyState::Open(_) => None,
            KeyState::Users { session, .. } => match session {
                Some(s) if s.last_use.elapsed() < timeout => Some(s.user),
                Some(_) => {
                    *session = None;
                    None
                }
                None => None,
            },
        }
    }

    /// The pepper of a users-mode store (to derive a slot's key), `None` without users.
    pub(crate) fn pepper(&self) -> Option<Arc<SecretBytes>> {
        match &self.inner().state {
            KeyState::Open(_) => None,
            KeyState::Users { pepper, .. } => Some(pepper.clone()),
        }
    }

    /// Switch a store without users to users mode (its first user was just added), with
    /// `user` signed in.
    pub(crate) fn enter_users_mode(self: &Arc<Self>, pepper: SecretBytes, user: UserId) {
        let key = {
            let mut inner = self.inner();
            let key = match &inner.state {
                KeyState::Open(k) => k.clone(),
                KeyState::Users { .. } => return,
            };
            inner.state = KeyState::Users {
                pepper: Arc::new(pepper),
                session: None,
            };
            key
        };
        self.sign_in(user, key);
    }

    /// Start a session for `user` with the data key their slot unwrapped.
    pub(crate) fn sign_in(self: &Arc<Self>, user: UserId, key: Arc<DataKey>) {
        let start_watcher = {
            let mut inner = self.inner();
            if let KeyState::Users { session, .. } = &mut inner.state {
                *session = Some(Session {
                    user,
                    key,
                    last_use: Instant::now(),
                });
            }
            !std::mem::replace(&mut inner.watcher_running, true)
        };
        if start_watcher {
            let weak = Arc::downgrade(self);
            let started = std::thread::Builder::new()
                .name("followup-idle-lock".into())
                .spawn(move || watch(weak));
            if started.is_err() {
                // Without the thread the timeout is still enforced at the next call.
                self.inner().watcher_running = false;
            }
        }
    }

    /// End the session (if any): the data key is dropped from memory.
    pub(crate) fn lock(&self) {
        if let KeyState::Users { session, .. } = &mut self.inner().state {
            *session = None;
        }
    }

    /// Sign out `user` if they are the one signed in (their slot was removed).
    pub(crate) fn sign_out_user(&self, user: UserId) {
        if let KeyState::Users { session, .. } = &mut self.inner().state {
            if session.as_ref().is_some_and(|s| s.user == user) {
                *session = None;
            }
        }
    }

    /// The idle time after which a session ends.
    pub(crate) fn idle_timeout(&self) -> Duration {
        self.inner().idle_timeout
    }

    /// Set the idle timeout (at least one second).
    pub(crate) fn set_idle_timeout(&self, timeout: Duration) {
        self.inner().idle_timeout = timeout.max(Duration::from_secs(1));
    }

    /// The test hook behind [`Access::set_idle_timeout`]'s floor.
    #[cfg(test)]
    pub(crate) fn set_idle_timeout_unchecked(&self, timeout: Duration) {
        self.inner().idle_timeout = timeout;
    }

    /// End an idled-out session; `false` once the store is closed or has nobody signed in.
    fn expire_if_idle(&self) -> bool {
        let mut inner = self.inner();
        let timeout = inner.idle_timeout;
        let keep_watching = match &mut inner.state {
            KeyState::Open(_) => false,
            KeyState::Users { session, .. } => match session {
                Some(s) if s.last_use.elapsed() >= timeout => {
                    *session = None;
                    tracing::info!("signed out after the idle timeout");
                    false
                }
                Some(_) => true,
                None => false,
            },
        };
        if !keep_watching {
            inner.watcher_running = false;
        }
        keep_watching
    }
}

/// The idle watcher: ends the session when it idles out, so the data key does not stay in
/// memory until the next call. Exits when nobody is signed in or the store is dropped.
fn watch(access: Weak<Access>) {
    loop {
        std::thread::sleep(WATCH_TICK);
        let Some(a) = access.upgrade() else { return };
        if !a.expire_if_idle() {
            return;
        }
    }
}
