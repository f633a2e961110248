//! The work list table must always equal what a full scan of the `docs` index gives.

use std::collections::{BTreeMap, HashMap};

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use chrono::NaiveDate;
use proptest::prelude::*;
use rusqlite::Connection;

use super::super::{DocMeta, KeySource, Query, Store};
use followup_domain::ids::RecordId;
use followup_domain::model::RecordKind;

/// Procedure → (patient, date, done visits sorted).
type Worklist = BTreeMap<RecordId, (RecordId, NaiveDate, Vec<String>)>;

fn key() -> KeySource {
    KeySource::passphrase_with_iterations("pw", 1_000)
}

fn from_table(store: &Store) -> Worklist {
    let mut out = Worklist::new();
    store
        .for_each_worklist_row(|r| {
            let mut done: Vec<String> = r
                .done
                .split(',')
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect();
            let n = done.len();
            done.sort();
            done.dedup();
            assert_eq!(done.len(), n, "each visit once: {}", r.done);
            let old = out.insert(r.procedure, (r.patient, r.date, done));
            assert!(old.is_none(), "one row per procedure");
        })
        .unwrap();
    out
}

/// What the table must hold, from the index alone.
fn from_scan(store: &Store) -> Worklist {
    let mut done: HashMap<RecordId, Vec<String>> = HashMap::new();
    for r in store
        .list(&Query {
            kind: Some(RecordKind::Response),
            status: Some("submitted".into()),
            ..Default::default()
        })
        .unwrap()
    {
        if let (Some(s), Some(v)) = (r.subject, r.visit) {
            done.entry(s).or_default().push(v);
        }
    }
    store
        .list(&Query {
            kind: Some(RecordKind::Procedure),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .filter_map(|p| {
            let mut d = done.get(&p.id).cloned().unwrap_or_default();
            d.sort();
            d.dedup();
            Some((p.id, (p.patient?, p.date?, d)))
        })
        .collect()
}

fn tiny_doc(n: u64) -> Automerge {
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put(ROOT, "n", n).unwrap();
    tx.commit();
    doc
}

fn day(n: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 1, 6).unwrap() + chrono::Days::new(n.unsigned_abs())
}

/// One write to the store, in terms of small pools of ids so that writes collide.
#[derive(Debug, Clone)]
enum Op {
    /// Save the index entry of document `doc` (full save when `full`).
    Save {
        doc: usize,
        kind: u8,
        patient: Option<usize>,
        date: Option<i64>,
        status: Option<u8>,
        visit: Option<u8>,
        subject: Option<usize>,
        full: bool,
    },
    /// Delete document `doc`.
    Delete { doc: usize },
}

const DOCS: usize = 10;
const PATIENTS: usize = 3;
const KINDS: [RecordKind; 3] = [
    RecordKind::Procedure,
    RecordKind::Response,
    RecordKind::AdverseEvent,
];
const STATUSES: [&str; 3] = ["draft", "submitted", "open"];
const VISITS: [&str; 3] = ["d7", "m1", "m3"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            0..DOCS,
            0..KINDS.len() as u8,
            proptest::option::weighted(0.9, 0..PATIENTS),
            proptest::option::weighted(0.9, 0i64..60),
            proptest::option::weighted(0.9, 0..STATUSES.len() as u8),
            proptest::option::weighted(0.8, 0..VISITS.len() as u8),
            // Subjects point into the same pool (some are procedures, some not, some absent).
            proptest::option::weighted(0.8, 0..DOCS + 2),
            any::<bool>(),
        )
            .prop_map(|(doc, kind, patient, date, status, visit, subject, full)| Op::Save {
                doc,
                kind,
                patient,
                date,
                status,
                visit,
                subject,
                full,
            }),
        1 => (0..DOCS).prop_map(|doc| Op::Delete { doc }),
    ]
}

