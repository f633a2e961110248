//! The read model's tables, defined once and turned into DDL and statements for both backends,
//! so that SQLite and PostgreSQL hold exactly the same columns.
//!
//! Column types map as: [`ColType::Int`] → `INTEGER` / `BIGINT`, [`ColType::Real`] → `REAL` /
//! `DOUBLE PRECISION`, [`ColType::Text`] → `TEXT`, [`ColType::Blob`] → `BLOB` / `BYTEA`.
//! Booleans are integers 0/1 (so that the same SQL reads them on both backends).

use std::sync::OnceLock;

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Int,
    Real,
    Text,
    Blob,
}

/// One read-model table.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub cols: &'static [(&'static str, ColType)],
    /// Primary-key columns.
    pub pk: &'static [&'static str],
    /// The column holding the id of the record a row is derived from (rows are replaced per
    /// record).
    pub record_col: &'static str,
    /// Secondary indexes: `(name, columns)`.
    pub indexes: &'static [(&'static str, &'static str)],
}

impl Table {
    /// The index of a column (panics only on a typo in this file, caught by the unit tests).
    pub fn col(&self, name: &str) -> usize {
        self.cols
            .iter()
            .position(|(c, _)| *c == name)
            .unwrap_or(usize::MAX)
    }
}

use ColType::{Blob, Int, Real, Text};

/// One row per accepted record: who wrote it and when the registry accepted it. Server-side
/// meta, derived from the write log and the audit chain; the other tables are derived from the
/// document alone.
pub const RECORDS: Table = Table {
    name: "rm_records",
    cols: &[
        ("id", Blob),
        ("kind", Text),
        ("clinic", Blob),
        ("patient", Blob),
        ("created_by", Blob),
        ("created_by_user", Blob),
        ("created_at_s", Int),
        ("first_seq", Int),
        ("first_accepted_ms", Int),
        ("last_seq", Int),
        ("last_accepted_ms", Int),
        ("last_device", Blob),
        ("last_user", Blob),
        ("conflicts", Int),
        ("problem", Text),
    ],
    pk: &["id"],
    record_col: "id",
    indexes: &[
        ("rm_records_patient", "patient, kind"),
        ("rm_records_clinic", "clinic, kind"),
        ("rm_records_last_device", "last_device, last_accepted_ms"),
    ],
};

pub const CLINICS: Table = Table {
    name: "rm_clinics",
    cols: &[
        ("id", Blob),
        ("name", Text),
        ("country", Text),
        ("participation", Text),
        ("accreditations", Text),
        ("conflicts", Text),
    ],
    pk: &["id"],
    record_col: "id",
    indexes: &[],
};

pub const ENROLMENTS: Table = Table {
    name: "rm_enrolments",
    cols: &[
        ("id", Blob),
        ("clinic", Blob),
        ("study_code", Text),
        ("birth_year", Int),
        ("sex", Text),
        ("enrolled_on", Text),
        ("consent_form_version", Text),
        ("consent_date", Text),
        ("consent_scope", Text),
        ("created_by", Blob),
        ("created_at_s", Int),
        ("conflicts", Text),
    ],
    pk: &["id"],
    record_col: "id",
    indexes: &[("rm_enrolments_clinic", "clinic, study_code")],
};

pub const PROCEDURES: Table = Table {
    name: "rm_procedures",
    cols: &[
        ("id", Blob),
        ("clinic", Blob),
        ("patient", Blob),
        ("date", Text),
        ("date_day", Int),
        ("condition", Text),
        ("procedure_type", Text),
        ("route", Text),
        ("cell_type", Text),
        ("source_tissue", Text),
        ("origin", Text),
        ("manipulation", Text),
        ("regulatory_status", Text),
        ("trial_registration", Text),
        ("cost_minor", Int),
        ("cost_currency", Text),
        ("promised_benefits", Text),
        ("created_by", Blob),
        ("created_at_s", Int),
        ("conflicts", Text),
    ],
    pk: &["id"],
    record_col: "id",
    indexes: &[
        ("rm_procedures_patient", "patient"),
        ("rm_procedures_clinic", "clinic"),
    ],
};

