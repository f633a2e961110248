//! The records and enums that cross the boundary, each a plain mirror of a core type with `From`
//! conversions. Ids cross as 32-character hex strings and dates as ISO `YYYY-MM-DD` strings; a
//! malformed one is `FollowupError::InvalidInput`, never a panic.

use std::collections::HashMap;

use chrono::NaiveDate;
use followup_device::device as dev;
use followup_device::{DeviceId, RecordId};
use followup_domain::model as m;
use followup_domain::questionnaire as q;
use followup_domain::schedule as s;

use crate::error::{FollowupError, ItemProblem};

// ---------------------------------------------------------------------------------------------
// Ids and dates

/// Parses a record id the platform passed in; `what` names it in the error ("patient id").
pub(crate) fn record_id(s: &str, what: &str) -> Result<RecordId, FollowupError> {
    s.trim().parse().map_err(|_| {
        FollowupError::invalid_input(format!(
            "{s:?} is not a valid {what} (a record id is 32 hexadecimal characters)"
        ))
    })
}

pub(crate) fn opt_record_id(
    s: Option<&str>,
    what: &str,
) -> Result<Option<RecordId>, FollowupError> {
    s.map(|s| record_id(s, what)).transpose()
}

/// Parses an ISO date (`YYYY-MM-DD`).
pub(crate) fn date(s: &str, what: &str) -> Result<NaiveDate, FollowupError> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| {
        FollowupError::invalid_input(format!("{what} {s:?} is not a date written YYYY-MM-DD"))
    })
}

