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
    /// The public participation page's rules (JSON; see docs/registry-console.md). The built-in
    /// rules are used without it.
    #[arg(long, env = "FOLLOWUP_PARTICIPATION_RULES")]
    pub participation_rules: Option<PathBuf>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "FOLLOWUP_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
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
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            database: None,
            database_pool_size: 16,
            admin_token: admin_token.map(str::to_string),
            max_body_bytes: 16 * 1024 * 1024,
            max_decompressed_bytes: 64 * 1024 * 1024,
            max_pull_bytes: 8 * 1024 * 1024,
            participation_rules: None,
            log_format: "text".into(),
            command: None,
        }
    }

    /// The same, over a PostgreSQL database instead of a data directory.
    pub fn for_tests_postgres(database_url: &str, admin_token: Option<&str>) -> Config {
        Config {
            database: Some(database_url.to_string()),
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
