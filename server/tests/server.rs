//! The server over HTTP on loopback, driven by a minimal test client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

/// The built-in definitions a new registry publishes (every device pulls them).
const DEFS: usize = followup_domain::definitions::builtin_definitions().len();

use common::*;
use followup_domain::identity::DeviceIdentity;
use followup_domain::ids::RecordId;
use followup_domain::protocol::*;

#[tokio::test]
async fn health_and_admin_token() {
    let s = start().await;
    let h: HealthResponse = json(s.http.get(s.url("/health")).send().await.unwrap()).await;
    assert_eq!(h.protocol_versions, SUPPORTED_VERSIONS.to_vec());
    let r = s
        .http
        .post(s.url("/v1/admin/clinics"))
        .header("authorization", "Bearer wrong-token-xxxxxxxxxxxx")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (st, e) = error_body(r).await;
    assert_eq!((st, e.code), (403, ErrorCode::Forbidden));
    let r = s.http.get(s.url("/v1/admin/stats")).send().await.unwrap();
    assert_eq!(error_body(r).await.0, 401);
}

#[tokio::test]
async fn enrolment_code_works_once_and_expired_is_refused() {
    let s = start().await;
    let clinic = s.create_clinic("Clinic A").await;
    let code = s
        .issue_code(EnrolmentGrant::ClinicDevice { clinic }, None)
        .await;
    let (id1, _) = DeviceIdentity::generate().unwrap();
    let r = s.enrol_raw(&code.to_lowercase(), &id1).await;
    assert_eq!(r.status(), 200);
    let e: EnrolResponse = json(r).await;
    assert_eq!(e.role, DeviceRole::ClinicDevice);
    assert_eq!(e.clinic, clinic);
    // Second use refused.
    let (id2, _) = DeviceIdentity::generate().unwrap();
    let (st, body) = error_body(s.enrol_raw(&code, &id2).await).await;
    assert_eq!((st, body.code), (404, ErrorCode::InvalidCode));
    // Expired refused.
    let code = s
        .issue_code(EnrolmentGrant::ClinicDevice { clinic }, Some(1))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (st, body) = error_body(s.enrol_raw(&code, &id2).await).await;
    assert_eq!((st, body.code), (404, ErrorCode::InvalidCode));
    // Unknown clinic, bad key.
    let r = s
        .admin_post(
            "/v1/admin/enrolment-codes",
            &IssueEnrolmentCodeRequest {
                grant: EnrolmentGrant::ClinicDevice {
                    clinic: RecordId::random(),
                },
                expires_in_secs: None,
            },
        )
        .await;
    assert_eq!(r.status(), 404);
    let r = s
        .http
        .post(s.url(ENROL_PATH))
        .body(r#"{"code":"x","public_key":"AAAA"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(r).await.0, 400);
}

#[tokio::test]
async fn signed_sync_accepted_and_forged_or_replayed_refused() {
    let s = start().await;
    let clinic = s.create_clinic("Clinic A").await;
    let mut dev = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    let p = dev.enrolment();
    dev.response_50(p, 1);
    let resp = dev.sync_once(&s).await;
    assert!(resp
        .results
        .iter()
        .all(|r| matches!(r, PushResult::Accepted { .. })));
    // The clinic record comes down in the pull.
    assert!(resp.pull.iter().any(|d| d.doc == clinic));

    let body = encode_body(&SyncRequest::new(dev.cursor, 1 << 20, vec![])).unwrap();
    // Unsigned.
    let (st, e) = error_body(s.post_sync(body.clone(), &[]).await).await;
    assert_eq!((st, e.code), (401, ErrorCode::Unauthenticated));
    // Bad signature: signed for another body.
    let headers = dev.sign(b"another body");
    let (st, e) = error_body(s.post_sync(body.clone(), &headers).await).await;
    assert_eq!((st, e.code), (401, ErrorCode::BadSignature));
    // Signed by another key.
    let (other, _) = DeviceIdentity::generate().unwrap();
    let h = other
        .sign_request(dev.id, "POST", SYNC_PATH, &body, now_ms())
        .to_header_pairs()
        .to_vec();
    let (st, e) = error_body(s.post_sync(body.clone(), &h).await).await;
    assert_eq!((st, e.code), (401, ErrorCode::BadSignature));
    // Expired timestamp.
    let h = dev
        .identity
        .sign_request(dev.id, "POST", SYNC_PATH, &body, now_ms() - 6 * 60 * 1000)
        .to_header_pairs()
        .to_vec();
    let (st, e) = error_body(s.post_sync(body.clone(), &h).await).await;
    assert_eq!((st, e.code), (401, ErrorCode::StaleTimestamp));
    // Replayed nonce: the same signed request twice.
    let h = dev.sign(&body);
    assert_eq!(s.post_sync(body.clone(), &h).await.status(), 200);
    let (st, e) = error_body(s.post_sync(body.clone(), &h).await).await;
    assert_eq!((st, e.code), (401, ErrorCode::ReplayedNonce));
    // Unknown device.
    let h = dev
        .identity
        .sign_request(
            followup_domain::DeviceId::random(),
            "POST",
            SYNC_PATH,
            &body,
            now_ms(),
        )
        .to_header_pairs()
        .to_vec();
    let (st, e) = error_body(s.post_sync(body.clone(), &h).await).await;
    assert_eq!((st, e.code), (401, ErrorCode::UnknownDevice));
    // Wrong content type.
    let r = s
        .http
        .post(s.url(SYNC_PATH))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(r).await.0, 415);
    // Garbage body, validly signed.
    let garbage = vec![0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3];
    let h = dev.sign(&garbage);
    let (st, e) = error_body(s.post_sync(garbage, &h).await).await;
    assert_eq!((st, e.code), (400, ErrorCode::MalformedBody));
    // A future protocol version.
    let mut req = SyncRequest::new(0, 1, vec![]);
    req.version = PROTOCOL_VERSION + 1;
    let b = encode_body(&req).unwrap();
    let h = dev.sign(&b);
    let (st, e) = error_body(s.post_sync(b, &h).await).await;
    assert_eq!((st, e.code), (426, ErrorCode::UnsupportedVersion));
    assert_eq!(e.supported_versions, Some(SUPPORTED_VERSIONS.to_vec()));

    // Revoked device refused.
    let r = s
        .admin_post(&format!("/v1/admin/devices/{}/revoke", dev.id), &())
        .await;
    let rv: RevokeDeviceResponse = json(r).await;
    assert!(rv.newly_revoked);
    let h = dev.sign(&body);
    let (st, e) = error_body(s.post_sync(body, &h).await).await;
    assert_eq!((st, e.code), (403, ErrorCode::DeviceRevoked));
}