pub(crate) fn iso(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn hex_id(id: RecordId) -> String {
    id.to_hex()
}

fn device_hex(id: DeviceId) -> String {
    id.to_hex()
}

// ---------------------------------------------------------------------------------------------
// Coded enums: one line each, identical variants on both sides.

macro_rules! mirror_enum {
    ($(#[$doc:meta])* $name:ident => $core:path { $($variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
        pub enum $name { $($variant),+ }

        impl From<$core> for $name {
            fn from(c: $core) -> Self {
                match c { $(<$core>::$variant => Self::$variant),+ }
            }
        }

        impl From<$name> for $core {
            fn from(c: $name) -> Self {
                match c { $($name::$variant => <$core>::$variant),+ }
            }
        }
    };
}

mirror_enum!(
    /// What an enrolled device may do: a clinic's shared tablet or a patient's own phone.
    DeviceRole => followup_domain::protocol::DeviceRole { ClinicDevice, PatientDevice }
);
mirror_enum!(
    /// Recorded sex.
    Sex => m::Sex { Female, Male, Intersex, Unknown }
);
mirror_enum!(
    /// How the cells were administered.
    Route => m::Route { Intravenous, Intrathecal, IntraArticular, Intramuscular, DirectInjection, Other }
);
mirror_enum!(
    /// The cell type administered.
    CellType => m::CellType {
        Mesenchymal, Haematopoietic, StromalVascularFraction, Mononuclear, InducedPluripotent, Other,
        Unknown
    }
);
mirror_enum!(
    /// The tissue the cells came from.
    SourceTissue => m::SourceTissue {
        BoneMarrow, Adipose, UmbilicalCordBlood, UmbilicalCordTissue, PeripheralBlood, Other, Unknown
    }
);
mirror_enum!(
    /// Whose cells: the patient's own or a donor's.
    Origin => m::Origin { Autologous, Allogeneic, Unknown }
);
mirror_enum!(
    /// How much the cells were manipulated.
    Manipulation => m::Manipulation { Minimal, MoreThanMinimal, GeneticallyModified, Unknown }
);
mirror_enum!(
    /// The procedure's regulatory status.
    RegulatoryStatus => m::RegulatoryStatus {
        ApprovedIndication, InvestigationalNewDrug, RegisteredTrial, Unregulated, Unknown
    }
);
mirror_enum!(
    /// Who completed a response.
    CompletedBy => m::CompletedBy { Nurse, Patient }
);
mirror_enum!(
    /// A response is a draft until submitted.
    ResponseStatus => m::ResponseStatus { Draft, Submitted, Discarded }
);
mirror_enum!(
    /// Who reported an adverse event (always `Patient` on a patient's phone).
    Reporter => m::Reporter { Patient, Clinic }
);
mirror_enum!(
    /// How an adverse event turned out.
    AeOutcome => m::AeOutcome {
        Recovered, Recovering, NotRecovered, RecoveredWithSequelae, Fatal, Unknown
    }
);
mirror_enum!(
    /// The treating clinic's judgement of whether the procedure caused the event.
    Relatedness => m::Relatedness { NotRelated, Unlikely, Possible, Probable, Definite }
);
mirror_enum!(
    /// Where an adjudication stands.
    AdjudicationStatus => m::AdjudicationStatus { Open, Responded, Resolved, Disputed }
);
mirror_enum!(
    /// Where the registry's adjudication case stands, at the registry's clock.
    CaseState => m::CaseState { Open, Responded, Overdue, Escalated, Disputed, Closed }
);
mirror_enum!(
    /// The patient's answer to the clinic's adjudication.
    Verdict => m::Verdict { Accepted, Disputed }
);
mirror_enum!(
    /// Where a scheduled visit stands as of a date.
    VisitState => s::VisitState { Upcoming, Due, Overdue, Missed, Done }
);
mirror_enum!(
    /// What a questionnaire is for.
    QuestionnaireKind => q::QuestionnaireKind { Baseline, ClinicianFollowup, PatientSurvey, AdverseEvent }
);
mirror_enum!(
    /// An item's type, which decides the `AnswerValue` it takes: `Boolean` → `Bool`;
    /// `Integer`, `Scale0To10` → `Int`; `Decimal` → `Decimal` (or `Int`); `SingleChoice`, `Date`
    /// (`YYYY-MM-DD`), `Text` → `Text`; `MultipleChoice` → `Choices`.
    ItemType => q::ItemType {
        Boolean, Integer, Decimal, SingleChoice, MultipleChoice, Date, Text, Scale0To10
    }
);

// ---------------------------------------------------------------------------------------------
// The device's enrolment

/// How this device is enrolled with the registry.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DeviceEnrolment {
    /// The id the registry gave this device.
    pub device_id: String,
    pub role: DeviceRole,
    pub clinic_id: String,
    /// On a patient's phone: the patient's id (their enrolment record).
    pub patient_id: Option<String>,
    pub server_url: String,
}

impl From<dev::Enrolled> for DeviceEnrolment {
    fn from(e: dev::Enrolled) -> Self {
        Self {
            device_id: device_hex(e.device_id),
            role: e.role.into(),
            clinic_id: hex_id(e.clinic),
            patient_id: e.patient.map(hex_id),
            server_url: e.server_url,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Patients and procedures

/// A patient's consent to the registry.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Consent {
    pub form_version: String,
    /// ISO date signed.
    pub date: String,
    /// What was consented to, e.g. `registry`, `contact`, `research`.
    pub scope: Vec<String>,
}

/// A new patient: pseudonymous, no name or phone number.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NewPatient {
    /// The clinic's own short study code for the patient (not a name).
    pub study_code: String,
    pub consent: Consent,
    pub birth_year: i32,
    pub sex: Sex,
    /// ISO date enrolled.
    pub enrolled_on: String,
}

impl From<NewPatient> for m::Enrolment {
    fn from(p: NewPatient) -> Self {
        Self {
            study_code: p.study_code,
            consent: m::Consent {
                form_version: p.consent.form_version,
                date: p.consent.date,
                scope: p.consent.scope,
            },
            birth_year: i64::from(p.birth_year),
            sex: p.sex.into(),
            enrolled_on: p.enrolled_on,
        }
    }
}

impl From<m::Enrolment> for NewPatient {
    fn from(e: m::Enrolment) -> Self {
        Self {
            study_code: e.study_code,
            consent: Consent {
                form_version: e.consent.form_version,
                date: e.consent.date,
                scope: e.consent.scope,
            },
            birth_year: i32::try_from(e.birth_year).unwrap_or(0),
            sex: e.sex.into(),
            enrolled_on: e.enrolled_on,
        }
    }
}

/// One patient as the device lists them.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PatientSummary {
    pub id: String,
    pub study_code: String,
    /// ISO date, when known.
    pub enrolled_on: Option<String>,
    pub procedures: u32,
    pub responses: u32,
    pub open_adverse_events: u32,
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl From<dev::PatientSummary> for PatientSummary {
    fn from(p: dev::PatientSummary) -> Self {
        Self {
            id: hex_id(p.id),
            study_code: p.study_code,
            enrolled_on: p.enrolled_on.map(iso),
            procedures: count(p.procedures),
            responses: count(p.responses),
            open_adverse_events: count(p.open_adverse_events),
        }
    }
}

/// A benefit the clinic promised and how it will be measured.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PromisedBenefit {
    pub benefit: String,
    pub measure: String,
}

/// What a procedure cost the patient.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Cost {
    /// Amount in minor units (cents).
    pub amount_minor: i64,
    /// ISO 4217 currency code.
    pub currency: String,
}

