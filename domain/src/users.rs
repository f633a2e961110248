//! Clinic users on shared tablets: the JSON messages between a tablet, registry staff and the
//! registry server (`docs/security.md`, "Users on a shared tablet"; `docs/sync-protocol.md`).
//!
//! * Staff create a user for a clinic (`POST /v1/admin/clinic-users`) and get a one-time
//!   activation code, given to the nurse out of band.
//! * On a tablet of that clinic the nurse types the code and chooses a PIN; the tablet sends
//!   the code in a signed request ([`USER_ACTIVATE_PATH`]); the server records "user U
//!   activated on device D". From then on, changes the tablet attributes to U are accepted.
//! * At each sync the tablet asks for its clinic's users ([`USERS_PATH`], signed) and deletes the
//!   key slot of every user no longer active. The same answer carries the clinic's devices and
//!   their labels, so that a tablet names who wrote what (conflicts, the adjudication queue).
//!
//! Every request to the two device paths is signed exactly like a sync request (method, path,
//! body hash; see [`crate::identity`]).

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, RecordId, UserId};
use crate::protocol::DeviceRole;

/// A tablet asks for its clinic's users (POST, signed, body `{}`).
pub const USERS_PATH: &str = "/v1/users";
/// A tablet activates a user with their activation code (POST, signed, [`ActivateUserRequest`]).
pub const USER_ACTIVATE_PATH: &str = "/v1/users/activate";
/// How long an activation code stays valid (7 days).
pub const ACTIVATION_CODE_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

/// Body of [`USER_ACTIVATE_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivateUserRequest {
    pub user: UserId,
    /// The activation code staff gave the user (spaces and dashes are ignored).
    pub code: String,
}

/// One user of a clinic as a tablet sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClinicUserInfo {
    pub id: UserId,
    pub name: String,
    /// `false` once staff removed the user: tablets delete the user's key slot.
    pub active: bool,
}

/// One device of a clinic as its tablets see it, so that a tablet names the other writers of a
/// record ("Tablet 2, ward B") instead of showing their ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClinicDeviceInfo {
    pub id: DeviceId,
    pub role: DeviceRole,
    /// The label staff gave the device at enrolment. Always `None` for a patient's phone (its
    /// label could name the patient); a tablet calls it "the patient's phone".
    pub label: Option<String>,
    pub revoked: bool,
}

/// Answer of [`USERS_PATH`]: every user of the device's clinic, removed ones included, and
/// (since the registry sends them; older registries do not) the clinic's devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClinicUsersResponse {
    pub users: Vec<ClinicUserInfo>,
    #[serde(default)]
    pub devices: Vec<ClinicDeviceInfo>,
}

/// Staff create a clinic user (`POST /v1/admin/clinic-users`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateClinicUserRequest {
    pub clinic: RecordId,
    /// The name tablets show on their sign-in screen (no patient data).
    pub name: String,
}

/// The new user and the activation code to give them (shown once; the server keeps a hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateClinicUserResponse {
    pub user: UserId,
    pub activation_code: String,
    pub expires_at_ms: i64,
}

/// A clinic user as staff see them (`GET /v1/admin/clinic-users?clinic=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClinicUserRow {
    pub id: UserId,
    pub clinic: RecordId,
    pub name: String,
    pub created_at_ms: i64,
    pub removed_at_ms: Option<i64>,
    /// The devices the user was activated on.
    pub devices: Vec<crate::ids::DeviceId>,
}
