//! The registry's adjudication policy (how long the treating clinic has to adjudicate an adverse
//! event) as versioned data, and the adjudication case's state machine.
//!
//! The policy is the registry's, never the clinic's: the server applies it when it first accepts
//! an adverse event and writes the deadline into the registry-authored
//! [`crate::model::AdjudicationCase`] record. Devices only read it. The registry's default,
//! [`AdjudicationPolicy::registry_default`] (`domain/policies/adjudication-default.json`): a
//! serious event (any seriousness criterion) or a severity grade of 3 or more gets 7 days,
//! anything else 30.
//!
//! ## JSON format
//!
//! The policy is published like any definition (`docs/definitions.md`): the file carries the
//! definition envelope (`"format": 1, "definition": "adjudication_policy"`), and the registry
//! applies the newest published version to events it accepts from then on.
//!
//! ```json
//! { "format": 1, "definition": "adjudication_policy",
//!   "id": "registry-adjudication", "version": "1.0.0", "description": "optional",
//!   "rules": [ { "label": "serious", "serious": true, "days": 7 },
//!              { "label": "grade 3 or more", "min_severity": 3, "days": 7 } ],
//!   "default_days": 30 }
//! ```
//!
//! A rule applies when every condition it states holds (`serious`: the event meets at least one
//! seriousness criterion, or none when `false`; `min_severity`: grade ≥ it). The event gets the
//! *fewest* days of the rules that apply, or `default_days` when none does. Days are 1 ..= 365.
//!
//! ## Case states (at the server's clock)
//!
//! [`case_state`] derives the state from what the server recorded, each with the server's time:
//!
//! | state | when |
//! |---|---|
//! | `closed` | the registry closed it, or the patient accepted the clinic's latest decision |
//! | `disputed` | the patient disputed, after the clinic's latest decision (or with none yet) |
//! | `responded` | the clinic's latest decision is newer than the last escalation |
//! | `escalated` | registry staff escalated it and the clinic has not decided since |
//! | `overdue` | no decision and the server's date is past the deadline |
//! | `open` | otherwise |

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{AdjudicationCase, AdverseEvent, CaseState, Verdict};

/// Most days a rule may give.
pub const MAX_POLICY_DAYS: i64 = 365;

/// One rule of the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// A short name shown in the case record ("serious", "grade 3 or more").
    pub label: String,
    /// When set: applies only to serious (`true`) or non-serious (`false`) events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serious: Option<bool>,
    /// When set: applies only from this severity grade up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<i64>,
    /// Days the clinic has when the rule applies.
    pub days: i64,
}

/// The adjudication policy: versioned data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjudicationPolicy {
    pub id: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub rules: Vec<PolicyRule>,
    pub default_days: i64,
}

/// Why a policy definition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the policy is not valid JSON of the expected shape: {0}")]
    Json(String),
    #[error("the policy needs a non-empty id and version")]
    MissingId,
    #[error("{what}: {days} days is outside 1 ..= {MAX_POLICY_DAYS}")]
    Days { what: String, days: i64 },
    #[error("rule {0:?}: min_severity must be 1 ..= 5")]
    Severity(String),
}

/// What the policy decided for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDecision {
    pub days: i64,
    /// The label of the rule that gave the days, or `"default"`.
    pub rule: String,
}

/// The definition envelope's fields (`crate::definitions`), which a policy file may carry.
const ENVELOPE_FIELDS: &[&str] = &[
    "format",
    "definition",
    "requires",
    "language",
    "translations",
];
const POLICY_FIELDS: &[&str] = &["id", "version", "description", "rules", "default_days"];
const RULE_FIELDS: &[&str] = &["label", "serious", "min_severity", "days"];

