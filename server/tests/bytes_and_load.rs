//! Wire-size figures against the brief's budget, and many devices syncing at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

/// The built-in definitions a new registry publishes (every device pulls them).
const DEFS: usize = followup_domain::definitions::builtin_definitions().len();

use common::*;
use followup_domain::ids::RecordId;
use followup_domain::protocol::*;

/// The benchmark workload: 1 clinic, 300 patients, 1,000 50-answer responses; then 10 of them
/// edited (3 answers each). Budget: ≤ 150 KB and ≤ 6 KB on the wire (request + response).
#[tokio::test]
async fn sync_bytes_for_the_benchmark_workload() {
    // Bytes, not speed, are measured here: a debug build on a loaded machine may take longer
    // than the default push time budget for 1,000 responses, which would split the push.
    let s = start_with(|c| c.push_time_budget_secs = 600).await;
    let clinic = s.create_clinic("Clinic A").await;
    let mut dev = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    dev.max_pull_bytes = 8 << 20;
    let patients: Vec<RecordId> = (0..300).map(|_| dev.enrolment()).collect();
    dev.sync(&s).await;

    let ids: Vec<RecordId> = (0..1000u64)
        .map(|i| dev.response_50(patients[(i as usize * 7) % 300], i))
        .collect();
    let (req, _) = dev.build_request();
    let raw_push = req.push_bytes();
    let r = dev.sync_once(&s).await;
    assert!(!r.more);
    assert!(
        r.results
            .iter()
            .all(|x| *x == PushResult::Accepted { server_heads: None }),
        "{:?}",
        r.results
            .iter()
            .find(|x| **x != PushResult::Accepted { server_heads: None })
    );
    let push_total = dev.last_request_bytes + dev.last_response_bytes;
    println!(
        "push 1000 new 50-answer responses: raw automerge {raw_push} B; request {} B + response {} B = {push_total} B on the wire (one round trip)",
        dev.last_request_bytes, dev.last_response_bytes
    );
    assert!(push_total <= 150_000, "{push_total} B > 150 KB");

    for (k, id) in ids.iter().step_by(100).enumerate() {
        dev.edit_response(*id, k as u64 + 11);
    }
    let r = dev.sync_once(&s).await;
    assert_eq!(r.results.len(), 10);
    let changed_total = dev.last_request_bytes + dev.last_response_bytes;
    println!(
        "push 10 changed responses (3 answers each) in a store of 1000: request {} B + response {} B = {changed_total} B",
        dev.last_request_bytes, dev.last_response_bytes
    );
    assert!(changed_total <= 6_000, "{changed_total} B > 6 KB");

    // A nothing-changed sync.
    dev.sync_once(&s).await;
    println!(
        "nothing-changed sync: request {} B + response {} B",
        dev.last_request_bytes, dev.last_response_bytes
    );

    // A fresh device pulling everything (informational).
    let mut fresh = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    fresh.max_pull_bytes = 8 << 20;
    let pages = fresh.sync(&s).await;
    println!(
        "fresh device pulling 1301 documents and the built-in definitions: {} round trip(s), last response {} B",
        pages.len(),
        fresh.last_response_bytes
    );
    assert_eq!(fresh.docs.len(), 1301 + DEFS);
}

/// Hundreds of devices syncing at once (the brief: no error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_devices_sync_at_once() {
    let s = std::sync::Arc::new(start().await);
    // 20 clinics with 10 tablets each.
    let mut clinics = Vec::new();
    for c in 0..20 {
        clinics.push(s.create_clinic(&format!("Clinic {c}")).await);
    }
    let mut devices = Vec::new();
    for i in 0..200 {
        devices.push(
            s.enrol(EnrolmentGrant::ClinicDevice {
                clinic: clinics[i % 20],
            })
            .await,
        );
    }
    let mut tasks = Vec::new();
    for (i, mut d) in devices.into_iter().enumerate() {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let p = d.enrolment();
            for k in 0..3 {
                d.response_50(p, (i * 10 + k) as u64);
            }
            d.max_pull_bytes = 256 * 1024;
            d.sync(&s).await;
            assert!(d.docs.values().all(|x| x.rejected.is_none()));
            d
        }));
    }
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.unwrap());
    }
    let stats = s.stats().await;
    assert_eq!(stats.documents, (DEFS + 20 + 200 * 4) as u64);
    assert_eq!(stats.rejections, 0);
    // Every device converges on its whole clinic: the clinic record and 10 tablets' records.
    for d in done.iter_mut().take(20) {
        d.sync(&s).await;
        assert_eq!(d.docs.len(), DEFS + 1 + 10 * 4);
    }
    assert!(s.verify_audit().await.ok);
}