/// A cell-therapy procedure; follow-up visits are scheduled from its date.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Procedure {
    /// ISO date performed.
    pub date: String,
    pub condition: String,
    /// e.g. "autologous haematopoietic stem cell transplant", "cell injection".
    pub procedure_type: String,
    pub route: Route,
    pub cell_type: CellType,
    pub source_tissue: SourceTissue,
    pub origin: Origin,
    pub manipulation: Manipulation,
    pub regulatory_status: RegulatoryStatus,
    /// A trial registration such as a ClinicalTrials.gov NCT number.
    pub trial_registration: Option<String>,
    pub promised_benefits: Vec<PromisedBenefit>,
    pub cost: Option<Cost>,
}

impl From<Procedure> for m::Procedure {
    fn from(p: Procedure) -> Self {
        Self {
            date: p.date,
            condition: p.condition,
            procedure_type: p.procedure_type,
            route: p.route.into(),
            cell_type: p.cell_type.into(),
            source_tissue: p.source_tissue.into(),
            origin: p.origin.into(),
            manipulation: p.manipulation.into(),
            regulatory_status: p.regulatory_status.into(),
            trial_registration: p.trial_registration,
            promised_benefits: p
                .promised_benefits
                .into_iter()
                .map(|b| m::PromisedBenefit {
                    benefit: b.benefit,
                    measure: b.measure,
                })
                .collect(),
            cost: p.cost.map(|c| m::Cost {
                amount_minor: c.amount_minor,
                currency: c.currency,
            }),
        }
    }
}

