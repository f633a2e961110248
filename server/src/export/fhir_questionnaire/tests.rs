use std::sync::Arc;

use followup_domain::definitions::{builtin_definitions, Definition};

use super::*;

/// Every questionnaire the project ships: the built-in instruments and the benchmark one.
fn shipped() -> Vec<Arc<Questionnaire>> {
    let mut out: Vec<Arc<Questionnaire>> = builtin_definitions()
        .iter()
        .filter_map(|json| {
            Definition::parse_strict(json)
                .unwrap()
                .questionnaire()
                .cloned()
        })
        .collect();
    let bench = Definition::parse_strict(followup_testkit::workload::BENCH_50_JSON).unwrap();
    out.push(bench.questionnaire().unwrap().clone());
    out
}

fn builtin(id: &str) -> Arc<Questionnaire> {
    shipped().into_iter().find(|q| q.id() == id).unwrap()
}

fn fhir_value(q: &Questionnaire) -> Value {
    serde_json::from_str(&to_fhir_json(q, PublicationStatus::Active).unwrap()).unwrap()
}

fn item<'a>(fhir: &'a Value, link: &str) -> &'a Value {
    fhir["item"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["linkId"] == link)
        .unwrap_or_else(|| panic!("no item {link}"))
}

fn ext<'a>(v: &'a Value, url: &str) -> &'a Value {
    v["extension"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["url"] == url))
        .unwrap_or_else(|| panic!("no extension {url} in {v}"))
}

/// The content of the translation into `lang` in a primitive's `_x`.
fn translation<'a>(underscore: &'a Value, lang: &str) -> &'a str {
    underscore["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["url"] == EXT_TRANSLATION
                && e["extension"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["url"] == "lang" && p["valueCode"] == lang)
        })
        .and_then(|e| {
            e["extension"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["url"] == "content")
        })
        .and_then(|p| p["valueString"].as_str())
        .unwrap_or_else(|| panic!("no {lang} translation in {underscore}"))
}

#[test]
fn every_shipped_instrument_round_trips_through_fhir() {
    let all = shipped();
    assert_eq!(all.len(), 5, "four built-in instruments and bench-50");
    for q in all {
        let json = to_fhir_json(&q, PublicationStatus::Active).unwrap();
        // The output is a Questionnaire the FHIR model reads, and reads back to the same JSON.
        let typed: FhirQuestionnaire = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("{}: not a FHIR Questionnaire: {e}", q.id()));
        assert_eq!(
            serde_json::to_value(&typed).unwrap(),
            serde_json::from_str::<Value>(&json).unwrap(),
            "{}",
            q.id()
        );
        let back = from_fhir_json(&json, &ImportOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", q.id()));
        // Equal as checked definitions: items, rules, scores and every translation.
        assert_eq!(back.questionnaire, *q, "{}", q.id());
        assert_eq!(back.questionnaire.translations(), q.translations());
        assert_eq!(back.json, q.to_json(), "{}", q.id());
        // The imported file is publishable as is.
        Definition::parse_strict(&back.json).unwrap();
    }
}

