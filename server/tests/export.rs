//! Exports: FHIR output parses back resource by resource and every reference resolves inside
//! the export; the CSV reads back with the counts of the stored documents and of the read model; free text and exact dates appear
//! in an identified export and in no default export; ids differ between exports; a coordinator
//! cannot export another clinic; every export is audited; the admin API streams a zip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod rm_cases;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;

use fhir_model::r4b::resources::{
    AdverseEvent, Organization, Patient, Procedure, QuestionnaireResponse, ResearchStudy,
    ResearchSubject, Resource,
};
use followup_domain::ids::RecordId;
use followup_domain::model::RecordKind;
use followup_server::export::{
    export_from_storage, DirSink, ExportError, ExportFormat, ExportRequest, ExportSummary,
    Requester, ShippedDefinitions, StaffRole, ZipSink,
};
use followup_server::storage::{SqliteStorage, Storage};
use followup_testkit::synthetic::{populate, Spec, Written};

const NOW: i64 = 1_764_547_200_000; // 2025-12-01

fn admin() -> Requester {
    Requester {
        who: "admin@registry".into(),
        role: StaffRole::RegistryAdmin,
    }
}

fn registry(spec: &Spec) -> (tempfile::TempDir, SqliteStorage, Written) {
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open(dir.path()).unwrap();
    let written = populate(&storage, spec, 200).unwrap();
    (dir, storage, written)
}

fn request(format: ExportFormat, identified: bool) -> ExportRequest {
    ExportRequest {
        format,
        clinic: None,
        since: None,
        identified,
    }
}

fn export_dir(
    storage: &dyn Storage,
    who: &Requester,
    req: ExportRequest,
) -> (tempfile::TempDir, ExportSummary) {
    let out = tempfile::tempdir().unwrap();
    let mut sink = DirSink::create(&out.path().join("x")).unwrap();
    let summary =
        export_from_storage(storage, &ShippedDefinitions, who, req, NOW, &mut sink).unwrap();
    (out, summary)
}

fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let headers = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|x| x.unwrap().iter().map(String::from).collect())
        .collect();
    (headers, rows)
}

fn col(headers: &[String], name: &str) -> usize {
    headers
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {headers:?}"))
}

/// Every file of an export, concatenated.
fn all_text(dir: &Path) -> String {
    let mut s = String::new();
    for e in std::fs::read_dir(dir).unwrap() {
        s.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap());
        s.push('\n');
    }
    s
}

fn parse_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<(T, serde_json::Value)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let typed: T =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display()));
            // And as the crate's polymorphic Resource.
            let _: Resource = serde_json::from_str(l).unwrap();
            (typed, serde_json::from_str(l).unwrap())
        })
        .collect()
}

fn references(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == "reference" {
                    out.push(x.as_str().unwrap().to_string());
                } else {
                    references(x, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| references(x, out)),
        _ => {}
    }
}

