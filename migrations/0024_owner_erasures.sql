-- Erasures of an owner (`DELETE /storage/owners/{owner_id}`): every image of the owner is
-- deleted as its owner would delete it (a scrubbed tombstone, its files removed by the
-- deletions worker), the access log rows made by or about the owner are anonymised, and the
-- owner's quota, upload idempotency keys, signed URL records and image keys are removed. A
-- row is the request and, as the job moves on, its progress; at the end, its report. Rows
-- are kept: they are the record that the erasure happened.
CREATE TABLE storage_erasures (
    -- UUIDv7, made by the application.
    id                         uuid        PRIMARY KEY,
    owner_id                   uuid        NOT NULL,
    owner_type                 text        NOT NULL CHECK (owner_type IN ('user', 'vendor')),
    -- The token's `sub` of the caller (an admin or the service).
    requested_by               uuid        NOT NULL,
    -- The request's `X-Request-Id`, to follow the erasure through the logs.
    request_id                 text,
    status                     text        NOT NULL DEFAULT 'pending'
                                           CHECK (status IN ('pending', 'running', 'completed')),
    -- Progress, each moved in the transaction of the batch it counts.
    images_deleted             bigint      NOT NULL DEFAULT 0 CHECK (images_deleted >= 0),
    thumbnails_queued          bigint      NOT NULL DEFAULT 0 CHECK (thumbnails_queued >= 0),
    access_log_rows_anonymised bigint      NOT NULL DEFAULT 0 CHECK (access_log_rows_anonymised >= 0),
    signed_urls_removed        bigint      NOT NULL DEFAULT 0 CHECK (signed_urls_removed >= 0),
    idempotency_keys_removed   bigint      NOT NULL DEFAULT 0 CHECK (idempotency_keys_removed >= 0),
    image_keys_destroyed       bigint      NOT NULL DEFAULT 0 CHECK (image_keys_destroyed >= 0),
    -- Written when the erasure completes (see `shared::erasure::ErasureReport`).
    report                     jsonb,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    started_at                 timestamptz,
    finished_at                timestamptz
);

-- One unfinished erasure per owner: a second request while one is pending or running finds
-- it (INSERT … ON CONFLICT DO NOTHING waits for a concurrent insert and then does nothing),
-- so two requests at once make one erasure.
CREATE UNIQUE INDEX storage_erasures_active_idx ON storage_erasures (owner_id, owner_type)
    WHERE status IN ('pending', 'running');
CREATE INDEX storage_erasures_owner_idx ON storage_erasures (owner_id, created_at DESC);

-- Every image of an owner, tombstones included: the erasure finds the images the owner
-- deleted earlier (their access log rows, signed URLs and idempotency keys are erased too)
-- without reading the whole table. The other owner indexes cover live images only.
CREATE INDEX storage_files_owner_all_idx ON storage_files (owner_id, owner_type);

-- The audit action of the request.
ALTER TABLE storage_audit_log DROP CONSTRAINT storage_audit_log_action_check;
ALTER TABLE storage_audit_log ADD CONSTRAINT storage_audit_log_action_check CHECK (action IN (
    'quota_set', 'image_reprocessed', 'maintenance_run', 'backup_requested',
    'backup_verify_requested', 'backups_cleanup', 'restore_requested',
    'urls_revoked', 'dead_letters_redriven', 'owner_erased'));