impl From<m::Procedure> for Procedure {
    fn from(p: m::Procedure) -> Self {
        Self {
            date: p.date,
            condition: p.condition,
            procedure_type: p.procedure_type,
            route: p.route.into(),
            cell_type: p.cell_type.into(),
            source_tissue: p.source_tissue.into(),
            origin: p.origin.into(),
            manipulation: p.manipulation.into(),
            regulatory_status: p.regulatory_status.into(),
            trial_registration: p.trial_registration,
            promised_benefits: p
                .promised_benefits
                .into_iter()
                .map(|b| PromisedBenefit {
                    benefit: b.benefit,
                    measure: b.measure,
                })
                .collect(),
            cost: p.cost.map(|c| Cost {
                amount_minor: c.amount_minor,
                currency: c.currency,
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Schedule

/// One visit of one patient's follow-up schedule, classified as of a date. Dates are ISO.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Visit {
    pub patient_id: String,
    pub procedure_id: String,
    /// The schedule's visit id, e.g. `d7`, `m3`; pass it to `start_response`.
    pub visit_id: String,
    pub label: String,
    /// The questionnaire that answers this visit.
    pub questionnaire_id: String,
    pub target: String,
    pub window_start: String,
    pub window_end: String,
    /// Last day it counts as overdue rather than missed.
    pub grace_end: String,
    pub state: VisitState,
}

impl From<dev::PatientVisit<'_>> for Visit {
    fn from(v: dev::PatientVisit<'_>) -> Self {
        Self {
            patient_id: hex_id(v.patient),
            procedure_id: hex_id(v.procedure),
            visit_id: v.visit.visit_id.to_string(),
            label: v.visit.label.to_string(),
            questionnaire_id: v.visit.questionnaire.to_string(),
            target: iso(v.visit.target),
            window_start: iso(v.visit.window_start),
            window_end: iso(v.visit.window_end),
            grace_end: iso(v.visit.grace_end),
            state: v.visit.state.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Questionnaires and answers

/// One answer. Which variant an item takes is given by its [`ItemType`].
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum AnswerValue {
    Bool {
        value: bool,
    },
    Int {
        value: i64,
    },
    Decimal {
        value: f64,
    },
    /// Text, a date (`YYYY-MM-DD`) or a single choice's code.
    Text {
        value: String,
    },
    /// The codes of a multiple choice.
    Choices {
        value: Vec<String>,
    },
}

impl From<AnswerValue> for q::AnswerValue {
    fn from(a: AnswerValue) -> Self {
        match a {
            AnswerValue::Bool { value } => Self::Bool(value),
            AnswerValue::Int { value } => Self::Int(value),
            AnswerValue::Decimal { value } => Self::Decimal(value),
            AnswerValue::Text { value } => Self::Text(value),
            AnswerValue::Choices { value } => Self::Choices(value),
        }
    }
}

impl From<q::AnswerValue> for AnswerValue {
    fn from(a: q::AnswerValue) -> Self {
        match a {
            q::AnswerValue::Bool(value) => Self::Bool { value },
            q::AnswerValue::Int(value) => Self::Int { value },
            q::AnswerValue::Decimal(value) => Self::Decimal { value },
            q::AnswerValue::Text(value) => Self::Text { value },
            q::AnswerValue::Choices(value) => Self::Choices { value },
        }
    }
}

pub(crate) fn answers_in(a: HashMap<String, AnswerValue>) -> q::Answers {
    a.into_iter().map(|(k, v)| (k, v.into())).collect()
}

pub(crate) fn answers_out(a: q::Answers) -> HashMap<String, AnswerValue> {
    a.into_iter().map(|(k, v)| (k, v.into())).collect()
}

/// One possible answer of a choice item.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Choice {
    /// The code stored in the answer.
    pub code: String,
    /// What the respondent sees.
    pub label: String,
    /// For a multiple choice: may not be combined with another choice (e.g. "none of these").
    pub exclusive: bool,
}

/// One question, with what a form needs to render and constrain it.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct QuestionnaireItem {
    /// The key of its answer.
    pub id: String,
    /// The question as shown.
    pub text: String,
    pub item_type: ItemType,
    /// Must be answered (when enabled) before the response can be submitted.
    pub required: bool,
    pub help: Option<String>,
    /// Smallest allowed value (numeric items; 0 for a scale).
    pub min: Option<f64>,
    /// Largest allowed value (numeric items; 10 for a scale).
    pub max: Option<f64>,
    /// Most digits after the decimal point (decimal items).
    pub decimals: Option<u32>,
    /// Most characters (text items).
    pub max_length: Option<u32>,
    pub choices: Vec<Choice>,
    /// Whether the item is shown for the answers given (see `enabled_items` as answers change).
    pub enabled: bool,
    /// Whether its being shown depends on other answers.
    pub conditional: bool,
}

/// A questionnaire definition, ready to render.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Questionnaire {
    pub id: String,
    pub version: String,
    pub title: String,
    pub description: Option<String>,
    pub kind: QuestionnaireKind,
    /// In display order.
    pub items: Vec<QuestionnaireItem>,
}

impl Questionnaire {
    pub(crate) fn from_core(q: &q::Questionnaire, answers: &q::Answers) -> Self {
        Self {
            id: q.id().to_string(),
            version: q.version().to_string(),
            title: q.title().to_string(),
            description: q.description().map(str::to_string),
            kind: q.kind().into(),
            items: q
                .items()
                .iter()
                .map(|i| QuestionnaireItem {
                    id: i.id.clone(),
                    text: i.text.clone(),
                    item_type: i.item_type.into(),
                    required: i.required,
                    help: i.help.clone(),
                    min: i.effective_min(),
                    max: i.effective_max(),
                    decimals: i.decimals,
                    max_length: i.max_length.map(count),
                    choices: i
                        .choices
                        .iter()
                        .map(|c| Choice {
                            code: c.code.clone(),
                            label: c.label.clone(),
                            exclusive: c.exclusive,
                        })
                        .collect(),
                    enabled: q.is_enabled(&i.id, answers),
                    conditional: !i.enable_when.is_empty(),
                })
                .collect(),
        }
    }
}

/// The stable code of a problem, e.g. `required`, `above_max`, `unknown_choice`.
pub(crate) fn problem_code(c: q::ProblemCode) -> &'static str {
    use q::ProblemCode as P;
    match c {
        P::Required => "required",
        P::WrongType => "wrong_type",
        P::BelowMin => "below_min",
        P::AboveMax => "above_max",
        P::TooManyDecimals => "too_many_decimals",
        P::TooLong => "too_long",
        P::UnknownChoice => "unknown_choice",
        P::DuplicateChoice => "duplicate_choice",
        P::ExclusiveChoice => "exclusive_choice",
        P::InvalidDate => "invalid_date",
        P::UnknownItem => "unknown_item",
        P::AnsweredButDisabled => "answered_but_disabled",
        P::OutOfBounds => "out_of_bounds",
        P::Inconsistent => "inconsistent",
        P::NotAllowed => "not_allowed",
        P::UnknownRecord => "unknown_record",
        P::WrongPatient => "wrong_patient",
        P::Duplicate => "duplicate",
    }
}

impl From<q::Problem> for ItemProblem {
    fn from(p: q::Problem) -> Self {
        Self {
            code: problem_code(p.code).to_string(),
            item_id: p.item,
            message: p.message,
        }
    }
}

pub(crate) fn problems(p: Vec<q::Problem>) -> Vec<ItemProblem> {
    p.into_iter().map(Into::into).collect()
}

/// A questionnaire response (draft or submitted).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Response {
    pub id: String,
    pub patient_id: String,
    pub questionnaire_id: String,
    pub questionnaire_version: String,
    pub procedure_id: Option<String>,
    pub visit_id: Option<String>,
    pub answers: HashMap<String, AnswerValue>,
    pub completed_by: CompletedBy,
    pub status: ResponseStatus,
    /// ISO date-time (UTC) of submission.
    pub submitted_at: Option<String>,
}

impl Response {
    pub(crate) fn from_core(
        id: RecordId,
        patient: Option<RecordId>,
        r: m::FollowupResponse,
    ) -> Self {
        Self {
            id: hex_id(id),
            patient_id: patient.map(hex_id).unwrap_or_default(),
            questionnaire_id: r.questionnaire,
            questionnaire_version: r.questionnaire_version,
            procedure_id: r.procedure,
            visit_id: r.visit,
            answers: answers_out(r.answers),
            completed_by: r.completed_by.into(),
            status: r.status.into(),
            submitted_at: r.submitted_at,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Adverse events and adjudication

/// An adverse event as reported.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct AdverseEvent {
    /// Ignored on a patient's phone, where the reporter is always the patient.
    pub reporter: Reporter,
    /// A category code of the adverse-event instrument, e.g. `infection`, `gvhd`.
    pub category: String,
    /// ISO onset date.
    pub onset: String,
    /// Severity grade 1–5 (CTCAE-style).
    pub severity: i32,
    /// Seriousness criteria met: `hospitalisation`, `life_threatening`, `death`, `disability`.
    pub seriousness: Vec<String>,
    pub outcome: AeOutcome,
    pub description: String,
    /// The procedure suspected, if known.
    pub procedure_id: Option<String>,
    /// Answers to the `adverse-event-report` questionnaire, when reported through it.
    pub answers: HashMap<String, AnswerValue>,
}

impl AdverseEvent {
    pub(crate) fn into_core(self) -> Result<m::AdverseEvent, FollowupError> {
        Ok(m::AdverseEvent {
            reporter: self.reporter.into(),
            category: self.category,
            onset: self.onset,
            severity: i64::from(self.severity),
            seriousness: self.seriousness,
            outcome: self.outcome.into(),
            description: self.description,
            procedure: opt_record_id(self.procedure_id.as_deref(), "procedure id")?.map(hex_id),
            answers: answers_in(self.answers),
        })
    }
}

impl From<m::AdverseEvent> for AdverseEvent {
    fn from(a: m::AdverseEvent) -> Self {
        Self {
            reporter: a.reporter.into(),
            category: a.category,
            onset: a.onset,
            severity: i32::try_from(a.severity).unwrap_or(0),
            seriousness: a.seriousness,
            outcome: a.outcome.into(),
            description: a.description,
            procedure_id: a.procedure,
            answers: answers_out(a.answers),
        }
    }
}

/// The treating clinic's decision on an adverse event. The deadline is not the clinic's: the
/// registry sets it when it first accepts the event (see [`AdjudicationCase`]).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct AdjudicationDecision {
    pub relatedness: Option<Relatedness>,
    /// Action taken, e.g. "treatment given", "none".
    pub action: String,
    /// The remedy offered to the patient.
    pub remedy: String,
    pub status: AdjudicationStatus,
}

impl AdjudicationDecision {
    pub(crate) fn apply(self, a: &mut m::Adjudication) {
        a.relatedness = self.relatedness.map(Into::into);
        a.action = self.action;
        a.remedy = self.remedy;
        a.status = self.status.into();
    }
}

/// An adverse event awaiting the treating clinic's decision.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct AdjudicationItem {
    pub adverse_event_id: String,
    pub patient_id: String,
    /// The adjudication record, once a first decision is recorded.
    pub adjudication_id: Option<String>,
    /// The clinic's own status.
    pub status: AdjudicationStatus,
    /// The registry's case state, once the case reached the device.
    pub state: Option<CaseState>,
    /// ISO date by which the clinic must respond: the registry's, once its case reached the
    /// device.
    pub deadline: Option<String>,
    pub overdue: bool,
}

impl From<dev::AdjudicationItem> for AdjudicationItem {
    fn from(i: dev::AdjudicationItem) -> Self {
        Self {
            adverse_event_id: hex_id(i.adverse_event),
            patient_id: hex_id(i.patient),
            adjudication_id: i.adjudication.map(hex_id),
            status: i.status.into(),
            state: i.state.map(Into::into),
            deadline: i.deadline.map(iso),
            overdue: i.overdue,
        }
    }
}

/// A registry staff escalation, with the note the clinic reads.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Escalation {
    /// The registry's time (RFC 3339, UTC).
    pub at: String,
    pub note: String,
}

