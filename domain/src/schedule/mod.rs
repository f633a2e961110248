//! Follow-up schedules and the upcoming / due / overdue / missed / done classification.
//!
//! ## The model
//!
//! A [`Schedule`] is data (JSON, format below): a list of [`Visit`]s, each at `offset_days` after
//! the procedure date, answered by one questionnaire, with a window around its target date. The
//! registry's default, [`Schedule::default_registry`] (`core/schedules/default.json`):
//!
//! | visits | offsets (days) | window |
//! |---|---|---|
//! | `d7` | 7 | ± 2 days |
//! | `m1`, `m3`, `m6`, `m12` | 30, 91, 182, 365 | ± 14 days |
//! | `y2`, `y3`, `y4`, `y5` | 730, 1095, 1460, 1825 | ± 30 days |
//!
//! all answered by `clinician-followup`, plus a patient survey (`patient-outcome-survey`) at the
//! same offsets and windows from month 1 on, with ids `m1-survey` … `y5-survey`: patients complete
//! it on their own phone, and a nurse's list can show whose survey is overdue. A client that wants
//! only one kind of visit narrows the schedule once with [`Schedule::for_questionnaire`].
//!
//! ### Series
//!
//! The visits answered by the same questionnaire form a *series* (clinician visits; patient
//! surveys). Within a series, windows may not overlap, so a response falls in at most one window.
//!
//! ### States, as of a date (all bounds inclusive, in whole days)
//!
//! For a visit with `target = procedure_date + offset_days`:
//!
//! * `window_start = target − window_before_days`, `window_end = target + window_after_days`;
//! * `grace_end = min(window_end + grace, next_window_start − 1)`, where `grace` is the visit's
//!   `grace_days` or else the schedule's, and `next_window_start` is the window start of the next
//!   visit of the same series (no such limit for the series' last visit). So a late visit can
//!   still be done for `grace` days, but stops being chased once the next visit's window opens.
//!   `grace_end ≥ window_end` always (windows in a series do not overlap).
//!
//! | state | when |
//! |---|---|
//! | [`VisitState::Done`] | the visit id is in the patient's done set (a submitted response answers it), whatever the date |
//! | [`VisitState::Upcoming`] | `as_of < window_start` |
//! | [`VisitState::Due`] | `window_start ≤ as_of ≤ window_end` |
//! | [`VisitState::Overdue`] | `window_end < as_of ≤ grace_end` (empty when the next window opens the day after `window_end`) |
//! | [`VisitState::Missed`] | `as_of > grace_end` |
//!
//! For a visit not done, the state only moves forward as `as_of` increases: upcoming → due →
//! overdue → missed.
//!
//! Default example, procedure on 2024-01-01: `d7` targets 2024-01-08, is due 2024-01-06 ..=
//! 2024-01-10, overdue 2024-01-11 ..= 2024-01-16 (the day before `m1`'s window opens on
//! 2024-01-17; `window_end + 14` would be later), missed from 2024-01-17.
//!
//! ### Cost
//!
//! Offsets are precomputed when a schedule is loaded; classifying is integer arithmetic on day
//! numbers plus one set lookup per visit. [`Schedule::worklist`] over 10,000 patients allocates
//! only its output (the statuses borrow ids and labels from the schedule).
//!
//! ## JSON format
//!
//! ```json
//! { "id": "registry-default", "version": "1.0.0", "description": "optional",
//!   "grace_days": 14,
//!   "visits": [
//!     { "id": "d7", "label": "Day 7 clinician follow-up", "offset_days": 7,
//!       "window_before_days": 2, "window_after_days": 2,
//!       "questionnaire": "clinician-followup", "grace_days": 7 } ] }
//! ```
//!
//! A visit's `grace_days` is optional (default: the schedule's). Visits may be listed in any
//! order; they are sorted by offset (stably). Unknown fields are refused. Limits: offsets 0 ..=
//! 36,500 days, windows and grace 0 ..= 3,650 days, and a window may not open before the
//! procedure day.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// Largest `offset_days` accepted (100 years).
pub const MAX_OFFSET_DAYS: i64 = 36_500;
/// Largest window or grace accepted (10 years).
pub const MAX_WINDOW_DAYS: i64 = 3_650;

/// One planned follow-up visit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Visit {
    /// Unique within the schedule, e.g. `m3`; what a response's `visit` field names.
    pub id: String,
    /// What it is called, e.g. `Month 3 clinician follow-up`.
    pub label: String,
    /// Days from the procedure date to the target date.
    pub offset_days: i64,
    /// Days the window opens before the target.
    pub window_before_days: i64,
    /// Days the window stays open after the target.
    pub window_after_days: i64,
    /// The id of the questionnaire that answers it.
    pub questionnaire: String,
    /// This visit's grace period after its window; the schedule's `grace_days` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_days: Option<i64>,
}

