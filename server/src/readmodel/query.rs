//! What the console and the exports ask of the read model. Every query takes a clinic scope
//! (`Option<ClinicId>`: `None` is every clinic, `Some(c)` only clinic `c`), applied in the SQL
//! itself, so a clinic coordinator's page cannot see another clinic's rows whatever it asks.
//!
//! Visit states are computed as of a date given by the caller (the server's "today" for the
//! console), from the windows stored in `rm_visits` and its `done_count`:
//!
//! | state | when (`d` = the date as a day number) |
//! |---|---|
//! | done | `done_count > 0` |
//! | upcoming | `d < window_start_day` |
//! | due | `window_start_day ≤ d ≤ window_end_day` |
//! | overdue | `window_end_day < d ≤ grace_end_day` |
//! | missed | `d > grace_end_day` |
//!
//! The completion rate of a visit is `done / (done + overdue + missed)`: of the visits whose
//! window has closed (or that were done early), the share done. `None` when nothing is expected
//! yet.
//!
//! The SQL here is portable between SQLite and PostgreSQL (parameters `$n`, integer booleans,
//! `COUNT(CASE …)` rather than `SUM`), run through [`Storage::rm_query`].

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use chrono::NaiveDate;
use followup_domain::ids::{DeviceId, RecordId, UserId};
use serde::Serialize;

use super::schema::{self, ColType, Table};
use super::{day_number, ClinicId, Val};
use crate::storage::{Storage, StorageError, StorageResult};

/// `($1 = 0 OR col = $2)`: the two parameters of a clinic scope.
pub(crate) fn scope(s: Option<ClinicId>) -> [Val; 2] {
    match s {
        None => [Val::Int(0), Val::Blob(Vec::new())],
        Some(c) => [Val::Int(1), Val::Blob(c.0.to_vec())],
    }
}

fn params(scope_: Option<ClinicId>, rest: impl IntoIterator<Item = Val>) -> Vec<Val> {
    let mut v: Vec<Val> = scope(scope_).into();
    v.extend(rest);
    v
}

fn u(v: &Val) -> u64 {
    v.int().and_then(|i| u64::try_from(i).ok()).unwrap_or(0)
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Corrupt(format!("read model: {what}"))
}

fn rid(v: &Val, what: &str) -> StorageResult<RecordId> {
    v.record_id().ok_or_else(|| corrupt(what))
}

fn opt_text(v: &Val) -> Option<String> {
    v.text().map(str::to_string)
}

/// A row's columns by position, with bounds checked.
struct R<'a>(&'a [Val]);
impl R<'_> {
    fn v(&self, i: usize) -> &Val {
        self.0.get(i).unwrap_or(&Val::Null)
    }
    fn id(&self, i: usize, what: &str) -> StorageResult<RecordId> {
        rid(self.v(i), what)
    }
    fn oid(&self, i: usize) -> Option<RecordId> {
        self.v(i).record_id()
    }
    fn dev(&self, i: usize) -> Option<DeviceId> {
        self.v(i).device_id()
    }
    fn t(&self, i: usize) -> Option<String> {
        opt_text(self.v(i))
    }
    fn i(&self, i: usize) -> Option<i64> {
        self.v(i).int()
    }
    fn u(&self, i: usize) -> u64 {
        u(self.v(i))
    }
}

// ---------------------------------------------------------------------------------------------
// Overview

/// The registry at a glance.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Overview {
    pub clinics: u64,
    pub patients: u64,
    pub procedures: u64,
    /// Submitted responses.
    pub responses: u64,
    /// Responses still in draft.
    pub draft_responses: u64,
    pub adverse_events: u64,
    /// Adverse events by severity grade 1..=5 (index 0 is grade 1).
    pub adverse_events_by_severity: [u64; 5],
    /// Adverse events whose severity is conflicted or out of range.
    pub adverse_events_severity_unknown: u64,
    /// Adverse events with a seriousness criterion.
    pub serious_adverse_events: u64,
    /// Records with at least one conflicted field.
    pub records_with_conflicts: u64,
    /// Records whose body could not be projected.
    pub records_with_problems: u64,
}

pub fn overview(s: &dyn Storage, scope_: Option<ClinicId>) -> StorageResult<Overview> {
    let p = params(scope_, []);
    let count = |sql: &'static str| -> StorageResult<u64> {
        Ok(s.rm_query(sql, &p)?
            .first()
            .and_then(|r| r.first())
            .map(u)
            .unwrap_or(0))
    };
    let mut o = Overview {
        clinics: count("SELECT COUNT(*) FROM rm_clinics WHERE ($1 = 0 OR id = $2)")?,
        patients: count("SELECT COUNT(*) FROM rm_enrolments WHERE ($1 = 0 OR clinic = $2)")?,
        procedures: count("SELECT COUNT(*) FROM rm_procedures WHERE ($1 = 0 OR clinic = $2)")?,
        records_with_conflicts: count(
            "SELECT COUNT(*) FROM rm_records WHERE ($1 = 0 OR clinic = $2) AND conflicts > 0",
        )?,
        records_with_problems: count(
            "SELECT COUNT(*) FROM rm_records WHERE ($1 = 0 OR clinic = $2) AND problem IS NOT NULL",
        )?,
        serious_adverse_events: count(
            "SELECT COUNT(*) FROM rm_adverse_events WHERE ($1 = 0 OR clinic = $2) AND serious = 1",
        )?,
        ..Overview::default()
    };
    for row in s.rm_query(
        "SELECT status, COUNT(*) FROM rm_responses WHERE ($1 = 0 OR clinic = $2) GROUP BY status",
        &p,
    )? {
        let r = R(&row);
        match r.t(0).as_deref() {
            Some("submitted") => o.responses += r.u(1),
            _ => o.draft_responses += r.u(1),
        }
    }
    for row in s.rm_query(
        "SELECT severity, COUNT(*) FROM rm_adverse_events WHERE ($1 = 0 OR clinic = $2)
         GROUP BY severity",
        &p,
    )? {
        let r = R(&row);
        let n = r.u(1);
        o.adverse_events += n;
        match r.i(0) {
            Some(g @ 1..=5) => o.adverse_events_by_severity[(g - 1) as usize] += n,
            _ => o.adverse_events_severity_unknown += n,
        }
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// Visits: counts per clinic and visit, and the list down to patients

/// A visit's state as of a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VisitState {
    Overdue,
    Due,
    Upcoming,
    Missed,
    Done,
}

impl VisitState {
    pub const ALL: [VisitState; 5] = [
        VisitState::Overdue,
        VisitState::Due,
        VisitState::Upcoming,
        VisitState::Missed,
        VisitState::Done,
    ];
    pub fn code(self) -> &'static str {
        match self {
            VisitState::Overdue => "overdue",
            VisitState::Due => "due",
            VisitState::Upcoming => "upcoming",
            VisitState::Missed => "missed",
            VisitState::Done => "done",
        }
    }
    pub fn from_code(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.code() == s)
    }
    fn of(done: bool, day: i64, start: i64, end: i64, grace_end: i64) -> Self {
        if done {
            VisitState::Done
        } else if day < start {
            VisitState::Upcoming
        } else if day <= end {
            VisitState::Due
        } else if day <= grace_end {
            VisitState::Overdue
        } else {
            VisitState::Missed
        }
    }
}

/// How many visits of one kind are in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VisitCounts {
    /// `None` for the total across the clinics in scope.
    pub clinic: Option<ClinicId>,
    /// The schedule's visit id (`d7`, `m1`, … `y5`, `m1-survey`, …).
    pub visit: String,
    pub label: String,
    /// The questionnaire answering it (`clinician-followup`, `patient-outcome-survey`).
    pub questionnaire: String,
    /// The visit's position in the schedule.
    pub order: i64,
    pub upcoming: u64,
    pub due: u64,
    pub overdue: u64,
    pub missed: u64,
    pub done: u64,
}

