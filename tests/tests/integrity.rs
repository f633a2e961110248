//! End-to-end: data the registry can trust (`docs/integrity.md`). Devices and a real registry
//! server on 127.0.0.1: the registry's adjudication case (deadline set by the server, state at
//! the server's clock, escalation, the patient's reply), authorship, and every clinical rule
//! refused at the device and — when a device skips the check — at the server.

use std::time::Duration;

use chrono::{Days, NaiveDate, Utc};
use followup_device::device::Device;
use followup_device::Error as DeviceError;
use followup_domain::ids::RecordId;
use followup_domain::model::{
    self, Adjudication, AdjudicationCase, AdjudicationStatus, AdverseEvent, AeOutcome, Author,
    CaseReply, CaseState, CompletedBy, Consent, Enrolment, FollowupResponse, Procedure, RecordBody,
    RecordKind, Relatedness, Reporter, ResponseStatus, Sex, Verdict,
};
use followup_domain::questionnaire::{AnswerValue, Answers, ProblemCode};
use followup_e2e::*;
use followup_staff_client::StaffClient;

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

fn days_ahead(n: u64) -> String {
    (today() + Days::new(n)).format("%Y-%m-%d").to_string()
}

fn t(s: &str) -> AnswerValue {
    AnswerValue::Text(s.into())
}

fn enrolment(code: &str, birth_year: i64) -> Enrolment {
    Enrolment {
        study_code: code.into(),
        consent: Consent {
            form_version: "2.1".into(),
            date: days_ago(60),
            scope: vec!["registry".into()],
        },
        birth_year,
        sex: Sex::Female,
        enrolled_on: days_ago(60),
    }
}

fn procedure(date: &str) -> Procedure {
    use followup_domain::model::*;
    Procedure {
        date: date.into(),
        condition: "knee osteoarthritis".into(),
        procedure_type: "cell injection".into(),
        route: Route::IntraArticular,
        cell_type: CellType::Mesenchymal,
        source_tissue: SourceTissue::Adipose,
        origin: Origin::Autologous,
        manipulation: Manipulation::Minimal,
        regulatory_status: RegulatoryStatus::Unregulated,
        trial_registration: None,
        promised_benefits: vec![],
        cost: None,
    }
}

fn event(reporter: Reporter, severity: i64, seriousness: &[&str]) -> AdverseEvent {
    AdverseEvent {
        reporter,
        category: "infection".into(),
        onset: days_ago(2),
        severity,
        seriousness: seriousness.iter().map(|s| s.to_string()).collect(),
        outcome: AeOutcome::Recovering,
        description: "knee swollen and hot, fever at night".into(),
        procedure: None,
        answers: Answers::new(),
    }
}

/// A registry with one clinic, a tablet, a patient (procedure 40 days ago) and their phone.
struct World {
    reg: Registry,
    staff: StaffClient,
    clinic: RecordId,
    tablet: TestDevice,
    phone: TestDevice,
    patient: RecordId,
    procedure: RecordId,
}

async fn world() -> World {
    let reg = Registry::start().await;
    let staff = StaffClient::new(&reg.url(), Some(ADMIN)).unwrap();
    let clinic = reg.create_clinic("Clínica Atlântico").await;
    let tablet = reg.clinic_tablet(clinic, "tablet").await;
    let patient = tablet.enrol_patient(&enrolment("KX-1", 1961)).unwrap();
    let procedure = tablet
        .record_procedure(patient, &procedure(&days_ago(40)))
        .unwrap();
    tablet.sync().await.unwrap();
    let phone = reg.patient_phone(patient, "phone").await;
    phone.sync().await.unwrap();
    World {
        reg,
        staff,
        clinic,
        tablet,
        phone,
        patient,
        procedure,
    }
}

/// Write a new record directly into a device's store, skipping every check at capture (an old
/// or hostile device).
fn force_new<T: RecordBody>(d: &TestDevice, patient: RecordId, body: &T) -> RecordId {
    let e = d.enrolment().unwrap();
    let id = RecordId::random();
    let doc = model::new_record(
        Author::device_now(e.device_id),
        id,
        e.clinic,
        Some(patient),
        body,
    )
    .unwrap();
    d.device.save(&doc).unwrap();
    id
}

