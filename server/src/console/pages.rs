//! The console's pages: one handler and one template struct per page. Each template struct is
//! exactly what its page shows (nothing else reaches the HTML).

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use followup_domain::definitions::{Definition, DefinitionType};
use followup_domain::ids::{DeviceId, RecordId};
use followup_domain::model::RecordKind;
use followup_domain::protocol::{CreateClinicRequest, EnrolmentGrant};
use serde::Deserialize;

use super::charts::{self, Bar};
use super::names::Names;
use super::pager::{page_param, Pager};
use super::participation::{self, ClinicFacts, ListName};
use super::{
    assets, blocking, count, fmt_day, fmt_ms, html, require_staff, set_cookie, today, ClientIp,
    ConsoleError, Ctx, LOGIN_COOKIE, SESSION_COOKIE,
};
use crate::api::AppState;
use crate::audit::{self, event, AuditEntry};
use crate::auth::now_ms;
use crate::cases;
use crate::readmodel::query::{self as rm, AeFilter, CaseStatus, VisitFilter, VisitState};
use crate::staff::store::{AeNote, ClinicEvent};
use crate::staff::{self, FirstSignIn, Role, SignIn};
use crate::storage::Storage;

type Page = Result<Response, ConsoleError>;

fn parse_id(s: &str) -> Result<RecordId, ConsoleError> {
    s.trim()
        .parse()
        .map_err(|_| ConsoleError::NotFound(format!("{s:?} is not a record id")))
}

fn opt_id(s: &Option<String>) -> Result<Option<RecordId>, ConsoleError> {
    match s.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => parse_id(v).map(Some),
    }
}

fn short(id: RecordId) -> String {
    id.to_hex()[..8].to_string()
}

fn pct(r: Option<f64>) -> String {
    r.map(|r| format!("{:.0} %", r * 100.0))
        .unwrap_or_else(|| "–".into())
}

fn days_of_ms(ms: Option<i64>) -> String {
    ms.map(|m| format!("{:.1} d", m as f64 / 86_400_000.0))
        .unwrap_or_else(|| "–".into())
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "–".into())
}

/// The frame every signed-in page shares (header, navigation, sign-out form).
pub struct Chrome {
    pub email: String,
    pub role: &'static str,
    pub csrf: String,
    pub page: &'static str,
    /// Registry-wide pages (audit, staff) in the navigation.
    pub registry: bool,
    pub admin: bool,
    pub css: String,
    pub htmx: String,
}

fn chrome(ctx: &Ctx, page: &'static str) -> Chrome {
    Chrome {
        email: ctx.staff.email.clone(),
        role: ctx.staff.role.label(),
        csrf: ctx.csrf.clone(),
        page,
        registry: ctx.staff.clinic_scope().is_none(),
        admin: ctx.staff.is_admin(),
        css: assets::url("console.css"),
        htmx: assets::url("htmx.min.js"),
    }
}

/// Clinic names by id, within scope.
fn clinic_names(
    s: &dyn Storage,
    scope: Option<RecordId>,
) -> Result<HashMap<RecordId, String>, ConsoleError> {
    Ok(s.list_clinics()?
        .into_iter()
        .filter(|c| scope.is_none_or(|sc| sc == c.id))
        .map(|c| (c.id, c.name))
        .collect())
}

// ------------------------------------------------------------------------------------------
// Sign-in, sign-out, set password

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    css: String,
    csrf: String,
    error: Option<String>,
    email: String,
}

