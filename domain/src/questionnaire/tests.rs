#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn answers(pairs: &[(&str, AnswerValue)]) -> Answers {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn text(s: &str) -> AnswerValue {
    AnswerValue::Text(s.to_string())
}

fn choices(cs: &[&str]) -> AnswerValue {
    AnswerValue::Choices(cs.iter().map(|s| s.to_string()).collect())
}

/// A definition with these items (and scores).
fn def(items: serde_json::Value, scores: serde_json::Value) -> String {
    json!({
        "id": "t", "version": "1.0.0", "title": "Test", "kind": "clinician_followup",
        "items": items, "scores": scores
    })
    .to_string()
}

fn parse(items: serde_json::Value) -> Result<Questionnaire, DefinitionError> {
    Questionnaire::from_json(&def(items, json!([])))
}

fn codes(problems: &[Problem]) -> Vec<(&str, ProblemCode)> {
    problems.iter().map(|p| (p.item.as_str(), p.code)).collect()
}

/// The benchmark instrument, from the test kit (it is not built in).
fn bench50() -> Questionnaire {
    Questionnaire::from_json(include_str!("../../../testkit/instruments/bench-50.json")).unwrap()
}

/// A complete valid answer set for bench-50 with fixed values.
fn bench_valid() -> Answers {
    let mut a = Answers::new();
    for n in 1..=50 {
        let v = match n % 5 {
            0 => AnswerValue::Int(7),
            1 => AnswerValue::Bool(true),
            2 => text("moderate"),
            3 => AnswerValue::Decimal(42.5),
            _ => text("mild headache for two days after the infusion"),
        };
        a.insert(format!("q{n:02}"), v);
    }
    a
}

// ---------------------------------------------------------------- shipped instruments

#[test]
fn every_shipped_instrument_parses() {
    for (id, json) in SHIPPED {
        let q = Questionnaire::from_json(json).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(q.id(), id);
    }
    let ids: Vec<String> = default_instruments()
        .iter()
        .map(|q| q.id().to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "baseline-procedure",
            "clinician-followup",
            "patient-outcome-survey",
            "adverse-event-report",
        ]
    );
    assert!(instrument("nope").is_none());
    assert_eq!(
        instrument("clinician-followup").unwrap().kind(),
        QuestionnaireKind::ClinicianFollowup
    );
    assert_eq!(
        instrument("adverse-event-report").unwrap().kind(),
        QuestionnaireKind::AdverseEvent
    );
    // The benchmark instrument is test support, not built in.
    assert!(instrument_json("bench-50").is_none());
    assert!(instrument("bench-50").is_none());
}

#[test]
fn to_json_round_trips() {
    for q in default_instruments() {
        let again = Questionnaire::from_json(&q.to_json()).unwrap();
        assert_eq!(again.items(), q.items());
        assert_eq!(again.score_definitions(), q.score_definitions());
        assert_eq!(
            (again.id(), again.version(), again.title(), again.kind()),
            (q.id(), q.version(), q.title(), q.kind())
        );
    }
}

#[test]
fn bench_50_has_the_benchmark_shape() {
    let q = bench50();
    assert_eq!(q.items().len(), 50);
    for (i, item) in q.items().iter().enumerate() {
        let n = i + 1;
        assert_eq!(item.id, format!("q{n:02}"));
        assert!(item.required);
        match n % 5 {
            0 => {
                assert_eq!(item.item_type, ItemType::Integer);
                assert_eq!((item.min, item.max), (Some(0.0), Some(10.0)));
            }
            1 => assert_eq!(item.item_type, ItemType::Boolean),
            2 => {
                assert_eq!(item.item_type, ItemType::SingleChoice);
                let c: Vec<&str> = item.choices.iter().map(|c| c.code.as_str()).collect();
                assert_eq!(c, ["none", "mild", "moderate", "severe"]);
            }
            3 => {
                assert_eq!(item.item_type, ItemType::Decimal);
                assert_eq!((item.min, item.max), (Some(0.0), Some(100.0)));
                assert_eq!(item.decimals, Some(1));
            }
            _ => {
                assert_eq!(item.item_type, ItemType::Text);
                assert_eq!(item.max_length, Some(200));
            }
        }
    }
    assert!(q.validate(&bench_valid()).is_empty());
}

#[test]
fn validating_a_50_answer_response_is_cheap() {
    let q = &bench50();
    let a = bench_valid();
    let t = std::time::Instant::now();
    for _ in 0..1000 {
        assert!(q.validate(&a).is_empty());
    }
    let per = t.elapsed() / 1000;
    eprintln!("validate bench-50: {per:?} per response");
}

