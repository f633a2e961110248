//! The clinical rules at the server: [`followup_domain::rules`] (the same code the device runs at
//! capture) with lookups into the database and into the push being processed, plus the rules
//! that compare a record with the server's copy (amendments, replies). Called by
//! `sync::prepare` after `authz::check_write` has allowed the write.
//!
//! A record whose body does not read as its kind (a field of the wrong type, a code outside its
//! enum) is refused by the schema check (`validate::check_record`) before these rules run; if one
//! ever reached them it would be refused here too, never let through unchecked (a clinic must not
//! be able to make an adverse event unreadable and so escape its case).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use automerge::Automerge;
use chrono::NaiveDate;
use followup_domain::definitions::{
    self, Catalogue, Definition, DefinitionBody, DefinitionState, DefinitionType, Version,
    REGISTRY_SCOPE,
};
use followup_domain::ids::RecordId;
use followup_domain::model::{
    self, AdverseEvent, DocHeader, FollowupResponse, Procedure, RecordKind, ResponseStatus,
};
use followup_domain::policy;
use followup_domain::protocol::RejectCode;
use followup_domain::questionnaire::{Problem, Questionnaire};
use followup_domain::rules::{self, CheckError, Context, Lookup, LookupError};
use followup_domain::schedule::Schedule;

use crate::authz::{Denied, Principal};
use crate::storage::{ReadScope, Storage, StorageError};

/// The schedule the server checks visits against.
fn schedule() -> &'static Schedule {
    static S: std::sync::OnceLock<Schedule> = std::sync::OnceLock::new();
    S.get_or_init(Schedule::default_registry)
}

/// Documents accepted earlier in the same push (not committed yet), by id.
pub type Batch = HashMap<RecordId, (DocHeader, Automerge)>;

struct ServerLookup<'a> {
    storage: &'a dyn Storage,
    batch: &'a Batch,
    /// A storage error met during a lookup (reported instead of the rule's result).
    failed: RefCell<Option<StorageError>>,
    /// The registry's definitions, read once per check when a schedule is needed.
    catalogue: RefCell<Option<Arc<Catalogue>>>,
}

impl ServerLookup<'_> {
    fn fail(&self, e: StorageError) -> LookupError {
        let msg = e.to_string();
        *self.failed.borrow_mut() = Some(e);
        LookupError(msg)
    }

    fn load(&self, id: RecordId) -> Result<Option<(DocHeader, Automerge)>, LookupError> {
        if let Some((h, d)) = self.batch.get(&id) {
            return Ok(Some((h.clone(), d.clone())));
        }
        let Some(stored) = self.storage.load_doc(id).map_err(|e| self.fail(e))? else {
            return Ok(None);
        };
        let doc = Automerge::load(&stored.bytes)
            .map_err(|e| self.fail(StorageError::Corrupt(format!("stored document {id}: {e}"))))?;
        Ok(Some((stored.header, doc)))
    }

    /// The schedules (published and retired versions) the registry holds.
    fn catalogue(&self) -> Result<Arc<Catalogue>, LookupError> {
        if let Some(c) = self.catalogue.borrow().as_ref() {
            return Ok(c.clone());
        }
        let mut cat = Catalogue::default();
        let ids = self
            .storage
            .docs_of_kind(
                RecordKind::Definition,
                Some(ReadScope::Clinic(REGISTRY_SCOPE)),
            )
            .map_err(|e| self.fail(e))?;
        for id in ids {
            if let Some((_, body)) = self.body::<DefinitionBody>(id)? {
                // Only schedules are asked of it; a version whose file this build cannot read
                // is skipped (it checks nothing).
                if body.definition == DefinitionType::Schedule.code() {
                    let _ = cat.insert_body(id, &body);
                }
            }
        }
        let cat = Arc::new(cat);
        *self.catalogue.borrow_mut() = Some(cat.clone());
        Ok(cat)
    }

    fn body<T: model::RecordBody>(
        &self,
        id: RecordId,
    ) -> Result<Option<(DocHeader, T)>, LookupError> {
        match self.load(id)? {
            Some((h, d)) if h.kind == T::KIND => match model::read_body::<T>(&d) {
                Ok(b) => Ok(Some((h, b))),
                // A stored record that does not read as its kind is treated as absent.
                Err(_) => Ok(None),
            },
            _ => Ok(None),
        }
    }
}

