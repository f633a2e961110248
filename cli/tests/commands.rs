//! The `followup` binary against a registry server started in-process on 127.0.0.1: the staff
//! commands, a device's whole life (init, enrol, add a patient and a procedure, fill, due,
//! report an adverse event, sync, conflicts), and the error messages a user meets.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use followup_server::{Config, RunningServer, Server};

const TOKEN: &str = "cli-test-admin-token-0123456789";
const PASS: &str = "correct horse battery staple";

struct Registry {
    rt: tokio::runtime::Runtime,
    server: Option<RunningServer>,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = rt
            .block_on(Server::start(Config::for_tests(
                dir.path().join("registry"),
                Some(TOKEN),
            )))
            .unwrap();
        Registry {
            rt,
            server: Some(server),
            data: dir.path().join("registry"),
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        self.server.as_ref().unwrap().url()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = self.rt.block_on(s.shutdown());
        }
    }
}

/// Run the binary with a clean environment for its variables.
fn followup(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_followup"));
    for v in [
        "FOLLOWUP_PASSPHRASE",
        "FOLLOWUP_STORE",
        "FOLLOWUP_SERVER_URL",
        "FOLLOWUP_ADMIN_TOKEN",
        "FOLLOWUP_LISTEN",
        "FOLLOWUP_DATA_DIR",
        "FOLLOWUP_USER",
        "FOLLOWUP_PIN",
        "FOLLOWUP_NEW_PIN",
    ] {
        cmd.env_remove(v);
    }
    // Test-only: a fast key derivation for the stores `device init` creates here.
    cmd.env("FOLLOWUP_TEST_PBKDF2_ITERATIONS", "1000");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the followup binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed: {}\nstdout: {}",
        stderr(&o),
        stdout(&o)
    );
    stdout(&o)
}

