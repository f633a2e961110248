//! # followup-core
//!
//! The device core of Followup: everything a clinic tablet or a patient's phone does, with no
//! knowledge of uniffi or of the server's internals.
//!
//! | module | what it holds |
//! |---|---|
//! | [`ids`] | random record, device and store identifiers |
//! | [`model`] | the registry's records, each one Automerge document, typed through autosurgeon; conflicts |
//! | [`questionnaire`] | versioned questionnaire definitions, validation, enable-when, scores; the default instruments |
//! | [`schedule`] | follow-up schedules and the upcoming / due / overdue / missed classification |
//! | [`crypto`] | the key hierarchy: `KeyProvider`, passphrase derivation, data key wrapping, AEAD sealing |
//! | [`store`] | the encrypted SQLite store of documents |
//! | [`protocol`] | the sync wire protocol's types and codec, shared with the server (see `docs/sync-protocol.md`) |
//! | [`identity`] | the device's Ed25519 identity and request signing |
//! | [`sync`] | the sync client: batching, retry, progress, cancellation |
//! | [`workload`] | the benchmark workload, deterministic from a seed |
//! | [`device`] | the facade an app uses: a store, an identity and the record operations of a field day |
//! | [`error`] | the crate's error type |

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod crypto;
pub mod device;
pub mod error;
pub mod identity;
pub mod ids;
pub mod model;
pub mod protocol;
pub mod questionnaire;
pub mod schedule;
pub mod store;
pub mod sync;
pub mod workload;

pub use error::{Error, Result};
pub use ids::{DeviceId, RecordId, StoreId};