fn login_page(error: Option<String>, email: String, status: axum::http::StatusCode) -> Response {
    let csrf = staff::new_token();
    let page = LoginPage {
        css: assets::url("console.css"),
        csrf: csrf.clone(),
        error,
        email,
    };
    let mut r = html(page.render());
    *r.status_mut() = status;
    if let Ok(v) = set_cookie(LOGIN_COOKIE, &csrf, 3600).parse() {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

pub async fn login_form() -> Response {
    login_page(None, String::new(), axum::http::StatusCode::OK)
}

#[derive(Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
    #[serde(default)]
    totp: String,
    #[serde(default)]
    csrf: String,
}

pub async fn login(
    State(st): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Page {
    let expected = super::cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty() || !staff::csrf_matches(expected, &f.csrf) {
        return Err(ConsoleError::Csrf);
    }
    let storage = st.storage.clone();
    let cfg = st.console.clone();
    let email = f.email.clone();
    let outcome = blocking(move || {
        let totp = Some(f.totp.as_str()).filter(|t| !t.trim().is_empty());
        Ok(staff::sign_in(
            storage.as_ref(),
            &f.email,
            &f.password,
            totp,
            &ip,
            cfg.throttle,
            cfg.sessions,
            now_ms(),
        )?)
    })
    .await?;
    match outcome {
        SignIn::Ok { cookie, staff, .. } => {
            tracing::info!(staff = %staff.id, "console: signed in");
            let mut r = Redirect::to("/console").into_response();
            let max_age = st.console.sessions.absolute_ms / 1000;
            if let Ok(v) = set_cookie(SESSION_COOKIE, &cookie, max_age).parse() {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            if let Ok(v) = set_cookie(LOGIN_COOKIE, "", 0).parse() {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            Ok(r)
        }
        SignIn::Refused => Ok(login_page(
            Some("Wrong email, password or code.".into()),
            email,
            axum::http::StatusCode::UNAUTHORIZED,
        )),
        SignIn::Throttled { retry_after_secs } => Ok(login_page(
            Some(format!(
                "Too many failed sign-ins. Try again in {}.",
                count((retry_after_secs + 59) / 60, "minute", "minutes")
            )),
            email,
            axum::http::StatusCode::TOO_MANY_REQUESTS,
        )),
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<CsrfOnly>,
) -> Page {
    let ctx = require_staff(&st, &headers).await?;
    ctx.check_csrf(&f.csrf)?;
    let storage = st.storage.clone();
    blocking(move || {
        Ok(staff::sign_out(
            storage.as_ref(),
            &ctx.cookie,
            &ctx.staff.id,
            now_ms(),
        )?)
    })
    .await?;
    let mut r = Redirect::to("/console/login").into_response();
    if let Ok(v) = set_cookie(SESSION_COOKIE, "", 0).parse() {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(r)
}

#[derive(Template)]
#[template(path = "console/set_password.html")]
struct SetPasswordPage {
    css: String,
    token: String,
    error: Option<String>,
    done: bool,
}

#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

pub async fn set_password_form(Query(q): Query<TokenQuery>) -> Response {
    html(
        SetPasswordPage {
            css: assets::url("console.css"),
            token: q.token,
            error: None,
            done: false,
        }
        .render(),
    )
}

#[derive(Deserialize)]
pub struct SetPasswordForm {
    token: String,
    password: String,
    confirm: String,
}

/// The set-password token in the form is itself the secret: a forged cross-site form cannot
/// know it, so it doubles as the CSRF token here.
pub async fn set_password(State(st): State<AppState>, Form(f): Form<SetPasswordForm>) -> Page {
    let page = |error: Option<String>, done: bool, token: String| {
        html(
            SetPasswordPage {
                css: assets::url("console.css"),
                token,
                error,
                done,
            }
            .render(),
        )
    };
    if f.password != f.confirm {
        return Ok(page(
            Some("The two passwords differ.".into()),
            false,
            f.token,
        ));
    }
    let storage = st.storage.clone();
    let token = f.token.clone();
    let r = tokio::task::spawn_blocking(move || {
        staff::set_password_with_token(storage.as_ref(), &f.token, &f.password, now_ms())
    })
    .await?;
    match r {
        Ok(_) => Ok(page(None, true, String::new())),
        Err(e @ (staff::StaffError::WeakPassword | staff::StaffError::InvalidLink)) => {
            Ok(page(Some(e.to_string()), false, token))
        }
        Err(e) => Err(e.into()),
    }
}

// ------------------------------------------------------------------------------------------
// Overview

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    chrome: Chrome,
    scope_name: Option<String>,
    o: rm::Overview,
    severity_chart: String,
    completion_chart: String,
    /// Visit, label, done, expected, rate.
    visits: Vec<(String, String, u64, u64, String)>,
    as_of: String,
}

pub async fn overview(State(st): State<AppState>, headers: HeaderMap) -> Page {
    let ctx = require_staff(&st, &headers).await?;
    let scope = ctx.scope(None)?;
    let storage = st.storage.clone();
    let day = today();
    let (o, counts, names) = blocking(move || {
        let s = storage.as_ref();
        Ok((
            rm::overview(s, scope)?,
            rm::visit_counts(s, scope, day)?,
            clinic_names(s, scope)?,
        ))
    })
    .await?;
    let sev_max = o
        .adverse_events_by_severity
        .iter()
        .copied()
        .max()
        .unwrap_or(0) as f64;
    let severity_chart = charts::bars(
        "Adverse events by severity grade",
        &o.adverse_events_by_severity
            .iter()
            .enumerate()
            .map(|(i, n)| Bar {
                label: format!("grade {}", i + 1),
                value: *n as f64,
                text: n.to_string(),
            })
            .collect::<Vec<_>>(),
        sev_max,
        "#9b1c1c",
    );
    let totals: Vec<&rm::VisitCounts> = counts.iter().filter(|c| c.clinic.is_none()).collect();
    let completion_chart = charts::bars(
        "Follow-up completion rate per visit",
        &totals
            .iter()
            .map(|c| Bar {
                label: c.visit.clone(),
                value: c.completion_rate().unwrap_or(0.0),
                text: pct(c.completion_rate()),
            })
            .collect::<Vec<_>>(),
        1.0,
        "#10253f",
    );
    let visits = totals
        .iter()
        .map(|c| {
            (
                c.visit.clone(),
                c.label.clone(),
                c.done,
                c.expected(),
                pct(c.completion_rate()),
            )
        })
        .collect();
    Ok(html(
        OverviewPage {
            chrome: chrome(&ctx, "overview"),
            scope_name: scope.and_then(|c| names.get(&c).cloned()),
            o,
            severity_chart,
            completion_chart,
            visits,
            as_of: day.to_string(),
        }
        .render(),
    ))
}

// ------------------------------------------------------------------------------------------
// Clinics

/// A clinic's participation lifecycle, as the console shows it.
fn lifecycle(
    facts: &ClinicFacts,
    rules: &participation::Rules,
    now: i64,
) -> (&'static str, String) {
    let placed = participation::evaluate(rules, vec![facts.clone()], now);
    match placed.first() {
        Some(p) if p.rule_id == "declined" => ("declined", p.rule_text.clone()),
        Some(p) if p.list == ListName::NotParticipating => ("no response", p.rule_text.clone()),
        Some(p) if p.rule_id == "lapsed" => ("lapsed", p.rule_text.clone()),
        Some(p) if p.list == ListName::FailingToRespond => {
            ("active, failing to respond", p.rule_text.clone())
        }
        Some(_) if facts.last_sync_ms.is_some() => ("active", String::new()),
        Some(_) => ("joined", "Device enrolled, no sync yet.".into()),
        None => ("invited", "Invitation pending.".into()),
    }
}

struct ClinicLine {
    id: String,
    name: String,
    country: String,
    status: &'static str,
    why: String,
    invited: String,
    reminders: String,
    devices: usize,
    last_sync: String,
    patients: u64,
    completion: String,
    open_aes: u64,
    overdue_aes: u64,
    median_response: String,
}

/// The participation facts of the clinics in scope, with the statistics and events they came from.
type ClinicFactsAnd = (Vec<ClinicFacts>, Vec<rm::ClinicStats>, Vec<ClinicEvent>);

fn clinic_facts(
    s: &dyn Storage,
    scope: Option<RecordId>,
    day: chrono::NaiveDate,
) -> Result<ClinicFactsAnd, ConsoleError> {
    let stats = rm::clinic_stats(s, scope, day)?;
    let events = s.clinic_events()?;
    let queue = rm::ae_queue(
        s,
        scope,
        day,
        &AeFilter {
            overdue_only: true,
            ..AeFilter::default()
        },
    )?;
    let mut overdue: HashMap<RecordId, Vec<i64>> = HashMap::new();
    // `overdue_only`: past the registry's deadline while the clinic still owes the case.
    for i in &queue {
        overdue.entry(i.clinic).or_default().push(i.days_overdue);
    }
    let clinics = s.list_clinics()?;
    let facts = clinics
        .iter()
        .filter(|c| scope.is_none_or(|sc| sc == c.id))
        .map(|c| {
            let st = stats.iter().find(|x| x.clinic == c.id);
            ClinicFacts {
                id: c.id,
                name: c.name.clone(),
                country: c.country.clone(),
                invited_at_ms: c.invited_at_ms,
                declined: events
                    .iter()
                    .any(|e| e.clinic == c.id && e.kind == "declined"),
                devices_enrolled: st.map(|x| x.devices.len() as u64).unwrap_or(0),
                last_sync_ms: st.and_then(|x| x.last_sync_ms),
                overdue_days: overdue.remove(&c.id).unwrap_or_default(),
            }
        })
        .collect();
    Ok((facts, stats, events))
}

#[derive(Template)]
#[template(path = "console/clinics.html")]
struct ClinicsPage {
    chrome: Chrome,
    clinics: Vec<ClinicLine>,
    pager: Pager,
    flash: Option<String>,
}

fn clinic_lines(
    facts: Vec<ClinicFacts>,
    stats: &[rm::ClinicStats],
    events: &[ClinicEvent],
    rules: &participation::Rules,
    now: i64,
) -> Vec<ClinicLine> {
    facts
        .into_iter()
        .map(|f| {
            let st = stats.iter().find(|x| x.clinic == f.id);
            let (status, why) = lifecycle(&f, rules, now);
            let reminders: Vec<String> = events
                .iter()
                .filter(|e| e.clinic == f.id && e.kind == "reminder")
                .map(|e| fmt_day(e.at_ms))
                .collect();
            ClinicLine {
                id: f.id.to_hex(),
                name: f.name.clone(),
                country: f.country.clone(),
                status,
                why,
                invited: fmt_day(f.invited_at_ms),
                reminders: if reminders.is_empty() {
                    "none".into()
                } else {
                    reminders.join(", ")
                },
                devices: st.map(|x| x.devices.len()).unwrap_or(0),
                last_sync: f.last_sync_ms.map(fmt_ms).unwrap_or_else(|| "never".into()),
                patients: st.map(|x| x.patients).unwrap_or(0),
                completion: pct(st.and_then(|x| x.completion_rate)),
                open_aes: st.map(|x| x.open_adverse_events).unwrap_or(0),
                overdue_aes: st.map(|x| x.overdue_adverse_events).unwrap_or(0),
                median_response: days_of_ms(st.and_then(|x| x.median_adjudication_response_ms)),
            }
        })
        .collect()
}

/// A page of a list with no filter but its page number.
#[derive(Deserialize, Default)]
pub struct PageQuery {
    page: Option<String>,
}

/// Clinics a page of the clinics list shows.
const CLINICS_PER_PAGE: u32 = 50;
/// Devices a page of the devices list shows.
const DEVICES_PER_PAGE: u32 = 50;

async fn clinics_page(st: &AppState, ctx: &Ctx, flash: Option<String>, page: u64) -> Page {
    let scope = ctx.scope(None)?;
    let storage = st.storage.clone();
    let rules = st.console.rules.clone();
    let day = today();
    let lines = blocking(move || {
        let (facts, stats, events) = clinic_facts(storage.as_ref(), scope, day)?;
        Ok(clinic_lines(facts, &stats, &events, &rules, now_ms()))
    })
    .await?;
    let pager = Pager::new(
        "/console/clinics",
        &[],
        "page",
        page,
        CLINICS_PER_PAGE,
        lines.len() as u64,
        "Clinics",
    );
    let clinics = pager.rows(lines);
    Ok(html(
        ClinicsPage {
            chrome: chrome(ctx, "clinics"),
            clinics,
            pager,
            flash,
        }
        .render(),
    ))
}

pub async fn clinics(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Page {
    let ctx = require_staff(&st, &headers).await?;
    let page = page_param(&q.page, "page")?;
    clinics_page(&st, &ctx, None, page).await
}

#[derive(Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    csrf: String,
    name: String,
    country: String,
}

pub async fn invite_clinic(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<InviteForm>,
) -> Page {
    let ctx = require_staff(&st, &headers).await?;
    ctx.check_csrf(&f.csrf)?;
    ctx.require_admin()?;
    let storage = st.storage.clone();
    let staff_id = ctx.staff.id.clone();
    let name = f.name.trim().to_string();
    let id = blocking(move || {
        let now = now_ms();
        let req = CreateClinicRequest {
            name: f.name,
            country: f.country,
        };
        let id = crate::api::create_clinic_record(storage.as_ref(), req, now)?;
        storage.append_audit(&AuditEntry::staff_action(
            &staff_id,
            event::STAFF_CLINIC_INVITED,
            Some(id),
            "",
            now,
        ))?;
        Ok(id)
    })
    .await?;
    tracing::info!(clinic = %id, staff = %ctx.staff.id, "console: clinic invited");
    clinics_page(
        &st,
        &ctx,
        Some(format!("{name} invited (clinic {}).", id.to_hex())),
        1,
    )
    .await
}

struct DeviceLine {
    id: String,
    role: String,
    label: String,
    enrolled: String,
    last_seen: String,
    revoked: String,
}

fn device_lines(devices: &[rm::DeviceActivity]) -> Vec<DeviceLine> {
    devices
        .iter()
        .map(|d| DeviceLine {
            id: d.device.to_string(),
            role: d.role.replace('_', " "),
            label: opt(&d.label),
            enrolled: fmt_ms(d.enrolled_at_ms),
            last_seen: d.last_seen_ms.map(fmt_ms).unwrap_or_else(|| "never".into()),
            revoked: d.revoked_at_ms.map(fmt_ms).unwrap_or_default(),
        })
        .collect()
}

/// One enrolment sharing a study code: patient id, enrolment date, device (short).
type DuplicateRow = (String, String, String);

#[derive(Template)]
#[template(path = "console/clinic.html")]
struct ClinicPage {
    chrome: Chrome,
    c: ClinicLine,
    devices: Vec<DeviceLine>,
    /// Study codes enrolled twice at this clinic (two tablets offline): code, then each
    /// enrolment's patient id, enrolment date and device (short).
    duplicates: Vec<(String, Vec<DuplicateRow>)>,
    /// Issued enrolment code: text, QR SVG, role, expiry.
    code: Option<(String, String, String, String)>,
    flash: Option<String>,
}

async fn clinic_page(
    st: &AppState,
    ctx: &Ctx,
    id: RecordId,
    code: Option<(String, String, String, String)>,
    flash: Option<String>,
) -> Page {
    ctx.check_clinic(id)?;
    let storage = st.storage.clone();
    let rules = st.console.rules.clone();
    let day = today();
    let (line, devices, duplicates) = blocking(move || {
        let s = storage.as_ref();
        let (facts, stats, events) = clinic_facts(s, Some(id), day)?;
        let devices = stats
            .iter()
            .find(|x| x.clinic == id)
            .map(|x| device_lines(&x.devices))
            .unwrap_or_default();
        let line = clinic_lines(facts, &stats, &events, &rules, now_ms())
            .into_iter()
            .next()
            .ok_or_else(|| ConsoleError::NotFound(format!("no clinic {id}")))?;
        let duplicates = crate::readmodel::duplicates::duplicate_study_codes(s, Some(id))?
            .into_iter()
            .map(|d| {
                let rows = d
                    .enrolments
                    .into_iter()
                    .map(|e| {
                        (
                            e.patient.to_hex(),
                            e.enrolled_on.unwrap_or_default(),
                            e.device
                                .map(|x| x.to_hex()[..8].to_string())
                                .unwrap_or_default(),
                        )
                    })
                    .collect();
                (d.study_code, rows)
            })
            .collect();
        Ok((line, devices, duplicates))
    })
    .await?;
    Ok(html(
        ClinicPage {
            chrome: chrome(ctx, "clinics"),
            c: line,
            devices,
            duplicates,
            code,
            flash,
        }
        .render(),
    ))
}

pub async fn clinic(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    let ctx = require_staff(&st, &headers).await?;
    let id = parse_id(&id)?;
    clinic_page(&st, &ctx, id, None, None).await
}

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    csrf: String,
    /// `tablet` or `patient`.
    kind: String,
    #[serde(default)]
    study_code: String,
}

/// The QR code of an enrolment code, as SVG.
fn qr_svg(text: &str) -> String {
    match qrcode::QrCode::new(text.as_bytes()) {
        Ok(q) => q
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
        Err(e) => {
            tracing::error!(error = %e, "console: QR code");
            String::new()
        }
    }
}

pub async fn issue_code(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CodeForm>,
) -> Page {
    let ctx = require_staff(&st, &headers).await?;
    ctx.check_csrf(&f.csrf)?;
    ctx.require_admin()?;
    let clinic = parse_id(&id)?;
    let storage = st.storage.clone();
    let staff_id = ctx.staff.id.clone();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let resp = blocking(move || {
        let s = storage.as_ref();
        let grant = match f.kind.as_str() {
            "tablet" => EnrolmentGrant::ClinicDevice { clinic },
            "patient" => {
                let code = f.study_code.trim();
                let found = rm::find_patients(s, Some(clinic), code)?;
                let patient = match found.as_slice() {
                    [(_, p)] => *p,
                    [] => {
                        return Err(ConsoleError::BadRequest(format!(
                            "no patient with study code {code:?} at this clinic (sync the \
                             clinic's tablet first)"
                        )))
                    }
                    _ => {
                        return Err(ConsoleError::BadRequest(format!(
                            "several patients have study code {code:?} at this clinic"
                        )))
                    }
                };
                EnrolmentGrant::PatientDevice { patient }
            }
            other => {
                return Err(ConsoleError::BadRequest(format!(
                    "unknown kind of device {other:?}"
                )))
            }
        };
        let now = now_ms();
        let resp = crate::api::issue_enrolment_code(s, grant, None, now)?;
        s.append_audit(&AuditEntry::staff_action(
            &staff_id,
            event::STAFF_CODE_ISSUED,
            resp.patient.or(Some(clinic)),
            resp.role.as_str(),
            now,
        ))?;
        Ok(resp)
    })
    .await?;
    let payload = format!("followup-enrol:{}?server=http://{host}", resp.code);
    let code = (
        resp.code.clone(),
        qr_svg(&payload),
        resp.role.as_str().replace('_', " "),
        fmt_ms(resp.expires_at_ms),
    );
    clinic_page(&st, &ctx, clinic, Some(code), None).await
}

#[derive(Deserialize)]
pub struct ClinicEventForm {
    #[serde(default)]
    csrf: String,
    kind: String,
    #[serde(default)]
    note: String,
}

pub async fn clinic_event(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<ClinicEventForm>,
) -> Page {
    let ctx = require_staff(&st, &headers).await?;
    ctx.check_csrf(&f.csrf)?;
    ctx.require_admin()?;
    let clinic = parse_id(&id)?;
    if !matches!(f.kind.as_str(), "reminder" | "declined") || f.note.len() > 1000 {
        return Err(ConsoleError::BadRequest(
            "choose a reminder or a decline; notes are at most 1,000 characters".into(),
        ));
    }
    let storage = st.storage.clone();
    let staff_id = ctx.staff.id.clone();
    let kind = f.kind.clone();
    blocking(move || {
        let s = storage.as_ref();
        if !s.clinic_exists(clinic)? {
            return Err(ConsoleError::NotFound(format!("no clinic {clinic}")));
        }
        let now = now_ms();
        s.add_clinic_event(
            &ClinicEvent {
                clinic,
                kind: f.kind.clone(),
                at_ms: now,
                staff_id: staff_id.clone(),
                note: f.note.trim().to_string(),
            },
            &AuditEntry::staff_action(
                &staff_id,
                event::STAFF_CLINIC_EVENT,
                Some(clinic),
                &f.kind,
                now,
            ),
        )?;
        Ok(())
    })
    .await?;
    clinic_page(&st, &ctx, clinic, None, Some(format!("Recorded: {kind}."))).await
}

// ------------------------------------------------------------------------------------------
// Follow-up

#[derive(Deserialize, Default)]
pub struct FollowupQuery {
    clinic: Option<String>,
    visit: Option<String>,
    state: Option<String>,
    /// The page of the patient list.
    page: Option<String>,
    /// The page of the per-clinic table.
    cpage: Option<String>,
}

/// Patients a follow-up page lists.
const FOLLOWUP_PATIENTS_PER_PAGE: u32 = 100;
/// Clinics a follow-up page's per-clinic table lists (worst first).
const FOLLOWUP_CLINICS_PER_PAGE: u32 = 25;

/// One line of a counts table: a visit (of one clinic or all), or a clinic (over its visits).
struct CountLine {
    /// What the line counts: the visit's id, or the clinic's name.
    name: String,
    /// Where its link goes (empty: no link).
    href: String,
    due: u64,
    overdue: u64,
    missed: u64,
    done: u64,
    completion: String,
}

impl CountLine {
    fn of(name: String, href: String, c: &rm::VisitCounts) -> CountLine {
        CountLine {
            name,
            href,
            due: c.due,
            overdue: c.overdue,
            missed: c.missed,
            done: c.done,
            completion: pct(c.completion_rate()),
        }
    }
}

struct VisitLine {
    clinic: String,
    patient_id: String,
    study_code: String,
    visit: String,
    window: String,
    state: &'static str,
    days_late: i64,
}

#[derive(Template)]
#[template(path = "console/followup.html")]
struct FollowupPage {
    chrome: Chrome,
    /// `all clinics`, or the one clinic's name.
    scope_name: String,
    /// Per visit, over the clinics in scope.
    per_visit: Vec<CountLine>,
    /// Per clinic, over the visits chosen (registry-wide views only), worst first.
    per_clinic: Vec<CountLine>,
    clinic_pager: Pager,
    visits: Vec<VisitLine>,
    pager: Pager,
    clinics: Vec<(String, String)>,
    visit_ids: Vec<String>,
    sel_clinic: String,
    sel_visit: String,
    sel_state: String,
    as_of: String,
}

pub async fn followup(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<FollowupQuery>,
) -> Page {
    let ctx = require_staff(&st, &headers).await?;
    let chosen = opt_id(&q.clinic)?;
    let scope = ctx.scope(chosen)?;
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            VisitState::from_code(s)
                .ok_or_else(|| ConsoleError::BadRequest(format!("unknown visit state {s:?}")))?,
        ),
    };
    let page = page_param(&q.page, "page")?;
    let cpage = page_param(&q.cpage, "cpage")?;
    let visit = q.visit.clone().filter(|v| !v.is_empty());
    let storage = st.storage.clone();
    let day = today();
    let (counts, names) = {
        let storage = storage.clone();
        blocking(move || {
            let s = storage.as_ref();
            Ok((rm::visit_counts(s, scope, day)?, clinic_names(s, scope)?))
        })
        .await?
    };
    let name = |c: RecordId| names.get(&c).cloned().unwrap_or_else(|| short(c));
    let sel_clinic = chosen.map(|c| c.to_hex()).unwrap_or_default();
    let sel_visit = visit.clone().unwrap_or_default();
    let sel_state = state.map(|s| s.code().to_string()).unwrap_or_default();
    let in_visit = |c: &rm::VisitCounts| visit.as_ref().is_none_or(|v| *v == c.visit);
    let link = |clinic: &str, visit: &str| {
        let mut u = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [("clinic", clinic), ("visit", visit), ("state", &sel_state)] {
            if !v.is_empty() {
                u.append_pair(k, v);
            }
        }
        format!("/console/followup?{}", u.finish())
    };

    // The totals per visit (the rows without a clinic) cover the clinics in scope.
    let totals: Vec<&rm::VisitCounts> = counts.iter().filter(|c| c.clinic.is_none()).collect();
    let mut visit_ids: Vec<String> = totals.iter().map(|c| c.visit.clone()).collect();
    visit_ids.dedup();
    let per_visit = totals
        .iter()
        .filter(|c| in_visit(c))
        .filter(|c| c.due + c.expected() > 0)
        .map(|c| CountLine::of(c.visit.clone(), link(&sel_clinic, &c.visit), c))
        .collect();

    // Per clinic, summed over the visits chosen, the most overdue and missed first; paged.
    let mut by_clinic: BTreeMap<RecordId, rm::VisitCounts> = BTreeMap::new();
    if scope.is_none() {
        for c in counts.iter().filter(|c| in_visit(c)) {
            if let Some(id) = c.clinic {
                by_clinic.entry(id).or_default().add(c);
            }
        }
    }
    let mut clinic_rows: Vec<(RecordId, rm::VisitCounts)> = by_clinic
        .into_iter()
        .filter(|(_, c)| c.due + c.expected() > 0)
        .collect();
    clinic_rows.sort_by_cached_key(|(id, c)| (std::cmp::Reverse(c.overdue + c.missed), name(*id)));

    // The patients: as many as the counts say match, a page at a time.
    let states = match state {
        Some(s) => vec![s],
        None => VisitFilter::DEFAULT_STATES.to_vec(),
    };
    let matching: u64 = totals
        .iter()
        .filter(|c| in_visit(c))
        .map(|c| states.iter().map(|s| c.count(*s)).sum::<u64>())
        .sum();
    // Each list's links keep the other list's page (as shown: past the end is the last).
    let nth = |n: u64| if n > 1 { n.to_string() } else { String::new() };
    let page_shown = nth(Pager::page_of(page, FOLLOWUP_PATIENTS_PER_PAGE, matching));
    let cpage_shown = nth(Pager::page_of(
        cpage,
        FOLLOWUP_CLINICS_PER_PAGE,
        clinic_rows.len() as u64,
    ));
    let keep = [
        ("visit", sel_visit.as_str()),
        ("state", sel_state.as_str()),
        ("page", page_shown.as_str()),
    ];
    let clinic_pager = Pager::new(
        "/console/followup",
        &keep,
        "cpage",
        cpage,
        FOLLOWUP_CLINICS_PER_PAGE,
        clinic_rows.len() as u64,
        "Clinics",
    );
    let per_clinic = clinic_pager
        .rows(&clinic_rows)
        .into_iter()
        .map(|(id, c)| CountLine::of(name(*id), link(&id.to_hex(), &sel_visit), c))
        .collect();
    let keep = [
        ("clinic", sel_clinic.as_str()),
        ("visit", sel_visit.as_str()),
        ("state", sel_state.as_str()),
        ("cpage", cpage_shown.as_str()),
    ];
    let pager = Pager::new(
        "/console/followup",
        &keep,
        "page",
        page,
        FOLLOWUP_PATIENTS_PER_PAGE,
        matching,
        "Patients",
    );
    let filter = VisitFilter {
        states: state.into_iter().collect(),
        visit: visit.clone(),
        limit: pager.per,
        offset: pager.offset,
        ..VisitFilter::default()
    };
    let list = blocking(move || Ok(rm::visit_list(storage.as_ref(), scope, day, &filter)?)).await?;
    let visits: Vec<VisitLine> = list
        .iter()
        .map(|v| VisitLine {
            clinic: name(v.clinic),
            patient_id: v.patient.to_hex(),
            study_code: opt(&v.study_code),
            visit: v.visit.clone(),
            window: match (v.window_start, v.window_end) {
                (Some(a), Some(b)) => format!("{a} – {b}"),
                _ => "–".into(),
            },
            state: v.state.code(),
            days_late: v.days_late,
        })
        .collect();
    let mut clinics: Vec<(String, String)> = names
        .iter()
        .map(|(id, n)| (id.to_hex(), n.clone()))
        .collect();
    clinics.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(html(
        FollowupPage {
            chrome: chrome(&ctx, "followup"),
            scope_name: match scope {
                Some(c) => name(c),
                None => "all clinics".into(),
            },
            per_visit,
            per_clinic,
            clinic_pager,
            visits,
            pager,
            clinics,
            visit_ids,
            sel_clinic,
            sel_visit,
            sel_state,
            as_of: day.to_string(),
        }
        .render(),
    ))
}

// ------------------------------------------------------------------------------------------
// Adverse events

#[derive(Deserialize, Default)]
pub struct AeQuery {
    clinic: Option<String>,
    status: Option<String>,
    case: Option<String>,
    page: Option<String>,
}

/// Events an oversight-queue page lists.
const AE_EVENTS_PER_PAGE: u32 = 100;

struct AeLine {
    id: String,
    clinic: String,
    patient_id: String,
    study_code: String,
    category: String,
    onset: String,
    severity: String,
    serious: String,
    status: &'static str,
    /// The registry's case state (`–` for an event without a case).
    case_state: String,
    deadline: String,
    days_overdue: i64,
    /// `1 day overdue`, `3 days overdue`.
    overdue_text: String,
}

fn ae_line(i: &rm::AeQueueItem) -> AeLine {
    AeLine {
        id: i.adverse_event.to_hex(),
        clinic: i.clinic_name.clone().unwrap_or_else(|| short(i.clinic)),
        patient_id: i.patient.to_hex(),
        study_code: opt(&i.study_code),
        category: opt(&i.category),
        onset: opt(&i.onset),
        severity: i
            .severity
            .map(|s| format!("grade {s}"))
            .unwrap_or_else(|| "conflicted".into()),
        serious: match i.serious {
            Some(true) => i.seriousness.clone().unwrap_or_else(|| "serious".into()),
            Some(false) => "no".into(),
            None => "conflicted".into(),
        },
        status: i.status.code(),
        case_state: match &i.case {
            None => "–".into(),
            Some(c) => c.state.clone().unwrap_or_else(|| "conflicted".into()),
        },
        deadline: i
            .deadline
            .map(|d| d.to_string())
            .unwrap_or_else(|| "–".into()),
        days_overdue: i.days_overdue,
        overdue_text: format!("{} overdue", count(i.days_overdue, "day", "days")),
    }
}

#[derive(Template)]
#[template(path = "console/ae_queue.html")]
struct AeQueuePage {
    chrome: Chrome,
    /// `1 event`, `12 events`.
    summary: String,
    items: Vec<AeLine>,
    pager: Pager,
    clinics: Vec<(String, String)>,
    statuses: Vec<&'static str>,
    case_states: Vec<&'static str>,
    sel_clinic: String,
    sel_status: String,
    sel_case: String,
}

pub async fn ae_queue(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<AeQuery>,
) -> Page {
    let ctx = require_staff(&st, &headers).await?;
    let scope = ctx.scope(opt_id(&q.clinic)?)?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            CaseStatus::from_code(s)
                .ok_or_else(|| ConsoleError::BadRequest(format!("unknown status {s:?}")))?,
        ),
    };
    let case_state = match q.case.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            rm::CASE_STATES
                .into_iter()
                .find(|c| *c == s)
                .ok_or_else(|| ConsoleError::BadRequest(format!("unknown case state {s:?}")))?,
        ),
    };
    let page = page_param(&q.page, "page")?;
    let storage = st.storage.clone();
    let day = today();
    let (all, names) = blocking(move || {
        let s = storage.as_ref();
        // The queue is ordered in memory (by days overdue, which depend on today), so the whole
        // filtered queue is read and the page cut from it.
        let f = AeFilter {
            statuses: status.into_iter().collect(),
            case_states: case_state.into_iter().map(str::to_string).collect(),
            limit: 0,
            ..AeFilter::default()
        };
        Ok((rm::ae_queue(s, scope, day, &f)?, clinic_names(s, scope)?))
    })
    .await?;
    let total = all.len();
    let sel_clinic = q.clinic.clone().unwrap_or_default();
    let sel_status = status.map(|s| s.code().to_string()).unwrap_or_default();
    let sel_case = case_state.unwrap_or_default().to_string();
    let pager = Pager::new(
        "/console/adverse-events",
        &[
            ("clinic", sel_clinic.as_str()),
            ("status", sel_status.as_str()),
            ("case", sel_case.as_str()),
        ],
        "page",
        page,
        AE_EVENTS_PER_PAGE,
        total as u64,
        "Events",
    );
    let items = pager.rows(all);
    let mut clinics: Vec<(String, String)> = names
        .iter()
        .map(|(id, n)| (id.to_hex(), n.clone()))
        .collect();
    clinics.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(html(
        AeQueuePage {
            chrome: chrome(&ctx, "aes"),
            summary: count(total, "event", "events"),
            items: items.iter().map(ae_line).collect(),
            pager,
            clinics,
            statuses: CaseStatus::ALL.iter().map(|s| s.code()).collect(),
            case_states: rm::CASE_STATES.to_vec(),
            sel_clinic,
            sel_status,
            sel_case,
        }
        .render(),
    ))
}

