//! End-to-end: the clinic work list read from the store's work list table (the cold listing)
//! stays equal to the full index scan, and the same on two tablets, when a sync brings
//! procedures and responses from another tablet, and after a response is submitted or amended.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use followup_device::device::Device;
use followup_device::store::Query;
use followup_device::RecordId;
use followup_domain::model::RecordKind;
use followup_domain::schedule::VisitState;
use followup_e2e::*;
use followup_testkit::workload::{self, bench_answers, edit_answers};

/// Procedure → (patient, date, done visits sorted).
type Worklist = BTreeMap<RecordId, (RecordId, NaiveDate, Vec<String>)>;

fn sorted(list: &str) -> Vec<String> {
    let mut v: Vec<String> = list
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

/// The work list table, and the same from a full scan of the index; asserts they are equal.
fn table_equals_scan(d: &Device, step: &str) -> Worklist {
    let store = d.store();
    let mut table = Worklist::new();
    store
        .for_each_worklist_row(|r| {
            table.insert(r.procedure, (r.patient, r.date, sorted(r.done)));
        })
        .unwrap();
    let done: HashMap<RecordId, String> = store
        .visit_links(RecordKind::Response, "submitted")
        .unwrap()
        .into_iter()
        .collect();
    let scan: Worklist = store
        .list(&Query {
            kind: Some(RecordKind::Procedure),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .filter_map(|p| {
            let d = sorted(done.get(&p.id).map_or("", String::as_str));
            Some((p.id, (p.patient?, p.date?, d)))
        })
        .collect();
    assert_eq!(
        table, scan,
        "{step}: the work list table drifted from the index"
    );
    table
}

fn due_list(d: &Device, as_of: NaiveDate) -> Vec<(RecordId, String, VisitState)> {
    let mut v: Vec<_> = d
        .clinic_visits(as_of, Some(&[VisitState::Due, VisitState::Overdue]))
        .unwrap()
        .into_iter()
        .map(|v| (v.procedure, v.visit.visit_id.to_string(), v.visit.state))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cold_work_list_is_right_after_a_sync_brings_records() {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("Clinica Alfa").await;
    let t1 = reg.clinic_tablet(clinic, "tablet 1").await;
    let t2 = reg.clinic_tablet(clinic, "tablet 2").await;
    // The workload's procedures fall in the 60 days from 2025-01-06.
    let as_of = NaiveDate::from_ymd_opt(2025, 4, 10).unwrap();

    let mut data = workload::populate_patients(&t1, 30).unwrap();
    workload::populate_scheduled_responses(&t1, &mut data, 7, 90).unwrap();
    let on_t1 = table_equals_scan(&t1, "tablet 1 after capture");
    assert_eq!(on_t1.len(), 30);
    assert!(on_t1.values().any(|(_, _, done)| !done.is_empty()));
    t1.sync().await.unwrap();

    // Tablet 2 receives everything by sync; its first listing reads the table.
    t2.sync().await.unwrap();
    assert_eq!(table_equals_scan(&t2, "tablet 2 after the sync"), on_t1);
    let expected = due_list(&t1, as_of);
    assert!(!expected.is_empty());
    assert_eq!(due_list(&t2, as_of), expected);
    let cold = Device::open(&t2.path, key()).unwrap();
    assert_eq!(
        due_list(&cold, as_of),
        expected,
        "a cold listing on tablet 2"
    );
    drop(cold);

    // Tablet 2 answers a due visit and amends an older response; tablet 1 gets both by sync.
    let (procedure, visit, _) = expected[0].clone();
    let patient = on_t1[&procedure].0;
    let r = t2
        .start_response(patient, "bench-50", Some(procedure), Some(&visit))
        .unwrap();
    t2.save_answers(r, &bench_answers(3, 50)).unwrap();
    t2.submit_response(r).unwrap();
    t2.amend_response(data.responses[0], &edit_answers(5, 50), "wrong entry")
        .unwrap();
    let on_t2 = table_equals_scan(&t2, "tablet 2 after its own submission");
    assert!(on_t2[&procedure].2.contains(&visit));
    let after = due_list(&t2, as_of);
    assert!(
        !after.contains(&expected[0]),
        "the answered visit left the list"
    );
    sync_until_quiet(&[&t2, &t1]).await;
    assert_eq!(
        table_equals_scan(&t1, "tablet 1 after the sync back"),
        on_t2
    );
    assert_eq!(due_list(&t1, as_of), after);
    let cold = Device::open(&t1.path, key()).unwrap();
    assert_eq!(due_list(&cold, as_of), after, "a cold listing on tablet 1");
}
