//! The `webhooks:` section: HTTP endpoints of the main app that receive the notifications
//! (`image.processed`, `image.failed`) as signed POST requests, for a main app that would
//! rather not consume RabbitMQ.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{ConfigError, Mode};
use crate::events::NOTIFICATION_TYPES;

/// Shortest signing secret accepted outside dev mode, in bytes.
const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// The endpoints; none by default (the notifications then go to RabbitMQ only).
    pub endpoints: Vec<WebhookEndpoint>,
    /// How long one delivery may take, connection included, in seconds; slower counts as a
    /// failure and is retried.
    pub timeout_secs: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self { endpoints: Vec::new(), timeout_secs: 10 }
    }
}

/// One receiver of the notifications.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// Names the endpoint in logs and in the record of deliveries; letters, digits, `-`, `_`.
    pub name: String,
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// Signs every request (`X-Stayler-Signature`), so the receiver can tell it came from
    /// this service and was not replayed long after.
    pub secret: SecretString,
    /// The event types it receives; every notification when left out.
    #[serde(default = "every_notification")]
    pub events: Vec<String>,
}

fn every_notification() -> Vec<String> {
    NOTIFICATION_TYPES.iter().map(|&event_type| event_type.to_owned()).collect()
}

impl WebhookEndpoint {
    pub fn receives(&self, event_type: &str) -> bool {
        self.events.iter().any(|wanted| wanted == event_type)
    }
}

impl WebhooksConfig {
    pub(super) fn validate(&self, mode: Mode) -> Result<(), ConfigError> {
        let bad = |key, reason: String| Err(ConfigError::BadValue { key, reason });
        if !(1..=60).contains(&self.timeout_secs) {
            return bad("webhooks.timeoutSecs", "must be between 1 and 60".to_owned());
        }
        for (index, endpoint) in self.endpoints.iter().enumerate() {
            let name = &endpoint.name;
            if !crate::model::is_safe_segment(name) {
                return bad("webhooks.endpoints.name", format!("`{name}` may hold only letters, digits, `-` and `_`"));
            }
            if self.endpoints[..index].iter().any(|other| &other.name == name) {
                return bad("webhooks.endpoints.name", format!("`{name}` names two endpoints"));
            }
            if !(endpoint.url.starts_with("https://") || endpoint.url.starts_with("http://")) {
                return bad("webhooks.endpoints.url", format!("endpoint `{name}`: must be an http:// or https:// URL"));
            }
            let secret = endpoint.secret.expose_secret();
            if secret.is_empty() || (mode == Mode::Production && secret.len() < MIN_SECRET_BYTES) {
                return bad(
                    "webhooks.endpoints.secret",
                    format!("endpoint `{name}`: needs a secret of at least {MIN_SECRET_BYTES} bytes"),
                );
            }
            if let Some(unknown) = endpoint.events.iter().find(|event| !NOTIFICATION_TYPES.contains(&event.as_str())) {
                return bad(
                    "webhooks.endpoints.events",
                    format!("endpoint `{name}`: `{unknown}` is not one of {}", NOTIFICATION_TYPES.join(", ")),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(name: &str, url: &str, secret: &str) -> WebhookEndpoint {
        WebhookEndpoint { name: name.into(), url: url.into(), secret: secret.into(), events: every_notification() }
    }

    #[test]
    fn endpoints_need_a_name_an_http_url_and_a_long_enough_secret() {
        let long = "s".repeat(32);
        let ok = WebhooksConfig {
            endpoints: vec![endpoint("main-app", "https://app.example/hooks", &long)],
            ..Default::default()
        };
        assert!(ok.validate(Mode::Production).is_ok());
        let short = WebhooksConfig {
            endpoints: vec![endpoint("main-app", "https://app.example/hooks", "short")],
            ..Default::default()
        };
        assert!(short.validate(Mode::Dev).is_ok(), "dev takes short secrets");
        assert!(matches!(
            short.validate(Mode::Production),
            Err(ConfigError::BadValue { key: "webhooks.endpoints.secret", .. })
        ));
        for (name, url, key) in
            [("a b", "https://x", "webhooks.endpoints.name"), ("main", "ftp://x", "webhooks.endpoints.url")]
        {
            let config = WebhooksConfig { endpoints: vec![endpoint(name, url, &long)], ..Default::default() };
            assert!(
                matches!(config.validate(Mode::Dev), Err(ConfigError::BadValue { key: k, .. }) if k == key),
                "{name} {url}"
            );
        }
        let twice = WebhooksConfig {
            endpoints: vec![endpoint("a", "http://x", &long), endpoint("a", "http://y", &long)],
            ..Default::default()
        };
        assert!(twice.validate(Mode::Dev).is_err());
        let mut unknown = endpoint("a", "http://x", &long);
        unknown.events = vec!["image.uploaded".into()];
        let config = WebhooksConfig { endpoints: vec![unknown], ..Default::default() };
        assert!(matches!(
            config.validate(Mode::Dev),
            Err(ConfigError::BadValue { key: "webhooks.endpoints.events", .. })
        ));
    }
}
