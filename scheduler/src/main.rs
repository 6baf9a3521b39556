//! `stayler-scheduler`: emits jobs on their cron schedules until SIGTERM or SIGINT.

use anyhow::Context as _;
use shared::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init();
    let config = Config::load().context("loading the configuration")?;
    let shutdown = shared::shutdown::token().context("listening for SIGTERM")?;
    scheduler::run(config, shutdown).await
}
