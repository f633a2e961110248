//! Issue 14, device side: a record the device cannot read is quarantined and the sync goes on
//! (before: one unreadable record failed every sync of every clinic device, for good, because
//! the cursor never moved); the device keeps the registry's signed audit head as a witness.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ReadDoc, ROOT};
use followup_device::sync;
use followup_domain::model::{self, Author, DocHeader, RecordKind};
use followup_domain::RecordId;
use followup_e2e::*;
use followup_server::storage::DocWrite;
use followup_testkit::workload::bench_enrolment;

/// Store a record on the registry directly (as an older server, or a damaged database, would
/// have), bypassing the push path's validation. `edit` may spoil it.
fn store_directly(
    reg: &Registry,
    clinic: RecordId,
    patient: RecordId,
    edit: impl FnOnce(&mut AutoCommit),
) -> RecordId {
    let id = RecordId::random();
    let doc = model::new_record(
        Author {
            device: None,
            time: 0,
            user: None,
        },
        id,
        clinic,
        Some(patient),
        &adverse_event("stored directly"),
    )
    .unwrap();
    let mut doc = AutoCommit::load(&doc.save()).unwrap();
    edit(&mut doc);
    let heads = doc.get_heads();
    let new_changes = doc.get_changes(&[]).iter().map(|c| c.hash()).collect();
    let w = DocWrite {
        header: DocHeader {
            id,
            kind: RecordKind::AdverseEvent,
            clinic,
            patient: Some(patient),
            created_by: None,
        },
        bytes: doc.save(),
        heads,
        expected_version: None,
        device: None,
        new_changes,
        event: "accepted",
        users: Vec::new(),
        projection: None,
    };
    reg.server
        .storage()
        .commit_writes(&[w], followup_server::auth::now_ms())
        .unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_record_is_quarantined_and_the_sync_goes_on() {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("Clinica").await;
    let t1 = reg.clinic_tablet(clinic, "tablet 1").await;
    let x = t1.enrol_patient(&bench_enrolment(1)).unwrap();
    t1.sync().await.unwrap();
    let bad = store_directly(&reg, clinic, x, |d| {
        let body = d.get(ROOT, "body").unwrap().unwrap().1;
        d.put(&body, "severity", "grave").unwrap();
        d.commit();
    });
    let good = store_directly(&reg, clinic, x, |_| {});

    let t2 = reg.clinic_tablet(clinic, "tablet 2").await;
    let report = t2
        .sync()
        .await
        .expect("the sync goes on past an unreadable record");
    assert_eq!(report.quarantined.len(), 1, "{report:?}");
    assert_eq!(report.quarantined[0].record, bad);
    assert!(t2.ids().contains(&good));
    assert!(t2.ids().contains(&x));
    assert!(!t2.ids().contains(&bad));
    let kept = sync::quarantined(&t2.device).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].record, bad);
    // The cursor moved: the next sync neither fails nor receives the record again.
    let again = t2.sync().await.unwrap();
    assert!(again.quarantined.is_empty(), "{again:?}");
    // The tablet that synced before goes on too.
    let r1 = t1.sync().await.unwrap();
    assert_eq!(r1.quarantined.len(), 1);
    assert!(t1.ids().contains(&good));

    // The device kept the registry's signed audit head, and it verifies.
    let witness = sync::audit_witness(&t2.device)
        .unwrap()
        .expect("a witness head");
    let v = reg
        .staff()
        .verify_audit_with_witness(&witness)
        .await
        .unwrap();
    assert!(v.ok, "{v:?}");
}
