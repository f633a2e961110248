//! Issue 14: a registry server that one bad record, one hostile client or one curious insider
//! cannot break. Each test here failed on the code before the fix.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ReadDoc, ROOT};
use common::*;
use followup_domain::ids::RecordId;
use followup_domain::model::{new_record, AdverseEvent, AeOutcome, Author, RecordBody, Reporter};
use followup_domain::protocol::*;

/// A patient-reported adverse event.
fn patient_ae(severity: i64) -> AdverseEvent {
    AdverseEvent {
        reporter: Reporter::Patient,
        category: "infection".into(),
        onset: "2025-01-02".into(),
        severity,
        seriousness: vec![],
        outcome: AeOutcome::Recovering,
        description: "fever for one night".into(),
        procedure: None,
        answers: Default::default(),
    }
}

/// Add a typed record, made by the domain model as a real device would, to a test device.
fn add_record<T: RecordBody>(dev: &mut TestDevice, patient: RecordId, body: &T) -> RecordId {
    let id = RecordId::random();
    let doc = new_record(
        Author {
            device: Some(dev.id),
            time: 0,
            user: None,
        },
        id,
        dev.clinic,
        Some(patient),
        body,
    )
    .unwrap();
    let doc = AutoCommit::load(&doc.save())
        .unwrap()
        .with_actor(dev.id.actor());
    dev.docs.insert(
        id,
        LocalDoc {
            doc,
            synced: vec![],
            pushed: vec![],
            rejected: None,
        },
    );
    id
}

/// A clinic, a nurse's tablet with one enrolment synced, and that patient's phone.
async fn clinic_with_patient_phone(s: &TestServer) -> (TestDevice, TestDevice, RecordId) {
    let clinic = s.create_clinic("Clinica").await;
    let mut nurse = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    let patient = nurse.enrolment();
    nurse.sync(s).await;
    assert!(
        nurse.docs[&patient].rejected.is_none(),
        "{:?}",
        nurse.docs[&patient].rejected
    );
    let phone = s.enrol(EnrolmentGrant::PatientDevice { patient }).await;
    (nurse, phone, patient)
}

/// Finding 1b: an adverse event with `severity: "grave"` (a string) was stored, and then every
/// clinic device failed to read it. Now it is refused at the push, and the clinic syncs on.
#[tokio::test]
async fn a_record_that_breaks_its_schema_is_refused_and_the_clinic_keeps_syncing() {
    let s = start().await;
    let (mut nurse, mut phone, patient) = clinic_with_patient_phone(&s).await;
    let good = add_record(&mut phone, patient, &patient_ae(2));
    let bad = add_record(&mut phone, patient, &patient_ae(2));
    {
        let d = &mut phone.docs.get_mut(&bad).unwrap().doc;
        let body = d.get(ROOT, "body").unwrap().unwrap().1;
        d.put(&body, "severity", "grave").unwrap();
        d.commit();
    }
    let wrong_code = add_record(&mut phone, patient, &patient_ae(2));
    phone.set_body(wrong_code, "outcome", "better");
    let out_of_range = add_record(&mut phone, patient, &patient_ae(2));
    {
        let d = &mut phone.docs.get_mut(&out_of_range).unwrap().doc;
        let body = d.get(ROOT, "body").unwrap().unwrap().1;
        d.put(&body, "severity", 9_i64).unwrap();
        d.commit();
    }
    phone.sync(&s).await;
    assert!(phone.docs[&good].rejected.is_none());
    for id in [bad, wrong_code, out_of_range] {
        let (code, message) = phone.docs[&id].rejected.clone().expect("refused");
        assert_eq!(code, RejectCode::Malformed, "{message}");
    }
    // The clinic's tablet receives the good report and nothing else; a new tablet too.
    nurse.sync(&s).await;
    assert!(nurse.docs.contains_key(&good));
    assert!(!nurse.docs.contains_key(&bad));
    let clinic = nurse.clinic;
    let mut tablet = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    tablet.sync(&s).await;
    assert!(tablet.docs.contains_key(&good));
}

/// Recompute an Automerge chunk's checksum (first 4 bytes of SHA-256 of type, length, body).
fn fix_checksum(chunk: &mut [u8]) {
    let h = ring::digest::digest(&ring::digest::SHA256, &chunk[8..]);
    chunk[4..8].copy_from_slice(&h.as_ref()[..4]);
}

