//! Parsing and checking a questionnaire definition.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;

use super::{
    i18n::{self, Translation},
    validate::parse_date,
    AnswerValue, Condition, Item, ItemType, Operator, Questionnaire, QuestionnaireKind, Score,
};

/// Why a questionnaire definition was refused. Every variant names the item or score at fault.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    /// The document is not JSON of the definition format (outside any item or score).
    #[error("questionnaire definition is not valid: {0}")]
    Json(#[source] serde_json::Error),
    /// An item does not fit the item format: unknown `type`, missing or unknown field, wrong
    /// value type.
    #[error("item {item}: {source}")]
    ItemJson {
        /// The item's id, or `#n` (1-based position) when it has none.
        item: String,
        /// What serde found.
        #[source]
        source: serde_json::Error,
    },
    /// A score does not fit the score format.
    #[error("score {score}: {source}")]
    ScoreJson {
        /// The score's id, or `#n` when it has none.
        score: String,
        /// What serde found.
        #[source]
        source: serde_json::Error,
    },
    /// A top-level field is empty or malformed (`id`, `title`, `version`).
    #[error("questionnaire {field} {value:?} is invalid: {reason}")]
    BadField {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The definition has no items.
    #[error("questionnaire has no items")]
    NoItems,
    /// Two items share an id.
    #[error("item {0}: duplicate item id")]
    DuplicateItem(String),
    /// An item is malformed in a way not covered by a more specific variant.
    #[error("item {item}: {reason}")]
    InvalidItem {
        /// The item.
        item: String,
        /// What is wrong.
        reason: String,
    },
    /// A choice item has no choices.
    #[error("item {0}: a choice item needs at least one choice")]
    MissingChoices(String),
    /// Two choices of an item share a code.
    #[error("item {item}: duplicate choice code {code:?}")]
    DuplicateChoice {
        /// The item.
        item: String,
        /// The repeated code.
        code: String,
    },
    /// `min` is above `max`.
    #[error("item {item}: min {min} is above max {max}")]
    MinAboveMax {
        /// The item.
        item: String,
        /// Its min.
        min: f64,
        /// Its max.
        max: f64,
    },
    /// An enable-when condition names an item that does not exist.
    #[error("item {item}: enable_when refers to unknown item {target:?}")]
    EnableWhenUnknownItem {
        /// The item with the condition.
        item: String,
        /// The missing item.
        target: String,
    },
    /// An enable-when condition names its own item.
    #[error("item {0}: enable_when refers to the item itself")]
    EnableWhenSelf(String),
    /// An enable-when condition's operator or value does not fit its target.
    #[error("item {item}: enable_when on {target}: {reason}")]
    EnableWhenInvalid {
        /// The item with the condition.
        item: String,
        /// The target item.
        target: String,
        /// What is wrong.
        reason: String,
    },
    /// Enable-when dependencies form a cycle (listed in order, first item repeated at the end).
    #[error("items {}: enable_when dependencies form a cycle", .0.join(" -> "))]
    EnableWhenCycle(Vec<String>),
    /// Two scores share an id.
    #[error("score {0}: duplicate score id")]
    DuplicateScore(String),
    /// A score names an item that does not exist.
    #[error("score {score}: refers to unknown item {item:?}")]
    ScoreUnknownItem {
        /// The score.
        score: String,
        /// The missing item.
        item: String,
    },
    /// A score names an item that has no numeric value.
    #[error("score {score}: item {item} cannot be scored: {reason}")]
    ScoreNonNumericItem {
        /// The score.
        score: String,
        /// The item.
        item: String,
        /// Why.
        reason: String,
    },
    /// A score is malformed otherwise.
    #[error("score {score}: {reason}")]
    InvalidScore {
        /// The score.
        score: String,
        /// What is wrong.
        reason: String,
    },
    /// A translation names an item, choice or score that does not exist, has a blank text or a
    /// malformed language tag.
    #[error("translation {language}: {reason}")]
    InvalidTranslation {
        /// The language tag.
        language: String,
        /// What is wrong.
        reason: String,
    },
}

impl DefinitionError {
    /// The item this error is about, if it is about one item.
    pub fn item(&self) -> Option<&str> {
        use DefinitionError::*;
        match self {
            ItemJson { item, .. }
            | InvalidItem { item, .. }
            | DuplicateChoice { item, .. }
            | MinAboveMax { item, .. }
            | EnableWhenUnknownItem { item, .. }
            | EnableWhenInvalid { item, .. } => Some(item),
            DuplicateItem(item) | MissingChoices(item) | EnableWhenSelf(item) => Some(item),
            ScoreUnknownItem { item, .. } | ScoreNonNumericItem { item, .. } => Some(item),
            EnableWhenCycle(items) => items.first().map(String::as_str),
            Json(_)
            | ScoreJson { .. }
            | BadField { .. }
            | NoItems
            | DuplicateScore(_)
            | InvalidScore { .. }
            | InvalidTranslation { .. } => None,
        }
    }
}

/// The definition as read. Unknown fields are ignored here (a device reads definitions newer
/// than itself); the registry refuses them before publishing (`definitions::Definition::parse_strict`).
#[derive(Deserialize)]
struct RawDefinition {
    #[serde(default = "format_one")]
    format: u32,
    #[serde(default)]
    requires: Vec<String>,
    #[serde(default = "english")]
    language: String,
    #[serde(default)]
    translations: BTreeMap<String, Translation>,
    id: String,
    version: String,
    title: String,
    #[serde(default)]
    description: Option<String>,
    kind: QuestionnaireKind,
    items: Vec<serde_json::Value>,
    #[serde(default)]
    scores: Vec<serde_json::Value>,
}

fn format_one() -> u32 {
    1
}

fn english() -> String {
    "en".into()
}

/// The name of the n-th element for error messages: its `id`, or `#n`.
fn element_name(v: &serde_json::Value, i: usize) -> String {
    match v.get("id").and_then(|id| id.as_str()) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => format!("#{}", i + 1),
    }
}

