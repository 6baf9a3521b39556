-- Every sweep counts the live images it gave up on that are still unfinished, so that
-- health stays degraded until they are dealt with (see README, Maintenance). They are few;
-- this small partial index keeps that count from reading the whole table every run.
CREATE INDEX storage_files_given_up_idx ON storage_files (created_at, id)
    WHERE sweep_gave_up_at IS NOT NULL AND deleted_at IS NULL;
