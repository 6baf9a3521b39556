-- One row per (job, scheduled slot) the scheduler fired. The primary key is what makes a
-- slot fire once however many scheduler replicas run: the row and the job's outbox event
-- commit together, and a second replica's insert of the same slot does nothing.
CREATE TABLE scheduled_runs (
    job      text        NOT NULL,
    slot     timestamptz NOT NULL,
    -- The outbox event (or backup id) the slot produced, for tracing a run to its job.
    event_id uuid        NOT NULL,
    -- Which scheduler replica fired it (host name and process id), for operators.
    fired_by text        NOT NULL,
    fired_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job, slot)
);
