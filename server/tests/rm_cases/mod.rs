//! Read-model scenarios run on every storage backend (`readmodel.rs` on SQLite, `postgres.rs` on
//! a throwaway PostgreSQL cluster): records pushed through the real sync handler
//! (`followup_server::sync::run`, authorization included) by in-process tablets holding typed
//! Automerge records.
#![allow(dead_code, clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use automerge::{Automerge, ChangeHash};
use chrono::NaiveDate;
use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::model::{
    self, Adjudication, AdjudicationStatus, AdverseEvent, AeOutcome, Author, CellType, Clinic,
    CompletedBy, Consent, DocHeader, Enrolment, FollowupResponse, Manipulation, Origin,
    Participation, Procedure, RecordBody, RecordKind, RegulatoryStatus, Reporter, ResponseStatus,
    Route, Sex, SourceTissue,
};
use followup_domain::protocol::DeviceRole;
use followup_domain::questionnaire::{AnswerValue, Answers};
use followup_server::audit;
use followup_server::authz::Principal;
use followup_server::readmodel::query::{self, AeFilter, CaseStatus, VisitFilter, VisitState};
use followup_server::readmodel::{self, Val};
use followup_server::storage::{ClinicRow, DocWrite, EnrolmentCode, NewDevice, Storage};

/// 2026-01-01 00:00 UTC.
pub const T0_MS: i64 = 1_767_225_600_000;
pub const DAY_MS: i64 = 86_400_000;

pub fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// A small deterministic random source (SplitMix64).
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        if v.is_empty() {
            None
        } else {
            v.get(self.below(v.len()))
        }
    }
}

/// A device holding records, pushing them through the sync handler.
pub struct Tablet {
    pub p: Principal,
    pub docs: BTreeMap<RecordId, (Automerge, Vec<ChangeHash>)>,
    pub clock_s: i64,
}

impl Tablet {
    fn author(&mut self) -> Author {
        self.clock_s += 60;
        Author {
            device: Some(self.p.device),
            time: self.clock_s,
            user: None,
        }
    }

    pub fn create<T: RecordBody>(&mut self, patient: Option<RecordId>, body: &T) -> RecordId {
        let id = if T::KIND == RecordKind::Enrolment {
            patient.unwrap_or_else(RecordId::random)
        } else {
            RecordId::random()
        };
        let patient = if T::KIND == RecordKind::Enrolment {
            Some(id)
        } else {
            patient
        };
        let a = self.author();
        let doc = model::new_record(a, id, self.p.clinic, patient, body).unwrap();
        self.docs.insert(id, (doc, Vec::new()));
        id
    }

    pub fn edit<T: RecordBody>(&mut self, id: RecordId, f: impl FnOnce(&mut T)) {
        let a = self.author();
        let Some((doc, _)) = self.docs.get_mut(&id) else {
            return;
        };
        model::update_body::<T, followup_domain::Error>(doc, a, |b| {
            f(b);
            Ok(())
        })
        .unwrap();
    }

    pub fn body<T: RecordBody>(&self, id: RecordId) -> Option<T> {
        self.docs
            .get(&id)
            .and_then(|(d, _)| model::read_body(d).ok())
    }

    /// Push every record with changes the server lacks; returns how many were accepted.
    ///
    /// The histories here are random and need not be clinically valid, so the records are
    /// merged and written the way the sync handler writes an accepted push (`commit_writes`,
    /// which projects the read model in the write's transaction) without the handler's
    /// authorization and clinical rules (`server/tests/*` and `tests/` cover those). What is
    /// tested is the projection: incremental rows equal rebuilt ones.
    pub fn push(&mut self, s: &dyn Storage, now_ms: i64) -> usize {
        let mut accepted = 0;
        let ids: Vec<RecordId> = self.docs.keys().copied().collect();
        for id in ids {
            let Some((doc, synced)) = self.docs.get_mut(&id) else {
                continue;
            };
            let changes: Vec<automerge::Change> = doc.get_changes(synced);
            if changes.is_empty() {
                continue;
            }
            loop {
                let stored = s.load_doc(id).unwrap();
                let mut work = match &stored {
                    Some(st) => Automerge::load(&st.bytes).unwrap(),
                    None => Automerge::new(),
                };
                let before = work.get_heads();
                work.apply_changes(changes.iter().cloned()).unwrap();
                let new_changes: Vec<ChangeHash> =
                    work.get_changes(&before).iter().map(|c| c.hash()).collect();
                if new_changes.is_empty() {
                    break;
                }
                let write = DocWrite {
                    header: model::read_header(&work).unwrap(),
                    bytes: work.save(),
                    heads: work.get_heads(),
                    expected_version: stored.as_ref().map(|st| st.version),
                    device: Some(self.p.device),
                    new_changes,
                    event: audit::event::ACCEPTED,
                    users: Vec::new(),
                    projection: None,
                };
                match s.commit_writes(&[write], now_ms).unwrap()[0] {
                    followup_server::storage::WriteOutcome::Committed { .. } => break,
                    followup_server::storage::WriteOutcome::Conflict => continue,
                }
            }
            *synced = doc.get_heads();
            accepted += 1;
        }
        accepted
    }