#[test]
fn fhir_parses_back_resource_by_resource_and_every_reference_resolves() {
    for identified in [false, true] {
        let spec = Spec::default();
        let (_d, storage, written) = registry(&spec);
        let (out, summary) =
            export_dir(&storage, &admin(), request(ExportFormat::Fhir, identified));
        let dir = out.path().join("x");
        let mut ids: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        let mut values = Vec::new();
        macro_rules! load {
            ($t:ty, $name:literal) => {{
                let rows = parse_lines::<$t>(&dir.join(concat!($name, ".ndjson")));
                for (r, v) in &rows {
                    let id = r.id.clone().expect("every resource has an id");
                    assert!(ids.entry($name).or_default().insert(id), "duplicate id");
                    assert_eq!(v["resourceType"], $name);
                    values.push(v.clone());
                }
                rows.len() as u64
            }};
        }
        assert_eq!(load!(ResearchStudy, "ResearchStudy"), 1);
        assert_eq!(load!(Organization, "Organization"), spec.clinics as u64);
        assert_eq!(load!(Patient, "Patient"), written.patients);
        assert_eq!(load!(ResearchSubject, "ResearchSubject"), written.patients);
        assert_eq!(load!(Procedure, "Procedure"), written.procedures);
        assert_eq!(
            load!(QuestionnaireResponse, "QuestionnaireResponse"),
            written.responses
        );
        assert_eq!(load!(AdverseEvent, "AdverseEvent"), written.adverse_events);
        assert_eq!(
            summary.files["QuestionnaireResponse.ndjson"],
            written.responses
        );

        let mut refs = Vec::new();
        for v in &values {
            references(v, &mut refs);
        }
        assert!(refs.len() as u64 > written.responses * 2, "{}", refs.len());
        for r in &refs {
            let (t, id) = r.split_once('/').unwrap();
            assert!(
                ids.get(t).is_some_and(|s| s.contains(id)),
                "reference {r} does not resolve inside the export"
            );
        }
        // Each response names its questionnaire version canonically, is part of its procedure,
        // and carries the adjudication as the suspect procedure's causality.
        let qr = std::fs::read_to_string(dir.join("QuestionnaireResponse.ndjson")).unwrap();
        let first: serde_json::Value = serde_json::from_str(qr.lines().next().unwrap()).unwrap();
        assert!(first["questionnaire"]
            .as_str()
            .unwrap()
            .ends_with("/Questionnaire/clinician-followup|1.0.0"));
        assert!(first["partOf"][0]["reference"]
            .as_str()
            .unwrap()
            .starts_with("Procedure/prc-"));
        let ae = std::fs::read_to_string(dir.join("AdverseEvent.ndjson")).unwrap();
        let ae: serde_json::Value = serde_json::from_str(ae.lines().next().unwrap()).unwrap();
        assert_eq!(
            ae["suspectEntity"][0]["causality"][0]["assessment"]["coding"][1]["code"],
            "Probably-Likely"
        );
        assert_eq!(ae["severity"]["coding"][0]["code"], "severe");
        assert!(std::fs::read_to_string(dir.join("README.txt"))
            .unwrap()
            .contains(if identified {
                "IDENTIFIED EXPORT"
            } else {
                "De-identification applied"
            }));
    }
}

