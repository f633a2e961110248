//! The one error type the platforms see.
//!
//! Every variant says what happened and what the app (or its user) should do about it. Each
//! variant carries a `reason` — a whole sentence built here, ready to show or log — plus the
//! structured fields an app needs to react (for example the item problems of a failed
//! validation). Core's rich error is mapped onto these variants in one place: [`From`] below.
//!
//! On Kotlin this becomes `sealed class FollowupException` (`FollowupException.WrongKey`, ...);
//! on Swift `enum FollowupError: Error` (`.WrongKey(reason:)`, ...).

/// One problem with one answer of a questionnaire response.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ItemProblem {
    /// The questionnaire item the problem is about, e.g. `q07`.
    pub item_id: String,
    /// A stable machine-readable code: `required`, `wrong_type`, `below_min`, `above_max`,
    /// `too_many_decimals`, `too_long`, `unknown_choice`, `duplicate_choice`, `exclusive_choice`,
    /// `invalid_date`, `unknown_item`, `answered_but_disabled`.
    pub code: String,
    /// A sentence for the person typing the answer.
    pub message: String,
}

/// Everything that can go wrong behind the Followup API.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Error, thiserror::Error)]
pub enum FollowupError {
    /// The passphrase or platform key does not open this store.
    #[error("{reason}")]
    WrongKey { reason: String },
    /// The operation needs an enrolled device: call `enrol` first.
    #[error("{reason}")]
    NotEnrolled { reason: String },
    /// The registry server could not be reached; nothing was lost, try again later.
    #[error("{reason}")]
    ServerUnreachable { reason: String },
    /// The answers do not satisfy the questionnaire; `problems` lists each item's problem.
    #[error("{reason}")]
    ValidationFailed {
        reason: String,
        problems: Vec<ItemProblem>,
    },
    /// Stored data failed its integrity check: it was altered outside the app.
    #[error("{reason}")]
    Tampered { reason: String },
    /// The device's storage failed (disk full, file not writable, ...).
    #[error("{reason}")]
    Storage { reason: String },
    /// The registry refused this device's request (its signature or its right to do it).
    #[error("{reason}")]
    Rejected { reason: String },
    /// This device's role does not allow the operation (e.g. a patient's phone adjudicating).
    #[error("{reason}")]
    NotPermitted { reason: String },
    /// `enrol` was called on a device that is already enrolled.
    #[error("{reason}")]
    AlreadyEnrolled { reason: String },
    /// The registry revoked this device; it can no longer sync. Enrol a new device.
    #[error("{reason}")]
    Revoked { reason: String },
    /// The device's clock is too far off for the registry to accept its requests.
    #[error("{reason}")]
    ClockWrong { reason: String },
    /// The registry needs a newer app (sync protocol or record format); update the app.
    #[error("{reason}")]
    UpdateRequired { reason: String },
    /// The registry server answered with an error this app cannot recover from by retrying.
    #[error("{reason}")]
    ServerFailed { reason: String },
    /// The store was closed with `close_store()`; open it again.
    #[error("{reason}")]
    Closed { reason: String },
    /// The operation was cancelled through its cancellation handle.
    #[error("{reason}")]
    Cancelled { reason: String },
    /// A submitted response already answers this visit; `record_id` is that response (open it
    /// instead of recording the visit again).
    #[error("{reason}")]
    AlreadyRecorded { reason: String, record_id: String },
    /// An argument was malformed (an id, a date, an empty passphrase, ...).
    #[error("{reason}")]
    InvalidInput { reason: String },
    /// The platform `KeyProvider` failed with an error that was not a `FollowupError`.
    #[error("{reason}")]
    KeyProviderFailed { reason: String },
    /// A bug in Followup; please report it with this message.
    #[error("{reason}")]
    Internal { reason: String },
    /// The shared tablet is locked (nobody signed in, or the session idled out): show the
    /// sign-in screen, then call again.
    #[error("{reason}")]
    Locked { reason: String },
    /// The PIN is not this user's; `attempts_left` before the user is locked on this device.
    #[error("{reason}")]
    WrongPin { reason: String, attempts_left: u32 },
    /// Too many wrong PINs in a row: no attempt is accepted for `seconds`.
    #[error("{reason}")]
    TryLater { reason: String, seconds: u64 },
    /// The user is locked on this device after too many wrong PINs: add them again with a new
    /// activation code.
    #[error("{reason}")]
    UserLocked { reason: String },
    /// The chosen PIN or passphrase is too weak; `reason` says why.
    #[error("{reason}")]
    WeakPin { reason: String },
}

