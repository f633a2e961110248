//! Registry staff: accounts, roles, passwords (argon2id), optional TOTP, sessions and sign-in
//! throttling. The console (`crate::console`) is the only user; `followup server add-staff` calls
//! [`create_staff`] directly on the database.
//!
//! Design (see `docs/registry-console.md`):
//! * A session is 32 random bytes in an `HttpOnly; Secure; SameSite=Strict` cookie; the database
//!   keeps only its SHA-256, so a copy of the database cannot be replayed as a cookie.
//! * Expiry: [`SessionPolicy::idle_ms`] after the last request, and [`SessionPolicy::absolute_ms`]
//!   after sign-in, whichever comes first.
//! * Each session has its own CSRF token, placed in every form and compared in constant time.
//! * Throttling: after [`ThrottlePolicy::max_per_email`] failures for one email (or
//!   [`ThrottlePolicy::max_per_ip`] from one address) within [`ThrottlePolicy::window_ms`], sign-in
//!   is refused until the oldest failure leaves the window. The password is still checked against
//!   a dummy hash for unknown emails so that timing does not reveal which emails exist.
//! * Every action goes into the audit chain with the staff member's id
//!   ([`crate::audit::AuditEntry::staff_action`]).

pub mod store;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use followup_domain::ids::{random_bytes, RecordId};
use ring::digest::{digest, SHA256};
use subtle::ConstantTimeEq;

use crate::audit::{event, AuditEntry};
use crate::storage::{Storage, StorageError};
use store::{SessionRow, StaffRow};

/// What a staff member may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Clinics, staff, devices, enrolment codes; sees everything (pseudonymous).
    RegistryAdmin,
    /// Reads everything (pseudonymous); comments on and escalates adverse events.
    RegistryMonitor,
    /// Reads its own clinic only.
    ClinicCoordinator,
}

impl Role {
    pub fn code(self) -> &'static str {
        match self {
            Role::RegistryAdmin => "admin",
            Role::RegistryMonitor => "monitor",
            Role::ClinicCoordinator => "coordinator",
        }
    }
    pub fn from_code(s: &str) -> Option<Role> {
        match s {
            "admin" | "registry-admin" => Some(Role::RegistryAdmin),
            "monitor" | "registry-monitor" => Some(Role::RegistryMonitor),
            "coordinator" | "clinic-coordinator" => Some(Role::ClinicCoordinator),
            _ => None,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Role::RegistryAdmin => "registry admin",
            Role::RegistryMonitor => "registry monitor",
            Role::ClinicCoordinator => "clinic coordinator",
        }
    }
}

/// A signed-in (or listed) staff member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffMember {
    pub id: String,
    pub email: String,
    pub role: Role,
    /// The coordinator's clinic.
    pub clinic: Option<RecordId>,
    pub has_totp: bool,
}

impl StaffMember {
    fn from_row(r: &StaffRow) -> Result<Self, StaffError> {
        let role = Role::from_code(&r.role).ok_or_else(|| {
            StaffError::Storage(StorageError::Corrupt(format!("role {:?}", r.role)))
        })?;
        Ok(StaffMember {
            id: r.id.clone(),
            email: r.email.clone(),
            role,
            clinic: r.clinic,
            has_totp: r.totp_secret.is_some(),
        })
    }

    /// The only clinic this member may see, or `None` for registry staff (all clinics).
    pub fn clinic_scope(&self) -> Option<RecordId> {
        match self.role {
            Role::ClinicCoordinator => self.clinic,
            _ => None,
        }
    }

    /// Whether this member may see clinic `c`'s data.
    pub fn may_see_clinic(&self, c: RecordId) -> bool {
        match self.role {
            Role::ClinicCoordinator => self.clinic == Some(c),
            Role::RegistryAdmin | Role::RegistryMonitor => true,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::RegistryAdmin
    }

    /// Comment on and escalate adverse events.
    pub fn may_note_adverse_events(&self) -> bool {
        matches!(self.role, Role::RegistryAdmin | Role::RegistryMonitor)
    }
}

/// Session lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub idle_ms: i64,
    pub absolute_ms: i64,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            idle_ms: 30 * 60 * 1000,
            absolute_ms: 12 * 3600 * 1000,
        }
    }
}

