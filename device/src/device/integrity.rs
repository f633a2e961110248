//! The device's side of `docs/integrity.md`: the clinical rules at capture (the same
//! `followup_domain::rules` the server runs), adverse events with the registry's case, the
//! patient's reply to an adjudication, amendments of submitted responses, duplicate study codes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use followup_domain::model::{
    self, Adjudication, AdjudicationCase, AdverseEvent, Amendment, CaseReply, CaseState, DocHeader,
    Enrolment, FollowupResponse, Procedure, RecordKind, ResponseStatus, Verdict,
};
use followup_domain::protocol::DeviceRole;
use followup_domain::questionnaire::{Answers, Problem, ProblemCode, Questionnaire};
use followup_domain::rules::{self, Context, Lookup, LookupError};
use followup_domain::schedule::Schedule;

use super::Device;
use crate::error::{Error, Result};
use crate::store::Query;
use followup_domain::ids::RecordId;

/// An adverse event with everything the devices know of its adjudication.
#[derive(Debug, Clone, PartialEq)]
pub struct EventView {
    pub id: RecordId,
    pub patient: RecordId,
    pub event: AdverseEvent,
    /// The registry's case (deadline, state, escalations, replies): `None` until the server has
    /// accepted the event and the device has synced since.
    pub case: Option<AdjudicationCase>,
    /// The clinic's adjudication, if it wrote one.
    pub adjudication: Option<(RecordId, Adjudication)>,
    /// The patient's replies this device holds (including ones not synced yet), oldest first.
    pub replies: Vec<CaseReply>,
}

impl EventView {
    /// The case's state; `None` before the registry has opened the case.
    pub fn state(&self) -> Option<CaseState> {
        self.case.as_ref().map(|c| c.state)
    }

    /// The registry's deadline, once the case is open.
    pub fn deadline(&self) -> Option<NaiveDate> {
        self.case
            .as_ref()
            .and_then(|c| NaiveDate::parse_from_str(&c.deadline, "%Y-%m-%d").ok())
    }

    /// Whether the event still needs the clinic or the registry: not closed by the registry's
    /// case and not resolved by the clinic.
    pub fn is_open(&self) -> bool {
        let closed = self.state() == Some(CaseState::Closed);
        let resolved = self
            .adjudication
            .as_ref()
            .is_some_and(|(_, a)| a.status == model::AdjudicationStatus::Resolved);
        !(closed || resolved)
    }
}

/// Two or more enrolments of the clinic with the same study code (enrolled offline on two
/// tablets): a conflict for the clinic to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateStudyCode {
    pub study_code: String,
    /// The enrolments, oldest enrolment date first.
    pub patients: Vec<RecordId>,
}

/// The rules' lookups answered from the device's store.
pub(super) struct StoreLookup<'a> {
    pub(super) device: &'a Device,
}

impl StoreLookup<'_> {
    fn body<T: model::RecordBody>(
        &self,
        id: RecordId,
    ) -> std::result::Result<Option<(DocHeader, T)>, LookupError> {
        let doc = match self.device.load(id) {
            Ok(d) => d,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(LookupError(e.to_string())),
        };
        let Ok(h) = model::read_header(&doc) else {
            return Ok(None);
        };
        if h.kind != T::KIND {
            return Ok(None);
        }
        Ok(model::read_body::<T>(&doc).ok().map(|b| (h, b)))
    }
}

impl Lookup for StoreLookup<'_> {
    fn procedure(
        &self,
        id: RecordId,
    ) -> std::result::Result<Option<(DocHeader, Procedure)>, LookupError> {
        self.body(id)
    }

    fn adverse_event(
        &self,
        id: RecordId,
    ) -> std::result::Result<Option<(DocHeader, AdverseEvent)>, LookupError> {
        self.body(id)
    }

    fn visit_answered_by(
        &self,
        patient: RecordId,
        procedure: RecordId,
        visit: &str,
        except: RecordId,
    ) -> std::result::Result<Option<RecordId>, LookupError> {
        let found = self
            .device
            .store
            .list(&Query {
                kind: Some(RecordKind::Response),
                patient: Some(patient),
                status: Some(ResponseStatus::Submitted.code().into()),
                visit: Some(visit.into()),
                subject: Some(procedure),
                ..Default::default()
            })
            .map_err(|e| LookupError(e.to_string()))?;
        Ok(found.into_iter().map(|m| m.id).find(|id| *id != except))
    }

    fn questionnaire(
        &self,
        id: &str,
        version: &str,
    ) -> std::result::Result<Option<Arc<Questionnaire>>, LookupError> {
        match self.device.questionnaire_version(id, version) {
            Ok(q) => Ok(Some(q)),
            // Not on this device, or one this app cannot read: not a form it can check against.
            Err(Error::NotFound(_) | Error::NeedsUpdate { .. }) => Ok(None),
            Err(e) => Err(LookupError(e.to_string())),
        }
    }

    fn schedule_for(
        &self,
        date: NaiveDate,
    ) -> std::result::Result<Option<Arc<Schedule>>, LookupError> {
        let cat = self
            .device
            .catalogue()
            .map_err(|e| LookupError(e.to_string()))?;
        Ok(cat.schedule_for(date).cloned())
    }
}

