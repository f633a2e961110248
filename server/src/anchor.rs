//! The audit chain's anchor outside the database (docs/security.md, "Audit anchor").
//!
//! The hash chain of [`crate::audit`] detects an edit *inside* the chain, but someone who can
//! write the database can recompute every hash after an edit, or drop the last entries: the chain
//! is then intact, and wrong. So the server signs the chain's head — `(seq, hash, time)` — with an
//! Ed25519 key kept in a file, never in the database, and hands the signed head out:
//!
//! - in every sync response (HTTP header [`HEADER_AUDIT_HEAD`]); each device keeps the latest
//!   one it saw, so every device is a witness a database rewrite cannot reach;
//! - to an append-only anchor log file beside the key ([`Anchor::record`]), one line per new head.
//!
//! `verify-audit` checks the chain, then checks every anchored head it is given (the anchor log's
//! last line, and any witness a device or an auditor supplies): the entry at that `seq` must exist
//! and carry that hash. A rewrite changes the hash; a truncation removes the entry. Both are
//! reported, with the anchored head that caught them.
//!
//! Signed text (UTF-8, `\n`-separated): `FOLLOWUP-AUDIT-HEAD-V1`, seq, hash (hex), unix ms.
//! Wire form: `<seq>.<hash hex>.<unix ms>.<signature base64url, no padding>`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

/// The response header carrying the signed audit head.
pub const HEADER_AUDIT_HEAD: &str = "x-followup-audit-head";

const DOMAIN: &str = "FOLLOWUP-AUDIT-HEAD-V1";

/// Why the anchor key or log could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("audit anchor key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("audit anchor log {path}: {reason}")]
    Log { path: PathBuf, reason: String },
}

/// A signed audit head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    pub seq: u64,
    pub hash: [u8; 32],
    pub at_ms: i64,
    pub signature: Vec<u8>,
}

fn message(seq: u64, hash: &[u8; 32], at_ms: i64) -> String {
    format!("{DOMAIN}\n{seq}\n{}\n{at_ms}", hex::encode(hash))
}

impl SignedHead {
    /// The wire form.
    pub fn encode(&self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.seq,
            hex::encode(self.hash),
            self.at_ms,
            B64.encode(&self.signature)
        )
    }

    /// Parse the wire form (the signature is not checked here: [`verify_head`]).
    pub fn parse(s: &str) -> Option<SignedHead> {
        let mut parts = s.trim().split('.');
        let seq = parts.next()?.parse().ok()?;
        let mut hash = [0u8; 32];
        hex::decode_to_slice(parts.next()?, &mut hash).ok()?;
        let at_ms = parts.next()?.parse().ok()?;
        let signature = B64.decode(parts.next()?).ok()?;
        if parts.next().is_some() || signature.len() != 64 {
            return None;
        }
        Some(SignedHead {
            seq,
            hash,
            at_ms,
            signature,
        })
    }
}

/// Check a signed head against the anchor's public key.
pub fn verify_head(public_key: &[u8], head: &SignedHead) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(
            message(head.seq, &head.hash, head.at_ms).as_bytes(),
            &head.signature,
        )
        .is_ok()
}

/// The anchor: the signing key and the anchor log.
pub struct Anchor {
    key: Ed25519KeyPair,
    log_path: PathBuf,
    /// The last head written to the log (so each head is logged once).
    last_logged: Mutex<Option<u64>>,
}

impl std::fmt::Debug for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Anchor(public {})", hex::encode(self.public_key()))
    }
}

/// Create `path` with mode 0600 (owner only) and write `bytes`; fails if it exists.
fn create_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

impl Anchor {
    /// Open the key at `key_path`, creating it (0600) if it does not exist yet. The anchor log is
    /// `<key_path>.log`.
    pub fn open_or_create(key_path: &Path) -> Result<Anchor, AnchorError> {
        let err = |reason: String| AnchorError::Key {
            path: key_path.into(),
            reason,
        };
        if !key_path.exists() {
            if let Some(dir) = key_path.parent().filter(|d| !d.as_os_str().is_empty()) {
                crate::files::create_private_dir(dir).map_err(|e| err(e.to_string()))?;
            }
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| err("could not generate a key".into()))?;
            create_private(key_path, pkcs8.as_ref()).map_err(|e| err(e.to_string()))?;
            tracing::info!(path = %key_path.display(), "audit anchor key created");
        }
        let bytes = std::fs::read(key_path).map_err(|e| err(e.to_string()))?;
        let key = Ed25519KeyPair::from_pkcs8(&bytes).map_err(|e| err(e.to_string()))?;
        let mut log_path = key_path.as_os_str().to_owned();
        log_path.push(".log");
        Ok(Anchor {
            key,
            log_path: PathBuf::from(log_path),
            last_logged: Mutex::new(None),
        })
    }

    /// The anchor's public key (publish it: auditors verify heads with it).
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// The anchor log's path.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Sign a head.
    pub fn sign(&self, seq: u64, hash: [u8; 32], at_ms: i64) -> SignedHead {
        let signature = self
            .key
            .sign(message(seq, &hash, at_ms).as_bytes())
            .as_ref()
            .to_vec();
        SignedHead {
            seq,
            hash,
            at_ms,
            signature,
        }
    }

    /// Append `head` to the anchor log unless it is not newer than the last one logged.
    pub fn record(&self, head: &SignedHead) -> Result<(), AnchorError> {
        let mut last = match self.last_logged.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if last.is_some_and(|s| s >= head.seq) {
            return Ok(());
        }
        let err = |e: std::io::Error| AnchorError::Log {
            path: self.log_path.clone(),
            reason: e.to_string(),
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&self.log_path).map_err(err)?;
        writeln!(f, "{}", head.encode()).map_err(err)?;
        *last = Some(head.seq);
        Ok(())
    }

    /// The last head of the anchor log, if any (a torn last line is skipped).
    pub fn last_logged_head(&self) -> Result<Option<SignedHead>, AnchorError> {
        let text = match std::fs::read_to_string(&self.log_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(AnchorError::Log {
                    path: self.log_path.clone(),
                    reason: e.to_string(),
                })
            }
        };
        Ok(text
            .lines()
            .rev()
            .filter_map(SignedHead::parse)
            .find(|h| verify_head(&self.public_key(), h)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn heads_sign_encode_parse_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let a = Anchor::open_or_create(&dir.path().join("k/anchor.key")).unwrap();
        let h = a.sign(42, [7; 32], 1_700_000_000_000);
        let parsed = SignedHead::parse(&h.encode()).unwrap();
        assert_eq!(parsed, h);
        assert!(verify_head(&a.public_key(), &parsed));
        let mut forged = parsed.clone();
        forged.seq = 41;
        assert!(!verify_head(&a.public_key(), &forged));
        assert!(SignedHead::parse("1.zz.3.abc").is_none());
        // The same key is found again, and the log keeps the newest head.
        let again = Anchor::open_or_create(&dir.path().join("k/anchor.key")).unwrap();
        assert_eq!(again.public_key(), a.public_key());
        a.record(&h).unwrap();
        a.record(&a.sign(40, [1; 32], 1)).unwrap(); // older: not logged
        assert_eq!(again.last_logged_head().unwrap(), Some(h));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("k/anchor.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(dir.path().join("k"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }
}
