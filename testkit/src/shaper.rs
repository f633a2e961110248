//! A TCP **link shaper** on `127.0.0.1`, for measuring sync over a clinic's link: the bytes of
//! each direction go through at a fixed rate and arrive one-way-latency later, opening a
//! connection costs a round trip as a real TCP handshake does, and the link can be reset
//! (every open connection closed with a TCP reset, whatever was in flight lost) at every
//! multiple of a period. It counts the bytes put on the link in each direction — HTTP headers
//! included, bytes lost in flight at a reset included — which is what a metered link bills.
//!
//! How it charges time, per connection:
//! * **set-up**: nothing is read from a new connection for one round trip (SYN, SYN-ACK: the
//!   client's first byte can leave only after them), so the server sees it `1.5 × RTT` after
//!   `connect`, as on a real link;
//! * **transfer**: bytes are taken from the sender's socket only as fast as the link carries
//!   them (the rest waits in the sender's kernel buffer, not on the link), each slice occupying
//!   the link for `len / rate`, and handed to the receiver `RTT / 2` after it left;
//! * **reset**: at each multiple of `reset_every` since the shaper started, every connection
//!   open at that instant (set-up included) is reset on both sides.
//!
//! ```no_run
//! # async fn demo(server: std::net::SocketAddr) -> std::io::Result<()> {
//! use followup_testkit::shaper::{Shaper, ShaperConfig};
//! use std::time::Duration;
//! let link = Shaper::start(server, ShaperConfig::clinic().with_resets(Duration::from_secs(5))).await?;
//! let url = link.url(); // give this to the device instead of the server's URL
//! # Ok(()) }
//! ```

// `set_linger` is deprecated because a *non-zero* linger blocks the thread on drop; a zero
// linger (what a link reset needs: an RST, nothing flushed) returns at once.
#![allow(deprecated)]

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The shaped link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShaperConfig {
    /// Bytes per second, each way (64 kbit/s = 8,000 B/s). `None`: unthrottled.
    pub bytes_per_sec: Option<u64>,
    /// Round-trip time (half of it each way).
    pub rtt: Duration,
    /// Charge one round trip for opening each connection.
    pub charge_setup: bool,
    /// Reset every open connection at each multiple of this period.
    pub reset_every: Option<Duration>,
}

impl ShaperConfig {
    /// The brief's clinic link: 64 kbit/s each way, 500 ms round trip, set-up charged, no resets.
    pub fn clinic() -> Self {
        ShaperConfig {
            bytes_per_sec: Some(8_000),
            rtt: Duration::from_millis(500),
            charge_setup: true,
            reset_every: None,
        }
    }

    /// A link that only counts bytes (no delay, no limit).
    pub fn counting() -> Self {
        ShaperConfig {
            bytes_per_sec: None,
            rtt: Duration::ZERO,
            charge_setup: false,
            reset_every: None,
        }
    }

    /// The same link, reset every `period`.
    pub fn with_resets(self, period: Duration) -> Self {
        ShaperConfig {
            reset_every: Some(period),
            ..self
        }
    }
}

/// Counters since the shaper started (or since [`Shaper::reset_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShaperStats {
    /// Connections opened.
    pub connections: u64,
    /// Connections reset by the link.
    pub resets: u64,
    /// Bytes put on the link client → server (headers and bytes lost at a reset included).
    pub bytes_up: u64,
    /// Bytes put on the link server → client.
    pub bytes_down: u64,
}

impl ShaperStats {
    /// Both directions.
    pub fn bytes(&self) -> u64 {
        self.bytes_up + self.bytes_down
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    resets: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

struct Shared {
    target: SocketAddr,
    config: Mutex<ShaperConfig>,
    counters: Counters,
    started: Instant,
}

/// A running shaper; dropping it stops accepting connections.
pub struct Shaper {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Shaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shaper")
            .field("addr", &self.addr)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Drop for Shaper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shaper {
    /// Listen on `127.0.0.1:0`; forward each connection to `target` through the link.
    pub async fn start(target: SocketAddr, config: ShaperConfig) -> io::Result<Shaper> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            config: Mutex::new(config),
            counters: Counters::default(),
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
                    if let Err(e) = connection(s, client).await {
                        tracing::debug!(error = %e, "shaper connection ended");
                    }
                });
            }
        });
        Ok(Shaper { addr, shared, task })
    }

    /// The address to connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The counters.
    pub fn stats(&self) -> ShaperStats {
        let c = &self.shared.counters;
        ShaperStats {
            connections: c.connections.load(Ordering::SeqCst),
            resets: c.resets.load(Ordering::SeqCst),
            bytes_up: c.bytes_up.load(Ordering::SeqCst),
            bytes_down: c.bytes_down.load(Ordering::SeqCst),
        }
    }

    /// Zero the counters.
    pub fn reset_stats(&self) {
        let c = &self.shared.counters;
        for a in [&c.connections, &c.resets, &c.bytes_up, &c.bytes_down] {
            a.store(0, Ordering::SeqCst);
        }
    }

    /// Change the link; applies to connections opened from now on (resets keep their phase).
    pub fn set_config(&self, config: ShaperConfig) {
        if let Ok(mut c) = self.shared.config.lock() {
            *c = config;
        }
    }
}

