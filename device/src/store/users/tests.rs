#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;
use crate::crypto::KeySource;
use crate::store::{DocMeta, Store, FORMAT_VERSION};
use followup_domain::ids::RecordId;
use followup_domain::model::RecordKind;

fn device_key() -> KeySource {
    KeySource::passphrase_with_iterations("device key", 10)
}

fn pin(p: &str) -> UserPin {
    UserPin::with_iterations(p, 10)
}

fn meta(id: RecordId) -> DocMeta {
    DocMeta {
        id,
        kind: RecordKind::Enrolment,
        clinic: RecordId::random(),
        patient: None,
        date: None,
        status: None,
        visit: None,
        subject: None,
    }
}

fn doc() -> automerge::Automerge {
    use automerge::transaction::Transactable;
    let mut d = automerge::Automerge::new();
    let mut tx = d.transaction();
    tx.put(automerge::ROOT, "x", 1).unwrap();
    tx.commit();
    d
}

fn user_version(path: &std::path::Path) -> i32 {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn weak_pins_are_refused_and_reasonable_ones_accepted() {
    for weak in [
        "",
        "12345",
        "111111",
        "123456",
        "654321",
        "121212",
        "123123",
        "000000",
        "abcdefg",
        "aaaaaaaa",
        "password",
        "Password",
        "abcdefgh",
        "qwertyuiop",
    ] {
        assert!(
            matches!(check_pin_strength(weak), Err(StoreError::WeakPin(_))),
            "{weak:?} should be refused"
        );
    }
    for ok in ["482916", "90210735", "correct horse battery", "Tr0ub4dor&3"] {
        check_pin_strength(ok).unwrap();
    }
    // The message never repeats the PIN.
    let msg = check_pin_strength("111111").unwrap_err().to_string();
    assert!(!msg.contains("111111"), "{msg}");
}

#[test]
fn back_off_grows_and_is_capped() {
    assert_eq!(delay_after(1), 0);
    assert_eq!(delay_after(2), 0);
    assert_eq!(delay_after(3), 1);
    assert_eq!(delay_after(4), 2);
    assert_eq!(delay_after(9), 64);
    assert_eq!(delay_after(40), MAX_DELAY_S);
}

#[test]
fn two_users_each_open_the_same_records_and_a_device_key_alone_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let (a, b) = (UserId::random(), UserId::random());
    let id = RecordId::random();
    {
        let s = Store::create(&path, device_key()).unwrap();
        s.save_doc(&meta(id), &doc()).unwrap();
        assert!(!s.has_users());
        s.add_user(a, "Nurse A", &pin("482916")).unwrap();
        assert!(s.has_users());
        assert_eq!(s.signed_in_user(), Some(a));
        s.add_user(b, "Nurse B", &pin("730594")).unwrap();
        // Adding users rewrote no record.
        assert_eq!(s.chunk_count(&id).unwrap(), 1);
    }
    assert_eq!(user_version(&path), USERS_FORMAT_VERSION);
    let s = Store::open(&path, device_key()).unwrap();
    assert!(s.has_users() && !s.is_unlocked());
    // Locked: no record, no index, no secret.
    assert!(matches!(s.load_doc(&id), Err(StoreError::Locked)));
    assert!(matches!(
        s.list(&Default::default()),
        Err(StoreError::Locked)
    ));
    assert!(matches!(s.get_secret("x"), Err(StoreError::Locked)));
    // The sign-in screen lists the users while locked.
    let names: Vec<String> = s.users().unwrap().into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["Nurse A", "Nurse B"]);
    s.sign_in(b, &pin("730594")).unwrap();
    assert_eq!(s.signed_in_user(), Some(b));
    assert!(s.load_doc(&id).unwrap().is_some());
    s.sign_out();
    assert!(matches!(s.load_doc(&id), Err(StoreError::Locked)));
    s.sign_in(a, &pin("482916")).unwrap();
    assert!(s.load_doc(&id).unwrap().is_some());
    // A's PIN is not B's.
    s.sign_out();
    assert!(matches!(
        s.sign_in(b, &pin("482916")),
        Err(StoreError::WrongPin { attempts_left: 9 })
    ));
    // The wrong device key opens nothing at all.
    drop(s);
    assert!(matches!(
        Store::open(&path, KeySource::passphrase_with_iterations("other", 10)),
        Err(StoreError::WrongKey)
    ));
}

#[test]
fn an_app_that_predates_users_is_told_to_update_not_handed_the_pepper() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let s = Store::create(&path, device_key()).unwrap();
    assert_eq!(user_version(&path), FORMAT_VERSION);
    s.add_user(UserId::random(), "N", &pin("482916")).unwrap();
    drop(s);
    // Forcing the old format version does not make the pepper pass for the data key.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", FORMAT_VERSION)
        .unwrap();
    drop(c);
    assert!(matches!(
        Store::open(&path, device_key()),
        Err(StoreError::WrongKey)
    ));
}

