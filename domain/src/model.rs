//! The registry's records. Every record is one Automerge document; typed views map onto it
//! through autosurgeon.
//!
//! ## Document layout (shared with the server, which reads the header to authorize)
//!
//! ```text
//! root
//! ├── "id"          Str   the record's RecordId (hex)          immutable
//! ├── "kind"        Str   RecordKind::code()                   immutable
//! ├── "clinic"      Str   the owning clinic's RecordId (hex)   immutable
//! ├── "patient"     Str   the enrolment's RecordId (hex); absent for a clinic record; an
//! │                       enrolment's own id for an enrolment   immutable
//! ├── "created_by"  Str   DeviceId (hex) of the creating device, or "registry"
//! └── "body"        Map   the kind's typed body (see the structs below)
//! ```
//!
//! Who wrote a response or an adverse event is in the body: `body.completed_by` is `"nurse"` or
//! `"patient"` for a response, `body.reporter` is `"clinic"` or `"patient"` for an adverse event.

use automerge::{Automerge, ReadDoc, ROOT};

use crate::error::{Error, Result};
use crate::ids::{DeviceId, RecordId, UserId};

/// What a record is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Clinic,
    Enrolment,
    Procedure,
    Response,
    AdverseEvent,
    Adjudication,
    /// A registry-authored definition version (questionnaire, schedule, policy): no patient.
    Definition,
    /// The registry's adjudication case of an adverse event (registry-authored; devices read it).
    AdjudicationCase,
    /// The patient's reply to the clinic's adjudication (accept or dispute).
    CaseReply,
}

impl RecordKind {
    pub const ALL: [RecordKind; 9] = [
        RecordKind::Clinic,
        RecordKind::Enrolment,
        RecordKind::Procedure,
        RecordKind::Response,
        RecordKind::AdverseEvent,
        RecordKind::Adjudication,
        RecordKind::Definition,
        RecordKind::AdjudicationCase,
        RecordKind::CaseReply,
    ];

    /// The code stored in documents and in the store's plaintext index.
    pub fn code(&self) -> &'static str {
        match self {
            RecordKind::Clinic => "clinic",
            RecordKind::Enrolment => "enrolment",
            RecordKind::Procedure => "procedure",
            RecordKind::Response => "response",
            RecordKind::AdverseEvent => "adverse_event",
            RecordKind::Adjudication => "adjudication",
            RecordKind::Definition => "definition",
            RecordKind::AdjudicationCase => "adjudication_case",
            RecordKind::CaseReply => "case_reply",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// Whether records of this kind belong to no patient (the clinic record, definitions).
    pub fn has_no_patient(&self) -> bool {
        matches!(self, RecordKind::Clinic | RecordKind::Definition)
    }
}

/// The immutable header every record document carries at its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocHeader {
    pub id: RecordId,
    pub kind: RecordKind,
    pub clinic: RecordId,
    pub patient: Option<RecordId>,
    /// `None` when the registry itself created the record.
    pub created_by: Option<DeviceId>,
}

fn root_str(doc: &Automerge, key: &str) -> Result<Option<String>> {
    match doc.get(ROOT, key)? {
        None => Ok(None),
        Some((automerge::Value::Scalar(s), _)) => match s.as_ref() {
            automerge::ScalarValue::Str(s) => Ok(Some(s.to_string())),
            _ => Err(Error::MalformedRecord {
                id: String::new(),
                reason: format!("root field {key:?} is not a string"),
            }),
        },
        Some(_) => Err(Error::MalformedRecord {
            id: String::new(),
            reason: format!("root field {key:?} is not a string"),
        }),
    }
}

/// Read the header of a record document. Errors if any header field is missing or malformed.
pub fn read_header(doc: &Automerge) -> Result<DocHeader> {
    let need = |key: &str| -> Result<String> {
        root_str(doc, key)?.ok_or_else(|| Error::MalformedRecord {
            id: String::new(),
            reason: format!("missing header field {key:?}"),
        })
    };
    let id: RecordId = need("id")?.parse()?;
    let malformed = |reason: String| Error::MalformedRecord {
        id: id.to_hex(),
        reason,
    };
    let kind_code = need("kind")?;
    let kind = RecordKind::from_code(&kind_code)
        .ok_or_else(|| malformed(format!("unknown kind {kind_code:?}")))?;
    let clinic: RecordId = need("clinic")?.parse()?;
    let patient = match root_str(doc, "patient")? {
        Some(p) => Some(p.parse::<RecordId>()?),
        None => None,
    };
    let created_by = match root_str(doc, "created_by")?.as_deref() {
        None | Some("registry") => None,
        Some(d) => Some(d.parse::<DeviceId>()?),
    };
    if !kind.has_no_patient() && patient.is_none() {
        return Err(malformed(format!(
            "a {} record must name its patient",
            kind.code()
        )));
    }
    Ok(DocHeader {
        id,
        kind,
        clinic,
        patient,
        created_by,
    })
}

// ---------------------------------------------------------------------------------------------
// Coded values
// ---------------------------------------------------------------------------------------------

/// Defines an enum stored in documents as its snake_case code string.
macro_rules! code_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $code:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $code)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The code stored in documents.
            pub fn code(&self) -> &'static str {
                match self { $($name::$variant => $code),+ }
            }

            /// The value for a code, if it is one.
            pub fn from_code(code: &str) -> Option<Self> {
                match code { $($code => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.code())
            }
        }

        impl autosurgeon::Reconcile for $name {
            type Key<'a> = autosurgeon::reconcile::NoKey;
            fn reconcile<R: autosurgeon::Reconciler>(&self, mut r: R) -> Result<(), R::Error> {
                r.str(self.code())
            }
        }

        impl autosurgeon::Hydrate for $name {
            fn hydrate_string(s: &str) -> Result<Self, autosurgeon::HydrateError> {
                Self::from_code(s).ok_or_else(|| {
                    autosurgeon::HydrateError::unexpected(
                        concat!("a ", stringify!($name), " code"),
                        s.to_string(),
                    )
                })
            }
        }
    };
}

code_enum!(
    /// A clinic's participation in the registry.
    Participation {
        Invited = "invited",
        Participating = "participating",
        Declined = "declined",
        NotResponding = "not_responding",
        Suspended = "suspended",
    }
);

code_enum!(
    /// Recorded sex.
    Sex { Female = "female", Male = "male", Intersex = "intersex", Unknown = "unknown" }
);

code_enum!(
    /// How the cells were administered.
    Route {
        Intravenous = "intravenous",
        Intrathecal = "intrathecal",
        IntraArticular = "intra_articular",
        Intramuscular = "intramuscular",
        DirectInjection = "direct_injection",
        Other = "other",
    }
);

