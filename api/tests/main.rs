//! The API's integration tests, one module per feature: each starts the API through its
//! library entry point on a random port, against the real PostgreSQL, RabbitMQ and Redis
//! (`cli` runs the binary itself, for the commands that start nothing).

mod access_log;
mod audit;
mod bulk;
mod cli;
mod cors;
mod health;
mod limits;
mod metadata;
mod metrics;
mod openapi;
mod operations;
mod permissions;
mod provenance;
mod rate_limit;
mod request_id;
mod sealing;
mod search;
mod seed_config;
mod serving;
mod stats;
mod tls;
mod upload;