    /// Take in everything the server holds for this tablet's clinic (a pull).
    pub fn pull(&mut self, s: &dyn Storage) {
        let high = s.max_seq().unwrap();
        for (id, _) in s
            .changed_docs(self.p.read_scope(), 0, high, 1_000_000)
            .unwrap()
        {
            let stored = s.load_doc(id).unwrap().unwrap();
            let mut server = Automerge::load(&stored.bytes).unwrap();
            match self.docs.get_mut(&id) {
                Some((doc, synced)) => {
                    doc.merge(&mut server).unwrap();
                    *synced = stored.heads.clone();
                }
                None => {
                    self.docs.insert(id, (server, stored.heads.clone()));
                }
            }
        }
    }
}

/// A registry: storage, clinics and their tablets.
pub struct Registry {
    pub s: Arc<dyn Storage>,
    pub now_ms: i64,
}

impl Registry {
    pub fn new(s: Arc<dyn Storage>) -> Registry {
        Registry { s, now_ms: T0_MS }
    }

    pub fn clinic(&mut self, name: &str) -> RecordId {
        let id = RecordId::random();
        let body = Clinic {
            name: name.into(),
            country: "PT".into(),
            accreditations: vec![],
            participation: Participation::Invited,
        };
        let doc = model::new_record(
            Author {
                device: None,
                time: self.now_ms / 1000,
                user: None,
            },
            id,
            id,
            None,
            &body,
        )
        .unwrap();
        let w = DocWrite {
            header: DocHeader {
                id,
                kind: RecordKind::Clinic,
                clinic: id,
                patient: None,
                created_by: None,
            },
            bytes: doc.save(),
            heads: doc.get_heads(),
            expected_version: None,
            device: None,
            new_changes: doc.get_heads(),
            event: audit::event::CLINIC_CREATED,
            users: Vec::new(),
            // Projected by the backend from the bytes (the administrative path).
            projection: None,
        };
        let row = ClinicRow {
            id,
            name: name.into(),
            country: "PT".into(),
        };
        self.s.create_clinic(&row, &w, self.now_ms).unwrap();
        id
    }

    pub fn device(
        &mut self,
        clinic: RecordId,
        role: DeviceRole,
        patient: Option<RecordId>,
    ) -> Tablet {
        let code = EnrolmentCode {
            code_hash: *RecordId::random()
                .as_bytes()
                .repeat(2)
                .first_chunk()
                .unwrap(),
            role,
            clinic,
            patient,
            expires_at_ms: self.now_ms + DAY_MS,
        };
        self.s.insert_enrolment_code(&code, self.now_ms).unwrap();
        let dev = NewDevice {
            id: DeviceId::random(),
            public_key: [9; 32],
            label: Some("tablet".into()),
        };
        let rec = self
            .s
            .redeem_enrolment_code(&code.code_hash, &dev, self.now_ms)
            .unwrap()
            .unwrap();
        Tablet {
            p: Principal::from(&rec),
            docs: BTreeMap::new(),
            clock_s: self.now_ms / 1000,
        }
    }

    pub fn tablet(&mut self, clinic: RecordId) -> Tablet {
        self.device(clinic, DeviceRole::ClinicDevice, None)
    }

    pub fn tick(&mut self, days: i64) {
        self.now_ms += days * DAY_MS + 1234;
    }
}

pub fn enrolment(code: &str) -> Enrolment {
    Enrolment {
        study_code: code.into(),
        consent: Consent {
            form_version: "1".into(),
            date: "2026-01-02".into(),
            scope: vec!["registry".into()],
        },
        birth_year: 1961,
        sex: Sex::Female,
        enrolled_on: "2026-01-02".into(),
    }
}

pub fn procedure(date: &str) -> Procedure {
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
        promised_benefits: vec![],
        cost: None,
    }
}

pub fn response(procedure: RecordId, visit: &str, submitted: bool) -> FollowupResponse {
    let questionnaire = if visit.ends_with("-survey") {
        "patient-outcome-survey"
    } else {
        "clinician-followup"
    };
    let mut answers = Answers::new();
    answers.insert("q01".into(), AnswerValue::Int(4));
    answers.insert("q02".into(), AnswerValue::Bool(true));
    answers.insert("q03".into(), AnswerValue::Text("mild".into()));
    answers.insert("q04".into(), AnswerValue::Decimal(37.5));
    answers.insert(
        "q05".into(),
        AnswerValue::Choices(vec!["pain".into(), "swelling".into()]),
    );
    FollowupResponse {
        questionnaire: questionnaire.into(),
        questionnaire_version: "1.0.0".into(),
        procedure: Some(procedure.to_hex()),
        visit: Some(visit.into()),
        answers,
        completed_by: CompletedBy::Nurse,
        status: if submitted {
            ResponseStatus::Submitted
        } else {
            ResponseStatus::Draft
        },
        submitted_at: submitted.then(|| "2026-01-09T10:00:00Z".into()),
        amendments: Vec::new(),
    }
}

