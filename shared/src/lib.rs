//! Domain library of Stayler Storage, shared by the API, the worker and the scheduler:
//! configuration, database access, events and broker topology, the outbox relay, cron
//! schedules, the storage layout, imaging, signing and identity.

pub mod audit;
pub mod auth;
pub mod backup;
pub mod broker;
pub mod config;
pub mod crypto;
pub mod db;
pub mod deletion;
pub mod erasure;
pub mod events;
pub mod expiry;
pub mod fields;
pub mod health;
pub mod imaging;
pub mod maintenance;
pub mod metrics;
pub mod model;
pub mod observability;
pub mod periodic;
pub mod processing;
pub mod redrive;
pub mod relay;
pub mod schedule;
pub mod sealing;
pub mod search;
pub mod shutdown;
pub mod signing;
pub mod storage;
pub mod telemetry;
/// Shared by the integration tests of every crate.
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod upload;
pub mod webhooks;
