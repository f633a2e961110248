//! The storage contract (server/src/storage/mod.rs), as functions every backend's tests call.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use automerge::ChangeHash;
use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::model::{DocHeader, RecordKind};
use followup_domain::protocol::DeviceRole;
use followup_server::audit::{self, AuditEntry};
use followup_server::storage::{
    ClinicRow, DocWrite, EnrolmentCode, NewDevice, ReadScope, Rejection, Storage, WriteOutcome,
};

/// Raw access to a backend's database, to play the attacker.
pub trait RawDb {
    /// Run one SQL statement; `Err` with the database's message if it is refused.
    fn exec(&mut self, sql: &str) -> Result<u64, String>;
    /// Remove whatever stops `UPDATE`/`DELETE` on the audit table.
    fn drop_audit_guards(&mut self);
}

const NOW: i64 = 1_700_000_000_000;

pub fn hash(n: u8) -> ChangeHash {
    ChangeHash([n; 32])
}

pub fn header(kind: RecordKind, clinic: RecordId, patient: Option<RecordId>) -> DocHeader {
    DocHeader {
        id: if kind == RecordKind::Clinic {
            clinic
        } else {
            RecordId::random()
        },
        kind,
        clinic,
        patient,
        created_by: None,
    }
}

pub fn write(
    header: &DocHeader,
    bytes: &[u8],
    heads: Vec<ChangeHash>,
    expected: Option<u64>,
    device: Option<DeviceId>,
) -> DocWrite {
    DocWrite {
        header: header.clone(),
        bytes: bytes.to_vec(),
        new_changes: heads.clone(),
        heads,
        expected_version: expected,
        device,
        event: audit::event::ACCEPTED,
        users: Vec::new(),
        projection: None,
    }
}

fn committed(o: &WriteOutcome) -> u64 {
    match o {
        WriteOutcome::Committed { seq } => *seq,
        WriteOutcome::Conflict => panic!("expected a commit, got a conflict"),
    }
}

