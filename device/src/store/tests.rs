#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use automerge::transaction::Transactable;
use automerge::{ObjType, ReadDoc, ROOT};

use super::*;
use crate::crypto::StaticKeyProvider;

const CANARY: &str = "CANARY-7f3a9 mild headache";

fn pass(p: &str) -> KeySource {
    KeySource::passphrase_with_iterations(p, 1_000)
}

fn provider(byte: u8, id: &str) -> KeySource {
    KeySource::provider(StaticKeyProvider::new([byte; 32], id))
}

fn new_store(dir: &tempfile::TempDir) -> Store {
    Store::create(dir.path().join("s.db"), pass("pw")).unwrap()
}

fn meta_for(id: RecordId, clinic: RecordId, patient: RecordId) -> DocMeta {
    DocMeta {
        id,
        kind: RecordKind::Response,
        clinic,
        patient: Some(patient),
        date: NaiveDate::from_ymd_opt(2025, 3, 14),
        status: Some("draft".into()),
        visit: Some("m3".into()),
        subject: None,
    }
}

/// A 50-answer response document in the benchmark's shape.
fn response_doc(meta: &DocMeta, seed: u64) -> Automerge {
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put(ROOT, "id", meta.id.to_hex()).unwrap();
    tx.put(ROOT, "kind", meta.kind.code()).unwrap();
    tx.put(ROOT, "clinic", meta.clinic.to_hex()).unwrap();
    if let Some(p) = meta.patient {
        tx.put(ROOT, "patient", p.to_hex()).unwrap();
    }
    let body = tx.put_object(ROOT, "body", ObjType::Map).unwrap();
    let answers = tx.put_object(&body, "answers", ObjType::Map).unwrap();
    for n in 1..=50u64 {
        let key = format!("q{n:02}");
        let v = seed.wrapping_mul(31).wrapping_add(n);
        match n % 5 {
            0 => tx.put(&answers, key, (v % 11) as i64).unwrap(),
            1 => tx.put(&answers, key, v % 2 == 0).unwrap(),
            2 => tx
                .put(
                    &answers,
                    key,
                    ["none", "mild", "moderate", "severe"][(v % 4) as usize],
                )
                .unwrap(),
            3 => tx.put(&answers, key, (v % 1000) as f64 / 10.0).unwrap(),
            _ => tx
                .put(
                    &answers,
                    key,
                    format!("mild headache for two days after infusion {v}"),
                )
                .unwrap(),
        }
    }
    tx.commit();
    doc
}

/// Make a small edit: set one answer.
fn edit(doc: &mut Automerge, key: &str, value: &str) {
    let body = doc.get(ROOT, "body").unwrap().unwrap().1;
    let answers = doc.get(&body, "answers").unwrap().unwrap().1;
    let mut tx = doc.transaction();
    tx.put(&answers, key, value).unwrap();
    tx.commit();
}

fn answer(doc: &Automerge, key: &str) -> Option<String> {
    let body = doc.get(ROOT, "body").unwrap()?.1;
    let answers = doc.get(&body, "answers").unwrap()?.1;
    match doc.get(&answers, key).unwrap()?.0 {
        automerge::Value::Scalar(s) => match s.as_ref() {
            automerge::ScalarValue::Str(s) => Some(s.to_string()),
            other => Some(other.to_string()),
        },
        _ => None,
    }
}

fn raw_conn(store_path: &Path) -> Connection {
    Connection::open(store_path).unwrap()
}

fn ids() -> (RecordId, RecordId) {
    (RecordId::random(), RecordId::random())
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
}