/// Sign-in throttling.
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    pub window_ms: i64,
    pub max_per_email: u64,
    pub max_per_ip: u64,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            window_ms: 15 * 60 * 1000,
            max_per_email: 5,
            max_per_ip: 30,
        }
    }
}

/// Why a staff operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StaffError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0:?} is not an email address")]
    InvalidEmail(String),
    #[error("a staff member with email {0} already exists")]
    EmailTaken(String),
    #[error("a clinic coordinator needs --clinic (the clinic's id)")]
    ClinicRequired,
    #[error("only a clinic coordinator has a clinic")]
    ClinicNotAllowed,
    #[error("no clinic {0} on this registry")]
    UnknownClinic(RecordId),
    #[error("the password must be 12 to 200 characters")]
    WeakPassword,
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("this set-password link is unknown or expired")]
    InvalidLink,
}

/// SHA-256 of a token (cookies, set-password links).
pub fn token_hash(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    out
}

/// A new random token: 32 bytes, hex.
pub fn new_token() -> String {
    hex::encode(random_bytes::<32>())
}

/// Constant-time comparison of a submitted CSRF token with the session's.
pub fn csrf_matches(expected: &str, given: &str) -> bool {
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// Hash a password with argon2id (default parameters: 19 MiB, 2 passes) and a random salt.
pub fn hash_password(password: &str) -> Result<String, StaffError> {
    if password.chars().count() < 12 || password.len() > 200 {
        return Err(StaffError::WeakPassword);
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| StaffError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// An argon2id hash of nothing anyone knows, checked for unknown emails so that a refusal takes
/// as long whether or not the email exists.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        Argon2::default()
            .hash_password(new_token().as_bytes())
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// A readable random password: 20 characters of Crockford base32 (100 bits).
pub fn random_password() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    random_bytes::<20>()
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
        .collect()
}

fn normalise_email(email: &str) -> Result<String, StaffError> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        })
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(e)
    } else {
        Err(StaffError::InvalidEmail(email.to_string()))
    }
}

/// How a new staff member first signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstSignIn {
    /// A random password, printed once.
    Password,
    /// A set-password link valid for 24 hours, printed once.
    Link,
}

/// A created staff member and the secrets to hand over (shown once, never stored in clear).
#[derive(Debug, Clone)]
pub struct NewStaff {
    pub staff: StaffMember,
    pub password: Option<String>,
    /// The set-password token (the link is `/console/set-password?token=…`).
    pub set_password_token: Option<String>,
    /// Base32 TOTP secret and its `otpauth://` URL, when TOTP was asked for.
    pub totp_secret: Option<String>,
    pub totp_url: Option<String>,
}

/// Who created a staff member, for the audit log.
pub const BOOTSTRAP_ACTOR: &str = "cli";

/// Create a staff member. `actor` is the creating staff member's id, or [`BOOTSTRAP_ACTOR`].
#[allow(clippy::too_many_arguments)] // each is a distinct fact of the new account
pub fn create_staff(
    storage: &dyn Storage,
    email: &str,
    role: Role,
    clinic: Option<RecordId>,
    first: FirstSignIn,
    totp: bool,
    actor: &str,
    now_ms: i64,
) -> Result<NewStaff, StaffError> {
    let email = normalise_email(email)?;
    match (role, clinic) {
        (Role::ClinicCoordinator, None) => return Err(StaffError::ClinicRequired),
        (Role::ClinicCoordinator, Some(c)) => {
            if !storage.clinic_exists(c)? {
                return Err(StaffError::UnknownClinic(c));
            }
        }
        (_, Some(_)) => return Err(StaffError::ClinicNotAllowed),
        (_, None) => {}
    }
    let id = hex::encode(random_bytes::<8>());
    let (password, password_hash) = match first {
        FirstSignIn::Password => {
            let p = random_password();
            let h = hash_password(&p)?;
            (Some(p), Some(h))
        }
        FirstSignIn::Link => (None, None),
    };
    let link = (first == FirstSignIn::Link).then(new_token);
    let totp_secret = totp.then(random_bytes::<20>);
    let row = StaffRow {
        id: id.clone(),
        email: email.clone(),
        role: role.code().into(),
        clinic,
        password_hash,
        totp_secret: totp_secret.map(|s| s.to_vec()),
        totp_last_step: None,
        set_password_hash: link.as_deref().map(token_hash),
        set_password_expires_ms: link.as_ref().map(|_| now_ms + 24 * 3600 * 1000),
        created_at_ms: now_ms,
        disabled_at_ms: None,
    };
    let audit = AuditEntry::staff_action(
        actor,
        event::STAFF_CREATED,
        clinic,
        &format!("created {id} role={}", role.code()),
        now_ms,
    );
    if !storage.insert_staff(&row, &audit)? {
        return Err(StaffError::EmailTaken(email));
    }
    let (totp_secret, totp_url) = match totp_secret {
        Some(s) => {
            let t = totp_for(&s, &email)?;
            let url = t.to_url().map_err(|e| StaffError::Hash(e.to_string()))?;
            (Some(base32_of(&s)), Some(url))
        }
        None => (None, None),
    };
    Ok(NewStaff {
        staff: StaffMember::from_row(&row)?,
        password,
        set_password_token: link,
        totp_secret,
        totp_url,
    })
}

