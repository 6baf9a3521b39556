//! `stayler-worker`: runs the job consumers until SIGTERM or SIGINT, or one operator
//! command in the foreground (`backup`, `verify`, `restore`, `migrate-storage`, `redrive`, `rotate-keys`: see
//! `--help`), or asks the running worker whether it is healthy (`health`).

use anyhow::Context as _;
use chrono::NaiveDate;
use clap::{Parser, Subcommand, ValueEnum};
use shared::config::Config;
use shared::model::RestoreMode;
use shared::observability::probe;
use uuid::Uuid;
use worker::operator::{self, RestoreTarget};

#[derive(Parser)]
#[command(name = "stayler-worker", about = "Stayler Storage job worker and disaster-recovery commands")]
struct Cli {
    /// The YAML configuration file; `STAYLER_*` environment variables override it.
    #[arg(long, global = true, env = shared::config::CONFIG_FILE_ENV, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the job queues (the default).
    Run,
    /// Back up every image not backed up yet, now, in the foreground.
    Backup,
    /// Check every archive of a backup against its manifest.
    Verify {
        /// The backup's id.
        #[arg(long)]
        backup: Uuid,
    },
    /// Restore originals and rows from backups, verifying every byte.
    Restore {
        /// Every image of this backup.
        #[arg(long, conflicts_with_all = ["date", "image"], required_unless_present_any = ["date", "image"])]
        backup: Option<Uuid>,
        /// Every image of the backups of this UTC day (YYYY-MM-DD).
        #[arg(long, conflicts_with = "image")]
        date: Option<NaiveDate>,
        /// This image, from the newest backup holding it (repeatable).
        #[arg(long)]
        image: Vec<Uuid>,
        /// Replace originals that are present too (default: only missing ones come back).
        #[arg(long)]
        overwrite: bool,
    },
    /// Copy every original and thumbnail from storage.basePath into the bucket of storage.s3.
    ///
    /// Each object is checked against its recorded SHA-256 before it is named in the bucket,
    /// a damaged or missing local file is reported and not copied, and objects already in the
    /// bucket are skipped: run it again after an interruption, or to copy what was uploaded
    /// meanwhile.
    MigrateStorage {
        /// The backend to copy to.
        #[arg(long, value_enum)]
        to: StorageTarget,
    },
    /// Ask the worker on this machine whether it is up: exit 0 when its metrics port
    /// (prometheus.workerListen) answers /healthz with 200 within 2 s, else say why and exit 1.
    Health,
    /// Move given-up jobs from a job queue's dead-letter queue back to it, oldest first, each
    /// with all its attempts again (after fixing what made them fail); needs only the broker.
    Redrive {
        /// The job queue, without the prefix (`thumbnails`, `checksums`…).
        #[arg(long, value_parser = operator::job_queue)]
        queue: shared::broker::JobQueue,
        /// Most jobs to move (at most 1000).
        #[arg(long, default_value_t = operator::DEFAULT_REDRIVE_LIMIT, value_parser = clap::value_parser!(u32).range(1..=i64::from(shared::redrive::MAX_BATCH)))]
        limit: u32,
    },
    /// Re-wrap every image's data key that is not under the active master key
    /// (encryption.activeKeyId) with it; run it again to resume, and remove a master key from
    /// encryption.keys only after a run that ends with every key under the active one.
    RotateKeys {
        /// Data keys re-wrapped per batch (at most 10000).
        #[arg(long, default_value_t = worker::keys::DEFAULT_BATCH, value_parser = clap::value_parser!(u32).range(1..=i64::from(worker::keys::MAX_BATCH)))]
        batch: u32,
    },
}

/// Backends `migrate-storage` copies to.
#[derive(Clone, Copy, ValueEnum)]
enum StorageTarget {
    /// The bucket of `storage.s3`.
    S3,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    shared::telemetry::init();
    let config = Config::load_from(cli.config.as_deref()).context("loading the configuration")?;
    shared::storage::apply_umask(config.storage.umask_bits().expect("validated with the configuration"));
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(config).await,
        Command::Backup => operator::backup(&config).await,
        Command::Verify { backup } => operator::verify(&config, backup).await,
        Command::Restore { backup, date, image, overwrite } => {
            let target = match (backup, date) {
                (Some(id), _) => RestoreTarget::Backup(id),
                (None, Some(date)) => RestoreTarget::Date(date),
                (None, None) => RestoreTarget::Images(image),
            };
            let mode = if overwrite { RestoreMode::Overwrite } else { RestoreMode::MissingOnly };
            operator::restore(&config, target, mode).await
        }
        Command::MigrateStorage { to: StorageTarget::S3 } => operator::migrate_storage(&config).await,
        Command::Health => health(&config).await,
        Command::Redrive { queue, limit } => operator::redrive(&config, queue, limit).await,
        Command::RotateKeys { batch } => worker::keys::rotate_keys(&config, batch).await,
    }
}

async fn health(config: &Config) -> anyhow::Result<()> {
    let Some(listen) = config.prometheus.worker_address() else {
        anyhow::bail!(
            "the worker's metrics port is off (prometheus.enabled false or prometheus.workerListen empty): \
             there is nothing to ask"
        );
    };
    let status = probe::ask(probe::local(listen), "/healthz").await.context("the worker is not healthy")?;
    println!("healthy: {status}");
    Ok(())
}

async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = shared::shutdown::token().context("listening for SIGTERM")?;
    worker::run(config, shutdown).await
}