#[test]
fn create_save_load_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let (clinic, patient) = ids();
    let meta = meta_for(RecordId::random(), clinic, patient);
    let mut doc = response_doc(&meta, 1);
    let store_id;
    {
        let store = Store::create(&path, pass("pw")).unwrap();
        store_id = store.store_id();
        store.save_doc(&meta, &doc).unwrap();
        edit(&mut doc, "q05", "changed");
        let out = store.save_doc(&meta, &doc).unwrap();
        assert_eq!(out.chunks_written, 1);
        store.put_secret("identity", b"private key bytes").unwrap();
        store
            .put_setting("server_url", "https://registry.example")
            .unwrap();
        assert!(matches!(
            Store::create(&path, pass("pw")),
            Err(StoreError::AlreadyExists(_))
        ));
    }
    let store = Store::open(&path, pass("pw")).unwrap();
    assert_eq!(store.store_id(), store_id);
    let loaded = store.load_doc(&meta.id).unwrap().unwrap();
    assert_eq!(loaded.get_heads(), doc.get_heads());
    assert_eq!(answer(&loaded, "q05").as_deref(), Some("changed"));
    assert_eq!(store.meta(&meta.id).unwrap(), Some(meta.clone()));
    assert_eq!(
        store.get_secret("identity").unwrap().as_deref(),
        Some(&b"private key bytes"[..])
    );
    assert_eq!(
        store.get_setting("server_url").unwrap().as_deref(),
        Some("https://registry.example")
    );
    assert_eq!(store.dirty_docs(10).unwrap(), vec![meta.id]);
    assert!(store.load_doc(&RecordId::random()).unwrap().is_none());
    assert!(store.get_secret("nope").unwrap().is_none());
    assert_eq!(store.key_info().unwrap().method, KeyMethod::Passphrase);
}

#[test]
fn wrong_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    drop(Store::create(&path, pass("right")).unwrap());
    assert!(matches!(
        Store::open(&path, pass("wrong")),
        Err(StoreError::WrongKey)
    ));
    assert!(matches!(
        Store::open(&path, provider(1, "k")),
        Err(StoreError::WrongKey)
    ));

    let path2 = dir.path().join("p.db");
    drop(Store::create(&path2, provider(1, "k1")).unwrap());
    assert!(matches!(
        Store::open(&path2, provider(2, "k1")),
        Err(StoreError::WrongKey)
    ));
    assert!(matches!(
        Store::open(&path2, pass("x")),
        Err(StoreError::WrongKey)
    ));
    Store::open(&path2, provider(1, "k1")).unwrap();
    // The message tells the user what to do.
    assert!(StoreError::WrongKey.to_string().contains("passphrase"));
}

/// A provider that does not authenticate: returns 32 bytes whatever it is given. The key-check
/// value still turns a wrong key into `WrongKey`.
struct XorProvider(u8);
impl crate::crypto::KeyProvider for XorProvider {
    fn key_id(&self) -> String {
        "xor".into()
    }
    fn wrap(&self, k: &[u8]) -> Result<Vec<u8>, crate::crypto::KeyProviderError> {
        Ok(k.iter().map(|b| b ^ self.0).collect())
    }
    fn unwrap(&self, k: &[u8]) -> Result<Vec<u8>, crate::crypto::KeyProviderError> {
        self.wrap(k)
    }
}

struct LockedKeystore;
impl crate::crypto::KeyProvider for LockedKeystore {
    fn key_id(&self) -> String {
        "locked".into()
    }
    fn wrap(&self, _: &[u8]) -> Result<Vec<u8>, crate::crypto::KeyProviderError> {
        Err(crate::crypto::KeyProviderError::Unavailable(
            "device locked".into(),
        ))
    }
    fn unwrap(&self, _: &[u8]) -> Result<Vec<u8>, crate::crypto::KeyProviderError> {
        self.wrap(&[])
    }
}

#[test]
fn keystore_failure_is_reported_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let err = Store::create(&path, KeySource::provider(LockedKeystore)).unwrap_err();
    assert!(matches!(err, StoreError::KeyProvider(ref m) if m.contains("device locked")));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    drop(Store::create(&path, pass("pw")).unwrap());
    assert!(matches!(
        Store::open(&path, KeySource::provider(LockedKeystore)),
        Err(StoreError::WrongKey)
    ));
}

#[test]
fn non_authenticating_provider_still_gets_wrong_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    drop(Store::create(&path, KeySource::provider(XorProvider(1))).unwrap());
    Store::open(&path, KeySource::provider(XorProvider(1))).unwrap();
    assert!(matches!(
        Store::open(&path, KeySource::provider(XorProvider(2))),
        Err(StoreError::WrongKey)
    ));
}

#[test]
fn not_a_store_is_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x42u8; 8192]).unwrap();
    assert!(matches!(
        Store::open(&junk, pass("pw")),
        Err(StoreError::NotAFollowupStore { .. })
    ));
    let other = dir.path().join("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    assert!(matches!(
        Store::open(&other, pass("pw")),
        Err(StoreError::NotAFollowupStore { .. })
    ));
    assert!(matches!(
        Store::open(dir.path().join("missing.db"), pass("pw")),
        Err(StoreError::NotFound(_))
    ));
    // A Followup store whose key record was removed is corrupted, not "wrong key".
    let path = dir.path().join("s.db");
    drop(Store::create(&path, pass("pw")).unwrap());
    raw_conn(&path).execute("DELETE FROM key_slot", []).unwrap();
    assert!(matches!(
        Store::open(&path, pass("pw")),
        Err(StoreError::Corrupted(_))
    ));
}