impl VisitCounts {
    /// Visits expected by now: done, overdue or missed.
    pub fn expected(&self) -> u64 {
        self.done + self.overdue + self.missed
    }
    /// `done / expected`, `None` when nothing is expected yet.
    pub fn completion_rate(&self) -> Option<f64> {
        let e = self.expected();
        (e > 0).then(|| self.done as f64 / e as f64)
    }
    /// Visits in state `s`.
    pub fn count(&self, s: VisitState) -> u64 {
        match s {
            VisitState::Upcoming => self.upcoming,
            VisitState::Due => self.due,
            VisitState::Overdue => self.overdue,
            VisitState::Missed => self.missed,
            VisitState::Done => self.done,
        }
    }
    /// Add another clinic's (or visit's) counts to these.
    pub fn add(&mut self, o: &VisitCounts) {
        self.upcoming += o.upcoming;
        self.due += o.due;
        self.overdue += o.overdue;
        self.missed += o.missed;
        self.done += o.done;
    }
}

const VISIT_COUNTS: &str = "SELECT clinic, visit, MIN(seq), MIN(label), MIN(questionnaire),
    COUNT(CASE WHEN done_count = 0 AND $3 < window_start_day THEN 1 END),
    COUNT(CASE WHEN done_count = 0 AND $3 >= window_start_day AND $3 <= window_end_day THEN 1 END),
    COUNT(CASE WHEN done_count = 0 AND $3 > window_end_day AND $3 <= grace_end_day THEN 1 END),
    COUNT(CASE WHEN done_count = 0 AND $3 > grace_end_day THEN 1 END),
    COUNT(CASE WHEN done_count > 0 THEN 1 END)
    FROM rm_visits WHERE ($1 = 0 OR clinic = $2) GROUP BY clinic, visit";

/// Visit counts by state, per clinic and visit, and (with `clinic: None`) the totals per visit
/// across the clinics in scope; ordered by clinic then schedule order, totals last.
pub fn visit_counts(
    s: &dyn Storage,
    scope_: Option<ClinicId>,
    as_of: NaiveDate,
) -> StorageResult<Vec<VisitCounts>> {
    let rows = s.rm_query(VISIT_COUNTS, &params(scope_, [Val::Int(day_number(as_of))]))?;
    let mut out = Vec::with_capacity(rows.len());
    let mut totals: BTreeMap<(i64, String), VisitCounts> = BTreeMap::new();
    for row in &rows {
        let r = R(row);
        let c = VisitCounts {
            clinic: Some(r.id(0, "visit clinic")?),
            visit: r.t(1).unwrap_or_default(),
            order: r.i(2).unwrap_or(0),
            label: r.t(3).unwrap_or_default(),
            questionnaire: r.t(4).unwrap_or_default(),
            upcoming: r.u(5),
            due: r.u(6),
            overdue: r.u(7),
            missed: r.u(8),
            done: r.u(9),
        };
        totals
            .entry((c.order, c.visit.clone()))
            .or_insert_with(|| VisitCounts {
                clinic: None,
                visit: c.visit.clone(),
                label: c.label.clone(),
                questionnaire: c.questionnaire.clone(),
                order: c.order,
                ..VisitCounts::default()
            })
            .add(&c);
        out.push(c);
    }
    out.sort_by_key(|c| (c.clinic, c.order));
    out.extend(totals.into_values());
    Ok(out)
}

/// Which visits [`visit_list`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitFilter {
    /// States to include (empty: due, overdue and missed).
    pub states: Vec<VisitState>,
    /// Only this visit id.
    pub visit: Option<String>,
    /// Only this patient.
    pub patient: Option<RecordId>,
    pub limit: u32,
    pub offset: u64,
}

impl VisitFilter {
    /// The states listed when a filter names none: the visits someone must act on.
    pub const DEFAULT_STATES: [VisitState; 3] =
        [VisitState::Due, VisitState::Overdue, VisitState::Missed];
}

impl Default for VisitFilter {
    fn default() -> Self {
        VisitFilter {
            states: Vec::new(),
            visit: None,
            patient: None,
            limit: 100,
            offset: 0,
        }
    }
}

/// One visit of one patient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatientVisit {
    pub clinic: ClinicId,
    pub patient: RecordId,
    /// The clinic's pseudonymous study code (no direct identifier).
    pub study_code: Option<String>,
    pub procedure: RecordId,
    pub procedure_date: Option<String>,
    pub visit: String,
    pub label: String,
    pub questionnaire: String,
    pub target: Option<NaiveDate>,
    pub window_start: Option<NaiveDate>,
    pub window_end: Option<NaiveDate>,
    pub grace_end: Option<NaiveDate>,
    pub state: VisitState,
    /// Days since the window closed (overdue and missed), else 0.
    pub days_late: i64,
    /// The submitted response that answers it (the first by id when several do).
    pub done_response: Option<RecordId>,
    /// How many submitted responses answer it (more than one deserves a look).
    pub done_count: u64,
}

const VISIT_LIST: &str = "SELECT v.clinic, v.patient, e.study_code, v.procedure, p.date, v.visit,
    v.label, v.questionnaire, v.target_day, v.window_start_day, v.window_end_day, v.grace_end_day,
    v.done_count, v.done_response
    FROM rm_visits v
    LEFT JOIN rm_enrolments e ON e.id = v.patient
    LEFT JOIN rm_procedures p ON p.id = v.procedure
    WHERE ($1 = 0 OR v.clinic = $2)
      AND ($3 = 0 OR v.visit = $4)
      AND ($5 = 0 OR v.patient = $6)
      AND (($8 = 1 AND v.done_count = 0 AND $7 > v.window_end_day AND $7 <= v.grace_end_day)
        OR ($9 = 1 AND v.done_count = 0 AND $7 >= v.window_start_day AND $7 <= v.window_end_day)
        OR ($10 = 1 AND v.done_count = 0 AND $7 < v.window_start_day)
        OR ($11 = 1 AND v.done_count = 0 AND $7 > v.grace_end_day)
        OR ($12 = 1 AND v.done_count > 0))
    ORDER BY CASE WHEN v.done_count > 0 THEN 4
                  WHEN $7 < v.window_start_day THEN 2
                  WHEN $7 <= v.window_end_day THEN 1
                  WHEN $7 <= v.grace_end_day THEN 0 ELSE 3 END,
             CASE WHEN v.done_count > 0 THEN v.target_day
                  WHEN $7 < v.window_start_day THEN v.window_start_day
                  WHEN $7 <= v.window_end_day THEN v.window_end_day
                  WHEN $7 <= v.grace_end_day THEN v.grace_end_day ELSE -v.window_end_day END,
             e.study_code, v.procedure, v.seq
    LIMIT $13 OFFSET $14";

