//! `README.txt`, written last into every export: what it is, its scope and options, the
//! de-identification applied, and the counts.

use std::io::Write;

use super::sink::{Sink, Spool};
use super::{Ctx, ExportError, ExportFormat};

/// The de-identification rules, as the README states them (de-identified exports).
pub const DEID_RULES: &[&str] = &[
    "Reference: the HIPAA Privacy Rule's Safe Harbor method (45 CFR 164.514(b)(2)).",
    "Identifiers: every record id (clinic, patient, procedure, response, adverse event, \
     adjudication) is replaced by a keyed hash (HMAC-SHA256) under a random key drawn for this \
     export and never stored. Ids are consistent inside this export only: they cannot be joined \
     to the registry's record ids, to device ids, or to any other export. Device ids, user ids \
     and the clinics' study codes for their patients are not exported.",
    "Dates: every date about a patient is reduced to its year plus its offset in days from the \
     procedure date (the procedure the record follows up, else the patient's first procedure); \
     a procedure's own offset counts from the patient's first procedure. Exact dates are not \
     exported. Dates about clinics (accreditations) are not about patients and are kept.",
    "Ages: ages of 90 and over are reported as the single group 90+, and the birth year of a \
     patient aged 90 or over today is withheld.",
    "Free text: no free text is exported (condition, procedure type as typed, promised benefits, \
     adverse-event descriptions, adjudication actions and remedies, text answers). Fields that \
     are meant to hold codes (adverse-event category, seriousness, consent scope, procedure \
     type, trial registration, currency, visit) are kept only when their value is a code or a \
     registration token; anything else is withheld.",
    "Geography: clinics are named with their country; nothing locates a patient.",
];

pub fn write(ctx: &mut Ctx<'_>, sink: &mut dyn Sink) -> Result<(), ExportError> {
    let mut out = Spool::new()?;
    let plan = ctx.plan;
    let title = match plan.request.format {
        ExportFormat::Csv => "Followup registry export: CSV with a data dictionary",
        ExportFormat::Fhir => "Followup registry export: FHIR R4 (4.0.1) NDJSON, Bulk Data layout",
    };
    writeln!(out, "{title}")?;
    writeln!(out, "{}", "=".repeat(title.len()))?;
    writeln!(out)?;
    let made = chrono::DateTime::from_timestamp_millis(plan.at_ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default();
    writeln!(out, "Made:        {made}")?;
    writeln!(
        out,
        "Requested by: {} ({})",
        plan.requester.who,
        plan.requester.role.code()
    )?;
    writeln!(
        out,
        "Scope:       {}",
        match plan.clinic {
            Some(_) => "one clinic (see the clinics file)",
            None => "the whole registry",
        }
    )?;
    writeln!(
        out,
        "Since:       {}",
        plan.request
            .since
            .map(|d| format!(
                "responses and adverse events accepted or changed on or after {d}; clinics, \
                 patients and procedures complete"
            ))
            .unwrap_or_else(|| "everything".into())
    )?;
    writeln!(out)?;
    if ctx.identified {
        writeln!(out, "IDENTIFIED EXPORT")?;
        writeln!(out, "-----------------")?;
        writeln!(
            out,
            "This export keeps exact dates, free text, the clinics' study codes and the \
             registry's record ids. It was made by a registry administrator and is recorded in \
             the registry's audit log. Handle it as identifiable health information."
        )?;
    } else {
        writeln!(out, "De-identification applied")?;
        writeln!(out, "-------------------------")?;
        for rule in DEID_RULES {
            writeln!(out, "* {rule}")?;
        }
        writeln!(out)?;
        if ctx.summary.withheld.is_empty() {
            writeln!(out, "Values withheld: none.")?;
        } else {
            writeln!(out, "Values withheld, by reason:")?;
            for (reason, n) in &ctx.summary.withheld {
                writeln!(out, "  {n:>9}  {reason}")?;
            }
        }
    }
    writeln!(out)?;
    writeln!(out, "Records")?;
    writeln!(out, "-------")?;
    for (kind, n) in &ctx.summary.records {
        writeln!(out, "  {n:>9}  {kind}")?;
    }
    if !ctx.summary.conflicted.is_empty() {
        let (column, format) = match plan.request.format {
            ExportFormat::Csv => ("column conflicted_fields", "row"),
            ExportFormat::Fhir => ("extension conflicted-field", "resource"),
        };
        writeln!(
            out,
            "Records with conflicted fields: two devices set a field to different values and no \
             one has settled it. The exported value is the one the registry shows; the {column} \
             of each {format} names the fields, and the registry's console lists every value."
        )?;
        for (kind, n) in &ctx.summary.conflicted {
            writeln!(out, "  {n:>9}  {kind}")?;
        }
    }
    if !ctx.summary.unreadable.is_empty() {
        writeln!(
            out,
            "Records the registry could not read, left out (reported to its operators):"
        )?;
        for (kind, n) in &ctx.summary.unreadable {
            writeln!(out, "  {n:>9}  {kind}")?;
        }
    }
    writeln!(out)?;
    writeln!(out, "Files")?;
    writeln!(out, "-----")?;
    let unit = match plan.request.format {
        ExportFormat::Csv => "rows",
        ExportFormat::Fhir => "resources",
    };
    for (name, n) in &ctx.summary.files {
        writeln!(out, "  {name}: {n} {unit}")?;
    }
    writeln!(out)?;
    match plan.request.format {
        ExportFormat::Csv => {
            writeln!(
                out,
                "CSV files are RFC 4180 (comma-separated, double-quoted where needed, CRLF line \
                 ends), UTF-8 without a byte-order mark, with a header row. data_dictionary.csv \
                 describes every column of every file: its label, type, choices (code, label), \
                 range, decimals, required, branching logic, questionnaire version and the \
                 de-identification applied to it. Multiple-choice items have one column per \
                 choice (item___code: 1 selected, 0 not, empty when unanswered)."
            )?;
        }
        ExportFormat::Fhir => {
            writeln!(
                out,
                "One file per resource type, one JSON resource per line (application/fhir+ndjson). \
                 Every literal reference (Patient/..., Procedure/...) resolves to a resource of \
                 this export. QuestionnaireResponse.questionnaire is the canonical url|version of \
                 the registry's questionnaire. Registry-specific codes and extensions are listed \
                 in the registry's docs/export.md."
            )?;
        }
    }
    writeln!(
        out,
        "This README is the last file written; its presence means the export is complete."
    )?;
    out.into_sink("README.txt", sink)
}