#[test]
fn csv_reads_back_with_the_registry_counts_and_a_complete_dictionary() {
    let spec = Spec {
        clinics: 2,
        patients_per_clinic: 8,
        responses_per_patient: 4,
        ..Spec::default()
    };
    let (_d, storage, written) = registry(&spec);
    let (out, summary) = export_dir(&storage, &admin(), request(ExportFormat::Csv, false));
    let dir = out.path().join("x");
    let rows = |f: &str| read_csv(&dir.join(f)).1.len() as u64;
    // The counts the registry holds (documents by kind) are the rows read back.
    // The documents the registry holds, counted by kind straight from storage.
    let stored = |kind: RecordKind| {
        let q = followup_server::storage::ExportDocsQuery {
            kind,
            clinic: None,
            since_ms: None,
        };
        let mut n = 0u64;
        let mut after = None;
        loop {
            let page = storage.export_docs_page(&q, after, 100).unwrap();
            n += page.len() as u64;
            match page.last() {
                Some(d) => after = Some(d.header.id),
                None => break,
            }
        }
        n
    };
    assert_eq!(rows("clinics.csv"), stored(RecordKind::Clinic));
    assert_eq!(rows("patients.csv"), stored(RecordKind::Enrolment));
    assert_eq!(rows("procedures.csv"), stored(RecordKind::Procedure));
    assert_eq!(rows("responses.csv"), stored(RecordKind::Response));
    assert_eq!(rows("adverse_events.csv"), stored(RecordKind::AdverseEvent));
    assert_eq!(rows("adjudications.csv"), stored(RecordKind::Adjudication));
    // And the counts of the read model, table by table.
    use followup_server::readmodel::query::{rows as rm_rows, ExportTable};
    let rm = |t: ExportTable| {
        let mut n = 0u64;
        for row in rm_rows(&storage, t, None, 100) {
            row.unwrap();
            n += 1;
        }
        n
    };
    assert_eq!(rows("clinics.csv"), rm(ExportTable::Clinics));
    assert_eq!(rows("patients.csv"), rm(ExportTable::Enrolments));
    assert_eq!(rows("procedures.csv"), rm(ExportTable::Procedures));
    assert_eq!(rows("responses.csv"), rm(ExportTable::Responses));
    assert_eq!(rows("adverse_events.csv"), rm(ExportTable::AdverseEvents));
    assert_eq!(rows("adjudications.csv"), rm(ExportTable::Adjudications));
    assert_eq!(rows("patients.csv"), written.patients);
    assert_eq!(rows("responses.csv"), written.responses);
    let qfile = "responses__clinician-followup__1.0.0.csv";
    assert_eq!(rows(qfile), written.responses);
    assert_eq!(summary.records["response"], written.responses);

    // One column per item (multiple choice: one per choice), coded values.
    let (h, r) = read_csv(&dir.join(qfile));
    let q = followup_domain::questionnaire::instrument_ref("clinician-followup").unwrap();
    for item in q.items() {
        use followup_domain::questionnaire::ItemType::*;
        match item.item_type {
            MultipleChoice => {
                for c in &item.choices {
                    col(&h, &format!("{}___{}", item.id, c.code));
                }
            }
            Date => {
                col(&h, &format!("{}_year", item.id));
                col(&h, &format!("{}_day", item.id));
                assert!(!h.contains(&item.id));
            }
            Text => assert!(!h.contains(&item.id), "free text column {}", item.id),
            _ => {
                col(&h, &item.id);
            }
        }
    }
    let mode = col(&h, "visit_mode");
    let codes: BTreeSet<&str> = q
        .item("visit_mode")
        .unwrap()
        .choices
        .iter()
        .map(|c| c.code.as_str())
        .collect();
    assert!(r.iter().all(|row| codes.contains(row[mode].as_str())));
    // Visit dates are day offsets from the procedure: the visits are at 7, 30, 91, ... days.
    let day = col(&h, "visit_date_day");
    let visit = col(&h, "visit");
    for row in &r {
        let expect = match row[visit].as_str() {
            "d7" => "7",
            "m1" => "30",
            "m3" => "91",
            "m6" => "182",
            other => panic!("visit {other}"),
        };
        assert_eq!(row[day], expect);
    }

    // The dictionary names every item of the questionnaire with its type, choices and range.
    let (dh, drows) = read_csv(&dir.join("data_dictionary.csv"));
    let (file, var, choices, min, max) = (
        col(&dh, "file"),
        col(&dh, "variable"),
        col(&dh, "choices"),
        col(&dh, "min"),
        col(&dh, "max"),
    );
    let in_dict: HashMap<&str, &Vec<String>> = drows
        .iter()
        .filter(|row| row[file] == qfile)
        .map(|row| (row[var].as_str(), row))
        .collect();
    for item in q.items() {
        let key = match item.item_type {
            followup_domain::questionnaire::ItemType::Date => format!("{}_year", item.id),
            followup_domain::questionnaire::ItemType::MultipleChoice => {
                format!("{}___{}", item.id, item.choices[0].code)
            }
            _ => item.id.clone(),
        };
        assert!(
            in_dict.contains_key(key.as_str()),
            "{key} not in the dictionary"
        );
    }
    assert!(in_dict["visit_mode"][choices].contains("in_person, In person"));
    assert_eq!(in_dict["heart_rate"][min], "20");
    assert_eq!(in_dict["heart_rate"][max], "250");
    // Every column of every file is in the dictionary.
    for f in std::fs::read_dir(&dir).unwrap() {
        let p = f.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if !name.ends_with(".csv") || name == "data_dictionary.csv" {
            continue;
        }
        for h in read_csv(&p).0 {
            if QFILE_KEYS.contains(&h.as_str()) && name.starts_with("responses__") {
                continue;
            }
            assert!(
                drows.iter().any(|row| row[file] == name && row[var] == h),
                "{name}:{h} is not in the dictionary"
            );
        }
    }
    // RFC 4180 line ends.
    let raw = std::fs::read(dir.join("patients.csv")).unwrap();
    assert!(raw.windows(2).any(|w| w == b"\r\n"));
}

const QFILE_KEYS: [&str; 6] = [
    "response_id",
    "patient_id",
    "procedure_id",
    "visit",
    "status",
    "completed_by",
];

