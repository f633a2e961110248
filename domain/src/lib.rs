//! # followup-domain
//!
//! The pure logic that a Followup device and the registry server share. Everything here is
//! deterministic computation over values: no storage, no network, no async runtime.
//!
//! | module | what it holds |
//! |---|---|
//! | [`ids`] | random record, device and store identifiers |
//! | [`model`] | the registry's records, each one Automerge document, typed through autosurgeon; conflicts |
//! | [`questionnaire`] | versioned questionnaire definitions, validation, enable-when, scores; the default instruments |
//! | [`schedule`] | follow-up schedules and the upcoming / due / overdue / missed classification |
//! | [`definitions`] | registry-authored definitions (questionnaires, schedules, policies): envelope, versions, records, the catalogue |
//! | [`protocol`] | the sync wire protocol's types and codec (see `docs/sync-protocol.md`) |
//! | [`identity`] | Ed25519 device identities, request signing and verification |
//! | [`policy`] | the registry's adjudication policy (versioned data) and the adjudication case's states |
//! | [`rules`] | THE clinical rules, run by the device at capture and by the server when a record lands |
//! | [`vocabulary`] | which instrument item carries which model code list (with the drift test) |
//! | [`users`] | clinic users on shared tablets: activation and user-list messages |
//! | [`error`] | the domain's error type |
//!
//! ## What this crate must never depend on
//!
//! SQLite (`rusqlite`), an HTTP client or server (`reqwest`, `hyper`, `axum`), an async runtime
//! (`tokio`) or uniffi. The device crate (`followup-device`) adds storage and the sync client;
//! the server (`followup-server`) adds HTTP and its databases; both link this crate, so anything
//! added here ends up on every phone and in every server process. Within the crate, modules
//! depend downwards only: `ids` ← `questionnaire`, `schedule`, `protocol`, `identity` ← `model`
//! (no import circles).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod definitions;
pub mod error;
pub mod identity;
pub mod ids;
pub mod model;
pub mod policy;
pub mod protocol;
pub mod questionnaire;
pub mod rules;
pub mod schedule;
pub mod users;
pub mod vocabulary;

pub use error::{Error, Result};
pub use ids::{DeviceId, RecordId, StoreId};