#[track_caller]
fn fails(o: Output) -> String {
    assert!(
        !o.status.success(),
        "command should fail; stdout: {}",
        stdout(&o)
    );
    let err = stderr(&o);
    let last = err.lines().last().unwrap_or_default().to_string();
    assert!(
        last.starts_with("followup: "),
        "the error ends with one followup: line: {err}"
    );
    err
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn staff(reg: &Registry, args: &[&str]) -> serde_json::Value {
    let url = reg.url();
    let mut all = vec!["server"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--server", &url, "--json"]);
    json(&ok(followup(&all, &[("FOLLOWUP_ADMIN_TOKEN", TOKEN)])))
}

struct Store {
    path: PathBuf,
}

impl Store {
    /// Run with extra environment variables (a user's PIN...).
    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let store = self.path.to_string_lossy().into_owned();
        let mut all = vec!["device", "--store", &store];
        all.extend_from_slice(args);
        let mut vars = vec![("FOLLOWUP_PASSPHRASE", PASS)];
        vars.extend_from_slice(env);
        followup(&all, &vars)
    }

    fn run(&self, args: &[&str]) -> Output {
        let store = self.path.to_string_lossy().into_owned();
        let mut all = vec!["device", "--store", &store];
        all.extend_from_slice(args);
        followup(&all, &[("FOLLOWUP_PASSPHRASE", PASS)])
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

const PROCEDURE: &str = r#"{"date":"2026-01-05","condition":"knee osteoarthritis","procedure_type":"cell injection",
"route":"intra_articular","cell_type":"mesenchymal","source_tissue":"adipose","origin":"autologous",
"manipulation":"minimal","regulatory_status":"unregulated","trial_registration":null,
"promised_benefits":[],"cost":null}"#;

const GOOD_ANSWERS: &str = r#"{"visit_date":"2026-01-12","visit_mode":"in_person","condition_status":"improved",
"symptom_primary":3,"symptom_pain":2,"symptom_fatigue":4,"ecog":"1","complications_any":false,
"hospitalised":false,"further_cell_therapy":false}"#;

#[test]
fn staff_and_device_happy_path() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();

    // Registry staff: a clinic and a tablet's enrolment code.
    let clinic = staff(
        &reg,
        &["create-clinic", "--name", "Clinica Sol", "--country", "mx"],
    );
    let clinic = clinic["clinic"].as_str().unwrap().to_string();
    let code = staff(&reg, &["issue-code", "--clinic", &clinic]);
    let code = code["code"].as_str().unwrap().to_string();

    // The tablet.
    let tablet = Store {
        path: dir.path().join("tablet.db"),
    };
    assert!(ok(tablet.run(&["init"])).contains("store created"));
    let out = ok(tablet.run(&["enrol", "--server", &reg.url(), "--code", &code]));
    assert!(out.contains("enrolled as clinic device"), "{out}");
    let device_id = out
        .split_whitespace()
        .find(|w| w.len() == 32 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap()
        .to_string();
    ok(tablet.run(&[
        "add-patient",
        "--study-code",
        "KX-1",
        "--birth-year",
        "1961",
        "--sex",
        "female",
        "--consent-date",
        "2026-01-05",
    ]));
    let proc_file = write(dir.path(), "procedure.json", PROCEDURE);
    ok(tablet.run(&["add-procedure", "--patient", "KX-1", "--file", &proc_file]));

    // The day-7 visit is due; fill it; it is done.
    let due = ok(tablet.run(&["due", "--as-of", "2026-01-12"]));
    assert!(due.contains("d7") && due.contains("KX-1"), "{due}");
    let answers = write(dir.path(), "answers.json", GOOD_ANSWERS);
    let out = ok(tablet.run(&[
        "fill",
        "--patient",
        "KX-1",
        "--questionnaire",
        "clinician-followup",
        "--visit",
        "d7",
        "--answers",
        &answers,
    ]));
    assert!(out.contains("response saved"), "{out}");
    let due = json(&ok(tablet.run(&["due", "--as-of", "2026-01-12", "--json"])));
    assert!(
        due.as_array().unwrap().iter().all(|v| v["visit"] != "d7"),
        "{due}"
    );
    let out = ok(tablet.run(&[
        "report-ae",
        "--patient",
        "KX-1",
        "--category",
        "infection",
        "--onset",
        "2026-01-20",
        "--severity",
        "2",
        "--description",
        "redness at the injection site",
    ]));
    assert!(out.contains("adverse event reported"), "{out}");
    let queue = json(&ok(tablet.run(&["queue", "--json"])));
    assert_eq!(queue.as_array().unwrap().len(), 1);

    // Sync: enrolment, procedure, response, adverse event go up; the clinic record comes down.
    let report = json(&ok(tablet.run(&["sync", "--json"])));
    assert_eq!(report["pushed"], 4, "{report}");
    assert!(report["round_trips"].as_u64().unwrap() <= 2);
    assert!(report["rejected"].as_array().unwrap().is_empty());
    let patients = json(&ok(tablet.run(&["patients", "--json"])));
    assert_eq!(patients[0]["study_code"], "KX-1");
    assert_eq!(patients[0]["responses"], 1);
    assert!(ok(tablet.run(&["conflicts"])).contains("no conflicts"));
    assert!(ok(tablet.run(&["status"])).contains("unsynced   0"));

    // The registry's view: the four pushed records, the clinic, the adjudication case the
    // registry opened when it accepted the adverse event, and the built-in definitions it
    // published at its first start.
    let documents = 6 + followup_domain::definitions::builtin_definitions().len();
    let stats = staff(&reg, &["stats"]);
    assert_eq!(stats["documents"], documents, "{stats}");
    let audit = staff(&reg, &["verify-audit"]);
    assert_eq!(audit["ok"], true);
    // The read model re-derived from the stored documents, beside the running server.
    let data = reg.data.to_string_lossy().into_owned();
    let rebuilt = json(&ok(followup(
        &["server", "rebuild-read-model", "--data", &data, "--json"],
        &[],
    )));
    assert_eq!(rebuilt["documents"], documents, "{rebuilt}");
    assert_eq!(rebuilt["problems"], 0, "{rebuilt}");
    let nowhere = fails(followup(
        &[
            "server",
            "rebuild-read-model",
            "--data",
            "/nonexistent/registry",
        ],
        &[],
    ));
    assert!(nowhere.contains("no registry database"), "{nowhere}");

    // Revoked: the device's next sync is refused with a clear message.
    let r = staff(&reg, &["revoke-device", &device_id]);
    assert_eq!(r["newly_revoked"], true);
    let err = fails(tablet.run(&["sync"]));
    assert!(err.contains("revoked"), "{err}");
}

#[test]
fn a_wrong_passphrase_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store {
        path: dir.path().join("d.db"),
    };
    ok(store.run(&["init"]));
    let path = store.path.to_string_lossy().into_owned();
    let err = fails(followup(
        &["device", "--store", &path, "patients"],
        &[("FOLLOWUP_PASSPHRASE", "not the passphrase")],
    ));
    assert!(err.contains("wrong passphrase"), "{err}");
    assert!(
        err.contains("FOLLOWUP_PASSPHRASE"),
        "says what to do: {err}"
    );
    // And a store that does not exist says how to make one.
    let err = fails(followup(
        &["device", "--store", "/nonexistent/x.db", "patients"],
        &[("FOLLOWUP_PASSPHRASE", PASS)],
    ));
    assert!(err.contains("followup device init"), "{err}");
}

