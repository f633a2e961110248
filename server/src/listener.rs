//! The server's own connection loop (instead of `axum::serve`), so that every resource a client
//! can hold before it has proved who it is stays bounded:
//!
//! - **a connection cap** ([`ConnLimits::max_connections`]): past it, new connections wait in the
//!   kernel's backlog until one closes, rather than each taking a task and buffers;
//! - **HTTP/1.1 only** (no h2c, so no 200-streams-per-connection multiplier); header size and
//!   buffer capped;
//! - **a header read timeout** ([`ConnLimits::header_read_timeout`]): a client that trickles its
//!   request line or headers is cut off, and hyper applies the same timeout to an idle
//!   keep-alive connection waiting for its next request;
//! - **a TLS handshake timeout** and a **connection lifetime** cap;
//! - **TLS** (rustls) when a certificate and key are configured ([`crate::tls`]).
//!
//! Body read timeouts and the check of the device *before* its body is read are in the handlers
//! ([`crate::api`]), because only they know which route needs which body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use crate::tls::TlsAcceptor;

/// Limits on connections, before any request is read.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time allowed to send a request's line and headers (and to start the next request on a
    /// kept-alive connection).
    pub header_read_timeout: Duration,
    /// Time allowed for the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Longest a connection is kept, whatever it does.
    pub max_connection_lifetime: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            max_connection_lifetime: Duration::from_secs(600),
        }
    }
}

/// Largest request head (request line + headers) accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers in one request.
const MAX_HEADERS: usize = 64;

/// Serve `app` on `listener` until `shutdown` resolves, then let open connections finish their
/// current request (for at most `grace`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // Wait for room before accepting: past the cap, connections queue in the kernel.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: wait a little rather than spin.
                    tracing::warn!(%e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let run = async {
                match tls {
                    Some(acceptor) => {
                        let handshake = tokio::time::timeout(
                            limits.tls_handshake_timeout,
                            acceptor.accept(stream),
                        )
                        .await;
                        match handshake {
                            Ok(Ok(tls_stream)) => {
                                serve_one(tls_stream, peer, app, &limits, watcher).await
                            }
                            Ok(Err(e)) => tracing::debug!(%peer, %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                    None => serve_one(stream, peer, app, &limits, watcher).await,
                }
            };
            if tokio::time::timeout(limits.max_connection_lifetime, run)
                .await
                .is_err()
            {
                tracing::debug!(%peer, "connection closed at its lifetime limit");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open at the end of the shutdown grace period");
    }
    Ok(())
}

async fn serve_one<IO>(
    io: IO,
    peer: SocketAddr,
    app: Router,
    limits: &ConnLimits,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req.map(axum::body::Body::new))
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES.max(8192))
        .max_headers(MAX_HEADERS);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, %e, "connection ended with an error");
    }
}
