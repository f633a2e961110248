//! Where an export reads records from: [`ExportSource`], streamed one record at a time.
//!
//! [`StorageSource`] reads the stored documents page by page ([`Storage::export_docs_page`]) and
//! hydrates each into its typed body, so an export always reflects the accepted documents.
//! [`VecSource`] holds records in memory (tests, and callers that already hold them).

use automerge::Automerge;
use followup_domain::ids::RecordId;
use followup_domain::model::{
    self, read_body, Adjudication, AdverseEvent, Clinic, DocHeader, Enrolment, FollowupResponse,
    Procedure, RecordBody, RecordKind,
};

use super::ExportError;
use crate::storage::{ExportDocsQuery, Storage};

/// A record's typed body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Clinic(Clinic),
    Enrolment(Enrolment),
    Procedure(Procedure),
    Response(FollowupResponse),
    AdverseEvent(AdverseEvent),
    Adjudication(Adjudication),
}

impl Body {
    pub fn kind(&self) -> RecordKind {
        match self {
            Body::Clinic(_) => RecordKind::Clinic,
            Body::Enrolment(_) => RecordKind::Enrolment,
            Body::Procedure(_) => RecordKind::Procedure,
            Body::Response(_) => RecordKind::Response,
            Body::AdverseEvent(_) => RecordKind::AdverseEvent,
            Body::Adjudication(_) => RecordKind::Adjudication,
        }
    }
}

/// One record as an export sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    pub header: DocHeader,
    /// When the registry last accepted a change to it (ms since the epoch).
    pub updated_at_ms: i64,
    pub body: Body,
    /// The body's fields that hold more than one value (two devices set them concurrently), by
    /// path (`severity`, `answers.pain_now`); `body` has the value the registry shows for each.
    /// Exports name them, so that an analyst sees which values are in dispute.
    pub conflicted: Vec<String>,
}

/// What a source yields: a record, or one it could not read (counted and named in the
/// export's README, never a reason to stop the export).
#[derive(Debug, Clone)]
pub enum SourceItem {
    Record(Box<SourceRecord>),
    Unreadable { id: RecordId, reason: String },
}

/// Which records to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceQuery {
    pub kind: RecordKind,
    /// Only this clinic's records.
    pub clinic: Option<RecordId>,
    /// Only records last changed at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
}

/// A stream of records. `for_each` calls `f` once per record of the query, in a stable order,
/// holding a bounded number of records in memory; an error from `f` stops it and is returned.
pub trait ExportSource: Send + Sync {
    fn for_each(
        &self,
        q: &SourceQuery,
        f: &mut dyn FnMut(SourceItem) -> Result<(), ExportError>,
    ) -> Result<(), ExportError>;
}

/// Reads the stored documents.
pub struct StorageSource<'a> {
    storage: &'a dyn Storage,
    page: usize,
}

impl<'a> StorageSource<'a> {
    /// Documents per page (each page is held in memory while it is processed).
    pub const DEFAULT_PAGE: usize = 256;

    pub fn new(storage: &'a dyn Storage) -> Self {
        StorageSource {
            storage,
            page: Self::DEFAULT_PAGE,
        }
    }
}

fn hydrate<T: RecordBody>(doc: &Automerge, wrap: fn(T) -> Body) -> Result<Body, String> {
    read_body::<T>(doc).map(wrap).map_err(|e| e.to_string())
}

/// The typed body of a stored document, and its conflicted fields' paths.
pub fn body_of(kind: RecordKind, bytes: &[u8]) -> Result<(Body, Vec<String>), String> {
    // A document that makes the Automerge library panic is reported as unreadable rather than
    // ending the export.
    let doc = std::panic::catch_unwind(|| Automerge::load(bytes))
        .map_err(|_| "the document could not be loaded (library panic)".to_string())?
        .map_err(|e| format!("the document could not be loaded: {e}"))?;
    let body = typed_body(kind, &doc)?;
    // One chain of changes had no concurrent writes, so no conflict: skip the walk (as the read
    // model's projection does).
    let conflicted = if crate::readmodel::project::linear_history(&doc) {
        Vec::new()
    } else {
        model::conflicts(&doc)
            .map_err(|e| format!("the record's conflicts could not be read: {e}"))?
            .into_iter()
            .map(|c| c.path)
            .collect()
    };
    Ok((body, conflicted))
}

fn typed_body(kind: RecordKind, doc: &Automerge) -> Result<Body, String> {
    match kind {
        RecordKind::Clinic => hydrate(doc, Body::Clinic),
        RecordKind::Enrolment => hydrate(doc, Body::Enrolment),
        RecordKind::Procedure => hydrate(doc, Body::Procedure),
        RecordKind::Response => hydrate(doc, Body::Response),
        RecordKind::AdverseEvent => hydrate(doc, Body::AdverseEvent),
        RecordKind::Adjudication => hydrate(doc, Body::Adjudication),
        RecordKind::AdjudicationCase | RecordKind::CaseReply | RecordKind::Definition => {
            Err(format!("{} records are not exported yet", kind.code()))
        }
    }
}

impl ExportSource for StorageSource<'_> {
    fn for_each(
        &self,
        q: &SourceQuery,
        f: &mut dyn FnMut(SourceItem) -> Result<(), ExportError>,
    ) -> Result<(), ExportError> {
        let query = ExportDocsQuery {
            kind: q.kind,
            clinic: q.clinic,
            since_ms: q.since_ms,
        };
        let mut after = None;
        loop {
            let page = self.storage.export_docs_page(&query, after, self.page)?;
            let n = page.len();
            for doc in page {
                after = Some(doc.header.id);
                let item = match body_of(doc.header.kind, &doc.bytes) {
                    Ok((body, conflicted)) => SourceItem::Record(Box::new(SourceRecord {
                        header: doc.header,
                        updated_at_ms: doc.updated_at_ms,
                        body,
                        conflicted,
                    })),
                    Err(reason) => SourceItem::Unreadable {
                        id: doc.header.id,
                        reason,
                    },
                };
                f(item)?;
            }
            if n < self.page {
                return Ok(());
            }
        }
    }
}

/// Records held in memory.
#[derive(Debug, Default, Clone)]
pub struct VecSource {
    pub records: Vec<SourceRecord>,
}

impl ExportSource for VecSource {
    fn for_each(
        &self,
        q: &SourceQuery,
        f: &mut dyn FnMut(SourceItem) -> Result<(), ExportError>,
    ) -> Result<(), ExportError> {
        let mut selected: Vec<&SourceRecord> = self
            .records
            .iter()
            .filter(|r| r.header.kind == q.kind)
            .filter(|r| q.clinic.is_none_or(|c| r.header.clinic == c))
            .filter(|r| q.since_ms.is_none_or(|s| r.updated_at_ms >= s))
            .collect();
        selected.sort_by_key(|r| r.header.id);
        for r in selected {
            f(SourceItem::Record(Box::new(r.clone())))?;
        }
        Ok(())
    }
}
