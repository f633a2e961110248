//! The registry-scale workload of the console issue: by default 100 clinics, 10,000 patients (one
//! procedure each), 100,000 submitted 50-answer follow-up responses and 2,000 adverse events (half
//! of them adjudicated), deterministic from a seed. It only builds record documents, authored by
//! each clinic's tablet (its device id is the Automerge actor, as the server requires); whoever
//! uses it pushes them (the server's read-model benchmark drives `sync::run` with them).
//!
//! Responses are spread over the clinician series `d7` … `y5` of the registry's default schedule
//! and answer `clinician-followup` (so that they complete visits) completely and validly (17
//! answers: every required item, the vital signs and a note; the registry's clinical rules refuse
//! anything less). A patient's responses beyond the nine visits, and the benchmark's extra
//! responses, are unscheduled follow-ups (no visit), since a visit is answered once. Procedure
//! dates run over two years from 2023-01-02, so that a registry holds visits in every state.

use automerge::Automerge;
use chrono::{Days, NaiveDate};
use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::model::{
    self, AdjudicationStatus, AdverseEvent, AeOutcome, Author, Clinic, CompletedBy,
    FollowupResponse, Participation, RecordBody, Relatedness, Reporter, ResponseStatus,
};
use followup_domain::Result;

use followup_domain::questionnaire::{AnswerValue, Answers};

use crate::workload::{bench_enrolment, bench_procedure, Rng};

/// The clinician visits responses answer, in schedule order.
pub const REGISTRY_VISITS: [&str; 9] = ["d7", "m1", "m3", "m6", "m12", "y2", "y3", "y4", "y5"];

/// Sizes of the registry workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrySizes {
    pub clinics: usize,
    pub patients: usize,
    pub responses: usize,
    pub adverse_events: usize,
}

impl Default for RegistrySizes {
    /// 100 clinics, 10,000 patients, 100,000 responses, 2,000 adverse events.
    fn default() -> Self {
        RegistrySizes {
            clinics: 100,
            patients: 10_000,
            responses: 100_000,
            adverse_events: 2_000,
        }
    }
}

/// One record document to push.
pub struct GeneratedDoc {
    pub id: RecordId,
    pub kind: model::RecordKind,
    pub doc: Automerge,
}

/// A clinic's share of the workload.
pub struct ClinicPlan {
    /// Index `0..clinics`.
    pub index: usize,
    /// Patients `first_patient..first_patient + patients` (global numbering).
    pub first_patient: usize,
    pub patients: usize,
    pub responses: usize,
    pub adverse_events: usize,
}

/// The registry workload.
#[derive(Debug, Clone)]
pub struct RegistryWorkload {
    pub sizes: RegistrySizes,
    pub seed: u64,
}

fn share(total: usize, parts: usize, i: usize) -> usize {
    let parts = parts.max(1);
    total / parts + usize::from(i < total % parts)
}

impl RegistryWorkload {
    pub fn new(sizes: RegistrySizes, seed: u64) -> Self {
        RegistryWorkload { sizes, seed }
    }

    /// How the totals split over the clinics (as evenly as they divide).
    pub fn plans(&self) -> Vec<ClinicPlan> {
        let s = self.sizes;
        let mut first = 0;
        (0..s.clinics)
            .map(|i| {
                let patients = share(s.patients, s.clinics, i);
                let p = ClinicPlan {
                    index: i,
                    first_patient: first,
                    patients,
                    responses: share(s.responses, s.clinics, i),
                    adverse_events: share(s.adverse_events, s.clinics, i),
                };
                first += patients;
                p
            })
            .collect()
    }

    /// A clinic's record body (the registry creates it).
    pub fn clinic_body(&self, index: usize) -> Clinic {
        Clinic {
            name: format!("Clinic {index:03}"),
            country: ["PT", "MX", "TH", "UA", "DE"][index % 5].into(),
            accreditations: Vec::new(),
            participation: if index % 10 == 9 {
                Participation::Invited
            } else {
                Participation::Participating
            },
        }
    }

