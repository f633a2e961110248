//! End-to-end: definitions published by the registry reach devices by sync, versions are
//! captured exactly, texts and messages follow the locale, and a definition newer than the app
//! disables only its own form. A real server on 127.0.0.1; every network step bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use chrono::{Days, Utc};
use followup_device::Error;
use followup_domain::definitions::{
    self, new_definition_doc, Definition, DefinitionBody, DefinitionState, Usability,
};
use followup_domain::model::{self, Author, FollowupResponse, Procedure};
use followup_domain::questionnaire::{AnswerValue, ProblemCode};
use followup_e2e::*;
use followup_server::storage::DocWrite;
use followup_testkit::workload::{bench_enrolment, bench_procedure};

fn builtin(id: &str) -> serde_json::Value {
    definitions::builtin_definitions()
        .iter()
        .map(|j| serde_json::from_str::<serde_json::Value>(j).unwrap())
        .find(|v| v["id"] == id)
        .unwrap()
}

/// Clinician follow-up 1.1.0: a new required item, and temperature capped lower.
fn clinician_v2() -> String {
    let mut v = builtin("clinician-followup");
    v["version"] = "1.1.0".into();
    v["items"].as_array_mut().unwrap().push(serde_json::json!({
        "id": "pain_location", "text": "Where is the pain?", "type": "text", "required": true
    }));
    v["translations"]["es"]["items"]["pain_location"] =
        serde_json::json!({"text": "¿Dónde le duele?"});
    v.to_string()
}

