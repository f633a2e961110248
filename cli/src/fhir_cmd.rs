//! `followup server definition-to-fhir` and `definition-from-fhir`: questionnaire definitions as
//! FHIR R4 Questionnaire resources and back (the conversion is
//! `followup_server::export::fhir_questionnaire`; the mapping is in docs/definitions.md).

use std::path::Path;

use followup_domain::definitions::{DefinitionState, DefinitionType};
use followup_server::export::fhir_questionnaire::{
    definition_to_fhir_json, from_fhir_json, kind_from_code, status_of, ImportOptions,
};

use crate::args::StaffConn;
use crate::error::CliError;
use crate::server_cmd::client;

const MAPPING_HINT: &str = "see \"FHIR R4 Questionnaire mapping\" in docs/definitions.md";

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display())))
}

/// Print `text`, or write it to `out` and say so with `what`.
fn emit(out: Option<&Path>, text: &str, what: impl FnOnce() -> String) -> Result<(), CliError> {
    match out {
        None => println!("{text}"),
        Some(path) => {
            std::fs::write(path, format!("{text}\n"))
                .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))?;
            println!("{}", what());
        }
    }
    Ok(())
}

/// Whether the user meant a file rather than a definition id.
fn looks_like_file(source: &str) -> bool {
    let p = Path::new(source);
    p.is_file() || source.ends_with(".json") || source.contains(std::path::MAIN_SEPARATOR)
}

/// `definition-to-fhir FILE|ID[@VERSION]`.
pub async fn to_fhir(
    conn: &StaffConn,
    source: &str,
    status: &str,
    out: Option<&Path>,
) -> Result<(), CliError> {
    if looks_like_file(source) {
        let path = Path::new(source);
        let json = read(path)?;
        let state = match status {
            "active" => DefinitionState::Published,
            "retired" => DefinitionState::Retired,
            _ => DefinitionState::Draft,
        };
        let text = definition_to_fhir_json(&json, status_of(state)).map_err(|e| {
            CliError::new(format!("{} cannot be written as FHIR: {e}", path.display()))
                .hint(MAPPING_HINT)
        })?;
        return emit(out, &text, || {
            format!("wrote {} as a FHIR R4 Questionnaire", path.display())
        });
    }
    let (id, version) = match source.split_once('@') {
        Some((id, v)) => (id.trim(), Some(v.trim().to_string())),
        None => (source.trim(), None),
    };
    let c = client(conn)?;
    let version = match version {
        Some(v) => v,
        None => c
            .definitions()
            .await?
            .into_iter()
            .filter(|d| {
                d.definition == DefinitionType::Questionnaire.code()
                    && d.id == id
                    && d.state == DefinitionState::Published.code()
            })
            .max_by_key(|d| d.sort_version())
            .map(|d| d.version)
            .ok_or_else(|| {
                CliError::new(format!(
                    "the registry has no published version of questionnaire {id}"
                ))
                .hint("give ID@VERSION (see `followup server definitions`), or a definition file")
            })?,
    };
    let resource = c.questionnaire_fhir(id, &version).await?;
    let text = serde_json::to_string_pretty(&resource)
        .map_err(|e| CliError::new(format!("the registry's answer is not JSON: {e}")))?;
    emit(out, &text, || {
        format!("wrote questionnaire {id} version {version} as a FHIR R4 Questionnaire")
    })
}

/// `definition-from-fhir FILE [--kind K] [--id ID]`.
pub fn from_fhir(
    file: &Path,
    kind: Option<&str>,
    id: Option<String>,
    out: Option<&Path>,
) -> Result<(), CliError> {
    let json = read(file)?;
    let kind = match kind {
        None => None,
        Some(k) => Some(kind_from_code(k).ok_or_else(|| {
            CliError::new(format!("--kind {k:?} is not a questionnaire kind"))
                .hint("use baseline, clinician_followup, patient_survey or adverse_event")
        })?),
    };
    let imported = from_fhir_json(&json, &ImportOptions { kind, id }).map_err(|e| {
        CliError::new(format!("{} cannot be imported: {e}", file.display()))
            .hint(format!("{MAPPING_HINT}; nothing was written"))
    })?;
    let q = &imported.questionnaire;
    emit(out, &imported.json, || {
        format!(
            "wrote questionnaire {} version {} ({} items; languages {}) to {}: publish it with \
             `followup server publish`",
            q.id(),
            q.version(),
            q.items().len(),
            q.languages().join(","),
            out.map(|p| p.display().to_string()).unwrap_or_default()
        )
    })
}