/// 404 if `id` is not a record of kind `kind`, 403 if it belongs to a clinic out of scope.
fn check_record(
    s: &dyn Storage,
    ctx_scope: Option<RecordId>,
    id: RecordId,
    kind: RecordKind,
) -> Result<RecordId, ConsoleError> {
    let h = s
        .doc_header(id)?
        .filter(|h| h.kind == kind)
        .ok_or_else(|| ConsoleError::NotFound(format!("no {} {id}", kind.code())))?;
    if ctx_scope.is_some_and(|c| c != h.clinic) {
        return Err(ConsoleError::Forbidden(
            "This record belongs to another clinic; your account sees only your clinic.".into(),
        ));
    }
    Ok(h.clinic)
}

struct AdjLine {
    id: String,
    status: String,
    relatedness: String,
    action: String,
    remedy: String,
    deadline: String,
    recorded: String,
    by: String,
    writes: Vec<String>,
}

struct NoteLine {
    kind: String,
    text: String,
    staff: String,
    at: String,
}

#[derive(Template)]
#[template(path = "console/ae_detail.html")]
struct AeDetailPage {
    chrome: Chrome,
    e: AeLine,
    description: String,
    outcome: String,
    reporter: String,
    reported: String,
    recorded_by: String,
    clinic_deadline: String,
    conflicts: Vec<String>,
    adjudications: Vec<AdjLine>,
    history: Vec<String>,
    notes: Vec<NoteLine>,
    may_note: bool,
    case: Option<CaseView>,
}

