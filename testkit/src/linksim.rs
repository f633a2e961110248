//! A link simulator, **for tests, the demo and the benchmark**: a TCP proxy on `127.0.0.1:0` in
//! front of a server that makes a loopback connection behave like a clinic's link.
//!
//! * **Bandwidth and latency** per direction: bytes are released at `bytes_per_sec` (each chunk
//!   is "on the wire" for `len / rate` seconds, one after another) and delivered `latency` later.
//! * **Cuts**: a connection is closed abruptly on both sides, dropping whatever is in flight, after a fixed number of
//!   bytes ([`CutPolicy::AfterBytes`]), at a random byte offset drawn from a seeded generator
//!   ([`CutPolicy::RandomBytes`], reproducible), or at every multiple of a wall-time period since
//!   the simulator started ([`CutPolicy::Every`]: "the link drops every few seconds"). Bytes are
//!   counted over both directions of a connection. `max_cuts` bounds how many cuts happen in
//!   all, so a test can be sure its retries eventually get through.
//! * **Stats**: connections, bytes forwarded each way, cuts ([`LinkStats`]).
//!
//! The configuration can be changed while running ([`LinkSim::set_config`]); it applies to new
//! connections.
//!
//! ```no_run
//! # async fn demo(server: std::net::SocketAddr) -> std::io::Result<()> {
//! use followup_testkit::linksim::{CutPolicy, LinkConfig, LinkSim};
//! use std::time::Duration;
//! let link = LinkSim::start(server, LinkConfig {
//!     cut: CutPolicy::Every(Duration::from_secs(3)),
//!     ..LinkConfig::slow(8_000, Duration::from_millis(250)) // 64 kbit/s, 500 ms round trip
//! }).await?;
//! let url = link.url(); // give this to the device instead of the server's URL
//! # Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// When connections are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutPolicy {
    /// Never.
    Never,
    /// Each connection after this many bytes (both directions together).
    AfterBytes(u64),
    /// Each connection at a random offset in `1..=max_bytes` (both directions together), drawn
    /// from a generator seeded with `seed` (connection *k* always gets the same offset).
    RandomBytes { seed: u64, max_bytes: u64 },
    /// Every open connection at each multiple of this period since the simulator started.
    Every(Duration),
}

/// The simulated link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    /// Client → server rate (bytes/s); `None` is unthrottled.
    pub up_bytes_per_sec: Option<u64>,
    /// Server → client rate (bytes/s); `None` is unthrottled.
    pub down_bytes_per_sec: Option<u64>,
    /// One-way delay client → server.
    pub up_latency: Duration,
    /// One-way delay server → client.
    pub down_latency: Duration,
    /// When to cut connections.
    pub cut: CutPolicy,
    /// Most cuts in all (`None`: unbounded).
    pub max_cuts: Option<u64>,
}

impl Default for LinkConfig {
    /// A perfect link: no throttle, no latency, no cuts.
    fn default() -> Self {
        LinkConfig {
            up_bytes_per_sec: None,
            down_bytes_per_sec: None,
            up_latency: Duration::ZERO,
            down_latency: Duration::ZERO,
            cut: CutPolicy::Never,
            max_cuts: None,
        }
    }
}

impl LinkConfig {
    /// A symmetric slow link: `bytes_per_sec` each way and `one_way` latency each way
    /// (64 kbit/s is 8,000 bytes/s; a 500 ms round trip is 250 ms each way).
    pub fn slow(bytes_per_sec: u64, one_way: Duration) -> Self {
        LinkConfig {
            up_bytes_per_sec: Some(bytes_per_sec),
            down_bytes_per_sec: Some(bytes_per_sec),
            up_latency: one_way,
            down_latency: one_way,
            ..LinkConfig::default()
        }
    }
}

/// Counters since the simulator started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Connections accepted.
    pub connections: u64,
    /// Bytes delivered client → server.
    pub bytes_up: u64,
    /// Bytes delivered server → client.
    pub bytes_down: u64,
    /// Connections cut.
    pub cuts: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    cuts: AtomicU64,
}

