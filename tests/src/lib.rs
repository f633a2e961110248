//! End-to-end test support: a real registry server on 127.0.0.1 (random port, temporary data
//! directory), its admin API, and device stores that enrol and sync over HTTP with the real
//! client (`followup_device::sync`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use automerge::ReadDoc;
use followup_device::crypto::KeySource;
use followup_device::device::Device;
use followup_device::store::Query;
use followup_device::sync::{CancelToken, SyncClient, SyncOptions, SyncReport};
use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::protocol::*;
use followup_server::{Config, RunningServer, Server};

pub use followup_testkit::linksim::{CutPolicy, LinkConfig, LinkSim, LinkStats};

pub const ADMIN: &str = "e2e-admin-token-0123456789";

/// Every network step of a test is bounded by this.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(120);

pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_test_writer()
        .try_init();
}

/// A running registry with an admin client.
pub struct Registry {
    pub server: RunningServer,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Registry {
    pub async fn start() -> Registry {
        Registry::start_with(|_| {}).await
    }

    /// A registry whose configuration `adjust` changes first.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Registry {
        init();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(dir.path(), Some(ADMIN));
        adjust(&mut config);
        let server = Server::start(config).await.unwrap();
        Registry {
            server,
            dir,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The registry's admin API through the workspace's one staff client.
    pub fn staff(&self) -> followup_staff_client::StaffClient {
        followup_staff_client::StaffClient::new(&self.url(), Some(ADMIN)).unwrap()
    }

    pub async fn create_clinic(&self, name: &str) -> RecordId {
        self.staff().create_clinic(name, "pt").await.unwrap()
    }

    pub async fn code(&self, grant: EnrolmentGrant) -> String {
        self.staff().issue_code(grant, None).await.unwrap().code
    }

    pub async fn revoke(&self, device: DeviceId) {
        self.staff().revoke(device).await.unwrap();
    }

    pub async fn verify_audit(&self) -> AuditVerifyResponse {
        self.staff().verify_audit().await.unwrap()
    }

    pub async fn stats(&self) -> StatsResponse {
        self.staff().stats().await.unwrap()
    }

    /// Enrol a new clinic tablet.
    pub async fn clinic_tablet(&self, clinic: RecordId, label: &str) -> TestDevice {
        let code = self.code(EnrolmentGrant::ClinicDevice { clinic }).await;
        TestDevice::enrolled(&self.url(), &code, label).await
    }

    /// Enrol a new clinic tablet that holds no definition until it syncs (as a real app).
    pub async fn bare_clinic_tablet(&self, clinic: RecordId, label: &str) -> TestDevice {
        let code = self.code(EnrolmentGrant::ClinicDevice { clinic }).await;
        let d = TestDevice::bare(label);
        let client = SyncClient::new(test_options()).unwrap();
        tokio::time::timeout(
            STEP_TIMEOUT,
            client.enrol(&d.device, &self.url(), &code, label),
        )
        .await
        .expect("enrolment timed out")
        .unwrap();
        d
    }

    /// Enrol a new patient phone for `patient` (whose enrolment the server must hold).
    pub async fn patient_phone(&self, patient: RecordId, label: &str) -> TestDevice {
        let code = self.code(EnrolmentGrant::PatientDevice { patient }).await;
        TestDevice::enrolled(&self.url(), &code, label).await
    }
}

pub async fn json<T: serde::de::DeserializeOwned>(r: reqwest::Response) -> T {
    let bytes = r.bytes().await.unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)))
}

/// Options for tests: short backoff, many attempts (every wait still bounded).
pub fn test_options() -> SyncOptions {
    SyncOptions {
        timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(5),
        max_attempts: 40,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(100),
        ..SyncOptions::default()
    }
}

/// A device store in a temporary directory.
pub struct TestDevice {
    pub device: Device,
    pub path: PathBuf,
    pub label: String,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for TestDevice {
    type Target = Device;
    fn deref(&self) -> &Device {
        &self.device
    }
}

pub fn key() -> KeySource {
    KeySource::passphrase_with_iterations("correct horse battery staple", 1_000)
}

impl TestDevice {
    /// A new, unenrolled device store, provisioned with the definitions the test registry
    /// publishes (the built-ins, the same record bytes) and the benchmark instrument, so that
    /// a test can capture before its first sync.
    pub fn new(label: &str) -> TestDevice {
        let d = TestDevice::bare(label);
        followup_testkit::workload::provision(&d.device).unwrap();
        d
    }

    /// A new, unenrolled device store holding no definition at all.
    pub fn bare(label: &str) -> TestDevice {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.followup");
        let device = Device::create(&path, key()).unwrap();
        TestDevice {
            device,
            path,
            label: label.into(),
            _dir: dir,
        }
    }

    /// A new device enrolled over HTTP with `code`.
    pub async fn enrolled(url: &str, code: &str, label: &str) -> TestDevice {
        let d = TestDevice::new(label);
        let client = SyncClient::new(test_options()).unwrap();
        tokio::time::timeout(STEP_TIMEOUT, client.enrol(&d.device, url, code, label))
            .await
            .expect("enrolment timed out")
            .unwrap();
        d
    }

