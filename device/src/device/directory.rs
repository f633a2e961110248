//! The clinic's directory on a tablet: the labels of the clinic's devices and the names of its
//! users, as the registry last sent them (with the users, at sync: [`USERS_PATH`]). With it a
//! tablet names who wrote what ("Tablet 2, ward B", "Ana") instead of printing device and user
//! ids: in conflicts, in the adjudication queue, on a record's screen.
//!
//! The directory is kept sealed under the store's data key (it names staff, never patients) and
//! replaced as a whole each time the registry sends it. A tablet that never received it (an
//! older registry, or no sync yet) names devices by a short id; nothing else depends on it.
//!
//! [`USERS_PATH`]: followup_domain::users::USERS_PATH

use followup_domain::ids::{DeviceId, RecordId, UserId};
use followup_domain::model;
use followup_domain::protocol::DeviceRole;
use followup_domain::users::{ClinicDeviceInfo, ClinicUserInfo, ClinicUsersResponse};
use serde::{Deserialize, Serialize};

use super::Device;
use crate::error::Result;

/// The secret holding the directory (sealed; the name is bound into the AAD).
const SECRET_DIRECTORY: &str = "clinic.directory";

/// The clinic's devices and users as this device last received them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directory {
    pub devices: Vec<ClinicDeviceInfo>,
    pub users: Vec<ClinicUserInfo>,
    /// When it was received (device clock, ms); 0 when never.
    pub received_at_ms: i64,
}

/// Who wrote something: a device (`None`: the registry) and the clinic user, when the change
/// named one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Writer {
    pub device: Option<DeviceId>,
    pub user: Option<UserId>,
}

impl Directory {
    /// The label of a device, when the directory has one.
    pub fn device_label(&self, id: DeviceId) -> Option<&str> {
        self.devices
            .iter()
            .find(|d| d.id == id)
            .and_then(|d| d.label.as_deref())
    }

    /// A device's role, when the directory knows the device.
    pub fn device_role(&self, id: DeviceId) -> Option<DeviceRole> {
        self.devices.iter().find(|d| d.id == id).map(|d| d.role)
    }

    /// A user's name, when the directory knows the user.
    pub fn user_name(&self, id: UserId) -> Option<&str> {
        self.users
            .iter()
            .find(|u| u.id == id)
            .map(|u| u.name.as_str())
    }
}

impl Device {
    /// The clinic's directory as last received (empty when never received).
    pub fn directory(&self) -> Result<Directory> {
        let Some(bytes) = self.store.get_secret(SECRET_DIRECTORY)? else {
            return Ok(Directory::default());
        };
        // A directory this version cannot read (written by a newer app) is as good as none:
        // the next sync replaces it.
        Ok(serde_json::from_slice(&bytes).unwrap_or_default())
    }

    /// Whether the device has ever received the directory.
    pub fn has_directory(&self) -> Result<bool> {
        Ok(self.store.get_secret(SECRET_DIRECTORY)?.is_some())
    }

    /// Keep the directory the registry sent (replacing the previous one). The sync does it;
    /// an app may too, with an answer it fetched itself.
    pub fn save_directory(&self, answer: &ClinicUsersResponse, now_ms: i64) -> Result<()> {
        let directory = Directory {
            devices: answer.devices.clone(),
            users: answer.users.clone(),
            received_at_ms: now_ms,
        };
        // Plain strings and ids always encode; were it ever not, keeping the old one is fine.
        let Ok(bytes) = serde_json::to_vec(&directory) else {
            return Ok(());
        };
        self.store.put_secret(SECRET_DIRECTORY, &bytes)?;
        Ok(())
    }

    /// A name for a writer, in words: `this device`, a tablet's label (`Tablet 2, ward B`),
    /// `the patient's phone`, `device 3f2a91c0` when the device is not in the directory, or
    /// `the registry`; followed by the user's name (or short id) when the change named one.
    /// Users set up on this device are named even without a directory.
    pub fn writer_name(&self, directory: &Directory, writer: Writer) -> String {
        let me = self.enrolment().map(|e| e.device_id);
        let device = match writer.device {
            None => "the registry".to_string(),
            Some(d) if Some(d) == me => "this device".to_string(),
            Some(d) => match (directory.device_label(d), directory.device_role(d)) {
                (Some(label), _) => label.to_string(),
                (None, Some(DeviceRole::PatientDevice)) => "the patient's phone".to_string(),
                (None, _) => format!("device {}", &d.to_hex()[..8]),
            },
        };
        match writer.user {
            None => device,
            Some(u) => {
                let name = directory
                    .user_name(u)
                    .map(str::to_string)
                    .or_else(|| {
                        self.users()
                            .ok()?
                            .into_iter()
                            .find(|x| x.id == u)
                            .map(|x| x.name)
                    })
                    .unwrap_or_else(|| format!("user {}", &u.to_hex()[..8]));
                format!("{device}, {name}")
            }
        }
    }

    /// Who created a record: the device and the user of the change that wrote its header.
    pub fn record_creator(&self, id: RecordId) -> Result<Writer> {
        let (device, user) = model::creator(&self.load(id)?);
        Ok(Writer { device, user })
    }
}
