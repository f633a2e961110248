//! FHIR R4 Questionnaire import and export of the registry's questionnaire definitions.
//!
//! Export turns a checked [`Questionnaire`] into a FHIR `Questionnaire` resource; import turns a
//! FHIR `Questionnaire` back into a definition file, which is then checked by the registry's
//! strict parser ([`Definition::parse_strict`]). The mapping is in `docs/definitions.md`
//! ("FHIR R4 Questionnaire mapping"); in short:
//!
//! * items map one to one (`linkId` = item id), with `required`, `enableWhen`/`enableBehavior`,
//!   `answerOption` (`valueCoding` code + display), `maxLength`, and the standard extensions
//!   `minValue`, `maxValue`, `maxDecimalPlaces`, `questionnaire-unit`, `ordinalValue` (a
//!   choice's score), `questionnaire-optionExclusive`, `questionnaire-itemControl` (`slider`
//!   for a 0–10 scale, `help` for an item's help, a nested `display` item);
//! * translations ride on the standard `translation` extension of each text's primitive
//!   (`_title`, `_text`, `_display`, …);
//! * the questionnaire's kind and its scores have no FHIR element: they use two registry
//!   extensions under [`FHIR_BASE`].
//!
//! Import is strict in the same spirit as publishing: whatever a FHIR questionnaire says that a
//! definition cannot (groups, `initial`, `answerValueSet`, item `code`s, an unknown extension,
//! a `modifierExtension`, …) is refused with an error naming the item and the FHIR feature,
//! never dropped. Only resource metadata that does not change what is captured (`meta`,
//! narrative `text`, `status`, `publisher`, `date`, …; listed in [`IGNORED_METADATA`]) is not
//! carried over.
//!
//! Types are `fhir-model`'s R4B module, as in the data export (`fhir_out`): the Questionnaire
//! resource has the same structure in R4 4.0.1 and R4B, and no R4B-only element is written.

use std::collections::BTreeMap;

use fhir_model::r4b::codes::{
    EnableWhenBehavior, PublicationStatus, QuestionnaireItemOperator, QuestionnaireItemType,
};
use fhir_model::r4b::resources::{
    Questionnaire as FhirQuestionnaire, QuestionnaireItem, QuestionnaireItemAnswerOption,
    QuestionnaireItemAnswerOptionValue, QuestionnaireItemEnableWhen,
    QuestionnaireItemEnableWhenAnswer,
};
use fhir_model::r4b::types::{
    CodeableConcept, Coding, Extension, ExtensionValue, ExtensionValueExtension, FieldExtension,
};
use fhir_model::{BuilderError, Date};
use followup_domain::definitions::{Definition, DefinitionError, DefinitionState, FORMAT};
use followup_domain::questionnaire::{
    AnswerValue, EnableBehavior, Item, ItemTranslation, ItemType, Operator, Questionnaire,
    QuestionnaireKind, ScoreMethod, Translation,
};
use serde_json::{json, Value};

use super::fhir_out::{extension_url, FHIR_BASE};

/// `minValue` (valueInteger or valueDecimal): an item's smallest allowed answer.
pub const EXT_MIN_VALUE: &str = "http://hl7.org/fhir/StructureDefinition/minValue";
/// `maxValue`: an item's largest allowed answer.
pub const EXT_MAX_VALUE: &str = "http://hl7.org/fhir/StructureDefinition/maxValue";
/// `maxDecimalPlaces`: most digits after the point of a decimal answer.
pub const EXT_MAX_DECIMALS: &str = "http://hl7.org/fhir/StructureDefinition/maxDecimalPlaces";
/// `questionnaire-unit` (valueCoding): the unit of a numeric answer, as shown.
pub const EXT_UNIT: &str = "http://hl7.org/fhir/StructureDefinition/questionnaire-unit";
/// `questionnaire-itemControl` (valueCodeableConcept): how an item is rendered.
pub const EXT_ITEM_CONTROL: &str =
    "http://hl7.org/fhir/StructureDefinition/questionnaire-itemControl";
/// The code system of item controls.
pub const ITEM_CONTROL_SYSTEM: &str = "http://hl7.org/fhir/questionnaire-item-control";
/// `questionnaire-sliderStepValue` (valueInteger): a slider's step.
pub const EXT_SLIDER_STEP: &str =
    "http://hl7.org/fhir/StructureDefinition/questionnaire-sliderStepValue";
/// `ordinalValue` (valueDecimal): the score of an answer option.
pub const EXT_ORDINAL: &str = "http://hl7.org/fhir/StructureDefinition/ordinalValue";
/// The name `ordinalValue` had before R4 (read, never written).
pub const EXT_ORDINAL_OLD: &str = "http://hl7.org/fhir/StructureDefinition/iso21090-CO-value";
/// `questionnaire-optionExclusive` (valueBoolean): an option that excludes every other.
pub const EXT_EXCLUSIVE: &str =
    "http://hl7.org/fhir/StructureDefinition/questionnaire-optionExclusive";
/// `translation` (complex: `lang` valueCode, `content` valueString) on a primitive's `_x`.
pub const EXT_TRANSLATION: &str = "http://hl7.org/fhir/StructureDefinition/translation";
/// The registry extension holding a questionnaire's kind (valueCode).
pub const KIND_EXTENSION: &str = "questionnaire-kind";
/// The registry extension holding one score (complex: `id`, `label`, `item`…, `method`,
/// `minAnswered`).
pub const SCORE_EXTENSION: &str = "questionnaire-score";

/// Questionnaire elements that describe the resource rather than what is captured: accepted on
/// import and not carried into the definition (the definition's state is set by publishing it,
/// not by `status`).
pub const IGNORED_METADATA: &[&str] = &[
    "id",
    "meta",
    "text",
    "status",
    "name",
    "identifier",
    "experimental",
    "subjectType",
    "date",
    "publisher",
    "contact",
    "useContext",
    "jurisdiction",
    "purpose",
    "copyright",
    "approvalDate",
    "lastReviewDate",
    "effectivePeriod",
    "derivedFrom",
];

