//! The append-only audit log: every accepted change (which device, which document, which change
//! hashes, when) and every administrative event, each entry chained to the previous one by
//! SHA-256, so editing, reordering or removing an entry is detected by [`verify`].
//!
//! `hash(n) = SHA-256(hash(n-1) ‖ canonical_bytes(n))`, `hash(0)` = 32 zero bytes, where the
//! canonical bytes are the postcard encoding of `(format version, seq, at_ms, event, device, doc,
//! log_seq, change hashes, detail)` — deterministic, with no map ordering or float to vary.

use automerge::ChangeHash;
use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::protocol::AuditVerifyResponse;
use ring::digest::{Context, SHA256};
use serde::Serialize;

use crate::storage::{DeviceRecord, DocWrite, EnrolmentCode, Storage, StorageResult};

/// Audit event names.
pub mod event {
    pub const ACCEPTED: &str = "accepted";
    pub const CLINIC_CREATED: &str = "clinic_created";
    pub const CODE_ISSUED: &str = "code_issued";
    pub const DEVICE_ENROLLED: &str = "device_enrolled";
    pub const DEVICE_REVOKED: &str = "device_revoked";
    pub const DEFINITION_PUBLISHED: &str = "definition_published";
    pub const DEFINITION_DRAFTED: &str = "definition_drafted";
    pub const DEFINITION_RETIRED: &str = "definition_retired";
    /// Staff actions (console and `followup server add-staff`); the entry's detail starts with
    /// `staff=<staff id>;` (see [`super::AuditEntry::staff_action`]).
    pub const STAFF_CREATED: &str = "staff_created";
    pub const STAFF_PASSWORD_SET: &str = "staff_password_set";
    pub const STAFF_SIGNED_IN: &str = "staff_signed_in";
    pub const STAFF_SIGN_IN_FAILED: &str = "staff_sign_in_failed";
    pub const STAFF_SIGNED_OUT: &str = "staff_signed_out";
    pub const STAFF_CLINIC_INVITED: &str = "staff_clinic_invited";
    pub const STAFF_CODE_ISSUED: &str = "staff_code_issued";
    pub const STAFF_DEVICE_REVOKED: &str = "staff_device_revoked";
    pub const STAFF_CLINIC_EVENT: &str = "staff_clinic_event";
    pub const STAFF_AE_NOTE: &str = "staff_ae_note";
}

/// The hash before the first entry.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// One audit entry's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at_ms: i64,
    pub event: String,
    /// The device that acted (`None`: the registry / an administrator).
    pub device: Option<DeviceId>,
    pub doc: Option<RecordId>,
    /// The write-log seq this entry records (document writes).
    pub log_seq: Option<u64>,
    /// The changes accepted (document writes).
    pub change_hashes: Vec<ChangeHash>,
    /// Free detail (no patient identifiers).
    pub detail: String,
}

impl AuditEntry {
    /// A document write (`accepted`, `clinic_created`) recorded at write-log `seq`.
    pub fn document_write(w: &DocWrite, seq: u64, at_ms: i64) -> Self {
        AuditEntry {
            at_ms,
            event: w.event.to_string(),
            device: w.device,
            doc: Some(w.header.id),
            log_seq: Some(seq),
            change_hashes: w.new_changes.clone(),
            detail: crate::users::audit_detail(&w.users),
        }
    }

    /// An enrolment code issued by registry staff.
    pub fn code_issued(code: &EnrolmentCode, at_ms: i64) -> Self {
        AuditEntry {
            at_ms,
            event: event::CODE_ISSUED.into(),
            device: None,
            doc: code.patient.or(Some(code.clinic)),
            log_seq: None,
            change_hashes: vec![],
            detail: format!("{} until {}", code.role.as_str(), code.expires_at_ms),
        }
    }

    /// A device enrolled with a code.
    pub fn device_enrolled(rec: &DeviceRecord, at_ms: i64) -> Self {
        AuditEntry {
            at_ms,
            event: event::DEVICE_ENROLLED.into(),
            device: Some(rec.id),
            doc: rec.patient.or(Some(rec.clinic)),
            log_seq: None,
            change_hashes: vec![],
            detail: rec.role.as_str().to_string(),
        }
    }

    /// A device revoked by registry staff.
    pub fn device_revoked(id: DeviceId, at_ms: i64) -> Self {
        AuditEntry {
            at_ms,
            event: event::DEVICE_REVOKED.into(),
            device: Some(id),
            doc: None,
            log_seq: None,
            change_hashes: vec![],
            detail: String::new(),
        }
    }
}

impl AuditEntry {
    /// A staff member's action: `detail` is prefixed with `staff=<id>; ` so that every staff
    /// entry names who acted (the id is chained into the hash with the rest).
    pub fn staff_action(
        staff_id: &str,
        event: &str,
        doc: Option<RecordId>,
        detail: &str,
        at_ms: i64,
    ) -> Self {
        AuditEntry {
            at_ms,
            event: event.to_string(),
            device: None,
            doc,
            log_seq: None,
            change_hashes: vec![],
            detail: format!("staff={staff_id}; {detail}"),
        }
    }

    /// The staff member named by a [`AuditEntry::staff_action`] entry.
    pub fn staff_id(&self) -> Option<&str> {
        self.detail
            .strip_prefix("staff=")
            .and_then(|rest| rest.split(';').next())
    }
}

/// An entry as stored, with its position and chain hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: u64,
    pub entry: AuditEntry,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

#[derive(Serialize)]
struct Canonical<'a> {
    format: u8,
    seq: u64,
    at_ms: i64,
    event: &'a str,
    device: Option<[u8; 16]>,
    doc: Option<[u8; 16]>,
    log_seq: Option<u64>,
    change_hashes: Vec<[u8; 32]>,
    detail: &'a str,
}

