//! The registry's definitions: publish (after strict validation), draft, retire, list, and the
//! built-in definitions seeded into an empty registry. Blocking; called from `spawn_blocking`.
//! The format and rules are in `docs/definitions.md`.
//!
//! A version is one record (kind `definition`, clinic [`REGISTRY_SCOPE`]) whose id is derived
//! from (type, id, version) and whose first change is deterministic, so publishing the same file
//! twice is a no-op and publishing other content under a published version is refused. Drafts
//! are separate records in [`DRAFT_SCOPE`], which is in no device's read scope.

use std::collections::BTreeSet;
use std::sync::Arc;

use automerge::Automerge;
use followup_domain::definitions::{
    self, new_definition_doc, Definition, DefinitionBody, DefinitionState, DefinitionSummary,
    DefinitionType, PublishOutcome, PublishResponse, Version, REGISTRY_SCOPE,
};
use followup_domain::ids::RecordId;
use followup_domain::model::{self, read_header, Author, RecordKind};
use followup_domain::policy::AdjudicationPolicy;

use crate::audit::event;
use crate::storage::{DocWrite, ReadScope, Storage, StorageError, StoredDoc, WriteOutcome};

/// The `clinic` of draft definition records: no device reads them.
pub const DRAFT_SCOPE: RecordId = RecordId([0xfe; 16]);

