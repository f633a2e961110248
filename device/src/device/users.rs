//! The [`Device`] side of users on a shared tablet: sign-in, sign-out, the idle lock and the
//! users set up on the device. The key slots themselves are in [`crate::store::users`]; the
//! registry's side (activation, removal at sync) in [`crate::sync`].

use std::time::Duration;

use super::Device;
use crate::crypto::UserPin;
use crate::error::Result;
use crate::store::users::DeviceUser;
use followup_domain::ids::UserId;

impl Device {
    /// Whether this device has users (a shared clinic tablet): it opens locked and a user must
    /// sign in. A device without users (a patient's phone) works as before users existed.
    pub fn has_users(&self) -> bool {
        self.store.has_users()
    }

    /// Whether the device can be used now (no users, or a user is signed in).
    pub fn is_unlocked(&self) -> bool {
        self.store.is_unlocked()
    }

    /// The user signed in now, if any.
    pub fn signed_in_user(&self) -> Option<UserId> {
        self.store.signed_in_user()
    }

    /// The users set up on this device, for the sign-in screen (works while locked).
    pub fn users(&self) -> Result<Vec<DeviceUser>> {
        Ok(self.store.users()?)
    }

    /// Sign a user in with their PIN or passphrase. Every change made until sign-out or the
    /// idle lock carries the user's id as well as the device's.
    pub fn sign_in(&self, user: UserId, pin: &UserPin) -> Result<()> {
        self.forget_all();
        self.store.sign_in(user, pin)?;
        // The identity is sealed: a store with users reads it at its first sign-in.
        self.identity()?;
        Ok(())
    }

    /// Sign out now: the data key and the decrypted documents kept in memory are dropped.
    pub fn sign_out(&self) {
        self.store.sign_out();
        self.forget_all();
    }

    /// Set up a user on this device with the PIN or passphrase they chose (local half of
    /// adding a user; see [`crate::sync::SyncClient::activate_user`] for the whole). The first
    /// user turns the device into a shared tablet that opens locked.
    pub fn add_user(&self, user: UserId, name: &str, pin: &UserPin) -> Result<()> {
        Ok(self.store.add_user(user, name, pin)?)
    }

    /// Remove a user's slot from this device (not the last user). Returns whether it existed.
    pub fn remove_user(&self, user: UserId) -> Result<bool> {
        Ok(self.store.remove_user(user)?)
    }

    /// How long a signed-in session may stay idle before the device locks itself.
    pub fn idle_timeout(&self) -> Duration {
        self.store.idle_timeout()
    }

    /// Set (and keep) the idle time after which the device locks itself (at least 1 s).
    pub fn set_idle_timeout(&self, timeout: Duration) -> Result<()> {
        Ok(self.store.set_idle_timeout(timeout)?)
    }

    /// Drop every decrypted document kept in memory.
    fn forget_all(&self) {
        if let Ok(mut r) = self.recent.lock() {
            r.docs.clear();
        }
        if let Ok(mut w) = self.worklist.lock() {
            *w = None;
        }
    }
}
