//! Integration tests of the shared library against the real RabbitMQ and PostgreSQL: the
//! broker topology and publisher, and the outbox relay; migrations that rewrite rows; and the
//! layering of its modules.

mod broker;
mod layering;
mod migrations;
mod relay;
mod s3_backups;
mod s3_file_audit;
mod s3_storage;
