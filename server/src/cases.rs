//! Adjudication cases: the registry-authored record, one per adverse event, that holds the
//! deadline the registry's policy set and the case's state. Devices read it and never write it
//! (`authz::registry_authored`); the server writes it with the registry's actor:
//!
//! * when it first accepts an adverse event: the case opens, the clock starts at the server's
//!   time, the deadline comes from [`AdjudicationPolicy`] (same transaction as the event);
//! * when the event's severity or seriousness changes: the deadline may tighten, never loosen;
//! * when the clinic's adjudication states a (new) decision: `responded_at`;
//! * when the patient's reply arrives: appended to `replies` (a dispute reopens the case);
//! * when registry staff escalate or close it (admin API);
//! * when its state at the server's clock differs from the stored one (an ignored event turns
//!   overdue): before every pull of a device that can read it, and when staff list cases.
//!
//! Every case write is audited (`case_opened`, `case_updated`, `case_escalated`, `case_closed`).

use std::collections::BTreeMap;

use automerge::Automerge;
use followup_domain::ids::RecordId;
use followup_domain::model::{
    self, Adjudication, AdjudicationCase, AdverseEvent, Author, CaseReply, CaseReplyEntry,
    CaseState, DocHeader, Escalation, RecordKind,
};
use followup_domain::policy::{self, AdjudicationPolicy};
use followup_domain::protocol::CaseSummary;
use followup_domain::rules;
use ring::digest::{digest, SHA256};

use crate::storage::{DocWrite, ReadScope, Storage, StorageError, WriteOutcome};

/// Audit event names of case writes.
pub mod event {
    pub const OPENED: &str = "case_opened";
    pub const UPDATED: &str = "case_updated";
    pub const ESCALATED: &str = "case_escalated";
    pub const CLOSED: &str = "case_closed";
}

/// How often a case update is retried after losing a compare-and-set race.
const ATTEMPTS: usize = 6;

/// The case record id of an adverse event: derived, so that every server process finds (and
/// creates at most once) the same record.
pub fn case_id(adverse_event: RecordId) -> RecordId {
    let mut input = b"followup/adjudication-case/".to_vec();
    input.extend_from_slice(&adverse_event.0);
    let d = digest(&SHA256, &input);
    let mut id = [0u8; 16];
    id.copy_from_slice(&d.as_ref()[..16]);
    RecordId(id)
}

fn registry(now_ms: i64) -> Author {
    Author {
        device: None,
        time: now_ms.div_euclid(1000),
        user: None,
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(format!("{what}: {e}"))
}

/// What an accepted write means for its event's case.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// A new adverse event: open its case (committed with the event).
    Opened {
        header: DocHeader,
        event: AdverseEvent,
    },
    /// An existing event changed (its deadline may tighten).
    EventChanged {
        adverse_event: RecordId,
        event: AdverseEvent,
    },
    /// The clinic's adjudication states a new decision.
    Decided {
        adverse_event: RecordId,
        adjudication: RecordId,
    },
    /// The patient replied.
    Replied {
        adverse_event: RecordId,
        reply: RecordId,
        body: CaseReply,
    },
}

/// The decision an adjudication states, if it states one.
fn decision(a: &Adjudication) -> Option<String> {
    rules::is_decided(a)
        .then(|| format!("{}|{:?}|{}|{}", a.status, a.relatedness, a.action, a.remedy))
}

