//! Capture and query speed on the device, against the brief's bar:
//! saving a 50-answer response (encrypted, durable) under 2 ms at p99; opening a store of
//! 10,000 patients and 100,000 responses under 100 ms; listing due follow-ups under 20 ms.
//!
//! `cargo bench -p followup-core --bench capture`. The large store is generated once (about a
//! minute) into `target/bench-data/` and reused by later runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use followup_device::crypto::{KeySource, StaticKeyProvider};
use followup_device::device::{Device, Enrolled};
use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::model::{self, Author};
use followup_domain::protocol::DeviceRole;
use followup_domain::schedule::VisitState;
use followup_testkit::workload::{self, BenchData};

const BIG_PATIENTS: usize = 10_000;
const BIG_RESPONSES: usize = 100_000;

fn key() -> KeySource {
    KeySource::provider(StaticKeyProvider::new([42; 32], "bench"))
}

fn enrolled_device(path: &Path) -> Device {
    let device = Device::create(path, key()).expect("create store");
    followup_testkit::workload::provision(&device).expect("provision definitions");
    device
        .set_enrolment(Enrolled {
            device_id: DeviceId::random(),
            role: DeviceRole::ClinicDevice,
            clinic: RecordId::random(),
            patient: None,
            server_url: "http://127.0.0.1:9".into(),
        })
        .expect("enrol");
    device
}

fn big_store() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data");
    let path = dir.join(format!(
        "store-v{}-{BIG_PATIENTS}p-{BIG_RESPONSES}r.db",
        followup_device::store::FORMAT_VERSION
    ));
    if path.exists() {
        return path;
    }
    std::fs::create_dir_all(&dir).expect("bench data dir");
    let partial = dir.join("store-building.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", partial.display()));
    }
    eprintln!("generating {BIG_PATIENTS} patients and {BIG_RESPONSES} responses (once)...");
    let device = enrolled_device(&partial);
    let mut data = workload::populate_patients(&device, BIG_PATIENTS).expect("patients");
    for chunk in 0..10 {
        workload::populate_scheduled_responses(&device, &mut data, chunk, BIG_RESPONSES / 10)
            .expect("responses");
        eprintln!("  {} responses", (chunk + 1) as usize * BIG_RESPONSES / 10);
    }
    device.store().checkpoint().expect("checkpoint");
    drop(device);
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", partial.display()));
    }
    std::fs::rename(&partial, &path).expect("rename bench store");
    path
}

fn capture(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let device = enrolled_device(&dir.path().join("capture.db"));
    let mut data: BenchData = workload::populate_patients(&device, 300).expect("patients");
    workload::populate_responses(&device, &mut data, 1, 1000).expect("responses");
    let e = device.enrolment().expect("enrolled");
    let mut group = c.benchmark_group("capture");
    let mut seed = 10_000u64;
    group.bench_function("save new 50-answer response", |b| {
        b.iter_batched(
            || {
                seed += 1;
                let body = workload::bench_response(seed, Some(data.procedures[0]), Some("m3"));
                model::new_record(
                    Author::device_now(e.device_id),
                    RecordId::random(),
                    e.clinic,
                    Some(data.patients[0]),
                    &body,
                )
                .expect("record")
            },
            |doc| device.save(&doc).expect("save"),
            BatchSize::SmallInput,
        )
    });
    let mut k = 0u64;
    group.bench_function("amend 3 answers of a submitted response", |b| {
        b.iter(|| {
            k += 1;
            let r = data.responses[(k as usize) % data.responses.len()];
            device
                .amend_response(r, &workload::edit_answers(k, 50), "corrected")
                .expect("amend")
        })
    });
    // Filling a form: the same draft saved after each answer, as an app saves while the nurse
    // types (the recently used document stays decrypted in memory).
    let draft = device
        .start_response(data.patients[1], "bench-50", Some(data.procedures[1]), None)
        .expect("draft");
    let answers = workload::bench_answers(99, 50);
    let items: Vec<_> = answers.into_iter().collect();
    let mut j = 0usize;
    group.bench_function("save one answer into the draft being filled", |b| {
        b.iter(|| {
            j += 1;
            let (k, v) = &items[j % items.len()];
            let mut one = followup_domain::questionnaire::Answers::new();
            let v = match v {
                followup_domain::questionnaire::AnswerValue::Int(i) => {
                    followup_domain::questionnaire::AnswerValue::Int((i + j as i64) % 11)
                }
                other => other.clone(),
            };
            one.insert(k.clone(), v);
            device.save_answers(draft, &one).expect("save answer")
        })
    });
    group.finish();
}

fn big(c: &mut Criterion) {
    let path = big_store();
    let mut group = c.benchmark_group("10k patients, 100k responses");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("open store (device key)", |b| {
        b.iter(|| Device::open(&path, key()).expect("open"))
    });
    let device = Device::open(&path, key()).expect("open");
    // The workload's procedures fall in the 60 days from 2025-01-06: on this date about a
    // quarter of the patients have their month-3 visit due and others their month-1 overdue.
    let as_of = NaiveDate::from_ymd_opt(2025, 4, 10).expect("date");
    let states = [VisitState::Due, VisitState::Overdue];
    group.bench_function(
        "list the clinic's due and overdue visits (first time)",
        |b| {
            b.iter_batched(
                || Device::open(&path, key()).expect("open"),
                |fresh| {
                    fresh
                        .clinic_visits(as_of, Some(&states))
                        .expect("visits")
                        .len()
                },
                BatchSize::PerIteration,
            )
        },
    );
    group.bench_function("list the clinic's due and overdue visits (again)", |b| {
        b.iter(|| {
            device
                .clinic_visits(as_of, Some(&states))
                .expect("visits")
                .len()
        })
    });
    group.finish();
}

criterion_group!(benches, capture, big);
criterion_main!(benches);
