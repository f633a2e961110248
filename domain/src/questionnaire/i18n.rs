//! Translations of a questionnaire's texts and the choice of a language for a locale.
//!
//! A definition's untranslated texts are in its `language` (default `en`); `translations` holds,
//! per language tag, any subset of the texts in that language:
//!
//! ```json
//! "translations": { "es": { "title": "…", "description": "…",
//!     "items": { "pain": { "text": "…", "help": "…", "unit": "…", "choices": { "none": "…" } } },
//!     "scores": { "burden": "…" } } }
//! ```
//!
//! A text is looked up by the locale's fallback chain (`pt-BR` → `pt`), then the default.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{DefinitionError, Item, Questionnaire};
use crate::definitions::fallback_chain;

/// One language's texts of an item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemTranslation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Choice code → label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub choices: BTreeMap<String, String>,
}

/// One language's texts of a questionnaire.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Translation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Item id → its texts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub items: BTreeMap<String, ItemTranslation>,
    /// Score id → its label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scores: BTreeMap<String, String>,
}

/// A language tag as compared: lower case, `_` read as `-`.
pub fn normalize_tag(tag: &str) -> String {
    tag.trim().replace('_', "-").to_ascii_lowercase()
}

/// Whether a language tag is well formed (letters, digits and `-`, starting with 2–3 letters).
pub(super) fn valid_tag(tag: &str) -> bool {
    let mut parts = tag.split(['-', '_']);
    let first_ok = parts
        .next()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphabetic()));
    first_ok
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Check that every translated item, choice and score exists and no text is blank.
pub(super) fn check(
    language: &str,
    translations: &BTreeMap<String, Translation>,
    q: &Questionnaire,
) -> Result<(), DefinitionError> {
    let bad = |lang: &str, reason: String| DefinitionError::InvalidTranslation {
        language: lang.to_string(),
        reason,
    };
    if !valid_tag(language) {
        return Err(bad(language, "the language tag is not valid".into()));
    }
    let blank = |s: &Option<String>| s.as_deref().is_some_and(|t| t.trim().is_empty());
    for (lang, t) in translations {
        if !valid_tag(lang) {
            return Err(bad(lang, "the language tag is not valid".into()));
        }
        if normalize_tag(lang) == normalize_tag(language) {
            return Err(bad(
                lang,
                "translates into the definition's own language".into(),
            ));
        }
        if blank(&t.title) || blank(&t.description) {
            return Err(bad(lang, "the title or description is blank".into()));
        }
        for (id, it) in &t.items {
            let Some(item) = q.item(id) else {
                return Err(bad(lang, format!("item {id} is not in the questionnaire")));
            };
            if blank(&it.text) || blank(&it.help) || blank(&it.unit) {
                return Err(bad(lang, format!("a text of item {id} is blank")));
            }
            for (code, label) in &it.choices {
                if item.choice(code).is_none() {
                    return Err(bad(lang, format!("item {id} has no choice {code:?}")));
                }
                if label.trim().is_empty() {
                    return Err(bad(lang, format!("choice {code:?} of item {id} is blank")));
                }
            }
        }
        for (id, label) in &t.scores {
            if !q.score_definitions().iter().any(|s| &s.id == id) {
                return Err(bad(lang, format!("score {id} is not in the questionnaire")));
            }
            if label.trim().is_empty() {
                return Err(bad(lang, format!("the label of score {id} is blank")));
            }
        }
    }
    Ok(())
}

/// The translations that apply to `locale`, least specific first (so that applying them in
/// order lets the most specific win), stopping at the definition's own language.
pub(super) fn applicable<'a>(
    language: &str,
    translations: &'a BTreeMap<String, Translation>,
    locale: &str,
) -> Vec<&'a Translation> {
    let own = normalize_tag(language);
    let mut out = Vec::new();
    for tag in fallback_chain(locale) {
        if tag == own {
            break;
        }
        if let Some((_, t)) = translations.iter().find(|(k, _)| normalize_tag(k) == tag) {
            out.push(t);
        }
    }
    out.reverse();
    out
}

fn apply_item(item: &mut Item, t: &ItemTranslation) {
    if let Some(s) = &t.text {
        item.text.clone_from(s);
    }
    if let Some(s) = &t.help {
        item.help = Some(s.clone());
    }
    if let Some(s) = &t.unit {
        item.unit = Some(s.clone());
    }
    for c in &mut item.choices {
        if let Some(label) = t.choices.get(&c.code) {
            c.label.clone_from(label);
        }
    }
}

/// A copy of `q` with every text in `locale` where a translation has it.
pub(super) fn localized(q: &Questionnaire, locale: &str) -> Questionnaire {
    let mut out = q.clone();
    for t in applicable(&q.language, &q.translations, locale) {
        if let Some(s) = &t.title {
            out.title.clone_from(s);
        }
        if let Some(s) = &t.description {
            out.description = Some(s.clone());
        }
        for item in &mut out.items {
            if let Some(it) = t.items.get(&item.id) {
                apply_item(item, it);
            }
        }
        for score in &mut out.scores {
            if let Some(label) = t.scores.get(&score.id) {
                score.label.clone_from(label);
            }
        }
    }
    out
}