#[test]
fn flipped_bit_is_tampered() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(&dir);
    let (clinic, patient) = ids();
    let meta = meta_for(RecordId::random(), clinic, patient);
    let mut doc = response_doc(&meta, 2);
    store.save_doc(&meta, &doc).unwrap();
    edit(&mut doc, "q01", "x");
    store.save_doc(&meta, &doc).unwrap();
    let conn = raw_conn(store.path());
    let mut data: Vec<u8> = conn
        .query_row(
            "SELECT data FROM chunks WHERE doc = ?1 AND n = 1",
            params![meta.id.as_bytes().as_slice()],
            |r| r.get(0),
        )
        .unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    conn.execute(
        "UPDATE chunks SET data = ?2 WHERE doc = ?1 AND n = 1",
        params![meta.id.as_bytes().as_slice(), data],
    )
    .unwrap();
    match store.load_doc(&meta.id) {
        Err(StoreError::Tampered { record, chunk }) => {
            assert_eq!(record, meta.id);
            assert_eq!(chunk, 1);
        }
        other => panic!("expected Tampered, got {other:?}"),
    }
    // Saving onto a tampered document fails too, rather than silently dropping data.
    edit(&mut doc, "q02", "y");
    let mut fork = response_doc(&meta, 3);
    edit(&mut fork, "q03", "z");
    assert!(matches!(
        store.save_doc(&meta, &fork),
        Err(StoreError::Tampered { .. })
    ));
}

#[test]
fn chunk_moved_to_other_record_or_chunk_is_tampered() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(&dir);
    let (clinic, patient) = ids();
    let a = meta_for(RecordId::random(), clinic, patient);
    let b = meta_for(RecordId::random(), clinic, patient);
    store.save_doc(&a, &response_doc(&a, 1)).unwrap();
    store.save_doc(&b, &response_doc(&b, 2)).unwrap();
    let conn = raw_conn(store.path());
    // Copy a's chunk 0 over b's chunk 0.
    conn.execute(
        "UPDATE chunks SET data = (SELECT data FROM chunks WHERE doc = ?1 AND n = 0) \
         WHERE doc = ?2 AND n = 0",
        params![a.id.as_bytes().as_slice(), b.id.as_bytes().as_slice()],
    )
    .unwrap();
    assert!(matches!(
        store.load_doc(&b.id),
        Err(StoreError::Tampered { record, chunk: 0 }) if record == b.id
    ));
    store.load_doc(&a.id).unwrap().unwrap();

    // Renumber a chunk (swap order): chunk 1 moved to position 2 and vice versa.
    let mut doc = store.load_doc(&a.id).unwrap().unwrap();
    for i in 0..2 {
        edit(&mut doc, "q01", &format!("v{i}"));
        store.save_doc(&a, &doc).unwrap();
    }
    conn.execute_batch(&format!(
        "UPDATE chunks SET n = 99 WHERE doc = x'{h}' AND n = 1;
         UPDATE chunks SET n = 1 WHERE doc = x'{h}' AND n = 2;
         UPDATE chunks SET n = 2 WHERE doc = x'{h}' AND n = 99;",
        h = a.id.to_hex()
    ))
    .unwrap();
    assert!(matches!(
        store.load_doc(&a.id),
        Err(StoreError::Tampered { chunk: 1, .. })
    ));

    // A deleted last chunk with doctored bookkeeping is caught by the heads check.
    conn.execute(
        "DELETE FROM chunks WHERE doc = ?1 AND n >= 1",
        params![a.id.as_bytes().as_slice()],
    )
    .unwrap();
    assert!(matches!(
        store.load_doc(&a.id),
        Err(StoreError::Tampered { chunk: 1, .. })
    ));
    conn.execute(
        "UPDATE docs SET next_chunk = 1 WHERE id = ?1",
        params![a.id.as_bytes().as_slice()],
    )
    .unwrap();
    assert!(matches!(
        store.load_doc(&a.id),
        Err(StoreError::Incomplete { .. })
    ));
}