#[test]
fn a_server_that_is_down_is_reported() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let store = Store {
        path: dir.path().join("d.db"),
    };
    ok(store.run(&["init"]));
    let err = fails(store.run(&[
        "enrol",
        "--server",
        &url,
        "--code",
        "AAAA-BBBB-CCCC",
        "--attempts",
        "1",
    ]));
    assert!(err.contains("could not reach the registry"), "{err}");
    assert!(err.contains("check the connection"), "{err}");

    let err = fails(followup(
        &["server", "stats", "--server", &url],
        &[("FOLLOWUP_ADMIN_TOKEN", TOKEN)],
    ));
    assert!(err.contains("cannot reach the registry"), "{err}");
    assert!(err.contains("server is running"), "{err}");

    // An unenrolled store cannot sync, and says how to enrol.
    let err = fails(store.run(&["sync"]));
    assert!(err.contains("not enrolled"), "{err}");
}

#[test]
fn invalid_answers_are_listed_per_item_and_nothing_is_saved() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let clinic = staff(&reg, &["create-clinic", "--name", "C", "--country", "PT"]);
    let code = staff(
        &reg,
        &["issue-code", "--clinic", clinic["clinic"].as_str().unwrap()],
    );
    let tablet = Store {
        path: dir.path().join("t.db"),
    };
    ok(tablet.run(&["init"]));
    ok(tablet.run(&[
        "enrol",
        "--server",
        &reg.url(),
        "--code",
        code["code"].as_str().unwrap(),
    ]));
    ok(tablet.run(&["add-patient", "--study-code", "P-9", "--birth-year", "1970"]));
    let bad = write(
        dir.path(),
        "bad.json",
        r#"{"visit_date":"2026-02-30","symptom_pain":14,"ecog":"9","colour":"blue"}"#,
    );
    let err = fails(tablet.run(&[
        "fill",
        "--patient",
        "P-9",
        "--questionnaire",
        "clinician-followup",
        "--answers",
        &bad,
    ]));
    for item in [
        "symptom_pain",
        "ecog",
        "visit_date",
        "colour",
        "visit_mode",
        "hospitalised",
    ] {
        assert!(
            err.lines()
                .any(|l| l.trim_start().starts_with(&format!("- {item}"))),
            "a line for {item}: {err}"
        );
    }
    assert!(err.contains("nothing was saved"), "{err}");
    let patients = json(&ok(tablet.run(&["patients", "--json"])));
    assert_eq!(patients[0]["responses"], 0);

    // A file that is not JSON at all says what shape it must have.
    let junk = write(dir.path(), "junk.json", "visit_date = yesterday");
    let err = fails(tablet.run(&[
        "fill",
        "--patient",
        "P-9",
        "--questionnaire",
        "clinician-followup",
        "--answers",
        &junk,
    ]));
    assert!(err.contains("not a JSON object of answers"), "{err}");
}