impl AdjudicationPolicy {
    /// Parse and check a policy: every field known (the definition envelope's allowed).
    pub fn from_json(json: &str) -> Result<Self, PolicyError> {
        let mut v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| PolicyError::Json(e.to_string()))?;
        if let Some(m) = v.as_object_mut() {
            m.retain(|k, _| !ENVELOPE_FIELDS.contains(&k.as_str()));
        }
        Self::from_value(v)
    }

    /// Parse and check a policy as a device reads definitions: fields this code does not know
    /// (from a newer format) are ignored; the known ones must still make a valid policy.
    pub fn from_json_lenient(json: &str) -> Result<Self, PolicyError> {
        let mut v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| PolicyError::Json(e.to_string()))?;
        if let Some(m) = v.as_object_mut() {
            m.retain(|k, _| POLICY_FIELDS.contains(&k.as_str()));
            if let Some(serde_json::Value::Array(rules)) = m.get_mut("rules") {
                for r in rules
                    .iter_mut()
                    .filter_map(serde_json::Value::as_object_mut)
                {
                    r.retain(|k, _| RULE_FIELDS.contains(&k.as_str()));
                }
            }
        }
        Self::from_value(v)
    }

    fn from_value(v: serde_json::Value) -> Result<Self, PolicyError> {
        let p: AdjudicationPolicy =
            serde_json::from_value(v).map_err(|e| PolicyError::Json(e.to_string()))?;
        p.check()?;
        Ok(p)
    }

    fn check(&self) -> Result<(), PolicyError> {
        if self.id.trim().is_empty() || self.version.trim().is_empty() {
            return Err(PolicyError::MissingId);
        }
        let ok = |d: i64| (1..=MAX_POLICY_DAYS).contains(&d);
        if !ok(self.default_days) {
            return Err(PolicyError::Days {
                what: "default_days".into(),
                days: self.default_days,
            });
        }
        for r in &self.rules {
            if !ok(r.days) {
                return Err(PolicyError::Days {
                    what: format!("rule {:?}", r.label),
                    days: r.days,
                });
            }
            if r.min_severity.is_some_and(|s| !(1..=5).contains(&s)) {
                return Err(PolicyError::Severity(r.label.clone()));
            }
        }
        Ok(())
    }

    /// The registry's default policy (built in; the definitions work publishes it as a record).
    pub fn registry_default() -> &'static AdjudicationPolicy {
        static DEFAULT: std::sync::OnceLock<AdjudicationPolicy> = std::sync::OnceLock::new();
        DEFAULT.get_or_init(|| {
            match AdjudicationPolicy::from_json(include_str!(
                "../policies/adjudication-default.json"
            )) {
                Ok(p) => p,
                // The file is part of the build and checked by a test; never reached.
                Err(_) => AdjudicationPolicy {
                    id: "registry-adjudication".into(),
                    version: "builtin".into(),
                    description: None,
                    rules: Vec::new(),
                    default_days: 7,
                },
            }
        })
    }

    /// `id@version`, as a case record names the policy that set its deadline.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }

    /// The days an event with this severity and seriousness gets.
    pub fn decide(&self, severity: i64, serious: bool) -> PolicyDecision {
        self.rules
            .iter()
            .filter(|r| r.serious.is_none_or(|s| s == serious))
            .filter(|r| r.min_severity.is_none_or(|m| severity >= m))
            .min_by_key(|r| r.days)
            .map(|r| PolicyDecision {
                days: r.days,
                rule: r.label.clone(),
            })
            .unwrap_or(PolicyDecision {
                days: self.default_days,
                rule: "default".into(),
            })
    }

    /// The days for an adverse event.
    pub fn decide_event(&self, ae: &AdverseEvent) -> PolicyDecision {
        self.decide(ae.severity, !ae.seriousness.is_empty())
    }
}

/// The deadline: the day the server accepted the event plus the policy's days.
pub fn deadline(opened: NaiveDate, days: i64) -> NaiveDate {
    opened + chrono::Days::new(days.clamp(0, MAX_POLICY_DAYS).unsigned_abs())
}

/// The deadline of a case whose event now gets `days`, counted from the day the case opened.
pub fn deadline_from_opening(case: &AdjudicationCase, days: i64) -> Option<String> {
    let opened = NaiveDate::parse_from_str(case.opened_at.get(..10)?, "%Y-%m-%d").ok()?;
    Some(deadline(opened, days).format("%Y-%m-%d").to_string())
}

/// A server time as the case record stores it: RFC 3339, UTC, milliseconds, `Z` (so that the
/// strings order as the times do).
pub fn server_time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The UTC date of a server time in milliseconds.
pub fn server_date(ms: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .date_naive()
}