#[test]
fn chunk_from_another_store_is_tampered() {
    let dir = tempfile::tempdir().unwrap();
    let s1 = Store::create(dir.path().join("1.db"), pass("pw")).unwrap();
    let s2 = Store::create(dir.path().join("2.db"), pass("pw")).unwrap();
    let (clinic, patient) = ids();
    let meta = meta_for(RecordId::random(), clinic, patient);
    let doc = response_doc(&meta, 1);
    s1.save_doc(&meta, &doc).unwrap();
    s2.save_doc(&meta, &doc).unwrap();
    let data: Vec<u8> = raw_conn(s1.path())
        .query_row("SELECT data FROM chunks", [], |r| r.get(0))
        .unwrap();
    raw_conn(s2.path())
        .execute("UPDATE chunks SET data = ?1", params![data])
        .unwrap();
    assert!(matches!(
        s2.load_doc(&meta.id),
        Err(StoreError::Tampered { chunk: 0, .. })
    ));
}

#[test]
fn secrets_are_bound_to_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(&dir);
    store.put_secret("a", b"alpha").unwrap();
    store.put_secret("b", b"beta").unwrap();
    raw_conn(store.path())
        .execute(
            "UPDATE secrets SET data = (SELECT data FROM secrets WHERE name = 'a') WHERE name = 'b'",
            [],
        )
        .unwrap();
    assert_eq!(store.get_secret("a").unwrap().unwrap(), b"alpha");
    assert!(matches!(
        store.get_secret("b"),
        Err(StoreError::TamperedSecret { name }) if name == "b"
    ));
    assert!(store.delete_secret("b").unwrap());
    assert!(store.get_secret("b").unwrap().is_none());
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn utf16(s: &str, be: bool) -> Vec<u8> {
    s.encode_utf16()
        .flat_map(|u| if be { u.to_be_bytes() } else { u.to_le_bytes() })
        .collect()
}

/// Assert that no file in `dir` holds the canary in UTF-8, UTF-16LE or UTF-16BE.
fn assert_no_canary_on_disk(dir: &Path, phase: &str) -> usize {
    let needles = [
        CANARY.as_bytes().to_vec(),
        utf16(CANARY, false),
        utf16(CANARY, true),
        b"CANARY-7f3a9".to_vec(),
    ];
    let mut scanned = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        scanned += bytes.len();
        for n in &needles {
            assert!(
                !contains(&bytes, n),
                "{phase}: plaintext canary found in {}",
                path.display()
            );
        }
    }
    scanned
}

#[test]
fn canary_never_reaches_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = Store::create(&path, pass("pw")).unwrap();
    let (clinic, patient) = ids();
    let mut metas = Vec::new();
    let mut saw_plaintext_canary_in_a_chunk = false;
    for i in 0..40u64 {
        let meta = meta_for(RecordId::random(), clinic, patient);
        let mut doc = response_doc(&meta, i);
        store.save_doc(&meta, &doc).unwrap();
        // Several small incremental saves carrying the canary (small changes are stored by
        // Automerge uncompressed, so only encryption keeps them off disk).
        let saves = if i % 10 == 0 { 20 } else { 3 };
        for s in 0..saves {
            edit(&mut doc, "q04", &format!("{CANARY} {s}"));
            store.save_doc(&meta, &doc).unwrap();
        }
        metas.push(meta);
    }
    store
        .put_secret("note", format!("{CANARY} secret").as_bytes())
        .unwrap();
    // Delete some documents: freed pages must not keep plaintext either.
    for m in metas.iter().skip(35) {
        assert!(store.delete_doc(&m.id).unwrap());
    }

    // Not vacuous: the canary is readable through the store, and it is in the decrypted
    // plaintext of stored chunks (so a missing encryption layer would put it on disk).
    for m in metas.iter().take(35) {
        let doc = store.load_doc(&m.id).unwrap().unwrap();
        assert!(answer(&doc, "q04").unwrap().starts_with(CANARY));
        let conn = store.lock().unwrap();
        for (n, ct) in read_chunks(&conn, &m.id).unwrap() {
            let plain = store.open_chunk(&m.id, n, &ct).unwrap();
            if contains(&plain, CANARY.as_bytes()) {
                saw_plaintext_canary_in_a_chunk = true;
            }
        }
    }
    assert!(saw_plaintext_canary_in_a_chunk);
    assert!(dir.path().join("s.db-wal").exists());

    // Phase 1: nothing checkpointed, data in the WAL.
    let scanned = assert_no_canary_on_disk(dir.path(), "before checkpoint");
    assert!(scanned > 100_000, "scanned only {scanned} bytes");
    // Phase 2: checkpoint into the main file.
    store.checkpoint().unwrap();
    assert_no_canary_on_disk(dir.path(), "after checkpoint");
    // Phase 3: closed (SQLite checkpoints and removes the WAL on close).
    drop(store);
    assert_no_canary_on_disk(dir.path(), "after close");
    let store = Store::open(&path, pass("pw")).unwrap();
    let doc = store.load_doc(&metas[0].id).unwrap().unwrap();
    assert!(answer(&doc, "q04").unwrap().starts_with(CANARY));
}