/// What an accepted write of `header`'s record (now `result`, before `stored`) triggers.
#[allow(clippy::result_large_err)] // the domain's error, returned once per push entry
pub fn trigger(
    header: &DocHeader,
    stored: Option<&Automerge>,
    result: &Automerge,
) -> Result<Option<Trigger>, followup_domain::Error> {
    Ok(match header.kind {
        RecordKind::AdverseEvent => {
            let event: AdverseEvent = model::read_body(result)?;
            match stored {
                None => Some(Trigger::Opened {
                    header: header.clone(),
                    event,
                }),
                Some(before) => {
                    let before: AdverseEvent = model::read_body(before)?;
                    (before.severity != event.severity || before.seriousness != event.seriousness)
                        .then_some(Trigger::EventChanged {
                            adverse_event: header.id,
                            event,
                        })
                }
            }
        }
        RecordKind::Adjudication => {
            let after: Adjudication = model::read_body(result)?;
            let before = match stored {
                Some(d) => decision(&model::read_body::<Adjudication>(d)?),
                None => None,
            };
            match (decision(&after), after.adverse_event.parse::<RecordId>()) {
                (Some(now), Ok(ae)) if Some(&now) != before.as_ref() => Some(Trigger::Decided {
                    adverse_event: ae,
                    adjudication: header.id,
                }),
                _ => None,
            }
        }
        RecordKind::CaseReply if stored.is_none() => {
            let body: CaseReply = model::read_body(result)?;
            match body.adverse_event.parse::<RecordId>() {
                Ok(ae) => Some(Trigger::Replied {
                    adverse_event: ae,
                    reply: header.id,
                    body,
                }),
                Err(_) => None,
            }
        }
        _ => None,
    })
}

/// A new case for an event the server is accepting now.
fn new_case(
    policy: &AdjudicationPolicy,
    adverse_event: RecordId,
    event: &AdverseEvent,
    now_ms: i64,
) -> AdjudicationCase {
    let d = policy.decide_event(event);
    let mut case = AdjudicationCase {
        adverse_event: adverse_event.to_hex(),
        policy: policy.reference(),
        rule: d.rule,
        opened_at: policy::server_time(now_ms),
        days: d.days,
        deadline: policy::deadline(policy::server_date(now_ms), d.days)
            .format("%Y-%m-%d")
            .to_string(),
        state: CaseState::Open,
        adjudication: None,
        responded_at: None,
        escalations: Vec::new(),
        replies: Vec::new(),
        closed_at: None,
        closed_note: None,
    };
    case.state = policy::case_state(&case, policy::server_date(now_ms));
    case
}

/// The write that opens the case of a new adverse event (committed with the event).
pub fn opening_write(
    policy: &AdjudicationPolicy,
    header: &DocHeader,
    event: &AdverseEvent,
    now_ms: i64,
) -> Result<DocWrite, StorageError> {
    let case = new_case(policy, header.id, event, now_ms);
    let id = case_id(header.id);
    let doc = model::new_record(registry(now_ms), id, header.clinic, header.patient, &case)
        .map_err(|e| corrupt("case record", e))?;
    Ok(DocWrite {
        header: DocHeader {
            id,
            kind: RecordKind::AdjudicationCase,
            clinic: header.clinic,
            patient: header.patient,
            created_by: None,
        },
        bytes: doc.save(),
        heads: doc.get_heads(),
        expected_version: None,
        device: None,
        new_changes: doc.get_changes(&[]).iter().map(|c| c.hash()).collect(),
        event: event::OPENED,
        users: Vec::new(),
        projection: Some(crate::readmodel::project_for_write(
            &doc,
            &DocHeader {
                id,
                kind: RecordKind::AdjudicationCase,
                clinic: header.clinic,
                patient: header.patient,
                created_by: None,
            },
        )),
    })
}

/// Load a case, edit it with `edit` (which gets the server's time), recompute its state and
/// commit, retrying a lost compare-and-set. `Ok(None)`: there is no such case.
#[allow(clippy::result_large_err)] // the edit closure returns the domain's error
fn update_case(
    storage: &dyn Storage,
    case: RecordId,
    now_ms: i64,
    audit_event: &'static str,
    edit: &dyn Fn(&mut AdjudicationCase),
) -> Result<Option<AdjudicationCase>, StorageError> {
    for _ in 0..ATTEMPTS {
        let Some(stored) = storage.load_doc(case)? else {
            return Ok(None);
        };
        let mut doc = Automerge::load(&stored.bytes).map_err(|e| corrupt("case record", e))?;
        let before = doc.get_heads();
        let mut after_body = None;
        model::update_body::<AdjudicationCase, followup_domain::Error>(
            &mut doc,
            registry(now_ms),
            |c| {
                edit(c);
                c.state = policy::case_state(c, policy::server_date(now_ms));
                after_body = Some(c.clone());
                Ok(())
            },
        )
        .map_err(|e| corrupt("case record", e))?;
        let new_changes: Vec<_> = doc.get_changes(&before).iter().map(|c| c.hash()).collect();
        if new_changes.is_empty() {
            return Ok(after_body);
        }
        let write = DocWrite {
            header: stored.header.clone(),
            bytes: doc.save(),
            heads: doc.get_heads(),
            expected_version: Some(stored.version),
            device: None,
            new_changes,
            event: audit_event,
            users: Vec::new(),
            projection: Some(crate::readmodel::project_for_write(&doc, &stored.header)),
        };
        match storage
            .commit_writes(std::slice::from_ref(&write), now_ms)?
            .first()
        {
            Some(WriteOutcome::Committed { .. }) => return Ok(after_body),
            _ => continue,
        }
    }
    Err(StorageError::Busy)
}

