//! # followup-ffi
//!
//! The uniffi layer over `followup-device` (and the `followup-domain` types it exposes), for Kotlin (Android, and the JVM in tests) and Swift
//! (iOS). **It only translates**: types into uniffi records, enums and objects; core's error into
//! [`FollowupError`]; platform callbacks ([`KeyProvider`], [`SyncProgressListener`]) into core's
//! traits. Every rule — validation, scheduling, encryption, sync — lives in `followup-domain` or
//! `followup-device`; if you find yourself writing an `if` about the domain here, it belongs
//! there. It must never depend on the server or the test kit.
//!
//! Conventions for every exported item:
//! - returns `Result<_, FollowupError>`; nothing panics across the boundary (uniffi catches
//!   panics at every call; [`error::guard`] turns them into `FollowupError::Internal` where we
//!   call out to platform code);
//! - long operations are `async fn` with `#[uniffi::export(async_runtime = "tokio")]`, taking an
//!   optional [`SyncProgressListener`] and [`CancellationHandle`]; they arrive as Kotlin `suspend`
//!   and Swift `async throws` functions;
//! - no `unwrap`/`expect` on anything that came from the platform.
//!
//! Bindings are generated in library mode by the `uniffi-bindgen` binary of this crate; see
//! `scripts/bindings-gen.sh` (`--update` refreshes the committed Kotlin/Swift copies) and
//! `scripts/test-bindings.sh`.
//!
//! ## Adding an API call
//! 1. Wrap the core type in a `#[derive(uniffi::Object)]` holding it (behind a `Mutex` if core
//!    needs `&mut`), with `#[uniffi::export]` methods; mirror core's value types as
//!    `uniffi::Record`/`uniffi::Enum` with `From` impls both ways (ids cross as `String`).
//! 2. Each method: convert arguments (malformed input -> `FollowupError::InvalidInput`), call core,
//!    convert with `?` (core errors map in `error.rs`), convert the result. No domain logic.
//! 3. Long calls: `async fn` under `#[uniffi::export(async_runtime = "tokio")]`, blocking core work
//!    in `tokio::task::spawn_blocking`, optional `SyncProgressListener` + `CancellationHandle`.
//! 4. `scripts/bindings-gen.sh --update`; add a Kotlin test in `android/src/jvmTest` and its XCTest
//!    mirror in `ios/Tests`; idiomatic helpers go in `android/src/main/kotlin/org/followup` and
//!    `ios/Sources/Followup`.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

uniffi::setup_scaffolding!();

pub mod app;
pub mod definitions;
pub mod error;
pub mod keys;
pub mod progress;
pub mod store;
pub mod sync;
pub mod types;
pub mod users;

pub use app::{ChangeListener, ChangeSubscription, RecordChange, RecordView};
pub use error::{FollowupError, ItemProblem};
pub use keys::KeyProvider;
pub use progress::{CancellationHandle, SyncProgress, SyncProgressListener, SyncStage};
pub use store::FollowupStore;
pub use sync::{Rejection, SyncReport, SyncSettings};
pub use users::DeviceUser;

/// The version of the Followup core this library was built from, e.g. `0.1.0`.
#[uniffi::export]
pub fn core_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
