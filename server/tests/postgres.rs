//! The PostgreSQL backend against a real, throwaway PostgreSQL cluster that each test starts
//! itself (`initdb` + `pg_ctl` on 127.0.0.1, a free port, a temporary directory) and always stops.
//! Without `initdb` on PATH every test prints a loud SKIPPED line and passes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod contract;
mod rm_cases;
mod staff_cases;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use contract::RawDb;
use followup_domain::ids::RecordId;
use followup_domain::protocol::*;
use followup_server::storage::{
    PostgresOptions, PostgresStorage, Storage, StorageError, WriteOutcome,
};
use followup_server::{Config, Server};

// ---------------------------------------------------------------------------------------------
// A throwaway cluster.

/// A PostgreSQL cluster in a temporary directory, stopped (`pg_ctl stop -m immediate`) on drop.
struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Run the server binaries as the `postgres` user (PostgreSQL refuses to run as root).
    as_postgres: bool,
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn current_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

fn id_of(flag: &str, user: &str) -> u32 {
    let out = Command::new("id").args([flag, user]).output().unwrap();
    assert!(
        out.status.success(),
        "no user {user:?} to run PostgreSQL as"
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PgCluster {
    /// Start a cluster, or `None` (after a loud SKIPPED line) when PostgreSQL is not installed.
    fn start(test: &str) -> Option<PgCluster> {
        let Some(initdb) = which("initdb") else {
            // Straight to stderr, past the test harness's capture, so that it is seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED {test}: `initdb` is not on PATH; install PostgreSQL (15) to run the PostgreSQL tests ***\n"
            );
            return None;
        };
        // pg_ctl and postgres beside the real initdb (PATH may hold symlinks).
        let bin = std::fs::canonicalize(&initdb)
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        let as_postgres = current_uid() == Some(0);
        let dir = tempfile::Builder::new()
            .prefix("followup-pg-")
            .tempdir()
            .unwrap();
        if as_postgres {
            std::os::unix::fs::chown(
                dir.path(),
                Some(id_of("-u", "postgres")),
                Some(id_of("-g", "postgres")),
            )
            .unwrap();
        }
        let mut cluster = PgCluster {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        let data = cluster.data();
        let out = cluster
            .command("initdb")
            .args(["-D", data.to_str().unwrap()])
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A free port can be taken between our probe and the server's bind: try a few.
        for attempt in 0..5 {
            cluster.port = free_port();
            let opts = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100",
                cluster.port,
                cluster.dir.path().display()
            );
            let log = cluster.dir.path().join("server.log");
            let out = cluster
                .command("pg_ctl")
                .args(["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap()])
                .args(["-o", &opts, "-w", "-t", "60", "start"])
                .output()
                .unwrap();
            if out.status.success() && cluster.wait_ready(Duration::from_secs(30)) {
                return Some(cluster);
            }
            eprintln!(
                "pg_ctl start attempt {attempt} failed: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            cluster.stop();
        }
        panic!("could not start PostgreSQL");
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        // The postgres user may not be able to enter the test's working directory.
        c.current_dir(self.dir.path());
        c
    }

    /// Accepting connections within `limit`?
    fn wait_ready(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if postgres::Client::connect(&self.url("postgres"), postgres::NoTls).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Create a database; its URL.
    fn create_db(&self, name: &str) -> String {
        let mut c = postgres::Client::connect(&self.url("postgres"), postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        self.url(name)
    }

    fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", self.data().to_str().unwrap_or_default()])
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .output();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A plain client on the test database, to look and to tamper.
struct PgRaw(postgres::Client);

impl PgRaw {
    fn connect(url: &str) -> PgRaw {
        PgRaw(postgres::Client::connect(url, postgres::NoTls).unwrap())
    }
    fn i64s(&mut self, sql: &str) -> Vec<i64> {
        let row = self.0.query_one(sql, &[]).unwrap();
        (0..row.len()).map(|i| row.get::<_, i64>(i)).collect()
    }
}

impl RawDb for PgRaw {
    fn exec(&mut self, sql: &str) -> Result<u64, String> {
        self.0.execute(sql, &[]).map_err(|e| e.to_string())
    }
    fn drop_audit_guards(&mut self) {
        self.0
            .batch_execute("DROP TRIGGER audit_no_update_delete ON audit")
            .unwrap();
    }
}

/// Open the backend off the async runtime (the blocking client runs a runtime of its own).
fn open(url: &str, options: PostgresOptions) -> PostgresStorage {
    PostgresStorage::connect_with(url, options).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The storage contract.

#[test]
fn postgres_storage_contract() {
    let Some(pg) = PgCluster::start("postgres_storage_contract") else {
        return;
    };
    let url = pg.create_db("contract");
    let s = open(&url, PostgresOptions::default());
    let mut raw = PgRaw::connect(&url);
    contract::storage_contract(&s, &mut raw);
    contract::staging_contract(&s);
    // TRUNCATE is refused too (the triggers that remain).
    assert!(raw.exec("TRUNCATE audit").is_err());
}

#[test]
fn postgres_concurrent_writers_on_two_pools() {
    let Some(pg) = PgCluster::start("postgres_concurrent_writers_on_two_pools") else {
        return;
    };
    let url = pg.create_db("concurrent");
    let opts = PostgresOptions {
        max_connections: 4,
        ..PostgresOptions::default()
    };
    // Two pools: two server processes' worth over one database.
    let a: Arc<dyn Storage> = Arc::new(open(&url, opts.clone()));
    let b: Arc<dyn Storage> = Arc::new(open(&url, opts));
    contract::concurrent_writers_contract(&[a, b], 6, 15);
    // The counter row and the log agree, with no gap.
    let mut raw = PgRaw::connect(&url);
    let v = raw.i64s("SELECT (SELECT seq FROM log_head), COALESCE(MAX(seq), 0), COUNT(*) FROM log");
    assert_eq!((v[0], v[0]), (v[1], v[2]), "{v:?}");
}

#[test]
fn postgres_schema_nonces_and_busy() {
    let Some(pg) = PgCluster::start("postgres_schema_nonces_and_busy") else {
        return;
    };
    let url = pg.create_db("misc");
    let fast = PostgresOptions {
        max_connections: 2,
        lock_timeout: Duration::from_millis(300),
        checkout_timeout: Duration::from_millis(300),
        ..PostgresOptions::default()
    };
    // Connecting twice (a second process, a restart) migrates once and keeps the data.
    let s = open(&url, fast.clone());
    let nonce_dev = followup_domain::ids::DeviceId([1; 16]);
    assert!(s.remember_nonce(nonce_dev, &[1; 16], 1_000, 0).unwrap());
    drop(s);
    let s = open(&url, fast.clone());
    assert!(!s.remember_nonce(nonce_dev, &[1; 16], 1_000, 0).unwrap());
    let mut raw = PgRaw::connect(&url);
    assert_eq!(
        raw.i64s("SELECT version::bigint FROM followup_schema"),
        vec![2]
    );
    // A newer schema is refused, not scribbled on.
    raw.exec("UPDATE followup_schema SET version = 99").unwrap();
    match PostgresStorage::connect_with(&url, fast.clone()) {
        Err(StorageError::Internal(m)) => assert!(m.contains("newer"), "{m}"),
        other => panic!("expected a refusal, got {:?}", other.err()),
    }
    raw.exec("UPDATE followup_schema SET version = 2").unwrap();
    // A database an older server made (before the covering index replaced rm_visits_clinic)
    // gets the current indexes at the next start.
    raw.0
        .batch_execute(
            "DROP INDEX rm_visits_counts;
             CREATE INDEX rm_visits_clinic ON rm_visits (clinic);",
        )
        .unwrap();
    drop(open(&url, fast.clone()));
    let indexes = |raw: &mut PgRaw| -> Vec<String> {
        raw.0
            .query(
                "SELECT indexname::text FROM pg_indexes WHERE tablename = 'rm_visits' ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    assert_eq!(
        indexes(&mut raw),
        ["rm_visits_counts", "rm_visits_patient", "rm_visits_pkey"]
    );
    // Once the schema exists, a role with plain DML rights (no CREATE) can run the server.
    raw.0
        .batch_execute(
            "CREATE ROLE app LOGIN;
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app;",
        )
        .unwrap();
    let app_url = url.replace("postgres://postgres@", "postgres://app@");
    let app = open(&app_url, fast.clone());
    assert!(app.remember_nonce(nonce_dev, &[2; 16], 1_000, 0).unwrap());
    drop(app);

    // Nonce expiry: the purge removes exactly the expired ones.
    for i in 0..50u8 {
        let expires = if i < 30 { 2_000 } else { 9_000 };
        assert!(s
            .remember_nonce(nonce_dev, &[100 + i; 16], expires, 0)
            .unwrap());
    }
    // 30 of these and the two above (expired at 1,000).
    assert_eq!(s.purge_expired_nonces(5_000).unwrap(), 32);
    assert_eq!(raw.i64s("SELECT COUNT(*) FROM nonces"), vec![20]);

    // Another process holding the write counter: a writer waits lock_timeout, then is busy.
    let clinic = RecordId::random();
    let h = contract::header(followup_domain::model::RecordKind::Clinic, clinic, None);
    let w = contract::write(&h, b"x", vec![], None, None);
    let mut tx = raw.0.transaction().unwrap();
    tx.execute("SELECT seq FROM log_head WHERE id = 1 FOR UPDATE", &[])
        .unwrap();
    let t = Instant::now();
    assert!(matches!(
        s.commit_writes(std::slice::from_ref(&w), 0),
        Err(StorageError::Busy)
    ));
    assert!(t.elapsed() < Duration::from_secs(5));
    tx.rollback().unwrap();
    assert!(matches!(
        s.commit_writes(std::slice::from_ref(&w), 0).unwrap()[..],
        [WriteOutcome::Committed { seq: 1 }]
    ));

    // A pool with every connection lent out answers busy after checkout_timeout.
    let patient = PostgresOptions {
        lock_timeout: Duration::from_secs(20),
        ..fast
    };
    let s = Arc::new(open(&url, patient));
    let mut lock = raw.0.transaction().unwrap();
    lock.execute("SELECT seq FROM log_head WHERE id = 1 FOR UPDATE", &[])
        .unwrap();
    let mut holders = Vec::new();
    for _ in 0..2 {
        let s = s.clone();
        let w = w.clone();
        // Each holds one of the two connections while it waits on the counter lock.
        holders.push(std::thread::spawn(move || s.commit_writes(&[w], 0)));
    }
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    assert!(matches!(s.max_seq(), Err(StorageError::Busy)));
    assert!(t.elapsed() >= Duration::from_millis(250));
    lock.rollback().unwrap();
    for h in holders {
        // The clinic document exists already: both conflict once the lock is free.
        assert_eq!(h.join().unwrap().unwrap(), vec![WriteOutcome::Conflict]);
    }
    assert_eq!(s.max_seq().unwrap(), 1);
}

// ---------------------------------------------------------------------------------------------
// Two stateless servers over one database.

async fn pg_server(url: &str) -> TestServer {
    let server = Server::start(Config::for_tests_postgres(url, Some(ADMIN)))
        .await
        .unwrap();
    TestServer {
        server,
        dir: tempfile::tempdir().unwrap(),
        http: reqwest::Client::new(),
    }
}

/// Retries `sync_robust` needed: (busy rejections, 503 answers).
static BUSY_REJECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static UNAVAILABLE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sync until nothing is left, riding out 503s and `busy` rejections (the compare-and-set lost
/// too many times to writers on the other server), which a real client retries.
async fn sync_robust(d: &mut TestDevice, s: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "device {} never settled", d.id);
        match d.try_sync_once(s).await {
            Ok(r) => {
                let mut again = r.more;
                for doc in d.docs.values_mut() {
                    match &doc.rejected {
                        Some((RejectCode::Busy, _)) => {
                            BUSY_REJECTIONS.fetch_add(1, Ordering::Relaxed);
                            doc.rejected = None;
                            again = true;
                        }
                        Some((code, m)) => panic!("rejected {code:?}: {m}"),
                        None => {}
                    }
                }
                if !again {
                    return;
                }
            }
            Err((503, _)) => {
                UNAVAILABLE.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err((status, text)) => panic!("sync answered {status}: {text}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_over_one_database_converge() {
    init();
    // The blocking client runs a runtime of its own: keep it off the async threads.
    let cluster = tokio::task::spawn_blocking(|| {
        PgCluster::start("two_servers_over_one_database_converge").map(|pg| {
            let url = pg.create_db("registry");
            (pg, url)
        })
    })
    .await
    .unwrap();
    let Some((_pg, url)) = cluster else {
        return;
    };
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(240), scenario(&url))
        .await
        .expect("the two-server scenario took too long");
    println!("two servers over one database: {:?}", started.elapsed());
}

async fn scenario(url: &str) {
    let servers = Arc::new([pg_server(url).await, pg_server(url).await]);
    assert_ne!(servers[0].server.addr, servers[1].server.addr);

    // A reader that watches the database the whole time: whatever it sees of the log and the
    // audit chain is a prefix with no gap (seq n visible => every seq < n visible).
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let url = url.to_string();
        std::thread::spawn(move || {
            let mut raw = PgRaw::connect(&url);
            let mut checks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let v = raw.i64s(
                    "SELECT COALESCE(MAX(seq), 0), COUNT(*),
                            (SELECT COALESCE(MAX(seq), 0) FROM audit), (SELECT COUNT(*) FROM audit)
                     FROM log",
                );
                assert_eq!((v[0], v[2]), (v[1], v[3]), "a gap was visible: {v:?}");
                checks += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            checks
        })
    };

    const A_TABLETS: usize = 4;
    const B_TABLETS: usize = 2;
    const ROUNDS: usize = 4;
    // Two clinics; tablets at both, enrolled through either server.
    let clinic_a = servers[0].create_clinic("Clinic A").await;
    let clinic_b = servers[1].create_clinic("Clinic B").await;
    let mut devices = Vec::new();
    for i in 0..A_TABLETS + B_TABLETS {
        let clinic = if i < A_TABLETS { clinic_a } else { clinic_b };
        devices.push(
            servers[i % 2]
                .enrol(EnrolmentGrant::ClinicDevice { clinic })
                .await,
        );
    }

    // Round 1: every device records a patient and three responses, all pushing at once,
    // alternately to the two servers.
    let mut tasks = Vec::new();
    for (i, mut d) in devices.into_iter().enumerate() {
        let servers = servers.clone();
        tasks.push(tokio::spawn(async move {
            let p = d.enrolment();
            for k in 0..3 {
                d.response_50(p, (i * 10 + k) as u64);
            }
            sync_robust(&mut d, &servers[i % 2]).await;
            (d, p)
        }));
    }
    let mut devices = Vec::new();
    let mut patients = Vec::new();
    for t in tasks {
        let (d, p) = t.await.unwrap();
        devices.push(d);
        patients.push(p);
    }

    // One shared document at clinic A, which every A tablet then edits at once, several
    // rounds, through alternating servers: compare-and-set conflicts across processes.
    let shared = devices[0].response_50(patients[0], 999);
    sync_robust(&mut devices[0], &servers[0]).await;
    for d in devices.iter_mut().take(A_TABLETS) {
        sync_robust(d, &servers[1]).await;
        assert!(d.docs.contains_key(&shared));
    }
    // The patient's own phone, enrolled through server 1.
    let mut phone = servers[1]
        .enrol(EnrolmentGrant::PatientDevice {
            patient: patients[0],
        })
        .await;
    for round in 0..ROUNDS {
        let mut tasks = Vec::new();
        for (i, mut d) in devices.drain(..).enumerate() {
            let servers = servers.clone();
            tasks.push(tokio::spawn(async move {
                if i < A_TABLETS {
                    d.set_body(shared, &format!("note_{i}_{round}"), "seen");
                }
                let own: Vec<RecordId> =
                    d.docs.keys().copied().filter(|id| *id != shared).collect();
                if let Some(id) = own
                    .iter()
                    .find(|id| d.body_field(**id, "answers").is_some())
                {
                    d.set_body(*id, &format!("edit_{round}"), "x");
                }
                sync_robust(&mut d, &servers[(i + round) % 2]).await;
                d
            }));
        }
        for t in tasks {
            devices.push(t.await.unwrap());
        }
    }

    // Everyone pulls (twice: the second pass brings what others pushed during the first), from
    // the server it did not use last.
    for pass in 0..2 {
        for (i, d) in devices.iter_mut().enumerate() {
            sync_robust(d, &servers[(i + pass + 1) % 2]).await;
        }
    }
    sync_robust(&mut phone, &servers[0]).await;
    stop.store(true, Ordering::Relaxed);
    let checks = watcher.join().unwrap();
    assert!(checks > 0);

    // Convergence: the tablets of a clinic hold the same documents at the same heads.
    let mut by_clinic: HashMap<RecordId, Vec<usize>> = HashMap::new();
    for (i, d) in devices.iter().enumerate() {
        by_clinic.entry(d.clinic).or_default().push(i);
    }
    for (clinic, members) in &by_clinic {
        let ids: BTreeSet<RecordId> = devices[members[0]].docs.keys().copied().collect();
        // The built-in definitions, the clinic record, each tablet's records.
        let expected = followup_domain::definitions::builtin_definitions().len()
            + 1
            + members.len() * 4
            + usize::from(*clinic == clinic_a);
        assert_eq!(ids.len(), expected, "clinic {clinic}");
        for id in &ids {
            let heads = devices[members[0]].heads(*id);
            for &m in &members[1..] {
                assert_eq!(
                    devices[m].heads(*id),
                    heads,
                    "doc {id} differs on device {m}"
                );
            }
        }
    }
    // Every tablet's every note on the shared document survived the concurrent merges.
    for d in devices.iter().take(A_TABLETS) {
        for i in 0..A_TABLETS {
            for round in 0..ROUNDS {
                assert_eq!(
                    d.body_field(shared, &format!("note_{i}_{round}"))
                        .as_deref(),
                    Some("seen")
                );
            }
        }
    }
    // The phone sees exactly its patient's records and the published definitions, as the
    // tablets have them.
    let phone_ids: BTreeSet<RecordId> = phone.docs.keys().copied().collect();
    assert_eq!(
        phone_ids.len(),
        followup_domain::definitions::builtin_definitions().len() + 1 + 3 + 1
    );
    assert!(phone_ids.contains(&shared) && phone_ids.contains(&patients[0]));
    for id in phone_ids {
        assert_eq!(phone.heads(id), devices[0].heads(id));
    }

    // Both servers tell the same story: counts, no rejection, an intact audit chain.
    let st0 = servers[0].stats().await;
    let st1 = servers[1].stats().await;
    // Both servers seeded the built-in definitions at start: each is stored once.
    assert_eq!(
        st0.documents as usize,
        followup_domain::definitions::builtin_definitions().len()
            + 2
            + (A_TABLETS + B_TABLETS) * 4
            + 1
    );
    assert_eq!(st0.rejections, 0);
    assert_eq!(
        (st0.documents, st0.log_seq, st0.audit_entries),
        (st1.documents, st1.log_seq, st1.audit_entries)
    );
    let v0 = servers[0].verify_audit().await;
    let v1 = servers[1].verify_audit().await;
    assert!(v0.ok && v1.ok, "{v0:?} {v1:?}");
    assert_eq!(v0.head_hash, v1.head_hash);
    // Log seqs are exactly 1..=n, each audited once.
    let url2 = url.to_string();
    let v = tokio::task::spawn_blocking(move || {
        PgRaw::connect(&url2).i64s(
            "SELECT COUNT(*), COALESCE(MAX(seq), 0), (SELECT COUNT(DISTINCT log_seq) FROM audit) FROM log",
        )
    })
    .await
    .unwrap();
    assert_eq!(v, vec![st0.log_seq as i64; 3]);
    println!(
        "two servers: {} log entries, {} audit entries, {checks} gap checks; clients retried {} busy rejection(s) and {} 503(s)",
        st0.log_seq,
        st0.audit_entries,
        BUSY_REJECTIONS.load(Ordering::Relaxed),
        UNAVAILABLE.load(Ordering::Relaxed)
    );

    let servers = Arc::try_unwrap(servers).ok().expect("servers still shared");
    let [a, b] = servers;
    a.server.shutdown().await.unwrap();
    b.server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The read model on PostgreSQL (the same scenarios as `readmodel.rs` on SQLite).

#[test]
fn postgres_read_model_rebuild_equals_incremental() {
    let Some(pg) = PgCluster::start("postgres_read_model_rebuild_equals_incremental") else {
        return;
    };
    for seed in [5u64, 77, 2024] {
        let url = pg.create_db(&format!("rm{seed}"));
        let s: Arc<dyn Storage> = Arc::new(open(&url, PostgresOptions::default()));
        rm_cases::rebuild_equals_incremental(s, seed, 300);
    }
}

#[test]
fn postgres_read_model_queries_and_conflicts() {
    let Some(pg) = PgCluster::start("postgres_read_model_queries_and_conflicts") else {
        return;
    };
    let url = pg.create_db("rmq");
    let s: Arc<dyn Storage> = Arc::new(open(&url, PostgresOptions::default()));
    rm_cases::queries_answer_what_the_console_asks(s);
    let url = pg.create_db("rmc");
    let s: Arc<dyn Storage> = Arc::new(open(&url, PostgresOptions::default()));
    rm_cases::conflicts_are_projected_as_conflicts(s.clone());
    let url2 = pg.create_db("rmk");
    rm_cases::cases_are_projected(Arc::new(open(&url2, PostgresOptions::default())));
    let dup_url = pg.create_db("rmd");
    rm_cases::duplicate_study_codes_are_listed(Arc::new(open(
        &dup_url,
        PostgresOptions::default(),
    )));
    // A second server process over the same database sees the same read model.
    let other = open(&url, PostgresOptions::default());
    assert_eq!(
        followup_server::readmodel::query::dump(&*s).unwrap(),
        followup_server::readmodel::query::dump(&other).unwrap()
    );
}

// ---------------------------------------------------------------------------------------------
// Exports read the documents page by page on PostgreSQL too.

#[test]
fn postgres_export_reads_every_document_once_in_scope() {
    use followup_server::export::{
        export_from_storage, DirSink, ExportFormat, ExportRequest, Requester, ShippedDefinitions,
        StaffRole,
    };
    use followup_testkit::synthetic::{populate, Spec};
    let Some(pg) = PgCluster::start("postgres_export_reads_every_document_once_in_scope") else {
        return;
    };
    let url = pg.create_db("export");
    let s = open(&url, PostgresOptions::default());
    let spec = Spec {
        clinics: 2,
        patients_per_clinic: 6,
        responses_per_patient: 3,
        ..Spec::default()
    };
    let written = populate(&s, &spec, 50).unwrap();
    let admin = Requester {
        who: "admin".into(),
        role: StaffRole::RegistryAdmin,
    };
    for (clinic, since, responses) in [
        (None, None, written.responses),
        (Some(written.clinics[1]), None, written.responses / 2),
        (None, chrono::NaiveDate::from_ymd_opt(2999, 1, 1), 0),
    ] {
        let out = tempfile::tempdir().unwrap();
        let summary = export_from_storage(
            &s,
            &ShippedDefinitions,
            &admin,
            ExportRequest {
                format: ExportFormat::Csv,
                clinic,
                since,
                identified: false,
            },
            1_764_547_200_000,
            &mut DirSink::create(&out.path().join("x")).unwrap(),
        )
        .unwrap();
        assert_eq!(summary.files["responses.csv"], responses);
        let patients = if clinic.is_some() {
            written.patients / 2
        } else {
            written.patients
        };
        assert_eq!(summary.files["patients.csv"], patients);
    }
}

// ---------------------------------------------------------------------------------------------
// Staff accounts and sessions on PostgreSQL (the same scenario as `console.rs` on SQLite).

#[test]
fn postgres_staff_accounts_and_sessions() {
    let Some(pg) = PgCluster::start("postgres_staff_accounts_and_sessions") else {
        return;
    };
    let url = pg.create_db("staff");
    let s = open(&url, PostgresOptions::default());
    staff_cases::staff_accounts_and_sessions(&s);
    // A second process over the same database: the tables exist, the sessions are shared.
    let other = open(&url, PostgresOptions::default());
    assert_eq!(followup_server::staff::list_staff(&other).unwrap().len(), 3);
}
