//! The app API beyond one-field capture: a whole response captured as one change (all or
//! nothing), drafts (list, discard), reading any record, editing a procedure, observing changes
//! and a patient's due surveys. The design is in `docs/app-api.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{NaiveDate, Utc};
use followup_domain::ids::RecordId;
use followup_domain::model::{
    self, Adjudication, AdverseEvent, Answers, Clinic, DocHeader, Enrolment, FollowupResponse,
    Procedure, RecordKind, ResponseStatus,
};
use followup_domain::protocol::DeviceRole;
use followup_domain::questionnaire::QuestionnaireKind;
use followup_domain::schedule::VisitState;

use crate::device::{Device, PatientVisit};
use crate::error::{Error, Result};
use crate::store::Query;

/// A draft response on this device, as a "continue where you left off" list shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftSummary {
    pub id: RecordId,
    pub patient: RecordId,
    pub questionnaire: String,
    pub procedure: Option<RecordId>,
    pub visit: Option<String>,
    /// How many items are answered so far.
    pub answered: usize,
    /// Unix seconds of the latest change, when known.
    pub last_saved: Option<i64>,
}

/// What [`Device::discard_draft`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discarded {
    /// The registry never received the draft: it is gone from this device.
    Deleted,
    /// The registry holds the draft: it is marked discarded, which syncs, and no longer listed.
    MarkedDiscarded,
}

/// A record's typed body, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordBodyView {
    Clinic(Clinic),
    Enrolment(Enrolment),
    Procedure(Procedure),
    /// A response with its scores computed from its answers (`None`: not computable yet).
    Response {
        response: FollowupResponse,
        scores: BTreeMap<String, Option<f64>>,
    },
    AdverseEvent(AdverseEvent),
    Adjudication(Adjudication),
}

/// Any record: its header and its typed body.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordView {
    pub header: DocHeader,
    pub body: RecordBodyView,
}

/// One record a save or a sync changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordChange {
    pub id: RecordId,
    /// `None` when the record is gone from the device (`removed`).
    pub kind: Option<RecordKind>,
    pub patient: Option<RecordId>,
    /// The record was deleted from the device (a discarded draft, a rejected new record).
    pub removed: bool,
}

type Listener = Arc<dyn Fn(&[RecordChange]) + Send + Sync>;

/// The listeners of [`Device::subscribe`].
#[derive(Default)]
pub(crate) struct Observers {
    next: AtomicU64,
    listeners: Mutex<Vec<(u64, Listener)>>,
}

/// Publishes the store's pending changes when dropped (at the end of a sync, however it ends).
pub struct PublishOnDrop<'a>(&'a Device);

impl Drop for PublishOnDrop<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.publish_changes() {
            tracing::warn!(error = %e, "could not publish the records a sync changed");
        }
    }
}

impl Device {
    // -----------------------------------------------------------------------------------------
    // Capture in one change

    /// Capture a whole response as **one change in one store transaction**: created with its
    /// answers and, when `submit`, already submitted. A kill, a power loss or a full disk leaves
    /// either the whole response or nothing. Answers are checked first, as given (an answer to
    /// a disabled item is a problem, not silently dropped): all rules when submitting, all but
    /// missing required answers for a draft; [`Error::Validation`] lists each problem and
    /// nothing is written.
    ///
    /// Submitting a visit that a submitted response of this device's store already answers is
    /// refused with [`Error::AlreadyRecorded`], so running a command again after a crash never
    /// makes a second response.
    pub fn capture_response(
        &self,
        patient: RecordId,
        questionnaire_id: &str,
        procedure: Option<RecordId>,
        visit: Option<&str>,
        answers: &Answers,
        submit: bool,
    ) -> Result<RecordId> {
        self.capture_response_in(
            patient,
            questionnaire_id,
            procedure,
            visit,
            answers,
            submit,
            "en",
        )
    }