struct Shared {
    target: SocketAddr,
    config: Mutex<LinkConfig>,
    counters: Counters,
    rng: Mutex<u64>,
    started: Instant,
}

/// A running link simulator. Dropping it stops accepting connections.
pub struct LinkSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for LinkSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSim")
            .field("addr", &self.addr)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Drop for LinkSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// xorshift64* (no `rand` dependency needed for a test tool).
fn next_rand(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

impl LinkSim {
    /// Listen on `127.0.0.1:0` and forward each connection to `target` through the link.
    pub async fn start(target: SocketAddr, config: LinkConfig) -> io::Result<LinkSim> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let seed = match config.cut {
            CutPolicy::RandomBytes { seed, .. } => seed,
            _ => 1,
        };
        let shared = Arc::new(Shared {
            target,
            config: Mutex::new(config),
            counters: Counters::default(),
            rng: Mutex::new(seed | 1),
            started: Instant::now(),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(s, client).await {
                        tracing::debug!(error = %e, "linksim connection ended");
                    }
                });
            }
        });
        Ok(LinkSim { addr, shared, task })
    }

    /// The address devices should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Counters so far.
    pub fn stats(&self) -> LinkStats {
        let c = &self.shared.counters;
        LinkStats {
            connections: c.connections.load(Ordering::SeqCst),
            bytes_up: c.bytes_up.load(Ordering::SeqCst),
            bytes_down: c.bytes_down.load(Ordering::SeqCst),
            cuts: c.cuts.load(Ordering::SeqCst),
        }
    }

    /// Change the link for new connections (e.g. heal it: `LinkConfig::default()`).
    pub fn set_config(&self, config: LinkConfig) {
        if let CutPolicy::RandomBytes { seed, .. } = config.cut {
            if let Ok(mut r) = self.shared.rng.lock() {
                *r = seed | 1;
            }
        }
        if let Ok(mut c) = self.shared.config.lock() {
            *c = config;
        }
    }
}

/// One connection's cut state.
struct Cut {
    fired: AtomicBool,
    notify: Notify,
    /// Bytes left before the cut (both directions).
    budget: AtomicU64,
}

impl Cut {
    fn fire(&self, shared: &Shared, max_cuts: Option<u64>) {
        if self.fired.swap(true, Ordering::SeqCst) {
            return;
        }
        let allowed = match max_cuts {
            None => true,
            Some(max) => shared
                .counters
                .cuts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_ok(),
        };
        if max_cuts.is_none() {
            shared.counters.cuts.fetch_add(1, Ordering::SeqCst);
        }
        if allowed {
            self.notify.notify_waiters();
        } else {
            // Out of cuts: this connection lives on, unlimited.
            self.budget.store(u64::MAX, Ordering::SeqCst);
            self.fired.store(false, Ordering::SeqCst);
        }
    }

    fn is_fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    async fn wait(&self) {
        loop {
            let n = self.notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.is_fired() {
                return;
            }
            n.await;
        }
    }

    /// Take up to `n` bytes from the budget; returns how many may pass and whether the cut
    /// comes right after them.
    fn take(&self, n: u64) -> (u64, bool) {
        let mut cur = self.budget.load(Ordering::SeqCst);
        loop {
            if cur == u64::MAX {
                return (n, false);
            }
            let pass = n.min(cur);
            match self
                .budget
                .compare_exchange(cur, cur - pass, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return (pass, pass == cur),
                Err(actual) => cur = actual,
            }
        }
    }
}

