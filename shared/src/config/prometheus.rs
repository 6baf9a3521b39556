//! The `prometheus:` section: whether the processes export Prometheus metrics, where the
//! worker's and the scheduler's metrics ports listen, how the API's `/metrics` is kept from
//! the public, and how often the cluster-wide figures are measured. (The `metrics:` section
//! is something else: the `storage_metrics` roll-ups.)

use std::net::SocketAddr;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{Config, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// Exports metrics: `/metrics` on the API, the metrics ports of workers and schedulers.
    pub enabled: bool,
    /// Where a worker serves `/metrics` and `/healthz`; empty: no metrics port (and
    /// `stayler-worker health` has nothing to ask).
    pub worker_listen: String,
    /// Where a scheduler serves `/metrics` and `/healthz`; empty: no metrics port.
    pub scheduler_listen: String,
    /// Where the API serves `/metrics` and `/healthz` instead of on its own port, e.g.
    /// `127.0.0.1:9100` or an address of the private network only; empty: `/metrics` on
    /// `server.port`, beside the API.
    pub api_listen: String,
    /// When set, every `/metrics` answers only requests with `Authorization: Bearer <token>`
    /// (401 otherwise). Outside dev mode at least 32 bytes, like every secret.
    pub scrape_token: SecretString,
    /// The figures every worker reads from the database, the broker and the disks (queue
    /// depths, outbox, backups, free space) are measured again at most this often, on a scrape.
    pub sample_interval_secs: u64,
    /// Longest a scrape waits for those figures; past it the previous ones are served.
    pub sample_timeout_ms: u64,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            worker_listen: "0.0.0.0:9101".to_owned(),
            scheduler_listen: "0.0.0.0:9102".to_owned(),
            api_listen: String::new(),
            scrape_token: SecretString::from(""),
            sample_interval_secs: 15,
            sample_timeout_ms: 3_000,
        }
    }
}

impl PrometheusConfig {
    /// The worker's metrics address, `None` when metrics or its port are off.
    pub fn worker_address(&self) -> Option<SocketAddr> {
        self.address(&self.worker_listen)
    }

    /// The scheduler's metrics address, `None` when metrics or its port are off.
    pub fn scheduler_address(&self) -> Option<SocketAddr> {
        self.address(&self.scheduler_listen)
    }

    /// The API's separate metrics address, `None` when `/metrics` is on the API's own port
    /// (or metrics are off).
    pub fn api_address(&self) -> Option<SocketAddr> {
        self.address(&self.api_listen)
    }

    /// The token scrapers must present, if one is set.
    pub fn token(&self) -> Option<&str> {
        Some(self.scrape_token.expose_secret()).filter(|token| !token.is_empty())
    }

    fn address(&self, listen: &str) -> Option<SocketAddr> {
        // Validated at load time; an unparsable one cannot get here.
        self.enabled.then(|| listen.parse().ok()).flatten()
    }
}

impl Config {
    /// The `prometheus:` section: addresses that parse, bounded sampling, a real token
    /// outside dev mode.
    pub(super) fn validate_prometheus(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: String| Err(ConfigError::BadValue { key, reason });
        let prometheus = &self.prometheus;
        let listens = [
            ("prometheus.workerListen", &prometheus.worker_listen),
            ("prometheus.schedulerListen", &prometheus.scheduler_listen),
            ("prometheus.apiListen", &prometheus.api_listen),
        ];
        for (key, listen) in listens {
            if !listen.is_empty() && listen.parse::<SocketAddr>().is_err() {
                return bad(key, format!("`{listen}` is not an address such as 0.0.0.0:9101 (or empty: off)"));
            }
        }
        if !(1..=3_600).contains(&prometheus.sample_interval_secs) {
            return bad("prometheus.sampleIntervalSecs", "must be between 1 and 3600".to_owned());
        }
        if !(100..=60_000).contains(&prometheus.sample_timeout_ms) {
            return bad("prometheus.sampleTimeoutMs", "must be between 100 and 60000".to_owned());
        }
        if prometheus.token().is_some() {
            self.check_secret("prometheus.scrapeToken", &prometheus.scrape_token)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const VALID: &str = "storage:\n  signedURLKey: dev-key\ndatabase:\n  url: postgres://x\nrabbitmq:\n  url: amqp://x\nauth:\n  jwtSecret: dev-secret\n";

    fn with(extra: &str) -> Result<Config, String> {
        Config::from_yaml(&format!("{VALID}{extra}")).map_err(|error| error.to_string())
    }

    #[test]
    fn metrics_are_on_by_default_with_ports_for_the_worker_and_the_scheduler() {
        let config = with("").unwrap();
        let prometheus = &config.prometheus;
        assert_eq!(prometheus.worker_address(), Some("0.0.0.0:9101".parse().unwrap()));
        assert_eq!(prometheus.scheduler_address(), Some("0.0.0.0:9102".parse().unwrap()));
        assert_eq!(prometheus.api_address(), None, "/metrics on the API's own port");
        assert_eq!(prometheus.token(), None);
        let off = with("prometheus:\n  enabled: false\n").unwrap();
        assert_eq!(off.prometheus.worker_address(), None);
        let no_port = with("prometheus:\n  workerListen: \"\"\n  apiListen: 127.0.0.1:0\n").unwrap();
        assert_eq!(no_port.prometheus.worker_address(), None);
        assert_eq!(no_port.prometheus.api_address(), Some("127.0.0.1:0".parse().unwrap()), "port 0 is allowed");
    }

    #[test]
    fn bad_addresses_and_sampling_bounds_are_refused_with_their_key() {
        assert!(with("prometheus:\n  workerListen: localhost\n").unwrap_err().contains("prometheus.workerListen"));
        assert!(with("prometheus:\n  schedulerListen: \":x\"\n").unwrap_err().contains("prometheus.schedulerListen"));
        assert!(with("prometheus:\n  apiListen: 9100\n").unwrap_err().contains("prometheus.apiListen"));
        assert!(with("prometheus:\n  sampleIntervalSecs: 0\n").unwrap_err().contains("prometheus.sampleIntervalSecs"));
        with("prometheus:\n  sampleIntervalSecs: 3600\n  sampleTimeoutMs: 100\n").unwrap();
        assert!(with("prometheus:\n  sampleTimeoutMs: 99\n").unwrap_err().contains("prometheus.sampleTimeoutMs"));
        assert!(with("prometheus:\n  port: 1\n").unwrap_err().contains("port"), "unknown keys are refused");
    }

    #[test]
    fn a_scrape_token_outside_dev_mode_must_be_a_real_secret() {
        let production = "mode: production\nstorage:\n  signedURLKey: kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\n\
                          database:\n  url: postgres://x\nrabbitmq:\n  url: amqp://x\n\
                          auth:\n  jwtSecret: ssssssssssssssssssssssssssssssssssss\n";
        let token = |token: &str| Config::from_yaml(&format!("{production}prometheus:\n  scrapeToken: \"{token}\"\n"));
        assert!(token("").is_ok(), "no token: /metrics is open");
        assert!(token("short").unwrap_err().to_string().contains("prometheus.scrapeToken"));
        assert!(
            token("dev-scrape-token-not-for-production").unwrap_err().to_string().contains("prometheus.scrapeToken")
        );
        assert_eq!(token(&"t".repeat(32)).unwrap().prometheus.token(), Some("t".repeat(32).as_str()));
        assert_eq!(with("prometheus:\n  scrapeToken: dev-x\n").unwrap().prometheus.token(), Some("dev-x"));
    }
}