/// Why a definition could not be exported to FHIR, or a FHIR Questionnaire not imported.
#[derive(Debug, thiserror::Error)]
pub enum FhirQuestionnaireError {
    /// The document is not a FHIR Questionnaire (not JSON, another resource, a malformed
    /// element the FHIR model refuses).
    #[error("not a FHIR R4 Questionnaire: {0}")]
    NotQuestionnaire(String),
    /// The FHIR questionnaire uses something a definition cannot say.
    #[error(
        "{at}: {feature} cannot be represented in a Followup questionnaire definition; \
         nothing was imported"
    )]
    Unsupported {
        /// `questionnaire` or `item <linkId>`.
        at: String,
        /// The FHIR element, extension or value, as named in FHIR.
        feature: String,
    },
    /// An element the definition needs is missing or malformed.
    #[error("{at}: {reason}")]
    Invalid {
        /// `questionnaire` or `item <linkId>`.
        at: String,
        /// What is wrong.
        reason: String,
    },
    /// The converted definition does not pass the registry's strict checks.
    #[error("the imported questionnaire is not a valid definition: {0}")]
    Definition(#[from] DefinitionError),
    /// Something of the definition has no FHIR form (e.g. a bound beyond a FHIR integer).
    #[error("{at}: cannot be written as FHIR: {reason}")]
    Export {
        /// `questionnaire` or `item <id>`.
        at: String,
        /// What and why.
        reason: String,
    },
    /// The FHIR model refused to build an element (a bug here, not the user's).
    #[error("building the FHIR resource: {0}")]
    Builder(String),
}

impl FhirQuestionnaireError {
    /// The item (id / linkId) the error is about, if one.
    pub fn item(&self) -> Option<&str> {
        match self {
            FhirQuestionnaireError::Unsupported { at, .. }
            | FhirQuestionnaireError::Invalid { at, .. }
            | FhirQuestionnaireError::Export { at, .. } => at.strip_prefix("item "),
            FhirQuestionnaireError::Definition(DefinitionError::Questionnaire(e)) => e.item(),
            _ => None,
        }
    }

    /// The FHIR feature an import refused, if that is the error.
    pub fn feature(&self) -> Option<&str> {
        match self {
            FhirQuestionnaireError::Unsupported { feature, .. } => Some(feature),
            _ => None,
        }
    }
}

type Result<T, E = FhirQuestionnaireError> = std::result::Result<T, E>;

fn b(e: BuilderError) -> FhirQuestionnaireError {
    FhirQuestionnaireError::Builder(e.to_string())
}

fn unsupported(at: &str, feature: impl Into<String>) -> FhirQuestionnaireError {
    FhirQuestionnaireError::Unsupported {
        at: at.to_string(),
        feature: feature.into(),
    }
}

fn invalid(at: &str, reason: impl Into<String>) -> FhirQuestionnaireError {
    FhirQuestionnaireError::Invalid {
        at: at.to_string(),
        reason: reason.into(),
    }
}

fn item_at(id: &str) -> String {
    format!("item {id}")
}

/// The canonical URL of a questionnaire (its versions share it; `version` tells them apart).
pub fn canonical_url(id: &str) -> String {
    format!("{FHIR_BASE}/Questionnaire/{id}")
}

/// The FHIR status of a definition in this state.
pub fn status_of(state: DefinitionState) -> PublicationStatus {
    match state {
        DefinitionState::Draft => PublicationStatus::Draft,
        DefinitionState::Published => PublicationStatus::Active,
        DefinitionState::Retired => PublicationStatus::Retired,
    }
}

/// The linkId of an item's help (a nested `display` item).
fn help_link_id(id: &str) -> String {
    format!("{id}.help")
}

fn kind_code(kind: QuestionnaireKind) -> &'static str {
    match kind {
        QuestionnaireKind::Baseline => "baseline",
        QuestionnaireKind::ClinicianFollowup => "clinician_followup",
        QuestionnaireKind::PatientSurvey => "patient_survey",
        QuestionnaireKind::AdverseEvent => "adverse_event",
    }
}

/// A kind from its code (`baseline`, `clinician_followup`, `patient_survey`, `adverse_event`).
pub fn kind_from_code(code: &str) -> Option<QuestionnaireKind> {
    [
        QuestionnaireKind::Baseline,
        QuestionnaireKind::ClinicianFollowup,
        QuestionnaireKind::PatientSurvey,
        QuestionnaireKind::AdverseEvent,
    ]
    .into_iter()
    .find(|k| kind_code(*k) == code)
}

/// Whether `s` is a FHIR `id` (`[A-Za-z0-9\-\.]{1,64}`).
fn is_fhir_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
}

// ---------------------------------------------------------------------------------------------
// Export.

fn sub(url: &str, value: ExtensionValue) -> Result<Extension> {
    Extension::builder()
        .url(url.to_string())
        .value(value)
        .build()
        .map_err(b)
}

/// The `_x` of a text with its translations, `None` when it has none.
fn translations_ext(texts: Vec<(&str, &str)>) -> Result<Option<FieldExtension>> {
    if texts.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(texts.len());
    for (lang, content) in texts {
        out.push(
            Extension::builder()
                .url(EXT_TRANSLATION.to_string())
                .extension(vec![
                    sub("lang", ExtensionValue::Code(lang.to_string()))?,
                    sub("content", ExtensionValue::String(content.to_string()))?,
                ])
                .build()
                .map_err(b)?,
        );
    }
    Ok(Some(
        FieldExtension::builder()
            .extension(out)
            .build()
            .map_err(b)?,
    ))
}

/// Each translation's version of one text, by language.
fn translated<'a>(
    q: &'a Questionnaire,
    text: impl Fn(&'a Translation) -> Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    q.translations()
        .iter()
        .filter_map(|(lang, t)| text(t).map(|s| (lang.as_str(), s)))
        .collect()
}

fn item_translated<'a>(
    q: &'a Questionnaire,
    id: &str,
    text: impl Fn(&'a ItemTranslation) -> Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    translated(q, |t| t.items.get(id).and_then(&text))
}

fn whole_i32(at: &str, what: &str, x: f64) -> Result<i32> {
    if x.fract() != 0.0 || x < f64::from(i32::MIN) || x > f64::from(i32::MAX) {
        return Err(FhirQuestionnaireError::Export {
            at: at.to_string(),
            reason: format!("{what} {x} is not a FHIR integer"),
        });
    }
    // Checked above: whole and within i32.
    #[allow(clippy::cast_possible_truncation)]
    Ok(x as i32)
}

