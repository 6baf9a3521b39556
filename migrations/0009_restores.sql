-- Restores requested through the API (the operator command reports on its terminal instead).
CREATE TABLE storage_restores (
    id            uuid PRIMARY KEY,
    -- What to restore: {"backup_id": …} | {"date": "YYYY-MM-DD"} | {"image_ids": […]}.
    selection     jsonb       NOT NULL,
    mode          text        NOT NULL CHECK (mode IN ('missing_only', 'overwrite')),
    status        text        NOT NULL DEFAULT 'pending'
                              CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    requested_by  uuid,
    restored      bigint      NOT NULL DEFAULT 0,
    skipped       bigint      NOT NULL DEFAULT 0,
    failed        bigint      NOT NULL DEFAULT 0,
    -- The images not restored and why (the first few hundred): [{"image_id", "outcome", "reason"}].
    details       jsonb       NOT NULL DEFAULT '[]',
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    completed_at  timestamptz
);
CREATE INDEX storage_restores_created_idx ON storage_restores (created_at DESC);
