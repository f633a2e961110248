//! The public participation list: which invited clinics are in good standing, which do not
//! participate and which fail to respond, each with the rule that put it there.
//!
//! The rules are registry configuration (data, not code): a JSON document (the default is
//! `server/config/participation-rules.json`, replaced with `--participation-rules FILE`). Rules are
//! evaluated in order; the first that applies to a clinic places it, and the page shows every
//! rule's text so that anyone can check the placement.

use followup_domain::ids::RecordId;
use serde::{Deserialize, Serialize};

/// The built-in rules.
pub const DEFAULT_RULES_JSON: &str = include_str!("../../config/participation-rules.json");

const DAY_MS: i64 = 24 * 3600 * 1000;

/// The list a rule puts a clinic on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListName {
    GoodStanding,
    NotParticipating,
    FailingToRespond,
}

impl ListName {
    pub fn heading(self) -> &'static str {
        match self {
            ListName::GoodStanding => "Clinics in good standing",
            ListName::NotParticipating => "Invited clinics that do not participate",
            ListName::FailingToRespond => "Clinics that fail to respond",
        }
    }
}

/// What a rule tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleTest {
    /// Staff recorded that the clinic declined.
    Declined,
    /// Invited more than `days` days ago and no device ever enrolled.
    NoDeviceAfterDays { days: i64 },
    /// At least `count` adverse events await the clinic more than `days` days past deadline.
    OverdueAdjudications { days: i64, count: u64 },
    /// Devices enrolled, but none synced for more than `days` days.
    NoSyncForDays { days: i64 },
    /// At least one device enrolled (and no earlier rule applied).
    GoodStanding,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    #[serde(flatten)]
    pub test: RuleTest,
    pub list: ListName,
    /// What the public page says the rule is.
    pub text: String,
}

/// The registry's participation rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    pub version: u32,
    pub title: String,
    pub rules: Vec<Rule>,
}

/// Why the rules could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("participation rules are not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("participation rules: {0}")]
    Invalid(String),
}

impl Rules {
    pub fn parse(json: &str) -> Result<Rules, RulesError> {
        let r: Rules = serde_json::from_str(json)?;
        if r.rules.is_empty() {
            return Err(RulesError::Invalid("there is no rule".into()));
        }
        let mut ids = std::collections::HashSet::new();
        for rule in &r.rules {
            if !ids.insert(rule.id.as_str()) {
                return Err(RulesError::Invalid(format!(
                    "rule id {:?} repeats",
                    rule.id
                )));
            }
            let bad_days = match rule.test {
                RuleTest::NoDeviceAfterDays { days }
                | RuleTest::OverdueAdjudications { days, .. }
                | RuleTest::NoSyncForDays { days } => !(0..=3650).contains(&days),
                _ => false,
            };
            if bad_days {
                return Err(RulesError::Invalid(format!(
                    "rule {:?}: days must be 0 to 3650",
                    rule.id
                )));
            }
        }
        Ok(r)
    }

    /// The built-in rules.
    pub fn builtin() -> Rules {
        // The file is part of the source and checked by a test; fall back to a minimal rule set
        // rather than fail to start if someone breaks it.
        Rules::parse(DEFAULT_RULES_JSON).unwrap_or_else(|_| Rules {
            version: 1,
            title: "Clinic participation".into(),
            rules: vec![Rule {
                id: "good-standing".into(),
                test: RuleTest::GoodStanding,
                list: ListName::GoodStanding,
                text: "At least one enrolled device.".into(),
            }],
        })
    }
}

/// What the rules look at, per clinic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClinicFacts {
    pub id: RecordId,
    pub name: String,
    pub country: String,
    pub invited_at_ms: i64,
    pub declined: bool,
    /// Devices ever enrolled (revoked included: the clinic did join).
    pub devices_enrolled: u64,
    pub last_sync_ms: Option<i64>,
    /// Days past deadline of each adverse event still awaiting the clinic.
    pub overdue_days: Vec<i64>,
}