/// Visits down to patients, most urgent first: overdue (soonest end of grace first), due
/// (soonest window end), upcoming, missed (most recent first), done.
pub fn visit_list(
    s: &dyn Storage,
    scope_: Option<ClinicId>,
    as_of: NaiveDate,
    f: &VisitFilter,
) -> StorageResult<Vec<PatientVisit>> {
    let day = day_number(as_of);
    let states = if f.states.is_empty() {
        VisitFilter::DEFAULT_STATES.to_vec()
    } else {
        f.states.clone()
    };
    let on = |st: VisitState| Val::Int(i64::from(states.contains(&st)));
    let p = params(
        scope_,
        [
            Val::Int(i64::from(f.visit.is_some())),
            Val::Text(f.visit.clone().unwrap_or_default()),
            Val::Int(i64::from(f.patient.is_some())),
            Val::Blob(f.patient.map(|p| p.0.to_vec()).unwrap_or_default()),
            Val::Int(day),
            on(VisitState::Overdue),
            on(VisitState::Due),
            on(VisitState::Upcoming),
            on(VisitState::Missed),
            on(VisitState::Done),
            Val::Int(i64::from(f.limit)),
            Val::Int(i64::try_from(f.offset).unwrap_or(i64::MAX)),
        ],
    );
    let date = |v: Option<i64>| v.and_then(super::date_of_day);
    s.rm_query(VISIT_LIST, &p)?
        .iter()
        .map(|row| {
            let r = R(row);
            let (start, end, grace) = (
                r.i(9).unwrap_or(0),
                r.i(10).unwrap_or(0),
                r.i(11).unwrap_or(0),
            );
            let done_count = r.u(12);
            let state = VisitState::of(done_count > 0, day, start, end, grace);
            Ok(PatientVisit {
                clinic: r.id(0, "visit clinic")?,
                patient: r.id(1, "visit patient")?,
                study_code: r.t(2),
                procedure: r.id(3, "visit procedure")?,
                procedure_date: r.t(4),
                visit: r.t(5).unwrap_or_default(),
                label: r.t(6).unwrap_or_default(),
                questionnaire: r.t(7).unwrap_or_default(),
                target: date(r.i(8)),
                window_start: date(Some(start)),
                window_end: date(Some(end)),
                grace_end: date(Some(grace)),
                state,
                days_late: match state {
                    VisitState::Overdue | VisitState::Missed => day - end,
                    _ => 0,
                },
                done_response: r.oid(13),
                done_count,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Adverse events: the oversight queue

/// Where an adverse event's adjudication stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    /// No adjudication from the clinic yet.
    Awaiting,
    Open,
    Responded,
    Resolved,
    Disputed,
    /// The adjudication's status is conflicted (two devices set different ones).
    Conflicted,
}

impl CaseStatus {
    pub const ALL: [CaseStatus; 6] = [
        CaseStatus::Awaiting,
        CaseStatus::Open,
        CaseStatus::Responded,
        CaseStatus::Resolved,
        CaseStatus::Disputed,
        CaseStatus::Conflicted,
    ];
    pub fn code(self) -> &'static str {
        match self {
            CaseStatus::Awaiting => "awaiting",
            CaseStatus::Open => "open",
            CaseStatus::Responded => "responded",
            CaseStatus::Resolved => "resolved",
            CaseStatus::Disputed => "disputed",
            CaseStatus::Conflicted => "conflicted",
        }
    }
    pub fn from_code(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.code() == s)
    }
    /// Whether the clinic still owes a response (the deadline runs).
    pub fn awaits_clinic(self) -> bool {
        matches!(
            self,
            CaseStatus::Awaiting | CaseStatus::Open | CaseStatus::Conflicted
        )
    }
}

/// One adverse event in the oversight queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AeQueueItem {
    pub adverse_event: RecordId,
    pub clinic: ClinicId,
    pub clinic_name: Option<String>,
    pub patient: RecordId,
    pub study_code: Option<String>,
    pub reporter: Option<String>,
    pub category: Option<String>,
    pub onset: Option<String>,
    /// 1..=5; `None` when conflicted.
    pub severity: Option<i64>,
    /// `None` when conflicted.
    pub serious: Option<bool>,
    pub seriousness: Option<String>,
    pub outcome: Option<String>,
    pub status: CaseStatus,
    /// The latest adjudication record, if any.
    pub adjudication: Option<RecordId>,
    /// How many adjudication records answer it.
    pub adjudications: u64,
    /// When the registry first accepted the event (server clock).
    pub reported_at_ms: i64,
    /// The registry's deadline: first accepted + the policy's days for its severity.
    pub deadline: Option<NaiveDate>,
    /// The deadline the clinic's adjudication record states, if any (informative only).
    pub clinic_deadline: Option<String>,
    /// Days past the registry's deadline while the clinic still owes a response; 0 otherwise.
    pub days_overdue: i64,
    /// Fields of the event in conflict.
    pub conflicts: Option<String>,
    /// The registry's adjudication case of the event (`None` until the server opened one:
    /// events accepted before cases existed, or written outside the sync handler).
    pub case: Option<CaseLine>,
}

/// The registry's adjudication case of an event, as a queue line shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseLine {
    pub id: RecordId,
    /// The state at `as_of` (`open`, `responded`, `overdue`, `escalated`, `disputed`, `closed`;
    /// `None` when conflicted): the stored state, except that an `open` case past its deadline
    /// is `overdue` (the only change the clock alone makes, see `policy::case_state`).
    pub state: Option<String>,
    /// The deadline the server set (ISO date).
    pub deadline: Option<String>,
    pub deadline_day: Option<i64>,
    pub opened_at: Option<String>,
    /// The policy (`id@version`) and its rule that set the deadline.
    pub policy: Option<String>,
    pub rule: Option<String>,
    pub responded_at: Option<String>,
    pub escalations: i64,
    pub replies: i64,
    /// The patient's latest verdict on the clinic's remedy (`accepted` / `disputed`).
    pub last_verdict: Option<String>,
    pub closed_at: Option<String>,
    pub closed_note: Option<String>,
}

/// The state of a case at day `today` from its stored state and deadline.
pub fn case_state_at(
    stored: Option<&str>,
    deadline_day: Option<i64>,
    today: i64,
) -> Option<String> {
    match stored {
        Some("open") if deadline_day.is_some_and(|d| today > d) => Some("overdue".into()),
        other => other.map(str::to_string),
    }
}

/// Whether the clinic still owes the case a response in this state.
fn case_awaits_clinic(state: Option<&str>) -> bool {
    matches!(state, Some("open" | "overdue" | "escalated" | "disputed"))
}

/// The states a case can be in, for filters.
pub const CASE_STATES: [&str; 6] = [
    "open",
    "responded",
    "overdue",
    "escalated",
    "disputed",
    "closed",
];

/// Which events [`ae_queue`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AeFilter {
    /// Only these statuses (empty: all).
    pub statuses: Vec<CaseStatus>,
    /// Only events whose registry case is in one of these states ([`CASE_STATES`]; empty: all).
    pub case_states: Vec<String>,
    /// Only events past their deadline.
    pub overdue_only: bool,
    /// Only this patient's events.
    pub patient: Option<RecordId>,
    /// Page size (0: all).
    pub limit: u32,
    pub offset: u64,
}

const AE_EVENTS: &str = "SELECT a.id, a.clinic, c.name, a.patient, e.study_code, a.reporter,
    a.category, a.onset, a.severity, a.serious, a.seriousness, a.outcome, a.policy_days,
    r.first_accepted_ms, a.conflicts,
    k.id, k.state, k.deadline, k.deadline_day, k.opened_at, k.policy, k.rule, k.responded_at,
    k.escalations, k.replies, k.last_verdict, k.closed_at, k.closed_note
    FROM rm_adverse_events a
    JOIN rm_records r ON r.id = a.id
    LEFT JOIN rm_enrolments e ON e.id = a.patient
    LEFT JOIN rm_clinics c ON c.id = a.clinic
    LEFT JOIN rm_cases k ON k.adverse_event = a.id AND k.clinic = a.clinic
    WHERE ($1 = 0 OR a.clinic = $2) AND ($3 = 0 OR a.patient = $4)";

const AE_ADJUDICATIONS: &str = "SELECT j.adverse_event, j.id, j.status, j.deadline, r.last_seq,
    r.first_accepted_ms
    FROM rm_adjudications j
    JOIN rm_records r ON r.id = j.id
    WHERE ($1 = 0 OR j.clinic = $2) AND ($3 = 0 OR j.patient = $4)
      AND j.adverse_event IS NOT NULL";

struct AdjSummary {
    latest: (i64, RecordId, Option<String>, Option<String>),
    count: u64,
    first_accepted_ms: i64,
}

fn adjudications_by_event(
    s: &dyn Storage,
    p: &[Val],
) -> StorageResult<HashMap<RecordId, AdjSummary>> {
    let mut out: HashMap<RecordId, AdjSummary> = HashMap::new();
    for row in s.rm_query(AE_ADJUDICATIONS, p)? {
        let r = R(&row);
        let ae = r.id(0, "adjudication event")?;
        let id = r.id(1, "adjudication id")?;
        let seq = r.i(4).unwrap_or(0);
        let first = r.i(5).unwrap_or(0);
        let latest = (seq, id, r.t(2), r.t(3));
        match out.get_mut(&ae) {
            Some(a) => {
                a.count += 1;
                a.first_accepted_ms = a.first_accepted_ms.min(first);
                if latest.0 > a.latest.0 {
                    a.latest = latest;
                }
            }
            None => {
                out.insert(
                    ae,
                    AdjSummary {
                        latest,
                        count: 1,
                        first_accepted_ms: first,
                    },
                );
            }
        }
    }
    Ok(out)
}

const DAY_MS: i64 = 86_400_000;