/// Change a record directly in a device's store, skipping every check.
#[allow(clippy::result_large_err)]
fn force_edit<T: RecordBody>(d: &TestDevice, id: RecordId, edit: impl FnOnce(&mut T)) {
    let e = d.enrolment().unwrap();
    let mut doc = d.device.load(id).unwrap();
    model::update_body::<T, followup_domain::Error>(
        &mut doc,
        Author::device_now(e.device_id),
        |b| {
            edit(b);
            Ok(())
        },
    )
    .unwrap()
    .expect("the edit changes the record");
    d.device.save(&doc).unwrap();
}

/// Sync and return the code the server rejected `id` with (`None`: accepted).
async fn push_result(d: &TestDevice, id: RecordId) -> Option<(String, String)> {
    let r = d.sync().await.unwrap();
    r.rejected
        .iter()
        .find(|x| x.record == id)
        .map(|x| (x.code.clone(), x.message.clone()))
}

async fn assert_rejected(d: &TestDevice, id: RecordId, code: &str, mentions: &str) {
    match push_result(d, id).await {
        Some((c, message)) => {
            assert_eq!(c, code, "{message}");
            assert!(
                message.contains(mentions),
                "the rejection {message:?} should mention {mentions:?}"
            );
        }
        None => panic!("the server accepted a record it must refuse ({mentions})"),
    }
    assert!(
        followup_device::sync::rejections(&d.device)
            .unwrap()
            .iter()
            .any(|r| r.record == id),
        "the device lists the rejection"
    );
}