/// The schedule's visits of each procedure. Windows are derived from the procedure alone;
/// `done_count` / `done_response` are kept current from the submitted responses that answer the
/// visit (same procedure, patient, visit id and questionnaire). The state as of a date is computed
/// when queried.
pub const VISITS: Table = Table {
    name: "rm_visits",
    cols: &[
        ("procedure", Blob),
        ("visit", Text),
        ("clinic", Blob),
        ("patient", Blob),
        ("questionnaire", Text),
        ("label", Text),
        ("seq", Int),
        ("target_day", Int),
        ("window_start_day", Int),
        ("window_end_day", Int),
        ("grace_end_day", Int),
        ("done_count", Int),
        ("done_response", Blob),
    ],
    pk: &["procedure", "visit"],
    record_col: "procedure",
    indexes: &[
        // Covers `query::visit_counts` (the overview, clinics, follow-up and participation
        // pages aggregate every visit of the registry): an index-only scan in GROUP BY order,
        // no lookup of the table's rows.
        (
            "rm_visits_counts",
            "clinic, visit, done_count, window_start_day, window_end_day, grace_end_day, seq, label, questionnaire",
        ),
        ("rm_visits_patient", "patient"),
    ],
};

pub const RESPONSES: Table = Table {
    name: "rm_responses",
    cols: &[
        ("id", Blob),
        ("clinic", Blob),
        ("patient", Blob),
        ("procedure", Blob),
        ("visit", Text),
        ("questionnaire", Text),
        ("questionnaire_version", Text),
        ("completed_by", Text),
        ("status", Text),
        ("submitted_at", Text),
        ("submitted_day", Int),
        ("answer_count", Int),
        ("created_by", Blob),
        ("created_at_s", Int),
        ("conflicts", Text),
    ],
    pk: &["id"],
    record_col: "id",
    indexes: &[
        ("rm_responses_visit", "procedure, visit"),
        ("rm_responses_patient", "patient"),
        ("rm_responses_clinic", "clinic, id"),
        // Covers the submitted responses counted per clinic (`query::clinic_stats`).
        ("rm_responses_status", "clinic, status"),
    ],
};

/// One row per answered item. A conflicted answer has `conflicted = 1`, NULL values and
/// `value_type = 'conflict'`; its values are in `rm_conflicts`.
pub const ANSWERS: Table = Table {
    name: "rm_answers",
    cols: &[
        ("response", Blob),
        ("item", Text),
        ("clinic", Blob),
        ("value_type", Text),
        ("value_int", Int),
        ("value_real", Real),
        ("value_text", Text),
        ("conflicted", Int),
    ],
    pk: &["response", "item"],
    record_col: "response",
    indexes: &[],
};

pub const ADVERSE_EVENTS: Table = Table {
    name: "rm_adverse_events",
    cols: &[
        ("id", Blob),
        ("clinic", Blob),
        ("patient", Blob),
        ("procedure", Blob),
        ("reporter", Text),
        ("category", Text),
        ("onset", Text),
        ("onset_day", Int),
        ("severity", Int),
        ("serious", Int),
        ("seriousness", Text),
        ("outcome", Text),
        ("description", Text),
        ("policy_days", Int),
        ("created_by", Blob),
        ("created_at_s", Int),
        ("conflicts", Text),
    ],
    pk: &["id"],
    record_col: "id",
    indexes: &[
        ("rm_adverse_events_clinic", "clinic"),
        ("rm_adverse_events_patient", "patient"),
    ],
};

pub const ADJUDICATIONS: Table = Table {
    name: "rm_adjudications",
    cols: &[
        ("id", Blob),
        ("clinic", Blob),
        ("patient", Blob),
        ("adverse_event", Blob),
        ("relatedness", Text),
        ("action", Text),
        ("remedy", Text),
        ("status", Text),
        ("deadline", Text),
        ("deadline_day", Int),
        ("decided_at", Text),
        ("created_by", Blob),
        ("created_at_s", Int),
        ("conflicts", Text),
    ],
    pk: &["id"],
    record_col: "id",
    indexes: &[
        ("rm_adjudications_event", "adverse_event"),
        ("rm_adjudications_patient", "patient"),
    ],
};