    /// Every record of one clinic, authored by its tablet `device`, in an order a device could
    /// push them (enrolments and procedures first), starting at unix time `time_s`.
    pub fn clinic_docs(
        &self,
        plan: &ClinicPlan,
        clinic: RecordId,
        device: DeviceId,
        time_s: i64,
    ) -> Result<Vec<GeneratedDoc>> {
        let mut rng = Rng::new(self.seed ^ (plan.index as u64).wrapping_mul(0x9E37_79B9));
        let mut t = time_s;
        let mut author = || {
            t += 1;
            Author {
                device: Some(device),
                time: t,
                user: None,
            }
        };
        let mut out = Vec::new();
        let mut patients = Vec::with_capacity(plan.patients);
        let mut procedures = Vec::with_capacity(plan.patients);
        for k in 0..plan.patients {
            let i = plan.first_patient + k;
            let id = RecordId(id_bytes(self.seed, 1, i));
            let doc = model::new_record(author(), id, clinic, Some(id), &bench_enrolment(i))?;
            out.push(gen(id, doc, &bench_enrolment(i)));
            let pid = RecordId(id_bytes(self.seed, 2, i));
            let body = registry_procedure(i);
            let doc = model::new_record(author(), pid, clinic, Some(id), &body)?;
            out.push(gen(pid, doc, &body));
            patients.push(id);
            procedures.push(pid);
        }
        if patients.is_empty() {
            return Ok(out);
        }
        for r in 0..plan.responses {
            let k = r % patients.len();
            let visit = REGISTRY_VISITS.get(r / patients.len()).copied();
            let id = RecordId(id_bytes(self.seed, 3, plan.index * 1_000_000 + r));
            let body = registry_response(rng.next_u64(), procedures[k], visit);
            let doc = model::new_record(author(), id, clinic, Some(patients[k]), &body)?;
            out.push(gen(id, doc, &body));
        }
        for e in 0..plan.adverse_events {
            let k = rng.below(patients.len() as u64) as usize;
            let id = RecordId(id_bytes(self.seed, 4, plan.index * 1_000_000 + e));
            let body = registry_adverse_event(&mut rng, procedures[k]);
            let doc = model::new_record(author(), id, clinic, Some(patients[k]), &body)?;
            out.push(gen(id, doc, &body));
            if e % 2 == 0 {
                let jid = RecordId(id_bytes(self.seed, 5, plan.index * 1_000_000 + e));
                let body = model::Adjudication {
                    adverse_event: id.to_hex(),
                    relatedness: Some(Relatedness::Possible),
                    action: "treatment given".into(),
                    remedy: "follow-up visit at no cost".into(),
                    status: if e % 4 == 0 {
                        AdjudicationStatus::Responded
                    } else {
                        AdjudicationStatus::Open
                    },
                    deadline: "2025-01-31".into(),
                    decided_at: Some("2025-01-10T09:00:00Z".into()),
                };
                let doc = model::new_record(author(), jid, clinic, Some(patients[k]), &body)?;
                out.push(gen(jid, doc, &body));
            }
        }
        Ok(out)
    }

    /// `n` further responses for a clinic's existing patients (for measuring a push into a
    /// filled registry), distinct for each `round`.
    pub fn extra_responses(
        &self,
        plan: &ClinicPlan,
        clinic: RecordId,
        device: DeviceId,
        round: usize,
        n: usize,
        time_s: i64,
    ) -> Result<Vec<GeneratedDoc>> {
        let mut rng = Rng::new(self.seed ^ 0xE7_0000 ^ round as u64);
        let mut out = Vec::with_capacity(n);
        for r in 0..n {
            let k = r % plan.patients.max(1);
            let i = plan.first_patient + k;
            let patient = RecordId(id_bytes(self.seed, 1, i));
            let procedure = RecordId(id_bytes(self.seed, 2, i));
            let id = RecordId(id_bytes(self.seed, 6, round * 1_000_000 + r));
            let body = registry_response(rng.next_u64(), procedure, None);
            let author = Author {
                device: Some(device),
                time: time_s + r as i64,
                user: None,
            };
            let doc = model::new_record(author, id, clinic, Some(patient), &body)?;
            out.push(gen(id, doc, &body));
        }
        Ok(out)
    }
}

fn gen<T: RecordBody>(id: RecordId, doc: Automerge, _body: &T) -> GeneratedDoc {
    GeneratedDoc {
        id,
        kind: T::KIND,
        doc,
    }
}

/// A deterministic record id: (seed, kind tag, index) mixed.
fn id_bytes(seed: u64, tag: u64, i: usize) -> [u8; 16] {
    let mut a = Rng::new(seed ^ tag.wrapping_mul(0xA24B_AED4_963E_E407) ^ i as u64);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.next_u64().to_le_bytes());
    out[8..].copy_from_slice(&a.next_u64().to_le_bytes());
    out
}

fn registry_procedure(i: usize) -> model::Procedure {
    let mut p = bench_procedure(i);
    p.date = NaiveDate::from_ymd_opt(2023, 1, 2)
        .and_then(|d| d.checked_add_days(Days::new((i * 7 % 730) as u64)))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "2023-01-02".into());
    p
}