#[test]
fn key_rotation_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let (clinic, patient) = ids();
    let mut expected = Vec::new();
    {
        let store = Store::create(&path, pass("old")).unwrap();
        for i in 0..10 {
            let meta = meta_for(RecordId::random(), clinic, patient);
            let doc = response_doc(&meta, i);
            store.save_doc(&meta, &doc).unwrap();
            expected.push((meta.id, doc.get_heads()));
        }
        store.put_secret("identity", b"k").unwrap();
        // passphrase -> provider
        store.rotate_key(provider(9, "keystore-v1")).unwrap();
        assert_eq!(
            store.key_info().unwrap(),
            KeyInfo {
                method: KeyMethod::Provider,
                key_id: "keystore-v1".into(),
                iterations: 0
            }
        );
    }
    let check_all = |store: &Store| {
        for (id, heads) in &expected {
            assert_eq!(&store.load_doc(id).unwrap().unwrap().get_heads(), heads);
        }
        assert_eq!(store.get_secret("identity").unwrap().unwrap(), b"k");
    };
    assert!(matches!(
        Store::open(&path, pass("old")),
        Err(StoreError::WrongKey)
    ));
    {
        let store = Store::open(&path, provider(9, "keystore-v1")).unwrap();
        check_all(&store);
        // provider -> another provider key (platform key rotation)
        store.rotate_key(provider(10, "keystore-v2")).unwrap();
    }
    assert!(matches!(
        Store::open(&path, provider(9, "keystore-v1")),
        Err(StoreError::WrongKey)
    ));
    {
        let store = Store::open(&path, provider(10, "keystore-v2")).unwrap();
        check_all(&store);
        // provider -> passphrase
        store.rotate_key(pass("new")).unwrap();
        check_all(&store);
    }
    assert!(matches!(
        Store::open(&path, provider(10, "keystore-v2")),
        Err(StoreError::WrongKey)
    ));
    assert!(matches!(
        Store::open(&path, pass("old")),
        Err(StoreError::WrongKey)
    ));
    let store = Store::open(&path, pass("new")).unwrap();
    check_all(&store);
    assert_eq!(store.key_info().unwrap().iterations, 1_000);
}

#[test]
fn incremental_save_is_one_row_and_compaction_preserves_content() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(&dir);
    let (clinic, patient) = ids();
    let meta = meta_for(RecordId::random(), clinic, patient);
    let mut doc = response_doc(&meta, 7);
    let first = store.save_doc(&meta, &doc).unwrap();
    assert_eq!(store.chunk_count(&meta.id).unwrap(), 1);

    edit(&mut doc, "q10", "small change");
    let out = store.save_doc(&meta, &doc).unwrap();
    assert_eq!(out.chunks_written, 1);
    assert!(!out.compacted);
    assert_eq!(store.chunk_count(&meta.id).unwrap(), 2);
    assert!(
        out.bytes < 300,
        "incremental chunk is {} bytes (full save was {})",
        out.bytes,
        first.bytes
    );

    // Nothing new: no row.
    let none = store.save_doc(&meta, &doc).unwrap();
    assert_eq!(none.chunks_written, 0);
    assert_eq!(store.chunk_count(&meta.id).unwrap(), 2);

    let mut max_chunks = 0;
    let mut compactions = 0;
    for i in 0..40 {
        edit(&mut doc, "q10", &format!("edit {i}"));
        let out = store.save_doc(&meta, &doc).unwrap();
        compactions += usize::from(out.compacted);
        max_chunks = max_chunks.max(store.chunk_count(&meta.id).unwrap());
    }
    assert!(compactions >= 2);
    assert!(max_chunks <= COMPACT_AFTER_CHUNKS);
    let loaded = store.load_doc(&meta.id).unwrap().unwrap();
    assert_eq!(loaded.get_heads(), doc.get_heads());
    assert_eq!(loaded.hydrate(None), doc.hydrate(None));

    // Explicit compaction: one chunk, same content.
    assert!(store.compact_doc(&meta.id).unwrap());
    assert_eq!(store.chunk_count(&meta.id).unwrap(), 1);
    let loaded = store.load_doc(&meta.id).unwrap().unwrap();
    assert_eq!(loaded.hydrate(None), doc.hydrate(None));
    assert_eq!(loaded.get_heads(), doc.get_heads());
    // And incremental saves continue after compaction.
    edit(&mut doc, "q10", "after compaction");
    store.save_doc(&meta, &doc).unwrap();
    assert_eq!(store.chunk_count(&meta.id).unwrap(), 2);
    assert_eq!(
        answer(&store.load_doc(&meta.id).unwrap().unwrap(), "q10").as_deref(),
        Some("after compaction")
    );
}

