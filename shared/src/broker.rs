//! RabbitMQ: topology, a reconnecting publisher with confirms, and consumption helpers.