fn procedure_on(date: &str) -> Procedure {
    let mut p = bench_procedure(1);
    p.date = date.into();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_published_mid_day_reaches_two_tablets_and_v1_drafts_stay_valid() {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("Clinica Alfa").await;
    let t1 = reg.bare_clinic_tablet(clinic, "tablet 1").await;
    let t2 = reg.bare_clinic_tablet(clinic, "tablet 2").await;

    // No form is built into the app: nothing to capture before the first sync.
    assert!(t1.definitions().unwrap().is_empty());
    assert!(matches!(
        t1.questionnaire("clinician-followup"),
        Err(Error::NotFound(_))
    ));
    sync_until_quiet(&[&t1, &t2]).await;
    let listed = t1.definitions().unwrap();
    let cf = listed
        .iter()
        .find(|d| d.id == "clinician-followup")
        .unwrap();
    assert_eq!(
        (cf.version.as_str(), cf.state),
        ("1.0.0", DefinitionState::Published)
    );
    assert_eq!(cf.languages, ["en", "es"]);
    assert!(listed.iter().all(|d| d.usability == Usability::Usable));

    // Morning, both tablets on 1.0.0: tablet 1 starts two drafts.
    let today = Utc::now().date_naive();
    let day = today.to_string();
    let x = t1.enrol_patient(&bench_enrolment(1)).unwrap();
    let p = t1
        .record_procedure(x, &procedure_on(&(today - Days::new(7)).to_string()))
        .unwrap();
    let draft_a = t1
        .start_response(x, "clinician-followup", Some(p), Some("d7"))
        .unwrap();
    let draft_b = t1
        .start_response(x, "clinician-followup", None, None)
        .unwrap();
    t1.save_answers(draft_a, &clinician_followup(&day)).unwrap();
    t1.save_answers(draft_b, &clinician_followup(&day)).unwrap();
    t1.sync().await.unwrap();

    // Midday, the registry publishes 1.1.0 (validated; published again = no-op; other
    // content under 1.1.0 = refused).
    let staff = reg.staff();
    let r = staff
        .publish_definition(&clinician_v2(), false)
        .await
        .unwrap();
    assert_eq!(r.outcome, definitions::PublishOutcome::Published);
    let again = staff
        .publish_definition(&clinician_v2(), false)
        .await
        .unwrap();
    assert_eq!(again.outcome, definitions::PublishOutcome::Unchanged);
    let mut other: serde_json::Value = serde_json::from_str(&clinician_v2()).unwrap();
    other["title"] = "Something else".into();
    assert!(staff
        .publish_definition(&other.to_string(), false)
        .await
        .is_err());
    let mut typo: serde_json::Value = serde_json::from_str(&clinician_v2()).unwrap();
    typo["version"] = "1.2.0".into();
    typo["items"][0]["requird"] = true.into();
    assert!(staff
        .publish_definition(&typo.to_string(), false)
        .await
        .is_err());

    // Tablet 2 syncs and captures with 1.1.0; its new required item applies.
    t2.sync().await.unwrap();
    assert_eq!(
        t2.questionnaire("clinician-followup").unwrap().version(),
        "1.1.0"
    );
    let r2 = t2
        .start_response(x, "clinician-followup", None, None)
        .unwrap();
    t2.save_answers(r2, &clinician_followup(&day)).unwrap();
    match t2.submit_response(r2) {
        Err(Error::Validation(problems)) => {
            assert!(problems
                .iter()
                .any(|p| p.item == "pain_location" && p.code == ProblemCode::Required))
        }
        other => panic!("expected the 1.1.0 rules, got {other:?}"),
    }
    t2.save_answers(
        r2,
        &answers(&[("pain_location", AnswerValue::Text("knee".into()))]),
    )
    .unwrap();
    t2.submit_response(r2).unwrap();

    // Tablet 1 submits one 1.0.0 draft offline, then syncs and receives 1.1.0; its other 1.0.0
    // draft is still valid and submittable under 1.0.0, and new responses use 1.1.0.
    t1.submit_response(draft_a).unwrap();
    t1.sync().await.unwrap();
    assert_eq!(
        t1.questionnaire("clinician-followup").unwrap().version(),
        "1.1.0"
    );
    assert_eq!(
        t1.response_questionnaire(draft_b).unwrap().version(),
        "1.0.0"
    );
    t1.submit_response(draft_b).unwrap();
    let body: FollowupResponse = t1.get(draft_b).unwrap();
    assert_eq!(body.questionnaire_version, "1.0.0");
    assert!(!body.answers.contains_key("pain_location"));
    let fresh = t1
        .start_response(x, "clinician-followup", None, None)
        .unwrap();
    assert_eq!(t1.response_questionnaire(fresh).unwrap().version(), "1.1.0");
    // The d7 visit of the procedure is done by the 1.0.0 response.
    let visits = t1.patient_visits(x, today).unwrap();
    assert!(visits.iter().any(|v| v.visit.visit_id == "d7"
        && v.visit.state == followup_domain::schedule::VisitState::Done));

    // Retiring 1.1.0: new responses go back to the newest published version.
    staff
        .retire_definition("questionnaire", "clinician-followup", "1.1.0")
        .await
        .unwrap();
    sync_until_quiet(&[&t1, &t2]).await;
    assert_eq!(
        t2.questionnaire("clinician-followup").unwrap().version(),
        "1.0.0"
    );
    // The 1.1.0 response keeps its version.
    assert_eq!(t2.response_questionnaire(r2).unwrap().version(), "1.1.0");
    assert!(reg.verify_audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_work_list_uses_the_schedule_in_force_for_each_procedure() {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("Clinica Beta").await;
    let t = reg.bare_clinic_tablet(clinic, "tablet").await;
    let today = Utc::now().date_naive();
    // Schedule 1.1.0, in force for procedures from today on: day 7 becomes day 10.
    let mut s = builtin("registry-default");
    s["version"] = "1.1.0".into();
    s["effective_from"] = today.to_string().into();
    let d7 = s["visits"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|v| v["id"] == "d7")
        .unwrap();
    d7["offset_days"] = 10.into();
    reg.staff()
        .publish_definition(&s.to_string(), false)
        .await
        .unwrap();
    t.sync().await.unwrap();

    let x = t.enrol_patient(&bench_enrolment(1)).unwrap();
    let old = t
        .record_procedure(x, &procedure_on(&(today - Days::new(1)).to_string()))
        .unwrap();
    let new = t
        .record_procedure(x, &procedure_on(&today.to_string()))
        .unwrap();
    let visits = t.patient_visits(x, today).unwrap();
    let target = |proc| {
        visits
            .iter()
            .find(|v| v.procedure == proc && v.visit.visit_id == "d7")
            .map(|v| v.visit.target)
            .unwrap()
    };
    assert_eq!(target(old), today - Days::new(1) + Days::new(7));
    assert_eq!(target(new), today + Days::new(10));
    // The clinic-wide list agrees.
    let clinic_list = t.clinic_visits(today, None).unwrap();
    assert!(clinic_list.iter().any(|v| v.procedure == new
        && v.visit.visit_id == "d7"
        && v.visit.target == today + Days::new(10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_cannot_write_definitions() {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("Clinica Gamma").await;
    let t = reg.bare_clinic_tablet(clinic, "tablet").await;
    t.sync().await.unwrap();
    let info = t
        .definitions()
        .unwrap()
        .into_iter()
        .find(|d| d.id == "patient-outcome-survey")
        .unwrap();
    // A tampered app retires a form on its own and pushes the change.
    let mut doc = t.load(info.record).unwrap();
    let me = t.enrolment().unwrap().device_id;
    model::update_body::<DefinitionBody, followup_domain::Error>(
        &mut doc,
        Author::device_now(me),
        |b| {
            b.state = "retired".into();
            Ok(())
        },
    )
    .unwrap();
    t.save(&doc).unwrap();
    let report = t.sync().await.unwrap();
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert_eq!(report.rejected[0].code, "forbidden_kind");
    // The registry still says published.
    let list = reg.staff().definitions().await.unwrap();
    let survey = list
        .iter()
        .find(|d| d.id == "patient-outcome-survey")
        .unwrap();
    assert_eq!(survey.state, "published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spanish_texts_and_messages_and_a_form_too_new_for_the_app() {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("Clinica Delta").await;
    let t = reg.bare_clinic_tablet(clinic, "tablet").await;
    t.sync().await.unwrap();
    let x = t.enrol_patient(&bench_enrolment(1)).unwrap();

    // Texts in the device's locale, with fallback.
    let q = t.questionnaire("patient-outcome-survey").unwrap();
    assert_eq!(
        q.localized("es-MX").item("walking").unwrap().text,
        "Caminar"
    );
    assert_eq!(q.localized("pt-BR").item("walking").unwrap().text, "Andar");
    assert_eq!(q.localized("fr").item("walking").unwrap().text, "Walking");
    // Messages in Spanish.
    let r = t
        .start_response(x, "patient-outcome-survey", None, None)
        .unwrap();
    let problems = t
        .save_answers_in(
            r,
            &answers(&[("symptom_pain", AnswerValue::Int(12))]),
            "es-MX",
        )
        .unwrap();
    assert_eq!(
        problems[0].message,
        "symptom_pain: 12 es mayor que el máximo de 10"
    );
    match t.submit_response_in(r, "es") {
        Err(Error::Validation(ps)) => {
            assert!(ps
                .iter()
                .any(|p| p.message == "completed_date: la respuesta es obligatoria"))
        }
        other => panic!("{other:?}"),
    }

    // A newer registry publishes survey 2.0.0 in format 2 (this server would refuse it, so it
    // goes straight into its storage, as a newer server would have written it).
    let mut v: serde_json::Value = serde_json::from_str(&q.to_json()).unwrap();
    v["version"] = "2.0.0".into();
    v["format"] = 2.into();
    v["items"][0]["type"] = "photo".into();
    let def = Definition::parse_lenient(&v.to_string()).unwrap();
    assert!(def.content.is_err());
    let doc = new_definition_doc(&def, DefinitionState::Published).unwrap();
    let write = DocWrite {
        header: model::read_header(&doc).unwrap(),
        bytes: doc.save(),
        heads: doc.get_heads(),
        expected_version: None,
        device: None,
        new_changes: doc.get_changes(&[]).iter().map(|c| c.hash()).collect(),
        event: "definition_published",
        projection: None,
        users: Vec::new(),
    };
    reg.server.storage().commit_writes(&[write], 0).unwrap();
    t.sync().await.unwrap();

    // Only that form is disabled, with the reason; the others work; the 1.0.0 draft is kept
    // and still submittable.
    let listed = t.definitions().unwrap();
    let newer = listed
        .iter()
        .find(|d| d.id == "patient-outcome-survey" && d.version == "2.0.0")
        .unwrap();
    assert!(matches!(newer.usability, Usability::NeedsUpdate(_)));
    assert!(matches!(
        t.questionnaire("patient-outcome-survey"),
        Err(Error::NeedsUpdate { .. })
    ));
    assert!(t.questionnaire("clinician-followup").is_ok());
    // (The adverse-event form is reported through adverse-event records, not started as a
    // response; the clinician's form stands for the other forms.)
    let other = t.start_response(x, "clinician-followup", None, None);
    assert!(other.is_ok(), "{other:?}");
    assert_eq!(t.response_questionnaire(r).unwrap().version(), "1.0.0");
    let complete = answers(&[
        (
            "completed_date",
            AnswerValue::Text(Utc::now().date_naive().to_string()),
        ),
        ("overall_change", AnswerValue::Text("better".into())),
        ("symptom_primary", AnswerValue::Int(2)),
        ("symptom_pain", AnswerValue::Int(2)),
        ("symptom_fatigue", AnswerValue::Int(2)),
        ("symptom_sleep", AnswerValue::Int(2)),
        ("symptom_mood", AnswerValue::Int(2)),
        ("daily_activities", AnswerValue::Text("slight".into())),
        ("walking", AnswerValue::Text("unaided".into())),
        ("work_status", AnswerValue::Text("retired".into())),
        ("new_problems", AnswerValue::Bool(false)),
        ("satisfaction", AnswerValue::Int(8)),
        ("would_recommend", AnswerValue::Text("yes".into())),
        ("extra_costs", AnswerValue::Bool(false)),
        ("financial_hardship", AnswerValue::Text("none".into())),
    ]);
    t.save_answers(r, &complete).unwrap();
    t.submit_response(r).unwrap();
    let report = t.sync().await.unwrap();
    assert!(report.rejected.is_empty(), "{report:?}");
}

fn minor_event(category: &str) -> model::AdverseEvent {
    model::AdverseEvent {
        reporter: model::Reporter::Clinic,
        category: category.into(),
        onset: (Utc::now().date_naive() - Days::new(1)).to_string(),
        severity: 2,
        seriousness: Vec::new(),
        outcome: model::AeOutcome::Recovering,
        description: "rash at the injection site".into(),
        procedure: None,
        answers: Default::default(),
    }
}

/// The adjudication policy is a published definition: a new version sets the deadline of every
/// event the registry accepts from then on, and names itself in the case; a case opened before
/// keeps its deadline. Devices receive the policy read only; a policy the registry cannot
/// validate is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_adjudication_policy_sets_the_deadlines_from_then_on() {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("Clinica Eta").await;
    let t = reg.clinic_tablet(clinic, "tablet").await;
    let x = t.enrol_patient(&bench_enrolment(1)).unwrap();
    let today = Utc::now().date_naive();

    // Under the built-in policy 1.0.0 a non-serious grade-2 event gets 30 days.
    let before = t
        .report_adverse_event(x, &minor_event("infection"))
        .unwrap();
    t.sync().await.unwrap();
    t.sync().await.unwrap();
    let case = t.adverse_event(before).unwrap().case.expect("case opened");
    assert_eq!(case.policy, "registry-adjudication@1.0.0");
    assert_eq!(case.days, 30);
    assert_eq!(case.deadline, (today + Days::new(30)).to_string());

    // A policy the registry cannot validate is refused (0 days; an unknown field).
    let mut bad = builtin("registry-adjudication");
    bad["version"] = "1.1.0".into();
    bad["default_days"] = 0.into();
    assert!(reg
        .staff()
        .publish_definition(&bad.to_string(), false)
        .await
        .is_err());
    bad["default_days"] = 14.into();
    bad["reminder_days"] = 3.into();
    assert!(reg
        .staff()
        .publish_definition(&bad.to_string(), false)
        .await
        .is_err());

    // 1.1.0: 14 days for what is neither serious nor grade 3.
    let mut v = builtin("registry-adjudication");
    v["version"] = "1.1.0".into();
    v["default_days"] = 14.into();
    let r = reg
        .staff()
        .publish_definition(&v.to_string(), false)
        .await
        .unwrap();
    assert_eq!(r.state, "published");

    let after = t
        .report_adverse_event(x, &minor_event("immune_reaction"))
        .unwrap();
    t.sync().await.unwrap();
    t.sync().await.unwrap();
    let case = t.adverse_event(after).unwrap().case.expect("case opened");
    assert_eq!(case.policy, "registry-adjudication@1.1.0");
    assert_eq!(case.days, 14);
    assert_eq!(case.deadline, (today + Days::new(14)).to_string());
    // The earlier case keeps the deadline it was opened with.
    let case = t.adverse_event(before).unwrap().case.unwrap();
    assert_eq!(
        (case.days, case.policy.as_str()),
        (30, "registry-adjudication@1.0.0")
    );

    // The tablet holds both versions, read only (the registry's, not the clinic's).
    let held: Vec<String> = t
        .definitions()
        .unwrap()
        .into_iter()
        .filter(|d| d.definition == "adjudication_policy")
        .map(|d| d.version)
        .collect();
    assert_eq!(held, ["1.0.0", "1.1.0"]);
}
