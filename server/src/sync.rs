//! One sync exchange: apply the push (authorized, idempotent, audited), then build the pull from
//! the device's cursor. Blocking; called from `spawn_blocking`. The protocol is described in
//! `docs/sync-protocol.md`.

use std::collections::{HashMap, HashSet};

use automerge::{Automerge, ChangeHash, ReadDoc};
use followup_domain::ids::RecordId;
use followup_domain::model::{DocHeader, RecordKind};
use followup_domain::protocol::{
    frontier, hashes_from_heads, join_changes, split_changes, PullDoc, PushResult, RejectCode,
    SyncRequest, SyncResponse,
};

use crate::audit::event;
use crate::authz::{check_write, Denied, Principal, WriteAttempt};
use crate::storage::{DocWrite, Rejection, Storage, StorageError, StoredDoc, WriteOutcome};

/// Server-side limits of one exchange.
#[derive(Debug, Clone, Copy)]
pub struct SyncLimits {
    /// Cap on the pull's raw change bytes, whatever the device asks.
    pub max_pull_bytes: usize,
    /// Most documents considered for one pull.
    pub max_pull_docs: usize,
    /// Most `want_full` documents served per request.
    pub max_want_full: usize,
}

impl Default for SyncLimits {
    fn default() -> Self {
        SyncLimits {
            max_pull_bytes: 8 * 1024 * 1024,
            max_pull_docs: 20_000,
            max_want_full: 1000,
        }
    }
}

/// How often a push is re-merged after losing a compare-and-set race before giving up (`busy`).
const MAX_COMMIT_ATTEMPTS: usize = 4;

/// A push entry, merged and authorized, waiting to be committed.
struct Pending {
    index: usize,
    write: DocWrite,
}

enum Prepared {
    Done(PushResult),
    Write(DocWrite),
    Deny(RejectCode, String),
}

fn load(stored: &StoredDoc) -> Result<Automerge, StorageError> {
    Automerge::load(&stored.bytes)
        .map_err(|e| StorageError::Corrupt(format!("stored document {}: {e}", stored.header.id)))
}

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

