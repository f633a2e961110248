//! Console page-render benchmark over a big registry (ignored by default; a few minutes):
//!
//! ```sh
//! cargo test --release -p followup-server --test console_bench -- --ignored --nocapture
//! # smaller: CONSOLE_BENCH_SCALE=10 (a tenth of every count)
//! ```
//!
//! Fills a SQLite registry with 100 clinics, 10,000 patients (one procedure each), 100,000
//! submitted 50-answer clinician responses and 2,000 adverse events (half adjudicated), every
//! record pushed through the real sync handler so that the read model is kept as in production;
//! then signs in as a registry admin and as a clinic coordinator and requests every console page
//! over HTTP on 127.0.0.1, reporting p50 / p95 per page and the heaviest page's size.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rm_cases;

use std::sync::Arc;
use std::time::Instant;

use followup_domain::ids::RecordId;
use followup_domain::model::{AdjudicationStatus, FollowupResponse};
use followup_domain::questionnaire::{AnswerValue, Answers};
use followup_server::staff::{self, FirstSignIn, Role, SessionPolicy, SignIn, ThrottlePolicy};
use followup_server::storage::{SqliteStorage, Storage};
use followup_server::{Config, Server};
use rm_cases::{adjudication, adverse_event, enrolment, procedure, Registry};

const SENTENCES: [&str; 4] = [
    "mild headache for two days after the infusion",
    "no change in walking distance this month",
    "slight swelling at the injection site",
    "tired in the evenings, otherwise well",
];
const VISITS: [&str; 10] = [
    "d7",
    "m1",
    "m3",
    "m6",
    "m12",
    "y2",
    "m1-survey",
    "m3-survey",
    "m6-survey",
    "m12-survey",
];