fn item_control(code: &str) -> Result<Extension> {
    let coding = Coding::builder()
        .system(ITEM_CONTROL_SYSTEM.to_string())
        .code(code.to_string())
        .build()
        .map_err(b)?;
    let concept = CodeableConcept::builder()
        .coding(vec![Some(coding)])
        .build()
        .map_err(b)?;
    sub(EXT_ITEM_CONTROL, ExtensionValue::CodeableConcept(concept))
}

/// The FHIR form of a checked questionnaire, with the given status (see [`status_of`]).
pub fn to_fhir(q: &Questionnaire, status: PublicationStatus) -> Result<FhirQuestionnaire> {
    let mut out = FhirQuestionnaire::builder()
        .status(status)
        .url(canonical_url(q.id()))
        .version(q.version().to_string())
        .title(q.title().to_string())
        .language(q.language().to_string())
        .build()
        .map_err(b)?;
    if is_fhir_id(q.id()) {
        out.id = Some(q.id().to_string());
    }
    out.title_ext = translations_ext(translated(q, |t| t.title.as_deref()))?;
    if let Some(d) = q.description() {
        out.description = Some(d.to_string());
        out.description_ext = translations_ext(translated(q, |t| t.description.as_deref()))?;
    }
    let mut ext = vec![Extension::builder()
        .url(extension_url(KIND_EXTENSION))
        .value(ExtensionValue::Code(kind_code(q.kind()).to_string()))
        .build()
        .map_err(b)?];
    for s in q.score_definitions() {
        let mut label = sub("label", ExtensionValue::String(s.label.clone()))?;
        if let Some(fe) =
            translations_ext(translated(q, |t| t.scores.get(&s.id).map(String::as_str)))?
        {
            label.value_ext = Some(ExtensionValueExtension::String(fe));
        }
        let mut parts = vec![sub("id", ExtensionValue::String(s.id.clone()))?, label];
        for i in &s.items {
            parts.push(sub("item", ExtensionValue::String(i.clone()))?);
        }
        let method = match s.method {
            ScoreMethod::Sum => "sum",
            ScoreMethod::Mean => "mean",
        };
        parts.push(sub("method", ExtensionValue::Code(method.to_string()))?);
        if let Some(m) = s.min_answered {
            let m = i32::try_from(m).map_err(|_| FhirQuestionnaireError::Export {
                at: format!("score {}", s.id),
                reason: format!("min_answered {m} is not a FHIR integer"),
            })?;
            parts.push(sub("minAnswered", ExtensionValue::Integer(m))?);
        }
        ext.push(
            Extension::builder()
                .url(extension_url(SCORE_EXTENSION))
                .extension(parts)
                .build()
                .map_err(b)?,
        );
    }
    out.extension = ext;
    let help_ids: Vec<String> = q
        .items()
        .iter()
        .filter(|i| i.help.is_some())
        .map(|i| help_link_id(&i.id))
        .collect();
    if let Some(clash) = q.items().iter().find(|i| help_ids.contains(&i.id)) {
        return Err(FhirQuestionnaireError::Export {
            at: item_at(&clash.id),
            reason: "its id is the linkId given to another item's help".into(),
        });
    }
    out.item = q
        .items()
        .iter()
        .map(|i| item_out(q, i).map(Some))
        .collect::<Result<_>>()?;
    Ok(out)
}

fn item_out(q: &Questionnaire, item: &Item) -> Result<QuestionnaireItem> {
    let at = item_at(&item.id);
    let (kind, repeats) = match item.item_type {
        ItemType::Boolean => (QuestionnaireItemType::Boolean, false),
        ItemType::Integer | ItemType::Scale0To10 => (QuestionnaireItemType::Integer, false),
        ItemType::Decimal => (QuestionnaireItemType::Decimal, false),
        ItemType::SingleChoice => (QuestionnaireItemType::Choice, false),
        ItemType::MultipleChoice => (QuestionnaireItemType::Choice, true),
        ItemType::Date => (QuestionnaireItemType::Date, false),
        ItemType::Text => (QuestionnaireItemType::Text, false),
    };
    let mut out = QuestionnaireItem::builder()
        .link_id(item.id.clone())
        .r#type(kind)
        .text(item.text.clone())
        .build()
        .map_err(b)?;
    out.text_ext = translations_ext(item_translated(q, &item.id, |t| t.text.as_deref()))?;
    if item.required {
        out.required = Some(true);
    }
    if repeats {
        out.repeats = Some(true);
    }
    let mut ext = Vec::new();
    // A scale writes its effective 0-10 bounds, so a FHIR renderer bounds the slider.
    let (min, max) = match item.item_type {
        ItemType::Scale0To10 => (item.effective_min(), item.effective_max()),
        _ => (item.min, item.max),
    };
    for (url, what, bound) in [(EXT_MIN_VALUE, "min", min), (EXT_MAX_VALUE, "max", max)] {
        let Some(x) = bound else { continue };
        let value = match item.item_type {
            ItemType::Decimal => ExtensionValue::Decimal(x),
            _ => ExtensionValue::Integer(whole_i32(&at, what, x)?),
        };
        ext.push(sub(url, value)?);
    }
    if let Some(d) = item.decimals {
        let d = i32::try_from(d).map_err(|_| FhirQuestionnaireError::Export {
            at: at.clone(),
            reason: format!("decimals {d} is not a FHIR integer"),
        })?;
        ext.push(sub(EXT_MAX_DECIMALS, ExtensionValue::Integer(d))?);
    }
    if let Some(unit) = &item.unit {
        let mut coding = Coding::builder().display(unit.clone()).build().map_err(b)?;
        coding.display_ext = translations_ext(item_translated(q, &item.id, |t| t.unit.as_deref()))?;
        ext.push(sub(EXT_UNIT, ExtensionValue::Coding(coding))?);
    }
    if item.item_type == ItemType::Scale0To10 {
        ext.push(item_control("slider")?);
        ext.push(sub(EXT_SLIDER_STEP, ExtensionValue::Integer(1))?);
    }
    out.extension = ext;
    if let Some(n) = item.max_length {
        out.max_length = Some(
            i32::try_from(n).map_err(|_| FhirQuestionnaireError::Export {
                at: at.clone(),
                reason: format!("max_length {n} is not a FHIR integer"),
            })?,
        );
    }
    for c in &item.choices {
        let mut coding = Coding::builder()
            .code(c.code.clone())
            .display(c.label.clone())
            .build()
            .map_err(b)?;
        coding.display_ext = translations_ext(item_translated(q, &item.id, |t| {
            t.choices.get(&c.code).map(String::as_str)
        }))?;
        let mut option = QuestionnaireItemAnswerOption::builder()
            .value(QuestionnaireItemAnswerOptionValue::Coding(coding))
            .build()
            .map_err(b)?;
        if let Some(s) = c.score {
            option
                .extension
                .push(sub(EXT_ORDINAL, ExtensionValue::Decimal(s))?);
        }
        if c.exclusive {
            option
                .extension
                .push(sub(EXT_EXCLUSIVE, ExtensionValue::Boolean(true))?);
        }
        out.answer_option.push(Some(option));
    }
    for cond in &item.enable_when {
        let target = q
            .item(&cond.item)
            .ok_or_else(|| FhirQuestionnaireError::Export {
                at: at.clone(),
                reason: format!("enable_when refers to unknown item {}", cond.item),
            })?;
        out.enable_when.push(Some(condition_out(
            &at,
            cond.operator,
            &cond.value,
            target,
        )?));
    }
    // FHIR wants enableBehavior as soon as there are several conditions (que-12).
    if item.enable_when.len() > 1 || item.enable_behavior != EnableBehavior::All {
        out.enable_behavior = Some(match item.enable_behavior {
            EnableBehavior::All => EnableWhenBehavior::All,
            EnableBehavior::Any => EnableWhenBehavior::Any,
        });
    }
    if let Some(help) = &item.help {
        let mut h = QuestionnaireItem::builder()
            .link_id(help_link_id(&item.id))
            .r#type(QuestionnaireItemType::Display)
            .text(help.clone())
            .build()
            .map_err(b)?;
        h.text_ext = translations_ext(item_translated(q, &item.id, |t| t.help.as_deref()))?;
        h.extension = vec![item_control("help")?];
        out.item = vec![Some(h)];
    }
    Ok(out)
}

