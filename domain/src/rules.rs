//! THE clinical rules a record must satisfy, in one place, used twice: by the device at capture
//! (an immediate, per-field error) and by the registry server when the record lands (a push that
//! breaks one is rejected and reported, because a device can be old or hostile).
//!
//! Each rule reports a [`Problem`] naming the field at fault, like a questionnaire answer's.
//!
//! | record | rules |
//! |---|---|
//! | enrolment | study code present (≤ 64 characters); birth year plausible (at most 120 years ago, not in the future); enrolment and consent dates real and not in the future |
//! | procedure | date real, not before 1950, not in the future |
//! | response | the questionnaire exists at the response's exact version (a definition the checker holds: [`Lookup::questionnaire`]) and the writer's role may fill it (`completed_by` matches the device); a visit is one of the schedule in force's on the procedure's date ([`Lookup::schedule_for`]) and expects this questionnaire, and needs a procedure; the procedure is a procedure of the same patient; once submitted: the visit date (`visit_date`, `completed_date`) is not before the procedure nor in the future, the answers satisfy the questionnaire, and no other submitted response answers the visit (correct one by amending it) |
//! | adverse event | category, seriousness and outcome from the instrument's code lists; grade 1–5; onset real and not in the future; death ⇒ grade 5; grade 5 ⇔ outcome fatal; a named procedure is the patient's; questionnaire answers valid |
//! | adjudication | names an adverse event of the same patient; the clinic never sets `disputed` (the patient does); a decision (`responded`, `resolved`) states relatedness and action, and a remedy when the event is possibly related |
//! | case reply | names an adverse event of the same patient; a dispute says why |
//!
//! "Not in the future" allows one day of clock skew ([`CLOCK_SKEW_DAYS`]); "today" is the
//! checker's date (the server's clock at the server).

use std::sync::Arc;

use chrono::{Datelike, NaiveDate};

use crate::ids::RecordId;
use crate::model::{
    Adjudication, AdjudicationStatus, AdverseEvent, AeCategory, AeOutcome, CaseReply, CompletedBy,
    DocHeader, Enrolment, FollowupResponse, Procedure, Relatedness, ResponseStatus, Seriousness,
    Verdict,
};
use crate::protocol::DeviceRole;
use crate::questionnaire::{
    self, AnswerValue, Problem, ProblemCode, Questionnaire, QuestionnaireKind,
};
use crate::schedule::Schedule;
use crate::vocabulary;

/// Days a date may lie ahead of the checker's clock (devices' clocks drift).
pub const CLOCK_SKEW_DAYS: u64 = 1;
/// Oldest plausible age at enrolment, in years.
pub const MAX_AGE_YEARS: i32 = 120;
/// Longest study code.
pub const MAX_STUDY_CODE: usize = 64;
/// Longest free-text comment on a case reply.
pub const MAX_COMMENT: usize = 4000;

/// A lookup failed (storage error); the check could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not look up a record: {0}")]
pub struct LookupError(pub String);

/// What the rules need to know about other records. The device answers from its store, the
/// server from its database plus the records of the same push.
pub trait Lookup {
    /// A procedure record, with its header.
    fn procedure(&self, id: RecordId) -> Result<Option<(DocHeader, Procedure)>, LookupError>;
    /// An adverse-event record, with its header.
    fn adverse_event(&self, id: RecordId)
        -> Result<Option<(DocHeader, AdverseEvent)>, LookupError>;
    /// A submitted response of `patient` other than `except` answering `visit` of `procedure`.
    fn visit_answered_by(
        &self,
        patient: RecordId,
        procedure: RecordId,
        visit: &str,
        except: RecordId,
    ) -> Result<Option<RecordId>, LookupError>;
    /// The questionnaire `id` at exactly `version` (the one a response was started with), as
    /// the checker holds it (a registry-published definition); `None` when it holds none.
    /// By default the built-in instruments.
    fn questionnaire(
        &self,
        id: &str,
        version: &str,
    ) -> Result<Option<Arc<Questionnaire>>, LookupError> {
        Ok(builtin_questionnaire(id, version))
    }
    /// The schedule in force for a procedure performed on `date` (published definitions);
    /// `None`: the context's schedule applies.
    fn schedule_for(&self, _date: NaiveDate) -> Result<Option<Arc<Schedule>>, LookupError> {
        Ok(None)
    }
}

