//! Property test: random edits on three replicas (two clinic tablets and a patient's phone),
//! a random order of syncs, syncs through a link that drops mid-exchange, and retries. After a
//! final round of syncs, every replica holds identical documents, and no answer is lost: every
//! answer written is present (as the value or as one side of a visible conflict) unless a later
//! write of the same answer was made by a device that had seen it. (Saving one answer never
//! touches the others: a conflict on another answer stays visible; see `model::update_body`.)
//!
//! Bounded: 24 cases, each a few dozen operations on 127.0.0.1, every sync under a timeout.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use followup_device::sync::{SyncClient, SyncOptions};
use followup_device::RecordId;
use followup_domain::model::FollowupResponse;
use followup_domain::questionnaire::AnswerValue;
use followup_e2e::*;
use followup_testkit::workload::{bench_enrolment, bench_procedure};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Device `dev` sets an integer answer.
    Edit { dev: usize, item: usize, value: i64 },
    /// A tablet creates a new response for the patient.
    New { dev: usize, value: i64 },
    /// Device `dev` syncs directly.
    Sync { dev: usize },
    /// Device `dev` syncs through a link that cuts the connection once at a random byte.
    CutSync { dev: usize, seed: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..3usize, 0..=10i64).prop_map(|(dev, item, value)| Op::Edit { dev, item, value }),
        1 => (0..2usize, 0..=10i64).prop_map(|(dev, value)| Op::New { dev, value }),
        2 => (0..3usize).prop_map(|dev| Op::Sync { dev }),
        2 => (0..3usize, any::<u64>()).prop_map(|(dev, seed)| Op::CutSync { dev, seed }),
    ]
}

/// Tablets answer integer items of the bench response; the phone its survey's 0–10 scales.
const TABLET_ITEMS: [&str; 3] = ["q05", "q10", "q15"];
const PHONE_ITEMS: [&str; 3] = ["symptom_primary", "symptom_pain", "symptom_fatigue"];

struct Write {
    doc: RecordId,
    item: String,
    value: i64,
    /// Writes the writing device may have seen (a superset).
    seen: BTreeSet<usize>,
}

/// Values of an answer: the conflict's values if conflicted, else the value shown.
fn values(d: &TestDevice, doc: RecordId, item: &str) -> BTreeSet<i64> {
    let path = format!("answers.{item}");
    if let Some(c) = d
        .conflicts(doc)
        .unwrap()
        .into_iter()
        .find(|c| c.path == path)
    {
        return c.values.iter().filter_map(|v| v.value.as_i64()).collect();
    }
    let r: FollowupResponse = d.get(doc).unwrap();
    match r.answers.get(item) {
        Some(AnswerValue::Int(i)) => BTreeSet::from([*i]),
        _ => BTreeSet::new(),
    }
}

