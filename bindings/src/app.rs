//! The app API beyond one-field capture (see `docs/app-api.md`): a whole response in one call,
//! drafts, reading any record, editing a procedure, observing changes, a patient's due surveys.
//! Translation only, like the rest of this crate.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use followup_device::app as dapp;
use followup_device::device::Device;
use followup_domain::model as m;
use followup_domain::model::RecordKind as CoreKind;

use crate::error::{guard, FollowupError};
use crate::store::FollowupStore;
use crate::types::{self as t, opt_record_id, record_id};

/// What kind of record a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum RecordKind {
    Clinic,
    Enrolment,
    Procedure,
    Response,
    AdverseEvent,
    Adjudication,
    /// The registry's adjudication case of an adverse event (read-only on devices).
    AdjudicationCase,
    /// The patient's reply to an adjudication.
    CaseReply,
    /// A questionnaire, schedule or policy version published by the registry.
    Definition,
}

impl From<CoreKind> for RecordKind {
    fn from(k: CoreKind) -> Self {
        match k {
            CoreKind::Clinic => Self::Clinic,
            CoreKind::Enrolment => Self::Enrolment,
            CoreKind::Procedure => Self::Procedure,
            CoreKind::Response => Self::Response,
            CoreKind::AdverseEvent => Self::AdverseEvent,
            CoreKind::Adjudication => Self::Adjudication,
            CoreKind::AdjudicationCase => Self::AdjudicationCase,
            CoreKind::CaseReply => Self::CaseReply,
            CoreKind::Definition => Self::Definition,
        }
    }
}

/// A draft response, for a "continue where you left off" list.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DraftSummary {
    pub response_id: String,
    pub patient_id: String,
    pub questionnaire_id: String,
    pub procedure_id: Option<String>,
    pub visit_id: Option<String>,
    /// Items answered so far.
    pub answered: u32,
    /// Unix seconds of the latest save, when known.
    pub last_saved: Option<i64>,
}

impl From<dapp::DraftSummary> for DraftSummary {
    fn from(d: dapp::DraftSummary) -> Self {
        Self {
            response_id: d.id.to_hex(),
            patient_id: d.patient.to_hex(),
            questionnaire_id: d.questionnaire,
            procedure_id: d.procedure.map(|p| p.to_hex()),
            visit_id: d.visit,
            answered: u32::try_from(d.answered).unwrap_or(u32::MAX),
            last_saved: d.last_saved,
        }
    }
}

/// What discarding a draft did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum DiscardOutcome {
    /// The registry never received it: it is gone.
    Deleted,
    /// The registry holds it: it is marked discarded (this syncs) and no longer listed.
    MarkedDiscarded,
}

impl From<dapp::Discarded> for DiscardOutcome {
    fn from(d: dapp::Discarded) -> Self {
        match d {
            dapp::Discarded::Deleted => Self::Deleted,
            dapp::Discarded::MarkedDiscarded => Self::MarkedDiscarded,
        }
    }
}

/// A clinic as its record states it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ClinicRecord {
    pub name: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// `invited`, `participating`, `non_responsive`, ... (the registry's code).
    pub participation: String,
}

/// The treating clinic's adjudication of an adverse event.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Adjudication {
    pub adverse_event_id: String,
    pub relatedness: Option<t::Relatedness>,
    pub action: String,
    pub remedy: String,
    pub status: t::AdjudicationStatus,
    /// ISO date by which the clinic must respond (empty when the registry keeps it).
    pub deadline: String,
    /// ISO date-time (UTC) of the last decision.
    pub decided_at: Option<String>,
}

/// A record's typed body.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum RecordBody {
    ClinicBody {
        clinic: ClinicRecord,
    },
    EnrolmentBody {
        patient: t::NewPatient,
    },
    ProcedureBody {
        procedure: t::Procedure,
    },
    /// A response with its scores (`None` while a score's items are not all answered).
    ResponseBody {
        response: t::Response,
        scores: HashMap<String, Option<f64>>,
    },
    AdverseEventBody {
        event: t::AdverseEvent,
    },
    AdjudicationBody {
        adjudication: Adjudication,
    },
}

