//! The HTTP server of the API: accepts TCP connections and runs HTTP/1.1 or HTTP/2 on them
//! with hyper, handing each request to the poem endpoint.
//!
//! It replaces `poem::Server` because of file serving: poem hands hyper a socket wrapper that
//! hides vectored writes (and locks a split stream on every read and write), so hyper copied
//! each response body into its own buffer before writing it; with the socket itself, hyper
//! writes head and body with one `writev`. Everything else is as with poem: same endpoint,
//! same request data (peer and local address), graceful shutdown with a grace period.
//!
//! Every connection is bounded (`limits:`): its request headers must arrive within the
//! header-read timeout, a socket that moves no byte either way for the idle timeout is
//! closed (an idle keep-alive connection, an upload that stopped sending, a client that
//! stopped reading a download), and at most `maxConnections` are served at once; further
//! ones wait in the listen backlog until one closes.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Addr, Endpoint, Request};
use shared::config::LimitsConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;

/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Bounds on every connection, from the `limits:` section.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A request's headers must arrive within this.
    pub header_read_timeout: Duration,
    /// A socket with no byte read or written for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl ConnectionLimits {
    pub fn new(limits: &LimitsConfig) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(limits.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(limits.idle_timeout_secs),
            max_connections: limits.max_connections as usize,
        }
    }
}

/// Serves `endpoint` on `listener` until `shutdown`, then lets open requests finish for at
/// most `grace`.
pub async fn run<E>(
    listener: TcpListener,
    endpoint: E,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    grace: Duration,
) -> io::Result<()>
where
    E: Endpoint + 'static,
{
    let endpoint = Arc::new(endpoint);
    let local = LocalAddr(Addr::SocketAddr(listener.local_addr()?));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().writev(true).timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // A slot first: at the cap, new connections wait in the kernel's backlog instead of
        // taking a file descriptor each.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(error = %error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        // Responses go out in one write; waiting for more to send would only add latency.
        let _ = stream.set_nodelay(true);
        let mut stream = TimeoutStream::new(stream);
        stream.set_read_timeout(Some(limits.idle_timeout));
        stream.set_write_timeout(Some(limits.idle_timeout));
        let endpoint = endpoint.clone();
        let local = local.clone();
        let remote = RemoteAddr(Addr::SocketAddr(peer));
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let endpoint = endpoint.clone();
            let request = Request::from((request, local.clone(), remote.clone(), Scheme::HTTP));
            async move { Ok::<_, Infallible>(hyper::Response::from(endpoint.get_response(request).await)) }
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(Box::pin(stream)), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!("requests still running after the shutdown grace period"),
    }
    Ok(())
}
