//! A minimal test-only sync client and document builders (the real client is core's `sync`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ChangeHash, ObjType, ReadDoc, ROOT};
use followup_domain::identity::DeviceIdentity;
use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::protocol::*;
use followup_server::{Config, RunningServer, Server};

pub const ADMIN: &str = "test-admin-token-0123456789";

pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_test_writer()
        .try_init();
}

pub struct TestServer {
    pub server: RunningServer,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

pub async fn start() -> TestServer {
    start_with(|_| {}).await
}

/// A test server whose configuration `adjust` changes first.
pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
    init();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path(), Some(ADMIN));
    adjust(&mut config);
    let server = Server::start(config).await.unwrap();
    TestServer {
        server,
        dir,
        // Idle pooled connections are dropped before the server's idle limit (the header read
        // timeout, 10 s) closes them: otherwise a request can race the server's close.
        http: reqwest::Client::builder()
            .pool_idle_timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap(),
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.url(), path)
    }

    pub async fn admin_post<T: serde::Serialize>(&self, path: &str, body: &T) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).unwrap())
            .send()
            .await
            .unwrap()
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("authorization", format!("Bearer {ADMIN}"))
            .send()
            .await
            .unwrap()
    }

    /// The registry's admin API through the workspace's one staff client (the raw
    /// `admin_post` / `admin_get` above are for probing the API's contract itself).
    pub fn staff(&self) -> followup_staff_client::StaffClient {
        followup_staff_client::StaffClient::new(&self.server.url(), Some(ADMIN)).unwrap()
    }

    pub async fn create_clinic(&self, name: &str) -> RecordId {
        self.staff().create_clinic(name, "pt").await.unwrap()
    }

    pub async fn issue_code(&self, grant: EnrolmentGrant, ttl: Option<u64>) -> String {
        self.staff().issue_code(grant, ttl).await.unwrap().code
    }

    pub async fn enrol_raw(&self, code: &str, identity: &DeviceIdentity) -> reqwest::Response {
        self.http
            .post(self.url(ENROL_PATH))
            .header("content-type", "application/json")
            .body(
                serde_json::to_vec(&EnrolRequest {
                    code: code.into(),
                    public_key: identity.public_key_base64(),
                    label: Some("test".into()),
                })
                .unwrap(),
            )
            .send()
            .await
            .unwrap()
    }

    pub async fn enrol(&self, grant: EnrolmentGrant) -> TestDevice {
        let code = self.issue_code(grant, None).await;
        let (identity, _) = DeviceIdentity::generate().unwrap();
        let r = self.enrol_raw(&code, &identity).await;
        assert_eq!(r.status(), 200);
        let e: EnrolResponse = json(r).await;
        TestDevice {
            id: e.device_id,
            identity,
            clinic: e.clinic,
            patient: e.patient,
            docs: HashMap::new(),
            cursor: 0,
            max_pull_bytes: 1 << 20,
            last_request_bytes: 0,
            last_response_bytes: 0,
        }
    }

    /// Post a body with given headers to /v1/sync.
    pub async fn post_sync(&self, body: Vec<u8>, headers: &[(&str, String)]) -> reqwest::Response {
        let mut rb = self
            .http
            .post(self.url(SYNC_PATH))
            .header("content-type", SYNC_CONTENT_TYPE);
        for (k, v) in headers {
            rb = rb.header(*k, v);
        }
        rb.body(body).send().await.unwrap()
    }

    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join("registry.sqlite3")).unwrap()
    }

    pub async fn verify_audit(&self) -> AuditVerifyResponse {
        self.staff().verify_audit().await.unwrap()
    }

    pub async fn stats(&self) -> StatsResponse {
        self.staff().stats().await.unwrap()
    }
}

pub async fn json<T: serde::de::DeserializeOwned>(r: reqwest::Response) -> T {
    let bytes = r.bytes().await.unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)))
}

pub async fn error_body(r: reqwest::Response) -> (u16, ErrorBody) {
    let status = r.status().as_u16();
    (status, json(r).await)
}

pub struct LocalDoc {
    pub doc: AutoCommit,
    pub synced: Vec<ChangeHash>,
    pub pushed: Vec<ChangeHash>,
    pub rejected: Option<(RejectCode, String)>,
}