#[test]
fn trial_registration_is_asked_only_for_registered_trials() {
    let q = instrument("baseline-procedure").unwrap();
    let mut a = answers(&[("regulatory_status", text("registered_trial"))]);
    assert!(q.is_enabled("trial_registration_id", &a));
    assert!(codes(&q.validate(&a)).contains(&("trial_registration_id", ProblemCode::Required)));
    a.insert("regulatory_status".into(), text("unregulated"));
    assert!(!q.is_enabled("trial_registration_id", &a));
    assert!(!q
        .validate(&a)
        .iter()
        .any(|p| p.item == "trial_registration_id"));
}

#[test]
fn clinician_followup_chains_complication_details() {
    let q = instrument("clinician-followup").unwrap();
    let mut a = answers(&[
        ("complications_any", AnswerValue::Bool(true)),
        ("complications", choices(&["infection", "gvhd"])),
    ]);
    assert!(q.is_enabled("infection_site", &a));
    assert!(q.is_enabled("gvhd_grade", &a));
    assert!(!q.is_enabled("seizure_count", &a));
    // Turning the gate off disables the whole chain, though "complications" is still stored.
    a.insert("complications_any".into(), AnswerValue::Bool(false));
    assert!(!q.is_enabled("complications", &a));
    assert!(!q.is_enabled("infection_site", &a));
    assert!(!q.is_enabled("gvhd_grade", &a));
    let p = q.validate_partial(&a);
    assert_eq!(
        codes(&p),
        [("complications", ProblemCode::AnsweredButDisabled)]
    );
}

#[test]
fn adverse_event_seriousness_none_is_exclusive() {
    let q = instrument("adverse-event-report").unwrap();
    let a = answers(&[("seriousness", choices(&["none", "death"]))]);
    let p = q.validate_partial(&a);
    assert_eq!(codes(&p), [("seriousness", ProblemCode::ExclusiveChoice)]);
    let a = answers(&[("seriousness", choices(&["death", "hospitalisation"]))]);
    assert!(q.validate_partial(&a).is_empty());
    assert!(q.is_enabled("death_date", &a));
    assert!(q.is_enabled("hospital_admission_date", &a));
}

#[test]
fn full_valid_clinician_followup() {
    let q = instrument("clinician-followup").unwrap();
    let a = answers(&[
        ("visit_date", text("2024-04-01")),
        ("visit_mode", text("in_person")),
        ("condition_status", text("stable")),
        ("symptom_primary", AnswerValue::Int(4)),
        ("symptom_pain", AnswerValue::Int(2)),
        ("symptom_fatigue", AnswerValue::Int(6)),
        ("ecog", text("1")),
        ("temperature_c", AnswerValue::Decimal(36.8)),
        ("heart_rate", AnswerValue::Int(72)),
        ("complications_any", AnswerValue::Bool(false)),
        ("hospitalised", AnswerValue::Bool(false)),
        ("further_cell_therapy", AnswerValue::Bool(false)),
    ]);
    assert_eq!(q.validate(&a), vec![]);
    let s = q.scores(&a);
    assert_eq!(s["symptom_burden"], Some(4.0));
    assert_eq!(s["ecog"], Some(1.0));
}

// ---------------------------------------------------------------- validation

#[test]
fn a_response_breaking_n_rules_gets_n_problems() {
    let q = bench50();
    let mut a = bench_valid();
    a.insert("q01".into(), AnswerValue::Int(1)); // WrongType
    a.insert("q02".into(), text("extreme")); // UnknownChoice
    a.insert("q03".into(), AnswerValue::Decimal(100.25)); // AboveMax + TooManyDecimals
    a.insert("q04".into(), text(&"x".repeat(201))); // TooLong
    a.insert("q05".into(), AnswerValue::Int(12)); // AboveMax
    a.insert("q08".into(), AnswerValue::Decimal(-0.5)); // BelowMin
    a.remove("q10"); // Required
    a.insert("q15".into(), AnswerValue::Decimal(3.0)); // WrongType (decimal for integer)
    a.insert("q99".into(), AnswerValue::Int(1)); // UnknownItem
    let p = q.validate(&a);
    assert_eq!(
        codes(&p),
        [
            ("q01", ProblemCode::WrongType),
            ("q02", ProblemCode::UnknownChoice),
            ("q03", ProblemCode::AboveMax),
            ("q03", ProblemCode::TooManyDecimals),
            ("q04", ProblemCode::TooLong),
            ("q05", ProblemCode::AboveMax),
            ("q08", ProblemCode::BelowMin),
            ("q10", ProblemCode::Required),
            ("q15", ProblemCode::WrongType),
            ("q99", ProblemCode::UnknownItem),
        ]
    );
    let q05 = p.iter().find(|p| p.item == "q05").unwrap();
    assert_eq!(q05.message, "q05: 12 is above the maximum of 10");
    assert_eq!(
        p.iter().find(|p| p.item == "q08").unwrap().message,
        "q08: -0.5 is below the minimum of 0"
    );
    // Draft mode: the same minus Required.
    let d = q.validate_partial(&a);
    assert_eq!(d.len(), p.len() - 1);
    assert!(d.iter().all(|p| p.code != ProblemCode::Required));
    // check() carries the same list.
    let err = q.check(&a).unwrap_err();
    assert_eq!(err.0, p);
    assert!(err
        .to_string()
        .contains("q05: 12 is above the maximum of 10"));
}

