//! Fuzz harnesses, shared by the cargo-fuzz targets (`fuzz/`, outside the workspace) and by the
//! regular test that replays their corpus (`server/tests/fuzz_corpus.rs`), so the corpus is
//! exercised on every test run even where cargo-fuzz and a nightly toolchain are not installed.
//! Each harness must never panic, whatever the bytes; an `Err` is a fine answer.

use automerge::Automerge;
use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::model::{new_record, AdverseEvent, AeOutcome, Author, Reporter};
use followup_domain::protocol::{
    decode_sync_request, split_changes, CreateClinicRequest, DeviceRole, EnrolRequest,
    IssueEnrolmentCodeRequest,
};

use crate::authz::{check_write, Principal, WriteAttempt};
use crate::validate;

/// The sync body decoder (zstd + postcard, version first) with a 1 MiB decompression limit.
pub fn sync_body(data: &[u8]) {
    if let Ok(req) = decode_sync_request(data, 1 << 20) {
        for p in &req.push {
            let _ = split_changes(&p.data);
        }
    }
}

/// A fixed patient device and a stored adverse event it wrote: the base the push harness merges
/// into.
fn base() -> (Principal, RecordId, Automerge) {
    let device = DeviceId([7; 16]);
    let clinic = RecordId([1; 16]);
    let patient = RecordId([2; 16]);
    let id = RecordId([3; 16]);
    let p = Principal {
        device,
        role: DeviceRole::PatientDevice,
        clinic,
        patient: Some(patient),
    };
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
    let doc = new_record(author, id, clinic, Some(patient), &body).unwrap_or_default();
    (p, id, doc)
}

/// The server's push path on one document: parse the pushed change chunks, apply them to a stored
/// record (contained), authorize the result, check its schema, save and reload it.
pub fn push_path(data: &[u8]) {
    let Ok(changes) = split_changes(data) else {
        return;
    };
    let (p, id, stored) = base();
    let applied = validate::contain("fuzz apply", || {
        let mut work = stored.clone();
        let old = work.get_heads();
        work.apply_changes(changes).ok()?;
        let actors: Vec<automerge::ActorId> = work
            .get_changes(&old)
            .iter()
            .map(|c| c.actor_id().clone())
            .collect();
        Some((work, actors))
    });
    let Ok(Some((work, actors))) = applied else {
        return;
    };
    let header = match followup_domain::model::read_header(&stored) {
        Ok(h) => h,
        Err(_) => return,
    };
    let attempt = WriteAttempt {
        doc_id: id,
        stored: Some((&header, &stored)),
        result: &work,
        new_change_actors: &actors,
    };
    let mut lookup = |_: RecordId| Ok(None);
    let checked = validate::contain("fuzz authorize", || check_write(&p, &attempt, &mut lookup));
    if let Ok(Ok(h)) = checked {
        if validate::check_record(&h, &work).is_ok() {
            let _ = validate::save_and_reload(&work);
        }
    }
}

/// Stored document bytes, loaded as the server loads them when serving a pull.
pub fn document_load(data: &[u8]) {
    if let Ok(doc) = validate::load_contained(data) {
        let _ = validate::contain("fuzz changes", || doc.get_changes(&[]).len());
    }
}

/// The enrolment and admin JSON bodies, and an enrolment key through the strict key check.
pub fn admin_json(data: &[u8]) {
    if let Ok(e) = serde_json::from_slice::<EnrolRequest>(data) {
        if let Ok(k) = followup_domain::identity::parse_public_key(&e.public_key) {
            let _ = crate::keys::check_public_key(&k);
        }
    }
    let _ = serde_json::from_slice::<CreateClinicRequest>(data);
    let _ = serde_json::from_slice::<IssueEnrolmentCodeRequest>(data);
    if data.len() == 32 {
        let mut k = [0u8; 32];
        k.copy_from_slice(data);
        let _ = crate::keys::check_public_key(&k);
    }
}
