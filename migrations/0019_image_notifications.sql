-- What the main app was last told about an image's processing (`image.processed` or
-- `image.failed` on the notifications exchange), so that each outcome is published once
-- however many times its job is delivered or whichever of two concurrent steps ends last.
ALTER TABLE storage_files
    ADD COLUMN notified_status text CHECK (notified_status IN ('processed', 'failed'));

-- Notifications delivered to each webhook endpoint (webhooks.endpoints), so that a job
-- retried because one endpoint failed does not post again to those that took it.
CREATE TABLE webhook_deliveries (
    event_id     uuid        NOT NULL,
    endpoint     text        NOT NULL,
    delivered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, endpoint)
);
CREATE INDEX webhook_deliveries_delivered_at ON webhook_deliveries (delivered_at);