fn condition_out(
    at: &str,
    op: Operator,
    value: &Option<AnswerValue>,
    target: &Item,
) -> Result<QuestionnaireItemEnableWhen> {
    use QuestionnaireItemEnableWhenAnswer as A;
    let operator = match op {
        Operator::Exists => QuestionnaireItemOperator::Exists,
        Operator::Eq => QuestionnaireItemOperator::Equal,
        Operator::Ne => QuestionnaireItemOperator::NotEqual,
        Operator::Gt => QuestionnaireItemOperator::Greater,
        Operator::Ge => QuestionnaireItemOperator::GreaterOrEqual,
        Operator::Lt => QuestionnaireItemOperator::Less,
        Operator::Le => QuestionnaireItemOperator::LessOrEqual,
    };
    let export = |reason: String| FhirQuestionnaireError::Export {
        at: at.to_string(),
        reason,
    };
    let t = target.item_type;
    let answer = match value {
        None => A::Boolean(true),
        Some(AnswerValue::Bool(v)) => A::Boolean(*v),
        Some(AnswerValue::Int(n)) if t == ItemType::Decimal => {
            // An i64 beyond 2^53 would lose digits; such a bound is not a plausible condition.
            #[allow(clippy::cast_precision_loss)]
            A::Decimal(*n as f64)
        }
        Some(AnswerValue::Int(n)) => A::Integer(i32::try_from(*n).map_err(|_| {
            export(format!(
                "enable_when on {}: {n} is not a FHIR integer",
                target.id
            ))
        })?),
        Some(AnswerValue::Decimal(x)) if t == ItemType::Decimal => A::Decimal(*x),
        Some(AnswerValue::Decimal(x)) => {
            A::Integer(whole_i32(at, &format!("enable_when on {}", target.id), *x)?)
        }
        Some(AnswerValue::Text(s)) if t.is_choice() => {
            A::Coding(Coding::builder().code(s.clone()).build().map_err(b)?)
        }
        Some(AnswerValue::Text(s)) if t == ItemType::Date => A::Date(
            s.parse::<Date>()
                .map_err(|e| export(format!("enable_when on {}: {s:?}: {e}", target.id)))?,
        ),
        Some(AnswerValue::Text(s)) => A::String(s.clone()),
        Some(AnswerValue::Choices(_)) => {
            return Err(export(format!(
                "enable_when on {}: a list of codes has no FHIR form",
                target.id
            )))
        }
    };
    QuestionnaireItemEnableWhen::builder()
        .question(target.id.clone())
        .operator(operator)
        .answer(answer)
        .build()
        .map_err(b)
}

/// [`to_fhir`] as JSON text (pretty).
pub fn to_fhir_json(q: &Questionnaire, status: PublicationStatus) -> Result<String> {
    let r = to_fhir(q, status)?;
    serde_json::to_string_pretty(&r).map_err(|e| FhirQuestionnaireError::Builder(e.to_string()))
}

/// A definition file (checked strictly, as publishing does) as FHIR JSON. Only questionnaires
/// have a FHIR form.
pub fn definition_to_fhir_json(json: &str, status: PublicationStatus) -> Result<String> {
    let def = Definition::parse_strict(json)?;
    let q = def
        .questionnaire()
        .ok_or_else(|| FhirQuestionnaireError::Export {
            at: "definition".into(),
            reason: format!(
                "{} {} is a {}; only questionnaires have a FHIR Questionnaire form",
                def.envelope.id, def.envelope.version, def.envelope.definition
            ),
        })?;
    to_fhir_json(q, status)
}

// ---------------------------------------------------------------------------------------------
// Import.

/// What an import may fill in when the FHIR questionnaire does not say it.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The kind when the registry's kind extension is absent.
    pub kind: Option<QuestionnaireKind>,
    /// The definition id to use instead of the one derived from `url` (or `id`).
    pub id: Option<String>,
}