pub struct TestDevice {
    pub id: DeviceId,
    pub identity: DeviceIdentity,
    pub clinic: RecordId,
    pub patient: Option<RecordId>,
    pub docs: HashMap<RecordId, LocalDoc>,
    pub cursor: u64,
    pub max_pull_bytes: u32,
    pub last_request_bytes: usize,
    pub last_response_bytes: usize,
}

/// Free-text answers drawn from a small set, as in the benchmark workload.
pub const SENTENCES: [&str; 6] = [
    "mild headache for two days after the infusion",
    "no change in walking distance this month",
    "slight swelling at the injection site",
    "tired in the evenings, otherwise well",
    "fever of 38.2 for one night, resolved",
    "sleeping better since the last visit",
];

impl TestDevice {
    /// Create a record document following model.rs's layout.
    pub fn create(
        &mut self,
        kind: &str,
        clinic: RecordId,
        patient: Option<RecordId>,
        body: &[(&str, &str)],
    ) -> RecordId {
        let id = RecordId::random();
        self.create_with_id(id, kind, clinic, patient, body);
        id
    }

    pub fn create_with_id(
        &mut self,
        id: RecordId,
        kind: &str,
        clinic: RecordId,
        patient: Option<RecordId>,
        body: &[(&str, &str)],
    ) {
        let mut doc = AutoCommit::new().with_actor(self.id.actor());
        doc.put(ROOT, "id", id.to_hex()).unwrap();
        doc.put(ROOT, "kind", kind).unwrap();
        doc.put(ROOT, "clinic", clinic.to_hex()).unwrap();
        if let Some(p) = patient {
            doc.put(ROOT, "patient", p.to_hex()).unwrap();
        }
        doc.put(ROOT, "created_by", self.id.to_hex()).unwrap();
        let b = doc.put_object(ROOT, "body", ObjType::Map).unwrap();
        // A body valid for its kind (the server checks schemas and code lists), then the
        // test's own fields on top.
        fill_valid_body(&mut doc, &b, kind);
        for (k, v) in body {
            doc.put(&b, *k, *v).unwrap();
        }
        // No explicit commit: a record is created in one transaction with what follows
        // (response_50 adds its answers), committed at the next save or heads read.
        self.docs.insert(
            id,
            LocalDoc {
                doc,
                synced: vec![],
                pushed: vec![],
                rejected: None,
            },
        );
    }

    pub fn enrolment(&mut self) -> RecordId {
        let id = RecordId::random();
        let clinic = self.clinic;
        self.create_with_id(id, "enrolment", clinic, Some(id), &[("study_code", "P-1")]);
        id
    }

