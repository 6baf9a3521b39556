-- Listing and search of images (GET /storage/images, POST /storage/images/search).
--
-- Every sort has two indexes: one per owner (users, vendors and the service list one owner's
-- images) and one global (admins). The id is the tie-breaker of every sort, so that pages
-- neither repeat nor skip rows, and it ends every index so that the first page is read
-- straight from the index in either direction. All are partial on live rows: every query of
-- live images says `deleted_at IS NULL`, and tombstones stay out of the way.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Superseded by the same columns with the tie-breaker.
DROP INDEX storage_files_owner_created_idx;

CREATE INDEX storage_files_owner_created_idx ON storage_files (owner_id, created_at, id)
    WHERE deleted_at IS NULL;
CREATE INDEX storage_files_owner_size_idx ON storage_files (owner_id, file_size, id)
    WHERE deleted_at IS NULL;
CREATE INDEX storage_files_owner_name_idx ON storage_files (owner_id, lower(original_name), id)
    WHERE deleted_at IS NULL;
CREATE INDEX storage_files_owner_accesses_idx ON storage_files (owner_id, access_count, id)
    WHERE deleted_at IS NULL;

CREATE INDEX storage_files_created_idx ON storage_files (created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX storage_files_size_idx ON storage_files (file_size, id) WHERE deleted_at IS NULL;
CREATE INDEX storage_files_name_idx ON storage_files (lower(original_name), id) WHERE deleted_at IS NULL;
CREATE INDEX storage_files_accesses_idx ON storage_files (access_count, id) WHERE deleted_at IS NULL;
-- The admin's type and visibility filters: their pages come from the sort indexes above
-- (matches are dense), their totals from this one without touching the table.
CREATE INDEX storage_files_type_public_idx ON storage_files (image_type, is_public) WHERE deleted_at IS NULL;

-- What a text `query` is matched against: the file name, the tags and the scalar values of
-- the metadata (not its keys or punctuation), lower-cased. Declared IMMUTABLE so that it can
-- make a generated column; it only reads its arguments (array_to_string is merely STABLE
-- because element output functions may depend on settings, which those of text do not).
CREATE FUNCTION storage_files_search_text(name text, tags text[], metadata jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT lower(concat_ws(' ', name, array_to_string(tags, ' '), (
        SELECT string_agg(value #>> '{}', ' ')
        FROM jsonb_path_query(metadata, 'strict $.** ? (@.type() == "string" || @.type() == "number")') AS value
    )))
$$;

-- Stored rather than an index expression: the function costs ~20 µs a call, which a filter
-- over an owner's rows (or an index recheck) would pay per row on every search. Kept in step
-- by PostgreSQL on every insert and update.
ALTER TABLE storage_files
    ADD COLUMN search_text text GENERATED ALWAYS AS (storage_files_search_text(original_name, tags, metadata)) STORED;

-- Trigrams make `search_text LIKE '%words%'` an index search instead of a scan of every row.
CREATE INDEX storage_files_search_text_idx ON storage_files USING gin (search_text gin_trgm_ops)
    WHERE deleted_at IS NULL;
