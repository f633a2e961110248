//! Versioned questionnaire definitions, answer validation, enable-when and scores; the registry's
//! default instruments.
//!
//! ## The model
//!
//! A [`Questionnaire`] is *data*: the registry publishes definitions as JSON (format below), each
//! identified by `id` and a `MAJOR.MINOR.PATCH` `version`. A response stores the id and version of
//! the definition it answers and an [`Answers`] map, item id → [`AnswerValue`]. The engine never
//! stores anything; it answers four questions about a definition and a set of answers:
//!
//! * **Is this item shown?** [`Questionnaire::is_enabled`]. An item with `enable_when` conditions
//!   is enabled when all (`enable_behavior: "all"`, the default) or any (`"any"`) of them hold.
//!   A condition looks at the *effective* answer of another item: the answer of a disabled item
//!   counts as absent, so conditions chain (C depends on B depends on A; disabling A disables C).
//!   Enable-when dependencies form a DAG; a cycle is refused when the definition is loaded.
//! * **Is this response acceptable?** [`Questionnaire::validate`] returns *every* problem, one per
//!   broken rule, each with the item id, a machine [`ProblemCode`] and a human message.
//!   [`Questionnaire::validate_partial`] is the same check for a draft being typed: it skips
//!   [`ProblemCode::Required`] and checks everything else.
//! * **What are the scores?** [`Questionnaire::scores`]: sum or mean of numeric items.
//! * **Which items are enabled?** [`Questionnaire::enabled_items`], for rendering.
//!
//! ### Answer rules
//!
//! * A blank answer (text that is empty or only whitespace, or an empty choice list) counts as
//!   *not answered*, for every item type: it satisfies nothing and breaks nothing.
//! * A required item that is enabled and not answered is [`ProblemCode::Required`] (complete mode
//!   only). A disabled item is never required.
//! * **Answering a disabled item is a problem**, [`ProblemCode::AnsweredButDisabled`]: the app must
//!   clear an answer when its item becomes disabled, so a stored response never holds an answer
//!   the respondent could not see. [`Questionnaire::prune_disabled`] does that clearing. The value
//!   of a disabled item's answer is not otherwise checked.
//! * A key that is not an item of the questionnaire is [`ProblemCode::UnknownItem`].
//!
//! | item `type` | answer | checks |
//! |---|---|---|
//! | `boolean` | `Bool` | — |
//! | `integer` | `Int` | `min`, `max` |
//! | `scale_0_10` | `Int` | 0 ≤ value ≤ 10, narrowed by `min`/`max` if given |
//! | `decimal` | `Decimal` or `Int` | finite, `min`, `max`, at most `decimals` digits after the point (shortest round-trip form of the `f64`, so `0.1 + 0.2` has 17) |
//! | `single_choice` | `Text` (a choice code) | the code is one of `choices` |
//! | `multiple_choice` | `Choices` | every code is known, none repeated, an `exclusive` choice (e.g. "none") is not combined with another |
//! | `date` | `Text`, `YYYY-MM-DD` | a real calendar date, exactly that form |
//! | `text` | `Text` | at most `max_length` characters (Unicode scalar values) |
//!
//! A value of the wrong variant is [`ProblemCode::WrongType`] (an `Int` for a `decimal` item is
//! accepted; a `Decimal` for an `integer` item is not, even `3.0`).
//!
//! ### Enable-when conditions
//!
//! `{ "item": "q1", "operator": "=", "value": "worse" }`; operators `exists`, `=`, `!=`, `>`, `>=`,
//! `<`, `<=`. `exists` takes an optional boolean value (default `true`: the item is answered;
//! `false`: it is not). Every other operator needs a value of the target's type and is **false
//! when the target is unanswered or disabled** (including `!=`). On a `multiple_choice` target,
//! `=` means "the selection contains the code" and `!=` "does not contain it". Ordering operators
//! apply to numeric and date targets only. Target, operator and value are checked at load time.
//!
//! ### Scores
//!
//! `{ "id": "symptom_burden", "label": "...", "items": ["pain", "fatigue"], "method": "mean",
//! "min_answered": 2 }`. Each listed item that is enabled, answered and valid contributes its
//! numeric value: the number for `integer`/`decimal`/`scale_0_10`, 1 or 0 for `boolean`, the
//! choice's `score` for `single_choice`, the sum of the selected choices' scores for
//! `multiple_choice` (choice items in a score must give every choice a `score`; `text` and `date`
//! items cannot be scored). `sum` adds them, `mean` divides by how many contributed. The score is
//! `None` when nothing contributed or fewer than `min_answered` items did.
//!
//! ## JSON formats
//!
//! [`AnswerValue`] is serialized **untagged**, the most compact form and the one the sync budget
//! wants: `true`, `7`, `36.6`, `"moderate"`, `"2024-03-01"`, `["infection", "stroke"]`. A JSON
//! number without a fraction or exponent reads as `Int`, any other number as `Decimal`; serde_json
//! always writes a `Decimal` with a fraction (`3.0`), so values round-trip. Non-finite decimals
//! cannot be written as JSON (serde_json writes `null`), and are refused by validation anyway.
//!
//! A definition (unknown fields are refused everywhere, so a typo is an error, not a silent
//! default):
//!
//! ```json
//! { "id": "clinician-followup", "version": "1.0.0", "title": "Clinician follow-up visit",
//!   "description": "optional", "kind": "clinician_followup",
//!   "items": [
//!     { "id": "status", "text": "Condition since the procedure", "type": "single_choice",
//!       "required": true, "help": "optional",
//!       "choices": [ { "code": "improved", "label": "Improved", "score": 1 },
//!                    { "code": "none", "label": "None of these", "exclusive": true } ] },
//!     { "id": "temp", "text": "Temperature (°C)", "type": "decimal", "min": 30, "max": 45,
//!       "decimals": 1 },
//!     { "id": "note", "text": "Notes", "type": "text", "max_length": 2000,
//!       "enable_when": [ { "item": "status", "operator": "=", "value": "worse" } ],
//!       "enable_behavior": "any" } ],
//!   "scores": [ { "id": "s", "label": "...", "items": ["temp"], "method": "sum" } ] }
//! ```
//!
//! `kind` ∈ `baseline`, `clinician_followup`, `patient_survey`, `adverse_event`. `enable_when` may
//! be one condition object or a list. [`Questionnaire::to_json`] writes the same format.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize};