/// The schedule the rules use when no procedure date picks the one in force: the built-in.
fn fallback_schedule() -> &'static Schedule {
    static S: std::sync::OnceLock<Schedule> = std::sync::OnceLock::new();
    S.get_or_init(Schedule::default_registry)
}

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

fn now_iso() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `Ok` when there are no problems, else [`Error::Validation`] listing each.
pub(super) fn no_problems(problems: Vec<Problem>) -> Result<()> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Validation(problems))
    }
}

impl Device {
    /// The rules' context for a record of `patient` written by this device now.
    pub(super) fn with_rules<T>(
        &self,
        role: DeviceRole,
        record: RecordId,
        patient: RecordId,
        f: impl FnOnce(&Context<'_>) -> std::result::Result<T, LookupError>,
    ) -> Result<T> {
        let lookup = StoreLookup { device: self };
        let ctx = Context {
            role,
            record,
            patient,
            today: today(),
            schedule: fallback_schedule(),
            lookup: &lookup,
        };
        f(&ctx).map_err(|e| Error::InvalidInput(e.to_string()))
    }

    /// Check an enrolment at capture, including the study code's uniqueness on this device.
    pub(super) fn check_new_enrolment(&self, enrolment: &Enrolment) -> Result<()> {
        let mut problems = rules::check_enrolment(enrolment, today());
        let code = enrolment.study_code.trim();
        if !code.is_empty() {
            for m in self.store.list(&Query {
                kind: Some(RecordKind::Enrolment),
                ..Default::default()
            })? {
                let e: Enrolment = self.get(m.id)?;
                if e.study_code.trim().eq_ignore_ascii_case(code) {
                    problems.push(Problem {
                        item: "study_code".into(),
                        code: ProblemCode::Duplicate,
                        message: format!(
                            "study_code: {code} is already enrolled at this clinic (patient {})",
                            m.id
                        ),
                    });
                    break;
                }
            }
        }
        no_problems(problems)
    }

    /// Study codes held by more than one enrolment of the clinic: enrolled twice offline (on
    /// two tablets), found once both synced. Resolve by keeping one patient's records.
    pub fn duplicate_study_codes(&self) -> Result<Vec<DuplicateStudyCode>> {
        let mut by_code: BTreeMap<String, Vec<(Option<NaiveDate>, RecordId)>> = BTreeMap::new();
        for m in self.store.list(&Query {
            kind: Some(RecordKind::Enrolment),
            ..Default::default()
        })? {
            let e: Enrolment = self.get(m.id)?;
            by_code
                .entry(e.study_code.trim().to_uppercase())
                .or_default()
                .push((m.date, m.id));
        }
        Ok(by_code
            .into_iter()
            .filter(|(_, v)| v.len() > 1)
            .map(|(code, mut v)| {
                v.sort();
                DuplicateStudyCode {
                    study_code: code,
                    patients: v.into_iter().map(|(_, id)| id).collect(),
                }
            })
            .collect())
    }

    /// Amend a submitted response: set these answers, with the reason. The amendment is
    /// recorded in the response (when, which device, why) and the previous values stay in its
    /// history. Only the response's author side may amend it (the server refuses others).
    pub fn amend_response(
        &self,
        response: RecordId,
        answers: &Answers,
        reason: &str,
    ) -> Result<()> {
        let e = self.require_enrolled()?;
        if reason.trim().is_empty() {
            return Err(Error::InvalidInput(
                "an amendment needs its reason (what was wrong)".into(),
            ));
        }
        let header = self.header(response)?;
        let patient = header
            .patient
            .ok_or_else(|| Error::InvalidInput(format!("{response} names no patient")))?;
        let current: FollowupResponse = self.get(response)?;
        if current.status != ResponseStatus::Submitted {
            return Err(Error::InvalidInput(
                "only a submitted response is amended; a draft is simply edited".into(),
            ));
        }
        let mut amended = current.clone();
        for (k, v) in answers {
            amended.answers.insert(k.clone(), v.clone());
        }
        if amended.answers == current.answers {
            return Ok(());
        }
        let q =
            self.questionnaire_version(&amended.questionnaire, &amended.questionnaire_version)?;
        q.prune_disabled(&mut amended.answers);
        amended.amendments.push(Amendment {
            at: now_iso(),
            device: e.device_id.to_hex(),
            reason: reason.trim().to_string(),
        });
        let problems = self.with_rules(e.role, response, patient, |ctx| {
            rules::check_response(ctx, &amended)
        })?;
        no_problems(problems)?;
        self.update::<FollowupResponse>(&e, response, |r| {
            *r = amended;
            Ok(())
        })
    }

    /// Every change to a record after it was created, field by field: the value before, the
    /// value after, the device and the time (the record's own history; nothing is lost).
    pub fn history(&self, record: RecordId) -> Result<Vec<model::FieldChange>> {
        Ok(model::history(&self.load(record)?)?)
    }

    /// The adverse events this device holds (of one patient, or all), with the registry's case,
    /// the clinic's adjudication and the patient's replies; oldest onset first.
    pub fn adverse_events(&self, patient: Option<RecordId>) -> Result<Vec<EventView>> {
        let related = |kind: RecordKind| -> Result<HashMap<RecordId, Vec<RecordId>>> {
            let mut out: HashMap<RecordId, Vec<RecordId>> = HashMap::new();
            for m in self.store.list(&Query {
                kind: Some(kind),
                patient,
                ..Default::default()
            })? {
                if let Some(s) = m.subject {
                    out.entry(s).or_default().push(m.id);
                }
            }
            Ok(out)
        };
        let cases = related(RecordKind::AdjudicationCase)?;
        let adjudications = related(RecordKind::Adjudication)?;
        let replies = related(RecordKind::CaseReply)?;
        let mut out = Vec::new();
        for m in self.store.list(&Query {
            kind: Some(RecordKind::AdverseEvent),
            patient,
            ..Default::default()
        })? {
            let Some(p) = m.patient else { continue };
            let case = match cases.get(&m.id).and_then(|v| v.first()) {
                Some(id) => Some(self.get::<AdjudicationCase>(*id)?),
                None => None,
            };
            let adjudication = match adjudications.get(&m.id).and_then(|v| v.first()) {
                Some(id) => Some((*id, self.get::<Adjudication>(*id)?)),
                None => None,
            };
            let mut rs = Vec::new();
            for id in replies.get(&m.id).into_iter().flatten() {
                rs.push(self.get::<CaseReply>(*id)?);
            }
            rs.sort_by(|a, b| a.replied_at.cmp(&b.replied_at));
            out.push(EventView {
                id: m.id,
                patient: p,
                event: self.get(m.id)?,
                case,
                adjudication,
                replies: rs,
            });
        }
        out.sort_by(|a, b| (&a.event.onset, a.id).cmp(&(&b.event.onset, b.id)));
        Ok(out)
    }

    /// One adverse event with its case, adjudication and replies.
    pub fn adverse_event(&self, id: RecordId) -> Result<EventView> {
        let h = self.header(id)?;
        if h.kind != RecordKind::AdverseEvent {
            return Err(Error::InvalidInput(format!("{id} is not an adverse event")));
        }
        self.adverse_events(h.patient)?
            .into_iter()
            .find(|v| v.id == id)
            .ok_or_else(|| Error::NotFound(id.to_hex()))
    }

    /// The patient accepts or disputes the clinic's adjudication of one of their adverse
    /// events (a dispute says why; it reopens the case for the registry). Patient's phone only.
    pub fn reply_to_adjudication(
        &self,
        adverse_event: RecordId,
        verdict: Verdict,
        comment: &str,
    ) -> Result<RecordId> {
        let e = self.require_enrolled()?;
        if e.role != DeviceRole::PatientDevice {
            return Err(Error::NotPermitted(
                "only the patient's phone accepts or disputes an adjudication; the clinic answers through its adjudication".into(),
            ));
        }
        let h = self.header(adverse_event)?;
        let patient = h
            .patient
            .ok_or_else(|| Error::InvalidInput(format!("{adverse_event} names no patient")))?;
        if e.patient != Some(patient) {
            return Err(Error::NotPermitted(
                "a patient's phone replies only about its own patient's events".into(),
            ));
        }
        let reply = CaseReply {
            adverse_event: adverse_event.to_hex(),
            verdict,
            comment: comment.trim().to_string(),
            replied_at: now_iso(),
        };
        let id = RecordId::random();
        let problems =
            self.with_rules(e.role, id, patient, |ctx| rules::check_reply(ctx, &reply))?;
        no_problems(problems)?;
        let doc = model::new_record(self.author(&e), id, e.clinic, Some(patient), &reply)?;
        self.save(&doc)?;
        Ok(id)
    }
}