/// An imported questionnaire: the definition file (as the registry writes it) and its parse.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The definition file, in the layout [`Questionnaire::to_json`] writes.
    pub json: String,
    /// The checked questionnaire.
    pub questionnaire: Questionnaire,
}

const Q_KEYS: &[&str] = &[
    "resourceType",
    "language",
    "url",
    "version",
    "title",
    "_title",
    "description",
    "_description",
    "extension",
    "item",
];
const ITEM_KEYS: &[&str] = &[
    "id",
    "linkId",
    "text",
    "_text",
    "type",
    "required",
    "repeats",
    "readOnly",
    "maxLength",
    "answerOption",
    "enableWhen",
    "enableBehavior",
    "item",
    "extension",
];
const ENABLE_WHEN_KEYS: &[&str] = &[
    "id",
    "question",
    "operator",
    "answerBoolean",
    "answerDecimal",
    "answerInteger",
    "answerDate",
    "answerString",
    "answerCoding",
];
const OPTION_KEYS: &[&str] = &["id", "valueCoding", "extension"];
const CODING_KEYS: &[&str] = &["id", "code", "display", "_display", "extension"];

/// What some FHIR elements mean, for the error that refuses them.
fn describe(key: &str) -> String {
    let what = match key {
        "modifierExtension" => "modifierExtension (an extension that changes meaning)",
        "implicitRules" => "implicitRules",
        "contained" => "contained resources",
        "code" => "code (concept codes)",
        "prefix" => "prefix",
        "definition" => "definition (a link to an element definition)",
        "answerValueSet" => "answerValueSet (options from a value set)",
        "initial" => "initial (default answers)",
        "initialSelected" => "initialSelected (a default answer)",
        "system" => "a code system on a coding (codes are local to the item)",
        _ => "",
    };
    if what.is_empty() {
        format!("element {key}")
    } else {
        what.to_string()
    }
}

fn check_keys(v: &Value, at: &str, allowed: &[&str], ignored: &[&str]) -> Result<()> {
    let Value::Object(m) = v else {
        return Err(invalid(at, "expected a JSON object"));
    };
    for k in m.keys() {
        let base = k.strip_prefix('_').unwrap_or(k);
        if allowed.contains(&k.as_str()) || ignored.contains(&base) {
            continue;
        }
        return Err(unsupported(at, describe(k)));
    }
    Ok(())
}

/// Refuse, by name, every JSON element the conversion does not read (serde would ignore an
/// element the FHIR model does not know, e.g. an R5 one).
fn check_raw(v: &Value) -> Result<()> {
    fn each<'a>(v: &'a Value, key: &str) -> &'a [Value] {
        match v.get(key) {
            Some(Value::Array(a)) => a,
            _ => &[],
        }
    }
    check_keys(v, "questionnaire", Q_KEYS, IGNORED_METADATA)?;
    let mut stack: Vec<&Value> = each(v, "item").iter().collect();
    while let Some(item) = stack.pop() {
        let link = item
            .get("linkId")
            .and_then(Value::as_str)
            .unwrap_or("(no linkId)");
        let at = item_at(link);
        check_keys(item, &at, ITEM_KEYS, &[])?;
        for c in each(item, "enableWhen") {
            check_keys(c, &at, ENABLE_WHEN_KEYS, &[])
                .map_err(|e| enable_when_feature(e, "enableWhen"))?;
            if let Some(coding) = c.get("answerCoding") {
                check_keys(coding, &at, CODING_KEYS, &[])?;
            }
        }
        for o in each(item, "answerOption") {
            check_keys(o, &at, OPTION_KEYS, &[])
                .map_err(|e| enable_when_feature(e, "answerOption"))?;
            if let Some(coding) = o.get("valueCoding") {
                check_keys(coding, &at, CODING_KEYS, &[])?;
            }
        }
        stack.extend(each(item, "item"));
    }
    Ok(())
}

/// Prefix an element refused inside `enableWhen` or `answerOption` with where it was.
fn enable_when_feature(e: FhirQuestionnaireError, element: &str) -> FhirQuestionnaireError {
    match e {
        FhirQuestionnaireError::Unsupported { at, feature } => {
            FhirQuestionnaireError::Unsupported {
                at,
                feature: format!("{element}.{}", feature.trim_start_matches("element ")),
            }
        }
        other => other,
    }
}

/// The texts of a primitive's translation extensions, by language.
fn translations_in(at: &str, fe: &Option<FieldExtension>) -> Result<Vec<(String, String)>> {
    let Some(fe) = fe else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for e in &fe.extension {
        if e.url != EXT_TRANSLATION {
            return Err(unsupported(at, format!("extension {} on a text", e.url)));
        }
        let (mut lang, mut content) = (None, None);
        for p in &e.extension {
            match (p.url.as_str(), &p.value) {
                ("lang", Some(ExtensionValue::Code(l))) => lang = Some(l.clone()),
                ("content", Some(ExtensionValue::String(s) | ExtensionValue::Markdown(s))) => {
                    content = Some(s.clone())
                }
                (other, _) => {
                    return Err(unsupported(at, format!("translation part {other}")));
                }
            }
        }
        match (lang, content) {
            (Some(l), Some(c)) => out.push((l, c)),
            _ => return Err(invalid(at, "a translation needs lang and content")),
        }
    }
    Ok(out)
}

/// The translations being assembled, language → texts.
#[derive(Default)]
struct Texts(BTreeMap<String, Translation>);

impl Texts {
    fn lang(&mut self, l: String) -> &mut Translation {
        self.0.entry(l).or_default()
    }

    fn item(&mut self, l: String, id: &str) -> &mut ItemTranslation {
        self.lang(l).items.entry(id.to_string()).or_default()
    }
}

fn number(at: &str, what: &str, v: &Option<ExtensionValue>) -> Result<f64> {
    match v {
        Some(ExtensionValue::Integer(i)) => Ok(f64::from(*i)),
        Some(ExtensionValue::Decimal(x)) => Ok(*x),
        _ => Err(unsupported(
            at,
            format!("{what} that is not valueInteger or valueDecimal"),
        )),
    }
}