/// Any record: who it belongs to, who created it, and its body.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct RecordView {
    pub record_id: String,
    pub kind: RecordKind,
    pub clinic_id: String,
    pub patient_id: Option<String>,
    /// The device that created it; `None` when the registry did.
    pub created_by_device: Option<String>,
    pub body: RecordBody,
}

impl From<dapp::RecordView> for RecordView {
    fn from(v: dapp::RecordView) -> Self {
        let h = v.header;
        let body = match v.body {
            dapp::RecordBodyView::Clinic(c) => RecordBody::ClinicBody {
                clinic: ClinicRecord {
                    name: c.name,
                    country: c.country,
                    participation: c.participation.code().to_string(),
                },
            },
            dapp::RecordBodyView::Enrolment(e) => RecordBody::EnrolmentBody { patient: e.into() },
            dapp::RecordBodyView::Procedure(p) => RecordBody::ProcedureBody {
                procedure: p.into(),
            },
            dapp::RecordBodyView::Response { response, scores } => RecordBody::ResponseBody {
                response: t::Response::from_core(h.id, h.patient, response),
                scores: scores.into_iter().collect(),
            },
            dapp::RecordBodyView::AdverseEvent(a) => {
                RecordBody::AdverseEventBody { event: a.into() }
            }
            dapp::RecordBodyView::Adjudication(a) => RecordBody::AdjudicationBody {
                adjudication: a.into(),
            },
        };
        Self {
            record_id: h.id.to_hex(),
            kind: h.kind.into(),
            clinic_id: h.clinic.to_hex(),
            patient_id: h.patient.map(|p| p.to_hex()),
            created_by_device: h.created_by.map(|d| d.to_hex()),
            body,
        }
    }
}

impl From<m::Adjudication> for Adjudication {
    fn from(a: m::Adjudication) -> Self {
        Self {
            adverse_event_id: a.adverse_event,
            relatedness: a.relatedness.map(Into::into),
            action: a.action,
            remedy: a.remedy,
            status: a.status.into(),
            deadline: a.deadline,
            decided_at: a.decided_at,
        }
    }
}

/// One record a save or a sync changed.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RecordChange {
    pub record_id: String,
    /// `None` when the record is gone from the device (`removed`).
    pub kind: Option<RecordKind>,
    pub patient_id: Option<String>,
    pub removed: bool,
}

impl From<&dapp::RecordChange> for RecordChange {
    fn from(c: &dapp::RecordChange) -> Self {
        Self {
            record_id: c.id.to_hex(),
            kind: c.kind.map(Into::into),
            patient_id: c.patient.map(|p| p.to_hex()),
            removed: c.removed,
        }
    }
}

/// Implemented by the app to hear which records changed, after each local save and at the end
/// of each sync. Called on the thread that saved or synced: only enqueue (the Kotlin `Flow` and
/// Swift `AsyncStream` adapters do). Fallible only so that an exception in the app's listener
/// is ignored rather than aborting the save.
#[uniffi::export(with_foreign)]
pub trait ChangeListener: Send + Sync {
    fn on_changes(&self, changes: Vec<RecordChange>) -> Result<(), FollowupError>;
}

/// A listener's registration; `cancel()` (or dropping it in Swift, `close()` in Kotlin) stops it.
#[derive(Debug, uniffi::Object)]
pub struct ChangeSubscription {
    device: Weak<Device>,
    id: u64,
}

#[uniffi::export]
impl ChangeSubscription {
    /// Stops the listener. Idempotent.
    pub fn cancel(&self) {
        if let Some(d) = self.device.upgrade() {
            d.unsubscribe(self.id);
        }
    }
}

impl Drop for ChangeSubscription {
    fn drop(&mut self) {
        self.cancel();
    }
}

