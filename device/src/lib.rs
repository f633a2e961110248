//! # followup-device
//!
//! The device side of Followup: everything a clinic tablet or a patient's phone does beyond the
//! shared domain logic, with no knowledge of uniffi or of the server's internals.
//!
//! | module | what it holds |
//! |---|---|
//! | [`crypto`] | the key hierarchy: `KeyProvider`, passphrase derivation, data key wrapping, AEAD sealing |
//! | [`store`] | the encrypted SQLite store of documents |
//! | [`sync`] | the sync client: batching, retry, progress, cancellation |
//! | [`device`] | the facade an app uses: a store, an identity and the record operations of a field day |
//! | [`app`] | the rest of the app API: one-change capture, drafts, any record, observing changes, due surveys |
//! | [`error`] | the crate's error type |
//!
//! Records, questionnaires, schedules, the wire protocol and request signing are in
//! `followup-domain`, which the server shares.
//!
//! ## What this crate must never depend on
//!
//! uniffi (the `bindings/` crate translates this API), the server crate, or any test or
//! benchmark workload (that is `followup-testkit`). Nothing that identifies a patient or states a
//! clinical fact may reach the disk in plaintext through this crate (see `docs/security.md`).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod app;
mod catalogue;
pub mod crypto;
pub mod device;
pub mod error;
pub mod store;
pub mod sync;

pub use error::{Error, Result};
pub use followup_domain::ids::{DeviceId, RecordId, StoreId};
