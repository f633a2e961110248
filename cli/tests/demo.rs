//! `followup demo --quick --json --data DIR`: every replica converges with the server, and no
//! file under DIR other than the server's database holds any of the demo's answer texts or
//! patient attributes in plaintext.

use std::path::Path;
use std::process::{Command, Stdio};

use followup_cli::demo::PLAINTEXT_PROBES;

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn the_demo_converges_and_keeps_device_files_encrypted() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_followup"))
        .args(["demo", "--quick", "--json", "--data"])
        .arg(&data)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));

    assert_eq!(summary["converged"], true, "{summary:#}");
    for r in summary["replicas"].as_array().unwrap() {
        assert_eq!(r["differing"], 0, "{r}");
        assert_eq!(r["documents"], r["server_documents"], "{r}");
    }
    let per_device = summary["records_per_device"].as_object().unwrap();
    assert_eq!(per_device.len(), 3);
    let server_docs = summary["server_documents"].as_u64().unwrap();
    assert!(server_docs > 20, "{summary}");
    // Both tablets hold every document of the clinic; the phone only its patient's.
    let phone = per_device["KX-0417's phone"].as_u64().unwrap();
    assert!(phone > 0 && phone < server_docs);
    let conflicts = summary["conflicts_seen"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{summary}");
    assert_eq!(conflicts[0]["field"], "answers.symptom_pain");
    assert_eq!(conflicts[0]["values"].as_object().unwrap().len(), 2);
    assert!(summary["round_trips"].as_u64().unwrap() > 0);
    assert!(summary["bytes_up"].as_u64().unwrap() > 0);
    assert!(summary["bytes_down"].as_u64().unwrap() > 0);
    assert!(
        summary["bad_link"]["cuts"].as_u64().unwrap() > 0,
        "the link dropped"
    );
    assert!(
        summary["bad_link"]["attempts"].as_u64().unwrap()
            > summary["bad_link"]["round_trips"].as_u64().unwrap()
    );
    assert_eq!(summary["audit_ok"], true);
    // The clinic answered the patient's complication, she accepted the remedy from her phone and
    // the registry closed the case: nothing is left in tablet A's adjudication queue.
    assert_eq!(summary["adjudication_queue"], 0);

    // No device file holds a probe in plaintext; the server's database (a positive control
    // that the probes are really recorded) does.
    let mut all = Vec::new();
    files(&data, &mut all);
    let registry = data.join("registry");
    let (server_files, device_files): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|p| p.starts_with(&registry));
    assert!(device_files.len() >= 3, "{device_files:?}");
    for f in &device_files {
        let bytes = std::fs::read(f).unwrap();
        for probe in PLAINTEXT_PROBES {
            assert!(
                !contains(&bytes, probe),
                "{} holds {probe:?} in plaintext",
                f.display()
            );
        }
    }
    let server_bytes: Vec<u8> = server_files
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap())
        .collect();
    assert!(
        PLAINTEXT_PROBES.iter().any(|p| contains(&server_bytes, p)),
        "positive control: the server's database holds the records in the clear"
    );
}

#[test]
fn the_demo_refuses_a_data_directory_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("something"), "x").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_followup"))
        .args(["demo", "--data"])
        .arg(tmp.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not empty"), "{err}");
}
