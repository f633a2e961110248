//! `followup device fill` is all or nothing: killed (SIGKILL) at any moment, it leaves either no
//! trace or one complete, submitted response — never a draft nobody asked for — and running it
//! again afterwards never makes a second response for the same visit.
//!
//! 256 fills are each killed after a delay spread over the command's own running time (measured
//! first), then run again to completion; the store must then hold exactly one submitted response
//! per visit and no draft at all.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use followup_device::crypto::KeySource;
use followup_device::device::{Device, Enrolled};
use followup_device::store::Query;
use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::model::{
    CellType, Consent, Enrolment, FollowupResponse, Manipulation, Origin, Procedure, RecordKind,
    RegulatoryStatus, ResponseStatus, Route, Sex, SourceTissue,
};
use followup_domain::protocol::DeviceRole;

const PASS: &str = "correct horse battery staple";
const KILLS: usize = 256;

const ANSWERS: &str = r#"{"visit_date":"2026-01-12","visit_mode":"in_person","condition_status":"improved",
"symptom_primary":3,"symptom_pain":2,"symptom_fatigue":4,"ecog":"1","complications_any":false,
"hospitalised":false,"further_cell_therapy":false}"#;

/// A private copy of the binary under test: the target directory may be shared with other
/// checkouts whose builds replace `target/debug/followup` while this test runs.
fn binary() -> &'static Path {
    static COPY: std::sync::OnceLock<(tempfile::TempDir, std::path::PathBuf)> =
        std::sync::OnceLock::new();
    &COPY
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("followup");
            std::fs::copy(env!("CARGO_BIN_EXE_followup"), &path).unwrap();
            (dir, path)
        })
        .1
}

fn followup(store: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(binary());
    for v in [
        "FOLLOWUP_STORE",
        "FOLLOWUP_SERVER_URL",
        "FOLLOWUP_ADMIN_TOKEN",
    ] {
        cmd.env_remove(v);
    }
    cmd.env("FOLLOWUP_TEST_PBKDF2_ITERATIONS", "1000")
        .env("FOLLOWUP_PASSPHRASE", PASS)
        .arg("device")
        .arg("--store")
        .arg(store)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn run(store: &Path, args: &[&str]) -> Output {
    followup(store, args)
        .output()
        .expect("the followup binary runs")
}

fn procedure() -> Procedure {
    Procedure {
        date: "2026-01-05".into(),
        condition: "knee osteoarthritis".into(),
        procedure_type: "cell injection".into(),
        route: Route::IntraArticular,
        cell_type: CellType::Mesenchymal,
        source_tissue: SourceTissue::Adipose,
        origin: Origin::Autologous,
        manipulation: Manipulation::Minimal,
        regulatory_status: RegulatoryStatus::Unregulated,
        trial_registration: None,
        promised_benefits: vec![],
        cost: None,
    }
}

/// A tiny deterministic generator for the kill delays (reproducible runs).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

#[test]
fn a_killed_fill_leaves_nothing_or_one_submitted_response_and_a_rerun_adds_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("tablet.db");
    let out = run(&store, &["init"]);
    assert!(out.status.success(), "{out:?}");
    let answers = dir.path().join("answers.json");
    std::fs::write(&answers, ANSWERS).unwrap();
    let answers = answers.to_string_lossy().into_owned();

    // One patient with a procedure per kill, so each fill answers its own day-7 visit.
    let codes: Vec<String> = (0..=KILLS).map(|i| format!("K-{i:03}")).collect();
    {
        let d = Device::open(&store, KeySource::passphrase(PASS)).unwrap();
        d.set_enrolment(Enrolled {
            device_id: DeviceId::random(),
            role: DeviceRole::ClinicDevice,
            clinic: RecordId::random(),
            patient: None,
            server_url: "http://127.0.0.1:1".into(),
        })
        .unwrap();
        // The forms a registry would have sent at the first sync.
        followup_testkit::workload::provision(&d).unwrap();
        for code in &codes {
            let p = d
                .enrol_patient(&Enrolment {
                    study_code: code.clone(),
                    consent: Consent {
                        form_version: "2.1".into(),
                        date: "2026-01-05".into(),
                        scope: vec!["registry".into()],
                    },
                    birth_year: 1961,
                    sex: Sex::Female,
                    enrolled_on: "2026-01-05".into(),
                })
                .unwrap();
            d.record_procedure(p, &procedure()).unwrap();
        }
    }
    let fill = |code: &str| {
        followup(
            &store,
            &[
                "fill",
                "--patient",
                code,
                "--questionnaire",
                "clinician-followup",
                "--visit",
                "d7",
                "--answers",
                &answers,
            ],
        )
    };

    // How long a fill takes here, so the kills spread over its whole run.
    let started = Instant::now();
    let out = fill(&codes[KILLS]).output().unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "{out:?}");
    let span = took.as_micros().max(1) as u64 * 6 / 5;

    let mut rng = Lcg(0x05ee_df11);
    let (mut before_commit, mut after_commit, mut reruns_refused) = (0, 0, 0);
    for code in &codes[..KILLS] {
        let mut child = fill(code).spawn().unwrap();
        std::thread::sleep(Duration::from_micros(rng.next() % span));
        let _ = child.kill();
        let _ = child.wait();
        // Again, to completion: either it records the visit, or says it is recorded already.
        let out = fill(code).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            before_commit += 1;
        } else {
            assert!(
                err.contains("already"),
                "a rerun of fill for {code} failed for another reason: {err}"
            );
            reruns_refused += 1;
            after_commit += 1;
        }
    }
    eprintln!(
        "{KILLS} kills over {span} µs (one fill: {took:?}): {before_commit} before the commit, \
         {after_commit} after it; {reruns_refused} reruns refused as already recorded"
    );

    // Exactly one submitted response per visit, no draft anywhere.
    let d = Device::open(&store, KeySource::passphrase(PASS)).unwrap();
    let responses = d
        .store()
        .list(&Query {
            kind: Some(RecordKind::Response),
            ..Default::default()
        })
        .unwrap();
    let mut per_patient = std::collections::HashMap::<RecordId, usize>::new();
    for m in &responses {
        let r: FollowupResponse = d.get(m.id).unwrap();
        assert_eq!(
            r.status,
            ResponseStatus::Submitted,
            "a killed fill left a draft: {}",
            m.id
        );
        assert_eq!(r.answers.len(), 10, "every answer is there");
        *per_patient.entry(m.patient.unwrap()).or_default() += 1;
    }
    assert_eq!(responses.len(), KILLS + 1, "one response per visit");
    assert!(per_patient.values().all(|n| *n == 1), "{per_patient:?}");
}
