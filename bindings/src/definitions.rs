//! The registry's published definitions as the app sees them: which forms the store holds (with
//! their versions, states and languages, and whether this app can use each), the language the
//! app renders them in, and the exact version a draft was started with. Translation only: the
//! fallback (`pt-BR` → `pt` → the definition's own language) and the version rules are core's.

use followup_domain::definitions::{DefinitionState as CoreState, Usability};

use crate::error::FollowupError;
use crate::store::FollowupStore;
use crate::types::{self as t, record_id};

/// The locale a store renders in until the app sets one.
pub(crate) const DEFAULT_LOCALE: &str = "en";

/// Where a definition version is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum DefinitionState {
    /// Uploaded at the registry, not in use (devices normally never hold one).
    Draft,
    /// In use: new responses use the newest published version.
    Published,
    /// No longer offered for new responses; drafts started with it still use it.
    Retired,
}

impl From<CoreState> for DefinitionState {
    fn from(s: CoreState) -> Self {
        match s {
            CoreState::Draft => Self::Draft,
            CoreState::Published => Self::Published,
            CoreState::Retired => Self::Retired,
        }
    }
}

/// One definition version the store holds (a questionnaire, a schedule or the adjudication
/// policy), for a "forms" screen.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DefinitionSummary {
    /// `questionnaire`, `schedule`, `adjudication_policy` (or a type newer than this app).
    pub definition_type: String,
    /// E.g. `patient-outcome-survey`.
    pub id: String,
    /// E.g. `1.1.0`.
    pub version: String,
    pub state: DefinitionState,
    /// Language tags it has texts in, its own language first.
    pub languages: Vec<String>,
    /// False when the definition uses a feature this app does not know: tell the user that
    /// this form needs an app update. Every other form keeps working.
    pub usable: bool,
    /// Why it is not usable (for support, not for the user), when it is not.
    pub needs_update_reason: Option<String>,
}

impl From<followup_device::device::DefinitionInfo> for DefinitionSummary {
    fn from(d: followup_device::device::DefinitionInfo) -> Self {
        let (usable, needs_update_reason) = match d.usability {
            Usability::Usable => (true, None),
            Usability::NeedsUpdate(reason) => (false, Some(reason)),
        };
        Self {
            definition_type: d.definition,
            id: d.id,
            version: d.version,
            state: d.state.into(),
            languages: d.languages,
            usable,
            needs_update_reason,
        }
    }
}

/// A locale tag as apps get it from the platform: `pt-BR` (Kotlin's `toLanguageTag()`) or
/// `pt_BR` (Swift's `Locale.identifier`, perhaps with `@calendar=…`), either way with fallback
/// in core.
fn normalize_locale(locale: &str) -> Result<String, FollowupError> {
    // ICU keywords (`en_US@calendar=gregorian`) say nothing about the language.
    let base = locale.split('@').next().unwrap_or_default();
    let tag = base.trim().replace('_', "-");
    let well_formed = !tag.is_empty()
        && tag.len() <= 35
        && tag.split('-').all(|part| {
            !part.is_empty() && part.len() <= 8 && part.chars().all(|c| c.is_ascii_alphanumeric())
        });
    if well_formed {
        Ok(tag)
    } else {
        Err(FollowupError::invalid_input(format!(
            "`{locale}` is not a language tag; pass one such as `es` or `pt-BR` (the device's locale)"
        )))
    }
}

impl FollowupStore {
    /// The locale set by `set_locale` (or `en`).
    pub(crate) fn current_locale(&self) -> String {
        self.locale
            .read()
            .map(|l| l.clone())
            .unwrap_or_else(|_| DEFAULT_LOCALE.to_string())
    }
}

#[uniffi::export]
impl FollowupStore {
    /// Sets the language of questionnaire texts (titles, items, help, choice labels, units) and
    /// of validation messages, as a BCP 47 tag: pass the device's locale (`pt-BR`, or `pt_BR`).
    /// A text missing in that language falls back (`pt-BR` → `pt` → the definition's own
    /// language), so any tag is safe. Until set, texts are in English.
    pub fn set_locale(&self, locale: String) -> Result<(), FollowupError> {
        let tag = normalize_locale(&locale)?;
        let mut l = self
            .locale
            .write()
            .map_err(|_| FollowupError::internal("the locale lock is poisoned"))?;
        *l = tag;
        Ok(())
    }

    /// The locale texts are rendered in (see `set_locale`).
    pub fn locale(&self) -> String {
        self.current_locale()
    }

    /// Every definition version the store holds, as received from the registry: questionnaires
    /// (the forms the app offers are the usable, published ones), schedules and the policy.
    pub fn definitions(&self) -> Result<Vec<DefinitionSummary>, FollowupError> {
        self.with(|d| Ok(d.definitions()?.into_iter().map(Into::into).collect()))
    }

    /// The questionnaire a response answers, at the exact version it was started with (render a
    /// resumed draft with this, not with `questionnaire`, which is the newest version), in the
    /// store's locale.
    pub fn response_questionnaire(
        &self,
        response_id: String,
    ) -> Result<t::Questionnaire, FollowupError> {
        let locale = self.current_locale();
        self.with(|d| {
            let id = record_id(&response_id, "response id")?;
            let q = d.response_questionnaire(id)?.localized(&locale);
            Ok(t::Questionnaire::from_core(&q, &Default::default()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_locale;

    #[test]
    fn platform_locale_tags_are_accepted_and_normalized() {
        assert_eq!(normalize_locale("pt-BR").ok().as_deref(), Some("pt-BR"));
        assert_eq!(normalize_locale("pt_BR").ok().as_deref(), Some("pt-BR"));
        assert_eq!(normalize_locale(" es ").ok().as_deref(), Some("es"));
        assert_eq!(
            normalize_locale("th_TH@calendar=buddhist").ok().as_deref(),
            Some("th-TH")
        );
        assert_eq!(
            normalize_locale("zh-Hant-TW").ok().as_deref(),
            Some("zh-Hant-TW")
        );
    }

    #[test]
    fn garbage_is_refused_with_what_to_pass() {
        for bad in ["", "  ", "pt--BR", "es;drop", "x-verylongsubtag1"] {
            let err = normalize_locale(bad).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|m| m.contains("pt-BR")),
                "{bad:?}: {err:?}"
            );
        }
    }
}