#[test]
fn value_rules_per_type() {
    let q = parse(json!([
        { "id": "b", "text": "b", "type": "boolean" },
        { "id": "s", "text": "s", "type": "scale_0_10" },
        { "id": "s2", "text": "s2", "type": "scale_0_10", "min": 1, "max": 5 },
        { "id": "d", "text": "d", "type": "decimal", "decimals": 2 },
        { "id": "dt", "text": "dt", "type": "date" },
        { "id": "t", "text": "t", "type": "text", "max_length": 3 },
        { "id": "m", "text": "m", "type": "multiple_choice",
          "choices": [ { "code": "a", "label": "A" }, { "code": "b", "label": "B" } ] }
    ]))
    .unwrap();
    let case = |k: &str, v: AnswerValue| -> Vec<ProblemCode> {
        q.validate_partial(&answers(&[(k, v)]))
            .into_iter()
            .map(|p| {
                assert_eq!(p.item, k);
                assert!(p.message.starts_with(&format!("{k}: ")), "{}", p.message);
                p.code
            })
            .collect()
    };
    use ProblemCode::*;
    assert_eq!(case("b", AnswerValue::Bool(false)), []);
    assert_eq!(case("b", text("yes")), [WrongType]);
    assert_eq!(case("s", AnswerValue::Int(0)), []);
    assert_eq!(case("s", AnswerValue::Int(10)), []);
    assert_eq!(case("s", AnswerValue::Int(11)), [AboveMax]);
    assert_eq!(case("s", AnswerValue::Int(-1)), [BelowMin]);
    assert_eq!(case("s2", AnswerValue::Int(0)), [BelowMin]);
    assert_eq!(case("s2", AnswerValue::Int(6)), [AboveMax]);
    assert_eq!(case("d", AnswerValue::Int(3)), []);
    assert_eq!(case("d", AnswerValue::Decimal(1.25)), []);
    assert_eq!(case("d", AnswerValue::Decimal(1.255)), [TooManyDecimals]);
    assert_eq!(case("d", AnswerValue::Decimal(f64::NAN)), [WrongType]);
    assert_eq!(case("d", AnswerValue::Decimal(f64::INFINITY)), [WrongType]);
    assert_eq!(case("dt", text("2024-02-29")), []);
    assert_eq!(case("dt", text("2023-02-29")), [InvalidDate]);
    assert_eq!(case("dt", text("2024-2-9")), [InvalidDate]);
    assert_eq!(case("dt", text("2024-02-29T00:00")), [InvalidDate]);
    assert_eq!(case("dt", AnswerValue::Int(20240229)), [WrongType]);
    assert_eq!(case("t", text("abc")), []);
    assert_eq!(case("t", text("äöü")), []); // characters, not bytes
    assert_eq!(case("t", text("abcd")), [TooLong]);
    assert_eq!(case("m", choices(&["a", "b"])), []);
    assert_eq!(
        case("m", choices(&["a", "x", "y"])),
        [UnknownChoice, UnknownChoice]
    );
    assert_eq!(case("m", choices(&["a", "a", "a"])), [DuplicateChoice]);
    assert_eq!(case("m", text("a")), [WrongType]);
    // Blank answers count as unanswered: no problem in draft mode.
    assert_eq!(case("t", text("   ")), []);
    assert_eq!(case("m", choices(&[])), []);
}

#[test]
fn blank_answers_do_not_satisfy_required() {
    let q = parse(json!([{ "id": "t", "text": "t", "type": "text", "required": true }])).unwrap();
    let p = q.validate(&answers(&[("t", text(" "))]));
    assert_eq!(codes(&p), [("t", ProblemCode::Required)]);
    assert_eq!(p[0].message, "t: an answer is required");
}

// ---------------------------------------------------------------- enable-when