mod definition;
mod i18n;
mod messages;
mod validate;

#[cfg(test)]
mod tests;

pub use definition::DefinitionError;
pub use i18n::{normalize_tag, ItemTranslation, Translation};
pub use messages::Lang;
pub use validate::{Problem, ProblemCode, ValidationErrors};

/// One answer. Serialized untagged (see the module documentation): single-choice and date answers
/// are `Text` (a choice code; a date as `YYYY-MM-DD`), multiple-choice answers are `Choices`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AnswerValue {
    /// A `boolean` item's answer.
    Bool(bool),
    /// An `integer` or `scale_0_10` item's answer (also accepted for `decimal`).
    Int(i64),
    /// A `decimal` item's answer.
    Decimal(f64),
    /// A `text`, `date` or `single_choice` item's answer.
    Text(String),
    /// A `multiple_choice` item's answer: the selected choice codes.
    Choices(Vec<String>),
}

impl AnswerValue {
    /// Whether this value counts as an answer: blank text and an empty choice list do not.
    pub fn is_answered(&self) -> bool {
        match self {
            AnswerValue::Text(s) => !s.trim().is_empty(),
            AnswerValue::Choices(c) => !c.is_empty(),
            _ => true,
        }
    }
}

/// The answers of one response, keyed by item id.
pub type Answers = BTreeMap<String, AnswerValue>;

/// What a questionnaire is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuestionnaireKind {
    /// What was done and what the patient was told, recorded once per procedure.
    Baseline,
    /// A clinician's follow-up visit.
    ClinicianFollowup,
    /// An outcome survey the patient completes.
    PatientSurvey,
    /// An adverse-event report.
    AdverseEvent,
}