fn base32_of(bytes: &[u8]) -> String {
    totp_rs::Secret::new(bytes.to_vec().into_boxed_slice()).to_base32()
}

fn totp_for(secret: &[u8], email: &str) -> Result<totp_rs::Totp, StaffError> {
    totp_rs::Builder::new()
        .with_secret(secret.to_vec())
        .with_issuer(Some("Followup registry"))
        .with_account_name(email.replace(':', "_"))
        .build()
        .map_err(|e| StaffError::Hash(e.to_string()))
}

/// The outcome of a sign-in attempt.
#[derive(Debug)]
pub enum SignIn {
    /// Signed in: the cookie value (to set), the session's CSRF token, who.
    Ok {
        cookie: String,
        csrf: String,
        staff: StaffMember,
    },
    /// Wrong email, password or TOTP code (one message for all, on purpose).
    Refused,
    /// Too many recent failures; retry after this many seconds.
    Throttled { retry_after_secs: i64 },
}

/// Check the credentials and open a session.
#[allow(clippy::too_many_arguments)] // credentials, client, policies and clock: all distinct
pub fn sign_in(
    storage: &dyn Storage,
    email: &str,
    password: &str,
    totp_code: Option<&str>,
    client_ip: &str,
    throttle: ThrottlePolicy,
    policy: SessionPolicy,
    now_ms: i64,
) -> Result<SignIn, StaffError> {
    let email = email.trim().to_lowercase();
    let email_key = format!("email:{email}");
    let ip_key = format!("ip:{client_ip}");
    let since = now_ms - throttle.window_ms;
    for (key, max) in [
        (&email_key, throttle.max_per_email),
        (&ip_key, throttle.max_per_ip),
    ] {
        let (n, oldest) = storage.login_failures_since(key, since)?;
        if n >= max {
            let until = oldest.unwrap_or(now_ms) + throttle.window_ms;
            return Ok(SignIn::Throttled {
                retry_after_secs: ((until - now_ms) / 1000).max(1),
            });
        }
    }
    let row = storage
        .staff_by_email(&email)?
        .filter(|r| r.disabled_at_ms.is_none());
    let hash = row
        .as_ref()
        .and_then(|r| r.password_hash.as_deref())
        .unwrap_or_else(|| dummy_hash());
    let mut ok =
        verify_password(password, hash) && row.as_ref().is_some_and(|r| r.password_hash.is_some());
    if let (true, Some(r)) = (ok, row.as_ref()) {
        if let Some(secret) = &r.totp_secret {
            let t = totp_for(secret, &r.email)?;
            let step = totp_code
                .map(|c| c.trim().replace(' ', ""))
                .and_then(|c| t.check(&c, u64::try_from(now_ms / 1000).unwrap_or(0)))
                .and_then(|s| i64::try_from(s).ok());
            ok = match step {
                Some(step) => storage.use_totp_step(&r.id, step)?,
                None => false,
            };
        }
    }
    let Some(row) = row.filter(|_| ok) else {
        storage.record_login_failure(&[email_key, ip_key], now_ms)?;
        if let Some(r) = storage.staff_by_email(&email)? {
            storage.append_audit(&AuditEntry::staff_action(
                &r.id,
                event::STAFF_SIGN_IN_FAILED,
                None,
                "wrong password or code",
                now_ms,
            ))?;
        }
        return Ok(SignIn::Refused);
    };
    storage.clear_login_failures(&email_key)?;
    let staff = StaffMember::from_row(&row)?;
    let cookie = new_token();
    let csrf = new_token();
    let session = SessionRow {
        token_hash: token_hash(&cookie),
        staff_id: staff.id.clone(),
        csrf: csrf.clone(),
        created_at_ms: now_ms,
        last_seen_ms: now_ms,
        expires_at_ms: now_ms + policy.absolute_ms,
    };
    storage.insert_session(
        &session,
        &AuditEntry::staff_action(&staff.id, event::STAFF_SIGNED_IN, None, "", now_ms),
    )?;
    Ok(SignIn::Ok {
        cookie,
        csrf,
        staff,
    })
}

