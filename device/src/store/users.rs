//! Users on a shared tablet: per-user key slots, sign-in with wrong-PIN back-off, sign-out and
//! the idle lock (design and threat model: `docs/security.md`, "Users on a shared tablet").
//!
//! A store starts without users (its key slot wraps the data key, as on a patient's phone).
//! Adding the first user switches it to **users mode** in one transaction:
//!
//! * a random 32-byte *pepper* is generated and the store's key slot (platform key or device
//!   passphrase) now wraps the pepper instead of the data key;
//! * each user gets a row in `user_slot`: the data key wrapped under
//!   `HKDF(PBKDF2(PIN) ‖ pepper)` ([`crate::crypto::UserSlot`]);
//! * `user_version` becomes [`super::USERS_FORMAT_VERSION`].
//!
//! From then on the device key alone opens the store **locked**; the data key is reachable only
//! through a user's slot. Adding or removing a user writes or deletes one row; no record is
//! re-encrypted.
//!
//! Wrong PINs: the failure count and the time before the next attempt are in the user's row, so
//! they survive a restart. The count is raised *before* the PIN is checked, so killing the app
//! during the check does not give a free attempt. The first [`FREE_ATTEMPTS`] failures cost
//! nothing; then each failure doubles the wait (1 s, 2 s, 4 s, … capped at [`MAX_DELAY_S`]);
//! after [`MAX_FAILURES`] consecutive failures the user is locked on this device until added
//! again with a new activation code. A correct PIN resets the count.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{read_slot, write_slot, Result, Store, StoreError, USERS_FORMAT_VERSION};
use crate::crypto::{new_pepper, pepper_as_key, KeySlot, UserPin, UserSlot};
use followup_domain::ids::UserId;

/// Wrong PINs in a row that cost no waiting.
pub const FREE_ATTEMPTS: u32 = 3;
/// Wrong PINs in a row after which the user is locked on the device.
pub const MAX_FAILURES: u32 = 10;
/// The longest wait between two attempts, in seconds.
pub const MAX_DELAY_S: u64 = 300;
/// Shortest accepted numeric PIN.
pub const MIN_PIN_DIGITS: usize = 6;
/// Shortest accepted passphrase (anything that is not all digits), in characters.
pub const MIN_PASSPHRASE_CHARS: usize = 8;
/// Longest display name kept for a user.
pub const MAX_NAME_CHARS: usize = 80;

const SETTING_IDLE_TIMEOUT: &str = "users.idle_timeout_s";

const USERS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS user_slot (
    user_id       BLOB PRIMARY KEY,
    name          TEXT NOT NULL,
    iterations    INTEGER NOT NULL,
    salt          BLOB NOT NULL,
    wrapped       BLOB NOT NULL,
    failures      INTEGER NOT NULL DEFAULT 0,
    retry_at_ms   INTEGER NOT NULL DEFAULT 0,
    added_at_ms   INTEGER NOT NULL
) WITHOUT ROWID;
";

/// One user set up on this device, as the sign-in screen lists them (readable while locked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceUser {
    pub id: UserId,
    /// The display name the registry gave the user.
    pub name: String,
    /// Wrong PINs in a row so far.
    pub failures: u32,
    /// Locked after [`MAX_FAILURES`] wrong PINs: must be added again.
    pub locked: bool,
    /// Unix ms before which no attempt is accepted (0: now).
    pub retry_at_ms: i64,
}

/// The wait after `failures` wrong PINs in a row, in seconds.
pub fn delay_after(failures: u32) -> u64 {
    if failures < FREE_ATTEMPTS {
        return 0;
    }
    let exp = (failures - FREE_ATTEMPTS).min(20);
    (1u64 << exp).min(MAX_DELAY_S)
}

/// Common PINs and passwords refused whatever their length.
const DENYLIST: &[&str] = &[
    "123123",
    "112233",
    "123321",
    "159753",
    "147258",
    "147852",
    "123654",
    "789456",
    "654987",
    "password",
    "passw0rd",
    "password1",
    "qwertyui",
    "qwertyuiop",
    "iloveyou",
    "letmein1",
    "welcome1",
    "abcdefgh",
    "abc12345",
    "admin123",
    "followup",
    "12345678a",
    "nurse123",
    "clinic123",
];

/// Whether `s` is one short block repeated (`121212`, `123123`, `aaaaaaaa`).
fn periodic(chars: &[char]) -> bool {
    (1..=chars.len() / 2).any(|p| {
        chars.len().is_multiple_of(p) && chars.iter().skip(p).zip(chars).all(|(a, b)| a == b)
    })
}