/// A submitted 50-answer response (the brief's benchmark workload item types).
fn response_50(procedure: RecordId, visit: &str, seed: u64) -> FollowupResponse {
    let mut r = rm_cases::response(procedure, visit, true);
    let mut answers = Answers::new();
    for n in 1..=50u64 {
        let v = match n % 5 {
            0 => AnswerValue::Int(((seed + n) % 11) as i64),
            1 => AnswerValue::Bool((seed + n).is_multiple_of(2)),
            2 => AnswerValue::Text(
                ["none", "mild", "moderate", "severe"][((seed + n) % 4) as usize].into(),
            ),
            3 => AnswerValue::Decimal(((seed * 7 + n) % 1000) as f64 / 10.0),
            _ => AnswerValue::Text(SENTENCES[((seed + n) % 4) as usize].into()),
        };
        answers.insert(format!("q{n:02}"), v);
    }
    r.answers = answers;
    r
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: a few minutes in release"]
async fn console_pages_over_a_big_registry() {
    // The HTTP client below speaks rustls: name its crypto provider (as `common::init` does).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let scale: usize = std::env::var("CONSOLE_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let clinics = 100;
    let patients_per_clinic = 100 / scale;
    let responses_per_patient = 10;
    let aes_per_clinic = 20 / scale.min(20);
    let dir = tempfile::tempdir().unwrap();
    let s: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&dir.path().join("db")).unwrap());

    let fill = Instant::now();
    let s2 = s.clone();
    let (first_clinic, counts) = tokio::task::spawn_blocking(move || {
        let mut reg = Registry::new(s2.clone());
        let mut first = None;
        let mut n_resp = 0u64;
        let mut n_ae = 0u64;
        for c in 0..clinics {
            let clinic = reg.clinic(&format!("Clinic {c:03}"));
            first.get_or_insert(clinic);
            let mut tab = reg.tablet(clinic);
            let mut procs = Vec::new();
            for p in 0..patients_per_clinic {
                let patient = tab.create(None, &enrolment(&format!("C{c:03}-P{p:03}")));
                let proc_id = tab.create(Some(patient), &procedure("2025-06-01"));
                procs.push((patient, proc_id));
                for (v, visit) in VISITS.iter().take(responses_per_patient).enumerate() {
                    tab.create(
                        Some(patient),
                        &response_50(proc_id, visit, (c * 1000 + p * 10 + v) as u64),
                    );
                    n_resp += 1;
                }
            }
            tab.push(s2.as_ref(), reg.now_ms);
            let mut aes = Vec::new();
            for a in 0..aes_per_clinic {
                let (patient, proc_id) = procs[a % procs.len()];
                let ae = tab.create(
                    Some(patient),
                    &adverse_event((a % 5 + 1) as i64, a.is_multiple_of(4), Some(proc_id)),
                );
                aes.push((patient, ae));
                n_ae += 1;
            }
            tab.push(s2.as_ref(), reg.now_ms);
            for (i, (patient, ae)) in aes.iter().enumerate() {
                if i.is_multiple_of(2) {
                    tab.create(
                        Some(*patient),
                        &adjudication(*ae, AdjudicationStatus::Responded),
                    );
                }
            }
            tab.push(s2.as_ref(), reg.now_ms);
        }
        (
            first.unwrap(),
            (clinics * patients_per_clinic, n_resp, n_ae),
        )
    })
    .await
    .unwrap();
    eprintln!(
        "filled: {clinics} clinics, {} patients, {} responses, {} adverse events in {:.1} s",
        counts.0,
        counts.1,
        counts.2,
        fill.elapsed().as_secs_f64()
    );

    // Staff and sessions.
    let s3 = s.clone();
    let (admin_cookie, coord_cookie) = tokio::task::spawn_blocking(move || {
        let mut cookies = Vec::new();
        for (email, role, clinic) in [
            ("admin@bench.example", Role::RegistryAdmin, None),
            (
                "coord@bench.example",
                Role::ClinicCoordinator,
                Some(first_clinic),
            ),
        ] {
            let pw = staff::create_staff(
                s3.as_ref(),
                email,
                role,
                clinic,
                FirstSignIn::Password,
                false,
                staff::BOOTSTRAP_ACTOR,
                rm_cases::T0_MS,
            )
            .unwrap()
            .password
            .unwrap();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            match staff::sign_in(
                s3.as_ref(),
                email,
                &pw,
                None,
                "bench",
                ThrottlePolicy::default(),
                SessionPolicy::default(),
                now,
            )
            .unwrap()
            {
                SignIn::Ok { cookie, .. } => cookies.push(cookie),
                other => panic!("sign-in failed: {other:?}"),
            }
        }
        (cookies[0].clone(), cookies[1].clone())
    })
    .await
    .unwrap();

    let server = Server::start_with_storage(
        Config::for_tests(dir.path().join("unused"), None),
        s.clone(),
    )
    .await
    .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // A patient and an adverse event of the first clinic, for the detail pages.
    let s4 = s.clone();
    let (patient, ae) = tokio::task::spawn_blocking(move || {
        let day = chrono::Utc::now().date_naive();
        let q = followup_server::readmodel::query::ae_queue(
            s4.as_ref(),
            Some(first_clinic),
            day,
            &Default::default(),
        )
        .unwrap();
        (q[0].patient, q[0].adverse_event)
    })
    .await
    .unwrap();
    let c = first_clinic.to_hex();
    let pages: Vec<(&str, String, &str)> = vec![
        ("overview", "/console".into(), "admin"),
        ("clinics", "/console/clinics".into(), "admin"),
        ("clinic", format!("/console/clinics/{c}"), "admin"),
        ("follow-up", "/console/followup".into(), "admin"),
        (
            "follow-up, upcoming (a full page of patients)",
            "/console/followup?state=upcoming".into(),
            "admin",
        ),
        (
            "follow-up, one clinic",
            format!("/console/followup?clinic={c}"),
            "admin",
        ),
        ("adverse events", "/console/adverse-events".into(), "admin"),
        (
            "adverse events, page 20",
            "/console/adverse-events?page=20".into(),
            "admin",
        ),
        (
            "adverse event",
            format!("/console/adverse-events/{}", ae.to_hex()),
            "admin",
        ),
        (
            "patient timeline",
            format!("/console/patients/{}", patient.to_hex()),
            "admin",
        ),
        ("devices", "/console/devices".into(), "admin"),
        ("audit (latest)", "/console/audit".into(), "admin"),
        ("overview (coordinator)", "/console".into(), "coord"),
        (
            "follow-up (coordinator)",
            "/console/followup".into(),
            "coord",
        ),
        (
            "adverse events (coordinator)",
            "/console/adverse-events".into(),
            "coord",
        ),
        ("participation (public)", "/participation".into(), "none"),
    ];
    let runs = 25;
    let mut heaviest = (0usize, "");
    println!("| page | p50 ms | p95 ms | bytes |");
    println!("|---|---|---|---|");
    for (name, path, who) in &pages {
        let cookie = match *who {
            "admin" => format!("followup_session={admin_cookie}"),
            "coord" => format!("followup_session={coord_cookie}"),
            _ => String::new(),
        };
        let mut times = Vec::new();
        let mut size = 0;
        for i in 0..runs + 2 {
            let t = Instant::now();
            let r = http
                .get(format!("{}{path}", server.url()))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
            let body = r.bytes().await.unwrap();
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            size = body.len();
            if i >= 2 {
                times.push(ms);
            }
        }
        if size > heaviest.0 {
            heaviest = (size, name);
        }
        let p50 = pct(&mut times, 0.5);
        let p95 = pct(&mut times, 0.95);
        println!("| {name} | {p50:.1} | {p95:.1} | {size} |");
    }
    println!("heaviest page: {} ({} bytes)", heaviest.1, heaviest.0);
    server.shutdown().await.unwrap();
}