/// Finding 1a: a patient phone pushed a change with a few bytes mutated (checksum fixed); the
/// server stored it, could not load the document again, and answered every later pull of the
/// clinic with 500. Now every mutated change is refused or stored loadable, and every pull works.
#[tokio::test]
async fn mutated_changes_never_make_the_clinic_unreadable() {
    let s = start().await;
    let (mut nurse, mut phone, patient) = clinic_with_patient_phone(&s).await;
    const DOCS: usize = 40;
    const ROUNDS: u64 = 40;
    let ids: Vec<RecordId> = (0..DOCS)
        .map(|_| add_record(&mut phone, patient, &patient_ae(2)))
        .collect();
    phone.sync(&s).await;
    nurse.sync(&s).await;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut stored_mutants = 0;
    for round in 0..ROUNDS {
        let mut push = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let d = &mut phone.docs.get_mut(id).unwrap().doc;
            let body = d.get(ROOT, "body").unwrap().unwrap().1;
            d.put(&body, "description", format!("round {round} doc {i}"))
                .unwrap();
            d.commit();
            let change = d.get_last_local_change().unwrap();
            let mut bytes = change.raw_bytes().to_vec();
            // Mutate 1–4 bytes after the chunk header.
            let header = 12.min(bytes.len());
            for _ in 0..=(next() % 4) {
                let pos = header + (next() as usize) % (bytes.len() - header);
                bytes[pos] ^= 1 << (next() % 8);
            }
            fix_checksum(&mut bytes);
            push.push(PushDoc {
                doc: *id,
                data: bytes,
            });
        }
        let req = SyncRequest::new(0, 1 << 20, push);
        let body = encode_body(&req).unwrap();
        let r = s.post_sync(body.clone(), &phone.sign(&body)).await;
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
        let resp =
            decode_sync_response(&r.bytes().await.unwrap(), DEFAULT_MAX_DECOMPRESSED).unwrap();
        stored_mutants += resp
            .results
            .iter()
            .filter(|r| matches!(r, PushResult::Accepted { .. }))
            .count();
        // The clinic still syncs after every round.
        if let Err((status, text)) = nurse.try_sync_once(&s).await {
            panic!("round {round}: the clinic's sync answered {status}: {text}");
        }
    }
    // A new tablet pulls the whole clinic.
    let clinic = nurse.clinic;
    let mut tablet = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    for _ in 0..20 {
        match tablet.try_sync_once(&s).await {
            Ok(r) if !r.more => break,
            Ok(_) => {}
            Err((status, text)) => panic!("a new tablet's sync answered {status}: {text}"),
        }
    }
    // Every stored document loads.
    let db = s.db();
    let mut stmt = db.prepare("SELECT data FROM docs").unwrap();
    let blobs: Vec<Vec<u8>> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    for b in &blobs {
        automerge::Automerge::load(b).expect("a stored document loads");
    }
    eprintln!(
        "{stored_mutants} of {} mutated changes were stored (all loadable)",
        DOCS as u64 * ROUNDS
    );
}

/// Finding 1c: a stored document that cannot be loaded (damaged on disk, or stored by an older
/// server) made every pull of its clinic fail with 500. Now it is skipped and reported, and the
/// rest of the clinic is served.
#[tokio::test]
async fn a_stored_document_that_does_not_load_is_skipped_and_reported_not_a_500() {
    let s = start().await;
    let (mut nurse, mut phone, patient) = clinic_with_patient_phone(&s).await;
    let damaged = add_record(&mut phone, patient, &patient_ae(2));
    let fine = add_record(&mut phone, patient, &patient_ae(3));
    phone.sync(&s).await;
    s.db()
        .execute(
            "UPDATE docs SET data = ?1 WHERE id = ?2",
            rusqlite::params![b"\x85\x6f\x4a\x83garbage".to_vec(), damaged.0.to_vec()],
        )
        .unwrap();
    let clinic = nurse.clinic;
    let mut tablet = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    let r = tablet.try_sync_once(&s).await;
    assert!(r.is_ok(), "{r:?}");
    assert!(tablet.docs.contains_key(&fine));
    assert!(!tablet.docs.contains_key(&damaged));
    // A push to the damaged document is answered `busy` (kept, retried), not a 500 for the batch.
    let other = add_record(
        &mut nurse,
        patient,
        &AdverseEvent {
            reporter: Reporter::Clinic,
            ..patient_ae(1)
        },
    );
    nurse.sync(&s).await;
    assert!(nurse.docs[&other].rejected.is_none());
    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("followup_unloadable_documents_total"))
        .expect("the metric is exported");
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{line}");
}

