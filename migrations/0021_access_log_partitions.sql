-- The access log is partitioned by month of created_at (UTC), so that retention drops whole
-- months (DROP TABLE: no dead rows, no vacuum, no index bloat) instead of deleting rows one
-- by one from an ever-growing table. Column names, types and order stay as they were: the
-- writer and the readers see the same table.
--
-- Partitions are named storage_access_logs_yYYYYmMM and cover [first of the month, first
-- of the next month) in UTC. This migration makes one for every month that has rows, plus
-- the current and the next month; the purge job (shared::maintenance::partitions) then
-- keeps accessLog.partitionsAhead months ready and drops months wholly past
-- accessLog.retentionDays.
--
-- A DEFAULT partition catches a row whose month has no partition, so an insert never fails
-- (the log is written on the hottest path). It stays empty while the job runs: before a
-- month's partition is made, rows of that month in the default partition are moved into it;
-- the job warns while any row is left there and deletes its rows past the retention.
--
-- No key: migration 0012 dropped the primary key of this append-only table for its insert
-- cost, and nothing looks a row up by id. A key on a partitioned table would have to
-- include created_at, e.g. (id, created_at).

ALTER TABLE storage_access_logs RENAME TO storage_access_logs_unpartitioned;
ALTER INDEX storage_access_logs_image_idx RENAME TO storage_access_logs_unpartitioned_image_idx;
ALTER INDEX storage_access_logs_created_at_idx RENAME TO storage_access_logs_unpartitioned_created_at_idx;
ALTER SEQUENCE storage_access_logs_id_seq RENAME TO storage_access_logs_unpartitioned_id_seq;

CREATE TABLE storage_access_logs (
    id            bigint GENERATED ALWAYS AS IDENTITY,
    image_id      uuid,
    actor_id      uuid,
    action        text        NOT NULL,
    ip_address    inet,
    user_agent    text,
    status        smallint    NOT NULL,
    bytes_sent    bigint      NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    request_count integer     NOT NULL DEFAULT 1
        CONSTRAINT storage_access_logs_request_count_check CHECK (request_count > 0)
) PARTITION BY RANGE (created_at);

CREATE TABLE storage_access_logs_default PARTITION OF storage_access_logs DEFAULT;

DO $$
DECLARE
    month timestamp;
BEGIN
    FOR month IN
        SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC') FROM storage_access_logs_unpartitioned
        UNION
        SELECT date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => ahead)
        FROM generate_series(0, 1) AS ahead
    LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF storage_access_logs FOR VALUES FROM (%L) TO (%L)',
            'storage_access_logs_' || to_char(month, '"y"YYYY"m"MM'),
            to_char(month, 'YYYY-MM-DD') || ' 00:00:00+00',
            to_char(month + interval '1 month', 'YYYY-MM-DD') || ' 00:00:00+00'
        );
    END LOOP;
END
$$;

-- Ids are kept, and the new identity continues where the old one stopped.
INSERT INTO storage_access_logs OVERRIDING SYSTEM VALUE SELECT * FROM storage_access_logs_unpartitioned;
SELECT setval(pg_get_serial_sequence('storage_access_logs', 'id'), last_value, is_called)
FROM storage_access_logs_unpartitioned_id_seq;

DROP TABLE storage_access_logs_unpartitioned;

-- The indexes of 0001 and 0015, made on the parent once the rows are in (cheaper than
-- maintaining them row by row); each partition gets its own, and so does every partition
-- attached later.
CREATE INDEX storage_access_logs_image_idx ON storage_access_logs (image_id, created_at DESC);
CREATE INDEX storage_access_logs_created_at_idx ON storage_access_logs USING brin (created_at);

ANALYZE storage_access_logs;