/// The benchmark instrument (the test kit's `bench-50`). A registry never publishes it to
/// devices (benchmarks and tests provision it), but accepts responses to it, so that load tests
/// and benchmarks run against a real server (as before definitions were published).
const BENCH_INSTRUMENT: &str = include_str!("../../testkit/instruments/bench-50.json");

fn bench_instrument() -> Option<&'static Questionnaire> {
    static PARSED: std::sync::OnceLock<Option<Questionnaire>> = std::sync::OnceLock::new();
    PARSED
        .get_or_init(|| Questionnaire::from_json(BENCH_INSTRUMENT).ok())
        .as_ref()
}

/// A built-in instrument (the definitions every new registry publishes, and the benchmark
/// instrument) at exactly `version`.
pub fn builtin_questionnaire(id: &str, version: &str) -> Option<Arc<Questionnaire>> {
    questionnaire::instrument_ref(id)
        .or_else(|| bench_instrument().filter(|q| q.id() == id))
        .filter(|q| q.version() == version)
        .map(|q| Arc::new(q.clone()))
}

/// Who writes which record, and when.
pub struct Context<'a> {
    /// The writing device's role.
    pub role: DeviceRole,
    /// The record being written.
    pub record: RecordId,
    /// Its patient (the header's).
    pub patient: RecordId,
    /// The checker's date.
    pub today: NaiveDate,
    pub schedule: &'a Schedule,
    pub lookup: &'a dyn Lookup,
}

fn problem(field: &str, code: ProblemCode, message: impl Into<String>) -> Problem {
    Problem {
        item: field.to_string(),
        code,
        message: format!("{field}: {}", message.into()),
    }
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|_| s.len() == 10)
}

fn latest_allowed(today: NaiveDate) -> NaiveDate {
    today + chrono::Days::new(CLOCK_SKEW_DAYS)
}

/// A date field: real, not before `earliest`, not after today (+ skew).
fn check_date(
    out: &mut Vec<Problem>,
    field: &str,
    value: &str,
    earliest: NaiveDate,
    today: NaiveDate,
) -> Option<NaiveDate> {
    let Some(d) = parse_date(value) else {
        out.push(problem(
            field,
            ProblemCode::InvalidDate,
            format!("{value:?} is not a real date written YYYY-MM-DD"),
        ));
        return None;
    };
    if d < earliest {
        out.push(problem(
            field,
            ProblemCode::OutOfBounds,
            format!("{d} is before {earliest}"),
        ));
    } else if d > latest_allowed(today) {
        out.push(problem(
            field,
            ProblemCode::OutOfBounds,
            format!("{d} is in the future (today is {today})"),
        ));
    }
    Some(d)
}

fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or(NaiveDate::MIN)
}

/// An enrolment's rules.
pub fn check_enrolment(e: &Enrolment, today: NaiveDate) -> Vec<Problem> {
    let mut out = Vec::new();
    let code = e.study_code.trim();
    if code.is_empty() {
        out.push(problem(
            "study_code",
            ProblemCode::Required,
            "a study code is required",
        ));
    } else if code.chars().count() > MAX_STUDY_CODE {
        out.push(problem(
            "study_code",
            ProblemCode::TooLong,
            format!("longer than {MAX_STUDY_CODE} characters"),
        ));
    }
    let year = i64::from(today.year());
    let oldest = year - i64::from(MAX_AGE_YEARS);
    if e.birth_year < oldest || e.birth_year > year {
        out.push(problem(
            "birth_year",
            ProblemCode::OutOfBounds,
            format!(
                "{} is not a plausible birth year: it must be {oldest} to {year}",
                e.birth_year
            ),
        ));
    }
    check_date(
        &mut out,
        "enrolled_on",
        &e.enrolled_on,
        ymd(1990, 1, 1),
        today,
    );
    check_date(
        &mut out,
        "consent.date",
        &e.consent.date,
        ymd(1990, 1, 1),
        today,
    );
    out
}

/// A procedure's rules.
pub fn check_procedure(p: &Procedure, today: NaiveDate) -> Vec<Problem> {
    let mut out = Vec::new();
    check_date(&mut out, "date", &p.date, ymd(1950, 1, 1), today);
    out
}