/// Most digits after the point a `decimal` item may ask for (beyond it, f64 cannot tell).
const MAX_DECIMALS: u32 = 15;

pub(super) fn parse(json: &str) -> Result<Questionnaire, DefinitionError> {
    let raw: RawDefinition = serde_json::from_str(json).map_err(DefinitionError::Json)?;
    check_field("id", &raw.id)?;
    check_field("title", &raw.title)?;
    check_version(&raw.version)?;

    let mut items = Vec::with_capacity(raw.items.len());
    for (i, v) in raw.items.into_iter().enumerate() {
        let name = element_name(&v, i);
        let item: Item = serde_json::from_value(v)
            .map_err(|source| DefinitionError::ItemJson { item: name, source })?;
        items.push(item);
    }
    if items.is_empty() {
        return Err(DefinitionError::NoItems);
    }

    let mut index = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if item.id.trim().is_empty() {
            return Err(DefinitionError::InvalidItem {
                item: format!("#{}", i + 1),
                reason: "the item id is empty".into(),
            });
        }
        if index.insert(item.id.clone(), i).is_some() {
            return Err(DefinitionError::DuplicateItem(item.id.clone()));
        }
    }
    for item in &items {
        check_item(item)?;
    }

    let mut targets = Vec::with_capacity(items.len());
    for item in &items {
        let mut t = Vec::with_capacity(item.enable_when.len());
        for cond in &item.enable_when {
            let Some(&ti) = index.get(&cond.item) else {
                return Err(DefinitionError::EnableWhenUnknownItem {
                    item: item.id.clone(),
                    target: cond.item.clone(),
                });
            };
            if cond.item == item.id {
                return Err(DefinitionError::EnableWhenSelf(item.id.clone()));
            }
            check_condition(item, cond, &items[ti])?;
            t.push(ti);
        }
        targets.push(t);
    }
    let order = dependency_order(&items, &targets)?;

    let mut scores = Vec::with_capacity(raw.scores.len());
    for (i, v) in raw.scores.into_iter().enumerate() {
        let name = element_name(&v, i);
        let score: Score =
            serde_json::from_value(v).map_err(|source| DefinitionError::ScoreJson {
                score: name,
                source,
            })?;
        scores.push(score);
    }
    let mut score_ids = HashSet::new();
    let mut score_items = Vec::with_capacity(scores.len());
    for (i, score) in scores.iter().enumerate() {
        if score.id.trim().is_empty() {
            return Err(DefinitionError::InvalidScore {
                score: format!("#{}", i + 1),
                reason: "the score id is empty".into(),
            });
        }
        if !score_ids.insert(score.id.as_str()) {
            return Err(DefinitionError::DuplicateScore(score.id.clone()));
        }
        score_items.push(check_score(score, &items, &index)?);
    }

    let q = Questionnaire {
        format: raw.format,
        requires: raw.requires,
        language: raw.language,
        translations: raw.translations,
        id: raw.id,
        version: raw.version,
        title: raw.title,
        description: raw.description,
        kind: raw.kind,
        items,
        scores,
        index,
        order,
        targets,
        score_items,
    };
    i18n::check(&q.language, &q.translations, &q)?;
    Ok(q)
}

fn check_field(field: &'static str, value: &str) -> Result<(), DefinitionError> {
    if value.trim().is_empty() {
        return Err(DefinitionError::BadField {
            field,
            value: value.to_string(),
            reason: "it is empty",
        });
    }
    Ok(())
}

