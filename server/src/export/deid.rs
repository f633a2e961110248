//! De-identification (HIPAA Safe Harbor as the reference; `docs/export.md` lists every field):
//! keyed pseudonyms, dates as year + days from the procedure, ages over 89 grouped, free text
//! withheld, loosely typed strings kept only when they are codes.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate};
use followup_domain::ids::RecordId;
use ring::hmac;
use ring::rand::SystemRandom;

use super::ExportError;

/// What kind of record an exported id names; the prefix of the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    Clinic,
    Patient,
    Procedure,
    Response,
    AdverseEvent,
    Adjudication,
}

impl IdKind {
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::Clinic => "cln",
            IdKind::Patient => "pat",
            IdKind::Procedure => "prc",
            IdKind::Response => "rsp",
            IdKind::AdverseEvent => "ae",
            IdKind::Adjudication => "adj",
        }
    }
}

/// Turns record ids into export ids. De-identified: `prefix-` + the first 12 bytes (24 hex) of
/// HMAC-SHA256 under a key drawn for this export alone and never stored, so the same record gets
/// the same id everywhere in one export, and ids cannot be joined to the registry's ids, to
/// device ids, or to another export's. Identified: `prefix-` + the record id itself.
pub struct Pseudonymizer {
    key: Option<hmac::Key>,
}

impl Pseudonymizer {
    /// A pseudonymizer with a fresh random key (de-identified exports).
    pub fn keyed() -> Result<Self, ExportError> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| ExportError::Internal("the system random generator failed".into()))?;
        Ok(Pseudonymizer { key: Some(key) })
    }

    /// The identity mapping (identified exports).
    pub fn identity() -> Self {
        Pseudonymizer { key: None }
    }

    pub fn is_keyed(&self) -> bool {
        self.key.is_some()
    }

    pub fn id(&self, kind: IdKind, id: RecordId) -> String {
        match &self.key {
            None => format!("{}-{}", kind.prefix(), id.to_hex()),
            Some(key) => {
                // The record kind is part of the message, so a patient and a response with the
                // same bytes could not collide either.
                let mut msg = Vec::with_capacity(20);
                msg.extend_from_slice(kind.prefix().as_bytes());
                msg.push(0);
                msg.extend_from_slice(id.as_bytes());
                let tag = hmac::sign(key, &msg);
                format!("{}-{}", kind.prefix(), hex::encode(&tag.as_ref()[..12]))
            }
        }
    }

    /// Export id of a record id stored as text in a body (`procedure`, `adverse_event`); `None`
    /// when it is not a record id.
    pub fn id_str(&self, kind: IdKind, id: &str) -> Option<String> {
        id.parse::<RecordId>().ok().map(|r| self.id(kind, r))
    }
}

/// Ages from 90 up are reported as one group, as Safe Harbor requires.
pub const AGE_TOP: i32 = 90;

/// The procedure dates day offsets are counted from.
///
/// Memory: one entry per procedure in the scope (tens of bytes each), independent of the number
/// of responses.
#[derive(Default)]
pub struct Anchors {
    /// procedure id → (patient, date)
    procedures: HashMap<RecordId, (RecordId, NaiveDate)>,
    /// patient → date of their first procedure (the index procedure)
    index: HashMap<RecordId, NaiveDate>,
}

impl Anchors {
    pub fn add_procedure(&mut self, procedure: RecordId, patient: RecordId, date: NaiveDate) {
        self.procedures.insert(procedure, (patient, date));
        self.index
            .entry(patient)
            .and_modify(|d| {
                if date < *d {
                    *d = date
                }
            })
            .or_insert(date);
    }

    /// The anchor for a record of `patient` that names `procedure` (if any): that procedure's
    /// date when it is the patient's, else the patient's index procedure.
    pub fn anchor(&self, patient: RecordId, procedure: Option<&str>) -> Option<NaiveDate> {
        if let Some(p) = procedure.and_then(|p| p.parse::<RecordId>().ok()) {
            if let Some((owner, date)) = self.procedures.get(&p) {
                if *owner == patient {
                    return Some(*date);
                }
            }
        }
        self.index.get(&patient).copied()
    }

    /// The patient a procedure in the scope belongs to.
    pub fn owner(&self, procedure: RecordId) -> Option<RecordId> {
        self.procedures.get(&procedure).map(|(p, _)| *p)
    }

    /// The patient's index procedure date.
    pub fn index_date(&self, patient: RecordId) -> Option<NaiveDate> {
        self.index.get(&patient).copied()
    }

    pub fn procedure_count(&self) -> usize {
        self.procedures.len()
    }
}

/// A date as exported: its year, its offset in days from the anchor, and (identified exports
/// only) the exact date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportDate {
    pub year: i32,
    pub day: Option<i64>,
    pub exact: Option<String>,
}

/// Parse `YYYY-MM-DD` or an RFC 3339 date-time (its UTC date).
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let s = s.trim();
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|dt| dt.with_timezone(&chrono::Utc).date_naive())
}

/// Reduce a stored date (or date-time) to what the export may show.
pub fn export_date(
    value: Option<&str>,
    anchor: Option<NaiveDate>,
    identified: bool,
) -> Option<ExportDate> {
    let raw = value?;
    let date = parse_date(raw)?;
    Some(ExportDate {
        year: date.year(),
        day: anchor.map(|a| (date - a).num_days()),
        exact: identified.then(|| raw.trim().to_string()),
    })
}

/// A patient's age group: the age in whole years at the reference year, or `90+`.
pub fn age(birth_year: i64, at_year: i32) -> Option<String> {
    let age = i64::from(at_year) - birth_year;
    if !(0..=150).contains(&age) {
        return None;
    }
    Some(if age >= i64::from(AGE_TOP) {
        format!("{AGE_TOP}+")
    } else {
        age.to_string()
    })
}