    /// A 50-answer clinician response (benchmark workload), deterministic from `seed`.
    pub fn response_50(&mut self, patient: RecordId, seed: u64) -> RecordId {
        let clinic = self.clinic;
        let id = self.create(
            "response",
            clinic,
            Some(patient),
            &[
                ("completed_by", "nurse"),
                ("questionnaire", "bench-50"),
                ("questionnaire_version", "1.0.0"),
            ],
        );
        let d = &mut self.docs.get_mut(&id).unwrap().doc;
        let body = d.get(ROOT, "body").unwrap().unwrap().1;
        let answers = d.put_object(&body, "answers", ObjType::Map).unwrap();
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        for n in 1..=50u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = x >> 33;
            let key = format!("q{n:02}");
            match n % 5 {
                0 => d.put(&answers, key, (r % 11) as i64).unwrap(),
                1 => d.put(&answers, key, r & 1 == 0).unwrap(),
                2 => d
                    .put(
                        &answers,
                        key,
                        ["none", "mild", "moderate", "severe"][(r % 4) as usize],
                    )
                    .unwrap(),
                3 => d.put(&answers, key, (r % 1001) as f64 / 10.0).unwrap(),
                _ => d
                    .put(
                        &answers,
                        key,
                        SENTENCES[(r % SENTENCES.len() as u64) as usize],
                    )
                    .unwrap(),
            }
        }
        d.commit();
        id
    }

    /// Edit three answers (one integer, one boolean, one sentence).
    pub fn edit_response(&mut self, id: RecordId, seed: u64) {
        let d = &mut self.docs.get_mut(&id).unwrap().doc;
        let body = d.get(ROOT, "body").unwrap().unwrap().1;
        let answers = d.get(&body, "answers").unwrap().unwrap().1;
        d.put(&answers, "q05", (seed % 11) as i64).unwrap();
        d.put(&answers, "q01", seed % 2 == 1).unwrap();
        d.put(&answers, "q04", SENTENCES[(seed % 6) as usize])
            .unwrap();
        d.commit();
    }

    pub fn set_body(&mut self, id: RecordId, key: &str, value: &str) {
        let d = &mut self.docs.get_mut(&id).unwrap().doc;
        let body = d.get(ROOT, "body").unwrap().unwrap().1;
        d.put(&body, key, value).unwrap();
        d.commit();
    }

    pub fn set_root(&mut self, id: RecordId, key: &str, value: &str) {
        let d = &mut self.docs.get_mut(&id).unwrap().doc;
        d.put(ROOT, key, value).unwrap();
        d.commit();
    }

    /// The request a sync would send now (pushing every document with unsynced changes).
    pub fn build_request(&mut self) -> (SyncRequest, Vec<RecordId>) {
        let mut push = Vec::new();
        let mut ids = Vec::new();
        let mut entries: Vec<_> = self.docs.iter_mut().collect();
        // Enrolments first.
        entries.sort_by_key(|(_, d)| {
            d.doc
                .get(ROOT, "kind")
                .ok()
                .flatten()
                .map(|(v, _)| v.to_string())
                != Some("\"enrolment\"".into())
        });
        for (id, d) in entries {
            if d.rejected.is_some() {
                continue;
            }
            let heads = d.doc.get_heads();
            if heads == d.synced {
                continue;
            }
            let data = d.doc.save_after(&d.synced);
            if data.is_empty() {
                continue;
            }
            d.pushed = heads;
            push.push(PushDoc { doc: *id, data });
            ids.push(*id);
        }
        (
            SyncRequest::new(self.cursor, self.max_pull_bytes, push),
            ids,
        )
    }

    pub fn sign(&self, body: &[u8]) -> Vec<(&'static str, String)> {
        self.identity
            .sign_request(self.id, "POST", SYNC_PATH, body, now_ms())
            .to_header_pairs()
            .to_vec()
    }

    /// One exchange; returns the response.
    pub async fn sync_once(&mut self, s: &TestServer) -> SyncResponse {
        match self.try_sync_once(s).await {
            Ok(r) => r,
            Err((status, text)) => panic!("sync answered {status}: {text}"),
        }
    }

    /// One exchange; a non-200 answer is returned (status, body text) with the device unchanged.
    pub async fn try_sync_once(&mut self, s: &TestServer) -> Result<SyncResponse, (u16, String)> {
        let (req, ids) = self.build_request();
        let body = encode_body(&req).unwrap();
        let headers = self.sign(&body);
        self.last_request_bytes = body.len();
        let r = s.post_sync(body, &headers).await;
        if r.status() != 200 {
            return Err((r.status().as_u16(), r.text().await.unwrap_or_default()));
        }
        let bytes = r.bytes().await.unwrap();
        self.last_response_bytes = bytes.len();
        let resp = decode_sync_response(&bytes, DEFAULT_MAX_DECOMPRESSED).unwrap();
        assert_eq!(resp.results.len(), ids.len());
        for (id, result) in ids.iter().zip(&resp.results) {
            let d = self.docs.get_mut(id).unwrap();
            match result {
                PushResult::Accepted { .. } => d.synced = d.pushed.clone(),
                PushResult::NeedFullDoc => d.synced = vec![],
                PushResult::Rejected { code, message } => {
                    d.rejected = Some((*code, message.clone()))
                }
            }
        }
        for p in &resp.pull {
            let changes = split_changes(&p.data).unwrap();
            let d = self.docs.entry(p.doc).or_insert_with(|| LocalDoc {
                doc: AutoCommit::new().with_actor(self.id.actor()),
                synced: vec![],
                pushed: vec![],
                rejected: None,
            });
            d.synced = p.server_heads(&changes);
            d.doc.apply_changes(changes).unwrap();
        }
        self.cursor = resp.cursor;
        Ok(resp)
    }

    /// Sync until nothing is left.
    pub async fn sync(&mut self, s: &TestServer) -> Vec<SyncResponse> {
        let mut out = Vec::new();
        loop {
            let r = self.sync_once(s).await;
            let more = r.more;
            out.push(r);
            if !more {
                return out;
            }
        }
    }

    pub fn heads(&mut self, id: RecordId) -> Vec<ChangeHash> {
        self.docs.get_mut(&id).unwrap().doc.get_heads()
    }

    pub fn body_field(&self, id: RecordId, key: &str) -> Option<String> {
        let d = &self.docs.get(&id)?.doc;
        let body = d.get(ROOT, "body").ok()??.1;
        d.get(&body, key).ok()?.map(|(v, _)| match v {
            automerge::Value::Scalar(s) => match s.as_ref() {
                automerge::ScalarValue::Str(t) => t.to_string(),
                other => other.to_string(),
            },
            _ => String::new(),
        })
    }
}

