//! Protocol version 3 end to end: an exchange cut at random byte offsets, on the way up and on
//! the way down, resumes with exactly the bytes the other side had not received; the real client
//! resumes through a link that cuts at random bytes; and a version 1 client still syncs.

use std::time::Duration;

use followup_device::device::Device;
use followup_device::sync::{SyncPhase, SyncProgress};
use followup_domain::model::RecordKind;
use followup_domain::protocol::*;
use followup_e2e::*;
use followup_testkit::shaper::{Shaper, ShaperConfig};
use followup_testkit::workload;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A deterministic xorshift, so each failure names its offsets.
struct Xs(u64);
impl Xs {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The push of every document of `device` from empty heads, enrolments first, as the client
/// builds it.
fn push_all(device: &Device, ids: &[followup_domain::ids::RecordId]) -> Vec<PushDoc> {
    let mut ids = ids.to_vec();
    ids.sort_by_key(|id| device.store().meta(id).unwrap().unwrap().kind != RecordKind::Enrolment);
    ids.iter()
        .map(|id| PushDoc {
            doc: *id,
            data: device.load(*id).unwrap().save_after(&[]),
        })
        .collect()
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
    out
}

fn hex32(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Signed headers of a version 3 request.
fn signed(
    t: &TestDevice,
    method: &str,
    path: &str,
    hash: &[u8; 32],
) -> Vec<(&'static str, String)> {
    let e = t.enrolment().unwrap();
    t.identity()
        .unwrap()
        .sign_request_hashed(e.device_id, method, path, hash, now_ms())
        .to_header_pairs()
        .to_vec()
}

/// Send a version 3 POST over a raw socket with the whole `length` announced but only `send`
/// bytes of its body, then close our side: the connection is cut after exactly that many body
/// bytes.
async fn cut_post(
    reg: &Registry,
    t: &TestDevice,
    hash: &[u8; 32],
    length: usize,
    offset: usize,
    send: &[u8],
) {
    let path = format!(
        "{SYNC_RESUMABLE_PATH}/{}?offset={offset}&length={length}",
        hex32(hash)
    );
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: {SYNC_CONTENT_TYPE}\r\ncontent-length: {}\r\n",
        reg.server.addr,
        length - offset
    );
    for (k, v) in signed(t, "POST", &path, hash) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut s = tokio::net::TcpStream::connect(reg.server.addr)
        .await
        .unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(send).await.unwrap();
    s.shutdown().await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
}

/// `received` as the server reports it to a probe, waiting (bounded) until it is `want`.
async fn received(reg: &Registry, t: &TestDevice, hash: &[u8; 32], want: u64) -> u64 {
    let mut last = 0;
    for _ in 0..100 {
        let path = format!("{SYNC_RESUMABLE_PATH}/{}?offset=0", hex32(hash));
        let mut rb = reg.http.get(format!("{}{path}", reg.url()));
        for (k, v) in signed(t, "GET", &path, hash) {
            rb = rb.header(k, v);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(
            r.status().as_u16(),
            409,
            "the upload must not be complete yet"
        );
        let b: ErrorBody = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(b.code, ErrorCode::UploadIncomplete);
        last = b.received.unwrap();
        assert!(
            last <= want,
            "the server holds {last} bytes, more than the {want} sent"
        );
        if last == want {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_cut_at_random_bytes_resume_with_only_the_rest() {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("Resume").await;
    let t = reg.clinic_tablet(clinic, "tablet").await;
    let mut data = workload::populate_patients(&t, 20).unwrap();
    workload::populate_responses(&t, &mut data, 7, 60).unwrap();
    let ids = t.ids();
    let n_docs = ids.len() as u64;
    let encoded = encode_body(&SyncRequest::new(0, 8 << 20, push_all(&t, &ids))).unwrap();
    let mut rng = Xs(0x5eed_1234_abcd_0001);
    let before = reg.stats().await;
    let mut response_total = 0;
    for round in 0..3 {
        // Each round is its own exchange (a fresh exchange id), pushing the same documents: the
        // first merges them, the others are idempotent.
        let mut upload = followup_domain::ids::random_bytes::<EXCHANGE_ID_LEN>().to_vec();
        upload.extend_from_slice(&encoded);
        let hash = sha256(&upload);
        let len = upload.len();
        // Cut the upload twice at random bytes.
        let k1 = 1 + rng.below(len as u64 / 2) as usize;
        cut_post(&reg, &t, &hash, len, 0, &upload[..k1]).await;
        assert_eq!(
            received(&reg, &t, &hash, k1 as u64).await,
            k1 as u64,
            "round {round}, cut at {k1}"
        );
        let k2 = k1 + 1 + rng.below((len - k1 - 1) as u64) as usize;
        cut_post(&reg, &t, &hash, len, k1, &upload[k1..k2]).await;
        assert_eq!(
            received(&reg, &t, &hash, k2 as u64).await,
            k2 as u64,
            "round {round}, cut at {k2}"
        );
        // The rest, and only the rest, completes the exchange.
        let path = format!(
            "{SYNC_RESUMABLE_PATH}/{}?offset={k2}&length={len}",
            hex32(&hash)
        );
        let mut rb = reg
            .http
            .post(format!("{}{path}", reg.url()))
            .header("content-type", SYNC_CONTENT_TYPE)
            .body(upload[k2..].to_vec());
        for (k, v) in signed(&t, "POST", &path, &hash) {
            rb = rb.header(k, v);
        }
        let mut r = rb.send().await.unwrap();
        // The merge may outlast the server's wait (a loaded machine): `202 processing`, then
        // the response is fetched with `GET` (what the client does).
        for _ in 0..100 {
            if r.status().as_u16() != 202 {
                break;
            }
            let b: ErrorBody = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            assert_eq!(b.code, ErrorCode::Processing, "{b:?}");
            let path = format!("{SYNC_RESUMABLE_PATH}/{}?offset=0", hex32(&hash));
            let mut rb = reg.http.get(format!("{}{path}", reg.url()));
            for (k, v) in signed(&t, "GET", &path, &hash) {
                rb = rb.header(k, v);
            }
            r = rb.send().await.unwrap();
        }
        assert_eq!(r.status().as_u16(), 200);
        let total: usize = r.headers()[RESPONSE_LENGTH_HEADER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let whole = r.bytes().await.unwrap().to_vec();
        assert_eq!(whole.len(), total);
        response_total = total;
        // Download cut at a random byte, then resumed from it: the second GET carries exactly
        // the bytes not yet received.
        let j = rng.below(total as u64) as usize;
        let path = format!("{SYNC_RESUMABLE_PATH}/{}?offset={j}", hex32(&hash));
        let mut rb = reg.http.get(format!("{}{path}", reg.url()));
        for (k, v) in signed(&t, "GET", &path, &hash) {
            rb = rb.header(k, v);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.headers()[RESPONSE_LENGTH_HEADER].to_str().unwrap(),
            total.to_string()
        );
        let rest = r.bytes().await.unwrap();
        assert_eq!(
            rest.len(),
            total - j,
            "round {round}: resumed at {j} of {total}"
        );
        let mut joined = whole[..j].to_vec();
        joined.extend_from_slice(&rest);
        let resp = decode_sync_response(&joined, 64 << 20).unwrap();
        assert_eq!(resp.version, PROTOCOL_VERSION);
        assert_eq!(resp.results.len() as u64, n_docs);
        assert!(resp
            .results
            .iter()
            .all(|r| matches!(r, PushResult::Accepted { .. })));
    }
    assert!(response_total > 0);
    // Every document merged once: one write, one log entry, one audit entry each.
    let after = reg.stats().await;
    assert_eq!(after.documents - before.documents, n_docs);
    assert_eq!(after.log_seq - before.log_seq, n_docs);
    assert_eq!(after.audit_entries - before.audit_entries, n_docs);
    assert!(reg.verify_audit().await.ok);
}

/// The link of the client tests: 8,000 B/s (64 kbit/s) each way, 200 ms round trip, set-up
/// charged, every open connection reset every 2 s.
const RATE: u64 = 8_000;
const PERIOD: Duration = Duration::from_secs(2);

fn dropping_link() -> ShaperConfig {
    ShaperConfig {
        bytes_per_sec: Some(RATE),
        rtt: Duration::from_millis(200),
        charge_setup: true,
        reset_every: Some(PERIOD),
    }
}

/// Options of the client tests: bounded (the test fails rather than hangs), retries quick.
fn bounded_options() -> followup_device::sync::SyncOptions {
    followup_device::sync::SyncOptions {
        deadline: Duration::from_secs(120),
        timeout: Duration::from_secs(30),
        ..test_options()
    }
}

/// A real tablet pushes a backlog that takes longer to cross than the link stays up, through a
/// link reset every 2 s; then a fresh tablet pulls it all through the same link. Both finish;
/// every record is written once; the upload and the download resume from the byte offset
/// (neither could ever finish restarting from zero, and the bytes on the link stay close to
/// one copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_finishes_through_a_link_dropping_every_two_seconds() {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("Resume client").await;
    let ta = reg.clinic_tablet(clinic, "tablet A").await;
    let mut data = workload::populate_patients(&ta, 40).unwrap();
    workload::populate_responses(&ta, &mut data, 11, 250).unwrap();
    let n_docs = ta.ids().len() as u64;
    let link = Shaper::start(reg.server.addr, dropping_link())
        .await
        .unwrap();
    ta.set_server_url(&link.url());
    let client = followup_device::sync::SyncClient::new(bounded_options()).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<SyncProgress>::new()));
    let s2 = seen.clone();
    let progress = move |p: SyncProgress| s2.lock().unwrap().push(p);
    let before = reg.stats().await;
    let r = tokio::time::timeout(
        Duration::from_secs(150),
        client.sync(&ta, &progress, &followup_device::sync::CancelToken::new()),
    )
    .await
    .expect("the push did not finish in 150 s")
    .unwrap();
    let up_link = link.stats();
    eprintln!("push: {up_link:?} {r:?}");
    assert_eq!(r.pushed, n_docs);
    let events = seen.lock().unwrap().clone();
    let upload_total = events.iter().map(|p| p.upload_total).max().unwrap();
    assert!(
        upload_total as f64 / RATE as f64 > PERIOD.as_secs_f64(),
        "the upload ({upload_total} bytes) must take longer than the link stays up"
    );
    assert!(up_link.resets > 0, "{up_link:?}");
    // The upload went on from what the server held, not from byte 0.
    let resumed_from: Vec<u64> = events
        .iter()
        .filter(|p| p.phase == SyncPhase::Sending && p.upload_done > 0)
        .map(|p| p.upload_done)
        .collect();
    assert!(
        !resumed_from.is_empty(),
        "no upload resumed mid-way ({up_link:?})"
    );
    // On the link: one copy of the request, the requests' headers, and what was in flight at
    // each reset; never a copy per attempt.
    assert!(
        (up_link.bytes_up as f64) < upload_total as f64 * 1.5,
        "{} bytes up on the link for a {upload_total}-byte request ({up_link:?}, {r:?})",
        up_link.bytes_up
    );
    let after = reg.stats().await;
    assert_eq!(
        after.log_seq - before.log_seq,
        n_docs,
        "every record written once"
    );
    assert_eq!(after.documents - before.documents, n_docs);
    assert_eq!(after.audit_entries - before.audit_entries, n_docs);

    // A fresh tablet pulls everything through the same dropping link.
    let tb = reg.clinic_tablet(clinic, "tablet B").await;
    tb.set_server_url(&link.url());
    link.reset_stats();
    seen.lock().unwrap().clear();
    let r = tokio::time::timeout(
        Duration::from_secs(150),
        client.sync(&tb, &progress, &followup_device::sync::CancelToken::new()),
    )
    .await
    .expect("the pull did not finish in 150 s")
    .unwrap();
    let down_link = link.stats();
    eprintln!("pull: {down_link:?} {r:?}");
    assert!(r.pulled >= n_docs, "{r:?}");
    let events = seen.lock().unwrap().clone();
    let download_total = events.iter().map(|p| p.download_total).max().unwrap();
    assert!(
        download_total as f64 / RATE as f64 > PERIOD.as_secs_f64(),
        "the download ({download_total} bytes) must take longer than the link stays up"
    );
    assert!(down_link.resets > 0, "{down_link:?}");
    assert!(
        (down_link.bytes_down as f64) < download_total as f64 * 1.5,
        "{} bytes down on the link for a {download_total}-byte response ({down_link:?}, {r:?})",
        down_link.bytes_down
    );
    assert_eq!(ta.snapshot(), tb.snapshot());
    assert_eq!(
        reg.stats().await.log_seq,
        after.log_seq,
        "a pull writes nothing"
    );
    assert!(reg.verify_audit().await.ok);
}

/// The same client through a link cut at random byte offsets of each connection (request line,
/// headers, body or response alike): it finishes, writes each record once, and resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_resumes_a_push_and_a_pull_cut_at_random_bytes() {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("Resume client").await;
    let ta = reg.clinic_tablet(clinic, "tablet A").await;
    let mut data = workload::populate_patients(&ta, 30).unwrap();
    workload::populate_responses(&ta, &mut data, 11, 150).unwrap();
    let n_docs = ta.ids().len() as u64;
    // Throttled (so bytes before a cut reach the other side, as on a real link), cut at a
    // random offset of each connection, at most 12 cuts so the test ends.
    let cutting = |seed, max_cuts| LinkConfig {
        cut: CutPolicy::RandomBytes {
            seed,
            max_bytes: 9_000,
        },
        max_cuts: Some(max_cuts),
        ..LinkConfig::slow(200_000, Duration::from_millis(2))
    };
    let link = LinkSim::start(reg.server.addr, cutting(99, 12))
        .await
        .unwrap();
    ta.set_server_url(&link.url());
    let client = followup_device::sync::SyncClient::new(bounded_options()).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<SyncProgress>::new()));
    let s2 = seen.clone();
    let progress = move |p: SyncProgress| s2.lock().unwrap().push(p);
    let before = reg.stats().await;
    let r = client
        .sync(&ta, &progress, &followup_device::sync::CancelToken::new())
        .await
        .unwrap();
    assert_eq!(r.pushed, n_docs);
    let cuts = link.stats().cuts;
    assert!(cuts > 0, "{:?}", link.stats());
    let events = seen.lock().unwrap().clone();
    let upload_total = events.iter().map(|p| p.upload_total).max().unwrap();
    assert!(
        events
            .iter()
            .any(|p| p.phase == SyncPhase::Sending && p.upload_done > 0),
        "no upload resumed mid-way ({:?})",
        link.stats()
    );
    // On the link: the request once, plus at most one connection's budget per cut.
    assert!(
        link.stats().bytes_up < upload_total + cuts * 9_000,
        "{:?} for a {upload_total}-byte request",
        link.stats()
    );
    let after = reg.stats().await;
    assert_eq!(
        after.log_seq - before.log_seq,
        n_docs,
        "nothing written twice"
    );
    assert_eq!(after.audit_entries - before.audit_entries, n_docs);

