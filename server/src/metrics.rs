//! Prometheus metrics (the `prometheus-client` crate), served as text at `GET /metrics`.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `followup_sync_requests_total{outcome}` | counter | sync exchanges by outcome (`ok`, `client_error`, `server_error`) |
//! | `followup_sync_request_bytes_total` / `followup_sync_response_bytes_total` | counter | body bytes on the wire |
//! | `followup_sync_duration_seconds` | histogram | time to answer an authenticated sync |
//! | `followup_push_rejections_total{code}` | counter | pushed documents refused, by reject code |
//! | `followup_rate_limited_total{route}` | counter | requests refused by a rate limit |
//! | `followup_unloadable_documents_total` | counter | stored documents that failed to load while serving a pull |
//! | `followup_connections_open` | gauge | TCP connections being served |
//! | `followup_active_devices` | gauge | devices that synced in the last 15 minutes |
//!
//! The numbers are this process's; with several server processes, Prometheus sums them.
//! No label carries a record, patient or device id.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use followup_domain::ids::DeviceId;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Code {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: &'static str,
}

/// How long a device counts as active after its last sync.
const ACTIVE_WINDOW: Duration = Duration::from_secs(15 * 60);

struct Metrics {
    registry: Registry,
    sync_requests: Family<Outcome, Counter>,
    request_bytes: Counter,
    response_bytes: Counter,
    sync_duration: Histogram,
    rejections: Family<Code, Counter>,
    rate_limited: Family<Route, Counter>,
    unloadable: Counter,
    connections: Gauge,
    active_devices: Gauge,
    last_seen: Mutex<HashMap<DeviceId, Instant>>,
}

fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let mut registry = Registry::with_prefix("followup");
        let sync_requests = Family::<Outcome, Counter>::default();
        registry.register(
            "sync_requests",
            "Sync exchanges by outcome",
            sync_requests.clone(),
        );
        let request_bytes = Counter::default();
        registry.register(
            "sync_request_bytes",
            "Sync request body bytes",
            request_bytes.clone(),
        );
        let response_bytes = Counter::default();
        registry.register(
            "sync_response_bytes",
            "Sync response body bytes",
            response_bytes.clone(),
        );
        let sync_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "sync_duration_seconds",
            "Time to answer an authenticated sync",
            sync_duration.clone(),
        );
        let rejections = Family::<Code, Counter>::default();
        registry.register(
            "push_rejections",
            "Pushed documents refused, by reject code",
            rejections.clone(),
        );
        let rate_limited = Family::<Route, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit",
            rate_limited.clone(),
        );
        let unloadable = Counter::default();
        registry.register(
            "unloadable_documents",
            "Stored documents that failed to load while serving a pull",
            unloadable.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections_open",
            "TCP connections being served",
            connections.clone(),
        );
        let active_devices = Gauge::default();
        registry.register(
            "active_devices",
            "Devices that synced in the last 15 minutes",
            active_devices.clone(),
        );
        Metrics {
            registry,
            sync_requests,
            request_bytes,
            response_bytes,
            sync_duration,
            rejections,
            rate_limited,
            unloadable,
            connections,
            active_devices,
            last_seen: Mutex::new(HashMap::new()),
        }
    })
}

/// A sync answered with this HTTP status.
pub fn sync_finished(status: u16) {
    let outcome = match status {
        200..=299 => "ok",
        400..=499 => "client_error",
        _ => "server_error",
    };
    metrics()
        .sync_requests
        .get_or_create(&Outcome { outcome })
        .inc();
}

/// An authenticated sync answered: its sizes, duration and device.
pub fn sync_served(device: DeviceId, request_bytes: usize, response_bytes: usize, took: Duration) {
    let m = metrics();
    m.request_bytes.inc_by(request_bytes as u64);
    m.response_bytes.inc_by(response_bytes as u64);
    m.sync_duration.observe(took.as_secs_f64());
    let mut seen = match m.last_seen.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    seen.insert(device, Instant::now());
}

/// A pushed document refused with `code`.
pub fn rejected(code: &'static str) {
    metrics().rejections.get_or_create(&Code { code }).inc();
}

/// A request refused by the rate limit of `route`.
pub fn rate_limited(route: &'static str) {
    metrics().rate_limited.get_or_create(&Route { route }).inc();
}

/// A stored document that could not be loaded.
pub fn unloadable_document() {
    metrics().unloadable.inc();
}

/// A connection opened (`+1`) or closed (`-1`).
pub fn connection(delta: i64) {
    metrics().connections.inc_by(delta);
}

/// The text exposition.
pub fn render() -> String {
    let m = metrics();
    {
        let mut seen = match m.last_seen.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        seen.retain(|_, t| t.elapsed() < ACTIVE_WINDOW);
        m.active_devices
            .set(i64::try_from(seen.len()).unwrap_or(i64::MAX));
    }
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &m.registry) {
        tracing::error!(%e, "could not encode metrics");
    }
    out
}
