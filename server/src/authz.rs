//! THE authorization rules, all in one place. The server is the authority: a device's push is
//! applied to a working copy, and the *result* is checked here before anything is stored.
//!
//! | role | reads | writes |
//! |---|---|---|
//! | clinic device | records whose `clinic` is its clinic; every published definition | records of its clinic, except registry-authored ones ([`registry_authored`]) and patient-authored ones ([`patient_authored`]); a record other than an enrolment must belong to an enrolment of the same clinic |
//! | patient device | records whose `patient` is its enrolment; every published definition | only patient-authored records of its own enrolment: responses with `body.completed_by == "patient"`, adverse events with `body.reporter == "patient"`, case replies |
//!
//! **Registry-authored records** — the clinic record, definitions (questionnaires, schedules, the
//! adjudication policy; `docs/definitions.md`), the adjudication case — are written by the server
//! alone, with the registry's actor; no device of any role may create or change one.
//! [`registry_authored`] is THE place that list lives: every kind the registry publishes is added
//! there.
//!
//! For everyone: the header (`id`, `kind`, `clinic`, `patient`, `created_by`) is immutable;
//! `body.completed_by` (responses) and `body.reporter` (adverse events) are immutable once set;
//! a new record's `created_by` is the pushing device; every new change's actor is the pushing
//! device.

use automerge::{Automerge, ReadDoc, ROOT};
use followup_domain::definitions::REGISTRY_SCOPE;
use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::model::{read_header, DocHeader, RecordKind};
use followup_domain::protocol::{DeviceRole, RejectCode};

use crate::storage::{DeviceRecord, ReadScope, StorageError};

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub device: DeviceId,
    pub role: DeviceRole,
    pub clinic: RecordId,
    pub patient: Option<RecordId>,
}

impl From<&DeviceRecord> for Principal {
    fn from(d: &DeviceRecord) -> Self {
        Principal {
            device: d.id,
            role: d.role,
            clinic: d.clinic,
            patient: d.patient,
        }
    }
}

impl Principal {
    /// The documents this device may read, as a storage query scope. A patient device with no
    /// patient (impossible by construction) reads nothing: it gets a scope matching no record.
    pub fn read_scope(&self) -> ReadScope {
        match self.role {
            DeviceRole::ClinicDevice => ReadScope::Clinic(self.clinic),
            DeviceRole::PatientDevice => {
                ReadScope::Patient(self.patient.unwrap_or(RecordId([0; 16])))
            }
        }
    }

    /// Whether this device may read a document with this header.
    pub fn can_read(&self, h: &DocHeader) -> bool {
        if h.clinic == REGISTRY_SCOPE {
            // Published definitions are for every device (drafts live elsewhere).
            return true;
        }
        match self.role {
            DeviceRole::ClinicDevice => h.clinic == self.clinic,
            DeviceRole::PatientDevice => self.patient.is_some() && h.patient == self.patient,
        }
    }
}

/// Why a write is refused (or could not be checked).
#[derive(Debug)]
pub enum Denied {
    Reject(RejectCode, String),
    Storage(StorageError),
}

fn reject(code: RejectCode, msg: impl Into<String>) -> Denied {
    Denied::Reject(code, msg.into())
}

