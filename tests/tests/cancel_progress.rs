//! Cancellation and progress: a sync cancelled mid-way leaves the store consistent and loses
//! nothing; the next sync finishes without resending what the server acknowledged.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use followup_device::sync::{CancelToken, SyncClient, SyncError, SyncOptions, SyncPhase};
use followup_device::Error;
use followup_e2e::*;
use followup_testkit::workload;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_sync_loses_nothing_and_progress_adds_up() {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("A").await;
    let tablet = reg.clinic_tablet(clinic, "tablet").await;
    let mut data = workload::populate_patients(&tablet, 10).unwrap();
    workload::populate_responses(&tablet, &mut data, 3, 60).unwrap();
    let total = tablet.dirty();
    assert_eq!(total, 80);

    // Small batches: several exchanges. Cancel while the third request is being sent.
    let client = SyncClient::new(SyncOptions {
        max_push_bytes: 16 * 1024,
        ..test_options()
    })
    .unwrap();
    let cancel = CancelToken::new();
    let sends = Arc::new(Mutex::new(0u32));
    let result = {
        let cancel2 = cancel.clone();
        let sends = sends.clone();
        let progress = move |p: followup_device::sync::SyncProgress| {
            if p.phase == SyncPhase::Sending {
                let mut n = sends.lock().unwrap();
                *n += 1;
                if *n == 3 {
                    cancel2.cancel();
                }
            }
        };
        tokio::time::timeout(STEP_TIMEOUT, client.sync(&tablet, &progress, &cancel))
            .await
            .unwrap()
    };
    assert!(
        matches!(result, Err(Error::Sync(SyncError::Cancelled))),
        "{result:?}"
    );
    let left = tablet.dirty();
    assert!(left > 0 && left < total, "left {left} of {total}");
    let on_server = reg.stats().await.documents;

    // The next sync pushes only what is left, and reports coherent progress.
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let report = client
        .sync(
            &tablet,
            &move |p| ev.lock().unwrap().push(p),
            &CancelToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(report.pushed as usize, left);
    assert_eq!(tablet.dirty(), 0);
    assert_eq!(
        reg.stats().await.documents - on_server,
        left as u64,
        "nothing pushed twice"
    );
    let events = events.lock().unwrap().clone();
    let last = events.last().unwrap();
    assert_eq!(last.phase, SyncPhase::Done);
    assert_eq!(last.docs_done, last.docs_total);
    assert_eq!(last.bytes_sent, report.bytes_up);
    assert_eq!(last.bytes_received, report.bytes_down);
    for phase in [
        SyncPhase::Preparing,
        SyncPhase::Sending,
        SyncPhase::Receiving,
        SyncPhase::Applying,
    ] {
        assert!(events.iter().any(|e| e.phase == phase), "no {phase:?}");
    }
    assert!(events
        .windows(2)
        .all(|w| w[0].docs_done <= w[1].docs_done && w[0].bytes_sent <= w[1].bytes_sent));

    // An unreachable server: bounded attempts, then a clear error; nothing lost.
    tablet
        .enrol_patient(&workload::bench_enrolment(99))
        .unwrap();
    let link = LinkSim::start(
        reg.server.addr,
        LinkConfig {
            cut: CutPolicy::AfterBytes(0),
            ..LinkConfig::default()
        },
    )
    .await
    .unwrap();
    tablet.set_server_url(&link.url());
    let client = SyncClient::new(SyncOptions {
        max_attempts: 3,
        ..test_options()
    })
    .unwrap();
    match tablet.sync_with(&client).await {
        Err(e @ Error::Sync(SyncError::ServerUnreachable { attempts: 3, .. })) => {
            assert!(e.to_string().contains("Nothing was lost"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(tablet.dirty(), 1);
    tablet.set_server_url(&reg.url());
    tablet.sync().await.unwrap();
    assert_eq!(tablet.dirty(), 0);
}
