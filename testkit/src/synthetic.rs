//! A synthetic registry for export tests and the export benchmark: clinics, patients,
//! procedures, clinician follow-up responses on the real `clinician-followup` instrument (every
//! item type, free text included), adverse events and their adjudications, written as accepted
//! documents into a [`Storage`], deterministically from a seed.

use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::model::{
    new_record, Accreditation, Adjudication, AdjudicationStatus, AdverseEvent, AeOutcome, Answers,
    Author, CellType, Clinic, CompletedBy, Consent, Cost, DocHeader, Enrolment, FollowupResponse,
    Manipulation, Origin, Participation, Procedure, PromisedBenefit, RecordBody, RecordKind,
    RegulatoryStatus, Relatedness, Reporter, ResponseStatus, Route, Sex, SourceTissue,
};
use followup_domain::questionnaire::{instrument_ref, AnswerValue, ItemType};

use followup_server::audit::event;
use followup_server::storage::{ClinicRow, DocWrite, Storage, StorageError};

/// The size of a synthetic registry.
#[derive(Debug, Clone)]
pub struct Spec {
    pub clinics: usize,
    pub patients_per_clinic: usize,
    pub responses_per_patient: usize,
    /// Every n-th patient has an adverse event with an adjudication (0: none).
    pub adverse_event_every: usize,
    /// A string put into every free-text field and answer, so tests can look for it.
    pub canary: String,
    pub seed: u64,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            clinics: 2,
            patients_per_clinic: 5,
            responses_per_patient: 3,
            adverse_event_every: 2,
            canary: "CANARY-7f3a".into(),
            seed: 1,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct Written {
    pub clinics: Vec<RecordId>,
    pub patients: u64,
    pub procedures: u64,
    pub responses: u64,
    pub adverse_events: u64,
    pub adjudications: u64,
    /// Exact dates written (procedure dates), for tests that look for them.
    pub procedure_dates: Vec<String>,
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn id(&mut self) -> RecordId {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next().to_le_bytes());
        b[8..].copy_from_slice(&self.next().to_le_bytes());
        RecordId(b)
    }
}

fn doc_write<T: RecordBody>(
    device: Option<DeviceId>,
    id: RecordId,
    clinic: RecordId,
    patient: Option<RecordId>,
    body: &T,
) -> Result<DocWrite, StorageError> {
    let doc = new_record(
        Author {
            device,
            time: 1_750_000_000,
            user: None,
        },
        id,
        clinic,
        patient,
        body,
    )
    .map_err(|e| StorageError::Internal(e.to_string()))?;
    Ok(DocWrite {
        header: DocHeader {
            id,
            kind: T::KIND,
            clinic,
            patient,
            created_by: device,
        },
        bytes: doc.save(),
        heads: doc.get_heads(),
        expected_version: None,
        device,
        new_changes: doc.get_changes(&[]).iter().map(|c| c.hash()).collect(),
        event: if T::KIND == RecordKind::Clinic {
            event::CLINIC_CREATED
        } else {
            event::ACCEPTED
        },
        users: Vec::new(),
        // Projected into the read model from its bytes by the storage.
        projection: None,
    })
}

fn date(days_from_2020: i64) -> String {
    let base = chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap_or_default();
    (base + chrono::Duration::days(days_from_2020))
        .format("%Y-%m-%d")
        .to_string()
}

/// Answers to the clinician follow-up for one visit: every item answered (enable-when aside).
fn answers(rng: &mut Rng, canary: &str, visit_date: &str) -> Answers {
    let mut a = Answers::new();
    let Some(q) = instrument_ref("clinician-followup") else {
        return a;
    };
    for item in q.items() {
        let v = match item.item_type {
            ItemType::Boolean => AnswerValue::Bool(rng.below(2) == 1),
            ItemType::Integer | ItemType::Scale0To10 => {
                let lo = item.effective_min().unwrap_or(0.0) as i64;
                let hi = item.effective_max().unwrap_or(10.0) as i64;
                AnswerValue::Int(lo + rng.below((hi - lo + 1).max(1) as u64) as i64)
            }
            ItemType::Decimal => {
                let lo = item.effective_min().unwrap_or(0.0);
                let hi = item.effective_max().unwrap_or(100.0);
                let x = lo + (rng.below(1000) as f64 / 1000.0) * (hi - lo);
                AnswerValue::Decimal((x * 10.0).round() / 10.0)
            }
            ItemType::SingleChoice => {
                let c = &item.choices[rng.below(item.choices.len() as u64) as usize];
                AnswerValue::Text(c.code.clone())
            }
            ItemType::MultipleChoice => {
                let c = &item.choices[rng.below(item.choices.len() as u64) as usize];
                AnswerValue::Choices(vec![c.code.clone()])
            }
            ItemType::Date => AnswerValue::Text(visit_date.to_string()),
            ItemType::Text => AnswerValue::Text(format!("patient felt tired {canary}")),
        };
        a.insert(item.id.clone(), v);
    }
    q.prune_disabled(&mut a);
    a
}

const VISITS: [(&str, i64); 8] = [
    ("d7", 7),
    ("m1", 30),
    ("m3", 91),
    ("m6", 182),
    ("m12", 365),
    ("y2", 730),
    ("y3", 1095),
    ("y4", 1461),
];