impl FollowupError {
    /// The whole human-readable sentence, whatever the variant.
    pub fn reason(&self) -> &str {
        match self {
            Self::WrongKey { reason }
            | Self::NotEnrolled { reason }
            | Self::ServerUnreachable { reason }
            | Self::ValidationFailed { reason, .. }
            | Self::Tampered { reason }
            | Self::Storage { reason }
            | Self::Rejected { reason }
            | Self::NotPermitted { reason }
            | Self::AlreadyEnrolled { reason }
            | Self::Revoked { reason }
            | Self::ClockWrong { reason }
            | Self::UpdateRequired { reason }
            | Self::ServerFailed { reason }
            | Self::Closed { reason }
            | Self::Cancelled { reason }
            | Self::InvalidInput { reason }
            | Self::AlreadyRecorded { reason, .. }
            | Self::KeyProviderFailed { reason }
            | Self::Internal { reason }
            | Self::Locked { reason }
            | Self::WrongPin { reason, .. }
            | Self::TryLater { reason, .. }
            | Self::UserLocked { reason }
            | Self::WeakPin { reason } => reason,
        }
    }

    #[cfg(test)]
    pub(crate) fn wrong_key() -> Self {
        Self::WrongKey {
            reason: "The passphrase or key does not open this store. Ask the user for the right \
                      passphrase, or use the KeyProvider the store was created with."
                .into(),
        }
    }

    pub(crate) fn invalid_input(what: impl std::fmt::Display) -> Self {
        Self::InvalidInput {
            reason: format!("{what}. Fix the argument and call again."),
        }
    }

