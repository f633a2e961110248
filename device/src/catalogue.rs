//! The definitions this device holds — questionnaires, schedules, the adjudication policy — read
//! from the definition records in its store (received by sync, or provisioned), never from the
//! binary. See `docs/definitions.md`.
//!
//! The parsed [`Catalogue`] is cached and rebuilt only when the definition records change: the
//! cache is valid while the store's generation is unchanged, and otherwise while the set of
//! definition records and their heads (one index query plus one heads query per definition) is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use automerge::ChangeHash;
use followup_domain::definitions::{
    new_definition_doc, Catalogue, Definition, DefinitionBody, DefinitionState,
};
use followup_domain::ids::RecordId;
use followup_domain::model::{self, RecordKind};
use followup_domain::schedule::Schedule;

use crate::error::{Error, Result};
use crate::store::{Query, Store};

type Fingerprint = Vec<(RecordId, Vec<ChangeHash>)>;

/// The cached catalogue and what it was built from.
#[derive(Default)]
pub(crate) struct CatalogueCache {
    slot: Mutex<Option<Cached>>,
}

struct Cached {
    generation: (u64, i64),
    fingerprint: Fingerprint,
    catalogue: Arc<Catalogue>,
}

fn fingerprint(store: &Store) -> Result<Fingerprint> {
    let metas = store.list(&Query {
        kind: Some(RecordKind::Definition),
        ..Default::default()
    })?;
    let mut out = Vec::with_capacity(metas.len());
    for m in metas {
        let mut heads = store.saved_heads(&m.id)?.unwrap_or_default();
        heads.sort();
        out.push((m.id, heads));
    }
    out.sort_by_key(|(id, _)| *id);
    Ok(out)
}

fn build(store: &Store, fp: &Fingerprint) -> Result<Catalogue> {
    let mut cat = Catalogue::default();
    for (id, _) in fp {
        let Some(doc) = store.load_doc(id)? else {
            continue;
        };
        let body: DefinitionBody = match model::read_body(&doc) {
            Ok(b) => b,
            Err(e) => {
                // One unreadable record disables only itself.
                tracing::warn!(record = %id, error = %e, "unreadable definition record");
                continue;
            }
        };
        if let Err(e) = cat.insert_body(*id, &body) {
            tracing::warn!(record = %id, error = %e, "definition without a readable envelope");
        }
    }
    Ok(cat)
}

impl CatalogueCache {
    /// The catalogue as the store holds it now.
    pub(crate) fn get(&self, store: &Store) -> Result<Arc<Catalogue>> {
        let generation = store.generation()?;
        let mut slot = self
            .slot
            .lock()
            .map_err(|_| Error::InvalidInput("the definition cache was poisoned".into()))?;
        if let Some(c) = slot.as_ref() {
            if c.generation == generation {
                return Ok(c.catalogue.clone());
            }
        }
        let fp = fingerprint(store)?;
        if let Some(c) = slot.as_mut() {
            if c.fingerprint == fp {
                c.generation = generation;
                return Ok(c.catalogue.clone());
            }
        }
        let catalogue = Arc::new(build(store, &fp)?);
        *slot = Some(Cached {
            generation,
            fingerprint: fp,
            catalogue: catalogue.clone(),
        });
        Ok(catalogue)
    }

    /// A save of a record other than a definition moved the store from `before` to `after`:
    /// the cached catalogue stays valid.
    pub(crate) fn advance(&self, before: (u64, i64), after: (u64, i64)) {
        if let Ok(mut slot) = self.slot.lock() {
            if let Some(c) = slot.as_mut() {
                if c.generation == before {
                    c.generation = after;
                }
            }
        }
    }
}

/// Store definition files as the registry would send them (the same deterministic record
/// bytes), marked as already on the server so that no sync pushes them. For tests, benchmarks
/// and a device used without a registry. Returns how many were new. A file that does not parse
/// (even leniently) is refused.
pub(crate) fn provision(store: &Store, files: &[&str]) -> Result<usize> {
    let mut added = 0;
    for json in files {
        let def =
            Definition::parse_lenient(json).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let doc = new_definition_doc(&def, DefinitionState::Published)?;
        let id = def.record_id();
        if store.saved_heads(&id)?.is_some() {
            continue;
        }
        let meta = crate::device::index_meta(&doc)?;
        store.put_doc(&meta, &doc)?;
        store.set_synced_heads(&id, &doc.get_heads())?;
        added += 1;
    }
    Ok(added)
}

/// Schedules live as long as the process: work-list entries borrow their visit ids and labels
/// from the schedule, and a device may hold several schedule versions. Each distinct
/// (id, version, content) is kept once, so memory is bounded by the versions ever published.
pub(crate) fn intern_schedule(s: &Arc<Schedule>) -> &'static Schedule {
    static INTERNED: OnceLock<Mutex<HashMap<String, &'static Schedule>>> = OnceLock::new();
    // Versions are immutable (the registry refuses new content under a published version).
    let key = format!("{}\u{0}{}", s.id(), s.version());
    let map = INTERNED.get_or_init(Mutex::default);
    let mut map = match map.lock() {
        Ok(m) => m,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(found) = map.get(&key) {
        return found;
    }
    let leaked: &'static Schedule = Box::leak(Box::new(Schedule::clone(s)));
    map.insert(key, leaked);
    leaked
}
