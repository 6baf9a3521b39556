//! The `serving:` section: the in-process caches of signed and public file serving, and the
//! cache lifetime of public images.

use serde::Deserialize;

/// The `serving:` section: the in-process caches of signed and public file serving.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServingConfig {
    /// Images whose serving facts (path, type, size, checksum, thumbnails) are kept in memory.
    pub cache_entries: u64,
    /// Seconds an entry lives at most. Changes reach every replica at once through
    /// PostgreSQL notifications; this bounds staleness only if those are lost.
    pub cache_ttl_secs: u64,
    /// Files up to this many bytes are kept in memory once read (thumbnails); 0 turns the
    /// file cache off.
    pub small_file_max_bytes: u64,
    /// Total bytes of the small-file cache.
    pub small_file_cache_bytes: u64,
    /// `Cache-Control: public, max-age` of images served under `server.publicPath`, in seconds.
    pub public_max_age_secs: u64,
}

impl Default for ServingConfig {
    fn default() -> Self {
        Self {
            cache_entries: 100_000,
            cache_ttl_secs: 60,
            small_file_max_bytes: 64 * 1024,
            small_file_cache_bytes: 64 * 1024 * 1024,
            public_max_age_secs: 3600,
        }
    }
}
