//! [`FollowupStore`]: the app's handle on one encrypted store, wrapping core's
//! [`Device`](followup_device::device::Device). Every method converts its arguments, calls core and
//! converts the result; the rules are core's.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use followup_device::crypto::KeySource;
use followup_device::device::Device;
use followup_device::RecordId;
use followup_domain::model::{self as m, RecordKind};

use crate::error::{guard, FollowupError, ItemProblem};
use crate::keys::{KeyProvider, PlatformKeys};
use crate::types::{self as t, record_id};

/// One encrypted Followup store on this device: a clinic tablet's or a patient phone's records,
/// its identity and its enrolment with the registry.
///
/// Open it once (the constructors are `suspend`/`async`: key derivation and opening take time)
/// and use it from any thread. Short calls (capture, lists, validation) take milliseconds and
/// may run on the main thread; `enrol`, `sync` and key rotation are `suspend`/`async`.
///
/// Closing: `close_store()` releases the database and forgets the key at once; afterwards every
/// call fails with `FollowupError.Closed`. In Kotlin the object is also `AutoCloseable`
/// (`use { }` frees it; later calls throw `IllegalStateException`); in Swift it is closed when
/// the last reference goes away.
#[derive(uniffi::Object)]
pub struct FollowupStore {
    device: RwLock<Option<Arc<Device>>>,
    pub(crate) sync: Arc<crate::sync::SyncState>,
    /// The language of questionnaire texts and validation messages (a BCP 47 tag); see
    /// `set_locale`.
    pub(crate) locale: RwLock<String>,
}

impl std::fmt::Debug for FollowupStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowupStore").finish_non_exhaustive()
    }
}

/// Runs blocking core work on tokio's blocking pool, turning a panic into `Internal`.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FollowupError> + Send + 'static,
) -> Result<T, FollowupError> {
    match tokio::task::spawn_blocking(move || guard(f)).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(FollowupError::internal(crate::error::panic_text(
            &*e.into_panic(),
        ))),
        Err(e) => Err(FollowupError::internal(e)),
    }
}

fn provider_key(provider: Arc<dyn KeyProvider>) -> KeySource {
    KeySource::Provider(Arc::new(PlatformKeys(provider)))
}

fn passphrase_key(passphrase: String) -> Result<KeySource, FollowupError> {
    if passphrase.is_empty() {
        return Err(FollowupError::invalid_input("The passphrase is empty"));
    }
    Ok(KeySource::passphrase(passphrase))
}

impl FollowupStore {
    fn wrap(device: Device) -> Arc<Self> {
        Arc::new(Self {
            device: RwLock::new(Some(Arc::new(device))),
            sync: Default::default(),
            locale: RwLock::new(crate::definitions::DEFAULT_LOCALE.to_string()),
        })
    }

    async fn open_or_create(
        path: String,
        key: KeySource,
        create: bool,
    ) -> Result<Arc<Self>, FollowupError> {
        if path.trim().is_empty() {
            return Err(FollowupError::invalid_input("The store path is empty"));
        }
        let path = PathBuf::from(path);
        let device = blocking(move || {
            Ok(if create {
                Device::create(&path, key)?
            } else {
                Device::open(&path, key)?
            })
        })
        .await?;
        Ok(Self::wrap(device))
    }

