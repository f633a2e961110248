//! One sync exchange: apply the push (authorized, idempotent, audited), then build the pull from
//! the device's cursor. Blocking; called from `spawn_blocking`. The protocol is described in
//! `docs/sync-protocol.md`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use automerge::{Automerge, ChangeHash, ReadDoc};
use followup_domain::ids::RecordId;
use followup_domain::model::{DocHeader, RecordKind};
use followup_domain::protocol::{
    frontier, hashes_from_heads, join_changes, split_changes, PullDoc, PushResult, RejectCode,
    SyncRequest, SyncResponse,
};

use crate::audit::event;
use crate::authz::{check_write, Denied, Principal, WriteAttempt};
use crate::cases::{self, Trigger};
use crate::rules::{self as clinical, Batch};
use crate::storage::{DocWrite, Rejection, Storage, StorageError, StoredDoc, WriteOutcome};
use crate::validate;
use followup_domain::policy::AdjudicationPolicy;
use followup_domain::protocol::kind_min_version;

/// Server-side limits of one exchange.
#[derive(Debug, Clone, Copy)]
pub struct SyncLimits {
    /// Cap on the pull's raw change bytes, whatever the device asks.
    pub max_pull_bytes: usize,
    /// Most documents considered for one pull.
    pub max_pull_docs: usize,
    /// Most `want_full` documents served per request.
    pub max_want_full: usize,
    /// Most documents merged per push; the rest are answered `busy` (the device sends them in a
    /// later exchange).
    pub max_push_entries: usize,
    /// Time after which a push stops merging and answers the rest `busy`.
    pub push_time_budget: std::time::Duration,
}

/// Most rejections of one request written to the database and the log (the rest are counted in
/// one summary line): a tiny request must not be able to write thousands of rows.
pub const MAX_REJECTIONS_RECORDED: usize = 100;

impl Default for SyncLimits {
    fn default() -> Self {
        SyncLimits {
            max_pull_bytes: 8 * 1024 * 1024,
            max_pull_docs: 20_000,
            max_want_full: 1000,
            max_push_entries: 5000,
            push_time_budget: std::time::Duration::from_secs(20),
        }
    }
}

/// How often a push is re-merged after losing a compare-and-set race before giving up (`busy`).
const MAX_COMMIT_ATTEMPTS: usize = 4;

/// A write waiting to be committed: a push entry (merged, authorized, checked) or, with no
/// index, the registry's case record a new adverse event opens.
struct Pending {
    index: Option<usize>,
    write: DocWrite,
    trigger: Option<Trigger>,
}

#[allow(clippy::large_enum_variant)]
enum Prepared {
    Done(PushResult),
    Write(DocWrite, Box<Automerge>, Option<Trigger>),
    Deny(RejectCode, String),
}

/// Load a stored document; a failure (or a library panic) is reported, counted, and returned as
/// `None`, so that one damaged document never fails a whole exchange.
fn load(stored: &StoredDoc) -> Option<Automerge> {
    match validate::load_contained(&stored.bytes) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::error!(doc = %stored.header.id, error = %e, "a stored document does not load; skipped (restore it from a device or a backup)");
            crate::metrics::unloadable_document();
            None
        }
    }
}

/// The message of a push to a document whose stored copy does not load.
const DAMAGED: &str =
    "the registry's copy of this record is damaged and is being repaired; it will be retried";

/// Accepted result for a push whose hashes are `pushed`, given the server's heads after it.
fn accepted(server_heads: &[ChangeHash], pushed: &HashSet<ChangeHash>) -> PushResult {
    if server_heads.iter().all(|h| pushed.contains(h)) {
        PushResult::Accepted { server_heads: None }
    } else {
        PushResult::Accepted {
            server_heads: Some(hashes_from_heads(server_heads)),
        }
    }
}

/// What one entry is prepared against: the push's enrolments and documents so far, the clock.
struct Ctx<'a> {
    batch_enrolments: &'a HashMap<RecordId, RecordId>,
    batch: &'a Batch,
    now_ms: i64,
    /// Verdicts on the clinic users named by this push's changes ([`crate::users`]).
    users: &'a std::cell::RefCell<
        HashMap<followup_domain::ids::UserId, std::result::Result<(), String>>,
    >,
}