/// Whether the characters run up or down by one each step (`123456`, `987654`, `abcdefgh`).
fn sequence(chars: &[char]) -> bool {
    let steps: Vec<i64> = chars
        .windows(2)
        .map(|w| i64::from(u32::from(w[1])) - i64::from(u32::from(w[0])))
        .collect();
    !steps.is_empty() && (steps.iter().all(|&d| d == 1) || steps.iter().all(|&d| d == -1))
}

/// Refuse a PIN or passphrase too weak to protect a user's slot: a numeric PIN needs at least
/// [`MIN_PIN_DIGITS`] digits, anything else at least [`MIN_PASSPHRASE_CHARS`] characters; a
/// repeated block (`111111`, `121212`, `123123`), a straight run (`123456`, `654321`) or a
/// common PIN or password is refused. The message says what is wrong, never the PIN.
pub fn check_pin_strength(pin: &str) -> Result<()> {
    let chars: Vec<char> = pin.chars().collect();
    let weak = |why: &str| {
        Err(StoreError::WeakPin(format!(
            "the PIN or passphrase is too weak: {why}"
        )))
    };
    if chars.iter().any(|c| c.is_control()) {
        return weak("it contains control characters");
    }
    let numeric = !chars.is_empty() && chars.iter().all(|c| c.is_ascii_digit());
    if numeric && chars.len() < MIN_PIN_DIGITS {
        return weak(&format!("a PIN needs at least {MIN_PIN_DIGITS} digits"));
    }
    if !numeric && chars.len() < MIN_PASSPHRASE_CHARS {
        return weak(&format!(
            "a passphrase needs at least {MIN_PASSPHRASE_CHARS} characters (or use a PIN of at \
             least {MIN_PIN_DIGITS} digits)"
        ));
    }
    let lower: Vec<char> = pin.to_lowercase().chars().collect();
    if periodic(&lower) {
        return weak("it repeats the same digits or letters");
    }
    if sequence(&lower) {
        return weak("it is a straight run such as 123456");
    }
    if DENYLIST.contains(&pin.to_lowercase().as_str()) {
        return weak("it is one of the most common PINs or passwords");
    }
    Ok(())
}

fn check_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(StoreError::Users(format!(
            "a user's name must be 1 to {MAX_NAME_CHARS} characters without control characters"
        )));
    }
    Ok(name.to_string())
}

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

fn has_table(conn: &Connection) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'user_slot'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

struct SlotRow {
    slot: UserSlot,
    failures: u32,
    retry_at_ms: i64,
}

fn read_user(conn: &Connection, user: &UserId) -> Result<Option<SlotRow>> {
    if !has_table(conn)? {
        return Ok(None);
    }
    let row = conn
        .query_row(
            "SELECT iterations, salt, wrapped, failures, retry_at_ms FROM user_slot
             WHERE user_id = ?1",
            params![user.as_bytes().as_slice()],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            },
        )
        .optional()?;
    let Some((iterations, salt, wrapped, failures, retry_at_ms)) = row else {
        return Ok(None);
    };
    let bad = || StoreError::Corrupted("a user slot is malformed".into());
    Ok(Some(SlotRow {
        slot: UserSlot {
            user: *user,
            iterations: u32::try_from(iterations).map_err(|_| bad())?,
            salt,
            wrapped,
        },
        failures: u32::try_from(failures).map_err(|_| bad())?,
        retry_at_ms,
    }))
}

fn insert_slot(conn: &Connection, slot: &UserSlot, name: &str) -> Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO user_slot
             (user_id, name, iterations, salt, wrapped, failures, retry_at_ms, added_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, ?6)",
        params![
            slot.user.as_bytes().as_slice(),
            name,
            i64::from(slot.iterations),
            slot.salt,
            slot.wrapped,
            now_ms()
        ],
    )?;
    Ok(())
}

impl Store {
    /// Whether this store has users (opens locked; a user must sign in).
    pub fn has_users(&self) -> bool {
        self.access.has_users()
    }

    /// The user signed in now (`None` without users, or when locked).
    pub fn signed_in_user(&self) -> Option<UserId> {
        self.access.signed_in()
    }

    /// Whether the store can be used now (no users, or someone is signed in).
    pub fn is_unlocked(&self) -> bool {
        self.access.check().is_ok()
    }

