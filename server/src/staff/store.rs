//! What the staff accounts and the console keep in the database, behind [`StaffStore`], which both
//! storage backends implement (`storage/sqlite/staff.rs`, `storage/postgres/staff.rs`).
//!
//! Tables (the same in both backends, created when missing at start):
//! * `staff` — one row per staff member: email (lower-cased, unique), argon2id PHC hash (none
//!   until a set-password link is used), role, clinic (coordinators), TOTP secret and the last
//!   accepted TOTP step (a code is accepted once), the set-password token's SHA-256 and expiry;
//! * `staff_sessions` — the SHA-256 of each session cookie, its CSRF token, creation, last use and
//!   absolute expiry (the cookie itself is never stored);
//! * `staff_login_failures` — failed sign-ins per key (`email:…`, `ip:…`) for throttling;
//! * `clinic_events` — invitation reminders and declines recorded by staff;
//! * `ae_notes` — monitors' comments on and escalations of adverse events.

use followup_domain::ids::RecordId;

use crate::audit::AuditEntry;
use crate::storage::StorageResult;

/// A staff member as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffRow {
    pub id: String,
    pub email: String,
    pub role: String,
    pub clinic: Option<RecordId>,
    pub password_hash: Option<String>,
    pub totp_secret: Option<Vec<u8>>,
    pub totp_last_step: Option<i64>,
    pub set_password_hash: Option<[u8; 32]>,
    pub set_password_expires_ms: Option<i64>,
    pub created_at_ms: i64,
    pub disabled_at_ms: Option<i64>,
}

/// A session as stored (keyed by the SHA-256 of its cookie value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub token_hash: [u8; 32],
    pub staff_id: String,
    pub csrf: String,
    pub created_at_ms: i64,
    pub last_seen_ms: i64,
    pub expires_at_ms: i64,
}

/// A clinic row with its invitation date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClinicListRow {
    pub id: RecordId,
    pub name: String,
    pub country: String,
    /// When the clinic was created on the registry, i.e. invited.
    pub invited_at_ms: i64,
}

/// A staff-recorded clinic event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClinicEvent {
    pub clinic: RecordId,
    /// `reminder` or `declined`.
    pub kind: String,
    pub at_ms: i64,
    pub staff_id: String,
    pub note: String,
}

/// A monitor's note on an adverse event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AeNote {
    pub ae: RecordId,
    pub clinic: RecordId,
    /// `comment` or `escalation`.
    pub kind: String,
    pub text: String,
    pub staff_id: String,
    pub at_ms: i64,
}

/// Persistence of staff accounts, sessions and the console's own records. Every method that
/// records a staff action takes the audit entry and appends it in the same transaction.
pub trait StaffStore {
    /// Insert a staff member; `false` (and nothing written) if the email is taken.
    fn insert_staff(&self, staff: &StaffRow, audit: &AuditEntry) -> StorageResult<bool>;
    fn staff_by_email(&self, email: &str) -> StorageResult<Option<StaffRow>>;
    fn staff_by_id(&self, id: &str) -> StorageResult<Option<StaffRow>>;
    fn list_staff(&self) -> StorageResult<Vec<StaffRow>>;
    /// Set the password hash and clear the set-password token.
    fn set_staff_password(&self, id: &str, hash: &str, audit: &AuditEntry) -> StorageResult<()>;
    /// Accept TOTP step `step` for `id` only if it is later than the last one accepted.
    fn use_totp_step(&self, id: &str, step: i64) -> StorageResult<bool>;
    /// The staff member holding this unexpired set-password token.
    fn staff_by_set_password_token(
        &self,
        token_hash: &[u8; 32],
        now_ms: i64,
    ) -> StorageResult<Option<StaffRow>>;

    fn insert_session(&self, session: &SessionRow, audit: &AuditEntry) -> StorageResult<()>;
    fn session(&self, token_hash: &[u8; 32]) -> StorageResult<Option<SessionRow>>;
    fn touch_session(&self, token_hash: &[u8; 32], now_ms: i64) -> StorageResult<()>;
    /// Delete one session (sign-out) and every expired one.
    fn delete_session(
        &self,
        token_hash: &[u8; 32],
        now_ms: i64,
        audit: Option<&AuditEntry>,
    ) -> StorageResult<()>;

    /// Record a failed sign-in under each key.
    fn record_login_failure(&self, keys: &[String], now_ms: i64) -> StorageResult<()>;
    /// Failures under `key` at or after `since_ms`, and the oldest of them.
    fn login_failures_since(&self, key: &str, since_ms: i64) -> StorageResult<(u64, Option<i64>)>;
    fn clear_login_failures(&self, key: &str) -> StorageResult<()>;

    fn list_clinics(&self) -> StorageResult<Vec<ClinicListRow>>;

    fn add_clinic_event(&self, event: &ClinicEvent, audit: &AuditEntry) -> StorageResult<()>;
    fn clinic_events(&self) -> StorageResult<Vec<ClinicEvent>>;
    fn add_ae_note(&self, note: &AeNote, audit: &AuditEntry) -> StorageResult<()>;
    fn ae_notes(&self, ae: RecordId) -> StorageResult<Vec<AeNote>>;
}

/// A stored 32-byte hash (shared by both backends).
pub(crate) fn hash32(v: &[u8]) -> StorageResult<[u8; 32]> {
    crate::storage::h32(v, "token hash")
}