#[tokio::test]
async fn patient_device_reads_only_its_records_and_writes_only_its_surveys() {
    let s = start().await;
    let clinic = s.create_clinic("Clinic A").await;
    let mut nurse = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    let alice = nurse.enrolment();
    let bob = nurse.enrolment();
    let alice_resp = nurse.response_50(alice, 1);
    let bob_resp = nurse.response_50(bob, 2);
    let alice_ae = nurse.create(
        "adverse_event",
        clinic,
        Some(alice),
        &[("reporter", "clinic"), ("category", "infection")],
    );
    nurse.sync(&s).await;

    let mut phone = s
        .enrol(EnrolmentGrant::PatientDevice { patient: alice })
        .await;
    phone.sync(&s).await;
    assert!(phone.docs.contains_key(&alice));
    assert!(phone.docs.contains_key(&alice_resp));
    assert!(phone.docs.contains_key(&alice_ae));
    assert!(
        !phone.docs.contains_key(&bob),
        "another patient's enrolment leaked"
    );
    assert!(
        !phone.docs.contains_key(&bob_resp),
        "another patient's response leaked"
    );
    assert!(!phone.docs.contains_key(&clinic));

    // Allowed: an outcome survey and an adverse event reported by the patient.
    let survey = phone.create(
        "response",
        clinic,
        Some(alice),
        &[
            ("completed_by", "patient"),
            ("questionnaire", "patient-outcome-survey"),
        ],
    );
    let ae = phone.create(
        "adverse_event",
        clinic,
        Some(alice),
        &[("reporter", "patient"), ("category", "infection")],
    );
    // Forbidden: an adjudication, a nurse response, a record of another patient, and editing
    // the clinic's adverse event.
    let adj = phone.create(
        "adjudication",
        clinic,
        Some(alice),
        &[("relatedness", "unrelated")],
    );
    let fake_nurse = phone.create(
        "response",
        clinic,
        Some(alice),
        &[("completed_by", "nurse")],
    );
    let other = phone.create(
        "response",
        clinic,
        Some(bob),
        &[("completed_by", "patient")],
    );
    phone.set_body(alice_ae, "category", "nothing happened");
    let resp = phone.sync_once(&s).await;
    let code = |id: RecordId| phone.docs[&id].rejected.as_ref().map(|r| r.0);
    assert_eq!(code(survey), None);
    assert_eq!(code(ae), None);
    assert_eq!(code(adj), Some(RejectCode::ForbiddenKind));
    assert_eq!(code(fake_nurse), Some(RejectCode::ForbiddenAuthor));
    assert_eq!(code(other), Some(RejectCode::ForbiddenPatient));
    assert_eq!(code(alice_ae), Some(RejectCode::ForbiddenAuthor));
    assert_eq!(
        resp.results
            .iter()
            .filter(|r| matches!(r, PushResult::Rejected { .. }))
            .count(),
        4
    );
    // Not merged: the server knows no adjudication, and the clinic's AE is unchanged.
    let st = s.server.storage();
    assert!(st.doc_header(adj).unwrap().is_none());
    nurse.sync(&s).await;
    assert_eq!(
        nurse.body_field(alice_ae, "category").as_deref(),
        Some("infection")
    );
    assert!(nurse.docs.contains_key(&survey));
    assert!(!nurse.docs.contains_key(&adj));
    // Reported: the rejections table.
    assert_eq!(s.stats().await.rejections, 4);
}

