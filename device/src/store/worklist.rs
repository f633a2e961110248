//! The `worklist` table: one plaintext row per procedure with what a clinic's due list needs
//! (procedure, patient, procedure date, the visits its submitted responses answer), so the first
//! listing after opening the store or after a sync reads 10,000 small rows instead of every
//! procedure's index entry plus an aggregate over every response (design and figures:
//! `docs/decisions.md`, "A clinic's due list").
//!
//! The table is derived from the `docs` index and kept equal to it by SQLite triggers on `docs`
//! (insert, update of an index column, delete), in the same transaction as the write. Because
//! the triggers live in the database file, every writer keeps the table current — this code, the
//! sync client, another process, and an older build of the app that knows nothing of the table.
//! So adding the table needs no format-version bump (which would make older apps refuse the
//! store): [`ensure`] creates it and fills it from `docs` when a store is opened without it (a
//! store made before the table existed), in one transaction.
//!
//! Rows hold only what `docs` already holds in plaintext (random ids, a date, visit codes).

use chrono::NaiveDate;
use rusqlite::{Connection, TransactionBehavior};

use super::{days_to_date, id_col, index_err, Result, Store};
use followup_domain::model::{RecordKind, ResponseStatus};

/// The schema objects [`ensure`] checks for: the table and its three triggers.
const OBJECTS: [(&str, &str); 4] = [
    ("table", "worklist"),
    ("trigger", "worklist_docs_insert"),
    ("trigger", "worklist_docs_update"),
    ("trigger", "worklist_docs_delete"),
];

/// The visits answered by the submitted responses following up procedure `subject` (an SQL
/// expression), comma-separated, `''` for none. One seek in `docs_visit_links`.
fn done_of(subject: &str) -> String {
    format!(
        "coalesce((SELECT group_concat(visit, ',') FROM docs \
         WHERE kind = '{response}' AND status = '{submitted}' AND subject = {subject} \
         AND visit IS NOT NULL), '')",
        response = RecordKind::Response.code(),
        submitted = ResponseStatus::Submitted.code(),
    )
}

/// Insert `NEW`'s row if it is a dated procedure of a patient (the rows the work list uses).
fn insert_procedure() -> String {
    format!(
        "INSERT OR REPLACE INTO worklist (procedure, patient, date, done) \
         SELECT NEW.id, NEW.patient, NEW.date, {done} \
         WHERE NEW.kind = '{procedure}' AND NEW.patient IS NOT NULL AND NEW.date IS NOT NULL;",
        done = done_of("NEW.id"),
        procedure = RecordKind::Procedure.code(),
    )
}

/// Recompute the done visits of the procedure `row`'s response (`OLD` or `NEW`) follows up,
/// when `row` is a response.
fn refresh_done(row: &str) -> String {
    format!(
        "UPDATE worklist SET done = {done} \
         WHERE {row}.kind = '{response}' AND procedure = {row}.subject;",
        done = done_of(&format!("{row}.subject")),
        response = RecordKind::Response.code(),
    )
}

/// The table and its triggers.
fn schema() -> String {
    let response = RecordKind::Response.code();
    let submitted = ResponseStatus::Submitted.code();
    format!(
        "CREATE TABLE worklist (
            procedure BLOB PRIMARY KEY,
            patient   BLOB NOT NULL,
            date      INTEGER NOT NULL,
            done      TEXT NOT NULL
        ) WITHOUT ROWID;
        CREATE TRIGGER worklist_docs_insert AFTER INSERT ON docs BEGIN
            {insert}
            UPDATE worklist SET done = {done_new}
            WHERE NEW.kind = '{response}' AND NEW.status = '{submitted}'
              AND NEW.visit IS NOT NULL AND procedure = NEW.subject;
        END;
        CREATE TRIGGER worklist_docs_update
        AFTER UPDATE OF id, kind, patient, date, status, visit, subject ON docs
        WHEN OLD.id IS NOT NEW.id OR OLD.kind IS NOT NEW.kind OR OLD.patient IS NOT NEW.patient
          OR OLD.date IS NOT NEW.date OR OLD.status IS NOT NEW.status
          OR OLD.visit IS NOT NEW.visit OR OLD.subject IS NOT NEW.subject
        BEGIN
            DELETE FROM worklist WHERE procedure = OLD.id;
            {insert}
            {refresh_old}
            {refresh_new}
        END;
        CREATE TRIGGER worklist_docs_delete AFTER DELETE ON docs BEGIN
            DELETE FROM worklist WHERE procedure = OLD.id;
            {refresh_old}
        END;",
        insert = insert_procedure(),
        done_new = done_of("NEW.subject"),
        refresh_old = refresh_done("OLD"),
        refresh_new = refresh_done("NEW"),
    )
}