/// Where a visit stands as of a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisitState {
    /// Its window has not opened yet.
    Upcoming,
    /// Its window is open.
    Due,
    /// Its window has closed but it may still be done (grace period).
    Overdue,
    /// Its grace period is over and it was not done.
    Missed,
    /// A submitted response answers it.
    Done,
}

impl VisitState {
    /// Urgency rank for work lists: overdue 0, due 1, upcoming 2, missed 3, done 4.
    pub fn urgency_rank(self) -> u8 {
        match self {
            VisitState::Overdue => 0,
            VisitState::Due => 1,
            VisitState::Upcoming => 2,
            VisitState::Missed => 3,
            VisitState::Done => 4,
        }
    }
}

/// One visit of one patient, classified. Borrows its strings from the [`Schedule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VisitStatus<'a> {
    /// The visit's id.
    pub visit_id: &'a str,
    /// The visit's label.
    pub label: &'a str,
    /// The questionnaire that answers it.
    pub questionnaire: &'a str,
    /// Procedure date + offset.
    pub target: NaiveDate,
    /// First day of the window.
    pub window_start: NaiveDate,
    /// Last day of the window.
    pub window_end: NaiveDate,
    /// Last day it counts as overdue rather than missed.
    pub grace_end: NaiveDate,
    /// Its state.
    pub state: VisitState,
}

impl VisitStatus<'_> {
    /// The date a work list sorts by within a state: `grace_end` when overdue, `window_end` when
    /// due or missed, `window_start` when upcoming, `target` when done.
    pub fn deadline(&self) -> NaiveDate {
        match self.state {
            VisitState::Overdue => self.grace_end,
            VisitState::Due | VisitState::Missed => self.window_end,
            VisitState::Upcoming => self.window_start,
            VisitState::Done => self.target,
        }
    }
}

/// One line of a clinic's work list: a patient and one of their visits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatientVisit<'a, K> {
    /// The caller's patient key.
    pub patient: K,
    /// The visit.
    pub status: VisitStatus<'a>,
}

/// Why a schedule was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The document does not fit the schedule format.
    #[error("schedule definition is not valid: {0}")]
    Json(#[from] serde_json::Error),
    /// A top-level field is empty or out of range.
    #[error("schedule {field} is invalid: {reason}")]
    BadField {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The schedule has no visits.
    #[error("schedule has no visits")]
    NoVisits,
    /// Two visits share an id.
    #[error("visit {0}: duplicate visit id")]
    DuplicateVisit(String),
    /// A visit field is empty, negative or too large.
    #[error("visit {visit}: {reason}")]
    InvalidVisit {
        /// The visit (`#n` when its id is empty).
        visit: String,
        /// What is wrong.
        reason: String,
    },
    /// Two visits of one series have overlapping windows.
    #[error("visits {first} and {second} of {questionnaire}: windows overlap")]
    OverlappingWindows {
        /// The series' questionnaire.
        questionnaire: String,
        /// The earlier visit.
        first: String,
        /// The later visit.
        second: String,
    },
}

/// One language's texts of a schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleTranslation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Visit id → label.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub visits: std::collections::BTreeMap<String, String>,
}

/// The schedule as read. Unknown fields are ignored (a device reads definitions newer than
/// itself); the registry refuses them before publishing.
#[derive(Deserialize, Serialize)]
struct RawSchedule {
    #[serde(default = "format_one")]
    format: u32,
    #[serde(default = "schedule_code")]
    definition: String,
    id: String,
    version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    effective_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    grace_days: i64,
    visits: Vec<Visit>,
    #[serde(default = "english")]
    language: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    translations: std::collections::BTreeMap<String, ScheduleTranslation>,
}

fn format_one() -> u32 {
    1
}

fn schedule_code() -> String {
    "schedule".into()
}

fn english() -> String {
    "en".into()
}

/// A visit's bounds in days after the procedure, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    target: i64,
    start: i64,
    end: i64,
    grace_end: i64,
}

/// A checked follow-up schedule. Only [`Schedule::from_json`] (and the constructors built on it)
/// make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    id: String,
    version: String,
    effective_from: Option<String>,
    language: String,
    translations: std::collections::BTreeMap<String, ScheduleTranslation>,
    description: Option<String>,
    grace_days: i64,
    /// Sorted by offset (stable).
    visits: Vec<Visit>,
    /// Parallel to `visits`.
    spans: Vec<Span>,
}