    /// [`Device::capture_response`] with problem messages in `locale` (e.g. `es-MX`). The
    /// response is captured with the newest published version of the questionnaire the device
    /// holds, and checked against exactly that version.
    #[allow(clippy::too_many_arguments)]
    pub fn capture_response_in(
        &self,
        patient: RecordId,
        questionnaire_id: &str,
        procedure: Option<RecordId>,
        visit: Option<&str>,
        answers: &Answers,
        submit: bool,
        locale: &str,
    ) -> Result<RecordId> {
        let e = self.require_enrolled()?;
        let mut body = self.new_response(&e, patient, questionnaire_id, procedure, visit)?;
        let q = self.questionnaire_version(&body.questionnaire, &body.questionnaire_version)?;
        let problems = if submit {
            q.validate_in(answers, locale)
        } else {
            q.validate_partial_in(answers, locale)
        };
        if !problems.is_empty() {
            return Err(Error::Validation(problems));
        }
        if let (true, Some(procedure), Some(visit)) = (submit, procedure, visit) {
            if let Some(existing) = self.submitted_for_visit(patient, procedure, visit)? {
                return Err(Error::AlreadyRecorded {
                    record: existing,
                    visit: visit.to_string(),
                });
            }
        }
        body.answers = answers.clone();
        if submit {
            body.status = ResponseStatus::Submitted;
            body.submitted_at = Some(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        self.create_record(&e, Some(patient), &body)
    }

    /// The submitted response answering `visit` of `procedure`, if there is one.
    pub fn submitted_for_visit(
        &self,
        patient: RecordId,
        procedure: RecordId,
        visit: &str,
    ) -> Result<Option<RecordId>> {
        Ok(self
            .store
            .list(&Query {
                kind: Some(RecordKind::Response),
                patient: Some(patient),
                status: Some(ResponseStatus::Submitted.code().into()),
                ..Default::default()
            })?
            .into_iter()
            .find(|m| m.subject == Some(procedure) && m.visit.as_deref() == Some(visit))
            .map(|m| m.id))
    }

    // -----------------------------------------------------------------------------------------
    // Drafts

    /// The drafts on this device (of one patient, or all), most recently saved first. Resume
    /// one with [`Device::save_answers`] and [`Device::submit_response`].
    pub fn drafts(&self, patient: Option<RecordId>) -> Result<Vec<DraftSummary>> {
        let metas = self.store.list(&Query {
            kind: Some(RecordKind::Response),
            patient,
            status: Some(ResponseStatus::Draft.code().into()),
            ..Default::default()
        })?;
        let mut out = Vec::with_capacity(metas.len());
        for m in metas {
            let doc = self.load(m.id)?;
            let r: FollowupResponse = model::read_body(&doc)?;
            let last_saved = doc.get_changes(&[]).iter().map(|c| c.timestamp()).max();
            out.push(DraftSummary {
                id: m.id,
                patient: m.patient.unwrap_or(m.id),
                questionnaire: r.questionnaire,
                procedure: m.subject,
                visit: r.visit,
                answered: r.answers.len(),
                last_saved,
            });
        }
        out.sort_by(|a, b| b.last_saved.cmp(&a.last_saved).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Go on with a draft: add `answers` (replacing the answers to the same items) and, when
    /// `submit`, submit it — as **one change**. The answers are checked like
    /// [`Device::capture_response`]'s; on a problem nothing is written.
    pub fn finish_draft(&self, response: RecordId, answers: &Answers, submit: bool) -> Result<()> {
        self.finish_draft_in(response, answers, submit, "en")
    }

    /// [`Device::finish_draft`] with problem messages in `locale`. The draft is checked against
    /// the exact questionnaire version it was started with, even if a newer one has been
    /// published since.
    pub fn finish_draft_in(
        &self,
        response: RecordId,
        answers: &Answers,
        submit: bool,
        locale: &str,
    ) -> Result<()> {
        let e = self.require_enrolled()?;
        if self.header(response)?.kind != RecordKind::Response {
            return Err(Error::InvalidInput(format!(
                "{response} is not a questionnaire response"
            )));
        }
        let current: FollowupResponse = self.get(response)?;
        if current.status != ResponseStatus::Draft {
            return Err(Error::InvalidInput(format!(
                "{response} is {}, not a draft: only a draft can be resumed",
                current.status.code()
            )));
        }
        if let (true, Some(procedure), Some(visit)) = (
            submit,
            current.procedure.as_deref().and_then(|p| p.parse().ok()),
            current.visit.as_deref(),
        ) {
            let patient = self.header(response)?.patient.unwrap_or(response);
            if let Some(existing) = self.submitted_for_visit(patient, procedure, visit)? {
                return Err(Error::AlreadyRecorded {
                    record: existing,
                    visit: visit.to_string(),
                });
            }
        }
        self.update::<FollowupResponse>(&e, response, |r| {
            for (k, v) in answers {
                r.answers.insert(k.clone(), v.clone());
            }
            let q = self.questionnaire_version(&r.questionnaire, &r.questionnaire_version)?;
            let problems = if submit {
                q.validate_in(&r.answers, locale)
            } else {
                q.validate_partial_in(&r.answers, locale)
            };
            if !problems.is_empty() {
                return Err(Error::Validation(problems));
            }
            if submit {
                r.status = ResponseStatus::Submitted;
                r.submitted_at =
                    Some(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            }
            Ok(())
        })
    }

    /// Discard a draft. One the registry has never received is deleted from this device (and
    /// its sync queue); one it holds is marked `discarded`, which syncs. A submitted response
    /// cannot be discarded.
    pub fn discard_draft(&self, response: RecordId) -> Result<Discarded> {
        let e = self.require_enrolled()?;
        let doc = self.load(response)?;
        let header = model::read_header(&doc)?;
        if header.kind != RecordKind::Response {
            return Err(Error::InvalidInput(format!(
                "{response} is a {} record, not a draft response",
                header.kind.code()
            )));
        }
        let r: FollowupResponse = model::read_body(&doc)?;
        if r.status != ResponseStatus::Draft {
            return Err(Error::InvalidInput(format!(
                "{response} is {}, not a draft: only a draft can be discarded",
                r.status.code()
            )));
        }
        let never_synced = self
            .store
            .synced_heads(&response)?
            .is_none_or(|h| h.is_empty());
        if never_synced && self.store.delete_doc(&response)? {
            self.forget(response);
            self.publish_changes()?;
            return Ok(Discarded::Deleted);
        }
        self.update::<FollowupResponse>(&e, response, |r| {
            r.status = ResponseStatus::Discarded;
            Ok(())
        })?;
        Ok(Discarded::MarkedDiscarded)
    }

    // -----------------------------------------------------------------------------------------
    // Reading and editing records

    /// Any record, with its typed body (a response with its scores).
    pub fn record(&self, id: RecordId) -> Result<RecordView> {
        let doc = self.load(id)?;
        let header = model::read_header(&doc)?;
        let body = match header.kind {
            RecordKind::Clinic => RecordBodyView::Clinic(model::read_body(&doc)?),
            RecordKind::Enrolment => RecordBodyView::Enrolment(model::read_body(&doc)?),
            RecordKind::Procedure => RecordBodyView::Procedure(model::read_body(&doc)?),
            RecordKind::Response => {
                let response: FollowupResponse = model::read_body(&doc)?;
                let scores = self
                    .questionnaire_version(&response.questionnaire, &response.questionnaire_version)
                    .map(|q| q.scores(&response.answers))
                    .unwrap_or_default();
                RecordBodyView::Response { response, scores }
            }
            RecordKind::AdverseEvent => RecordBodyView::AdverseEvent(model::read_body(&doc)?),
            RecordKind::Adjudication => RecordBodyView::Adjudication(model::read_body(&doc)?),
            RecordKind::AdjudicationCase | RecordKind::CaseReply => {
                return Err(Error::InvalidInput(format!(
                    "{id} is an adjudication case or a patient's reply: read it with its adverse event (adverse_event)"
                )))
            }
            RecordKind::Definition => {
                return Err(Error::InvalidInput(format!(
                    "{id} is a registry definition: list them with definitions()"
                )))
            }
        };
        Ok(RecordView { header, body })
    }

    /// A response's scores, computed from its answers by its questionnaire (`None` for a score
    /// whose items are not all answered).
    pub fn response_scores(&self, response: RecordId) -> Result<BTreeMap<String, Option<f64>>> {
        match self.record(response)?.body {
            RecordBodyView::Response { scores, .. } => Ok(scores),
            _ => Err(Error::InvalidInput(format!(
                "{response} is not a questionnaire response"
            ))),
        }
    }

    /// Edit a procedure (clinic devices only): the fields that differ are written as one change.
    pub fn update_procedure(&self, id: RecordId, procedure: &Procedure) -> Result<()> {
        let e = self.require_clinic_device("edit procedures")?;
        if self.header(id)?.kind != RecordKind::Procedure {
            return Err(Error::InvalidInput(format!("{id} is not a procedure")));
        }
        check_procedure(procedure)?;
        self.update::<Procedure>(&e, id, |p| {
            *p = procedure.clone();
            Ok(())
        })
    }

    // -----------------------------------------------------------------------------------------
    // Observing changes

    /// Call `listener` with the records changed after every local save and at the end of every
    /// sync (one call per save or sync, on the thread that made it, outside every lock; it must
    /// return quickly). Returns an id for [`Device::unsubscribe`].
    pub fn subscribe(&self, listener: impl Fn(&[RecordChange]) + Send + Sync + 'static) -> u64 {
        let id = self.observers.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.observers.listeners.lock() {
            l.push((id, Arc::new(listener)));
        }
        self.store.track_changes(true);
        id
    }

    /// Stop calling a listener. `false` if it was not subscribed.
    pub fn unsubscribe(&self, id: u64) -> bool {
        let Ok(mut l) = self.observers.listeners.lock() else {
            return false;
        };
        let before = l.len();
        l.retain(|(i, _)| *i != id);
        if l.is_empty() {
            self.store.track_changes(false);
        }
        l.len() != before
    }

    /// Tell the listeners which records changed since the last call (nothing when none did).
    /// Returns how many records were reported.
    pub fn publish_changes(&self) -> Result<usize> {
        let ids: BTreeSet<RecordId> = self.store.take_changes();
        if ids.is_empty() {
            return Ok(0);
        }
        let listeners: Vec<Listener> = match self.observers.listeners.lock() {
            Ok(l) => l.iter().map(|(_, f)| f.clone()).collect(),
            Err(_) => return Ok(0),
        };
        if listeners.is_empty() {
            return Ok(0);
        }
        let mut changes = Vec::with_capacity(ids.len());
        for id in ids {
            let meta = self.store.meta(&id)?;
            changes.push(RecordChange {
                id,
                kind: meta.as_ref().map(|m| m.kind),
                patient: meta.as_ref().and_then(|m| m.patient),
                removed: meta.is_none(),
            });
        }
        for f in listeners {
            f(&changes);
        }
        Ok(changes.len())
    }

    /// A guard that publishes the changes made meanwhile when it is dropped (a sync holds one
    /// for its whole run, so its changes are reported once, however it ends).
    pub fn publish_on_drop(&self) -> PublishOnDrop<'_> {
        PublishOnDrop(self)
    }

    // -----------------------------------------------------------------------------------------
    // A patient's surveys

    /// The outcome surveys a patient should complete: overdue, due and upcoming visits answered
    /// by a patient survey, soonest window first, each with its window, so that an app can
    /// schedule reminders. On a patient's phone `patient` defaults to its own patient.
    pub fn due_surveys(
        &self,
        patient: Option<RecordId>,
        as_of: NaiveDate,
    ) -> Result<Vec<PatientVisit<'_>>> {
        let e = self.require_enrolled()?;
        let patient = match (patient, e.role, e.patient) {
            (Some(p), DeviceRole::PatientDevice, Some(own)) if p != own => {
                return Err(Error::NotPermitted(
                    "a patient's phone sees only its own patient's surveys".into(),
                ))
            }
            (Some(p), _, _) => p,
            (None, _, Some(own)) => own,
            (None, _, None) => {
                return Err(Error::InvalidInput(
                    "name the patient whose surveys to list".into(),
                ))
            }
        };
        let mut out: Vec<PatientVisit<'_>> = self
            .patient_visits(patient, as_of)?
            .into_iter()
            .filter(|v| {
                matches!(
                    v.visit.state,
                    VisitState::Overdue | VisitState::Due | VisitState::Upcoming
                ) && self
                    .questionnaire(v.visit.questionnaire)
                    .is_ok_and(|q| q.kind() == QuestionnaireKind::PatientSurvey)
            })
            .collect();
        out.sort_by_key(|v| (v.visit.window_start, v.visit.visit_id));
        Ok(out)
    }
}

/// The checks a procedure must pass before it is saved.
pub(crate) fn check_procedure(procedure: &Procedure) -> Result<()> {
    if NaiveDate::parse_from_str(&procedure.date, "%Y-%m-%d").is_err() {
        return Err(Error::InvalidInput(format!(
            "procedure date {:?} is not a date (YYYY-MM-DD)",
            procedure.date
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::crypto::{KeySource, StaticKeyProvider};
    use crate::device::Enrolled;
    use followup_domain::ids::DeviceId;
    use followup_domain::model::{
        CellType, Consent, Manipulation, Origin, RegulatoryStatus, Route, Sex, SourceTissue,
    };
    use followup_domain::questionnaire::{AnswerValue, ProblemCode};

    fn key() -> KeySource {
        KeySource::provider(StaticKeyProvider::new([7; 32], "test"))
    }

    fn device(dir: &tempfile::TempDir, role: DeviceRole, patient: Option<RecordId>) -> Device {
        let d = Device::create(dir.path().join("d.db"), key()).unwrap();
        // The forms a registry would have sent at the first sync.
        d.provision_definitions(followup_domain::definitions::builtin_definitions())
            .unwrap();
        d.set_enrolment(Enrolled {
            device_id: DeviceId::random(),
            role,
            clinic: RecordId::random(),
            patient,
            server_url: "http://127.0.0.1:1".into(),
        })
        .unwrap();
        d
    }

    fn enrolment(code: &str) -> Enrolment {
        Enrolment {
            study_code: code.into(),
            consent: Consent {
                form_version: "2.1".into(),
                date: "2026-01-05".into(),
                scope: vec!["registry".into()],
            },
            birth_year: 1961,
            sex: Sex::Female,
            enrolled_on: "2026-01-05".into(),
        }
    }

    fn procedure(date: &str) -> Procedure {
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

    fn followup() -> Answers {
        let t = |s: &str| AnswerValue::Text(s.into());
        [
            ("visit_date", t("2026-01-12")),
            ("visit_mode", t("in_person")),
            ("condition_status", t("improved")),
            ("symptom_primary", AnswerValue::Int(3)),
            ("symptom_pain", AnswerValue::Int(2)),
            ("symptom_fatigue", AnswerValue::Int(4)),
            ("ecog", t("1")),
            ("complications_any", AnswerValue::Bool(false)),
            ("hospitalised", AnswerValue::Bool(false)),
            ("further_cell_therapy", AnswerValue::Bool(false)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    #[test]
    fn capture_is_one_change_and_a_visit_is_recorded_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = device(&dir, DeviceRole::ClinicDevice, None);
        let p = d.enrol_patient(&enrolment("P-1")).unwrap();
        let pr = d.record_procedure(p, &procedure("2026-01-05")).unwrap();
        let mut bad = followup();
        bad.insert("ecog".into(), AnswerValue::Text("9".into()));
        match d.capture_response(p, "clinician-followup", Some(pr), Some("d7"), &bad, true) {
            Err(Error::Validation(problems)) => {
                assert_eq!(problems.len(), 1);
                assert_eq!(problems[0].code, ProblemCode::UnknownChoice);
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
        assert_eq!(d.store().count(Some(RecordKind::Response)).unwrap(), 0);

        let r = d
            .capture_response(
                p,
                "clinician-followup",
                Some(pr),
                Some("d7"),
                &followup(),
                true,
            )
            .unwrap();
        let doc = d.load(r).unwrap();
        assert_eq!(doc.get_changes(&[]).len(), 1, "one Automerge change");
        assert_eq!(d.store().chunk_count(&r).unwrap(), 1, "one store write");
        let body: FollowupResponse = d.get(r).unwrap();
        assert_eq!(body.status, ResponseStatus::Submitted);
        assert_eq!(body.answers, followup());
        match d.capture_response(
            p,
            "clinician-followup",
            Some(pr),
            Some("d7"),
            &followup(),
            true,
        ) {
            Err(Error::AlreadyRecorded { record, visit }) => {
                assert_eq!((record, visit.as_str()), (r, "d7"))
            }
            other => panic!("expected AlreadyRecorded, got {other:?}"),
        }
        assert_eq!(d.store().count(Some(RecordKind::Response)).unwrap(), 1);
    }

    #[test]
    fn drafts_are_listed_finished_in_one_change_and_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let d = device(&dir, DeviceRole::ClinicDevice, None);
        let p = d.enrol_patient(&enrolment("P-1")).unwrap();
        let pr = d.record_procedure(p, &procedure("2026-01-05")).unwrap();
        let partial: Answers = followup().into_iter().take(3).collect();
        let draft = d
            .capture_response(
                p,
                "clinician-followup",
                Some(pr),
                Some("d7"),
                &partial,
                false,
            )
            .unwrap();
        let other = d
            .start_response(p, "clinician-followup", None, None)
            .unwrap();
        let list = d.drafts(Some(p)).unwrap();
        assert_eq!(list.len(), 2);
        let first = list.iter().find(|s| s.id == draft).unwrap();
        assert_eq!(
            (first.answered, first.visit.as_deref(), first.procedure),
            (3, Some("d7"), Some(pr))
        );
        // Finishing with a broken answer writes nothing.
        let mut bad = followup();
        bad.insert("symptom_pain".into(), AnswerValue::Int(11));
        assert!(matches!(
            d.finish_draft(draft, &bad, true),
            Err(Error::Validation(_))
        ));
        let changes = d.load(draft).unwrap().get_changes(&[]).len();
        d.finish_draft(draft, &followup(), true).unwrap();
        assert_eq!(
            d.load(draft).unwrap().get_changes(&[]).len(),
            changes + 1,
            "answers and submission in one change"
        );
        assert_eq!(d.drafts(None).unwrap().len(), 1);
        assert!(matches!(
            d.discard_draft(draft),
            Err(Error::InvalidInput(_))
        ));
        // Never synced: deleted outright.
        assert_eq!(d.discard_draft(other).unwrap(), Discarded::Deleted);
        assert!(d.drafts(None).unwrap().is_empty());
        assert!(matches!(d.load(other), Err(Error::NotFound(_))));
        // Once the registry has it: marked.
        let synced = d
            .start_response(p, "clinician-followup", None, None)
            .unwrap();
        let heads = d.load(synced).unwrap().get_heads();
        d.store().set_synced_heads(&synced, &heads).unwrap();
        assert_eq!(d.discard_draft(synced).unwrap(), Discarded::MarkedDiscarded);
        assert_eq!(
            d.get::<FollowupResponse>(synced).unwrap().status,
            ResponseStatus::Discarded
        );
        assert!(d.drafts(None).unwrap().is_empty());
        assert!(
            d.store().dirty_docs(10).unwrap().contains(&synced),
            "the discarding syncs"
        );
    }

    #[test]
    fn every_record_kind_reads_back_and_a_procedure_is_edited() {
        let dir = tempfile::tempdir().unwrap();
        let d = device(&dir, DeviceRole::ClinicDevice, None);
        let p = d.enrol_patient(&enrolment("P-1")).unwrap();
        let pr = d.record_procedure(p, &procedure("2026-01-05")).unwrap();
        let r = d
            .capture_response(
                p,
                "clinician-followup",
                Some(pr),
                Some("d7"),
                &followup(),
                true,
            )
            .unwrap();
        match d.record(p).unwrap().body {
            RecordBodyView::Enrolment(e) => assert_eq!(e.study_code, "P-1"),
            other => panic!("{other:?}"),
        }
        match d.record(r).unwrap().body {
            RecordBodyView::Response { scores, .. } => {
                assert_eq!(scores.get("symptom_burden"), Some(&Some(3.0)));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(d.response_scores(pr), Err(Error::InvalidInput(_))));
        let mut edited = procedure("2026-01-06");
        edited.condition = "both knees".into();
        d.update_procedure(pr, &edited).unwrap();
        match d.record(pr).unwrap().body {
            RecordBodyView::Procedure(got) => assert_eq!(got, edited),
            other => panic!("{other:?}"),
        }
        edited.date = "soon".into();
        assert!(matches!(
            d.update_procedure(pr, &edited),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            d.update_procedure(r, &procedure("2026-01-06")),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn listeners_hear_each_save_and_a_foreign_write_once_published() {
        let dir = tempfile::tempdir().unwrap();
        let d = device(&dir, DeviceRole::ClinicDevice, None);
        let seen: Arc<Mutex<Vec<Vec<RecordChange>>>> = Arc::default();
        let s = seen.clone();
        let id = d.subscribe(move |c| s.lock().unwrap().push(c.to_vec()));
        let p = d.enrol_patient(&enrolment("P-1")).unwrap();
        {
            let batches = seen.lock().unwrap();
            assert_eq!(batches.len(), 1);
            assert_eq!(batches[0][0].id, p);
            assert_eq!(batches[0][0].kind, Some(RecordKind::Enrolment));
        }
        // A write straight into the store (as a sync makes) is reported when published, once.
        d.record_procedure(p, &procedure("2026-01-05")).unwrap();
        let other = RecordId::random();
        let copy = followup_domain::model::new_record(
            followup_domain::model::Author::device_now(DeviceId::random()),
            other,
            d.enrolment().unwrap().clinic,
            Some(p),
            &procedure("2026-02-01"),
        )
        .unwrap();
        let meta = crate::device::index_meta(&copy).unwrap();
        d.store().save_doc(&meta, &copy).unwrap();
        {
            let _batch = d.publish_on_drop();
        }
        {
            let batches = seen.lock().unwrap();
            assert_eq!(batches.len(), 3);
            assert_eq!(batches[2].len(), 1);
            assert_eq!(batches[2][0].id, other);
        }
        assert_eq!(d.publish_changes().unwrap(), 0, "nothing new");
        assert!(d.unsubscribe(id));
        d.enrol_patient(&enrolment("P-2")).unwrap();
        assert_eq!(seen.lock().unwrap().len(), 3, "no longer called");
    }

    #[test]
    fn a_patient_phone_lists_its_due_surveys_with_windows() {
        let dir = tempfile::tempdir().unwrap();
        let clinic_dir = tempfile::tempdir().unwrap();
        let tablet = device(&clinic_dir, DeviceRole::ClinicDevice, None);
        let p = tablet.enrol_patient(&enrolment("P-1")).unwrap();
        let pr = tablet
            .record_procedure(p, &procedure("2026-01-05"))
            .unwrap();
        let phone = device(&dir, DeviceRole::PatientDevice, Some(p));
        for id in [p, pr] {
            let doc = tablet.load(id).unwrap();
            phone.save(&doc).unwrap();
        }
        let as_of = NaiveDate::from_ymd_opt(2026, 2, 4).unwrap();
        let surveys = phone.due_surveys(None, as_of).unwrap();
        assert!(!surveys.is_empty());
        assert_eq!(surveys[0].visit.visit_id, "m1-survey");
        assert_eq!(surveys[0].visit.state, VisitState::Due);
        assert!(surveys[0].visit.window_start <= as_of && as_of <= surveys[0].visit.window_end);
        assert!(surveys
            .iter()
            .all(|v| v.visit.questionnaire == "patient-outcome-survey"));
        assert!(surveys
            .windows(2)
            .all(|w| w[0].visit.window_start <= w[1].visit.window_start));
        assert!(matches!(
            phone.due_surveys(Some(RecordId::random()), as_of),
            Err(Error::NotPermitted(_))
        ));
        assert!(matches!(
            tablet.due_surveys(None, as_of),
            Err(Error::InvalidInput(_))
        ));
    }
}