code_enum!(
    /// The cell type administered.
    CellType {
        Mesenchymal = "mesenchymal",
        Haematopoietic = "haematopoietic",
        StromalVascularFraction = "stromal_vascular_fraction",
        Mononuclear = "mononuclear",
        InducedPluripotent = "induced_pluripotent",
        Other = "other",
        Unknown = "unknown",
    }
);

code_enum!(
    /// The tissue the cells came from.
    SourceTissue {
        BoneMarrow = "bone_marrow",
        Adipose = "adipose",
        UmbilicalCordBlood = "umbilical_cord_blood",
        UmbilicalCordTissue = "umbilical_cord_tissue",
        PeripheralBlood = "peripheral_blood",
        Other = "other",
        Unknown = "unknown",
    }
);

code_enum!(
    /// Whose cells.
    Origin { Autologous = "autologous", Allogeneic = "allogeneic", Unknown = "unknown" }
);

code_enum!(
    /// How much the cells were manipulated.
    Manipulation {
        Minimal = "minimal",
        MoreThanMinimal = "more_than_minimal",
        GeneticallyModified = "genetically_modified",
        Unknown = "unknown",
    }
);

code_enum!(
    /// The regulatory status of the procedure.
    RegulatoryStatus {
        ApprovedIndication = "approved_indication",
        InvestigationalNewDrug = "investigational_new_drug",
        RegisteredTrial = "registered_trial",
        Unregulated = "unregulated",
        Unknown = "unknown",
    }
);

code_enum!(
    /// Who completed a follow-up response.
    CompletedBy { Nurse = "nurse", Patient = "patient" }
);

code_enum!(
    /// Whether a response is still being filled, has been submitted, or was a draft the user
    /// discarded after the registry had received it (not a response: never counted).
    ResponseStatus { Draft = "draft", Submitted = "submitted", Discarded = "discarded" }
);

code_enum!(
    /// Who reported an adverse event.
    Reporter { Patient = "patient", Clinic = "clinic" }
);

code_enum!(
    /// Adverse-event category (the adverse-event instrument's `category` choices).
    AeCategory {
        Infection = "infection",
        ImmuneReaction = "immune_reaction",
        Tumour = "tumour",
        CellMigration = "cell_migration",
        Administration = "administration",
        Stroke = "stroke",
        Seizure = "seizure",
        Deterioration = "deterioration",
        Gvhd = "gvhd",
        FinancialHarm = "financial_harm",
        Other = "other",
    }
);

code_enum!(
    /// A seriousness criterion an adverse event meets (none: an empty list).
    Seriousness {
        Hospitalisation = "hospitalisation",
        LifeThreatening = "life_threatening",
        Disability = "disability",
        Death = "death",
    }
);

code_enum!(
    /// Where the registry's adjudication case stands (see `policy::case_state`).
    CaseState {
        Open = "open",
        Responded = "responded",
        Overdue = "overdue",
        Escalated = "escalated",
        Disputed = "disputed",
        Closed = "closed",
    }
);

code_enum!(
    /// The patient's answer to the clinic's adjudication.
    Verdict { Accepted = "accepted", Disputed = "disputed" }
);

code_enum!(
    /// Adverse-event outcome.
    AeOutcome {
        Recovered = "recovered",
        Recovering = "recovering",
        NotRecovered = "not_recovered",
        RecoveredWithSequelae = "recovered_with_sequelae",
        Fatal = "fatal",
        Unknown = "unknown",
    }
);

code_enum!(
    /// The treating clinic's judgement of whether the procedure caused the event.
    Relatedness {
        NotRelated = "not_related",
        Unlikely = "unlikely",
        Possible = "possible",
        Probable = "probable",
        Definite = "definite",
    }
);

code_enum!(
    /// Where an adjudication stands.
    AdjudicationStatus {
        Open = "open",
        Responded = "responded",
        Resolved = "resolved",
        Disputed = "disputed",
    }
);

// ---------------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------------

use autosurgeon::{Hydrate, Reconcile};

use crate::questionnaire::AnswerValue;

/// An accreditation a clinic holds.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, serde::Serialize, serde::Deserialize)]
pub struct Accreditation {
    /// Accrediting body, e.g. "FACT" or "registry".
    pub body: String,
    /// ISO date granted.
    pub since: String,
    /// ISO date it lapses, if any.
    pub until: Option<String>,
}

/// A clinic. Created by the registry.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, serde::Serialize, serde::Deserialize)]
pub struct Clinic {
    pub name: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
    pub accreditations: Vec<Accreditation>,
    pub participation: Participation,
}

/// A patient's consent to the registry.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, serde::Serialize, serde::Deserialize)]
pub struct Consent {
    pub form_version: String,
    /// ISO date signed.
    pub date: String,
    /// What was consented to, e.g. "registry", "contact", "research".
    pub scope: Vec<String>,
}

/// A pseudonymous patient enrolled by a clinic. Direct identifiers stay out of it.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, serde::Serialize, serde::Deserialize)]
pub struct Enrolment {
    /// The clinic's own short study code for the patient (not a name).
    pub study_code: String,
    pub consent: Consent,
    pub birth_year: i64,
    pub sex: Sex,
    /// ISO date enrolled.
    pub enrolled_on: String,
}

/// What a procedure cost the patient.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, serde::Serialize, serde::Deserialize)]
pub struct Cost {
    /// Amount in minor units (cents).
    pub amount_minor: i64,
    /// ISO 4217 currency code.
    pub currency: String,
}

/// A benefit the clinic promised and how it will be measured.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, serde::Serialize, serde::Deserialize)]
pub struct PromisedBenefit {
    pub benefit: String,
    pub measure: String,
}

