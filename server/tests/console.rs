//! The staff console over HTTP on 127.0.0.1: sign-in (wrong password refused, throttled), session
//! cookie attributes, CSRF on every form, clinic coordinators confined to their clinic, the public
//! participation page, embedded assets with caching headers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod rm_cases;
mod staff_cases;

use common::*;
use followup_domain::ids::RecordId;
use followup_domain::protocol::EnrolmentGrant;
use followup_server::staff::{self, FirstSignIn, Role};
use followup_server::{Config, Server};

/// A browser-like client: no redirects followed, cookies kept by hand.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..at + 64].to_string()
}

impl Browser {
    fn new(base: &str) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_string(),
            cookies: vec![],
        }
    }
    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
    fn keep(&mut self, r: &reqwest::Response) -> Vec<String> {
        let mut raw = vec![];
        for v in r.headers().get_all("set-cookie") {
            let s = v.to_str().unwrap().to_string();
            let (kv, _) = s.split_once(';').unwrap();
            let (k, val) = kv.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !val.is_empty() {
                self.cookies.push((k.to_string(), val.to_string()));
            }
            raw.push(s);
        }
        raw
    }
    async fn get(&mut self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&r);
        (r.status().as_u16(), r.text().await.unwrap())
    }
    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (u16, String, Vec<String>) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        let set = self.keep(&r);
        (r.status().as_u16(), r.text().await.unwrap(), set)
    }
    /// A POST whose answer may be a file: status, content type, bytes.
    async fn post_file(&mut self, path: &str, form: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.keep(&r);
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (r.status().as_u16(), ct, r.bytes().await.unwrap().to_vec())
    }
    async fn sign_in(&mut self, email: &str, password: &str) -> (u16, String, Vec<String>) {
        let (_, page) = self.get("/console/login").await;
        let csrf = csrf_of(&page);
        self.post(
            "/console/login",
            &[("email", email), ("password", password), ("csrf", &csrf)],
        )
        .await
    }
}

fn add_staff(s: &TestServer, email: &str, role: Role, clinic: Option<RecordId>) -> String {
    staff::create_staff(
        s.server.storage().as_ref(),
        email,
        role,
        clinic,
        FirstSignIn::Password,
        false,
        staff::BOOTSTRAP_ACTOR,
        now_ms(),
    )
    .unwrap()
    .password
    .unwrap()
}

/// Rules where "no response" applies at once, so that a clinic invited by the test is listed.
const RULES: &str = r#"{"version":1,"title":"Clinic participation","rules":[
 {"id":"no-response","kind":"no_device_after_days","days":0,"list":"not_participating",
  "text":"Invited and no device enrolled."},
 {"id":"good-standing","kind":"good_standing","list":"good_standing","text":"A device is enrolled."}]}"#;

async fn start_with_rules() -> TestServer {
    init();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    std::fs::write(&rules, RULES).unwrap();
    let mut config = Config::for_tests(dir.path().join("db"), Some(ADMIN));
    config.participation_rules = Some(rules);
    let server = Server::start(config).await.unwrap();
    TestServer {
        server,
        dir,
        http: reqwest::Client::new(),
    }
}