/// Finding 5: enrolment accepted a small-order public key (the identity point), for which the
/// signature R = identity, S = 0 verifies any request. Now such keys are refused at enrolment,
/// and a weak key already stored cannot sign anything.
#[tokio::test]
async fn small_order_and_non_canonical_keys_are_refused_and_never_verify() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let s = start().await;
    let clinic = s.create_clinic("Clinica").await;
    let mut identity_point = [0u8; 32];
    identity_point[0] = 1;
    // y = p = 2^255 - 19: a non-canonical encoding of y = 0.
    let mut non_canonical = [0xffu8; 32];
    non_canonical[0] = 0xed;
    non_canonical[31] = 0x7f;
    for key in [identity_point, non_canonical] {
        let code = s
            .issue_code(EnrolmentGrant::ClinicDevice { clinic }, None)
            .await;
        let r = s
            .http
            .post(s.url(ENROL_PATH))
            .header("content-type", "application/json")
            .body(
                serde_json::to_vec(&EnrolRequest {
                    code,
                    public_key: b64.encode(key),
                    label: None,
                })
                .unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            400,
            "key {}: {:?}",
            hex::encode(key),
            r.text().await
        );
    }
    // A weak key that got in before the check: the forged signature does not verify.
    let dev = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    s.db()
        .execute(
            "UPDATE devices SET public_key = ?1 WHERE id = ?2",
            rusqlite::params![identity_point.to_vec(), dev.id.0.to_vec()],
        )
        .unwrap();
    let body = encode_body(&SyncRequest::new(0, 1 << 20, vec![])).unwrap();
    let mut headers = dev.sign(&body);
    let mut forged = [0u8; 64];
    forged[0] = 1; // R = identity, S = 0
    for h in headers.iter_mut() {
        if h.0 == followup_domain::identity::HEADER_SIGNATURE {
            h.1 = b64.encode(forged);
        }
    }
    let r = s.post_sync(body, &headers).await;
    assert_eq!(r.status(), 401);
}

/// Send raw bytes on a new connection; return what the server answered within `wait`.
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(bytes).await.unwrap();
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(wait, c.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "timeout".into(),
    }
}

