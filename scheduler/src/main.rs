//! `stayler-scheduler`: emits jobs on their cron schedules until SIGTERM or SIGINT.

use anyhow::Context as _;
use shared::config::Config;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init();
    let config = Config::load().context("loading the configuration")?;
    let shutdown = CancellationToken::new();
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutdown requested");
        on_signal.cancel();
    });
    scheduler::run(config, shutdown).await
}