/// Every adverse event in scope with its adjudication state, as of `as_of`, before filtering,
/// and the first adjudication's arrival (for response times).
fn ae_items(
    s: &dyn Storage,
    scope_: Option<ClinicId>,
    patient: Option<RecordId>,
    as_of: NaiveDate,
) -> StorageResult<Vec<(AeQueueItem, Option<i64>)>> {
    let p = params(
        scope_,
        [
            Val::Int(i64::from(patient.is_some())),
            Val::Blob(patient.map(|p| p.0.to_vec()).unwrap_or_default()),
        ],
    );
    let adj = adjudications_by_event(s, &p)?;
    let today = day_number(as_of);
    let mut out = Vec::new();
    for row in s.rm_query(AE_EVENTS, &p)? {
        let r = R(&row);
        let id = r.id(0, "adverse event id")?;
        let reported_at_ms = r.i(13).unwrap_or(0);
        let policy_days = r.i(12).unwrap_or(7);
        let case = r.oid(15).map(|case_id| CaseLine {
            id: case_id,
            state: case_state_at(r.t(16).as_deref(), r.i(18), today),
            deadline: r.t(17),
            deadline_day: r.i(18),
            opened_at: r.t(19),
            policy: r.t(20),
            rule: r.t(21),
            responded_at: r.t(22),
            escalations: r.i(23).unwrap_or(0),
            replies: r.i(24).unwrap_or(0),
            last_verdict: r.t(25),
            closed_at: r.t(26),
            closed_note: r.t(27),
        });
        // The registry's deadline: the one its case holds (set at the server's clock when the
        // event was first accepted, tightened if the event got graver); for an event without a
        // case, the same rule computed from the first acceptance.
        let deadline_day = case
            .as_ref()
            .and_then(|c| c.deadline_day)
            .unwrap_or(reported_at_ms.div_euclid(DAY_MS) + policy_days);
        let a = adj.get(&id);
        let status = match a {
            None => CaseStatus::Awaiting,
            Some(a) => match a.latest.2.as_deref() {
                None => CaseStatus::Conflicted,
                Some(code) => CaseStatus::from_code(code).unwrap_or(CaseStatus::Conflicted),
            },
        };
        let owes = match &case {
            Some(c) => case_awaits_clinic(c.state.as_deref()),
            None => status.awaits_clinic(),
        };
        let days_overdue = if owes && today > deadline_day {
            today - deadline_day
        } else {
            0
        };
        let item = AeQueueItem {
            adverse_event: id,
            clinic: r.id(1, "adverse event clinic")?,
            clinic_name: r.t(2),
            patient: r.id(3, "adverse event patient")?,
            study_code: r.t(4),
            reporter: r.t(5),
            category: r.t(6),
            onset: r.t(7),
            severity: r.i(8),
            serious: r.i(9).map(|v| v != 0),
            seriousness: r.t(10),
            outcome: r.t(11),
            status,
            adjudication: a.map(|a| a.latest.1),
            adjudications: a.map_or(0, |a| a.count),
            reported_at_ms,
            deadline: super::date_of_day(deadline_day),
            clinic_deadline: a.and_then(|a| a.latest.3.clone()),
            days_overdue,
            conflicts: r.t(14),
            case,
        };
        let response_ms = a.map(|a| (a.first_accepted_ms - reported_at_ms).max(0));
        out.push((item, response_ms));
    }
    Ok(out)
}

/// The adverse-event oversight queue: most overdue first, then soonest deadline.
pub fn ae_queue(
    s: &dyn Storage,
    scope_: Option<ClinicId>,
    as_of: NaiveDate,
    f: &AeFilter,
) -> StorageResult<Vec<AeQueueItem>> {
    let mut items: Vec<AeQueueItem> = ae_items(s, scope_, f.patient, as_of)?
        .into_iter()
        .map(|(i, _)| i)
        .filter(|i| f.statuses.is_empty() || f.statuses.contains(&i.status))
        .filter(|i| {
            f.case_states.is_empty()
                || i.case
                    .as_ref()
                    .and_then(|c| c.state.as_ref())
                    .is_some_and(|st| f.case_states.contains(st))
        })
        .filter(|i| !f.overdue_only || i.days_overdue > 0)
        .collect();
    items.sort_by(|a, b| {
        (
            std::cmp::Reverse(a.days_overdue),
            !a.status.awaits_clinic(),
            a.deadline,
            a.adverse_event,
        )
            .cmp(&(
                std::cmp::Reverse(b.days_overdue),
                !b.status.awaits_clinic(),
                b.deadline,
                b.adverse_event,
            ))
    });
    let start = usize::try_from(f.offset).unwrap_or(usize::MAX);
    let items = items.into_iter().skip(start);
    Ok(if f.limit == 0 {
        items.collect()
    } else {
        items.take(f.limit as usize).collect()
    })
}

// ---------------------------------------------------------------------------------------------
// Records: meta, history, conflicts, one event with its adjudications

/// Who recorded a record and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordMeta {
    pub id: RecordId,
    pub kind: String,
    pub clinic: ClinicId,
    pub patient: Option<RecordId>,
    /// The device that created it (`None`: the registry).
    pub created_by: Option<DeviceId>,
    /// The clinic user (hex id) the creating change was attributed to, if any.
    pub created_by_user: Option<String>,
    /// The device's clock when it created the record (unix seconds).
    pub created_at_s: Option<i64>,
    /// When the registry first accepted it (server clock, ms).
    pub first_accepted_ms: i64,
    /// When the registry last accepted a change to it.
    pub last_accepted_ms: i64,
    /// The device whose change was accepted last.
    pub last_device: Option<DeviceId>,
    /// The clinic user (hex id) who wrote last in that write, if any.
    pub last_user: Option<String>,
    /// How many fields are conflicted.
    pub conflicts: i64,
    /// Why the body could not be projected.
    pub problem: Option<String>,
}

const META_COLS: &str = "r.id, r.kind, r.clinic, r.patient, r.created_by, r.created_by_user,
    r.created_at_s, r.first_accepted_ms, r.last_accepted_ms, r.last_device, r.last_user,
    r.conflicts, r.problem";

fn meta_of(r: &R<'_>, o: usize) -> StorageResult<RecordMeta> {
    let user = |v: &Val| v.blob().map(hex::encode).or_else(|| opt_text(v));
    Ok(RecordMeta {
        id: r.id(o, "record id")?,
        kind: r.t(o + 1).unwrap_or_default(),
        clinic: r.id(o + 2, "record clinic")?,
        patient: r.oid(o + 3),
        created_by: r.dev(o + 4),
        created_by_user: user(r.v(o + 5)),
        created_at_s: r.i(o + 6),
        first_accepted_ms: r.i(o + 7).unwrap_or(0),
        last_accepted_ms: r.i(o + 8).unwrap_or(0),
        last_device: r.dev(o + 9),
        last_user: user(r.v(o + 10)),
        conflicts: r.i(o + 11).unwrap_or(0),
        problem: r.t(o + 12),
    })
}

/// A record's meta, if it is in scope.
pub fn record_meta(
    s: &dyn Storage,
    scope_: Option<ClinicId>,
    id: RecordId,
) -> StorageResult<Option<RecordMeta>> {
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        format!(
            "SELECT {META_COLS} FROM rm_records r WHERE ($1 = 0 OR r.clinic = $2) AND r.id = $3"
        )
    });
    s.rm_query(sql, &params(scope_, [Val::from(id)]))?
        .first()
        .map(|row| meta_of(&R(row), 0))
        .transpose()
}

/// One accepted write of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordWrite {
    pub seq: u64,
    pub at_ms: i64,
    /// The device whose changes were accepted (`None`: the registry).
    pub device: Option<DeviceId>,
    /// How many changes the write added.
    pub changes: u64,
    /// The clinic users its changes were attributed to (from the audit entry), the one who
    /// wrote last last.
    pub users: Vec<UserId>,
}