/// Merge one push entry into the stored document, authorize the result and check its clinical
/// rules.
fn prepare(
    storage: &dyn Storage,
    p: &Principal,
    doc_id: RecordId,
    changes: &[automerge::Change],
    pushed: &HashSet<ChangeHash>,
    ctx: &Ctx<'_>,
) -> Result<Prepared, StorageError> {
    let batch_enrolments = ctx.batch_enrolments;
    // The stored header first (cheap): a document outside the device's scope is refused before
    // anything of it is loaded.
    if let Some(h) = storage.doc_header(doc_id)? {
        if let Some((code, msg)) = out_of_scope(p, &h) {
            return Ok(Prepared::Deny(code, msg.into()));
        }
    }
    let stored = storage.load_doc(doc_id)?;
    let stored_doc = match &stored {
        Some(s) => match load(s) {
            Some(d) => Some(d),
            None => return Ok(Prepared::Deny(RejectCode::Busy, DAMAGED.into())),
        },
        None => None,
    };
    // Every Automerge call on pushed bytes is contained: a library panic refuses this document.
    let merged = validate::contain("applying the pushed changes", || {
        let mut work = match &stored_doc {
            Some(d) => d.clone(),
            None => Automerge::new(),
        };
        let old_heads = work.get_heads();
        if let Err(e) = work.apply_changes(changes.iter().cloned()) {
            return Err(format!("the changes do not apply: {e}"));
        }
        let missing = !work.get_missing_deps(&[]).is_empty();
        let new_changes: Vec<(automerge::ActorId, ChangeHash)> = if missing {
            Vec::new()
        } else {
            work.get_changes(&old_heads)
                .iter()
                .map(|c| (c.actor_id().clone(), c.hash()))
                .collect()
        };
        Ok((work, old_heads, missing, new_changes))
    });
    let (work, old_heads, missing, new_changes) = match merged {
        Ok(Ok(m)) => m,
        Ok(Err(msg)) | Err(msg) => return Ok(Prepared::Deny(RejectCode::Malformed, msg)),
    };
    if missing {
        return Ok(Prepared::Done(PushResult::NeedFullDoc));
    }
    if new_changes.is_empty() {
        if stored.is_none() {
            return Ok(Prepared::Deny(
                RejectCode::Malformed,
                "a new document must carry its changes".into(),
            ));
        }
        // Everything was already here: idempotent, nothing written, nothing audited.
        return Ok(Prepared::Done(accepted(&old_heads, pushed)));
    }
    let actors: Vec<automerge::ActorId> = new_changes.iter().map(|(a, _)| a.clone()).collect();
    let attempt = WriteAttempt {
        doc_id,
        stored: stored
            .as_ref()
            .zip(stored_doc.as_ref())
            .map(|(s, d)| (&s.header, d)),
        result: &work,
        new_change_actors: &actors,
    };
    let mut lookup = |patient: RecordId| -> Result<Option<RecordId>, StorageError> {
        if let Some(c) = batch_enrolments.get(&patient) {
            return Ok(Some(*c));
        }
        Ok(storage
            .doc_header(patient)?
            .filter(|h| h.kind == RecordKind::Enrolment)
            .map(|h| h.clinic))
    };
    let checked = validate::contain("authorizing the document", || {
        check_write(p, &attempt, &mut lookup)
    });
    let header: DocHeader = match checked {
        Ok(Ok(h)) => h,
        Ok(Err(Denied::Reject(code, msg))) => return Ok(Prepared::Deny(code, msg)),
        Ok(Err(Denied::Storage(e))) => return Err(e),
        Err(msg) => return Ok(Prepared::Deny(RejectCode::Malformed, msg)),
    };
    // The validation step: schema and code lists (and clinical rules), then reload-before-store.
    if let Err(invalid) = validate::check_record(&header, &work) {
        return Ok(Prepared::Deny(invalid.code, invalid.message));
    }
    let bytes = match validate::save_and_reload(&work) {
        Ok(b) => b,
        Err(invalid) => return Ok(Prepared::Deny(invalid.code, invalid.message)),
    };
    // Each change a clinic user made must name a user of this clinic activated on this device.
    let messages: Vec<(ChangeHash, Option<String>)> = new_changes
        .iter()
        .map(|(_, h)| {
            (
                *h,
                // The metadata only: rebuilding the change from its ops to read the message
                // costs far more.
                work.get_change_meta_by_hash(h)
                    .and_then(|c| c.message.map(|m| m.into_owned())),
            )
        })
        .collect();
    let users =
        match crate::users::check_change_users(storage, p, &messages, &mut ctx.users.borrow_mut())?
        {
            Ok(users) => users,
            Err(msg) => return Ok(Prepared::Deny(RejectCode::ForeignActor, msg)),
        };
    match clinical::check(
        storage,
        ctx.batch,
        p,
        &header,
        stored_doc.as_ref(),
        &work,
        ctx.now_ms,
    ) {
        Ok(()) => {}
        Err(Denied::Reject(code, msg)) => return Ok(Prepared::Deny(code, msg)),
        Err(Denied::Storage(e)) => return Err(e),
    }
    let trigger = match cases::trigger(&header, stored_doc.as_ref(), &work) {
        Ok(t) => t,
        Err(e) => {
            // The schema check refuses unreadable bodies first; an event whose case cannot be
            // decided is refused rather than stored without one.
            return Ok(Prepared::Deny(
                RejectCode::Malformed,
                format!("the record does not read as its kind: {e}"),
            ));
        }
    };
    let projection = crate::readmodel::project_for_write(&work, &header);
    let write = DocWrite {
        header,
        bytes,
        heads: work.get_heads(),
        expected_version: stored.as_ref().map(|s| s.version),
        device: Some(p.device),
        new_changes: new_changes.iter().map(|(_, h)| *h).collect(),
        event: event::ACCEPTED,
        users,
        projection: Some(projection),
    };
    Ok(Prepared::Write(write, Box::new(work), trigger))
}