/// Every trait method on a fresh database: enrolment, commit with compare-and-set, the log and
/// cursors, nonce replay, revocation, rejections, stats, and the audit chain with tampering.
pub fn storage_contract(s: &dyn Storage, raw: &mut dyn RawDb) {
    // A clinic and its record document: log seq 1, audited.
    let clinic = RecordId::random();
    let ch = header(RecordKind::Clinic, clinic, None);
    let mut cw = write(&ch, b"clinic-v1", vec![hash(1)], None, None);
    cw.event = audit::event::CLINIC_CREATED;
    let row = ClinicRow {
        id: clinic,
        name: "Clinic A".into(),
        country: "pt".into(),
    };
    assert_eq!(s.create_clinic(&row, &cw, NOW).unwrap(), 1);
    assert!(s.clinic_exists(clinic).unwrap());
    assert!(!s.clinic_exists(RecordId::random()).unwrap());
    // The same clinic twice is refused and changes nothing.
    assert!(s.create_clinic(&row, &cw, NOW).is_err());
    assert_eq!(s.max_seq().unwrap(), 1);

    // Enrolment codes: once, unexpired.
    let code = EnrolmentCode {
        code_hash: [7; 32],
        role: DeviceRole::ClinicDevice,
        clinic,
        patient: None,
        expires_at_ms: NOW + 60_000,
    };
    s.insert_enrolment_code(&code, NOW).unwrap();
    let dev = NewDevice {
        id: DeviceId([1; 16]),
        public_key: [2; 32],
        label: Some("tablet".into()),
    };
    let rec = s
        .redeem_enrolment_code(&code.code_hash, &dev, NOW + 1)
        .unwrap()
        .unwrap();
    assert_eq!(
        (rec.id, rec.role, rec.clinic, rec.patient),
        (dev.id, DeviceRole::ClinicDevice, clinic, None)
    );
    let other = NewDevice {
        id: DeviceId([3; 16]),
        public_key: [4; 32],
        label: None,
    };
    assert!(s
        .redeem_enrolment_code(&code.code_hash, &other, NOW + 2)
        .unwrap()
        .is_none());
    let late = EnrolmentCode {
        code_hash: [8; 32],
        expires_at_ms: NOW + 10,
        ..code.clone()
    };
    s.insert_enrolment_code(&late, NOW).unwrap();
    assert!(s
        .redeem_enrolment_code(&late.code_hash, &other, NOW + 11)
        .unwrap()
        .is_none());
    assert_eq!(s.device(dev.id).unwrap(), Some(rec.clone()));
    assert!(s.device(other.id).unwrap().is_none());

    // Nonces: a replay is refused; another device may use the same bytes.
    assert!(s
        .remember_nonce(dev.id, &[9; 16], NOW + 600_000, NOW)
        .unwrap());
    assert!(!s
        .remember_nonce(dev.id, &[9; 16], NOW + 600_000, NOW)
        .unwrap());
    assert!(s
        .remember_nonce(other.id, &[9; 16], NOW + 600_000, NOW)
        .unwrap());
    assert!(s
        .remember_nonce(dev.id, &[10; 16], NOW + 600_000, NOW)
        .unwrap());

    // Documents: create, compare-and-set, conflicts.
    let eh = header(RecordKind::Enrolment, clinic, None);
    let enrolment = DocHeader {
        patient: Some(eh.id),
        created_by: Some(dev.id),
        ..eh
    };
    let patient = enrolment.id;
    let out = s
        .commit_writes(
            &[write(
                &enrolment,
                b"enr-v1",
                vec![hash(2)],
                None,
                Some(dev.id),
            )],
            NOW,
        )
        .unwrap();
    assert_eq!(out, vec![WriteOutcome::Committed { seq: 2 }]);
    // Creating it again: conflict (it exists).
    let out = s
        .commit_writes(
            &[write(&enrolment, b"x", vec![hash(3)], None, Some(dev.id))],
            NOW,
        )
        .unwrap();
    assert_eq!(out, vec![WriteOutcome::Conflict]);
    let stored = s.load_doc(patient).unwrap().unwrap();
    assert_eq!(
        (
            stored.bytes.as_slice(),
            stored.heads.clone(),
            stored.version
        ),
        (&b"enr-v1"[..], vec![hash(2)], 2)
    );
    assert_eq!(stored.header, enrolment);
    assert_eq!(s.doc_header(patient).unwrap(), Some(enrolment.clone()));
    assert!(s.load_doc(RecordId::random()).unwrap().is_none());
    assert!(s.doc_header(RecordId::random()).unwrap().is_none());

    // A batch: a response (new), a stale update (conflict), a good update; seqs 3 and 4.
    let response = DocHeader {
        created_by: Some(dev.id),
        ..header(RecordKind::Response, clinic, Some(patient))
    };
    let out = s
        .commit_writes(
            &[
                write(&response, b"resp-v1", vec![hash(4)], None, Some(dev.id)),
                write(&enrolment, b"stale", vec![hash(5)], Some(1), Some(dev.id)),
                write(
                    &enrolment,
                    b"enr-v2",
                    vec![hash(6), hash(7)],
                    Some(2),
                    Some(dev.id),
                ),
            ],
            NOW + 5,
        )
        .unwrap();
    assert_eq!(
        out,
        vec![
            WriteOutcome::Committed { seq: 3 },
            WriteOutcome::Conflict,
            WriteOutcome::Committed { seq: 4 }
        ]
    );
    let stored = s.load_doc(patient).unwrap().unwrap();
    assert_eq!(
        (stored.bytes.as_slice(), stored.version),
        (&b"enr-v2"[..], 4)
    );
    assert_eq!(stored.heads, vec![hash(6), hash(7)]);
    assert_eq!(s.max_seq().unwrap(), 4);
    assert!(s.commit_writes(&[], NOW).unwrap().is_empty());

    // The log: per scope, after a cursor, up to a bound, with a limit; heads as of a seq.
    let scope = ReadScope::Clinic(clinic);
    assert_eq!(
        s.changed_docs(scope, 0, 4, 100).unwrap(),
        vec![(clinic, 1), (patient, 2), (response.id, 3)]
    );
    assert_eq!(
        s.changed_docs(scope, 2, 4, 100).unwrap(),
        vec![(response.id, 3), (patient, 4)]
    );
    assert_eq!(
        s.changed_docs(scope, 0, 4, 2).unwrap(),
        vec![(clinic, 1), (patient, 2)]
    );
    assert_eq!(
        s.changed_docs(scope, 0, 2, 100).unwrap(),
        vec![(clinic, 1), (patient, 2)]
    );
    assert!(s.changed_docs(scope, 4, 4, 100).unwrap().is_empty());
    assert_eq!(
        s.changed_docs(ReadScope::Patient(patient), 0, 4, 100)
            .unwrap(),
        vec![(patient, 2), (response.id, 3)]
    );
    assert!(s
        .changed_docs(ReadScope::Clinic(RecordId::random()), 0, 4, 100)
        .unwrap()
        .is_empty());
    assert_eq!(s.heads_at(patient, 3).unwrap(), vec![hash(2)]);
    assert_eq!(s.heads_at(patient, 4).unwrap(), vec![hash(6), hash(7)]);
    assert!(s.heads_at(patient, 1).unwrap().is_empty());

    // Revocation, rejections, admin audit entries, stats.
    assert_eq!(
        s.revoke_device(dev.id, NOW + 7).unwrap(),
        Some((true, NOW + 7))
    );
    assert_eq!(
        s.revoke_device(dev.id, NOW + 8).unwrap(),
        Some((false, NOW + 7))
    );
    assert!(s.revoke_device(DeviceId([5; 16]), NOW).unwrap().is_none());
    assert_eq!(
        s.device(dev.id).unwrap().unwrap().revoked_at_ms,
        Some(NOW + 7)
    );
    s.record_rejections(&[Rejection {
        at_ms: NOW,
        device: dev.id,
        doc: patient,
        code: "header_changed",
        message: "no".into(),
    }])
    .unwrap();
    s.record_rejections(&[]).unwrap();
    s.append_audit(&AuditEntry {
        at_ms: NOW + 9,
        event: "note".into(),
        device: None,
        doc: None,
        log_seq: None,
        change_hashes: vec![],
        detail: "operator note".into(),
    })
    .unwrap();
    let st = s.stats().unwrap();
    assert_eq!(
        (
            st.documents,
            st.clinics,
            st.devices,
            st.revoked_devices,
            st.log_seq,
            st.rejections
        ),
        (3, 1, 1, 1, 4, 1)
    );
    // clinic, 2 codes, enrolled, 3 writes, revoked, note.
    assert_eq!(st.audit_entries, 9);

    // The audit chain: in order, linked, every log seq audited once.
    let rows = s.audit_rows(0, 100).unwrap();
    assert_eq!(rows.len(), 9);
    assert_eq!(
        rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=9).collect::<Vec<_>>()
    );
    assert_eq!(rows[0].prev_hash, audit::GENESIS);
    for w in rows.windows(2) {
        assert_eq!(w[1].prev_hash, w[0].hash);
    }
    let log_seqs: Vec<u64> = rows.iter().filter_map(|r| r.entry.log_seq).collect();
    assert_eq!(log_seqs, vec![1, 2, 3, 4]);
    let accepted = rows.iter().find(|r| r.entry.log_seq == Some(4)).unwrap();
    assert_eq!(accepted.entry.device, Some(dev.id));
    assert_eq!(accepted.entry.change_hashes, vec![hash(6), hash(7)]);
    assert_eq!(s.audit_rows(7, 100).unwrap().len(), 2);
    assert_eq!(s.audit_rows(0, 3).unwrap().len(), 3);
    assert!(s.unaudited_log_seq().unwrap().is_none());
    let v = audit::verify(s).unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.entries, 9);

    // Tampering: refused outright; caught by the chain once the guard is dropped.
    assert!(raw
        .exec("UPDATE audit SET at_ms = at_ms + 1 WHERE seq = 4")
        .is_err());
    assert!(raw.exec("DELETE FROM audit WHERE seq = 9").is_err());
    raw.drop_audit_guards();
    assert_eq!(
        raw.exec("UPDATE audit SET at_ms = at_ms + 1 WHERE seq = 4"),
        Ok(1)
    );
    let v = audit::verify(s).unwrap();
    assert!(!v.ok);
    assert_eq!(v.first_bad_seq, Some(4));
    raw.exec("UPDATE audit SET at_ms = at_ms - 1 WHERE seq = 4")
        .unwrap();
    assert!(audit::verify(s).unwrap().ok);
    raw.exec("DELETE FROM audit WHERE seq = 6").unwrap();
    let v = audit::verify(s).unwrap();
    assert!(!v.ok);
    assert_eq!(v.first_bad_seq, Some(6));
    // Removing the audit entry of a write (even the last one) is caught through the log.
    raw.exec("DELETE FROM audit WHERE seq >= 6").unwrap();
    let v = audit::verify(s).unwrap();
    assert!(!v.ok, "{v:?}");
    assert_eq!(s.unaudited_log_seq().unwrap(), Some(3));
}