async fn handle(shared: Arc<Shared>, client: TcpStream) -> io::Result<()> {
    shared.counters.connections.fetch_add(1, Ordering::SeqCst);
    let config = shared.config.lock().map(|c| *c).unwrap_or_default();
    let server = TcpStream::connect(shared.target).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let budget = match config.cut {
        CutPolicy::AfterBytes(n) => n,
        CutPolicy::RandomBytes { max_bytes, .. } => {
            let r = shared
                .rng
                .lock()
                .map(|mut s| next_rand(&mut s))
                .unwrap_or(0);
            1 + r % max_bytes.max(1)
        }
        CutPolicy::Never | CutPolicy::Every(_) => u64::MAX,
    };
    let cut = Arc::new(Cut {
        fired: AtomicBool::new(false),
        notify: Notify::new(),
        budget: AtomicU64::new(budget),
    });
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pipe(
        cr,
        sw,
        config.up_bytes_per_sec,
        config.up_latency,
        cut.clone(),
        shared.clone(),
        config.max_cuts,
        true,
    );
    let down = pipe(
        sr,
        cw,
        config.down_bytes_per_sec,
        config.down_latency,
        cut.clone(),
        shared.clone(),
        config.max_cuts,
        false,
    );
    let timer = {
        let cut = cut.clone();
        let shared = shared.clone();
        async move {
            if let CutPolicy::Every(period) = config.cut {
                if period.is_zero() {
                    return std::future::pending().await;
                }
                let since = shared.started.elapsed().as_nanos();
                let p = period.as_nanos();
                let next = (since / p + 1) * p;
                let at =
                    shared.started + Duration::from_nanos(u64::try_from(next).unwrap_or(u64::MAX));
                tokio::time::sleep_until(at).await;
                cut.fire(&shared, config.max_cuts);
                if cut.is_fired() {
                    return;
                }
            }
            std::future::pending::<()>().await
        }
    };
    let (up_w, down_w) = tokio::select! {
        r = async { tokio::join!(up, down) } => r,
        _ = cut.wait() => (None, None),
        _ = timer => (None, None),
    };
    // Dropping the halves closes the sockets; after a cut, with a reset. The write halves came
    // back from the pipes when they ended normally.
    drop((up_w, down_w));
    Ok(())
}

enum Chunk {
    Data(Vec<u8>, Instant),
    Eof(Instant),
}

/// Forward one direction: read, throttle, delay, write. Returns the write half on a normal end.
#[allow(clippy::too_many_arguments)]
async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    rate: Option<u64>,
    latency: Duration,
    cut: Arc<Cut>,
    shared: Arc<Shared>,
    max_cuts: Option<u64>,
    up: bool,
) -> Option<tokio::net::tcp::OwnedWriteHalf> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Chunk>();
    // Granularity: 20 ms worth of bytes at the rate, at most 16 KiB.
    let chunk = rate.map_or(16 * 1024, |r| (r / 50).clamp(1, 16 * 1024)) as usize;
    let reader = {
        let cut = cut.clone();
        let shared = shared.clone();
        async move {
            let mut buf = vec![0u8; chunk];
            let mut wire_free = Instant::now();
            loop {
                let n = match r.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Chunk::Eof(wire_free.max(Instant::now()) + latency));
                        return;
                    }
                    Ok(n) => n,
                };
                let (pass, cut_now) = cut.take(n as u64);
                let mut pass = pass as usize;
                let mut stop = false;
                if cut_now {
                    // Everything in flight on this connection is lost with it.
                    cut.fire(&shared, max_cuts);
                    if cut.is_fired() {
                        stop = true;
                    } else {
                        pass = n;
                    }
                }
                let now = Instant::now();
                let start = wire_free.max(now);
                wire_free = match rate {
                    Some(r) if r > 0 => start + Duration::from_secs_f64(pass as f64 / r as f64),
                    _ => start,
                };
                if pass > 0 {
                    tokio::time::sleep_until(wire_free).await;
                    let _ = tx.send(Chunk::Data(buf[..pass].to_vec(), wire_free + latency));
                }
                if stop {
                    return;
                }
            }
        }
    };
    let writer = async move {
        while let Some(c) = rx.recv().await {
            match c {
                Chunk::Data(bytes, at) => {
                    tokio::time::sleep_until(at).await;
                    if w.write_all(&bytes).await.is_err() {
                        return None;
                    }
                    let counter = if up {
                        &shared.counters.bytes_up
                    } else {
                        &shared.counters.bytes_down
                    };
                    counter.fetch_add(bytes.len() as u64, Ordering::SeqCst);
                }
                Chunk::Eof(at) => {
                    tokio::time::sleep_until(at).await;
                    let _ = w.shutdown().await;
                    return Some(w);
                }
            }
        }
        None
    };
    let ((), w) = tokio::join!(reader, writer);
    w
}