/// The type of an item, which decides the [`AnswerValue`] it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ItemType {
    /// `boolean`: yes / no.
    #[serde(rename = "boolean")]
    Boolean,
    /// `integer`: a whole number, optionally bounded.
    #[serde(rename = "integer")]
    Integer,
    /// `decimal`: a number with at most `decimals` digits after the point.
    #[serde(rename = "decimal")]
    Decimal,
    /// `single_choice`: one code of `choices`.
    #[serde(rename = "single_choice")]
    SingleChoice,
    /// `multiple_choice`: any number of distinct codes of `choices`.
    #[serde(rename = "multiple_choice")]
    MultipleChoice,
    /// `date`: a calendar date, `YYYY-MM-DD`.
    #[serde(rename = "date")]
    Date,
    /// `text`: free text of at most `max_length` characters.
    #[serde(rename = "text")]
    Text,
    /// `scale_0_10`: a whole number from 0 to 10 (e.g. a symptom rating).
    #[serde(rename = "scale_0_10")]
    Scale0To10,
}

impl ItemType {
    /// The name used in JSON.
    pub fn code(self) -> &'static str {
        match self {
            ItemType::Boolean => "boolean",
            ItemType::Integer => "integer",
            ItemType::Decimal => "decimal",
            ItemType::SingleChoice => "single_choice",
            ItemType::MultipleChoice => "multiple_choice",
            ItemType::Date => "date",
            ItemType::Text => "text",
            ItemType::Scale0To10 => "scale_0_10",
        }
    }

    /// `integer`, `decimal` or `scale_0_10`.
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            ItemType::Integer | ItemType::Decimal | ItemType::Scale0To10
        )
    }

    /// `single_choice` or `multiple_choice`.
    pub fn is_choice(self) -> bool {
        matches!(self, ItemType::SingleChoice | ItemType::MultipleChoice)
    }
}

/// One possible answer of a choice item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// The code stored in answers; unique within the item.
    pub code: String,
    /// What the respondent sees.
    pub label: String,
    /// The numeric value of this choice in scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// For a multiple-choice item: this choice (e.g. "none of these") may not be combined with
    /// another.
    #[serde(default, skip_serializing_if = "is_false")]
    pub exclusive: bool,
}

/// An enable-when operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operator {
    /// `exists`: the target is (value `true`, the default) or is not (value `false`) answered.
    #[serde(rename = "exists")]
    Exists,
    /// `=`; on a multiple-choice target: the selection contains the code.
    #[serde(rename = "=")]
    Eq,
    /// `!=`; on a multiple-choice target: the selection does not contain the code.
    #[serde(rename = "!=")]
    Ne,
    /// `>` (numeric and date targets).
    #[serde(rename = ">")]
    Gt,
    /// `>=` (numeric and date targets).
    #[serde(rename = ">=")]
    Ge,
    /// `<` (numeric and date targets).
    #[serde(rename = "<")]
    Lt,
    /// `<=` (numeric and date targets).
    #[serde(rename = "<=")]
    Le,
}

impl Operator {
    /// The symbol used in JSON.
    pub fn symbol(self) -> &'static str {
        match self {
            Operator::Exists => "exists",
            Operator::Eq => "=",
            Operator::Ne => "!=",
            Operator::Gt => ">",
            Operator::Ge => ">=",
            Operator::Lt => "<",
            Operator::Le => "<=",
        }
    }
}

/// One enable-when condition on another item's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// The id of the item whose answer is tested.
    pub item: String,
    /// How it is tested.
    pub operator: Operator,
    /// The value compared with; optional for `exists` (default `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<AnswerValue>,
}

/// How several enable-when conditions combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnableBehavior {
    /// Every condition must hold (the default).
    #[default]
    All,
    /// At least one condition must hold.
    Any,
}