/// Every accepted write of a record, oldest first (from the write log and the audit chain).
pub fn record_history(
    s: &dyn Storage,
    scope_: Option<ClinicId>,
    id: RecordId,
) -> StorageResult<Vec<RecordWrite>> {
    let rows = s.rm_query(
        "SELECT l.seq, l.at_ms, a.device, a.change_hashes, a.detail FROM log l
         LEFT JOIN audit a ON a.log_seq = l.seq
         WHERE ($1 = 0 OR l.clinic = $2) AND l.doc = $3 ORDER BY l.seq",
        &params(scope_, [Val::from(id)]),
    )?;
    Ok(rows
        .iter()
        .map(|row| {
            let r = R(row);
            RecordWrite {
                seq: r.u(0),
                at_ms: r.i(1).unwrap_or(0),
                device: r.dev(2),
                changes: r.v(3).blob().map_or(0, |b| (b.len() / 32) as u64),
                users: r
                    .t(4)
                    .map(|d| crate::users::users_in_detail(&d))
                    .unwrap_or_default(),
            }
        })
        .collect())
}

/// One value of a conflicted field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConflictValue {
    pub record: RecordId,
    /// The field's path in the body, e.g. `answers.q03`, `severity`.
    pub path: String,
    /// The value, as JSON text.
    pub value: String,
    /// The device that wrote it (`None`: the registry).
    pub device: Option<DeviceId>,
    /// When that device made the change (its clock, unix seconds).
    pub time_s: Option<i64>,
    /// Whether Automerge shows this value (the console must not present it as settled).
    pub winner: bool,
}

fn conflict_of(row: &[Val]) -> StorageResult<ConflictValue> {
    let r = R(row);
    Ok(ConflictValue {
        record: r.id(0, "conflict record")?,
        path: r.t(1).unwrap_or_default(),
        value: r.t(2).unwrap_or_default(),
        device: r.dev(3),
        time_s: r.i(4),
        winner: r.i(5) == Some(1),
    })
}

/// Every conflicted value of one record (or, with `record: None`, of every record in scope, at
/// most `limit`).
pub fn conflicts(
    s: &dyn Storage,
    scope_: Option<ClinicId>,
    record: Option<RecordId>,
    limit: u32,
) -> StorageResult<Vec<ConflictValue>> {
    let p = params(
        scope_,
        [
            Val::Int(i64::from(record.is_some())),
            Val::Blob(record.map(|r| r.0.to_vec()).unwrap_or_default()),
            Val::Int(i64::from(limit)),
        ],
    );
    s.rm_query(
        "SELECT record, path, value, device, time_s, winner FROM rm_conflicts
         WHERE ($1 = 0 OR clinic = $2) AND ($3 = 0 OR record = $4)
         ORDER BY record, path, n LIMIT $5",
        &p,
    )?
    .iter()
    .map(|r| conflict_of(r))
    .collect()
}

/// An adverse event as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdverseEventRow {
    pub meta: RecordMeta,
    pub procedure: Option<RecordId>,
    pub reporter: Option<String>,
    pub category: Option<String>,
    pub onset: Option<String>,
    pub severity: Option<i64>,
    pub serious: Option<bool>,
    pub seriousness: Option<String>,
    pub outcome: Option<String>,
    pub description: Option<String>,
    pub policy_days: Option<i64>,
    pub conflicts: Option<String>,
}

/// An adjudication as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdjudicationRow {
    pub meta: RecordMeta,
    pub adverse_event: Option<RecordId>,
    pub relatedness: Option<String>,
    pub action: Option<String>,
    pub remedy: Option<String>,
    pub status: Option<String>,
    pub deadline: Option<String>,
    pub decided_at: Option<String>,
    pub conflicts: Option<String>,
    /// Every accepted write of it, oldest first.
    pub history: Vec<RecordWrite>,
}

/// One adverse event, its queue line, its adjudications (each with its write history) and every
/// conflicted value among them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AeDetail {
    pub event: AdverseEventRow,
    pub queue: AeQueueItem,
    /// The case's escalations and the patient's replies as the registry recorded them, in order.
    pub case_entries: Vec<CaseEntry>,
    /// The patient's reply records (`case_reply`) about this event.
    pub replies: Vec<CaseReplyRow>,
    pub adjudications: Vec<AdjudicationRow>,
    pub history: Vec<RecordWrite>,
    pub conflicts: Vec<ConflictValue>,
}

/// An escalation or a recorded patient reply of a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseEntry {
    /// `escalation` or `reply`.
    pub kind: String,
    /// Server time (RFC 3339).
    pub at: Option<String>,
    /// A reply's verdict (`accepted` / `disputed`).
    pub verdict: Option<String>,
    /// The escalation's note, or the reply's comment.
    pub text: Option<String>,
}

/// A patient's `case_reply` record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseReplyRow {
    pub meta: RecordMeta,
    pub verdict: Option<String>,
    pub comment: Option<String>,
    /// The phone's clock.
    pub replied_at: Option<String>,
    pub conflicts: Option<String>,
}

const CASE_ENTRIES_SQL: &str = "SELECT kind, n, at, verdict, text FROM rm_case_entries
    WHERE ($1 = 0 OR clinic = $2) AND record = $3 ORDER BY at, kind, n";

fn case_replies_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "SELECT {META_COLS}, q.verdict, q.comment, q.replied_at, q.conflicts
             FROM rm_case_replies q JOIN rm_records r ON r.id = q.id
             WHERE ($1 = 0 OR q.clinic = $2) AND q.adverse_event = $3
             ORDER BY r.first_seq"
        )
    })
}

fn ae_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "SELECT {META_COLS}, a.procedure, a.reporter, a.category, a.onset, a.severity,
             a.serious, a.seriousness, a.outcome, a.description, a.policy_days, a.conflicts
             FROM rm_adverse_events a JOIN rm_records r ON r.id = a.id
             WHERE ($1 = 0 OR a.clinic = $2) AND ($3 = 0 OR a.id = $4) AND ($5 = 0 OR a.patient = $6)
             ORDER BY r.first_seq"
        )
    })
}

fn ae_row(row: &[Val]) -> StorageResult<AdverseEventRow> {
    let r = R(row);
    Ok(AdverseEventRow {
        meta: meta_of(&r, 0)?,
        procedure: r.oid(13),
        reporter: r.t(14),
        category: r.t(15),
        onset: r.t(16),
        severity: r.i(17),
        serious: r.i(18).map(|v| v != 0),
        seriousness: r.t(19),
        outcome: r.t(20),
        description: r.t(21),
        policy_days: r.i(22),
        conflicts: r.t(23),
    })
}

fn adj_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "SELECT {META_COLS}, j.adverse_event, j.relatedness, j.action, j.remedy, j.status,
             j.deadline, j.decided_at, j.conflicts
             FROM rm_adjudications j JOIN rm_records r ON r.id = j.id
             WHERE ($1 = 0 OR j.clinic = $2) AND ($3 = 0 OR j.adverse_event = $4)
               AND ($5 = 0 OR j.patient = $6)
             ORDER BY r.first_seq"
        )
    })
}

fn adj_row(row: &[Val]) -> StorageResult<AdjudicationRow> {
    let r = R(row);
    Ok(AdjudicationRow {
        meta: meta_of(&r, 0)?,
        adverse_event: r.oid(13),
        relatedness: r.t(14),
        action: r.t(15),
        remedy: r.t(16),
        status: r.t(17),
        deadline: r.t(18),
        decided_at: r.t(19),
        conflicts: r.t(20),
        history: Vec::new(),
    })
}

fn by(flag: Option<RecordId>) -> [Val; 2] {
    [
        Val::Int(i64::from(flag.is_some())),
        Val::Blob(flag.map(|r| r.0.to_vec()).unwrap_or_default()),
    ]
}

