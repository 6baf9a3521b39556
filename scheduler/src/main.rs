//! `stayler-scheduler`: emits jobs on their cron schedules until SIGTERM or SIGINT (`run`,
//! the default), or asks the running scheduler whether it is healthy (`health`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shared::config::Config;
use shared::observability::probe;

#[derive(Parser)]
#[command(
    name = "stayler-scheduler",
    version,
    about = "Stayler Storage scheduler: emits the periodic jobs (backups, checks, maintenance) on their \
             cron schedules, each slot once however many replicas run, until SIGTERM or SIGINT"
)]
struct Cli {
    /// The YAML configuration file; `STAYLER_*` environment variables override it.
    #[arg(long, global = true, env = shared::config::CONFIG_FILE_ENV, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Emit the jobs on their schedules (the default).
    Run,
    /// Ask the scheduler on this machine whether it is up: exit 0 when its metrics port
    /// (prometheus.schedulerListen) answers /healthz with 200 within 2 s, else say why and exit 1.
    Health,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    shared::telemetry::init();
    let config = Config::load_from(cli.config.as_deref()).context("loading the configuration")?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let shutdown = shared::shutdown::token().context("listening for SIGTERM")?;
            scheduler::run(config, shutdown).await
        }
        Command::Health => {
            let Some(listen) = config.prometheus.scheduler_address() else {
                anyhow::bail!(
                    "the scheduler's metrics port is off (prometheus.enabled false or prometheus.schedulerListen \
                     empty): there is nothing to ask"
                );
            };
            let status = probe::ask(probe::local(listen), "/healthz").await.context("the scheduler is not healthy")?;
            println!("healthy: {status}");
            Ok(())
        }
    }
}
