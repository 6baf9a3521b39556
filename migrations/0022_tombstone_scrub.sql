-- A deleted image's row keeps only what backups, provenance and the deletion worker need:
-- from now on the deletion itself clears the file name, tags and metadata its owner wrote
-- (`storage_files::mark_deleted`); this clears them on the tombstones made before.
UPDATE storage_files
SET original_name = '', tags = '{}', metadata = '{}'
WHERE deleted_at IS NOT NULL
  AND (original_name <> '' OR tags <> '{}' OR metadata <> '{}');
