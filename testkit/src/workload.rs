//! The benchmark workload of the product brief, deterministic from a seed, so that figures
//! compare across versions and against other systems. Used by the sync figures test, the
//! criterion benches and the CLI's `bench`.
//!
//! * one clinic, [`BENCH_PATIENTS`] enrolled patients (one procedure each), [`BENCH_RESPONSES`]
//!   submitted clinician follow-up responses to the `bench-50` questionnaire, spread over the
//!   patients. Responses that are synced ([`populate_responses`]) answer no scheduled visit: the
//!   registry accepts one response per visit, answered by the form the schedule names, and
//!   `bench-50` is not a form of the schedule. Device-only benchmarks of the work list use
//!   [`populate_scheduled_responses`], spread over the visits [`BENCH_VISITS`];
//! * each response answers `q01`…`q50`; item *n*'s type cycles with *n* mod 5: 0 → integer
//!   0–10, 1 → boolean, 2 → one of none / mild / moderate / severe, 3 → a decimal with one digit
//!   after the point (0.0–100.0), 4 → a sentence of 25–50 characters from [`SENTENCES`];
//! * the "changed" step edits [`BENCH_EDITS`] of the responses, 3 answers each (one integer,
//!   one boolean, one sentence): [`edit_answers`].
//!
//! Every response is created in one Automerge change ([`bench_response`]), as an app saving a
//! completed form does; each extra commit would cost ~40 bytes on the wire.

use chrono::{Days, NaiveDate};

use followup_device::device::Device;
use followup_device::error::{Error, Result};
use followup_domain::ids::RecordId;
use followup_domain::model::{
    self, Author, CellType, CompletedBy, Consent, Enrolment, FollowupResponse, Manipulation,
    Origin, Procedure, RegulatoryStatus, ResponseStatus, Route, Sex, SourceTissue,
};
use followup_domain::questionnaire::{AnswerValue, Answers};

/// Patients in the benchmark clinic.
pub const BENCH_PATIENTS: usize = 300;
/// Submitted responses.
pub const BENCH_RESPONSES: usize = 1000;
/// Responses edited by the "changed" step.
pub const BENCH_EDITS: usize = 10;
/// Items per response.
pub const BENCH_ITEMS: usize = 50;
/// The questionnaire answered.
pub const BENCH_QUESTIONNAIRE: &str = "bench-50";

/// The benchmark instrument's definition file: test and benchmark support only, never built into
/// a registry or an app.
pub const BENCH_50_JSON: &str = include_str!("../instruments/bench-50.json");

/// The benchmark instrument, parsed.
pub fn bench_questionnaire() -> followup_domain::questionnaire::Questionnaire {
    // A constant of this crate, proved valid by a unit test.
    #[allow(clippy::expect_used)]
    followup_domain::questionnaire::Questionnaire::from_json(BENCH_50_JSON)
        .expect("bench-50 is a valid definition")
}

/// Give a device the definitions a registry would send it — the built-in ones and `bench-50` —
/// without a registry (the same record bytes, never pushed). Returns how many were new.
pub fn provision(device: &Device) -> Result<usize> {
    let mut files: Vec<&str> = followup_domain::definitions::builtin_definitions().to_vec();
    files.push(BENCH_50_JSON);
    device.provision_definitions(&files)
}
/// Visits the responses answer: day 7, months 1, 3, 6, 12.
pub const BENCH_VISITS: [&str; 5] = ["d7", "m1", "m3", "m6", "m12"];

/// Free-text answers (25–50 characters each).
pub const SENTENCES: [&str; 8] = [
    "mild headache for two days after the infusion",
    "no change in walking distance this month",
    "slight swelling at the injection site",
    "tired in the evenings, otherwise well",
    "fever of 38.2 for one night, resolved",
    "sleeping better since the last visit",
    "knee pain on stairs, less than before",
    "short of breath when climbing hills",
];

const SEVERITY: [&str; 4] = ["none", "mild", "moderate", "severe"];

/// splitmix64: a tiny, well-mixed deterministic generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Item id of item `n` (1-based): `q01`…
pub fn item_id(n: usize) -> String {
    format!("q{n:02}")
}

/// A value for item `n` of the benchmark questionnaire.
fn value_for(n: usize, rng: &mut Rng) -> AnswerValue {
    match n % 5 {
        0 => AnswerValue::Int(rng.below(11) as i64),
        1 => AnswerValue::Bool(rng.below(2) == 0),
        2 => AnswerValue::Text(SEVERITY[rng.below(4) as usize].into()),
        3 => AnswerValue::Decimal(rng.below(1001) as f64 / 10.0),
        _ => AnswerValue::Text(SENTENCES[rng.below(SENTENCES.len() as u64) as usize].into()),
    }
}

