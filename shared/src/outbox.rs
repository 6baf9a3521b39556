//! The outbox relay: publishes committed events to RabbitMQ and marks them sent.
