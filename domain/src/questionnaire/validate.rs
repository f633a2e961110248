//! Enable-when evaluation, answer validation and scores.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::messages::{render, Lang, Msg};
use super::{
    AnswerValue, Answers, Condition, EnableBehavior, Item, ItemType, Operator, Questionnaire,
    ScoreMethod,
};

/// The rule an answer breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    /// An enabled required item is not answered (complete mode only).
    Required,
    /// The value's variant does not fit the item's type (or a decimal is not finite).
    WrongType,
    /// A number is below the item's minimum.
    BelowMin,
    /// A number is above the item's maximum.
    AboveMax,
    /// A decimal has more digits after the point than the item allows.
    TooManyDecimals,
    /// A text is longer than the item's `max_length`.
    TooLong,
    /// A choice code is not one of the item's choices (one problem per unknown code).
    UnknownChoice,
    /// A multiple-choice answer repeats a code (one problem per repeated code).
    DuplicateChoice,
    /// A multiple-choice answer combines an exclusive choice (e.g. "none") with another.
    ExclusiveChoice,
    /// A date answer is not a real date written `YYYY-MM-DD`.
    InvalidDate,
    /// The answer's key is not an item of the questionnaire.
    UnknownItem,
    /// The item is disabled by its enable-when conditions yet answered.
    AnsweredButDisabled,
    /// A value outside its plausible bounds (a date in the future, a birth year 2030).
    OutOfBounds,
    /// Values that contradict each other (death with grade 2; grade 5 and recovered).
    Inconsistent,
    /// Not allowed for this writer or this record (the form the visit does not expect, a
    /// clinician form on a patient's phone, another patient's procedure).
    NotAllowed,
    /// The record names a record that is not known (yet).
    UnknownRecord,
    /// The record names a record of another patient.
    WrongPatient,
    /// The value is taken: the visit is answered by another submitted response (amend that one), the study code is enrolled.
    Duplicate,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The item (or unknown answer key) at fault.
    pub item: String,
    /// The rule broken.
    pub code: ProblemCode,
    /// A message for people, starting with the item id, e.g. `q03: 12 is above the maximum of 10`.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The problems of a response that failed [`Questionnaire::check`]; never empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationErrors(pub Vec<Problem>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            f.write_str(&p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Parse a date written exactly `YYYY-MM-DD`.
pub(super) fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let mut v = 0u32;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        Some(v)
    };
    let y = i32::try_from(digits(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(y, digits(5..7)?, digits(8..10)?)
}

/// The answer of item `i` if it is enabled and answered.
fn effective<'a>(
    q: &Questionnaire,
    answers: &'a Answers,
    flags: &[bool],
    i: usize,
) -> Option<&'a AnswerValue> {
    if !flags[i] {
        return None;
    }
    answers.get(&q.items[i].id).filter(|v| v.is_answered())
}

pub(super) fn enabled_flags(q: &Questionnaire, answers: &Answers) -> Vec<bool> {
    let mut flags = vec![true; q.items.len()];
    for &i in &q.order {
        let item = &q.items[i];
        if item.enable_when.is_empty() {
            continue;
        }
        // `order` puts every target before its dependents, so its flag is final here.
        let mut results = item
            .enable_when
            .iter()
            .zip(&q.targets[i])
            .map(|(cond, &t)| condition_holds(cond, &q.items[t], effective(q, answers, &flags, t)));
        flags[i] = match item.enable_behavior {
            EnableBehavior::All => results.all(|b| b),
            EnableBehavior::Any => results.any(|b| b),
        };
    }
    flags
}

fn as_f64(v: &AnswerValue) -> Option<f64> {
    match v {
        AnswerValue::Int(i) => Some(*i as f64),
        AnswerValue::Decimal(d) => Some(*d),
        _ => None,
    }
}

