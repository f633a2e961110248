//! # followup-server
//!
//! The registry sync server: devices enrol with a one-time code, then sync all their documents in
//! one signed, compressed `POST /v1/sync` per exchange; the server authorizes every change, merges
//! it, keeps an append-only hash-chained audit log, and returns what each device lacks since its
//! cursor. The protocol is `docs/sync-protocol.md`; its types are `followup_domain::protocol`.
//!
//! | module | what it holds |
//! |---|---|
//! | [`api`] | the HTTP routes and handlers (health, enrol, sync, admin) |
//! | [`auth`] | request signature check, ±5 min freshness, nonce replay cache, revocation; admin token |
//! | [`authz`] | **the** authorization rules: who may read and write which record, in one place |
//! | [`rules`] | the clinical rules at the server (`followup_domain::rules` with the database's lookups) |
//! | [`cases`] | the registry-authored adjudication cases: deadline, state, escalation, the patient's reply |
//! | [`clock`] | the registry's clock for deadlines |
//! | [`sync`] | one sync exchange: merge-authorize-commit the push, build the pull from the cursor |
//! | [`resumable`] | protocol version 3: the exchange uploaded in pieces and downloaded from any offset |
//! | [`storage`] | the [`storage::Storage`] trait, [`storage::SqliteStorage`] (default) and [`storage::PostgresStorage`] (all state in the database) |
//! | [`readmodel`] | the read model: relational tables projected from every accepted record, kept in the write's transaction; the console's and exports' queries; the rebuild |
//! | [`audit`] | the SHA-256-chained audit entries and `verify` |
//! | [`definitions`] | publishing, drafting, retiring and listing definitions; the built-ins seeded at first start |
//! | [`config`] | flags and environment variables |
//! | [`error`] | HTTP errors with JSON bodies |
//! | [`validate`] | the push path's validation step: schema and code lists, reload-before-store, panic containment |
//! | [`listener`] | the connection loop: connection cap, header timeout, HTTP/1.1 only, TLS |
//! | [`tls`] | HTTPS with rustls, certificate reloaded when its files change |
//! | [`guard`] | rate limits (enrolment, admin) and in-flight syncs per device |
//! | [`keys`] | strict Ed25519 device keys and signatures |
//! | [`anchor`] | the audit chain's head signed with a key outside the database |
//! | [`files`] | private permissions and the data directory lock |
//! | [`metrics`] | Prometheus metrics |
//! | [`openapi`] | the OpenAPI document of the JSON routes |
//! | [`console`] | the staff console under `/console` and the public `/participation` page |
//! | [`staff`] | staff accounts (argon2id, optional TOTP), roles, sessions, sign-in throttling |
//! | [`export`] | CSV and FHIR R4 exports, de-identified by default, authorized by scope, audited |
//!
//! It depends on `followup-domain` for the record model, the wire protocol and signature
//! verification, and must never depend on the device crate (`followup-device`: a phone's
//! encrypted store and HTTP client), on an HTTP client, on uniffi or on the test kit.
//!
//! Embedding (tests, the CLI): [`Server::start`] returns a [`RunningServer`] with its bound address
//! and a graceful shutdown that lets in-flight syncs finish.

