//! `followup bench`: the sync and capture benchmark on the brief's generated workload
//! ([`followup_testkit::workload`]).
//!
//! One clinic with 300 patients (one procedure each) is set up and synced first, then:
//!
//! * **push N new**: N submitted `bench-50` responses (50 answers each) are saved — each save
//!   timed, giving the capture p50/p99 — and pushed in one sync;
//! * **push K changed**: K of them get 3 answers changed (one integer, one boolean, one
//!   sentence) and are pushed in one sync, in a store of N;
//! * for each: HTTP round trips, bytes up and down on the wire, the raw Automerge change bytes
//!   and their zstd-compressed size, the wall time on loopback, and the **modelled** time over a
//!   64 kbit/s link with a 500 ms round trip:
//!   `(round trips + 1 for the TCP connection) × 0.5 s + (bytes up + bytes down) / 8,000 B/s`;
//! * optionally a backlog of `--link-n` further responses synced through
//!   [`followup_testkit::linksim`] at 64 kbit/s / 500 ms, measured, beside the model's figure;
//! * store open with a device key, and the due-list query over the generated store.

use std::time::{Duration, Instant};

use followup_device::crypto::{KeySource, StaticKeyProvider};
use followup_device::device::Device;
use followup_device::sync::{SyncClient, SyncOptions, SyncReport};
use followup_domain::ids::RecordId;
use followup_domain::protocol::{
    compress_with_level, join_changes, EnrolmentGrant, ZSTD_LEVEL_DEVICE,
};
use followup_domain::schedule::VisitState;
use followup_server::{Config, Server};
use followup_testkit::shaper::{Shaper, ShaperConfig};
use followup_testkit::workload::{self, Rng, BENCH_ITEMS, BENCH_PATIENTS};
use serde::Serialize;

use crate::args::BenchArgs;
use crate::device_cmd;
use crate::error::CliError;
use crate::output;

/// The modelled link: bytes per second each way and round-trip time.
pub const LINK_BYTES_PER_SEC: f64 = 8_000.0;
pub const LINK_RTT_SECS: f64 = 0.5;

/// Modelled time of a sync over 64 kbit/s with a 500 ms round trip: one round trip to open the
/// TCP connection, one per HTTP exchange, and every byte at 8,000 B/s.
pub fn modelled_secs(round_trips: u32, bytes_up: u64, bytes_down: u64) -> f64 {
    f64::from(round_trips + 1) * LINK_RTT_SECS + (bytes_up + bytes_down) as f64 / LINK_BYTES_PER_SEC
}

/// Figures of one measured sync.
#[derive(Debug, Clone, Serialize)]
pub struct SyncFigures {
    /// Documents pushed.
    pub documents: u64,
    pub round_trips: u32,
    pub attempts: u32,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Raw Automerge change bytes pushed.
    pub change_bytes: u64,
    /// Those changes compressed with zstd (the device's level).
    pub change_bytes_zstd: u64,
    /// Wall time on loopback, milliseconds.
    pub loopback_ms: f64,
    /// Modelled time over 64 kbit/s + 500 ms round trip, seconds.
    pub modelled_64kbit_s: f64,
}

/// A push of N new responses, saved through the public path (`device fill`: validate, start,
/// save, submit), measured through the TCP link shaper of `followup_testkit::shaper`.
#[derive(Debug, Clone, Serialize)]
pub struct ShapedFigures {
    /// The link: "64 kbit/s, 500 ms RTT, set-up charged" and its resets.
    pub link: String,
    pub documents: u64,
    pub runs: u32,
    /// Runs whose sync finished (the others gave up).
    pub finished: u32,
    /// Measured wall time of the sync, median and worst over finished runs, seconds.
    pub seconds_median: f64,
    pub seconds_max: f64,
    /// Bytes on the link, both directions, HTTP headers and bytes lost at resets included
    /// (median over runs).
    pub wire_bytes_median: u64,
    pub wire_bytes_max: u64,
    /// HTTP requests made (median).
    pub attempts_median: u32,
    /// Link resets during the sync (median).
    pub resets_median: u64,
}

