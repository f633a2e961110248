//! Configuration: command-line flags, each also readable from an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

/// The server's configuration.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "followup-server",
    about = "Followup registry sync server",
    version
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "FOLLOWUP_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory holding the SQLite database (the default backend; unused with `--database`).
    #[arg(
        long,
        visible_alias = "data",
        env = "FOLLOWUP_DATA_DIR",
        default_value = "./followup-data"
    )]
    pub data_dir: PathBuf,
    /// A PostgreSQL URL (`postgres://user:password@host:port/db`) to use instead of SQLite, for
    /// several server processes over one database. See docs/operations.md.
    #[arg(long, env = "FOLLOWUP_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// Most PostgreSQL connections this process opens (PostgreSQL only).
    #[arg(long, env = "FOLLOWUP_DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: usize,
    /// Bearer token of the admin API (at least 16 characters); the admin API is off without it.
    #[arg(long, env = "FOLLOWUP_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Largest request body accepted, compressed, in bytes.
    #[arg(long, env = "FOLLOWUP_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest request body accepted once decompressed, in bytes.
    #[arg(long, env = "FOLLOWUP_MAX_DECOMPRESSED_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_decompressed_bytes: usize,
    /// Cap on one response's pulled change bytes, whatever a device asks.
    #[arg(long, env = "FOLLOWUP_MAX_PULL_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_pull_bytes: usize,
    /// Seconds after which one push stops merging and answers its remaining documents `busy`
    /// (the device sends them in its next exchange): one huge push cannot hold a worker.
    #[arg(long, env = "FOLLOWUP_PUSH_TIME_BUDGET_SECS", default_value_t = 20)]
    pub push_time_budget_secs: u64,
    /// The public participation page's rules (JSON; see docs/registry-console.md). The built-in
    /// rules are used without it.
    #[arg(long, env = "FOLLOWUP_PARTICIPATION_RULES")]
    pub participation_rules: Option<PathBuf>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "FOLLOWUP_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// TLS certificate chain (PEM) to serve HTTPS; reloaded when the file changes. With
    /// `--tls-key`.
    #[arg(long, env = "FOLLOWUP_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM, PKCS#8, SEC1 or PKCS#1). With `--tls-cert`.
    #[arg(long, env = "FOLLOWUP_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Ed25519 key that signs the audit chain's head (created 0600 if missing). Keep it outside
    /// the database, ideally on another volume. Default: `<data dir>-anchor/anchor.key`, beside
    /// the data directory (not in it).
    #[arg(long, env = "FOLLOWUP_ANCHOR_KEY")]
    pub anchor_key: Option<PathBuf>,
    /// Most connections open at once; more wait in the kernel's queue.
    #[arg(long, env = "FOLLOWUP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (and to start its next request).
    #[arg(long, env = "FOLLOWUP_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to send a request's body.
    #[arg(long, env = "FOLLOWUP_BODY_READ_TIMEOUT_SECS", default_value_t = 60)]
    pub body_read_timeout_secs: u64,
    /// Sync requests one device may have in flight at once.
    #[arg(long, env = "FOLLOWUP_MAX_SYNCS_PER_DEVICE", default_value_t = 2)]
    pub max_syncs_per_device: u32,
    /// Enrolment requests per minute per client address.
    #[arg(long, env = "FOLLOWUP_ENROL_PER_MINUTE", default_value_t = 10)]
    pub enrol_per_minute: u32,
    /// Admin API requests per minute per client address.
    #[arg(long, env = "FOLLOWUP_ADMIN_PER_MINUTE", default_value_t = 120)]
    pub admin_per_minute: u32,
    /// A maintenance command to run instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Maintenance commands of the server binary (they work on the database directly, no server
/// needs to run).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Re-derive every read-model table (the console's and exports' relational tables) from the
    /// stored documents, in one transaction; prints what it did.
    RebuildReadModel,
}

