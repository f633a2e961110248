//! Who recorded what, in the console's words: a device by its label and short id
//! (`Tablet 2, ward B (3f2a91c0)`), a clinic user by name and short id (`Ana Lima (1a2b3c4d)`).
//! The users come from the read model's `rm_records.created_by_user` / `last_user` and from the
//! audit entries' `users=` detail, all verified by the push path when the changes were accepted
//! (`crate::users::check_change_users`).

use std::collections::HashMap;

use followup_domain::ids::{DeviceId, UserId};

use crate::readmodel::query::{RecordMeta, RecordWrite};
use crate::storage::{Storage, StorageResult};

/// Labels and names looked up once for a page.
#[derive(Debug, Default)]
pub struct Names {
    devices: HashMap<DeviceId, Option<String>>,
    users: HashMap<UserId, Option<String>>,
}

fn short_hex(hex: &str) -> &str {
    hex.get(..8).unwrap_or(hex)
}

/// A user id as the read model returns it (hex text).
pub fn user_of(hex: &Option<String>) -> Option<UserId> {
    hex.as_deref().and_then(|h| h.parse().ok())
}

impl Names {
    /// Look up the labels of `devices` and the names of `users` (each once).
    pub fn load(
        s: &dyn Storage,
        devices: impl IntoIterator<Item = DeviceId>,
        users: impl IntoIterator<Item = UserId>,
    ) -> StorageResult<Names> {
        let mut n = Names::default();
        for d in devices {
            if let std::collections::hash_map::Entry::Vacant(e) = n.devices.entry(d) {
                e.insert(s.device(d)?.and_then(|r| r.label));
            }
        }
        for u in users {
            if let std::collections::hash_map::Entry::Vacant(e) = n.users.entry(u) {
                e.insert(s.clinic_user(u)?.map(|r| r.name));
            }
        }
        Ok(n)
    }

    /// [`Names::load`] for the writers of records (creator and last writer of each).
    pub fn for_records<'a>(
        s: &dyn Storage,
        metas: impl IntoIterator<Item = &'a RecordMeta>,
    ) -> StorageResult<Names> {
        let (mut devices, mut users) = (Vec::new(), Vec::new());
        for m in metas {
            devices.extend(m.created_by);
            devices.extend(m.last_device);
            users.extend(user_of(&m.created_by_user));
            users.extend(user_of(&m.last_user));
        }
        Names::load(s, devices, users)
    }

    /// Add the writers of a record's accepted writes.
    pub fn add_writes(&mut self, s: &dyn Storage, writes: &[RecordWrite]) -> StorageResult<()> {
        let more = Names::load(
            s,
            writes.iter().filter_map(|w| w.device),
            writes.iter().flat_map(|w| w.users.iter().copied()),
        )?;
        self.devices.extend(more.devices);
        self.users.extend(more.users);
        Ok(())
    }

    /// `Tablet 2, ward B (3f2a91c0)`, or `device 3f2a91c0` without a label.
    pub fn device(&self, d: DeviceId) -> String {
        let hex = d.to_hex();
        match self.devices.get(&d).and_then(|l| l.as_deref()) {
            Some(label) => format!("{label} ({})", short_hex(&hex)),
            None => format!("device {}", short_hex(&hex)),
        }
    }

    /// `Ana Lima (1a2b3c4d)`, or `user 1a2b3c4d` when the registry does not know the name.
    pub fn user(&self, u: UserId) -> String {
        let hex = u.to_hex();
        match self.users.get(&u).and_then(|n| n.as_deref()) {
            Some(name) => format!("{name} ({})", short_hex(&hex)),
            None => format!("user {}", short_hex(&hex)),
        }
    }

    /// A device (or the registry) and the user, when one is known.
    pub fn writer(&self, device: Option<DeviceId>, user: Option<UserId>) -> String {
        let who = device.map_or_else(|| "registry".to_string(), |d| self.device(d));
        match user {
            Some(u) => format!("{who}, {}", self.user(u)),
            None => who,
        }
    }

    /// Who recorded a record: its creator (device and user), and its last writer when that is
    /// someone else.
    pub fn by_line(&self, m: &RecordMeta) -> String {
        let creator = self.writer(m.created_by, user_of(&m.created_by_user));
        let last = self.writer(m.last_device, user_of(&m.last_user));
        if last == creator {
            creator
        } else {
            format!("{creator}; last changed by {last}")
        }
    }
}