/// One question of a questionnaire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Unique within the questionnaire; the key of its answer.
    pub id: String,
    /// The question as shown.
    pub text: String,
    /// The item's type.
    #[serde(rename = "type")]
    pub item_type: ItemType,
    /// Whether a complete response must answer it (when enabled).
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
    /// Optional guidance shown with the question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// The unit a numeric answer is in, as shown (e.g. `kg`, `mmHg`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Smallest allowed value (numeric items).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest allowed value (numeric items).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Most digits allowed after the decimal point (`decimal` items; unlimited when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decimals: Option<u32>,
    /// Most characters allowed (`text` items; unlimited when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// The possible answers (choice items only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<Choice>,
    /// Conditions under which the item is shown; always shown when empty. One object or a list.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub enable_when: Vec<Condition>,
    /// How `enable_when` conditions combine.
    #[serde(default, skip_serializing_if = "is_default_behavior")]
    pub enable_behavior: EnableBehavior,
}

impl Item {
    /// The choice with this code, if any.
    pub fn choice(&self, code: &str) -> Option<&Choice> {
        self.choices.iter().find(|c| c.code == code)
    }

    /// The effective lower bound: `min`, or 0 for a scale.
    pub fn effective_min(&self) -> Option<f64> {
        match (self.item_type, self.min) {
            (ItemType::Scale0To10, None) => Some(0.0),
            (_, m) => m,
        }
    }

    /// The effective upper bound: `max`, or 10 for a scale.
    pub fn effective_max(&self) -> Option<f64> {
        match (self.item_type, self.max) {
            (ItemType::Scale0To10, None) => Some(10.0),
            (_, m) => m,
        }
    }
}

/// How a score combines its items' values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreMethod {
    /// The sum of the contributing values.
    Sum,
    /// The mean of the contributing values.
    Mean,
}

/// A score computed from numeric items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Unique among the questionnaire's scores; the key in [`Questionnaire::scores`].
    pub id: String,
    /// What it is called.
    pub label: String,
    /// The ids of the items it combines.
    pub items: Vec<String>,
    /// How it combines them.
    pub method: ScoreMethod,
    /// Fewest contributing items for a score to be given (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_answered: Option<usize>,
}

/// A checked questionnaire definition. Only [`Questionnaire::from_json`] makes one, so every
/// `Questionnaire` is well formed.
#[derive(Debug, Clone, PartialEq)]
pub struct Questionnaire {
    /// The definition format version it was written in.
    format: u32,
    /// Features beyond the format that it uses.
    requires: Vec<String>,
    /// The language of the untranslated texts.
    language: String,
    /// Language tag → texts in that language.
    translations: BTreeMap<String, Translation>,
    id: String,
    version: String,
    title: String,
    description: Option<String>,
    kind: QuestionnaireKind,
    items: Vec<Item>,
    scores: Vec<Score>,
    /// item id → index in `items`.
    index: HashMap<String, usize>,
    /// Item indices, every enable-when target before the items that depend on it.
    order: Vec<usize>,
    /// Per item, the index of each `enable_when` condition's target.
    targets: Vec<Vec<usize>>,
    /// Per score, the indices of its items.
    score_items: Vec<Vec<usize>>,
}

/// The serialized form of a definition.
#[derive(Serialize)]
struct DefinitionOut<'a> {
    format: u32,
    definition: &'static str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    requires: &'a [String],
    id: &'a str,
    version: &'a str,
    title: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    kind: QuestionnaireKind,
    items: &'a [Item],
    #[serde(skip_serializing_if = "<[Score]>::is_empty")]
    scores: &'a [Score],
    language: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    translations: &'a BTreeMap<String, Translation>,
}

impl Questionnaire {
    /// Parse and check a definition. Refuses, with an error naming the item or score, anything
    /// malformed: JSON that does not fit the format (an unknown item type, a missing field, an
    /// unknown field), an empty or duplicate id, a bad version, min above max, bounds or
    /// `decimals`/`max_length`/`choices` on an item type they do not apply to, a choice item
    /// without choices or with duplicate codes, an enable-when on a missing item, on the item
    /// itself, with an operator or value that does not fit the target, a cycle of enable-when
    /// dependencies, a score on a missing or non-numeric item.
    pub fn from_json(json: &str) -> Result<Questionnaire, DefinitionError> {
        definition::parse(json)
    }

