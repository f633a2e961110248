//! `followup device user ...` and signing in on a device with users (a shared clinic tablet).
//!
//! A device with users opens locked: every command that reads or writes records first signs in
//! the user named by `--user` / `FOLLOWUP_USER`, with the PIN from `FOLLOWUP_PIN` or a prompt
//! (never a flag). A device without users (a patient's phone) never asks.

use std::path::Path;
use std::sync::OnceLock;

use followup_device::crypto::{KeySource, UserPin};
use followup_device::device::Device;
use followup_device::store::StoreError;
use followup_device::Error;
use followup_domain::ids::UserId;

use crate::args::UserCommand;
use crate::device_cmd::{client, passphrase, TEST_ITERATIONS_ENV};
use crate::error::CliError;
use crate::output;

/// The environment variable holding the signing-in user's PIN or passphrase.
pub const PIN_ENV: &str = "FOLLOWUP_PIN";
/// The environment variable holding the PIN a new user chooses (`device user add`).
pub const NEW_PIN_ENV: &str = "FOLLOWUP_NEW_PIN";

/// The user given with `--user` / `FOLLOWUP_USER` (set once by `followup device`).
static SIGN_IN_USER: OnceLock<Option<String>> = OnceLock::new();

/// Remember the user to sign in as for this run.
pub fn set_sign_in_user(user: Option<String>) {
    let _ = SIGN_IN_USER.set(user);
}

/// The user given for this run, if any.
pub fn sign_in_user() -> Option<String> {
    SIGN_IN_USER.get().cloned().flatten()
}

/// A PIN or passphrase, honouring the test-only iteration override of `device init`.
fn user_pin(pin: String) -> UserPin {
    match std::env::var(TEST_ITERATIONS_ENV)
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
    {
        Some(n) => UserPin::with_iterations(pin, n),
        None => UserPin::new(pin),
    }
}

fn read_pin(env: &str, prompt: &str, confirm: bool) -> Result<UserPin, CliError> {
    if let Ok(p) = std::env::var(env) {
        if p.is_empty() {
            return Err(CliError::new(format!("{env} is set but empty"))
                .hint("set it to the PIN, or unset it to be asked"));
        }
        return Ok(user_pin(p));
    }
    let no_terminal = || {
        CliError::new(format!(
            "no PIN: {env} is not set and there is no terminal to ask on"
        ))
        .hint(format!("set {env}, or run the command in a terminal"))
    };
    let p = rpassword::prompt_password(prompt).map_err(|_| no_terminal())?;
    if confirm {
        let again = rpassword::prompt_password("Repeat it: ").map_err(|_| no_terminal())?;
        if again != p {
            return Err(CliError::new("the two PINs differ").hint("run the command again"));
        }
    }
    Ok(user_pin(p))
}

fn parse_user(given: &str) -> Result<UserId, CliError> {
    given.trim().parse().map_err(|_| {
        CliError::new(format!("{given:?} is not a user id"))
            .hint("user ids are 32 hexadecimal characters (see `followup device user list`)")
    })
}

/// A user given by id or by their exact name on this device.
fn resolve_user(device: &Device, given: &str) -> Result<UserId, CliError> {
    if let Ok(id) = given.trim().parse::<UserId>() {
        return Ok(id);
    }
    let users = device.users()?;
    let matches: Vec<_> = users
        .iter()
        .filter(|u| u.name.eq_ignore_ascii_case(given.trim()))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.id),
        [] => Err(CliError::new(format!("no user {given:?} on this device"))
            .hint("see `followup device user list`")),
        _ => Err(CliError::new(format!("several users are called {given:?}"))
            .hint("pass the user id (see `followup device user list`)")),
    }
}

/// Open the store with the passphrase, without signing in.
pub fn open_locked(path: &Path) -> Result<Device, CliError> {
    if !path.exists() {
        return Err(
            CliError::new(format!("no store at {}", path.display())).hint(
                "create one with `followup device init`, or point --store / FOLLOWUP_STORE at it",
            ),
        );
    }
    let pass = passphrase(false)?;
    Device::open(path, KeySource::passphrase(pass))
        .map_err(|e| CliError::from(e).context(format!("cannot open {}", path.display())))
}