    pub fn id(&self) -> DeviceId {
        self.device.enrolment().unwrap().device_id
    }

    /// Sync with the registry the device enrolled with.
    pub async fn sync(&self) -> followup_device::Result<SyncReport> {
        self.sync_with(&SyncClient::new(test_options()).unwrap())
            .await
    }

    pub async fn sync_with(&self, client: &SyncClient) -> followup_device::Result<SyncReport> {
        tokio::time::timeout(
            STEP_TIMEOUT,
            client.sync(&self.device, &|_| {}, &CancelToken::new()),
        )
        .await
        .expect("sync timed out")
    }

    /// Point the device at another URL (e.g. a link simulator in front of the registry).
    pub fn set_server_url(&self, url: &str) {
        let mut e = self.device.enrolment().unwrap();
        e.server_url = url.into();
        self.device.set_enrolment(e).unwrap();
    }

    /// Every document: id → (sorted heads, full JSON content).
    /// Every record (definitions excepted) with its heads and content.
    pub fn snapshot(&self) -> BTreeMap<RecordId, (Vec<String>, serde_json::Value)> {
        let mut out = BTreeMap::new();
        for m in self.device.store().list(&Query::default()).unwrap() {
            if m.kind == followup_domain::model::RecordKind::Definition {
                continue;
            }
            let doc = self.device.store().load_doc(&m.id).unwrap().unwrap();
            let mut heads: Vec<String> = doc.get_heads().iter().map(|h| h.to_string()).collect();
            heads.sort();
            let json = serde_json::to_value(automerge::AutoSerde::from(&doc)).unwrap();
            out.insert(m.id, (heads, json));
        }
        out
    }

    /// Ids of every record the device holds, registry-published definitions excepted (every
    /// device holds those; tests about records compare the rest).
    pub fn ids(&self) -> Vec<RecordId> {
        self.device
            .store()
            .list(&Query::default())
            .unwrap()
            .into_iter()
            .filter(|m| m.kind != followup_domain::model::RecordKind::Definition)
            .map(|m| m.id)
            .collect()
    }

    /// Documents still waiting to be pushed.
    pub fn dirty(&self) -> usize {
        self.device.store().dirty_docs(usize::MAX).unwrap().len()
    }

    /// A document's root string field.
    pub fn root_field(&self, id: RecordId, key: &str) -> Option<String> {
        let doc = self.device.store().load_doc(&id).unwrap()?;
        doc.get(automerge::ROOT, key)
            .ok()?
            .and_then(|(v, _)| v.into_string().ok())
    }
}

/// Sync every device in order, repeatedly, until a whole round moves nothing.
pub async fn sync_until_quiet(devices: &[&TestDevice]) {
    for _round in 0..6 {
        let mut moved = 0;
        for d in devices {
            let r = d
                .sync()
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", d.label));
            moved += r.pushed + r.pulled;
        }
        if moved == 0 {
            return;
        }
    }
    panic!("devices did not settle after 6 rounds");
}

/// An adverse event for tests.
pub fn adverse_event(description: &str) -> followup_domain::model::AdverseEvent {
    use followup_domain::model::{AdverseEvent, AeOutcome, Reporter};
    AdverseEvent {
        reporter: Reporter::Clinic,
        category: "infection".into(),
        onset: "2026-01-10".into(),
        severity: 2,
        seriousness: vec![],
        outcome: AeOutcome::Recovering,
        description: description.into(),
        procedure: None,
        answers: Default::default(),
    }
}

/// Answers from `(item, value)` pairs.
pub fn answers(
    pairs: &[(&str, followup_domain::questionnaire::AnswerValue)],
) -> followup_domain::questionnaire::Answers {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// The day `n` days before today (UTC), `YYYY-MM-DD`.
pub fn days_ago(n: u64) -> String {
    (chrono::Utc::now().date_naive() - chrono::Days::new(n))
        .format("%Y-%m-%d")
        .to_string()
}

/// A complete, valid clinician follow-up (version 1.0.0) taken on `date`: every answer the
/// clinical rules require.
pub fn clinician_followup(date: &str) -> followup_domain::questionnaire::Answers {
    use followup_domain::questionnaire::AnswerValue;
    let t = |s: &str| AnswerValue::Text(s.into());
    answers(&[
        ("visit_date", t(date)),
        ("visit_mode", t("in_person")),
        ("condition_status", t("improved")),
        ("symptom_primary", AnswerValue::Int(3)),
        ("symptom_pain", AnswerValue::Int(2)),
        ("symptom_fatigue", AnswerValue::Int(4)),
        ("ecog", t("1")),
        ("complications_any", AnswerValue::Bool(false)),
        ("hospitalised", AnswerValue::Bool(false)),
        ("further_cell_therapy", AnswerValue::Bool(false)),
    ])
}
