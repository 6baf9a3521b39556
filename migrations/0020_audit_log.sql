-- The audit trail of administrative actions: who did what to which resource, when, and
-- under which request id (the `X-Request-Id` that also follows the action's events through
-- the logs). A row is written in the same transaction as the action it records, so a
-- rolled-back action leaves none. Rows are kept: nothing purges this table.
CREATE TABLE storage_audit_log (
    -- UUIDv7, made by the application: in time order, and a unique tie-breaker for pages.
    id          uuid        PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    -- The token's `sub`, or `operator:<command>` for a command run on a server.
    actor       text        NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
    actor_role  text        NOT NULL CHECK (actor_role IN ('user', 'vendor', 'service', 'admin', 'operator')),
    -- `shared::audit::AuditAction`; a new action extends this list in its own migration.
    action      text        NOT NULL CONSTRAINT storage_audit_log_action_check CHECK (action IN (
                    'quota_set', 'image_reprocessed', 'maintenance_run', 'backup_requested',
                    'backup_verify_requested', 'backups_cleanup', 'restore_requested',
                    'urls_revoked', 'dead_letters_redriven')),
    -- What was acted on: `owner`, `image`, `backup`, `restore`, `job` or `queue`, and its id.
    target_type text        NOT NULL,
    target_id   text        NOT NULL,
    request_id  text,
    -- A few figures of the action (new quota values, counts, the queued event's id).
    details     jsonb       NOT NULL DEFAULT '{}'
);
-- The listing: newest first, in pages keyed by (at, id), whole or filtered by one of these.
CREATE INDEX storage_audit_log_at_idx ON storage_audit_log (at DESC, id DESC);
CREATE INDEX storage_audit_log_action_idx ON storage_audit_log (action, at DESC, id DESC);
CREATE INDEX storage_audit_log_actor_idx ON storage_audit_log (actor, at DESC, id DESC);
CREATE INDEX storage_audit_log_target_idx ON storage_audit_log (target_type, target_id, at DESC, id DESC);