#[test]
fn free_text_and_exact_dates_only_in_identified_exports() {
    let spec = Spec::default();
    let (_d, storage, written) = registry(&spec);
    let canary = spec.canary.clone();
    let date_re = |s: &str| -> BTreeSet<String> {
        // Every YYYY-MM-DD in the text.
        let b = s.as_bytes();
        let mut out = BTreeSet::new();
        for i in 0..b.len().saturating_sub(9) {
            let w = &b[i..i + 10];
            if w[4] == b'-'
                && w[7] == b'-'
                && w.iter()
                    .enumerate()
                    .all(|(j, c)| j == 4 || j == 7 || c.is_ascii_digit())
            {
                out.insert(String::from_utf8_lossy(w).to_string());
            }
        }
        out
    };
    let device_hex: Vec<String> = written.clinics.iter().map(|c| c.to_hex()).collect();
    for format in [ExportFormat::Csv, ExportFormat::Fhir] {
        let (out, _) = export_dir(&storage, &admin(), request(format, false));
        let text = all_text(&out.path().join("x"));
        assert!(!text.contains(&canary), "{format:?}: free text leaked");
        for d in &written.procedure_dates {
            assert!(
                !text.contains(d.as_str()),
                "{format:?}: exact date {d} leaked"
            );
        }
        // The only full dates are the clinic's accreditation and the export's own date.
        let dates = date_re(&text);
        assert!(
            dates.iter().all(|d| d == "2019-05-01" || d == "2025-12-01"),
            "{format:?}: {dates:?}"
        );
        for hex in &device_hex {
            assert!(
                !text.contains(hex.as_str()),
                "{format:?}: a registry id leaked"
            );
        }
        assert!(!text.contains("KX-"), "{format:?}: a study code leaked");

        let (out, _) = export_dir(&storage, &admin(), request(format, true));
        let text = all_text(&out.path().join("x"));
        assert!(
            text.contains(&canary),
            "{format:?}: identified export lost free text"
        );
        for d in &written.procedure_dates {
            assert!(
                text.contains(d.as_str()),
                "{format:?}: identified export lost {d}"
            );
        }
        assert!(text.contains(&device_hex[0]));
    }
}

#[test]
fn ids_cannot_be_joined_across_exports_and_ages_over_89_are_grouped() {
    let spec = Spec {
        patients_per_clinic: 8,
        ..Spec::default()
    };
    let (_d, storage, _) = registry(&spec);
    let ids = |_: ()| {
        let (out, _) = export_dir(&storage, &admin(), request(ExportFormat::Csv, false));
        let (h, rows) = read_csv(&out.path().join("x/patients.csv"));
        let (id, by, age, over) = (
            col(&h, "patient_id"),
            col(&h, "birth_year"),
            col(&h, "age_at_procedure"),
            col(&h, "age_90_or_over"),
        );
        for r in &rows {
            if r[over] == "1" {
                assert_eq!(r[by], "", "birth year of a 90+ patient");
                // The age at the procedure would give the birth year back with the year.
                assert_eq!(r[age], "");
            } else {
                assert!(r[by].parse::<i32>().unwrap() >= 1950);
                let a = r[age].parse::<i32>().unwrap();
                assert!((15..80).contains(&a), "{a}");
            }
        }
        assert!(rows.iter().any(|r| r[over] == "1"));
        rows.iter().map(|r| r[id].clone()).collect::<BTreeSet<_>>()
    };
    let a = ids(());
    let b = ids(());
    assert_eq!(a.len(), b.len());
    assert!(a.is_disjoint(&b), "two exports share patient ids");
}

