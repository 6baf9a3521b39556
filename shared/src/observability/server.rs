//! The metrics port of a worker or a scheduler (and of the API with
//! `prometheus.apiListen`): `GET /metrics`, the Prometheus text, and `GET /healthz`, 200
//! once the process is ready (503 while it starts), which `stayler-* health` asks.
//!
//! A small HTTP/1.1 server on hyper: each connection must send its request head within
//! [`HEADER_READ_TIMEOUT`], and at most [`MAX_CONNECTIONS`] are served at once (more wait in
//! the listen backlog): only scrapers and health checks come here.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Exporter;

/// A scraper's request head must arrive within this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;

/// A metrics port being served.
pub struct MetricsServer {
    /// The bound address (port 0 in the configuration picks a free one).
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `addr` and serves until `shutdown`. `ready` says what `/healthz` answers.
    pub async fn start(
        addr: SocketAddr,
        exporter: Exporter,
        ready: watch::Receiver<bool>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(serve(listener, exporter, ready, shutdown));
        Ok(Self { addr, task })
    }

    /// Waits until the server has stopped (after its shutdown token).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

async fn serve(listener: TcpListener, exporter: Exporter, ready: watch::Receiver<bool>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(error = %error, "the metrics port could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (exporter, ready, shutdown) = (exporter.clone(), ready.clone(), shutdown.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let (exporter, ready) = (exporter.clone(), ready.clone());
                async move { Ok::<_, Infallible>(answer(&request, &exporter, &ready).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(error = %error, "a metrics connection ended with an error");
                    }
                }
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.as_mut().await;
                }
            }
            drop(slot);
        });
    }
}

async fn answer(
    request: &Request<Incoming>,
    exporter: &Exporter,
    ready: &watch::Receiver<bool>,
) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *response.status_mut() = status;
        response.headers_mut().insert(CONTENT_TYPE, "text/plain; charset=utf-8".parse().expect("a header value"));
        response
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    }
    match request.uri().path() {
        "/healthz" if *ready.borrow() => plain(StatusCode::OK, "ok\n"),
        "/healthz" => plain(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        "/metrics" => {
            let authorization = request.headers().get(AUTHORIZATION).and_then(|value| value.to_str().ok());
            if !exporter.authorized(authorization) {
                let mut response = plain(StatusCode::UNAUTHORIZED, "a valid scrape token is required\n");
                response.headers_mut().insert(WWW_AUTHENTICATE, "Bearer".parse().expect("a header value"));
                return response;
            }
            let mut response = Response::new(Full::new(Bytes::from(exporter.render().await)));
            response.headers_mut().insert(CONTENT_TYPE, super::CONTENT_TYPE.parse().expect("a header value"));
            response
        }
        _ => plain(StatusCode::NOT_FOUND, "not found: /metrics or /healthz\n"),
    }
}