fn gated() -> Questionnaire {
    parse(json!([
        { "id": "a", "text": "a", "type": "boolean", "required": true },
        { "id": "b", "text": "b", "type": "single_choice", "required": true,
          "choices": [ { "code": "x", "label": "X" }, { "code": "y", "label": "Y" } ],
          "enable_when": { "item": "a", "operator": "=", "value": true } },
        { "id": "c", "text": "c", "type": "integer", "required": true,
          "enable_when": [ { "item": "b", "operator": "=", "value": "y" } ] },
        { "id": "d", "text": "d", "type": "text", "required": true,
          "enable_when": [ { "item": "c", "operator": ">=", "value": 5 },
                           { "item": "a", "operator": "exists", "value": false } ],
          "enable_behavior": "any" }
    ]))
    .unwrap()
}

#[test]
fn enable_when_chains() {
    let q = gated();
    let a = Answers::new();
    assert!(q.is_enabled("a", &a));
    assert!(!q.is_enabled("b", &a));
    assert!(!q.is_enabled("c", &a));
    assert!(q.is_enabled("d", &a)); // a does not exist
    assert!(!q.is_enabled("zzz", &a));
    assert_eq!(
        codes(&q.validate(&a)),
        [("a", ProblemCode::Required), ("d", ProblemCode::Required)]
    );

    let a = answers(&[
        ("a", AnswerValue::Bool(true)),
        ("b", text("y")),
        ("c", AnswerValue::Int(5)),
    ]);
    let on: Vec<&str> = q.enabled_items(&a).iter().map(|i| i.id.as_str()).collect();
    assert_eq!(on, ["a", "b", "c", "d"]);
    let a = answers(&[
        ("a", AnswerValue::Bool(true)),
        ("b", text("y")),
        ("c", AnswerValue::Int(4)),
    ]);
    assert!(!q.is_enabled("d", &a));
    assert!(q.validate(&a).is_empty());

    // Disabling a disables b, hence c, hence d's first condition; stored answers become problems.
    let mut a = answers(&[
        ("a", AnswerValue::Bool(false)),
        ("b", text("y")),
        ("c", AnswerValue::Int(9)),
        ("d", text("hello")),
    ]);
    assert!(!q.is_enabled("b", &a) && !q.is_enabled("c", &a) && !q.is_enabled("d", &a));
    assert_eq!(
        codes(&q.validate(&a)),
        [
            ("b", ProblemCode::AnsweredButDisabled),
            ("c", ProblemCode::AnsweredButDisabled),
            ("d", ProblemCode::AnsweredButDisabled)
        ]
    );
    let removed = q.prune_disabled(&mut a);
    assert_eq!(removed, ["b", "c", "d"]);
    assert!(q.validate(&a).is_empty());
}

#[test]
fn enable_when_operators() {
    let q = parse(json!([
        { "id": "n", "text": "n", "type": "decimal" },
        { "id": "dt", "text": "dt", "type": "date" },
        { "id": "m", "text": "m", "type": "multiple_choice",
          "choices": [ { "code": "a", "label": "A" }, { "code": "b", "label": "B" } ] },
        { "id": "t", "text": "t", "type": "text" },
        { "id": "gt", "text": "x", "type": "boolean", "enable_when": { "item": "n", "operator": ">", "value": 2.5 } },
        { "id": "le", "text": "x", "type": "boolean", "enable_when": { "item": "n", "operator": "<=", "value": 2 } },
        { "id": "ne", "text": "x", "type": "boolean", "enable_when": { "item": "n", "operator": "!=", "value": 2 } },
        { "id": "ex", "text": "x", "type": "boolean", "enable_when": { "item": "n", "operator": "exists" } },
        { "id": "late", "text": "x", "type": "boolean", "enable_when": { "item": "dt", "operator": ">=", "value": "2024-06-01" } },
        { "id": "has_a", "text": "x", "type": "boolean", "enable_when": { "item": "m", "operator": "=", "value": "a" } },
        { "id": "no_a", "text": "x", "type": "boolean", "enable_when": { "item": "m", "operator": "!=", "value": "a" } },
        { "id": "yes", "text": "x", "type": "boolean", "enable_when": { "item": "t", "operator": "=", "value": "yes" } }
    ]))
    .unwrap();
    let on = |a: &Answers| -> BTreeSet<String> {
        q.enabled_items(a)
            .iter()
            .filter(|i| i.item_type == ItemType::Boolean)
            .map(|i| i.id.clone())
            .collect()
    };
    let set = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| s.to_string()).collect() };
    // Nothing answered: only comparisons that hold on absence (none but exists=false) are on.
    assert_eq!(on(&Answers::new()), set(&[]));
    assert_eq!(
        on(&answers(&[("n", AnswerValue::Int(2))])),
        set(&["le", "ex"])
    );
    assert_eq!(
        on(&answers(&[("n", AnswerValue::Decimal(2.6))])),
        set(&["gt", "ne", "ex"])
    );
    assert_eq!(on(&answers(&[("dt", text("2024-06-01"))])), set(&["late"]));
    assert_eq!(on(&answers(&[("dt", text("2024-05-31"))])), set(&[]));
    assert_eq!(on(&answers(&[("dt", text("garbage"))])), set(&[]));
    assert_eq!(
        on(&answers(&[("m", choices(&["b", "a"]))])),
        set(&["has_a"])
    );
    assert_eq!(on(&answers(&[("m", choices(&["b"]))])), set(&["no_a"]));
    assert_eq!(on(&answers(&[("t", text("yes"))])), set(&["yes"]));
    // A value of the wrong type never satisfies a comparison.
    assert_eq!(on(&answers(&[("n", text("3"))])), set(&["ex"]));
}