/// Every value of every conflicted field: `n` numbers the values of one field (in Automerge's
/// order), `winner` marks the one Automerge shows.
pub const CONFLICTS: Table = Table {
    name: "rm_conflicts",
    cols: &[
        ("record", Blob),
        ("path", Text),
        ("n", Int),
        ("clinic", Blob),
        ("value", Text),
        ("device", Blob),
        ("time_s", Int),
        ("winner", Int),
    ],
    pk: &["record", "path", "n"],
    record_col: "record",
    indexes: &[("rm_conflicts_clinic", "clinic")],
};

/// The registry's adjudication case of an adverse event (a registry-authored record): the
/// deadline the registry's policy set at the server's clock and the state as last written. The
/// state a page shows is computed when asked (`open` past `deadline_day` is `overdue`).
pub const CASES: Table = Table {
    name: "rm_cases",
    cols: &[
        ("id", Blob),
        ("clinic", Blob),
        ("patient", Blob),
        ("adverse_event", Blob),
        ("policy", Text),
        ("rule", Text),
        ("opened_at", Text),
        ("days", Int),
        ("deadline", Text),
        ("deadline_day", Int),
        ("state", Text),
        ("adjudication", Blob),
        ("responded_at", Text),
        ("escalations", Int),
        ("replies", Int),
        ("last_verdict", Text),
        ("closed_at", Text),
        ("closed_note", Text),
        ("conflicts", Text),
    ],
    pk: &["id"],
    record_col: "id",
    indexes: &[
        ("rm_cases_event", "adverse_event"),
        ("rm_cases_clinic", "clinic, state"),
    ],
};

/// The entries of a case, in order: the registry's escalations (`kind = 'escalation'`, `text` =
/// the note the clinic reads) and the patient's replies as the registry recorded them (`kind =
/// 'reply'`, `verdict` accepted / disputed, `text` = the comment, `reply` = the reply record).
pub const CASE_ENTRIES: Table = Table {
    name: "rm_case_entries",
    cols: &[
        ("record", Blob),
        ("kind", Text),
        ("n", Int),
        ("clinic", Blob),
        ("at", Text),
        ("verdict", Text),
        ("text", Text),
        ("reply", Blob),
    ],
    pk: &["record", "kind", "n"],
    record_col: "record",
    indexes: &[("rm_case_entries_clinic", "clinic")],
};

/// A patient's reply to the clinic's adjudication (a `case_reply` record written on the patient's
/// phone).
pub const CASE_REPLIES: Table = Table {
    name: "rm_case_replies",
    cols: &[
        ("id", Blob),
        ("clinic", Blob),
        ("patient", Blob),
        ("adverse_event", Blob),
        ("verdict", Text),
        ("comment", Text),
        ("replied_at", Text),
        ("created_by", Blob),
        ("created_at_s", Int),
        ("conflicts", Text),
    ],
    pk: &["id"],
    record_col: "id",
    indexes: &[
        ("rm_case_replies_event", "adverse_event"),
        ("rm_case_replies_clinic", "clinic"),
    ],
};

/// Every derived table, in the order rows are inserted.
pub const ALL: [&Table; 13] = [
    &RECORDS,
    &CLINICS,
    &ENROLMENTS,
    &PROCEDURES,
    &VISITS,
    &RESPONSES,
    &ANSWERS,
    &ADVERSE_EVENTS,
    &ADJUDICATIONS,
    &CONFLICTS,
    &CASES,
    &CASE_ENTRIES,
    &CASE_REPLIES,
];