/// Write a synthetic registry; documents are committed in batches of `batch`.
pub fn populate(storage: &dyn Storage, spec: &Spec, batch: usize) -> Result<Written, StorageError> {
    let mut rng = Rng(spec.seed);
    let mut out = Written::default();
    let mut pending: Vec<DocWrite> = Vec::new();
    let flush = |pending: &mut Vec<DocWrite>| -> Result<(), StorageError> {
        if !pending.is_empty() {
            storage.commit_writes(pending, 1_750_000_000_000)?;
            pending.clear();
        }
        Ok(())
    };
    let canary = spec.canary.as_str();
    for c in 0..spec.clinics {
        let clinic = rng.id();
        let body = Clinic {
            name: format!("Clinic {c}"),
            country: "MX".into(),
            accreditations: vec![Accreditation {
                body: "FACT".into(),
                since: "2019-05-01".into(),
                until: None,
            }],
            participation: Participation::Participating,
        };
        storage.create_clinic(
            &ClinicRow {
                id: clinic,
                name: body.name.clone(),
                country: body.country.clone(),
            },
            &doc_write(None, clinic, clinic, None, &body)?,
            1_750_000_000_000,
        )?;
        out.clinics.push(clinic);
        let tablet = Some(DeviceId(rng.id().0));
        for p in 0..spec.patients_per_clinic {
            let patient = rng.id();
            let proc_day = 400 + rng.below(1500) as i64;
            // One patient in 7 is over 90.
            let birth_year = if p % 7 == 3 {
                1930
            } else {
                1950 + rng.below(50) as i64
            };
            pending.push(doc_write(
                tablet,
                patient,
                clinic,
                Some(patient),
                &Enrolment {
                    study_code: format!("KX-{c}-{p} {canary}"),
                    consent: Consent {
                        form_version: "2.1".into(),
                        date: date(proc_day - 10),
                        scope: vec!["registry".into(), "research".into()],
                    },
                    birth_year,
                    sex: [Sex::Female, Sex::Male, Sex::Intersex, Sex::Unknown][p % 4],
                    enrolled_on: date(proc_day - 10),
                },
            )?);
            out.patients += 1;
            let procedure = rng.id();
            let proc_date = date(proc_day);
            out.procedure_dates.push(proc_date.clone());
            pending.push(doc_write(
                tablet,
                procedure,
                clinic,
                Some(patient),
                &Procedure {
                    date: proc_date,
                    condition: format!("knee osteoarthritis {canary}"),
                    procedure_type: "cell injection".into(),
                    route: Route::IntraArticular,
                    cell_type: CellType::Mesenchymal,
                    source_tissue: SourceTissue::Adipose,
                    origin: Origin::Autologous,
                    manipulation: Manipulation::Minimal,
                    regulatory_status: RegulatoryStatus::Unregulated,
                    trial_registration: Some("NCT01234567".into()),
                    promised_benefits: vec![PromisedBenefit {
                        benefit: format!("walk without pain {canary}"),
                        measure: "pain score".into(),
                    }],
                    cost: Some(Cost {
                        amount_minor: 950_000,
                        currency: "USD".into(),
                    }),
                },
            )?);
            out.procedures += 1;
            for r in 0..spec.responses_per_patient {
                let (visit, offset) = VISITS[r % VISITS.len()];
                let visit_date = date(proc_day + offset);
                pending.push(doc_write(
                    tablet,
                    rng.id(),
                    clinic,
                    Some(patient),
                    &FollowupResponse {
                        questionnaire: "clinician-followup".into(),
                        questionnaire_version: "1.0.0".into(),
                        procedure: Some(procedure.to_hex()),
                        visit: Some(visit.into()),
                        answers: answers(&mut rng, canary, &visit_date),
                        completed_by: CompletedBy::Nurse,
                        status: ResponseStatus::Submitted,
                        submitted_at: Some(format!("{visit_date}T10:30:00Z")),
                        amendments: Vec::new(),
                    },
                )?);
                out.responses += 1;
                if pending.len() >= batch {
                    flush(&mut pending)?;
                }
            }
            if spec.adverse_event_every > 0 && p % spec.adverse_event_every == 0 {
                let ae = rng.id();
                pending.push(doc_write(
                    tablet,
                    ae,
                    clinic,
                    Some(patient),
                    &AdverseEvent {
                        reporter: Reporter::Clinic,
                        category: "infection".into(),
                        onset: date(proc_day + 12),
                        severity: 3,
                        seriousness: vec!["hospitalisation".into()],
                        outcome: AeOutcome::Recovering,
                        description: format!("fever and swelling {canary}"),
                        procedure: Some(procedure.to_hex()),
                        answers: Answers::new(),
                    },
                )?);
                pending.push(doc_write(
                    tablet,
                    rng.id(),
                    clinic,
                    Some(patient),
                    &Adjudication {
                        adverse_event: ae.to_hex(),
                        relatedness: Some(Relatedness::Probable),
                        action: format!("antibiotics given {canary}"),
                        remedy: format!("treatment paid by the clinic {canary}"),
                        status: AdjudicationStatus::Responded,
                        deadline: date(proc_day + 42),
                        decided_at: Some(format!("{}T09:00:00Z", date(proc_day + 20))),
                    },
                )?);
                out.adverse_events += 1;
                out.adjudications += 1;
            }
            if pending.len() >= batch {
                flush(&mut pending)?;
            }
        }
    }
    flush(&mut pending)?;
    Ok(out)
}