/// A cell-therapy procedure performed on an enrolled patient.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, serde::Serialize, serde::Deserialize)]
pub struct Procedure {
    /// ISO date performed; follow-up visits are scheduled from it.
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

/// Answers keyed by questionnaire item id; each answer is a plain value in the document so that
/// concurrent answers to different items merge and concurrent answers to the same item conflict.
pub use crate::questionnaire::Answers;

/// A questionnaire response: a clinician follow-up, a patient outcome survey, a baseline record.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, serde::Serialize, serde::Deserialize)]
pub struct FollowupResponse {
    pub questionnaire: String,
    pub questionnaire_version: String,
    /// The procedure this follows up, if any.
    pub procedure: Option<String>,
    /// The schedule visit it answers (e.g. "m3"), if any.
    pub visit: Option<String>,
    pub answers: Answers,
    pub completed_by: CompletedBy,
    pub status: ResponseStatus,
    /// ISO date-time (UTC) of submission.
    pub submitted_at: Option<String>,
    /// One note per explicit amendment of the submitted response, oldest first. The server
    /// refuses a change to a submitted response's answers that does not add one; the previous
    /// values stay in the record's history.
    #[autosurgeon(missing = "Vec::new")]
    #[serde(default)]
    pub amendments: Vec<Amendment>,
}

/// Why, when and by which device a submitted record was amended.
#[derive(Debug, Clone, PartialEq, Eq, Reconcile, Hydrate, serde::Serialize, serde::Deserialize)]
pub struct Amendment {
    /// ISO date-time (UTC), the device's clock.
    pub at: String,
    /// The amending device (hex).
    pub device: String,
    pub reason: String,
}

/// An adverse event reported by a patient or a clinic.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, serde::Serialize, serde::Deserialize)]
pub struct AdverseEvent {
    pub reporter: Reporter,
    /// A category code from the adverse-event instrument (e.g. "infection", "gvhd").
    pub category: String,
    /// ISO onset date.
    pub onset: String,
    /// Severity grade 1–5, CTCAE-style.
    pub severity: i64,
    /// Seriousness criteria met: "hospitalisation", "life_threatening", "death", "disability".
    pub seriousness: Vec<String>,
    pub outcome: AeOutcome,
    pub description: String,
    /// The procedure suspected, if known.
    pub procedure: Option<String>,
    /// The full adverse-event questionnaire answers, when reported through it.
    pub answers: Answers,
}

/// The treating clinic's adjudication of an adverse event.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, serde::Serialize, serde::Deserialize)]
pub struct Adjudication {
    /// The adverse event's record id.
    pub adverse_event: String,
    pub relatedness: Option<Relatedness>,
    /// Action taken, e.g. "treatment given", "none".
    pub action: String,
    /// The remedy offered to the patient.
    pub remedy: String,
    pub status: AdjudicationStatus,
    /// Legacy: the deadline is the registry's ([`AdjudicationCase::deadline`]). New devices leave
    /// it empty; the server ignores it.
    pub deadline: String,
    /// ISO date-time (UTC) of the last decision.
    pub decided_at: Option<String>,
}

/// A registry staff escalation of a case.
#[derive(Debug, Clone, PartialEq, Eq, Reconcile, Hydrate, serde::Serialize, serde::Deserialize)]
pub struct Escalation {
    /// Server time (RFC 3339, UTC, milliseconds).
    pub at: String,
    /// The note the clinic reads.
    pub note: String,
}

/// A patient's reply as the registry recorded it in the case.
#[derive(Debug, Clone, PartialEq, Eq, Reconcile, Hydrate, serde::Serialize, serde::Deserialize)]
pub struct CaseReplyEntry {
    /// Server time the reply was accepted.
    pub at: String,
    pub verdict: Verdict,
    pub comment: String,
    /// The reply record's id.
    pub reply: String,
}

/// The registry's adjudication case of one adverse event: written by the server only, with the
/// registry's actor (see `docs/integrity.md`). Times are the server's.
#[derive(Debug, Clone, PartialEq, Eq, Reconcile, Hydrate, serde::Serialize, serde::Deserialize)]
pub struct AdjudicationCase {
    /// The adverse event's record id.
    pub adverse_event: String,
    /// The policy that set the deadline, `id@version`.
    pub policy: String,
    /// The policy rule that applied ("serious", "default"...).
    pub rule: String,
    /// When the server first accepted the event: the clock starts here.
    pub opened_at: String,
    /// Days the clinic has.
    pub days: i64,
    /// ISO date: `opened_at`'s date + `days`.
    pub deadline: String,
    /// The state at the server's clock when last written.
    pub state: CaseState,
    /// The clinic's adjudication record, once it decided.
    pub adjudication: Option<String>,
    /// When the server accepted the clinic's latest decision.
    pub responded_at: Option<String>,
    pub escalations: Vec<Escalation>,
    pub replies: Vec<CaseReplyEntry>,
    pub closed_at: Option<String>,
    pub closed_note: Option<String>,
}

/// The patient's reply to the clinic's adjudication of one of the patient's adverse events.
/// Written once by the patient's device; a later reply is a new record.
#[derive(Debug, Clone, PartialEq, Eq, Reconcile, Hydrate, serde::Serialize, serde::Deserialize)]
pub struct CaseReply {
    /// The adverse event's record id.
    pub adverse_event: String,
    pub verdict: Verdict,
    pub comment: String,
    /// ISO date-time (UTC), the device's clock.
    pub replied_at: String,
}

impl Reconcile for AnswerValue {
    type Key<'a> = autosurgeon::reconcile::NoKey;
    fn reconcile<R: autosurgeon::Reconciler>(&self, mut r: R) -> Result<(), R::Error> {
        match self {
            AnswerValue::Bool(b) => r.boolean(*b),
            AnswerValue::Int(i) => r.i64(*i),
            AnswerValue::Decimal(d) => r.f64(*d),
            AnswerValue::Text(s) => r.str(s),
            AnswerValue::Choices(c) => c.reconcile(r),
        }
    }
}

impl Hydrate for AnswerValue {
    fn hydrate_bool(b: bool) -> Result<Self, autosurgeon::HydrateError> {
        Ok(AnswerValue::Bool(b))
    }
    fn hydrate_int(i: i64) -> Result<Self, autosurgeon::HydrateError> {
        Ok(AnswerValue::Int(i))
    }
    fn hydrate_uint(u: u64) -> Result<Self, autosurgeon::HydrateError> {
        i64::try_from(u)
            .map(AnswerValue::Int)
            .map_err(|_| autosurgeon::HydrateError::unexpected("an integer answer", u.to_string()))
    }
    fn hydrate_f64(f: f64) -> Result<Self, autosurgeon::HydrateError> {
        Ok(AnswerValue::Decimal(f))
    }
    fn hydrate_string(s: &str) -> Result<Self, autosurgeon::HydrateError> {
        Ok(AnswerValue::Text(s.to_string()))
    }
    fn hydrate_seq<D: autosurgeon::ReadDoc>(
        doc: &D,
        obj: &automerge::ObjId,
    ) -> Result<Self, autosurgeon::HydrateError> {
        Ok(AnswerValue::Choices(Vec::<String>::hydrate_seq(doc, obj)?))
    }
}

/// A typed record body, tied to its kind.
pub trait RecordBody: Reconcile + Hydrate + Clone + std::fmt::Debug + serde::Serialize {
    const KIND: RecordKind;
}

impl RecordBody for Clinic {
    const KIND: RecordKind = RecordKind::Clinic;
}
impl RecordBody for Enrolment {
    const KIND: RecordKind = RecordKind::Enrolment;
}
impl RecordBody for Procedure {
    const KIND: RecordKind = RecordKind::Procedure;
}
impl RecordBody for FollowupResponse {
    const KIND: RecordKind = RecordKind::Response;
}
impl RecordBody for AdverseEvent {
    const KIND: RecordKind = RecordKind::AdverseEvent;
}
impl RecordBody for Adjudication {
    const KIND: RecordKind = RecordKind::Adjudication;
}
impl RecordBody for AdjudicationCase {
    const KIND: RecordKind = RecordKind::AdjudicationCase;
}
impl RecordBody for CaseReply {
    const KIND: RecordKind = RecordKind::CaseReply;
}

// ---------------------------------------------------------------------------------------------
// Creating, reading and updating records
// ---------------------------------------------------------------------------------------------

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ChangeHash, ObjType};