    /// The open device, or `Closed`.
    pub(crate) fn device(&self) -> Result<Arc<Device>, FollowupError> {
        self.device
            .read()
            .ok()
            .and_then(|d| d.clone())
            .ok_or_else(FollowupError::closed)
    }

    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&Device) -> Result<T, FollowupError>,
    ) -> Result<T, FollowupError> {
        guard(|| f(&*self.device()?))
    }

    fn require_kind(
        d: &Device,
        id: RecordId,
        kind: RecordKind,
        what: &str,
    ) -> Result<(), FollowupError> {
        let h = d.header(id)?;
        if h.kind != kind {
            return Err(FollowupError::invalid_input(format!(
                "{id} is a {} record, not {what}",
                h.kind.code()
            )));
        }
        Ok(())
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl FollowupStore {
    /// Creates a new store at `path` (a file that must not exist), its data key wrapped by the
    /// platform `provider` (Android Keystore, iOS Keychain). The device has a fresh identity and
    /// is not enrolled yet.
    #[uniffi::constructor]
    pub async fn create_with_key_provider(
        path: String,
        provider: Arc<dyn KeyProvider>,
    ) -> Result<Arc<Self>, FollowupError> {
        Self::open_or_create(path, provider_key(provider), true).await
    }

    /// Creates a new store at `path` protected by a passphrase (PBKDF2-HMAC-SHA256, 600,000
    /// iterations: about a second on a phone).
    #[uniffi::constructor]
    pub async fn create_with_passphrase(
        path: String,
        passphrase: String,
    ) -> Result<Arc<Self>, FollowupError> {
        Self::open_or_create(path, passphrase_key(passphrase)?, true).await
    }

    /// Opens the store at `path` with the platform `provider` it was created (or last re-keyed)
    /// with. `WrongKey` when the provider's key does not open it.
    #[uniffi::constructor]
    pub async fn open_with_key_provider(
        path: String,
        provider: Arc<dyn KeyProvider>,
    ) -> Result<Arc<Self>, FollowupError> {
        Self::open_or_create(path, provider_key(provider), false).await
    }

    /// Opens the store at `path` with its passphrase. `WrongKey` when it is not the right one.
    #[uniffi::constructor]
    pub async fn open_with_passphrase(
        path: String,
        passphrase: String,
    ) -> Result<Arc<Self>, FollowupError> {
        Self::open_or_create(path, passphrase_key(passphrase)?, false).await
    }

    /// Re-wraps the data key with a new platform key (no record is rewritten). Afterwards only
    /// `provider` opens the store.
    pub async fn rotate_key_to_provider(
        &self,
        provider: Arc<dyn KeyProvider>,
    ) -> Result<(), FollowupError> {
        let d = self.device()?;
        blocking(move || Ok(d.rotate_key(provider_key(provider))?)).await
    }

    /// Re-wraps the data key with a passphrase (no record is rewritten). Afterwards only
    /// `passphrase` opens the store.
    pub async fn rotate_key_to_passphrase(&self, passphrase: String) -> Result<(), FollowupError> {
        let d = self.device()?;
        let key = passphrase_key(passphrase)?;
        blocking(move || Ok(d.rotate_key(key)?)).await
    }

    /// Closes the store now: cancels a running sync, releases the database and drops the key
    /// from memory once calls under way have finished. Every later call fails with `Closed`.
    /// Idempotent.
    pub fn close_store(&self) {
        self.sync.cancel_all();
        if let Ok(mut slot) = self.device.write() {
            *slot = None;
        }
    }

    /// `false` once `close_store()` was called.
    pub fn is_open(&self) -> bool {
        self.device.read().map(|d| d.is_some()).unwrap_or(false)
    }

    /// How this device is enrolled with the registry; `None` until `enrol` succeeds.
    pub fn enrolment(&self) -> Result<Option<t::DeviceEnrolment>, FollowupError> {
        self.with(|d| Ok(d.enrolment().map(Into::into)))
    }

    // -----------------------------------------------------------------------------------------
    // Patients and procedures

    /// Enrols a patient at this device's clinic (clinic devices only). Returns the patient's id.
    pub fn enrol_patient(&self, patient: t::NewPatient) -> Result<String, FollowupError> {
        self.with(|d| Ok(d.enrol_patient(&patient.into())?.to_hex()))
    }

    /// The patients this device holds, by study code.
    pub fn list_patients(&self) -> Result<Vec<t::PatientSummary>, FollowupError> {
        self.with(|d| Ok(d.list_patients()?.into_iter().map(Into::into).collect()))
    }

    /// Records a procedure performed on a patient (clinic devices only). Returns its id; its
    /// follow-up visits are scheduled from its date.
    pub fn record_procedure(
        &self,
        patient_id: String,
        procedure: t::Procedure,
    ) -> Result<String, FollowupError> {
        self.with(|d| {
            let patient = record_id(&patient_id, "patient id")?;
            Ok(d.record_procedure(patient, &procedure.into())?.to_hex())
        })
    }

    /// A procedure as recorded (merged with other devices' edits).
    pub fn get_procedure(&self, procedure_id: String) -> Result<t::Procedure, FollowupError> {
        self.with(|d| {
            let id = record_id(&procedure_id, "procedure id")?;
            Self::require_kind(d, id, RecordKind::Procedure, "a procedure")?;
            Ok(d.get::<m::Procedure>(id)?.into())
        })
    }

    // -----------------------------------------------------------------------------------------
    // Schedule

    /// Every visit of one patient's schedules (all procedures), classified as of `as_of`
    /// (`YYYY-MM-DD`), most urgent first.
    pub fn patient_visits(
        &self,
        patient_id: String,
        as_of: String,
    ) -> Result<Vec<t::Visit>, FollowupError> {
        self.with(|d| {
            let patient = record_id(&patient_id, "patient id")?;
            let as_of = t::date(&as_of, "as_of")?;
            Ok(d.patient_visits(patient, as_of)?
                .into_iter()
                .map(Into::into)
                .collect())
        })
    }

    /// The clinic's work list as of `as_of`: visits in `states` (every state when empty), most
    /// urgent first (overdue, then due by the end of their window, then the rest).
    pub fn clinic_visits(
        &self,
        as_of: String,
        states: Vec<t::VisitState>,
    ) -> Result<Vec<t::Visit>, FollowupError> {
        self.with(|d| {
            let as_of = t::date(&as_of, "as_of")?;
            let states: Vec<_> = states.into_iter().map(Into::into).collect();
            let filter = (!states.is_empty()).then_some(states.as_slice());
            Ok(d.clinic_visits(as_of, filter)?
                .into_iter()
                .map(Into::into)
                .collect())
        })
    }

    // -----------------------------------------------------------------------------------------
    // Questionnaires and responses

    /// A questionnaire to render: its items with types, bounds, choices, and whether each is
    /// shown before anything is answered. Ids: `clinician-followup`, `patient-outcome-survey`,
    /// `adverse-event-report`, `baseline-procedure`.
    pub fn questionnaire(
        &self,
        questionnaire_id: String,
    ) -> Result<t::Questionnaire, FollowupError> {
        let locale = self.current_locale();
        self.with(|d| {
            let q = d.questionnaire(&questionnaire_id)?.localized(&locale);
            Ok(t::Questionnaire::from_core(&q, &Default::default()))
        })
    }

    /// The ids of the items shown for these answers (enable-when conditions), in display order.
    /// Call it as answers change to show and hide conditional items.
    pub fn enabled_items(
        &self,
        questionnaire_id: String,
        answers: HashMap<String, t::AnswerValue>,
    ) -> Result<Vec<String>, FollowupError> {
        self.with(|d| {
            let q = d.questionnaire(&questionnaire_id)?;
            let answers = t::answers_in(answers);
            Ok(q.enabled_items(&answers)
                .into_iter()
                .map(|i| i.id.clone())
                .collect())
        })
    }

    /// Validates answers as the user types: every problem except a missing required answer
    /// (that is only a problem at submission). Empty when all is well.
    pub fn check_answers(
        &self,
        questionnaire_id: String,
        answers: HashMap<String, t::AnswerValue>,
    ) -> Result<Vec<ItemProblem>, FollowupError> {
        let locale = self.current_locale();
        self.with(|d| {
            Ok(t::problems(d.check_answers_in(
                &questionnaire_id,
                &t::answers_in(answers),
                &locale,
            )?))
        })
    }

    /// Starts a draft response to a questionnaire for a patient, optionally answering visit
    /// `visit_id` (e.g. `d7`) of a procedure's schedule. Returns the response id.
    pub fn start_response(
        &self,
        patient_id: String,
        questionnaire_id: String,
        procedure_id: Option<String>,
        visit_id: Option<String>,
    ) -> Result<String, FollowupError> {
        self.with(|d| {
            let patient = record_id(&patient_id, "patient id")?;
            let procedure = t::opt_record_id(procedure_id.as_deref(), "procedure id")?;
            Ok(
                d.start_response(patient, &questionnaire_id, procedure, visit_id.as_deref())?
                    .to_hex(),
            )
        })
    }

    /// Saves answers into a draft, merged with those already there (a new value replaces the
    /// old; answers not mentioned are kept). Returns the problems so far; the draft is saved
    /// whatever they are.
    pub fn save_answers(
        &self,
        response_id: String,
        answers: HashMap<String, t::AnswerValue>,
    ) -> Result<Vec<ItemProblem>, FollowupError> {
        let locale = self.current_locale();
        self.with(|d| {
            let id = record_id(&response_id, "response id")?;
            Self::require_kind(d, id, RecordKind::Response, "a response")?;
            Ok(t::problems(d.save_answers_in(
                id,
                &t::answers_in(answers),
                &locale,
            )?))
        })
    }

    /// Removes one answer from a draft.
    pub fn clear_answer(&self, response_id: String, item_id: String) -> Result<(), FollowupError> {
        self.with(|d| {
            let id = record_id(&response_id, "response id")?;
            Self::require_kind(d, id, RecordKind::Response, "a response")?;
            Ok(d.clear_answer(id, &item_id)?)
        })
    }

    /// Submits a response. Fails with `ValidationFailed`, listing every item's problem, unless
    /// the answers satisfy the questionnaire; the draft is kept either way.
    pub fn submit_response(&self, response_id: String) -> Result<(), FollowupError> {
        let locale = self.current_locale();
        self.with(|d| {
            let id = record_id(&response_id, "response id")?;
            Self::require_kind(d, id, RecordKind::Response, "a response")?;
            Ok(d.submit_response_in(id, &locale)?)
        })
    }

    /// A response with its answers (merged with other devices' edits).
    pub fn get_response(&self, response_id: String) -> Result<t::Response, FollowupError> {
        self.with(|d| {
            let id = record_id(&response_id, "response id")?;
            let h = d.header(id)?;
            Self::require_kind(d, id, RecordKind::Response, "a response")?;
            Ok(t::Response::from_core(id, h.patient, d.get(id)?))
        })
    }

    // -----------------------------------------------------------------------------------------
    // Adverse events and adjudication

    /// Reports an adverse event for a patient. Returns its id. On a patient's phone the reporter
    /// is always the patient.
    pub fn report_adverse_event(
        &self,
        patient_id: String,
        event: t::AdverseEvent,
    ) -> Result<String, FollowupError> {
        self.with(|d| {
            let patient = record_id(&patient_id, "patient id")?;
            Ok(d.report_adverse_event(patient, &event.into_core()?)?
                .to_hex())
        })
    }

    /// Records (or updates) the treating clinic's decision on an adverse event (clinic devices
    /// only). Returns the adjudication's id; the same record is updated by later decisions.
    pub fn adjudicate(
        &self,
        adverse_event_id: String,
        decision: t::AdjudicationDecision,
    ) -> Result<String, FollowupError> {
        self.with(|d| {
            let id = record_id(&adverse_event_id, "adverse event id")?;
            Ok(d.adjudicate(id, |a| decision.apply(a))?.to_hex())
        })
    }

    /// Adverse events the clinic has not resolved, oldest deadline first; `overdue` as of
    /// `as_of` (`YYYY-MM-DD`).
    pub fn adjudication_queue(
        &self,
        as_of: String,
    ) -> Result<Vec<t::AdjudicationItem>, FollowupError> {
        self.with(|d| {
            let as_of = t::date(&as_of, "as_of")?;
            Ok(d.adjudication_queue(as_of)?
                .into_iter()
                .map(Into::into)
                .collect())
        })
    }

    /// Adverse events (of one patient, or all this device holds) with the registry's case
    /// (deadline, state, escalations), the clinic's adjudication (relatedness, action, remedy,
    /// status) and the patient's replies; oldest onset first.
    pub fn adverse_events(
        &self,
        patient_id: Option<String>,
    ) -> Result<Vec<t::AdverseEventView>, FollowupError> {
        self.with(|d| {
            let patient = t::opt_record_id(patient_id.as_deref(), "patient id")?;
            Ok(d.adverse_events(patient)?
                .into_iter()
                .map(Into::into)
                .collect())
        })
    }

    /// One adverse event with its case, adjudication and replies.
    pub fn adverse_event(
        &self,
        adverse_event_id: String,
    ) -> Result<t::AdverseEventView, FollowupError> {
        self.with(|d| {
            let id = record_id(&adverse_event_id, "adverse event id")?;
            Ok(d.adverse_event(id)?.into())
        })
    }

    /// The patient accepts or disputes the clinic's adjudication of one of their adverse
    /// events (patient's phone only). A dispute needs a comment; it reopens the case for the
    /// registry. Returns the reply's id.
    pub fn reply_to_adjudication(
        &self,
        adverse_event_id: String,
        verdict: t::Verdict,
        comment: String,
    ) -> Result<String, FollowupError> {
        self.with(|d| {
            let id = record_id(&adverse_event_id, "adverse event id")?;
            Ok(d.reply_to_adjudication(id, verdict.into(), &comment)?
                .to_hex())
        })
    }

    /// Amends a submitted response: sets these answers and records the amendment with its
    /// reason; the previous values stay in the record's history.
    pub fn amend_response(
        &self,
        response_id: String,
        answers: HashMap<String, t::AnswerValue>,
        reason: String,
    ) -> Result<(), FollowupError> {
        self.with(|d| {
            let id = record_id(&response_id, "response id")?;
            Ok(d.amend_response(id, &t::answers_in(answers), &reason)?)
        })
    }

    /// Study codes enrolled more than once at the clinic (offline on two tablets): conflicts
    /// for the clinic to resolve.
    pub fn duplicate_study_codes(&self) -> Result<Vec<t::DuplicateStudyCode>, FollowupError> {
        self.with(|d| {
            Ok(d.duplicate_study_codes()?
                .into_iter()
                .map(Into::into)
                .collect())
        })
    }

    // -----------------------------------------------------------------------------------------
    // Conflicts

    /// Every field of a record that devices set concurrently to different values, with each
    /// value, who wrote it and which one the record shows. Empty when there is no conflict.
    pub fn conflicts(&self, record_id: String) -> Result<Vec<t::Conflict>, FollowupError> {
        self.with(|d| {
            let id = crate::types::record_id(&record_id, "record id")?;
            Ok(d.conflicts(id)?.into_iter().map(Into::into).collect())
        })
    }

    /// Resolves a conflicted answer of a response by choosing its value (one of the conflicting
    /// values, even the one shown, or a new one). The choice syncs like any edit; the conflict
    /// is gone once the other devices have it.
    pub fn resolve_answer(
        &self,
        response_id: String,
        item_id: String,
        value: t::AnswerValue,
    ) -> Result<(), FollowupError> {
        self.with(|d| {
            let id = record_id(&response_id, "response id")?;
            Ok(d.resolve_answer(id, &item_id, &value.into())?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use followup_device::device::Enrolled;
    use followup_device::DeviceId;
    use followup_domain::protocol::DeviceRole;

    struct Xor(u8);
    impl KeyProvider for Xor {
        fn wrap(&self, k: Vec<u8>) -> Result<Vec<u8>, FollowupError> {
            Ok(k.iter().map(|b| b ^ self.0).collect())
        }
        fn unwrap(&self, w: Vec<u8>) -> Result<Vec<u8>, FollowupError> {
            Ok(w.iter().map(|b| b ^ self.0).collect())
        }
        fn key_id(&self) -> String {
            format!("xor-{}", self.0)
        }
    }

    fn patient() -> t::NewPatient {
        t::NewPatient {
            study_code: "P-1".into(),
            consent: t::Consent {
                form_version: "2.1".into(),
                date: "2026-01-05".into(),
                scope: vec!["registry".into()],
            },
            birth_year: 1970,
            sex: t::Sex::Male,
            enrolled_on: "2026-01-05".into(),
        }
    }

    async fn enrolled_store(dir: &tempfile::TempDir) -> Arc<FollowupStore> {
        let path = dir.path().join("s.db").to_string_lossy().into_owned();
        let store = FollowupStore::create_with_key_provider(path, Arc::new(Xor(0x33)))
            .await
            .unwrap();
        store
            .device()
            .unwrap()
            .set_enrolment(Enrolled {
                device_id: DeviceId::random(),
                role: DeviceRole::ClinicDevice,
                clinic: RecordId::random(),
                patient: None,
                server_url: "http://127.0.0.1:1".into(),
            })
            .unwrap();
        // The forms the registry sends at the first sync (the same record bytes).
        store
            .device()
            .unwrap()
            .provision_definitions(followup_domain::definitions::builtin_definitions())
            .unwrap();
        store
    }

    #[tokio::test]
    async fn capture_round_trips_through_the_ffi_types() {
        let dir = tempfile::tempdir().unwrap();
        let store = enrolled_store(&dir).await;
        let p = store.enrol_patient(patient()).unwrap();
        let r = store
            .start_response(p.clone(), "patient-outcome-survey".into(), None, None)
            .unwrap();
        let answers = HashMap::from([
            (
                "symptom_pain".to_string(),
                t::AnswerValue::Int { value: 11 },
            ),
            (
                "new_problem_types".to_string(),
                t::AnswerValue::Choices {
                    value: vec!["lump".into()],
                },
            ),
        ]);
        let problems = store.save_answers(r.clone(), answers).unwrap();
        let codes: Vec<_> = problems.iter().map(|p| p.code.as_str()).collect();
        assert!(codes.contains(&"above_max"), "{problems:?}");
        match store.submit_response(r.clone()) {
            Err(FollowupError::ValidationFailed { problems, reason }) => {
                assert!(problems.iter().any(|p| p.code == "required"));
                assert!(reason.contains("need"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let resp = store.get_response(r).unwrap();
        assert_eq!(resp.patient_id, p);
        assert_eq!(
            resp.answers["symptom_pain"],
            t::AnswerValue::Int { value: 11 }
        );
        // A patient id is not a response.
        assert!(matches!(
            store.get_response(p),
            Err(FollowupError::InvalidInput { .. })
        ));
    }

    #[tokio::test]
    async fn closed_store_and_bad_arguments_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = enrolled_store(&dir).await;
        assert!(matches!(
            store.patient_visits("zz".into(), "2026-01-01".into()),
            Err(FollowupError::InvalidInput { .. })
        ));
        assert!(matches!(
            store.clinic_visits("01/01/2026".into(), vec![]),
            Err(FollowupError::InvalidInput { .. })
        ));
        store.close_store();
        assert!(!store.is_open());
        assert!(matches!(
            store.list_patients(),
            Err(FollowupError::Closed { .. })
        ));
        assert!(matches!(
            store.sync(None, None).await,
            Err(FollowupError::Closed { .. })
        ));
    }

    #[tokio::test]
    async fn wrong_key_and_not_enrolled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db").to_string_lossy().into_owned();
        let s = FollowupStore::create_with_key_provider(path.clone(), Arc::new(Xor(1)))
            .await
            .unwrap();
        assert!(matches!(
            s.enrol_patient(patient()),
            Err(FollowupError::NotEnrolled { .. })
        ));
        s.close_store();
        match FollowupStore::open_with_key_provider(path, Arc::new(Xor(2))).await {
            Err(FollowupError::WrongKey { reason }) => {
                assert!(reason.starts_with("Wrong passphrase"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
}