    let tb = reg.clinic_tablet(clinic, "tablet B").await;
    link.set_config(cutting(5, cuts + 12));
    tb.set_server_url(&link.url());
    let r = client
        .sync(&tb, &progress, &followup_device::sync::CancelToken::new())
        .await
        .unwrap();
    assert!(r.pulled >= n_docs, "{r:?}");
    assert_eq!(ta.snapshot(), tb.snapshot());
    assert!(reg.verify_audit().await.ok);
}

/// What an app of an older protocol `version` does: 3 patients with 5 responses each, pushed in
/// one signed `POST /v1/sync` of that version. Returns the ids pushed and the decoded answer.
async fn old_client_push(
    reg: &Registry,
    t: &TestDevice,
    version: u16,
) -> (Vec<followup_domain::ids::RecordId>, SyncResponse) {
    let mut data = workload::populate_patients(t, 3).unwrap();
    workload::populate_responses(t, &mut data, 3, 5).unwrap();
    let ids = t.ids();
    let mut req = SyncRequest::new(0, 1 << 20, push_all(t, &ids));
    req.version = version;
    let body = encode_body(&req).unwrap();
    let e = t.enrolment().unwrap();
    let sig = t
        .identity()
        .unwrap()
        .sign_request(e.device_id, "POST", SYNC_PATH, &body, now_ms());
    let mut rb = reg
        .http
        .post(format!("{}{SYNC_PATH}", reg.url()))
        .header("content-type", SYNC_CONTENT_TYPE)
        .body(body);
    for (k, v) in sig.to_header_pairs() {
        rb = rb.header(k, v);
    }
    let r = rb.send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let resp = decode_sync_response(&r.bytes().await.unwrap(), 1 << 24).unwrap();
    (ids, resp)
}