#[test]
fn saving_a_stale_copy_merges_instead_of_losing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(&dir);
    let (clinic, patient) = ids();
    let meta = meta_for(RecordId::random(), clinic, patient);
    let base = response_doc(&meta, 1);
    store.save_doc(&meta, &base).unwrap();
    let mut a = base.fork();
    let mut b = base.fork();
    edit(&mut a, "q01", "from a");
    edit(&mut b, "q02", "from b");
    assert!(!store.save_doc(&meta, &a).unwrap().merged);
    assert!(store.save_doc(&meta, &b).unwrap().merged);
    let loaded = store.load_doc(&meta.id).unwrap().unwrap();
    assert_eq!(answer(&loaded, "q01").as_deref(), Some("from a"));
    assert_eq!(answer(&loaded, "q02").as_deref(), Some("from b"));
    // put_doc of a stale copy merges too.
    let mut c = base.fork();
    edit(&mut c, "q03", "from c");
    assert!(store.put_doc(&meta, &c).unwrap().merged);
    let loaded = store.load_doc(&meta.id).unwrap().unwrap();
    assert_eq!(answer(&loaded, "q01").as_deref(), Some("from a"));
    assert_eq!(answer(&loaded, "q03").as_deref(), Some("from c"));
    assert_eq!(store.chunk_count(&meta.id).unwrap(), 1);
}