/// Writers on several handles to one database (several processes' worth for a server backend)
/// each create documents and all merge into one shared document with compare-and-set retries,
/// while a reader checks that a seq it sees never has an unseen predecessor.
pub fn concurrent_writers_contract(stores: &[Arc<dyn Storage>], writers: usize, rounds: usize) {
    let s0 = &stores[0];
    let clinic = RecordId::random();
    let ch = header(RecordKind::Clinic, clinic, None);
    let mut cw = write(&ch, b"clinic", vec![hash(0)], None, None);
    cw.event = audit::event::CLINIC_CREATED;
    let base = s0
        .create_clinic(
            &ClinicRow {
                id: clinic,
                name: "C".into(),
                country: "pt".into(),
            },
            &cw,
            NOW,
        )
        .unwrap();
    let shared = header(RecordKind::Enrolment, clinic, None);
    let shared = DocHeader {
        patient: Some(shared.id),
        ..shared
    };
    assert!(matches!(
        s0.commit_writes(&[write(&shared, b"0", vec![], None, None)], NOW)
            .unwrap()[..],
        [WriteOutcome::Committed { .. }]
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let s = stores[stores.len() - 1].clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut checks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let m = s.max_seq().unwrap();
                // Everything up to m must be there now: each log seq has its audit row, written in
                // the same transaction.
                let seen: BTreeSet<u64> = s
                    .audit_rows(0, usize::MAX >> 1)
                    .unwrap()
                    .iter()
                    .filter_map(|r| r.entry.log_seq)
                    .filter(|&q| q <= m)
                    .collect();
                assert_eq!(
                    seen.len() as u64,
                    m,
                    "a reader saw seq {m} before a smaller one"
                );
                checks += 1;
            }
            checks
        })
    };

    let mut handles = Vec::new();
    for w in 0..writers {
        let s = stores[w % stores.len()].clone();
        let shared = shared.clone();
        handles.push(std::thread::spawn(move || {
            let mut conflicts = 0u64;
            for r in 0..rounds {
                // A document of its own, and one merge into the shared document.
                let own = DocHeader {
                    patient: Some(shared.id),
                    ..header(RecordKind::Response, clinic, Some(shared.id))
                };
                // The first attempt writes both; after a conflict the own document is in and
                // only the merge is retried, on a fresh read.
                let mut first = true;
                loop {
                    let cur = s.load_doc(shared.id).unwrap().unwrap();
                    let mut bytes = cur.bytes.clone();
                    bytes.extend_from_slice(format!(",{w}.{r}").as_bytes());
                    let merge = write(&shared, &bytes, vec![], Some(cur.version), None);
                    let batch = if first {
                        vec![write(&own, b"own", vec![hash(w as u8)], None, None), merge]
                    } else {
                        vec![merge]
                    };
                    let out = s.commit_writes(&batch, NOW).unwrap();
                    if first {
                        assert!(matches!(out[0], WriteOutcome::Committed { .. }));
                        first = false;
                    }
                    match out.last() {
                        Some(WriteOutcome::Committed { .. }) => break,
                        Some(WriteOutcome::Conflict) => conflicts += 1,
                        None => panic!("no outcome"),
                    }
                }
            }
            conflicts
        }));
    }
    let conflicts: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    stop.store(true, Ordering::Relaxed);
    let checks = reader.join().unwrap();

    // No merge lost, every seq used once and audited, the chain intact.
    let total = (writers * rounds * 2) as u64;
    let max = s0.max_seq().unwrap();
    assert_eq!(max, base + 1 + total);
    let doc = s0.load_doc(shared.id).unwrap().unwrap();
    let text = String::from_utf8(doc.bytes).unwrap();
    for w in 0..writers {
        for r in 0..rounds {
            assert!(text.contains(&format!(",{w}.{r},")) || text.ends_with(&format!(",{w}.{r}")));
        }
    }
    assert_eq!(text.matches(',').count(), writers * rounds);
    assert!(s0.unaudited_log_seq().unwrap().is_none());
    let v = audit::verify(s0.as_ref()).unwrap();
    assert!(v.ok, "{v:?}");
    println!(
        "concurrent writers: {writers} x {rounds} rounds on {} handle(s): {total} writes, {conflicts} compare-and-set conflicts re-merged, {checks} reader checks",
        stores.len()
    );
}