/// The registry's adjudication case, as the event's page shows it.
struct CaseView {
    state: String,
    deadline: String,
    rule: String,
    opened_at: String,
    responded_at: String,
    closed: String,
    /// Escalations and the patient's recorded replies, in order.
    entries: Vec<String>,
    /// The patient's reply records.
    replies: Vec<String>,
}

fn case_view(d: &rm::AeDetail) -> Option<CaseView> {
    let c = d.queue.case.as_ref()?;
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "–".into());
    Some(CaseView {
        state: c.state.clone().unwrap_or_else(|| "conflicted".into()),
        deadline: dash(&c.deadline),
        rule: format!("{} ({})", dash(&c.rule), dash(&c.policy)),
        opened_at: dash(&c.opened_at),
        responded_at: dash(&c.responded_at),
        closed: match (&c.closed_at, &c.closed_note) {
            (Some(at), note) => format!("{at}: {}", dash(note)),
            (None, _) => "–".into(),
        },
        entries: d
            .case_entries
            .iter()
            .map(|e| match e.kind.as_str() {
                "escalation" => format!(
                    "{}: escalated by the registry: {}",
                    dash(&e.at),
                    dash(&e.text)
                ),
                _ => format!(
                    "{}: the patient {} the remedy{}",
                    dash(&e.at),
                    dash(&e.verdict),
                    e.text
                        .as_deref()
                        .filter(|t| !t.is_empty())
                        .map(|t| format!(": {t}"))
                        .unwrap_or_default()
                ),
            })
            .collect(),
        replies: d
            .replies
            .iter()
            .map(|r| {
                format!(
                    "{} on the patient's phone ({}), accepted {}: {}",
                    dash(&r.verdict),
                    dash(&r.replied_at),
                    fmt_ms(r.meta.first_accepted_ms),
                    dash(&r.comment)
                )
            })
            .collect(),
    })
}

