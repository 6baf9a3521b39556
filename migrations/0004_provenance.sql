-- Provenance of AI results: which images (the user's photo, the clothing) a `result` image
-- was made from. Rows stay when a source is deleted (the image row is a tombstone then), so
-- a vendor's try-on counts do not shrink when a user deletes a result's inputs.
CREATE TABLE storage_image_sources (
    result_id  uuid NOT NULL REFERENCES storage_files (id) ON DELETE CASCADE,
    source_id  uuid NOT NULL REFERENCES storage_files (id) ON DELETE CASCADE,
    PRIMARY KEY (result_id, source_id),
    CHECK (result_id <> source_id)
);
-- "Results made from this image" and a vendor's try-on counts per clothing image.
CREATE INDEX storage_image_sources_source_idx ON storage_image_sources (source_id, result_id);