const DEFAULT_JSON: &str = include_str!("../../schedules/default.json");

/// Which visits of one procedure a submitted response answers: a set of visit ids, or the
/// comma-separated list a store query aggregates ([`VisitList`]).
pub trait DoneVisits {
    /// Whether visit `visit_id` is done.
    fn is_done(&self, visit_id: &str) -> bool;
}

impl DoneVisits for BTreeSet<String> {
    fn is_done(&self, visit_id: &str) -> bool {
        self.contains(visit_id)
    }
}

impl DoneVisits for std::collections::HashSet<String> {
    fn is_done(&self, visit_id: &str) -> bool {
        self.contains(visit_id)
    }
}

impl<T: DoneVisits + ?Sized> DoneVisits for &T {
    fn is_done(&self, visit_id: &str) -> bool {
        (**self).is_done(visit_id)
    }
}

/// Visit ids separated by commas (visit ids never contain one), e.g. `"d7,m1"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VisitList<'a>(pub &'a str);

impl DoneVisits for VisitList<'_> {
    fn is_done(&self, visit_id: &str) -> bool {
        !self.0.is_empty() && self.0.split(',').any(|v| v == visit_id)
    }
}

impl Schedule {
    /// Parse and check a schedule: non-empty unique ids, offsets and windows within limits and
    /// not negative, no window opening before the procedure, no overlapping windows within a
    /// series. Visits are sorted by offset.
    pub fn from_json(json: &str) -> Result<Schedule, ScheduleError> {
        let raw: RawSchedule = serde_json::from_str(json)?;
        if raw.id.trim().is_empty() {
            return Err(ScheduleError::BadField {
                field: "id",
                reason: "it is empty".into(),
            });
        }
        if raw.version.trim().is_empty() {
            return Err(ScheduleError::BadField {
                field: "version",
                reason: "it is empty".into(),
            });
        }
        if !(0..=MAX_WINDOW_DAYS).contains(&raw.grace_days) {
            return Err(ScheduleError::BadField {
                field: "grace_days",
                reason: format!("{} is not within 0..={MAX_WINDOW_DAYS}", raw.grace_days),
            });
        }
        if raw.visits.is_empty() {
            return Err(ScheduleError::NoVisits);
        }
        let mut ids = HashSet::new();
        for (i, v) in raw.visits.iter().enumerate() {
            let bad = |reason: String| ScheduleError::InvalidVisit {
                visit: if v.id.trim().is_empty() {
                    format!("#{}", i + 1)
                } else {
                    v.id.clone()
                },
                reason,
            };
            if v.id.trim().is_empty() {
                return Err(bad("the visit id is empty".into()));
            }
            if v.label.trim().is_empty() {
                return Err(bad("the label is empty".into()));
            }
            if v.questionnaire.trim().is_empty() {
                return Err(bad("the questionnaire is empty".into()));
            }
            let checks = [
                ("offset_days", v.offset_days, MAX_OFFSET_DAYS),
                ("window_before_days", v.window_before_days, MAX_WINDOW_DAYS),
                ("window_after_days", v.window_after_days, MAX_WINDOW_DAYS),
                ("grace_days", v.grace_days.unwrap_or(0), MAX_WINDOW_DAYS),
            ];
            for (field, value, max) in checks {
                if value < 0 {
                    return Err(bad(format!("{field} {value} is negative")));
                }
                if value > max {
                    return Err(bad(format!("{field} {value} is above the limit of {max}")));
                }
            }
            if v.window_before_days > v.offset_days {
                return Err(bad(format!(
                    "the window opens {} days before the target at day {}, before the procedure",
                    v.window_before_days, v.offset_days
                )));
            }
            if !ids.insert(v.id.as_str()) {
                return Err(ScheduleError::DuplicateVisit(v.id.clone()));
            }
        }

        for (lang, t) in &raw.translations {
            for visit in t.visits.keys() {
                if !ids.contains(visit.as_str()) {
                    return Err(ScheduleError::BadField {
                        field: "translations",
                        reason: format!("{lang} translates unknown visit {visit}"),
                    });
                }
            }
        }
        if let Some(d) = &raw.effective_from {
            if NaiveDate::parse_from_str(d, "%Y-%m-%d").is_err() {
                return Err(ScheduleError::BadField {
                    field: "effective_from",
                    reason: format!("{d:?} is not a date YYYY-MM-DD"),
                });
            }
        }
        let mut visits = raw.visits;
        visits.sort_by_key(|v| v.offset_days);
        let mut spans: Vec<Span> = visits
            .iter()
            .map(|v| {
                let end = v.offset_days + v.window_after_days;
                Span {
                    target: v.offset_days,
                    start: v.offset_days - v.window_before_days,
                    end,
                    grace_end: end + v.grace_days.unwrap_or(raw.grace_days),
                }
            })
            .collect();
        // Per series, in offset order: no overlap, and grace ends before the next window opens.
        let mut last_of_series: HashMap<&str, usize> = HashMap::new();
        for i in 0..visits.len() {
            if let Some(&p) = last_of_series.get(visits[i].questionnaire.as_str()) {
                if spans[i].start <= spans[p].end {
                    return Err(ScheduleError::OverlappingWindows {
                        questionnaire: visits[i].questionnaire.clone(),
                        first: visits[p].id.clone(),
                        second: visits[i].id.clone(),
                    });
                }
                spans[p].grace_end = spans[p].grace_end.min(spans[i].start - 1);
            }
            last_of_series.insert(visits[i].questionnaire.as_str(), i);
        }

        Ok(Schedule {
            id: raw.id,
            version: raw.version,
            effective_from: raw.effective_from,
            language: raw.language,
            translations: raw.translations,
            description: raw.description,
            grace_days: raw.grace_days,
            visits,
            spans,
        })
    }