/// Who may complete a questionnaire of this kind.
pub fn may_complete(kind: QuestionnaireKind, by: CompletedBy) -> bool {
    match kind {
        QuestionnaireKind::Baseline | QuestionnaireKind::ClinicianFollowup => {
            by == CompletedBy::Nurse
        }
        // A nurse may enter a patient's paper survey on their behalf.
        QuestionnaireKind::PatientSurvey => true,
        // Adverse events are reported as adverse-event records, not as responses.
        QuestionnaireKind::AdverseEvent => false,
    }
}

fn completer_for(role: DeviceRole) -> CompletedBy {
    match role {
        DeviceRole::ClinicDevice => CompletedBy::Nurse,
        DeviceRole::PatientDevice => CompletedBy::Patient,
    }
}

/// The procedure named by `field`, which must be a procedure of the context's patient.
fn own_procedure(
    ctx: &Context<'_>,
    out: &mut Vec<Problem>,
    field: &str,
    id: &str,
) -> Result<Option<Procedure>, LookupError> {
    let Ok(pid) = id.parse::<RecordId>() else {
        out.push(problem(
            field,
            ProblemCode::NotAllowed,
            format!("{id:?} is not a record id"),
        ));
        return Ok(None);
    };
    match ctx.lookup.procedure(pid)? {
        None => {
            out.push(problem(
                field,
                ProblemCode::UnknownRecord,
                format!("procedure {pid} is not known (yet)"),
            ));
            Ok(None)
        }
        Some((h, _)) if h.patient != Some(ctx.patient) => {
            out.push(problem(
                field,
                ProblemCode::WrongPatient,
                format!("procedure {pid} is another patient's"),
            ));
            Ok(None)
        }
        Some((_, p)) => Ok(Some(p)),
    }
}

/// The adverse event named by `field`, which must be an adverse event of the context's patient.
fn own_event(
    ctx: &Context<'_>,
    out: &mut Vec<Problem>,
    field: &str,
    id: &str,
) -> Result<Option<AdverseEvent>, LookupError> {
    let Ok(aid) = id.parse::<RecordId>() else {
        out.push(problem(
            field,
            ProblemCode::NotAllowed,
            format!("{id:?} is not a record id"),
        ));
        return Ok(None);
    };
    match ctx.lookup.adverse_event(aid)? {
        None => {
            out.push(problem(
                field,
                ProblemCode::UnknownRecord,
                format!("adverse event {aid} is not known (yet)"),
            ));
            Ok(None)
        }
        Some((h, _)) if h.patient != Some(ctx.patient) => {
            out.push(problem(
                field,
                ProblemCode::WrongPatient,
                format!("adverse event {aid} is another patient's"),
            ));
            Ok(None)
        }
        Some((_, ae)) => Ok(Some(ae)),
    }
}