pub fn adverse_event(severity: i64, serious: bool, procedure: Option<RecordId>) -> AdverseEvent {
    AdverseEvent {
        reporter: Reporter::Clinic,
        category: "infection".into(),
        onset: "2026-01-05".into(),
        severity,
        seriousness: if serious {
            vec!["hospitalisation".into()]
        } else {
            vec![]
        },
        outcome: AeOutcome::Recovering,
        description: "fever after the injection".into(),
        procedure: procedure.map(|p| p.to_hex()),
        answers: Answers::new(),
    }
}

pub fn adjudication(ae: RecordId, status: AdjudicationStatus) -> Adjudication {
    Adjudication {
        adverse_event: ae.to_hex(),
        relatedness: None,
        action: "antibiotics".into(),
        remedy: "treatment at no cost".into(),
        status,
        deadline: "2026-02-01".into(),
        decided_at: None,
    }
}

const VISITS: [&str; 9] = [
    "d7",
    "m1",
    "m3",
    "m6",
    "m12",
    "y2",
    "m1-survey",
    "m3-survey",
    "zz",
];

/// A randomized history of pushes by three tablets of two clinics (two tablets of clinic A
/// editing the same records offline, so that fields conflict), then: the incrementally kept read
/// model must equal the one rebuilt from the stored documents, table by table, row by row.
pub fn rebuild_equals_incremental(s: Arc<dyn Storage>, seed: u64, steps: usize) {
    let mut reg = Registry::new(s.clone());
    let a = reg.clinic("Clinic A");
    let b = reg.clinic("Clinic B");
    let mut tablets = vec![reg.tablet(a), reg.tablet(a), reg.tablet(b)];
    let mut rng = Rng::new(seed);
    for step in 0..steps {
        let t = rng.below(tablets.len());
        let tab = &mut tablets[t];
        let mine = |tab: &Tablet, kind: RecordKind| -> Vec<RecordId> {
            tab.docs
                .iter()
                .filter(|(_, (d, _))| model::read_header(d).map(|h| h.kind).ok() == Some(kind))
                .map(|(id, _)| *id)
                .collect()
        };
        let patients = mine(tab, RecordKind::Enrolment);
        let procedures = mine(tab, RecordKind::Procedure);
        let responses = mine(tab, RecordKind::Response);
        let events = mine(tab, RecordKind::AdverseEvent);
        let adjs = mine(tab, RecordKind::Adjudication);
        let patient_of = |tab: &Tablet, id: RecordId| {
            tab.docs
                .get(&id)
                .and_then(|(d, _)| model::read_header(d).ok())
                .and_then(|h| h.patient)
        };
        match rng.below(15) {
            0 | 1 => {
                tab.create(None, &enrolment(&format!("KX-{step}")));
            }
            2 => {
                if let Some(&p) = rng.pick(&patients) {
                    let day = 1 + rng.below(60);
                    let d = date("2025-11-01") + chrono::Days::new(day as u64);
                    tab.create(Some(p), &procedure(&d.format("%Y-%m-%d").to_string()));
                }
            }
            3 | 4 => {
                if let Some(&pr) = rng.pick(&procedures) {
                    let patient = patient_of(tab, pr);
                    let visit = *rng.pick(&VISITS).unwrap();
                    let submitted = rng.chance(75);
                    tab.create(patient, &response(pr, visit, submitted));
                }
            }
            5 | 6 => {
                if let Some(&r) = rng.pick(&responses) {
                    let v = rng.below(5) as i64;
                    let item = format!("q0{}", 1 + rng.below(3));
                    let submit = rng.chance(30);
                    tab.edit::<FollowupResponse>(r, |b| {
                        b.answers.insert(item, AnswerValue::Int(v));
                        if submit {
                            b.status = ResponseStatus::Submitted;
                        }
                    });
                }
            }
            7 => {
                if let Some(&r) = rng.pick(&responses) {
                    let visit = rng.pick(&VISITS).unwrap().to_string();
                    tab.edit::<FollowupResponse>(r, |b| b.visit = Some(visit));
                }
            }
            8 => {
                if let Some(&pr) = rng.pick(&procedures) {
                    let d = format!("2025-12-{:02}", 1 + rng.below(28));
                    tab.edit::<Procedure>(pr, |b| b.date = d);
                }
            }
            9 => {
                if let Some(&p) = rng.pick(&patients) {
                    let sev = 1 + rng.below(5) as i64;
                    let serious = rng.chance(30);
                    tab.create(Some(p), &adverse_event(sev, serious, None));
                }
            }
            10 => {
                if let Some(&ae) = rng.pick(&events) {
                    if rng.chance(50) || adjs.is_empty() {
                        let patient = patient_of(tab, ae);
                        tab.create(patient, &adjudication(ae, AdjudicationStatus::Open));
                    } else if let Some(&j) = rng.pick(&adjs) {
                        let st = *rng.pick(AdjudicationStatus::ALL).unwrap();
                        tab.edit::<Adjudication>(j, |b| b.status = st);
                    }
                }
            }
            13 => {
                if let Some(&ae) = rng.pick(&events) {
                    let sev = 1 + rng.below(5) as i64;
                    tab.edit::<AdverseEvent>(ae, |b| b.severity = sev);
                }
            }
            11 => {
                if let Some(&p) = rng.pick(&patients) {
                    let code = format!("KX-{}", rng.below(5));
                    tab.edit::<Enrolment>(p, |b| b.study_code = code);
                }
            }
            12 => {
                reg.tick(rng.below(3) as i64);
                tab.push(&*s, reg.now_ms);
            }
            _ => {
                tab.push(&*s, reg.now_ms);
                tab.pull(&*s);
            }
        }
    }
    for tab in &mut tablets {
        tab.push(&*s, reg.now_ms);
    }
    let incremental = query::dump(&*s).unwrap();
    let report = s.rebuild_read_model(reg.now_ms).unwrap();
    let rebuilt = query::dump(&*s).unwrap();
    assert!(report.documents > 2, "{report:?}");
    assert_eq!(report.problems, 0, "every record projects");
    for (table, rows) in &incremental {
        assert_eq!(
            rows.len(),
            rebuilt[table].len(),
            "seed {seed}: {table} row count differs after the rebuild"
        );
        for (i, (x, y)) in rows.iter().zip(&rebuilt[table]).enumerate() {
            assert_eq!(
                x, y,
                "seed {seed}: {table} row {i} differs after the rebuild"
            );
        }
    }
    let sizes: Vec<String> = incremental
        .iter()
        .map(|(t, r)| format!("{t} {}", r.len()))
        .collect();
    let done: usize = incremental["rm_visits"]
        .iter()
        .filter(|r| r[11] != Val::Int(0))
        .count();
    eprintln!("seed {seed}: {} ; visits done {done}", sizes.join(", "));
    assert!(done > 0, "seed {seed}: some visits are done");
    // The tables are not trivially empty, and every conflict of every stored document is there.
    let docs = incremental["rm_records"].len();
    assert_eq!(docs as u64, report.documents);
    let conflict_rows = incremental["rm_conflicts"].len();
    let mut expected = 0;
    for row in &incremental["rm_records"] {
        let id = row[0].record_id().unwrap();
        let stored = s.load_doc(id).unwrap().unwrap();
        let doc = Automerge::load(&stored.bytes).unwrap();
        expected += model::conflicts(&doc)
            .unwrap()
            .iter()
            .map(|c| c.values.len())
            .sum::<usize>();
    }
    assert_eq!(
        conflict_rows, expected,
        "seed {seed}: every conflicted value"
    );
}

