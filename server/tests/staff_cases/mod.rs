//! Staff accounts and sessions on every storage backend (`console.rs` runs it on SQLite,
//! `postgres.rs` on a throwaway PostgreSQL cluster).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use followup_domain::ids::RecordId;
use followup_server::audit;
use followup_server::staff::store::{AeNote, ClinicEvent};
use followup_server::staff::{
    self, FirstSignIn, Role, SessionPolicy, SignIn, StaffError, ThrottlePolicy,
};
use followup_server::storage::Storage;

const T0: i64 = 1_767_225_600_000;
const MIN: i64 = 60_000;

fn sign_in(s: &dyn Storage, email: &str, pw: &str, totp: Option<&str>, now: i64) -> SignIn {
    staff::sign_in(
        s,
        email,
        pw,
        totp,
        "10.0.0.1",
        ThrottlePolicy::default(),
        SessionPolicy::default(),
        now,
    )
    .unwrap()
}

pub fn staff_accounts_and_sessions(s: &dyn Storage) {
    let policy = SessionPolicy::default();
    let admin = staff::create_staff(
        s,
        "Admin@Registry.example",
        Role::RegistryAdmin,
        None,
        FirstSignIn::Password,
        false,
        staff::BOOTSTRAP_ACTOR,
        T0,
    )
    .unwrap();
    let pw = admin.password.clone().unwrap();
    // The email is unique (case-insensitively); a coordinator needs an existing clinic.
    assert!(matches!(
        staff::create_staff(
            s,
            "admin@registry.example",
            Role::RegistryMonitor,
            None,
            FirstSignIn::Password,
            false,
            "x",
            T0
        ),
        Err(StaffError::EmailTaken(_))
    ));
    assert!(matches!(
        staff::create_staff(
            s,
            "c@x.example",
            Role::ClinicCoordinator,
            None,
            FirstSignIn::Password,
            false,
            "x",
            T0
        ),
        Err(StaffError::ClinicRequired)
    ));
    assert!(matches!(
        staff::create_staff(
            s,
            "c@x.example",
            Role::ClinicCoordinator,
            Some(RecordId::random()),
            FirstSignIn::Password,
            false,
            "x",
            T0
        ),
        Err(StaffError::UnknownClinic(_))
    ));

    // Wrong password refused; right one opens a session that expires when idle.
    assert!(matches!(
        sign_in(s, "admin@registry.example", "wrong-wrong-wrong", None, T0),
        SignIn::Refused
    ));
    let SignIn::Ok {
        cookie,
        csrf,
        staff: who,
    } = sign_in(s, "ADMIN@registry.example", &pw, None, T0)
    else {
        panic!("sign-in refused")
    };
    assert_eq!(who.role, Role::RegistryAdmin);
    let (m, sess) = staff::session_for(s, &cookie, policy, T0 + MIN)
        .unwrap()
        .unwrap();
    assert_eq!(m.id, who.id);
    assert_eq!(sess.csrf, csrf);
    // Used at +20 min (refreshes the idle timer), still valid at +45 min, gone 31 min later.
    assert!(staff::session_for(s, &cookie, policy, T0 + 20 * MIN)
        .unwrap()
        .is_some());
    assert!(staff::session_for(s, &cookie, policy, T0 + 45 * MIN)
        .unwrap()
        .is_some());
    assert!(staff::session_for(s, &cookie, policy, T0 + 76 * MIN)
        .unwrap()
        .is_none());
    // Absolute expiry, even when used every few minutes.
    let SignIn::Ok { cookie, .. } = sign_in(s, "admin@registry.example", &pw, None, T0) else {
        panic!()
    };
    let mut t = T0;
    while t + 20 * MIN < T0 + policy.absolute_ms {
        t += 20 * MIN;
        assert!(staff::session_for(s, &cookie, policy, t).unwrap().is_some());
    }
    assert!(
        staff::session_for(s, &cookie, policy, T0 + policy.absolute_ms)
            .unwrap()
            .is_none()
    );
    // Sign-out deletes the session.
    let SignIn::Ok { cookie, .. } = sign_in(s, "admin@registry.example", &pw, None, T0) else {
        panic!()
    };
    staff::sign_out(s, &cookie, &who.id, T0 + MIN).unwrap();
    assert!(staff::session_for(s, &cookie, policy, T0 + 2 * MIN)
        .unwrap()
        .is_none());
    assert!(staff::session_for(s, "not-a-cookie", policy, T0)
        .unwrap()
        .is_none());

    // Throttling: five failures for one email lock it, the right password included, for the
    // window; another email from the same address is not locked.
    let later = T0 + 3600 * 1000;
    for i in 0..5 {
        assert!(matches!(
            sign_in(
                s,
                "admin@registry.example",
                "wrong-wrong-wrong",
                None,
                later + i
            ),
            SignIn::Refused
        ));
    }
    assert!(matches!(
        sign_in(s, "admin@registry.example", &pw, None, later + 10),
        SignIn::Throttled { .. }
    ));
    assert!(matches!(
        sign_in(s, "admin@registry.example", &pw, None, later + 16 * MIN),
        SignIn::Ok { .. }
    ));

    // TOTP: required when set up; a code is accepted once.
    let m = staff::create_staff(
        s,
        "mon@registry.example",
        Role::RegistryMonitor,
        None,
        FirstSignIn::Password,
        true,
        &who.id,
        T0,
    )
    .unwrap();
    let mpw = m.password.unwrap();
    let secret = totp_rs::Secret::try_from_base32(m.totp_secret.unwrap()).unwrap();
    let totp = totp_rs::Builder::new()
        .with_secret(secret.as_bytes().to_vec())
        .build()
        .unwrap();
    let now = later + 20 * MIN;
    let code = totp
        .generate(u64::try_from(now / 1000).unwrap())
        .to_string();
    assert!(matches!(
        sign_in(s, "mon@registry.example", &mpw, None, now),
        SignIn::Refused
    ));
    assert!(matches!(
        sign_in(s, "mon@registry.example", &mpw, Some("000000"), now),
        SignIn::Refused
    ));
    assert!(matches!(
        sign_in(s, "mon@registry.example", &mpw, Some(&code), now),
        SignIn::Ok { .. }
    ));
    assert!(
        matches!(
            sign_in(s, "mon@registry.example", &mpw, Some(&code), now + 1000),
            SignIn::Refused
        ),
        "a TOTP code is accepted once"
    );

    // A set-password link: no password until it is used, then the link is spent.
    let l = staff::create_staff(
        s,
        "link@registry.example",
        Role::RegistryMonitor,
        None,
        FirstSignIn::Link,
        false,
        &who.id,
        T0,
    )
    .unwrap();
    let token = l.set_password_token.unwrap();
    assert!(l.password.is_none());
    assert!(matches!(
        staff::set_password_with_token(s, &token, "short", T0 + MIN),
        Err(StaffError::WeakPassword)
    ));
    staff::set_password_with_token(s, &token, "a long enough passphrase", T0 + MIN).unwrap();
    assert!(matches!(
        staff::set_password_with_token(s, &token, "another long passphrase", T0 + 2 * MIN),
        Err(StaffError::InvalidLink)
    ));
    assert!(matches!(
        sign_in(
            s,
            "link@registry.example",
            "a long enough passphrase",
            None,
            now
        ),
        SignIn::Ok { .. }
    ));

    // Console records, audited with the staff id.
    let clinic = RecordId::random();
    s.add_clinic_event(
        &ClinicEvent {
            clinic,
            kind: "reminder".into(),
            at_ms: T0,
            staff_id: who.id.clone(),
            note: "".into(),
        },
        &audit::AuditEntry::staff_action(
            &who.id,
            audit::event::STAFF_CLINIC_EVENT,
            Some(clinic),
            "reminder",
            T0,
        ),
    )
    .unwrap();
    assert_eq!(s.clinic_events().unwrap().len(), 1);
    let ae = RecordId::random();
    s.add_ae_note(
        &AeNote {
            ae,
            clinic,
            kind: "escalation".into(),
            text: "late".into(),
            staff_id: who.id.clone(),
            at_ms: T0,
        },
        &audit::AuditEntry::staff_action(
            &who.id,
            audit::event::STAFF_AE_NOTE,
            Some(ae),
            "escalation",
            T0,
        ),
    )
    .unwrap();
    assert_eq!(s.ae_notes(ae).unwrap()[0].text, "late");
    let v = audit::verify(s).unwrap();
    assert!(v.ok, "{v:?}");
    let rows = s.audit_rows(0, 1000).unwrap();
    assert!(
        rows.iter()
            .any(|r| r.entry.event == "staff_signed_in"
                && r.entry.staff_id() == Some(who.id.as_str()))
    );
    assert!(rows
        .iter()
        .any(|r| r.entry.event == "staff_ae_note" && r.entry.staff_id() == Some(who.id.as_str())));
    assert_eq!(staff::list_staff(s).unwrap().len(), 3);
}
