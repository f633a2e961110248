//! Users on a shared clinic tablet (see `docs/security.md`, "Users on a shared tablet"):
//! sign-in, sign-out, the idle lock, adding a user with their activation code, the sign-in
//! screen's list. Translation only.

use std::time::Duration;

use followup_device::crypto::UserPin;
use followup_domain::ids::UserId;

use crate::error::FollowupError;
use crate::store::{blocking, FollowupStore};

/// A user set up on this device, for the sign-in screen (listed while locked).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DeviceUser {
    pub user_id: String,
    pub name: String,
    /// Wrong PINs in a row so far.
    pub failures: u32,
    /// Locked after too many wrong PINs: add the user again with a new activation code.
    pub locked: bool,
    /// Unix ms before which no sign-in attempt is accepted (0: now).
    pub retry_at_ms: i64,
}

fn parse_user(s: &str) -> Result<UserId, FollowupError> {
    s.trim()
        .parse()
        .map_err(|_| FollowupError::invalid_input(format!("{s:?} is not a user id")))
}

fn pin(p: String) -> Result<UserPin, FollowupError> {
    if p.is_empty() {
        return Err(FollowupError::invalid_input("The PIN is empty"));
    }
    Ok(UserPin::new(p))
}

#[uniffi::export(async_runtime = "tokio")]
impl FollowupStore {
    /// `true` on a shared tablet: the store opens locked and a user must sign in.
    pub fn has_users(&self) -> Result<bool, FollowupError> {
        self.with(|d| Ok(d.has_users()))
    }

    /// `true` while a shared tablet has nobody signed in (every record call fails with
    /// `Locked`). Always `false` on a device without users.
    pub fn is_locked(&self) -> Result<bool, FollowupError> {
        self.with(|d| Ok(!d.is_unlocked()))
    }

    /// The signed-in user's id, if any.
    pub fn signed_in_user(&self) -> Result<Option<String>, FollowupError> {
        self.with(|d| Ok(d.signed_in_user().map(|u| u.to_hex())))
    }

    /// The users set up on this device (works while locked).
    pub fn device_users(&self) -> Result<Vec<DeviceUser>, FollowupError> {
        self.with(|d| {
            Ok(d.users()?
                .into_iter()
                .map(|u| DeviceUser {
                    user_id: u.id.to_hex(),
                    name: u.name,
                    failures: u.failures,
                    locked: u.locked,
                    retry_at_ms: u.retry_at_ms,
                })
                .collect())
        })
    }

    /// Signs a user in with their PIN or passphrase (about a second: it is stretched).
    /// `WrongPin`, `TryLater`, `UserLocked`, or `InvalidInput` for a user not on this device.
    pub async fn sign_in(&self, user_id: String, pin_text: String) -> Result<(), FollowupError> {
        let d = self.device()?;
        let user = parse_user(&user_id)?;
        let pin = pin(pin_text)?;
        blocking(move || Ok(d.sign_in(user, &pin)?)).await
    }

    /// Signs out now: the data key leaves memory; record calls fail with `Locked`.
    pub fn sign_out(&self) -> Result<(), FollowupError> {
        self.with(|d| {
            d.sign_out();
            Ok(())
        })
    }

    /// Adds a user with the activation code registry staff gave them and the PIN they chose
    /// (needs the registry). The first user turns the device into a shared tablet and is signed
    /// in; later users need someone signed in. Returns the user's display name.
    pub async fn add_user(
        &self,
        user_id: String,
        activation_code: String,
        pin_text: String,
    ) -> Result<String, FollowupError> {
        let d = self.device()?;
        let user = parse_user(&user_id)?;
        let pin = pin(pin_text)?;
        let client = self.sync.client()?;
        let info = client
            .activate_user(&d, user, &activation_code, &pin)
            .await?;
        Ok(info.name)
    }

    /// Removes a user from this device (not the last one; a signed-in user must do it).
    pub fn remove_user(&self, user_id: String) -> Result<bool, FollowupError> {
        let user = parse_user(&user_id)?;
        self.with(|d| Ok(d.remove_user(user)?))
    }

    /// Seconds a signed-in session may stay idle before the tablet locks itself (default 300).
    pub fn idle_timeout_seconds(&self) -> Result<u64, FollowupError> {
        self.with(|d| Ok(d.idle_timeout().as_secs()))
    }

    /// Sets (and keeps) the idle timeout, at least 1 second.
    pub fn set_idle_timeout_seconds(&self, seconds: u64) -> Result<(), FollowupError> {
        self.with(|d| Ok(d.set_idle_timeout(Duration::from_secs(seconds))?))
    }
}