#[test]
fn concurrent_saves_from_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(new_store(&dir));
    let (clinic, patient) = ids();
    let shared = meta_for(RecordId::random(), clinic, patient);
    let base = response_doc(&shared, 0);
    store.save_doc(&shared, &base).unwrap();
    let handles: Vec<_> = (0..2)
        .map(|t| {
            let store = Arc::clone(&store);
            let shared = shared.clone();
            let mut mine = base.fork();
            std::thread::spawn(move || {
                let mut own = Vec::new();
                for i in 0..25u64 {
                    let meta = meta_for(RecordId::random(), clinic, patient);
                    let mut doc = response_doc(&meta, i);
                    store.save_doc(&meta, &doc).unwrap();
                    edit(&mut doc, "q01", "again");
                    store.save_doc(&meta, &doc).unwrap();
                    own.push((meta.id, doc.get_heads()));
                    edit(&mut mine, &format!("t{t}"), &format!("{i}"));
                    store.save_doc(&shared, &mine).unwrap();
                }
                own
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().unwrap());
    }
    assert_eq!(store.count(Some(RecordKind::Response)).unwrap(), 51);
    for (id, heads) in all {
        assert_eq!(store.load_doc(&id).unwrap().unwrap().get_heads(), heads);
    }
    let doc = store.load_doc(&shared.id).unwrap().unwrap();
    assert_eq!(answer(&doc, "t0").as_deref(), Some("24"));
    assert_eq!(answer(&doc, "t1").as_deref(), Some("24"));
}

#[test]
fn queries_use_the_plaintext_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(&dir);
    let (clinic, other_clinic) = ids();
    let p1 = RecordId::random();
    let p2 = RecordId::random();
    let mk = |kind, clinic, patient: Option<RecordId>, day, status: &str, visit: Option<&str>| {
        let meta = DocMeta {
            id: RecordId::random(),
            kind,
            clinic,
            patient,
            date: NaiveDate::from_ymd_opt(2025, 1, day),
            status: Some(status.into()),
            visit: visit.map(String::from),
            subject: None,
        };
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        tx.put(ROOT, "id", meta.id.to_hex()).unwrap();
        tx.commit();
        store.save_doc(&meta, &doc).unwrap();
        meta
    };
    let e1 = mk(RecordKind::Enrolment, clinic, Some(p1), 2, "active", None);
    let r1 = mk(
        RecordKind::Response,
        clinic,
        Some(p1),
        9,
        "draft",
        Some("m3"),
    );
    let r0 = mk(
        RecordKind::Response,
        clinic,
        Some(p1),
        5,
        "submitted",
        Some("m1"),
    );
    let r2 = mk(
        RecordKind::Response,
        clinic,
        Some(p2),
        7,
        "draft",
        Some("m3"),
    );
    let _x = mk(
        RecordKind::Response,
        other_clinic,
        None,
        1,
        "draft",
        Some("m3"),
    );

    let q = |q: Query| {
        store
            .list(&q)
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        q(Query {
            kind: Some(RecordKind::Response),
            clinic: Some(clinic),
            ..Default::default()
        }),
        vec![r0.id, r2.id, r1.id]
    );
    assert_eq!(
        q(Query {
            patient: Some(p1),
            kind: Some(RecordKind::Response),
            ..Default::default()
        }),
        vec![r0.id, r1.id]
    );
    assert_eq!(
        q(Query {
            clinic: Some(clinic),
            status: Some("draft".into()),
            visit: Some("m3".into()),
            subject: None,
            ..Default::default()
        }),
        vec![r2.id, r1.id]
    );
    assert_eq!(store.list(&Query::default()).unwrap().len(), 5);
    assert_eq!(store.count(Some(RecordKind::Enrolment)).unwrap(), 1);
    assert_eq!(store.count(None).unwrap(), 5);
    assert_eq!(store.meta(&e1.id).unwrap(), Some(e1.clone()));

    // Meta updates (status change) without new changes.
    let mut submitted = r1.clone();
    submitted.status = Some("submitted".into());
    let doc = store.load_doc(&r1.id).unwrap().unwrap();
    assert_eq!(store.save_doc(&submitted, &doc).unwrap().chunks_written, 0);
    assert_eq!(
        store.meta(&r1.id).unwrap().unwrap().status.as_deref(),
        Some("submitted")
    );

    // Free text is refused in the plaintext index.
    let mut leaky = r1.clone();
    leaky.status = Some("patient has a headache".into());
    assert!(matches!(
        store.save_doc(&leaky, &doc),
        Err(StoreError::InvalidMeta(_))
    ));
    assert_eq!(
        store.meta(&r1.id).unwrap().unwrap().status.as_deref(),
        Some("submitted")
    );

    // Delete.
    assert!(store.delete_doc(&r2.id).unwrap());
    assert!(!store.delete_doc(&r2.id).unwrap());
    assert!(store.meta(&r2.id).unwrap().is_none());
    assert_eq!(store.chunk_count(&r2.id).unwrap(), 0);
    assert!(store.load_doc(&r2.id).unwrap().is_none());
}