fn write_line(n: &Names, w: &rm::RecordWrite) -> String {
    format!(
        "{}: {} from {}",
        fmt_ms(w.at_ms),
        count(w.changes, "change", "changes"),
        match w.device {
            Some(_) => n.writer(w.device, w.users.last().copied()),
            None => "the registry".into(),
        }
    )
}

async fn ae_detail_page(st: &AppState, ctx: &Ctx, id: RecordId) -> Page {
    let scope = ctx.scope(None)?;
    let storage = st.storage.clone();
    let day = today();
    let (d, notes, staff_emails, names) = blocking(move || {
        let s = storage.as_ref();
        check_record(s, scope, id, RecordKind::AdverseEvent)?;
        let d = rm::ae_detail(s, scope, id, day)?
            .ok_or_else(|| ConsoleError::NotFound(format!("no adverse event {id}")))?;
        let emails: HashMap<String, String> = s
            .list_staff()?
            .into_iter()
            .map(|r| (r.id, r.email))
            .collect();
        let mut names = Names::for_records(
            s,
            std::iter::once(&d.event.meta).chain(d.adjudications.iter().map(|a| &a.meta)),
        )?;
        names.add_writes(s, &d.history)?;
        for a in &d.adjudications {
            names.add_writes(s, &a.history)?;
        }
        Ok((d, s.ae_notes(id)?, emails, names))
    })
    .await?;
    let ev = &d.event;
    Ok(html(
        AeDetailPage {
            chrome: chrome(ctx, "aes"),
            e: ae_line(&d.queue),
            description: opt(&ev.description),
            outcome: opt(&ev.outcome),
            reporter: opt(&ev.reporter),
            reported: fmt_ms(d.queue.reported_at_ms),
            recorded_by: names.by_line(&ev.meta),
            clinic_deadline: opt(&d.queue.clinic_deadline),
            conflicts: d
                .conflicts
                .iter()
                .map(|c| {
                    format!(
                        "{} = {}{}",
                        c.path,
                        c.value,
                        if c.winner { " (shown)" } else { "" }
                    )
                })
                .collect(),
            adjudications: d
                .adjudications
                .iter()
                .map(|a| AdjLine {
                    id: a.meta.id.to_hex(),
                    status: opt(&a.status),
                    relatedness: opt(&a.relatedness),
                    action: opt(&a.action),
                    remedy: opt(&a.remedy),
                    deadline: opt(&a.deadline),
                    recorded: fmt_ms(a.meta.first_accepted_ms),
                    by: names.by_line(&a.meta),
                    writes: a.history.iter().map(|w| write_line(&names, w)).collect(),
                })
                .collect(),
            history: d.history.iter().map(|w| write_line(&names, w)).collect(),
            notes: notes
                .iter()
                .map(|n| NoteLine {
                    kind: n.kind.clone(),
                    text: n.text.clone(),
                    staff: staff_emails
                        .get(&n.staff_id)
                        .cloned()
                        .unwrap_or_else(|| n.staff_id.clone()),
                    at: fmt_ms(n.at_ms),
                })
                .collect(),
            may_note: ctx.staff.may_note_adverse_events(),
            case: case_view(&d),
        }
        .render(),
    ))
}