/// A patient's reply as the registry recorded it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RecordedReply {
    /// The registry's time (RFC 3339, UTC).
    pub at: String,
    pub verdict: Verdict,
    pub comment: String,
}

/// The registry's adjudication case of an adverse event: read-only on every device.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct AdjudicationCase {
    pub state: CaseState,
    /// ISO date by which the clinic must decide.
    pub deadline: String,
    /// When the registry first accepted the event (the clock starts then).
    pub opened_at: String,
    /// Days the policy gave, the policy (`id@version`) and its rule.
    pub days: i32,
    pub policy: String,
    pub rule: String,
    /// When the registry accepted the clinic's latest decision.
    pub responded_at: Option<String>,
    pub escalations: Vec<Escalation>,
    pub replies: Vec<RecordedReply>,
    pub closed_at: Option<String>,
    pub closed_note: Option<String>,
}

impl From<m::AdjudicationCase> for AdjudicationCase {
    fn from(c: m::AdjudicationCase) -> Self {
        Self {
            state: c.state.into(),
            deadline: c.deadline,
            opened_at: c.opened_at,
            days: i32::try_from(c.days).unwrap_or(0),
            policy: c.policy,
            rule: c.rule,
            responded_at: c.responded_at,
            escalations: c
                .escalations
                .into_iter()
                .map(|e| Escalation {
                    at: e.at,
                    note: e.note,
                })
                .collect(),
            replies: c
                .replies
                .into_iter()
                .map(|r| RecordedReply {
                    at: r.at,
                    verdict: r.verdict.into(),
                    comment: r.comment,
                })
                .collect(),
            closed_at: c.closed_at,
            closed_note: c.closed_note,
        }
    }
}