/// Why a publish or retire was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the definition is not valid: {0}")]
    Invalid(#[from] definitions::DefinitionError),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// A stored definition record whose body does not read is a corrupt record.
impl From<followup_domain::Error> for PublishError {
    fn from(e: followup_domain::Error) -> Self {
        PublishError::Storage(StorageError::Corrupt(format!("definition record: {e}")))
    }
}

fn internal(e: impl std::fmt::Display) -> PublishError {
    PublishError::Internal(e.to_string())
}

fn draft_record_id(def: &Definition) -> RecordId {
    definitions::record_id(
        &format!("{}#draft", def.envelope.definition),
        &def.envelope.id,
        def.envelope.version,
    )
}

fn load(stored: &StoredDoc) -> Result<Automerge, PublishError> {
    Automerge::load(&stored.bytes).map_err(|e| {
        PublishError::Storage(StorageError::Corrupt(format!(
            "stored document {}: {e}",
            stored.header.id
        )))
    })
}

fn write_new(doc: &Automerge, event_name: &'static str) -> Result<DocWrite, PublishError> {
    let header = read_header(doc).map_err(internal)?;
    Ok(DocWrite {
        header,
        bytes: doc.save(),
        heads: doc.get_heads(),
        expected_version: None,
        device: None,
        new_changes: doc.get_changes(&[]).iter().map(|c| c.hash()).collect(),
        event: event_name,
        projection: None,
        users: Vec::new(),
    })
}

/// Set the state of a stored definition record; `None` when it already has that state.
fn state_change(
    stored: &StoredDoc,
    state: DefinitionState,
    event_name: &'static str,
    now_ms: i64,
) -> Result<Option<DocWrite>, PublishError> {
    let mut doc = load(stored)?;
    let heads = doc.get_heads();
    let changed = model::update_body::<DefinitionBody, PublishError>(
        &mut doc,
        Author {
            device: None,
            time: now_ms / 1000,
            user: None,
        },
        |b| {
            b.state = state.code().to_string();
            Ok(())
        },
    )?;
    if changed.is_none() {
        return Ok(None);
    }
    Ok(Some(DocWrite {
        header: stored.header.clone(),
        bytes: doc.save(),
        heads: doc.get_heads(),
        expected_version: Some(stored.version),
        device: None,
        new_changes: doc.get_changes(&heads).iter().map(|c| c.hash()).collect(),
        event: event_name,
        projection: None,
        users: Vec::new(),
    }))
}

fn commit(storage: &dyn Storage, writes: &[DocWrite], now_ms: i64) -> Result<(), PublishError> {
    if writes.is_empty() {
        return Ok(());
    }
    let outcomes = storage.commit_writes(writes, now_ms)?;
    if outcomes.contains(&WriteOutcome::Conflict) {
        return Err(PublishError::Conflict(
            "the definition changed while it was being published; retry".into(),
        ));
    }
    Ok(())
}

fn body_of(stored: &StoredDoc) -> Result<DefinitionBody, PublishError> {
    model::read_body::<DefinitionBody>(&load(stored)?).map_err(internal)
}

/// Check what a definition refers to on this registry: a schedule's visits name questionnaires
/// the registry has published.
fn check_references(storage: &dyn Storage, def: &Definition) -> Result<(), PublishError> {
    let Some(schedule) = def.schedule() else {
        return Ok(());
    };
    let published: BTreeSet<String> = list(storage)?
        .into_iter()
        .filter(|d| {
            d.definition == DefinitionType::Questionnaire.code()
                && d.state == DefinitionState::Published.code()
        })
        .map(|d| d.id)
        .collect();
    for visit in schedule.visits() {
        if !published.contains(&visit.questionnaire) {
            return Err(PublishError::Conflict(format!(
                "visit {} is answered by questionnaire {}, which is not published on this registry",
                visit.id, visit.questionnaire
            )));
        }
    }
    Ok(())
}

/// Validate `json` strictly, then store it as a draft or publish it.
pub fn publish(
    storage: &dyn Storage,
    json: &str,
    state: DefinitionState,
    now_ms: i64,
) -> Result<PublishResponse, PublishError> {
    let def = Definition::parse_strict(json)?;
    if state == DefinitionState::Retired {
        return Err(PublishError::Conflict(
            "a version is retired after it was published, not uploaded retired".into(),
        ));
    }
    let record = def.record_id();
    let sha = definitions::content_hash(json);
    let respond =
        |record: RecordId, state: DefinitionState, outcome: PublishOutcome| PublishResponse {
            record,
            definition: def.envelope.definition.clone(),
            id: def.envelope.id.clone(),
            version: def.envelope.version.to_string(),
            state: state.code().to_string(),
            outcome,
        };
    // A published version is immutable whatever is asked.
    if let Some(stored) = storage.load_doc(record)? {
        let body = body_of(&stored)?;
        if body.sha256 != sha {
            return Err(PublishError::Conflict(format!(
                "{} {} version {} is already published with different content; versions are \
                 immutable: publish it as a new version",
                body.definition, body.def_id, body.version
            )));
        }
        return Ok(respond(record, body.state(), PublishOutcome::Unchanged));
    }
    let draft_id = draft_record_id(&def);
    let draft = storage.load_doc(draft_id)?;
    match state {
        DefinitionState::Draft => {
            if let Some(stored) = &draft {
                let body = body_of(stored)?;
                if body.sha256 == sha {
                    return Ok(respond(
                        draft_id,
                        DefinitionState::Draft,
                        PublishOutcome::Unchanged,
                    ));
                }
                return Err(PublishError::Conflict(format!(
                    "a draft of {} version {} with other content exists; draft a new version",
                    def.envelope.id, def.envelope.version
                )));
            }
            let doc = draft_document(&def, draft_id)?;
            commit(
                storage,
                &[write_new(&doc, event::DEFINITION_DRAFTED)?],
                now_ms,
            )?;
            Ok(respond(
                draft_id,
                DefinitionState::Draft,
                PublishOutcome::Drafted,
            ))
        }
        _ => {
            check_references(storage, &def)?;
            let doc = new_definition_doc(&def, DefinitionState::Published).map_err(internal)?;
            let mut writes = vec![write_new(&doc, event::DEFINITION_PUBLISHED)?];
            if let Some(stored) = &draft {
                if let Some(w) = state_change(
                    stored,
                    DefinitionState::Published,
                    event::DEFINITION_PUBLISHED,
                    now_ms,
                )? {
                    writes.push(w);
                }
            }
            commit(storage, &writes, now_ms)?;
            Ok(respond(
                record,
                DefinitionState::Published,
                PublishOutcome::Published,
            ))
        }
    }
}

/// A draft record: like the published one, in [`DRAFT_SCOPE`] under its own id.
fn draft_document(def: &Definition, id: RecordId) -> Result<Automerge, PublishError> {
    let body = DefinitionBody::new(def, DefinitionState::Draft);
    model::new_record(
        Author {
            device: None,
            time: 0,
            user: None,
        },
        id,
        DRAFT_SCOPE,
        None,
        &body,
    )
    .map_err(internal)
}

/// Retire a published version: devices stop offering it for new responses.
pub fn retire(
    storage: &dyn Storage,
    definition: &str,
    id: &str,
    version: &str,
    now_ms: i64,
) -> Result<PublishResponse, PublishError> {
    let v: Version = version.parse()?;
    let record = definitions::record_id(definition, id, v);
    let stored = storage.load_doc(record)?.ok_or_else(|| {
        PublishError::NotFound(format!("no published {definition} {id} {version}"))
    })?;
    if let Some(w) = state_change(
        &stored,
        DefinitionState::Retired,
        event::DEFINITION_RETIRED,
        now_ms,
    )? {
        commit(storage, &[w], now_ms)?;
    }
    Ok(PublishResponse {
        record,
        definition: definition.to_string(),
        id: id.to_string(),
        version: v.to_string(),
        state: DefinitionState::Retired.code().to_string(),
        outcome: PublishOutcome::Retired,
    })
}

/// Every definition record the registry holds (drafts included), by type, id and version.
pub fn list(storage: &dyn Storage) -> Result<Vec<DefinitionSummary>, PublishError> {
    let upto = storage.max_seq()?;
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for scope in [REGISTRY_SCOPE, DRAFT_SCOPE] {
        for (doc, _) in storage.changed_docs(ReadScope::Clinic(scope), 0, upto, usize::MAX)? {
            if !seen.insert(doc) {
                continue;
            }
            let Some(stored) = storage.load_doc(doc)? else {
                continue;
            };
            if stored.header.kind != RecordKind::Definition {
                continue;
            }
            let body = body_of(&stored)?;
            out.push(DefinitionSummary::from_body(doc, &body));
        }
    }
    out.sort_by(|a, b| {
        (
            a.definition.as_str(),
            a.id.as_str(),
            a.sort_version(),
            a.state.as_str(),
        )
            .cmp(&(
                b.definition.as_str(),
                b.id.as_str(),
                b.sort_version(),
                b.state.as_str(),
            ))
    });
    Ok(out)
}

/// One stored version's file, for the console and exports.
pub fn content(
    storage: &dyn Storage,
    definition: &str,
    id: &str,
    version: &str,
) -> Result<String, PublishError> {
    let v: Version = version.parse()?;
    let record = definitions::record_id(definition, id, v);
    let stored = storage.load_doc(record)?.ok_or_else(|| {
        PublishError::NotFound(format!("no published {definition} {id} {version}"))
    })?;
    Ok(body_of(&stored)?.content)
}

/// The adjudication policy in force when an adverse event is accepted now: the newest
/// published version the registry holds ([`definitions::Catalogue::adjudication_policy`]), or
/// the built-in default when it holds none (a registry seeded before the policy became a
/// definition, or storage used without a server start). A definition record that does not
/// load or read is skipped, as the clinical rules skip it.
pub fn policy_in_force(storage: &dyn Storage) -> Result<Arc<AdjudicationPolicy>, StorageError> {
    let mut cat = definitions::Catalogue::default();
    for id in storage.docs_of_kind(
        RecordKind::Definition,
        Some(ReadScope::Clinic(REGISTRY_SCOPE)),
    )? {
        let Some(stored) = storage.load_doc(id)? else {
            continue;
        };
        let Ok(doc) = Automerge::load(&stored.bytes) else {
            tracing::warn!(record = %id, "unreadable definition record skipped");
            continue;
        };
        match model::read_body::<DefinitionBody>(&doc) {
            Ok(b) if b.definition == DefinitionType::AdjudicationPolicy.code() => {
                if let Err(e) = cat.insert_body(id, &b) {
                    tracing::warn!(record = %id, error = %e, "policy definition skipped");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(record = %id, error = %e, "definition record skipped"),
        }
    }
    Ok(match cat.adjudication_policy() {
        Some(p) => p.clone(),
        None => Arc::new(AdjudicationPolicy::registry_default().clone()),
    })
}

/// Publish the built-in definitions into a registry that holds no definition yet (its first
/// start). Returns how many were published.
pub fn seed_builtins(storage: &dyn Storage, now_ms: i64) -> Result<usize, PublishError> {
    let upto = storage.max_seq()?;
    for (doc, _) in storage.changed_docs(ReadScope::Clinic(REGISTRY_SCOPE), 0, upto, usize::MAX)? {
        if storage
            .doc_header(doc)?
            .is_some_and(|h| h.kind == RecordKind::Definition)
        {
            return Ok(0);
        }
    }
    let mut n = 0;
    // Questionnaires first: the schedule refers to them.
    for json in definitions::builtin_definitions() {
        // Several server processes starting together on one database may race: the loser of
        // the compare-and-set finds the same content stored on its second try.
        let r = match publish(storage, json, DefinitionState::Published, now_ms) {
            Err(PublishError::Conflict(_)) => {
                publish(storage, json, DefinitionState::Published, now_ms)?
            }
            r => r?,
        };
        if r.outcome == PublishOutcome::Published {
            n += 1;
        }
    }
    Ok(n)
}

/// The admin API's definition routes (see `api.rs` for the route table).
pub mod http {
    use axum::body::Body;
    use axum::extract::{Path, Query, State};
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::Json;
    use followup_domain::definitions::{DefinitionState, DefinitionSummary, PublishResponse};
    use followup_domain::protocol::ErrorCode;

    use super::PublishError;
    use crate::api::{blocking, read_body, AppState};
    use crate::auth::now_ms;
    use crate::error::ApiError;

    /// Largest definition file accepted.
    const MAX_DEFINITION_BYTES: usize = 4 * 1024 * 1024;

    impl From<PublishError> for ApiError {
        fn from(e: PublishError) -> Self {
            match e {
                PublishError::Invalid(e) => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::BadRequest,
                    format!("the definition is not valid: {e}"),
                ),
                PublishError::Conflict(m) => {
                    ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, m)
                }
                PublishError::NotFound(m) => ApiError::not_found(ErrorCode::NotFound, m),
                PublishError::Storage(e) => e.into(),
                PublishError::Internal(m) => ApiError::internal("definitions", m),
            }
        }
    }

    #[derive(serde::Deserialize)]
    pub struct PublishQuery {
        /// `draft` to upload without publishing; `published` (default).
        state: Option<String>,
    }

    pub async fn publish(
        State(st): State<AppState>,
        headers: HeaderMap,
        Query(q): Query<PublishQuery>,
        body: Body,
    ) -> Result<(StatusCode, Json<PublishResponse>), ApiError> {
        st.admin.check(&headers)?;
        let state = match q.state.as_deref() {
            None | Some("published") => DefinitionState::Published,
            Some("draft") => DefinitionState::Draft,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "state must be draft or published, not {other:?}"
                )))
            }
        };
        let bytes = read_body(body, MAX_DEFINITION_BYTES).await?;
        let json = String::from_utf8(bytes.to_vec())
            .map_err(|_| ApiError::bad_request("the definition is not UTF-8 text"))?;
        let storage = st.storage.clone();
        let r =
            blocking(move || Ok(super::publish(storage.as_ref(), &json, state, now_ms())?)).await?;
        tracing::info!(definition = %r.definition, id = %r.id, version = %r.version, outcome = ?r.outcome, "definition upload");
        let status = match r.outcome {
            followup_domain::definitions::PublishOutcome::Unchanged => StatusCode::OK,
            _ => StatusCode::CREATED,
        };
        Ok((status, Json(r)))
    }

    pub async fn list(
        State(st): State<AppState>,
        headers: HeaderMap,
    ) -> Result<Json<Vec<DefinitionSummary>>, ApiError> {
        st.admin.check(&headers)?;
        let storage = st.storage.clone();
        Ok(Json(
            blocking(move || Ok(super::list(storage.as_ref())?)).await?,
        ))
    }

    pub async fn content(
        State(st): State<AppState>,
        headers: HeaderMap,
        Path((definition, id, version)): Path<(String, String, String)>,
    ) -> Result<Response, ApiError> {
        st.admin.check(&headers)?;
        let storage = st.storage.clone();
        let json = blocking(move || {
            Ok(super::content(
                storage.as_ref(),
                &definition,
                &id,
                &version,
            )?)
        })
        .await?;
        Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
    }

    pub async fn retire(
        State(st): State<AppState>,
        headers: HeaderMap,
        Path((definition, id, version)): Path<(String, String, String)>,
    ) -> Result<Json<PublishResponse>, ApiError> {
        st.admin.check(&headers)?;
        let storage = st.storage.clone();
        let r = blocking(move || {
            Ok(super::retire(
                storage.as_ref(),
                &definition,
                &id,
                &version,
                now_ms(),
            )?)
        })
        .await?;
        tracing::info!(definition = %r.definition, id = %r.id, version = %r.version, "definition retired");
        Ok(Json(r))
    }
}
