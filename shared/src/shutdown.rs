//! Shutdown on SIGTERM (container stop) or SIGINT (Ctrl-C), the same way in every binary.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Waits for SIGTERM or SIGINT.
pub async fn signalled() -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => {}
        result = tokio::signal::ctrl_c() => result?,
    }
    tracing::info!("shutdown requested");
    Ok(())
}

/// A token cancelled at the first SIGTERM or SIGINT. The handlers are installed before it
/// returns, so a signal arriving during start-up is not missed.
pub fn token() -> std::io::Result<CancellationToken> {
    let shutdown = CancellationToken::new();
    let mut terminate = signal(SignalKind::terminate())?;
    let cancel = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutdown requested");
        cancel.cancel();
    });
    Ok(shutdown)
}