/// The policy in force, read once per exchange and only when needed.
fn policy_in_force<'a>(
    storage: &dyn Storage,
    slot: &'a mut Option<Arc<AdjudicationPolicy>>,
) -> Result<&'a AdjudicationPolicy, StorageError> {
    let p = match slot.take() {
        Some(p) => p,
        None => crate::definitions::policy_in_force(storage)?,
    };
    Ok(slot.insert(p))
}

/// Whether a stored document (by its header) is outside what the device may write: the same
/// answer [`check_write`] would give, without loading the document.
fn out_of_scope(p: &Principal, h: &DocHeader) -> Option<(RejectCode, &'static str)> {
    // Registry-authored records (definitions live outside every clinic) are refused for what
    // they are, as `check_write` refuses them.
    if crate::authz::registry_authored(h.kind) {
        return Some((
            RejectCode::ForbiddenKind,
            "the registry writes these records; devices only read them",
        ));
    }
    if h.clinic != p.clinic {
        return Some((
            RejectCode::ForbiddenClinic,
            "the record belongs to another clinic",
        ));
    }
    if p.role == followup_domain::protocol::DeviceRole::PatientDevice
        && (p.patient.is_none() || h.patient != p.patient)
    {
        return Some((
            RejectCode::ForbiddenPatient,
            "a patient device writes only its own records",
        ));
    }
    None
}

