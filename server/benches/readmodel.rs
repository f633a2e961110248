//! The read model at registry scale: fill a registry (by default 100 clinics, 10,000 patients,
//! 100,000 responses of 50 answers, 2,000 adverse events — `followup_testkit::registry`) through the
//! real sync handler, then measure
//!
//! * a 1,000-response push into the filled registry (`sync::run`, authorization, merge, commit):
//!   its wall time, and the time the read model took in it (projecting, outside the transaction,
//!   plus writing the rows, inside it), so **the share the projection adds** =
//!   read model / (push − read model);
//! * `rebuild-read-model` over the whole registry;
//! * the console's and exports' main queries (p50 / p95 of 20 runs).
//!
//! ```sh
//! cargo bench -p followup-server --bench readmodel                       # full size, SQLite
//! FOLLOWUP_BENCH_SCALE=small cargo bench -p followup-server --bench readmodel   # 1/10
//! FOLLOWUP_BENCH_DATABASE=postgres://… cargo bench -p followup-server --bench readmodel
//! FOLLOWUP_BENCH_DIR=/tmp/registry …   # keep the filled SQLite registry (reused if present)
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::model::{self, Author, DocHeader, RecordKind};
use followup_domain::protocol::{join_changes, DeviceRole, PushDoc, PushResult, SyncRequest};
use followup_server::audit;
use followup_server::authz::Principal;
use followup_server::readmodel::{metrics, query};
use followup_server::storage::{
    ClinicRow, DocWrite, EnrolmentCode, NewDevice, PostgresStorage, SqliteStorage, Storage,
};
use followup_server::sync::{self, SyncLimits};
use followup_testkit::registry::{GeneratedDoc, RegistrySizes, RegistryWorkload};

/// 2025-06-15, the fill's server clock.
const NOW_MS: i64 = 1_749_945_600_000;
const BATCH: usize = 1000;

fn push(s: &dyn Storage, p: &Principal, docs: &[GeneratedDoc], now_ms: i64) -> Duration {
    let push: Vec<PushDoc> = docs
        .iter()
        .map(|g| PushDoc {
            doc: g.id,
            data: join_changes(g.doc.get_changes(&[]).iter()),
        })
        .collect();
    let req = SyncRequest::new(s.max_seq().unwrap(), 1 << 20, push);
    let t = Instant::now();
    let resp = sync::run(s, p, &req, &SyncLimits::default(), now_ms).unwrap();
    let elapsed = t.elapsed();
    for r in &resp.results {
        assert!(matches!(r, PushResult::Accepted { .. }), "refused: {r:?}");
    }
    elapsed
}

fn clinic(s: &dyn Storage, w: &RegistryWorkload, index: usize) -> RecordId {
    let id = RecordId::random();
    let body = w.clinic_body(index);
    let doc = model::new_record(
        Author {
            device: None,
            time: NOW_MS / 1000,
            user: None,
        },
        id,
        id,
        None,
        &body,
    )
    .unwrap();
    let write = DocWrite {
        header: DocHeader {
            id,
            kind: RecordKind::Clinic,
            clinic: id,
            patient: None,
            created_by: None,
        },
        bytes: doc.save(),
        heads: doc.get_heads(),
        expected_version: None,
        device: None,
        new_changes: doc.get_heads(),
        event: audit::event::CLINIC_CREATED,
        users: Vec::new(),
        projection: None,
    };
    let row = ClinicRow {
        id,
        name: body.name.clone(),
        country: body.country.clone(),
    };
    s.create_clinic(&row, &write, NOW_MS).unwrap();
    id
}

