//! Operator commands: `stayler-worker backup | verify | restore` run a backup, an integrity
//! check or a restore in the foreground with a progress bar, needing only PostgreSQL, the
//! images' storage and the backups' (folders or buckets; no API, no broker). Jobs they leave in the outbox (a backup's batches,
//! the thumbnails of restored images) are delivered once a relay runs again; the backup ones
//! then find nothing left to do. `stayler-worker migrate-storage --to s3` copies the local
//! tree into the bucket of `storage.s3` ([`crate::migrate`]). `stayler-worker redrive --queue
//! thumbnails` moves given-up jobs from a dead-letter queue back to their job queue
//! ([`shared::redrive`]; needs the broker, and records its audit entry in PostgreSQL when it
//! can reach it). Each command leaves an audit entry with actor `operator:{command}`.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use chrono::{NaiveDate, Utc};
use futures::StreamExt;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use shared::audit::{self, Actor, AuditAction, Target};
use shared::backup::restore::Restorer;
use shared::backup::{self, verify};
use shared::broker::JobQueue;
use shared::config::Config;
use shared::db::storage_backups;
use shared::model::{BackupId, BackupTrigger, ImageId};
use shared::model::{RestoreMode, RestoreSelection};
use shared::storage::{BackupTree, Storage};
use sqlx::PgPool;
use uuid::Uuid;

use crate::migrate::{self, MigrationReport};

/// What `stayler-worker restore` should take.
#[derive(Debug, Clone)]
pub enum RestoreTarget {
    Backup(Uuid),
    Date(NaiveDate),
    Images(Vec<Uuid>),
}

struct Trees {
    db: PgPool,
    storage: Storage,
    backups: BackupTree,
}

async fn open(config: &Config) -> anyhow::Result<Trees> {
    let db = shared::db::connect(&config.database).await.context("connecting to PostgreSQL (database.url)")?;
    let storage = Storage::from_config(&config.storage).await.context("opening the storage (storage.backend)")?;
    let backups =
        BackupTree::from_config(&config.storage).context("opening the backup tree (storage.backupBackend)")?;
    Ok(Trees { db, storage, backups })
}

/// Records a command's audit entry once its work is done. The work stands whatever happens
/// here (a restore or a check is what a disaster needs, with or without a trail), so a
/// database that cannot take the entry earns a warning, not a failure.
async fn record_done(db: &PgPool, command: &str, action: AuditAction, target: Target<'_>, details: Value) {
    if let Err(error) = audit::record(db, &Actor::operator(command), action, target, details).await {
        eprintln!("warning: the audit entry of `{command}` was not recorded: {error}");
        tracing::warn!(error = %error, command, "the audit entry of an operator command was not recorded");
    }
}