/// Run one exchange for an authenticated device.
pub fn run(
    storage: &dyn Storage,
    p: &Principal,
    req: &SyncRequest,
    limits: &SyncLimits,
    now_ms: i64,
) -> Result<SyncResponse, StorageError> {
    let n = req.push.len();
    let version = req.version;
    // The published policy in force, read when a case is opened or updated (docs/definitions.md).
    let mut policy: Option<Arc<AdjudicationPolicy>> = None;
    let mut triggers: Vec<Trigger> = Vec::new();
    let user_verdicts = std::cell::RefCell::new(HashMap::new());
    let mut results: Vec<Option<PushResult>> = vec![None; n];
    let mut rejections = Vec::new();
    // Hashes each pushed document carried (for `accepted` and for the pull's `have`).
    let mut pushed: HashMap<RecordId, HashSet<ChangeHash>> = HashMap::new();
    let mut parsed: Vec<Option<Vec<automerge::Change>>> = Vec::with_capacity(n);
    let started = std::time::Instant::now();
    let mut seen: HashSet<RecordId> = HashSet::new();
    for (i, entry) in req.push.iter().enumerate() {
        if i >= limits.max_push_entries {
            results[i] = Some(PushResult::Rejected {
                code: RejectCode::Busy,
                message: format!(
                    "at most {} documents are taken per push; this one will be retried",
                    limits.max_push_entries
                ),
            });
            parsed.push(None);
            continue;
        }
        if !seen.insert(entry.doc) {
            let message = "the document appears more than once in this push".to_string();
            rejections.push(Rejection {
                at_ms: now_ms,
                device: p.device,
                doc: entry.doc,
                code: RejectCode::Malformed.as_str(),
                message: message.clone(),
            });
            results[i] = Some(PushResult::Rejected {
                code: RejectCode::Malformed,
                message,
            });
            parsed.push(None);
            continue;
        }
        match split_changes(&entry.data) {
            Ok(changes) => {
                pushed
                    .entry(entry.doc)
                    .or_default()
                    .extend(changes.iter().map(|c| c.hash()));
                parsed.push(Some(changes));
            }
            Err(e) => {
                results[i] = Some(PushResult::Rejected {
                    code: RejectCode::Malformed,
                    message: e.to_string(),
                });
                rejections.push(Rejection {
                    at_ms: now_ms,
                    device: p.device,
                    doc: entry.doc,
                    code: RejectCode::Malformed.as_str(),
                    message: e.to_string(),
                });
                parsed.push(None);
            }
        }
    }

    // Enrolments go first: a record whose enrolment is in the same batch is deferred once (see
    // below) and committed after it in the same transaction.
    let mut order: Vec<usize> = (0..n).filter(|&i| parsed[i].is_some()).collect();
    let mut batch_enrolments: HashMap<RecordId, RecordId> = HashMap::new();
    let mut batch: Batch = HashMap::new();
    let empty = HashSet::new();

    for attempt in 0..MAX_COMMIT_ATTEMPTS {
        if order.is_empty() {
            break;
        }
        // Prepare every entry; entries rejected only for an unknown patient get a second chance
        // once this batch's enrolments are known.
        let mut pending: Vec<Pending> = Vec::new();
        let mut deferred: Vec<usize> = Vec::new();
        batch.clear();
        for &i in &order {
            if started.elapsed() > limits.push_time_budget {
                // Past the budget: the rest is answered `busy` below (not in `results`).
                break;
            }
            let entry = &req.push[i];
            let changes = parsed[i].as_deref().unwrap_or_default();
            let hashes = pushed.get(&entry.doc).unwrap_or(&empty);
            let ctx = Ctx {
                batch_enrolments: &batch_enrolments,
                batch: &batch,
                now_ms,
                users: &user_verdicts,
            };
            match prepare(storage, p, entry.doc, changes, hashes, &ctx)? {
                Prepared::Done(r) => results[i] = Some(r),
                Prepared::Write(w, doc, trigger) => {
                    if w.header.kind == RecordKind::Enrolment {
                        batch_enrolments.insert(w.header.id, w.header.clinic);
                    }
                    batch.insert(w.header.id, (w.header.clone(), *doc));
                    pending.push(Pending {
                        index: Some(i),
                        write: w,
                        trigger,
                    });
                }
                Prepared::Deny(RejectCode::UnknownPatient, _) if attempt == 0 => deferred.push(i),
                Prepared::Deny(code, message) => {
                    rejections.push(Rejection {
                        at_ms: now_ms,
                        device: p.device,
                        doc: entry.doc,
                        code: crate::users::rejection_code(code, &message),
                        message: message.clone(),
                    });
                    results[i] = Some(PushResult::Rejected { code, message });
                }
            }
        }
        for &i in &deferred {
            let entry = &req.push[i];
            let changes = parsed[i].as_deref().unwrap_or_default();
            let hashes = pushed.get(&entry.doc).unwrap_or(&empty);
            let ctx = Ctx {
                batch_enrolments: &batch_enrolments,
                batch: &batch,
                now_ms,
                users: &user_verdicts,
            };
            match prepare(storage, p, entry.doc, changes, hashes, &ctx)? {
                Prepared::Done(r) => results[i] = Some(r),
                Prepared::Write(w, doc, trigger) => {
                    batch.insert(w.header.id, (w.header.clone(), *doc));
                    pending.push(Pending {
                        index: Some(i),
                        write: w,
                        trigger,
                    })
                }
                Prepared::Deny(code, message) => {
                    rejections.push(Rejection {
                        at_ms: now_ms,
                        device: p.device,
                        doc: entry.doc,
                        code: crate::users::rejection_code(code, &message),
                        message: message.clone(),
                    });
                    results[i] = Some(PushResult::Rejected { code, message });
                }
            }
        }
        // A new adverse event opens its case in the same transaction: the clock starts now.
        let mut openings = Vec::new();
        for pw in &pending {
            if let Some(Trigger::Opened { header, event }) = &pw.trigger {
                openings.push(Pending {
                    index: None,
                    write: cases::opening_write(
                        policy_in_force(storage, &mut policy)?,
                        header,
                        event,
                        now_ms,
                    )?,
                    trigger: None,
                });
            }
        }
        pending.extend(openings);
        // Enrolments before the records that need them, within the transaction too.
        pending.sort_by_key(|pw| pw.write.header.kind != RecordKind::Enrolment);
        let writes: Vec<DocWrite> = pending.iter().map(|pw| pw.write.clone()).collect();
        let outcomes = storage.commit_writes(&writes, now_ms)?;
        let mut retry = Vec::new();
        for (pw, outcome) in pending.into_iter().zip(outcomes) {
            match (pw.index, outcome) {
                (Some(i), WriteOutcome::Committed { .. }) => {
                    let hashes = pushed.get(&req.push[i].doc).unwrap_or(&empty);
                    results[i] = Some(accepted(&pw.write.heads, hashes));
                    triggers.extend(pw.trigger);
                }
                (Some(i), WriteOutcome::Conflict) => retry.push(i),
                (None, WriteOutcome::Committed { .. }) => {}
                // Its event was new here, so another process accepted the same event at the
                // same moment and opened the case: nothing to do.
                (None, WriteOutcome::Conflict) => {
                    tracing::info!(case = %pw.write.header.id, "case already opened");
                }
            }
        }
        order = retry;
    }
    // The cases of what was accepted: decisions, replies, graver events.
    if !triggers.is_empty() {
        cases::apply(
            storage,
            policy_in_force(storage, &mut policy)?,
            &triggers,
            now_ms,
        )?;
    }
    for i in order {
        results[i] = Some(PushResult::Rejected {
            code: RejectCode::Busy,
            message: "the document is being written by others; retry".into(),
        });
    }
    if !rejections.is_empty() {
        for r in &rejections {
            crate::metrics::rejected(r.code);
        }
        let unrecorded = rejections.len().saturating_sub(MAX_REJECTIONS_RECORDED);
        rejections.truncate(MAX_REJECTIONS_RECORDED);
        for r in &rejections {
            // The message can quote the record's content (a schema error names the value): it
            // goes back to the device and into the rejections table, never into the log.
            tracing::warn!(device = %r.device, doc = %r.doc, code = r.code, "push rejected");
        }
        if unrecorded > 0 {
            tracing::warn!(device = %p.device, unrecorded, "more push rejections in this request, not recorded one by one");
        }
        storage.record_rejections(&rejections)?;
    }
    let results: Vec<PushResult> = results
        .into_iter()
        .map(|r| match r {
            Some(PushResult::Rejected { code, message }) => PushResult::Rejected {
                code: code.for_version(version),
                message,
            },
            Some(r) => r,
            None => PushResult::Rejected {
                code: RejectCode::Busy,
                message: "not processed; retry".into(),
            },
        })
        .collect();

    // Cases this device reads, brought to the server's clock (an ignored event turns overdue).
    if let Err(e) = cases::refresh(storage, Some(p.read_scope()), now_ms) {
        tracing::warn!(device = %p.device, error = %e, "could not refresh adjudication cases");
    }
    let (pull, cursor, more) = pull(storage, p, req, &pushed, limits)?;
    Ok(SyncResponse {
        version,
        results,
        pull,
        cursor,
        more,
    })
}

