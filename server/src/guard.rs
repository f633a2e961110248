//! Request-level bounds that are not about one connection: rate limits on the enrolment and admin
//! routes (per client address, with the `governor` crate's GCRA limiter), and how many sync
//! requests one device may have in flight at once.
//!
//! Sign-in throttling of staff accounts lives with the staff console; this module covers the
//! unauthenticated enrolment route (a code is 60 bits, but guessing should still cost time) and
//! the admin API (a bearer token; failed guesses are cheap for an attacker without a limit).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use followup_domain::ids::DeviceId;
use followup_domain::protocol::ErrorCode;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// Requests per minute per client address, with a burst.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitConfig {
    pub enrol_per_minute: u32,
    pub enrol_burst: u32,
    pub admin_per_minute: u32,
    pub admin_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enrol_per_minute: 10,
            enrol_burst: 10,
            admin_per_minute: 120,
            admin_burst: 60,
        }
    }
}

/// One keyed limiter (per client IP address).
#[derive(Clone)]
pub struct RouteLimiter {
    name: &'static str,
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

impl std::fmt::Debug for RouteLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RouteLimiter({})", self.name)
    }
}

/// Most client addresses remembered before idle ones are forgotten.
const MAX_TRACKED_ADDRESSES: usize = 100_000;

impl RouteLimiter {
    pub fn new(name: &'static str, per_minute: u32, burst: u32) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        RouteLimiter {
            name,
            limiter: Arc::new(RateLimiter::keyed(
                Quota::per_minute(per_minute).allow_burst(burst),
            )),
        }
    }

    /// `Ok` if `ip` may make a request now, else the seconds to wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        if self.limiter.len() > MAX_TRACKED_ADDRESSES {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&ip).map_err(|not_until| {
            not_until
                .wait_time_from(DefaultClock::default().now())
                .as_secs()
                .max(1)
        })
    }
}

/// The client's address: the TCP peer (no proxy header is trusted; behind a reverse proxy every
/// client shares the proxy's budget, which errs on the safe side).
fn client_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// Middleware: refuse with 429 past the route's limit.
pub async fn rate_limit(State(limiter): State<RouteLimiter>, req: Request, next: Next) -> Response {
    let ip = client_ip(&req);
    match limiter.check(ip) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            tracing::warn!(route = limiter.name, %ip, "rate limited");
            crate::metrics::rate_limited(limiter.name);
            let mut resp = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::Unavailable,
                format!(
                    "too many {} requests from this address; retry in {wait} s",
                    limiter.name
                ),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                resp.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
            resp
        }
    }
}

/// How many sync requests each device has in flight.
#[derive(Debug, Clone, Default)]
pub struct DeviceSlots {
    inner: Arc<Mutex<HashMap<DeviceId, u32>>>,
}

/// A slot held for the duration of one request.
#[derive(Debug)]
pub struct DeviceSlot {
    slots: DeviceSlots,
    device: DeviceId,
}

impl DeviceSlots {
    /// Take a slot for `device`, or `None` if it already has `max` requests in flight.
    pub fn try_take(&self, device: DeviceId, max: u32) -> Option<DeviceSlot> {
        let mut map = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let n = map.entry(device).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(DeviceSlot {
            slots: self.clone(),
            device,
        })
    }
}

impl Drop for DeviceSlot {
    fn drop(&mut self) {
        let mut map = match self.slots.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(n) = map.get_mut(&self.device) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.device);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_refuses_past_the_burst_per_address() {
        let l = RouteLimiter::new("test", 1, 3);
        let a = IpAddr::from([127, 0, 0, 1]);
        let b = IpAddr::from([127, 0, 0, 2]);
        for _ in 0..3 {
            assert_eq!(l.check(a), Ok(()));
        }
        let wait = l.check(a).unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        assert_eq!(l.check(b), Ok(()));
    }

    #[test]
    fn device_slots_are_counted_and_released() {
        let slots = DeviceSlots::default();
        let d = DeviceId([1; 16]);
        let a = slots.try_take(d, 2);
        let b = slots.try_take(d, 2);
        assert!(a.is_some() && b.is_some());
        assert!(slots.try_take(d, 2).is_none());
        assert!(slots.try_take(DeviceId([2; 16]), 2).is_some());
        drop(a);
        assert!(slots.try_take(d, 2).is_some());
    }
}
