//! The commands a nurse uses to find and fix things, in their words: `device show`, `drafts`,
//! `fill --resume`, `discard`, `conflicts` naming the patient and visit, `resolve`, the file
//! formats `--format` prints, the allowed choices listed for a bad value, and "next:" hints that
//! run as printed.

#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use followup_device::crypto::KeySource;
use followup_device::device::{Device, Enrolled};
use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::model::{self, Author, FollowupResponse};
use followup_domain::protocol::DeviceRole;
use followup_domain::questionnaire::AnswerValue;

const PASS: &str = "correct horse battery staple";

const PROCEDURE: &str = r#"{"date":"2026-01-05","condition":"knee osteoarthritis","procedure_type":"cell injection",
"route":"intra_articular","cell_type":"mesenchymal","source_tissue":"adipose","origin":"autologous",
"manipulation":"minimal","regulatory_status":"unregulated","trial_registration":null,
"promised_benefits":[],"cost":null}"#;

const ANSWERS: &str = r#"{"visit_date":"2026-01-12","visit_mode":"in_person","condition_status":"improved",
"symptom_primary":3,"symptom_pain":2,"symptom_fatigue":4,"ecog":"1","complications_any":false,
"hospitalised":false,"further_cell_therapy":false}"#;

/// A private copy of the binary (the target directory may be shared with other checkouts).
fn binary() -> &'static Path {
    static COPY: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    &COPY
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("followup");
            std::fs::copy(env!("CARGO_BIN_EXE_followup"), &path).unwrap();
            (dir, path)
        })
        .1
}

struct Tablet {
    dir: tempfile::TempDir,
    store: PathBuf,
}

impl Tablet {
    fn new() -> Tablet {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("tablet store.db");
        let t = Tablet { dir, store };
        ok(t.run(&["init"]));
        let d = t.open();
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
        t
    }

    fn open(&self) -> Device {
        Device::open(&self.store, KeySource::passphrase(PASS)).unwrap()
    }

    fn command(&self) -> Command {
        self.command_of(binary())
    }

    fn command_of(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_remove("FOLLOWUP_STORE")
            .env("FOLLOWUP_TEST_PBKDF2_ITERATIONS", "1000")
            .env("FOLLOWUP_PASSPHRASE", PASS)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command()
            .arg("device")
            .arg("--store")
            .arg(&self.store)
            .args(args)
            .output()
            .unwrap()
    }