/// The stored document's changes after `have`; `None` (reported) if it does not load.
fn changes_since(stored: &StoredDoc, have: &[ChangeHash]) -> Option<Vec<automerge::Change>> {
    let doc = load(stored)?;
    match validate::contain("reading the document's changes", || doc.get_changes(have)) {
        Ok(c) => Some(c),
        Err(_) => {
            crate::metrics::unloadable_document();
            None
        }
    }
}

/// One pull entry; `heads` is left empty when the device can compute it (see `PullDoc::heads`).
fn pull_doc(id: RecordId, changes: &[automerge::Change], server_heads: &[ChangeHash]) -> PullDoc {
    let mut sorted = server_heads.to_vec();
    sorted.sort_unstable();
    let heads = if frontier(changes) == sorted {
        Vec::new()
    } else {
        hashes_from_heads(server_heads)
    };
    PullDoc {
        doc: id,
        data: join_changes(changes),
        heads,
    }
}

/// Build the pull: documents changed after the cursor, each with only what the device lacks.
fn pull(
    storage: &dyn Storage,
    p: &Principal,
    req: &SyncRequest,
    pushed: &HashMap<RecordId, HashSet<ChangeHash>>,
    limits: &SyncLimits,
) -> Result<(Vec<PullDoc>, u64, bool), StorageError> {
    let budget = (req.max_pull_bytes as usize).clamp(1, limits.max_pull_bytes.max(1));
    let high = storage.max_seq()?;
    // A cursor from the future means the server's database was restored from a backup: the only
    // safe answer is a full resend (idempotent on the device).
    let cursor = if req.cursor > high { 0 } else { req.cursor };
    let mut out: Vec<PullDoc> = Vec::new();
    let mut used = 0usize;
    let mut sent: HashSet<RecordId> = HashSet::new();

    for &id in req.want_full.iter().take(limits.max_want_full) {
        if !sent.insert(id) {
            continue;
        }
        let Some(stored) = storage.load_doc(id)? else {
            continue;
        };
        if !p.can_read(&stored.header) || kind_min_version(stored.header.kind) > req.version {
            continue;
        }
        let Some(changes) = changes_since(&stored, &[]) else {
            continue;
        };
        out.push(pull_doc(id, &changes, &stored.heads));
        used += out.last().map_or(0, |d| d.data.len());
    }

    let rows = storage.changed_docs(p.read_scope(), cursor, high, limits.max_pull_docs)?;
    let truncated_rows = rows.len() >= limits.max_pull_docs;
    let mut new_cursor = high;
    let mut more = false;
    let mut last_first = cursor;
    for (id, first_seq) in rows {
        if used >= budget && !out.is_empty() {
            more = true;
            new_cursor = first_seq.saturating_sub(1);
            break;
        }
        last_first = first_seq;
        if sent.contains(&id) {
            continue;
        }
        let Some(stored) = storage.load_doc(id)? else {
            continue;
        };
        if !p.can_read(&stored.header) {
            // The log's clinic/patient columns come from the immutable header; this cannot
            // happen unless the database was edited. Never leak.
            tracing::error!(doc = %id, "log scope and document header disagree");
            continue;
        }
        if kind_min_version(stored.header.kind) > req.version {
            // An older device cannot read this kind: it never gets it.
            continue;
        }
        let mine = pushed.get(&id);
        if let Some(mine) = mine {
            // The device just pushed exactly the server's state: nothing to send.
            if stored.heads.iter().all(|h| mine.contains(h)) {
                continue;
            }
        }
        let mut have = storage.heads_at(id, cursor)?;
        if let Some(mine) = mine {
            have.extend(mine.iter().copied());
        }
        let Some(changes) = changes_since(&stored, &have) else {
            continue;
        };
        if changes.is_empty() {
            continue;
        }
        sent.insert(id);
        out.push(pull_doc(id, &changes, &stored.heads));
        used += out.last().map_or(0, |d| d.data.len());
    }
    if !more && truncated_rows {
        more = true;
        new_cursor = last_first;
    }
    Ok((out, new_cursor, more))
}