/// The problem codes of a validation error at capture.
fn problems(r: followup_device::Result<impl std::fmt::Debug>) -> Vec<(String, ProblemCode)> {
    match r {
        Err(DeviceError::Validation(ps)) => ps.into_iter().map(|p| (p.item, p.code)).collect(),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

fn case_record(d: &Device, ae: RecordId) -> RecordId {
    d.store()
        .list(&followup_device::store::Query {
            kind: Some(RecordKind::AdjudicationCase),
            subject: Some(ae),
            ..Default::default()
        })
        .unwrap()
        .first()
        .expect("the device holds the registry's case")
        .id
}

fn decide(a: &mut Adjudication) {
    a.relatedness = Some(Relatedness::Probable);
    a.action = "oral antibiotics and wound care".into();
    a.remedy = "treatment and review at no cost to the patient".into();
    a.status = AdjudicationStatus::Responded;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_sets_the_deadline_and_the_clinic_cannot_change_it_or_the_report() {
    let w = world().await;
    let ae = w
        .phone
        .report_adverse_event(
            w.patient,
            &event(Reporter::Patient, 3, &["hospitalisation"]),
        )
        .unwrap();
    // Before the server has it, there is no deadline anywhere.
    assert!(w.phone.adverse_event(ae).unwrap().case.is_none());
    w.phone.sync().await.unwrap();
    w.tablet.sync().await.unwrap();

    let server_today = today();
    for d in [&w.phone, &w.tablet] {
        let v = d.adverse_event(ae).unwrap();
        let case = v.case.expect("the registry's case reached the device");
        assert_eq!(case.policy, "registry-adjudication@1.0.0");
        assert_eq!(case.rule, "serious");
        assert_eq!(case.days, 7);
        assert_eq!(
            v_deadline(&case),
            server_today + Days::new(7),
            "7 days from the server's acceptance"
        );
        assert_eq!(case.state, CaseState::Open);
    }

    // The clinic rewrites the patient's report: refused, and the tablet is back to the truth.
    force_edit::<AdverseEvent>(&w.tablet, ae, |a| {
        a.severity = 1;
        a.seriousness.clear();
        a.description = "minor redness".into();
    });
    assert_rejected(&w.tablet, ae, "forbidden_author", "patient").await;
    let kept: AdverseEvent = w.tablet.get(ae).unwrap();
    assert_eq!(kept.severity, 3);
    assert_eq!(kept.seriousness, vec!["hospitalisation".to_string()]);

    // The clinic moves its own deadline: refused (registry-authored record).
    let case = case_record(&w.tablet, ae);
    force_edit::<AdjudicationCase>(&w.tablet, case, |c| {
        c.deadline = "2099-12-31".into();
        c.state = CaseState::Closed;
    });
    assert_rejected(&w.tablet, case, "forbidden_kind", "registry").await;
    let c: AdjudicationCase = w.tablet.get(case).unwrap();
    assert_eq!(v_deadline(&c), server_today + Days::new(7));

    // Nor can it create a case record of its own.
    let fake = force_new(
        &w.tablet,
        w.patient,
        &AdjudicationCase {
            deadline: "2099-12-31".into(),
            ..c.clone()
        },
    );
    assert_rejected(&w.tablet, fake, "forbidden_kind", "registry").await;

    // The adjudication's legacy deadline field changes nothing.
    let adj = w.tablet.adjudicate(ae, decide).unwrap();
    force_edit::<Adjudication>(&w.tablet, adj, |a| a.deadline = "2099-12-31".into());
    w.tablet.sync().await.unwrap();
    let c: AdjudicationCase = w.tablet.get(case).unwrap();
    assert_eq!(v_deadline(&c), server_today + Days::new(7));
    assert_eq!(c.state, CaseState::Responded);
    assert!(w.reg.verify_audit().await.ok);
}

fn v_deadline(c: &AdjudicationCase) -> NaiveDate {
    NaiveDate::parse_from_str(&c.deadline, "%Y-%m-%d").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ignored_event_turns_overdue_at_the_servers_clock_and_escalation_reaches_the_tablet() {
    let w = world().await;
    let ae = w
        .tablet
        .report_adverse_event(w.patient, &event(Reporter::Clinic, 2, &[]))
        .unwrap();
    w.tablet.sync().await.unwrap();
    let v = w.tablet.adverse_event(ae).unwrap();
    assert_eq!(v.case.as_ref().unwrap().days, 30);
    assert_eq!(v.state(), Some(CaseState::Open));
    assert!(w
        .staff
        .cases(Some(w.clinic), Some("overdue"))
        .await
        .unwrap()
        .is_empty());

    // The clinic ignores it; a month passes on the registry's clock.
    w.reg
        .server
        .advance_registry_clock(Duration::from_secs(31 * 86_400));
    let overdue = w
        .staff
        .cases(Some(w.clinic), Some("overdue"))
        .await
        .unwrap();
    assert_eq!(overdue.len(), 1);
    assert_eq!(overdue[0].adverse_event, ae);
    w.tablet.sync().await.unwrap();
    assert_eq!(
        w.tablet.adverse_event(ae).unwrap().state(),
        Some(CaseState::Overdue),
        "the tablet shows the server's verdict"
    );
    let queue = w.tablet.adjudication_queue(today()).unwrap();
    assert!(queue.iter().any(|i| i.adverse_event == ae && i.overdue));

    // Registry staff escalate; the note reaches the tablet.
    let note = "Overdue: respond to KX-1's infection report within 48 hours";
    let s = w.staff.escalate(ae, note).await.unwrap();
    assert_eq!(s.state, "escalated");
    w.tablet.sync().await.unwrap();
    let v = w.tablet.adverse_event(ae).unwrap();
    assert_eq!(v.state(), Some(CaseState::Escalated));
    assert_eq!(
        v.case.as_ref().unwrap().escalations.last().unwrap().note,
        note
    );
    // The patient's phone sees it too.
    w.phone.sync().await.unwrap();
    assert_eq!(
        w.phone.adverse_event(ae).unwrap().state(),
        Some(CaseState::Escalated)
    );

    // The clinic answers: responded.
    w.tablet.adjudicate(ae, decide).unwrap();
    w.tablet.sync().await.unwrap();
    assert_eq!(
        w.tablet.adverse_event(ae).unwrap().state(),
        Some(CaseState::Responded)
    );
    assert!(w
        .staff
        .cases(None, Some("overdue"))
        .await
        .unwrap()
        .is_empty());
    assert!(w.reg.verify_audit().await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patient_reads_the_remedy_and_disputes_and_the_registry_sees_the_dispute() {
    let w = world().await;
    let ae = w
        .phone
        .report_adverse_event(w.patient, &event(Reporter::Patient, 2, &[]))
        .unwrap();
    w.phone.sync().await.unwrap();
    w.tablet.sync().await.unwrap();
    w.tablet.adjudicate(ae, decide).unwrap();
    w.tablet.sync().await.unwrap();
    w.phone.sync().await.unwrap();

    let v = w.phone.adverse_event(ae).unwrap();
    let (_, adj) = v
        .adjudication
        .as_ref()
        .expect("the phone reads the adjudication");
    assert_eq!(adj.relatedness, Some(Relatedness::Probable));
    assert_eq!(adj.remedy, "treatment and review at no cost to the patient");
    assert_eq!(v.state(), Some(CaseState::Responded));

    // A dispute says why; only the patient disputes.
    assert_eq!(
        problems(w.phone.reply_to_adjudication(ae, Verdict::Disputed, " ")),
        [("comment".to_string(), ProblemCode::Required)]
    );
    assert!(matches!(
        w.tablet.reply_to_adjudication(ae, Verdict::Accepted, ""),
        Err(DeviceError::NotPermitted(_))
    ));
    let reply = w
        .phone
        .reply_to_adjudication(
            ae,
            Verdict::Disputed,
            "Nobody called me back; I paid for the antibiotics",
        )
        .unwrap();
    w.phone.sync().await.unwrap();
    assert_eq!(
        w.phone.adverse_event(ae).unwrap().state(),
        Some(CaseState::Disputed)
    );
    let disputed = w.staff.cases(None, Some("disputed")).await.unwrap();
    assert_eq!(disputed.len(), 1);
    assert_eq!(
        disputed[0].disputes,
        ["Nobody called me back; I paid for the antibiotics"]
    );
    w.tablet.sync().await.unwrap();
    let v = w.tablet.adverse_event(ae).unwrap();
    assert_eq!(v.state(), Some(CaseState::Disputed));
    assert_eq!(v.replies.len(), 1);

    // The reply is the patient's: the clinic cannot forge one, the patient cannot rewrite it.
    let forged = force_new(
        &w.tablet,
        w.patient,
        &CaseReply {
            adverse_event: ae.to_hex(),
            verdict: Verdict::Accepted,
            comment: String::new(),
            replied_at: Utc::now().to_rfc3339(),
        },
    );
    assert_rejected(&w.tablet, forged, "forbidden_author", "patient").await;
    force_edit::<CaseReply>(&w.phone, reply, |r| r.comment = "fine".into());
    assert_rejected(&w.phone, reply, "rule_violation", "never edited").await;

    // The clinic answers again, the patient accepts: closed, and no longer counted as open.
    w.tablet
        .adjudicate(ae, |a| {
            a.remedy = "antibiotics refunded, review booked".into()
        })
        .unwrap();
    w.tablet.sync().await.unwrap();
    w.phone.sync().await.unwrap();
    assert_eq!(
        w.phone.adverse_event(ae).unwrap().state(),
        Some(CaseState::Responded)
    );
    w.phone
        .reply_to_adjudication(ae, Verdict::Accepted, "thank you")
        .unwrap();
    w.phone.sync().await.unwrap();
    w.tablet.sync().await.unwrap();
    assert_eq!(
        w.tablet.adverse_event(ae).unwrap().state(),
        Some(CaseState::Closed)
    );
    let summary = w.tablet.list_patients().unwrap();
    assert_eq!(summary[0].open_adverse_events, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_must_fit_the_visit_the_role_and_the_patient() {
    let w = world().await;
    let other = w.tablet.enrol_patient(&enrolment("KX-2", 1970)).unwrap();
    let other_proc = w
        .tablet
        .record_procedure(other, &procedure(&days_ago(40)))
        .unwrap();
    w.tablet.sync().await.unwrap();

    // A patient's phone may not fill the clinician's form.
    assert!(w
        .phone
        .start_response(
            w.patient,
            "clinician-followup",
            Some(w.procedure),
            Some("m1")
        )
        .is_err());
    let forged = force_new(
        &w.phone,
        w.patient,
        &FollowupResponse {
            questionnaire: "clinician-followup".into(),
            questionnaire_version: "1.0.0".into(),
            procedure: Some(w.procedure.to_hex()),
            visit: Some("m1".into()),
            answers: clinician_followup(&days_ago(10)),
            completed_by: CompletedBy::Patient,
            status: ResponseStatus::Submitted,
            submitted_at: Some(Utc::now().to_rfc3339()),
            amendments: vec![],
        },
    );
    assert_rejected(&w.phone, forged, "rule_violation", "clinician-followup").await;

    // The clinician's form does not answer the patient's survey visit.
    assert!(w
        .tablet
        .start_response(
            w.patient,
            "clinician-followup",
            Some(w.procedure),
            Some("m1-survey")
        )
        .is_err());
    let body = |visit: &str, procedure: RecordId, date: &str| FollowupResponse {
        questionnaire: "clinician-followup".into(),
        questionnaire_version: "1.0.0".into(),
        procedure: Some(procedure.to_hex()),
        visit: Some(visit.into()),
        answers: clinician_followup(date),
        completed_by: CompletedBy::Nurse,
        status: ResponseStatus::Submitted,
        submitted_at: Some(Utc::now().to_rfc3339()),
        amendments: vec![],
    };
    let wrong_visit = force_new(
        &w.tablet,
        w.patient,
        &body("m1-survey", w.procedure, &days_ago(10)),
    );
    assert_rejected(&w.tablet, wrong_visit, "rule_violation", "m1-survey").await;

    // Another patient's procedure.
    assert!(w
        .tablet
        .start_response(
            w.patient,
            "clinician-followup",
            Some(other_proc),
            Some("m1")
        )
        .is_err());
    let wrong_patient = force_new(&w.tablet, w.patient, &body("m1", other_proc, &days_ago(10)));
    assert_rejected(
        &w.tablet,
        wrong_patient,
        "rule_violation",
        "another patient",
    )
    .await;

    // A visit date before the procedure, or in the future.
    let r = w
        .tablet
        .start_response(
            w.patient,
            "clinician-followup",
            Some(w.procedure),
            Some("m1"),
        )
        .unwrap();
    w.tablet
        .save_answers(r, &clinician_followup(&days_ago(45)))
        .unwrap();
    assert_eq!(
        problems(w.tablet.submit_response(r)),
        [("answers.visit_date".to_string(), ProblemCode::OutOfBounds)]
    );
    w.tablet
        .save_answers(r, &clinician_followup(&days_ahead(5)))
        .unwrap();
    assert_eq!(
        problems(w.tablet.submit_response(r)),
        [("answers.visit_date".to_string(), ProblemCode::OutOfBounds)]
    );
    let early = force_new(
        &w.tablet,
        w.patient,
        &body("m1", w.procedure, &days_ago(45)),
    );
    assert_rejected(&w.tablet, early, "rule_violation", "before the procedure").await;

    // A valid one is accepted; the patient's own survey from the phone too.
    w.tablet
        .save_answers(r, &clinician_followup(&days_ago(10)))
        .unwrap();
    w.tablet.submit_response(r).unwrap();
    assert_eq!(push_result(&w.tablet, r).await, None);
    let survey = w
        .phone
        .start_response(
            w.patient,
            "patient-outcome-survey",
            Some(w.procedure),
            Some("m1-survey"),
        )
        .unwrap();
    w.phone
        .save_answers(
            survey,
            &answers(&[
                ("completed_date", t(&days_ago(9))),
                ("overall_change", t("better")),
                ("symptom_primary", AnswerValue::Int(4)),
                ("symptom_pain", AnswerValue::Int(5)),
                ("symptom_fatigue", AnswerValue::Int(3)),
                ("symptom_sleep", AnswerValue::Int(3)),
                ("symptom_mood", AnswerValue::Int(2)),
                ("daily_activities", t("slight")),
                ("walking", t("unaided")),
                ("new_problems", AnswerValue::Bool(false)),
                ("satisfaction", AnswerValue::Int(7)),
                ("would_recommend", t("unsure")),
                ("extra_costs", AnswerValue::Bool(false)),
                ("financial_hardship", t("some")),
            ]),
        )
        .unwrap();
    w.phone.submit_response(survey).unwrap();
    assert_eq!(push_result(&w.phone, survey).await, None);

    // One submitted response per visit: the second is refused at capture and at the server.
    let again = w
        .tablet
        .start_response(
            w.patient,
            "clinician-followup",
            Some(w.procedure),
            Some("m1"),
        )
        .unwrap();
    w.tablet
        .save_answers(again, &clinician_followup(&days_ago(9)))
        .unwrap();
    assert_eq!(
        problems(w.tablet.submit_response(again)),
        [("visit".to_string(), ProblemCode::Duplicate)]
    );
    let second_tablet = w.reg.clinic_tablet(w.clinic, "tablet 2").await;
    second_tablet.sync().await.unwrap();
    let twice = force_new(
        &second_tablet,
        w.patient,
        &body("m1", w.procedure, &days_ago(9)),
    );
    assert_rejected(&second_tablet, twice, "rule_violation", "already answered").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitted_response_is_changed_only_by_an_explicit_amendment_that_stays_visible() {
    let w = world().await;
    let r = w
        .tablet
        .start_response(
            w.patient,
            "clinician-followup",
            Some(w.procedure),
            Some("m1"),
        )
        .unwrap();
    w.tablet
        .save_answers(r, &clinician_followup(&days_ago(10)))
        .unwrap();
    w.tablet.submit_response(r).unwrap();
    w.tablet.sync().await.unwrap();

    // Editing a submitted response as if it were a draft is refused at capture...
    assert!(w
        .tablet
        .save_answers(r, &answers(&[("symptom_pain", AnswerValue::Int(6))]))
        .is_err());
    // ...and a silent rewrite is refused at the server.
    force_edit::<FollowupResponse>(&w.tablet, r, |b| {
        b.answers.insert("symptom_pain".into(), AnswerValue::Int(6));
    });
    assert_rejected(&w.tablet, r, "rule_violation", "explicit amendment").await;

    // An explicit amendment with its reason is accepted; the previous value stays visible.
    w.tablet
        .amend_response(
            r,
            &answers(&[("symptom_pain", AnswerValue::Int(5))]),
            "pain score misread from the paper form",
        )
        .unwrap();
    assert_eq!(push_result(&w.tablet, r).await, None);
    let second = w.reg.clinic_tablet(w.clinic, "tablet 2").await;
    second.sync().await.unwrap();
    let body: FollowupResponse = second.get(r).unwrap();
    assert_eq!(body.answers["symptom_pain"], AnswerValue::Int(5));
    assert_eq!(body.amendments.len(), 1);
    assert_eq!(
        body.amendments[0].reason,
        "pain score misread from the paper form"
    );
    assert_eq!(body.amendments[0].device, w.tablet.id().to_hex());
    let change = second
        .history(r)
        .unwrap()
        .into_iter()
        .rev()
        .find(|c| c.path == "answers.symptom_pain")
        .expect("the amendment is in the history");
    assert_eq!(change.previous, Some(serde_json::json!(2)));
    assert_eq!(change.value, Some(serde_json::json!(5)));
    assert_eq!(change.device, Some(w.tablet.id()));

    // The patient's phone cannot amend the nurse's record.
    w.phone.sync().await.unwrap();
    force_edit::<FollowupResponse>(&w.phone, r, |b| {
        b.answers.insert("symptom_pain".into(), AnswerValue::Int(0));
    });
    assert!(push_result(&w.phone, r).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adverse_events_and_enrolments_must_be_plausible() {
    let w = world().await;
    let bad: Vec<(&str, AdverseEvent, &str, ProblemCode)> = vec![
        (
            "a category outside the list",
            AdverseEvent {
                category: "flu".into(),
                ..event(Reporter::Clinic, 2, &[])
            },
            "category",
            ProblemCode::UnknownChoice,
        ),
        (
            "an onset in the future",
            AdverseEvent {
                onset: days_ahead(400),
                ..event(Reporter::Clinic, 2, &[])
            },
            "onset",
            ProblemCode::OutOfBounds,
        ),
        (
            "grade 5 and recovered",
            AdverseEvent {
                outcome: AeOutcome::Recovered,
                ..event(Reporter::Clinic, 5, &[])
            },
            "outcome",
            ProblemCode::Inconsistent,
        ),
        (
            "a misspelled seriousness",
            event(Reporter::Clinic, 3, &["hospitalization"]),
            "seriousness",
            ProblemCode::UnknownChoice,
        ),
        (
            "death with grade 3",
            AdverseEvent {
                outcome: AeOutcome::Fatal,
                ..event(Reporter::Clinic, 3, &["death"])
            },
            "severity",
            ProblemCode::Inconsistent,
        ),
    ];
    for (what, ae, field, code) in bad {
        let found = problems(w.tablet.report_adverse_event(w.patient, &ae));
        assert!(
            found.iter().any(|(f, c)| f == field && *c == code),
            "{what}: {found:?}"
        );
        let id = force_new(&w.tablet, w.patient, &ae);
        assert_rejected(&w.tablet, id, "rule_violation", field).await;
    }
    // A consistent fatal event is accepted.
    let fatal = AdverseEvent {
        outcome: AeOutcome::Fatal,
        ..event(Reporter::Clinic, 5, &["death"])
    };
    let id = w.tablet.report_adverse_event(w.patient, &fatal).unwrap();
    assert_eq!(push_result(&w.tablet, id).await, None);

    // Birth year 2030.
    assert_eq!(
        problems(w.tablet.enrol_patient(&enrolment("KX-9", 2030))),
        [("birth_year".to_string(), ProblemCode::OutOfBounds)]
    );
    let e = w.tablet.enrolment().unwrap();
    let id = RecordId::random();
    let doc = model::new_record(
        Author::device_now(e.device_id),
        id,
        e.clinic,
        Some(id),
        &enrolment("KX-9", 2030),
    )
    .unwrap();
    w.tablet.device.save(&doc).unwrap();
    assert_rejected(&w.tablet, id, "rule_violation", "birth_year").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_code_enrolled_twice_offline_is_surfaced_as_a_conflict() {
    let w = world().await;
    // On one tablet: refused at once.
    assert_eq!(
        problems(w.tablet.enrol_patient(&enrolment("kx-1", 1975))),
        [("study_code".to_string(), ProblemCode::Duplicate)]
    );
    // On two tablets offline: neither can know; both sync, and both see the conflict.
    let second = w.reg.clinic_tablet(w.clinic, "tablet 2").await;
    second.sync().await.unwrap();
    let a = w.tablet.enrol_patient(&enrolment("KX-7", 1980)).unwrap();
    let b = second.enrol_patient(&enrolment("KX-7", 1981)).unwrap();
    sync_until_quiet(&[&w.tablet, &second]).await;
    for d in [&w.tablet, &second] {
        let dups = d.duplicate_study_codes().unwrap();
        assert_eq!(dups.len(), 1, "{dups:?}");
        assert_eq!(dups[0].study_code, "KX-7");
        let mut got = dups[0].patients.clone();
        got.sort();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(got, want);
    }
    // The registry sees it too: both enrolments kept (nothing lost), listed as a duplicate of
    // this clinic. The same code at another clinic is not a duplicate.
    let other = w.reg.create_clinic("Other clinic").await;
    let elsewhere = w.reg.clinic_tablet(other, "elsewhere").await;
    elsewhere.sync().await.unwrap();
    elsewhere.enrol_patient(&enrolment("kx-7", 1990)).unwrap();
    elsewhere.sync().await.unwrap();
    let staff = w.reg.staff();
    let dups = staff.duplicate_study_codes(None).await.unwrap();
    assert_eq!(dups.len(), 1, "{dups:?}");
    assert_eq!(dups[0].clinic, w.clinic);
    assert_eq!(dups[0].study_code, "KX-7");
    let mut got: Vec<_> = dups[0].enrolments.iter().map(|e| e.patient).collect();
    got.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        staff.duplicate_study_codes(Some(other)).await.unwrap(),
        vec![]
    );
}
