//! The `worklist` table: one plaintext row per procedure with what a clinic's due list needs
//! (procedure, patient, procedure date, the visits its submitted responses answer), so the first
//! listing after opening the store or after a sync reads 10,000 small rows instead of every
//! procedure's index entry plus an aggregate over every response (design and figures:
//! `docs/decisions.md`, "A clinic's due list").
//!
//! The table is derived from the `docs` index and kept equal to it by SQLite triggers on `docs`
//! (insert, update of an index column, delete), in the same transaction as the write, with
//! constant work per write: a submitted response adds its visit to its procedure's set if
//! absent; a response that stops answering a visit (deleted, moved, withdrawn, visit changed)
//! removes it unless another submitted response still answers it (one index seek); only a
//! procedure's own insert or edit counts its responses. Because
//! the triggers live in the database file, every writer keeps the table current — this code, the
//! sync client, another process, and an older build of the app that knows nothing of the table.
//! So adding the table needs no format-version bump (which would make older apps refuse the
//! store): [`ensure`] creates it and fills it from `docs` when a store is opened without it (a
//! store made before the table existed) or with objects that differ from this version's, in one
//! transaction.
//!
//! Rows hold only what `docs` already holds in plaintext (random ids, a date, visit codes).

use chrono::NaiveDate;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::{days_to_date, id_col, index_err, Result, Store};
use followup_domain::model::{RecordKind, ResponseStatus};

/// The visits answered by the submitted responses following up procedure `subject` (an SQL
/// expression), each once, comma-separated, `''` for none. One range in `docs_visit_links`.
fn done_of(subject: &str) -> String {
    format!(
        "coalesce((SELECT group_concat(DISTINCT visit) FROM docs \
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

/// `row` (`OLD` or `NEW`) is a submitted response naming a visit.
fn answers_visit(row: &str) -> String {
    format!(
        "{row}.kind = '{response}' AND {row}.status = '{submitted}' AND {row}.visit IS NOT NULL",
        response = RecordKind::Response.code(),
        submitted = ResponseStatus::Submitted.code(),
    )
}

/// Add `NEW.visit` to the done visits of `NEW.subject` if `NEW` answers it and it is not there
/// yet: constant work however many responses the procedure has (a recount on every submission
/// would grow with them).
fn add_new() -> String {
    format!(
        "UPDATE worklist SET done = CASE WHEN done = '' THEN NEW.visit \
         ELSE done || ',' || NEW.visit END \
         WHERE {answers} AND procedure = NEW.subject \
         AND instr(',' || done || ',', ',' || NEW.visit || ',') = 0;",
        answers = answers_visit("NEW"),
    )
}

/// Take `OLD.visit` off the done visits of `OLD.subject` if `OLD` answered it and no submitted
/// response (after the change) still does: one index seek.
fn remove_old() -> String {
    format!(
        "UPDATE worklist SET done = trim(replace(',' || done || ',', ',' || OLD.visit || ',', ','), ',') \
         WHERE {answers} AND procedure = OLD.subject \
         AND NOT EXISTS (SELECT 1 FROM docs WHERE kind = '{response}' AND status = '{submitted}' \
         AND subject = OLD.subject AND visit = OLD.visit);",
        answers = answers_visit("OLD"),
        response = RecordKind::Response.code(),
        submitted = ResponseStatus::Submitted.code(),
    )
}

/// The table and its triggers: (type, name, the exact `CREATE` statement). [`ensure`] compares
/// the statements with what the file holds, so a store whose objects differ from this version's
/// (missing, or from an older version of this code) is rebuilt.
fn objects() -> [(&'static str, &'static str, String); 4] {
    [
        (
            "table",
            "worklist",
            "CREATE TABLE worklist (\
             procedure BLOB PRIMARY KEY, \
             patient BLOB NOT NULL, \
             date INTEGER NOT NULL, \
             done TEXT NOT NULL\
             ) WITHOUT ROWID"
                .to_string(),
        ),
        (
            "trigger",
            "worklist_docs_insert",
            format!(
                "CREATE TRIGGER worklist_docs_insert AFTER INSERT ON docs BEGIN {insert} {add} END",
                insert = insert_procedure(),
                add = add_new(),
            ),
        ),
        (
            "trigger",
            "worklist_docs_update",
            format!(
                "CREATE TRIGGER worklist_docs_update \
                 AFTER UPDATE OF id, kind, patient, date, status, visit, subject ON docs \
                 WHEN OLD.id IS NOT NEW.id OR OLD.kind IS NOT NEW.kind \
                 OR OLD.patient IS NOT NEW.patient OR OLD.date IS NOT NEW.date \
                 OR OLD.status IS NOT NEW.status OR OLD.visit IS NOT NEW.visit \
                 OR OLD.subject IS NOT NEW.subject \
                 BEGIN DELETE FROM worklist WHERE procedure = OLD.id; {insert} {remove} {add} END",
                insert = insert_procedure(),
                remove = remove_old(),
                add = add_new(),
            ),
        ),
        (
            "trigger",
            "worklist_docs_delete",
            format!(
                "CREATE TRIGGER worklist_docs_delete AFTER DELETE ON docs BEGIN \
                 DELETE FROM worklist WHERE procedure = OLD.id; {remove} END",
                remove = remove_old(),
            ),
        ),
    ]
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

/// Whether every object exists exactly as this version creates it.
fn up_to_date(conn: &Connection) -> Result<bool> {
    let mut stmt = conn.prepare("SELECT sql FROM sqlite_master WHERE type = ?1 AND name = ?2")?;
    for (kind, name, sql) in objects() {
        let found: Option<String> = stmt.query_row([kind, name], |r| r.get(0)).optional()?;
        if found.as_deref() != Some(sql.as_str()) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn create_objects(conn: &Connection) -> Result<()> {
    for (_, _, sql) in objects() {
        conn.execute_batch(&format!("{sql};"))?;
    }
    Ok(())
}

/// Create the table and its triggers in a new store (inside its creating transaction).
pub(super) fn create(conn: &Connection) -> Result<()> {
    create_objects(conn)
}

/// Make sure the table and its triggers exist, creating and filling them from `docs` in one
/// transaction when they do not (a store from before the table, or an incomplete schema).
/// Returns whether it migrated.
pub(super) fn ensure(conn: &mut Connection) -> Result<bool> {
    if up_to_date(conn)? {
        return Ok(false);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another process may have migrated while we waited for the write lock.
    if up_to_date(&tx)? {
        return Ok(false);
    }
    for (kind, name, _) in objects().iter().rev() {
        let kind = if *kind == "table" { "TABLE" } else { "TRIGGER" };
        tx.execute_batch(&format!("DROP {kind} IF EXISTS {name};"))?;
    }
    create_objects(&tx)?;
    let rows = tx.execute(&backfill_sql(), [])?;
    tx.commit()?;
    tracing::info!(
        procedures = rows,
        "store migrated: work list table (re)built"
    );
    Ok(true)
}

impl Store {
    /// Every row of the work list table: a dated procedure of a patient, with the visits its
    /// submitted responses answer as comma-separated visit codes (`""` for none; each visit
    /// once; order unspecified). Equal, as sets, to what
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
