-- Health checks, metrics roll-ups and job failures.

-- The health endpoint reads the latest row of every check type.
CREATE INDEX storage_health_checks_type_idx ON storage_health_checks (check_type, checked_at DESC);

-- A roll-up recomputes recent periods; one point per (metric, period, labels) makes that an
-- upsert instead of a duplicate.
CREATE UNIQUE INDEX storage_metrics_point_idx ON storage_metrics (metric_name, period_start, labels);

-- The rolling integrity sample re-hashes the originals verified longest ago first.
CREATE INDEX storage_files_verified_idx ON storage_files (verified_at NULLS FIRST)
    WHERE deleted_at IS NULL AND checksum_status = 'verified';

-- Every failed job attempt, whether retried or given up (`final`): job failures per queue
-- are rolled up from here, and an operator can read why without opening the broker.
CREATE TABLE job_failures (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue      text        NOT NULL,
    event_type text        NOT NULL,
    message_id text,
    attempt    integer     NOT NULL,
    final      boolean     NOT NULL,
    error      text        NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_failures_failed_at_idx ON job_failures (failed_at);
