//! The `server:` section: where the API listens and the public origin and paths of the URLs
//! it hands out.

use serde::Deserialize;

use super::ConfigError;

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
    /// Read, for the architecture document's configuration block, and otherwise ignored:
    /// the service serves no static assets (its pages compile theirs in), so a written
    /// value only earns a warning at start-up.
    pub static_path: Option<String>,
    /// Origins (`https://app.example`) of browser front ends allowed to call the API
    /// directly (CORS); empty, the default, answers no cross-origin request.
    pub cors_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".to_owned(),
            port: 8080,
            base_url: "http://localhost:8080".to_owned(),
            public_path: "/public".to_owned(),
            static_path: None,
            cors_origins: Vec::new(),
        }
    }
}

impl ServerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for origin in &self.cors_origins {
            let host = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
            if !host.is_some_and(|host| !host.is_empty() && !host.contains(['/', '*', ' '])) {
                return Err(ConfigError::BadValue {
                    key: "server.corsOrigins",
                    reason: format!("`{origin}` is not an origin such as https://app.example (no path, no wildcard)"),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins_are_plain_origins() {
        let with = |origin: &str| ServerConfig { cors_origins: vec![origin.to_owned()], ..ServerConfig::default() };
        assert!(with("https://app.example").validate().is_ok());
        assert!(with("http://localhost:3000").validate().is_ok());
        for bad in ["*", "app.example", "https://app.example/", "https://*.example", "https://"] {
            assert!(with(bad).validate().unwrap_err().to_string().contains("server.corsOrigins"), "{bad}");
        }
    }
}
