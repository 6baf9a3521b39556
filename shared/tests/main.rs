//! Integration tests of the shared library against the real RabbitMQ and PostgreSQL: the
//! broker topology and publisher, and the outbox relay.

mod broker;
mod outbox;