/// A clinic placed on a list by a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub clinic: ClinicFacts,
    pub list: ListName,
    pub rule_id: String,
    pub rule_text: String,
}

fn applies(test: &RuleTest, c: &ClinicFacts, now_ms: i64) -> bool {
    match *test {
        RuleTest::Declined => c.declined,
        RuleTest::NoDeviceAfterDays { days } => {
            c.devices_enrolled == 0 && now_ms - c.invited_at_ms > days * DAY_MS
        }
        RuleTest::OverdueAdjudications { days, count } => {
            c.overdue_days.iter().filter(|d| **d > days).count() as u64 >= count.max(1)
        }
        RuleTest::NoSyncForDays { days } => {
            c.devices_enrolled > 0 && c.last_sync_ms.is_none_or(|t| now_ms - t > days * DAY_MS)
        }
        RuleTest::GoodStanding => c.devices_enrolled > 0,
    }
}

/// Place each clinic by the first rule that applies; clinics no rule places (for example
/// invited recently, with no device yet) are not listed.
pub fn evaluate(rules: &Rules, clinics: Vec<ClinicFacts>, now_ms: i64) -> Vec<Placement> {
    clinics
        .into_iter()
        .filter_map(|c| {
            let rule = rules.rules.iter().find(|r| applies(&r.test, &c, now_ms))?;
            Some(Placement {
                list: rule.list,
                rule_id: rule.id.clone(),
                rule_text: rule.text.clone(),
                clinic: c,
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn clinic(n: u8) -> ClinicFacts {
        ClinicFacts {
            id: RecordId([n; 16]),
            name: format!("C{n}"),
            country: "MX".into(),
            invited_at_ms: 0,
            declined: false,
            devices_enrolled: 0,
            last_sync_ms: None,
            overdue_days: vec![],
        }
    }

    #[test]
    fn builtin_rules_parse() {
        let r = Rules::parse(DEFAULT_RULES_JSON).unwrap();
        assert_eq!(r.rules.len(), 5);
        assert!(Rules::parse(r#"{"version":1,"title":"x","rules":[]}"#).is_err());
        assert!(Rules::parse(r#"{"version":1,"title":"x","rules":[{"id":"a","kind":"no_sync_for_days","days":-1,"list":"good_standing","text":""}]}"#).is_err());
    }

    #[test]
    fn each_clinic_is_placed_by_the_first_rule_that_applies() {
        let rules = Rules::builtin();
        let now = 100 * DAY_MS;
        let fresh = ClinicFacts {
            invited_at_ms: now - 5 * DAY_MS,
            ..clinic(1)
        };
        let silent = clinic(2);
        let declined = ClinicFacts {
            declined: true,
            devices_enrolled: 1,
            ..clinic(3)
        };
        let good = ClinicFacts {
            devices_enrolled: 1,
            last_sync_ms: Some(now - DAY_MS),
            overdue_days: vec![3],
            ..clinic(4)
        };
        let failing = ClinicFacts {
            devices_enrolled: 2,
            last_sync_ms: Some(now),
            overdue_days: vec![31, 2],
            ..clinic(5)
        };
        let lapsed = ClinicFacts {
            devices_enrolled: 1,
            last_sync_ms: Some(now - 91 * DAY_MS),
            ..clinic(6)
        };
        let out = evaluate(
            &rules,
            vec![fresh, silent, declined, good, failing, lapsed],
            now,
        );
        let placed: Vec<(String, &str)> = out
            .iter()
            .map(|p| (p.clinic.name.clone(), p.rule_id.as_str()))
            .collect();
        assert_eq!(
            placed,
            vec![
                ("C2".to_string(), "no-response"),
                ("C3".to_string(), "declined"),
                ("C4".to_string(), "good-standing"),
                ("C5".to_string(), "overdue-adjudications"),
                ("C6".to_string(), "lapsed"),
            ]
        );
    }
}