pub async fn ae_detail(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    let ctx = require_staff(&st, &headers).await?;
    let id = parse_id(&id)?;
    ae_detail_page(&st, &ctx, id).await
}

#[derive(Deserialize)]
pub struct NoteForm {
    #[serde(default)]
    csrf: String,
    kind: String,
    text: String,
}

pub async fn ae_note(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<NoteForm>,
) -> Page {
    let ctx = require_staff(&st, &headers).await?;
    ctx.check_csrf(&f.csrf)?;
    if !ctx.staff.may_note_adverse_events() {
        return Err(ConsoleError::Forbidden(
            "Only registry monitors and admins comment on or escalate adverse events.".into(),
        ));
    }
    let id = parse_id(&id)?;
    let text = f.text.trim().to_string();
    if !matches!(f.kind.as_str(), "comment" | "escalation") || text.is_empty() || text.len() > 4000
    {
        return Err(ConsoleError::BadRequest(
            "a note is a comment or an escalation of 1 to 4,000 characters".into(),
        ));
    }
    let storage = st.storage.clone();
    let staff_id = ctx.staff.id.clone();
    blocking(move || {
        let s = storage.as_ref();
        let clinic = check_record(s, None, id, RecordKind::AdverseEvent)?;
        let now = now_ms();
        if f.kind == "escalation" {
            // The registry's escalation (`cases::escalate`, as `followup server escalate` and the
            // admin API do): written into the event's case, so the clinic's tablet shows the note
            // after its next sync, audited as `case_escalated`. The console note below records
            // which staff member escalated (audited with their id).
            match cases::escalate(s, id, &text, now) {
                Ok(_) => {}
                // An event accepted before cases existed has none: the note stays the record.
                Err(cases::CaseActionError::NotFound(_)) => {}
                Err(cases::CaseActionError::Closed) => {
                    return Err(ConsoleError::BadRequest(
                        "The case is closed: it cannot be escalated.".into(),
                    ))
                }
                Err(cases::CaseActionError::Storage(e)) => return Err(e.into()),
            }
        }
        s.add_ae_note(
            &AeNote {
                ae: id,
                clinic,
                kind: f.kind.clone(),
                text,
                staff_id: staff_id.clone(),
                at_ms: now,
            },
            &AuditEntry::staff_action(&staff_id, event::STAFF_AE_NOTE, Some(id), &f.kind, now),
        )?;
        Ok(())
    })
    .await?;
    ae_detail_page(&st, &ctx, id).await
}

// ------------------------------------------------------------------------------------------
// Patients

#[derive(Deserialize, Default)]
pub struct PatientQuery {
    code: Option<String>,
}

#[derive(Template)]
#[template(path = "console/patients.html")]
struct PatientsPage {
    chrome: Chrome,
    code: String,
    /// Clinic name, patient id.
    found: Vec<(String, String)>,
    searched: bool,
}

pub async fn find_patient(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<PatientQuery>,
) -> Page {
    let ctx = require_staff(&st, &headers).await?;
    let scope = ctx.scope(None)?;
    let code = q.code.unwrap_or_default().trim().to_string();
    let storage = st.storage.clone();
    let c2 = code.clone();
    let found = blocking(move || {
        let s = storage.as_ref();
        if c2.is_empty() {
            return Ok(vec![]);
        }
        let names = clinic_names(s, scope)?;
        Ok(rm::find_patients(s, scope, &c2)?
            .into_iter()
            .map(|(c, p)| {
                (
                    names.get(&c).cloned().unwrap_or_else(|| short(c)),
                    p.to_hex(),
                )
            })
            .collect())
    })
    .await?;
    if found.len() == 1 {
        if let Some((_, p)) = found.first() {
            return Ok(Redirect::to(&format!("/console/patients/{p}")).into_response());
        }
    }
    Ok(html(
        PatientsPage {
            chrome: chrome(&ctx, "patients"),
            searched: !code.is_empty(),
            code,
            found,
        }
        .render(),
    ))
}

struct TimelineEntry {
    when: String,
    what: String,
    /// Where `what` links to (empty: nowhere).
    href: String,
    /// A serious adverse event (or an adjudication of one): marked on the row.
    serious: bool,
    detail: String,
    by: String,
}

struct ResponseBlock {
    title: String,
    by: String,
    /// Item label, value.
    answers: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "console/timeline.html")]
struct TimelinePage {
    chrome: Chrome,
    study_code: String,
    clinic: String,
    facts: Vec<(String, String)>,
    entries: Vec<TimelineEntry>,
    visits: Vec<VisitLine>,
    responses: Vec<ResponseBlock>,
    conflicts: Vec<String>,
}

fn answer_text(v: &Option<serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => "–".into(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Item labels for a patient's responses, by questionnaire id, version and item id: from the
/// questionnaire version the registry published (what the device showed), else from the
/// built-in questionnaire of that id; an item found in neither shows its id.
struct ItemLabels {
    published: HashMap<(String, String, String), String>,
}

impl ItemLabels {
    fn load<'a>(
        s: &dyn Storage,
        responses: impl Iterator<Item = &'a rm::ResponseRow>,
    ) -> ItemLabels {
        let mut published = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for r in responses {
            let (Some(q), Some(v)) = (&r.questionnaire, &r.questionnaire_version) else {
                continue;
            };
            if !seen.insert((q.clone(), v.clone())) {
                continue;
            }
            let def = crate::definitions::content(s, DefinitionType::Questionnaire.code(), q, v)
                .ok()
                .and_then(|json| Definition::parse_lenient(&json).ok());
            if let Some(questionnaire) = def.as_ref().and_then(|d| d.questionnaire()) {
                for item in questionnaire.items() {
                    published.insert((q.clone(), v.clone(), item.id.clone()), item.text.clone());
                }
            }
        }
        ItemLabels { published }
    }

    fn label(&self, questionnaire: &str, version: &str, item: &str) -> String {
        let key = (
            questionnaire.to_string(),
            version.to_string(),
            item.to_string(),
        );
        self.published
            .get(&key)
            .or_else(|| item_labels().get(&(key.0, key.2)))
            .cloned()
            .unwrap_or_else(|| item.to_string())
    }
}

/// Item labels of the built-in questionnaires, by questionnaire id and item id.
fn item_labels() -> &'static HashMap<(String, String), String> {
    static L: std::sync::OnceLock<HashMap<(String, String), String>> = std::sync::OnceLock::new();
    L.get_or_init(|| {
        let mut m = HashMap::new();
        for q in followup_domain::questionnaire::default_instruments() {
            for item in q.items() {
                m.insert((q.id().to_string(), item.id.clone()), item.text.clone());
            }
        }
        m
    })
}