/// One adverse event in full, if it is in scope.
pub fn ae_detail(
    s: &dyn Storage,
    scope_: Option<ClinicId>,
    id: RecordId,
    as_of: NaiveDate,
) -> StorageResult<Option<AeDetail>> {
    let rows = s.rm_query(
        ae_sql(),
        &params(scope_, by(Some(id)).into_iter().chain(by(None))),
    )?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let event = ae_row(row)?;
    let patient = event.meta.patient;
    let queue = ae_items(s, scope_, patient, as_of)?
        .into_iter()
        .map(|(i, _)| i)
        .find(|i| i.adverse_event == id)
        .ok_or_else(|| corrupt("adverse event without a queue line"))?;
    let mut adjudications = Vec::new();
    for row in s.rm_query(
        adj_sql(),
        &params(scope_, by(Some(id)).into_iter().chain(by(None))),
    )? {
        let mut a = adj_row(&row)?;
        a.history = record_history(s, scope_, a.meta.id)?;
        adjudications.push(a);
    }
    let mut conflicts_ = conflicts(s, scope_, Some(id), 10_000)?;
    for a in &adjudications {
        conflicts_.extend(conflicts(s, scope_, Some(a.meta.id), 10_000)?);
    }
    let mut case_entries = Vec::new();
    if let Some(c) = &queue.case {
        for row in s.rm_query(
            CASE_ENTRIES_SQL,
            &params(scope_, [Val::Blob(c.id.0.to_vec())]),
        )? {
            let r = R(&row);
            case_entries.push(CaseEntry {
                kind: r.t(0).unwrap_or_default(),
                at: r.t(2),
                verdict: r.t(3),
                text: r.t(4),
            });
        }
    }
    let mut replies = Vec::new();
    for row in s.rm_query(
        case_replies_sql(),
        &params(scope_, [Val::Blob(id.0.to_vec())]),
    )? {
        let r = R(&row);
        replies.push(CaseReplyRow {
            meta: meta_of(&r, 0)?,
            verdict: r.t(13),
            comment: r.t(14),
            replied_at: r.t(15),
            conflicts: r.t(16),
        });
    }
    Ok(Some(AeDetail {
        history: record_history(s, scope_, id)?,
        case_entries,
        replies,
        event,
        queue,
        adjudications,
        conflicts: conflicts_,
    }))
}

// ---------------------------------------------------------------------------------------------
// A patient's timeline

/// The enrolment, pseudonymous.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnrolmentRow {
    pub meta: RecordMeta,
    pub study_code: Option<String>,
    pub birth_year: Option<i64>,
    pub sex: Option<String>,
    pub enrolled_on: Option<String>,
    pub consent_form_version: Option<String>,
    pub consent_date: Option<String>,
    pub consent_scope: Option<String>,
    pub conflicts: Option<String>,
}

/// A procedure as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcedureRow {
    pub meta: RecordMeta,
    pub date: Option<String>,
    pub condition: Option<String>,
    pub procedure_type: Option<String>,
    pub route: Option<String>,
    pub cell_type: Option<String>,
    pub source_tissue: Option<String>,
    pub origin: Option<String>,
    pub manipulation: Option<String>,
    pub regulatory_status: Option<String>,
    pub trial_registration: Option<String>,
    pub cost_minor: Option<i64>,
    pub cost_currency: Option<String>,
    /// JSON list of `{benefit, measure}`.
    pub promised_benefits: Option<String>,
    pub conflicts: Option<String>,
}

/// One answer. `value` is `None` when the answer is conflicted (see the conflicts).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnswerRow {
    pub item: String,
    /// `int`, `bool`, `decimal`, `text`, `choices` (JSON list), or `conflict`.
    pub value_type: String,
    pub value: Option<serde_json::Value>,
    pub conflicted: bool,
}

/// A response with its answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResponseRow {
    pub meta: RecordMeta,
    pub procedure: Option<RecordId>,
    pub visit: Option<String>,
    pub questionnaire: Option<String>,
    pub questionnaire_version: Option<String>,
    pub completed_by: Option<String>,
    pub status: Option<String>,
    pub submitted_at: Option<String>,
    pub conflicts: Option<String>,
    pub answers: Vec<AnswerRow>,
}

/// Everything recorded about one patient, by study code, never by name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    pub enrolment: EnrolmentRow,
    pub procedures: Vec<ProcedureRow>,
    /// Every visit of every procedure, with its state as of the date asked.
    pub visits: Vec<PatientVisit>,
    pub responses: Vec<ResponseRow>,
    pub adverse_events: Vec<AdverseEventRow>,
    pub adjudications: Vec<AdjudicationRow>,
    pub conflicts: Vec<ConflictValue>,
}

fn answer_of(row: &[Val]) -> AnswerRow {
    let r = R(row);
    let ty = r.t(1).unwrap_or_default();
    let value = match ty.as_str() {
        "int" => r.i(2).map(serde_json::Value::from),
        "bool" => r.i(2).map(|v| serde_json::Value::Bool(v != 0)),
        "decimal" => r
            .v(3)
            .real()
            .and_then(serde_json::Number::from_f64)
            .map(serde_json::Value::Number),
        "text" => r.t(4).map(serde_json::Value::String),
        "choices" => r.t(4).and_then(|t| serde_json::from_str(&t).ok()),
        _ => None,
    };
    AnswerRow {
        item: r.t(0).unwrap_or_default(),
        value_type: ty,
        value,
        conflicted: r.i(5) == Some(1),
    }
}

/// The answers of one response (or adverse event), in item order.
pub fn answers(
    s: &dyn Storage,
    scope_: Option<ClinicId>,
    record: RecordId,
) -> StorageResult<Vec<AnswerRow>> {
    Ok(s.rm_query(
        "SELECT item, value_type, value_int, value_real, value_text, conflicted FROM rm_answers
             WHERE ($1 = 0 OR clinic = $2) AND response = $3 ORDER BY item",
        &params(scope_, [Val::from(record)]),
    )?
    .iter()
    .map(|r| answer_of(r))
    .collect())
}

/// A patient's timeline, if the patient is in scope.
pub fn patient_timeline(
    s: &dyn Storage,
    scope_: Option<ClinicId>,
    patient: RecordId,
    as_of: NaiveDate,
) -> StorageResult<Option<Timeline>> {
    static ENROLMENT: OnceLock<String> = OnceLock::new();
    static PROCEDURES: OnceLock<String> = OnceLock::new();
    static RESPONSES: OnceLock<String> = OnceLock::new();
    let p = params(scope_, [Val::from(patient)]);
    let sql = ENROLMENT.get_or_init(|| {
        format!(
            "SELECT {META_COLS}, e.study_code, e.birth_year, e.sex, e.enrolled_on,
             e.consent_form_version, e.consent_date, e.consent_scope, e.conflicts
             FROM rm_enrolments e JOIN rm_records r ON r.id = e.id
             WHERE ($1 = 0 OR e.clinic = $2) AND e.id = $3"
        )
    });
    let rows = s.rm_query(sql, &p)?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let r = R(row);
    let enrolment = EnrolmentRow {
        meta: meta_of(&r, 0)?,
        study_code: r.t(13),
        birth_year: r.i(14),
        sex: r.t(15),
        enrolled_on: r.t(16),
        consent_form_version: r.t(17),
        consent_date: r.t(18),
        consent_scope: r.t(19),
        conflicts: r.t(20),
    };
    let sql = PROCEDURES.get_or_init(|| {
        format!(
            "SELECT {META_COLS}, p.date, p.condition, p.procedure_type, p.route, p.cell_type,
             p.source_tissue, p.origin, p.manipulation, p.regulatory_status, p.trial_registration,
             p.cost_minor, p.cost_currency, p.promised_benefits, p.conflicts
             FROM rm_procedures p JOIN rm_records r ON r.id = p.id
             WHERE ($1 = 0 OR p.clinic = $2) AND p.patient = $3 ORDER BY p.date, p.id"
        )
    });
    let procedures = s
        .rm_query(sql, &p)?
        .iter()
        .map(|row| {
            let r = R(row);
            Ok(ProcedureRow {
                meta: meta_of(&r, 0)?,
                date: r.t(13),
                condition: r.t(14),
                procedure_type: r.t(15),
                route: r.t(16),
                cell_type: r.t(17),
                source_tissue: r.t(18),
                origin: r.t(19),
                manipulation: r.t(20),
                regulatory_status: r.t(21),
                trial_registration: r.t(22),
                cost_minor: r.i(23),
                cost_currency: r.t(24),
                promised_benefits: r.t(25),
                conflicts: r.t(26),
            })
        })
        .collect::<StorageResult<Vec<_>>>()?;
    let visits = visit_list(
        s,
        scope_,
        as_of,
        &VisitFilter {
            states: VisitState::ALL.to_vec(),
            patient: Some(patient),
            limit: 10_000,
            ..VisitFilter::default()
        },
    )?;
    let sql = RESPONSES.get_or_init(|| {
        format!(
            "SELECT {META_COLS}, x.procedure, x.visit, x.questionnaire, x.questionnaire_version,
             x.completed_by, x.status, x.submitted_at, x.conflicts
             FROM rm_responses x JOIN rm_records r ON r.id = x.id
             WHERE ($1 = 0 OR x.clinic = $2) AND x.patient = $3
             ORDER BY x.submitted_at, r.first_seq"
        )
    });
    let mut responses = Vec::new();
    for row in s.rm_query(sql, &p)? {
        let r = R(&row);
        let meta = meta_of(&r, 0)?;
        let answers = answers(s, scope_, meta.id)?;
        responses.push(ResponseRow {
            meta,
            procedure: r.oid(13),
            visit: r.t(14),
            questionnaire: r.t(15),
            questionnaire_version: r.t(16),
            completed_by: r.t(17),
            status: r.t(18),
            submitted_at: r.t(19),
            conflicts: r.t(20),
            answers,
        });
    }
    let ae_p = params(scope_, by(None).into_iter().chain(by(Some(patient))));
    let adverse_events = s
        .rm_query(ae_sql(), &ae_p)?
        .iter()
        .map(|r| ae_row(r))
        .collect::<StorageResult<Vec<_>>>()?;
    let adjudications = s
        .rm_query(adj_sql(), &ae_p)?
        .iter()
        .map(|r| adj_row(r))
        .collect::<StorageResult<Vec<_>>>()?;
    let conflicts_ = s
        .rm_query(
            "SELECT c.record, c.path, c.value, c.device, c.time_s, c.winner FROM rm_conflicts c
             JOIN rm_records r ON r.id = c.record
             WHERE ($1 = 0 OR c.clinic = $2) AND r.patient = $3 ORDER BY c.record, c.path, c.n",
            &p,
        )?
        .iter()
        .map(|r| conflict_of(r))
        .collect::<StorageResult<Vec<_>>>()?;
    Ok(Some(Timeline {
        enrolment,
        procedures,
        visits,
        responses,
        adverse_events,
        adjudications,
        conflicts: conflicts_,
    }))
}