    /// The registry's default schedule, embedded from `core/schedules/default.json` (see the
    /// module documentation).
    pub fn default_registry() -> Schedule {
        // The embedded JSON is a constant of this crate, proved valid by a unit test.
        #[allow(clippy::expect_used)]
        Schedule::from_json(DEFAULT_JSON).expect("the embedded default schedule is valid")
    }

    /// The schedule as JSON, in the format [`Schedule::from_json`] reads (visits sorted).
    pub fn to_json(&self) -> String {
        let raw = RawSchedule {
            format: 1,
            definition: "schedule".into(),
            id: self.id.clone(),
            version: self.version.clone(),
            effective_from: self.effective_from.clone(),
            language: self.language.clone(),
            translations: self.translations.clone(),
            description: self.description.clone(),
            grace_days: self.grace_days,
            visits: self.visits.clone(),
        };
        serde_json::to_string_pretty(&raw).unwrap_or_default()
    }

    /// Only the visits answered by this questionnaire (one series), e.g. `clinician-followup` for
    /// a nurse's list or `patient-outcome-survey` for a patient's phone. Computed bounds are kept,
    /// so states are the same as in the full schedule. `None` if no visit uses it.
    pub fn for_questionnaire(&self, questionnaire: &str) -> Option<Schedule> {
        let (visits, spans): (Vec<Visit>, Vec<Span>) = self
            .visits
            .iter()
            .zip(&self.spans)
            .filter(|(v, _)| v.questionnaire == questionnaire)
            .map(|(v, s)| (v.clone(), *s))
            .unzip();
        if visits.is_empty() {
            return None;
        }
        Some(Schedule {
            id: self.id.clone(),
            version: self.version.clone(),
            effective_from: self.effective_from.clone(),
            language: self.language.clone(),
            translations: self.translations.clone(),
            description: self.description.clone(),
            grace_days: self.grace_days,
            visits,
            spans,
        })
    }

    /// A visit's label in `locale` (fallback `pt-BR` → `pt` → the schedule's own language).
    pub fn visit_label(&self, visit_id: &str, locale: &str) -> Option<&str> {
        let own = self.visit(visit_id)?;
        let own_lang = crate::questionnaire::normalize_tag(&self.language);
        for tag in crate::definitions::fallback_chain(locale) {
            if tag == own_lang {
                break;
            }
            let found = self
                .translations
                .iter()
                .find(|(k, _)| crate::questionnaire::normalize_tag(k) == tag)
                .and_then(|(_, t)| t.visits.get(visit_id));
            if let Some(label) = found {
                return Some(label);
            }
        }
        Some(&own.label)
    }

    /// The first procedure date this version applies to, if it says.
    pub fn effective_from(&self) -> Option<NaiveDate> {
        self.effective_from
            .as_deref()
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
    }

    /// The schedule's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The schedule's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The default grace period, in days.
    pub fn grace_days(&self) -> i64 {
        self.grace_days
    }

    /// The visits, sorted by offset.
    pub fn visits(&self) -> &[Visit] {
        &self.visits
    }

    /// The visit with this id.
    pub fn visit(&self, id: &str) -> Option<&Visit> {
        self.visits.iter().find(|v| v.id == id)
    }

