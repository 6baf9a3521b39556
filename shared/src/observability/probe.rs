//! `stayler-api health`, `stayler-worker health` and `stayler-scheduler health`: one
//! `GET` to the process's own endpoint on this machine, healthy when it answers 200 within
//! [`ANSWER_LIMIT`]. Container health checks call them, and the runtime image has no
//! HTTP client: a plain HTTP/1.1 exchange on a socket is all it takes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The whole exchange (connect, ask, answer) must end within this.
pub const ANSWER_LIMIT: Duration = Duration::from_secs(2);
/// Bytes of the answer read: its status line and the start of its body, for the message.
const ANSWER_READ_BYTES: usize = 4 * 1024;

/// Why a process is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("nothing answers on {addr}: {source}")]
    Unreachable { addr: SocketAddr, source: std::io::Error },
    #[error("no answer from {addr} within {} ms", ANSWER_LIMIT.as_millis())]
    TimedOut { addr: SocketAddr },
    #[error("{addr} answered {status}: {body}")]
    Unhealthy { addr: SocketAddr, status: String, body: String },
}

/// Where a process listening on `listen` is reached from this machine: a wildcard address
/// (`0.0.0.0`, `::`) through the loopback interface, any other as it is.
pub fn local(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// `GET path` on `addr`; the status line when it answered 200.
pub async fn ask(addr: SocketAddr, path: &str) -> Result<String, ProbeError> {
    match tokio::time::timeout(ANSWER_LIMIT, exchange(addr, path)).await {
        Ok(answer) => answer,
        Err(_) => Err(ProbeError::TimedOut { addr }),
    }
}

async fn exchange(addr: SocketAddr, path: &str) -> Result<String, ProbeError> {
    let unreachable = |source| ProbeError::Unreachable { addr, source };
    let mut stream = TcpStream::connect(addr).await.map_err(unreachable)?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: stayler-health\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(unreachable)?;
    let mut answer = Vec::with_capacity(ANSWER_READ_BYTES);
    let mut reader = (&mut stream).take(ANSWER_READ_BYTES as u64);
    reader.read_to_end(&mut answer).await.map_err(unreachable)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    if status.split_whitespace().nth(1) == Some("200") {
        return Ok(status);
    }
    let status = if status.is_empty() { "nothing".to_owned() } else { status };
    let body: String = body.trim().chars().take(300).collect();
    Err(ProbeError::Unhealthy { addr, status, body })
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn wildcard_addresses_are_asked_through_the_loopback_interface() {
        let at = |text: &str| local(text.parse().unwrap()).to_string();
        assert_eq!(at("0.0.0.0:9101"), "127.0.0.1:9101");
        assert_eq!(at("[::]:9102"), "[::1]:9102");
        assert_eq!(at("10.1.2.3:9101"), "10.1.2.3:9101");
    }

    /// A server that answers every connection with `answer` (or with nothing, after `delay`).
    async fn answering(answer: &'static str, delay: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = [0u8; 1024];
                let _ = stream.read(&mut head).await;
                tokio::time::sleep(delay).await;
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_200_is_healthy_and_anything_else_says_why_not() {
        let ok = answering("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n", Duration::ZERO).await;
        assert_eq!(ask(ok, "/healthz").await.unwrap(), "HTTP/1.1 200 OK");
        let starting = answering("HTTP/1.1 503 Service Unavailable\r\n\r\nstarting\n", Duration::ZERO).await;
        let error = ask(starting, "/healthz").await.unwrap_err().to_string();
        assert!(error.ends_with("answered HTTP/1.1 503 Service Unavailable: starting"), "{error}");
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        assert!(matches!(ask(closed, "/healthz").await, Err(ProbeError::Unreachable { .. })), "nothing listens");
    }

    #[tokio::test]
    async fn a_process_that_does_not_answer_within_the_limit_is_unhealthy() {
        let silent = answering("HTTP/1.1 200 OK\r\n\r\n", ANSWER_LIMIT * 10).await;
        let started = std::time::Instant::now();
        assert!(matches!(ask(silent, "/healthz").await, Err(ProbeError::TimedOut { .. })));
        assert!(started.elapsed() < ANSWER_LIMIT * 2, "given up at the limit");
    }
}