// ---------------------------------------------------------------- malformed definitions

fn refused(items: serde_json::Value) -> DefinitionError {
    match parse(items) {
        Ok(_) => panic!("definition accepted"),
        Err(e) => e,
    }
}

#[test]
fn malformed_items_are_refused_naming_the_item() {
    let e = refused(json!([{ "id": "q1", "text": "x", "type": "slider" }]));
    assert!(
        matches!(&e, DefinitionError::ItemJson { item, .. } if item == "q1"),
        "{e}"
    );
    assert!(e.to_string().contains("slider"), "{e}");
    assert!(e.to_string().starts_with("item q1:"), "{e}");

    // An unknown field (a typo, or a newer app's hint) is ignored by the engine, which a device
    // uses on definitions newer than itself; publishing refuses it (strict parse), naming it.
    let typo = json!([{ "id": "q1", "text": "x", "type": "text", "requird": true }]);
    assert!(parse(typo.clone()).is_ok());
    let doc =
        json!({ "id": "t", "version": "1.0.0", "title": "T", "kind": "baseline", "items": typo });
    let e = crate::definitions::Definition::parse_strict(&doc.to_string()).unwrap_err();
    assert!(e.to_string().contains("items[q1].requird"), "{e}");

    let e = refused(json!([{ "text": "x", "type": "text" }]));
    assert!(
        matches!(&e, DefinitionError::ItemJson { item, .. } if item == "#1"),
        "{e}"
    );

    let e = refused(json!([
        { "id": "q1", "text": "x", "type": "text" },
        { "id": "q1", "text": "y", "type": "text" }
    ]));
    assert!(
        matches!(&e, DefinitionError::DuplicateItem(i) if i == "q1"),
        "{e}"
    );

    let e = refused(json!([{ "id": "q1", "text": "x", "type": "single_choice" }]));
    assert!(
        matches!(&e, DefinitionError::MissingChoices(i) if i == "q1"),
        "{e}"
    );

    let e = refused(json!([{ "id": "q1", "text": "x", "type": "multiple_choice",
        "choices": [ { "code": "a", "label": "A" }, { "code": "a", "label": "B" } ] }]));
    assert!(
        matches!(&e, DefinitionError::DuplicateChoice { item, code } if item == "q1" && code == "a"),
        "{e}"
    );

    let e = refused(json!([{ "id": "q1", "text": "x", "type": "integer", "min": 10, "max": 1 }]));
    assert!(
        matches!(&e, DefinitionError::MinAboveMax { item, .. } if item == "q1"),
        "{e}"
    );
    assert_eq!(e.to_string(), "item q1: min 10 is above max 1");

    for bad in [
        json!({ "id": "q1", "text": "x", "type": "text", "min": 1 }),
        json!({ "id": "q1", "text": "x", "type": "integer", "decimals": 1 }),
        json!({ "id": "q1", "text": "x", "type": "integer", "max_length": 1 }),
        json!({ "id": "q1", "text": "x", "type": "integer", "min": 0.5 }),
        json!({ "id": "q1", "text": "x", "type": "scale_0_10", "max": 11 }),
        json!({ "id": "q1", "text": "x", "type": "text", "max_length": 0 }),
        json!({ "id": "q1", "text": "x", "type": "boolean", "choices": [ { "code": "a", "label": "A" } ] }),
        json!({ "id": "q1", "text": "x", "type": "single_choice",
                "choices": [ { "code": "a", "label": "A", "exclusive": true } ] }),
        json!({ "id": "q1", "text": "", "type": "text" }),
    ] {
        let e = refused(json!([bad]));
        assert!(
            matches!(&e, DefinitionError::InvalidItem { item, .. } if item == "q1"),
            "{e}"
        );
        assert_eq!(e.item(), Some("q1"));
    }

    assert!(matches!(refused(json!([])), DefinitionError::NoItems));
}

