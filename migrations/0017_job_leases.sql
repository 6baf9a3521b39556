-- Long jobs hold a lease in the database while they run. A restore or a backup check can
-- outlive RabbitMQ's consumer timeout, which delivers its message again while the first run
-- goes on; the second delivery finds the lease live and leaves the job to its holder. The
-- holder renews the lease as it works; a holder that died stops renewing, and the sweeper
-- publishes a restore whose lease ran out again (at most once per backupStallSecs, the
-- same for a pending restore whose job was lost).
ALTER TABLE storage_restores
    ADD COLUMN lease_holder     uuid,
    ADD COLUMN lease_until      timestamptz,
    ADD COLUMN last_requeued_at timestamptz;

CREATE INDEX storage_restores_unfinished_idx ON storage_restores (created_at)
    WHERE status IN ('pending', 'running');

ALTER TABLE storage_backups
    ADD COLUMN verify_lease_holder uuid,
    ADD COLUMN verify_lease_until  timestamptz;
