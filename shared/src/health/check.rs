//! One check's result: a status, the figures behind it, and the problems that set it.

use serde_json::{Map, Value};

use crate::model::HealthStatus;

/// The result of one check type, built up as figures come in. Every problem raises the
/// status to at least its own severity and is kept in plain words under `problems`.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub check_type: &'static str,
    pub status: HealthStatus,
    details: Map<String, Value>,
    problems: Vec<String>,
}

impl CheckResult {
    pub fn new(check_type: &'static str) -> Self {
        Self { check_type, status: HealthStatus::Ok, details: Map::new(), problems: Vec::new() }
    }

    /// Adds a figure.
    pub fn detail(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// Records a problem of `severity`.
    pub fn problem(&mut self, severity: HealthStatus, text: impl Into<String>) -> &mut Self {
        self.status = self.status.max(severity);
        self.problems.push(text.into());
        self
    }

    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// The figures with the problems, as stored in `storage_health_checks.details`.
    pub fn details(&self) -> Value {
        let mut details = self.details.clone();
        details.insert("problems".to_owned(), self.problems.clone().into());
        Value::Object(details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_raise_the_status_and_are_kept() {
        let mut check = CheckResult::new("disk");
        check.detail("free_percent", 12.5);
        assert_eq!(check.status, HealthStatus::Ok);
        check.problem(HealthStatus::Down, "storage disk full");
        check.problem(HealthStatus::Degraded, "backup disk low");
        assert_eq!(check.status, HealthStatus::Down, "a lesser problem never lowers it");
        let details = check.details();
        assert_eq!(details["free_percent"], 12.5);
        assert_eq!(details["problems"], serde_json::json!(["storage disk full", "backup disk low"]));
    }
}