pub async fn timeline(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    let ctx = require_staff(&st, &headers).await?;
    let scope = ctx.scope(None)?;
    let id = parse_id(&id)?;
    let storage = st.storage.clone();
    let day = today();
    let (t, clinics, names, labels) = blocking(move || {
        let s = storage.as_ref();
        check_record(s, scope, id, RecordKind::Enrolment)?;
        let t = rm::patient_timeline(s, scope, id, day)?
            .ok_or_else(|| ConsoleError::NotFound(format!("no patient {id}")))?;
        let labels = ItemLabels::load(s, t.responses.iter());
        let names = Names::for_records(
            s,
            std::iter::once(&t.enrolment.meta)
                .chain(t.procedures.iter().map(|p| &p.meta))
                .chain(t.responses.iter().map(|r| &r.meta))
                .chain(t.adverse_events.iter().map(|a| &a.meta))
                .chain(t.adjudications.iter().map(|a| &a.meta)),
        )?;
        Ok((t, clinic_names(s, scope)?, names, labels))
    })
    .await?;
    let e = &t.enrolment;
    let facts = vec![
        ("Study code".to_string(), opt(&e.study_code)),
        (
            "Birth year".to_string(),
            e.birth_year
                .map(|y| y.to_string())
                .unwrap_or_else(|| "–".into()),
        ),
        ("Sex".to_string(), opt(&e.sex)),
        ("Enrolled on".to_string(), opt(&e.enrolled_on)),
        (
            "Consent".to_string(),
            format!(
                "form {} on {} ({})",
                opt(&e.consent_form_version),
                opt(&e.consent_date),
                opt(&e.consent_scope)
            ),
        ),
    ];
    let mut entries: Vec<(i64, TimelineEntry)> = Vec::new();
    entries.push((
        e.meta.first_accepted_ms,
        TimelineEntry {
            when: fmt_ms(e.meta.first_accepted_ms),
            what: "Enrolment".into(),
            href: String::new(),
            serious: false,
            detail: opt(&e.enrolled_on),
            by: names.by_line(&e.meta),
        },
    ));
    for p in &t.procedures {
        entries.push((
            p.meta.first_accepted_ms,
            TimelineEntry {
                when: fmt_ms(p.meta.first_accepted_ms),
                what: format!("Procedure on {}", opt(&p.date)),
                href: String::new(),
                serious: false,
                detail: format!(
                    "{} for {}; {} {} cells from {}, {}, route {}; {}",
                    opt(&p.procedure_type),
                    opt(&p.condition),
                    opt(&p.origin),
                    opt(&p.cell_type),
                    opt(&p.source_tissue),
                    opt(&p.manipulation),
                    opt(&p.route),
                    opt(&p.regulatory_status)
                ),
                by: names.by_line(&p.meta),
            },
        ));
    }
    for r in &t.responses {
        entries.push((
            r.meta.first_accepted_ms,
            TimelineEntry {
                when: fmt_ms(r.meta.first_accepted_ms),
                what: format!("Response {} ({})", opt(&r.questionnaire), opt(&r.visit)),
                href: String::new(),
                serious: false,
                detail: format!(
                    "{}, {}",
                    opt(&r.status),
                    count(r.answers.len(), "answer", "answers")
                ),
                by: names.by_line(&r.meta),
            },
        ));
    }
    for a in &t.adverse_events {
        entries.push((
            a.meta.first_accepted_ms,
            TimelineEntry {
                when: fmt_ms(a.meta.first_accepted_ms),
                what: format!("Adverse event: {}", opt(&a.category)),
                href: format!("/console/adverse-events/{}", a.meta.id.to_hex()),
                serious: a.serious == Some(true),
                detail: format!(
                    "onset {}, grade {}, {}, reported by {}",
                    opt(&a.onset),
                    a.severity
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "?".into()),
                    match a.serious {
                        Some(true) => format!(
                            "serious ({})",
                            a.seriousness
                                .clone()
                                .unwrap_or_else(|| "criteria not given".into())
                        ),
                        Some(false) => "not serious".into(),
                        None => "seriousness conflicted".into(),
                    },
                    opt(&a.reporter)
                ),
                by: names.by_line(&a.meta),
            },
        ));
    }
    for a in &t.adjudications {
        entries.push((
            a.meta.first_accepted_ms,
            TimelineEntry {
                when: fmt_ms(a.meta.first_accepted_ms),
                what: "Adjudication".into(),
                href: a
                    .adverse_event
                    .map(|ae| format!("/console/adverse-events/{}", ae.to_hex()))
                    .unwrap_or_default(),
                serious: a.adverse_event.is_some_and(|ae| {
                    t.adverse_events
                        .iter()
                        .any(|e| e.meta.id == ae && e.serious == Some(true))
                }),
                detail: format!(
                    "{}; relatedness {}; remedy {}",
                    opt(&a.status),
                    opt(&a.relatedness),
                    opt(&a.remedy)
                ),
                by: names.by_line(&a.meta),
            },
        ));
    }
    entries.sort_by_key(|(at, _)| *at);
    // Visits in the schedule's order (the read model lists them most urgent first).
    let mut visits: Vec<&rm::PatientVisit> = t.visits.iter().collect();
    visits.sort_by_key(|v| (v.procedure_date.clone(), v.procedure, v.target));
    let responses = t
        .responses
        .iter()
        .map(|r| {
            let q = r.questionnaire.clone().unwrap_or_default();
            let version = r.questionnaire_version.clone().unwrap_or_default();
            ResponseBlock {
                title: format!("{} — visit {} — {}", q, opt(&r.visit), opt(&r.submitted_at)),
                by: names.by_line(&r.meta),
                answers: r
                    .answers
                    .iter()
                    .map(|a| {
                        let label = labels.label(&q, &version, &a.item);
                        let v = answer_text(&a.value);
                        (
                            label,
                            if a.conflicted {
                                format!("{v} (conflicted)")
                            } else {
                                v
                            },
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(html(
        TimelinePage {
            chrome: chrome(&ctx, "patients"),
            study_code: opt(&e.study_code),
            clinic: clinics
                .get(&e.meta.clinic)
                .cloned()
                .unwrap_or_else(|| short(e.meta.clinic)),
            facts,
            entries: entries.into_iter().map(|(_, e)| e).collect(),
            visits: visits
                .iter()
                .map(|v| VisitLine {
                    clinic: String::new(),
                    patient_id: String::new(),
                    study_code: String::new(),
                    visit: v.visit.clone(),
                    window: match (v.window_start, v.window_end) {
                        (Some(a), Some(b)) => format!("{a} – {b}"),
                        _ => "–".into(),
                    },
                    state: v.state.code(),
                    days_late: v.days_late,
                })
                .collect(),
            responses,
            conflicts: t
                .conflicts
                .iter()
                .map(|c| format!("{} = {}", c.path, c.value))
                .collect(),
        }
        .render(),
    ))
}

// ------------------------------------------------------------------------------------------
// Devices and audit

#[derive(Template)]
#[template(path = "console/devices.html")]
struct DevicesPage {
    chrome: Chrome,
    /// Clinic name, device line.
    devices: Vec<(String, DeviceLine)>,
    pager: Pager,
    flash: Option<String>,
}

async fn devices_page(st: &AppState, ctx: &Ctx, flash: Option<String>, page: u64) -> Page {
    let scope = ctx.scope(None)?;
    let storage = st.storage.clone();
    let (devices, names) = blocking(move || {
        let s = storage.as_ref();
        Ok((rm::devices(s, scope)?, clinic_names(s, scope)?))
    })
    .await?;
    let pager = Pager::new(
        "/console/devices",
        &[],
        "page",
        page,
        DEVICES_PER_PAGE,
        devices.len() as u64,
        "Devices",
    );
    let devices = pager.rows(devices);
    let lines = device_lines(&devices);
    Ok(html(
        DevicesPage {
            chrome: chrome(ctx, "devices"),
            pager,
            devices: devices
                .iter()
                .zip(lines)
                .map(|(d, l)| {
                    (
                        names
                            .get(&d.clinic)
                            .cloned()
                            .unwrap_or_else(|| short(d.clinic)),
                        l,
                    )
                })
                .collect(),
            flash,
        }
        .render(),
    ))
}

pub async fn devices(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Page {
    let ctx = require_staff(&st, &headers).await?;
    let page = page_param(&q.page, "page")?;
    devices_page(&st, &ctx, None, page).await
}

pub async fn revoke_device(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Page {
    let ctx = require_staff(&st, &headers).await?;
    ctx.check_csrf(&f.csrf)?;
    ctx.require_admin()?;
    let id: DeviceId = id
        .parse()
        .map_err(|_| ConsoleError::NotFound(format!("{id:?} is not a device id")))?;
    let storage = st.storage.clone();
    let staff_id = ctx.staff.id.clone();
    let newly = blocking(move || {
        let s = storage.as_ref();
        let now = now_ms();
        let (newly, _) = s
            .revoke_device(id, now)?
            .ok_or_else(|| ConsoleError::NotFound(format!("no device {id}")))?;
        s.append_audit(&AuditEntry::staff_action(
            &staff_id,
            event::STAFF_DEVICE_REVOKED,
            None,
            &id.to_string(),
            now,
        ))?;
        Ok(newly)
    })
    .await?;
    devices_page(
        &st,
        &ctx,
        Some(if newly {
            format!("Device {id} revoked.")
        } else {
            format!("Device {id} was already revoked.")
        }),
        1,
    )
    .await
}

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    verify: Option<String>,
}

struct AuditLine {
    seq: u64,
    at: String,
    event: String,
    actor: String,
    doc: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    chrome: Chrome,
    /// `1 entry`, `40 entries`.
    entries: String,
    /// (ok, head hash, problem)
    verified: Option<(bool, String, String)>,
    recent: Vec<AuditLine>,
}

pub async fn audit(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Page {
    let ctx = require_staff(&st, &headers).await?;
    ctx.require_registry()?;
    let storage = st.storage.clone();
    let verify = q.verify.is_some();
    let (stats, verified, rows, names) = blocking(move || {
        let s = storage.as_ref();
        let stats = s.stats()?;
        let verified = if verify {
            Some(audit::verify(s)?)
        } else {
            None
        };
        let rows = s.audit_rows(stats.audit_entries.saturating_sub(30), 30)?;
        let names = Names::load(
            s,
            rows.iter().filter_map(|r| r.entry.device),
            rows.iter()
                .flat_map(|r| crate::users::users_in_detail(&r.entry.detail)),
        )?;
        Ok((stats, verified, rows, names))
    })
    .await?;
    let recent = rows
        .iter()
        .rev()
        .map(|r| AuditLine {
            seq: r.seq,
            at: fmt_ms(r.entry.at_ms),
            event: r.entry.event.clone(),
            actor: match (r.entry.staff_id(), r.entry.device) {
                (Some(s), _) => format!("staff {s}"),
                // A device and, for a write by clinic users, each of them by name.
                (None, Some(d)) => {
                    let users = crate::users::users_in_detail(&r.entry.detail);
                    if users.is_empty() {
                        names.device(d)
                    } else {
                        format!(
                            "{}, {}",
                            names.device(d),
                            users
                                .iter()
                                .map(|u| names.user(*u))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                }
                (None, None) => "registry".into(),
            },
            doc: r.entry.doc.map(short).unwrap_or_default(),
            detail: r
                .entry
                .detail
                .split_once("; ")
                .map(|(_, d)| d.to_string())
                .unwrap_or_else(|| r.entry.detail.clone()),
        })
        .collect();
    Ok(html(
        AuditPage {
            chrome: chrome(&ctx, "audit"),
            entries: count(stats.audit_entries, "entry", "entries"),
            verified: verified.map(|v| (v.ok, v.head_hash, v.problem.unwrap_or_default())),
            recent,
        }
        .render(),
    ))
}

// ------------------------------------------------------------------------------------------
// Staff (registry admin)

#[derive(Template)]
#[template(path = "console/staff.html")]
struct StaffPage {
    chrome: Chrome,
    /// Email, role, clinic, TOTP.
    staff: Vec<(String, String, String, bool)>,
    clinics: Vec<(String, String)>,
    created: Option<(String, String)>,
}

async fn staff_page(st: &AppState, ctx: &Ctx, created: Option<(String, String)>) -> Page {
    ctx.require_admin()?;
    let storage = st.storage.clone();
    let (list, names) = blocking(move || {
        let s = storage.as_ref();
        Ok((staff::list_staff(s)?, clinic_names(s, None)?))
    })
    .await?;
    let mut clinics: Vec<(String, String)> = names
        .iter()
        .map(|(id, n)| (id.to_hex(), n.clone()))
        .collect();
    clinics.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(html(
        StaffPage {
            chrome: chrome(ctx, "staff"),
            staff: list
                .iter()
                .map(|m| {
                    (
                        m.email.clone(),
                        m.role.label().to_string(),
                        m.clinic
                            .map(|c| names.get(&c).cloned().unwrap_or_else(|| short(c)))
                            .unwrap_or_default(),
                        m.has_totp,
                    )
                })
                .collect(),
            clinics,
            created,
        }
        .render(),
    ))
}

pub async fn staff_list(State(st): State<AppState>, headers: HeaderMap) -> Page {
    let ctx = require_staff(&st, &headers).await?;
    staff_page(&st, &ctx, None).await
}

#[derive(Deserialize)]
pub struct AddStaffForm {
    #[serde(default)]
    csrf: String,
    email: String,
    role: String,
    #[serde(default)]
    clinic: Option<String>,
}

pub async fn add_staff(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<AddStaffForm>,
) -> Page {
    let ctx = require_staff(&st, &headers).await?;
    ctx.check_csrf(&f.csrf)?;
    ctx.require_admin()?;
    let role = Role::from_code(&f.role)
        .ok_or_else(|| ConsoleError::BadRequest(format!("unknown role {:?}", f.role)))?;
    let clinic = if role == Role::ClinicCoordinator {
        opt_id(&f.clinic)?
    } else {
        None
    };
    let storage = st.storage.clone();
    let actor = ctx.staff.id.clone();
    let created = blocking(move || {
        Ok(staff::create_staff(
            storage.as_ref(),
            &f.email,
            role,
            clinic,
            FirstSignIn::Password,
            false,
            &actor,
            now_ms(),
        )?)
    })
    .await?;
    staff_page(
        &st,
        &ctx,
        Some((created.staff.email, created.password.unwrap_or_default())),
    )
    .await
}

// ------------------------------------------------------------------------------------------
// Public participation page

struct PublicClinic {
    name: String,
    country: String,
    rule: String,
}

#[derive(Template)]
#[template(path = "console/participation.html")]
struct ParticipationPage {
    css: String,
    title: String,
    /// Heading, clinics.
    lists: Vec<(&'static str, Vec<PublicClinic>)>,
    /// Rule id, list heading, text.
    rules: Vec<(String, &'static str, String)>,
    as_of: String,
}

pub async fn participation(State(st): State<AppState>) -> Page {
    let storage = st.storage.clone();
    let rules = st.console.rules.clone();
    let day = today();
    let r2 = rules.clone();
    let placed = blocking(move || {
        let (facts, _, _) = clinic_facts(storage.as_ref(), None, day)?;
        Ok(participation::evaluate(&r2, facts, now_ms()))
    })
    .await?;
    let lists = [
        ListName::GoodStanding,
        ListName::NotParticipating,
        ListName::FailingToRespond,
    ]
    .into_iter()
    .map(|l| {
        let mut v: Vec<PublicClinic> = placed
            .iter()
            .filter(|p| p.list == l)
            .map(|p| PublicClinic {
                name: p.clinic.name.clone(),
                country: p.clinic.country.clone(),
                rule: p.rule_text.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        (l.heading(), v)
    })
    .collect();
    let mut r = html(
        ParticipationPage {
            css: assets::url("console.css"),
            title: rules.title.clone(),
            lists,
            rules: rules
                .rules
                .iter()
                .map(|r| (r.id.clone(), r.list.heading(), r.text.clone()))
                .collect(),
            as_of: day.to_string(),
        }
        .render(),
    );
    // Public and the same for everyone: cacheable for a few minutes.
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("public, max-age=300"),
    );
    Ok(r)
}

// ------------------------------------------------------------------------------------------
// Exports: the download button

#[derive(Template)]
#[template(path = "console/export.html")]
struct ExportPage {
    chrome: Chrome,
    /// `(id, name)` of the clinics the member may export.
    clinics: Vec<(String, String)>,
    /// A coordinator exports their own clinic only (no "every clinic" choice).
    whole_registry: bool,
    /// Registry admins may ask for an identified export.
    may_identify: bool,
}

pub async fn export_form(State(st): State<AppState>, headers: HeaderMap) -> Page {
    let ctx = require_staff(&st, &headers).await?;
    let scope = ctx.scope(None)?;
    let storage = st.storage.clone();
    let names = blocking(move || clinic_names(storage.as_ref(), scope)).await?;
    let mut clinics: Vec<(String, String)> = names
        .iter()
        .map(|(id, n)| (id.to_hex(), n.clone()))
        .collect();
    clinics.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(html(
        ExportPage {
            chrome: chrome(&ctx, "export"),
            clinics,
            whole_registry: scope.is_none(),
            may_identify: ctx.staff.is_admin(),
        }
        .render(),
    ))
}

#[derive(Deserialize)]
pub struct ExportForm {
    #[serde(default)]
    csrf: String,
    format: String,
    #[serde(default)]
    clinic: Option<String>,
    #[serde(default)]
    since: Option<String>,
    /// A checkbox: present (`on`) when ticked.
    #[serde(default)]
    identified: Option<String>,
}

/// `POST /console/export`: the zip, streamed as it is produced. Authorized by the export module's
/// own rules for the member's role (a coordinator: their clinic only; an identified export:
/// registry admins only) and written to the audit log, with the member's id, before any output.
pub async fn export_download(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<ExportForm>,
) -> Page {
    let ctx = require_staff(&st, &headers).await?;
    ctx.check_csrf(&f.csrf)?;
    let query = crate::export::http::ExportQuery {
        format: f.format.clone(),
        clinic: f.clinic.clone(),
        since: f.since.clone(),
        identified: Some(f.identified.as_deref().is_some_and(|v| !v.is_empty())),
    };
    let request = query.request()?;
    // A coordinator asking for another clinic is refused here as on every other page (403), and
    // again by `export::authorize`.
    ctx.scope(request.clinic)?;
    let role = match ctx.staff.role {
        Role::RegistryAdmin => crate::export::StaffRole::RegistryAdmin,
        Role::RegistryMonitor => crate::export::StaffRole::RegistryMonitor,
        Role::ClinicCoordinator => crate::export::StaffRole::ClinicCoordinator {
            clinic: ctx.staff.clinic.ok_or_else(|| {
                ConsoleError::Forbidden("This coordinator account has no clinic.".into())
            })?,
        },
    };
    let requester = crate::export::Requester {
        who: format!("staff:{}", ctx.staff.id),
        role,
    };
    let storage = st.storage.clone();
    let plan = blocking(move || {
        crate::export::begin_export(storage.as_ref(), &requester, request, now_ms())
            .map_err(|e| ConsoleError::from(crate::error::ApiError::from(e)))
    })
    .await?;
    let disposition = crate::export::http::content_disposition(&plan);
    let body = crate::export::http::zip_body(
        st.storage.clone(),
        std::sync::Arc::new(crate::export::ShippedDefinitions),
        plan,
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        body,
    )
        .into_response())
}