#[test]
fn the_export_uses_the_standard_elements_and_extensions() {
    let q = builtin("clinician-followup");
    let f = fhir_value(&q);
    assert_eq!(f["resourceType"], "Questionnaire");
    assert_eq!(f["url"], canonical_url("clinician-followup"));
    assert_eq!(f["version"], q.version());
    assert_eq!(f["status"], "active");
    assert_eq!(f["language"], "en");
    assert_eq!(translation(&f["_title"], "es"), q.localized("es").title());
    assert_eq!(
        ext(&f, &extension_url(KIND_EXTENSION))["valueCode"],
        "clinician_followup"
    );

    // A 0-10 scale: an integer slider bounded 0..10.
    let pain = item(&f, "symptom_pain");
    assert_eq!(pain["type"], "integer");
    assert_eq!(pain["required"], true);
    assert_eq!(ext(pain, EXT_MIN_VALUE)["valueInteger"], 0);
    assert_eq!(ext(pain, EXT_MAX_VALUE)["valueInteger"], 10);
    assert_eq!(
        ext(pain, EXT_ITEM_CONTROL)["valueCodeableConcept"]["coding"][0]["code"],
        "slider"
    );
    assert_eq!(
        translation(&pain["_text"], "es"),
        q.localized("es").item("symptom_pain").unwrap().text
    );

    // A decimal with bounds, decimals and a translated unit.
    let weight = item(&f, "weight_kg");
    assert_eq!(weight["type"], "decimal");
    assert_eq!(ext(weight, EXT_MIN_VALUE)["valueDecimal"], 2.0);
    assert_eq!(ext(weight, EXT_MAX_VALUE)["valueDecimal"], 400.0);
    assert_eq!(ext(weight, EXT_MAX_DECIMALS)["valueInteger"], 1);
    let unit = &ext(weight, EXT_UNIT)["valueCoding"];
    assert_eq!(unit["display"], "kg");
    assert_eq!(
        translation(&unit["_display"], "es"),
        q.localized("es")
            .item("weight_kg")
            .unwrap()
            .unit
            .clone()
            .unwrap()
    );

    // Choices: codings with code and display, scores as ordinalValue, translated labels.
    let status = item(&f, "condition_status");
    assert_eq!(status["type"], "choice");
    assert!(status.get("repeats").is_none());
    let first = &status["answerOption"][0];
    let c = &q.item("condition_status").unwrap().choices[0];
    assert_eq!(first["valueCoding"]["code"], c.code.as_str());
    assert_eq!(first["valueCoding"]["display"], c.label.as_str());
    assert_eq!(ext(first, EXT_ORDINAL)["valueDecimal"], c.score.unwrap());
    assert_eq!(
        translation(&first["valueCoding"]["_display"], "es"),
        q.localized("es").item("condition_status").unwrap().choices[0].label
    );
    let complications = item(&f, "complications");
    assert_eq!(complications["repeats"], true);

    // enableWhen on a choice: answerCoding; on a boolean: answerBoolean.
    let detail = item(&f, "condition_worse_detail");
    assert_eq!(detail["enableWhen"][0]["question"], "condition_status");
    assert_eq!(detail["enableWhen"][0]["operator"], "=");
    assert_eq!(detail["enableWhen"][0]["answerCoding"]["code"], "worse");
    assert_eq!(detail["maxLength"], 1000);
    let days = item(&f, "hospital_days");
    assert_eq!(days["enableWhen"][0]["answerBoolean"], true);

    // Help: a nested display item with itemControl help, translated.
    let edss = item(&f, "edss");
    let help = &edss["item"][0];
    assert_eq!(help["type"], "display");
    assert_eq!(help["text"], q.item("edss").unwrap().help.clone().unwrap());
    assert_eq!(
        ext(help, EXT_ITEM_CONTROL)["valueCodeableConcept"]["coding"][0]["code"],
        "help"
    );
    assert_eq!(
        translation(&help["_text"], "es"),
        q.localized("es")
            .item("edss")
            .unwrap()
            .help
            .clone()
            .unwrap()
    );

    // Scores: the registry extension.
    let scores: Vec<&Value> = f["extension"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["url"] == extension_url(SCORE_EXTENSION))
        .collect();
    assert_eq!(scores.len(), q.score_definitions().len());
}

#[test]
fn any_behaviour_and_exclusive_options_are_written() {
    let f = fhir_value(&builtin("adverse-event-report"));
    let resolution = item(&f, "resolution_date");
    assert_eq!(resolution["enableBehavior"], "any");
    assert_eq!(resolution["enableWhen"].as_array().unwrap().len(), 2);
    let seriousness = item(&f, "seriousness");
    let exclusive: Vec<&Value> = seriousness["answerOption"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| {
            o["extension"]
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e["url"] == EXT_EXCLUSIVE))
        })
        .collect();
    assert_eq!(exclusive.len(), 1);
}

#[test]
fn status_follows_the_definition_state() {
    let q = builtin("patient-outcome-survey");
    for (state, code) in [
        (DefinitionState::Draft, "draft"),
        (DefinitionState::Published, "active"),
        (DefinitionState::Retired, "retired"),
    ] {
        let f: Value = serde_json::from_str(&to_fhir_json(&q, status_of(state)).unwrap()).unwrap();
        assert_eq!(f["status"], code);
    }
    // A schedule has no FHIR Questionnaire form.
    let schedule = builtin_definitions()
        .iter()
        .find(|j| j.contains("\"schedule\""))
        .unwrap();
    let err = definition_to_fhir_json(schedule, PublicationStatus::Draft).unwrap_err();
    assert!(err.to_string().contains("only questionnaires"), "{err}");
}