/// Capture figures.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureFigures {
    /// Responses saved (each timed).
    pub saves: usize,
    /// Saving one 50-answer response (create + encrypt + durable write), milliseconds.
    pub save_p50_ms: f64,
    pub save_p99_ms: f64,
    /// Opening the store with a device key (median of 5), milliseconds.
    pub open_ms: f64,
    /// Records in the store opened.
    pub store_records: u64,
    /// The due-list query (overdue + due visits of every patient; median of 10), milliseconds.
    pub due_list_ms: f64,
    /// Visits the due-list returned.
    pub due_visits: usize,
}

/// Everything `followup bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub n: usize,
    pub k: usize,
    pub seed: u64,
    pub patients: usize,
    pub push_new: SyncFigures,
    pub push_changed: SyncFigures,
    /// The N-new push over the clinic link, without and with resets every 5 s.
    pub shaped: Vec<ShapedFigures>,
    pub capture: CaptureFigures,
    pub total_s: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    percentile(&v, 0.5)
}

fn figures(r: &SyncReport, documents: u64, raw: &[u8]) -> Result<SyncFigures, CliError> {
    let zstd = compress_with_level(raw, ZSTD_LEVEL_DEVICE)
        .map_err(|e| CliError::new(format!("compressing the changes: {e}")))?;
    Ok(SyncFigures {
        documents,
        round_trips: r.round_trips,
        attempts: r.attempts,
        bytes_up: r.bytes_up,
        bytes_down: r.bytes_down,
        change_bytes: raw.len() as u64,
        change_bytes_zstd: zstd.len() as u64,
        loopback_ms: ms(r.elapsed),
        modelled_64kbit_s: modelled_secs(r.round_trips, r.bytes_up, r.bytes_down),
    })
}