/// Apply the triggers of writes just committed (other than openings, which were committed with
/// their event).
pub fn apply(
    storage: &dyn Storage,
    policy: &AdjudicationPolicy,
    triggers: &[Trigger],
    now_ms: i64,
) -> Result<(), StorageError> {
    let at = policy::server_time(now_ms);
    for t in triggers {
        let result = match t {
            Trigger::Opened { .. } => continue,
            Trigger::EventChanged {
                adverse_event,
                event,
            } => {
                let d = policy.decide_event(event);
                update_case(
                    storage,
                    case_id(*adverse_event),
                    now_ms,
                    event::UPDATED,
                    &|c| {
                        // The clock started when the event was first accepted; a graver event
                        // shortens the time, a milder one never lengthens it.
                        if d.days < c.days {
                            if let Some(deadline) = policy::deadline_from_opening(c, d.days) {
                                c.days = d.days;
                                c.rule = d.rule.clone();
                                c.policy = policy.reference();
                                c.deadline = deadline;
                            }
                        }
                    },
                )
            }
            Trigger::Decided {
                adverse_event,
                adjudication,
            } => update_case(
                storage,
                case_id(*adverse_event),
                now_ms,
                event::UPDATED,
                &|c| {
                    c.adjudication = Some(adjudication.to_hex());
                    c.responded_at = Some(at.clone());
                },
            ),
            Trigger::Replied {
                adverse_event,
                reply,
                body,
            } => update_case(
                storage,
                case_id(*adverse_event),
                now_ms,
                event::UPDATED,
                &|c| {
                    c.replies.push(CaseReplyEntry {
                        at: at.clone(),
                        verdict: body.verdict,
                        comment: body.comment.clone(),
                        reply: reply.to_hex(),
                    });
                },
            ),
        };
        if let Err(e) = result {
            // The accepted write stands; the case catches up at its next update.
            tracing::error!(error = %e, trigger = ?t, "could not update an adjudication case");
        }
    }
    Ok(())
}

/// Bring the stored state of every case in `scope` (every case when `None`) to the server's
/// clock (an ignored event turns overdue). Returns the cases, refreshed.
pub fn refresh(
    storage: &dyn Storage,
    scope: Option<ReadScope>,
    now_ms: i64,
) -> Result<Vec<(DocHeader, AdjudicationCase)>, StorageError> {
    let today = policy::server_date(now_ms);
    let mut out = Vec::new();
    for id in storage.docs_of_kind(RecordKind::AdjudicationCase, scope)? {
        let Some(stored) = storage.load_doc(id)? else {
            continue;
        };
        let doc = Automerge::load(&stored.bytes).map_err(|e| corrupt("case record", e))?;
        let case: AdjudicationCase =
            model::read_body(&doc).map_err(|e| corrupt("case record", e))?;
        let case = if policy::case_state(&case, today) != case.state {
            match update_case(storage, id, now_ms, event::UPDATED, &|_| {})? {
                Some(c) => c,
                None => continue,
            }
        } else {
            case
        };
        out.push((stored.header, case));
    }
    Ok(out)
}