fn integer(at: &str, what: &str, v: &Option<ExtensionValue>) -> Result<i64> {
    match v {
        Some(ExtensionValue::Integer(i)) => Ok(i64::from(*i)),
        Some(ExtensionValue::UnsignedInt(i)) => Ok(i64::from(*i)),
        Some(ExtensionValue::PositiveInt(i)) => Ok(i64::from(i.get())),
        _ => Err(invalid(at, format!("{what} needs an integer value"))),
    }
}

fn coding_code(at: &str, c: &Coding) -> Result<String> {
    if c.system.is_some() || c.version.is_some() {
        return Err(unsupported(at, describe("system")));
    }
    match &c.code {
        Some(code) if !code.trim().is_empty() => Ok(code.clone()),
        _ => Err(invalid(at, "a coding has no code")),
    }
}

fn item_controls(at: &str, v: &Option<ExtensionValue>) -> Result<Vec<String>> {
    let Some(ExtensionValue::CodeableConcept(cc)) = v else {
        return Err(invalid(at, "itemControl needs valueCodeableConcept"));
    };
    let mut codes = Vec::new();
    for c in cc.coding.iter().flatten() {
        match (c.system.as_deref(), &c.code) {
            (None | Some(ITEM_CONTROL_SYSTEM), Some(code)) => codes.push(code.clone()),
            (Some(other), _) => {
                return Err(unsupported(at, format!("an itemControl from {other}")));
            }
            (None, None) => return Err(invalid(at, "an itemControl coding has no code")),
        }
    }
    if codes.is_empty() {
        return Err(invalid(
            at,
            "itemControl has no questionnaire-item-control code",
        ));
    }
    Ok(codes)
}

/// A FHIR Questionnaire (JSON) as a definition file, checked by the registry's strict parser.
pub fn from_fhir_json(json: &str, opts: &ImportOptions) -> Result<Imported> {
    let raw: Value = serde_json::from_str(json)
        .map_err(|e| FhirQuestionnaireError::NotQuestionnaire(e.to_string()))?;
    match raw.get("resourceType").and_then(Value::as_str) {
        Some("Questionnaire") => {}
        Some(other) => {
            return Err(FhirQuestionnaireError::NotQuestionnaire(format!(
                "it is a {other}"
            )))
        }
        None => {
            return Err(FhirQuestionnaireError::NotQuestionnaire(
                "it has no resourceType".into(),
            ))
        }
    }
    check_raw(&raw)?;
    let fq: FhirQuestionnaire = serde_json::from_value(raw)
        .map_err(|e| FhirQuestionnaireError::NotQuestionnaire(e.to_string()))?;
    from_fhir(&fq, opts)
}

/// A FHIR Questionnaire as a definition file, checked by the registry's strict parser.
pub fn from_fhir(fq: &FhirQuestionnaire, opts: &ImportOptions) -> Result<Imported> {
    let at = "questionnaire";
    if !fq.modifier_extension.is_empty() {
        return Err(unsupported(at, describe("modifierExtension")));
    }
    if fq.implicit_rules.is_some() {
        return Err(unsupported(at, describe("implicitRules")));
    }
    if !fq.contained.is_empty() {
        return Err(unsupported(at, describe("contained")));
    }
    if !fq.code.is_empty() {
        return Err(unsupported(at, describe("code")));
    }
    let id = match (&opts.id, &fq.url, &fq.id) {
        (Some(id), _, _) => id.clone(),
        (None, Some(url), _) => url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string(),
        (None, None, Some(id)) => id.clone(),
        (None, None, None) => {
            return Err(invalid(
                at,
                "it has neither url nor id to take the definition id from (give one with --id)",
            ))
        }
    };
    let version = fq.version.clone().ok_or_else(|| {
        invalid(
            at,
            "it has no version (a definition needs MAJOR.MINOR.PATCH)",
        )
    })?;
    let title = fq
        .title
        .clone()
        .ok_or_else(|| invalid(at, "it has no title"))?;
    let mut texts = Texts::default();
    for (l, s) in translations_in(at, &fq.title_ext)? {
        texts.lang(l).title = Some(s);
    }
    for (l, s) in translations_in(at, &fq.description_ext)? {
        texts.lang(l).description = Some(s);
    }

    let mut kind = None;
    let mut scores = Vec::new();
    for e in &fq.extension {
        if e.url == extension_url(KIND_EXTENSION) {
            let Some(ExtensionValue::Code(c)) = &e.value else {
                return Err(invalid(at, "the kind extension needs valueCode"));
            };
            kind = Some(kind_from_code(c).ok_or_else(|| {
                invalid(
                    at,
                    format!(
                    "kind {c:?} is not baseline, clinician_followup, patient_survey or adverse_event"
                ),
                )
            })?);
        } else if e.url == extension_url(SCORE_EXTENSION) {
            scores.push(score_in(e, &mut texts)?);
        } else {
            return Err(unsupported(at, format!("extension {}", e.url)));
        }
    }
    let kind = kind.or(opts.kind).ok_or_else(|| {
        invalid(
            at,
            format!(
                "it does not say its kind (extension {}); give one with --kind",
                extension_url(KIND_EXTENSION)
            ),
        )
    })?;

    let items: Vec<&QuestionnaireItem> = fq.item.iter().flatten().collect();
    let mut out_items = Vec::with_capacity(items.len());
    for it in &items {
        out_items.push(item_in(it, &mut texts)?);
    }

    let mut def = serde_json::Map::new();
    def.insert("format".into(), json!(FORMAT));
    def.insert("definition".into(), json!("questionnaire"));
    def.insert("id".into(), json!(id));
    def.insert("version".into(), json!(version));
    def.insert(
        "language".into(),
        json!(fq.language.clone().unwrap_or_else(|| "en".into())),
    );
    def.insert("title".into(), json!(title));
    if let Some(d) = &fq.description {
        def.insert("description".into(), json!(d));
    }
    def.insert("kind".into(), json!(kind_code(kind)));
    def.insert("items".into(), Value::Array(out_items));
    if !scores.is_empty() {
        def.insert("scores".into(), Value::Array(scores));
    }
    if !texts.0.is_empty() {
        def.insert(
            "translations".into(),
            serde_json::to_value(&texts.0)
                .map_err(|e| FhirQuestionnaireError::Builder(e.to_string()))?,
        );
    }
    let text = Value::Object(def).to_string();
    let parsed = Definition::parse_strict(&text)?;
    let questionnaire = parsed
        .questionnaire()
        .map(|q| (**q).clone())
        .ok_or_else(|| FhirQuestionnaireError::Builder("not a questionnaire".into()))?;
    Ok(Imported {
        json: questionnaire.to_json(),
        questionnaire,
    })
}