/// Two tablets answer the same item differently offline: the answer is projected as conflicted,
/// with both values and the device that wrote each, never as one of them.
pub fn conflicts_are_projected_as_conflicts(s: Arc<dyn Storage>) {
    let mut reg = Registry::new(s.clone());
    let a = reg.clinic("Clinic A");
    let mut t1 = reg.tablet(a);
    let mut t2 = reg.tablet(a);
    let p = t1.create(None, &enrolment("KX-1"));
    let pr = t1.create(Some(p), &procedure("2026-01-01"));
    let r = t1.create(Some(p), &response(pr, "d7", true));
    t1.push(&*s, reg.now_ms);
    t2.pull(&*s);
    t1.edit::<FollowupResponse>(r, |b| {
        b.answers
            .insert("q03".into(), AnswerValue::Text("moderate".into()));
    });
    t2.edit::<FollowupResponse>(r, |b| {
        b.answers
            .insert("q03".into(), AnswerValue::Text("severe".into()));
        b.answers.insert("q09".into(), AnswerValue::Int(7));
    });
    t1.edit::<Procedure>(pr, |b| b.date = "2026-01-02".into());
    t2.edit::<Procedure>(pr, |b| b.date = "2026-01-03".into());
    reg.tick(1);
    t1.push(&*s, reg.now_ms);
    t2.push(&*s, reg.now_ms);

    let answers = query::answers(&*s, None, r).unwrap();
    let q03 = answers.iter().find(|x| x.item == "q03").unwrap();
    assert!(q03.conflicted, "{q03:?}");
    assert_eq!(q03.value, None, "a conflicted answer shows no single value");
    assert_eq!(q03.value_type, "conflict");
    let q09 = answers.iter().find(|x| x.item == "q09").unwrap();
    assert_eq!(q09.value, Some(serde_json::json!(7)));
    assert!(!q09.conflicted);
    let q05 = answers.iter().find(|x| x.item == "q05").unwrap();
    assert_eq!(q05.value, Some(serde_json::json!(["pain", "swelling"])));
    let q04 = answers.iter().find(|x| x.item == "q04").unwrap();
    assert_eq!(q04.value, Some(serde_json::json!(37.5)));

    let c = query::conflicts(&*s, None, Some(r), 100).unwrap();
    assert_eq!(c.len(), 2, "{c:?}");
    let by = |d: DeviceId| c.iter().find(|v| v.device == Some(d)).unwrap();
    assert_eq!(by(t1.p.device).value, "\"moderate\"");
    assert_eq!(by(t2.p.device).value, "\"severe\"");
    assert_eq!(c.iter().filter(|v| v.winner).count(), 1);
    assert!(c
        .iter()
        .all(|v| v.path == "answers.q03" && v.time_s.is_some()));

    // A conflicted procedure date: no single date, no schedule, both dates listed.
    let meta = query::record_meta(&*s, None, pr).unwrap().unwrap();
    assert_eq!(meta.conflicts, 1);
    let tl = query::patient_timeline(&*s, None, p, date("2026-01-09"))
        .unwrap()
        .unwrap();
    assert_eq!(tl.procedures[0].date, None);
    assert_eq!(tl.procedures[0].conflicts.as_deref(), Some("date"));
    assert!(tl.visits.is_empty(), "no visits from a conflicted date");
    assert_eq!(tl.conflicts.len(), 4, "{:?}", tl.conflicts);
    assert_eq!(
        query::overview(&*s, None).unwrap().records_with_conflicts,
        2
    );

    // Resolving the answer (writing one value) clears the conflict in the read model.
    t1.pull(&*s);
    t1.edit::<FollowupResponse>(r, |_| {});
    {
        let (doc, _) = t1.docs.get_mut(&r).unwrap();
        model::resolve_answer(
            doc,
            Author {
                device: Some(t1.p.device),
                time: 1,
                user: None,
            },
            "q03",
            &AnswerValue::Text("severe".into()),
        )
        .unwrap();
    }
    t1.push(&*s, reg.now_ms);
    let q03 = query::answers(&*s, None, r)
        .unwrap()
        .into_iter()
        .find(|x| x.item == "q03")
        .unwrap();
    assert_eq!(q03.value, Some(serde_json::json!("severe")));
    assert!(query::conflicts(&*s, None, Some(r), 100)
        .unwrap()
        .is_empty());
}