/// A questionnaire response's rules.
pub fn check_response(
    ctx: &Context<'_>,
    r: &FollowupResponse,
) -> Result<Vec<Problem>, LookupError> {
    let mut out = Vec::new();
    let Some(q) = ctx
        .lookup
        .questionnaire(&r.questionnaire, &r.questionnaire_version)?
    else {
        out.push(problem(
            "questionnaire",
            ProblemCode::NotAllowed,
            format!(
                "{:?} version {:?} is not a questionnaire of the registry",
                r.questionnaire, r.questionnaire_version
            ),
        ));
        return Ok(out);
    };
    if r.completed_by != completer_for(ctx.role) {
        out.push(problem(
            "completed_by",
            ProblemCode::NotAllowed,
            format!(
                "a {} cannot record a response completed by the {}",
                ctx.role.as_str().replace('_', " "),
                r.completed_by
            ),
        ));
    } else if !may_complete(q.kind(), r.completed_by) {
        out.push(problem(
            "questionnaire",
            ProblemCode::NotAllowed,
            format!(
                "{} cannot be completed by the {}",
                q.id(),
                match r.completed_by {
                    CompletedBy::Nurse => "clinic",
                    CompletedBy::Patient => "patient",
                }
            ),
        ));
    }
    let procedure = match &r.procedure {
        Some(id) => own_procedure(ctx, &mut out, "procedure", id)?,
        None => None,
    };
    if let Some(visit) = &r.visit {
        // The schedule in force on the procedure's date (the context's when none is known).
        let in_force = match procedure.as_ref().and_then(|p| parse_date(&p.date)) {
            Some(d) => ctx.lookup.schedule_for(d)?,
            None => None,
        };
        let schedule = in_force.as_deref().unwrap_or(ctx.schedule);
        match schedule.visit(visit) {
            None => out.push(problem(
                "visit",
                ProblemCode::NotAllowed,
                format!("{visit:?} is not a visit of the schedule"),
            )),
            Some(v) if v.questionnaire != r.questionnaire => out.push(problem(
                "visit",
                ProblemCode::NotAllowed,
                format!(
                    "visit {visit} is answered by {}, not by {}",
                    v.questionnaire, r.questionnaire
                ),
            )),
            Some(_) => {}
        }
        if r.procedure.is_none() {
            out.push(problem(
                "procedure",
                ProblemCode::Required,
                format!("visit {visit} follows up a procedure: name it"),
            ));
        }
    }
    // Answers are checked when the response is submitted (a draft is work in progress).
    let submitted = r.status == ResponseStatus::Submitted;
    for item in vocabulary::VISIT_DATE_ITEMS.iter().filter(|_| submitted) {
        if let Some(AnswerValue::Text(s)) = r.answers.get(*item) {
            let field = format!("answers.{item}");
            let earliest = procedure
                .as_ref()
                .and_then(|p| parse_date(&p.date))
                .unwrap_or(ymd(1950, 1, 1));
            if let Some(d) = parse_date(s) {
                if d < earliest {
                    out.push(problem(
                        &field,
                        ProblemCode::OutOfBounds,
                        format!("{d} is before the procedure ({earliest})"),
                    ));
                } else if d > latest_allowed(ctx.today) {
                    out.push(problem(
                        &field,
                        ProblemCode::OutOfBounds,
                        format!("{d} is in the future (today is {})", ctx.today),
                    ));
                }
            }
        }
    }
    if r.status == ResponseStatus::Submitted {
        let mut answers = r.answers.clone();
        q.prune_disabled(&mut answers);
        out.extend(q.validate(&answers).into_iter().map(|mut p| {
            p.item = format!("answers.{}", p.item);
            p
        }));
        if let (Some(visit), Some(Ok(pid))) =
            (&r.visit, r.procedure.as_deref().map(str::parse::<RecordId>))
        {
            if let Some(other) =
                ctx.lookup
                    .visit_answered_by(ctx.patient, pid, visit, ctx.record)?
            {
                out.push(problem(
                    "visit",
                    ProblemCode::Duplicate,
                    format!(
                        "visit {visit} is already answered by response {other}: amend that response instead"
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// An adverse event's rules that need no other record.
pub fn check_event_fields(ae: &AdverseEvent, today: NaiveDate) -> Vec<Problem> {
    let mut out = Vec::new();
    if AeCategory::from_code(&ae.category).is_none() {
        out.push(problem(
            "category",
            ProblemCode::UnknownChoice,
            format!(
                "{:?} is not a category; use one of {}",
                ae.category,
                codes(AeCategory::ALL.iter().map(|c| c.code()))
            ),
        ));
    }
    let mut seen = Vec::new();
    for s in &ae.seriousness {
        match Seriousness::from_code(s) {
            None => out.push(problem(
                "seriousness",
                ProblemCode::UnknownChoice,
                format!(
                    "{s:?} is not a seriousness criterion; use {} (or none)",
                    codes(Seriousness::ALL.iter().map(|c| c.code()))
                ),
            )),
            Some(c) if seen.contains(&c) => out.push(problem(
                "seriousness",
                ProblemCode::DuplicateChoice,
                format!("{s:?} is listed twice"),
            )),
            Some(c) => seen.push(c),
        }
    }
    if !(1..=5).contains(&ae.severity) {
        out.push(problem(
            "severity",
            ProblemCode::OutOfBounds,
            format!("grade {} is out of range: it must be 1 to 5", ae.severity),
        ));
    }
    check_date(&mut out, "onset", &ae.onset, ymd(1950, 1, 1), today);
    let death = seen.contains(&Seriousness::Death);
    if death && ae.severity != 5 {
        out.push(problem(
            "severity",
            ProblemCode::Inconsistent,
            format!("an event that caused death is grade 5, not {}", ae.severity),
        ));
    }
    if ae.severity == 5 && ae.outcome != AeOutcome::Fatal {
        out.push(problem(
            "outcome",
            ProblemCode::Inconsistent,
            format!("a grade 5 event's outcome is fatal, not {}", ae.outcome),
        ));
    }
    if ae.outcome == AeOutcome::Fatal && ae.severity != 5 {
        out.push(problem(
            "severity",
            ProblemCode::Inconsistent,
            format!("a fatal event is grade 5, not {}", ae.severity),
        ));
    }
    if ae.description.trim().is_empty() {
        out.push(problem(
            "description",
            ProblemCode::Required,
            "describe what happened",
        ));
    }
    if !ae.answers.is_empty() {
        if let Some(q) = questionnaire::instrument_ref(vocabulary::AE_INSTRUMENT) {
            out.extend(q.validate_partial(&ae.answers).into_iter().map(|mut p| {
                p.item = format!("answers.{}", p.item);
                p
            }));
        }
    }
    out
}

fn codes<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.collect::<Vec<_>>().join(", ")
}

/// An adverse event's rules.
pub fn check_adverse_event(
    ctx: &Context<'_>,
    ae: &AdverseEvent,
) -> Result<Vec<Problem>, LookupError> {
    let mut out = check_event_fields(ae, ctx.today);
    if let Some(id) = &ae.procedure {
        own_procedure(ctx, &mut out, "procedure", id)?;
    }
    Ok(out)
}

/// Whether an adjudication states the clinic's decision.
pub fn is_decided(a: &Adjudication) -> bool {
    matches!(
        a.status,
        AdjudicationStatus::Responded | AdjudicationStatus::Resolved
    )
}

/// An adjudication's rules.
pub fn check_adjudication(
    ctx: &Context<'_>,
    a: &Adjudication,
) -> Result<Vec<Problem>, LookupError> {
    let mut out = Vec::new();
    own_event(ctx, &mut out, "adverse_event", &a.adverse_event)?;
    if a.status == AdjudicationStatus::Disputed {
        out.push(problem(
            "status",
            ProblemCode::NotAllowed,
            "only the patient disputes an adjudication (the registry records it in the case)",
        ));
    }
    if is_decided(a) {
        if a.relatedness.is_none() {
            out.push(problem(
                "relatedness",
                ProblemCode::Required,
                "a decision states whether the procedure caused the event",
            ));
        }
        if a.action.trim().is_empty() {
            out.push(problem(
                "action",
                ProblemCode::Required,
                "a decision states the action taken (or \"none\")",
            ));
        }
        let related = matches!(
            a.relatedness,
            Some(Relatedness::Possible | Relatedness::Probable | Relatedness::Definite)
        );
        if related && a.remedy.trim().is_empty() {
            out.push(problem(
                "remedy",
                ProblemCode::Required,
                "an event possibly caused by the procedure needs the remedy offered",
            ));
        }
    }
    Ok(out)
}

/// A patient's reply to an adjudication.
pub fn check_reply(ctx: &Context<'_>, r: &CaseReply) -> Result<Vec<Problem>, LookupError> {
    let mut out = Vec::new();
    own_event(ctx, &mut out, "adverse_event", &r.adverse_event)?;
    if r.verdict == Verdict::Disputed && r.comment.trim().is_empty() {
        out.push(problem(
            "comment",
            ProblemCode::Required,
            "say why you dispute the clinic's answer",
        ));
    }
    if r.comment.chars().count() > MAX_COMMENT {
        out.push(problem(
            "comment",
            ProblemCode::TooLong,
            format!("longer than {MAX_COMMENT} characters"),
        ));
    }
    Ok(out)
}

/// Check a record document of any kind. Records without clinical content (clinic, case,
/// definition) pass.
pub fn check_document(
    ctx: &Context<'_>,
    doc: &automerge::Automerge,
) -> Result<Vec<Problem>, CheckError> {
    use crate::model::{read_body, read_header, RecordKind};
    let h = read_header(doc).map_err(|e| CheckError::Unreadable(e.to_string()))?;
    let unreadable = |e: crate::error::Error| CheckError::Unreadable(e.to_string());
    Ok(match h.kind {
        RecordKind::Enrolment => check_enrolment(&read_body(doc).map_err(unreadable)?, ctx.today),
        RecordKind::Procedure => check_procedure(&read_body(doc).map_err(unreadable)?, ctx.today),
        RecordKind::Response => check_response(ctx, &read_body(doc).map_err(unreadable)?)?,
        RecordKind::AdverseEvent => check_adverse_event(ctx, &read_body(doc).map_err(unreadable)?)?,
        RecordKind::Adjudication => check_adjudication(ctx, &read_body(doc).map_err(unreadable)?)?,
        RecordKind::CaseReply => check_reply(ctx, &read_body(doc).map_err(unreadable)?)?,
        RecordKind::Clinic | RecordKind::AdjudicationCase | RecordKind::Definition => Vec::new(),
    })
}

/// Why [`check_document`] could not check.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The body does not read as its kind (a code outside its list, a missing field...).
    #[error("the record's body does not read as its kind: {0}")]
    Unreadable(String),
    #[error(transparent)]
    Lookup(#[from] LookupError),
}

/// Whether every problem is only a reference to a record not known yet (the server may learn of
/// it later in the same push, or in a later one).
pub fn only_unknown_references(problems: &[Problem]) -> bool {
    !problems.is_empty()
        && problems
            .iter()
            .all(|p| p.code == ProblemCode::UnknownRecord)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Consent, Reporter, Sex};
    use std::collections::HashMap;

    #[derive(Default)]
    struct Fake {
        procedures: HashMap<RecordId, (DocHeader, Procedure)>,
        answered: Option<RecordId>,
    }

    impl Lookup for Fake {
        fn procedure(&self, id: RecordId) -> Result<Option<(DocHeader, Procedure)>, LookupError> {
            Ok(self.procedures.get(&id).cloned())
        }
        fn adverse_event(
            &self,
            _: RecordId,
        ) -> Result<Option<(DocHeader, AdverseEvent)>, LookupError> {
            Ok(None)
        }
        fn visit_answered_by(
            &self,
            _: RecordId,
            _: RecordId,
            _: &str,
            _: RecordId,
        ) -> Result<Option<RecordId>, LookupError> {
            Ok(self.answered)
        }
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn codes(p: &[Problem]) -> Vec<(&str, ProblemCode)> {
        p.iter().map(|p| (p.item.as_str(), p.code)).collect()
    }

    fn event() -> AdverseEvent {
        AdverseEvent {
            reporter: Reporter::Patient,
            category: "infection".into(),
            onset: "2026-06-20".into(),
            severity: 2,
            seriousness: vec![],
            outcome: AeOutcome::Recovering,
            description: "fever".into(),
            procedure: None,
            answers: Default::default(),
        }
    }

    #[test]
    fn adverse_event_codes_and_consistency() {
        let today = d("2026-07-01");
        assert!(check_event_fields(&event(), today).is_empty());
        let bad = AdverseEvent {
            category: "flu".into(),
            seriousness: vec!["hospitalization".into()],
            ..event()
        };
        assert_eq!(
            codes(&check_event_fields(&bad, today)),
            [
                ("category", ProblemCode::UnknownChoice),
                ("seriousness", ProblemCode::UnknownChoice)
            ]
        );
        let grade5 = AdverseEvent {
            severity: 5,
            outcome: AeOutcome::Recovered,
            ..event()
        };
        assert_eq!(
            codes(&check_event_fields(&grade5, today)),
            [("outcome", ProblemCode::Inconsistent)]
        );
        let death = AdverseEvent {
            seriousness: vec!["death".into()],
            outcome: AeOutcome::Fatal,
            severity: 4,
            ..event()
        };
        assert!(codes(&check_event_fields(&death, today))
            .contains(&("severity", ProblemCode::Inconsistent)));
        let future = AdverseEvent {
            onset: "2030-01-01".into(),
            ..event()
        };
        assert_eq!(
            codes(&check_event_fields(&future, today)),
            [("onset", ProblemCode::OutOfBounds)]
        );
        // One day of clock skew is allowed.
        let tomorrow = AdverseEvent {
            onset: "2026-07-02".into(),
            ..event()
        };
        assert!(check_event_fields(&tomorrow, today).is_empty());
    }

    #[test]
    fn enrolment_birth_year_and_dates() {
        let e = Enrolment {
            study_code: "KX-1".into(),
            consent: Consent {
                form_version: "1".into(),
                date: "2026-01-05".into(),
                scope: vec![],
            },
            birth_year: 2030,
            sex: Sex::Female,
            enrolled_on: "2026-01-05".into(),
        };
        assert_eq!(
            codes(&check_enrolment(&e, d("2026-07-01"))),
            [("birth_year", ProblemCode::OutOfBounds)]
        );
        let ok = Enrolment {
            birth_year: 1961,
            ..e
        };
        assert!(check_enrolment(&ok, d("2026-07-01")).is_empty());
    }

    #[test]
    fn responses_fit_visit_role_patient_and_dates() {
        let patient = RecordId::random();
        let proc_id = RecordId::random();
        let other = RecordId::random();
        let header = |p: RecordId| DocHeader {
            id: RecordId::random(),
            kind: crate::model::RecordKind::Procedure,
            clinic: RecordId::random(),
            patient: Some(p),
            created_by: None,
        };
        let procedure = Procedure {
            date: "2026-05-01".into(),
            condition: "knee".into(),
            procedure_type: "injection".into(),
            route: crate::model::Route::IntraArticular,
            cell_type: crate::model::CellType::Mesenchymal,
            source_tissue: crate::model::SourceTissue::Adipose,
            origin: crate::model::Origin::Autologous,
            manipulation: crate::model::Manipulation::Minimal,
            regulatory_status: crate::model::RegulatoryStatus::Unregulated,
            trial_registration: None,
            promised_benefits: vec![],
            cost: None,
        };
        let mut fake = Fake::default();
        fake.procedures
            .insert(proc_id, (header(patient), procedure.clone()));
        fake.procedures
            .insert(other, (header(RecordId::random()), procedure));
        let schedule = Schedule::default_registry();
        let check = |role: DeviceRole, r: &FollowupResponse, lookup: &Fake| {
            let c = Context {
                role,
                record: RecordId::random(),
                patient,
                today: d("2026-07-01"),
                schedule: &schedule,
                lookup,
            };
            check_response(&c, r)
                .unwrap()
                .into_iter()
                .map(|p| (p.item, p.code))
                .collect::<Vec<_>>()
        };
        let response = |q: &str, visit: &str, by: CompletedBy, proc: RecordId| FollowupResponse {
            questionnaire: q.into(),
            questionnaire_version: "1.0.0".into(),
            procedure: Some(proc.to_hex()),
            visit: Some(visit.into()),
            answers: Default::default(),
            completed_by: by,
            status: ResponseStatus::Draft,
            submitted_at: None,
            amendments: vec![],
        };
        let nurse = CompletedBy::Nurse;
        assert!(check(
            DeviceRole::ClinicDevice,
            &response("clinician-followup", "m1", nurse, proc_id),
            &fake
        )
        .is_empty());
        assert_eq!(
            check(
                DeviceRole::PatientDevice,
                &response("clinician-followup", "m1", CompletedBy::Patient, proc_id),
                &fake
            ),
            [("questionnaire".to_string(), ProblemCode::NotAllowed)]
        );
        assert_eq!(
            check(
                DeviceRole::ClinicDevice,
                &response("clinician-followup", "m1-survey", nurse, proc_id),
                &fake
            ),
            [("visit".to_string(), ProblemCode::NotAllowed)]
        );
        assert_eq!(
            check(
                DeviceRole::ClinicDevice,
                &response("clinician-followup", "m1", nurse, other),
                &fake
            ),
            [("procedure".to_string(), ProblemCode::WrongPatient)]
        );
        assert_eq!(
            check(
                DeviceRole::ClinicDevice,
                &response("clinician-followup", "m1", nurse, RecordId::random()),
                &fake
            ),
            [("procedure".to_string(), ProblemCode::UnknownRecord)]
        );
        let mut early = response("clinician-followup", "m1", nurse, proc_id);
        early
            .answers
            .insert("visit_date".into(), AnswerValue::Text("2026-04-20".into()));
        // A draft's answers are not judged yet; once submitted, the date is.
        assert!(check(DeviceRole::ClinicDevice, &early, &fake).is_empty());
        early.status = ResponseStatus::Submitted;
        assert!(check(DeviceRole::ClinicDevice, &early, &fake)
            .contains(&("answers.visit_date".to_string(), ProblemCode::OutOfBounds)));
        // A submitted response for a visit already answered.
        fake.answered = Some(RecordId::random());
        let mut submitted = response("clinician-followup", "m1", nurse, proc_id);
        submitted.status = ResponseStatus::Submitted;
        assert!(check(DeviceRole::ClinicDevice, &submitted, &fake)
            .contains(&("visit".to_string(), ProblemCode::Duplicate)));
    }
}