/// The canonical bytes of the entry at position `seq`.
pub fn canonical_bytes(seq: u64, e: &AuditEntry) -> Vec<u8> {
    let c = Canonical {
        format: 1,
        seq,
        at_ms: e.at_ms,
        event: &e.event,
        device: e.device.map(|d| d.0),
        doc: e.doc.map(|d| d.0),
        log_seq: e.log_seq,
        change_hashes: e.change_hashes.iter().map(|h| h.0).collect(),
        detail: &e.detail,
    };
    // postcard cannot fail on this struct (no maps of unknown length, no custom serialisers);
    // an empty encoding would still be chained and caught by verify.
    postcard::to_stdvec(&c).unwrap_or_default()
}

/// `SHA-256(prev ‖ canonical_bytes(seq, entry))`.
pub fn entry_hash(prev: &[u8; 32], seq: u64, e: &AuditEntry) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    ctx.update(prev);
    ctx.update(&canonical_bytes(seq, e));
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Recompute the whole chain and check that every write-log entry is audited.
pub fn verify(storage: &dyn Storage) -> StorageResult<AuditVerifyResponse> {
    const PAGE: usize = 5000;
    let mut prev = GENESIS;
    let mut expected_seq = 1u64;
    let mut entries = 0u64;
    let fail = |seq: u64, problem: String, entries: u64, prev: [u8; 32]| AuditVerifyResponse {
        ok: false,
        entries,
        head_hash: hex::encode(prev),
        first_bad_seq: Some(seq),
        problem: Some(problem),
    };
    loop {
        let rows = storage.audit_rows(expected_seq - 1, PAGE)?;
        let n = rows.len();
        for row in rows {
            if row.seq != expected_seq {
                return Ok(fail(
                    expected_seq,
                    format!(
                        "entry {expected_seq} is missing (next entry is {})",
                        row.seq
                    ),
                    entries,
                    prev,
                ));
            }
            if row.prev_hash != prev {
                return Ok(fail(
                    row.seq,
                    format!("entry {} does not chain to the entry before it", row.seq),
                    entries,
                    prev,
                ));
            }
            if entry_hash(&prev, row.seq, &row.entry) != row.hash {
                return Ok(fail(
                    row.seq,
                    format!("entry {} was altered (its hash does not match)", row.seq),
                    entries,
                    prev,
                ));
            }
            prev = row.hash;
            expected_seq += 1;
            entries += 1;
        }
        if n < PAGE {
            break;
        }
    }
    if let Some(seq) = storage.unaudited_log_seq()? {
        return Ok(AuditVerifyResponse {
            ok: false,
            entries,
            head_hash: hex::encode(prev),
            first_bad_seq: None,
            problem: Some(format!(
                "the write log's entry {seq} has no audit entry (audit entries were removed)"
            )),
        });
    }
    Ok(AuditVerifyResponse {
        ok: true,
        entries,
        head_hash: hex::encode(prev),
        first_bad_seq: None,
        problem: None,
    })
}

/// [`verify`], then check the chain against heads anchored outside the database (the anchor
/// log's last head, witnesses kept by devices): each must be signed by the anchor key, the chain
/// must reach its `seq`, and the entry at `seq` must carry its hash. A chain recomputed after an
/// edit, or cut short, passes [`verify`] and fails here.
pub fn verify_anchored(
    storage: &dyn Storage,
    anchor_public_key: &[u8],
    heads: &[crate::anchor::SignedHead],
) -> StorageResult<AuditVerifyResponse> {
    let mut r = verify(storage)?;
    if !r.ok {
        return Ok(r);
    }
    for head in heads {
        let problem = if !crate::anchor::verify_head(anchor_public_key, head) {
            Some(format!(
                "the anchored head at seq {} is not signed by this registry's anchor key",
                head.seq
            ))
        } else {
            match storage.audit_rows(head.seq.saturating_sub(1), 1)?.first() {
                Some(row) if row.seq == head.seq && row.hash == head.hash => None,
                Some(row) if row.seq == head.seq => Some(format!(
                    "the audit entry at seq {} differs from the one anchored at {} (the chain was rewritten)",
                    head.seq, head.at_ms
                )),
                _ => Some(format!(
                    "the audit chain ends before seq {}, which was anchored at {} (entries were removed)",
                    head.seq, head.at_ms
                )),
            }
        };
        if let Some(problem) = problem {
            r.ok = false;
            r.first_bad_seq = Some(head.seq);
            r.problem = Some(problem);
            return Ok(r);
        }
    }
    Ok(r)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry() -> AuditEntry {
        AuditEntry {
            at_ms: 5,
            event: event::ACCEPTED.into(),
            device: Some(DeviceId([1; 16])),
            doc: Some(RecordId([2; 16])),
            log_seq: Some(3),
            change_hashes: vec![ChangeHash([4; 32])],
            detail: String::new(),
        }
    }

    #[test]
    fn hash_covers_every_field_and_the_position() {
        let base = entry_hash(&GENESIS, 1, &entry());
        assert_eq!(base, entry_hash(&GENESIS, 1, &entry()));
        assert_ne!(base, entry_hash(&GENESIS, 2, &entry()));
        assert_ne!(base, entry_hash(&[1; 32], 1, &entry()));
        let mut e = entry();
        e.change_hashes[0].0[31] ^= 1;
        assert_ne!(base, entry_hash(&GENESIS, 1, &e));
        let mut e = entry();
        e.at_ms += 1;
        assert_ne!(base, entry_hash(&GENESIS, 1, &e));
        let mut e = entry();
        e.device = None;
        assert_ne!(base, entry_hash(&GENESIS, 1, &e));
    }
}
