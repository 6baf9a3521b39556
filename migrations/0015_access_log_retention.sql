-- Access log rows are purged after accessLog.retentionDays. The log is append-only, so rows
-- lie on disk in created_at order and a BRIN index finds the old ones at a fraction of a
-- B-tree's size and insert cost (the log is written on the hottest path).
CREATE INDEX storage_access_logs_created_at_idx ON storage_access_logs USING brin (created_at);