/// Whether a birth year must be withheld: the patient is 90 or older at `now_year`.
pub fn birth_year_withheld(birth_year: i64, now_year: i32) -> bool {
    i64::from(now_year) - birth_year >= i64::from(AGE_TOP)
}

/// A string that is a code: lowercase ASCII letters, digits and `_`, 1–64 characters. Loosely
/// typed model fields (an adverse-event category, a seriousness criterion, a consent scope) are
/// exported de-identified only when they are codes; anything else could be free text.
pub fn is_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// An identifier such as a questionnaire id or version (`clinician-followup`, `1.0.0`): lowercase
/// ASCII letters, digits, `-`, `_` and `.`, 1–64 characters.
pub fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

/// A registration or version token (`NCT01234567`, `ISRCTN12345678`, `2024-1`, `v2.1`): one word
/// of letters, digits, `-`, `.` and `/`, 2–40 characters, with at least one digit. Names and
/// sentences are not.
pub fn is_token_with_digit(s: &str) -> bool {
    (2..=40).contains(&s.len())
        && s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'/'))
}

/// An ISO 4217 currency code.
pub fn is_currency(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// The procedure-type codes of the baseline instrument, and the free-text labels the model's
/// documentation uses for them; a procedure's `procedure_type` is exported de-identified only as
/// one of these codes.
pub fn procedure_type_code(s: &str) -> Option<&'static str> {
    let norm = s.trim().to_ascii_lowercase();
    const CODES: [(&str, &[&str]); 5] = [
        (
            "ahsct",
            &[
                "autologous haematopoietic stem cell transplant",
                "autologous hematopoietic stem cell transplant",
            ],
        ),
        (
            "allo_hsct",
            &[
                "allogeneic haematopoietic stem cell transplant",
                "allogeneic hematopoietic stem cell transplant",
            ],
        ),
        ("cell_infusion", &["cell infusion"]),
        ("cell_injection", &["cell injection"]),
        ("other", &[]),
    ];
    CODES
        .iter()
        .find(|(code, labels)| norm == *code || labels.contains(&norm.as_str()))
        .map(|(code, _)| *code)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keyed_ids_are_stable_within_an_export_and_differ_across_exports() {
        let a = Pseudonymizer::keyed().unwrap();
        let b = Pseudonymizer::keyed().unwrap();
        let id = RecordId::random();
        assert_eq!(a.id(IdKind::Patient, id), a.id(IdKind::Patient, id));
        assert_ne!(a.id(IdKind::Patient, id), b.id(IdKind::Patient, id));
        assert_ne!(a.id(IdKind::Patient, id), a.id(IdKind::Response, id));
        let s = a.id(IdKind::Patient, id);
        assert!(s.starts_with("pat-") && s.len() == 4 + 24, "{s}");
        assert!(!s.contains(&id.to_hex()));
        assert_eq!(
            Pseudonymizer::identity().id(IdKind::Clinic, id),
            format!("cln-{}", id.to_hex())
        );
    }

    #[test]
    fn dates_become_year_and_offset() {
        let anchor = NaiveDate::from_ymd_opt(2025, 3, 10);
        let d = export_date(Some("2025-06-08"), anchor, false).unwrap();
        assert_eq!(d.year, 2025);
        assert_eq!(d.day, Some(90));
        assert_eq!(d.exact, None);
        let t = export_date(Some("2025-03-09T23:30:00Z"), anchor, true).unwrap();
        assert_eq!(t.day, Some(-1));
        assert_eq!(t.exact.as_deref(), Some("2025-03-09T23:30:00Z"));
        assert_eq!(export_date(Some("soon"), anchor, false), None);
        assert_eq!(
            export_date(Some("2025-01-01"), None, false).unwrap().day,
            None
        );
    }

    #[test]
    fn ages_over_89_are_grouped() {
        assert_eq!(age(1961, 2025).as_deref(), Some("64"));
        assert_eq!(age(1935, 2025).as_deref(), Some("90+"));
        assert_eq!(age(1936, 2025).as_deref(), Some("89"));
        assert!(birth_year_withheld(1935, 2025));
        assert!(!birth_year_withheld(1936, 2025));
    }

    #[test]
    fn anchors_prefer_the_named_procedure_of_the_same_patient() {
        let mut a = Anchors::default();
        let (p1, p2, pat, other) = (
            RecordId::random(),
            RecordId::random(),
            RecordId::random(),
            RecordId::random(),
        );
        let d1 = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        let d2 = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
        a.add_procedure(p2, pat, d2);
        a.add_procedure(p1, pat, d1);
        assert_eq!(a.index_date(pat), Some(d1));
        assert_eq!(a.anchor(pat, Some(&p2.to_hex())), Some(d2));
        assert_eq!(a.anchor(pat, None), Some(d1));
        // Another patient's procedure is never an anchor.
        assert_eq!(a.anchor(other, Some(&p2.to_hex())), None);
    }

    #[test]
    fn codes_and_tokens() {
        assert!(is_code("infection"));
        assert!(!is_code("Mrs Smith's rash"));
        assert!(is_token_with_digit("NCT01234567"));
        assert!(!is_token_with_digit("JohnSmith"));
        assert!(!is_token_with_digit("call 555 1234"));
        assert_eq!(
            procedure_type_code("Autologous haematopoietic stem cell transplant"),
            Some("ahsct")
        );
        assert_eq!(
            procedure_type_code("cell_injection"),
            Some("cell_injection")
        );
        assert_eq!(procedure_type_code("Dr Who's special"), None);
    }
}
