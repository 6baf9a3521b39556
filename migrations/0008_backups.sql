-- Backups: one storage_backups row per run, one storage_backup_entries row per image in it.
-- The entries are the backup's plan (which batch takes which image), its progress, and the
-- database copy of its manifest.

ALTER TABLE storage_backups
    -- 'scheduled' (the daily job), 'manual' (POST /storage/backup or the operator command),
    -- 'retention' (images carried forward before an expiring backup is removed).
    ADD COLUMN trigger          text     NOT NULL DEFAULT 'manual'
                                         CHECK (trigger IN ('scheduled', 'manual', 'retention')),
    ADD COLUMN requested_by     uuid,
    ADD COLUMN compression_level integer NOT NULL DEFAULT 3,
    -- Batches planned (0 until the plan is made) and finished.
    ADD COLUMN batch_count      integer  NOT NULL DEFAULT 0,
    ADD COLUMN batches_done     integer  NOT NULL DEFAULT 0,
    ADD COLUMN failed_count     bigint   NOT NULL DEFAULT 0,
    -- Files whose bytes did not compress and were stored in raw zstd blocks instead.
    ADD COLUMN stored_raw_count bigint   NOT NULL DEFAULT 0,
    -- Time spent compressing and writing, summed over the batches (CPU of the backup).
    ADD COLUMN work_ms          bigint   NOT NULL DEFAULT 0,
    -- Relative to storage.backupPath: the folder of this backup and its manifest.
    ADD COLUMN manifest_path    text,
    -- Last integrity check of the archives against the manifest.
    ADD COLUMN verified_at      timestamptz,
    ADD COLUMN verify_status    text     CHECK (verify_status IN ('ok', 'corrupt')),
    ADD COLUMN verify_report    jsonb,
    -- Set when retention removed the backup's folder; the row stays as history.
    ADD COLUMN removed_at       timestamptz;

CREATE TABLE storage_backup_entries (
    backup_id       uuid        NOT NULL REFERENCES storage_backups (id) ON DELETE CASCADE,
    -- No foreign key: an entry outlives its image row (a restore rebuilds the row from it).
    image_id        uuid        NOT NULL,
    batch           integer     NOT NULL CHECK (batch >= 0),
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    -- Relative to storage.backupPath: {date}/{backup_id}/images/…/{id}.{ext}.zst
    archive_path    text,
    file_size       bigint,
    compressed_size bigint,
    -- 'zstd' (compressed at the backup's level) or 'raw' (zstd frame of raw blocks).
    method          text        CHECK (method IN ('zstd', 'raw')),
    error           text,
    done_at         timestamptz,
    PRIMARY KEY (backup_id, image_id)
);
CREATE INDEX storage_backup_entries_batch_idx ON storage_backup_entries (backup_id, batch, status);
-- Retention asks, per image, which other backups hold a copy.
CREATE INDEX storage_backup_entries_image_idx ON storage_backup_entries (image_id) WHERE status = 'done';
-- A backup takes the live originals not yet backed up.
CREATE INDEX storage_files_not_backed_up_idx ON storage_files (created_at)
    WHERE deleted_at IS NULL AND NOT is_backed_up;