#[tokio::test]
async fn console_sign_in_csrf_and_clinic_scoping() {
    let s = start_with_rules().await;
    let a = s.create_clinic("Clinica Alfa").await;
    let b = s.create_clinic("Clinica Beta").await;
    let silent = s.create_clinic("Clinica Silenciosa").await;
    let _ = silent;
    // A device in each of A and B, each pushing an enrolment with a study code.
    let mut da = s.enrol(EnrolmentGrant::ClinicDevice { clinic: a }).await;
    let pa = da.enrolment();
    da.set_body(pa, "study_code", "ALFA-001");
    da.sync(&s).await;
    let mut db = s.enrol(EnrolmentGrant::ClinicDevice { clinic: b }).await;
    let pb = db.enrolment();
    db.set_body(pb, "study_code", "BETA-SECRET");
    db.sync(&s).await;

    let admin_pw = add_staff(&s, "admin@registry.example", Role::RegistryAdmin, None);
    let coord_pw = add_staff(&s, "coord@alfa.example", Role::ClinicCoordinator, Some(a));
    let base = s.server.url();

    // Not signed in: the console sends to the sign-in page.
    let mut anon = Browser::new(&base);
    let (status, _) = anon.get("/console").await;
    assert_eq!(status, 303);

    // A wrong password is refused.
    let mut admin = Browser::new(&base);
    let (status, page, set) = admin
        .sign_in("admin@registry.example", "not-the-password")
        .await;
    assert_eq!(status, 401);
    assert!(page.contains("Wrong email, password or code"));
    assert!(!set.iter().any(|c| c.starts_with("followup_session=")));

    // The right one opens a session with a hardened cookie.
    let (status, _, set) = admin.sign_in("admin@registry.example", &admin_pw).await;
    assert_eq!(status, 303);
    let session = set
        .iter()
        .find(|c| c.starts_with("followup_session="))
        .expect("a session cookie");
    for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(session.contains(attr), "{session}");
    }
    let (status, page) = admin.get("/console").await;
    assert_eq!(status, 200);
    assert!(page.contains("Overview"));
    assert!(page.len() < 100_000);
    let (_, page) = admin.get("/console/clinics").await;
    assert!(page.contains("Clinica Beta") && page.contains("Clinica Alfa"));

    // A form without the session's CSRF token is refused and changes nothing.
    let (status, page, _) = admin
        .post(
            "/console/clinics",
            &[("name", "Forged Clinic"), ("country", "MX")],
        )
        .await;
    assert_eq!(status, 403);
    assert!(page.contains("Form refused"));
    let (status, _, _) = admin
        .post(
            "/console/clinics",
            &[
                ("name", "Forged Clinic"),
                ("country", "MX"),
                ("csrf", &"0".repeat(64)),
            ],
        )
        .await;
    assert_eq!(status, 403);
    let (_, page) = admin.get("/console/clinics").await;
    assert!(!page.contains("Forged Clinic"));
    // With it, the clinic is invited, and the audit log names the staff member.
    let csrf = csrf_of(&page);
    let (status, page, _) = admin
        .post(
            "/console/clinics",
            &[
                ("name", "Clinica Nueva"),
                ("country", "co"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Clinica Nueva"));
    let (_, page) = admin.get("/console/audit?verify=1").await;
    assert!(page.contains("The chain verifies"), "{page}");
    assert!(page.contains("staff_clinic_invited"));

    // A tablet code, as text and QR code.
    let (_, page) = admin.get(&format!("/console/clinics/{}", a.to_hex())).await;
    assert!(!page.contains("duplicate-study-codes"), "{page}");
    // A second tablet of A enrolled the same study code offline: both kept, and the clinic page
    // shows the pair (B's page does not).
    let mut da2 = s.enrol(EnrolmentGrant::ClinicDevice { clinic: a }).await;
    let pa2 = da2.enrolment();
    da2.set_body(pa2, "study_code", " alfa-001");
    da2.sync(&s).await;
    assert!(da2.docs[&pa2].rejected.is_none());
    let (_, page) = admin.get(&format!("/console/clinics/{}", a.to_hex())).await;
    assert!(page.contains("id=\"duplicate-study-codes\""), "{page}");
    assert!(
        page.contains("ALFA-001") && page.contains(&pa.to_hex()) && page.contains(&pa2.to_hex())
    );
    let (_, page_b) = admin.get(&format!("/console/clinics/{}", b.to_hex())).await;
    assert!(!page_b.contains("duplicate-study-codes"));
    let csrf = csrf_of(&page);
    let (status, page, _) = admin
        .post(
            &format!("/console/clinics/{}/codes", a.to_hex()),
            &[("kind", "tablet"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"enrolment-code\""));
    assert!(page.contains("<svg"));

    // The coordinator of A: 403 on B's pages, and no B data anywhere.
    let mut coord = Browser::new(&base);
    let (status, _, _) = coord.sign_in("coord@alfa.example", &coord_pw).await;
    assert_eq!(status, 303);
    for path in [
        format!("/console/clinics/{}", b.to_hex()),
        format!("/console/followup?clinic={}", b.to_hex()),
        format!("/console/adverse-events?clinic={}", b.to_hex()),
        format!("/console/patients/{}", pb.to_hex()),
        "/console/audit".to_string(),
        "/console/staff".to_string(),
    ] {
        let (status, page) = coord.get(&path).await;
        assert_eq!(status, 403, "{path}");
        assert!(!page.contains("BETA-SECRET"));
    }
    for path in [
        "/console",
        "/console/clinics",
        "/console/followup",
        "/console/followup?state=upcoming",
        "/console/adverse-events",
        "/console/devices",
    ] {
        let (status, page) = coord.get(path).await;
        assert_eq!(status, 200, "{path}");
        assert!(!page.contains("Beta"), "{path} shows clinic B");
        assert!(!page.contains("BETA-SECRET"), "{path} shows B's patient");
        assert!(!page.contains(&b.to_hex()), "{path} shows B's id");
    }
    let (status, page) = coord.get("/console/patients?code=BETA-SECRET").await;
    assert_eq!(status, 200);
    assert!(page.contains("No patient with study code"));
    assert!(!page.contains(&pb.to_hex()));
    // (A's own patient timeline is covered by the browser test, with records a real device
    // made; this test's hand-built documents are not full typed records.)
    let _ = pa;
    // A coordinator cannot invite clinics even with a valid token.
    let (_, page) = coord.get("/console/clinics").await;
    let csrf = csrf_of(&page);
    let (status, _, _) = coord
        .post(
            "/console/clinics",
            &[("name", "X"), ("country", "MX"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(status, 403);

    // Sign-out ends the session server-side.
    let (_, page) = admin.get("/console").await;
    let csrf = csrf_of(&page);
    let old = admin.cookies.clone();
    let (status, _, _) = admin.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!(status, 303);
    admin.cookies = old;
    let (status, _) = admin.get("/console").await;
    assert_eq!(status, 303, "the old cookie no longer works");

    // The public page: no login, the silent clinic listed with its rule, and the rules shown.
    let (status, page) = anon.get("/participation").await;
    assert_eq!(status, 200);
    let not_participating = page
        .split("Invited clinics that do not participate")
        .nth(1)
        .unwrap()
        .split("</section>")
        .next()
        .unwrap();
    assert!(not_participating.contains("Clinica Silenciosa"));
    assert!(not_participating.contains("Invited and no device enrolled."));
    let good = page.split("Clinics in good standing").nth(1).unwrap();
    assert!(good
        .split("</section>")
        .next()
        .unwrap()
        .contains("Clinica Alfa"));
    assert!(page.contains("The rules"));
}

/// A typed adverse event of `clinic` stored with the case the server opens for it (what
/// `sync::run` commits when it first accepts an event; this file's hand-built device documents
/// are not typed records).
fn event_with_case(s: &TestServer, clinic: RecordId) -> RecordId {
    use followup_domain::model::{
        self, AdverseEvent, AeOutcome, Author, DocHeader, RecordKind, Reporter,
    };
    use followup_domain::policy::AdjudicationPolicy;
    use followup_server::storage::DocWrite;
    let storage = s.server.storage();
    let now = now_ms();
    let (id, patient) = (RecordId::random(), RecordId::random());
    let event = AdverseEvent {
        reporter: Reporter::Clinic,
        category: "infection".into(),
        onset: "2026-01-05".into(),
        severity: 3,
        seriousness: vec![],
        outcome: AeOutcome::Recovering,
        description: "fever after the injection".into(),
        procedure: None,
        answers: Default::default(),
    };
    let author = Author {
        device: None,
        user: None,
        time: now / 1000,
    };
    let doc = model::new_record(author, id, clinic, Some(patient), &event).unwrap();
    let header = DocHeader {
        id,
        kind: RecordKind::AdverseEvent,
        clinic,
        patient: Some(patient),
        created_by: None,
    };
    let write = DocWrite {
        header: header.clone(),
        bytes: doc.save(),
        heads: doc.get_heads(),
        expected_version: None,
        device: None,
        new_changes: doc.get_heads(),
        event: followup_server::audit::event::ACCEPTED,
        projection: None,
        users: Vec::new(),
    };
    let open = followup_server::cases::opening_write(
        AdjudicationPolicy::registry_default(),
        &header,
        &event,
        now,
    )
    .unwrap();
    storage.commit_writes(&[write, open], now).unwrap();
    id
}

/// The adverse-event pages show the registry's case; a monitor escalates it from the console
/// (CSRF-checked, audited, written into the case the clinic's tablet reads); the export download
/// is role-checked, CSRF-checked and audited.
#[tokio::test]
async fn console_cases_escalation_and_export_download() {
    let s = start_with_rules().await;
    let a = s.create_clinic("Clinica Alfa").await;
    let b = s.create_clinic("Clinica Beta").await;
    let ae = event_with_case(&s, a);
    let admin_pw = add_staff(&s, "admin@registry.example", Role::RegistryAdmin, None);
    let mon_pw = add_staff(&s, "monitor@registry.example", Role::RegistryMonitor, None);
    let coord_pw = add_staff(&s, "coord@alfa.example", Role::ClinicCoordinator, Some(a));
    let base = s.server.url();
    let mut monitor = Browser::new(&base);
    assert_eq!(
        monitor.sign_in("monitor@registry.example", &mon_pw).await.0,
        303
    );

    // Queue and event page: the case's state and the deadline the server set (grade 3: 7 days).
    let (status, page) = monitor.get("/console/adverse-events").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<p>1 event, most overdue first.</p>"),
        "{page}"
    );
    assert!(page.contains("class=\"case-open\""), "{page}");
    assert_eq!(
        monitor
            .get("/console/adverse-events?case=overdue")
            .await
            .1
            .matches("case-open")
            .count(),
        0
    );
    let path = format!("/console/adverse-events/{}", ae.to_hex());
    let (status, page) = monitor.get(&path).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("id=\"case-state\" class=\"case-open\">open<"),
        "{page}"
    );
    let deadline = (chrono::Utc::now().date_naive() + chrono::Days::new(7)).to_string();
    assert!(
        page.contains(&deadline),
        "the server-set deadline {deadline}"
    );

    // Escalating without the form's token changes nothing.
    let notes = format!("{path}/notes");
    let (status, _, _) = monitor
        .post(&notes, &[("kind", "escalation"), ("text", "Forged")])
        .await;
    assert_eq!(status, 403);
    let storage = s.server.storage();
    let case = &followup_server::cases::by_event(storage.as_ref(), &[ae]).unwrap()[&ae];
    assert!(case.escalations.is_empty());
    // With it, the case is escalated: state, note, and the audit log.
    let csrf = csrf_of(&page);
    let (status, page, _) = monitor
        .post(
            &notes,
            &[
                ("kind", "escalation"),
                ("text", "Adjudicate within 48 hours."),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(">escalated<"), "{page}");
    assert!(page.contains("escalated by the registry: Adjudicate within 48 hours."));
    let case = &followup_server::cases::by_event(storage.as_ref(), &[ae]).unwrap()[&ae];
    assert_eq!(case.escalations.len(), 1);
    assert_eq!(case.escalations[0].note, "Adjudicate within 48 hours.");
    let mut admin = Browser::new(&base);
    assert_eq!(
        admin.sign_in("admin@registry.example", &admin_pw).await.0,
        303
    );
    let (_, page) = admin.get("/console/audit").await;
    assert!(
        page.contains("case_escalated") && page.contains("staff_ae_note"),
        "{page}"
    );

    // A coordinator reads the case but may not escalate.
    let mut coord = Browser::new(&base);
    assert_eq!(coord.sign_in("coord@alfa.example", &coord_pw).await.0, 303);
    let (status, page) = coord.get(&path).await;
    assert_eq!(status, 200);
    assert!(page.contains(">escalated<"));
    let csrf_c = csrf_of(&page);
    let (status, _, _) = coord
        .post(
            &notes,
            &[("kind", "escalation"), ("text", "x"), ("csrf", &csrf_c)],
        )
        .await;
    assert_eq!(status, 403);

    // Export: the admin downloads a zip (identified too); a form without its token is refused.
    let (status, page) = admin.get("/console/export").await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"download\"") && page.contains("name=\"identified\""));
    let csrf = csrf_of(&page);
    let (status, ct, body) = admin
        .post_file(
            "/console/export",
            &[("format", "csv"), ("clinic", ""), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(ct, "application/zip");
    assert!(body.starts_with(b"PK"), "a zip");
    let (status, _, body) = admin
        .post_file(
            "/console/export",
            &[("format", "fhir"), ("identified", "on"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(status, 200);
    assert!(body.starts_with(b"PK"));
    let (status, _, _) = admin
        .post_file("/console/export", &[("format", "csv")])
        .await;
    assert_eq!(status, 403, "no CSRF token");
    // A monitor: de-identified only.
    let (_, page) = monitor.get("/console/export").await;
    assert!(!page.contains("name=\"identified\""));
    let csrf_m = csrf_of(&page);
    let (status, _, _) = monitor
        .post_file(
            "/console/export",
            &[("format", "csv"), ("identified", "on"), ("csrf", &csrf_m)],
        )
        .await;
    assert_eq!(status, 403);
    // A coordinator: their own clinic, never another's.
    let (status, page) = coord.get("/console/export").await;
    assert_eq!(status, 200);
    assert!(page.contains("Clinica Alfa") && !page.contains("Clinica Beta"));
    let (status, _, _) = coord
        .post_file(
            "/console/export",
            &[
                ("format", "csv"),
                ("clinic", &b.to_hex()),
                ("csrf", &csrf_c),
            ],
        )
        .await;
    assert_eq!(status, 403);
    let (status, ct, body) = coord
        .post_file(
            "/console/export",
            &[
                ("format", "csv"),
                ("clinic", &a.to_hex()),
                ("csrf", &csrf_c),
            ],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(ct, "application/zip");
    assert!(body.starts_with(b"PK"));
    // Every export is in the audit log with the staff member who made it.
    let (_, page) = admin.get("/console/audit").await;
    assert!(page.matches(">export<").count() >= 3, "{page}");
}

#[tokio::test]
async fn sign_in_is_throttled_after_repeated_failures() {
    let s = start().await;
    let pw = add_staff(&s, "m@registry.example", Role::RegistryMonitor, None);
    let mut b = Browser::new(&s.server.url());
    for _ in 0..5 {
        let (status, _, _) = b.sign_in("m@registry.example", "wrong-password-x").await;
        assert_eq!(status, 401);
    }
    // Even the right password is refused while throttled.
    let (status, page, _) = b.sign_in("m@registry.example", &pw).await;
    assert_eq!(status, 429);
    assert!(page.contains("Too many failed sign-ins"));
}

#[tokio::test]
async fn assets_are_embedded_with_caching_headers() {
    let s = start().await;
    let (_, page) = Browser::new(&s.server.url()).get("/console/login").await;
    let at = page.find("/console/assets/console.css?v=").unwrap();
    let url = &page[at..page[at..].find('"').unwrap() + at];
    let r = s.http.get(s.url(url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert!(r.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    let r = s
        .http
        .get(s.url("/console/assets/htmx.min.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "another asset's etag does not match");
    let r = s
        .http
        .get(s.url(url))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
}

#[test]
fn staff_accounts_and_sessions_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let s = followup_server::storage::SqliteStorage::open(dir.path()).unwrap();
    staff_cases::staff_accounts_and_sessions(&s);
}

/// A clinic user created by staff and activated on `dev` (what a tablet does with the code).
async fn activated_user(
    s: &TestServer,
    dev: &TestDevice,
    clinic: RecordId,
    name: &str,
) -> followup_domain::ids::UserId {
    use followup_domain::users::{
        ActivateUserRequest, CreateClinicUserRequest, CreateClinicUserResponse, USER_ACTIVATE_PATH,
    };
    let r = s
        .admin_post(
            "/v1/admin/clinic-users",
            &CreateClinicUserRequest {
                clinic,
                name: name.into(),
            },
        )
        .await;
    assert_eq!(r.status(), 201);
    let created: CreateClinicUserResponse = json(r).await;
    let body = serde_json::to_vec(&ActivateUserRequest {
        user: created.user,
        code: created.activation_code,
    })
    .unwrap();
    let mut req = s
        .http
        .post(s.url(USER_ACTIVATE_PATH))
        .header("content-type", "application/json");
    for (k, v) in dev
        .identity
        .sign_request(dev.id, "POST", USER_ACTIVATE_PATH, &body, now_ms())
        .to_header_pairs()
    {
        req = req.header(k, v);
    }
    let r = req.body(body).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    created.user
}

/// The patient timeline and the audit page say who recorded each entry: the tablet by its label
/// and the nurse by name (the user each change was attributed to, as the push path verified it),
/// the creator and the last writer when they differ; and so after a rebuild of the read model.
#[tokio::test]
async fn timeline_and_audit_name_the_tablet_and_the_nurse() {
    use automerge::transaction::{CommitOptions, Transactable};
    use automerge::{ReadDoc, ROOT};
    use followup_domain::model::attribution_message;
    let s = start_with_rules().await;
    let a = s.create_clinic("Clinica Alfa").await;
    let mut tablet = s.enrol(EnrolmentGrant::ClinicDevice { clinic: a }).await;
    // The label staff gave the tablet when they enrolled it.
    rusqlite::Connection::open(s.dir.path().join("db").join("registry.sqlite3"))
        .unwrap()
        .execute(
            "UPDATE devices SET label = 'Tablet 2, ward B' WHERE id = ?1",
            [tablet.id.0.to_vec()],
        )
        .unwrap();
    let ana = activated_user(&s, &tablet, a, "Ana Lima").await;
    let rui = activated_user(&s, &tablet, a, "Rui Costa").await;

    // Ana enrols the patient; later Rui corrects the birth year, on the same tablet.
    let patient = tablet.enrolment();
    {
        let d = &mut tablet.docs.get_mut(&patient).unwrap().doc;
        d.put(
            &d.get(ROOT, "body").unwrap().unwrap().1,
            "study_code",
            "ALFA-7",
        )
        .unwrap();
        d.commit_with(CommitOptions::default().with_message(attribution_message(ana)));
    }
    tablet.sync(&s).await;
    {
        let d = &mut tablet.docs.get_mut(&patient).unwrap().doc;
        d.put(
            &d.get(ROOT, "body").unwrap().unwrap().1,
            "birth_year",
            1961_i64,
        )
        .unwrap();
        d.commit_with(CommitOptions::default().with_message(attribution_message(rui)));
    }
    tablet.sync(&s).await;
    assert!(tablet.docs[&patient].rejected.is_none());

    let admin_pw = add_staff(&s, "admin@registry.example", Role::RegistryAdmin, None);
    let mut admin = Browser::new(&s.server.url());
    assert_eq!(
        admin.sign_in("admin@registry.example", &admin_pw).await.0,
        303
    );
    let short = |hex: String| hex[..8].to_string();
    let tablet_name = format!("Tablet 2, ward B ({})", short(tablet.id.to_hex()));
    let ana_name = format!("Ana Lima ({})", short(ana.to_hex()));
    let rui_name = format!("Rui Costa ({})", short(rui.to_hex()));
    let expected = format!("{tablet_name}, {ana_name}; last changed by {tablet_name}, {rui_name}");
    let check_timeline = |page: &str| {
        assert!(page.contains("ALFA-7"), "{page}");
        assert!(page.contains(&expected), "expected {expected:?} in {page}");
    };
    let (status, page) = admin.get(&format!("/console/patients/{patient}")).await;
    assert_eq!(status, 200);
    check_timeline(&page);

    // The audit page names the user of each accepted write.
    let (status, page) = admin.get("/console/audit").await;
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!("{tablet_name}, {ana_name}")),
        "{page}"
    );
    assert!(
        page.contains(&format!("{tablet_name}, {rui_name}")),
        "{page}"
    );

    // A rebuilt read model says the same (the users come back from the audit chain).
    s.server.storage().rebuild_read_model(now_ms()).unwrap();
    let (_, page) = admin.get(&format!("/console/patients/{patient}")).await;
    check_timeline(&page);
}

/// Study codes linked on a page (`>CODE</a>` after a patient link), in order.
fn study_codes(page: &str) -> Vec<String> {
    page.split("<a href=\"/console/patients/")
        .skip(1)
        .filter_map(|p| p.split_once('>').and_then(|(_, r)| r.split_once("</a>")))
        .map(|(code, _)| code.to_string())
        .collect()
}

/// The href of the link marked `rel` (`next`, `prev`), unescaped.
fn rel_link(page: &str, rel: &str) -> Option<String> {
    let end = page.find(&format!("\" rel=\"{rel}\""))?;
    let start = page[..end].rfind("href=\"")? + 6;
    Some(page[start..end].replace("&amp;", "&").replace("&#38;", "&"))
}

/// The long lists (patients due, clinics, the adverse-event queue) come a page at a time, with
/// links that keep the filters, so that no page grows with the registry; the pages together
/// list every row once, in the order of the read model's query.
#[tokio::test]
async fn console_long_lists_are_paged() {
    use followup_server::readmodel::query::{self, VisitFilter, VisitState};
    let s = start_with_rules().await;
    let storage = s.server.storage().clone();
    let (big, patients) = {
        let storage = storage.clone();
        tokio::task::spawn_blocking(move || {
            let mut reg = rm_cases::Registry::new(storage.clone());
            // 52 small clinics (one patient each) and one with 130 patients, 120 adverse events.
            for c in 0..52 {
                let clinic = reg.clinic(&format!("Clinica {c:02}"));
                let mut tab = reg.tablet(clinic);
                let p = tab.create(None, &rm_cases::enrolment(&format!("S{c:02}")));
                tab.create(Some(p), &rm_cases::procedure("2026-01-05"));
                tab.push(storage.as_ref(), reg.now_ms);
            }
            let big = reg.clinic("Clinica Grande");
            let mut tab = reg.tablet(big);
            let mut patients = Vec::new();
            for p in 0..130 {
                let patient = tab.create(None, &rm_cases::enrolment(&format!("G{p:03}")));
                let proc_id = tab.create(Some(patient), &rm_cases::procedure("2025-06-01"));
                if p < 120 {
                    tab.create(
                        Some(patient),
                        &rm_cases::adverse_event(2, false, Some(proc_id)),
                    );
                }
                patients.push(patient);
            }
            tab.push(storage.as_ref(), reg.now_ms);
            (big, patients)
        })
        .await
        .unwrap()
    };
    assert_eq!(patients.len(), 130);
    let pw = add_staff(&s, "admin@registry.example", Role::RegistryAdmin, None);
    let mut admin = Browser::new(&s.server.url());
    assert_eq!(admin.sign_in("admin@registry.example", &pw).await.0, 303);

    // Patients with a missed m1 visit, 100 a page, in the read model's order.
    let today = chrono::Utc::now().date_naive();
    let all = query::visit_list(
        storage.as_ref(),
        None,
        today,
        &VisitFilter {
            states: vec![VisitState::Missed],
            visit: Some("m1".into()),
            limit: 1000,
            ..VisitFilter::default()
        },
    )
    .unwrap();
    let expected: Vec<String> = all.iter().filter_map(|v| v.study_code.clone()).collect();
    assert_eq!(expected.len(), 182, "every patient's m1 is long missed");
    let (status, p1) = admin.get("/console/followup?visit=m1&state=missed").await;
    assert_eq!(status, 200);
    assert!(p1.contains("Visits 1–100 of 182."), "{p1}");
    let patients_of = |p: &str| p.split("id=\"patients\"").nth(1).unwrap().to_string();
    let next = rel_link(&patients_of(&p1), "next").expect("a next link");
    assert_eq!(next, "/console/followup?visit=m1&state=missed&page=2");
    assert!(rel_link(&patients_of(&p1), "prev").is_none());
    let (_, p2) = admin.get(&next).await;
    assert!(p2.contains("Visits 101–182 of 182."), "{p2}");
    assert!(rel_link(&patients_of(&p2), "next").is_none());
    assert_eq!(
        rel_link(&patients_of(&p2), "prev").as_deref(),
        Some("/console/followup?visit=m1&state=missed")
    );
    let mut listed = study_codes(&p1);
    listed.extend(study_codes(&p2));
    assert_eq!(listed, expected);
    // Past the end shows the last page; a page that is not a number is refused.
    let past_end = admin
        .get("/console/followup?visit=m1&state=missed&page=9")
        .await
        .1;
    assert!(past_end == p2, "page 9 of 2 is not the last page");
    assert_eq!(admin.get("/console/followup?page=zero").await.0, 400);

    // Per visit (all clinics), then per clinic, the most missed first, 25 a page.
    assert!(p1.contains("Per visit, all clinics"));
    let per_clinic = p1.split("id=\"per-clinic\"").nth(1).unwrap();
    let first_row = per_clinic
        .split("<tbody>")
        .nth(1)
        .unwrap()
        .replace("&#38;", "&");
    assert!(
        first_row.starts_with(&format!(
            "<tr><th scope=\"row\"><a href=\"/console/followup?clinic={}&visit=m1&state=missed\">Clinica Grande</a>",
            big.to_hex()
        )),
        "{first_row}"
    );
    assert_eq!(
        per_clinic
            .split("</table>")
            .next()
            .unwrap()
            .matches("<tr><th scope=\"row\">")
            .count(),
        25
    );
    let cnext = rel_link(per_clinic, "next").expect("a next page of clinics");
    assert_eq!(cnext, "/console/followup?visit=m1&state=missed&cpage=2");
    let (_, c2) = admin.get(&cnext).await;
    let per_clinic2 = c2.split("id=\"per-clinic\"").nth(1).unwrap();
    assert_eq!(
        per_clinic2
            .split("</table>")
            .next()
            .unwrap()
            .matches("<tr><th scope=\"row\">")
            .count(),
        25
    );
    assert!(c2.contains("Clinics 26–50 of 53"));
    // One clinic: its visits only, no per-clinic table.
    let (_, one) = admin
        .get(&format!("/console/followup?clinic={}", big.to_hex()))
        .await;
    assert!(one.contains("Per visit, Clinica Grande"));
    assert!(!one.contains("id=\"per-clinic\""));

    // The clinics and devices lists: 53 clinics, one tablet each, 50 a page.
    let (_, cl1) = admin.get("/console/clinics").await;
    assert_eq!(cl1.matches("<a href=\"/console/clinics/").count(), 50);
    assert!(cl1.contains("Clinics 1–50 of 53"));
    let next = rel_link(&cl1, "next").unwrap();
    assert_eq!(next, "/console/clinics?page=2");
    let (_, cl2) = admin.get(&next).await;
    assert_eq!(cl2.matches("<a href=\"/console/clinics/").count(), 3);
    let (_, dv2) = admin.get("/console/devices?page=2").await;
    assert!(dv2.contains("Devices 51–53 of 53"), "{dv2}");
    assert_eq!(dv2.matches("<td><code>").count(), 3);
    assert_eq!(admin.get("/console/devices?page=-1").await.0, 400);

    // The adverse-event queue: 120 events, 100 a page, the filter kept in the links.
    let (_, q1) = admin
        .get(&format!("/console/adverse-events?clinic={}", big.to_hex()))
        .await;
    assert!(
        q1.contains("<p>120 events, most overdue first.</p>"),
        "{q1}"
    );
    assert!(q1.contains("Events 1–100 of 120"));
    assert_eq!(
        q1.matches("<a href=\"/console/adverse-events/").count(),
        100
    );
    let next = rel_link(&q1, "next").unwrap();
    assert_eq!(
        next,
        format!("/console/adverse-events?clinic={}&page=2", big.to_hex())
    );
    let (_, q2) = admin.get(&next).await;
    assert_eq!(q2.matches("<a href=\"/console/adverse-events/").count(), 20);
    let ids = |p: &str| -> Vec<String> {
        p.split("<a href=\"/console/adverse-events/")
            .skip(1)
            .map(|r| r[..32].to_string())
            .collect()
    };
    let mut every: Vec<String> = ids(&q1);
    every.extend(ids(&q2));
    every.sort();
    every.dedup();
    assert_eq!(every.len(), 120, "each event on exactly one page");
    // A small list has no page links.
    let (_, small) = admin.get("/console/adverse-events?status=resolved").await;
    assert!(small.contains("<p>0 events, most overdue first.</p>"));
    assert!(!small.contains("rel=\"next\""));
}

/// The patient timeline shows each response's answers under the labels of the questionnaire
/// version the device filled (a version the registry published, not only the built-in one),
/// marks a serious adverse event and links the event and its adjudication to the event's page.
#[tokio::test]
async fn console_timeline_labels_from_the_published_version_and_serious_events() {
    use followup_domain::definitions::DefinitionState;
    use followup_domain::model::AdjudicationStatus;
    use followup_domain::questionnaire::{AnswerValue, Answers};
    let s = start_with_rules().await;
    let storage = s.server.storage().clone();
    let mut v11: serde_json::Value = serde_json::from_str(include_str!(
        "../../domain/instruments/clinician-followup.json"
    ))
    .unwrap();
    v11["version"] = "1.1.0".into();
    assert_eq!(v11["items"][0]["id"], "visit_date");
    v11["items"][0]["text"] = "Date the patient was seen (wording of 1.1.0)".into();
    followup_server::definitions::publish(
        storage.as_ref(),
        &v11.to_string(),
        DefinitionState::Published,
        now_ms(),
    )
    .unwrap();
    let (patient, ae) = tokio::task::spawn_blocking(move || {
        let mut reg = rm_cases::Registry::new(storage.clone());
        let clinic = reg.clinic("Clinica Alfa");
        let mut tab = reg.tablet(clinic);
        let patient = tab.create(None, &rm_cases::enrolment("ALFA-9"));
        let proc_id = tab.create(Some(patient), &rm_cases::procedure("2026-01-05"));
        for (visit, version, date) in [("d7", "1.0.0", "2026-01-12"), ("m1", "1.1.0", "2026-02-05")]
        {
            let mut r = rm_cases::response(proc_id, visit, true);
            r.questionnaire_version = version.into();
            let mut answers = Answers::new();
            answers.insert("visit_date".into(), AnswerValue::Text(date.into()));
            r.answers = answers;
            tab.create(Some(patient), &r);
        }
        let ae = tab.create(
            Some(patient),
            &rm_cases::adverse_event(3, true, Some(proc_id)),
        );
        tab.create(
            Some(patient),
            &rm_cases::adjudication(ae, AdjudicationStatus::Open),
        );
        tab.push(storage.as_ref(), reg.now_ms);
        (patient, ae)
    })
    .await
    .unwrap();
    let pw = add_staff(&s, "monitor@registry.example", Role::RegistryMonitor, None);
    let mut monitor = Browser::new(&s.server.url());
    assert_eq!(
        monitor.sign_in("monitor@registry.example", &pw).await.0,
        303
    );
    let (status, page) = monitor
        .get(&format!("/console/patients/{}", patient.to_hex()))
        .await;
    assert_eq!(status, 200);
    let blocks: Vec<&str> = page.split("<details>").skip(1).collect();
    assert_eq!(blocks.len(), 2, "{page}");
    let d7 = blocks.iter().find(|b| b.contains("visit d7")).unwrap();
    let m1 = blocks.iter().find(|b| b.contains("visit m1")).unwrap();
    assert!(
        d7.contains("<th scope=\"row\">Date of the visit</th><td>2026-01-12</td>"),
        "{d7}"
    );
    assert!(
        m1.contains("<th scope=\"row\">Date the patient was seen (wording of 1.1.0)</th><td>2026-02-05</td>"),
        "{m1}"
    );
    let event_link = format!(
        "<a href=\"/console/adverse-events/{}\">Adverse event: infection</a> <span class=\"bad\">serious</span>",
        ae.to_hex()
    );
    assert!(page.contains(&event_link), "{page}");
    assert!(
        page.contains("grade 3, serious (hospitalisation)"),
        "{page}"
    );
    assert!(page.contains(&format!(
        "<a href=\"/console/adverse-events/{}\">Adjudication</a> <span class=\"bad\">serious</span>",
        ae.to_hex()
    )));
}