/// Issue 11's acceptance path on the command line: the registry publishes a new version of a
/// form, a tablet enrolled before receives it at its next sync, lists it, and `fill --lang es`
/// checks answers against it with Spanish messages.
#[test]
fn a_published_version_reaches_the_tablet_and_fill_speaks_spanish() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let clinic = staff(&reg, &["create-clinic", "--name", "C", "--country", "ES"]);
    let code = staff(
        &reg,
        &["issue-code", "--clinic", clinic["clinic"].as_str().unwrap()],
    );
    let tablet = Store {
        path: dir.path().join("t.db"),
    };
    ok(tablet.run(&["init"]));
    // Enrolment brings the registry's forms.
    let out = ok(tablet.run(&[
        "enrol",
        "--server",
        &reg.url(),
        "--code",
        code["code"].as_str().unwrap(),
    ]));
    assert!(out.contains("received the registry's forms"), "{out}");
    let versions = |t: &Store| -> Vec<(String, String, String)> {
        let list = json(&ok(t.run(&["questionnaires", "--json"])));
        list.as_array()
            .unwrap()
            .iter()
            .filter(|d| d["id"] == "patient-outcome-survey")
            .map(|d| {
                let langs: Vec<&str> = d["languages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l.as_str().unwrap())
                    .collect();
                (
                    d["version"].as_str().unwrap().to_string(),
                    d["state"].as_str().unwrap().to_string(),
                    langs.join(","),
                )
            })
            .collect()
    };
    assert_eq!(
        versions(&tablet),
        [("1.0.0".into(), "published".into(), "en,es,pt".into())]
    );

    // The registry publishes 1.1.0 with one more required question, translated to Spanish.
    let mut v: serde_json::Value = serde_json::from_str(include_str!(
        "../../domain/instruments/patient-outcome-survey.json"
    ))
    .unwrap();
    v["version"] = "1.1.0".into();
    v["items"].as_array_mut().unwrap().push(serde_json::json!({
        "id": "pain_medicine", "type": "boolean", "required": true,
        "text": "Did you take medicine for pain in the last week?"
    }));
    v["translations"]["es"]["items"]["pain_medicine"] =
        serde_json::json!({"text": "¿Tomó medicamentos para el dolor la última semana?"});
    let file = write(dir.path(), "survey-1.1.0.json", &v.to_string());
    let published = staff(&reg, &["publish", &file]);
    assert_eq!(published["version"], "1.1.0", "{published}");
    // A file the registry cannot read strictly is refused, and nothing is published.
    v["version"] = "1.2.0".into();
    v["colour"] = "blue".into();
    let bad = write(dir.path(), "survey-1.2.0.json", &v.to_string());
    let err = fails(followup(
        &["server", "publish", &bad, "--server", &reg.url()],
        &[("FOLLOWUP_ADMIN_TOKEN", TOKEN)],
    ));
    assert!(err.contains("nothing was published"), "{err}");

    // Not on the tablet until it syncs; then listed beside 1.0.0.
    assert_eq!(versions(&tablet).len(), 1);
    ok(tablet.run(&["sync"]));
    assert_eq!(
        versions(&tablet),
        [
            ("1.0.0".into(), "published".into(), "en,es,pt".into()),
            ("1.1.0".into(), "published".into(), "en,es,pt".into())
        ]
    );
    let table = ok(tablet.run(&["questionnaires"]));
    assert!(
        table
            .lines()
            .any(|l| l.contains("patient-outcome-survey") && l.contains("1.1.0")),
        "{table}"
    );

    // fill --lang es: Spanish messages, from the new version (its new question is missing).
    ok(tablet.run(&["add-patient", "--study-code", "E-1", "--birth-year", "1966"]));
    let bad = write(dir.path(), "bad.json", r#"{"symptom_pain":12}"#);
    let err = fails(tablet.run(&[
        "fill",
        "--patient",
        "E-1",
        "--questionnaire",
        "patient-outcome-survey",
        "--answers",
        &bad,
        "--lang",
        "es",
    ]));
    for line in [
        "- symptom_pain: 12 es mayor que el máximo de 10",
        "- completed_date: la respuesta es obligatoria",
        "- pain_medicine: la respuesta es obligatoria",
    ] {
        assert!(err.contains(line), "{line:?} in: {err}");
    }
    assert!(err.contains("nothing was saved"), "{err}");
    // The same in English without --lang.
    let err = fails(tablet.run(&[
        "fill",
        "--patient",
        "E-1",
        "--questionnaire",
        "patient-outcome-survey",
        "--answers",
        &bad,
    ]));
    assert!(!err.contains("obligatoria"), "{err}");
    assert!(err.contains("- pain_medicine"), "{err}");
}

#[test]
fn nurses_sign_in_on_a_shared_tablet_from_the_command_line() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let clinic = staff(
        &reg,
        &["create-clinic", "--name", "Clinica Sol", "--country", "mx"],
    );
    let clinic = clinic["clinic"].as_str().unwrap().to_string();
    let code = staff(&reg, &["issue-code", "--clinic", &clinic]);
    let code = code["code"].as_str().unwrap().to_string();
    let tablet = Store {
        path: dir.path().join("tablet.db"),
    };
    ok(tablet.run(&["init"]));
    ok(tablet.run(&["enrol", "--server", &reg.url(), "--code", &code]));
    let out = ok(tablet.run(&["user", "list"]));
    assert!(out.contains("no users"), "{out}");

    let ana = staff(
        &reg,
        &["create-user", "--clinic", &clinic, "--name", "Ana Costa"],
    );
    let (ana_id, ana_code) = (
        ana["user"].as_str().unwrap().to_string(),
        ana["activation_code"].as_str().unwrap().to_string(),
    );
    // A weak PIN is refused, and nothing changes.
    let err = fails(tablet.run_env(
        &["user", "add", "--id", &ana_id, "--code", &ana_code],
        &[("FOLLOWUP_NEW_PIN", "123456")],
    ));
    assert!(err.contains("too weak"), "{err}");
    let out = ok(tablet.run_env(
        &["user", "add", "--id", &ana_id, "--code", &ana_code],
        &[("FOLLOWUP_NEW_PIN", "482916")],
    ));
    assert!(
        out.contains("Ana Costa") && out.contains("now has users"),
        "{out}"
    );

    // From now on, no record without signing in.
    let err = fails(tablet.run(&["patients"]));
    assert!(err.contains("sign in") && err.contains("--user"), "{err}");
    let err = fails(tablet.run_env(
        &["--user", "Ana Costa", "patients"],
        &[("FOLLOWUP_PIN", "999999")],
    ));
    assert!(
        err.contains("wrong PIN") && err.contains("9 attempt"),
        "{err}"
    );
    let users = json(&ok(tablet.run(&["user", "list", "--json"])));
    assert_eq!(users["users"][0]["failures"], 1);
    let ana_env = [("FOLLOWUP_USER", "Ana Costa"), ("FOLLOWUP_PIN", "482916")];
    ok(tablet.run_env(
        &[
            "add-patient",
            "--study-code",
            "KX-1",
            "--birth-year",
            "1961",
            "--consent-date",
            "2026-01-05",
        ],
        &ana_env,
    ));
    let out = ok(tablet.run_env(&["patients"], &ana_env));
    assert!(out.contains("KX-1"), "{out}");
    ok(tablet.run_env(&["sync"], &ana_env));
    let rows = staff(&reg, &["users", "--clinic", &clinic]);
    assert_eq!(rows[0]["name"], "Ana Costa");
    assert_eq!(rows[0]["devices"].as_array().unwrap().len(), 1);
    // The last user cannot be removed locally.
    let err = fails(tablet.run_env(&["user", "remove", "Ana Costa"], &ana_env));
    assert!(err.contains("last user"), "{err}");
}
