//! Replays the fuzz corpus (`fuzz/corpus/<target>/*`, seeded in the repository, grown by
//! `cargo fuzz run`) through the same harnesses as the fuzz targets
//! (`followup_server::fuzzing`), so every test run covers them even without cargo-fuzz.
//! `FOLLOWUP_WRITE_FUZZ_SEEDS=1` (re)writes the built-in seeds into the corpus directories.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ReadDoc, ROOT};
use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::model::{new_record, AdverseEvent, AeOutcome, Author, Reporter};
use followup_domain::protocol::{encode_body, PushDoc, SyncRequest};
use followup_server::fuzzing;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Seeds that reach deep: a real sync request, a real change to the harness's base record, a
/// saved document, the JSON bodies.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let device = DeviceId([7; 16]);
    let (clinic, patient, id) = (RecordId([1; 16]), RecordId([2; 16]), RecordId([3; 16]));
    let body = AdverseEvent {
        reporter: Reporter::Patient,
        category: "fever".into(),
        onset: "2025-01-02".into(),
        severity: 2,
        seriousness: vec![],
        outcome: AeOutcome::Recovering,
        description: "x".into(),
        procedure: None,
        answers: Default::default(),
    };
    let author = Author {
        device: Some(device),
        time: 0,
        user: None,
    };
    let doc = new_record(author, id, clinic, Some(patient), &body).unwrap();
    let mut edit = AutoCommit::load(&doc.save())
        .unwrap()
        .with_actor(device.actor());
    let b = edit.get(ROOT, "body").unwrap().unwrap().1;
    edit.put(&b, "description", "worse at night").unwrap();
    edit.put(&b, "severity", 3_i64).unwrap();
    edit.commit();
    let change = edit.get_last_local_change().unwrap().raw_bytes().to_vec();
    match target {
        "sync_body" => vec![
            encode_body(&SyncRequest::new(0, 1 << 20, vec![])).unwrap(),
            encode_body(&SyncRequest::new(
                42,
                1 << 20,
                vec![PushDoc {
                    doc: id,
                    data: change,
                }],
            ))
            .unwrap(),
        ],
        "push_path" => vec![change],
        "document_load" => vec![doc.save(), edit.save()],
        "admin_json" => vec![
            br#"{"code":"ABCD-EFGH-JKMN","public_key":"O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=","label":"tablet"}"#.to_vec(),
            br#"{"name":"Clinica","country":"pt"}"#.to_vec(),
            br#"{"role":"patient_device","patient":"02020202020202020202020202020202","expires_in_secs":60}"#.to_vec(),
        ],
        _ => vec![],
    }
}

fn replay(target: &str, harness: fn(&[u8])) {
    let dir = corpus_dir(target);
    let seeds = seeds(target);
    if std::env::var_os("FOLLOWUP_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), s).unwrap();
        }
    }
    let mut n = 0;
    for s in &seeds {
        harness(s);
        n += 1;
    }
    // The corpus grown by `cargo fuzz run` (committed after `cargo fuzz cmin`), when present.
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries {
            let path = e.unwrap().path();
            if path.is_file() {
                harness(&std::fs::read(&path).unwrap());
                n += 1;
            }
        }
    }
    assert!(
        n >= seeds.len() && !seeds.is_empty(),
        "no seed for {target}"
    );
}

#[test]
fn sync_body_corpus() {
    replay("sync_body", fuzzing::sync_body);
}

#[test]
fn push_path_corpus() {
    replay("push_path", fuzzing::push_path);
}

#[test]
fn document_load_corpus() {
    replay("document_load", fuzzing::document_load);
}

#[test]
fn admin_json_corpus() {
    replay("admin_json", fuzzing::admin_json);
}