fn check_version(version: &str) -> Result<(), DefinitionError> {
    let parts: Vec<&str> = version.split('.').collect();
    let ok = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(DefinitionError::BadField {
            field: "version",
            value: version.to_string(),
            reason: "expected MAJOR.MINOR.PATCH, e.g. 1.0.0",
        })
    }
}

fn invalid(item: &Item, reason: impl Into<String>) -> DefinitionError {
    DefinitionError::InvalidItem {
        item: item.id.clone(),
        reason: reason.into(),
    }
}

fn check_item(item: &Item) -> Result<(), DefinitionError> {
    let t = item.item_type;
    if item.text.trim().is_empty() {
        return Err(invalid(item, "the item text is empty"));
    }
    if item.unit.as_deref().is_some_and(|u| u.trim().is_empty()) {
        return Err(invalid(item, "the unit is blank"));
    }
    if item.unit.is_some() && !t.is_numeric() {
        return Err(invalid(
            item,
            format!("a unit applies only to numeric items, not {}", t.code()),
        ));
    }
    // Bounds.
    if t.is_numeric() {
        for (name, bound) in [("min", item.min), ("max", item.max)] {
            let Some(b) = bound else { continue };
            if !b.is_finite() {
                return Err(invalid(item, format!("{name} is not a finite number")));
            }
            if matches!(t, ItemType::Integer | ItemType::Scale0To10) && b.fract() != 0.0 {
                return Err(invalid(
                    item,
                    format!(
                        "{name} {b} is not a whole number, as a {} item needs",
                        t.code()
                    ),
                ));
            }
            if t == ItemType::Scale0To10 && !(0.0..=10.0).contains(&b) {
                return Err(invalid(
                    item,
                    format!("{name} {b} is outside the 0-10 range of a scale_0_10 item"),
                ));
            }
        }
        if let (Some(min), Some(max)) = (item.min, item.max) {
            if min > max {
                return Err(DefinitionError::MinAboveMax {
                    item: item.id.clone(),
                    min,
                    max,
                });
            }
        }
    } else if item.min.is_some() || item.max.is_some() {
        return Err(invalid(
            item,
            format!(
                "min/max apply only to integer, decimal and scale_0_10 items, not {}",
                t.code()
            ),
        ));
    }
    // Decimals.
    match (t, item.decimals) {
        (ItemType::Decimal, Some(d)) if d > MAX_DECIMALS => {
            return Err(invalid(
                item,
                format!("decimals {d} is above the limit of {MAX_DECIMALS}"),
            ));
        }
        (ItemType::Decimal, _) | (_, None) => {}
        (_, Some(_)) => {
            return Err(invalid(
                item,
                format!("decimals applies only to decimal items, not {}", t.code()),
            ));
        }
    }
    // Length.
    match (t, item.max_length) {
        (ItemType::Text, Some(0)) => return Err(invalid(item, "max_length must be at least 1")),
        (ItemType::Text, _) | (_, None) => {}
        (_, Some(_)) => {
            return Err(invalid(
                item,
                format!("max_length applies only to text items, not {}", t.code()),
            ));
        }
    }
    // Choices.
    if t.is_choice() {
        if item.choices.is_empty() {
            return Err(DefinitionError::MissingChoices(item.id.clone()));
        }
        let mut seen = HashSet::new();
        for c in &item.choices {
            if c.code.trim().is_empty() {
                return Err(invalid(item, "a choice code is empty"));
            }
            if c.label.trim().is_empty() {
                return Err(invalid(
                    item,
                    format!("choice {:?} has an empty label", c.code),
                ));
            }
            if !seen.insert(c.code.as_str()) {
                return Err(DefinitionError::DuplicateChoice {
                    item: item.id.clone(),
                    code: c.code.clone(),
                });
            }
            if c.score.is_some_and(|s| !s.is_finite()) {
                return Err(invalid(
                    item,
                    format!("choice {:?} has a non-finite score", c.code),
                ));
            }
            if c.exclusive && t != ItemType::MultipleChoice {
                return Err(invalid(
                    item,
                    format!(
                        "choice {:?} is exclusive, which applies only to multiple_choice items",
                        c.code
                    ),
                ));
            }
        }
    } else if !item.choices.is_empty() {
        return Err(invalid(
            item,
            format!(
                "choices apply only to single_choice and multiple_choice items, not {}",
                t.code()
            ),
        ));
    }
    Ok(())
}