    /// Every visit of one patient, classified as of `as_of`, in offset order.
    pub fn visits_for(
        &self,
        procedure_date: NaiveDate,
        done: &(impl DoneVisits + ?Sized),
        as_of: NaiveDate,
    ) -> Vec<VisitStatus<'_>> {
        let base = day_number(procedure_date);
        let day = day_number(as_of) - base;
        (0..self.visits.len())
            .map(|i| {
                let state = self.state_of(i, day, done);
                self.status(i, base, state)
            })
            .collect()
    }

    /// The state of one visit, by id; `None` for an unknown visit.
    pub fn state_of_visit(
        &self,
        visit_id: &str,
        procedure_date: NaiveDate,
        done: &(impl DoneVisits + ?Sized),
        as_of: NaiveDate,
    ) -> Option<VisitState> {
        let i = self.visits.iter().position(|v| v.id == visit_id)?;
        Some(self.state_of(i, day_number(as_of) - day_number(procedure_date), done))
    }

    /// A clinic's work list: the visits of every patient whose state is in `states`, sorted by
    /// urgency — overdue first (soonest `grace_end` first), then due (soonest `window_end`),
    /// upcoming (soonest `window_start`), missed (oldest `window_end`), done; ties keep input
    /// order. `patients` yields `(key, procedure date, done visit ids)`; the key is cloned into
    /// each line (use a cheap key: an id, an index, a reference).
    pub fn worklist<'a, K, D, I>(
        &'a self,
        patients: I,
        as_of: NaiveDate,
        states: &[VisitState],
    ) -> Vec<PatientVisit<'a, K>>
    where
        K: Clone,
        D: DoneVisits,
        I: IntoIterator<Item = (K, NaiveDate, D)>,
    {
        let as_of_day = day_number(as_of);
        // A visit's state is Done if answered, else its place in time. Unless Done is asked for,
        // a visit whose place in time is not asked for is out whether answered or not, so the
        // done list (a string scan) is consulted only for the few visits that can be listed.
        let want_done = states.contains(&VisitState::Done);
        let mut out = Vec::new();
        for (key, procedure_date, done) in patients {
            let done = &done;
            let base = day_number(procedure_date);
            let day = as_of_day - base;
            for i in 0..self.visits.len() {
                let by_time = self.state_by_time(i, day);
                if !want_done && !states.contains(&by_time) {
                    continue;
                }
                let state = if done.is_done(self.visits[i].id.as_str()) {
                    VisitState::Done
                } else {
                    by_time
                };
                if states.contains(&state) {
                    out.push(PatientVisit {
                        patient: key.clone(),
                        status: self.status(i, base, state),
                    });
                }
            }
        }
        out.sort_by_key(|pv| (pv.status.state.urgency_rank(), pv.status.deadline()));
        out
    }

    /// The state of visit `i` on day `day` after the procedure.
    fn state_of(&self, i: usize, day: i64, done: &(impl DoneVisits + ?Sized)) -> VisitState {
        if done.is_done(self.visits[i].id.as_str()) {
            VisitState::Done
        } else {
            self.state_by_time(i, day)
        }
    }

    /// The state of visit `i` on day `day` after the procedure if it is not answered.
    fn state_by_time(&self, i: usize, day: i64) -> VisitState {
        let s = &self.spans[i];
        if day < s.start {
            VisitState::Upcoming
        } else if day <= s.end {
            VisitState::Due
        } else if day <= s.grace_end {
            VisitState::Overdue
        } else {
            VisitState::Missed
        }
    }

    fn status(&self, i: usize, base: i64, state: VisitState) -> VisitStatus<'_> {
        let v = &self.visits[i];
        let s = &self.spans[i];
        VisitStatus {
            visit_id: &v.id,
            label: &v.label,
            questionnaire: &v.questionnaire,
            target: date_of(base + s.target),
            window_start: date_of(base + s.start),
            window_end: date_of(base + s.end),
            grace_end: date_of(base + s.grace_end),
            state,
        }
    }
}

/// Days since 0001-01-01 (day 1), as i64 so offsets never overflow.
fn day_number(d: NaiveDate) -> i64 {
    i64::from(d.num_days_from_ce())
}

/// The date of a day number, clamped to chrono's range.
fn date_of(n: i64) -> NaiveDate {
    let clamped = n.clamp(
        i64::from(NaiveDate::MIN.num_days_from_ce()),
        i64::from(NaiveDate::MAX.num_days_from_ce()),
    );
    i32::try_from(clamped)
        .ok()
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .unwrap_or(NaiveDate::MAX)
}
