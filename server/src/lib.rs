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
//! | [`config`] | flags and environment variables |
//! | [`error`] | HTTP errors with JSON bodies |
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

pub mod api;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod cases;
pub mod clock;
pub mod config;
pub mod console;
pub mod error;
pub mod export;
pub mod readmodel;
pub mod resumable;
pub mod rules;
pub mod staff;
pub mod storage;
pub mod sync;

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
}

/// The server.
pub struct Server;

/// A server running on a tokio runtime.
pub struct RunningServer {
    /// The address it listens on (the real port when started on port 0).
    pub addr: SocketAddr,
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
                let sqlite =
                    tokio::task::spawn_blocking(move || SqliteStorage::open(&dir)).await??;
                tracing::info!(path = %sqlite.path().display(), "storage: SQLite");
                Arc::new(sqlite)
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
        let clock = clock::RegistryClock::default();
        let state = api::AppState {
            clock: clock.clone(),
            storage: storage.clone(),
            admin: auth::AdminToken::new(config.admin_token.as_deref()),
            max_body_bytes: config.max_body_bytes,
            max_decompressed_bytes: config.max_decompressed_bytes,
            limits: sync::SyncLimits {
                max_pull_bytes: config.max_pull_bytes,
                ..sync::SyncLimits::default()
            },
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
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
        });
        tracing::info!(%addr, "followup-server listening");
        Ok(RunningServer {
            addr,
            storage,
            clock,
            shutdown: Some(tx),
            task: Some(task),
        })
    }
}

impl RunningServer {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
