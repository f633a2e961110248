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
use followup_domain::questionnaire::AnswerValue;
use followup_domain::schedule::VisitState;
use followup_e2e::*;
use followup_testkit::workload::{bench_enrolment, bench_procedure};

/// Procedure → (patient, date, the set of done visits, sorted).
type Worklist = BTreeMap<RecordId, (RecordId, NaiveDate, Vec<String>)>;

fn sorted(list: &str) -> Vec<String> {
    let mut v: Vec<String> = list
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    v.sort();
    v.dedup();
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

fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

/// Answer `visit` of `procedure` on `d`; submitted unless `draft`.
fn answer_visit(
    d: &Device,
    patient: RecordId,
    procedure: RecordId,
    visit: &str,
    draft: bool,
) -> RecordId {
    let r = d
        .start_response(patient, "clinician-followup", Some(procedure), Some(visit))
        .unwrap();
    d.save_answers(r, &clinician_followup(&days_ago(1)))
        .unwrap();
    if !draft {
        d.submit_response(r).unwrap();
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cold_work_list_is_right_after_a_sync_brings_records() {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("Clinica Alfa").await;
    let t1 = reg.clinic_tablet(clinic, "tablet 1").await;
    let t2 = reg.clinic_tablet(clinic, "tablet 2").await;
    let as_of = today();

    // Tablet 1: eight patients treated 8 to 43 days ago; three day-7 visits answered, one
    // month-1 visit answered, one answer left as a draft.
    let mut patients = Vec::new();
    for k in 0..8u64 {
        let patient = t1.enrol_patient(&bench_enrolment(k as usize)).unwrap();
        let procedure = t1
            .record_procedure(patient, &{
                let mut p = bench_procedure(0);
                p.date = days_ago(8 + 5 * k);
                p
            })
            .unwrap();
        patients.push((patient, procedure));
    }
    let mut submitted = Vec::new();
    for &k in &[0usize, 1, 2] {
        submitted.push(answer_visit(&t1, patients[k].0, patients[k].1, "d7", false));
    }
    submitted.push(answer_visit(&t1, patients[7].0, patients[7].1, "m1", false));
    let draft = answer_visit(&t1, patients[3].0, patients[3].1, "d7", true);
    let on_t1 = table_equals_scan(&t1, "tablet 1 after capture");
    assert_eq!(on_t1.len(), 8);
    assert_eq!(on_t1[&patients[0].1].2, vec!["d7".to_string()]);
    assert_eq!(
        on_t1[&patients[3].1].2,
        Vec::<String>::new(),
        "a draft answers nothing"
    );
    assert_eq!(on_t1[&patients[7].1].2, vec!["m1".to_string()]);
    let expected = due_list(&t1, as_of);
    assert!(!expected.is_empty());

    // Tablet 2 receives everything by sync; its first listing reads the table.
    sync_until_quiet(&[&t1, &t2]).await;
    assert_eq!(table_equals_scan(&t2, "tablet 2 after the sync"), on_t1);
    assert_eq!(due_list(&t2, as_of), expected);
    let cold = Device::open(&t2.path, key()).unwrap();
    assert_eq!(
        due_list(&cold, as_of),
        expected,
        "a cold listing on tablet 2"
    );
    drop(cold);

    // Tablet 2 answers a month-1 visit on the list; tablet 1 submits its draft and amends a
    // response. Each gets the other's by sync.
    // Not the month-1 visit of the patient whose day-7 draft tablet 1 submits meanwhile: the
    // checks below tell the two apart (which month-1 visit comes first depends on the date).
    let listed = expected
        .iter()
        .find(|(procedure, visit, _)| visit == "m1" && *procedure != patients[3].1)
        .cloned()
        .expect("a month-1 visit is due");
    let (patient, _) = patients
        .iter()
        .find(|(_, procedure)| *procedure == listed.0)
        .unwrap();
    answer_visit(&t2, *patient, listed.0, "m1", false);
    t1.submit_response(draft).unwrap();
    t1.amend_response(
        submitted[0],
        &answers(&[("symptom_pain", AnswerValue::Int(6))]),
        "wrong entry",
    )
    .unwrap();
    let on_t2 = table_equals_scan(&t2, "tablet 2 after its own answer");
    assert!(on_t2[&listed.0].2.contains(&"m1".to_string()));
    let on_t1 = table_equals_scan(&t1, "tablet 1 after its submission and amendment");
    assert_eq!(on_t1[&patients[3].1].2, vec!["d7".to_string()]);
    sync_until_quiet(&[&t1, &t2, &t1]).await;
    let both = table_equals_scan(&t1, "tablet 1 after the sync back");
    assert_eq!(table_equals_scan(&t2, "tablet 2 after the sync back"), both);
    assert_eq!(both[&patients[3].1].2, vec!["d7".to_string()]);
    assert!(both[&listed.0].2.contains(&"m1".to_string()));
    let after = due_list(&t1, as_of);
    assert!(!after.contains(&listed), "the answered visit left the list");
    assert_eq!(after.len(), expected.len() - 1);
    assert_eq!(due_list(&t2, as_of), after);
    for path in [&t1.path, &t2.path] {
        let cold = Device::open(path, key()).unwrap();
        assert_eq!(due_list(&cold, as_of), after, "a cold listing");
    }
}
