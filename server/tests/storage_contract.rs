//! The storage contract against the SQLite backend (tests/postgres.rs runs the same functions
//! against PostgreSQL).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod contract;

use std::sync::Arc;

use contract::RawDb;
use followup_server::storage::{SqliteStorage, Storage};

struct SqliteRaw(rusqlite::Connection);

impl RawDb for SqliteRaw {
    fn exec(&mut self, sql: &str) -> Result<u64, String> {
        self.0
            .execute(sql, [])
            .map(|n| n as u64)
            .map_err(|e| e.to_string())
    }
    fn drop_audit_guards(&mut self) {
        self.0
            .execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
            .unwrap();
    }
}

#[test]
fn sqlite_storage_contract() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStorage::open(dir.path()).unwrap();
    let mut raw = SqliteRaw(rusqlite::Connection::open(s.path()).unwrap());
    contract::storage_contract(&s, &mut raw);
    contract::staging_contract(&s);
}

#[test]
fn sqlite_concurrent_writers_on_two_handles() {
    let dir = tempfile::tempdir().unwrap();
    let a: Arc<dyn Storage> = Arc::new(SqliteStorage::open(dir.path()).unwrap());
    let b: Arc<dyn Storage> = Arc::new(SqliteStorage::open(dir.path()).unwrap());
    contract::concurrent_writers_contract(&[a, b], 4, 10);
}