/// A reply of the patient this device holds (synced or not yet).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PatientReply {
    pub verdict: Verdict,
    pub comment: String,
    /// The device's time of the reply.
    pub replied_at: String,
}

/// An adverse event with the registry's case, the clinic's adjudication and the patient's
/// replies: what the tablet and the patient's phone show.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct AdverseEventView {
    pub adverse_event_id: String,
    pub patient_id: String,
    pub event: AdverseEvent,
    /// `None` until the registry has accepted the event and the device has synced since.
    pub case: Option<AdjudicationCase>,
    pub adjudication_id: Option<String>,
    /// The clinic's decision: relatedness, action, remedy, status.
    pub adjudication: Option<AdjudicationDecision>,
    pub replies: Vec<PatientReply>,
    /// Not closed by the registry and not resolved by the clinic.
    pub is_open: bool,
}

impl From<dev::EventView> for AdverseEventView {
    fn from(v: dev::EventView) -> Self {
        let is_open = v.is_open();
        let (adjudication_id, adjudication) = match v.adjudication {
            Some((id, a)) => (
                Some(hex_id(id)),
                Some(AdjudicationDecision {
                    relatedness: a.relatedness.map(Into::into),
                    action: a.action,
                    remedy: a.remedy,
                    status: a.status.into(),
                }),
            ),
            None => (None, None),
        };
        Self {
            adverse_event_id: hex_id(v.id),
            patient_id: hex_id(v.patient),
            event: v.event.into(),
            case: v.case.map(Into::into),
            adjudication_id,
            adjudication,
            replies: v
                .replies
                .into_iter()
                .map(|r| PatientReply {
                    verdict: r.verdict.into(),
                    comment: r.comment,
                    replied_at: r.replied_at,
                })
                .collect(),
            is_open,
        }
    }
}

