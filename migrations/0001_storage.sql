-- The seven tables of the storage service, plus the outbox and idempotency records.
-- Owner ids (users, vendors) belong to the main application: no foreign keys to them.

CREATE TABLE storage_files (
    id               uuid PRIMARY KEY,
    owner_id         uuid        NOT NULL,
    owner_type       text        NOT NULL CHECK (owner_type IN ('user', 'vendor')),
    image_type       text        NOT NULL CHECK (image_type IN ('user', 'cloth', 'result')),
    -- The client's file name, sanitised; never used to build a path.
    original_name    text        NOT NULL,
    -- Relative to storage.basePath, derived from the ids and the sniffed format.
    file_path        text        NOT NULL UNIQUE,
    file_size        bigint      NOT NULL CHECK (file_size > 0),
    mime_type        text        NOT NULL,
    format           text        NOT NULL CHECK (format IN ('jpeg', 'png', 'gif', 'webp')),
    width            integer     NOT NULL CHECK (width > 0),
    height           integer     NOT NULL CHECK (height > 0),
    -- Lower-case hex SHA-256 of the stored bytes, computed while streaming the upload.
    checksum         text        NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    checksum_status  text        NOT NULL DEFAULT 'pending'
                                 CHECK (checksum_status IN ('pending', 'verified', 'corrupt')),
    verified_at      timestamptz,
    thumbnail_status text        NOT NULL DEFAULT 'pending'
                                 CHECK (thumbnail_status IN ('pending', 'ready', 'failed')),
    -- Why processing failed (undecodable image, checksum mismatch); shown in metadata.
    processing_error text,
    is_public        boolean     NOT NULL DEFAULT false,
    tags             text[]      NOT NULL DEFAULT '{}',
    metadata         jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    is_backed_up     boolean     NOT NULL DEFAULT false,
    backup_path      text,
    access_count     bigint      NOT NULL DEFAULT 0,
    last_accessed    timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz
);

CREATE INDEX storage_files_owner_created_idx ON storage_files (owner_id, created_at DESC)
    WHERE deleted_at IS NULL;
CREATE INDEX storage_files_tags_idx ON storage_files USING gin (tags);
-- The sweeper looks for images still waiting for work.
CREATE INDEX storage_files_pending_idx ON storage_files (created_at)
    WHERE deleted_at IS NULL AND (thumbnail_status = 'pending' OR checksum_status = 'pending');

CREATE TABLE storage_thumbnails (
    image_id   uuid        NOT NULL REFERENCES storage_files (id) ON DELETE CASCADE,
    size_name  text        NOT NULL CHECK (size_name IN ('small', 'medium', 'large')),
    file_path  text        NOT NULL UNIQUE,
    file_size  bigint      NOT NULL CHECK (file_size > 0),
    mime_type  text        NOT NULL,
    width      integer     NOT NULL CHECK (width > 0),
    height     integer     NOT NULL CHECK (height > 0),
    checksum   text        NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (image_id, size_name)
);

CREATE TABLE storage_access_logs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    image_id    uuid,
    actor_id    uuid,
    action      text        NOT NULL,
    ip_address  inet,
    user_agent  text,
    status      smallint    NOT NULL,
    bytes_sent  bigint      NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX storage_access_logs_image_idx ON storage_access_logs (image_id, created_at DESC);

CREATE TABLE storage_quotas (
    owner_id    uuid PRIMARY KEY,
    owner_type  text        NOT NULL CHECK (owner_type IN ('user', 'vendor')),
    max_files   bigint      NOT NULL CHECK (max_files >= 0),
    max_bytes   bigint      NOT NULL CHECK (max_bytes >= 0),
    used_files  bigint      NOT NULL DEFAULT 0 CHECK (used_files >= 0),
    used_bytes  bigint      NOT NULL DEFAULT 0 CHECK (used_bytes >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE storage_backups (
    id               uuid PRIMARY KEY,
    backup_date      date        NOT NULL,
    backup_path      text        NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
                                 CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    file_count       bigint      NOT NULL DEFAULT 0,
    total_bytes      bigint      NOT NULL DEFAULT 0,
    compressed_bytes bigint      NOT NULL DEFAULT 0,
    error            text,
    started_at       timestamptz,
    completed_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX storage_backups_date_idx ON storage_backups (backup_date DESC);

CREATE TABLE storage_signed_urls (
    id           uuid PRIMARY KEY,
    image_id     uuid        NOT NULL REFERENCES storage_files (id) ON DELETE CASCADE,
    variant      text        NOT NULL,
    access_type  text        NOT NULL CHECK (access_type IN ('view', 'download')),
    key_id       text        NOT NULL,
    expires_at   timestamptz NOT NULL,
    requested_by uuid        NOT NULL,
    use_count    bigint      NOT NULL DEFAULT 0,
    last_used    timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX storage_signed_urls_expires_idx ON storage_signed_urls (expires_at);

CREATE TABLE storage_health_checks (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    check_type text        NOT NULL,
    status     text        NOT NULL CHECK (status IN ('ok', 'degraded', 'down')),
    details    jsonb       NOT NULL DEFAULT '{}',
    checked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX storage_health_checks_checked_idx ON storage_health_checks (checked_at DESC);

CREATE TABLE storage_metrics (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    metric_name  text             NOT NULL,
    metric_value double precision NOT NULL,
    labels       jsonb            NOT NULL DEFAULT '{}',
    period_start timestamptz      NOT NULL,
    period_end   timestamptz      NOT NULL,
    recorded_at  timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX storage_metrics_name_period_idx ON storage_metrics (metric_name, period_start DESC);

-- Transactional outbox: an event commits with the row change that caused it, and the
-- relay publishes it afterwards. RabbitMQ being down delays events, never loses them.
CREATE TABLE outbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     uuid        NOT NULL UNIQUE,
    event_type   text        NOT NULL,
    payload      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text,
    published_at timestamptz
);
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;

-- Wakes the relays as soon as an event commits, so they need not poll tightly.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- A retried upload with the same Idempotency-Key returns the first result.
-- Keyed by the caller (a service uploads for many owners); the checksum tells a true
-- retry from a different upload that reuses a key.
CREATE TABLE upload_idempotency (
    principal_id    uuid        NOT NULL,
    idempotency_key text        NOT NULL,
    image_id        uuid        NOT NULL REFERENCES storage_files (id) ON DELETE CASCADE,
    checksum        text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal_id, idempotency_key)
);
