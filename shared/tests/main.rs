//! Integration tests of the shared library against the real RabbitMQ and PostgreSQL: the
//! broker topology and publisher, and the outbox relay; and the layering of its modules.

mod broker;
mod layering;
mod outbox;