fn score_in(e: &Extension, texts: &mut Texts) -> Result<Value> {
    let at = "questionnaire";
    let (mut id, mut label, mut items, mut method, mut min) = (None, None, Vec::new(), None, None);
    for p in &e.extension {
        let string = || match &p.value {
            Some(ExtensionValue::String(s) | ExtensionValue::Code(s)) => Ok(s.clone()),
            _ => Err(invalid(at, format!("score part {} needs a string", p.url))),
        };
        match p.url.as_str() {
            "id" => id = Some(string()?),
            "label" => label = Some((string()?, p.value_ext.clone())),
            "item" => items.push(string()?),
            "method" => method = Some(string()?),
            "minAnswered" => min = Some(integer(at, "score minAnswered", &p.value)?),
            other => return Err(unsupported(at, format!("score part {other}"))),
        }
    }
    let id = id.ok_or_else(|| invalid(at, "a score extension has no id"))?;
    let (label, label_ext) =
        label.ok_or_else(|| invalid(at, format!("score {id} has no label")))?;
    let fe = match label_ext {
        None => None,
        Some(ExtensionValueExtension::String(fe)) => Some(fe),
        Some(_) => return Err(invalid(at, format!("score {id}: a malformed label"))),
    };
    for (l, s) in translations_in(at, &fe)? {
        texts.lang(l).scores.insert(id.clone(), s);
    }
    let mut v = json!({ "id": id, "label": label, "items": items, "method": method });
    if let Some(m) = min {
        v["min_answered"] = json!(m);
    }
    Ok(v)
}

fn item_in(it: &QuestionnaireItem, texts: &mut Texts) -> Result<Value> {
    let id = it.link_id.as_str();
    let at = item_at(id);
    let at = at.as_str();
    if !it.modifier_extension.is_empty() {
        return Err(unsupported(at, describe("modifierExtension")));
    }
    for (present, name) in [
        (it.definition.is_some(), "definition"),
        (!it.code.is_empty(), "code"),
        (it.prefix.is_some(), "prefix"),
        (it.answer_value_set.is_some(), "answerValueSet"),
        (!it.initial.is_empty(), "initial"),
    ] {
        if present {
            return Err(unsupported(at, describe(name)));
        }
    }
    if it.read_only == Some(true) {
        return Err(unsupported(at, "readOnly (a calculated or fixed answer)"));
    }
    let text = it
        .text
        .clone()
        .ok_or_else(|| invalid(at, "it has no text"))?;
    let mut out = serde_json::Map::new();
    out.insert("id".into(), json!(id));
    out.insert("text".into(), json!(text));
    for (l, s) in translations_in(at, &it.text_ext)? {
        texts.item(l, id).text = Some(s);
    }

    let repeats = it.repeats == Some(true);
    let mut slider = false;
    let (mut min, mut max) = (None, None);
    for e in &it.extension {
        match e.url.as_str() {
            EXT_MIN_VALUE => min = Some(number(at, "minValue", &e.value)?),
            EXT_MAX_VALUE => max = Some(number(at, "maxValue", &e.value)?),
            EXT_MAX_DECIMALS => {
                out.insert(
                    "decimals".into(),
                    json!(integer(at, "maxDecimalPlaces", &e.value)?),
                );
            }
            EXT_UNIT => {
                let Some(ExtensionValue::Coding(c)) = &e.value else {
                    return Err(invalid(at, "questionnaire-unit needs valueCoding"));
                };
                if c.system.is_some() || c.code.is_some() {
                    return Err(unsupported(
                        at,
                        "a coded unit (questionnaire-unit with a system or code; a definition \
                         keeps only the unit as shown, its display)",
                    ));
                }
                let unit = c
                    .display
                    .clone()
                    .ok_or_else(|| invalid(at, "questionnaire-unit has no display"))?;
                out.insert("unit".into(), json!(unit));
                for (l, s) in translations_in(at, &c.display_ext)? {
                    texts.item(l, id).unit = Some(s);
                }
            }
            EXT_ITEM_CONTROL => {
                for code in item_controls(at, &e.value)? {
                    if code == "slider" && it.r#type == QuestionnaireItemType::Integer {
                        slider = true;
                    } else {
                        return Err(unsupported(at, format!("itemControl {code}")));
                    }
                }
            }
            EXT_SLIDER_STEP => {
                if integer(at, "sliderStepValue", &e.value)? != 1 {
                    return Err(unsupported(at, "a sliderStepValue other than 1"));
                }
            }
            other => return Err(unsupported(at, format!("extension {other}"))),
        }
    }
    let kind = match it.r#type {
        QuestionnaireItemType::Boolean => ItemType::Boolean,
        QuestionnaireItemType::Integer if slider => ItemType::Scale0To10,
        QuestionnaireItemType::Integer => ItemType::Integer,
        QuestionnaireItemType::Decimal => ItemType::Decimal,
        QuestionnaireItemType::Choice if repeats => ItemType::MultipleChoice,
        QuestionnaireItemType::Choice => ItemType::SingleChoice,
        QuestionnaireItemType::Date => ItemType::Date,
        QuestionnaireItemType::String | QuestionnaireItemType::Text => ItemType::Text,
        QuestionnaireItemType::Group => {
            return Err(unsupported(
                at,
                "type group (definitions are a flat list of questions)",
            ))
        }
        QuestionnaireItemType::Display => {
            return Err(unsupported(
                at,
                "type display (text shown between questions; only an item's help is kept)",
            ))
        }
        other => return Err(unsupported(at, format!("type {other}"))),
    };
    if repeats && kind != ItemType::MultipleChoice {
        return Err(unsupported(
            at,
            "repeats (several answers) on a non-choice item",
        ));
    }
    if kind == ItemType::Scale0To10 {
        // The 0-10 bounds are the scale's own; narrower ones are kept.
        if min.is_some_and(|m| m < 0.0) || max.is_some_and(|m| m > 10.0) {
            return Err(unsupported(at, "a slider whose range is beyond 0-10"));
        }
        min = min.filter(|m| *m != 0.0);
        max = max.filter(|m| *m != 10.0);
    }
    out.insert("type".into(), json!(kind.code()));
    if it.required == Some(true) {
        out.insert("required".into(), json!(true));
    }
    if let Some(m) = min {
        out.insert("min".into(), json!(m));
    }
    if let Some(m) = max {
        out.insert("max".into(), json!(m));
    }
    if let Some(n) = it.max_length {
        out.insert("max_length".into(), json!(n));
    }
    if !it.answer_option.is_empty() && !kind.is_choice() {
        return Err(unsupported(
            at,
            format!("answerOption on a {} item", it.r#type),
        ));
    }
    let mut choices = Vec::new();
    for o in it.answer_option.iter().flatten() {
        choices.push(option_in(at, id, o, texts)?);
    }
    if !choices.is_empty() {
        out.insert("choices".into(), Value::Array(choices));
    }
    let mut conditions = Vec::new();
    for c in it.enable_when.iter().flatten() {
        conditions.push(condition_in(at, c)?);
    }
    if !conditions.is_empty() {
        out.insert("enable_when".into(), Value::Array(conditions));
    }
    if it.enable_behavior == Some(EnableWhenBehavior::Any) {
        out.insert("enable_behavior".into(), json!("any"));
    }
    for child in it.item.iter().flatten() {
        help_in(at, id, child, texts, &mut out)?;
    }
    Ok(Value::Object(out))
}

