//! HTTPS served by the server itself: rustls with a certificate chain and a private key read from
//! PEM files, **reloaded without a restart**. Every handshake asks [`ReloadingCert`] for the
//! certificate; it looks at the files' modification times at most once every
//! [`RELOAD_CHECK_INTERVAL`] and, when they changed, loads and checks the new pair. A pair that
//! does not load (a half-written file during a renewal) is logged and the previous certificate
//! kept, so a renewal never takes the server down.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The acceptor used by [`crate::listener`].
pub type TlsAcceptor = tokio_rustls::TlsAcceptor;

/// How often the certificate files are looked at.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("cannot read the TLS private key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the TLS certificate and key do not go together: {0}")]
    Mismatch(String),
}

struct Loaded {
    key: Arc<CertifiedKey>,
    cert_mtime: Option<SystemTime>,
    key_mtime: Option<SystemTime>,
    checked: Instant,
}

/// A certificate resolver that reloads its files when they change.
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    state: Mutex<Loaded>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReloadingCert({})", self.cert_path.display())
    }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Load and check a certificate chain and its key.
pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| TlsError::Cert {
            path: cert_path.into(),
            reason: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert {
            path: cert_path.into(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert_path.into(),
            reason: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Key {
        path: key_path.into(),
        reason: e.to_string(),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Key {
            path: key_path.into(),
            reason: e.to_string(),
        })?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(Arc::new(ck))
}

impl ReloadingCert {
    /// Load the pair now (an error if it does not load).
    pub fn new(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let key = load_pair(cert_path, key_path)?;
        Ok(ReloadingCert {
            cert_path: cert_path.into(),
            key_path: key_path.into(),
            state: Mutex::new(Loaded {
                key,
                cert_mtime: mtime(cert_path),
                key_mtime: mtime(key_path),
                checked: Instant::now(),
            }),
        })
    }

    /// The current certificate, reloaded first if the files changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if st.checked.elapsed() >= RELOAD_CHECK_INTERVAL {
            st.checked = Instant::now();
            let (c, k) = (mtime(&self.cert_path), mtime(&self.key_path));
            if c != st.cert_mtime || k != st.key_mtime {
                match load_pair(&self.cert_path, &self.key_path) {
                    Ok(key) => {
                        st.key = key;
                        st.cert_mtime = c;
                        st.key_mtime = k;
                        tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
                    }
                    Err(e) => {
                        tracing::error!(%e, "new TLS certificate not usable; keeping the previous one");
                    }
                }
            }
        }
        st.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The acceptor for a certificate and key file pair (HTTP/1.1 only: ALPN offers `http/1.1`).
pub fn acceptor(cert_path: &Path, key_path: &Path) -> Result<TlsAcceptor, TlsError> {
    let resolver = Arc::new(ReloadingCert::new(cert_path, key_path)?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
