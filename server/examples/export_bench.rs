//! The export benchmark: a registry of 100,000 responses exported as CSV and as FHIR, with the
//! time and the peak resident memory of the export alone (each step runs in its own process).
//!
//! ```sh
//! cargo run --release -p followup-server --example export_bench -- populate /tmp/reg
//! cargo run --release -p followup-server --example export_bench -- export /tmp/reg csv /tmp/out-csv
//! cargo run --release -p followup-server --example export_bench -- export /tmp/reg fhir /tmp/out-fhir
//! ```
//!
//! `populate DIR [CLINICS PATIENTS_PER_CLINIC RESPONSES_PER_PATIENT]` (default 10 × 1,000 × 10:
//! 10,000 patients, 100,000 clinician follow-up responses of 28 items, 2,000 adverse events with
//! adjudications); `export DIR csv|fhir OUT [--identified]`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use followup_server::export::{
    export_from_storage, DirSink, ExportFormat, ExportRequest, Requester, ShippedDefinitions,
    StaffRole,
};
use followup_server::storage::SqliteStorage;
use followup_testkit::synthetic::{populate, Spec};

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("populate") => {
            let dir = std::path::PathBuf::from(&args[1]);
            let n = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
            let spec = Spec {
                clinics: n(2, 10),
                patients_per_clinic: n(3, 1000),
                responses_per_patient: n(4, 10),
                adverse_event_every: 5,
                ..Spec::default()
            };
            let storage = SqliteStorage::open(&dir).unwrap();
            let t = Instant::now();
            let w = populate(&storage, &spec, 1000).unwrap();
            println!(
                "populated {}: {} clinics, {} patients, {} procedures, {} responses, {} adverse events in {:.1} s",
                dir.display(),
                w.clinics.len(),
                w.patients,
                w.procedures,
                w.responses,
                w.adverse_events,
                t.elapsed().as_secs_f64()
            );
        }
        Some("export") => {
            let storage = SqliteStorage::open(std::path::Path::new(&args[1])).unwrap();
            let format = ExportFormat::from_code(&args[2]).expect("csv or fhir");
            let out = std::path::PathBuf::from(&args[3]);
            let identified = args.iter().any(|a| a == "--identified");
            let before = peak_rss_mb();
            let t = Instant::now();
            let mut sink = DirSink::create(&out).unwrap();
            let summary = export_from_storage(
                &storage,
                &ShippedDefinitions,
                &Requester {
                    who: "bench".into(),
                    role: StaffRole::RegistryAdmin,
                },
                ExportRequest {
                    format,
                    clinic: None,
                    since: None,
                    identified,
                },
                followup_server::auth::now_ms(),
                &mut sink,
            )
            .unwrap();
            let secs = t.elapsed().as_secs_f64();
            println!(
                "export {} {}: {:.1} s, peak RSS {:.0} MB (before the export: {:.0} MB), {} responses, {:.1} MB written in {} files",
                args[2],
                if identified { "identified" } else { "de-identified" },
                secs,
                peak_rss_mb(),
                before,
                summary.records.get("response").copied().unwrap_or(0),
                dir_size(&out) as f64 / 1e6,
                summary.files.len() + 1
            );
        }
        _ => eprintln!(
            "usage: export_bench populate DIR [C P R] | export DIR csv|fhir OUT [--identified]"
        ),
    }
}