/// Which backend's dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    fn ty(self, t: ColType) -> &'static str {
        match (self, t) {
            (Dialect::Sqlite, Int) => "INTEGER",
            (Dialect::Sqlite, Real) => "REAL",
            (Dialect::Sqlite, Text) => "TEXT",
            (Dialect::Sqlite, Blob) => "BLOB",
            (Dialect::Postgres, Int) => "BIGINT",
            (Dialect::Postgres, Real) => "DOUBLE PRECISION",
            (Dialect::Postgres, Text) => "TEXT",
            (Dialect::Postgres, Blob) => "BYTEA",
        }
    }
    fn array_ty(self, t: ColType) -> &'static str {
        match t {
            Int => "BIGINT[]",
            Real => "DOUBLE PRECISION[]",
            Text => "TEXT[]",
            Blob => "BYTEA[]",
        }
    }
}

/// Indexes that a wider one replaced; [`ddl`] drops them where an older server created them.
pub const DROPPED_INDEXES: &[&str] = &["rm_visits_clinic"];

/// The name of every table and index [`ddl`] creates. A database where one is missing (or where
/// one of [`DROPPED_INDEXES`] remains) was made by an older server and needs [`ddl`] run again;
/// PostgreSQL checks this at start, so that a role without `CREATE` can run a server over a
/// schema that is already current.
pub fn relations() -> Vec<&'static str> {
    let mut out = Vec::new();
    for t in ALL {
        out.push(t.name);
        out.extend(t.indexes.iter().map(|(name, _)| *name));
    }
    out.extend(["rm_meta", "device_activity"]);
    out
}

/// The DDL creating every read-model table (idempotent), plus the non-derived tables the read
/// model keeps beside them: `rm_meta` (projection version) and `device_activity` (last request of
/// each device).
pub fn ddl(d: Dialect) -> String {
    // Indexes replaced by wider ones (a database created before keeps them otherwise).
    let mut out = String::new();
    for name in DROPPED_INDEXES {
        out.push_str(&format!("DROP INDEX IF EXISTS {name};\n"));
    }
    for t in ALL {
        out.push_str(&format!("CREATE TABLE IF NOT EXISTS {} (\n", t.name));
        for (name, ty) in t.cols {
            out.push_str(&format!("    {name} {},\n", d.ty(*ty)));
        }
        out.push_str(&format!("    PRIMARY KEY ({})\n);\n", t.pk.join(", ")));
        for (name, cols) in t.indexes {
            out.push_str(&format!(
                "CREATE INDEX IF NOT EXISTS {name} ON {} ({cols});\n",
                t.name
            ));
        }
    }
    let (int, blob) = (d.ty(Int), d.ty(Blob));
    out.push_str(&format!(
        "CREATE TABLE IF NOT EXISTS rm_meta (
    id {int} PRIMARY KEY,
    projection_version {int} NOT NULL,
    rebuilt_at_ms {int}
);
CREATE TABLE IF NOT EXISTS device_activity (
    device {blob} PRIMARY KEY,
    last_seen_ms {int} NOT NULL,
    requests {int} NOT NULL
);
"
    ));
    out
}

/// `INSERT INTO t (cols) VALUES (?1, …)` (SQLite, one row).
pub fn insert_sqlite(t: &Table) -> String {
    let cols: Vec<&str> = t.cols.iter().map(|(c, _)| *c).collect();
    let params: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({}){}",
        t.name,
        cols.join(", "),
        params.join(", "),
        upsert_tail(t)
    )
}

/// Rows per multi-row `INSERT` on SQLite: one statement (and one parse, bind and step) per 32
/// rows instead of per row. At most 15 columns × 32 = 480 parameters, far below SQLite's limit.
pub const SQLITE_ROWS_PER_INSERT: usize = 32;

/// `INSERT INTO t (cols) VALUES (?, …), (?, …), …` (SQLite, `n` rows).
pub fn insert_sqlite_rows(t: &Table, n: usize) -> String {
    let cols: Vec<&str> = t.cols.iter().map(|(c, _)| *c).collect();
    let one = format!("({})", vec!["?"; cols.len()].join(", "));
    format!(
        "INSERT INTO {} ({}) VALUES {}{}",
        t.name,
        cols.join(", "),
        vec![one; n].join(", "),
        upsert_tail(t)
    )
}