fn apply(store: &Store, ids: &[RecordId], patients: &[RecordId], clinic: RecordId, op: &Op) {
    match *op {
        Op::Save {
            doc,
            kind,
            patient,
            date,
            status,
            visit,
            subject,
            full,
        } => {
            let meta = DocMeta {
                id: ids[doc],
                kind: KINDS[usize::from(kind)],
                clinic,
                patient: patient.map(|p| patients[p]),
                date: date.map(day),
                status: status.map(|s| STATUSES[usize::from(s)].to_string()),
                visit: visit.map(|v| VISITS[usize::from(v)].to_string()),
                subject: subject.map(|s| ids[s]),
            };
            let body = tiny_doc(doc as u64);
            if full {
                store.put_doc(&meta, &body).unwrap();
            } else {
                store.save_doc(&meta, &body).unwrap();
            }
        }
        Op::Delete { doc } => {
            store.delete_doc(&ids[doc]).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// After any sequence of saves (new documents, changed kind, patient, date, status, visit or
    /// subject; a response submitted, withdrawn or moved to another procedure; a procedure
    /// arriving after its responses) and deletions, the table equals the full scan.
    #[test]
    fn the_table_never_drifts_from_the_index(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path().join("s.db"), key()).unwrap();
        let ids: Vec<RecordId> = (0..DOCS + 2).map(|_| RecordId::random()).collect();
        let patients: Vec<RecordId> = (0..PATIENTS).map(|_| RecordId::random()).collect();
        let clinic = RecordId::random();
        for (n, op) in ops.iter().enumerate() {
            apply(&store, &ids, &patients, clinic, op);
            prop_assert_eq!(from_table(&store), from_scan(&store), "after write {}: {:?}", n, op);
        }
    }
}

/// A fixed scenario with the cases the property test may miss by chance.
#[test]
fn submit_amend_move_and_delete_a_response() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path().join("s.db"), key()).unwrap();
    let (clinic, patient) = (RecordId::random(), RecordId::random());
    let (proc1, proc2, resp) = (RecordId::random(), RecordId::random(), RecordId::random());
    let procedure = |id, date| DocMeta {
        id,
        kind: RecordKind::Procedure,
        clinic,
        patient: Some(patient),
        date: Some(day(date)),
        status: None,
        visit: None,
        subject: None,
    };
    let response = |subject, status: &str, visit: &str| DocMeta {
        id: resp,
        kind: RecordKind::Response,
        clinic,
        patient: Some(patient),
        date: Some(day(9)),
        status: Some(status.into()),
        visit: Some(visit.into()),
        subject: Some(subject),
    };
    let done = |store: &Store, p: RecordId| from_table(store).get(&p).map(|r| r.2.clone());
    // A response that arrives (by sync) before its procedure counts once the procedure comes.
    store
        .save_doc(&response(proc1, "submitted", "d7"), &tiny_doc(1))
        .unwrap();
    assert_eq!(done(&store, proc1), None);
    store.save_doc(&procedure(proc1, 0), &tiny_doc(2)).unwrap();
    store.save_doc(&procedure(proc2, 3), &tiny_doc(3)).unwrap();
    assert_eq!(done(&store, proc1), Some(vec!["d7".to_string()]));
    // Its visit amended.
    store
        .save_doc(&response(proc1, "submitted", "m1"), &tiny_doc(1))
        .unwrap();
    assert_eq!(done(&store, proc1), Some(vec!["m1".to_string()]));
    // Moved to another procedure.
    store
        .save_doc(&response(proc2, "submitted", "m1"), &tiny_doc(1))
        .unwrap();
    assert_eq!(done(&store, proc1), Some(vec![]));
    assert_eq!(done(&store, proc2), Some(vec!["m1".to_string()]));
    // Back to a draft (a rollback of a rejected submission).
    store
        .save_doc(&response(proc2, "draft", "m1"), &tiny_doc(1))
        .unwrap();
    assert_eq!(done(&store, proc2), Some(vec![]));
    store
        .save_doc(&response(proc2, "submitted", "m1"), &tiny_doc(1))
        .unwrap();
    assert_eq!(done(&store, proc2), Some(vec!["m1".to_string()]));
    // The procedure's date changes; its done visits stay.
    store.save_doc(&procedure(proc2, 5), &tiny_doc(3)).unwrap();
    assert_eq!(from_table(&store)[&proc2].1, day(5));
    assert_eq!(done(&store, proc2), Some(vec!["m1".to_string()]));
    // Deleting the response, then the procedure.
    store.delete_doc(&resp).unwrap();
    assert_eq!(done(&store, proc2), Some(vec![]));
    store.delete_doc(&proc2).unwrap();
    assert_eq!(done(&store, proc2), None);
    assert_eq!(from_table(&store), from_scan(&store));
}

/// The store as the previous version left it: no table, no triggers.
fn strip_worklist(conn: &Connection) {
    conn.execute_batch(
        "DROP TRIGGER worklist_docs_insert; DROP TRIGGER worklist_docs_update; \
         DROP TRIGGER worklist_docs_delete; DROP TABLE worklist;",
    )
    .unwrap();
}