impl Config {
    /// A configuration for tests and embedding: loopback, an ephemeral port, this data directory.
    pub fn for_tests(data_dir: impl Into<PathBuf>, admin_token: Option<&str>) -> Config {
        let data_dir: PathBuf = data_dir.into();
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            anchor_key: Some(data_dir.join("anchor").join("anchor.key")),
            data_dir,
            database: None,
            database_pool_size: 16,
            admin_token: admin_token.map(str::to_string),
            max_body_bytes: 16 * 1024 * 1024,
            max_decompressed_bytes: 64 * 1024 * 1024,
            max_pull_bytes: 8 * 1024 * 1024,
            push_time_budget_secs: 20,
            participation_rules: None,
            log_format: "text".into(),
            tls_cert: None,
            tls_key: None,
            max_connections: 1024,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 60,
            max_syncs_per_device: 2,
            // Every test client is 127.0.0.1: the rate limits are tested on their own.
            enrol_per_minute: 100_000,
            admin_per_minute: 100_000,
            command: None,
        }
    }

    /// Where the audit anchor key is: `--anchor-key`, else `followup-anchor/anchor.key` beside
    /// the data directory (not inside it: a copy of the data directory must not carry the key).
    pub fn anchor_key_path(&self) -> PathBuf {
        if let Some(p) = &self.anchor_key {
            return p.clone();
        }
        let data = if self.data_dir.is_absolute() {
            self.data_dir.clone()
        } else {
            std::env::current_dir()
                .map(|d| d.join(&self.data_dir))
                .unwrap_or_else(|_| self.data_dir.clone())
        };
        let name = data
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "followup".into());
        data.parent()
            .unwrap_or(&data)
            .join(format!("{name}-anchor"))
            .join("anchor.key")
    }

    /// The same, over a PostgreSQL database instead of a data directory.
    pub fn for_tests_postgres(database_url: &str, admin_token: Option<&str>) -> Config {
        let anchor_dir = std::env::temp_dir().join(format!(
            "followup-test-anchor-{}",
            hex::encode(followup_domain::ids::random_bytes::<8>())
        ));
        Config {
            database: Some(database_url.to_string()),
            anchor_key: Some(anchor_dir.join("anchor.key")),
            ..Config::for_tests("./followup-data-unused", admin_token)
        }
    }

    /// The console's settings: the participation rules from `--participation-rules` (or the
    /// built-in ones), default session and throttling policies.
    pub fn console_config(&self) -> Result<crate::console::ConsoleConfig, String> {
        let mut c = crate::console::ConsoleConfig::default();
        if let Some(path) = &self.participation_rules {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let rules = crate::console::Rules::parse(&text)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            c.rules = std::sync::Arc::new(rules);
        }
        Ok(c)
    }

    /// Check values that clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(t) = &self.admin_token {
            if t.trim().len() < 16 {
                return Err("the admin token must be at least 16 characters".into());
            }
        }
        if self.max_body_bytes == 0 || self.max_decompressed_bytes == 0 {
            return Err("body limits must be positive".into());
        }
        if self.max_connections == 0 || self.max_syncs_per_device == 0 {
            return Err("--max-connections and --max-syncs-per-device must be positive".into());
        }
        if self.header_read_timeout_secs == 0 || self.body_read_timeout_secs == 0 {
            return Err("read timeouts must be at least 1 second".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("--tls-cert and --tls-key go together".into());
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(format!(
                "--log-format {:?} is not one of: text, json",
                self.log_format
            ));
        }
        if let Some(url) = &self.database {
            // The error text could echo a password: say only what is wrong.
            if url.parse::<postgres::Config>().is_err() {
                return Err(
                    "--database is not a valid PostgreSQL URL (postgres://user:password@host:port/db)"
                        .into(),
                );
            }
            if self.database_pool_size == 0 {
                return Err("the database pool size must be positive".into());
            }
        }
        Ok(())
    }
}