/// The case's state at the server's date `today` (see the module documentation).
pub fn case_state(case: &AdjudicationCase, today: NaiveDate) -> CaseState {
    if case.closed_at.is_some() {
        return CaseState::Closed;
    }
    let responded = case.responded_at.as_deref();
    if let Some(reply) = case.replies.last() {
        let after_decision = responded.is_none_or(|r| reply.at.as_str() >= r);
        match (reply.verdict, after_decision) {
            (Verdict::Accepted, true) if responded.is_some() => return CaseState::Closed,
            (Verdict::Disputed, true) => return CaseState::Disputed,
            _ => {}
        }
    }
    let escalated = case.escalations.last().map(|e| e.at.as_str());
    match (responded, escalated) {
        (Some(r), Some(e)) if r > e => return CaseState::Responded,
        (Some(_), None) => return CaseState::Responded,
        (_, Some(_)) => return CaseState::Escalated,
        (None, None) => {}
    }
    match NaiveDate::parse_from_str(&case.deadline, "%Y-%m-%d") {
        Ok(d) if today > d => CaseState::Overdue,
        _ => CaseState::Open,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CaseReplyEntry, Escalation};

    fn case(deadline: &str) -> AdjudicationCase {
        AdjudicationCase {
            adverse_event: "ae".into(),
            policy: "p@1".into(),
            rule: "default".into(),
            opened_at: server_time(0),
            days: 30,
            deadline: deadline.into(),
            state: CaseState::Open,
            adjudication: None,
            responded_at: None,
            escalations: Vec::new(),
            replies: Vec::new(),
            closed_at: None,
            closed_note: None,
        }
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn default_policy_gives_7_days_to_serious_or_grade_3_and_30_otherwise() {
        let p = AdjudicationPolicy::registry_default();
        assert_eq!(p.id, "registry-adjudication");
        assert_eq!(p.decide(1, false).days, 30);
        assert_eq!(p.decide(2, false).days, 30);
        assert_eq!(p.decide(3, false).days, 7);
        assert_eq!(p.decide(5, false).days, 7);
        assert_eq!(p.decide(1, true).days, 7);
        assert_eq!(p.decide(1, true).rule, "serious");
        assert_eq!(p.decide(2, false).rule, "default");
        assert_eq!(deadline(d("2026-06-22"), 7), d("2026-06-29"));
    }

    #[test]
    fn bad_policies_are_refused() {
        let bad = |json: &str| AdjudicationPolicy::from_json(json).unwrap_err();
        assert!(matches!(
            bad(r#"{"id":"","version":"1","rules":[],"default_days":30}"#),
            PolicyError::MissingId
        ));
        assert!(matches!(
            bad(r#"{"id":"a","version":"1","rules":[],"default_days":0}"#),
            PolicyError::Days { .. }
        ));
        assert!(matches!(
            bad(
                r#"{"id":"a","version":"1","rules":[{"label":"x","min_severity":9,"days":3}],"default_days":30}"#
            ),
            PolicyError::Severity(_)
        ));
        assert!(matches!(
            bad(r#"{"id":"a","version":"1","rules":[],"default_days":30,"extra":1}"#),
            PolicyError::Json(_)
        ));
    }

    #[test]
    fn states_follow_the_server_clock_and_the_recorded_events() {
        let mut c = case("2026-07-01");
        assert_eq!(case_state(&c, d("2026-07-01")), CaseState::Open);
        assert_eq!(case_state(&c, d("2026-07-02")), CaseState::Overdue);
        c.escalations.push(Escalation {
            at: "2026-07-03T10:00:00.000Z".into(),
            note: "please respond".into(),
        });
        assert_eq!(case_state(&c, d("2026-07-03")), CaseState::Escalated);
        c.responded_at = Some("2026-07-04T10:00:00.000Z".into());
        assert_eq!(case_state(&c, d("2026-07-04")), CaseState::Responded);
        c.replies.push(CaseReplyEntry {
            at: "2026-07-05T10:00:00.000Z".into(),
            verdict: Verdict::Disputed,
            comment: "no remedy".into(),
            reply: "r1".into(),
        });
        assert_eq!(case_state(&c, d("2026-07-05")), CaseState::Disputed);
        // The clinic decides again: responded; the patient accepts: closed.
        c.responded_at = Some("2026-07-06T10:00:00.000Z".into());
        assert_eq!(case_state(&c, d("2026-07-06")), CaseState::Responded);
        c.replies.push(CaseReplyEntry {
            at: "2026-07-07T10:00:00.000Z".into(),
            verdict: Verdict::Accepted,
            comment: String::new(),
            reply: "r2".into(),
        });
        assert_eq!(case_state(&c, d("2026-07-07")), CaseState::Closed);
    }

    #[test]
    fn a_dispute_before_any_decision_is_a_dispute_and_acceptance_needs_a_decision() {
        let mut c = case("2026-07-01");
        c.replies.push(CaseReplyEntry {
            at: "2026-06-25T10:00:00.000Z".into(),
            verdict: Verdict::Accepted,
            comment: String::new(),
            reply: "r1".into(),
        });
        assert_eq!(case_state(&c, d("2026-06-26")), CaseState::Open);
        c.replies.push(CaseReplyEntry {
            at: "2026-06-26T10:00:00.000Z".into(),
            verdict: Verdict::Disputed,
            comment: "nobody called me".into(),
            reply: "r2".into(),
        });
        assert_eq!(case_state(&c, d("2026-06-26")), CaseState::Disputed);
        c.closed_at = Some("2026-06-27T00:00:00.000Z".into());
        assert_eq!(case_state(&c, d("2026-06-27")), CaseState::Closed);
    }
}