#[test]
fn wrong_pins_back_off_persist_across_restarts_and_lock_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let a = UserId::random();
    let t0 = 1_800_000_000_000i64;
    {
        let s = Store::create(&path, device_key()).unwrap();
        s.add_user(a, "A", &pin("482916")).unwrap();
        s.add_user(UserId::random(), "B", &pin("730594")).unwrap();
    }
    let s = Store::open(&path, device_key()).unwrap();
    for (i, left) in [9u32, 8].iter().enumerate() {
        assert!(matches!(
            s.sign_in_at(a, &pin("000111"), t0 + i as i64),
            Err(StoreError::WrongPin { attempts_left }) if attempts_left == *left
        ));
    }
    // The third wrong PIN starts the back-off.
    assert!(matches!(
        s.sign_in_at(a, &pin("000111"), t0 + 2),
        Err(StoreError::WrongPin { attempts_left: 7 })
    ));
    drop(s);
    // After a restart the wait still holds, even for the right PIN.
    let s = Store::open(&path, device_key()).unwrap();
    assert!(matches!(
        s.sign_in_at(a, &pin("482916"), t0 + 500),
        Err(StoreError::TryLater { seconds: 1 })
    ));
    let u = s.users().unwrap().into_iter().find(|u| u.id == a).unwrap();
    assert_eq!(u.failures, 3);
    assert_eq!(u.retry_at_ms, t0 + 2 + 1000);
    // Once the wait is over, the right PIN signs in and resets the count.
    s.sign_in_at(a, &pin("482916"), t0 + 2000).unwrap();
    assert_eq!(
        s.users()
            .unwrap()
            .into_iter()
            .find(|u| u.id == a)
            .unwrap()
            .failures,
        0
    );
    s.sign_out();
    // Ten wrong PINs in a row lock the user, whatever the waiting.
    let mut now = t0 + 10_000;
    let mut last = None;
    for _ in 0..MAX_FAILURES {
        now += 1_000_000;
        last = Some(s.sign_in_at(a, &pin("000111"), now));
    }
    assert!(matches!(last, Some(Err(StoreError::UserLocked))));
    assert!(matches!(
        s.sign_in_at(a, &pin("482916"), now + 10_000_000),
        Err(StoreError::UserLocked)
    ));
    assert!(
        s.users()
            .unwrap()
            .into_iter()
            .find(|u| u.id == a)
            .unwrap()
            .locked
    );
    // Unknown users are told so.
    assert!(matches!(
        s.sign_in(UserId::random(), &pin("482916")),
        Err(StoreError::UnknownUser(_))
    ));
}

#[test]
fn an_idle_session_locks_itself_and_drops_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::create(dir.path().join("s.db"), device_key()).unwrap();
    let a = UserId::random();
    s.add_user(a, "A", &pin("482916")).unwrap();
    s.set_idle_timeout_for_tests(Duration::from_millis(300));
    assert!(s.is_unlocked());
    // Activity keeps it open.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(100));
        s.count(None).unwrap();
    }
    // The watcher ends the session without any call.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(s.signed_in_user(), None);
    assert!(matches!(s.count(None), Err(StoreError::Locked)));
    let msg = StoreError::Locked.to_string();
    assert!(msg.contains("sign in"), "{msg}");
    // The timeout is kept in the store (at least one second).
    s.sign_in(a, &pin("482916")).unwrap();
    s.set_idle_timeout(Duration::from_secs(42)).unwrap();
    assert_eq!(s.idle_timeout(), Duration::from_secs(42));
}

#[test]
fn removing_users_locally_and_by_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let s = Store::create(&path, device_key()).unwrap();
    let (a, b) = (UserId::random(), UserId::random());
    s.add_user(a, "A", &pin("482916")).unwrap();
    s.add_user(b, "B", &pin("730594")).unwrap();
    // Re-adding replaces the slot (a new PIN).
    s.add_user(b, "B", &pin("591378")).unwrap();
    s.sign_out();
    assert!(matches!(
        s.sign_in(b, &pin("730594")),
        Err(StoreError::WrongPin { .. })
    ));
    s.sign_in(b, &pin("591378")).unwrap();
    // Locally, a signed-in user removes another, never the last.
    assert!(s.remove_user(a).unwrap());
    assert!(matches!(s.remove_user(b), Err(StoreError::Users(_))));
    assert!(matches!(
        s.sign_in(a, &pin("482916")),
        Err(StoreError::UnknownUser(_))
    ));
    // The registry removes the signed-in user: signed out at once, slot gone.
    s.add_user(a, "A", &pin("482916")).unwrap();
    assert_eq!(s.remove_users_revoked(&[b]).unwrap(), 1);
    assert_eq!(s.signed_in_user(), None);
    assert!(matches!(s.count(None), Err(StoreError::Locked)));
    assert!(matches!(
        s.sign_in(b, &pin("591378")),
        Err(StoreError::UnknownUser(_))
    ));
    // Weak PINs and a store without users.
    s.sign_in(a, &pin("482916")).unwrap();
    assert!(matches!(
        s.add_user(b, "B", &pin("1234")),
        Err(StoreError::WeakPin(_))
    ));
    let plain = Store::create(dir.path().join("p.db"), device_key()).unwrap();
    assert!(matches!(
        plain.sign_in(a, &pin("482916")),
        Err(StoreError::Users(_))
    ));
    assert!(plain.is_unlocked() && plain.users().unwrap().is_empty());
}

#[test]
fn rotating_the_device_key_keeps_users_working() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let a = UserId::random();
    {
        let s = Store::create(&path, device_key()).unwrap();
        s.add_user(a, "A", &pin("482916")).unwrap();
        s.rotate_key(KeySource::passphrase_with_iterations("new device key", 10))
            .unwrap();
    }
    assert!(matches!(
        Store::open(&path, device_key()),
        Err(StoreError::WrongKey)
    ));
    let s = Store::open(
        &path,
        KeySource::passphrase_with_iterations("new device key", 10),
    )
    .unwrap();
    s.sign_in(a, &pin("482916")).unwrap();
    assert!(s.is_unlocked());
}
