-- Sealed fields stay out of text search. With encryption enabled, the file name and the
-- values of sensitive metadata keys are stored sealed (`enc:v1:` + base64url); their
-- ciphertext is noise to a text query and would bloat the trigram index, so the search text
-- skips every name and every metadata string value that starts with the sealed prefix.
-- Tags and the other metadata values are matched as before.
--
-- PostgreSQL never recomputes a stored generated column when the function behind it
-- changes, so the column (and with it its trigram index) is dropped and added again, which
-- recomputes it for every row (a rewrite of `storage_files`); the index is recreated as it
-- was in 0002.

ALTER TABLE storage_files DROP COLUMN search_text;

-- Same as 0002 (IMMUTABLE, reads only its arguments), less the sealed values.
CREATE OR REPLACE FUNCTION storage_files_search_text(name text, tags text[], metadata jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT lower(concat_ws(' ', CASE WHEN starts_with(name, 'enc:v1:') THEN NULL ELSE name END,
                           array_to_string(tags, ' '), (
        SELECT string_agg(value #>> '{}', ' ')
        FROM jsonb_path_query(
            metadata,
            'strict $.** ? (@.type() == "number" || (@.type() == "string" && !(@ starts with "enc:v1:")))'
        ) AS value
    )))
$$;

ALTER TABLE storage_files
    ADD COLUMN search_text text GENERATED ALWAYS AS (storage_files_search_text(original_name, tags, metadata)) STORED;

CREATE INDEX storage_files_search_text_idx ON storage_files USING gin (search_text gin_trgm_ops)
    WHERE deleted_at IS NULL;
