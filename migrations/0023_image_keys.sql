-- Per-image data keys (envelope encryption): each image's 32-byte data key, encrypted
-- ("wrapped") by the master key `key_id` names, with the image id as associated data.
-- Deleting a row destroys the only copy of that data key (crypto-shredding): whatever was
-- encrypted with it, in the live store or in any backup archive, can no longer be read.
CREATE TABLE storage_image_keys (
    image_id    uuid PRIMARY KEY REFERENCES storage_files (id) ON DELETE CASCADE,
    key_id      text NOT NULL,
    wrapped_key bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Rotation (`stayler-worker rotate-keys`) looks for the rows not wrapped by the active key.
CREATE INDEX storage_image_keys_key_id_idx ON storage_image_keys (key_id);
