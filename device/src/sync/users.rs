//! The registry's side of users on a shared tablet, from the tablet: activating a user with
//! their one-time code, and deleting the slots of users the registry removed (at each sync).
//! Messages: [`followup_domain::users`].

use followup_domain::ids::UserId;
use followup_domain::protocol::DeviceRole;
use followup_domain::users::{
    ActivateUserRequest, ClinicUserInfo, ClinicUsersResponse, USERS_PATH, USER_ACTIVATE_PATH,
};
use serde::de::DeserializeOwned;

use super::{error_from, now_ms, read_capped, Failure, SyncClient, SyncError};

/// Largest users answer accepted (about 5,000 users).
const MAX_USERS_BODY: usize = 1 << 20;
use crate::crypto::UserPin;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::store::users::check_pin_strength;

impl SyncClient {
    /// Add a user to this clinic tablet: the registry checks their activation code (a tablet
    /// cannot invent a user) and records the activation; then their key slot is made with the
    /// PIN or passphrase they chose. Needs a connection to the registry. The PIN's strength and
    /// the device's state are checked first, so a refusal costs no round trip.
    ///
    /// Errors: [`SyncError::InvalidCode`] (unknown user, wrong, used or expired code, or a user
    /// of another clinic), the PIN's [`crate::store::StoreError::WeakPin`],
    /// [`crate::store::StoreError::Locked`] (a signed-in user must add the next one).
    pub async fn activate_user(
        &self,
        device: &Device,
        user: UserId,
        code: &str,
        pin: &UserPin,
    ) -> Result<ClinicUserInfo> {
        let enrolled = device.enrolment().ok_or(Error::NotEnrolled)?;
        if enrolled.role != DeviceRole::ClinicDevice {
            return Err(Error::NotPermitted(
                "a patient's phone has one user, the patient; only clinic tablets add users".into(),
            ));
        }
        check_pin_strength(pin.text())?;
        device.store().users()?;
        if !device.is_unlocked() {
            return Err(crate::store::StoreError::Locked.into());
        }
        let req = ActivateUserRequest {
            user,
            code: code.trim().to_string(),
        };
        let info: ClinicUserInfo = self.signed_json(device, USER_ACTIVATE_PATH, &req).await?;
        if info.id != user || !info.active {
            return Err(
                SyncError::InvalidCode("the registry did not confirm this user".into()).into(),
            );
        }
        device.add_user(user, &info.name, pin)?;
        Ok(info)
    }

    /// Ask the registry for the clinic's users and delete the key slot of every user set up on
    /// this device who is no longer active there (removed, or unknown to the registry). A
    /// removed user who is signed in is signed out at once. Returns how many were removed.
    /// [`SyncClient::sync`] calls it after every sync of a device with users.
    /// The answer also replaces the clinic's directory on the device (device labels, user
    /// names: [`Device::directory`]).
    pub async fn refresh_users(&self, device: &Device) -> Result<usize> {
        if !device.has_users() {
            return Ok(0);
        }
        let answer: ClinicUsersResponse = self
            .signed_json(device, USERS_PATH, &serde_json::json!({}))
            .await?;
        device.save_directory(&answer, now_ms())?;
        let active: std::collections::HashSet<UserId> = answer
            .users
            .iter()
            .filter(|u| u.active)
            .map(|u| u.id)
            .collect();
        let removed: Vec<UserId> = device
            .users()?
            .into_iter()
            .map(|u| u.id)
            .filter(|id| !active.contains(id))
            .collect();
        if removed.is_empty() {
            return Ok(0);
        }
        tracing::info!(removed = removed.len(), "users removed by the registry");
        Ok(device.store().remove_users_revoked(&removed)?)
    }

    /// After a sync: a tablet with users refreshes its users (and directory) every time; a
    /// tablet without users only fetches the directory when the sync brought records (a new
    /// writer may have appeared) or it never received it, and a failure there (an older
    /// registry without the route, a dropped link) only leaves the directory as it was. A
    /// patient's phone asks nothing.
    pub(crate) async fn refresh_after_sync(&self, device: &Device, pulled: u64) -> Result<usize> {
        let clinic = device
            .enrolment()
            .is_some_and(|e| e.role == DeviceRole::ClinicDevice);
        if !clinic {
            return Ok(0);
        }
        if device.has_users() {
            return self.refresh_users(device).await;
        }
        if pulled == 0 && device.has_directory()? {
            return Ok(0);
        }
        match self
            .signed_json::<ClinicUsersResponse>(device, USERS_PATH, &serde_json::json!({}))
            .await
        {
            Ok(answer) => device.save_directory(&answer, now_ms())?,
            Err(e) => tracing::warn!(error = %e, "the clinic's directory was not received"),
        }
        Ok(0)
    }

    /// One signed JSON POST (signed like a sync request) and its decoded JSON answer.
    async fn signed_json<T: DeserializeOwned>(
        &self,
        device: &Device,
        path: &'static str,
        body: &impl serde::Serialize,
    ) -> Result<T> {
        let enrolled = device.enrolment().ok_or(Error::NotEnrolled)?;
        let url = self.endpoint(&enrolled.server_url, path)?;
        let body = serde_json::to_vec(body).map_err(|e| SyncError::Config(e.to_string()))?;
        let signed =
            device
                .identity()?
                .sign_request(enrolled.device_id, "POST", path, &body, now_ms());
        let mut rb = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (k, v) in signed.to_header_pairs() {
            rb = rb.header(k, v);
        }
        let unreachable = |last: String| SyncError::ServerUnreachable { attempts: 1, last };
        let fatal = |f: Failure| match f {
            Failure::Fatal(e) => e,
            Failure::Transient(last) => unreachable(last),
            Failure::Cancelled => SyncError::Cancelled,
            Failure::OldServer => SyncError::Server {
                status: 404,
                code: "not_found".into(),
                message: "the registry does not know users on a tablet: update the registry server"
                    .into(),
            },
        };
        let resp = rb
            .body(body)
            .send()
            .await
            .map_err(|e| unreachable(super::describe(&e)))?;
        if !resp.status().is_success() {
            return Err(fatal(error_from(resp).await).into());
        }
        let bytes = read_capped(resp, MAX_USERS_BODY, |_| {})
            .await
            .map_err(fatal)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            SyncError::Server {
                status: 200,
                code: "bad_response".into(),
                message: format!("the registry's answer is not understood: {e}"),
            }
            .into()
        })
    }
}