/// A client of protocol version 1 (one `POST /v1/sync`, version 1 body) still syncs with a
/// version 3 server, and gets version 1 back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_client_v1_still_syncs() {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("Old app").await;
    let t = reg.clinic_tablet(clinic, "old tablet").await;
    // The registry's own documents (its policy and published definitions) are there already.
    let before = reg.stats().await.documents;
    let (ids, resp) = old_client_push(&reg, &t, 1).await;
    // What a version 1 client decodes: the version it speaks, first.
    assert_eq!(resp.version, 1);
    assert_eq!(resp.results.len(), ids.len());
    assert!(resp
        .results
        .iter()
        .all(|r| matches!(r, PushResult::Accepted { .. })));
    assert_eq!(reg.stats().await.documents, before + ids.len() as u64);
}

/// A client of protocol version 2 (one `POST /v1/sync`, version 2 body: what the app spoke
/// before the resumable routes) still syncs, gets version 2 back; and the current client with
/// the resumable routes turned off does the same whole exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_2_one_shot_clients_still_sync() {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("Version 2 app").await;
    let t = reg.clinic_tablet(clinic, "v2 tablet").await;
    let (ids, resp) = old_client_push(&reg, &t, 2).await;
    assert_eq!(resp.version, 2);
    assert_eq!(resp.results.len(), ids.len());
    assert!(resp
        .results
        .iter()
        .all(|r| matches!(r, PushResult::Accepted { .. })));

    // The current client, one-shot: a second tablet pulls all of it over `POST /v1/sync`.
    let t2 = reg.clinic_tablet(clinic, "one-shot tablet").await;
    let client = followup_device::sync::SyncClient::new(followup_device::sync::SyncOptions {
        resumable: false,
        ..test_options()
    })
    .unwrap();
    let r = client
        .sync(&t2, &|_| {}, &followup_device::sync::CancelToken::new())
        .await
        .unwrap();
    assert!(r.pulled >= ids.len() as u64, "{r:?}");
    for id in &ids {
        assert_eq!(
            t.load(*id).unwrap().get_heads(),
            t2.load(*id).unwrap().get_heads()
        );
    }
}

