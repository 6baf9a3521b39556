-- Signed and public file serving.
--
-- Every API replica keeps what serving an image needs (path, type, size, checksum, file
-- name, visibility, thumbnails, and whether it exists at all) in memory, so that serving
-- needs no database round trip. These triggers tell every replica at once, with
-- NOTIFY storage_files_changed carrying the image id, when any of that changes; the
-- notification is delivered when the transaction commits.

CREATE FUNCTION storage_files_changed_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('storage_files_changed', (CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END)::text);
    RETURN NULL;
END $$;

CREATE FUNCTION storage_thumbnails_changed_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('storage_files_changed',
                      (CASE WHEN TG_OP = 'DELETE' THEN OLD.image_id ELSE NEW.image_id END)::text);
    RETURN NULL;
END $$;

-- Inserts too: a replica may remember that an id does not exist.
CREATE TRIGGER storage_files_changed_insert AFTER INSERT ON storage_files
    FOR EACH ROW EXECUTE FUNCTION storage_files_changed_notify();

CREATE TRIGGER storage_files_changed_update
    AFTER UPDATE OF deleted_at, is_public, original_name, file_path, file_size, mime_type, format, checksum,
                    owner_id, owner_type, image_type
    ON storage_files
    FOR EACH ROW
    WHEN (OLD.deleted_at IS DISTINCT FROM NEW.deleted_at
          OR OLD.is_public IS DISTINCT FROM NEW.is_public
          OR OLD.original_name IS DISTINCT FROM NEW.original_name
          OR OLD.file_path IS DISTINCT FROM NEW.file_path
          OR OLD.file_size IS DISTINCT FROM NEW.file_size
          OR OLD.mime_type IS DISTINCT FROM NEW.mime_type
          OR OLD.format IS DISTINCT FROM NEW.format
          OR OLD.checksum IS DISTINCT FROM NEW.checksum
          OR OLD.owner_id IS DISTINCT FROM NEW.owner_id
          OR OLD.owner_type IS DISTINCT FROM NEW.owner_type
          OR OLD.image_type IS DISTINCT FROM NEW.image_type)
    EXECUTE FUNCTION storage_files_changed_notify();

CREATE TRIGGER storage_files_changed_delete AFTER DELETE ON storage_files
    FOR EACH ROW EXECUTE FUNCTION storage_files_changed_notify();

CREATE TRIGGER storage_thumbnails_changed AFTER INSERT OR UPDATE OR DELETE ON storage_thumbnails
    FOR EACH ROW EXECUTE FUNCTION storage_thumbnails_changed_notify();

-- Expiries are rounded to a window, so repeated requests for the same image get the same
-- URL: it is recorded once (by its first requester), and usage counting finds a served
-- URL's row from the fields of its signed path.
CREATE UNIQUE INDEX storage_signed_urls_grant_idx
    ON storage_signed_urls (image_id, variant, access_type, expires_at, key_id);