    /// Run a "next:" hint exactly as printed, through the shell.
    fn run_hint(&self, output: &str) -> Output {
        let line = output
            .lines()
            .find_map(|l| l.strip_prefix("next: "))
            .unwrap_or_else(|| panic!("no next: hint in {output}"));
        let cmd = line.split("   (").next().unwrap();
        let cmd = cmd
            .strip_prefix("followup ")
            .expect("the hint is a followup command");
        self.command_of(Path::new("sh"))
            .arg("-c")
            .arg(format!("exec \"$FOLLOWUP_BIN\" {cmd}"))
            .env("FOLLOWUP_BIN", binary())
            .output()
            .unwrap_or_else(|e| panic!("{cmd}: {e}"))
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed: {}\nstdout: {}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
fn fails(o: Output) -> String {
    assert!(
        !o.status.success(),
        "should fail: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn id_in(s: &str) -> String {
    s.split(|c: char| !c.is_ascii_hexdigit())
        .find(|w| w.len() == 32)
        .unwrap_or_else(|| panic!("no record id in {s}"))
        .to_string()
}

#[test]
fn formats_choices_show_drafts_resume_and_discard() {
    let t = Tablet::new();
    // The file formats, with every code allowed.
    let f = ok(t.run(&["add-procedure", "--format"]));
    assert!(
        f.contains("intra_articular") && f.contains("mesenchymal") && f.contains("\"date\""),
        "{f}"
    );
    let f = ok(t.run(&["fill", "--questionnaire", "clinician-followup", "--format"]));
    assert!(f.contains("*ecog") && f.contains("in_person"), "{f}");
    let e = fails(t.run(&["fill", "--questionnaire", "no-such", "--format"]));
    assert!(
        e.contains("clinician-followup"),
        "lists the questionnaires: {e}"
    );

    ok(t.run(&[
        "add-patient",
        "--study-code",
        "KX-1",
        "--birth-year",
        "1961",
        "--sex",
        "female",
        "--consent-date",
        "2026-01-05",
    ]));
    let proc_file = t.write(
        "procedure.json",
        &PROCEDURE.replace("intra_articular", "knee"),
    );
    let e = fails(t.run(&["add-procedure", "--patient", "KX-1", "--file", &proc_file]));
    assert!(
        e.contains("intra_articular") && e.contains("--format"),
        "the allowed routes: {e}"
    );
    let proc_file = t.write("procedure.json", PROCEDURE);
    let out = ok(t.run(&["add-procedure", "--patient", "KX-1", "--file", &proc_file]));
    let shown = ok(t.run_hint(&out));
    assert!(
        shown.contains("knee osteoarthritis") && shown.contains("KX-1"),
        "{shown}"
    );

    // A bad choice lists the allowed ones; nothing is saved.
    let bad = t.write(
        "bad.json",
        &ANSWERS.replace("\"in_person\"", "\"by_pigeon\""),
    );
    let e = fails(t.run(&[
        "fill",
        "--patient",
        "KX-1",
        "--questionnaire",
        "clinician-followup",
        "--visit",
        "d7",
        "--answers",
        &bad,
    ]));
    assert!(
        e.contains("visit_mode") && e.contains("allowed: in_person"),
        "{e}"
    );
    assert!(ok(t.run(&["drafts"])).contains("no drafts"));

    // A draft, listed by patient and visit; resumed by its hint (ANSWERS.json in the directory).
    let part = t.write(
        "part.json",
        r#"{"visit_mode":"in_person","symptom_pain":3}"#,
    );
    ok(t.run(&[
        "fill",
        "--patient",
        "KX-1",
        "--questionnaire",
        "clinician-followup",
        "--visit",
        "d7",
        "--answers",
        &part,
        "--draft",
    ]));
    let drafts = ok(t.run(&["drafts"]));
    assert!(
        drafts.contains("KX-1") && drafts.contains("d7 (Day 7") && drafts.contains(" 2 "),
        "{drafts}"
    );
    t.write("ANSWERS.json", ANSWERS);
    let out = ok(t.run_hint(&drafts));
    assert!(out.contains("response submitted"), "{out}");
    let r = id_in(&out);
    assert!(ok(t.run(&["drafts"])).contains("no drafts"));
    let shown = ok(t.run(&["show", &r]));
    assert!(
        shown.contains("submitted") && shown.contains("symptom_burden") && shown.contains("3.00"),
        "{shown}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(t.run(&["show", &r, "--json"]))).unwrap();
    assert_eq!(json["study_code"], "KX-1");
    assert_eq!(json["scores"]["symptom_burden"], 3.0);
    // Filling the visit again is refused, and says where the first one is.
    let answers = t.write("a.json", ANSWERS);
    let e = fails(t.run(&[
        "fill",
        "--patient",
        "KX-1",
        "--questionnaire",
        "clinician-followup",
        "--visit",
        "d7",
        "--answers",
        &answers,
    ]));
    assert!(e.contains("already recorded") && e.contains(&r), "{e}");

    // Discard: a draft the registry never had is deleted.
    let out = ok(t.run(&[
        "fill",
        "--patient",
        "KX-1",
        "--questionnaire",
        "clinician-followup",
        "--answers",
        &part,
        "--draft",
    ]));
    let d = id_in(&out);
    assert!(ok(t.run(&["discard", &d])).contains("deleted"));
    assert!(ok(t.run(&["drafts"])).contains("no drafts"));
    let e = fails(t.run(&["discard", &r]));
    assert!(e.contains("not a draft"), "{e}");
}

#[test]
#[allow(clippy::result_large_err)] // the domain error, in a test closure
fn conflicts_name_the_patient_and_visit_and_the_resolve_hint_runs() {
    let t = Tablet::new();
    ok(t.run(&[
        "add-patient",
        "--study-code",
        "KX-2",
        "--birth-year",
        "1970",
        "--sex",
        "male",
        "--consent-date",
        "2026-01-05",
    ]));
    let proc_file = t.write("procedure.json", PROCEDURE);
    ok(t.run(&["add-procedure", "--patient", "KX-2", "--file", &proc_file]));
    let answers = t.write("a.json", ANSWERS);
    let out = ok(t.run(&[
        "fill",
        "--patient",
        "KX-2",
        "--questionnaire",
        "clinician-followup",
        "--visit",
        "d7",
        "--answers",
        &answers,
    ]));
    let r: RecordId = id_in(&out).parse().unwrap();
    {
        // Another tablet's concurrent edit of the same answer, merged in as a sync would.
        let d = t.open();
        let mut theirs = d.load(r).unwrap().fork();
        model::update_body::<FollowupResponse, followup_domain::Error>(
            &mut theirs,
            Author::device_now(DeviceId::random()),
            |b| {
                b.answers.insert("symptom_pain".into(), AnswerValue::Int(5));
                Ok(())
            },
        )
        .unwrap();
        d.resolve_answer(r, "symptom_pain", &AnswerValue::Int(7))
            .unwrap();
        d.save(&theirs).unwrap();
        assert_eq!(d.conflicts(r).unwrap().len(), 1);
    }
    let listed = ok(t.run(&["conflicts"]));
    assert!(
        listed.contains("patient KX-2") && listed.contains("visit d7 (Day 7"),
        "{listed}"
    );
    assert!(
        listed.contains("this device") && listed.contains("device "),
        "{listed}"
    );
    let out = ok(t.run_hint(&listed));
    assert!(out.contains("symptom_pain"), "{out}");
    assert!(ok(t.run(&["conflicts"])).contains("no conflicts"));
    let e = fails(t.run(&["resolve", &r.to_hex(), "symptom_fatigue", "3"]));
    assert!(e.contains("not in conflict"), "{e}");
}