    pub(crate) fn validation(problems: Vec<ItemProblem>) -> Self {
        let n = problems.len();
        Self::ValidationFailed {
            reason: format!(
                "{n} answer{} need{} attention before this response can be submitted: {}.",
                if n == 1 { "" } else { "s" },
                if n == 1 { "s" } else { "" },
                problems
                    .iter()
                    .map(|p| format!("{}: {}", p.item_id, p.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            problems,
        }
    }

    pub(crate) fn closed() -> Self {
        Self::Closed {
            reason: "This store was closed. Open it again to go on.".into(),
        }
    }

    pub(crate) fn internal(what: impl std::fmt::Display) -> Self {
        Self::Internal {
            reason: format!("Internal error in Followup ({what}). Please report it."),
        }
    }
}

/// A platform callback threw something other than a `FollowupError` (e.g. a Kotlin
/// `IllegalStateException` or a Swift error of another type). uniffi requires this conversion for
/// every error used by a foreign trait. Only `KeyProvider` failures reach the app this way;
/// progress-listener failures are ignored.
impl From<uniffi::UnexpectedUniFFICallbackError> for FollowupError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::KeyProviderFailed {
            reason: format!(
                "The platform key provider failed: {}. Check the device's keystore/keychain; \
                 the store stays locked until it works.",
                e.reason
            ),
        }
    }
}

/// Core's messages say what to do but are written mid-sentence; the platforms show whole
/// sentences.
fn sentence(s: impl std::fmt::Display) -> String {
    let s = s.to_string();
    let mut chars = s.chars();
    let mut out: String = match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => return s,
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// Core's rich error, mapped onto what the app can act on. Core's messages already say what to
/// do, so they are passed through as sentences; only the variant is chosen here. The matches
/// are exhaustive on purpose: a new core variant fails to compile here until it is mapped.
impl From<followup_device::Error> for FollowupError {
    fn from(e: followup_device::Error) -> Self {
        use followup_device::Error as E;
        let reason = sentence(&e);
        match e {
            E::Store(s) => s.into(),
            E::Sync(s) => s.into(),
            E::Validation(problems) => {
                Self::validation(problems.into_iter().map(Into::into).collect())
            }
            E::NotEnrolled => Self::NotEnrolled { reason },
            E::AlreadyRecorded { record, .. } => Self::AlreadyRecorded {
                reason,
                record_id: record.to_hex(),
            },
            E::NotPermitted(_) => Self::NotPermitted { reason },
            E::InvalidId(_) | E::NotFound(_) | E::InvalidInput(_) => Self::InvalidInput { reason },
            // A form published with a feature this app does not know: the app says that this
            // form needs an update; every other form keeps working.
            E::NeedsUpdate { .. } => Self::UpdateRequired { reason },
            E::MalformedRecord { .. } => Self::Tampered { reason },
            E::Automerge(_) | E::Hydrate(_) | E::Reconcile(_) | E::Identity(_) => {
                Self::internal(reason)
            }
        }
    }
}

/// Sync and enrolment failures: each has its own variant when the app reacts differently.
impl From<followup_device::sync::SyncError> for FollowupError {
    fn from(e: followup_device::sync::SyncError) -> Self {
        use followup_device::sync::SyncError as S;
        let reason = sentence(&e);
        match e {
            S::ServerUnreachable { .. } => Self::ServerUnreachable { reason },
            S::Cancelled => Self::Cancelled { reason },
            S::Revoked => Self::Revoked { reason },
            S::UnknownDevice(_) => Self::NotEnrolled { reason },
            S::ClockSkew { .. } => Self::ClockWrong { reason },
            S::Unauthenticated(_) => Self::Rejected { reason },
            S::VersionMismatch { .. } | S::UnreadableRecord { .. } => {
                Self::UpdateRequired { reason }
            }
            S::InvalidCode(_) | S::Config(_) => Self::InvalidInput { reason },
            S::AlreadyEnrolled(_) => Self::AlreadyEnrolled { reason },
            S::Server {
                status: 401 | 403, ..
            } => Self::Rejected { reason },
            S::Server { .. } => Self::ServerFailed { reason },
        }
    }
}

impl From<followup_device::store::StoreError> for FollowupError {
    fn from(e: followup_device::store::StoreError) -> Self {
        use followup_device::crypto::{CryptoError as C, KeyProviderError as K};
        use followup_device::store::StoreError as S;
        let reason = sentence(&e);
        match e {
            S::WrongKey | S::Crypto(C::WrongKey) | S::Crypto(C::KeyProvider(K::WrongKey)) => {
                Self::WrongKey { reason }
            }
            S::Tampered { .. }
            | S::Incomplete { .. }
            | S::TamperedSecret { .. }
            | S::Corrupted(_)
            | S::Crypto(C::Authentication | C::Malformed | C::BadKeySlot(_)) => {
                Self::Tampered { reason }
            }
            S::KeyProvider(_) | S::Crypto(C::KeyProvider(_)) => Self::KeyProviderFailed { reason },
            S::NotAFollowupStore { .. } | S::NotFound(_) | S::AlreadyExists(_) => {
                Self::InvalidInput { reason }
            }
            S::UnsupportedFormat { .. } | S::Crypto(C::UnsupportedVersion(_)) => {
                Self::Storage { reason }
            }
            S::Sqlite(_) | S::Io(_) => Self::Storage { reason },
            // A document that passed authentication yet does not load, or a plaintext index
            // entry that is not a short code: bugs, not something the user can fix.
            S::InvalidMeta(_) | S::Automerge(_) | S::Crypto(C::Seal) => Self::internal(reason),
            S::Locked => Self::Locked { reason },
            S::WrongPin { attempts_left } => Self::WrongPin {
                reason,
                attempts_left,
            },
            S::TryLater { seconds } => Self::TryLater { reason, seconds },
            S::UserLocked => Self::UserLocked { reason },
            S::WeakPin(_) => Self::WeakPin { reason },
            S::UnknownUser(_) => Self::InvalidInput { reason },
            S::Users(_) => Self::NotPermitted { reason },
        }
    }
}

/// Runs `f`, turning a panic into [`FollowupError::Internal`] instead of letting it unwind into
/// the platform. uniffi already catches panics at the boundary, but would report them as its own
/// `InternalException`; this keeps the app's `catch` to one error type.
pub(crate) fn guard<T>(f: impl FnOnce() -> Result<T, FollowupError>) -> Result<T, FollowupError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(FollowupError::internal(panic_text(&*payload))),
    }
}

pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_turns_a_panic_into_internal() {
        let r: Result<(), _> = guard(|| panic!("boom"));
        match r {
            Err(FollowupError::Internal { reason }) => assert!(reason.contains("boom")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn store_errors_map_to_actionable_variants() {
        use followup_device::store::StoreError;
        let e: FollowupError = followup_device::Error::Store(StoreError::WrongKey).into();
        assert!(matches!(e, FollowupError::WrongKey { .. }), "{e:?}");
        assert!(e.reason().contains("Check the passphrase"), "{e:?}");
        let e: FollowupError = StoreError::Corrupted("bad page".into()).into();
        assert!(matches!(e, FollowupError::Tampered { .. }), "{e:?}");
        let e: FollowupError = StoreError::NotFound("/x".into()).into();
        assert!(matches!(e, FollowupError::InvalidInput { .. }), "{e:?}");
    }

    #[test]
    fn validation_message_lists_problems() {
        let e = FollowupError::validation(vec![ItemProblem {
            item_id: "q01".into(),
            code: "required".into(),
            message: "an answer is required".into(),
        }]);
        assert_eq!(
            e.reason(),
            "1 answer needs attention before this response can be submitted: q01: an answer is required."
        );
    }
}

#[cfg(test)]
mod mapping_tests {
    use super::*;
    use followup_device::sync::SyncError;

    type Case = (SyncError, fn(&FollowupError) -> bool);

    #[test]
    fn sync_errors_map_to_what_the_app_does_next() {
        let cases: Vec<Case> = vec![
            (
                SyncError::ServerUnreachable {
                    attempts: 3,
                    last: "timeout".into(),
                },
                |e| matches!(e, FollowupError::ServerUnreachable { .. }),
            ),
            (SyncError::Revoked, |e| {
                matches!(e, FollowupError::Revoked { .. })
            }),
            (SyncError::Cancelled, |e| {
                matches!(e, FollowupError::Cancelled { .. })
            }),
            (
                SyncError::VersionMismatch {
                    ours: 1,
                    supported: vec![2],
                },
                |e| matches!(e, FollowupError::UpdateRequired { .. }),
            ),
            (
                SyncError::ClockSkew {
                    skew_secs: Some(7200),
                },
                |e| matches!(e, FollowupError::ClockWrong { .. }),
            ),
            (SyncError::InvalidCode("used".into()), |e| {
                matches!(e, FollowupError::InvalidInput { .. })
            }),
            (SyncError::UnknownDevice("x".into()), |e| {
                matches!(e, FollowupError::NotEnrolled { .. })
            }),
        ];
        for (core, want) in cases {
            let e: FollowupError = followup_device::Error::Sync(core).into();
            assert!(want(&e), "{e:?}");
            let r = e.reason();
            assert!(r.starts_with(char::is_uppercase) && r.ends_with('.'), "{r}");
        }
    }

    #[test]
    fn device_errors_map_too() {
        let e: FollowupError =
            followup_device::Error::NotPermitted("a patient's phone cannot adjudicate".into())
                .into();
        assert!(matches!(e, FollowupError::NotPermitted { .. }), "{e:?}");
        assert_eq!(
            e.reason(),
            "Not permitted: a patient's phone cannot adjudicate."
        );
        let e: FollowupError = followup_device::Error::NotEnrolled.into();
        assert!(matches!(e, FollowupError::NotEnrolled { .. }), "{e:?}");
    }
}