/// What registry staff see of a case.
pub fn summary(header: &DocHeader, case: &AdjudicationCase) -> CaseSummary {
    CaseSummary {
        case: header.id,
        adverse_event: case.adverse_event.parse().unwrap_or(RecordId([0; 16])),
        clinic: header.clinic,
        patient: header.patient,
        state: case.state.code().to_string(),
        opened_at: case.opened_at.clone(),
        deadline: case.deadline.clone(),
        policy: case.policy.clone(),
        rule: case.rule.clone(),
        responded_at: case.responded_at.clone(),
        escalations: case.escalations.iter().map(|e| e.note.clone()).collect(),
        disputes: case
            .replies
            .iter()
            .filter(|r| r.verdict == model::Verdict::Disputed)
            .map(|r| r.comment.clone())
            .collect(),
    }
}

/// Every case (of one clinic, in one state), refreshed to the server's clock, deadline first.
pub fn list(
    storage: &dyn Storage,
    clinic: Option<RecordId>,
    state: Option<CaseState>,
    now_ms: i64,
) -> Result<Vec<CaseSummary>, StorageError> {
    let mut out: Vec<CaseSummary> = refresh(storage, clinic.map(ReadScope::Clinic), now_ms)?
        .iter()
        .filter(|(_, c)| state.is_none_or(|s| c.state == s))
        .map(|(h, c)| summary(h, c))
        .collect();
    out.sort_by(|a, b| (&a.deadline, a.case).cmp(&(&b.deadline, b.case)));
    Ok(out)
}

/// Why staff could not act on a case.
#[derive(Debug, thiserror::Error)]
pub enum CaseActionError {
    #[error("no adjudication case for {0}")]
    NotFound(RecordId),
    #[error("the case is closed")]
    Closed,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The case of `id`, given either the case's or its adverse event's id.
fn resolve(storage: &dyn Storage, id: RecordId) -> Result<RecordId, CaseActionError> {
    match storage.doc_header(id)? {
        Some(h) if h.kind == RecordKind::AdjudicationCase => Ok(id),
        Some(h) if h.kind == RecordKind::AdverseEvent => Ok(case_id(id)),
        _ => Err(CaseActionError::NotFound(id)),
    }
}

/// Registry staff escalate a case with a note the clinic sees on its tablet after sync.
pub fn escalate(
    storage: &dyn Storage,
    id: RecordId,
    note: &str,
    now_ms: i64,
) -> Result<CaseSummary, CaseActionError> {
    staff_action(storage, id, now_ms, event::ESCALATED, &|c| {
        c.escalations.push(Escalation {
            at: policy::server_time(now_ms),
            note: note.to_string(),
        });
    })
}

/// Registry staff close a case (a remedy was agreed outside the app, the event was withdrawn).
pub fn close(
    storage: &dyn Storage,
    id: RecordId,
    note: &str,
    now_ms: i64,
) -> Result<CaseSummary, CaseActionError> {
    staff_action(storage, id, now_ms, event::CLOSED, &|c| {
        c.closed_at = Some(policy::server_time(now_ms));
        c.closed_note = Some(note.to_string());
    })
}

fn staff_action(
    storage: &dyn Storage,
    id: RecordId,
    now_ms: i64,
    audit_event: &'static str,
    edit: &dyn Fn(&mut AdjudicationCase),
) -> Result<CaseSummary, CaseActionError> {
    let case = resolve(storage, id)?;
    let header = storage
        .doc_header(case)?
        .ok_or(CaseActionError::NotFound(id))?;
    let closed = std::cell::Cell::new(false);
    let updated = update_case(storage, case, now_ms, audit_event, &|c| {
        if c.closed_at.is_some() {
            closed.set(true);
            return;
        }
        edit(c);
    })?
    .ok_or(CaseActionError::NotFound(id))?;
    if closed.get() {
        return Err(CaseActionError::Closed);
    }
    Ok(summary(&header, &updated))
}

/// The cases of several events at once, by event id (for tests and tools).
pub fn by_event(
    storage: &dyn Storage,
    events: &[RecordId],
) -> Result<BTreeMap<RecordId, AdjudicationCase>, StorageError> {
    let mut out = BTreeMap::new();
    for &ae in events {
        if let Some(stored) = storage.load_doc(case_id(ae))? {
            let doc = Automerge::load(&stored.bytes).map_err(|e| corrupt("case record", e))?;
            out.insert(
                ae,
                model::read_body(&doc).map_err(|e| corrupt("case record", e))?,
            );
        }
    }
    Ok(out)
}