/// The next reset instant after now, if the link resets.
fn next_reset(shared: &Shared, period: Option<Duration>) -> Option<Instant> {
    let p = period.filter(|p| !p.is_zero())?.as_nanos();
    let since = shared.started.elapsed().as_nanos();
    let next = (since / p + 1) * p;
    Some(shared.started + Duration::from_nanos(u64::try_from(next).unwrap_or(u64::MAX)))
}

async fn connection(shared: Arc<Shared>, client: TcpStream) -> io::Result<()> {
    shared.counters.connections.fetch_add(1, Ordering::SeqCst);
    let config = shared
        .config
        .lock()
        .map(|c| *c)
        .unwrap_or(ShaperConfig::counting());
    let reset_at = next_reset(&shared, config.reset_every);
    let reset = async move {
        match reset_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(reset);
    // The handshake's round trip: nothing leaves the client before it is over.
    if config.charge_setup && !config.rtt.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(config.rtt) => {}
            _ = &mut reset => {
                let _ = client.set_linger(Some(Duration::ZERO));
                shared.counters.resets.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
        }
    }
    let server = TcpStream::connect(shared.target).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let one_way = config.rtt / 2;
    let (reset_tx, reset_rx) = watch::channel(false);
    let up = pipe(
        cr,
        sw,
        config.bytes_per_sec,
        one_way,
        &shared.counters.bytes_up,
        reset_rx.clone(),
    );
    let down = pipe(
        sr,
        cw,
        config.bytes_per_sec,
        one_way,
        &shared.counters.bytes_down,
        reset_rx,
    );
    let both = async { tokio::join!(up, down) };
    tokio::pin!(both);
    tokio::select! {
        _ = &mut both => return Ok(()),
        _ = &mut reset => {}
    }
    shared.counters.resets.fetch_add(1, Ordering::SeqCst);
    let _ = reset_tx.send(true);
    both.await;
    Ok(())
}

enum Slice {
    Data(Vec<u8>, Instant),
    Eof(Instant),
}

/// One direction: take bytes from `r` at the link's rate, hand them to `w` one way later. On a
/// reset both sockets are closed with a TCP reset (SO_LINGER 0) and what was in flight is lost;
/// a normal end shuts the writing side down (FIN) after the last byte.
async fn pipe(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    rate: Option<u64>,
    one_way: Duration,
    on_link: &AtomicU64,
    reset: watch::Receiver<bool>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Slice>();
    // 20 ms of the link per slice (160 B at 64 kbit/s), at most 16 KiB.
    let slice = rate.map_or(16 * 1024, |r| (r / 50).clamp(1, 16 * 1024)) as usize;
    let mut reset_r = reset.clone();
    let mut reset_w = reset;
    let reader = async move {
        let mut buf = vec![0u8; slice];
        let mut link_free = Instant::now();
        loop {
            let n = tokio::select! {
                res = r.read(&mut buf) => match res {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Slice::Eof(link_free.max(Instant::now()) + one_way));
                        return;
                    }
                    Ok(n) => n,
                },
                _ = reset_r.changed() => {
                    let _ = r.as_ref().set_linger(Some(Duration::ZERO));
                    return;
                }
            };
            on_link.fetch_add(n as u64, Ordering::SeqCst);
            let start = link_free.max(Instant::now());
            link_free = match rate {
                Some(rate) if rate > 0 => start + Duration::from_secs_f64(n as f64 / rate as f64),
                _ => start,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(link_free) => {}
                _ = reset_r.changed() => {
                    let _ = r.as_ref().set_linger(Some(Duration::ZERO));
                    return;
                }
            }
            if tx
                .send(Slice::Data(buf[..n].to_vec(), link_free + one_way))
                .is_err()
            {
                return;
            }
        }
    };
    let writer = async move {
        loop {
            let s = tokio::select! {
                s = rx.recv() => s,
                _ = reset_w.changed() => None,
            };
            let Some(s) = s else { return };
            let (at, data) = match s {
                Slice::Data(bytes, at) => (at, Some(bytes)),
                Slice::Eof(at) => (at, None),
            };
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = reset_w.changed() => return,
            }
            match data {
                Some(bytes) => {
                    if w.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = w.shutdown().await;
                    return;
                }
            }
        }
    };
    tokio::join!(reader, writer);
}