    /// The users set up on this device (readable while locked, for the sign-in screen).
    pub fn users(&self) -> Result<Vec<DeviceUser>> {
        let conn = self.lock_raw();
        if !has_table(&conn)? {
            return Ok(Vec::new());
        }
        let mut st = conn.prepare(
            "SELECT user_id, name, failures, retry_at_ms FROM user_slot ORDER BY name, user_id",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, failures, retry_at_ms) = row?;
            let id = UserId::from_slice(&id)
                .ok_or_else(|| StoreError::Corrupted("a user slot's id is malformed".into()))?;
            let failures = u32::try_from(failures).unwrap_or(u32::MAX);
            out.push(DeviceUser {
                id,
                name,
                failures,
                locked: failures >= MAX_FAILURES,
                retry_at_ms,
            });
        }
        Ok(out)
    }

    /// Set up `user` on this device with their PIN or passphrase (checked with
    /// [`check_pin_strength`]); the store must be usable (no users yet, or someone signed in).
    /// The first user switches the store to users mode and is signed in. Adding a user again
    /// replaces their slot (a new PIN, and a lock after wrong PINs is lifted).
    ///
    /// This is only the local half: the registry must know the user and their activation on
    /// this device (see [`crate::sync::SyncClient::activate_user`]), or it refuses their changes.
    pub fn add_user(&self, user: UserId, name: &str, pin: &UserPin) -> Result<()> {
        let name = check_name(name)?;
        check_pin_strength(pin.text())?;
        let key = self.access.key()?;
        if let Some(pepper) = self.access.pepper() {
            let slot = UserSlot::wrap(user, pin, &pepper, &self.store_id, &key)?;
            let conn = self.lock()?;
            insert_slot(&conn, &slot, &name)?;
            tracing::info!(user = %user, "user added");
            return Ok(());
        }
        // The first user: switch to users mode in one transaction.
        let pepper = new_pepper();
        let slot = UserSlot::wrap(user, pin, &pepper, &self.store_id, &key)?;
        let source = self
            .source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let pepper_key = pepper_as_key(&pepper)?;
        let device_slot = KeySlot::wrap(&source, &self.store_id, &pepper_key)?;
        if !device_slot.holds(&source, &self.store_id, &pepper_key) {
            return Err(StoreError::KeyProvider(
                "the key provider did not give back the key it wrapped".into(),
            ));
        }
        {
            let mut conn = self.lock()?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(USERS_SCHEMA)?;
            insert_slot(&tx, &slot, &name)?;
            // The key check stays: it is sealed under the data key, which is unchanged.
            write_slot(&tx, &device_slot, None)?;
            tx.pragma_update(None, "user_version", USERS_FORMAT_VERSION)?;
            tx.commit()?;
            // Push the slot that wrapped the data key out of the WAL (as key rotation does).
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                tracing::debug!(error = %e, "checkpoint after enabling users deferred");
            }
        }
        self.access.enter_users_mode(pepper, user);
        tracing::info!(user = %user, "first user added: the store now needs a sign-in");
        Ok(())
    }

    /// Remove `user`'s slot (a signed-in user must do it). The last user cannot be removed
    /// this way: the store would no longer open.
    pub fn remove_user(&self, user: UserId) -> Result<bool> {
        self.access.check()?;
        let users = self.users()?;
        if !users.iter().any(|u| u.id == user) {
            return Ok(false);
        }
        if users.len() == 1 {
            return Err(StoreError::Users(
                "the last user of a device cannot be removed: add another user first".into(),
            ));
        }
        self.delete_slots(&[user])?;
        Ok(true)
    }

    /// Delete the slots of users the registry removed (the sync client calls this), even the
    /// last one; a removed user who is signed in is signed out at once.
    pub fn remove_users_revoked(&self, removed: &[UserId]) -> Result<usize> {
        let n = self.delete_slots(removed)?;
        for u in removed {
            self.access.sign_out_user(*u);
        }
        Ok(n)
    }

    fn delete_slots(&self, users: &[UserId]) -> Result<usize> {
        let mut conn = self.lock_raw();
        if !has_table(&conn)? {
            return Ok(0);
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut n = 0;
        for u in users {
            n += tx.execute(
                "DELETE FROM user_slot WHERE user_id = ?1",
                params![u.as_bytes().as_slice()],
            )?;
        }
        tx.commit()?;
        if n > 0 {
            // secure_delete zeroes the freed page; drop the WAL copy too (best effort).
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                tracing::debug!(error = %e, "checkpoint after removing a user deferred");
            }
            tracing::info!(removed = n, "user slots removed");
        }
        Ok(n)
    }

    /// Sign `user` in with their PIN or passphrase: the data key is unwrapped from their slot
    /// and the store is usable until [`Store::sign_out`] or the idle timeout.
    ///
    /// Errors: [`StoreError::UnknownUser`], [`StoreError::WrongPin`] (with the attempts left),
    /// [`StoreError::TryLater`] (back-off after repeated wrong PINs, persisted),
    /// [`StoreError::UserLocked`] (after [`MAX_FAILURES`]), [`StoreError::Users`] on a store
    /// without users.
    pub fn sign_in(&self, user: UserId, pin: &UserPin) -> Result<()> {
        self.sign_in_at(user, pin, now_ms())
    }

    pub(crate) fn sign_in_at(&self, user: UserId, pin: &UserPin, now_ms: i64) -> Result<()> {
        let Some(pepper) = self.access.pepper() else {
            return Err(StoreError::Users(
                "this device has no users: it opens with its device key alone".into(),
            ));
        };
        // Count the attempt before checking it (a kill during the check is still counted).
        let (row, check) = {
            let mut conn = self.lock_raw();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(row) = read_user(&tx, &user)? else {
                return Err(StoreError::UnknownUser(user.to_hex()));
            };
            if row.failures >= MAX_FAILURES {
                return Err(StoreError::UserLocked);
            }
            if now_ms < row.retry_at_ms {
                let wait = (row.retry_at_ms - now_ms).div_euclid(1000) + 1;
                return Err(StoreError::TryLater {
                    seconds: u64::try_from(wait).unwrap_or(1),
                });
            }
            let failures = row.failures + 1;
            let delay_ms = i64::try_from(delay_after(failures) * 1000).unwrap_or(i64::MAX);
            tx.execute(
                "UPDATE user_slot SET failures = ?2, retry_at_ms = ?3 WHERE user_id = ?1",
                params![
                    user.as_bytes().as_slice(),
                    i64::from(failures),
                    now_ms.saturating_add(delay_ms)
                ],
            )?;
            let (_, check) = read_slot(&tx)?;
            tx.commit()?;
            (row, check)
        };
        let key = match row.slot.unwrap(pin, &pepper, &self.store_id) {
            Ok(k) => k,
            Err(crate::crypto::CryptoError::WrongKey) => {
                let failures = row.failures + 1;
                tracing::info!(user = %user, failures, "wrong PIN");
                if failures >= MAX_FAILURES {
                    return Err(StoreError::UserLocked);
                }
                return Err(StoreError::WrongPin {
                    attempts_left: MAX_FAILURES - failures,
                });
            }
            Err(e) => return Err(e.into()),
        };
        // The slot opened: it must hold this store's data key.
        key.verify_key_check(&self.store_id, &check)?;
        {
            let conn = self.lock_raw();
            conn.execute(
                "UPDATE user_slot SET failures = 0, retry_at_ms = 0 WHERE user_id = ?1",
                params![user.as_bytes().as_slice()],
            )?;
        }
        self.access.sign_in(user, std::sync::Arc::new(key));
        tracing::info!(user = %user, "signed in");
        Ok(())
    }

    /// End the signed-in session now: the data key is dropped from memory and every operation
    /// fails with [`StoreError::Locked`] until someone signs in. No effect without users.
    pub fn sign_out(&self) {
        self.access.lock();
    }

    /// How long a signed-in session may stay idle before it ends (default 5 minutes).
    pub fn idle_timeout(&self) -> Duration {
        self.access.idle_timeout()
    }

    /// Set and keep (in the store's plaintext settings) the idle timeout, at least 1 s.
    pub fn set_idle_timeout(&self, timeout: Duration) -> Result<()> {
        let timeout = timeout.max(Duration::from_secs(1));
        self.put_setting(SETTING_IDLE_TIMEOUT, &timeout.as_secs().to_string())?;
        self.access.set_idle_timeout(timeout);
        Ok(())
    }

    /// Apply the idle timeout kept in the settings (at open).
    pub(super) fn load_idle_timeout(&self) -> Result<()> {
        if let Some(v) = self.get_setting(SETTING_IDLE_TIMEOUT)? {
            if let Ok(secs) = v.parse::<u64>() {
                self.access.set_idle_timeout(Duration::from_secs(secs));
            }
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn set_idle_timeout_for_tests(&self, timeout: Duration) {
        self.access.set_idle_timeout_unchecked(timeout);
    }
}

#[cfg(test)]
mod tests;