/// Save `n` submitted bench-50 responses as [`workload::populate_responses`] does (same seed
/// scheme), timing each save. Returns the ids and the save times.
fn save_responses(
    device: &Device,
    data: &mut workload::BenchData,
    seed: u64,
    n: usize,
    quiet: bool,
) -> Result<Vec<Duration>, CliError> {
    let mut times = Vec::with_capacity(n);
    let bar = output::bar(n as u64, "saving responses", quiet);
    workload::populate_responses_timed(device, data, seed, n, |t| {
        times.push(t);
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    Ok(times)
}

/// The raw changes of documents since the given heads (empty heads: the whole document).
fn raw_changes(
    device: &Device,
    docs: &[(RecordId, Vec<automerge::ChangeHash>)],
) -> Result<Vec<u8>, CliError> {
    let mut out = Vec::new();
    for (id, heads) in docs {
        let doc = device.load(*id)?;
        out.extend(join_changes(doc.get_changes(heads).iter()));
    }
    Ok(out)
}

/// Run `followup bench`.
pub fn run(args: &BenchArgs) -> Result<(), CliError> {
    if args.n == 0 || args.k > args.n {
        return Err(CliError::new("N must be at least 1 and K at most N")
            .hint("e.g. followup bench -n 1000 -k 10"));
    }
    let rt = crate::runtime()?;
    let mut report = rt.block_on(measure(args))?;
    if args.link_runs > 0 {
        let clinic = ShaperConfig::clinic();
        report.shaped.push(rt.block_on(shaped_push(
            args,
            clinic,
            1,
            true,
            "64 kbit/s, 500 ms RTT, set-up charged",
        ))?);
        report.shaped.push(rt.block_on(shaped_push(
            args,
            clinic.with_resets(Duration::from_secs(5)),
            args.link_runs,
            true,
            "the same, reset every 5 s",
        ))?);
        if args.compare_one_shot {
            report.shaped.push(rt.block_on(shaped_push(
                args,
                clinic.with_resets(Duration::from_secs(5)),
                args.link_runs,
                false,
                "reset every 5 s, one-shot POST (no resume)",
            ))?);
        }
    }
    if args.json {
        output::print_json(&report)
    } else {
        print_report(&report);
        Ok(())
    }
}

async fn measure(args: &BenchArgs) -> Result<BenchReport, CliError> {
    let started = Instant::now();
    let quiet = false;
    let dir = tempfile::Builder::new()
        .prefix("followup-bench-")
        .tempdir()
        .map_err(|e| CliError::new(format!("cannot create a temporary directory: {e}")))?;
    let token = hex::encode(followup_domain::ids::random_bytes::<16>());
    let server = Server::start(Config::for_tests(dir.path().join("registry"), Some(&token)))
        .await
        .map_err(|e| CliError::new(format!("the bench's server could not start: {e}")))?;
    let admin = crate::admin::connect(&server.url(), Some(&token), None)?;
    // The benchmark instrument is test support: the bench's own registry publishes it, and
    // the tablet receives it with enrolment, as it would any registry form.
    admin
        .publish_definition(workload::BENCH_50_JSON, false)
        .await?;
    let clinic = admin.create_clinic("Bench clinic", "CH").await?;
    let code = admin
        .issue_code(EnrolmentGrant::ClinicDevice { clinic }, None)
        .await?;
    let device_key = followup_domain::ids::random_bytes::<32>();
    let key = || KeySource::provider(StaticKeyProvider::new(device_key, "bench-device-key"));
    let path = dir.path().join("tablet.db");
    let device = Device::create(&path, key())?;
    let client = SyncClient::new(SyncOptions::default())?;
    client
        .enrol(&device, &server.url(), &code.code, "bench tablet")
        .await?;

    // Set-up: patients and procedures, synced before measuring.
    let spin = output::spinner(&format!("enrolling {BENCH_PATIENTS} patients"), quiet);
    let mut data = workload::populate_patients(&device, BENCH_PATIENTS)?;
    spin.finish_and_clear();
    device_cmd::sync_with_bar(&client, &device, "set-up sync", quiet).await?;

    // Push N new.
    let mut save_times = save_responses(&device, &mut data, args.seed, args.n, quiet)?;
    let new_docs: Vec<_> = data.responses.iter().map(|id| (*id, Vec::new())).collect();
    let raw_new = raw_changes(&device, &new_docs)?;
    let r_new = device_cmd::sync_with_bar(&client, &device, "push N new", quiet).await?;
    let push_new = figures(&r_new, r_new.pushed, &raw_new)?;

    // Push K changed.
    let mut rng = Rng::new(args.seed ^ 0x5EED);
    let mut edited: Vec<(RecordId, Vec<automerge::ChangeHash>)> = Vec::new();
    while edited.len() < args.k {
        let r = data.responses[rng.below(data.responses.len() as u64) as usize];
        if edited.iter().any(|(e, _)| *e == r) {
            continue;
        }
        let heads = device.load(r)?.get_heads();
        // A submitted response is corrected by an explicit amendment (the registry refuses a
        // silent rewrite); the amendment note travels with the 3 answers.
        device.amend_response(
            r,
            &workload::edit_answers(args.seed.wrapping_add(edited.len() as u64), BENCH_ITEMS),
            "corrected from the paper form",
        )?;
        edited.push((r, heads));
    }
    let raw_changed = raw_changes(&device, &edited)?;
    let r_changed = device_cmd::sync_with_bar(&client, &device, "push K changed", quiet).await?;
    let push_changed = figures(&r_changed, r_changed.pushed, &raw_changed)?;

    // Open and due-list on the generated store.
    drop(device);
    let mut opens = Vec::new();
    let mut device = None;
    for _ in 0..5 {
        drop(device.take());
        let t = Instant::now();
        let d = Device::open(&path, key())?;
        opens.push(t.elapsed());
        device = Some(d);
    }
    let device = device.ok_or_else(|| CliError::new("internal: the store was not reopened"))?;
    let store_records = device.store().count(None)?;
    let as_of = chrono::NaiveDate::from_ymd_opt(2025, 4, 15)
        .ok_or_else(|| CliError::new("internal: bad date"))?;
    let mut dues = Vec::new();
    let mut due_visits = 0;
    for _ in 0..10 {
        let t = Instant::now();
        let v = device.clinic_visits(as_of, Some(&[VisitState::Overdue, VisitState::Due]))?;
        dues.push(t.elapsed());
        due_visits = v.len();
    }
    save_times.sort();
    let capture = CaptureFigures {
        saves: save_times.len(),
        save_p50_ms: ms(percentile(&save_times, 0.5)),
        save_p99_ms: ms(percentile(&save_times, 0.99)),
        open_ms: ms(median(opens)),
        store_records,
        due_list_ms: ms(median(dues)),
        due_visits,
    };
    drop(device);
    server
        .shutdown()
        .await
        .map_err(|e| CliError::new(format!("the bench's server did not stop cleanly: {e}")))?;
    Ok(BenchReport {
        n: args.n,
        k: args.k,
        seed: args.seed,
        patients: BENCH_PATIENTS,
        push_new,
        push_changed,
        shaped: Vec::new(),
        capture,
        total_s: started.elapsed().as_secs_f64(),
    })
}

fn print_report(r: &BenchReport) {
    println!(
        "followup bench: {} patients; push of N = {} new 50-answer responses, then K = {} changed (3 answers each) in a store of N; seed {}",
        r.patients, r.n, r.k, r.seed
    );
    println!();
    let (a, b) = (&r.push_new, &r.push_changed);
    let row = |name: &str, x: String, y: String, target: &str| {
        vec![name.to_string(), x, y, target.to_string()]
    };
    let mut rows = vec![
        row(
            "documents pushed",
            a.documents.to_string(),
            b.documents.to_string(),
            "",
        ),
        row(
            "HTTP round trips",
            a.round_trips.to_string(),
            b.round_trips.to_string(),
            "≤ 2 each",
        ),
        row(
            "bytes up (wire)",
            output::bytes(a.bytes_up),
            output::bytes(b.bytes_up),
            "",
        ),
        row(
            "bytes down (wire)",
            output::bytes(a.bytes_down),
            output::bytes(b.bytes_down),
            "",
        ),
        row(
            "bytes up + down",
            output::bytes(a.bytes_up + a.bytes_down),
            output::bytes(b.bytes_up + b.bytes_down),
            "≤ 150 KB (N=1000) / ≤ 6 KB (K=10)",
        ),
        row(
            "changes, raw Automerge",
            output::bytes(a.change_bytes),
            output::bytes(b.change_bytes),
            "",
        ),
        row(
            "changes, zstd-compressed",
            output::bytes(a.change_bytes_zstd),
            output::bytes(b.change_bytes_zstd),
            "",
        ),
        row(
            "wall time, loopback",
            format!("{:.1} ms", a.loopback_ms),
            format!("{:.1} ms", b.loopback_ms),
            "",
        ),
        row(
            "modelled, 64 kbit/s + 500 ms RTT",
            format!("{:.2} s", a.modelled_64kbit_s),
            format!("{:.2} s", b.modelled_64kbit_s),
            "< 21 s (N=1000)",
        ),
    ];
    for l in &r.shaped {
        rows.push(row(
            &format!(
                "shaped: {} ({} run(s), {} finished)",
                l.link, l.runs, l.finished
            ),
            format!(
                "{:.1} s (max {:.1} s), {} on the link",
                l.seconds_median,
                l.seconds_max,
                output::bytes(l.wire_bytes_median)
            ),
            String::new(),
            "< 21 s (N=1000)",
        ));
    }
    output::print_table(
        &["sync", "push N new", "push K changed", "brief's target"],
        &rows,
    );
    println!();
    let c = &r.capture;
    output::print_table(
        &["capture", "figure", "brief's target"],
        &[
            vec![
                format!("save a 50-answer response, p50 (of {})", c.saves),
                format!("{:.3} ms", c.save_p50_ms),
                String::new(),
            ],
            vec![
                "save a 50-answer response, p99".into(),
                format!("{:.3} ms", c.save_p99_ms),
                "< 2 ms".into(),
            ],
            vec![
                format!("open the store, device key ({} records)", c.store_records),
                format!("{:.2} ms", c.open_ms),
                "< 100 ms (at 110,000 records)".into(),
            ],
            vec![
                format!("due-list query ({} visits)", c.due_visits),
                format!("{:.2} ms", c.due_list_ms),
                "< 20 ms".into(),
            ],
        ],
    );
    println!();
    println!(
        "modelled time = (round trips + 1 for the connection) × 0.5 s + (bytes up + down) / 8,000 B/s; total run {:.1} s",
        r.total_s
    );
}

/// A registry, an enrolled tablet with the bench's patients synced, and N new responses saved
/// through the public path; then one sync of them through a shaper with `config`, `runs` times
/// (each run from scratch).
async fn shaped_push(
    args: &BenchArgs,
    config: ShaperConfig,
    runs: u32,
    resumable: bool,
    label: &str,
) -> Result<ShapedFigures, CliError> {
    let mut secs = Vec::new();
    let mut wire = Vec::new();
    let mut attempts = Vec::new();
    let mut resets = Vec::new();
    let mut documents = 0;
    for run in 0..runs {
        let dir = tempfile::Builder::new()
            .prefix("followup-bench-")
            .tempdir()
            .map_err(|e| CliError::new(format!("cannot create a temporary directory: {e}")))?;
        let token = hex::encode(followup_domain::ids::random_bytes::<16>());
        let server = Server::start(Config::for_tests(dir.path().join("registry"), Some(&token)))
            .await
            .map_err(|e| CliError::new(format!("the bench's server could not start: {e}")))?;
        let admin = crate::admin::connect(&server.url(), Some(&token), None)?;
        // The benchmark instrument is test support: the bench's own registry publishes it, and
        // the tablet receives it with enrolment, as it would any registry form.
        admin
            .publish_definition(workload::BENCH_50_JSON, false)
            .await?;
        let clinic = admin.create_clinic("Bench clinic", "CH").await?;
        let code = admin
            .issue_code(EnrolmentGrant::ClinicDevice { clinic }, None)
            .await?;
        let key = KeySource::provider(StaticKeyProvider::new(
            followup_domain::ids::random_bytes::<32>(),
            "bench-device-key",
        ));
        let device = Device::create(dir.path().join("tablet.db"), key)?;
        let client = SyncClient::new(SyncOptions {
            resumable,
            ..SyncOptions::default()
        })?;
        client
            .enrol(&device, &server.url(), &code.code, "bench tablet")
            .await?;
        let data = workload::populate_patients(&device, BENCH_PATIENTS)?;
        device_cmd::sync_with_bar(&client, &device, "set-up sync", true).await?;
        fill_responses(
            &device,
            &data,
            args.seed.wrapping_add(u64::from(run)),
            args.n,
        )?;
        let shaper = Shaper::start(server.addr, config)
            .await
            .map_err(|e| CliError::new(format!("could not start the link shaper: {e}")))?;
        let mut enrolled = device
            .enrolment()
            .ok_or_else(|| CliError::new("internal: the bench device is not enrolled"))?;
        enrolled.server_url = shaper.url();
        device.set_enrolment(enrolled)?;
        let t = Instant::now();
        let r =
            device_cmd::sync_with_bar(&client, &device, &format!("shaped push, {label}"), false)
                .await;
        let elapsed = t.elapsed().as_secs_f64();
        let st = shaper.stats();
        wire.push(st.bytes());
        resets.push(st.resets);
        match r {
            Ok(r) => {
                documents = r.pushed;
                attempts.push(r.attempts);
                secs.push(elapsed);
            }
            Err(e) => eprintln!("run {run}: the sync did not finish: {e}"),
        }
        drop(device);
        let _ = server.shutdown().await;
    }
    let med_u64 = |mut v: Vec<u64>| {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    let mut sorted = secs.clone();
    sorted.sort_by(f64::total_cmp);
    let mut att = attempts.clone();
    att.sort_unstable();
    Ok(ShapedFigures {
        link: label.to_string(),
        documents,
        runs,
        finished: secs.len() as u32,
        seconds_median: sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN),
        seconds_max: sorted.last().copied().unwrap_or(f64::NAN),
        wire_bytes_median: med_u64(wire.clone()),
        wire_bytes_max: wire.iter().copied().max().unwrap_or(0),
        attempts_median: att.get(att.len() / 2).copied().unwrap_or(0),
        resets_median: med_u64(resets),
    })
}

/// Save `n` submitted bench-50 responses the way `followup device fill` does (the public path
/// the bindings expose too), spread over the patients like the workload's.
fn fill_responses(
    device: &Device,
    data: &workload::BenchData,
    seed: u64,
    n: usize,
) -> Result<(), CliError> {
    let mut rng = Rng::new(seed);
    for k in 0..n {
        let i = rng.below(data.patients.len() as u64) as usize;
        let answers = workload::bench_answers(seed.wrapping_add(k as u64), BENCH_ITEMS);
        device_cmd::fill(
            device,
            data.patients[i],
            workload::BENCH_QUESTIONNAIRE,
            data.procedures.get(i).copied(),
            // Unscheduled, as the workload's: `bench-50` answers no visit of the schedule (the
            // registry's rules refuse it for one).
            None,
            &answers,
            true,
        )?;
    }
    Ok(())
}