fn condition_holds(cond: &Condition, target: &Item, answer: Option<&AnswerValue>) -> bool {
    if cond.operator == Operator::Exists {
        let want = !matches!(cond.value, Some(AnswerValue::Bool(false)));
        return answer.is_some() == want;
    }
    let (Some(answer), Some(value)) = (answer, cond.value.as_ref()) else {
        return false;
    };
    let ord = match (answer, value) {
        (AnswerValue::Bool(a), AnswerValue::Bool(b)) => Some(a.cmp(b)),
        (AnswerValue::Int(a), AnswerValue::Int(b)) => Some(a.cmp(b)),
        (
            AnswerValue::Int(_) | AnswerValue::Decimal(_),
            AnswerValue::Int(_) | AnswerValue::Decimal(_),
        ) => match (as_f64(answer), as_f64(value)) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => None,
        },
        (AnswerValue::Text(a), AnswerValue::Text(b)) => {
            if target.item_type == ItemType::Date {
                match (parse_date(a), parse_date(b)) {
                    (Some(a), Some(b)) => Some(a.cmp(&b)),
                    _ => None,
                }
            } else if matches!(cond.operator, Operator::Eq | Operator::Ne) {
                Some(a.cmp(b))
            } else {
                None
            }
        }
        (AnswerValue::Choices(list), AnswerValue::Text(code)) => {
            let has = list.iter().any(|c| c == code);
            return match cond.operator {
                Operator::Eq => has,
                Operator::Ne => !has,
                _ => false,
            };
        }
        _ => None,
    };
    let Some(ord) = ord else { return false };
    match cond.operator {
        Operator::Eq => ord == Ordering::Equal,
        Operator::Ne => ord != Ordering::Equal,
        Operator::Gt => ord == Ordering::Greater,
        Operator::Ge => ord != Ordering::Less,
        Operator::Lt => ord == Ordering::Less,
        Operator::Le => ord != Ordering::Greater,
        Operator::Exists => false,
    }
}

pub(super) fn validate(q: &Questionnaire, answers: &Answers, complete: bool) -> Vec<Problem> {
    validate_lang(q, answers, complete, Lang::En)
}

/// Every problem, with messages in `lang`.
pub(super) fn validate_lang(
    q: &Questionnaire,
    answers: &Answers,
    complete: bool,
    lang: Lang,
) -> Vec<Problem> {
    let flags = enabled_flags(q, answers);
    let mut problems = Vec::new();
    for (item, &enabled) in q.items.iter().zip(&flags) {
        let answer = answers.get(&item.id).filter(|v| v.is_answered());
        match (enabled, answer) {
            (false, Some(_)) => problems.push(Problem {
                item: item.id.clone(),
                code: ProblemCode::AnsweredButDisabled,
                message: render(lang, &item.id, &Msg::AnsweredButDisabled),
            }),
            (false, None) => {}
            (true, None) => {
                if complete && item.required {
                    problems.push(Problem {
                        item: item.id.clone(),
                        code: ProblemCode::Required,
                        message: render(lang, &item.id, &Msg::Required),
                    });
                }
            }
            (true, Some(v)) => check_value(item, v, lang, &mut problems),
        }
    }
    for key in answers.keys() {
        if q.item(key).is_none() {
            problems.push(Problem {
                item: key.clone(),
                code: ProblemCode::UnknownItem,
                message: render(
                    lang,
                    key,
                    &Msg::UnknownItem {
                        questionnaire: &q.id,
                        version: &q.version,
                    },
                ),
            });
        }
    }
    problems
}

/// Digits after the point in the shortest form that reads back as `v`.
fn decimal_places(v: f64) -> usize {
    let s = v.abs().to_string();
    match s.find('.') {
        Some(p) => s.len() - p - 1,
        None => 0,
    }
}

