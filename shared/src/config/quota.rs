//! The `quota:` section: what an owner may store until an admin sets their own quota.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Files an owner may store until an admin changes their quota.
    pub default_max_files: i64,
    /// Bytes an owner may store until an admin changes their quota.
    pub default_max_bytes: i64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self { default_max_files: 100, default_max_bytes: 5 * 1024 * 1024 * 1024 }
    }
}