/// Answers to items `q01`…`q{n}` (n ≤ 99), deterministic from `seed`. With `n = 50` they are a
/// complete, valid `bench-50` response.
pub fn bench_answers(seed: u64, n: usize) -> Answers {
    let mut rng = Rng::new(seed);
    (1..=n.min(99))
        .map(|i| (item_id(i), value_for(i, &mut rng)))
        .collect()
}

/// The "changed" step for one response of `n` items: three answers — one integer item, one
/// boolean item and one free-text item, chosen and valued from `seed`.
pub fn edit_answers(seed: u64, n: usize) -> Answers {
    let mut rng = Rng::new(seed ^ 0xED17_ED17_ED17_ED17);
    let n = n.clamp(5, 99);
    // Items of a type: those with i % 5 == r, 1 ≤ i ≤ n.
    let pick = |r: usize, rng: &mut Rng| {
        let items: Vec<usize> = (1..=n).filter(|i| i % 5 == r).collect();
        items[rng.below(items.len() as u64) as usize]
    };
    let int_item = pick(0, &mut rng);
    let bool_item = pick(1, &mut rng);
    let text_item = pick(4, &mut rng);
    let mut a = Answers::new();
    a.insert(item_id(int_item), AnswerValue::Int(rng.below(11) as i64));
    a.insert(item_id(bool_item), AnswerValue::Bool(rng.below(2) == 0));
    a.insert(
        item_id(text_item),
        AnswerValue::Text(SENTENCES[rng.below(SENTENCES.len() as u64) as usize].into()),
    );
    a
}

/// A benchmark patient's enrolment.
pub fn bench_enrolment(i: usize) -> Enrolment {
    Enrolment {
        study_code: format!("B{i:04}"),
        consent: Consent {
            form_version: "1.0".into(),
            date: "2025-01-06".into(),
            scope: vec!["registry".into()],
        },
        birth_year: 1940 + (i % 60) as i64,
        sex: [Sex::Female, Sex::Male][i % 2],
        enrolled_on: "2025-01-06".into(),
    }
}

/// A benchmark patient's procedure.
pub fn bench_procedure(i: usize) -> Procedure {
    let date = NaiveDate::from_ymd_opt(2025, 1, 6)
        .and_then(|d| d.checked_add_days(Days::new((i % 60) as u64)))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "2025-01-06".into());
    Procedure {
        date,
        condition: "knee osteoarthritis".into(),
        procedure_type: "cell injection".into(),
        route: Route::IntraArticular,
        cell_type: CellType::Mesenchymal,
        source_tissue: SourceTissue::Adipose,
        origin: Origin::Autologous,
        manipulation: Manipulation::Minimal,
        regulatory_status: RegulatoryStatus::Unregulated,
        trial_registration: None,
        promised_benefits: Vec::new(),
        cost: None,
    }
}

/// A submitted `bench-50` response body.
pub fn bench_response(
    seed: u64,
    procedure: Option<RecordId>,
    visit: Option<&str>,
) -> FollowupResponse {
    FollowupResponse {
        questionnaire: BENCH_QUESTIONNAIRE.into(),
        questionnaire_version: "1.0.0".into(),
        procedure: procedure.map(|p| p.to_hex()),
        visit: visit.map(str::to_string),
        answers: bench_answers(seed, BENCH_ITEMS),
        completed_by: CompletedBy::Nurse,
        status: ResponseStatus::Submitted,
        submitted_at: Some("2025-06-01T10:00:00Z".into()),
        amendments: Vec::new(),
    }
}

/// What [`populate`] created.
#[derive(Debug, Clone, Default)]
pub struct BenchData {
    /// Enrolment ids.
    pub patients: Vec<RecordId>,
    /// Procedure ids (one per patient, same order).
    pub procedures: Vec<RecordId>,
    /// Response ids.
    pub responses: Vec<RecordId>,
}

/// Enrol `patients` patients with one procedure each on an enrolled clinic device. The records
/// are built and saved directly (the capture checks, such as the study code's uniqueness on the
/// device, are for people typing; the generated codes are unique, and the server checks every
/// record's clinical rules when it is synced).
pub fn populate_patients(device: &Device, patients: usize) -> Result<BenchData> {
    let e = device.enrolment().ok_or(Error::NotEnrolled)?;
    let mut data = BenchData::default();
    for i in 0..patients {
        let p = RecordId::random();
        let doc = model::new_record(
            Author::device_now(e.device_id),
            p,
            e.clinic,
            Some(p),
            &bench_enrolment(i),
        )?;
        device.save(&doc)?;
        data.patients.push(p);
        data.procedures
            .push(device.record_procedure(p, &bench_procedure(i))?);
    }
    Ok(data)
}