    /// The definition as JSON, in the format [`Questionnaire::from_json`] reads.
    pub fn to_json(&self) -> String {
        let out = DefinitionOut {
            format: self.format,
            definition: "questionnaire",
            requires: &self.requires,
            id: &self.id,
            version: &self.version,
            title: &self.title,
            description: self.description.as_deref(),
            kind: self.kind,
            items: &self.items,
            scores: &self.scores,
            language: &self.language,
            translations: &self.translations,
        };
        // Serializing plain structs of strings, numbers and vectors into a String cannot fail;
        // non-finite numbers were refused when the definition was checked.
        serde_json::to_string_pretty(&out).unwrap_or_default()
    }

    /// The definition's id, e.g. `clinician-followup`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The definition's version, `MAJOR.MINOR.PATCH`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The title shown to the respondent.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// An optional longer description.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// What the questionnaire is for.
    pub fn kind(&self) -> QuestionnaireKind {
        self.kind
    }

    /// The items, in display order.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// The item with this id.
    pub fn item(&self, id: &str) -> Option<&Item> {
        self.index.get(id).map(|&i| &self.items[i])
    }

    /// The score definitions.
    pub fn score_definitions(&self) -> &[Score] {
        &self.scores
    }

    /// The definition format version it was written in.
    pub fn format(&self) -> u32 {
        self.format
    }

    /// The language of the untranslated texts (e.g. `en`).
    pub fn language(&self) -> &str {
        &self.language
    }

    /// Every language it has texts in: its own first, then each translation's tag.
    pub fn languages(&self) -> Vec<&str> {
        std::iter::once(self.language.as_str())
            .chain(self.translations.keys().map(String::as_str))
            .collect()
    }

    /// The translations, by language tag.
    pub fn translations(&self) -> &BTreeMap<String, Translation> {
        &self.translations
    }

    /// A copy whose texts (title, description, item text, help, unit, choice labels, score
    /// labels) are in `locale`, each falling back along `pt-BR` → `pt` → the definition's own
    /// language. Structure, codes and rules are unchanged.
    pub fn localized(&self, locale: &str) -> Questionnaire {
        i18n::localized(self, locale)
    }

    /// [`Questionnaire::validate`] with messages in `locale` (choice labels in messages
    /// translated too); English when the app has no messages in that language.
    pub fn validate_in(&self, answers: &Answers, locale: &str) -> Vec<Problem> {
        validate::validate_lang(
            &self.localized(locale),
            answers,
            true,
            Lang::for_locale(locale),
        )
    }

    /// [`Questionnaire::validate_partial`] with messages in `locale`.
    pub fn validate_partial_in(&self, answers: &Answers, locale: &str) -> Vec<Problem> {
        validate::validate_lang(
            &self.localized(locale),
            answers,
            false,
            Lang::for_locale(locale),
        )
    }

    /// Whether the item is enabled (shown) given these answers. `false` for an unknown item.
    pub fn is_enabled(&self, item_id: &str, answers: &Answers) -> bool {
        match self.index.get(item_id) {
            Some(&i) => self.enabled_flags(answers)[i],
            None => false,
        }
    }

    /// The enabled items, in display order.
    pub fn enabled_items(&self, answers: &Answers) -> Vec<&Item> {
        let flags = self.enabled_flags(answers);
        self.items
            .iter()
            .zip(flags)
            .filter_map(|(item, on)| on.then_some(item))
            .collect()
    }