/// A small questionnaire as another tool would write it: no registry extensions, `string`
/// items, `exists`, a slider, no language.
fn third_party() -> Value {
    json!({
        "resourceType": "Questionnaire",
        "id": "phq-lite",
        "meta": { "profile": ["http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire"] },
        "text": { "status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>" },
        "url": "http://example.org/fhir/Questionnaire/phq-lite",
        "version": "2.1.0",
        "name": "PhqLite",
        "title": "Mood check",
        "status": "active",
        "publisher": "Example",
        "subjectType": ["Patient"],
        "item": [
            { "linkId": "down", "text": "Feeling down?", "type": "choice", "required": true,
              "answerOption": [
                { "valueCoding": { "code": "0", "display": "Not at all" },
                  "extension": [{ "url": EXT_ORDINAL, "valueDecimal": 0 }] },
                { "valueCoding": { "code": "1", "display": "Several days",
                  "extension": [{ "url": EXT_ORDINAL_OLD, "valueDecimal": 1 }] } } ] },
            { "linkId": "why", "text": "Why?", "type": "string", "maxLength": 100,
              "enableWhen": [{ "question": "down", "operator": "exists", "answerBoolean": true }] },
            { "linkId": "mood", "text": "Mood today", "type": "integer",
              "extension": [
                { "url": EXT_ITEM_CONTROL, "valueCodeableConcept": { "coding": [
                    { "system": ITEM_CONTROL_SYSTEM, "code": "slider" } ] } },
                { "url": EXT_MIN_VALUE, "valueInteger": 1 },
                { "url": EXT_MAX_VALUE, "valueInteger": 10 } ] }
        ]
    })
}

#[test]
fn a_questionnaire_from_another_tool_imports_with_a_kind() {
    let text = third_party().to_string();
    // Without the registry's kind extension, the import asks for one.
    let err = from_fhir_json(&text, &ImportOptions::default()).unwrap_err();
    assert!(err.to_string().contains("--kind"), "{err}");
    let opts = ImportOptions {
        kind: Some(QuestionnaireKind::PatientSurvey),
        id: None,
    };
    let imported = from_fhir_json(&text, &opts).unwrap();
    let q = &imported.questionnaire;
    assert_eq!(
        (q.id(), q.version(), q.title()),
        ("phq-lite", "2.1.0", "Mood check")
    );
    assert_eq!(q.language(), "en");
    assert_eq!(q.kind(), QuestionnaireKind::PatientSurvey);
    let down = q.item("down").unwrap();
    assert_eq!(down.item_type, ItemType::SingleChoice);
    assert!(down.required);
    assert_eq!(down.choices[0].score, Some(0.0));
    assert_eq!(down.choices[1].score, Some(1.0));
    let why = q.item("why").unwrap();
    assert_eq!(why.item_type, ItemType::Text);
    assert_eq!(why.max_length, Some(100));
    assert_eq!(why.enable_when[0].operator, Operator::Exists);
    assert_eq!(why.enable_when[0].value, None);
    let mood = q.item("mood").unwrap();
    assert_eq!(mood.item_type, ItemType::Scale0To10);
    assert_eq!((mood.min, mood.max), (Some(1.0), None));
    // The rules work: why is shown once down is answered.
    let mut a = followup_domain::questionnaire::Answers::new();
    assert!(!q.is_enabled("why", &a));
    a.insert("down".into(), AnswerValue::Text("1".into()));
    assert!(q.is_enabled("why", &a));
    // --id overrides the id taken from the url.
    let renamed = from_fhir_json(
        &text,
        &ImportOptions {
            id: Some("mood-check".into()),
            ..opts
        },
    )
    .unwrap();
    assert_eq!(renamed.questionnaire.id(), "mood-check");
}

/// Import `fhir` and expect a refusal naming `item` and a feature containing `feature`.
#[track_caller]
fn refused(fhir: &Value, item: Option<&str>, feature: &str) -> String {
    let opts = ImportOptions {
        kind: Some(QuestionnaireKind::PatientSurvey),
        id: None,
    };
    let err = from_fhir_json(&fhir.to_string(), &opts).expect_err("the import must fail");
    let msg = err.to_string();
    assert_eq!(err.item(), item, "{msg}");
    assert!(
        err.feature().is_some_and(|f| f.contains(feature)),
        "{feature:?} in {msg}"
    );
    assert!(msg.contains(feature), "{msg}");
    if let Some(i) = item {
        assert!(msg.contains(&format!("item {i}")), "{msg}");
    }
    msg
}

