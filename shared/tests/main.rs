//! Integration tests of the shared library against the real RabbitMQ and PostgreSQL: the
//! broker topology and publisher, dead letters and their re-drive, and the outbox relay;
//! migrations that rewrite rows; the access log's monthly partitions; TLS to the backends;
//! and the layering of its modules.

mod broker;
mod image_keys;
mod layering;
mod migrations;
mod partitions;
mod redrive;
mod relay;
mod s3_backups;
mod s3_file_audit;
mod s3_storage;
mod tls;