/// Who is writing: the device (its actor id), the user signed in on it, and the time of the
/// write.
#[derive(Debug, Clone, Copy)]
pub struct Author {
    /// `None` for the registry itself.
    pub device: Option<DeviceId>,
    /// Unix seconds, recorded in the change (advisory, for attribution).
    pub time: i64,
    /// The clinic user signed in on a shared tablet, written into the change's message
    /// ([`attribution_message`]); `None` on a device without users (a patient's phone).
    pub user: Option<UserId>,
}

impl Author {
    /// The device writing now.
    pub fn device_now(device: DeviceId) -> Self {
        Author {
            device: Some(device),
            time: chrono::Utc::now().timestamp(),
            user: None,
        }
    }

    /// The same author, acting for `user` (a clinic user signed in on the device).
    pub fn with_user(self, user: Option<UserId>) -> Self {
        Author { user, ..self }
    }

    fn commit_options(&self) -> CommitOptions {
        let options = CommitOptions::default().with_time(self.time);
        match self.user {
            Some(u) => options.with_message(attribution_message(u)),
            None => options,
        }
    }

    fn actor(&self) -> automerge::ActorId {
        match self.device {
            Some(d) => d.actor(),
            // The registry's actor: a fixed id so that its changes are recognisable.
            None => automerge::ActorId::from(&REGISTRY_ACTOR[..]),
        }
    }
}

pub use crate::protocol::REGISTRY_ACTOR;

/// The prefix of a change message naming the user who made the change.
pub const USER_MESSAGE_PREFIX: &str = "u:";

/// The change message attributing a change to `user`: `u:` and the user's 32 hex digits.
pub fn attribution_message(user: UserId) -> String {
    format!("{USER_MESSAGE_PREFIX}{}", user.to_hex())
}

/// What a change's message says about who made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeUser {
    /// No message: the change is attributed to its device only.
    None,
    /// `u:<user id>`.
    User(UserId),
    /// A message that is not an attribution (no Followup code writes one).
    Malformed,
}

/// Read the user a change is attributed to from its message ([`attribution_message`]).
pub fn change_user(message: Option<&str>) -> ChangeUser {
    match message {
        None | Some("") => ChangeUser::None,
        Some(m) => match m
            .strip_prefix(USER_MESSAGE_PREFIX)
            .and_then(|hex| hex.parse::<UserId>().ok())
        {
            Some(u) => ChangeUser::User(u),
            None => ChangeUser::Malformed,
        },
    }
}

/// Who created a record: the device and the clinic user (if any) of the change that wrote its
/// header. `(None, None)` for a record the registry created.
pub fn creator(doc: &Automerge) -> (Option<DeviceId>, Option<UserId>) {
    let Ok(Some((_, id))) = doc.get(ROOT, "id") else {
        return (None, None);
    };
    let automerge::ObjId::Id(_, actor, _) = &id else {
        return (None, None);
    };
    let device = DeviceId::from_actor(actor).filter(|d| d.0 != REGISTRY_ACTOR);
    // The change's metadata only (its message), not the whole change rebuilt from its ops.
    let change = doc
        .hash_for_opid(&id)
        .and_then(|h| doc.get_change_meta_by_hash(&h));
    let user = match change_user(change.as_ref().and_then(|c| c.message.as_deref())) {
        ChangeUser::User(u) => Some(u),
        ChangeUser::None | ChangeUser::Malformed => None,
    };
    (device, user)
}

/// Create a record document with its header and body in one change.
pub fn new_record<T: RecordBody>(
    author: Author,
    id: RecordId,
    clinic: RecordId,
    patient: Option<RecordId>,
    body: &T,
) -> Result<Automerge> {
    if !T::KIND.has_no_patient() && patient.is_none() {
        return Err(Error::MalformedRecord {
            id: id.to_hex(),
            reason: format!("a {} record must name its patient", T::KIND.code()),
        });
    }
    let mut doc = Automerge::new().with_actor(author.actor());
    let mut tx = doc.transaction();
    tx.put(ROOT, "id", id.to_hex())?;
    tx.put(ROOT, "kind", T::KIND.code())?;
    tx.put(ROOT, "clinic", clinic.to_hex())?;
    if let Some(p) = patient {
        tx.put(ROOT, "patient", p.to_hex())?;
    }
    match author.device {
        Some(d) => tx.put(ROOT, "created_by", d.to_hex())?,
        None => tx.put(ROOT, "created_by", "registry")?,
    }
    tx.put_object(ROOT, "body", ObjType::Map)?;
    autosurgeon::reconcile_prop(&mut tx, ROOT, "body", body)?;
    tx.commit_with(author.commit_options());
    Ok(doc)
}

/// Read a record's typed body; errors if the document is of another kind.
pub fn read_body<T: RecordBody>(doc: &Automerge) -> Result<T> {
    let header = read_header(doc)?;
    if header.kind != T::KIND {
        return Err(Error::MalformedRecord {
            id: header.id.to_hex(),
            reason: format!(
                "expected a {} record, found a {}",
                T::KIND.code(),
                header.kind.code()
            ),
        });
    }
    Ok(autosurgeon::hydrate_prop(doc, ROOT, "body")?)
}

/// Read a record's typed body without reading its header first: for a caller that holds the
/// header already (read from the same document) and chose `T` by its kind, as the server's
/// read-model projection does (a header read is a sixth of a body read).
pub fn read_body_as<T: RecordBody>(doc: &Automerge) -> Result<T> {
    Ok(autosurgeon::hydrate_prop(doc, ROOT, "body")?)
}

/// Update a record's body in one change: `edit` gets the current body (the merged state, each
/// conflict showing Automerge's winner) and changes it. Only the fields whose value the edit
/// changed are written (compared field by field, into nested maps such as the answers), so a
/// concurrent edit of another field on another device merges cleanly, and a conflict on a field
/// the edit did not touch stays visible with all its values. Returns the new change's hash, or
/// `None` if nothing changed.
///
/// (autosurgeon's `reconcile` rewrites every scalar; Automerge skips a rewrite of an identical
/// value, but a rewrite of a *conflicted* field silently resolves the conflict in favour of the
/// winner. Hence this field-level diff. See docs/decisions.md.)
///
/// The edit may fail with the caller's own error type `E`; this function's own failures are
/// converted into it.
pub fn update_body<T: RecordBody, E: From<Error>>(
    doc: &mut Automerge,
    author: Author,
    edit: impl FnOnce(&mut T) -> Result<(), E>,
) -> Result<Option<ChangeHash>, E> {
    let before: T = read_body(doc)?;
    let mut after = before.clone();
    edit(&mut after)?;
    Ok(write_body_diff(doc, author, &before, &after)?)
}