#[test]
fn malformed_enable_when_is_refused() {
    let e = refused(json!([{ "id": "q1", "text": "x", "type": "text",
        "enable_when": { "item": "q9", "operator": "exists" } }]));
    assert!(
        matches!(&e, DefinitionError::EnableWhenUnknownItem { item, target } if item == "q1" && target == "q9"),
        "{e}"
    );

    let e = refused(json!([{ "id": "q1", "text": "x", "type": "text",
        "enable_when": { "item": "q1", "operator": "exists" } }]));
    assert!(
        matches!(&e, DefinitionError::EnableWhenSelf(i) if i == "q1"),
        "{e}"
    );

    let e = refused(json!([
        { "id": "q1", "text": "x", "type": "boolean", "enable_when": { "item": "q3", "operator": "=", "value": true } },
        { "id": "q2", "text": "x", "type": "boolean", "enable_when": { "item": "q1", "operator": "=", "value": true } },
        { "id": "q3", "text": "x", "type": "boolean", "enable_when": { "item": "q2", "operator": "=", "value": true } },
        { "id": "q4", "text": "x", "type": "boolean" }
    ]));
    match &e {
        DefinitionError::EnableWhenCycle(c) => {
            assert_eq!(c.len(), 4);
            assert_eq!(c.first(), c.last());
            for q in ["q1", "q2", "q3"] {
                assert!(c.iter().any(|x| x == q));
            }
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("cycle"));

    let choice = json!({ "id": "c", "text": "c", "type": "single_choice",
        "choices": [ { "code": "a", "label": "A" } ] });
    for (target, cond) in [
        (
            choice.clone(),
            json!({ "item": "c", "operator": "=", "value": "zz" }),
        ),
        (
            choice.clone(),
            json!({ "item": "c", "operator": ">", "value": "a" }),
        ),
        (choice.clone(), json!({ "item": "c", "operator": "=" })),
        (
            json!({ "id": "c", "text": "c", "type": "boolean" }),
            json!({ "item": "c", "operator": "=", "value": 1 }),
        ),
        (
            json!({ "id": "c", "text": "c", "type": "integer" }),
            json!({ "item": "c", "operator": "=", "value": "1" }),
        ),
        (
            json!({ "id": "c", "text": "c", "type": "date" }),
            json!({ "item": "c", "operator": "<", "value": "yesterday" }),
        ),
        (
            json!({ "id": "c", "text": "c", "type": "text" }),
            json!({ "item": "c", "operator": ">", "value": "a" }),
        ),
        (
            json!({ "id": "c", "text": "c", "type": "text" }),
            json!({ "item": "c", "operator": "exists", "value": "a" }),
        ),
    ] {
        let e = refused(
            json!([target, { "id": "q1", "text": "x", "type": "text", "enable_when": cond }]),
        );
        assert!(
            matches!(&e, DefinitionError::EnableWhenInvalid { item, target, .. } if item == "q1" && target == "c"),
            "{e}"
        );
    }

    let e = refused(json!([{ "id": "q1", "text": "x", "type": "text",
        "enable_when": { "item": "q1", "operator": "~" } }]));
    assert!(
        matches!(&e, DefinitionError::ItemJson { item, .. } if item == "q1"),
        "{e}"
    );
}

#[test]
fn malformed_top_level_and_scores_are_refused() {
    let bad_json = Questionnaire::from_json("{ not json").unwrap_err();
    assert!(matches!(bad_json, DefinitionError::Json(_)));
    let kind = json!({ "id": "t", "version": "1.0.0", "title": "T", "kind": "poll",
        "items": [ { "id": "a", "text": "a", "type": "text" } ] })
    .to_string();
    let e = Questionnaire::from_json(&kind).unwrap_err();
    assert!(
        matches!(&e, DefinitionError::Json(_)) && e.to_string().contains("poll"),
        "{e}"
    );
    let version = json!({ "id": "t", "version": "1.0", "title": "T", "kind": "baseline",
        "items": [ { "id": "a", "text": "a", "type": "text" } ] })
    .to_string();
    assert!(matches!(
        Questionnaire::from_json(&version).unwrap_err(),
        DefinitionError::BadField {
            field: "version",
            ..
        }
    ));

    let items = json!([
        { "id": "n", "text": "n", "type": "integer" },
        { "id": "t", "text": "t", "type": "text" },
        { "id": "c", "text": "c", "type": "single_choice",
          "choices": [ { "code": "a", "label": "A", "score": 1 }, { "code": "b", "label": "B" } ] }
    ]);
    let score = |s: serde_json::Value| Questionnaire::from_json(&def(items.clone(), json!([s])));
    let e = score(json!({ "id": "s", "label": "S", "items": ["n", "zz"], "method": "sum" }))
        .unwrap_err();
    assert!(
        matches!(&e, DefinitionError::ScoreUnknownItem { score, item } if score == "s" && item == "zz"),
        "{e}"
    );
    let e = score(json!({ "id": "s", "label": "S", "items": ["t"], "method": "sum" })).unwrap_err();
    assert!(
        matches!(&e, DefinitionError::ScoreNonNumericItem { item, .. } if item == "t"),
        "{e}"
    );
    let e = score(json!({ "id": "s", "label": "S", "items": ["c"], "method": "sum" })).unwrap_err();
    assert!(
        matches!(&e, DefinitionError::ScoreNonNumericItem { item, .. } if item == "c"),
        "{e}"
    );
    let e =
        score(json!({ "id": "s", "label": "S", "items": ["n"], "method": "median" })).unwrap_err();
    assert!(
        matches!(&e, DefinitionError::ScoreJson { score, .. } if score == "s"),
        "{e}"
    );
    let e = score(json!({ "id": "s", "label": "S", "items": [], "method": "sum" })).unwrap_err();
    assert!(matches!(&e, DefinitionError::InvalidScore { .. }), "{e}");
    let e = score(json!({ "id": "s", "label": "S", "items": ["n", "n"], "method": "sum" }))
        .unwrap_err();
    assert!(matches!(&e, DefinitionError::InvalidScore { .. }), "{e}");
    let e = score(
        json!({ "id": "s", "label": "S", "items": ["n"], "method": "sum", "min_answered": 2 }),
    )
    .unwrap_err();
    assert!(matches!(&e, DefinitionError::InvalidScore { .. }), "{e}");
    let two = json!([
        { "id": "s", "label": "S", "items": ["n"], "method": "sum" },
        { "id": "s", "label": "S", "items": ["n"], "method": "mean" }
    ]);
    let e = Questionnaire::from_json(&def(items.clone(), two)).unwrap_err();
    assert!(
        matches!(&e, DefinitionError::DuplicateScore(s) if s == "s"),
        "{e}"
    );
}

// ---------------------------------------------------------------- scores

#[test]
fn scores_sum_and_mean() {
    let q = Questionnaire::from_json(&def(
        json!([
            { "id": "gate", "text": "g", "type": "boolean" },
            { "id": "p", "text": "p", "type": "scale_0_10" },
            { "id": "f", "text": "f", "type": "scale_0_10" },
            { "id": "x", "text": "x", "type": "decimal", "max": 5,
              "enable_when": { "item": "gate", "operator": "=", "value": true } },
            { "id": "sev", "text": "s", "type": "single_choice",
              "choices": [ { "code": "lo", "label": "Lo", "score": 1 }, { "code": "hi", "label": "Hi", "score": 3 } ] },
            { "id": "m", "text": "m", "type": "multiple_choice",
              "choices": [ { "code": "a", "label": "A", "score": 1 }, { "code": "b", "label": "B", "score": 2 } ] }
        ]),
        json!([
            { "id": "mean", "label": "Mean", "items": ["p", "f"], "method": "mean", "min_answered": 2 },
            { "id": "sum", "label": "Sum", "items": ["p", "f", "x", "sev", "m", "gate"], "method": "sum" }
        ]),
    ))
    .unwrap();
    let s = q.scores(&Answers::new());
    assert_eq!(s["mean"], None);
    assert_eq!(s["sum"], None);

    let s = q.scores(&answers(&[("p", AnswerValue::Int(3))]));
    assert_eq!(s["mean"], None); // min_answered 2
    assert_eq!(s["sum"], Some(3.0));

    let a = answers(&[
        ("p", AnswerValue::Int(3)),
        ("f", AnswerValue::Int(6)),
        ("x", AnswerValue::Decimal(1.5)), // disabled (gate unanswered): not counted
        ("sev", text("hi")),
        ("m", choices(&["a", "b"])),
    ]);
    let s = q.scores(&a);
    assert_eq!(s["mean"], Some(4.5));
    assert_eq!(s["sum"], Some(3.0 + 6.0 + 3.0 + 3.0));

    let mut a = a;
    a.insert("gate".into(), AnswerValue::Bool(true)); // counts 1, and enables x
    assert_eq!(q.scores(&a)["sum"], Some(15.0 + 1.0 + 1.5));
    a.insert("x".into(), AnswerValue::Decimal(9.0)); // above max: invalid, not counted
    a.insert("f".into(), AnswerValue::Int(11)); // invalid, not counted
    let s = q.scores(&a);
    assert_eq!(s["sum"], Some(3.0 + 3.0 + 3.0 + 1.0));
    assert_eq!(s["mean"], None);
}

#[test]
fn answer_values_serialize_untagged() {
    let a = answers(&[
        ("b", AnswerValue::Bool(true)),
        ("i", AnswerValue::Int(7)),
        ("d", AnswerValue::Decimal(3.0)),
        ("t", text("2024-01-02")),
        ("c", choices(&["a", "b"])),
    ]);
    let s = serde_json::to_string(&a).unwrap();
    assert_eq!(
        s,
        r#"{"b":true,"c":["a","b"],"d":3.0,"i":7,"t":"2024-01-02"}"#
    );
    let back: Answers = serde_json::from_str(&s).unwrap();
    assert_eq!(back, a);
}

// ---------------------------------------------------------------- properties

fn any_value() -> impl Strategy<Value = AnswerValue> {
    prop_oneof![
        any::<bool>().prop_map(AnswerValue::Bool),
        any::<i64>().prop_map(AnswerValue::Int),
        (-20i64..120).prop_map(AnswerValue::Int),
        any::<f64>().prop_map(AnswerValue::Decimal),
        (-50.0f64..150.0).prop_map(AnswerValue::Decimal),
        ".{0,40}".prop_map(AnswerValue::Text),
        prop_oneof![
            Just("none"),
            Just("mild"),
            Just("severe"),
            Just("infection"),
            Just("death"),
            Just("2024-02-29"),
            Just("2023-13-01"),
            Just("worse"),
            Just("registered_trial"),
            Just(""),
            Just("é"),
            Just("1"),
            Just("5")
        ]
        .prop_map(|s| AnswerValue::Text(s.to_string())),
        proptest::collection::vec(
            prop_oneof![
                Just("none".to_string()),
                Just("infection".to_string()),
                Just("death".to_string()),
                "[a-z_]{0,8}"
            ],
            0..5
        )
        .prop_map(AnswerValue::Choices),
    ]
}

fn any_answers() -> impl Strategy<Value = Answers> {
    let ids: Vec<String> = default_instruments()
        .iter()
        .flat_map(|q| q.items().iter().map(|i| i.id.clone()).collect::<Vec<_>>())
        .collect();
    let key = prop_oneof![
        4 => proptest::sample::select(ids),
        1 => ".{0,12}",
    ];
    proptest::collection::btree_map(key, any_value(), 0..60)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_answers_never_panic_and_problems_name_items(a in any_answers()) {
        for q in default_instruments() {
            for p in q.validate(&a).into_iter().chain(q.validate_partial(&a)) {
                prop_assert!(
                    a.contains_key(&p.item) || q.item(&p.item).is_some(),
                    "{} names no item", p.message
                );
                let prefix = format!("{}: ", p.item);
                prop_assert!(p.message.starts_with(&prefix), "{}", p.message);
                if p.code == ProblemCode::UnknownItem {
                    prop_assert!(q.item(&p.item).is_none());
                }
            }
            let scores = q.scores(&a);
            prop_assert_eq!(scores.len(), q.score_definitions().len());
            for item in q.items() {
                let _ = q.is_enabled(&item.id, &a);
            }
            let mut pruned = a.clone();
            q.prune_disabled(&mut pruned);
            prop_assert!(q
                .validate_partial(&pruned)
                .iter()
                .all(|p| p.code != ProblemCode::AnsweredButDisabled && p.code != ProblemCode::UnknownItem));
        }
    }

    #[test]
    fn valid_bench_50_answers_validate_clean(
        ints in proptest::collection::vec(0i64..=10, 10),
        bools in proptest::collection::vec(any::<bool>(), 10),
        sev in proptest::collection::vec(0usize..4, 10),
        tenths in proptest::collection::vec(0i64..=1000, 10),
        texts in proptest::collection::vec("[a-z ]{25,50}", 10),
    ) {
        let q = bench50();
        let levels = ["none", "mild", "moderate", "severe"];
        let mut a = Answers::new();
        for n in 1..=50usize {
            let k = (n - 1) / 5;
            let v = match n % 5 {
                0 => AnswerValue::Int(ints[k]),
                1 => AnswerValue::Bool(bools[k]),
                2 => AnswerValue::Text(levels[sev[k]].to_string()),
                3 => AnswerValue::Decimal(tenths[k] as f64 / 10.0),
                _ => AnswerValue::Text(texts[k].clone()),
            };
            a.insert(format!("q{n:02}"), v);
        }
        let problems = q.validate(&a);
        prop_assert!(problems.is_empty(), "{:?}", problems);
        // And through JSON, as a response travels.
        let back: Answers = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        prop_assert!(q.validate(&back).is_empty());
    }

    #[test]
    fn arbitrary_definitions_never_panic(s in ".{0,200}") {
        let _ = Questionnaire::from_json(&s);
    }
}