/// Put a minimal valid body of `kind` (model.rs's typed bodies) into map `b`.
pub fn fill_valid_body(doc: &mut AutoCommit, b: &automerge::ObjId, kind: &str) {
    let strs = |doc: &mut AutoCommit, fields: &[(&str, &str)]| {
        for (k, v) in fields {
            doc.put(b, *k, *v).unwrap();
        }
    };
    let nulls = |doc: &mut AutoCommit, fields: &[&str]| {
        for k in fields {
            doc.put(b, *k, automerge::ScalarValue::Null).unwrap();
        }
    };
    match kind {
        "clinic" => {
            strs(
                doc,
                &[
                    ("name", "A clinic"),
                    ("country", "PT"),
                    ("participation", "invited"),
                ],
            );
            doc.put_object(b, "accreditations", ObjType::List).unwrap();
        }
        "enrolment" => {
            strs(
                doc,
                &[
                    ("study_code", "P-1"),
                    ("sex", "female"),
                    ("enrolled_on", "2025-01-02"),
                ],
            );
            doc.put(b, "birth_year", 1970_i64).unwrap();
            let c = doc.put_object(b, "consent", ObjType::Map).unwrap();
            doc.put(&c, "form_version", "v1").unwrap();
            doc.put(&c, "date", "2025-01-02").unwrap();
            let scope = doc.put_object(&c, "scope", ObjType::List).unwrap();
            doc.insert(&scope, 0, "registry").unwrap();
        }
        "procedure" => {
            strs(
                doc,
                &[
                    ("date", "2025-01-10"),
                    ("condition", "knee osteoarthritis"),
                    ("procedure_type", "cell injection"),
                    ("route", "intra_articular"),
                    ("cell_type", "mesenchymal"),
                    ("source_tissue", "adipose"),
                    ("origin", "autologous"),
                    ("manipulation", "minimal"),
                    ("regulatory_status", "unregulated"),
                ],
            );
            doc.put_object(b, "promised_benefits", ObjType::List)
                .unwrap();
            nulls(doc, &["trial_registration", "cost"]);
        }
        "response" => {
            strs(
                doc,
                &[
                    ("questionnaire", "clinician-followup"),
                    ("questionnaire_version", "1.0.0"),
                    ("completed_by", "nurse"),
                    ("status", "draft"),
                ],
            );
            doc.put_object(b, "answers", ObjType::Map).unwrap();
            nulls(doc, &["procedure", "visit", "submitted_at"]);
        }
        "adverse_event" => {
            strs(
                doc,
                &[
                    ("reporter", "clinic"),
                    ("category", "infection"),
                    ("onset", "2025-02-01"),
                    ("outcome", "recovering"),
                    ("description", "fever"),
                ],
            );
            doc.put(b, "severity", 2_i64).unwrap();
            doc.put_object(b, "seriousness", ObjType::List).unwrap();
            doc.put_object(b, "answers", ObjType::Map).unwrap();
            nulls(doc, &["procedure"]);
        }
        "adjudication" => {
            strs(
                doc,
                &[
                    ("adverse_event", "00000000000000000000000000000000"),
                    ("action", "none"),
                    ("remedy", "none"),
                    ("status", "open"),
                    ("deadline", "2025-03-01"),
                ],
            );
            nulls(doc, &["relatedness", "decided_at"]);
        }
        _ => {}
    }
}
