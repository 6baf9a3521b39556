//! The worker's integration tests, one module per feature, against the real RabbitMQ and
//! PostgreSQL (the jobs themselves are tested end to end in the `e2e` crate).

mod consumer;
mod rotate_keys;
