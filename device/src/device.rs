//! The facade an app uses: one encrypted store, the device's identity and enrolment, and the
//! record operations of a field day — enrol a patient, record a procedure, capture a
//! questionnaire response, report an adverse event, adjudicate it, see due visits and conflicts.
//!
//! Every method is short and synchronous (a few milliseconds at most); syncing is in
//! [`crate::sync`] and runs beside capture: the store serialises writes, and a save made while a
//! sync is under way is simply pushed by the next sync.
//!
//! Rules the device checks locally, for an immediate clear error, are the same the server
//! enforces (see `server/src/authz.rs`): a patient's phone writes only its own outcome surveys
//! and adverse-event reports, never a procedure or an adjudication.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use automerge::Automerge;
use chrono::{NaiveDate, Utc};

mod directory;
mod integrity;
mod users;
pub use directory::{Directory, Writer};
use integrity::no_problems;
pub use integrity::{DuplicateStudyCode, EventView};

use crate::crypto::KeySource;
use crate::error::{Error, Result};
use crate::store::{DocMeta, Query, Store};
use followup_domain::definitions::{
    Catalogue, Content, DefinitionBody, DefinitionState, DefinitionType, Usability,
};
use followup_domain::identity::DeviceIdentity;
use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::model::{
    self, Adjudication, AdjudicationStatus, AdverseEvent, Answers, Author, CompletedBy, Conflict,
    DocHeader, Enrolment, FollowupResponse, Procedure, RecordBody, RecordKind, Reporter,
    ResponseStatus,
};
use followup_domain::protocol::DeviceRole;
use followup_domain::questionnaire::{AnswerValue, Problem, Questionnaire};
use followup_domain::schedule::{Schedule, VisitList, VisitState, VisitStatus};

/// Visit ids answered by a submitted response, per procedure, comma-separated.
type DoneVisits = HashMap<RecordId, String>;

const SECRET_IDENTITY: &str = "device.identity.pkcs8";
const SETTING_ENROLMENT: &str = "device.enrolment";

/// How this device is enrolled with the registry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Enrolled {
    /// The id the registry gave this device; also its Automerge actor id.
    pub device_id: DeviceId,
    pub role: DeviceRole,
    pub clinic: RecordId,
    /// For a patient's phone: the patient's enrolment record.
    pub patient: Option<RecordId>,
    /// The registry server's base URL.
    pub server_url: String,
}

/// One patient as the device lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct PatientSummary {
    pub id: RecordId,
    pub study_code: String,
    pub enrolled_on: Option<NaiveDate>,
    pub procedures: usize,
    pub responses: usize,
    pub open_adverse_events: usize,
}

/// A visit of one patient's schedule, as listed for a clinic.
#[derive(Debug, Clone, PartialEq)]
pub struct PatientVisit<'a> {
    pub patient: RecordId,
    pub procedure: RecordId,
    pub visit: VisitStatus<'a>,
}

/// An adverse event awaiting the treating clinic's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct AdjudicationItem {
    pub adverse_event: RecordId,
    pub patient: RecordId,
    pub adjudication: Option<RecordId>,
    /// The clinic's own status.
    pub status: AdjudicationStatus,
    /// The registry's case state, once its case reached the device.
    pub state: Option<model::CaseState>,
    /// The registry's deadline, once its case reached the device.
    pub deadline: Option<NaiveDate>,
    /// Past the registry's deadline without a decision (as of the given date), or overdue or
    /// escalated by the registry.
    pub overdue: bool,
}

/// One definition version as the device lists it (`followup device questionnaires`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionInfo {
    pub record: RecordId,
    /// `questionnaire`, `schedule`, `adjudication_policy` (or a newer type).
    pub definition: String,
    pub id: String,
    pub version: String,
    pub state: DefinitionState,
    /// Language tags, the definition's own first.
    pub languages: Vec<String>,
    /// Whether this app can use it, or why it needs an update.
    pub usability: Usability,
}

/// The device core an app holds: open it once, use it from any thread.
pub struct Device {
    pub(crate) store: Store,
    /// Loaded at open, or at the first sign-in of a store with users (it is sealed).
    identity: std::sync::OnceLock<DeviceIdentity>,
    enrolled: RwLock<Option<Enrolled>>,
    /// The definitions (questionnaires, schedules) the store holds, parsed.
    catalogue: crate::catalogue::CatalogueCache,
    /// Recently used documents, so that saving a form as the user types does not decrypt and
    /// rebuild the document each time. An entry is used only while the store still holds
    /// exactly its heads (a sync or another writer invalidates it).
    recent: Mutex<RecentDocs>,
    /// The clinic-wide work list's inputs (procedure dates and done visits), kept while the
    /// store's generation is unchanged and updated in place by this device's own saves.
    worklist: Mutex<Option<WorklistCache>>,
    /// Listeners of [`Device::subscribe`].
    pub(crate) observers: crate::app::Observers,
}

/// What a clinic-wide visit listing needs from the index, with the store generation it
/// reflects.
struct WorklistCache {
    generation: (u64, i64),
    /// Procedure id → (patient, procedure date).
    procedures: HashMap<RecordId, (RecordId, NaiveDate)>,
    done: DoneVisits,
}

impl WorklistCache {
    /// Apply one saved document's index entry. `previous` is its entry before the save.
    /// Returns false when the change cannot be applied in place (the cache must be rebuilt).
    fn apply(&mut self, previous: Option<&DocMeta>, meta: &DocMeta) -> bool {
        match meta.kind {
            RecordKind::Procedure => {
                match (meta.patient, meta.date) {
                    (Some(patient), Some(date)) => {
                        self.procedures.insert(meta.id, (patient, date));
                    }
                    _ => {
                        self.procedures.remove(&meta.id);
                    }
                }
                true
            }
            RecordKind::Response => {
                let submitted = |m: &DocMeta| {
                    m.status.as_deref() == Some(ResponseStatus::Submitted.code())
                        && m.subject.is_some()
                        && m.visit.is_some()
                };
                match previous {
                    // Unchanged as far as the work list goes.
                    Some(p)
                        if submitted(p) == submitted(meta)
                            && p.subject == meta.subject
                            && p.visit == meta.visit =>
                    {
                        true
                    }
                    // Newly submitted: one more visit done.
                    Some(p) if submitted(p) => false,
                    _ => {
                        if let (true, Some(subject), Some(visit)) =
                            (submitted(meta), meta.subject, meta.visit.as_deref())
                        {
                            let list = self.done.entry(subject).or_default();
                            if !list.is_empty() {
                                list.push(',');
                            }
                            list.push_str(visit);
                        }
                        true
                    }
                }
            }
            _ => true,
        }
    }
}

/// How many documents [`RecentDocs`] keeps.
const RECENT_DOCS: usize = 32;

/// A small most-recently-used list of decrypted documents (plaintext in memory only).
#[derive(Default)]
struct RecentDocs {
    docs: Vec<(RecordId, Automerge)>,
}

impl RecentDocs {
    fn get(&mut self, id: &RecordId, heads: &[automerge::ChangeHash]) -> Option<Automerge> {
        let pos = self.docs.iter().position(|(i, _)| i == id)?;
        let (_, doc) = self.docs.remove(pos);
        let mut have = doc.get_heads();
        have.sort();
        let mut want = heads.to_vec();
        want.sort();
        if have != want {
            return None;
        }
        let copy = doc.clone();
        self.docs.push((*id, doc));
        Some(copy)
    }

    fn put(&mut self, id: RecordId, doc: Automerge) {
        self.docs.retain(|(i, _)| *i != id);
        if self.docs.len() >= RECENT_DOCS {
            self.docs.remove(0);
        }
        self.docs.push((id, doc));
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("store", &self.store.store_id())
            .field("enrolled", &self.enrolment())
            .finish()
    }
}