fn with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut v = third_party();
    edit(&mut v);
    v
}

#[test]
fn what_a_definition_cannot_say_is_refused_by_name() {
    // Groups.
    refused(
        &with(|v| {
            v["item"][0] = json!({ "linkId": "g", "text": "Group", "type": "group",
                "item": [{ "linkId": "x", "text": "X", "type": "boolean" }] });
            v["item"][1]["enableWhen"] = json!([]);
        }),
        Some("g"),
        "group",
    );
    // Default answers, value sets, concept codes, prefixes.
    refused(
        &with(|v| v["item"][1]["initial"] = json!([{ "valueString": "x" }])),
        Some("why"),
        "initial",
    );
    refused(
        &with(|v| {
            v["item"][0]["answerValueSet"] = json!("http://loinc.org/vs/LL358-3");
        }),
        Some("down"),
        "answerValueSet",
    );
    refused(
        &with(|v| {
            v["item"][1]["code"] = json!([{ "system": "http://loinc.org", "code": "44250-9" }]);
        }),
        Some("why"),
        "code",
    );
    refused(
        &with(|v| v["item"][1]["prefix"] = json!("2.")),
        Some("why"),
        "prefix",
    );
    // Item types with no definition counterpart.
    refused(
        &with(|v| v["item"][1]["type"] = json!("open-choice")),
        Some("why"),
        "type open-choice",
    );
    refused(
        &with(|v| v["item"][1]["type"] = json!("attachment")),
        Some("why"),
        "type attachment",
    );
    refused(
        &with(|v| {
            v["item"][2] =
                json!({ "linkId": "note", "text": "Please answer all", "type": "display" });
        }),
        Some("note"),
        "type display",
    );
    // An extension the import does not know, on an item and on the questionnaire.
    refused(
        &with(|v| {
            v["item"][1]["extension"] = json!([{
                "url": "http://hl7.org/fhir/StructureDefinition/regex", "valueString": "[a-z]+" }]);
        }),
        Some("why"),
        "http://hl7.org/fhir/StructureDefinition/regex",
    );
    refused(
        &with(|v| {
            v["modifierExtension"] =
                json!([{ "url": "http://example.org/x", "valueBoolean": true }]);
        }),
        None,
        "modifierExtension",
    );
    // A coded choice from a terminology: the definition has no code system.
    refused(
        &with(|v| {
            v["item"][0]["answerOption"][0]["valueCoding"]["system"] = json!("http://loinc.org")
        }),
        Some("down"),
        "code system",
    );
    refused(
        &with(|v| v["item"][0]["answerOption"][0] = json!({ "valueString": "Not at all" })),
        Some("down"),
        "answerOption.valueString",
    );
    refused(
        &with(|v| v["item"][0]["answerOption"][0]["initialSelected"] = json!(true)),
        Some("down"),
        "initialSelected",
    );
    // A UCUM unit: the definition keeps only the unit as shown.
    refused(
        &with(|v| {
            v["item"][2]["extension"] = json!([{ "url": EXT_UNIT, "valueCoding": {
                "system": "http://unitsofmeasure.org", "code": "kg", "display": "kg" } }]);
        }),
        Some("mood"),
        "coded unit",
    );
    // enableWhen on a quantity; repeats on a text; readOnly; a slider beyond 0-10.
    refused(
        &with(|v| {
            v["item"][1]["enableWhen"] = json!([{ "question": "mood", "operator": ">",
                "answerQuantity": { "value": 3 } }]);
        }),
        Some("why"),
        "enableWhen.answerQuantity",
    );
    refused(
        &with(|v| v["item"][1]["repeats"] = json!(true)),
        Some("why"),
        "repeats",
    );
    refused(
        &with(|v| v["item"][1]["readOnly"] = json!(true)),
        Some("why"),
        "readOnly",
    );
    refused(
        &with(|v| v["item"][2]["extension"][2]["valueInteger"] = json!(100)),
        Some("mood"),
        "beyond 0-10",
    );
    // An element the R4 model does not know (R5's answerConstraint) is not ignored.
    refused(
        &with(|v| v["item"][0]["answerConstraint"] = json!("optionsOnly")),
        Some("down"),
        "answerConstraint",
    );
    refused(
        &with(|v| v["versionAlgorithmString"] = json!("semver")),
        None,
        "versionAlgorithmString",
    );
    // A nested item that is not a help text.
    refused(
        &with(|v| {
            v["item"][1]["item"] = json!([{ "linkId": "why2", "text": "More", "type": "string" }]);
        }),
        Some("why"),
        "nested item why2",
    );
}