/// Merge one push entry into the stored document and authorize the result.
fn prepare(
    storage: &dyn Storage,
    p: &Principal,
    doc_id: RecordId,
    changes: &[automerge::Change],
    pushed: &HashSet<ChangeHash>,
    batch_enrolments: &HashMap<RecordId, RecordId>,
) -> Result<Prepared, StorageError> {
    let stored = storage.load_doc(doc_id)?;
    let stored_doc = stored.as_ref().map(load).transpose()?;
    let mut work = match &stored_doc {
        Some(d) => d.clone(),
        None => Automerge::new(),
    };
    let old_heads = work.get_heads();
    if let Err(e) = work.apply_changes(changes.iter().cloned()) {
        return Ok(Prepared::Deny(
            RejectCode::Malformed,
            format!("the changes do not apply: {e}"),
        ));
    }
    if !work.get_missing_deps(&[]).is_empty() {
        return Ok(Prepared::Done(PushResult::NeedFullDoc));
    }
    let new_changes = work.get_changes(&old_heads);
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
    let actors: Vec<automerge::ActorId> =
        new_changes.iter().map(|c| c.actor_id().clone()).collect();
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
    let header: DocHeader = match check_write(p, &attempt, &mut lookup) {
        Ok(h) => h,
        Err(Denied::Reject(code, msg)) => return Ok(Prepared::Deny(code, msg)),
        Err(Denied::Storage(e)) => return Err(e),
    };
    Ok(Prepared::Write(DocWrite {
        header,
        bytes: work.save(),
        heads: work.get_heads(),
        expected_version: stored.as_ref().map(|s| s.version),
        device: Some(p.device),
        new_changes: new_changes.iter().map(|c| c.hash()).collect(),
        event: event::ACCEPTED,
    }))
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
    let mut results: Vec<Option<PushResult>> = vec![None; n];
    let mut rejections = Vec::new();
    // Hashes each pushed document carried (for `accepted` and for the pull's `have`).
    let mut pushed: HashMap<RecordId, HashSet<ChangeHash>> = HashMap::new();
    let mut parsed: Vec<Option<Vec<automerge::Change>>> = Vec::with_capacity(n);
    for (i, entry) in req.push.iter().enumerate() {
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
    let empty = HashSet::new();

    for attempt in 0..MAX_COMMIT_ATTEMPTS {
        if order.is_empty() {
            break;
        }
        // Prepare every entry; entries rejected only for an unknown patient get a second chance
        // once this batch's enrolments are known.
        let mut pending: Vec<Pending> = Vec::new();
        let mut deferred: Vec<usize> = Vec::new();
        for &i in &order {
            let entry = &req.push[i];
            let changes = parsed[i].as_deref().unwrap_or_default();
            let hashes = pushed.get(&entry.doc).unwrap_or(&empty);
            match prepare(storage, p, entry.doc, changes, hashes, &batch_enrolments)? {
                Prepared::Done(r) => results[i] = Some(r),
                Prepared::Write(w) => {
                    if w.header.kind == RecordKind::Enrolment {
                        batch_enrolments.insert(w.header.id, w.header.clinic);
                    }
                    pending.push(Pending { index: i, write: w });
                }
                Prepared::Deny(RejectCode::UnknownPatient, _) if attempt == 0 => deferred.push(i),
                Prepared::Deny(code, message) => {
                    rejections.push(Rejection {
                        at_ms: now_ms,
                        device: p.device,
                        doc: entry.doc,
                        code: code.as_str(),
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
            match prepare(storage, p, entry.doc, changes, hashes, &batch_enrolments)? {
                Prepared::Done(r) => results[i] = Some(r),
                Prepared::Write(w) => pending.push(Pending { index: i, write: w }),
                Prepared::Deny(code, message) => {
                    rejections.push(Rejection {
                        at_ms: now_ms,
                        device: p.device,
                        doc: entry.doc,
                        code: code.as_str(),
                        message: message.clone(),
                    });
                    results[i] = Some(PushResult::Rejected { code, message });
                }
            }
        }
        // Enrolments before the records that need them, within the transaction too.
        pending.sort_by_key(|pw| pw.write.header.kind != RecordKind::Enrolment);
        let writes: Vec<DocWrite> = pending.iter().map(|pw| pw.write.clone()).collect();
        let outcomes = storage.commit_writes(&writes, now_ms)?;
        let mut retry = Vec::new();
        for (pw, outcome) in pending.iter().zip(outcomes) {
            match outcome {
                WriteOutcome::Committed { .. } => {
                    let hashes = pushed.get(&req.push[pw.index].doc).unwrap_or(&empty);
                    results[pw.index] = Some(accepted(&pw.write.heads, hashes));
                }
                WriteOutcome::Conflict => retry.push(pw.index),
            }
        }
        order = retry;
    }
    for i in order {
        results[i] = Some(PushResult::Rejected {
            code: RejectCode::Busy,
            message: "the document is being written by others; retry".into(),
        });
    }
    if !rejections.is_empty() {
        for r in &rejections {
            tracing::warn!(device = %r.device, doc = %r.doc, code = r.code, message = %r.message, "push rejected");
        }
        storage.record_rejections(&rejections)?;
    }
    let results: Vec<PushResult> = results
        .into_iter()
        .map(|r| {
            r.unwrap_or(PushResult::Rejected {
                code: RejectCode::Busy,
                message: "not processed; retry".into(),
            })
        })
        .collect();

    let (pull, cursor, more) = pull(storage, p, req, &pushed, limits)?;
    Ok(SyncResponse {
        // A client reads the version it speaks: answer in the request's.
        version: req.version,
        results,
        pull,
        cursor,
        more,
    })
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
        if !p.can_read(&stored.header) {
            continue;
        }
        let doc = load(&stored)?;
        let changes = doc.get_changes(&[]);
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
        let doc = load(&stored)?;
        let changes = doc.get_changes(&have);
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