/// Staging of resumable (version 2) exchanges: appends are compare-and-set on the offset, a
/// finished exchange keeps only its response, a device keeps one upload and one response.
pub fn staging_contract(s: &dyn Storage) {
    let dev = DeviceId::random();
    let other = DeviceId::random();
    let h = [7u8; 32];
    let body: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 251) as u8).collect();
    assert_eq!(s.upload_state(dev, &h).unwrap(), None);
    // An upload starts only at offset 0.
    assert_eq!(
        s.upload_append(dev, &h, 1000, 10, &body[10..20], NOW)
            .unwrap(),
        None
    );
    let st = s
        .upload_append(dev, &h, 1000, 0, &body[..300], NOW)
        .unwrap()
        .unwrap();
    assert_eq!((st.length, st.received, st.response_len), (1000, 300, None));
    // A stale or future offset, or a wrong length, stores nothing and says where things stand.
    for (len, off) in [(1000, 200), (1000, 400), (999, 300)] {
        let st = s
            .upload_append(dev, &h, len, off, &body[300..350], NOW)
            .unwrap()
            .unwrap();
        assert_eq!(st.received, 300);
    }
    // Past the end is refused.
    let too_long = vec![0u8; 701];
    assert_eq!(
        s.upload_append(dev, &h, 1000, 300, &too_long, NOW)
            .unwrap()
            .unwrap()
            .received,
        300
    );
    s.upload_append(dev, &h, 1000, 300, &body[300..999], NOW)
        .unwrap();
    let st = s
        .upload_append(dev, &h, 1000, 999, &body[999..], NOW)
        .unwrap()
        .unwrap();
    assert_eq!(st.received, 1000);
    assert_eq!(s.upload_bytes(dev, &h).unwrap(), body);
    // Another device's upload of the same name is its own.
    assert_eq!(s.upload_state(other, &h).unwrap(), None);
    s.upload_append(other, &h, 5, 0, b"abc", NOW).unwrap();
    // Finishing stores the response once; the first one stands.
    assert!(s.upload_finish(dev, &h, b"response-1", NOW).unwrap());
    assert!(!s.upload_finish(dev, &h, b"response-2", NOW).unwrap());
    assert_eq!(s.upload_response(dev, &h).unwrap().unwrap(), b"response-1");
    assert_eq!(
        s.upload_state(dev, &h).unwrap().unwrap().response_len,
        Some(10)
    );
    assert!(s.upload_bytes(dev, &h).unwrap().is_empty());
    // No more appends once finished.
    assert_eq!(
        s.upload_append(dev, &h, 1000, 1000, b"", NOW)
            .unwrap()
            .unwrap()
            .response_len,
        Some(10)
    );
    // A new upload of the device drops its other incomplete uploads, keeps the response until
    // that one finishes; other devices are untouched.
    let h2 = [8u8; 32];
    let h3 = [9u8; 32];
    s.upload_append(dev, &h2, 10, 0, b"12345", NOW).unwrap();
    s.upload_append(dev, &h3, 10, 0, b"12", NOW).unwrap();
    assert_eq!(s.upload_state(dev, &h2).unwrap(), None);
    assert!(s.upload_response(dev, &h).unwrap().is_some());
    s.upload_append(dev, &h3, 10, 2, b"34567890", NOW).unwrap();
    assert!(s.upload_finish(dev, &h3, b"r3", NOW + 1).unwrap());
    assert_eq!(s.upload_state(dev, &h).unwrap(), None);
    assert_eq!(s.upload_state(other, &h).unwrap().unwrap().received, 3);
    // A day later, a finished exchange clears idle rows of every device.
    let later = NOW + 25 * 3600 * 1000;
    s.upload_append(dev, &h2, 4, 0, b"ab", later).unwrap();
    s.upload_append(dev, &h2, 4, 2, b"cd", later).unwrap();
    assert!(s.upload_finish(dev, &h2, b"r2", later).unwrap());
    assert_eq!(s.upload_state(other, &h).unwrap(), None);
    assert_eq!(s.upload_response(dev, &h2).unwrap().unwrap(), b"r2");
    // Discard forgets.
    s.upload_discard(dev, &h2).unwrap();
    assert_eq!(s.upload_state(dev, &h2).unwrap(), None);
}