#[test]
fn a_coordinator_exports_their_clinic_only_and_every_export_is_audited() {
    let spec = Spec::default();
    let (_d, storage, written) = registry(&spec);
    let (a, b) = (written.clinics[0], written.clinics[1]);
    let coord = Requester {
        who: "coord@clinic-a".into(),
        role: StaffRole::ClinicCoordinator { clinic: a },
    };
    let audit_before = storage.stats().unwrap().audit_entries;
    let out = tempfile::tempdir().unwrap();
    for (clinic, identified) in [(Some(b), false), (Some(a), true), (None, true)] {
        let mut sink = DirSink::create(&out.path().join("refused")).unwrap();
        let r = export_from_storage(
            &storage,
            &ShippedDefinitions,
            &coord,
            ExportRequest {
                clinic,
                ..request(ExportFormat::Csv, identified)
            },
            NOW,
            &mut sink,
        );
        assert!(matches!(r, Err(ExportError::Forbidden(_))), "{r:?}");
        assert!(sink.files().is_empty());
    }
    assert_eq!(storage.stats().unwrap().audit_entries, audit_before);

    // Without a clinic, the coordinator gets their own clinic and nothing of the other.
    let (out, summary) = export_dir(&storage, &coord, request(ExportFormat::Csv, false));
    let dir = out.path().join("x");
    assert_eq!(
        summary.records["enrolment"],
        spec.patients_per_clinic as u64
    );
    let (h, rows) = read_csv(&dir.join("patients.csv"));
    let clinic_ids: BTreeSet<&String> = rows.iter().map(|r| &r[col(&h, "clinic_id")]).collect();
    assert_eq!(clinic_ids.len(), 1);
    assert_eq!(read_csv(&dir.join("clinics.csv")).1.len(), 1);
    assert_eq!(read_csv(&dir.join("clinics.csv")).1[0][1], "Clinic 0");

    // The export is in the audit log: who, scope, options; the chain still verifies.
    let rows = storage.audit_rows(audit_before, 100).unwrap();
    let exports: Vec<_> = rows.iter().filter(|r| r.entry.event == "export").collect();
    assert_eq!(exports.len(), 1);
    let e = &exports[0].entry;
    assert_eq!(e.doc, Some(a));
    assert!(e.detail.contains("who=coord@clinic-a"), "{}", e.detail);
    assert!(e.detail.contains("role=clinic_coordinator"), "{}", e.detail);
    assert!(e.detail.contains("format=csv"), "{}", e.detail);
    assert!(e.detail.contains("identified=false"), "{}", e.detail);
    assert!(followup_server::audit::verify(&storage).unwrap().ok);
}

#[test]
fn since_limits_responses_and_keeps_every_reference_resolvable() {
    let spec = Spec::default();
    let (_d, storage, _) = registry(&spec);
    // Everything was written "now" (the server's clock): a since in the future selects no
    // response, but clinics, patients and procedures stay complete.
    let (out, summary) = export_dir(
        &storage,
        &admin(),
        ExportRequest {
            since: chrono::NaiveDate::from_ymd_opt(2999, 1, 1),
            ..request(ExportFormat::Fhir, false)
        },
    );
    assert_eq!(summary.files["QuestionnaireResponse.ndjson"], 0);
    assert_eq!(summary.files["AdverseEvent.ndjson"], 0);
    assert!(summary.files["Patient.ndjson"] > 0);
    assert!(std::fs::read_to_string(out.path().join("x/README.txt"))
        .unwrap()
        .contains("on or after 2999-01-01"));
}

#[test]
fn a_zip_export_holds_the_same_files() {
    let spec = Spec::default();
    let (_d, storage, written) = registry(&spec);
    let mut buf = Vec::new();
    let summary = export_from_storage(
        &storage,
        &ShippedDefinitions,
        &admin(),
        request(ExportFormat::Csv, false),
        NOW,
        &mut ZipSink::new(&mut buf, "folder"),
    )
    .unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(buf)).unwrap();
    let names: BTreeSet<String> = zip.file_names().map(String::from).collect();
    for f in summary.files.keys() {
        assert!(
            names.contains(&format!("folder/{f}")),
            "{f} not in {names:?}"
        );
    }
    assert!(names.contains("folder/README.txt"));
    let mut s = String::new();
    zip.by_name("folder/responses.csv")
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s.lines().count() as u64, written.responses + 1);
}

