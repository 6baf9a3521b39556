//! The `signedUrls:` section: the ids, retired keys and lifetimes of signed URLs, and the
//! thresholds that flag one as possible abuse. Its checks, which also concern `server:` and
//! `serving:`, are made with the whole configuration.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Deserialize;

/// The `signedUrls:` section: the keys and lifetimes of signed URLs. The active key's
/// secret is `storage.signedURLKey`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SignedUrlsConfig {
    /// Id of the active key (`storage.signedURLKey`), written into every URL it signs. To
    /// rotate: move the current id and secret to `previousKeys`, then set a new id and key.
    pub key_id: String,
    /// Retired keys by id: they no longer sign, but URLs they signed stay valid until they
    /// expire. Drop one once `maxTtlSecs + expiryWindowSecs` have passed since its retirement.
    pub previous_keys: BTreeMap<String, SecretString>,
    /// Lifetime of a URL when the request gives no `ttl`, in seconds.
    pub default_ttl_secs: u64,
    /// Longest lifetime a request may ask for, in seconds; more is refused (400), not clamped.
    pub max_ttl_secs: u64,
    /// Expiries are rounded up to a multiple of this many seconds, so that repeated requests
    /// get the same URL and caches keep working; 1 turns rounding off.
    pub expiry_window_secs: u64,
    /// A URL served more often than this is flagged as possible abuse (in stats).
    pub abuse_max_uses: i64,
    /// A URL served to more distinct client addresses than this is flagged as well.
    pub abuse_max_addresses: i32,
}

impl Default for SignedUrlsConfig {
    fn default() -> Self {
        Self {
            key_id: "k1".to_owned(),
            previous_keys: BTreeMap::new(),
            default_ttl_secs: 3600,
            max_ttl_secs: 7 * 24 * 3600,
            expiry_window_secs: 300,
            abuse_max_uses: 1000,
            abuse_max_addresses: 20,
        }
    }
}
