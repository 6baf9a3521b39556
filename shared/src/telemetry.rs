//! Logging set-up shared by every binary.

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