async fn run(ops: Vec<Op>) {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("Prop").await;
    let t1 = reg.clinic_tablet(clinic, "t1").await;
    let t2 = reg.clinic_tablet(clinic, "t2").await;
    let x = t1.enrol_patient(&bench_enrolment(1)).unwrap();
    let procedure = t1.record_procedure(x, &bench_procedure(1)).unwrap();
    let response = t1
        .start_response(x, "bench-50", Some(procedure), None)
        .unwrap();
    t1.sync().await.unwrap();
    let phone = reg.patient_phone(x, "phone").await;
    // The phone answers for a procedure it holds (the capture checks refer to its store).
    phone.sync().await.unwrap();
    let survey = phone
        .start_response(
            x,
            "patient-outcome-survey",
            Some(procedure),
            Some("m1-survey"),
        )
        .unwrap();
    sync_until_quiet(&[&phone, &t2, &t1]).await;
    let devices = [&t1, &t2, &phone];

    let link = LinkSim::start(reg.server.addr, LinkConfig::default())
        .await
        .unwrap();
    let cut_client = SyncClient::new(SyncOptions {
        max_attempts: 1,
        ..test_options()
    })
    .unwrap();

    let mut writes: Vec<Write> = Vec::new();
    let mut seen: [BTreeSet<usize>; 3] = Default::default();
    let mut server_seen: BTreeSet<usize> = BTreeSet::new();
    let mut created: Vec<RecordId> = Vec::new();
    for op in ops {
        match op {
            Op::Edit { dev, item, value } => {
                let (doc, item) = if dev == 2 {
                    (survey, PHONE_ITEMS[item])
                } else {
                    (response, TABLET_ITEMS[item])
                };
                let before = devices[dev].store().saved_heads(&doc).unwrap();
                devices[dev]
                    .save_answers(doc, &answers(&[(item, AnswerValue::Int(value))]))
                    .unwrap();
                // Setting the value already shown changes nothing: it is not a write.
                if devices[dev].store().saved_heads(&doc).unwrap() == before {
                    continue;
                }
                let id = writes.len();
                writes.push(Write {
                    doc,
                    item: item.into(),
                    value,
                    seen: seen[dev].clone(),
                });
                seen[dev].insert(id);
            }
            Op::New { dev, value } => {
                let r = devices[dev]
                    .start_response(x, "bench-50", None, None)
                    .unwrap();
                devices[dev]
                    .save_answers(r, &answers(&[("q20", AnswerValue::Int(value))]))
                    .unwrap();
                let id = writes.len();
                writes.push(Write {
                    doc: r,
                    item: "q20".into(),
                    value,
                    seen: seen[dev].clone(),
                });
                seen[dev].insert(id);
                created.push(r);
            }
            Op::Sync { dev } | Op::CutSync { dev, .. } => {
                let result = if let Op::CutSync { seed, .. } = op {
                    let cuts = link.stats().cuts;
                    link.set_config(LinkConfig {
                        cut: CutPolicy::RandomBytes {
                            seed,
                            max_bytes: 2_500,
                        },
                        max_cuts: Some(cuts + 1),
                        ..LinkConfig::default()
                    });
                    devices[dev].set_server_url(&link.url());
                    let r = devices[dev].sync_with(&cut_client).await;
                    devices[dev].set_server_url(&reg.url());
                    r
                } else {
                    devices[dev].sync().await
                };
                if let Err(e) = &result {
                    assert!(
                        matches!(
                            e,
                            followup_device::Error::Sync(
                                followup_device::sync::SyncError::ServerUnreachable { .. }
                            )
                        ),
                        "{e}"
                    );
                }
                // Whatever happened, the device and the server may now share what either had.
                server_seen.extend(seen[dev].iter().copied());
                seen[dev].extend(server_seen.iter().copied());
            }
        }
    }
    sync_until_quiet(&devices).await;

    // Convergence.
    let s1 = t1.snapshot();
    assert_eq!(s1, t2.snapshot(), "tablets differ");
    let sp = phone.snapshot();
    assert!(!sp.is_empty());
    for (id, v) in &sp {
        assert_eq!(Some(v), s1.get(id), "phone's {id} differs");
    }
    for r in &created {
        assert!(
            sp.contains_key(r) && s1.contains_key(r),
            "created response {r} lost"
        );
    }
    // No loss: a write not superseded by a later write of the same answer that saw it is visible.
    let mut by_key: BTreeMap<(RecordId, String), BTreeSet<i64>> = BTreeMap::new();
    for (i, w) in writes.iter().enumerate() {
        by_key
            .entry((w.doc, w.item.clone()))
            .or_default()
            .insert(w.value);
        let superseded = writes
            .iter()
            .any(|o| o.doc == w.doc && o.item == w.item && o.seen.contains(&i));
        if !superseded {
            for d in devices {
                assert!(
                    values(d, w.doc, &w.item).contains(&w.value),
                    "{}: write {i} ({} = {}) lost on {}",
                    w.doc,
                    w.item,
                    w.value,
                    d.label
                );
            }
        }
    }
    // Nothing invented: every visible value was written by someone.
    for ((doc, item), written) in &by_key {
        assert!(values(&t1, *doc, item).is_subset(written));
    }
    assert!(reg.verify_audit().await.ok);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 20, .. ProptestConfig::default() })]
    #[test]
    fn replicas_converge_and_lose_nothing(ops in prop::collection::vec(op(), 5..30)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(300), run(ops))
                .await
                .expect("case timed out")
        });
    }
}