#[test]
fn a_store_from_before_the_table_migrates_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = Store::create(&path, key()).unwrap();
    let ids: Vec<RecordId> = (0..DOCS + 2).map(|_| RecordId::random()).collect();
    let patients: Vec<RecordId> = (0..PATIENTS).map(|_| RecordId::random()).collect();
    let clinic = RecordId::random();
    let save = |doc: usize, kind: u8, status: u8, visit: u8, subject: usize| Op::Save {
        doc,
        kind,
        patient: Some(doc % PATIENTS),
        date: Some(doc as i64),
        status: Some(status),
        visit: Some(visit),
        subject: Some(subject),
        full: false,
    };
    // Three procedures, responses to them (submitted and draft), an adverse event.
    for op in [
        save(0, 0, 2, 0, 11),
        save(1, 0, 2, 0, 11),
        save(2, 0, 2, 0, 11),
        save(3, 1, 1, 0, 0),
        save(4, 1, 1, 1, 0),
        save(5, 1, 0, 2, 0),
        save(6, 1, 1, 2, 1),
        save(7, 2, 2, 0, 1),
    ] {
        apply(&store, &ids, &patients, clinic, &op);
    }
    let expected = from_scan(&store);
    assert_eq!(expected.len(), 3);
    assert_eq!(
        expected[&ids[0]].2,
        vec!["d7".to_string(), "m1".to_string()]
    );
    drop(store);

    // Remove the table and write as an older app would (no triggers): submit the draft.
    let conn = Connection::open(&path).unwrap();
    strip_worklist(&conn);
    conn.execute(
        "UPDATE docs SET status = 'submitted' WHERE id = ?1",
        [ids[5].as_bytes().as_slice()],
    )
    .unwrap();
    drop(conn);

    let store = Store::open(&path, key()).unwrap();
    let migrated = from_table(&store);
    assert_eq!(migrated, from_scan(&store));
    assert_eq!(
        migrated[&ids[0]].2,
        vec!["d7".to_string(), "m1".to_string(), "m3".to_string()],
        "the back-fill saw the write made without the triggers"
    );
    // The triggers are back: later writes keep the table current.
    apply(&store, &ids, &patients, clinic, &save(8, 0, 2, 0, 11));
    apply(&store, &ids, &patients, clinic, &save(9, 1, 1, 1, 8));
    assert_eq!(from_table(&store), from_scan(&store));
    assert_eq!(from_table(&store)[&ids[8]].2, vec!["m1".to_string()]);
    drop(store);

    // Opening again does not migrate again.
    let mut conn = Connection::open(&path).unwrap();
    assert!(!super::ensure(&mut conn).unwrap());
    // A partly removed schema (one trigger gone) is rebuilt whole.
    conn.execute_batch("DROP TRIGGER worklist_docs_delete;")
        .unwrap();
    assert!(super::ensure(&mut conn).unwrap());
    drop(conn);
    let store = Store::open(&path, key()).unwrap();
    store.delete_doc(&ids[9]).unwrap();
    assert_eq!(from_table(&store), from_scan(&store));
    assert_eq!(from_table(&store)[&ids[8]].2, Vec::<String>::new());
}

#[test]
fn a_writer_that_knows_nothing_of_the_table_keeps_it_current() {
    // The triggers live in the file: an older build of the app (or any SQLite client) writing
    // the index updates the table too.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = Store::create(&path, key()).unwrap();
    let ids: Vec<RecordId> = (0..DOCS + 2).map(|_| RecordId::random()).collect();
    let patients: Vec<RecordId> = (0..PATIENTS).map(|_| RecordId::random()).collect();
    let clinic = RecordId::random();
    apply(
        &store,
        &ids,
        &patients,
        clinic,
        &Op::Save {
            doc: 0,
            kind: 0,
            patient: Some(0),
            date: Some(1),
            status: None,
            visit: None,
            subject: None,
            full: false,
        },
    );
    apply(
        &store,
        &ids,
        &patients,
        clinic,
        &Op::Save {
            doc: 1,
            kind: 1,
            patient: Some(0),
            date: Some(9),
            status: Some(0),
            visit: Some(0),
            subject: Some(0),
            full: false,
        },
    );
    assert_eq!(from_table(&store)[&ids[0]].2, Vec::<String>::new());
    let conn = Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE docs SET status = 'submitted' WHERE id = ?1",
        [ids[1].as_bytes().as_slice()],
    )
    .unwrap();
    drop(conn);
    assert_eq!(from_table(&store)[&ids[0]].2, vec!["d7".to_string()]);
    assert_eq!(from_table(&store), from_scan(&store));
}
