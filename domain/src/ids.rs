//! Random identifiers for records, devices and stores.
//!
//! Every identifier is 16 random bytes (from `ring::rand::SystemRandom`), written as 32 lowercase
//! hex characters. They carry no meaning, so they may be stored and sent in plaintext.
//! A device's Automerge actor id is its [`DeviceId`] bytes, so every change names the device that
//! made it.

use std::fmt;
use std::str::FromStr;

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// Error for an identifier that is not 32 hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid identifier {0:?}: expected 32 hexadecimal characters")]
pub struct InvalidId(pub String);

/// Fill a buffer with random bytes from the system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // SystemRandom only fails when the OS has no entropy source at all; there is nothing a
    // caller could do about it, and using zeros would be a silent catastrophe.
    #[allow(clippy::expect_used)]
    SystemRandom::new()
        .fill(&mut out)
        .expect("the operating system's random number generator failed");
    out
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(into = "String", try_from = "String")]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// A new random identifier.
            pub fn random() -> Self {
                Self(random_bytes())
            }
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
            /// From raw bytes; `None` unless exactly 16 bytes.
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                <[u8; 16]>::try_from(b).ok().map(Self)
            }
            /// The 32-character hex form.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                let mut out = [0u8; 16];
                if s.len() != 32 {
                    return Err(InvalidId(s.to_string()));
                }
                hex::decode_to_slice(s, &mut out).map_err(|_| InvalidId(s.to_string()))?;
                Ok(Self(out))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.to_hex()
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                s.parse()
            }
        }
    };
}

id_type!(
    /// Identifies one record (one Automerge document) everywhere: on devices and on the server.
    RecordId
);
id_type!(
    /// Identifies one enrolled device. Also the Automerge actor id of every change it makes.
    DeviceId
);
id_type!(
    /// Identifies one on-device store; bound into every ciphertext's associated data.
    StoreId
);
id_type!(
    /// Identifies one member of a clinic's staff (a nurse who signs in on a shared tablet),
    /// issued by the registry. Carried in the message of every change the user makes.
    UserId
);

impl DeviceId {
    /// The Automerge actor id of this device.
    pub fn actor(&self) -> automerge::ActorId {
        automerge::ActorId::from(&self.0[..])
    }
    /// The device that made a change, from the change's actor id (`None` for a foreign actor).
    pub fn from_actor(actor: &automerge::ActorId) -> Option<Self> {
        Self::from_slice(actor.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_garbage() {
        let id = RecordId::random();
        let parsed: RecordId = id.to_hex().parse().unwrap();
        assert_eq!(id, parsed);
        assert!("xyz".parse::<RecordId>().is_err());
        assert!("zz".repeat(16).parse::<RecordId>().is_err());
        assert_ne!(RecordId::random(), RecordId::random());
    }

    #[test]
    fn actor_round_trip() {
        let d = DeviceId::random();
        assert_eq!(DeviceId::from_actor(&d.actor()), Some(d));
    }
}