#[uniffi::export]
impl FollowupStore {
    /// Captures a whole response in one call, as one change in one transaction: created with its
    /// answers and, when `submit`, submitted. All or nothing. Fails with `ValidationFailed`
    /// (nothing written) when the answers break a rule, and with `AlreadyRecorded` when a
    /// submitted response already answers the visit.
    pub fn capture_response(
        &self,
        patient_id: String,
        questionnaire_id: String,
        procedure_id: Option<String>,
        visit_id: Option<String>,
        answers: HashMap<String, t::AnswerValue>,
        submit: bool,
    ) -> Result<String, FollowupError> {
        let locale = self.current_locale();
        self.with(|d| {
            let patient = record_id(&patient_id, "patient id")?;
            let procedure = opt_record_id(procedure_id.as_deref(), "procedure id")?;
            Ok(d.capture_response_in(
                patient,
                &questionnaire_id,
                procedure,
                visit_id.as_deref(),
                &t::answers_in(answers),
                submit,
                &locale,
            )?
            .to_hex())
        })
    }

    /// The drafts on this device (of one patient, or all), most recently saved first. Resume one
    /// with `get_response`, `save_answers` and `submit_response`.
    pub fn drafts(&self, patient_id: Option<String>) -> Result<Vec<DraftSummary>, FollowupError> {
        self.with(|d| {
            let patient = opt_record_id(patient_id.as_deref(), "patient id")?;
            Ok(d.drafts(patient)?.into_iter().map(Into::into).collect())
        })
    }

    /// Discards a draft (a submitted response cannot be discarded).
    pub fn discard_draft(&self, response_id: String) -> Result<DiscardOutcome, FollowupError> {
        self.with(|d| {
            let id = record_id(&response_id, "response id")?;
            Ok(d.discard_draft(id)?.into())
        })
    }

    /// Any record with its typed body: an enrolment, a procedure, a response with its scores, an
    /// adverse event, an adjudication, the clinic.
    pub fn get_record(&self, record_id: String) -> Result<RecordView, FollowupError> {
        self.with(|d| {
            let id = crate::types::record_id(&record_id, "record id")?;
            Ok(d.record(id)?.into())
        })
    }

    /// A response's scores by score id (`None` while a score's items are not all answered).
    pub fn response_scores(
        &self,
        response_id: String,
    ) -> Result<HashMap<String, Option<f64>>, FollowupError> {
        self.with(|d| {
            let id = record_id(&response_id, "response id")?;
            Ok(d.response_scores(id)?.into_iter().collect())
        })
    }

    /// Replaces a procedure's fields (clinic devices only); only what differs is written.
    pub fn update_procedure(
        &self,
        procedure_id: String,
        procedure: t::Procedure,
    ) -> Result<(), FollowupError> {
        self.with(|d| {
            let id = record_id(&procedure_id, "procedure id")?;
            Ok(d.update_procedure(id, &procedure.into())?)
        })
    }

    /// The outcome surveys a patient should complete (overdue, due, upcoming), soonest window
    /// first, with their windows for reminders. On a patient's phone `patient_id` may be `None`
    /// (its own patient). `as_of` is `YYYY-MM-DD`.
    pub fn due_surveys(
        &self,
        patient_id: Option<String>,
        as_of: String,
    ) -> Result<Vec<t::Visit>, FollowupError> {
        self.with(|d| {
            let patient = opt_record_id(patient_id.as_deref(), "patient id")?;
            let as_of = t::date(&as_of, "as_of")?;
            Ok(d.due_surveys(patient, as_of)?
                .into_iter()
                .map(Into::into)
                .collect())
        })
    }

    /// Calls `listener` with the records changed after every local save and at the end of every
    /// sync, until the returned subscription is cancelled.
    pub fn observe_changes(
        &self,
        listener: Arc<dyn ChangeListener>,
    ) -> Result<Arc<ChangeSubscription>, FollowupError> {
        guard(|| {
            let device = self.device()?;
            let id = device.subscribe(move |changes| {
                let changes: Vec<RecordChange> = changes.iter().map(Into::into).collect();
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let _ = listener.on_changes(changes);
                }));
            });
            Ok(Arc::new(ChangeSubscription {
                device: Arc::downgrade(&device),
                id,
            }))
        })
    }
}