#[tokio::test]
async fn clinic_device_cannot_touch_another_clinic() {
    let s = start().await;
    let a = s.create_clinic("Clinic A").await;
    let b = s.create_clinic("Clinic B").await;
    let mut da = s.enrol(EnrolmentGrant::ClinicDevice { clinic: a }).await;
    let mut db = s.enrol(EnrolmentGrant::ClinicDevice { clinic: b }).await;
    let pa = da.enrolment();
    let ra = da.response_50(pa, 1);
    da.sync(&s).await;
    let pb = db.enrolment();
    db.sync(&s).await;
    assert!(!db.docs.contains_key(&pa) && !db.docs.contains_key(&ra) && !db.docs.contains_key(&a));
    assert!(db.docs.contains_key(&b) && db.docs.contains_key(&pb));

    // B writes records claiming clinic A, or a record of A's patient under clinic B.
    let forged = db.create("response", a, Some(pa), &[("completed_by", "nurse")]);
    let cross = db.create("response", b, Some(pa), &[("completed_by", "nurse")]);
    // B forges a change to A's existing response (same doc id, its own ops).
    db.create_with_id(ra, "response", a, Some(pa), &[("completed_by", "nurse")]);
    // And tries to edit the registry's clinic record of its own clinic.
    db.set_body(b, "participation", "active");
    db.sync_once(&s).await;
    let code = |id: RecordId| db.docs[&id].rejected.as_ref().map(|r| r.0);
    assert_eq!(code(forged), Some(RejectCode::ForbiddenClinic));
    assert_eq!(code(cross), Some(RejectCode::ForbiddenPatient));
    assert!(matches!(
        code(ra),
        Some(RejectCode::ForbiddenClinic)
            | Some(RejectCode::HeaderChanged)
            | Some(RejectCode::ForeignActor)
    ));
    assert_eq!(code(b), Some(RejectCode::ForbiddenKind));
    // A still sees its response untouched.
    da.sync(&s).await;
    assert_eq!(da.body_field(ra, "completed_by").as_deref(), Some("nurse"));
    assert!(s.verify_audit().await.ok);
}