/// Sign in on a device with users (no-op without users).
pub fn sign_in_if_needed(device: &Device) -> Result<(), CliError> {
    if !device.has_users() || device.is_unlocked() {
        return Ok(());
    }
    let Some(given) = SIGN_IN_USER.get().cloned().flatten() else {
        return Err(CliError::new("this device has users: sign in first").hint(
            "pass --user NAME_OR_ID (or set FOLLOWUP_USER) and the PIN in FOLLOWUP_PIN or at \
             the prompt; `followup device user list` shows the users",
        ));
    };
    let user = resolve_user(device, &given)?;
    let pin = read_pin(PIN_ENV, "PIN: ", false)?;
    device.sign_in(user, &pin).map_err(sign_in_error)
}

fn sign_in_error(e: Error) -> CliError {
    match e {
        Error::Store(StoreError::WrongPin { attempts_left }) => CliError::new("wrong PIN").hint(
            format!("{attempts_left} attempt(s) left before this user is locked on this device"),
        ),
        Error::Store(StoreError::TryLater { seconds }) => {
            CliError::new("too many wrong PINs").hint(format!("wait {seconds} s and try again"))
        }
        other => other.into(),
    }
}

/// Run `followup device user ...`.
pub fn run(path: &Path, command: UserCommand) -> Result<(), CliError> {
    match command {
        UserCommand::List { json } => {
            let device = open_locked(path)?;
            list(&device, json)
        }
        UserCommand::Add { id, code } => {
            let device = open_locked(path)?;
            sign_in_if_needed(&device)?;
            let user = parse_user(&id)?;
            let pin = read_pin(
                NEW_PIN_ENV,
                "The new user's PIN (6+ digits) or passphrase (8+ characters): ",
                true,
            )?;
            let c = client(None)?;
            let first = !device.has_users();
            let spin = output::spinner("checking the activation code with the registry", false);
            let r = crate::runtime()?.block_on(c.activate_user(&device, user, &code, &pin));
            spin.finish_and_clear();
            let info = r?;
            println!("user {} ({}) added to this device", info.name, info.id);
            if first {
                println!(
                    "this device now has users: every command needs --user and the user's PIN \
                     (FOLLOWUP_PIN or the prompt)"
                );
            }
            println!(
                "next: {}",
                crate::device_app::device_cmd_as(Some(info.id.to_string()), "patients")
            );
            Ok(())
        }
        UserCommand::Remove { user } => {
            let device = open_locked(path)?;
            sign_in_if_needed(&device)?;
            let id = resolve_user(&device, &user)?;
            if device.remove_user(id)? {
                println!("user {id} removed from this device (their PIN no longer opens it)");
                Ok(())
            } else {
                Err(CliError::new(format!("no user {id} on this device"))
                    .hint("see `followup device user list`"))
            }
        }
    }
}

fn list(device: &Device, json: bool) -> Result<(), CliError> {
    let users = device.users()?;
    if json {
        let v: Vec<_> = users
            .iter()
            .map(|u| {
                serde_json::json!({
                    "id": u.id, "name": u.name, "failures": u.failures,
                    "locked": u.locked, "retry_at_ms": u.retry_at_ms,
                })
            })
            .collect();
        return output::print_json(&serde_json::json!({
            "has_users": device.has_users(), "users": v,
        }));
    }
    if users.is_empty() {
        println!("this device has no users: it opens with the store passphrase alone");
        println!(
            "next: {}   (the user's id and code come from the registry staff)",
            crate::device_app::device_cmd("user add --id USER_ID --code CODE")
        );
        return Ok(());
    }
    for u in &users {
        let state = if u.locked {
            "locked (add again with a new code)".to_string()
        } else if u.failures > 0 {
            format!("{} wrong PIN(s)", u.failures)
        } else {
            "ok".to_string()
        };
        println!("{}  {}  {}", u.id, u.name, state);
    }
    Ok(())
}
