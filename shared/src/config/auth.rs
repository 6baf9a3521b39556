//! The `auth:` section: how the bearer tokens of the main application are checked. The
//! secret itself is checked with the other secrets, against the configuration's `mode`.

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 secret shared with the main application.
    pub jwt_secret: SecretString,
    /// When set, every token must carry this `iss`.
    pub issuer: Option<String>,
    /// When set, every token must carry this `aud`.
    pub audience: Option<String>,
    /// Tokens expiring more than this many seconds ahead are refused; 0 accepts any.
    pub max_lifetime_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { jwt_secret: SecretString::from(""), issuer: None, audience: None, max_lifetime_secs: 24 * 3600 }
    }
}