/// A string field of the record's body map (`None` when absent or not a string).
pub fn body_str(doc: &Automerge, key: &str) -> Option<String> {
    let (_, body) = doc.get(ROOT, "body").ok().flatten()?;
    match doc.get(&body, key).ok().flatten()? {
        (automerge::Value::Scalar(s), _) => match s.as_ref() {
            automerge::ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// Whether records of this kind are authored by the registry alone (server-side, with the
/// registry's actor): a device's write of one, new or changed, is refused whatever its role.
/// THE list of such kinds. Devices read them.
pub fn registry_authored(kind: RecordKind) -> bool {
    match kind {
        RecordKind::Clinic | RecordKind::Definition | RecordKind::AdjudicationCase => true,
        RecordKind::Enrolment
        | RecordKind::Procedure
        | RecordKind::Response
        | RecordKind::AdverseEvent
        | RecordKind::Adjudication
        | RecordKind::CaseReply => false,
    }
}

/// Whether a record (a document of kind `kind`) is authored by the patient: written only by
/// the patient's own device.
pub fn patient_authored(kind: RecordKind, doc: &Automerge) -> bool {
    match kind {
        RecordKind::CaseReply => true,
        _ => author_field(kind).is_some_and(|f| body_str(doc, f).as_deref() == Some("patient")),
    }
}

/// The body field that says who authored a record of this kind, if any.
fn author_field(kind: RecordKind) -> Option<&'static str> {
    match kind {
        RecordKind::Response => Some("completed_by"),
        RecordKind::AdverseEvent => Some("reporter"),
        _ => None,
    }
}

/// The document a push would produce, with what the server had before.
pub struct WriteAttempt<'a> {
    /// The pushed document id.
    pub doc_id: RecordId,
    /// The stored header and document, if the server has the document.
    pub stored: Option<(&'a DocHeader, &'a Automerge)>,
    /// The stored document with the push applied.
    pub result: &'a Automerge,
    /// The actors of the changes the push adds.
    pub new_change_actors: &'a [automerge::ActorId],
}

/// Check a write. `enrolment_clinic(patient)` returns the clinic of the enrolment record
/// `patient` if the server knows it (stored, or accepted earlier in the same request).
/// Returns the result's header on success.
pub fn check_write(
    p: &Principal,
    w: &WriteAttempt<'_>,
    enrolment_clinic: &mut dyn FnMut(RecordId) -> Result<Option<RecordId>, StorageError>,
) -> Result<DocHeader, Denied> {
    let actor = p.device.actor();
    if let Some(a) = w.new_change_actors.iter().find(|a| **a != actor) {
        return Err(reject(
            RejectCode::ForeignActor,
            format!("a change is by actor {a}, not by the pushing device"),
        ));
    }
    let h = read_header(w.result)
        .map_err(|e| reject(RejectCode::Malformed, format!("unreadable header: {e}")))?;
    if h.id != w.doc_id {
        return Err(reject(
            RejectCode::WrongId,
            format!(
                "the document's id is {} but it was pushed as {}",
                h.id, w.doc_id
            ),
        ));
    }
    if registry_authored(h.kind)
        || w.stored
            .is_some_and(|(sh, _)| registry_authored(sh.kind) || sh.created_by.is_none())
    {
        return Err(reject(
            RejectCode::ForbiddenKind,
            format!(
                "{} records are written by the registry; devices only read them",
                h.kind.code()
            ),
        ));
    }
    match w.stored {
        Some((stored_h, stored_doc)) => {
            if &h != stored_h {
                return Err(reject(
                    RejectCode::HeaderChanged,
                    "the record's header (id, kind, clinic, patient, created_by) is immutable",
                ));
            }
            if let Some(field) = author_field(h.kind) {
                let before = body_str(stored_doc, field);
                if before.is_some() && before != body_str(w.result, field) {
                    return Err(reject(
                        RejectCode::HeaderChanged,
                        format!("body.{field} is immutable once set"),
                    ));
                }
            }
        }
        None => {
            if h.created_by != Some(p.device) {
                return Err(reject(
                    RejectCode::ForeignActor,
                    "a new record's created_by must be the pushing device",
                ));
            }
        }
    }
    if h.clinic != p.clinic {
        return Err(reject(
            RejectCode::ForbiddenClinic,
            "the record belongs to another clinic",
        ));
    }
    match p.role {
        DeviceRole::ClinicDevice => {
            if patient_authored(h.kind, w.result)
                || w.stored.is_some_and(|(_, d)| patient_authored(h.kind, d))
            {
                return Err(reject(
                    RejectCode::ForbiddenAuthor,
                    "a patient-authored record is written only by the patient's device; the clinic answers through its own records (adjudication)",
                ));
            }
            match h.kind {
                RecordKind::Enrolment => {
                    if h.patient != Some(h.id) {
                        return Err(reject(
                            RejectCode::Malformed,
                            "an enrolment's patient must be its own id",
                        ));
                    }
                }
                _ => {
                    if w.stored.is_none() {
                        let patient = h.patient.ok_or_else(|| {
                            reject(RejectCode::Malformed, "the record names no patient")
                        })?;
                        match enrolment_clinic(patient).map_err(Denied::Storage)? {
                            None => {
                                return Err(reject(
                                    RejectCode::UnknownPatient,
                                    format!("enrolment {patient} is not on the server yet"),
                                ))
                            }
                            Some(c) if c != p.clinic => {
                                return Err(reject(
                                    RejectCode::ForbiddenPatient,
                                    "the patient is enrolled at another clinic",
                                ))
                            }
                            Some(_) => {}
                        }
                    }
                }
            }
            Ok(h)
        }
        DeviceRole::PatientDevice => {
            if p.patient.is_none() || h.patient != p.patient {
                return Err(reject(
                    RejectCode::ForbiddenPatient,
                    "a patient device writes only its own records",
                ));
            }
            if h.kind != RecordKind::CaseReply && author_field(h.kind).is_none() {
                return Err(reject(
                    RejectCode::ForbiddenKind,
                    format!("a patient device may not write {} records", h.kind.code()),
                ));
            }
            if !patient_authored(h.kind, w.result)
                || w.stored.is_some_and(|(_, d)| !patient_authored(h.kind, d))
            {
                return Err(reject(
                    RejectCode::ForbiddenAuthor,
                    "a patient device writes only the patient's own records (completed_by or reporter = \"patient\")",
                ));
            }
            Ok(h)
        }
    }
}