#[test]
fn sync_bookkeeping() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(&dir);
    let (clinic, patient) = ids();
    let a = meta_for(RecordId::random(), clinic, patient);
    let b = meta_for(RecordId::random(), clinic, patient);
    let mut da = response_doc(&a, 1);
    let db = response_doc(&b, 2);
    store.save_doc(&a, &da).unwrap();
    store.save_doc(&b, &db).unwrap();
    assert_eq!(store.dirty_docs(10).unwrap(), vec![a.id, b.id]);
    assert_eq!(store.dirty_docs(1).unwrap(), vec![a.id]);
    assert_eq!(store.synced_heads(&a.id).unwrap(), Some(vec![]));

    // The server acknowledged a's heads: clean.
    let heads_a = da.get_heads();
    assert!(store.set_synced_heads(&a.id, &heads_a).unwrap());
    assert_eq!(store.dirty_docs(10).unwrap(), vec![b.id]);
    assert_eq!(store.synced_heads(&a.id).unwrap(), Some(heads_a.clone()));

    // A save while a sync was in flight: acknowledging the old heads keeps it dirty.
    edit(&mut da, "q01", "later");
    store.save_doc(&a, &da).unwrap();
    assert!(!store.set_synced_heads(&a.id, &heads_a).unwrap());
    assert_eq!(store.dirty_docs(10).unwrap(), vec![b.id, a.id]);
    assert!(store.set_synced_heads(&a.id, &da.get_heads()).unwrap());
    // A save with nothing new does not make it dirty.
    store.save_doc(&a, &da).unwrap();
    assert_eq!(store.dirty_docs(10).unwrap(), vec![b.id]);
    assert!(!store.set_synced_heads(&RecordId::random(), &[]).unwrap());

    // Settings round trip and delete.
    store.put_setting("cursor", "42").unwrap();
    store.put_setting("cursor", "43").unwrap();
    assert_eq!(store.get_setting("cursor").unwrap().as_deref(), Some("43"));
    assert!(store.delete_setting("cursor").unwrap());
    assert!(store.get_setting("cursor").unwrap().is_none());
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// Timing report (no assertion on time). Run with
/// `cargo test --release -p followup-core --lib store::tests::timing -- --nocapture --ignored`.
#[test]
#[ignore = "timing report; run explicitly with --ignored --nocapture"]
fn timing() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(&dir);
    let clinic = RecordId::random();
    let patients: Vec<RecordId> = (0..300).map(|_| RecordId::random()).collect();

    // New 50-answer responses (full save of a new document).
    let mut new_times = Vec::new();
    let mut docs = Vec::new();
    for i in 0..1000u64 {
        let meta = meta_for(RecordId::random(), clinic, patients[(i % 300) as usize]);
        let doc = response_doc(&meta, i);
        let t = Instant::now();
        store.save_doc(&meta, &doc).unwrap();
        new_times.push(t.elapsed().as_secs_f64() * 1e3);
        docs.push((meta, doc));
    }
    // Edits of 3 answers then an incremental save (includes periodic compaction).
    let mut edit_times = Vec::new();
    for round in 0..20 {
        for (meta, doc) in docs.iter_mut().take(100) {
            edit(doc, "q01", &format!("{round}"));
            edit(doc, "q02", "moderate");
            edit(doc, "q04", "mild headache for two days after the infusion");
            let t = Instant::now();
            store.save_doc(meta, doc).unwrap();
            edit_times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    // Loads.
    let mut load_times = Vec::new();
    for (meta, _) in docs.iter().take(200) {
        let t = Instant::now();
        store.load_doc(&meta.id).unwrap().unwrap();
        load_times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    // 10,000 enrolment metas, then list them.
    let mut tiny = Automerge::new();
    let mut tx = tiny.transaction();
    tx.put(ROOT, "id", "x").unwrap();
    tx.commit();
    for _ in 0..10_000 {
        let meta = DocMeta {
            id: RecordId::random(),
            kind: RecordKind::Enrolment,
            clinic,
            patient: Some(RecordId::random()),
            date: NaiveDate::from_ymd_opt(2024, 6, 1),
            status: Some("active".into()),
            visit: None,
            subject: None,
        };
        store.save_doc(&meta, &tiny).unwrap();
    }
    let q = Query {
        kind: Some(RecordKind::Enrolment),
        clinic: Some(clinic),
        ..Default::default()
    };
    let mut list_times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let n = store.list(&q).unwrap().len();
        list_times.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(n, 10_000);
    }
    for (name, mut v) in [
        ("save new 50-answer response", new_times),
        ("save 3-answer edit (incremental)", edit_times),
        ("load 50-answer response", load_times),
        ("list 10,000 enrolment metas", list_times),
    ] {
        v.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{name:36} n={:5} p50={:.3} ms p99={:.3} ms max={:.3} ms",
            v.len(),
            percentile(&v, 0.5),
            percentile(&v, 0.99),
            v[v.len() - 1]
        );
    }
    let path = store.path().to_path_buf();
    store.rotate_key(provider(3, "bench")).unwrap();
    drop(store);
    let t = Instant::now();
    let store = Store::open(&path, provider(3, "bench")).unwrap();
    println!(
        "open (device key, 11,000 docs): {:.3} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let k = DataKey::generate();
    let slot = KeySlot::wrap(&KeySource::passphrase("pw"), &store.store_id(), &k).unwrap();
    let t = Instant::now();
    slot.unwrap(&KeySource::passphrase("pw"), &store.store_id())
        .unwrap();
    println!(
        "passphrase unwrap at {} PBKDF2 iterations: {:.1} ms",
        crate::crypto::PBKDF2_ITERATIONS,
        t.elapsed().as_secs_f64() * 1e3
    );
    let size = std::fs::metadata(store.path()).unwrap().len()
        + std::fs::metadata(dir.path().join("s.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    println!("store size (db + wal): {} KB", size / 1024);
}
