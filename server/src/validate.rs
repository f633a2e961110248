//! The push path's validation step: what a record must be before the registry stores it, and the
//! containment of the Automerge library's failures to the one document that caused them.
//!
//! Run after [`crate::authz::check_write`] (who may write what) on the merged result of a push:
//!
//! 1. [`check_record`]: the record's body hydrates as its kind's typed body
//!    (`followup_domain::model`), so every field has its type and every coded field a value of its
//!    code list; a few ranges (adverse-event severity 1–5) are checked too. A record that fails
//!    here would stop every device that pulls it (issue 14: `severity: "grave"`), so it is refused
//!    with `malformed` and never stored. Clinical rules (issue 10) belong here as well, after the
//!    schema check, so that the push path has one validation step.
//! 2. [`reload_check`]: the bytes that would be stored are loaded again, and must load to the same
//!    heads. Some corrupted changes apply to an in-memory document whose saved form then does not
//!    load; storing them would make the document unloadable for everyone.
//! 3. [`contain`]: every Automerge call on pushed or stored bytes runs inside `catch_unwind`, so a
//!    library panic on hostile input is the failure of one document, not of the request (nor of
//!    the worker thread).

use std::panic::{catch_unwind, AssertUnwindSafe};

use automerge::Automerge;
use followup_domain::model::{
    read_body, Adjudication, AdverseEvent, Clinic, DocHeader, Enrolment, FollowupResponse,
    Procedure, RecordKind,
};
use followup_domain::protocol::RejectCode;

/// Why a record is refused by validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub code: RejectCode,
    pub message: String,
}

impl Invalid {
    fn malformed(message: impl Into<String>) -> Self {
        Invalid {
            code: RejectCode::Malformed,
            message: message.into(),
        }
    }
}

/// Run `f`, turning a panic into an error message (the panic's own text when it has one).
pub fn contain<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let detail = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        tracing::error!(what, detail = %detail, "the Automerge library panicked; contained");
        format!("{what} failed inside the document library ({detail})")
    })
}

/// Load stored or pushed document bytes, with errors and panics as an error message.
pub fn load_contained(bytes: &[u8]) -> Result<Automerge, String> {
    contain("loading the document", || Automerge::load(bytes))?.map_err(|e| e.to_string())
}

/// Check a record's body against its kind's schema and code lists.
pub fn check_record(header: &DocHeader, doc: &Automerge) -> Result<(), Invalid> {
    let what = header.kind.code();
    let schema = |e: followup_domain::Error| {
        Invalid::malformed(format!("the {what} record does not match its schema: {e}"))
    };
    let checked = contain("reading the record body", || -> Result<(), Invalid> {
        match header.kind {
            RecordKind::Clinic => {
                read_body::<Clinic>(doc).map_err(schema)?;
            }
            RecordKind::Enrolment => {
                read_body::<Enrolment>(doc).map_err(schema)?;
            }
            RecordKind::Procedure => {
                read_body::<Procedure>(doc).map_err(schema)?;
            }
            RecordKind::Response => {
                read_body::<FollowupResponse>(doc).map_err(schema)?;
            }
            RecordKind::AdverseEvent => {
                let ae = read_body::<AdverseEvent>(doc).map_err(schema)?;
                if !(1..=5).contains(&ae.severity) {
                    return Err(Invalid::malformed(format!(
                        "adverse-event severity {} is not a grade from 1 to 5",
                        ae.severity
                    )));
                }
            }
            RecordKind::Adjudication => {
                read_body::<Adjudication>(doc).map_err(schema)?;
            }
            RecordKind::AdjudicationCase => {
                read_body::<followup_domain::model::AdjudicationCase>(doc).map_err(schema)?;
            }
            RecordKind::CaseReply => {
                read_body::<followup_domain::model::CaseReply>(doc).map_err(schema)?;
            }
            RecordKind::Definition => {
                // Registry-authored (no device may write one; authz refuses that first): the
                // body must be a definition version whose content is what it says it is.
                use followup_domain::definitions::{self as defs, DefinitionState};
                let b = read_body::<defs::DefinitionBody>(doc).map_err(schema)?;
                if DefinitionState::from_code(&b.state).is_none() {
                    return Err(Invalid::malformed(format!(
                        "definition state {:?} is not draft, published or retired",
                        b.state
                    )));
                }
                if defs::content_hash(&b.content) != b.sha256 {
                    return Err(Invalid::malformed(
                        "the definition's content does not match its sha256",
                    ));
                }
                let d = defs::Definition::parse_lenient(&b.content).map_err(|e| {
                    Invalid::malformed(format!("the definition's content does not read: {e}"))
                })?;
                if d.envelope.id != b.def_id || d.envelope.version.to_string() != b.version {
                    return Err(Invalid::malformed(
                        "the definition's id or version differs from its content's",
                    ));
                }
            }
        }
        Ok(())
    });
    checked.map_err(Invalid::malformed)?
}

/// The bytes to store for `doc`, after checking that they load back to the same heads.
pub fn save_and_reload(doc: &Automerge) -> Result<Vec<u8>, Invalid> {
    let bytes = contain("saving the document", || doc.save()).map_err(Invalid::malformed)?;
    reload_check(doc, &bytes)?;
    Ok(bytes)
}

/// Check that `bytes` (the saved form of `doc`) load to a document with `doc`'s heads.
pub fn reload_check(doc: &Automerge, bytes: &[u8]) -> Result<(), Invalid> {
    let reloaded = load_contained(bytes).map_err(|e| {
        Invalid::malformed(format!(
            "the pushed changes produce a document that cannot be loaded again: {e}"
        ))
    })?;
    let mut want = doc.get_heads();
    let mut got = reloaded.get_heads();
    want.sort_unstable();
    got.sort_unstable();
    if want != got {
        return Err(Invalid::malformed(
            "the pushed changes produce a document that does not load back to the same state",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_contained_with_its_message() {
        let r: Result<(), String> = contain("testing", || panic!("boom {}", 7));
        let e = r.unwrap_err();
        assert!(e.contains("boom 7"), "{e}");
        assert_eq!(contain("testing", || 5).unwrap(), 5);
    }

    #[test]
    fn garbage_does_not_load_and_does_not_panic() {
        assert!(load_contained(b"not automerge at all").is_err());
        assert!(load_contained(&[0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 1, 200]).is_err());
    }
}