fn write_body_diff<T: RecordBody>(
    doc: &mut Automerge,
    author: Author,
    before: &T,
    after: &T,
) -> Result<Option<ChangeHash>> {
    let to_json = |b: &T| {
        serde_json::to_value(b).map_err(|e| Error::MalformedRecord {
            id: String::new(),
            reason: format!("cannot encode the record: {e}"),
        })
    };
    let (before, after) = (to_json(before)?, to_json(after)?);
    if before == after {
        return Ok(None);
    }
    let Some((automerge::Value::Object(ObjType::Map), body)) = doc.get(ROOT, "body")? else {
        return Err(Error::MalformedRecord {
            id: String::new(),
            reason: "the record has no body".into(),
        });
    };
    doc.set_actor(author.actor());
    let mut tx = doc.transaction();
    write_diff(&mut tx, &body, &before, &after)?;
    if tx.pending_ops() == 0 {
        tx.rollback();
        return Ok(None);
    }
    let (hash, _) = tx.commit_with(author.commit_options());
    Ok(hash)
}

/// Overwrite one answer of a response, whatever its state: this is how a user resolves a
/// conflict (choosing one of the values, even the one currently shown, or a new one). Returns
/// the change's hash.
pub fn resolve_answer(
    doc: &mut Automerge,
    author: Author,
    item: &str,
    value: &AnswerValue,
) -> Result<Option<ChangeHash>> {
    let header = read_header(doc)?;
    let answers = match doc.get(ROOT, "body")? {
        Some((automerge::Value::Object(ObjType::Map), body)) => match doc.get(&body, "answers")? {
            Some((automerge::Value::Object(ObjType::Map), answers)) => answers,
            _ => {
                return Err(Error::MalformedRecord {
                    id: header.id.to_hex(),
                    reason: "the record has no answers".into(),
                })
            }
        },
        _ => {
            return Err(Error::MalformedRecord {
                id: header.id.to_hex(),
                reason: "the record has no body".into(),
            })
        }
    };
    doc.set_actor(author.actor());
    let mut tx = doc.transaction();
    autosurgeon::reconcile_prop(&mut tx, &answers, item, value)?;
    let (hash, _) = tx.commit_with(author.commit_options());
    Ok(hash)
}

/// Write into map `obj` what differs between `before` and `after` (JSON forms of a typed body
/// whose field names and encodings match autosurgeon's). Equal fields are not touched.
fn write_diff(
    tx: &mut automerge::transaction::Transaction<'_>,
    obj: &automerge::ObjId,
    before: &serde_json::Value,
    after: &serde_json::Value,
) -> Result<()> {
    use serde_json::Value as J;
    let (J::Object(b), J::Object(a)) = (before, after) else {
        return Err(Error::MalformedRecord {
            id: String::new(),
            reason: "a record body must be a map".into(),
        });
    };
    for (key, new) in a {
        let old = b.get(key);
        if old == Some(new) {
            continue;
        }
        match (old, new) {
            // A list that only grew at its end (an amendment note appended): insert the new
            // items into the existing list, so that appends made on two devices both survive.
            (Some(J::Array(before)), J::Array(after))
                if after.len() > before.len() && after[..before.len()] == before[..] =>
            {
                if let Some((automerge::Value::Object(ObjType::List), list)) =
                    tx.get(obj, key.as_str())?
                {
                    let start = tx.length(&list);
                    for (at, item) in (start..).zip(&after[before.len()..]) {
                        insert_json(tx, &list, at, item)?;
                    }
                    continue;
                }
                put_json(tx, obj, key, new)?;
            }
            (Some(old @ J::Object(_)), J::Object(_)) => {
                if let Some((automerge::Value::Object(ObjType::Map), child)) =
                    tx.get(obj, key.as_str())?
                {
                    write_diff(tx, &child, old, new)?;
                    continue;
                }
                put_json(tx, obj, key, new)?;
            }
            _ => put_json(tx, obj, key, new)?,
        }
    }
    for key in b.keys() {
        if !a.contains_key(key) {
            tx.delete(obj, key.as_str())?;
        }
    }
    Ok(())
}

fn json_scalar(v: &serde_json::Value) -> Option<automerge::ScalarValue> {
    use automerge::ScalarValue as S;
    use serde_json::Value as J;
    Some(match v {
        J::Null => S::Null,
        J::Bool(b) => S::Boolean(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) if !n.is_f64() => S::Int(i),
            (None, Some(u), _) if !n.is_f64() => S::Uint(u),
            (_, _, Some(f)) => S::F64(f),
            _ => S::Null,
        },
        J::String(s) => S::Str(s.as_str().into()),
        J::Array(_) | J::Object(_) => return None,
    })
}

fn put_json(
    tx: &mut automerge::transaction::Transaction<'_>,
    obj: &automerge::ObjId,
    key: &str,
    value: &serde_json::Value,
) -> Result<()> {
    use serde_json::Value as J;
    match value {
        J::Array(items) => {
            let list = tx.put_object(obj, key, ObjType::List)?;
            for (i, item) in items.iter().enumerate() {
                insert_json(tx, &list, i, item)?;
            }
        }
        J::Object(map) => {
            let child = tx.put_object(obj, key, ObjType::Map)?;
            for (k, v) in map {
                put_json(tx, &child, k, v)?;
            }
        }
        scalar => {
            if let Some(s) = json_scalar(scalar) {
                tx.put(obj, key, s)?;
            }
        }
    }
    Ok(())
}