/// Add `n` submitted 50-answer responses (no scheduled visit: they can be synced), spread over
/// the patients, each saved in one change. Response `k` of the run gets answers from
/// `seed + k`.
pub fn populate_responses(
    device: &Device,
    data: &mut BenchData,
    seed: u64,
    n: usize,
) -> Result<()> {
    populate_responses_timed(device, data, seed, n, |_| {})
}

/// [`populate_responses`], calling `saved` with the time each response took to build and save
/// (the figure a capture benchmark reports).
pub fn populate_responses_timed(
    device: &Device,
    data: &mut BenchData,
    seed: u64,
    n: usize,
    saved: impl FnMut(std::time::Duration),
) -> Result<()> {
    fill(device, data, seed, n, false, saved)
}

/// Add `n` submitted responses that answer the visits [`BENCH_VISITS`] (several per visit):
/// for device-only benchmarks of the work list. The registry would refuse them (one response
/// per visit, and `bench-50` answers no visit of its schedule).
pub fn populate_scheduled_responses(
    device: &Device,
    data: &mut BenchData,
    seed: u64,
    n: usize,
) -> Result<()> {
    fill(device, data, seed, n, true, |_| {})
}

fn fill(
    device: &Device,
    data: &mut BenchData,
    seed: u64,
    n: usize,
    scheduled: bool,
    mut saved: impl FnMut(std::time::Duration),
) -> Result<()> {
    let e = device.enrolment().ok_or(Error::NotEnrolled)?;
    if data.patients.is_empty() {
        return Err(Error::InvalidInput("no patients to answer for".into()));
    }
    let mut rng = Rng::new(seed);
    for k in 0..n {
        let i = rng.below(data.patients.len() as u64) as usize;
        let visit = BENCH_VISITS[rng.below(BENCH_VISITS.len() as u64) as usize];
        let body = bench_response(
            seed.wrapping_add(k as u64),
            data.procedures.get(i).copied(),
            scheduled.then_some(visit),
        );
        let id = RecordId::random();
        let started = std::time::Instant::now();
        let doc = model::new_record(
            Author::device_now(e.device_id),
            id,
            e.clinic,
            Some(data.patients[i]),
            &body,
        )?;
        device.save(&doc)?;
        saved(started.elapsed());
        data.responses.push(id);
    }
    Ok(())
}

/// The whole benchmark store: [`BENCH_PATIENTS`] patients and [`BENCH_RESPONSES`] responses.
pub fn populate(device: &Device, seed: u64) -> Result<BenchData> {
    let mut data = populate_patients(device, BENCH_PATIENTS)?;
    populate_responses(device, &mut data, seed, BENCH_RESPONSES)?;
    Ok(data)
}

/// The "changed" step: edit [`BENCH_EDITS`] responses (chosen from `seed`), 3 answers each.
/// Returns the edited ids.
pub fn edit_responses(device: &Device, data: &BenchData, seed: u64) -> Result<Vec<RecordId>> {
    let mut rng = Rng::new(seed ^ 0x5EED);
    let mut edited: Vec<RecordId> = Vec::new();
    while edited.len() < BENCH_EDITS.min(data.responses.len()) {
        let r = data.responses[rng.below(data.responses.len() as u64) as usize];
        if edited.contains(&r) {
            continue;
        }
        device.amend_response(
            r,
            &edit_answers(seed.wrapping_add(edited.len() as u64), BENCH_ITEMS),
            "corrected from the paper form",
        )?;
        edited.push(r);
    }
    Ok(edited)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_deterministic_and_valid() {
        assert_eq!(bench_answers(7, 50), bench_answers(7, 50));
        assert_ne!(bench_answers(7, 50), bench_answers(8, 50));
        let q = bench_questionnaire();
        for seed in 0..20 {
            assert!(q.validate(&bench_answers(seed, 50)).is_empty());
            let e = edit_answers(seed, 50);
            assert_eq!(e.len(), 3);
            assert!(q.validate_partial(&e).is_empty());
        }
        for s in SENTENCES {
            assert!((25..=50).contains(&s.len()), "{s}");
        }
    }
}