fn tablet(s: &dyn Storage, clinic: RecordId) -> Principal {
    let mut hash = [0u8; 32];
    hash[..16].copy_from_slice(&RecordId::random().0);
    let code = EnrolmentCode {
        code_hash: hash,
        role: DeviceRole::ClinicDevice,
        clinic,
        patient: None,
        expires_at_ms: NOW_MS + 86_400_000,
    };
    s.insert_enrolment_code(&code, NOW_MS).unwrap();
    let dev = NewDevice {
        id: DeviceId::random(),
        public_key: [7; 32],
        label: Some("bench tablet".into()),
    };
    let rec = s
        .redeem_enrolment_code(&hash, &dev, NOW_MS)
        .unwrap()
        .unwrap();
    Principal::from(&rec)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or_default()
}

fn time_query<T>(name: &str, runs: usize, mut f: impl FnMut() -> T) {
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(f());
        v.push(t.elapsed());
    }
    let p50 = pct(&mut v, 0.5);
    let p95 = pct(&mut v, 0.95);
    println!(
        "  {name:<44} p50 {:>8.1} ms   p95 {:>8.1} ms",
        ms(p50),
        ms(p95)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it too: stay small then.
    let args: Vec<String> = std::env::args().collect();
    let testing = !args.iter().any(|a| a == "--bench");
    let scale = std::env::var("FOLLOWUP_BENCH_SCALE").unwrap_or_default();
    let sizes = if testing || scale == "tiny" {
        RegistrySizes {
            clinics: 3,
            patients: 60,
            responses: 300,
            adverse_events: 12,
        }
    } else if scale == "small" {
        RegistrySizes {
            clinics: 10,
            patients: 1_000,
            responses: 10_000,
            adverse_events: 200,
        }
    } else {
        RegistrySizes::default()
    };
    let w = RegistryWorkload::new(sizes, 2026);
    let tmp = tempfile::tempdir().unwrap();
    let (storage, backend): (Arc<dyn Storage>, &str) =
        match std::env::var("FOLLOWUP_BENCH_DATABASE") {
            Ok(url) if !url.is_empty() => (
                Arc::new(PostgresStorage::connect(&url).unwrap()),
                "PostgreSQL",
            ),
            _ => {
                let dir = std::env::var("FOLLOWUP_BENCH_DIR")
                    .map(std::path::PathBuf::from)
                    .unwrap_or_else(|_| tmp.path().to_path_buf());
                (Arc::new(SqliteStorage::open(&dir).unwrap()), "SQLite")
            }
        };
    let s = &*storage;
    println!(
        "read model benchmark on {backend}: {} clinics, {} patients, {} responses, {} adverse events",
        sizes.clinics, sizes.patients, sizes.responses, sizes.adverse_events
    );

    // Fill (or reuse a kept registry).
    let plans = w.plans();
    let existing = s.stats().unwrap().clinics as usize;
    let mut principals = Vec::new();
    let t_fill = Instant::now();
    let mut push_time = Duration::ZERO;
    if existing >= sizes.clinics {
        println!("  reusing the registry already in place ({existing} clinics)");
        for row in query::clinic_stats(s, None, NaiveDate::default()).unwrap() {
            if let Some(d) = row.devices.first() {
                principals.push((
                    row.clinic,
                    Principal {
                        device: d.device,
                        role: DeviceRole::ClinicDevice,
                        clinic: row.clinic,
                        patient: None,
                    },
                ));
            }
        }
        principals.sort_by_key(|(c, _)| query::overview(s, Some(*c)).map(|o| o.patients).ok());
        principals.reverse();
    } else {
        for plan in &plans {
            let c = clinic(s, &w, plan.index);
            let p = tablet(s, c);
            let docs = w
                .clinic_docs(plan, c, p.device, NOW_MS / 1000 - 86_400 * 200)
                .unwrap();
            for chunk in docs.chunks(BATCH) {
                push_time += push(s, &p, chunk, NOW_MS);
            }
            principals.push((c, p));
            if plan.index % 10 == 9 {
                eprintln!(
                    "  filled {} clinics in {:.1} s",
                    plan.index + 1,
                    t_fill.elapsed().as_secs_f64()
                );
            }
        }
        let m = metrics::take();
        println!(
            "  fill: {:.1} s ({:.1} s in sync::run, of which read model {:.1} s = {:.0} % added)",
            t_fill.elapsed().as_secs_f64(),
            push_time.as_secs_f64(),
            (m.project_ns + m.apply_ns) as f64 / 1e9,
            100.0 * (m.project_ns + m.apply_ns) as f64
                / (push_time.as_nanos() as f64 - (m.project_ns + m.apply_ns) as f64).max(1.0)
        );
    }
    let st = s.stats().unwrap();
    println!(
        "  registry: {} documents, log seq {}",
        st.documents, st.log_seq
    );

    // A 1,000-response push into the filled registry, three rounds.
    let (c0, p0) = principals.first().cloned().expect("a clinic");
    let plan0 = &plans[0];
    let mut rounds = Vec::new();
    metrics::take();
    for round in 0..3 {
        let docs = w
            .extra_responses(
                plan0,
                c0,
                p0.device,
                round + st.log_seq as usize,
                BATCH,
                NOW_MS / 1000,
            )
            .unwrap();
        let t = push(s, &p0, &docs, NOW_MS + 1000 * round as i64);
        let m = metrics::take();
        let rm = Duration::from_nanos(m.project_ns + m.apply_ns);
        let share = rm.as_secs_f64() / (t.as_secs_f64() - rm.as_secs_f64()).max(1e-9);
        println!(
            "  push 1,000 responses, round {}: {:>7.1} ms; read model {:>6.1} ms (project {:.1} + write {:.1}) = +{:.1} %",
            round + 1,
            ms(t),
            ms(rm),
            m.project_ns as f64 / 1e6,
            m.apply_ns as f64 / 1e6,
            100.0 * share
        );
        rounds.push((t, rm, share));
    }
    rounds.sort_by(|a, b| a.2.total_cmp(&b.2));
    let (t, rm, share) = rounds[rounds.len() / 2];
    println!(
        "  => median: push {:.1} ms, read model {:.1} ms, projection adds {:.1} % (goal < 25 %)",
        ms(t),
        ms(rm),
        100.0 * share
    );

    // The queries the console and the exports make.
    let as_of = NaiveDate::from_ymd_opt(2025, 6, 15).unwrap();
    println!("  queries (20 runs each):");
    time_query("overview (all clinics)", 20, || {
        query::overview(s, None).unwrap()
    });
    time_query("visit_counts (all clinics)", 20, || {
        query::visit_counts(s, None, as_of).unwrap()
    });
    time_query("visit_counts (one clinic)", 20, || {
        query::visit_counts(s, Some(c0), as_of).unwrap()
    });
    time_query("visit_list overdue+due+missed, 100 rows", 20, || {
        query::visit_list(s, None, as_of, &query::VisitFilter::default()).unwrap()
    });
    time_query("ae_queue (all clinics)", 20, || {
        query::ae_queue(s, None, as_of, &query::AeFilter::default()).unwrap()
    });
    time_query("clinic_stats (all clinics)", 20, || {
        query::clinic_stats(s, None, as_of).unwrap()
    });
    let patient = query::rows(s, query::ExportTable::Enrolments, Some(c0), 1)
        .next()
        .and_then(|r| r.ok())
        .and_then(|r| r[0].record_id())
        .expect("a patient");
    time_query("patient_timeline", 20, || {
        query::patient_timeline(s, None, patient, as_of).unwrap()
    });
    let t_iter = Instant::now();
    let answers = query::rows(s, query::ExportTable::Answers, None, 5000).count();
    println!(
        "  iterate every answer row ({answers}), pages of 5,000: {:.1} s",
        t_iter.elapsed().as_secs_f64()
    );

    // Rebuild.
    let t = Instant::now();
    let r = s.rebuild_read_model(NOW_MS).unwrap();
    println!(
        "  rebuild-read-model: {:.1} s ({} documents, {} rows)",
        t.elapsed().as_secs_f64(),
        r.documents,
        r.rows
    );
}