impl Lookup for ServerLookup<'_> {
    /// The exact questionnaire version the response names, as the registry published it
    /// (retired versions too: responses started with them stay valid). Drafts never count.
    fn questionnaire(
        &self,
        id: &str,
        version: &str,
    ) -> Result<Option<Arc<Questionnaire>>, LookupError> {
        let Ok(v) = version.parse::<Version>() else {
            return Ok(None);
        };
        let record = definitions::record_id(DefinitionType::Questionnaire.code(), id, v);
        let Some((h, body)) = self.body::<DefinitionBody>(record)? else {
            // A registry publishes the built-ins at its first start; storage used without a
            // start (tools, tests) still knows them.
            return Ok(rules::builtin_questionnaire(id, version));
        };
        if h.clinic != REGISTRY_SCOPE || body.state() == DefinitionState::Draft {
            return Ok(None);
        }
        Ok(Definition::parse_lenient(&body.content)
            .ok()
            .and_then(|d| d.questionnaire().cloned()))
    }

    fn schedule_for(&self, date: NaiveDate) -> Result<Option<Arc<Schedule>>, LookupError> {
        Ok(self.catalogue()?.schedule_for(date).cloned())
    }

    fn procedure(&self, id: RecordId) -> Result<Option<(DocHeader, Procedure)>, LookupError> {
        self.body(id)
    }

    fn adverse_event(
        &self,
        id: RecordId,
    ) -> Result<Option<(DocHeader, AdverseEvent)>, LookupError> {
        self.body(id)
    }

    fn visit_answered_by(
        &self,
        patient: RecordId,
        procedure: RecordId,
        visit: &str,
        except: RecordId,
    ) -> Result<Option<RecordId>, LookupError> {
        let answers = |r: &FollowupResponse| {
            r.status == ResponseStatus::Submitted
                && r.visit.as_deref() == Some(visit)
                && r.procedure
                    .as_deref()
                    .and_then(|p| p.parse::<RecordId>().ok())
                    == Some(procedure)
        };
        for (id, (h, d)) in self.batch {
            if *id != except
                && h.kind == RecordKind::Response
                && h.patient == Some(patient)
                && model::read_body::<FollowupResponse>(d).is_ok_and(|r| answers(&r))
            {
                return Ok(Some(*id));
            }
        }
        let ids = self
            .storage
            .docs_of_kind(RecordKind::Response, Some(ReadScope::Patient(patient)))
            .map_err(|e| self.fail(e))?;
        for id in ids {
            if id == except || self.batch.contains_key(&id) {
                continue;
            }
            if let Some((_, r)) = self.body::<FollowupResponse>(id)? {
                if answers(&r) {
                    return Ok(Some(id));
                }
            }
        }
        Ok(None)
    }
}

fn reject(code: RejectCode, msg: impl Into<String>) -> Denied {
    Denied::Reject(code, msg.into())
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Check the clinical rules of a write `authz` allowed. `stored` is the server's copy before it.
pub fn check(
    storage: &dyn Storage,
    batch: &Batch,
    p: &Principal,
    header: &DocHeader,
    stored: Option<&Automerge>,
    result: &Automerge,
    now_ms: i64,
) -> Result<(), Denied> {
    let Some(patient) = header.patient else {
        return Ok(());
    };
    let lookup = ServerLookup {
        storage,
        batch,
        failed: RefCell::new(None),
        catalogue: RefCell::new(None),
    };
    let ctx = Context {
        role: p.role,
        record: header.id,
        patient,
        today: policy::server_date(now_ms),
        schedule: schedule(),
        lookup: &lookup,
    };
    let problems = match rules::check_document(&ctx, result) {
        Ok(p) => p,
        // The schema check refuses such bodies first; a record the rules cannot read is never
        // accepted unchecked.
        Err(CheckError::Unreadable(msg)) => {
            return Err(reject(
                RejectCode::Malformed,
                format!(
                    "the record does not read as its kind, so its rules cannot be checked: {msg}"
                ),
            ))
        }
        Err(CheckError::Lookup(e)) => {
            return Err(match lookup.failed.into_inner() {
                Some(se) => Denied::Storage(se),
                None => Denied::Storage(StorageError::Internal(e.to_string())),
            })
        }
    };
    if rules::only_unknown_references(&problems) {
        return Err(reject(RejectCode::UnknownPatient, list(&problems)));
    }
    if !problems.is_empty() {
        return Err(reject(RejectCode::RuleViolation, list(&problems)));
    }
    if let Some(before) = stored {
        check_change(header.kind, before, result)?;
    }
    Ok(())
}

/// Rules comparing the server's copy with the result.
fn check_change(kind: RecordKind, before: &Automerge, after: &Automerge) -> Result<(), Denied> {
    match kind {
        RecordKind::Response => {
            let (Ok(b), Ok(a)) = (
                model::read_body::<FollowupResponse>(before),
                model::read_body::<FollowupResponse>(after),
            ) else {
                return Ok(());
            };
            if b.status != ResponseStatus::Submitted {
                return Ok(());
            }
            if a.status != ResponseStatus::Submitted {
                return Err(reject(
                    RejectCode::RuleViolation,
                    "a submitted response never goes back to draft",
                ));
            }
            let changed = a.answers != b.answers
                || a.visit != b.visit
                || a.procedure != b.procedure
                || a.questionnaire != b.questionnaire;
            if changed && a.amendments.len() <= b.amendments.len() {
                return Err(reject(
                    RejectCode::RuleViolation,
                    "a submitted response is changed only by an explicit amendment (with its reason)",
                ));
            }
            if !b.amendments.iter().all(|n| a.amendments.contains(n)) {
                return Err(reject(
                    RejectCode::RuleViolation,
                    "a response's amendment notes are never changed or removed",
                ));
            }
            Ok(())
        }
        RecordKind::CaseReply => Err(reject(
            RejectCode::RuleViolation,
            "a reply to an adjudication is never edited: send a new one",
        )),
        _ => Ok(()),
    }
}
