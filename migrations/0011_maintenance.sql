-- Maintenance jobs: the sweeper's per-image back-off, stalled-backup re-queues, and the
-- index the purge of published outbox rows pages through.

-- The sweeper re-queues an image still waiting for thumbnails or verification, each time
-- waiting twice as long as the time before; after `maintenance.maxRequeues` it gives up,
-- records why in `processing_error` and stops looking at the image.
ALTER TABLE storage_files
    ADD COLUMN requeue_count    integer     NOT NULL DEFAULT 0,
    ADD COLUMN last_requeued_at timestamptz,
    ADD COLUMN sweep_gave_up_at timestamptz;

-- A running backup whose batches stopped progressing gets its unfinished batches published
-- again, at most once per `maintenance.backupStallSecs`.
ALTER TABLE storage_backups
    ADD COLUMN last_requeued_at timestamptz;

-- Published outbox rows are purged after `maintenance.outboxRetentionDays`.
CREATE INDEX outbox_published_idx ON outbox (published_at) WHERE published_at IS NOT NULL;
