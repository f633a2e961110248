//! One vocabulary for coded values. The typed model's code enums ([`crate::model`]) are the
//! source; the registry's instruments (questionnaire JSON) offer the same codes as choices. This
//! module says which instrument item carries which model code list, and its test fails as soon
//! as the two drift apart (a code added to one side only, a spelling changed).

use crate::model::{
    AeCategory, AeOutcome, CellType, Manipulation, Origin, RegulatoryStatus, Route, Seriousness,
    SourceTissue,
};

/// The adverse-event instrument.
pub const AE_INSTRUMENT: &str = "adverse-event-report";
/// The procedure baseline instrument.
pub const BASELINE_INSTRUMENT: &str = "baseline-procedure";
/// Items whose answer is the date a response was taken (the visit date): checked against the
/// procedure date and the clock.
pub const VISIT_DATE_ITEMS: &[&str] = &["visit_date", "completed_date"];

/// An instrument item whose choices are a model code list.
#[derive(Debug, Clone)]
pub struct CodeList {
    pub instrument: &'static str,
    pub item: &'static str,
    /// The model's codes, in declaration order.
    pub codes: Vec<&'static str>,
    /// Choices the form offers that are not values of the model (e.g. `none` for "no
    /// seriousness criterion", stored as an empty list).
    pub form_only: &'static [&'static str],
}

fn list<T: Copy>(
    instrument: &'static str,
    item: &'static str,
    all: &[T],
    code: fn(&T) -> &'static str,
    form_only: &'static [&'static str],
) -> CodeList {
    CodeList {
        instrument,
        item,
        codes: all.iter().map(code).collect(),
        form_only,
    }
}

/// Every instrument item bound to a model code list.
pub fn code_lists() -> Vec<CodeList> {
    vec![
        list(
            AE_INSTRUMENT,
            "category",
            AeCategory::ALL,
            AeCategory::code,
            &[],
        ),
        list(
            AE_INSTRUMENT,
            "seriousness",
            Seriousness::ALL,
            Seriousness::code,
            &["none"],
        ),
        list(
            AE_INSTRUMENT,
            "outcome",
            AeOutcome::ALL,
            AeOutcome::code,
            &[],
        ),
        list(BASELINE_INSTRUMENT, "route", Route::ALL, Route::code, &[]),
        list(
            BASELINE_INSTRUMENT,
            "cell_type",
            CellType::ALL,
            CellType::code,
            &[],
        ),
        list(
            BASELINE_INSTRUMENT,
            "source_tissue",
            SourceTissue::ALL,
            SourceTissue::code,
            &[],
        ),
        list(
            BASELINE_INSTRUMENT,
            "origin",
            Origin::ALL,
            Origin::code,
            &[],
        ),
        list(
            BASELINE_INSTRUMENT,
            "manipulation",
            Manipulation::ALL,
            Manipulation::code,
            &[],
        ),
        list(
            BASELINE_INSTRUMENT,
            "regulatory_status",
            RegulatoryStatus::ALL,
            RegulatoryStatus::code,
            &[],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::questionnaire::instrument_ref;
    use std::collections::BTreeSet;

    /// The drift test: each bound item offers exactly the model's codes (plus its form-only
    /// choices), and the severity item offers grades 1 to 5.
    #[test]
    fn instruments_and_model_use_the_same_codes() {
        for l in code_lists() {
            let q = instrument_ref(l.instrument).unwrap();
            let item = q
                .item(l.item)
                .unwrap_or_else(|| panic!("{} has no item {}", l.instrument, l.item));
            let offered: BTreeSet<&str> = item.choices.iter().map(|c| c.code.as_str()).collect();
            let expected: BTreeSet<&str> =
                l.codes.iter().chain(l.form_only.iter()).copied().collect();
            assert_eq!(
                offered, expected,
                "{}.{} and the model's code list differ",
                l.instrument, l.item
            );
        }
        let q = instrument_ref(AE_INSTRUMENT).unwrap();
        let grades: Vec<&str> = q
            .item("severity_grade")
            .unwrap()
            .choices
            .iter()
            .map(|c| c.code.as_str())
            .collect();
        assert_eq!(grades, ["1", "2", "3", "4", "5"]);
        for item in VISIT_DATE_ITEMS {
            assert!(
                crate::questionnaire::default_instruments()
                    .iter()
                    .any(|q| q.item(item).is_some()),
                "no instrument has the visit date item {item}"
            );
        }
    }
}