/// Find a patient by the clinic's study code (several clinics may use the same code).
pub fn find_patients(
    s: &dyn Storage,
    scope_: Option<ClinicId>,
    study_code: &str,
) -> StorageResult<Vec<(ClinicId, RecordId)>> {
    s.rm_query(
        "SELECT clinic, id FROM rm_enrolments WHERE ($1 = 0 OR clinic = $2) AND study_code = $3
         ORDER BY clinic, id",
        &params(scope_, [Val::Text(study_code.to_string())]),
    )?
    .iter()
    .map(|row| {
        let r = R(row);
        Ok((r.id(0, "enrolment clinic")?, r.id(1, "enrolment id")?))
    })
    .collect()
}

// ---------------------------------------------------------------------------------------------
// Clinics

/// One enrolled device and its activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceActivity {
    pub device: DeviceId,
    pub clinic: ClinicId,
    /// `clinic_device` or `patient_device`.
    pub role: String,
    pub label: Option<String>,
    pub patient: Option<RecordId>,
    pub enrolled_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    /// Its last authenticated request (a sync), server clock.
    pub last_seen_ms: Option<i64>,
    /// Authenticated requests since the read model started counting.
    pub requests: u64,
    /// Its last accepted record change.
    pub last_write_ms: Option<i64>,
}

/// A clinic's participation figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClinicStats {
    pub clinic: ClinicId,
    pub name: Option<String>,
    pub country: Option<String>,
    /// As the clinic record states it (`invited`, `participating`, …).
    pub participation: Option<String>,
    /// When the registry created the clinic (server clock).
    pub created_at_ms: Option<i64>,
    pub patients: u64,
    pub procedures: u64,
    pub responses: u64,
    pub adverse_events: u64,
    /// Adverse events the clinic still owes a response on.
    pub open_adverse_events: u64,
    /// Of those, past the registry's deadline.
    pub overdue_adverse_events: u64,
    /// Visits done / expected (done, overdue or missed), all visits of the schedule.
    pub visits_done: u64,
    pub visits_expected: u64,
    pub completion_rate: Option<f64>,
    /// Median time from the registry accepting an adverse event to it accepting the clinic's
    /// first adjudication of it, over the events adjudicated.
    pub median_adjudication_response_ms: Option<i64>,
    pub devices: Vec<DeviceActivity>,
    /// The last time any of its devices was seen.
    pub last_sync_ms: Option<i64>,
}

fn counts_by_clinic(
    s: &dyn Storage,
    sql: &'static str,
    p: &[Val],
) -> StorageResult<HashMap<RecordId, u64>> {
    let mut out = HashMap::new();
    for row in s.rm_query(sql, p)? {
        let r = R(&row);
        out.insert(r.id(0, "clinic")?, r.u(1));
    }
    Ok(out)
}

/// The devices in scope with their activity.
pub fn devices(s: &dyn Storage, scope_: Option<ClinicId>) -> StorageResult<Vec<DeviceActivity>> {
    s.rm_query(
        "SELECT d.id, d.clinic, d.role, d.label, d.patient, d.enrolled_at_ms, d.revoked_at_ms,
         a.last_seen_ms, a.requests,
         (SELECT MAX(r.last_accepted_ms) FROM rm_records r WHERE r.last_device = d.id)
         FROM devices d LEFT JOIN device_activity a ON a.device = d.id
         WHERE ($1 = 0 OR d.clinic = $2) ORDER BY d.clinic, d.enrolled_at_ms, d.id",
        &params(scope_, []),
    )?
    .iter()
    .map(|row| {
        let r = R(row);
        Ok(DeviceActivity {
            device: r.dev(0).ok_or_else(|| corrupt("device id"))?,
            clinic: r.id(1, "device clinic")?,
            role: r.t(2).unwrap_or_default(),
            label: r.t(3),
            patient: r.oid(4),
            enrolled_at_ms: r.i(5).unwrap_or(0),
            revoked_at_ms: r.i(6),
            last_seen_ms: r.i(7),
            requests: r.u(8),
            last_write_ms: r.i(9),
        })
    })
    .collect()
}

fn median(mut v: Vec<i64>) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    })
}

const SUBMITTED_BY_CLINIC: &str = "SELECT clinic, COUNT(*) FROM rm_responses
    WHERE ($1 = 0 OR clinic = $2) AND status = 'submitted' GROUP BY clinic";