/// A complete, valid `clinician-followup` answer set (17 answers), deterministic from `seed`.
pub fn clinician_answers(seed: u64) -> Answers {
    let mut rng = Rng::new(seed);
    let mut a = Answers::new();
    let mut put = |k: &str, v: AnswerValue| {
        a.insert(k.to_string(), v);
    };
    put("visit_date", AnswerValue::Text("2025-06-01".into()));
    let mode = ["in_person", "video", "phone", "records"][rng.below(4) as usize];
    put("visit_mode", AnswerValue::Text(mode.into()));
    let status = ["improved", "stable"][rng.below(2) as usize];
    put("condition_status", AnswerValue::Text(status.into()));
    for item in ["symptom_primary", "symptom_pain", "symptom_fatigue"] {
        put(item, AnswerValue::Int(rng.below(11) as i64));
    }
    put("ecog", AnswerValue::Text(rng.below(3).to_string()));
    put("edss", AnswerValue::Decimal(rng.below(100) as f64 / 10.0));
    put(
        "weight_kg",
        AnswerValue::Decimal(50.0 + rng.below(500) as f64 / 10.0),
    );
    put(
        "temperature_c",
        AnswerValue::Decimal(36.0 + rng.below(20) as f64 / 10.0),
    );
    put("heart_rate", AnswerValue::Int(55 + rng.below(40) as i64));
    put("systolic_bp", AnswerValue::Int(100 + rng.below(50) as i64));
    put("diastolic_bp", AnswerValue::Int(60 + rng.below(30) as i64));
    put("complications_any", AnswerValue::Bool(false));
    put("hospitalised", AnswerValue::Bool(false));
    put("further_cell_therapy", AnswerValue::Bool(false));
    put(
        "notes",
        AnswerValue::Text("seen at the clinic; no new complaints".into()),
    );
    a
}

/// A submitted clinician follow-up of `procedure`, for `visit` (`None`: unscheduled).
pub fn registry_response(seed: u64, procedure: RecordId, visit: Option<&str>) -> FollowupResponse {
    FollowupResponse {
        questionnaire: "clinician-followup".into(),
        questionnaire_version: "1.0.0".into(),
        procedure: Some(procedure.to_hex()),
        visit: visit.map(str::to_string),
        answers: clinician_answers(seed),
        completed_by: CompletedBy::Nurse,
        status: ResponseStatus::Submitted,
        submitted_at: Some("2025-06-01T10:00:00Z".into()),
        amendments: Vec::new(),
    }
}

fn registry_adverse_event(rng: &mut Rng, procedure: RecordId) -> AdverseEvent {
    let severity = 1 + rng.below(5) as i64;
    AdverseEvent {
        // The clinic's tablet reports (an event the patient reports is written on the patient's
        // phone only).
        reporter: Reporter::Clinic,
        category: [
            "infection",
            "immune_reaction",
            "administration",
            "deterioration",
        ][rng.below(4) as usize]
            .into(),
        onset: "2025-05-01".into(),
        severity,
        // The clinical rules: grade 5 if and only if the outcome is fatal.
        seriousness: match severity {
            5 => vec!["death".into()],
            4 => vec!["hospitalisation".into()],
            _ => Vec::new(),
        },
        outcome: if severity == 5 {
            AeOutcome::Fatal
        } else {
            AeOutcome::Recovering
        },
        description: "fever and swelling after the injection".into(),
        procedure: Some(procedure.to_hex()),
        answers: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_add_up_and_docs_are_deterministic() {
        let w = RegistryWorkload::new(
            RegistrySizes {
                clinics: 3,
                patients: 10,
                responses: 31,
                adverse_events: 5,
            },
            7,
        );
        let plans = w.plans();
        assert_eq!(plans.iter().map(|p| p.patients).sum::<usize>(), 10);
        assert_eq!(plans.iter().map(|p| p.responses).sum::<usize>(), 31);
        assert_eq!(plans.iter().map(|p| p.adverse_events).sum::<usize>(), 5);
        let c = RecordId([1; 16]);
        let d = DeviceId([2; 16]);
        let a = w.clinic_docs(&plans[0], c, d, 1).unwrap();
        let b = w.clinic_docs(&plans[0], c, d, 1).unwrap();
        assert_eq!(
            a.iter().map(|g| g.id).collect::<Vec<_>>(),
            b.iter().map(|g| g.id).collect::<Vec<_>>()
        );
        // 4 patients x (enrolment + procedure) + 11 responses + 2 events + 1 adjudication.
        assert_eq!(a.len(), 8 + 11 + 2 + 1);
        let h = model::read_header(&a[0].doc).unwrap();
        assert_eq!(h.created_by, Some(d));
        assert_eq!(h.kind, model::RecordKind::Enrolment);
    }
}
