//! `stayler-scheduler`: emits jobs on their cron schedules until SIGTERM or SIGINT.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use shared::config::Config;

#[derive(Parser)]
#[command(
    name = "stayler-scheduler",
    version,
    about = "Stayler Storage scheduler: emits the periodic jobs (backups, checks, maintenance) on their \
             cron schedules, each slot once however many replicas run, until SIGTERM or SIGINT"
)]
struct Cli {
    /// The YAML configuration file; `STAYLER_*` environment variables override it.
    #[arg(long, env = shared::config::CONFIG_FILE_ENV, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    shared::telemetry::init();
    let config = Config::load_from(cli.config.as_deref()).context("loading the configuration")?;
    let shutdown = shared::shutdown::token().context("listening for SIGTERM")?;
    scheduler::run(config, shutdown).await
}