/// Visits, counts, the follow-up list, the adverse-event queue, the timeline, clinic statistics
/// and paged iteration on a small registry with known answers; clinic B's scope sees none of A.
pub fn queries_answer_what_the_console_asks(s: Arc<dyn Storage>) {
    let mut reg = Registry::new(s.clone());
    let a = reg.clinic("Clinic A");
    let b = reg.clinic("Clinic B");
    let mut ta = reg.tablet(a);
    let mut tb = reg.tablet(b);
    // Clinic A: two patients, procedures on 2026-01-01; patient 1 did d7, patient 2 did nothing.
    let p1 = ta.create(None, &enrolment("A-1"));
    let p2 = ta.create(None, &enrolment("A-2"));
    let pr1 = ta.create(Some(p1), &procedure("2026-01-01"));
    let pr2 = ta.create(Some(p2), &procedure("2026-01-01"));
    let r1 = ta.create(Some(p1), &response(pr1, "d7", true));
    // A draft and a response for the wrong questionnaire do not count.
    ta.create(Some(p2), &response(pr2, "d7", false));
    let mut wrong = response(pr2, "m1-survey", true);
    wrong.questionnaire = "clinician-followup".into();
    ta.create(Some(p2), &wrong);
    // A grade-3 event (7 days) and a grade-1 one (30 days).
    let ae1 = ta.create(Some(p1), &adverse_event(3, false, Some(pr1)));
    let ae2 = ta.create(Some(p2), &adverse_event(1, false, None));
    ta.push(&*s, reg.now_ms);
    // The clinic adjudicates ae2 two days later.
    reg.tick(2);
    let j = ta.create(Some(p2), &adjudication(ae2, AdjudicationStatus::Responded));
    ta.push(&*s, reg.now_ms);
    // Clinic B: one patient, a serious event.
    let pb = tb.create(None, &enrolment("B-1"));
    tb.create(Some(pb), &procedure("2026-01-01"));
    tb.create(Some(pb), &adverse_event(2, true, None));
    tb.push(&*s, reg.now_ms);

    let o = query::overview(&*s, None).unwrap();
    assert_eq!((o.clinics, o.patients, o.procedures), (2, 3, 3));
    assert_eq!((o.responses, o.draft_responses), (2, 1));
    assert_eq!(o.adverse_events, 3);
    assert_eq!(o.adverse_events_by_severity, [1, 1, 1, 0, 0]);
    assert_eq!(o.serious_adverse_events, 1);
    let oa = query::overview(&*s, Some(a)).unwrap();
    assert_eq!((oa.clinics, oa.patients, oa.adverse_events), (1, 2, 2));
    let ob = query::overview(&*s, Some(b)).unwrap();
    assert_eq!((ob.clinics, ob.patients, ob.adverse_events), (1, 1, 1));

    // As of 2026-01-12: d7 (window 01-06..01-10, grace to 01-16) is done for p1, overdue for p2
    // and pb; m1 (window 01-17..02-14) is upcoming.
    let as_of = date("2026-01-12");
    let counts = query::visit_counts(&*s, Some(a), as_of).unwrap();
    let d7a = counts
        .iter()
        .find(|c| c.clinic == Some(a) && c.visit == "d7")
        .unwrap();
    assert_eq!((d7a.done, d7a.overdue, d7a.due, d7a.missed), (1, 1, 0, 0));
    assert_eq!(d7a.completion_rate(), Some(0.5));
    let m1s = counts
        .iter()
        .find(|c| c.clinic == Some(a) && c.visit == "m1-survey")
        .unwrap();
    assert_eq!(m1s.done, 0, "a clinician form does not complete the survey");
    assert!(counts.iter().all(|c| c.clinic != Some(b)));
    let all = query::visit_counts(&*s, None, as_of).unwrap();
    let d7 = all
        .iter()
        .find(|c| c.clinic.is_none() && c.visit == "d7")
        .unwrap();
    assert_eq!((d7.done, d7.overdue), (1, 2));

    let list = query::visit_list(&*s, Some(a), as_of, &VisitFilter::default()).unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].study_code.as_deref(), Some("A-2"));
    assert_eq!(list[0].state, VisitState::Overdue);
    assert_eq!(list[0].days_late, 2);
    let done = query::visit_list(
        &*s,
        None,
        as_of,
        &VisitFilter {
            states: vec![VisitState::Done],
            ..VisitFilter::default()
        },
    )
    .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].done_response, Some(r1));
    // Later, d7 becomes missed.
    let later = query::visit_list(
        &*s,
        Some(b),
        date("2026-01-20"),
        &VisitFilter {
            states: vec![VisitState::Missed],
            visit: Some("d7".into()),
            ..VisitFilter::default()
        },
    )
    .unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].study_code.as_deref(), Some("B-1"));

    // The adverse-event queue, as of the 12th day after the first push: ae1 (grade 3, 7 days)
    // awaits the clinic and is overdue; ae2 was answered.
    let as_of_q = date("2026-01-13");
    let q = query::ae_queue(&*s, Some(a), as_of_q, &AeFilter::default()).unwrap();
    assert_eq!(q.len(), 2);
    assert_eq!(q[0].adverse_event, ae1);
    assert_eq!(q[0].status, CaseStatus::Awaiting);
    assert_eq!(q[0].deadline, Some(date("2026-01-08")));
    assert_eq!(q[0].days_overdue, 5);
    assert_eq!(q[1].adverse_event, ae2);
    assert_eq!(q[1].status, CaseStatus::Responded);
    assert_eq!(q[1].adjudication, Some(j));
    assert_eq!(q[1].days_overdue, 0);
    assert_eq!(q[1].deadline, Some(date("2026-01-31")));
    let overdue = query::ae_queue(
        &*s,
        None,
        as_of_q,
        &AeFilter {
            overdue_only: true,
            ..AeFilter::default()
        },
    )
    .unwrap();
    assert_eq!(overdue.len(), 2, "ae1 and clinic B's serious event");
    let responded = query::ae_queue(
        &*s,
        None,
        as_of_q,
        &AeFilter {
            statuses: vec![CaseStatus::Responded],
            ..AeFilter::default()
        },
    )
    .unwrap();
    assert_eq!(responded.len(), 1);
    assert!(query::ae_queue(&*s, Some(b), as_of_q, &AeFilter::default())
        .unwrap()
        .iter()
        .all(|i| i.clinic == b));

    let detail = query::ae_detail(&*s, None, ae2, as_of_q).unwrap().unwrap();
    assert_eq!(detail.adjudications.len(), 1);
    assert_eq!(detail.adjudications[0].history.len(), 1);
    assert_eq!(detail.adjudications[0].history[0].device, Some(ta.p.device));
    assert_eq!(detail.event.severity, Some(1));
    assert!(query::ae_detail(&*s, Some(b), ae2, as_of_q)
        .unwrap()
        .is_none());

    // The timeline: who recorded each, and when.
    let tl = query::patient_timeline(&*s, Some(a), p1, as_of)
        .unwrap()
        .unwrap();
    assert_eq!(tl.enrolment.study_code.as_deref(), Some("A-1"));
    assert_eq!(tl.enrolment.meta.created_by, Some(ta.p.device));
    assert_eq!(tl.enrolment.meta.first_accepted_ms, T0_MS);
    assert_eq!(tl.procedures.len(), 1);
    assert_eq!(tl.responses.len(), 1);
    assert_eq!(tl.responses[0].answers.len(), 5);
    assert_eq!(tl.adverse_events.len(), 1);
    assert_eq!(tl.visits.len(), readmodel::schedule().visits().len());
    assert!(query::patient_timeline(&*s, Some(b), p1, as_of)
        .unwrap()
        .is_none());
    assert_eq!(
        query::find_patients(&*s, None, "B-1").unwrap(),
        vec![(b, pb)]
    );

    // Clinic statistics.
    let stats = query::clinic_stats(&*s, None, as_of_q).unwrap();
    assert_eq!(stats.len(), 2);
    let sa = stats.iter().find(|c| c.clinic == a).unwrap();
    assert_eq!((sa.patients, sa.procedures, sa.responses), (2, 2, 2));
    assert_eq!((sa.adverse_events, sa.open_adverse_events), (2, 1));
    assert_eq!(sa.overdue_adverse_events, 1);
    assert_eq!(
        sa.median_adjudication_response_ms,
        Some(2 * DAY_MS + 1234),
        "ae2 answered two days after it arrived"
    );
    assert_eq!(sa.devices.len(), 1);
    assert_eq!(sa.devices[0].device, ta.p.device);
    assert!(sa.devices[0].last_write_ms.is_some());
    assert_eq!(sa.name.as_deref(), Some("Clinic A"));
    assert_eq!(sa.participation.as_deref(), Some("invited"));
    let only_b = query::clinic_stats(&*s, Some(b), as_of_q).unwrap();
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0].clinic, b);

    // Paged iteration: every answer row of clinic A, 3 per page, in key order, none of B's.
    let rows: Vec<Vec<Val>> = query::rows(&*s, query::ExportTable::Answers, Some(a), 3)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 15, "three responses of five answers");
    let keys: Vec<(Vec<u8>, String)> = rows
        .iter()
        .map(|r| {
            (
                r[0].blob().unwrap().to_vec(),
                r[1].text().unwrap().to_string(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted, "strictly increasing keys, nothing twice");
    let all_records = query::rows(&*s, query::ExportTable::Records, None, 4).count();
    assert_eq!(
        all_records as u64,
        s.stats().unwrap().documents,
        "one rm_records row per stored document"
    );
}

/// The visit counts of every clinic, as a map, for comparisons.
pub fn counts_map(s: &dyn Storage, as_of: NaiveDate) -> HashMap<(String, String), u64> {
    query::visit_counts(s, None, as_of)
        .unwrap()
        .into_iter()
        .map(|c| {
            (
                (
                    c.clinic.map(|x| x.to_hex()).unwrap_or_default(),
                    c.visit.clone(),
                ),
                c.done,
            )
        })
        .collect()
}

/// The registry's adjudication case of an event and the patient's reply are in the read model:
/// the case's state as the console shows it (an ignored case turns overdue with the clock
/// alone), its server-set deadline, escalations and replies, scoped to the clinic, and equal
/// after a rebuild.
pub fn cases_are_projected(s: Arc<dyn Storage>) {
    use followup_domain::model::{CaseReply, Verdict};
    use followup_domain::policy::{self, AdjudicationPolicy};
    use followup_server::cases;

    let mut reg = Registry::new(s.clone());
    let a = reg.clinic("Clinic A");
    let b = reg.clinic("Clinic B");
    let mut ta = reg.tablet(a);
    let p = ta.create(None, &enrolment("KC-1"));
    // Grade 2, not serious: the default policy gives the clinic 30 days.
    let ae = ta.create(Some(p), &adverse_event(2, false, None));
    ta.push(&*s, reg.now_ms);
    // The server opens the case when it first accepts the event (`sync::run` commits this write
    // with the event; the tablets here write without the handler).
    let header = s.doc_header(ae).unwrap().unwrap();
    let event: AdverseEvent = ta.body(ae).unwrap();
    let policy = AdjudicationPolicy::registry_default();
    let w = cases::opening_write(policy, &header, &event, reg.now_ms).unwrap();
    s.commit_writes(&[w], reg.now_ms).unwrap();

    let queue = |as_of: NaiveDate, states: &[&str]| {
        query::ae_queue(
            &*s,
            None,
            as_of,
            &AeFilter {
                case_states: states.iter().map(|x| x.to_string()).collect(),
                ..AeFilter::default()
            },
        )
        .unwrap()
    };
    let opened = policy::server_date(reg.now_ms);
    let q = queue(opened, &[]);
    assert_eq!(q.len(), 1);
    let c = q[0]
        .case
        .clone()
        .expect("the event's case is in the read model");
    assert_eq!(c.id, cases::case_id(ae));
    assert_eq!(c.state.as_deref(), Some("open"));
    let deadline = opened + chrono::Days::new(30);
    assert_eq!(c.deadline, Some(deadline.to_string()));
    assert_eq!(
        q[0].deadline,
        Some(deadline),
        "the queue shows the case's deadline"
    );
    assert_eq!(q[0].days_overdue, 0);

    // Nobody acted: a day past the deadline it is overdue, though the stored state says open.
    let late = deadline + chrono::Days::new(1);
    let q = queue(late, &[]);
    let c = q[0].case.clone().unwrap();
    assert_eq!(c.state.as_deref(), Some("overdue"));
    assert_eq!(q[0].days_overdue, 1);
    assert_eq!(queue(late, &["overdue"]).len(), 1);
    assert!(queue(late, &["open"]).is_empty());
    assert!(queue(opened, &["overdue"]).is_empty());

    // The registry escalates (as the console, the CLI and the admin API do).
    reg.tick(31);
    cases::escalate(&*s, ae, "Please adjudicate this infection.", reg.now_ms).unwrap();
    let today = policy::server_date(reg.now_ms);
    let d = query::ae_detail(&*s, None, ae, today).unwrap().unwrap();
    let c = d.queue.case.clone().unwrap();
    assert_eq!(c.state.as_deref(), Some("escalated"));
    assert_eq!(c.escalations, 1);
    assert_eq!(d.case_entries.len(), 1);
    assert_eq!(d.case_entries[0].kind, "escalation");
    assert_eq!(
        d.case_entries[0].text.as_deref(),
        Some("Please adjudicate this infection.")
    );
    assert!(d.queue.days_overdue > 0, "an escalated case is still owed");

    // The patient disputes on their phone: the reply record is projected, and once the server
    // records it in the case, the case is disputed.
    let mut phone = reg.device(a, DeviceRole::PatientDevice, Some(p));
    let body = CaseReply {
        adverse_event: ae.to_hex(),
        verdict: Verdict::Disputed,
        comment: "The pain is not gone.".into(),
        replied_at: "2026-02-05T10:00:00Z".into(),
    };
    let reply = phone.create(Some(p), &body);
    phone.push(&*s, reg.now_ms);
    cases::apply(
        &*s,
        policy,
        &[cases::Trigger::Replied {
            adverse_event: ae,
            reply,
            body,
        }],
        reg.now_ms,
    )
    .unwrap();
    let d = query::ae_detail(&*s, None, ae, today).unwrap().unwrap();
    let c = d.queue.case.clone().unwrap();
    assert_eq!(c.state.as_deref(), Some("disputed"));
    assert_eq!(c.last_verdict.as_deref(), Some("disputed"));
    assert_eq!(d.replies.len(), 1);
    assert_eq!(d.replies[0].meta.id, reply);
    assert_eq!(
        d.replies[0].comment.as_deref(),
        Some("The pain is not gone.")
    );
    let kinds: Vec<&str> = d.case_entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["escalation", "reply"]);
    assert_eq!(d.case_entries[1].verdict.as_deref(), Some("disputed"));

    // Another clinic's scope sees none of it.
    assert!(query::ae_queue(&*s, Some(b), today, &AeFilter::default())
        .unwrap()
        .is_empty());
    assert!(query::ae_detail(&*s, Some(b), ae, today).unwrap().is_none());

    // Closed: no longer owed.
    cases::close(&*s, ae, "Remedy agreed by phone.", reg.now_ms).unwrap();
    let q = queue(today, &["closed"]);
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].days_overdue, 0);
    assert_eq!(
        q[0].case.as_ref().unwrap().closed_note.as_deref(),
        Some("Remedy agreed by phone.")
    );

    // Rebuilt from the documents: the same rows.
    let incremental = query::dump(&*s).unwrap();
    assert_eq!(incremental["rm_cases"].len(), 1);
    assert_eq!(incremental["rm_case_entries"].len(), 2);
    assert_eq!(incremental["rm_case_replies"].len(), 1);
    s.rebuild_read_model(reg.now_ms).unwrap();
    assert_eq!(incremental, query::dump(&*s).unwrap());
}

