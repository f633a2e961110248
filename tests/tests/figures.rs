//! Sync figures on the benchmark workload (BRIEF.md): pushing 1,000 new 50-answer responses,
//! then 10 changed responses (3 answers each) in a store of 1,000 — HTTP round trips, bytes up
//! and down (request and response bodies), and the raw Automerge change bytes. Run with
//! `cargo test -p followup-e2e --test figures -- --nocapture` to see them. The budgets of the
//! brief are asserted (they are sizes and counts, not times).
#![allow(clippy::unwrap_used)]

use followup_device::sync::SyncReport;
use followup_e2e::*;
use followup_testkit::workload::{self, BENCH_PATIENTS, BENCH_RESPONSES};

fn line(what: &str, r: &SyncReport) {
    println!(
        "{what:<44} round trips {:>2}  up {:>8} B  down {:>7} B  raw changes up {:>9} B  down {:>9} B",
        r.round_trips, r.bytes_up, r.bytes_down, r.change_bytes_up, r.change_bytes_down
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_figures_on_the_benchmark_workload() {
    // Round trips and bytes are measured, not speed: a debug build on a loaded machine may pass
    // the default push time budget (20 s) on 1,000 responses, which splits the push in two.
    let reg = Registry::start_with(|c| c.push_time_budget_secs = 600).await;
    // Likewise the client: a request that outlives its timeout is retried, which adds round
    // trips that say how loaded the machine is, not what the protocol costs.
    let counting = followup_device::sync::SyncClient::new(followup_device::sync::SyncOptions {
        timeout: std::time::Duration::from_secs(600),
        ..test_options()
    })
    .unwrap();
    let clinic = reg.create_clinic("Bench clinic").await;
    let tablet = reg.clinic_tablet(clinic, "bench tablet").await;
    let mut data = workload::populate_patients(&tablet, BENCH_PATIENTS).unwrap();
    let setup = tablet.sync_with(&counting).await.unwrap();
    line("setup: 300 patients + procedures", &setup);

    workload::populate_responses(&tablet, &mut data, 2026, BENCH_RESPONSES).unwrap();
    let new = tablet.sync_with(&counting).await.unwrap();
    line("push 1,000 new 50-answer responses", &new);
    assert_eq!(new.pushed, 1000, "{:?}", new.rejected);
    assert!(new.round_trips <= 2, "{new:?}");
    assert!(new.bytes_up + new.bytes_down <= 150_000, "{new:?}");

    let edited = workload::edit_responses(&tablet, &data, 2026).unwrap();
    assert_eq!(edited.len(), 10);
    let changed = tablet.sync_with(&counting).await.unwrap();
    line("push 10 changed responses (store of 1,000)", &changed);
    assert_eq!(changed.pushed, 10);
    assert!(changed.round_trips <= 2, "{changed:?}");
    assert!(
        changed.bytes_up + changed.bytes_down <= 6_000,
        "{changed:?}"
    );

    let idle = tablet.sync_with(&counting).await.unwrap();
    line("nothing changed", &idle);
    assert_eq!(idle.round_trips, 1);

    let fresh = reg.clinic_tablet(clinic, "fresh tablet").await;
    let pull = fresh.sync_with(&counting).await.unwrap();
    line("fresh tablet pulls everything", &pull);
    // Every record, and the registry's published definitions.
    assert_eq!(
        pull.pulled,
        (tablet.ids().len() + followup_domain::definitions::builtin_definitions().len()) as u64
    );
    assert_eq!(fresh.snapshot(), tablet.snapshot());
}