/// Push a problem for each rule the value of an enabled item breaks.
pub(super) fn check_value(item: &Item, v: &AnswerValue, lang: Lang, out: &mut Vec<Problem>) {
    let id = &item.id;
    let mut push = |code: ProblemCode, msg: Msg<'_>| {
        out.push(Problem {
            item: id.clone(),
            code,
            message: render(lang, id, &msg),
        })
    };
    let range = |x: f64, shown: &dyn fmt::Display, push: &mut dyn FnMut(ProblemCode, Msg<'_>)| {
        if let Some(min) = item.effective_min() {
            if x < min {
                push(ProblemCode::BelowMin, Msg::BelowMin { shown, min });
            }
        }
        if let Some(max) = item.effective_max() {
            if x > max {
                push(ProblemCode::AboveMax, Msg::AboveMax { shown, max });
            }
        }
    };
    match (item.item_type, v) {
        (ItemType::Boolean, AnswerValue::Bool(_)) => {}
        (ItemType::Integer | ItemType::Scale0To10, AnswerValue::Int(i)) => {
            range(*i as f64, i, &mut push);
        }
        (ItemType::Decimal, AnswerValue::Int(i)) => range(*i as f64, i, &mut push),
        (ItemType::Decimal, AnswerValue::Decimal(d)) => {
            if !d.is_finite() {
                push(ProblemCode::WrongType, Msg::NotFinite { shown: *d });
                return;
            }
            range(*d, d, &mut push);
            if let Some(max) = item.decimals {
                let places = decimal_places(*d);
                if places > max as usize {
                    push(
                        ProblemCode::TooManyDecimals,
                        Msg::TooManyDecimals {
                            shown: *d,
                            places,
                            max,
                        },
                    );
                }
            }
        }
        (ItemType::SingleChoice, AnswerValue::Text(code)) => {
            if item.choice(code).is_none() {
                push(ProblemCode::UnknownChoice, Msg::UnknownChoice { code });
            }
        }
        (ItemType::MultipleChoice, AnswerValue::Choices(codes)) => {
            let mut exclusive: Option<&str> = None;
            let mut known = 0usize;
            for (i, code) in codes.iter().enumerate() {
                let first = codes[..i].iter().all(|c| c != code);
                if !first {
                    // Report a repeated code once, at its second occurrence.
                    if codes[..i].iter().filter(|c| *c == code).count() == 1 {
                        push(ProblemCode::DuplicateChoice, Msg::DuplicateChoice { code });
                    }
                    continue;
                }
                match item.choice(code) {
                    None => push(ProblemCode::UnknownChoice, Msg::UnknownChoice { code }),
                    Some(c) => {
                        known += 1;
                        if c.exclusive && exclusive.is_none() {
                            exclusive = Some(&c.label);
                        }
                    }
                }
            }
            if let Some(label) = exclusive {
                if known > 1 {
                    push(ProblemCode::ExclusiveChoice, Msg::ExclusiveChoice { label });
                }
            }
        }
        (ItemType::Date, AnswerValue::Text(s)) => {
            if parse_date(s).is_none() {
                push(ProblemCode::InvalidDate, Msg::InvalidDate { text: s });
            }
        }
        (ItemType::Text, AnswerValue::Text(s)) => {
            if let Some(max) = item.max_length {
                let n = s.chars().count();
                if n > max {
                    push(ProblemCode::TooLong, Msg::TooLong { n, max });
                }
            }
        }
        (t, v) => push(
            ProblemCode::WrongType,
            Msg::WrongType {
                expected: t,
                got: v,
            },
        ),
    }
}

/// The numeric value of a valid answer, for scores.
fn numeric_value(item: &Item, v: &AnswerValue) -> Option<f64> {
    match v {
        AnswerValue::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        AnswerValue::Int(i) => Some(*i as f64),
        AnswerValue::Decimal(d) => Some(*d),
        AnswerValue::Text(code) => item.choice(code).and_then(|c| c.score),
        AnswerValue::Choices(codes) => codes
            .iter()
            .map(|code| item.choice(code).and_then(|c| c.score))
            .sum(),
    }
}

pub(super) fn scores(q: &Questionnaire, answers: &Answers) -> BTreeMap<String, Option<f64>> {
    let flags = enabled_flags(q, answers);
    let mut out = BTreeMap::new();
    let mut scratch = Vec::new();
    for (score, idx) in q.scores.iter().zip(&q.score_items) {
        let mut sum = 0.0;
        let mut count = 0usize;
        for &i in idx {
            let Some(v) = effective(q, answers, &flags, i) else {
                continue;
            };
            let item = &q.items[i];
            scratch.clear();
            check_value(item, v, Lang::En, &mut scratch);
            if !scratch.is_empty() {
                continue;
            }
            if let Some(x) = numeric_value(item, v) {
                sum += x;
                count += 1;
            }
        }
        let needed = score.min_answered.unwrap_or(1).max(1);
        let value = (count >= needed).then(|| match score.method {
            ScoreMethod::Sum => sum,
            ScoreMethod::Mean => sum / count as f64,
        });
        out.insert(score.id.clone(), value);
    }
    out
}
