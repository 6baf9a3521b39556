-- Event types and job names follow one rule since this release: events are named
-- `{subject}.{past participle}` and each periodic job has one name, from its configuration
-- key to its queue. Rows written before keep working: unpublished outbox rows are renamed
-- here (their routing key is the new name), and the scheduler's record of the backup
-- retention job, formerly `maintenance`, keeps its slots so that no slot fires twice.
-- Messages already in RabbitMQ carry the old names; the workers read those as the new ones.
UPDATE outbox
SET event_type = renamed.new_type,
    payload = jsonb_set(payload, '{type}', to_jsonb(renamed.new_type))
FROM (VALUES
    ('backup.batch', 'backup_batch.requested'),
    ('backup.verify_requested', 'backup_check.requested'),
    ('backup.verify_due', 'backup_verify.requested'),
    ('maintenance.backup_retention', 'backup_retention.requested'),
    ('health.check', 'health_check.requested'),
    ('metrics.rollup', 'metrics_rollup.requested'),
    ('maintenance.sweep', 'sweep.requested'),
    ('maintenance.purge', 'purge.requested'),
    ('maintenance.file_audit', 'file_audit.requested')
) AS renamed (old_type, new_type)
WHERE outbox.event_type = renamed.old_type AND outbox.published_at IS NULL;

UPDATE scheduled_runs SET job = 'backup_retention' WHERE job = 'maintenance';
