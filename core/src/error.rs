//! The crate's error type: rich and internal. `bindings/` maps it to a small public error whose
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
    /// An identifier was malformed.
    #[error(transparent)]
    InvalidId(#[from] crate::ids::InvalidId),
}
