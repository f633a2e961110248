//! The read model on SQLite: the projection kept in the push's transaction equals a rebuild from
//! the stored documents after randomized histories; conflicts stay conflicts; the console's and
//! exports' queries answer what they should and respect the clinic scope. The same scenarios run
//! on PostgreSQL in `postgres.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rm_cases;

use std::sync::Arc;

use followup_server::storage::{SqliteStorage, Storage};

fn sqlite() -> (tempfile::TempDir, Arc<dyn Storage>) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStorage::open(dir.path()).unwrap();
    (dir, Arc::new(s))
}

#[test]
fn rebuild_equals_incremental_after_random_histories() {
    for seed in [1u64, 2, 3, 42, 1234, 99_991] {
        let (_dir, s) = sqlite();
        rm_cases::rebuild_equals_incremental(s, seed, 400);
    }
}

#[test]
fn conflicts_are_projected_as_conflicts() {
    let (_dir, s) = sqlite();
    rm_cases::conflicts_are_projected_as_conflicts(s);
}

#[test]
fn cases_and_replies_are_projected() {
    let (_dir, s) = sqlite();
    rm_cases::cases_are_projected(s);
}

#[test]
fn queries_answer_what_the_console_asks() {
    let (_dir, s) = sqlite();
    rm_cases::queries_answer_what_the_console_asks(s);
}

#[test]
fn duplicate_study_codes_are_listed() {
    let (_dir, s) = sqlite();
    rm_cases::duplicate_study_codes_are_listed(s);
}

/// A database whose read model is missing or out of date (written before the read model existed,
/// or by another projection version) is rebuilt when the server opens it.
#[test]
fn opening_rebuilds_a_stale_read_model() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let s: Arc<dyn Storage> = Arc::new(SqliteStorage::open(dir.path()).unwrap());
        rm_cases::rebuild_equals_incremental(s.clone(), 7, 150);
        followup_server::readmodel::query::dump(&*s).unwrap()
    };
    {
        let c = rusqlite::Connection::open(dir.path().join("registry.sqlite3")).unwrap();
        c.execute_batch(
            "DELETE FROM rm_answers; DELETE FROM rm_visits; UPDATE rm_meta SET projection_version = 0;",
        )
        .unwrap();
    }
    let s: Arc<dyn Storage> = Arc::new(SqliteStorage::open(dir.path()).unwrap());
    let after = followup_server::readmodel::query::dump(&*s).unwrap();
    assert!(!after["rm_answers"].is_empty());
    assert_eq!(before, after);
}