#[tokio::test]
async fn header_mutation_is_rejected_and_not_merged() {
    let s = start().await;
    let clinic = s.create_clinic("Clinic A").await;
    let mut dev = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    let p = dev.enrolment();
    let other_p = dev.enrolment();
    let r = dev.response_50(p, 1);
    dev.sync(&s).await;
    dev.set_root(r, "patient", &other_p.to_hex());
    dev.sync_once(&s).await;
    assert_eq!(
        dev.docs[&r].rejected.as_ref().map(|x| x.0),
        Some(RejectCode::HeaderChanged)
    );
    let h = s.server.storage().doc_header(r).unwrap().unwrap();
    assert_eq!(h.patient, Some(p));
    // A response's author is immutable too.
    let r2 = dev.response_50(p, 2);
    dev.sync(&s).await;
    dev.set_body(r2, "completed_by", "patient");
    dev.sync_once(&s).await;
    assert_eq!(
        dev.docs[&r2].rejected.as_ref().map(|x| x.0),
        Some(RejectCode::HeaderChanged)
    );
}

#[tokio::test]
async fn duplicate_push_is_idempotent_and_audited_once() {
    let s = start().await;
    let clinic = s.create_clinic("Clinic A").await;
    let mut dev = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    let p = dev.enrolment();
    let r = dev.response_50(p, 1);
    let (req, _) = dev.build_request();
    let body = encode_body(&req).unwrap();
    // The same request three times (a retry after a lost response), each freshly signed.
    let mut responses = Vec::new();
    for _ in 0..3 {
        let h = dev.sign(&body);
        let resp = s.post_sync(body.clone(), &h).await;
        assert_eq!(resp.status(), 200);
        responses.push(decode_sync_response(&resp.bytes().await.unwrap(), 1 << 26).unwrap());
    }
    for resp in &responses {
        assert!(
            resp.results
                .iter()
                .all(|x| *x == PushResult::Accepted { server_heads: None }),
            "{:?}",
            resp.results
        );
    }
    let stats = s.stats().await;
    // The built-in definitions seeded at start, then clinic record + enrolment + response:
    // three writes, no more.
    assert_eq!(stats.log_seq, DEFS as u64 + 3);
    let db = s.db();
    let accepted_for_r: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE event = 'accepted' AND doc = ?1",
            [r.0.to_vec()],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(accepted_for_r, 1);
    // Every change hash appears once in the audit log.
    let mut all: Vec<Vec<u8>> = Vec::new();
    let mut stmt = db.prepare("SELECT change_hashes FROM audit").unwrap();
    for row in stmt.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap() {
        for h in row.unwrap().chunks(32) {
            all.push(h.to_vec());
        }
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n);
    assert!(s.verify_audit().await.ok);
}

#[tokio::test]
async fn need_full_doc_when_server_lacks_dependencies() {
    let s = start().await;
    let clinic = s.create_clinic("Clinic A").await;
    let mut dev = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    let p = dev.enrolment();
    let r = dev.response_50(p, 1);
    // Pretend the server had the first change: push only the edit.
    let first_heads = dev.heads(r);
    dev.docs.get_mut(&r).unwrap().synced = first_heads;
    dev.edit_response(r, 3);
    let resp = dev.sync_once(&s).await;
    assert!(resp.results.contains(&PushResult::NeedFullDoc));
    assert!(s.server.storage().doc_header(r).unwrap().is_none());
    // The device resends from empty heads and is accepted.
    dev.sync(&s).await;
    assert!(s.server.storage().doc_header(r).unwrap().is_some());
}