#[tokio::test]
async fn the_admin_api_streams_an_audited_zip_and_refuses_bad_requests() {
    let t = common::start().await;
    let clinic = t.create_clinic("Clinica Norte").await;
    let r = t
        .admin_get(&format!(
            "/v1/admin/export?format=fhir&clinic={}",
            clinic.to_hex()
        ))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/zip");
    let bytes = r.bytes().await.unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let org = zip
        .file_names()
        .find(|n| n.ends_with("/Organization.ndjson"))
        .unwrap()
        .to_string();
    let mut s = String::new();
    zip.by_name(&org).unwrap().read_to_string(&mut s).unwrap();
    let o: Organization = serde_json::from_str(s.lines().next().unwrap()).unwrap();
    assert_eq!(o.name.as_deref(), Some("Clinica Norte"));

    assert_eq!(
        t.admin_get("/v1/admin/export?format=xml").await.status(),
        400
    );
    assert_eq!(
        t.admin_get(&format!(
            "/v1/admin/export?format=csv&clinic={}",
            RecordId::random().to_hex()
        ))
        .await
        .status(),
        404
    );
    let unauth = t
        .http
        .get(t.url("/v1/admin/export?format=csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), 401);
    let rows = t.server.storage().audit_rows(0, 1000).unwrap();
    assert_eq!(rows.iter().filter(|r| r.entry.event == "export").count(), 1);
}

/// A field two tablets set to different values is exported with the value the registry shows,
/// and named: in the CSV column `conflicted_fields`, in a FHIR `conflicted-field` extension, and
/// counted in the README. Records without a conflict name nothing.
#[test]
fn conflicted_fields_are_named_in_csv_and_fhir() {
    use followup_domain::model::{AdverseEvent, FollowupResponse, Procedure};
    use followup_domain::questionnaire::AnswerValue;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let s: Arc<dyn Storage> = Arc::new(SqliteStorage::open(dir.path()).unwrap());
    let mut reg = rm_cases::Registry::new(s.clone());
    let a = reg.clinic("Clinic A");
    let mut t1 = reg.tablet(a);
    let mut t2 = reg.tablet(a);
    let p = t1.create(None, &rm_cases::enrolment("KX-1"));
    let pr = t1.create(Some(p), &rm_cases::procedure("2026-01-01"));
    let r = t1.create(Some(p), &rm_cases::response(pr, "d7", true));
    let ae = t1.create(Some(p), &rm_cases::adverse_event(2, false, Some(pr)));
    t1.push(&*s, reg.now_ms);
    t2.pull(&*s);
    t1.edit::<FollowupResponse>(r, |b| {
        b.answers
            .insert("q03".into(), AnswerValue::Text("moderate".into()));
    });
    t2.edit::<FollowupResponse>(r, |b| {
        b.answers
            .insert("q03".into(), AnswerValue::Text("severe".into()));
    });
    t1.edit::<Procedure>(pr, |b| b.date = "2026-01-02".into());
    t2.edit::<Procedure>(pr, |b| b.date = "2026-01-03".into());
    t1.edit::<AdverseEvent>(ae, |b| b.severity = 3);
    t2.edit::<AdverseEvent>(ae, |b| b.severity = 4);
    reg.tick(1);
    t1.push(&*s, reg.now_ms);
    t2.push(&*s, reg.now_ms);

    let (out, summary) = export_dir(&*s, &admin(), request(ExportFormat::Csv, false));
    let x = out.path().join("x");
    let conflicted = |file: &str| -> Vec<String> {
        let (h, rows) = read_csv(&x.join(file));
        let c = col(&h, "conflicted_fields");
        rows.iter().map(|r| r[c].clone()).collect()
    };
    assert_eq!(conflicted("responses.csv"), ["answers.q03"]);
    assert_eq!(conflicted("procedures.csv"), ["date"]);
    assert_eq!(conflicted("adverse_events.csv"), ["severity"]);
    assert_eq!(
        conflicted("patients.csv"),
        [""],
        "the patient has no conflict"
    );
    // The row has one of the two values, as the registry shows it.
    let (h, rows) = read_csv(&x.join("adverse_events.csv"));
    assert!(["3", "4"].contains(&rows[0][col(&h, "severity_grade")].as_str()));
    assert_eq!(
        summary.conflicted,
        BTreeMap::from([
            ("adverse_event".to_string(), 1),
            ("procedure".to_string(), 1),
            ("response".to_string(), 1),
        ])
    );
    let readme = std::fs::read_to_string(x.join("README.txt")).unwrap();
    assert!(
        readme.contains("Records with conflicted fields"),
        "{readme}"
    );
    let dictionary = std::fs::read_to_string(x.join("data_dictionary.csv")).unwrap();
    assert!(dictionary.contains("conflicted_fields"));

    let (out, _) = export_dir(&*s, &admin(), request(ExportFormat::Fhir, false));
    let x = out.path().join("x");
    let named = |file: &str| -> Vec<String> {
        parse_lines::<serde_json::Value>(&x.join(file))
            .iter()
            .flat_map(|(_, v)| v["extension"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["url"].as_str().unwrap().ends_with("/conflicted-field"))
            .map(|e| e["valueString"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(named("QuestionnaireResponse.ndjson"), ["answers.q03"]);
    assert_eq!(named("Procedure.ndjson"), ["date"]);
    assert_eq!(named("AdverseEvent.ndjson"), ["severity"]);
    assert!(named("Patient.ndjson").is_empty());
}