/// `INSERT INTO t (cols) SELECT * FROM UNNEST($1::T[], …)` (PostgreSQL, many rows at once).
pub fn insert_postgres(t: &Table) -> String {
    let cols: Vec<&str> = t.cols.iter().map(|(c, _)| *c).collect();
    let arrays: Vec<String> = t
        .cols
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| format!("${}::{}", i + 1, Dialect::Postgres.array_ty(*ty)))
        .collect();
    format!(
        "INSERT INTO {} ({}) SELECT * FROM UNNEST({}){}",
        t.name,
        cols.join(", "),
        arrays.join(", "),
        upsert_tail(t)
    )
}

/// `rm_records` is upserted: a record written again keeps its first write's columns.
fn upsert_tail(t: &Table) -> &'static str {
    if t.name == RECORDS.name {
        " ON CONFLICT (id) DO UPDATE SET last_seq = excluded.last_seq, \
         last_accepted_ms = excluded.last_accepted_ms, last_device = excluded.last_device, \
         last_user = excluded.last_user, conflicts = excluded.conflicts, \
         problem = excluded.problem, created_at_s = excluded.created_at_s"
    } else {
        ""
    }
}

/// The statements per table and dialect, built once.
pub struct Statements {
    pub insert: Vec<String>,
    /// SQLite only: [`SQLITE_ROWS_PER_INSERT`] rows per statement (empty for PostgreSQL, whose
    /// `insert` already takes every row at once).
    pub insert_many: Vec<String>,
    pub delete_one: Vec<String>,
    pub delete_many: Vec<String>,
    pub dump: Vec<String>,
    pub clear: Vec<String>,
}

fn build(d: Dialect) -> Statements {
    Statements {
        insert: ALL
            .iter()
            .map(|t| match d {
                Dialect::Sqlite => insert_sqlite(t),
                Dialect::Postgres => insert_postgres(t),
            })
            .collect(),
        insert_many: match d {
            Dialect::Sqlite => ALL
                .iter()
                .map(|t| insert_sqlite_rows(t, SQLITE_ROWS_PER_INSERT))
                .collect(),
            Dialect::Postgres => Vec::new(),
        },
        delete_one: ALL
            .iter()
            .map(|t| format!("DELETE FROM {} WHERE {} = $1", t.name, t.record_col))
            .collect(),
        delete_many: ALL
            .iter()
            .map(|t| format!("DELETE FROM {} WHERE {} = ANY($1)", t.name, t.record_col))
            .collect(),
        dump: ALL
            .iter()
            .map(|t| {
                let cols: Vec<&str> = t.cols.iter().map(|(c, _)| *c).collect();
                format!(
                    "SELECT {} FROM {} ORDER BY {}",
                    cols.join(", "),
                    t.name,
                    t.pk.join(", ")
                )
            })
            .collect(),
        clear: ALL
            .iter()
            .map(|t| format!("DELETE FROM {}", t.name))
            .collect(),
    }
}

/// The statements of a dialect.
pub fn statements(d: Dialect) -> &'static Statements {
    static SQLITE: OnceLock<Statements> = OnceLock::new();
    static PG: OnceLock<Statements> = OnceLock::new();
    match d {
        Dialect::Sqlite => SQLITE.get_or_init(|| build(Dialect::Sqlite)),
        Dialect::Postgres => PG.get_or_init(|| build(Dialect::Postgres)),
    }
}

/// The position of a table in [`ALL`].
pub fn table_index(t: &Table) -> usize {
    ALL.iter().position(|x| x.name == t.name).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_names_its_key_columns() {
        for t in ALL {
            assert!(t.col(t.record_col) < t.cols.len(), "{}", t.name);
            for k in t.pk {
                assert!(t.col(k) < t.cols.len(), "{}.{k}", t.name);
            }
        }
        assert!(ddl(Dialect::Postgres).contains("BYTEA"));
        assert!(insert_postgres(&ANSWERS).contains("UNNEST($1::BYTEA[]"));
    }
}
