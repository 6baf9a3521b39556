-- Usage of signed URLs: the access log writer adds each batch's serves to `use_count` and
-- `last_used`, remembers the distinct client addresses of each URL (up to one past the
-- flagging threshold: enough to decide, bounded for URLs shared widely), and flags a URL
-- used too often or from too many addresses as possible abuse.
ALTER TABLE storage_signed_urls
    ADD COLUMN distinct_ips integer     NOT NULL DEFAULT 0,
    ADD COLUMN flagged_at   timestamptz,
    ADD COLUMN flag_reason  text;

CREATE TABLE storage_signed_url_ips (
    url_id     uuid        NOT NULL REFERENCES storage_signed_urls (id) ON DELETE CASCADE,
    ip_address inet        NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (url_id, ip_address)
);

CREATE INDEX storage_signed_urls_flagged_idx ON storage_signed_urls (flagged_at DESC)
    WHERE flagged_at IS NOT NULL;
