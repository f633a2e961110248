//! End-to-end: a real registry server on 127.0.0.1, device stores enrolling and syncing over
//! HTTP with the real client. Every network step is bounded by a timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use std::collections::BTreeSet;

use automerge::transaction::Transactable;
use automerge::ReadDoc;
use followup_device::device::{index_meta, Enrolled};
use followup_device::sync::{self, SyncClient, SyncError, SyncOptions};
use followup_device::{Error, RecordId};
use followup_domain::model::{
    self, Adjudication, AdjudicationStatus, Author, FollowupResponse, RecordKind,
};
use followup_domain::protocol::{DeviceRole, ErrorBody, ErrorCode, SYNC_CONTENT_TYPE, SYNC_PATH};
use followup_domain::questionnaire::AnswerValue;
use followup_e2e::*;
use followup_testkit::workload::{bench_answers, bench_enrolment, bench_procedure};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tablets_and_a_phone_converge_with_nothing_lost() {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("Clinica Alfa").await;
    let t1 = reg.clinic_tablet(clinic, "tablet 1").await;
    let t2 = reg.clinic_tablet(clinic, "tablet 2").await;

    let x = t1.enrol_patient(&bench_enrolment(1)).unwrap();
    let procedure = t1.record_procedure(x, &bench_procedure(1)).unwrap();
    let r = t1
        .start_response(x, "bench-50", Some(procedure), None)
        .unwrap();
    t1.save_answers(r, &bench_answers(1, 20)).unwrap();
    let first = t1.sync().await.unwrap();
    assert_eq!(first.pushed, 3);
    assert!(first.round_trips <= 2, "{first:?}");
    let phone = reg.patient_phone(x, "phone").await;
    sync_until_quiet(&[&t2, &phone]).await;
    assert!(t2.ids().contains(&r));
    assert!(phone.ids().contains(&x));

    // Offline: the two tablets edit the same response, one answer concurrently.
    t1.save_answers(
        r,
        &answers(&[
            ("q05", AnswerValue::Int(3)),
            ("q21", AnswerValue::Bool(true)),
        ]),
    )
    .unwrap();
    t2.save_answers(
        r,
        &answers(&[
            ("q05", AnswerValue::Int(8)),
            ("q22", AnswerValue::Text("moderate".into())),
        ]),
    )
    .unwrap();
    let ae_clinic = t1
        .report_adverse_event(x, &adverse_event("fever after the infusion"))
        .unwrap();
    let survey = phone
        .start_response(
            x,
            "patient-outcome-survey",
            Some(procedure),
            Some("m1-survey"),
        )
        .unwrap();
    phone
        .save_answers(survey, &answers(&[("symptom_pain", AnswerValue::Int(4))]))
        .unwrap();
    let ae_phone = phone
        .report_adverse_event(x, &adverse_event("swollen knee"))
        .unwrap();
    let y = t2.enrol_patient(&bench_enrolment(2)).unwrap();

    // Sync in one order, then edit again and sync in another.
    sync_until_quiet(&[&phone, &t2, &t1]).await;
    // The concurrent answer is a visible conflict, the same on every device, with both values
    // and the device that wrote each.
    let conflicts = t1.conflicts(r).unwrap();
    let c = conflicts
        .iter()
        .find(|c| c.path == "answers.q05")
        .expect("the concurrent answer is a conflict");
    let values: BTreeSet<String> = c.values.iter().map(|v| v.value.to_string()).collect();
    assert_eq!(values, BTreeSet::from(["3".to_string(), "8".to_string()]));
    let devices: BTreeSet<_> = c.values.iter().filter_map(|v| v.device).collect();
    assert_eq!(devices, BTreeSet::from([t1.id(), t2.id()]));
    assert_eq!(phone.conflicts(r).unwrap(), conflicts);
    assert_eq!(t2.conflicts(r).unwrap(), conflicts);

    let adj = t2
        .adjudicate(ae_phone, |a| {
            a.relatedness = Some(followup_domain::model::Relatedness::Unlikely);
            a.action = "antibiotics".into();
            a.status = AdjudicationStatus::Responded;
        })
        .unwrap();
    phone
        .save_answers(
            survey,
            &answers(&[("symptom_fatigue", AnswerValue::Int(2))]),
        )
        .unwrap();
    t1.save_answers(r, &answers(&[("q23", AnswerValue::Decimal(12.5))]))
        .unwrap();
    sync_until_quiet(&[&t1, &phone, &t2]).await;

    // Identical documents everywhere they may be.
    let s1 = t1.snapshot();
    let s2 = t2.snapshot();
    assert_eq!(s1, s2, "the two tablets differ");
    let sp = phone.snapshot();
    for (id, v) in &sp {
        assert_eq!(
            Some(v),
            s1.get(id),
            "phone's {id} differs from the tablet's"
        );
    }
    let xs: BTreeSet<RecordId> = t1
        .store()
        .list(&followup_device::store::Query {
            patient: Some(x),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(sp.keys().copied().collect::<BTreeSet<_>>(), xs);
    for id in [r, ae_clinic, survey, ae_phone, adj, procedure, x] {
        assert!(sp.contains_key(&id), "phone lacks {id}");
    }
    assert!(s1.contains_key(&y) && !sp.contains_key(&y));

    // Nothing lost: every answer written is there; the concurrent one is a visible conflict.
    let body: FollowupResponse = t1.get(r).unwrap();
    for q in ["q01", "q20", "q21", "q22", "q23"] {
        assert!(body.answers.contains_key(q), "{q} lost");
    }
    let s: FollowupResponse = t2.get(survey).unwrap();
    assert!(s.answers.contains_key("symptom_pain") && s.answers.contains_key("symptom_fatigue"));

    for d in [&t1, &t2, &phone] {
        assert_eq!(d.dirty(), 0, "{} still has unsynced records", d.label);
    }
    let audit = reg.verify_audit().await;
    assert!(audit.ok, "{audit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_patient_phone_and_other_clinic() {
    let reg = Registry::start().await;
    let clinic_a = reg.create_clinic("A").await;
    let clinic_b = reg.create_clinic("B").await;
    let ta = reg.clinic_tablet(clinic_a, "tablet A").await;
    let tb = reg.clinic_tablet(clinic_b, "tablet B").await;
    let x = ta.enrol_patient(&bench_enrolment(1)).unwrap();
    let y = ta.enrol_patient(&bench_enrolment(2)).unwrap();
    let _py = ta.record_procedure(y, &bench_procedure(2)).unwrap();
    let r = ta.start_response(x, "bench-50", None, None).unwrap();
    ta.save_answers(r, &bench_answers(3, 50)).unwrap();
    let ae = ta.report_adverse_event(x, &adverse_event("rash")).unwrap();
    let z = tb.enrol_patient(&bench_enrolment(3)).unwrap();
    ta.sync().await.unwrap();
    let px = reg.patient_phone(x, "phone x").await;
    sync_until_quiet(&[&ta, &tb, &px]).await;

    // Reads: the phone holds exactly patient x's records; the clinics only their own.
    let phone_ids: BTreeSet<_> = px.ids().into_iter().collect();
    // (and the registry's adjudication case of the adverse event, which devices only read)
    let case = followup_server::cases::case_id(ae);
    assert_eq!(phone_ids, BTreeSet::from([x, r, ae, case]));
    let ta_ids: BTreeSet<_> = ta.ids().into_iter().collect();
    let tb_ids: BTreeSet<_> = tb.ids().into_iter().collect();
    assert!(ta_ids.contains(&y) && !ta_ids.contains(&z));
    assert!(tb_ids.contains(&z) && tb_ids.is_disjoint(&phone_ids) && !tb_ids.contains(&y));
    for m in tb.store().list(&Default::default()).unwrap() {
        // Besides the registry's published definitions, only its clinic's records.
        if m.kind != RecordKind::Definition {
            assert_eq!(m.clinic, clinic_b);
        }
    }

    // The phone writes an adjudication (bypassing the local check): rejected, reported,
    // rolled back, never merged anywhere, never pushed again.
    let adj_id = RecordId::random();
    let adj = Adjudication {
        adverse_event: ae.to_hex(),
        relatedness: None,
        action: "none".into(),
        remedy: "none".into(),
        status: AdjudicationStatus::Resolved,
        deadline: "2026-02-01".into(),
        decided_at: None,
    };
    let doc =
        model::new_record(Author::device_now(px.id()), adj_id, clinic_a, Some(x), &adj).unwrap();
    px.store()
        .save_doc(&index_meta(&doc).unwrap(), &doc)
        .unwrap();
    let before = reg.stats().await;
    let rep = px.sync().await.unwrap();
    assert_eq!(rep.rejected.len(), 1, "{rep:?}");
    assert_eq!(rep.rejected[0].record, adj_id);
    assert_eq!(rep.rejected[0].code, "forbidden_kind");
    assert_eq!(rep.pushed, 0);
    assert!(sync::rejections(&px)
        .unwrap()
        .iter()
        .any(|r| r.record == adj_id && r.code == "forbidden_kind"));
    assert!(px.store().load_doc(&adj_id).unwrap().is_none());
    assert!(sync::rejected_copy(&px, adj_id).unwrap().is_some());
    let again = px.sync().await.unwrap();
    assert!(again.rejected.is_empty() && again.pushed == 0, "{again:?}");
    assert_eq!(reg.stats().await.documents, before.documents);
    ta.sync().await.unwrap();
    assert!(!ta.ids().contains(&adj_id));

    // The phone changes its enrolment record (not its to write): rolled back to the server's.
    let synced_heads = px.store().synced_heads(&x).unwrap().unwrap();
    let mut enr = px.store().load_doc(&x).unwrap().unwrap();
    enr.set_actor(px.id().actor());
    {
        let mut tx = enr.transaction();
        let body = tx.get(automerge::ROOT, "body").unwrap().unwrap().1;
        tx.put(&body, "birth_year", 1900_i64).unwrap();
        tx.commit();
    }
    px.store()
        .save_doc(&index_meta(&enr).unwrap(), &enr)
        .unwrap();
    let rep = px.sync().await.unwrap();
    assert_eq!(rep.rejected.len(), 1, "{rep:?}");
    let back = px.store().load_doc(&x).unwrap().unwrap();
    let mut h = back.get_heads();
    h.sort();
    let mut sh = synced_heads.clone();
    sh.sort();
    assert_eq!(h, sh, "the rejected change is rolled back");
    assert_eq!(px.dirty(), 0);
    assert_eq!(px.snapshot().get(&x), ta.snapshot().get(&x));

    // Clinic B writes a record into clinic A, and edits a copy of clinic A's response.
    let foreign = RecordId::random();
    let doc = model::new_record(
        Author::device_now(tb.id()),
        foreign,
        clinic_a,
        Some(x),
        &followup_testkit::workload::bench_response(9, None, Some("m1")),
    )
    .unwrap();
    tb.store()
        .save_doc(&index_meta(&doc).unwrap(), &doc)
        .unwrap();
    let mut copy = ta.store().load_doc(&r).unwrap().unwrap();
    let ta_r_before = ta.snapshot().get(&r).cloned();
    model::update_body::<FollowupResponse, followup_domain::Error>(
        &mut copy,
        Author::device_now(tb.id()),
        |b| {
            b.answers.insert("q05".into(), AnswerValue::Int(1000));
            Ok(())
        },
    )
    .unwrap();
    tb.store()
        .save_doc(&index_meta(&copy).unwrap(), &copy)
        .unwrap();
    let rep = tb.sync().await.unwrap();
    let mut codes: Vec<_> = rep
        .rejected
        .iter()
        .map(|r| (r.record, r.code.clone()))
        .collect();
    codes.sort();
    let mut want = vec![
        (foreign, "forbidden_clinic".to_string()),
        (r, "forbidden_clinic".to_string()),
    ];
    want.sort();
    assert_eq!(codes, want, "foreign {foreign} r {r}: {rep:?}");
    ta.sync().await.unwrap();
    assert_eq!(ta.snapshot().get(&r).cloned(), ta_r_before);
    assert!(!ta.ids().contains(&foreign));
    assert!(!tb.ids().contains(&r) && !tb.ids().contains(&foreign));

    let audit = reg.verify_audit().await;
    assert!(audit.ok, "{audit:?}");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_expired_and_revoked_requests_are_refused() {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("A").await;
    let ta = reg.clinic_tablet(clinic, "tablet").await;
    ta.enrol_patient(&bench_enrolment(1)).unwrap();
    ta.sync().await.unwrap();

    // Forged: another key claims the tablet's device id (through the real client).
    let forger = TestDevice::new("forger");
    forger
        .set_enrolment(Enrolled {
            device_id: ta.id(),
            role: DeviceRole::ClinicDevice,
            clinic,
            patient: None,
            server_url: reg.url(),
        })
        .unwrap();
    forger.enrol_patient(&bench_enrolment(2)).unwrap();
    match forger.sync().await {
        Err(Error::Sync(SyncError::Unauthenticated(_))) => {}
        other => panic!("forged request: {other:?}"),
    }

    // Replayed and expired: the tablet's own signature, raw.
    let http = reqwest::Client::new();
    let body = followup_domain::protocol::encode_body(
        &followup_domain::protocol::SyncRequest::new(0, 1024, vec![]),
    )
    .unwrap();
    let post = |headers: [(&'static str, String); 4]| {
        let mut rb = http
            .post(format!("{}{SYNC_PATH}", reg.url()))
            .header("content-type", SYNC_CONTENT_TYPE)
            .body(body.clone());
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        rb.send()
    };
    let now = now_ms();
    let signed = ta
        .identity()
        .unwrap()
        .sign_request(ta.id(), "POST", SYNC_PATH, &body, now)
        .to_header_pairs();
    assert_eq!(post(signed.clone()).await.unwrap().status(), 200);
    let replay = post(signed).await.unwrap();
    assert_eq!(replay.status(), 401);
    assert_eq!(
        json::<ErrorBody>(replay).await.code,
        ErrorCode::ReplayedNonce
    );
    let old = ta
        .identity()
        .unwrap()
        .sign_request(ta.id(), "POST", SYNC_PATH, &body, now - 10 * 60 * 1000)
        .to_header_pairs();
    let expired = post(old).await.unwrap();
    assert_eq!(expired.status(), 401);
    assert_eq!(
        json::<ErrorBody>(expired).await.code,
        ErrorCode::StaleTimestamp
    );

    // A bad enrolment code is refused with a clear error.
    let stranger = TestDevice::new("stranger");
    let client = SyncClient::new(test_options()).unwrap();
    match client.enrol(&stranger, &reg.url(), "not-a-code", "x").await {
        Err(Error::Sync(SyncError::InvalidCode(_))) => {}
        other => panic!("bad code: {other:?}"),
    }

    // Revoked: refused at the next sync, with a message saying so; records stay on the device.
    reg.revoke(ta.id()).await;
    let p2 = ta.enrol_patient(&bench_enrolment(3)).unwrap();
    match ta.sync().await {
        Err(e @ Error::Sync(SyncError::Revoked)) => {
            assert!(e.to_string().contains("revoked"), "{e}")
        }
        other => panic!("revoked device: {other:?}"),
    }
    assert!(ta.ids().contains(&p2));
    assert_eq!(ta.dirty(), 1);
    let audit = reg.verify_audit().await;
    assert!(audit.ok, "{audit:?}");
}

/// Sync until it succeeds with nothing left (each failure is a counted, bounded attempt).
async fn sync_through(d: &TestDevice, client: &SyncClient) -> u32 {
    for tries in 1..=20 {
        match d.sync_with(client).await {
            Ok(_) if d.dirty() == 0 => return tries,
            Ok(_) => {}
            Err(Error::Sync(SyncError::ServerUnreachable { .. })) => {}
            Err(e) => panic!("{}: {e}", d.label),
        }
    }
    panic!("{} did not finish syncing through the link", d.label);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_at_random_points_lose_and_duplicate_nothing() {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("A").await;
    let ta = reg.clinic_tablet(clinic, "tablet A").await;
    let mut data = followup_testkit::workload::populate_patients(&ta, 20).unwrap();
    followup_testkit::workload::populate_responses(&ta, &mut data, 7, 150).unwrap();
    let n_docs = (20 * 2 + 150) as u64;

    let link = LinkSim::start(
        reg.server.addr,
        LinkConfig {
            cut: CutPolicy::RandomBytes {
                seed: 42,
                max_bytes: 12_000,
            },
            max_cuts: Some(15),
            ..LinkConfig::default()
        },
    )
    .await
    .unwrap();
    ta.set_server_url(&link.url());
    let client = SyncClient::new(SyncOptions {
        max_push_bytes: 48 * 1024,
        max_pull_bytes: 48 * 1024,
        ..test_options()
    })
    .unwrap();
    let before = reg.stats().await;
    sync_through(&ta, &client).await;
    let pushed_cuts = link.stats().cuts;
    assert!(pushed_cuts > 0, "the link never cut: {:?}", link.stats());
    let after = reg.stats().await;
    assert_eq!(after.documents - before.documents, n_docs);
    // One write, one log entry and one audit entry per document: nothing duplicated.
    assert_eq!(after.log_seq - before.log_seq, n_docs);
    assert_eq!(after.audit_entries - before.audit_entries, n_docs);

    // A fresh tablet pulls everything through a cutting link too.
    let tb = reg.clinic_tablet(clinic, "tablet B").await;
    link.set_config(LinkConfig {
        cut: CutPolicy::RandomBytes {
            seed: 7,
            max_bytes: 20_000,
        },
        max_cuts: Some(pushed_cuts + 10),
        ..LinkConfig::default()
    });
    tb.set_server_url(&link.url());
    // Tablet B is another device with its own connections: sharing A's client would let B ride
    // A's kept-alive connection, which outlived the first cut budget and never cuts.
    let client_b = SyncClient::new(SyncOptions {
        max_push_bytes: 48 * 1024,
        max_pull_bytes: 48 * 1024,
        ..test_options()
    })
    .unwrap();
    sync_through(&tb, &client_b).await;
    // Its cursor is current: one more sync moves nothing.
    let r = tb.sync_with(&client_b).await.unwrap();
    assert_eq!((r.pushed, r.pulled), (0, 0));
    assert_eq!(ta.snapshot(), tb.snapshot());
    assert_eq!(
        tb.store().count(Some(RecordKind::Response)).unwrap(),
        150,
        "responses"
    );
    assert!(link.stats().cuts > pushed_cuts, "{:?}", link.stats());
    let audit = reg.verify_audit().await;
    assert!(audit.ok, "{audit:?}");
}