fn insert_json(
    tx: &mut automerge::transaction::Transaction<'_>,
    list: &automerge::ObjId,
    index: usize,
    value: &serde_json::Value,
) -> Result<()> {
    use serde_json::Value as J;
    match value {
        J::Array(items) => {
            let inner = tx.insert_object(list, index, ObjType::List)?;
            for (i, item) in items.iter().enumerate() {
                insert_json(tx, &inner, i, item)?;
            }
        }
        J::Object(map) => {
            let child = tx.insert_object(list, index, ObjType::Map)?;
            for (k, v) in map {
                put_json(tx, &child, k, v)?;
            }
        }
        scalar => {
            if let Some(s) = json_scalar(scalar) {
                tx.insert(list, index, s)?;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Conflicts
// ---------------------------------------------------------------------------------------------

/// One of the concurrent values of a conflicted field.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConflictValue {
    /// The value, as JSON (objects summarised as `{…}`/`[…]`).
    pub value: serde_json::Value,
    /// The device that wrote it; `None` when the registry did.
    pub device: Option<DeviceId>,
    /// The clinic user the writing change is attributed to (`u:<id>` message), when any.
    pub user: Option<UserId>,
    /// When the writing change was made (unix seconds), when known.
    pub time: Option<i64>,
    /// Whether this is the value Automerge shows (the deterministic winner).
    pub winner: bool,
}

/// A field that two devices set concurrently to different values. Both values are kept in the
/// document; the record shows the winner, and this lists them all.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Conflict {
    /// Dotted path of the field below the body, e.g. `answers.q03`.
    pub path: String,
    pub values: Vec<ConflictValue>,
}

fn scalar_json(s: &automerge::ScalarValue) -> serde_json::Value {
    use automerge::ScalarValue as S;
    match s {
        S::Str(s) => serde_json::Value::String(s.to_string()),
        S::Int(i) => (*i).into(),
        S::Uint(u) => (*u).into(),
        S::F64(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        S::Boolean(b) => (*b).into(),
        S::Timestamp(t) => (*t).into(),
        S::Counter(c) => i64::from(c).into(),
        S::Null => serde_json::Value::Null,
        S::Bytes(b) => serde_json::Value::String(hex::encode(b)),
        S::Unknown { .. } => serde_json::Value::Null,
    }
}

fn value_json(
    doc: &Automerge,
    value: &automerge::Value<'_>,
    id: &automerge::ObjId,
) -> serde_json::Value {
    match value {
        automerge::Value::Scalar(s) => scalar_json(s),
        automerge::Value::Object(ObjType::List) => {
            // Lists of scalars (multiple-choice answers) are shown whole.
            let items = doc
                .list_range(id, ..)
                .map(|item| match item.value {
                    automerge::ValueRef::Scalar(s) => scalar_json(&s.into()),
                    _ => serde_json::Value::String("{…}".into()),
                })
                .collect();
            serde_json::Value::Array(items)
        }
        automerge::Value::Object(_) => serde_json::Value::String("{…}".into()),
    }
}

/// Every conflicted field of a record's body, with each value and the device that wrote it.
pub fn conflicts(doc: &Automerge) -> Result<Vec<Conflict>> {
    let mut out = Vec::new();
    if let Some((automerge::Value::Object(ObjType::Map), body)) = doc.get(ROOT, "body")? {
        collect_conflicts(doc, &body, String::new(), &mut out)?;
    }
    Ok(out)
}

fn collect_conflicts(
    doc: &Automerge,
    obj: &automerge::ObjId,
    prefix: String,
    out: &mut Vec<Conflict>,
) -> Result<()> {
    let keys: Vec<String> = doc.keys(obj).collect();
    for key in keys {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let all = doc.get_all(obj, key.as_str())?;
        if all.len() > 1 {
            let winner = doc.get(obj, key.as_str())?.map(|(_, id)| id);
            let values = all
                .iter()
                .map(|(v, id)| {
                    let (device, user, time) = match id {
                        automerge::ObjId::Id(_, actor, _) => {
                            // The change's metadata only: building the whole change (every
                            // op) to read its message costs far more.
                            let change = doc
                                .hash_for_opid(id)
                                .and_then(|h| doc.get_change_meta_by_hash(&h));
                            let user = match change_user(
                                change.as_ref().and_then(|c| c.message.as_deref()),
                            ) {
                                ChangeUser::User(u) => Some(u),
                                ChangeUser::None | ChangeUser::Malformed => None,
                            };
                            (
                                DeviceId::from_actor(actor).filter(|d| d.0 != REGISTRY_ACTOR),
                                user,
                                change.as_ref().map(|c| c.timestamp),
                            )
                        }
                        automerge::ObjId::Root => (None, None, None),
                    };
                    ConflictValue {
                        value: value_json(doc, v, id),
                        device,
                        user,
                        time,
                        winner: winner.as_ref() == Some(id),
                    }
                })
                .collect();
            out.push(Conflict {
                path: path.clone(),
                values,
            });
        }
        if let Some((automerge::Value::Object(ObjType::Map), child)) = doc.get(obj, key.as_str())? {
            collect_conflicts(doc, &child, path, out)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// History
// ---------------------------------------------------------------------------------------------

/// One field changed by one change of a record after its creation: what it was, what it
/// became, which device wrote it and when. Nothing in a record's history is ever lost: an
/// amendment of a submitted response keeps its previous values here.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldChange {
    /// Dotted path below the body, e.g. `answers.q03` or `severity`.
    pub path: String,
    /// The value before the change (`None`: the field did not exist).
    pub previous: Option<serde_json::Value>,
    /// The value after it (`None`: the field was removed).
    pub value: Option<serde_json::Value>,
    /// The writing device; `None` for the registry.
    pub device: Option<DeviceId>,
    /// The change's time (unix seconds; the writer's clock).
    pub time: i64,
}

/// Every field change of a record after the change that created it, oldest first.
pub fn history(doc: &Automerge) -> Result<Vec<FieldChange>> {
    let mut out = Vec::new();
    for change in doc.get_changes(&[]) {
        let before: Vec<ChangeHash> = change.deps().to_vec();
        if before.is_empty() {
            continue;
        }
        let after = [change.hash()];
        let device = DeviceId::from_actor(change.actor_id()).filter(|d| d.0 != REGISTRY_ACTOR);
        for patch in doc.diff(&before, &after) {
            let (key, value) = match &patch.action {
                automerge::PatchAction::PutMap { key, value, .. } => {
                    (key.clone(), Some(value_json(doc, &value.0, &value.1)))
                }
                automerge::PatchAction::DeleteMap { key } => (key.clone(), None),
                _ => continue,
            };
            let mut parts: Vec<String> = patch
                .path
                .iter()
                .map(|(_, prop)| match prop {
                    automerge::Prop::Map(k) => k.clone(),
                    automerge::Prop::Seq(i) => i.to_string(),
                })
                .collect();
            parts.push(key.clone());
            if parts.first().map(String::as_str) != Some("body") || parts.len() < 2 {
                continue;
            }
            let previous = doc
                .get_at(&patch.obj, key.as_str(), &before)?
                .map(|(v, id)| value_json(doc, &v, &id));
            if previous == value {
                continue;
            }
            out.push(FieldChange {
                path: parts[1..].join("."),
                previous,
                value,
                device,
                time: change.timestamp(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_named_in_the_message_of_each_change_they_make() {
        let device = DeviceId::random();
        let user = crate::ids::UserId::random();
        let author = Author::device_now(device).with_user(Some(user));
        let mut doc = new_record(
            author,
            RecordId::random(),
            RecordId::random(),
            Some(RecordId::random()),
            &response(),
        )
        .unwrap();
        update_body::<FollowupResponse, Error>(&mut doc, author, |r| {
            r.answers.insert("q01".into(), AnswerValue::Int(3));
            Ok(())
        })
        .unwrap();
        let changes = doc.get_changes(&[]);
        assert_eq!(changes.len(), 2);
        for c in &changes {
            assert_eq!(change_user(c.message()), ChangeUser::User(user));
            assert_eq!(DeviceId::from_actor(c.actor_id()), Some(device));
        }
        // Without a user (a patient's phone), no message at all.
        let plain = new_record(
            Author::device_now(device),
            RecordId::random(),
            RecordId::random(),
            Some(RecordId::random()),
            &response(),
        )
        .unwrap();
        assert_eq!(plain.get_changes(&[])[0].message(), None);
        assert_eq!(change_user(None), ChangeUser::None);
        assert_eq!(change_user(Some("hello")), ChangeUser::Malformed);
        assert_eq!(change_user(Some("u:zz")), ChangeUser::Malformed);
    }

    fn response() -> FollowupResponse {
        FollowupResponse {
            questionnaire: "clinician-followup".into(),
            questionnaire_version: "1.0.0".into(),
            procedure: None,
            visit: Some("m3".into()),
            answers: Answers::new(),
            completed_by: CompletedBy::Nurse,
            status: ResponseStatus::Draft,
            submitted_at: None,
            amendments: Vec::new(),
        }
    }

    fn setup() -> (Automerge, DeviceId, DeviceId, RecordId) {
        let tablet_a = DeviceId::random();
        let tablet_b = DeviceId::random();
        let id = RecordId::random();
        let doc = new_record(
            Author::device_now(tablet_a),
            id,
            RecordId::random(),
            Some(RecordId::random()),
            &response(),
        )
        .unwrap();
        (doc, tablet_a, tablet_b, id)
    }

    #[test]
    fn header_and_body_round_trip() {
        let (doc, a, _, id) = setup();
        let h = read_header(&doc).unwrap();
        assert_eq!(h.id, id);
        assert_eq!(h.kind, RecordKind::Response);
        assert_eq!(h.created_by, Some(a));
        let body: FollowupResponse = read_body(&doc).unwrap();
        assert_eq!(body, response());
        // Reading as the wrong kind is refused.
        assert!(matches!(
            read_body::<Procedure>(&doc),
            Err(Error::MalformedRecord { .. })
        ));
        // Saving and loading keeps everything.
        let loaded = Automerge::load(&doc.save()).unwrap();
        assert_eq!(read_body::<FollowupResponse>(&loaded).unwrap(), response());
    }

    #[test]
    fn non_clinic_record_needs_a_patient() {
        let r = new_record(
            Author::device_now(DeviceId::random()),
            RecordId::random(),
            RecordId::random(),
            None,
            &response(),
        );
        assert!(matches!(r, Err(Error::MalformedRecord { .. })));
    }

    #[test]
    fn unchanged_update_makes_no_change() {
        let (mut doc, a, _, _) = setup();
        let heads = doc.get_heads();
        let h = update_body::<FollowupResponse, Error>(&mut doc, Author::device_now(a), |_| Ok(()))
            .unwrap();
        assert!(h.is_none());
        assert_eq!(doc.get_heads(), heads);
    }

    #[test]
    fn concurrent_edits_keep_both_sides_and_show_conflicts() {
        let (mut doc_a, a, b, _) = setup();
        let mut doc_b = doc_a.fork();
        // Tablet A answers q01 and q03; tablet B answers q02 and a different q03, offline.
        update_body::<FollowupResponse, Error>(
            &mut doc_a,
            Author {
                device: Some(a),
                time: 100,
                user: None,
            },
            |r| {
                r.answers.insert("q01".into(), AnswerValue::Int(4));
                r.answers
                    .insert("q03".into(), AnswerValue::Text("mild".into()));
                Ok(())
            },
        )
        .unwrap();
        update_body::<FollowupResponse, Error>(
            &mut doc_b,
            Author {
                device: Some(b),
                time: 200,
                user: None,
            },
            |r| {
                r.answers.insert("q02".into(), AnswerValue::Bool(true));
                r.answers
                    .insert("q03".into(), AnswerValue::Text("severe".into()));
                r.answers.insert(
                    "q04".into(),
                    AnswerValue::Choices(vec!["a".into(), "b".into()]),
                );
                Ok(())
            },
        )
        .unwrap();
        doc_a.merge(&mut doc_b.clone()).unwrap();
        doc_b.merge(&mut doc_a.clone()).unwrap();
        assert_eq!(doc_a.get_heads().len(), 2);
        let merged_a: FollowupResponse = read_body(&doc_a).unwrap();
        let merged_b: FollowupResponse = read_body(&doc_b).unwrap();
        assert_eq!(merged_a, merged_b, "replicas converge");
        assert_eq!(merged_a.answers.get("q01"), Some(&AnswerValue::Int(4)));
        assert_eq!(merged_a.answers.get("q02"), Some(&AnswerValue::Bool(true)));
        assert_eq!(
            merged_a.answers.get("q04"),
            Some(&AnswerValue::Choices(vec!["a".into(), "b".into()]))
        );

        let conflicts = conflicts(&doc_a).unwrap();
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        let c = &conflicts[0];
        assert_eq!(c.path, "answers.q03");
        assert_eq!(c.values.len(), 2);
        let by_device = |d: DeviceId| c.values.iter().find(|v| v.device == Some(d)).unwrap();
        assert_eq!(by_device(a).value, serde_json::json!("mild"));
        assert_eq!(by_device(a).time, Some(100));
        assert_eq!(by_device(b).value, serde_json::json!("severe"));
        assert_eq!(c.values.iter().filter(|v| v.winner).count(), 1);
        let winner = c.values.iter().find(|v| v.winner).unwrap();
        assert_eq!(
            merged_a.answers.get("q03"),
            Some(&AnswerValue::Text(winner.value.as_str().unwrap().into()))
        );

        // Resolving the conflict (writing one value) clears it everywhere.
        update_body::<FollowupResponse, Error>(
            &mut doc_a,
            Author {
                device: Some(a),
                time: 300,
                user: None,
            },
            |r| {
                r.answers
                    .insert("q03".into(), AnswerValue::Text("moderate".into()));
                Ok(())
            },
        )
        .unwrap();
        assert!(conflicts_after_write(&doc_a));
    }

    #[test]
    fn editing_another_answer_keeps_a_conflict_visible_until_resolved() {
        let (mut doc_a, a, b, _) = setup();
        let mut doc_b = doc_a.fork();
        let set = |doc: &mut Automerge, dev, key: &str, v: &str| {
            update_body::<FollowupResponse, Error>(
                doc,
                Author {
                    device: Some(dev),
                    time: 1,
                    user: None,
                },
                |r| {
                    r.answers.insert(key.into(), AnswerValue::Text(v.into()));
                    Ok(())
                },
            )
            .unwrap()
        };
        set(&mut doc_a, a, "q03", "mild");
        set(&mut doc_b, b, "q03", "severe");
        doc_a.merge(&mut doc_b).unwrap();
        assert_eq!(conflicts(&doc_a).unwrap().len(), 1);
        // Another answer edited on the merged copy: the conflict on q03 must survive.
        assert!(set(&mut doc_a, a, "q07", "fine").is_some());
        let c = conflicts(&doc_a).unwrap();
        assert_eq!(
            c.len(),
            1,
            "an unrelated edit must not resolve the conflict"
        );
        assert_eq!(c[0].values.len(), 2);
        // Choosing the value that is already shown is an explicit resolution.
        let shown: FollowupResponse = read_body(&doc_a).unwrap();
        let winner = shown.answers["q03"].clone();
        resolve_answer(
            &mut doc_a,
            Author {
                device: Some(a),
                time: 2,
                user: None,
            },
            "q03",
            &winner,
        )
        .unwrap();
        assert!(conflicts(&doc_a).unwrap().is_empty());
        let after: FollowupResponse = read_body(&doc_a).unwrap();
        assert_eq!(after.answers["q03"], winner);
        assert_eq!(after.answers["q07"], AnswerValue::Text("fine".into()));
    }

    fn conflicts_after_write(doc: &Automerge) -> bool {
        conflicts(doc).unwrap().is_empty()
    }

    #[test]
    fn codes_round_trip() {
        for r in Route::ALL {
            assert_eq!(Route::from_code(r.code()), Some(*r));
        }
        for k in RecordKind::ALL {
            assert_eq!(RecordKind::from_code(k.code()), Some(k));
        }
        assert_eq!(Route::from_code("sideways"), None);
    }
}

#[cfg(test)]
mod merge_properties {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// One edit: replica `replica` sets item `q0{item}` to `value`, or clears it when `None`.
    #[derive(Debug, Clone)]
    struct Edit {
        replica: usize,
        item: u8,
        value: Option<i64>,
    }

    fn edits() -> impl Strategy<Value = Vec<Edit>> {
        prop::collection::vec(
            (0usize..3, 0u8..5, prop::option::weighted(0.85, 0i64..4)).prop_map(
                |(replica, item, value)| Edit {
                    replica,
                    item,
                    value,
                },
            ),
            1..30,
        )
    }

    fn empty_response() -> FollowupResponse {
        FollowupResponse {
            questionnaire: "bench-50".into(),
            questionnaire_version: "1".into(),
            procedure: None,
            visit: None,
            answers: Answers::new(),
            completed_by: CompletedBy::Nurse,
            status: ResponseStatus::Draft,
            submitted_at: None,
            amendments: Vec::new(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Whatever the edits and whatever the order replicas merge in: all replicas end with the
        /// same document, and for every item the values it holds (the visible answer plus any
        /// conflicting ones) are exactly the writes nobody overwrote with knowledge of them. A
        /// value is lost only when a device that had seen it replaced or cleared it.
        #[test]
        fn concurrent_answer_edits_converge_and_lose_nothing(
            edits in edits(),
            merges in prop::collection::vec(prop::option::of((0usize..3, 0usize..3)), 0..30),
        ) {
            let devices: Vec<DeviceId> = (0..3).map(|_| DeviceId::random()).collect();
            let base = new_record(
                Author { device: Some(devices[0]), time: 1, user: None },
                RecordId::random(),
                RecordId::random(),
                Some(RecordId::random()),
                &empty_response(),
            ).unwrap();
            let mut replicas: Vec<Automerge> = (0..3).map(|_| base.clone()).collect();
            // The causal model: every effective write is an event; a replica knows the events it
            // made or merged; a write supersedes every event on the same item it knows.
            let mut events: Vec<(String, Option<i64>)> = Vec::new();
            let mut superseded: BTreeSet<usize> = BTreeSet::new();
            let mut seen: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); 3];
            for (step, e) in edits.iter().enumerate() {
                let key = format!("q0{}", e.item);
                let changed = update_body::<FollowupResponse, Error>(
                    &mut replicas[e.replica],
                    Author { device: Some(devices[e.replica]), time: step as i64, user: None },
                    |r| {
                        match e.value {
                            Some(v) => { r.answers.insert(key.clone(), AnswerValue::Int(v)); }
                            None => { r.answers.remove(&key); }
                        }
                        Ok(())
                    },
                ).unwrap();
                if changed.is_some() {
                    for &j in &seen[e.replica] {
                        if events[j].0 == key {
                            superseded.insert(j);
                        }
                    }
                    seen[e.replica].insert(events.len());
                    events.push((key, e.value));
                }
                if let Some(Some((a, b))) = merges.get(step) {
                    if a != b {
                        let mut other = replicas[*b].clone();
                        replicas[*a].merge(&mut other).unwrap();
                        let theirs = seen[*b].clone();
                        seen[*a].extend(theirs);
                    }
                }
            }
            for a in 0..3 {
                for b in 0..3 {
                    if a != b {
                        let mut other = replicas[b].clone();
                        replicas[a].merge(&mut other).unwrap();
                    }
                }
            }
            let heads: Vec<_> = replicas.iter().map(|d| { let mut h = d.get_heads(); h.sort(); h }).collect();
            prop_assert!(heads.windows(2).all(|w| w[0] == w[1]), "heads differ");
            let bodies: Vec<FollowupResponse> = replicas.iter().map(|d| read_body(d).unwrap()).collect();
            prop_assert!(bodies.windows(2).all(|w| w[0] == w[1]), "bodies differ");

            let conflicts = conflicts(&replicas[0]).unwrap();
            let mut expected: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
            for (i, (key, value)) in events.iter().enumerate() {
                if let (false, Some(v)) = (superseded.contains(&i), value) {
                    expected.entry(key.clone()).or_default().insert(*v);
                }
            }
            let mut actual: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
            for (key, ans) in &bodies[0].answers {
                let AnswerValue::Int(v) = ans else { panic!("unexpected answer {ans:?}") };
                actual.entry(key.clone()).or_default().insert(*v);
            }
            for c in &conflicts {
                let key = c.path.trim_start_matches("answers.").to_string();
                for cv in &c.values {
                    if let Some(v) = cv.value.as_i64() {
                        actual.entry(key.clone()).or_default().insert(v);
                    }
                }
            }
            prop_assert_eq!(actual, expected);
        }
    }
}