fn load_identity(store: &Store) -> Result<DeviceIdentity> {
    let pkcs8 = store
        .get_secret(SECRET_IDENTITY)?
        .ok_or_else(|| Error::MalformedRecord {
            id: "device identity".into(),
            reason: "the store holds no device identity".into(),
        })?;
    Ok(DeviceIdentity::from_pkcs8(&pkcs8)?)
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

impl Device {
    /// Create a new store at `path`, protected by `key`, with a fresh device identity.
    pub fn create(path: impl AsRef<Path>, key: KeySource) -> Result<Device> {
        let store = Store::create(path, key)?;
        let (identity, pkcs8) = DeviceIdentity::generate()?;
        store.put_secret(SECRET_IDENTITY, &pkcs8)?;
        Ok(Device {
            store,
            identity: identity.into(),
            enrolled: RwLock::new(None),
            recent: Mutex::default(),
            worklist: Mutex::default(),
            catalogue: Default::default(),
            observers: Default::default(),
        })
    }

    /// Open an existing store. A wrong key gives [`Error::Store`] with `WrongKey`.
    pub fn open(path: impl AsRef<Path>, key: KeySource) -> Result<Device> {
        let store = Store::open(path, key)?;
        // A store with users opens locked: its identity is read at the first sign-in.
        let identity = std::sync::OnceLock::new();
        if store.is_unlocked() {
            let _ = identity.set(load_identity(&store)?);
        }
        let enrolled = match store.get_setting(SETTING_ENROLMENT)? {
            Some(json) => {
                Some(
                    serde_json::from_str(&json).map_err(|e| Error::MalformedRecord {
                        id: "device enrolment".into(),
                        reason: e.to_string(),
                    })?,
                )
            }
            None => None,
        };
        Ok(Device {
            store,
            identity,
            enrolled: RwLock::new(enrolled),
            recent: Mutex::default(),
            worklist: Mutex::default(),
            catalogue: Default::default(),
            observers: Default::default(),
        })
    }

    /// The encrypted store (for sync and tools).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The device's signing identity; on a store with users, once a user has signed in.
    pub fn identity(&self) -> Result<&DeviceIdentity> {
        if let Some(id) = self.identity.get() {
            return Ok(id);
        }
        let loaded = load_identity(&self.store)?;
        Ok(self.identity.get_or_init(|| loaded))
    }

    /// Re-wrap the store's data key under a new key (no record is rewritten).
    pub fn rotate_key(&self, new: KeySource) -> Result<()> {
        Ok(self.store.rotate_key(new)?)
    }

    /// How the device is enrolled, if it is.
    pub fn enrolment(&self) -> Option<Enrolled> {
        self.enrolled.read().ok().and_then(|e| e.clone())
    }

    /// Record the enrolment the registry granted (called by [`crate::sync::enrol`]).
    pub fn set_enrolment(&self, enrolled: Enrolled) -> Result<()> {
        let json = serde_json::to_string(&enrolled).map_err(|e| Error::MalformedRecord {
            id: "device enrolment".into(),
            reason: e.to_string(),
        })?;
        self.store.put_setting(SETTING_ENROLMENT, &json)?;
        if let Ok(mut slot) = self.enrolled.write() {
            *slot = Some(enrolled);
        }
        Ok(())
    }

    pub(crate) fn require_enrolled(&self) -> Result<Enrolled> {
        self.enrolment().ok_or(Error::NotEnrolled)
    }

    pub(crate) fn require_clinic_device(&self, what: &str) -> Result<Enrolled> {
        let e = self.require_enrolled()?;
        if e.role != DeviceRole::ClinicDevice {
            return Err(Error::NotPermitted(format!(
                "a patient's phone cannot {what}; only the clinic can"
            )));
        }
        Ok(e)
    }

    /// The device, and the user signed in on a shared tablet (the change message names them).
    fn author(&self, e: &Enrolled) -> Author {
        Author::device_now(e.device_id).with_user(self.store.signed_in_user())
    }

    // -----------------------------------------------------------------------------------------
    // Definitions (docs/definitions.md)

    /// The definitions this device holds, parsed (cached until a definition record changes).
    pub fn catalogue(&self) -> Result<Arc<Catalogue>> {
        self.catalogue.get(&self.store)
    }

    /// Every definition version the device holds: type, id, version, state, languages, and
    /// whether this app can use it.
    pub fn definitions(&self) -> Result<Vec<DefinitionInfo>> {
        let cat = self.catalogue()?;
        Ok(cat
            .entries()
            .map(|e| {
                let env = &e.definition.envelope;
                DefinitionInfo {
                    record: e.record,
                    definition: env.definition.clone(),
                    id: env.id.clone(),
                    version: env.version.to_string(),
                    state: e.state,
                    languages: env.languages.clone(),
                    usability: e.usability(),
                }
            })
            .collect())
    }

    /// Store definition files as if received from the registry (same record bytes, already
    /// synced, never pushed): for tests, benchmarks and a device used without a registry.
    /// Returns how many were new.
    pub fn provision_definitions(&self, files: &[&str]) -> Result<usize> {
        crate::catalogue::provision(&self.store, files)
    }

    /// The schedule in force for a procedure on `date` (see `docs/definitions.md`), if the device
    /// holds one.
    pub fn schedule_for(&self, date: NaiveDate) -> Result<Option<&'static Schedule>> {
        Ok(self
            .catalogue()?
            .schedule_for(date)
            .map(crate::catalogue::intern_schedule))
    }

    /// The exact version of a questionnaire, e.g. the one a response was started with.
    pub fn questionnaire_version(&self, id: &str, version: &str) -> Result<Arc<Questionnaire>> {
        let cat = self.catalogue()?;
        let Some(entry) = cat.get(DefinitionType::Questionnaire, id, version) else {
            return Err(Error::NotFound(format!(
                "questionnaire {id} version {version} is not on this device; sync to receive it"
            )));
        };
        match &entry.definition.content {
            Ok(Content::Questionnaire(q)) => Ok(q.clone()),
            Ok(_) => Err(Error::NotFound(format!(
                "{id} {version} is not a questionnaire"
            ))),
            Err(reason) => Err(Error::NeedsUpdate {
                form: format!("{id} {version}"),
                reason: reason.clone(),
            }),
        }
    }

    /// The questionnaire a response answers, at the version it was started with.
    pub fn response_questionnaire(&self, response: RecordId) -> Result<Arc<Questionnaire>> {
        let r: FollowupResponse = self.get(response)?;
        self.questionnaire_version(&r.questionnaire, &r.questionnaire_version)
    }

    // -----------------------------------------------------------------------------------------
    // Documents

    /// Load a record's document.
    pub fn load(&self, id: RecordId) -> Result<Automerge> {
        let Some(heads) = self.store.saved_heads(&id)? else {
            return Err(Error::NotFound(id.to_hex()));
        };
        if let Some(doc) = self.recent.lock().ok().and_then(|mut r| r.get(&id, &heads)) {
            return Ok(doc);
        }
        let doc = self
            .store
            .load_doc(&id)?
            .ok_or_else(|| Error::NotFound(id.to_hex()))?;
        if let Ok(mut r) = self.recent.lock() {
            r.put(id, doc.clone());
        }
        Ok(doc)
    }

    /// Read a record's typed body.
    pub fn get<T: RecordBody>(&self, id: RecordId) -> Result<T> {
        Ok(model::read_body(&self.load(id)?)?)
    }

    /// Read a record's header.
    pub fn header(&self, id: RecordId) -> Result<DocHeader> {
        Ok(model::read_header(&self.load(id)?)?)
    }

    /// Save a document (new or changed), refreshing its index entry.
    pub fn save(&self, doc: &Automerge) -> Result<()> {
        let meta = index_meta(doc)?;
        // Keep the work list's cache current with this save when nothing else wrote meanwhile.
        let cached = self
            .worklist
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.generation));
        // Every kind of save advances the cache's generation (a record that does not touch the
        // work list keeps it valid); only a response's previous index entry is needed.
        let before = match cached {
            Some(g) => {
                let now = self.store.generation()?;
                match (now == g, meta.kind) {
                    (false, _) => None,
                    (true, RecordKind::Response) => Some((now, self.store.meta(&meta.id)?)),
                    (true, _) => Some((now, None)),
                }
            }
            None => None,
        };
        let gen_before = self.store.generation()?;
        let outcome = self.store.save_doc(&meta, doc)?;
        if meta.kind != RecordKind::Definition {
            self.catalogue.advance(gen_before, self.store.generation()?);
        }
        if let Some(((writes, version), previous)) = before {
            let after = self.store.generation()?;
            if let Ok(mut slot) = self.worklist.lock() {
                let keep = match slot.as_mut() {
                    Some(c)
                        if c.generation == (writes, version) && after == (writes + 1, version) =>
                    {
                        let ok = c.apply(previous.as_ref(), &meta);
                        c.generation = after;
                        ok
                    }
                    _ => false,
                };
                if !keep {
                    *slot = None;
                }
            }
        }
        if let Ok(mut r) = self.recent.lock() {
            if outcome.merged {
                // The store held changes this copy lacks: the next load reads the merged one.
                r.docs.retain(|(i, _)| *i != meta.id);
            } else {
                r.put(meta.id, doc.clone());
            }
        }
        // The save is durable: a failure to tell the listeners must not undo it.
        if let Err(e) = self.publish_changes() {
            tracing::warn!(error = %e, "could not tell the listeners about a save");
        }
        Ok(())
    }

    /// Forget what the device keeps in memory about a record deleted from the store.
    pub(crate) fn forget(&self, id: RecordId) {
        if let Ok(mut r) = self.recent.lock() {
            r.docs.retain(|(i, _)| *i != id);
        }
        if let Ok(mut w) = self.worklist.lock() {
            *w = None;
        }
    }

    pub(crate) fn create_record<T: RecordBody>(
        &self,
        e: &Enrolled,
        patient: Option<RecordId>,
        body: &T,
    ) -> Result<RecordId> {
        let id = RecordId::random();
        let doc = model::new_record(self.author(e), id, e.clinic, patient, body)?;
        self.save(&doc)?;
        Ok(id)
    }

    pub(crate) fn update<T: RecordBody>(
        &self,
        e: &Enrolled,
        id: RecordId,
        edit: impl FnOnce(&mut T) -> Result<()>,
    ) -> Result<()> {
        let mut doc = self.load(id)?;
        if model::update_body(&mut doc, self.author(e), edit)?.is_some() {
            self.save(&doc)?;
        }
        Ok(())
    }

    /// Every conflicted field of a record, with each device's value.
    pub fn conflicts(&self, id: RecordId) -> Result<Vec<Conflict>> {
        Ok(model::conflicts(&self.load(id)?)?)
    }

    /// Resolve a conflicted answer of a response by choosing its value (one of the conflicting
    /// values, even the one shown, or a new one). The choice is an ordinary change that syncs.
    pub fn resolve_answer(
        &self,
        response: RecordId,
        item: &str,
        value: &AnswerValue,
    ) -> Result<()> {
        let e = self.require_enrolled()?;
        let mut doc = self.load(response)?;
        if model::read_header(&doc)?.kind != RecordKind::Response {
            return Err(Error::InvalidInput(format!(
                "{response} is not a questionnaire response"
            )));
        }
        model::resolve_answer(&mut doc, self.author(&e), item, value)?;
        self.save(&doc)
    }

    // -----------------------------------------------------------------------------------------
    // Patients and procedures

    /// Enrol a patient at this device's clinic. Returns the patient's (enrolment) id.
    pub fn enrol_patient(&self, enrolment: &Enrolment) -> Result<RecordId> {
        let e = self.require_clinic_device("enrol patients")?;
        self.check_new_enrolment(enrolment)?;
        let id = RecordId::random();
        let doc = model::new_record(self.author(&e), id, e.clinic, Some(id), enrolment)?;
        self.save(&doc)?;
        Ok(id)
    }

    /// Record a procedure performed on an enrolled patient.
    pub fn record_procedure(&self, patient: RecordId, procedure: &Procedure) -> Result<RecordId> {
        let e = self.require_clinic_device("record procedures")?;
        self.require_patient(patient)?;
        no_problems(followup_domain::rules::check_procedure(
            procedure,
            Utc::now().date_naive(),
        ))?;
        self.create_record(&e, Some(patient), procedure)
    }

    fn require_patient(&self, patient: RecordId) -> Result<()> {
        match self.store.meta(&patient)? {
            Some(m) if m.kind == RecordKind::Enrolment => Ok(()),
            _ => Err(Error::NotFound(format!("patient {patient}"))),
        }
    }

    /// The patients this device holds, by study code.
    pub fn list_patients(&self) -> Result<Vec<PatientSummary>> {
        let enrolments = self.store.list(&Query {
            kind: Some(RecordKind::Enrolment),
            ..Default::default()
        })?;
        // An adverse event stops being open when the clinic resolved it or the registry's case
        // is closed (both read from the index: the adjudication's and the case's status).
        let mut settled: std::collections::HashSet<RecordId> = std::collections::HashSet::new();
        for (kind, status) in [
            (
                RecordKind::Adjudication,
                AdjudicationStatus::Resolved.code(),
            ),
            (
                RecordKind::AdjudicationCase,
                model::CaseState::Closed.code(),
            ),
        ] {
            settled.extend(
                self.store
                    .list(&Query {
                        kind: Some(kind),
                        status: Some(status.into()),
                        ..Default::default()
                    })?
                    .into_iter()
                    .filter_map(|m| m.subject),
            );
        }
        let mut counts: BTreeMap<RecordId, (usize, usize, usize)> = BTreeMap::new();
        for kind in [
            RecordKind::Procedure,
            RecordKind::Response,
            RecordKind::AdverseEvent,
        ] {
            for m in self.store.list(&Query {
                kind: Some(kind),
                ..Default::default()
            })? {
                if let Some(p) = m.patient {
                    let c = counts.entry(p).or_default();
                    match kind {
                        RecordKind::Procedure => c.0 += 1,
                        RecordKind::Response => c.1 += 1,
                        _ if !settled.contains(&m.id) => c.2 += 1,
                        _ => {}
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(enrolments.len());
        for m in enrolments {
            let body: Enrolment = self.get(m.id)?;
            let (procedures, responses, open_adverse_events) =
                counts.get(&m.id).copied().unwrap_or_default();
            out.push(PatientSummary {
                id: m.id,
                study_code: body.study_code,
                enrolled_on: m.date,
                procedures,
                responses,
                open_adverse_events,
            });
        }
        out.sort_by(|a, b| a.study_code.cmp(&b.study_code));
        Ok(out)
    }

    // -----------------------------------------------------------------------------------------
    // Questionnaires and responses

    /// The questionnaire new responses use: the newest published version the device holds. A
    /// newest version this app cannot use is [`Error::NeedsUpdate`] (an older one is not used
    /// silently instead).
    pub fn questionnaire(&self, id: &str) -> Result<Questionnaire> {
        let cat = self.catalogue()?;
        let Some(entry) = cat.latest_published(DefinitionType::Questionnaire, id) else {
            return Err(Error::NotFound(format!(
                "questionnaire {id} (no published version on this device; sync to receive it)"
            )));
        };
        match &entry.definition.content {
            Ok(Content::Questionnaire(q)) => Ok(Questionnaire::clone(q)),
            Ok(_) => Err(Error::NotFound(format!("{id} is not a questionnaire"))),
            Err(reason) => Err(Error::NeedsUpdate {
                form: id.to_string(),
                reason: reason.clone(),
            }),
        }
    }

    /// Validate answers against a questionnaire as the user types: every problem except
    /// missing required answers.
    pub fn check_answers(&self, questionnaire_id: &str, answers: &Answers) -> Result<Vec<Problem>> {
        self.check_answers_in(questionnaire_id, answers, "en")
    }

    /// [`Device::check_answers`] with messages in `locale`.
    pub fn check_answers_in(
        &self,
        questionnaire_id: &str,
        answers: &Answers,
        locale: &str,
    ) -> Result<Vec<Problem>> {
        Ok(self
            .questionnaire(questionnaire_id)?
            .validate_partial_in(answers, locale))
    }

    /// Start a response (a draft) to a questionnaire for a patient, optionally answering a
    /// scheduled visit of a procedure.
    pub fn start_response(
        &self,
        patient: RecordId,
        questionnaire_id: &str,
        procedure: Option<RecordId>,
        visit: Option<&str>,
    ) -> Result<RecordId> {
        let e = self.require_enrolled()?;
        let body = self.new_response(&e, patient, questionnaire_id, procedure, visit)?;
        self.create_record(&e, Some(patient), &body)
    }

    /// A new, empty draft body, after the checks every new response passes: the device may
    /// answer for this patient, the questionnaire and the visit exist.
    pub(crate) fn new_response(
        &self,
        e: &Enrolled,
        patient: RecordId,
        questionnaire_id: &str,
        procedure: Option<RecordId>,
        visit: Option<&str>,
    ) -> Result<FollowupResponse> {
        let q = self.questionnaire(questionnaire_id)?;
        let completed_by = match e.role {
            DeviceRole::ClinicDevice => CompletedBy::Nurse,
            DeviceRole::PatientDevice => {
                if e.patient != Some(patient) {
                    return Err(Error::NotPermitted(
                        "a patient's phone can only answer for its own patient".into(),
                    ));
                }
                CompletedBy::Patient
            }
        };
        if e.role == DeviceRole::ClinicDevice {
            self.require_patient(patient)?;
        }
        if let Some(v) = visit {
            // The visit must exist in the schedule in force for the procedure (any schedule the
            // device holds when no procedure is named or the procedure is not on this device).
            let date = match procedure {
                Some(p) => self.store.meta(&p)?.and_then(|m| m.date),
                None => None,
            };
            let in_force = match date {
                Some(d) => self.schedule_for(d)?.into_iter().collect::<Vec<_>>(),
                None => self
                    .catalogue()?
                    .schedules()
                    .into_iter()
                    .map(crate::catalogue::intern_schedule)
                    .collect(),
            };
            if !in_force.iter().any(|s| s.visit(v).is_some()) {
                return Err(Error::InvalidInput(format!(
                    "{v:?} is not a visit of the schedule in force"
                )));
            }
        }
        let body = FollowupResponse {
            questionnaire: q.id().to_string(),
            questionnaire_version: q.version().to_string(),
            procedure: procedure.map(|p| p.to_hex()),
            visit: visit.map(str::to_string),
            answers: Answers::new(),
            completed_by,
            status: ResponseStatus::Draft,
            submitted_at: None,
            amendments: Vec::new(),
        };
        // The form must fit the visit, the role and the patient from the start.
        no_problems(self.with_rules(e.role, RecordId::random(), patient, |ctx| {
            followup_domain::rules::check_response(ctx, &body)
        })?)?;
        Ok(body)
    }

    /// Refuse to edit a submitted response as if it were a draft.
    fn require_draft(r: &FollowupResponse) -> Result<()> {
        if r.status == ResponseStatus::Submitted {
            return Err(Error::InvalidInput(
                "this response is submitted: correct it with an amendment (amend_response), which keeps the previous values".into(),
            ));
        }
        Ok(())
    }

    /// Save answers into a draft (merging with the answers already there: an answer set to a
    /// new value replaces the old one; answers not mentioned are kept). Returns the problems
    /// found so far (missing required answers are not problems until submission).
    pub fn save_answers(&self, response: RecordId, answers: &Answers) -> Result<Vec<Problem>> {
        self.save_answers_in(response, answers, "en")
    }

    /// [`Device::save_answers`] with problem messages in `locale` (e.g. the device's, `es-MX`).
    /// The response is checked against the exact questionnaire version it was started with.
    pub fn save_answers_in(
        &self,
        response: RecordId,
        answers: &Answers,
        locale: &str,
    ) -> Result<Vec<Problem>> {
        let e = self.require_enrolled()?;
        let mut problems = Vec::new();
        self.update::<FollowupResponse>(&e, response, |r| {
            Self::require_draft(r)?;
            for (k, v) in answers {
                r.answers.insert(k.clone(), v.clone());
            }
            let q = self.questionnaire_version(&r.questionnaire, &r.questionnaire_version)?;
            problems = q.validate_partial_in(&r.answers, locale);
            Ok(())
        })?;
        Ok(problems)
    }

    /// Remove an answer from a draft.
    pub fn clear_answer(&self, response: RecordId, item: &str) -> Result<()> {
        let e = self.require_enrolled()?;
        self.update::<FollowupResponse>(&e, response, |r| {
            Self::require_draft(r)?;
            r.answers.remove(item);
            Ok(())
        })
    }

    /// Submit a response: it must satisfy every rule of its questionnaire, or
    /// [`Error::Validation`] lists each problem. Answers to items that are no longer enabled
    /// are removed first.
    pub fn submit_response(&self, response: RecordId) -> Result<()> {
        self.submit_response_in(response, "en")
    }

    /// [`Device::submit_response`] with problem messages in `locale`. The response is checked
    /// against the exact questionnaire version it was started with, even if a newer one has been
    /// published since.
    pub fn submit_response_in(&self, response: RecordId, locale: &str) -> Result<()> {
        let e = self.require_enrolled()?;
        let patient = self
            .header(response)?
            .patient
            .ok_or_else(|| Error::InvalidInput(format!("{response} names no patient")))?;
        self.update::<FollowupResponse>(&e, response, |r| {
            if r.status == ResponseStatus::Submitted {
                return Ok(());
            }
            let q = self.questionnaire_version(&r.questionnaire, &r.questionnaire_version)?;
            q.prune_disabled(&mut r.answers);
            let problems = q.validate_in(&r.answers, locale);
            if !problems.is_empty() {
                return Err(Error::Validation(problems));
            }
            // The clinical rules (visit date, one response per visit...) on what is submitted.
            let mut submitted = r.clone();
            submitted.status = ResponseStatus::Submitted;
            no_problems(self.with_rules(e.role, response, patient, |ctx| {
                followup_domain::rules::check_response(ctx, &submitted)
            })?)?;
            r.status = ResponseStatus::Submitted;
            if r.submitted_at.is_none() {
                r.submitted_at =
                    Some(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            }
            Ok(())
        })
    }

    // -----------------------------------------------------------------------------------------
    // Schedule

    /// The procedures (of one patient, or all) with the visits their submitted responses
    /// answer, as comma-separated visit ids per procedure.
    fn procedures_and_done(&self, patient: Option<RecordId>) -> Result<(Vec<DocMeta>, DoneVisits)> {
        let procedures = self.store.list(&Query {
            kind: Some(RecordKind::Procedure),
            patient,
            ..Default::default()
        })?;
        let submitted = ResponseStatus::Submitted.code();
        let done: DoneVisits = match patient {
            // One patient: a handful of responses through the patient index.
            Some(patient) => {
                let mut done: HashMap<RecordId, String> = HashMap::new();
                for m in self.store.list(&Query {
                    kind: Some(RecordKind::Response),
                    patient: Some(patient),
                    status: Some(submitted.into()),
                    ..Default::default()
                })? {
                    if let (Some(p), Some(v)) = (m.subject, m.visit) {
                        let list = done.entry(p).or_default();
                        if !list.is_empty() {
                            list.push(',');
                        }
                        list.push_str(&v);
                    }
                }
                done
            }
            // The whole clinic: one aggregated index-only scan.
            None => self
                .store
                .visit_links(RecordKind::Response, submitted)?
                .into_iter()
                .collect(),
        };
        Ok((procedures, done))
    }

    /// The clinic-wide work list's inputs, read from the store's work list table (one small row
    /// per procedure, kept current by the store; see `store/worklist.rs`).
    fn worklist_from_table(&self, generation: (u64, i64)) -> Result<WorklistCache> {
        let mut procedures = HashMap::new();
        let mut done: DoneVisits = HashMap::new();
        self.store.for_each_worklist_row(|row| {
            procedures.insert(row.procedure, (row.patient, row.date));
            if !row.done.is_empty() {
                done.insert(row.procedure, row.done.to_owned());
            }
        })?;
        Ok(WorklistCache {
            generation,
            procedures,
            done,
        })
    }

    /// The same inputs from a full scan of the index (every procedure's entry and an aggregate
    /// over every submitted response): what the table must always equal.
    #[cfg(test)]
    fn worklist_from_scan(&self) -> Result<WorklistCache> {
        let generation = self.store.generation()?;
        let (procedures, done) = self.procedures_and_done(None)?;
        let procedures = procedures
            .into_iter()
            .filter_map(|p| Some((p.id, (p.patient?, p.date?))))
            .collect();
        Ok(WorklistCache {
            generation,
            procedures,
            done,
        })
    }

    /// One patient's visits, every procedure, as of a date.
    pub fn patient_visits(
        &self,
        patient: RecordId,
        as_of: NaiveDate,
    ) -> Result<Vec<PatientVisit<'_>>> {
        self.visits(Some(patient), as_of, None)
    }

    /// The clinic's visits in the given states (all states when `None`), most urgent first:
    /// overdue, then due by the end of their window, then the rest.
    pub fn clinic_visits(
        &self,
        as_of: NaiveDate,
        states: Option<&[VisitState]>,
    ) -> Result<Vec<PatientVisit<'_>>> {
        self.visits(None, as_of, states)
    }

    fn visits(
        &self,
        patient: Option<RecordId>,
        as_of: NaiveDate,
        states: Option<&[VisitState]>,
    ) -> Result<Vec<PatientVisit<'_>>> {
        // Classify with day numbers and build full entries only for the states asked for.
        let states: &[VisitState] = states.unwrap_or(&[
            VisitState::Overdue,
            VisitState::Due,
            VisitState::Upcoming,
            VisitState::Missed,
            VisitState::Done,
        ]);
        let catalogue = self.catalogue()?;
        // Each procedure follows the schedule in force on its date; procedures are grouped by
        // schedule so each group is classified in one pass.
        let by_schedule = |entries: Vec<((RecordId, RecordId), NaiveDate, VisitList<'_>)>| {
            let mut groups: Vec<(&'static Schedule, Vec<_>)> = Vec::new();
            for e in entries {
                let Some(s) = catalogue.schedule_for(e.1) else {
                    continue;
                };
                let s = crate::catalogue::intern_schedule(s);
                match groups.iter_mut().find(|(g, _)| std::ptr::eq(*g, s)) {
                    Some((_, list)) => list.push(e),
                    None => groups.push((s, vec![e])),
                }
            }
            let mut lines = Vec::new();
            for (s, list) in groups {
                lines.extend(s.worklist(list, as_of, states));
            }
            lines
        };
        let lines = match patient {
            Some(_) => {
                let (procedures, done) = self.procedures_and_done(patient)?;
                by_schedule(
                    procedures
                        .iter()
                        .filter_map(|p| {
                            let done = VisitList(done.get(&p.id).map_or("", String::as_str));
                            Some(((p.patient?, p.id), p.date?, done))
                        })
                        .collect(),
                )
            }
            None => {
                let generation = self.store.generation()?;
                let mut slot = self
                    .worklist
                    .lock()
                    .map_err(|_| Error::InvalidInput("the work list cache was poisoned".into()))?;
                if slot.as_ref().is_none_or(|c| c.generation != generation) {
                    *slot = Some(self.worklist_from_table(generation)?);
                }
                match slot.as_ref() {
                    Some(c) => by_schedule(
                        c.procedures
                            .iter()
                            .map(|(id, (patient, date))| {
                                let done = VisitList(c.done.get(id).map_or("", String::as_str));
                                ((*patient, *id), *date, done)
                            })
                            .collect(),
                    ),
                    None => Vec::new(),
                }
            }
        };
        let mut out: Vec<PatientVisit<'_>> = lines
            .into_iter()
            .map(|l| PatientVisit {
                patient: l.patient.0,
                procedure: l.patient.1,
                visit: l.status,
            })
            .collect();
        out.sort_by(|a, b| {
            (
                a.visit.state.urgency_rank(),
                a.visit.deadline(),
                a.patient,
                a.visit.visit_id,
            )
                .cmp(&(
                    b.visit.state.urgency_rank(),
                    b.visit.deadline(),
                    b.patient,
                    b.visit.visit_id,
                ))
        });
        Ok(out)
    }

    // -----------------------------------------------------------------------------------------
    // Adverse events and adjudication

    /// Report an adverse event for a patient. On a patient's phone the reporter is always the
    /// patient.
    pub fn report_adverse_event(
        &self,
        patient: RecordId,
        event: &AdverseEvent,
    ) -> Result<RecordId> {
        let e = self.require_enrolled()?;
        let mut event = event.clone();
        match e.role {
            DeviceRole::PatientDevice => {
                if e.patient != Some(patient) {
                    return Err(Error::NotPermitted(
                        "a patient's phone can only report for its own patient".into(),
                    ));
                }
                event.reporter = Reporter::Patient;
            }
            DeviceRole::ClinicDevice => {
                self.require_patient(patient)?;
                // A clinic reports as the clinic; the patient reports from their phone.
                event.reporter = Reporter::Clinic;
            }
        }
        let id = RecordId::random();
        no_problems(self.with_rules(e.role, id, patient, |ctx| {
            followup_domain::rules::check_adverse_event(ctx, &event)
        })?)?;
        let doc = model::new_record(self.author(&e), id, e.clinic, Some(patient), &event)?;
        self.save(&doc)?;
        Ok(id)
    }

    /// Record (or update) the treating clinic's adjudication of an adverse event: relatedness,
    /// action, remedy and the clinic's status. The deadline is not the clinic's: the registry's
    /// case holds it (see [`Device::adverse_event`]). The clinical rules are checked before
    /// anything is saved (a decision states relatedness and action, a remedy when related).
    pub fn adjudicate(
        &self,
        adverse_event: RecordId,
        edit: impl FnOnce(&mut Adjudication),
    ) -> Result<RecordId> {
        let e = self.require_clinic_device("adjudicate adverse events")?;
        let ae_doc = self.load(adverse_event)?;
        let header = model::read_header(&ae_doc)?;
        if header.kind != RecordKind::AdverseEvent {
            return Err(Error::InvalidInput(format!(
                "{adverse_event} is not an adverse event"
            )));
        }
        let existing = self
            .store
            .list(&Query {
                kind: Some(RecordKind::Adjudication),
                patient: header.patient,
                ..Default::default()
            })?
            .into_iter()
            .find(|m| m.subject == Some(adverse_event));
        let patient = header
            .patient
            .ok_or_else(|| Error::InvalidInput(format!("{adverse_event} names no patient")))?;
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let check = |id: RecordId, a: &Adjudication| -> Result<()> {
            no_problems(self.with_rules(e.role, id, patient, |ctx| {
                followup_domain::rules::check_adjudication(ctx, a)
            })?)
        };
        match existing {
            Some(m) => {
                self.update::<Adjudication>(&e, m.id, |a| {
                    edit(a);
                    a.decided_at = Some(now);
                    check(m.id, a)
                })?;
                Ok(m.id)
            }
            None => {
                let mut adj = Adjudication {
                    adverse_event: adverse_event.to_hex(),
                    relatedness: None,
                    action: String::new(),
                    remedy: String::new(),
                    status: AdjudicationStatus::Open,
                    deadline: String::new(),
                    decided_at: None,
                };
                edit(&mut adj);
                adj.decided_at = Some(now);
                let id = RecordId::random();
                check(id, &adj)?;
                let doc = model::new_record(self.author(&e), id, e.clinic, Some(patient), &adj)?;
                self.save(&doc)?;
                Ok(id)
            }
        }
    }

    /// Adverse events the clinic has not resolved and the registry has not closed, oldest
    /// deadline first. The deadline and the state are the registry's (its case record); an
    /// event whose case has not reached the device yet has none.
    pub fn adjudication_queue(&self, as_of: NaiveDate) -> Result<Vec<AdjudicationItem>> {
        let by_subject = |kind: RecordKind| -> Result<BTreeMap<RecordId, DocMeta>> {
            Ok(self
                .store
                .list(&Query {
                    kind: Some(kind),
                    ..Default::default()
                })?
                .into_iter()
                .filter_map(|m| m.subject.map(|s| (s, m)))
                .collect())
        };
        let adjudications = by_subject(RecordKind::Adjudication)?;
        let cases = by_subject(RecordKind::AdjudicationCase)?;
        let mut out = Vec::new();
        for ae in self.store.list(&Query {
            kind: Some(RecordKind::AdverseEvent),
            ..Default::default()
        })? {
            let Some(patient) = ae.patient else { continue };
            let adj = adjudications.get(&ae.id);
            let status = adj
                .and_then(|a| a.status.as_deref())
                .and_then(AdjudicationStatus::from_code)
                .unwrap_or(AdjudicationStatus::Open);
            let case = cases.get(&ae.id);
            let state = case
                .and_then(|c| c.status.as_deref())
                .and_then(model::CaseState::from_code);
            if status == AdjudicationStatus::Resolved || state == Some(model::CaseState::Closed) {
                continue;
            }
            let deadline = case.and_then(|c| c.date);
            let undecided = matches!(
                status,
                AdjudicationStatus::Open | AdjudicationStatus::Disputed
            );
            out.push(AdjudicationItem {
                adverse_event: ae.id,
                patient,
                adjudication: adj.map(|a| a.id),
                status,
                state,
                deadline,
                overdue: matches!(
                    state,
                    Some(model::CaseState::Overdue | model::CaseState::Escalated)
                ) || (undecided && deadline.is_some_and(|d| d < as_of)),
            });
        }
        out.sort_by_key(|i| (i.deadline.is_none(), i.deadline));
        Ok(out)
    }
}

/// The plaintext index entry of a record: ids, one date, status and visit codes, and the record
/// it refers to. Used when saving locally and when a sync brings a document in.
pub fn index_meta(doc: &Automerge) -> Result<DocMeta> {
    let h = model::read_header(doc)?;
    let mut meta = DocMeta {
        id: h.id,
        kind: h.kind,
        clinic: h.clinic,
        patient: h.patient,
        date: None,
        status: None,
        visit: None,
        subject: None,
    };
    let subject = |s: &Option<String>| s.as_deref().and_then(|s| s.parse::<RecordId>().ok());
    match h.kind {
        RecordKind::Clinic => {
            let c: model::Clinic = model::read_body(doc)?;
            meta.status = Some(c.participation.code().into());
        }
        RecordKind::Definition => {
            let d: DefinitionBody = model::read_body(doc)?;
            meta.status = Some(d.state);
        }
        RecordKind::Enrolment => {
            let e: Enrolment = model::read_body(doc)?;
            meta.date = parse_date(&e.enrolled_on);
        }
        RecordKind::Procedure => {
            let p: Procedure = model::read_body(doc)?;
            meta.date = parse_date(&p.date);
        }
        RecordKind::Response => {
            let r: FollowupResponse = model::read_body(doc)?;
            meta.status = Some(r.status.code().into());
            meta.visit = r.visit.clone();
            meta.subject = subject(&r.procedure);
            meta.date = r
                .submitted_at
                .as_deref()
                .and_then(|s| s.get(..10))
                .and_then(parse_date);
        }
        RecordKind::AdverseEvent => {
            let a: AdverseEvent = model::read_body(doc)?;
            meta.date = parse_date(&a.onset);
            meta.status = Some(format!("grade{}", a.severity.clamp(0, 9)));
            meta.subject = subject(&a.procedure);
        }
        RecordKind::Adjudication => {
            let a: Adjudication = model::read_body(doc)?;
            meta.status = Some(a.status.code().into());
            meta.subject = a.adverse_event.parse().ok();
        }
        RecordKind::AdjudicationCase => {
            let c: model::AdjudicationCase = model::read_body(doc)?;
            meta.date = parse_date(&c.deadline);
            meta.status = Some(c.state.code().into());
            meta.subject = c.adverse_event.parse().ok();
        }
        RecordKind::CaseReply => {
            let r: model::CaseReply = model::read_body(doc)?;
            meta.date = r.replied_at.get(..10).and_then(parse_date);
            meta.status = Some(r.verdict.code().into());
            meta.subject = r.adverse_event.parse().ok();
        }
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::StaticKeyProvider;
    use followup_domain::model::*;
    use followup_domain::questionnaire::{AnswerValue, ProblemCode};

    fn key() -> KeySource {
        KeySource::provider(StaticKeyProvider::new([7; 32], "test"))
    }

    /// The definitions a registry would have sent: the built-ins and the benchmark instrument.
    fn provision(d: &Device) {
        let mut files = followup_domain::definitions::builtin_definitions().to_vec();
        files.push(include_str!("../../testkit/instruments/bench-50.json"));
        d.provision_definitions(&files).unwrap();
    }

    fn clinic_device(dir: &tempfile::TempDir) -> (Device, RecordId) {
        let d = Device::create(dir.path().join("tablet.db"), key()).unwrap();
        provision(&d);
        let clinic = RecordId::random();
        d.set_enrolment(Enrolled {
            device_id: DeviceId::random(),
            role: DeviceRole::ClinicDevice,
            clinic,
            patient: None,
            server_url: "http://127.0.0.1:1".into(),
        })
        .unwrap();
        (d, clinic)
    }

    fn enrolment(code: &str) -> Enrolment {
        Enrolment {
            study_code: code.into(),
            consent: Consent {
                form_version: "2.1".into(),
                date: "2026-01-05".into(),
                scope: vec!["registry".into()],
            },
            birth_year: 1961,
            sex: Sex::Female,
            enrolled_on: "2026-01-05".into(),
        }
    }

    fn procedure(date: &str) -> Procedure {
        Procedure {
            date: date.into(),
            condition: "knee osteoarthritis".into(),
            procedure_type: "cell injection".into(),
            route: Route::IntraArticular,
            cell_type: CellType::Mesenchymal,
            source_tissue: SourceTissue::Adipose,
            origin: Origin::Autologous,
            manipulation: Manipulation::Minimal,
            regulatory_status: RegulatoryStatus::Unregulated,
            trial_registration: None,
            promised_benefits: vec![PromisedBenefit {
                benefit: "less pain".into(),
                measure: "pain 0-10".into(),
            }],
            cost: Some(Cost {
                amount_minor: 850_000,
                currency: "USD".into(),
            }),
        }
    }

    fn t(s: &str) -> AnswerValue {
        AnswerValue::Text(s.into())
    }

    fn valid_followup() -> Answers {
        [
            ("visit_date", t("2026-02-05")),
            ("visit_mode", t("in_person")),
            ("condition_status", t("improved")),
            ("symptom_primary", AnswerValue::Int(3)),
            ("symptom_pain", AnswerValue::Int(2)),
            ("symptom_fatigue", AnswerValue::Int(4)),
            ("ecog", t("1")),
            ("complications_any", AnswerValue::Bool(false)),
            ("hospitalised", AnswerValue::Bool(false)),
            ("further_cell_therapy", AnswerValue::Bool(false)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    #[test]
    fn records_need_enrolment_and_reopen_with_the_right_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let d = Device::create(&path, key()).unwrap();
        provision(&d);
        assert!(matches!(
            d.enrol_patient(&enrolment("P-1")),
            Err(Error::NotEnrolled)
        ));
        let public = d.identity().unwrap().public_key();
        drop(d);
        let wrong = KeySource::provider(StaticKeyProvider::new([8; 32], "test"));
        match Device::open(&path, wrong) {
            Err(Error::Store(crate::store::StoreError::WrongKey)) => {}
            other => panic!("expected WrongKey, got {other:?}"),
        }
        let d = Device::open(&path, key()).unwrap();
        assert_eq!(
            d.identity().unwrap().public_key(),
            public,
            "identity survives reopening"
        );
    }

    #[test]
    fn a_field_day_on_a_clinic_tablet() {
        let dir = tempfile::tempdir().unwrap();
        let (d, _) = clinic_device(&dir);
        let patient = d.enrol_patient(&enrolment("P-001")).unwrap();
        let proc_id = d
            .record_procedure(patient, &procedure("2026-01-05"))
            .unwrap();
        assert_eq!(
            d.get::<Procedure>(proc_id).unwrap(),
            procedure("2026-01-05")
        );

        // Day 7 visit due on 2026-01-12 (window 01-10..01-14).
        let as_of = NaiveDate::from_ymd_opt(2026, 1, 12).unwrap();
        let due = d.clinic_visits(as_of, Some(&[VisitState::Due])).unwrap();
        assert!(
            due.iter()
                .any(|v| v.visit.visit_id == "d7" && v.patient == patient),
            "{due:?}"
        );

        // Capture the day-7 follow-up with mistakes: each broken rule is reported.
        let r = d
            .start_response(patient, "clinician-followup", Some(proc_id), Some("d7"))
            .unwrap();
        let mut bad = valid_followup();
        bad.insert("symptom_pain".into(), AnswerValue::Int(14));
        bad.insert("ecog".into(), t("9"));
        let problems = d.save_answers(r, &bad).unwrap();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems
            .iter()
            .any(|p| p.item == "symptom_pain" && p.code == ProblemCode::AboveMax));
        assert!(problems
            .iter()
            .any(|p| p.item == "ecog" && p.code == ProblemCode::UnknownChoice));
        match d.submit_response(r) {
            Err(Error::Validation(p)) => assert_eq!(p.len(), 2),
            other => panic!("expected validation errors, got {other:?}"),
        }
        // A required answer missing is a problem at submission only.
        d.clear_answer(r, "hospitalised").unwrap();
        let mut fixed = valid_followup();
        fixed.remove("hospitalised");
        assert!(d.save_answers(r, &fixed).unwrap().is_empty());
        match d.submit_response(r) {
            Err(Error::Validation(p)) => {
                assert_eq!(p.len(), 1);
                assert_eq!(p[0].item, "hospitalised");
                assert_eq!(p[0].code, ProblemCode::Required);
            }
            other => panic!("expected a missing answer, got {other:?}"),
        }
        d.save_answers(r, &valid_followup()).unwrap();
        d.submit_response(r).unwrap();
        let resp: FollowupResponse = d.get(r).unwrap();
        assert_eq!(resp.status, ResponseStatus::Submitted);
        assert_eq!(resp.completed_by, CompletedBy::Nurse);

        // The visit is done now, and only the month-1 visit lies ahead.
        let visits = d.patient_visits(patient, as_of).unwrap();
        let d7 = visits.iter().find(|v| v.visit.visit_id == "d7").unwrap();
        assert_eq!(d7.visit.state, VisitState::Done);
        let later = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let overdue = d
            .clinic_visits(later, Some(&[VisitState::Overdue]))
            .unwrap();
        assert!(
            overdue.iter().any(|v| v.visit.visit_id == "m1"),
            "{overdue:?}"
        );

        let patients = d.list_patients().unwrap();
        assert_eq!(patients.len(), 1);
        assert_eq!(patients[0].study_code, "P-001");
        assert_eq!((patients[0].procedures, patients[0].responses), (1, 1));
    }

    #[test]
    fn the_clinic_work_list_follows_local_saves_and_outside_writes() {
        // (Saves of other records, such as an adverse event, keep the cached inputs valid.)
        let dir = tempfile::tempdir().unwrap();
        let (d, _) = clinic_device(&dir);
        let as_of = NaiveDate::from_ymd_opt(2026, 1, 12).unwrap();
        let due = |d: &Device| {
            d.clinic_visits(as_of, Some(&[VisitState::Due]))
                .unwrap()
                .iter()
                .map(|v| (v.patient, v.visit.visit_id.to_string()))
                .collect::<Vec<_>>()
        };
        let p1 = d.enrol_patient(&enrolment("P-1")).unwrap();
        let pr1 = d.record_procedure(p1, &procedure("2026-01-05")).unwrap();
        assert_eq!(due(&d), vec![(p1, "d7".to_string())]);
        // A procedure saved after the list was built appears (the cache is updated in place).
        let p2 = d.enrol_patient(&enrolment("P-2")).unwrap();
        d.record_procedure(p2, &procedure("2026-01-04")).unwrap();
        assert_eq!(due(&d).len(), 2);
        // Submitting p1's day-7 follow-up takes it off the list.
        let r = d
            .start_response(p1, "clinician-followup", Some(pr1), Some("d7"))
            .unwrap();
        d.save_answers(r, &valid_followup()).unwrap();
        assert_eq!(due(&d).len(), 2, "a draft does not count");
        d.report_adverse_event(
            p2,
            &AdverseEvent {
                reporter: Reporter::Clinic,
                category: "infection".into(),
                onset: "2026-01-10".into(),
                severity: 2,
                seriousness: vec![],
                outcome: AeOutcome::Recovering,
                description: "redness".into(),
                procedure: None,
                answers: Answers::new(),
            },
        )
        .unwrap();
        assert_eq!(
            due(&d).len(),
            2,
            "an adverse event does not change the visits"
        );
        d.submit_response(r).unwrap();
        assert_eq!(due(&d), vec![(p2, "d7".to_string())]);
        // A write that bypasses the device (as a sync does) is seen too.
        let other = Device::open(dir.path().join("tablet.db"), key()).unwrap();
        let p3 = other.enrol_patient(&enrolment("P-3")).unwrap();
        other
            .record_procedure(p3, &procedure("2026-01-06"))
            .unwrap();
        drop(other);
        assert_eq!(due(&d).len(), 2);
        assert!(due(&d).contains(&(p3, "d7".to_string())));
    }

    /// The work list's inputs as comparable values: procedure → (patient, date, the set of done
    /// visits, sorted).
    fn worklist_snapshot(
        c: &WorklistCache,
    ) -> std::collections::BTreeMap<RecordId, (RecordId, NaiveDate, Vec<String>)> {
        c.procedures
            .iter()
            .map(|(id, (patient, date))| {
                let mut done: Vec<String> = c
                    .done
                    .get(id)
                    .map(|d| d.split(',').map(str::to_owned).collect())
                    .unwrap_or_default();
                done.sort();
                done.dedup();
                (*id, (*patient, *date, done))
            })
            .collect()
    }

    /// The table the cold listing reads, the full index scan it replaces, and the cache the
    /// warm listing keeps up to date all agree.
    fn assert_worklist_consistent(d: &Device, step: &str) {
        let generation = d.store.generation().unwrap();
        let table = worklist_snapshot(&d.worklist_from_table(generation).unwrap());
        let scan = worklist_snapshot(&d.worklist_from_scan().unwrap());
        assert_eq!(table, scan, "{step}: the table drifted from the index");
        let as_of = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let warm = d.clinic_visits(as_of, None).unwrap().len();
        if let Some(c) = d.worklist.lock().unwrap().as_ref() {
            assert_eq!(worklist_snapshot(c), scan, "{step}: the cache drifted");
        }
        let cold = Device::open(d.store.path(), key()).unwrap();
        assert_eq!(
            cold.clinic_visits(as_of, None).unwrap().len(),
            warm,
            "{step}: cold and warm listings differ"
        );
    }

    #[test]
    fn the_work_list_table_follows_drafts_submissions_amendments_edits_and_other_writers() {
        let dir = tempfile::tempdir().unwrap();
        let (d, _) = clinic_device(&dir);
        let as_of = NaiveDate::from_ymd_opt(2026, 1, 12).unwrap();
        assert_worklist_consistent(&d, "empty");
        let p1 = d.enrol_patient(&enrolment("P-1")).unwrap();
        let pr1 = d.record_procedure(p1, &procedure("2026-01-05")).unwrap();
        let p2 = d.enrol_patient(&enrolment("P-2")).unwrap();
        let pr2 = d.record_procedure(p2, &procedure("2026-01-04")).unwrap();
        // Build the warm cache, then change things under it.
        assert_eq!(
            d.clinic_visits(as_of, Some(&[VisitState::Due]))
                .unwrap()
                .len(),
            2
        );
        assert_worklist_consistent(&d, "two procedures");
        let r = d
            .start_response(p1, "clinician-followup", Some(pr1), Some("d7"))
            .unwrap();
        d.save_answers(r, &valid_followup()).unwrap();
        assert_worklist_consistent(&d, "a draft");
        d.submit_response(r).unwrap();
        assert_worklist_consistent(&d, "the draft submitted");
        let table = worklist_snapshot(
            &d.worklist_from_table(d.store.generation().unwrap())
                .unwrap(),
        );
        assert_eq!(table[&pr1].2, vec!["d7".to_string()]);
        d.amend_response(
            r,
            &[("symptom_pain".to_string(), AnswerValue::Int(5))].into(),
            "typo",
        )
        .unwrap();
        assert_worklist_consistent(&d, "an amendment");
        // The procedure's date is corrected: its visits move, the done one stays done.
        d.update_procedure(pr1, &procedure("2026-01-06")).unwrap();
        assert_worklist_consistent(&d, "a procedure edited");
        let table = worklist_snapshot(
            &d.worklist_from_table(d.store.generation().unwrap())
                .unwrap(),
        );
        assert_eq!(
            table[&pr1],
            (
                p1,
                NaiveDate::from_ymd_opt(2026, 1, 6).unwrap(),
                vec!["d7".to_string()]
            )
        );
        // A draft discarded, and another device's writes to the same file (as a sync makes).
        let draft = d
            .start_response(p2, "clinician-followup", Some(pr2), Some("d7"))
            .unwrap();
        d.discard_draft(draft).unwrap();
        assert_worklist_consistent(&d, "a draft discarded");
        let other = Device::open(d.store.path(), key()).unwrap();
        let r2 = other
            .start_response(p2, "clinician-followup", Some(pr2), Some("d7"))
            .unwrap();
        other.save_answers(r2, &valid_followup()).unwrap();
        other.submit_response(r2).unwrap();
        let p3 = other.enrol_patient(&enrolment("P-3")).unwrap();
        other
            .record_procedure(p3, &procedure("2026-01-06"))
            .unwrap();
        drop(other);
        assert_worklist_consistent(&d, "another writer");
        let due = d.clinic_visits(as_of, Some(&[VisitState::Due])).unwrap();
        assert_eq!(
            due.iter().map(|v| v.patient).collect::<Vec<_>>(),
            vec![p3],
            "{due:?}"
        );
    }

    #[test]
    fn adverse_events_reach_the_adjudication_queue_until_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let (d, _) = clinic_device(&dir);
        let patient = d.enrol_patient(&enrolment("P-002")).unwrap();
        let mut ae = AdverseEvent {
            reporter: Reporter::Clinic,
            category: "infection".into(),
            onset: "2026-02-01".into(),
            severity: 7,
            seriousness: vec!["hospitalisation".into()],
            outcome: AeOutcome::Recovering,
            description: "fever and redness at the injection site".into(),
            procedure: None,
            answers: Answers::new(),
        };
        match d.report_adverse_event(patient, &ae) {
            Err(Error::Validation(p)) => {
                assert_eq!(p.len(), 1, "{p:?}");
                assert_eq!(p[0].item, "severity");
                assert_eq!(p[0].code, ProblemCode::OutOfBounds);
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
        ae.severity = 3;
        let ae_id = d.report_adverse_event(patient, &ae).unwrap();
        let today = Utc::now().date_naive();
        let q = d.adjudication_queue(today).unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].adverse_event, ae_id);
        assert_eq!(q[0].adjudication, None);

        assert!(matches!(
            d.adjudicate(ae_id, |a| {
                a.relatedness = Some(Relatedness::Probable);
                a.action = "antibiotics".into();
                a.status = AdjudicationStatus::Responded;
            }),
            Err(Error::Validation(_))
        ));
        // A decision that the event is probably related names the remedy.
        let adj = d
            .adjudicate(ae_id, |a| {
                a.relatedness = Some(Relatedness::Probable);
                a.action = "antibiotics".into();
                a.remedy = "treatment at no cost".into();
                a.status = AdjudicationStatus::Responded;
            })
            .unwrap();
        let q = d.adjudication_queue(today).unwrap();
        assert_eq!(q[0].adjudication, Some(adj));
        assert_eq!(q[0].status, AdjudicationStatus::Responded);
        // The deadline is the registry's: none until its case arrives with a sync.
        assert_eq!(q[0].deadline, None);
        assert_eq!(q[0].state, None);
        assert!(d.adverse_event(ae_id).unwrap().adjudication.is_some());
        // Updating reuses the same adjudication record.
        let again = d
            .adjudicate(ae_id, |a| a.status = AdjudicationStatus::Resolved)
            .unwrap();
        assert_eq!(again, adj);
        assert!(d.adjudication_queue(today).unwrap().is_empty());
    }

    #[test]
    fn a_patient_phone_writes_only_what_a_patient_writes() {
        let dir = tempfile::tempdir().unwrap();
        let phone = Device::create(dir.path().join("phone.db"), key()).unwrap();
        provision(&phone);
        let me = RecordId::random();
        phone
            .set_enrolment(Enrolled {
                device_id: DeviceId::random(),
                role: DeviceRole::PatientDevice,
                clinic: RecordId::random(),
                patient: Some(me),
                server_url: "http://127.0.0.1:1".into(),
            })
            .unwrap();
        assert!(matches!(
            phone.enrol_patient(&enrolment("x")),
            Err(Error::NotPermitted(_))
        ));
        assert!(matches!(
            phone.start_response(RecordId::random(), "patient-outcome-survey", None, None),
            Err(Error::NotPermitted(_))
        ));
        let r = phone
            .start_response(me, "patient-outcome-survey", None, None)
            .unwrap();
        let body: FollowupResponse = phone.get(r).unwrap();
        assert_eq!(body.completed_by, CompletedBy::Patient);
        let ae = AdverseEvent {
            reporter: Reporter::Clinic,
            category: "other".into(),
            onset: "2026-03-01".into(),
            severity: 2,
            seriousness: vec![],
            outcome: AeOutcome::Recovering,
            description: "swelling".into(),
            procedure: None,
            answers: Answers::new(),
        };
        let id = phone.report_adverse_event(me, &ae).unwrap();
        assert_eq!(
            phone.get::<AdverseEvent>(id).unwrap().reporter,
            Reporter::Patient
        );
        assert!(matches!(
            phone.adjudicate(id, |_| {}),
            Err(Error::NotPermitted(_))
        ));
    }
}