#[test]
fn the_registry_checks_what_the_import_produces() {
    let opts = ImportOptions {
        kind: Some(QuestionnaireKind::PatientSurvey),
        id: None,
    };
    // enableWhen on a question that does not exist: the definition's own check names the item.
    let bad = with(|v| v["item"][1]["enableWhen"][0]["question"] = json!("nope"));
    let err = from_fhir_json(&bad.to_string(), &opts).unwrap_err();
    assert!(
        matches!(err, FhirQuestionnaireError::Definition(_)),
        "{err}"
    );
    assert_eq!(err.item(), Some("why"));
    assert!(err.to_string().contains("nope"), "{err}");
    // A version that is not MAJOR.MINOR.PATCH.
    let bad = with(|v| v["version"] = json!("2024-03"));
    let err = from_fhir_json(&bad.to_string(), &opts).unwrap_err();
    assert!(err.to_string().contains("version"), "{err}");
    // A choice without options.
    let bad = with(|v| v["item"][0]["answerOption"] = json!([]));
    let err = from_fhir_json(&bad.to_string(), &opts).unwrap_err();
    assert_eq!(err.item(), Some("down"), "{err}");
    // Not a Questionnaire at all.
    let err = from_fhir_json(r#"{"resourceType":"Patient"}"#, &opts).unwrap_err();
    assert!(err.to_string().contains("Patient"), "{err}");
    let err = from_fhir_json("not json", &opts).unwrap_err();
    assert!(matches!(err, FhirQuestionnaireError::NotQuestionnaire(_)));
}

#[test]
fn a_definition_with_every_condition_shape_round_trips() {
    // Operators and value types the shipped instruments do not use.
    let json = json!({
        "id": "shapes", "version": "1.0.0", "title": "Shapes", "kind": "clinician_followup",
        "language": "es",
        "items": [
            { "id": "n", "text": "N", "type": "integer", "min": -5 },
            { "id": "d", "text": "D", "type": "decimal", "unit": "mg" },
            { "id": "day", "text": "Day", "type": "date" },
            { "id": "t", "text": "T", "type": "text" },
            { "id": "s", "text": "S", "type": "scale_0_10", "max": 7 },
            { "id": "a", "text": "A", "type": "boolean",
              "enable_when": [ { "item": "n", "operator": ">=", "value": 3 },
                               { "item": "d", "operator": "<", "value": 2.5 },
                               { "item": "day", "operator": ">", "value": "2024-02-29" },
                               { "item": "t", "operator": "!=", "value": "x" },
                               { "item": "s", "operator": "<=", "value": 4 },
                               { "item": "n", "operator": "exists", "value": false } ],
              "enable_behavior": "any" },
            { "id": "b", "text": "B", "type": "boolean",
              "enable_when": { "item": "a", "operator": "exists" }, "enable_behavior": "any" }
        ],
        "translations": { "en": { "title": "Shapes EN", "items": { "d": { "unit": "mg EN" } } } }
    })
    .to_string();
    let q = Definition::parse_strict(&json).unwrap();
    let q = q.questionnaire().unwrap();
    let fhir = to_fhir_json(q, PublicationStatus::Draft).unwrap();
    let f: Value = serde_json::from_str(&fhir).unwrap();
    let a = item(&f, "a");
    assert_eq!(a["enableWhen"][1]["answerDecimal"], 2.5);
    assert_eq!(a["enableWhen"][2]["answerDate"], "2024-02-29");
    assert_eq!(a["enableWhen"][3]["answerString"], "x");
    assert_eq!(a["enableWhen"][5]["answerBoolean"], false);
    assert_eq!(item(&f, "b")["enableBehavior"], "any");
    assert_eq!(ext(item(&f, "s"), EXT_MAX_VALUE)["valueInteger"], 7);
    let back = from_fhir_json(&fhir, &ImportOptions::default()).unwrap();
    assert_eq!(back.questionnaire, **q);
}
