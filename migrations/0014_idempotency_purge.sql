-- Idempotency keys are purged after maintenance.idempotencyRetentionDays: clients retry
-- within minutes, and at full ingestion the table would otherwise grow by a row per upload
-- for ever. The purge deletes by age in batches, which needs this index.
CREATE INDEX upload_idempotency_created_at_idx ON upload_idempotency (created_at);