#[tokio::test]
async fn audit_chain_verifies_and_detects_tampering() {
    let s = start().await;
    let clinic = s.create_clinic("Clinic A").await;
    let mut dev = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    let p = dev.enrolment();
    for i in 0..5 {
        dev.response_50(p, i);
    }
    dev.sync(&s).await;
    let v = s.verify_audit().await;
    assert!(v.ok, "{v:?}");
    assert!(v.entries >= 9);

    let db = s.db();
    // The table refuses edits outright...
    assert!(db
        .execute("UPDATE audit SET at_ms = at_ms + 1 WHERE seq = 4", [])
        .is_err());
    // ...and an attacker who drops the guard is still caught.
    db.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
        .unwrap();
    db.execute("UPDATE audit SET at_ms = at_ms + 1 WHERE seq = 4", [])
        .unwrap();
    let v = s.verify_audit().await;
    assert!(!v.ok);
    assert_eq!(v.first_bad_seq, Some(4));
    db.execute("UPDATE audit SET at_ms = at_ms - 1 WHERE seq = 4", [])
        .unwrap();
    assert!(s.verify_audit().await.ok);
    // Removing an entry in the middle.
    db.execute("DELETE FROM audit WHERE seq = 6", []).unwrap();
    let v = s.verify_audit().await;
    assert!(!v.ok);
    assert_eq!(v.first_bad_seq, Some(6));
}

#[tokio::test]
async fn removing_the_last_audit_entry_is_detected() {
    let s = start().await;
    let clinic = s.create_clinic("Clinic A").await;
    let mut dev = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    dev.enrolment();
    dev.sync(&s).await;
    let db = s.db();
    db.execute_batch("DROP TRIGGER audit_no_delete;").unwrap();
    db.execute(
        "DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)",
        [],
    )
    .unwrap();
    let v = s.verify_audit().await;
    assert!(!v.ok, "{v:?}");
}

#[tokio::test]
async fn pull_with_cursor_returns_only_what_changed() {
    let s = start().await;
    let clinic = s.create_clinic("Clinic A").await;
    let mut a = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    let mut b = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    let p = a.enrolment();
    let ids: Vec<RecordId> = (0..20).map(|i| a.response_50(p, i)).collect();
    a.sync(&s).await;
    let first = b.sync(&s).await;
    assert_eq!(first[0].pull.len(), DEFS + 22); // definitions + clinic + enrolment + 20 responses
                                                // Nothing changed: an empty pull.
    let r = b.sync_once(&s).await;
    assert!(r.pull.is_empty() && !r.more);
    // A edits two responses; B receives exactly those, with only the new change each.
    a.edit_response(ids[3], 1);
    a.edit_response(ids[7], 2);
    a.sync(&s).await;
    let r = b.sync_once(&s).await;
    let mut got: Vec<RecordId> = r.pull.iter().map(|d| d.doc).collect();
    got.sort();
    let mut want = vec![ids[3], ids[7]];
    want.sort();
    assert_eq!(got, want);
    for d in &r.pull {
        assert_eq!(split_changes(&d.data).unwrap().len(), 1);
    }
    assert!(b.body_field(ids[3], "answers").is_some());
    // A's own pull does not echo its changes back.
    let r = a.sync_once(&s).await;
    assert!(r.pull.is_empty());
    // Concurrent edits by both devices merge.
    a.edit_response(ids[0], 4);
    b.set_body(ids[0], "note", "checked by b");
    a.sync(&s).await;
    b.sync(&s).await;
    a.sync(&s).await;
    assert_eq!(a.heads(ids[0]), b.heads(ids[0]));
}

#[tokio::test]
async fn small_pull_budget_pages_with_more_and_loses_nothing() {
    let s = start().await;
    let clinic = s.create_clinic("Clinic A").await;
    let mut a = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    let p = a.enrolment();
    for i in 0..30 {
        a.response_50(p, i);
    }
    a.sync(&s).await;
    let mut b = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    b.max_pull_bytes = 4000;
    let pages = b.sync(&s).await;
    assert!(pages.len() > 3, "pages: {}", pages.len());
    assert!(pages[..pages.len() - 1].iter().all(|p| p.more));
    assert_eq!(b.docs.len(), a.docs.len()); // clinic record + enrolment + 30 responses
    assert_eq!(b.docs.len(), DEFS + 32);
    let ids: Vec<RecordId> = a.docs.keys().copied().collect();
    for id in ids {
        assert_eq!(b.heads(id), a.heads(id));
    }
}