/// The staff member and CSRF token of a live session, `None` if the cookie is unknown, expired
/// (idle or absolute) or its member disabled. Refreshes the idle timer (at most once a minute).
pub fn session_for(
    storage: &dyn Storage,
    cookie: &str,
    policy: SessionPolicy,
    now_ms: i64,
) -> Result<Option<(StaffMember, SessionRow)>, StaffError> {
    let hash = token_hash(cookie);
    let Some(s) = storage.session(&hash)? else {
        return Ok(None);
    };
    if now_ms >= s.expires_at_ms || now_ms - s.last_seen_ms >= policy.idle_ms {
        storage.delete_session(&hash, now_ms, None)?;
        return Ok(None);
    }
    let Some(row) = storage
        .staff_by_id(&s.staff_id)?
        .filter(|r| r.disabled_at_ms.is_none())
    else {
        return Ok(None);
    };
    if now_ms - s.last_seen_ms >= 60_000 {
        storage.touch_session(&hash, now_ms)?;
    }
    Ok(Some((StaffMember::from_row(&row)?, s)))
}

/// End a session.
pub fn sign_out(
    storage: &dyn Storage,
    cookie: &str,
    staff_id: &str,
    now_ms: i64,
) -> Result<(), StaffError> {
    storage.delete_session(
        &token_hash(cookie),
        now_ms,
        Some(&AuditEntry::staff_action(
            staff_id,
            event::STAFF_SIGNED_OUT,
            None,
            "",
            now_ms,
        )),
    )?;
    Ok(())
}

/// Set a password with a set-password link's token.
pub fn set_password_with_token(
    storage: &dyn Storage,
    token: &str,
    password: &str,
    now_ms: i64,
) -> Result<StaffMember, StaffError> {
    let row = storage
        .staff_by_set_password_token(&token_hash(token), now_ms)?
        .ok_or(StaffError::InvalidLink)?;
    let hash = hash_password(password)?;
    storage.set_staff_password(
        &row.id,
        &hash,
        &AuditEntry::staff_action(&row.id, event::STAFF_PASSWORD_SET, None, "via link", now_ms),
    )?;
    StaffMember::from_row(&row)
}

/// Every staff member (admin's staff page).
pub fn list_staff(storage: &dyn Storage) -> Result<Vec<StaffMember>, StaffError> {
    storage
        .list_staff()?
        .iter()
        .map(StaffMember::from_row)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterz", &h));
        assert!(matches!(
            hash_password("short"),
            Err(StaffError::WeakPassword)
        ));
    }

    #[test]
    fn csrf_comparison_needs_the_exact_token() {
        let t = new_token();
        assert!(csrf_matches(&t, &t.clone()));
        assert!(!csrf_matches(&t, ""));
        assert!(!csrf_matches(&t, &new_token()));
        assert!(!csrf_matches(&t, &t[..t.len() - 1]));
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            normalise_email(" Ana@Registry.ORG ").unwrap(),
            "ana@registry.org"
        );
        assert!(normalise_email("ana").is_err());
        assert!(normalise_email("ana@localhost").is_err());
        assert!(normalise_email("a na@x.org").is_err());
    }

    #[test]
    fn roles_round_trip() {
        for r in [
            Role::RegistryAdmin,
            Role::RegistryMonitor,
            Role::ClinicCoordinator,
        ] {
            assert_eq!(Role::from_code(r.code()), Some(r));
        }
        assert_eq!(Role::from_code("root"), None);
    }
}
