//! Study codes used twice in one clinic (issue 10: "study codes unique per clinic; a duplicate
//! offline enrolment from two tablets is surfaced as a conflict to resolve, not silently kept").
//!
//! Two tablets of a clinic can enrol the same study code while offline; neither can know of the
//! other. The server keeps both enrolments (refusing one would refuse every record the nurse then
//! made for that patient: data loss), and this query puts the pair in front of the registry
//! (console clinic page, `GET /v1/admin/duplicate-study-codes`, `followup server duplicates`),
//! while each tablet lists it after its next sync (`Device::duplicate_study_codes`). Codes are
//! compared trimmed and upper-cased, as on the device (SQL `UPPER` folds ASCII only; study codes
//! are ASCII in practice).

use followup_domain::protocol::{DuplicateEnrolment, DuplicateStudyCode};

use super::{ClinicId, Val};
use crate::storage::{Storage, StorageError, StorageResult};

/// Every study code held by more than one enrolment of a clinic, in scope (`None`: every
/// clinic); clinics and codes in order, each code's enrolments oldest enrolment date first.
pub fn duplicate_study_codes(
    s: &dyn Storage,
    scope: Option<ClinicId>,
) -> StorageResult<Vec<DuplicateStudyCode>> {
    // The same `($1 = 0 OR clinic = $2)` scope parameters as every read-model query.
    let params = super::query::scope(scope);
    let rows = s.rm_query(
        "SELECT e.clinic, d.code, e.id, e.enrolled_on, e.created_by
         FROM rm_enrolments e
         JOIN (SELECT clinic, UPPER(TRIM(study_code)) AS code FROM rm_enrolments
               WHERE ($1 = 0 OR clinic = $2)
               GROUP BY clinic, UPPER(TRIM(study_code)) HAVING COUNT(*) > 1) d
           ON e.clinic = d.clinic AND UPPER(TRIM(e.study_code)) = d.code
         ORDER BY e.clinic, d.code, e.enrolled_on, e.id",
        &params,
    )?;
    let mut out: Vec<DuplicateStudyCode> = Vec::new();
    for row in rows {
        let corrupt = || StorageError::Corrupt("read model: duplicate study code row".into());
        let clinic = row.first().and_then(Val::record_id).ok_or_else(corrupt)?;
        let code = row
            .get(1)
            .and_then(Val::text)
            .ok_or_else(corrupt)?
            .to_string();
        let patient = row.get(2).and_then(Val::record_id).ok_or_else(corrupt)?;
        let enrolment = DuplicateEnrolment {
            patient,
            enrolled_on: row.get(3).and_then(Val::text).map(str::to_string),
            device: row.get(4).and_then(Val::device_id),
        };
        match out.last_mut() {
            Some(d) if d.clinic == clinic && d.study_code == code => d.enrolments.push(enrolment),
            _ => out.push(DuplicateStudyCode {
                clinic,
                study_code: code,
                enrolments: vec![enrolment],
            }),
        }
    }
    Ok(out)
}