#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod anchor;
pub mod api;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod cases;
pub mod clock;
pub mod config;
pub mod console;
pub mod definitions;
pub mod error;
pub mod export;
pub mod files;
pub mod fuzzing;
pub mod guard;
pub mod keys;
pub mod listener;
pub mod metrics;
pub mod openapi;
pub mod readmodel;
pub mod resumable;
pub mod rules;
pub mod staff;
pub mod storage;
pub mod sync;
pub mod tls;
pub mod users;
pub mod validate;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::Config;
use storage::{PostgresOptions, PostgresStorage, SqliteStorage, Storage};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    #[error("server task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("could not publish the built-in definitions: {0}")]
    Definitions(#[from] definitions::PublishError),
    #[error(transparent)]
    Lock(#[from] files::LockError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Anchor(#[from] anchor::AnchorError),
}

/// The server.
pub struct Server;

/// A server running on a tokio runtime.
pub struct RunningServer {
    /// The address it listens on (the real port when started on port 0).
    pub addr: SocketAddr,
    tls: bool,
    anchor: Option<Arc<anchor::Anchor>>,
    /// Held for the life of the server (SQLite: one process per data directory).
    _lock: Option<files::DataDirLock>,
    storage: Arc<dyn Storage>,
    clock: clock::RegistryClock,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Open the storage the configuration names (PostgreSQL at `config.database` if set, else
    /// SQLite in `config.data_dir`), bind `config.listen` and serve.
    pub async fn start(config: Config) -> Result<RunningServer, ServerError> {
        config.validate().map_err(ServerError::Config)?;
        let storage: Arc<dyn Storage> = match config.database.clone() {
            Some(url) => {
                let options = PostgresOptions {
                    max_connections: config.database_pool_size,
                    ..PostgresOptions::default()
                };
                let pg = tokio::task::spawn_blocking(move || {
                    PostgresStorage::connect_with(&url, options)
                })
                .await??;
                tracing::info!(database = pg.description(), "storage: PostgreSQL");
                Arc::new(pg)
            }
            None => {
                let dir = config.data_dir.clone();
                let lock = files::lock_data_dir(&dir)?;
                let sqlite = tokio::task::spawn_blocking(move || {
                    let s = SqliteStorage::open(&dir)?;
                    // The database holds clinical data in plaintext: owner only.
                    for f in ["registry.sqlite3", "registry.sqlite3-wal", "registry.sqlite3-shm"] {
                        if let Err(e) = files::make_private(&dir.join(f)) {
                            tracing::warn!(%e, file = f, "cannot restrict the database file's permissions");
                        }
                    }
                    Ok::<_, ServerError>(s)
                })
                .await??;
                tracing::info!(path = %sqlite.path().display(), "storage: SQLite");
                let mut running = Self::start_with_storage(config, Arc::new(sqlite)).await?;
                running._lock = Some(lock);
                return Ok(running);
            }
        };
        Self::start_with_storage(config, storage).await
    }

    /// Serve with a given storage backend.
    pub async fn start_with_storage(
        config: Config,
        storage: Arc<dyn Storage>,
    ) -> Result<RunningServer, ServerError> {
        config.validate().map_err(ServerError::Config)?;
        // A new registry publishes the built-in definitions once (a no-op when it holds any).
        let seed = storage.clone();
        let seeded = tokio::task::spawn_blocking(move || {
            definitions::seed_builtins(seed.as_ref(), auth::now_ms())
        })
        .await??;
        if seeded > 0 {
            tracing::info!(definitions = seeded, "published the built-in definitions");
        }
        let clock = clock::RegistryClock::default();
        let anchor_path = config.anchor_key_path();
        let anchor = Arc::new(
            tokio::task::spawn_blocking(move || anchor::Anchor::open_or_create(&anchor_path))
                .await??,
        );
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(c), Some(k)) => Some(tls::acceptor(c, k)?),
            _ => None,
        };
        let state = api::AppState {
            clock: clock.clone(),
            storage: storage.clone(),
            admin: auth::AdminToken::new(config.admin_token.as_deref()),
            max_body_bytes: config.max_body_bytes,
            max_decompressed_bytes: config.max_decompressed_bytes,
            limits: sync::SyncLimits {
                max_pull_bytes: config.max_pull_bytes,
                push_time_budget: std::time::Duration::from_secs(config.push_time_budget_secs),
                ..sync::SyncLimits::default()
            },
            body_timeout: std::time::Duration::from_secs(config.body_read_timeout_secs),
            max_syncs_per_device: config.max_syncs_per_device,
            slots: guard::DeviceSlots::default(),
            enrol_limiter: guard::RouteLimiter::new(
                "enrolment",
                config.enrol_per_minute,
                config.enrol_per_minute,
            ),
            admin_limiter: guard::RouteLimiter::new(
                "admin",
                config.admin_per_minute,
                config.admin_per_minute.div_ceil(2),
            ),
            anchor: Some(anchor.clone()),
            console: config.console_config().map_err(ServerError::Config)?,
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = api::router(state);
        let limits = listener::ConnLimits {
            max_connections: config.max_connections,
            header_read_timeout: std::time::Duration::from_secs(config.header_read_timeout_secs),
            ..listener::ConnLimits::default()
        };
        let is_tls = tls.is_some();
        let task = tokio::spawn(listener::serve(
            listener,
            app,
            limits,
            tls,
            async move {
                let _ = rx.await;
            },
            std::time::Duration::from_secs(30),
        ));
        tracing::info!(%addr, tls = is_tls, "followup-server listening");
        Ok(RunningServer {
            addr,
            tls: is_tls,
            anchor: Some(anchor),
            _lock: None,
            storage,
            clock,
            shutdown: Some(tx),
            task: Some(task),
        })
    }
}

impl RunningServer {
    /// `http://addr`, or `https://addr` when serving TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The audit anchor (its public key verifies the heads the server hands out).
    pub fn anchor(&self) -> Option<&Arc<anchor::Anchor>> {
        self.anchor.as_ref()
    }

    /// The storage the server uses.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The registry's clock (deadlines, case times).
    pub fn registry_clock(&self) -> &clock::RegistryClock {
        &self.clock
    }

    /// Move the registry's clock forward, e.g. to let a deadline pass in a test or the demo.
    pub fn advance_registry_clock(&self, by: std::time::Duration) {
        self.clock.advance(by);
    }

    /// Stop accepting connections, let in-flight requests finish, then return.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await??;
        }
        tracing::info!("followup-server stopped");
        Ok(())
    }

    /// Serve until the task ends (e.g. after [`RunningServer::trigger_shutdown`]).
    pub async fn wait(mut self) -> Result<(), ServerError> {
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }

    /// A handle that starts a graceful shutdown when called.
    pub fn trigger_shutdown(&mut self) -> Option<tokio::sync::oneshot::Sender<()>> {
        self.shutdown.take()
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