fn help_in(
    at: &str,
    id: &str,
    child: &QuestionnaireItem,
    texts: &mut Texts,
    out: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    let nested = || {
        unsupported(
            at,
            format!(
                "nested item {} (only a display item with itemControl help is kept)",
                child.link_id
            ),
        )
    };
    if child.r#type != QuestionnaireItemType::Display || out.contains_key("help") {
        return Err(nested());
    }
    let mut is_help = false;
    for e in &child.extension {
        if e.url == EXT_ITEM_CONTROL && item_controls(at, &e.value)? == ["help"] {
            is_help = true;
        } else {
            return Err(nested());
        }
    }
    if !is_help
        || !child.item.is_empty()
        || !child.enable_when.is_empty()
        || !child.modifier_extension.is_empty()
    {
        return Err(nested());
    }
    let text = child
        .text
        .clone()
        .ok_or_else(|| invalid(at, "its help item has no text"))?;
    out.insert("help".into(), json!(text));
    for (l, s) in translations_in(at, &child.text_ext)? {
        texts.item(l, id).help = Some(s);
    }
    Ok(())
}

fn option_in(
    at: &str,
    id: &str,
    o: &QuestionnaireItemAnswerOption,
    texts: &mut Texts,
) -> Result<Value> {
    if !o.modifier_extension.is_empty() {
        return Err(unsupported(at, describe("modifierExtension")));
    }
    if o.initial_selected == Some(true) {
        return Err(unsupported(at, describe("initialSelected")));
    }
    let QuestionnaireItemAnswerOptionValue::Coding(c) = &o.value else {
        return Err(unsupported(at, "an answerOption that is not a valueCoding"));
    };
    let code = coding_code(at, c)?;
    let label = c.display.clone().unwrap_or_else(|| code.clone());
    let mut v = json!({ "code": code, "label": label });
    for (l, s) in translations_in(at, &c.display_ext)? {
        texts.item(l, id).choices.insert(code.clone(), s);
    }
    // ordinalValue may sit on the option or on its coding.
    for e in o.extension.iter().chain(c.extension.iter()) {
        match e.url.as_str() {
            EXT_ORDINAL | EXT_ORDINAL_OLD => {
                v["score"] = json!(number(at, "ordinalValue", &e.value)?);
            }
            EXT_EXCLUSIVE => match e.value {
                Some(ExtensionValue::Boolean(x)) => {
                    if x {
                        v["exclusive"] = json!(true);
                    }
                }
                _ => return Err(invalid(at, "optionExclusive needs valueBoolean")),
            },
            other => {
                return Err(unsupported(
                    at,
                    format!("extension {other} on answer option {code}"),
                ))
            }
        }
    }
    Ok(v)
}

fn condition_in(at: &str, c: &QuestionnaireItemEnableWhen) -> Result<Value> {
    use QuestionnaireItemEnableWhenAnswer as A;
    if !c.modifier_extension.is_empty() {
        return Err(unsupported(at, describe("modifierExtension")));
    }
    let op = match c.operator {
        QuestionnaireItemOperator::Exists => "exists",
        QuestionnaireItemOperator::Equal => "=",
        QuestionnaireItemOperator::NotEqual => "!=",
        QuestionnaireItemOperator::Greater => ">",
        QuestionnaireItemOperator::GreaterOrEqual => ">=",
        QuestionnaireItemOperator::Less => "<",
        QuestionnaireItemOperator::LessOrEqual => "<=",
    };
    let value = match &c.answer {
        // `exists true` is the definition's default: written without a value.
        A::Boolean(true) if op == "exists" => None,
        A::Boolean(v) => Some(json!(v)),
        A::Integer(n) => Some(json!(n)),
        A::Decimal(x) => Some(json!(x)),
        A::Date(d) => Some(
            serde_json::to_value(d).map_err(|e| invalid(at, format!("enableWhen date: {e}")))?,
        ),
        A::String(s) => Some(json!(s)),
        A::Coding(coding) => Some(json!(coding_code(at, coding)?)),
        A::DateTime(_) => return Err(unsupported(at, "enableWhen answerDateTime")),
        A::Time(_) => return Err(unsupported(at, "enableWhen answerTime")),
        A::Quantity(_) => return Err(unsupported(at, "enableWhen answerQuantity")),
        A::Reference(_) => return Err(unsupported(at, "enableWhen answerReference")),
    };
    let mut v = json!({ "item": c.question, "operator": op });
    if let Some(x) = value {
        v["value"] = x;
    }
    Ok(v)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
