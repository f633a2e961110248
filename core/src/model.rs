//! The registry's records. Every record is one Automerge document; typed views map onto it
//! through autosurgeon.
//!
//! ## Document layout (shared with the server, which reads the header to authorize)
//!
//! ```text
//! root
//! ├── "id"          Str   the record's RecordId (hex)          immutable
//! ├── "kind"        Str   RecordKind::code()                   immutable
//! ├── "clinic"      Str   the owning clinic's RecordId (hex)   immutable
//! ├── "patient"     Str   the enrolment's RecordId (hex); absent for a clinic record; an
//! │                       enrolment's own id for an enrolment   immutable
//! ├── "created_by"  Str   DeviceId (hex) of the creating device, or "registry"
//! └── "body"        Map   the kind's typed body (see the structs below)
//! ```
//!
//! Who wrote a response or an adverse event is in the body: `body.completed_by` is `"nurse"` or
//! `"patient"` for a response, `body.reporter` is `"clinic"` or `"patient"` for an adverse event.

use automerge::{Automerge, ReadDoc, ROOT};

use crate::error::{Error, Result};
use crate::ids::{DeviceId, RecordId};

/// What a record is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Clinic,
    Enrolment,
    Procedure,
    Response,
    AdverseEvent,
    Adjudication,
}

impl RecordKind {
    pub const ALL: [RecordKind; 6] = [
        RecordKind::Clinic,
        RecordKind::Enrolment,
        RecordKind::Procedure,
        RecordKind::Response,
        RecordKind::AdverseEvent,
        RecordKind::Adjudication,
    ];

    /// The code stored in documents and in the store's plaintext index.
    pub fn code(&self) -> &'static str {
        match self {
            RecordKind::Clinic => "clinic",
            RecordKind::Enrolment => "enrolment",
            RecordKind::Procedure => "procedure",
            RecordKind::Response => "response",
            RecordKind::AdverseEvent => "adverse_event",
            RecordKind::Adjudication => "adjudication",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }
}

/// The immutable header every record document carries at its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocHeader {
    pub id: RecordId,
    pub kind: RecordKind,
    pub clinic: RecordId,
    pub patient: Option<RecordId>,
    /// `None` when the registry itself created the record.
    pub created_by: Option<DeviceId>,
}

fn root_str(doc: &Automerge, key: &str) -> Result<Option<String>> {
    match doc.get(ROOT, key)? {
        None => Ok(None),
        Some((automerge::Value::Scalar(s), _)) => match s.as_ref() {
            automerge::ScalarValue::Str(s) => Ok(Some(s.to_string())),
            _ => Err(Error::MalformedRecord {
                id: String::new(),
                reason: format!("root field {key:?} is not a string"),
            }),
        },
        Some(_) => Err(Error::MalformedRecord {
            id: String::new(),
            reason: format!("root field {key:?} is not a string"),
        }),
    }
}

/// Read the header of a record document. Errors if any header field is missing or malformed.
pub fn read_header(doc: &Automerge) -> Result<DocHeader> {
    let need = |key: &str| -> Result<String> {
        root_str(doc, key)?.ok_or_else(|| Error::MalformedRecord {
            id: String::new(),
            reason: format!("missing header field {key:?}"),
        })
    };
    let id: RecordId = need("id")?.parse()?;
    let malformed = |reason: String| Error::MalformedRecord {
        id: id.to_hex(),
        reason,
    };
    let kind_code = need("kind")?;
    let kind = RecordKind::from_code(&kind_code)
        .ok_or_else(|| malformed(format!("unknown kind {kind_code:?}")))?;
    let clinic: RecordId = need("clinic")?.parse()?;
    let patient = match root_str(doc, "patient")? {
        Some(p) => Some(p.parse::<RecordId>()?),
        None => None,
    };
    let created_by = match root_str(doc, "created_by")?.as_deref() {
        None | Some("registry") => None,
        Some(d) => Some(d.parse::<DeviceId>()?),
    };
    if kind != RecordKind::Clinic && patient.is_none() {
        return Err(malformed(format!(
            "a {} record must name its patient",
            kind.code()
        )));
    }
    Ok(DocHeader {
        id,
        kind,
        clinic,
        patient,
        created_by,
    })
}
