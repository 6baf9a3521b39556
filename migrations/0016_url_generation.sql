-- Revocable signed URLs. Each image has a URL generation that every URL signed for it
-- carries (under its signature); making a public image private, or an owner or admin
-- revoking its URLs, advances it, and serving refuses URLs of an earlier generation.
-- Existing URLs are generation 0, which the URL format leaves out, so they keep working.
ALTER TABLE storage_files
    ADD COLUMN url_generation integer NOT NULL DEFAULT 0 CHECK (url_generation >= 0);

-- A URL's row is found by its grant, which now includes the generation; `revoked_at` tells
-- operators which issued URLs a revocation ended before their expiry.
ALTER TABLE storage_signed_urls
    ADD COLUMN url_generation integer NOT NULL DEFAULT 0,
    ADD COLUMN revoked_at     timestamptz;
DROP INDEX storage_signed_urls_grant_idx;
CREATE UNIQUE INDEX storage_signed_urls_grant_idx
    ON storage_signed_urls (image_id, variant, access_type, expires_at, key_id, url_generation);

-- Replicas keep the generation in their serving cache, so a change must reach them at once
-- (see 0005). An update that also fires storage_files_changed_update sends one
-- notification: PostgreSQL folds identical notifications of a transaction.
CREATE TRIGGER storage_files_url_generation_changed
    AFTER UPDATE OF url_generation ON storage_files
    FOR EACH ROW
    WHEN (OLD.url_generation IS DISTINCT FROM NEW.url_generation)
    EXECUTE FUNCTION storage_files_changed_notify();
