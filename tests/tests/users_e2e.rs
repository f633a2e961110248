//! End-to-end: nurses signing in on a shared clinic tablet, against a real registry on
//! 127.0.0.1. Each change is attributed to the nurse who made it in the registry's audit log; a
//! tablet cannot invent a user; a removed user loses the tablet at its next sync.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use followup_device::crypto::UserPin;
use followup_device::device::index_meta;
use followup_device::store::StoreError;
use followup_device::sync::{SyncClient, SyncError};
use followup_device::Error;
use followup_domain::ids::UserId;
use followup_domain::model::{self, Author};
use followup_e2e::*;
use followup_server::users::users_in_detail;
use followup_testkit::workload::{bench_enrolment, bench_procedure};

fn pin(p: &str) -> UserPin {
    UserPin::with_iterations(p, 1_000)
}

/// The users the registry's audit log names for the accepted writes of `doc`.
fn audited_users(reg: &Registry, doc: followup_domain::ids::RecordId) -> Vec<UserId> {
    reg.server
        .storage()
        .audit_rows(0, 100_000)
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.event == "accepted" && r.entry.doc == Some(doc))
        .flat_map(|r| users_in_detail(&r.entry.detail))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nurses_on_one_tablet_each_change_attributed_and_a_removed_nurse_locked_out() {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("Clinica Alfa").await;
    let other_clinic = reg.create_clinic("Clinica Beta").await;
    let tablet = reg.clinic_tablet(clinic, "ward tablet").await;
    let staff = reg.staff();
    let ana = staff.create_clinic_user(clinic, "Ana Costa").await.unwrap();
    let rui = staff.create_clinic_user(clinic, "Rui Lopes").await.unwrap();
    let stranger = staff
        .create_clinic_user(other_clinic, "Eva Beta")
        .await
        .unwrap();
    let client = SyncClient::new(test_options()).unwrap();

    // A tablet cannot invent a user: wrong codes, another clinic's user, unknown ids.
    for (user, code) in [
        (ana.user, "AAAA-BBBB-CCCC".to_string()),
        (stranger.user, stranger.activation_code.clone()),
        (UserId::random(), ana.activation_code.clone()),
    ] {
        let err = client
            .activate_user(&tablet, user, &code, &pin("482916"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Sync(SyncError::InvalidCode(_))),
            "{err:?}"
        );
    }
    assert!(!tablet.has_users());
    // A weak PIN is refused before anything is sent.
    assert!(matches!(
        client
            .activate_user(&tablet, ana.user, &ana.activation_code, &pin("123456"))
            .await,
        Err(Error::Store(StoreError::WeakPin(_)))
    ));

    // Ana activates first (the tablet now needs a sign-in), then adds Rui.
    let info = client
        .activate_user(&tablet, ana.user, &ana.activation_code, &pin("482916"))
        .await
        .unwrap();
    assert_eq!(info.name, "Ana Costa");
    assert!(tablet.has_users());
    assert_eq!(tablet.signed_in_user(), Some(ana.user));
    client
        .activate_user(&tablet, rui.user, &rui.activation_code, &pin("730594"))
        .await
        .unwrap();

    // Ana enrols a patient; Rui records the procedure.
    let patient = tablet.enrol_patient(&bench_enrolment(1)).unwrap();
    tablet.sign_out();
    assert!(matches!(
        tablet.record_procedure(patient, &bench_procedure(1)),
        Err(Error::Store(StoreError::Locked))
    ));
    tablet.sign_in(rui.user, &pin("730594")).unwrap();
    let procedure = tablet
        .record_procedure(patient, &bench_procedure(1))
        .unwrap();
    let report = tablet.sync().await.unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(audited_users(&reg, patient), [ana.user]);
    assert_eq!(audited_users(&reg, procedure), [rui.user]);
    assert!(reg.verify_audit().await.ok);

    // A change attributed to a user never activated on this tablet is refused and reported.
    let enrolled = tablet.enrolment().unwrap();
    let forged = model::new_record(
        Author::device_now(enrolled.device_id).with_user(Some(stranger.user)),
        followup_domain::ids::RecordId::random(),
        clinic,
        Some(patient),
        &bench_procedure(2),
    )
    .unwrap();
    tablet
        .store()
        .save_doc(&index_meta(&forged).unwrap(), &forged)
        .unwrap();
    let report = tablet.sync().await.unwrap();
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert_eq!(report.rejected[0].code, "foreign_actor");
    assert!(
        report.rejected[0].message.contains("user_not_enrolled"),
        "{}",
        report.rejected[0].message
    );

    // Staff remove Rui: the registry refuses his changes, and the tablet deletes his slot at
    // its next sync (Ana is signed in): Rui can no longer sign in.
    staff.remove_clinic_user(rui.user).await.unwrap();
    tablet.sign_out();
    tablet.sign_in(ana.user, &pin("482916")).unwrap();
    tablet.sync().await.unwrap();
    let names: Vec<String> = tablet
        .users()
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["Ana Costa"]);
    tablet.sign_out();
    assert!(matches!(
        tablet.sign_in(rui.user, &pin("730594")),
        Err(Error::Store(StoreError::UnknownUser(_)))
    ));
    let rows = staff.clinic_users(clinic).await.unwrap();
    let rui_row = rows.iter().find(|r| r.id == rui.user).unwrap();
    assert!(rui_row.removed_at_ms.is_some());
    assert_eq!(rui_row.devices, [tablet.id()]);

    // After a restart (a second opening of the file) the tablet opens locked; Ana signs in.
    let reopened = followup_device::device::Device::open(&tablet.path, key()).unwrap();
    assert!(!reopened.is_unlocked());
    assert!(matches!(
        reopened.list_patients(),
        Err(Error::Store(StoreError::Locked))
    ));
    reopened.sign_in(ana.user, &pin("482916")).unwrap();
    assert_eq!(reopened.list_patients().unwrap().len(), 1);
}