/// Fill the table from `docs` (it must be empty).
fn backfill_sql() -> String {
    format!(
        "INSERT INTO worklist (procedure, patient, date, done) \
         SELECT p.id, p.patient, p.date, {done} FROM docs AS p \
         WHERE p.kind = '{procedure}' AND p.patient IS NOT NULL AND p.date IS NOT NULL",
        done = done_of("p.id"),
        procedure = RecordKind::Procedure.code(),
    )
}

fn present(conn: &Connection) -> Result<usize> {
    let mut stmt =
        conn.prepare("SELECT count(*) FROM sqlite_master WHERE type = ?1 AND name = ?2")?;
    let mut n = 0;
    for (kind, name) in OBJECTS {
        let c: i64 = stmt.query_row([kind, name], |r| r.get(0))?;
        n += usize::from(c > 0);
    }
    Ok(n)
}

/// Create the table and its triggers in a new store (inside its creating transaction).
pub(super) fn create(conn: &Connection) -> Result<()> {
    conn.execute_batch(&schema())?;
    Ok(())
}

/// Make sure the table and its triggers exist, creating and filling them from `docs` in one
/// transaction when they do not (a store from before the table, or an incomplete schema).
/// Returns whether it migrated.
pub(super) fn ensure(conn: &mut Connection) -> Result<bool> {
    if present(conn)? == OBJECTS.len() {
        return Ok(false);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another process may have migrated while we waited for the write lock.
    if present(&tx)? == OBJECTS.len() {
        return Ok(false);
    }
    for (kind, name) in OBJECTS.iter().rev() {
        let kind = if *kind == "table" { "TABLE" } else { "TRIGGER" };
        tx.execute_batch(&format!("DROP {kind} IF EXISTS {name};"))?;
    }
    tx.execute_batch(&schema())?;
    let rows = tx.execute(&backfill_sql(), [])?;
    tx.commit()?;
    tracing::info!(procedures = rows, "store migrated: work list table added");
    Ok(true)
}

impl Store {
    /// Every row of the work list table: a dated procedure of a patient, with the visits its
    /// submitted responses answer as comma-separated visit codes (`""` for none; a visit
    /// answered twice appears twice; order unspecified). Equal, as a set, to what
    /// [`Store::list`] of the procedures and [`Store::visit_links`] of the submitted responses
    /// give, at a fraction of the cost.
    pub fn for_each_worklist_row(&self, mut f: impl FnMut(WorklistRow<'_>)) -> Result<()> {
        let conn = self.lock()?;
        let mut stmt =
            conn.prepare_cached("SELECT procedure, patient, date, done FROM worklist")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let row = (|| -> rusqlite::Result<WorklistRow<'_>> {
                let days: i64 = r.get(2)?;
                Ok(WorklistRow {
                    procedure: id_col(r, 0, "procedure")?,
                    patient: id_col(r, 1, "patient")?,
                    date: days_to_date(days).ok_or_else(|| super::bad(2, "date"))?,
                    done: r.get_ref(3)?.as_str().map_err(|_| super::bad(3, "done"))?,
                })
            })()
            .map_err(index_err)?;
            f(row);
        }
        Ok(())
    }
}

/// One row of the work list table (see [`Store::for_each_worklist_row`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorklistRow<'a> {
    /// The procedure.
    pub procedure: super::RecordId,
    /// Its patient (enrolment).
    pub patient: super::RecordId,
    /// The procedure date.
    pub date: NaiveDate,
    /// The visits answered by its submitted responses, comma-separated.
    pub done: &'a str,
}

#[cfg(test)]
mod tests;
