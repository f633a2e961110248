//! The domain crate's error type: what can go wrong reading or writing a record's document.
//! The device crate and the server each wrap it in their own richer error.

/// Result with the domain's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A record's document could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A record's document does not have the shape its kind requires.
    #[error("record {id} is malformed: {reason}")]
    MalformedRecord { id: String, reason: String },
    /// An Automerge operation failed.
    #[error("document error: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    /// Mapping a typed view onto a document failed.
    #[error("could not read the record: {0}")]
    Hydrate(#[from] autosurgeon::HydrateError),
    /// Writing a typed view into a document failed.
    #[error("could not write the record: {0}")]
    Reconcile(#[from] autosurgeon::ReconcileError),
    /// An identifier in the document was malformed.
    #[error(transparent)]
    InvalidId(#[from] crate::ids::InvalidId),
}