/// Finding 2: unsigned 16 MiB bodies were buffered before the signature was checked. Now the
/// device and timestamp are checked from the headers first: an unsigned request is answered at
/// once, without its body.
#[tokio::test]
async fn an_unsigned_sync_is_refused_before_its_body_is_read() {
    let s = start().await;
    let head = format!(
        "POST {SYNC_PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: {SYNC_CONTENT_TYPE}\r\ncontent-length: {}\r\n\r\n",
        16 * 1024 * 1024
    );
    let mut bytes = head.into_bytes();
    bytes.extend(std::iter::repeat_n(0u8, 1024));
    let answer = raw_exchange(s.server.addr, &bytes, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // A declared body over the limit is refused before reading, even when signed headers are
    // present (they cannot be checked without the body: the limit comes first).
    let head = format!(
        "POST {SYNC_PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: {SYNC_CONTENT_TYPE}\r\ncontent-length: {}\r\n\r\n",
        1u64 << 40
    );
    let answer = raw_exchange(s.server.addr, head.as_bytes(), Duration::from_secs(3)).await;
    assert!(
        answer.starts_with("HTTP/1.1 413") || answer.starts_with("HTTP/1.1 401"),
        "{answer}"
    );
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

/// Finding 2: no header or body read timeouts; trickling connections made a real device's sync
/// fail; oversized unsigned bodies pinned memory. Now, with 200 hostile connections open (100
/// trickling headers, 100 posting 16 MiB unsigned bodies), a real device still syncs and the
/// process stays under 300 MiB; trickling connections are cut at the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_hostile_connections_do_not_stop_a_real_device() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    init();
    let dir = tempfile::tempdir().unwrap();
    let mut config = followup_server::Config::for_tests(dir.path(), Some(ADMIN));
    config.header_read_timeout_secs = 2;
    let server = followup_server::Server::start(config).await.unwrap();
    let s = TestServer {
        server,
        dir,
        http: reqwest::Client::new(),
    };
    let clinic = s.create_clinic("Clinica").await;
    let mut nurse = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    let addr = s.server.addr;
    let before = rss_mib();
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut tasks = Vec::new();
    for i in 0..200 {
        tasks.push(tokio::spawn(async move {
            let Ok(mut c) = tokio::net::TcpStream::connect(addr).await else {
                return (i, None);
            };
            if i % 2 == 0 {
                // Trickle a request head, one byte at a time.
                let head = format!("POST {SYNC_PATH} HTTP/1.1\r\nhost: x\r\nx-pad: ");
                for b in head.bytes().chain(std::iter::repeat(b'a')) {
                    if Instant::now() > deadline || c.write_all(&[b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                (i, Some(Instant::now() < deadline))
            } else {
                // An unsigned 16 MiB body, sent as fast as the server takes it.
                let head = format!(
                    "POST {SYNC_PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: {SYNC_CONTENT_TYPE}\r\ncontent-length: {}\r\n\r\n",
                    16 * 1024 * 1024
                );
                let _ = c.write_all(head.as_bytes()).await;
                let chunk = vec![0u8; 64 * 1024];
                for _ in 0..256 {
                    if Instant::now() > deadline || c.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                let mut buf = [0u8; 16];
                let _ = tokio::time::timeout(Duration::from_secs(1), c.read(&mut buf)).await;
                (i, None)
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A real device syncs meanwhile.
    let patient = nurse.enrolment();
    let started = Instant::now();
    nurse.sync(&s).await;
    let took = started.elapsed();
    assert!(nurse.docs[&patient].rejected.is_none());
    assert!(
        took < Duration::from_secs(5),
        "the device's sync took {took:?}"
    );
    let during = rss_mib();
    let mut cut = 0;
    for t in tasks {
        if let (_, Some(true)) = t.await.unwrap() {
            cut += 1;
        }
    }
    eprintln!("RSS before {before:.0} MiB, during {during:.0} MiB; device sync {took:?}; {cut}/100 tricklers cut before the 8 s deadline");
    assert!(during < 300.0, "RSS {during:.0} MiB");
    assert!(
        cut >= 90,
        "only {cut} of 100 trickling connections were cut"
    );
}

/// Finding 3: a 381-byte request wrote 100,000 rejection rows; a 66-byte request naming
/// another clinic's record 300 times loaded it 300 times (and answered with its heads). Now a
/// push has an entry limit, one entry per document, a header check before any load, and a
/// bounded number of rejections recorded.
#[tokio::test]
async fn a_tiny_request_cannot_write_many_rejections_or_load_others_records() {
    let s = start().await;
    let (mut nurse, mut phone, patient) = clinic_with_patient_phone(&s).await;
    let theirs = add_record(&mut phone, patient, &patient_ae(2));
    phone.sync(&s).await;
    nurse.sync(&s).await;
    let other_clinic = s.create_clinic("Elsewhere").await;
    let mut stranger = s
        .enrol(EnrolmentGrant::ClinicDevice {
            clinic: other_clinic,
        })
        .await;
    // 300 entries naming the other clinic's record, no changes.
    let push: Vec<PushDoc> = (0..300)
        .map(|_| PushDoc {
            doc: theirs,
            data: vec![],
        })
        .collect();
    let body = encode_body(&SyncRequest::new(0, 1 << 20, push)).unwrap();
    assert!(body.len() < 200, "{} bytes", body.len());
    let r = s.post_sync(body.clone(), &stranger.sign(&body)).await;
    assert_eq!(r.status(), 200);
    let resp = decode_sync_response(&r.bytes().await.unwrap(), DEFAULT_MAX_DECOMPRESSED).unwrap();
    assert!(
        matches!(
            resp.results[0],
            PushResult::Rejected {
                code: RejectCode::ForbiddenClinic,
                ..
            }
        ),
        "{:?}",
        resp.results[0]
    );
    assert!(resp
        .results
        .iter()
        .all(|r| matches!(r, PushResult::Rejected { .. })));
    // 100,000 empty entries for random documents.
    let push: Vec<PushDoc> = (0..100_000u32)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            PushDoc {
                doc: RecordId(id),
                data: vec![],
            }
        })
        .collect();
    let body = encode_body(&SyncRequest::new(0, 1 << 20, push)).unwrap();
    let r = s.post_sync(body.clone(), &stranger.sign(&body)).await;
    assert_eq!(r.status(), 200);
    let rows: i64 = s
        .db()
        .query_row("SELECT COUNT(*) FROM rejections", [], |r| r.get(0))
        .unwrap();
    assert!(rows <= 250, "{rows} rejection rows");
    let _ = stranger.sync_once(&s).await;
}

/// Finding 3: one device could run any number of syncs at once. Now a third concurrent one is
/// refused with 429 while two are in flight.
#[tokio::test]
async fn a_device_has_at_most_two_syncs_in_flight() {
    use tokio::io::AsyncWriteExt;
    let s = start().await;
    let clinic = s.create_clinic("Clinica").await;
    let nurse = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let body = encode_body(&SyncRequest::new(0, 1 << 20, vec![])).unwrap();
        let mut head = format!(
            "POST {SYNC_PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: {SYNC_CONTENT_TYPE}\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in nurse.sign(&body) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut c = tokio::net::TcpStream::connect(s.server.addr).await.unwrap();
        // The head and half the body: the request is in flight, waiting for the rest.
        c.write_all(head.as_bytes()).await.unwrap();
        c.write_all(&body[..body.len() / 2]).await.unwrap();
        held.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body = encode_body(&SyncRequest::new(0, 1 << 20, vec![])).unwrap();
    let r = s.post_sync(body.clone(), &nurse.sign(&body)).await;
    assert_eq!(r.status(), 429);
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = s.post_sync(body.clone(), &nurse.sign(&body)).await;
    assert_eq!(r.status(), 200);
}

/// Start a server with a configuration adjusted by `f`.
async fn start_with(f: impl FnOnce(&mut followup_server::Config)) -> TestServer {
    init();
    let dir = tempfile::tempdir().unwrap();
    let mut config = followup_server::Config::for_tests(dir.path(), Some(ADMIN));
    f(&mut config);
    let server = followup_server::Server::start(config).await.unwrap();
    TestServer {
        server,
        dir,
        http: reqwest::Client::new(),
    }
}

/// One sync exchange; returns the signed audit head the server sent.
async fn sync_for_head(dev: &mut TestDevice, s: &TestServer) -> String {
    let (req, _) = dev.build_request();
    let body = encode_body(&req).unwrap();
    let r = s.post_sync(body.clone(), &dev.sign(&body)).await;
    assert_eq!(r.status(), 200);
    r.headers()
        .get("x-followup-audit-head")
        .expect("every sync answer carries the signed audit head")
        .to_str()
        .unwrap()
        .to_string()
}

async fn verify_with(s: &TestServer, witness: Option<&str>) -> AuditVerifyResponse {
    let mut url = s.url("/v1/admin/audit/verify");
    if let Some(w) = witness {
        url.push_str(&format!("?witness={w}"));
    }
    let r = s
        .http
        .get(url)
        .header("authorization", format!("Bearer {ADMIN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    json(r).await
}

/// Finding 4: deleting the last audit entry, or rewriting the chain and recomputing every hash,
/// left `verify-audit` saying "intact". Now the chain's head is signed with a key outside the
/// database and kept by every device and in the anchor log: both are detected.
#[tokio::test]
async fn a_truncated_or_rewritten_audit_chain_is_detected_through_the_anchor() {
    let s = start().await;
    let clinic = s.create_clinic("Clinica").await;
    let mut nurse = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    let mut other = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    nurse.enrolment();
    sync_for_head(&mut nurse, &s).await;
    // The last entry records an admin act (no document write to cross-check it against).
    let r = s
        .admin_post(
            &format!("/v1/admin/devices/{}/revoke", other.id.to_hex()),
            &(),
        )
        .await;
    assert_eq!(r.status(), 200);
    let witness = sync_for_head(&mut nurse, &s).await;
    assert!(verify_with(&s, Some(&witness)).await.ok);
    let _ = &mut other;
    // A witness that was not signed by this registry is refused as such.
    let (seq, rest) = witness.split_once('.').unwrap();
    let forged = format!("{}.{rest}", seq.parse::<u64>().unwrap() - 1);
    let v = verify_with(&s, Some(&forged)).await;
    assert!(!v.ok);
    assert!(
        v.problem.as_deref().unwrap().contains("not signed"),
        "{v:?}"
    );

    // Rewrite: entry 1 is edited and every hash after it recomputed, so the chain itself is
    // consistent; the anchored head no longer matches.
    let db = s.db();
    db.execute_batch("DROP TRIGGER audit_no_delete; DROP TRIGGER audit_no_update;")
        .unwrap();
    let rows = s.server.storage().audit_rows(0, 10_000).unwrap();
    let mut prev = followup_server::audit::GENESIS;
    for (i, row) in rows.iter().enumerate() {
        let mut entry = row.entry.clone();
        if i == 0 {
            entry.detail = "rewritten".into();
        }
        let hash = followup_server::audit::entry_hash(&prev, row.seq, &entry);
        db.execute(
            "UPDATE audit SET detail = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
            rusqlite::params![entry.detail, prev.to_vec(), hash.to_vec(), row.seq as i64],
        )
        .unwrap();
        prev = hash;
    }
    let v = verify_with(&s, Some(&witness)).await;
    assert!(!v.ok, "a rewritten chain passed: {v:?}");
    assert!(v.problem.as_deref().unwrap().contains("rewritten"), "{v:?}");

    // Truncation: the revocation's audit entry is deleted.
    db.execute_batch("DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit);")
        .unwrap();
    let v = verify_with(&s, None).await;
    assert!(!v.ok, "a truncated chain passed: {v:?}");
    assert!(v.problem.as_deref().unwrap().contains("removed"), "{v:?}");
    let v = verify_with(&s, Some(&witness)).await;
    assert!(!v.ok);
}

/// Finding 7: nothing stopped two servers from opening one SQLite data directory.
#[tokio::test]
async fn a_second_server_on_one_data_directory_is_refused() {
    let s = start().await;
    let again = followup_server::Server::start(followup_server::Config::for_tests(
        s.dir.path(),
        Some(ADMIN),
    ))
    .await;
    let err = match again {
        Ok(_) => panic!("a second server opened the same data directory"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("already using"), "{err}");
    // Files are private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let dir_mode = std::fs::metadata(s.dir.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let db_mode = std::fs::metadata(s.dir.path().join("registry.sqlite3"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(db_mode & 0o777, 0o600);
    }
}

/// Operability: liveness, readiness, Prometheus metrics.
#[tokio::test]
async fn health_ready_and_metrics_answer() {
    let s = start().await;
    let clinic = s.create_clinic("Clinica").await;
    let mut nurse = s.enrol(EnrolmentGrant::ClinicDevice { clinic }).await;
    nurse.enrolment();
    nurse.sync(&s).await;
    let r = s.http.get(s.url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = s.http.get(s.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "followup_sync_requests_total{outcome=\"ok\"}",
        "followup_sync_request_bytes_total",
        "followup_sync_duration_seconds_bucket",
        "followup_active_devices",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(text.trim_end().ends_with("# EOF"));
}

/// The OpenAPI document: every documented route answers (not 404), and every JSON type, as the
/// server writes it, has the documented required and allowed properties.
#[tokio::test]
async fn the_openapi_document_matches_the_routes_and_the_json_types() {
    use serde_json::Value;
    let s = start().await;
    let r = s.http.get(s.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = json(r).await;
    let paths = doc["paths"].as_object().unwrap();
    for (path, ops) in paths {
        let concrete = path.replace("{id}", "00000000000000000000000000000000");
        for method in ops.as_object().unwrap().keys() {
            let req = match method.as_str() {
                "get" => s.http.get(s.url(&concrete)),
                "post" => s.http.post(s.url(&concrete)),
                other => panic!("unexpected method {other}"),
            };
            let r = req
                .header("authorization", format!("Bearer {ADMIN}"))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            assert!(
                status != 404 || body.contains("no device"),
                "{method} {path} is documented but answers 404: {body}"
            );
        }
    }
    // Every JSON route the server has is documented.
    for route in [
        "/health",
        "/ready",
        "/metrics",
        ENROL_PATH,
        SYNC_PATH,
        "/v1/admin/clinics",
        "/v1/admin/enrolment-codes",
        "/v1/admin/devices/{id}/revoke",
        "/v1/admin/audit/verify",
        "/v1/admin/stats",
    ] {
        assert!(paths.contains_key(route), "{route} is not documented");
    }
    // Each schema against a real value.
    let schemas = &doc["components"]["schemas"];
    let check = |name: &str, v: Value| {
        let schema = &schemas[name];
        let props = schema["properties"].as_object().unwrap();
        let obj = v.as_object().unwrap();
        for k in obj.keys() {
            assert!(props.contains_key(k), "{name}: {k} is not documented");
        }
        for req in schema["required"].as_array().unwrap() {
            assert!(
                obj.contains_key(req.as_str().unwrap()),
                "{name}: {req} missing"
            );
        }
    };
    let clinic = s.create_clinic("Clinica").await;
    let health: Value = json(s.http.get(s.url("/health")).send().await.unwrap()).await;
    check("HealthResponse", health);
    let ready: Value = json(s.http.get(s.url("/ready")).send().await.unwrap()).await;
    check("ReadyResponse", ready);
    check(
        "CreateClinicRequest",
        serde_json::to_value(CreateClinicRequest {
            name: "a".into(),
            country: "pt".into(),
        })
        .unwrap(),
    );
    check(
        "CreateClinicResponse",
        serde_json::to_value(CreateClinicResponse { clinic }).unwrap(),
    );
    let issue = IssueEnrolmentCodeRequest {
        grant: EnrolmentGrant::ClinicDevice { clinic },
        expires_in_secs: Some(60),
    };
    check(
        "IssueEnrolmentCodeRequest",
        serde_json::to_value(&issue).unwrap(),
    );
    let issued: Value = json(s.admin_post("/v1/admin/enrolment-codes", &issue).await).await;
    check("IssueEnrolmentCodeResponse", issued.clone());
    let (identity, _) = followup_domain::identity::DeviceIdentity::generate().unwrap();
    let enrol = EnrolRequest {
        code: issued["code"].as_str().unwrap().into(),
        public_key: identity.public_key_base64(),
        label: Some("t".into()),
    };
    check("EnrolRequest", serde_json::to_value(&enrol).unwrap());
    let enrolled: Value = json(
        s.http
            .post(s.url(ENROL_PATH))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&enrol).unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    check("EnrolResponse", enrolled.clone());
    let revoked: Value = json(
        s.admin_post(
            &format!(
                "/v1/admin/devices/{}/revoke",
                enrolled["device_id"].as_str().unwrap()
            ),
            &(),
        )
        .await,
    )
    .await;
    check("RevokeDeviceResponse", revoked);
    check(
        "AuditVerifyResponse",
        serde_json::to_value(s.verify_audit().await).unwrap(),
    );
    check(
        "StatsResponse",
        serde_json::to_value(s.stats().await).unwrap(),
    );
    let err: Value = json(s.http.get(s.url("/nope")).send().await.unwrap()).await;
    check("ErrorBody", err);
}

/// Rate limits on enrolment (and the admin API): past the burst, 429 with Retry-After.
#[tokio::test]
async fn enrolment_is_rate_limited_per_address() {
    let s = start_with(|c| c.enrol_per_minute = 3).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = s
            .http
            .post(s.url(ENROL_PATH))
            .header("content-type", "application/json")
            .body(r#"{"code":"AAAA-BBBB-CCCC","public_key":"x"}"#)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..3], &[400, 400, 400], "{statuses:?}");
    assert_eq!(&statuses[3..], &[429, 429], "{statuses:?}");
}

/// HTTPS served by the server itself, and a renewed certificate taken without a restart.
#[tokio::test]
async fn https_is_served_and_the_certificate_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    let make = || {
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
    };
    let first = make();
    std::fs::write(&cert_path, first.cert.pem()).unwrap();
    std::fs::write(&key_path, first.signing_key.serialize_pem()).unwrap();
    let (c, k) = (cert_path.clone(), key_path.clone());
    let s = start_with(move |cfg| {
        cfg.tls_cert = Some(c);
        cfg.tls_key = Some(k);
    })
    .await;
    assert!(s.server.url().starts_with("https://"));
    let client_for = |pem: &str| {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
            .build()
            .unwrap()
    };
    let url = format!("https://localhost:{}/health", s.server.addr.port());
    let r = client_for(&first.cert.pem())
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Plain HTTP to a TLS port gets nothing useful.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{}/health", s.server.addr.port()))
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
    );
    // Renewal: new files, picked up within the reload interval.
    let second = make();
    std::fs::write(&cert_path, second.cert.pem()).unwrap();
    std::fs::write(&key_path, second.signing_key.serialize_pem()).unwrap();
    tokio::time::sleep(followup_server::tls::RELOAD_CHECK_INTERVAL + Duration::from_millis(500))
        .await;
    let mut ok = false;
    for _ in 0..2 {
        if let Ok(r) = client_for(&second.cert.pem()).get(&url).send().await {
            ok = r.status() == 200;
            if ok {
                break;
            }
        }
    }
    assert!(ok, "the renewed certificate was not served");
}