    /// Remove the answers of disabled items (and of unknown items); returns the removed keys.
    /// Call it when an answer changes so no stored response answers an item its respondent could
    /// not see. One pass suffices: a disabled item's answer never enables anything.
    pub fn prune_disabled(&self, answers: &mut Answers) -> Vec<String> {
        let flags = self.enabled_flags(answers);
        let remove: Vec<String> = answers
            .keys()
            .filter(|k| match self.index.get(k.as_str()) {
                Some(&i) => !flags[i],
                None => true,
            })
            .cloned()
            .collect();
        for k in &remove {
            answers.remove(k);
        }
        remove
    }

    /// Every problem of a complete response, one per broken rule, in item order then unknown
    /// keys. Empty when the response is valid. Never panics.
    pub fn validate(&self, answers: &Answers) -> Vec<Problem> {
        validate::validate(self, answers, true)
    }

    /// Like [`Questionnaire::validate`] for a draft being typed: skips
    /// [`ProblemCode::Required`], checks everything else.
    pub fn validate_partial(&self, answers: &Answers) -> Vec<Problem> {
        validate::validate(self, answers, false)
    }

    /// [`Questionnaire::validate`] as a `Result`, for code that submits a response.
    pub fn check(&self, answers: &Answers) -> Result<(), ValidationErrors> {
        let problems = self.validate(answers);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(problems))
        }
    }

    /// Every score, by score id; `None` when too few of its items contributed.
    pub fn scores(&self, answers: &Answers) -> BTreeMap<String, Option<f64>> {
        validate::scores(self, answers)
    }

    /// Per item (by index), whether it is enabled.
    fn enabled_flags(&self, answers: &Answers) -> Vec<bool> {
        validate::enabled_flags(self, answers)
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_default_behavior(b: &EnableBehavior) -> bool {
    *b == EnableBehavior::All
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Condition>, D::Error> {
    // Not an untagged enum: its error ("did not match any variant") would hide what is wrong.
    let v = serde_json::Value::deserialize(d)?;
    let parsed = if v.is_array() {
        serde_json::from_value(v)
    } else {
        serde_json::from_value(v).map(|c| vec![c])
    };
    parsed.map_err(|e| serde::de::Error::custom(format!("enable_when: {e}")))
}

const SHIPPED: [(&str, &str); 4] = [
    (
        "baseline-procedure",
        include_str!("../../instruments/baseline-procedure.json"),
    ),
    (
        "clinician-followup",
        include_str!("../../instruments/clinician-followup.json"),
    ),
    (
        "patient-outcome-survey",
        include_str!("../../instruments/patient-outcome-survey.json"),
    ),
    (
        "adverse-event-report",
        include_str!("../../instruments/adverse-event-report.json"),
    ),
];

fn shipped() -> &'static [Questionnaire] {
    static PARSED: OnceLock<Vec<Questionnaire>> = OnceLock::new();
    PARSED.get_or_init(|| {
        // Every shipped definition parses (proved by a unit test); one that did not would be
        // left out rather than crash a clinic's tablet.
        SHIPPED
            .iter()
            .filter_map(|(_, json)| Questionnaire::from_json(json).ok())
            .collect()
    })
}

/// The built-in instruments a new registry publishes at its first start (see
/// [`crate::definitions::builtin_definitions`]), parsed once: `baseline-procedure`,
/// `clinician-followup`, `patient-outcome-survey`, `adverse-event-report`. A device never
/// captures with these: it uses the definitions it received. (The benchmark instrument
/// `bench-50` lives in the test kit.)
pub fn default_instruments() -> Vec<Questionnaire> {
    shipped().to_vec()
}

/// The default instrument with this id (a clone; see [`instrument_ref`] to borrow it).
pub fn instrument(id: &str) -> Option<Questionnaire> {
    instrument_ref(id).cloned()
}

/// The built-in instrument with this id, borrowed from the parsed-once list.
pub fn instrument_ref(id: &str) -> Option<&'static Questionnaire> {
    shipped().iter().find(|q| q.id == id)
}

/// The embedded JSON of the default instrument with this id, e.g. to publish it.
pub fn instrument_json(id: &str) -> Option<&'static str> {
    SHIPPED.iter().find(|(i, _)| *i == id).map(|(_, j)| *j)
}
