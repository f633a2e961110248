//! The device crate's error type: rich and internal. `bindings/` maps it to a small public error whose
//! message tells the user what to do.

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the device core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A record's document does not have the shape its kind requires.
    #[error("record {id} is malformed: {reason}")]
    MalformedRecord { id: String, reason: String },
    /// No record with this id in the store.
    #[error("no record {0}")]
    NotFound(String),
    /// An Automerge operation failed.
    #[error("document error: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    /// Mapping a typed view onto a document failed.
    #[error("could not read the record: {0}")]
    Hydrate(#[from] autosurgeon::HydrateError),
    /// Writing a typed view into a document failed.
    #[error("could not write the record: {0}")]
    Reconcile(#[from] autosurgeon::ReconcileError),
    /// The encrypted store failed (wrong key, tampering, database errors...).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The device must be enrolled with a registry first.
    #[error("this device is not enrolled: enrol it with a code from the registry first")]
    NotEnrolled,
    /// The device's role does not allow this.
    #[error("not permitted: {0}")]
    NotPermitted(String),
    /// An argument was not acceptable.
    #[error("{0}")]
    InvalidInput(String),
    /// Answers break their questionnaire's rules; one problem per broken rule.
    #[error("the answers break {} rule(s) of the questionnaire: {}", .0.len(), .0.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; "))]
    Validation(Vec<followup_domain::questionnaire::Problem>),
    /// The device identity could not be created or used.
    #[error(transparent)]
    Identity(#[from] followup_domain::identity::IdentityError),
    /// A sync or an enrolment with the registry server failed; the message says what to do.
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
    /// A submitted response already answers this visit: recording it again would make a second.
    #[error(
        "visit {visit} is already recorded by response {record}; open that response instead of \
         recording the visit again"
    )]
    AlreadyRecorded {
        record: followup_domain::ids::RecordId,
        visit: String,
    },
    /// An identifier was malformed.
    #[error(transparent)]
    InvalidId(#[from] followup_domain::ids::InvalidId),
    /// The form's definition uses something this app does not know (a newer format or
    /// feature): the form is disabled until the app is updated; nothing captured is lost.
    #[error("the form {form} needs an app update ({reason})")]
    NeedsUpdate { form: String, reason: String },
}

impl From<followup_domain::Error> for Error {
    fn from(e: followup_domain::Error) -> Self {
        match e {
            followup_domain::Error::MalformedRecord { id, reason } => {
                Error::MalformedRecord { id, reason }
            }
            followup_domain::Error::Automerge(e) => Error::Automerge(e),
            followup_domain::Error::Hydrate(e) => Error::Hydrate(e),
            followup_domain::Error::Reconcile(e) => Error::Reconcile(e),
            followup_domain::Error::InvalidId(e) => Error::InvalidId(e),
        }
    }
}
