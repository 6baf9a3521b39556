//! End-to-end tests: the API (with its outbox relay), RabbitMQ, the workers and PostgreSQL
//! together, through their real entry points. Tests whose name contains `broker_restart`
//! restart the machine's shared broker, so `scripts/test` runs them alone, after the rest.

mod backup;
mod broker_restart;
mod deletion;
mod erasure;
mod health;
mod image_retention;
mod maintenance;
mod metrics;
mod migrate_storage;
mod notifications;
mod object_store;
mod object_store_backups;
mod operations_page;
mod pipeline;
mod restore;
mod retention;
mod webhooks;
