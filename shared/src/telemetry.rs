//! Logging set-up shared by every binary, and the request id that follows one request
//! through the events it causes: the API sets it for each request (`X-Request-Id`), every
//! event queued meanwhile carries it in its envelope, and a worker sets it again while it
//! handles that event, so one upload can be followed through every log line it caused.

use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber: JSON lines when `STAYLER_LOG_FORMAT=json`
/// (for log shippers), human-readable otherwise; the filter comes from `RUST_LOG`. lapin is
/// silent by default: it logs every lost connection as an error, and our own reconnect
/// logic already reports each one, once, as a warning.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,lapin=off"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let result = if std::env::var("STAYLER_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A second call (tests start several services in one process) keeps the first subscriber.
    drop(result);
}

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `work` with `id` as the current request id (see the module documentation).
pub async fn with_request_id<F: std::future::Future>(id: String, work: F) -> F::Output {
    REQUEST_ID.scope(id, work).await
}

/// The request id of the request or job this task works for, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Whether a client's `X-Request-Id` is kept as it is: up to 128 letters, digits and
/// `-_.:`, so it can go into logs and headers unescaped. Others are replaced.
pub fn is_acceptable_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_request_id_is_the_scope_s_own() {
        assert_eq!(current_request_id(), None);
        let inside = with_request_id("r-1".to_owned(), async { current_request_id() }).await;
        assert_eq!(inside.as_deref(), Some("r-1"));
        assert_eq!(current_request_id(), None);
    }

    #[test]
    fn only_plain_request_ids_are_kept() {
        assert!(is_acceptable_request_id("01a2-b3_c4.d5:e6"));
        assert!(is_acceptable_request_id(&"x".repeat(128)), "exactly the limit");
        for bad in ["", "a b", "a\nb", "é", &"x".repeat(129)] {
            assert!(!is_acceptable_request_id(bad), "{bad:?}");
        }
    }
}
