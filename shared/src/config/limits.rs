//! The `limits:` section: every bound on what one client may send or hold open, applied
//! before the bytes are read, so that no request can grow the API's memory or keep its
//! connections for ever.

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest JSON request body, in bytes (413 `body_too_large` above). Large enough for
    /// the 16 KiB of metadata an image may carry, JSON-escaped.
    pub json_body_bytes: u64,
    /// What an upload body may hold beyond `storage.maxFileSize`: the form's text fields,
    /// part headers and boundaries, in bytes.
    pub upload_form_bytes: u64,
    /// Largest multipart preamble or set of part headers, in bytes: a body whose boundary
    /// or header end never comes is refused after this much.
    pub multipart_header_bytes: u64,
    /// Parts an upload form may have.
    pub multipart_parts: u32,
    /// A connection must send a request's headers within this many seconds.
    pub header_read_timeout_secs: u64,
    /// A connection that sends or receives nothing for this long is closed: an idle
    /// keep-alive connection, an upload that stopped sending, a client that stopped reading.
    pub idle_timeout_secs: u64,
    /// Connections the API holds open at once; further ones wait in the listen backlog.
    pub max_connections: u32,
    /// Image ids one bulk request (`POST /storage/images/bulk`, `POST
    /// /storage/images/signed-urls`) may name: each id costs the API work and, for bulk
    /// changes, a transaction, so one request cannot hold the API for long.
    pub bulk_max_ids: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            json_body_bytes: 64 * 1024,
            upload_form_bytes: 1024 * 1024,
            multipart_header_bytes: 16 * 1024,
            multipart_parts: 16,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 10_000,
            bulk_max_ids: 500,
        }
    }
}

impl LimitsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| Err(ConfigError::BadValue { key, reason: reason.to_owned() });
        if self.json_body_bytes < 1024 {
            return bad("limits.jsonBodyBytes", "must be at least 1024");
        }
        if self.upload_form_bytes < 64 * 1024 {
            return bad("limits.uploadFormBytes", "must be at least 65536 (the largest text field)");
        }
        if self.multipart_header_bytes < 1024 {
            return bad("limits.multipartHeaderBytes", "must be at least 1024");
        }
        if self.multipart_parts < 2 {
            return bad("limits.multipartParts", "must be at least 2 (the file and its image_type)");
        }
        if self.header_read_timeout_secs == 0 {
            return bad("limits.headerReadTimeoutSecs", "must be positive");
        }
        if self.idle_timeout_secs == 0 {
            return bad("limits.idleTimeoutSecs", "must be positive");
        }
        if self.max_connections == 0 {
            return bad("limits.maxConnections", "must be positive");
        }
        if self.bulk_max_ids == 0 {
            return bad("limits.bulkMaxIds", "must be positive");
        }
        Ok(())
    }
}