/// A study code enrolled more than once at the clinic (offline on two tablets).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DuplicateStudyCode {
    pub study_code: String,
    pub patient_ids: Vec<String>,
}

impl From<dev::DuplicateStudyCode> for DuplicateStudyCode {
    fn from(d: dev::DuplicateStudyCode) -> Self {
        Self {
            study_code: d.study_code,
            patient_ids: d.patients.into_iter().map(hex_id).collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Conflicts

/// One device's value of a conflicted field.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ConflictValue {
    /// The value as JSON text (`"improved"`, `3`, `true`; objects summarised).
    pub value_json: String,
    /// The device that wrote it; `None` when the registry did.
    pub device_id: Option<String>,
    /// When it was written (unix seconds), when known.
    pub time: Option<i64>,
    /// Whether this is the value the record shows.
    pub winner: bool,
}

/// A field two devices set concurrently to different values; both are kept.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Conflict {
    /// Dotted path below the record's body, e.g. `answers.symptom_pain`.
    pub path: String,
    pub values: Vec<ConflictValue>,
}

impl From<m::Conflict> for Conflict {
    fn from(c: m::Conflict) -> Self {
        Self {
            path: c.path,
            values: c
                .values
                .into_iter()
                .map(|v| ConflictValue {
                    value_json: v.value.to_string(),
                    device_id: v.device.map(device_hex),
                    time: v.time,
                    winner: v.winner,
                })
                .collect(),
        }
    }
}
