//! Health of the deployment: the status scale every check reports on, the checks a
//! `health.check` job runs, and how the latest results add up to one answer.

use serde::{Deserialize, Serialize};

/// How well a part of the service is doing, from best to worst; the overall status is the
/// worst of its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Working as configured.
    Ok,
    /// Serving, but something needs an operator (a stale backup, dead letters, a backlog).
    Degraded,
    /// Not serving (the database is unreachable, the storage disk is full).
    Down,
}

impl HealthStatus {
    /// The value stored in `storage_health_checks.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Degraded => "degraded",
            Self::Down => "down",
        }
    }

    /// Parses a stored status; anything unknown counts as degraded rather than hiding.
    pub fn parse(value: &str) -> Self {
        match value {
            "ok" => Self::Ok,
            "down" => Self::Down,
            _ => Self::Degraded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_status_wins() {
        let statuses = [HealthStatus::Ok, HealthStatus::Down, HealthStatus::Degraded];
        assert_eq!(statuses.iter().max(), Some(&HealthStatus::Down));
        assert_eq!(HealthStatus::parse("ok"), HealthStatus::Ok);
        assert_eq!(HealthStatus::parse("what"), HealthStatus::Degraded);
        assert_eq!(serde_json::to_value(HealthStatus::Degraded).unwrap(), "degraded");
    }
}