/// Study codes enrolled twice in one clinic (two tablets offline) are listed, compared trimmed
/// and upper-cased; the same code in another clinic is not a duplicate; the scope holds.
pub fn duplicate_study_codes_are_listed(s: Arc<dyn Storage>) {
    let mut reg = Registry::new(s.clone());
    let a = reg.clinic("Clinic A");
    let b = reg.clinic("Clinic B");
    let mut t1 = reg.tablet(a);
    let mut t2 = reg.tablet(a);
    let mut tb = reg.tablet(b);
    let first = t1.create(None, &enrolment("KX-9"));
    t1.create(None, &enrolment("KX-10"));
    let second = t2.create(None, &enrolment(" kx-9 "));
    tb.create(None, &enrolment("KX-9"));
    for t in [&mut t1, &mut t2, &mut tb] {
        t.push(&*s, reg.now_ms);
    }
    let dups = readmodel::duplicates::duplicate_study_codes(&*s, None).unwrap();
    assert_eq!(dups.len(), 1, "{dups:?}");
    assert_eq!((dups[0].clinic, dups[0].study_code.as_str()), (a, "KX-9"));
    let mut got: Vec<RecordId> = dups[0].enrolments.iter().map(|e| e.patient).collect();
    got.sort();
    let mut want = vec![first, second];
    want.sort();
    assert_eq!(got, want);
    assert!(dups[0].enrolments.iter().all(|e| e.device.is_some()));
    assert_eq!(
        readmodel::duplicates::duplicate_study_codes(&*s, Some(a)).unwrap(),
        dups
    );
    assert!(readmodel::duplicates::duplicate_study_codes(&*s, Some(b))
        .unwrap()
        .is_empty());
}