fn check_condition(item: &Item, cond: &Condition, target: &Item) -> Result<(), DefinitionError> {
    let bad = |reason: String| DefinitionError::EnableWhenInvalid {
        item: item.id.clone(),
        target: target.id.clone(),
        reason,
    };
    let op = cond.operator;
    let t = target.item_type;
    if op == Operator::Exists {
        return match &cond.value {
            None | Some(AnswerValue::Bool(_)) => Ok(()),
            Some(_) => Err(bad("the value of exists must be true or false".into())),
        };
    }
    let Some(value) = &cond.value else {
        return Err(bad(format!("operator {} needs a value", op.symbol())));
    };
    let ordering = matches!(
        op,
        Operator::Gt | Operator::Ge | Operator::Lt | Operator::Le
    );
    if ordering && !(t.is_numeric() || t == ItemType::Date) {
        return Err(bad(format!(
            "operator {} applies only to numeric and date items, not {}",
            op.symbol(),
            t.code()
        )));
    }
    match (t, value) {
        (ItemType::Boolean, AnswerValue::Bool(_)) => Ok(()),
        (ItemType::Integer | ItemType::Scale0To10 | ItemType::Decimal, AnswerValue::Int(_)) => {
            Ok(())
        }
        (ItemType::Integer | ItemType::Scale0To10 | ItemType::Decimal, AnswerValue::Decimal(d))
            if d.is_finite() =>
        {
            Ok(())
        }
        (ItemType::SingleChoice | ItemType::MultipleChoice, AnswerValue::Text(code)) => {
            if target.choice(code).is_some() {
                Ok(())
            } else {
                Err(bad(format!("{code:?} is not a choice of {}", target.id)))
            }
        }
        (ItemType::Date, AnswerValue::Text(d)) => match parse_date(d) {
            Some(_) => Ok(()),
            None => Err(bad(format!("{d:?} is not a date YYYY-MM-DD"))),
        },
        (ItemType::Text, AnswerValue::Text(_)) => Ok(()),
        _ => Err(bad(format!(
            "the value does not fit a {} item",
            target.item_type.code()
        ))),
    }
}

/// Item indices with every enable-when target before its dependents, or the cycle found.
fn dependency_order(items: &[Item], targets: &[Vec<usize>]) -> Result<Vec<usize>, DefinitionError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let n = items.len();
    let mut mark = vec![Mark::New; n];
    let mut order = Vec::with_capacity(n);
    // Iterative depth-first search: (node, next target to visit).
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for root in 0..n {
        if mark[root] != Mark::New {
            continue;
        }
        mark[root] = Mark::OnPath;
        stack.push((root, 0));
        while let Some(top) = stack.last_mut() {
            let (node, next) = *top;
            if let Some(&t) = targets[node].get(next) {
                top.1 += 1;
                match mark[t] {
                    Mark::New => {
                        mark[t] = Mark::OnPath;
                        stack.push((t, 0));
                    }
                    Mark::OnPath => {
                        // The path from t to node, then back to t.
                        let from = stack.iter().position(|&(s, _)| s == t).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[from..]
                            .iter()
                            .map(|&(s, _)| items[s].id.clone())
                            .collect();
                        cycle.push(items[t].id.clone());
                        return Err(DefinitionError::EnableWhenCycle(cycle));
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                order.push(node);
                stack.pop();
            }
        }
    }
    Ok(order)
}

fn check_score(
    score: &Score,
    items: &[Item],
    index: &HashMap<String, usize>,
) -> Result<Vec<usize>, DefinitionError> {
    if score.label.trim().is_empty() {
        return Err(DefinitionError::InvalidScore {
            score: score.id.clone(),
            reason: "the label is empty".into(),
        });
    }
    if score.items.is_empty() {
        return Err(DefinitionError::InvalidScore {
            score: score.id.clone(),
            reason: "it has no items".into(),
        });
    }
    if let Some(m) = score.min_answered {
        if m > score.items.len() {
            return Err(DefinitionError::InvalidScore {
                score: score.id.clone(),
                reason: format!(
                    "min_answered {m} is more than its {} items",
                    score.items.len()
                ),
            });
        }
    }
    let mut out = Vec::with_capacity(score.items.len());
    for id in &score.items {
        let Some(&i) = index.get(id) else {
            return Err(DefinitionError::ScoreUnknownItem {
                score: score.id.clone(),
                item: id.clone(),
            });
        };
        if out.contains(&i) {
            return Err(DefinitionError::InvalidScore {
                score: score.id.clone(),
                reason: format!("item {id} is listed twice"),
            });
        }
        let item = &items[i];
        let non_numeric = |reason: String| DefinitionError::ScoreNonNumericItem {
            score: score.id.clone(),
            item: id.clone(),
            reason,
        };
        match item.item_type {
            ItemType::Boolean | ItemType::Integer | ItemType::Decimal | ItemType::Scale0To10 => {}
            ItemType::SingleChoice | ItemType::MultipleChoice => {
                if let Some(c) = item.choices.iter().find(|c| c.score.is_none()) {
                    return Err(non_numeric(format!("choice {:?} has no score", c.code)));
                }
            }
            ItemType::Date | ItemType::Text => {
                return Err(non_numeric(format!(
                    "a {} item has no numeric value",
                    item.item_type.code()
                )));
            }
        }
        out.push(i);
    }
    Ok(out)
}
