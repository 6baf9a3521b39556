//! The `server:` section: where the API listens and the public origin and paths of the URLs
//! it hands out.

use serde::Deserialize;

/// The `server:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Public origin used to build URLs handed to clients.
    pub base_url: String,
    /// URL prefix under which public images are served without signature.
    pub public_path: String,
    /// URL prefix of static assets.
    pub static_path: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".to_owned(),
            port: 8080,
            base_url: "http://localhost:8080".to_owned(),
            public_path: "/public".to_owned(),
            static_path: "/static".to_owned(),
        }
    }
}