/// A registry of before the resumable routes, as a version 3 client meets it: a proxy in front
/// of the real server that answers every `/v3/…` request `404 not_found` (what an older
/// server's router answers for a route it does not have) and forwards everything else.
async fn registry_without_resumable_routes(
    target: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = refused.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut first = vec![0u8; 16];
                let Ok(n) = client.peek(&mut first).await else {
                    return;
                };
                let line = String::from_utf8_lossy(&first[..n]).to_string();
                if line.starts_with("POST /v3/") || line.starts_with("GET /v3/") {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let body = r#"{"code":"not_found","message":"no such route"}"#;
                    let head = format!(
                        "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = client.write_all(head.as_bytes()).await;
                    let _ = client.shutdown().await;
                    return;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (addr, refused)
}

/// The current client against a registry without the resumable routes: it falls back to the
/// one-shot `POST /v1/sync` (version 2) and pushes and pulls everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_falls_back_to_one_shot_on_a_registry_without_resumable_routes() {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("Older registry").await;
    let ta = reg.clinic_tablet(clinic, "tablet A").await;
    let mut data = workload::populate_patients(&ta, 4).unwrap();
    workload::populate_responses(&ta, &mut data, 5, 12).unwrap();
    let n_docs = ta.ids().len() as u64;
    let (old, refused) = registry_without_resumable_routes(reg.server.addr).await;
    let url = format!("http://{old}");
    ta.set_server_url(&url);
    let client = followup_device::sync::SyncClient::new(test_options()).unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        client.sync(&ta, &|_| {}, &followup_device::sync::CancelToken::new()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(r.pushed, n_docs);
    assert_eq!(
        refused.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one discovery per sync"
    );
    let tb = reg.clinic_tablet(clinic, "tablet B").await;
    tb.set_server_url(&url);
    let r = client
        .sync(&tb, &|_| {}, &followup_device::sync::CancelToken::new())
        .await
        .unwrap();
    assert!(r.pulled >= n_docs, "{r:?}");
    assert_eq!(ta.snapshot(), tb.snapshot());
}

/// A piece is authenticated from its headers before a byte of its body is stored: a piece
/// signed by another key, or unsigned, is refused and leaves nothing staged; an upload longer
/// than the body limit is refused before its body is read (so a device's staged bytes stay
/// under one upload of at most the body limit: starting a new upload drops its other ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieces_are_authenticated_before_they_are_stored() {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("Guarded").await;
    let t = reg.clinic_tablet(clinic, "tablet").await;
    let other = reg.clinic_tablet(clinic, "other tablet").await;
    let upload = vec![7u8; 4096];
    let hash = sha256(&upload);
    let len = upload.len();
    let path = format!(
        "{SYNC_RESUMABLE_PATH}/{}?offset=0&length={len}",
        hex32(&hash)
    );
    let post = |headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let mut rb = reg
            .http
            .post(format!("{}{path}", reg.url()))
            .header("content-type", SYNC_CONTENT_TYPE)
            .body(body);
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        rb.send()
    };
    // Unsigned.
    let r = post(Vec::new(), upload.clone()).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Signed with the other tablet's key but claiming this tablet's id.
    let e = t.enrolment().unwrap();
    let forged = other
        .identity()
        .unwrap()
        .sign_request_hashed(e.device_id, "POST", &path, &hash, now_ms())
        .to_header_pairs()
        .to_vec();
    let r = post(forged, upload.clone()).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Signed for another upload name (the signature covers the content hash).
    let wrong = sha256(b"something else");
    let r = post(signed(&t, "POST", &path, &wrong), upload.clone())
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Nothing of those bodies was kept.
    assert_eq!(received(&reg, &t, &hash, 0).await, 0);
    // Longer than the body limit: refused from the query, before the body.
    let huge = 1u64 << 40;
    let path_huge = format!(
        "{SYNC_RESUMABLE_PATH}/{}?offset=0&length={huge}",
        hex32(&hash)
    );
    let mut rb = reg
        .http
        .post(format!("{}{path_huge}", reg.url()))
        .header("content-type", SYNC_CONTENT_TYPE)
        .body(upload[..16].to_vec());
    for (k, v) in signed(&t, "POST", &path_huge, &hash) {
        rb = rb.header(k, v);
    }
    assert_eq!(rb.send().await.unwrap().status().as_u16(), 413);
    assert_eq!(received(&reg, &t, &hash, 0).await, 0);
    // The genuine piece is stored.
    let half = len / 2;
    cut_post(&reg, &t, &hash, len, 0, &upload[..half]).await;
    assert_eq!(received(&reg, &t, &hash, half as u64).await, half as u64);
}