/// The clinic's directory reaches its tablets with the sync: a tablet without users names the
/// other tablet by its label and the nurse by name (never by id); a patient's phone receives
/// no directory; a tablet that never received one names the writer by a short id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tablets_name_the_other_tablet_and_the_nurse_from_the_clinic_directory() {
    use followup_device::device::Writer;
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("Clinica Alfa").await;
    let ward = reg.clinic_tablet(clinic, "Tablet 1, ward A").await;
    let second = reg.clinic_tablet(clinic, "Tablet 2, ward B").await;
    let ana = reg
        .staff()
        .create_clinic_user(clinic, "Ana Costa")
        .await
        .unwrap();
    let client = SyncClient::new(test_options()).unwrap();
    client
        .activate_user(&ward, ana.user, &ana.activation_code, &pin("482916"))
        .await
        .unwrap();
    let patient = ward.enrol_patient(&bench_enrolment(7)).unwrap();
    ward.sync().await.unwrap();
    // The tablet with users received the directory with its users: it names itself and Ana.
    let dir = ward.directory().unwrap();
    assert_eq!(dir.device_label(second.id()), Some("Tablet 2, ward B"));
    assert_eq!(dir.user_name(ana.user), Some("Ana Costa"));

    // Before its sync the second tablet knows nobody.
    assert!(!second.has_directory().unwrap());
    let report = second.sync().await.unwrap();
    assert!(report.pulled > 0);
    let dir = second.directory().unwrap();
    let creator = second.record_creator(patient).unwrap();
    assert_eq!(
        creator,
        Writer {
            device: Some(ward.id()),
            user: Some(ana.user)
        }
    );
    assert_eq!(
        second.writer_name(&dir, creator),
        "Tablet 1, ward A, Ana Costa"
    );
    let own = second.enrol_patient(&bench_enrolment(8)).unwrap();
    assert_eq!(
        second.writer_name(&dir, second.record_creator(own).unwrap()),
        "this device"
    );
    // A phone's label is never sent to tablets (it could name the patient).
    let phone = reg.patient_phone(patient, "Maria's phone").await;
    phone.sync().await.unwrap();
    assert!(!phone.has_directory().unwrap());
    second.sync().await.unwrap();
    ward.sync().await.unwrap();
    let dir = ward.directory().unwrap();
    assert_eq!(dir.device_label(phone.id()), None);
    assert_eq!(
        ward.writer_name(
            &dir,
            Writer {
                device: Some(phone.id()),
                user: None
            }
        ),
        "the patient's phone"
    );
    // Without a directory: a short id.
    let empty = followup_device::device::Directory::default();
    assert_eq!(
        second.writer_name(&empty, creator),
        format!(
            "device {}, user {}",
            &ward.id().to_hex()[..8],
            &ana.user.to_hex()[..8]
        )
    );
}

/// On an enrolled tablet talking to the registry: wrong PINs count down and then make the user
/// wait (the full lock after ten is proved with a fake clock in the store's tests); an idle
/// session locks the tablet by itself, and a locked tablet neither reads nor syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pins_back_off_and_an_idle_tablet_locks_itself() {
    let reg = Registry::start().await;
    let clinic = reg.create_clinic("Clinica Alfa").await;
    let tablet = reg.clinic_tablet(clinic, "ward tablet").await;
    let ana = reg
        .staff()
        .create_clinic_user(clinic, "Ana Costa")
        .await
        .unwrap();
    let client = SyncClient::new(test_options()).unwrap();
    client
        .activate_user(&tablet, ana.user, &ana.activation_code, &pin("482916"))
        .await
        .unwrap();
    let patient = tablet.enrol_patient(&bench_enrolment(3)).unwrap();
    tablet.sign_out();

    let mut left = Vec::new();
    for _ in 0..3 {
        match tablet.sign_in(ana.user, &pin("000111")) {
            Err(Error::Store(StoreError::WrongPin { attempts_left })) => left.push(attempts_left),
            other => panic!("expected a wrong PIN, got {other:?}"),
        }
    }
    assert_eq!(left, [9, 8, 7]);
    // Now even the right PIN waits.
    assert!(matches!(
        tablet.sign_in(ana.user, &pin("482916")),
        Err(Error::Store(StoreError::TryLater { .. }))
    ));
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    tablet.sign_in(ana.user, &pin("482916")).unwrap();
    assert_eq!(tablet.users().unwrap()[0].failures, 0);

    // Idle for longer than the timeout: locked, without any call.
    tablet
        .set_idle_timeout(std::time::Duration::from_secs(1))
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_800)).await;
    assert!(!tablet.is_unlocked());
    assert!(matches!(
        tablet.list_patients(),
        Err(Error::Store(StoreError::Locked))
    ));
    assert!(tablet.sync().await.is_err());
    tablet.sign_in(ana.user, &pin("482916")).unwrap();
    assert_eq!(tablet.list_patients().unwrap()[0].id, patient);
    let report = tablet.sync().await.unwrap();
    assert!(report.rejected.is_empty());
}