fn bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} images, {per_sec}, eta {eta}")
        .expect("a valid template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

/// Backs up every image not backed up yet, batch after batch, and prints the outcome.
pub async fn backup(config: &Config) -> anyhow::Result<()> {
    let trees = open(config).await?;
    let policy = &config.storage.backup_policy;
    let mut tx = trees.db.begin().await?;
    let id = backup::request(&mut tx, BackupTrigger::Manual, None, policy.compression_level, Utc::now()).await?;
    let batches = backup::plan(&mut tx, id, i64::from(policy.batch_size)).await?.unwrap_or(0);
    let details = json!({"compression_level": policy.compression_level});
    audit::record(&mut *tx, &Actor::operator("backup"), AuditAction::BackupRequested, Target::Backup(id), details)
        .await?;
    tx.commit().await?;
    let planned = storage_backups::get(&trees.db, id).await?.context("the backup row vanished")?;
    let bar = bar(planned.file_count as u64, "backing up");
    // As many batches at once as the workers would run: each archives on a blocking thread.
    let at_once = crate::consumer::concurrency(&config.worker);
    let mut batches = futures::stream::iter(0..batches)
        .map(|batch| backup::run_batch(&trees.db, &trees.storage, &trees.backups, id, batch))
        .buffer_unordered(at_once);
    while let Some(report) = batches.next().await {
        let report = report?;
        bar.inc((report.archived + report.failed + report.gone) as u64);
    }
    backup::finish_if_done(&trees.db, &trees.backups, id).await?;
    bar.finish();
    let done = storage_backups::get(&trees.db, id).await?.context("the backup row vanished")?;
    println!(
        "backup {id}: {:?}, {} image(s), {} failed, {} bytes → {} bytes, in {}",
        done.status, done.file_count, done.failed_count, done.total_bytes, done.compressed_bytes, done.backup_path
    );
    if let Some(error) = done.error {
        bail!("backup {id} failed: {error}");
    }
    Ok(())
}

/// Checks every archive of one backup against its manifest; fails if any is missing or
/// corrupt.
pub async fn verify(config: &Config, id: Uuid) -> anyhow::Result<()> {
    let trees = open(config).await?;
    let id = BackupId(id);
    let name = id.to_string();
    let tree = trees.backups.clone();
    let manifests = tokio::task::spawn_blocking(move || tree.manifests()).await??;
    let manifest: PathBuf = manifests
        .into_iter()
        .find(|path| path.parent().and_then(|p| p.file_name()).is_some_and(|n| n.to_string_lossy() == name))
        .with_context(|| format!("no manifest of backup {id} in the backup tree (storage.backupBackend)"))?;
    let bar = bar(0, "checking");
    let tree = trees.backups.clone();
    let progress = bar.clone();
    let report = tokio::task::spawn_blocking(move || {
        verify::verify(&tree, &manifest, |done, total| {
            progress.set_length(total);
            progress.set_position(done);
        })
    })
    .await??;
    bar.finish();
    if storage_backups::get(&trees.db, id).await?.is_some() {
        let marked = verify::record(&trees.db, id, &report).await?;
        if marked > 0 {
            println!("{marked} image(s) with a damaged copy are taken again by the next backup");
        }
    }
    let details = json!({"checked": report.checked, "intact": report.intact, "missing": report.missing,
                         "corrupt": report.corrupt});
    record_done(&trees.db, "verify", AuditAction::BackupVerifyRequested, Target::Backup(id), details).await;
    println!(
        "backup {id}: {} checked, {} intact, {} missing, {} corrupt",
        report.checked, report.intact, report.missing, report.corrupt
    );
    for problem in &report.problems {
        println!("  {} {}: {} ({})", problem.kind, problem.image_id, problem.reason, problem.archive_path);
    }
    if !report.is_intact() {
        bail!("backup {id} has damaged archives");
    }
    Ok(())
}

/// Restores a backup, a day's backups or chosen images; fails if any image failed.
pub async fn restore(config: &Config, target: RestoreTarget, mode: RestoreMode) -> anyhow::Result<()> {
    let trees = open(config).await?;
    let selection = match target {
        RestoreTarget::Backup(id) => RestoreSelection::BackupId(BackupId(id)),
        RestoreTarget::Date(date) => RestoreSelection::Date(date),
        RestoreTarget::Images(ids) => RestoreSelection::ImageIds(ids.into_iter().map(ImageId).collect()),
    };
    let selected = match &selection {
        RestoreSelection::BackupId(id) => json!({"backup_id": id}),
        RestoreSelection::Date(date) => json!({"date": date}),
        RestoreSelection::ImageIds(ids) => json!({"image_ids": ids.len()}),
    };
    let restorer = Restorer { db: &trees.db, storage: &trees.storage, backups: &trees.backups, quota: &config.quota };
    let bar = bar(0, "restoring");
    let report = restorer
        .restore(&selection, mode, |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .await?;
    bar.finish();
    println!("restored {}, skipped {}, failed {}", report.restored, report.skipped, report.failed);
    let details = json!({"selection": selected, "mode": mode.as_str(), "restored": report.restored,
                         "skipped": report.skipped, "failed": report.failed});
    record_done(&trees.db, "restore", AuditAction::RestoreRequested, Target::Job("restore"), details).await;
    for item in &report.details {
        println!("  {} {}: {}", item.outcome, item.image_id, item.reason);
    }
    if report.failed > 0 {
        bail!("{} image(s) could not be restored", report.failed);
    }
    Ok(())
}

/// Copies every original and thumbnail of the local tree into the bucket of `storage.s3`
/// and prints the summary; fails if any object is not in the bucket afterwards (missing or
/// damaged locally, or refused by the store), so that a script stops before the switch.
pub async fn migrate_storage(config: &Config) -> anyhow::Result<()> {
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} objects, {per_sec}, eta {eta}")
        .expect("a valid template")
        .progress_chars("=> ");
    bar.set_style(style);
    let report = migrate::migrate_to_s3(config, |progress| {
        bar.set_length(progress.objects_total.max(progress.objects_done));
        bar.set_position(progress.objects_done);
        bar.set_message(format!(
            "copying {} of {}",
            HumanBytes(progress.bytes_done),
            HumanBytes(progress.bytes_total.max(progress.bytes_done))
        ));
    })
    .await?;
    bar.finish_and_clear();
    print_migration(config, &report);
    if !report.is_complete() {
        bail!(
            "{} object(s) are not in the bucket ({} missing locally, {} checksum mismatches, {} failed); \
             keep storage.backend: local",
            report.not_copied(),
            report.missing,
            report.mismatched,
            report.failed
        );
    }
    println!(
        "every object is in the bucket. If the API or workers ran during this copy, stop them and run \
         `stayler-worker migrate-storage --to s3` once more; then set storage.backend: s3 and start them."
    );
    Ok(())
}

fn print_migration(config: &Config, report: &MigrationReport) {
    let s3 = &config.storage.s3;
    println!(
        "migrated {} to bucket {} (prefix \"{}\") in {:.1?}:",
        config.storage.base_path.display(),
        s3.bucket,
        s3.prefix,
        report.elapsed
    );
    println!("  copied                {} ({})", report.copied, HumanBytes(report.copied_bytes));
    println!("  already there         {}", report.already_there);
    println!("  missing locally       {}", report.missing);
    println!("  checksum mismatches   {}", report.mismatched);
    println!("  failed                {}", report.failed);
    for problem in &report.problems {
        println!("  {} {} {}: {}", problem.kind, problem.image_id, problem.path, problem.reason);
    }
    let unlisted = report.not_copied() - report.problems.len() as u64;
    if unlisted > 0 {
        println!("  … and {unlisted} more (see the log)");
    }
}

/// Jobs one `redrive` moves unless `--limit` says otherwise.
pub const DEFAULT_REDRIVE_LIMIT: u32 = 100;

/// A job queue by its name without the prefix (`thumbnails`), for the command line.
pub fn job_queue(name: &str) -> Result<JobQueue, String> {
    JobQueue::ALL.iter().copied().find(|queue| queue.name() == name).ok_or_else(|| {
        let names: Vec<&str> = JobQueue::ALL.iter().map(|queue| queue.name()).collect();
        format!("no job queue `{name}`: one of {}", names.join(", "))
    })
}

/// Moves up to `limit` jobs (at most [`shared::redrive::MAX_BATCH`]) of `queue`'s
/// dead-letter queue back to `queue`, each with all its attempts again, and prints what
/// moved and what is left.
pub async fn redrive(config: &Config, queue: JobQueue, limit: u32) -> anyhow::Result<()> {
    let topology = shared::broker::Topology::new(&config.rabbitmq);
    let dead_name = topology.dead_letter_queue(queue);
    let done = shared::redrive::redrive(&config.rabbitmq, queue, limit)
        .await
        .with_context(|| format!("re-driving {dead_name} (rabbitmq.url)"))?;
    println!(
        "moved {} job(s) from {dead_name} back to {}; {} left in {dead_name}",
        done.moved,
        topology.queue(queue),
        done.remaining
    );
    match shared::db::connect(&config.database).await {
        Ok(db) => {
            let details = json!({"moved": done.moved, "remaining": done.remaining, "limit": limit});
            record_done(&db, "redrive", AuditAction::DeadLettersRedriven, Target::Queue(queue.name()), details).await;
        }
        Err(error) => eprintln!("warning: the audit entry of `redrive` was not recorded: {error}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_queue_is_named_on_the_command_line_as_in_the_broker() {
        for &queue in JobQueue::ALL {
            assert_eq!(job_queue(queue.name()), Ok(queue));
        }
        let refused = job_queue("stayler.thumbnails").unwrap_err();
        assert!(refused.contains("thumbnails, checksums"), "{refused}");
    }
}