/// Per-clinic statistics for the clinics in scope, by name.
pub fn clinic_stats(
    s: &dyn Storage,
    scope_: Option<ClinicId>,
    as_of: NaiveDate,
) -> StorageResult<Vec<ClinicStats>> {
    let p = params(scope_, []);
    let patients = counts_by_clinic(
        s,
        "SELECT clinic, COUNT(*) FROM rm_enrolments WHERE ($1 = 0 OR clinic = $2) GROUP BY clinic",
        &p,
    )?;
    let procedures = counts_by_clinic(
        s,
        "SELECT clinic, COUNT(*) FROM rm_procedures WHERE ($1 = 0 OR clinic = $2) GROUP BY clinic",
        &p,
    )?;
    let responses = counts_by_clinic(s, SUBMITTED_BY_CLINIC, &p)?;
    let mut visits: HashMap<RecordId, (u64, u64)> = HashMap::new();
    for c in visit_counts(s, scope_, as_of)? {
        if let Some(clinic) = c.clinic {
            let e = visits.entry(clinic).or_default();
            e.0 += c.done;
            e.1 += c.expected();
        }
    }
    #[derive(Default)]
    struct Ae {
        all: u64,
        open: u64,
        overdue: u64,
        times: Vec<i64>,
    }
    let mut aes: HashMap<RecordId, Ae> = HashMap::new();
    for (item, response_ms) in ae_items(s, scope_, None, as_of)? {
        let a = aes.entry(item.clinic).or_default();
        a.all += 1;
        a.open += u64::from(item.status.awaits_clinic());
        a.overdue += u64::from(item.days_overdue > 0);
        a.times.extend(response_ms);
    }
    let mut devs: HashMap<RecordId, Vec<DeviceActivity>> = HashMap::new();
    for d in devices(s, scope_)? {
        devs.entry(d.clinic).or_default().push(d);
    }
    let mut out = Vec::new();
    for row in s.rm_query(
        "SELECT c.id, c.name, c.country, c.participation, k.created_at_ms
         FROM rm_clinics c LEFT JOIN clinics k ON k.id = c.id
         WHERE ($1 = 0 OR c.id = $2) ORDER BY c.name, c.id",
        &p,
    )? {
        let r = R(&row);
        let id = r.id(0, "clinic id")?;
        let (done, expected) = visits.get(&id).copied().unwrap_or_default();
        let ae = aes.remove(&id).unwrap_or_default();
        let devices = devs.remove(&id).unwrap_or_default();
        out.push(ClinicStats {
            clinic: id,
            name: r.t(1),
            country: r.t(2),
            participation: r.t(3),
            created_at_ms: r.i(4),
            patients: patients.get(&id).copied().unwrap_or(0),
            procedures: procedures.get(&id).copied().unwrap_or(0),
            responses: responses.get(&id).copied().unwrap_or(0),
            adverse_events: ae.all,
            open_adverse_events: ae.open,
            overdue_adverse_events: ae.overdue,
            visits_done: done,
            visits_expected: expected,
            completion_rate: (expected > 0).then(|| done as f64 / expected as f64),
            median_adjudication_response_ms: median(ae.times),
            last_sync_ms: devices.iter().filter_map(|d| d.last_seen_ms).max(),
            devices,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Paged iteration for exports

/// A read-model table an export can iterate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportTable {
    Records,
    Clinics,
    Enrolments,
    Procedures,
    Visits,
    Responses,
    Answers,
    AdverseEvents,
    Adjudications,
    Conflicts,
}

impl ExportTable {
    pub const ALL: [ExportTable; 10] = [
        ExportTable::Records,
        ExportTable::Clinics,
        ExportTable::Enrolments,
        ExportTable::Procedures,
        ExportTable::Visits,
        ExportTable::Responses,
        ExportTable::Answers,
        ExportTable::AdverseEvents,
        ExportTable::Adjudications,
        ExportTable::Conflicts,
    ];
    /// The table's definition (column names and types, in row order).
    pub fn table(self) -> &'static Table {
        schema::ALL[self as usize]
    }
    fn scope_col(self) -> &'static str {
        match self {
            ExportTable::Clinics => "id",
            _ => "clinic",
        }
    }
}

fn page_sql(t: ExportTable) -> &'static str {
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        ExportTable::ALL
            .iter()
            .map(|&e| {
                let table = e.table();
                let cols: Vec<&str> = table.cols.iter().map(|(c, _)| *c).collect();
                // Keyset on the primary key: (k1 > $3) OR (k1 = $3 AND k2 > $4) OR ...
                let mut terms = Vec::new();
                for i in 0..table.pk.len() {
                    let mut t: Vec<String> = (0..i)
                        .map(|j| format!("{} = ${}", table.pk[j], j + 3))
                        .collect();
                    t.push(format!("{} > ${}", table.pk[i], i + 3));
                    terms.push(format!("({})", t.join(" AND ")));
                }
                let limit = table.pk.len() + 3;
                format!(
                    "SELECT {} FROM {} WHERE ($1 = 0 OR {} = $2) AND ({}) ORDER BY {} LIMIT ${limit}",
                    cols.join(", "),
                    table.name,
                    e.scope_col(),
                    terms.join(" OR "),
                    table.pk.join(", ")
                )
            })
            .collect()
    });
    all.get(t as usize).map_or("", String::as_str)
}

/// Rows of one table in primary-key order, a page at a time: memory stays bounded by the page
/// whatever the table's size, and no connection is held between pages.
pub struct RowIter<'s> {
    storage: &'s dyn Storage,
    table: ExportTable,
    scope: Option<ClinicId>,
    page: usize,
    /// The last row's key, once a page was read.
    after: Option<Vec<Val>>,
    buf: std::vec::IntoIter<Vec<Val>>,
    done: bool,
}

impl<'s> RowIter<'s> {
    /// The columns of every row, in order.
    pub fn columns(&self) -> &'static [(&'static str, ColType)] {
        self.table.table().cols
    }
    fn fetch(&mut self) -> StorageResult<()> {
        let table = self.table.table();
        let key: Vec<Val> = match &self.after {
            Some(k) => k.clone(),
            None => table
                .pk
                .iter()
                .map(|c| match table.cols[table.col(c)].1 {
                    ColType::Blob => Val::Blob(Vec::new()),
                    ColType::Text => Val::Text(String::new()),
                    _ => Val::Int(i64::MIN),
                })
                .collect(),
        };
        let limit = i64::try_from(self.page).unwrap_or(i64::MAX);
        let p = params(self.scope, key.into_iter().chain([Val::Int(limit)]));
        let rows = self.storage.rm_query(page_sql(self.table), &p)?;
        if rows.len() < self.page {
            self.done = true;
        }
        if let Some(last) = rows.last() {
            self.after = Some(
                table
                    .pk
                    .iter()
                    .map(|c| last.get(table.col(c)).cloned().unwrap_or(Val::Null))
                    .collect(),
            );
        }
        self.buf = rows.into_iter();
        Ok(())
    }
}

impl Iterator for RowIter<'_> {
    type Item = StorageResult<Vec<Val>>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.buf.next() {
                return Some(Ok(r));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.fetch() {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}

/// Iterate every row of `table` in scope, `page` rows per query.
pub fn rows<'s>(
    s: &'s dyn Storage,
    table: ExportTable,
    scope_: Option<ClinicId>,
    page: usize,
) -> RowIter<'s> {
    RowIter {
        storage: s,
        table,
        scope: scope_,
        page: page.max(1),
        after: None,
        buf: Vec::new().into_iter(),
        done: false,
    }
}

/// Every row of every table, in key order (for tests comparing a rebuilt read model with the
/// incrementally kept one, and for diagnostics). Loads everything: not for large registries.
pub fn dump(s: &dyn Storage) -> StorageResult<BTreeMap<&'static str, Vec<Vec<Val>>>> {
    let stmts = schema::statements(super::Dialect::Sqlite);
    let mut out = BTreeMap::new();
    for (i, t) in schema::ALL.iter().enumerate() {
        let sql = stmts.dump.get(i).map_or("", String::as_str);
        out.insert(t.name, s.rm_query(sql, &[])?);
    }
    Ok(out)
}

#[cfg(test)]
mod plan_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::storage::SqliteStorage;

    /// SQLite's plan for a query, one line per step.
    fn plan(s: &SqliteStorage, sql: &str, params: &[Val]) -> String {
        let sql: &'static str = Box::leak(format!("EXPLAIN QUERY PLAN {sql}").into_boxed_str());
        s.rm_query(sql, params)
            .unwrap()
            .iter()
            .map(|row| match row.get(3) {
                Some(Val::Text(t)) => t.clone(),
                other => format!("{other:?}"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The registry-wide pages aggregate every visit and count every submitted response on
    /// each request: both must read an index alone, never look up the tables' rows (at 130,000
    /// visits that lookup was most of a page's time).
    #[test]
    fn the_registry_wide_aggregates_read_covering_indexes_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStorage::open(&dir.path().join("db")).unwrap();
        let day = Val::Int(20_000);
        for scope_ in [None, Some(RecordId([7; 16]))] {
            let p = plan(&s, VISIT_COUNTS, &params(scope_, [day.clone()]));
            assert!(p.contains("COVERING INDEX rm_visits_counts"), "{p}");
            assert!(!p.contains("TEMP B-TREE"), "grouped in index order: {p}");
            let p = plan(&s, SUBMITTED_BY_CLINIC, &params(scope_, []));
            assert!(p.contains("COVERING INDEX rm_responses_status"), "{p}");
        }
    }
}
