//! RabbitMQ: the topology, connections whose every call has a deadline, and a reconnecting
//! publisher with confirms.
//!
//! lapin's own connection recovery is young, so nothing here relies on it. Every broker call
//! is given up after `rabbitmq.callTimeoutSecs`, and after any error the connection and its
//! channels are thrown away and rebuilt from scratch `rabbitmq.reconnectDelaySecs` later. A
//! process whose broker connection dies sees errors, never a hang.

mod connection;
mod publisher;
mod topology;

pub use connection::{BrokerConnection, QueueDepth, call, reconnect_delay};
pub use publisher::{Outgoing, Publisher};
pub use topology::{DeadLetter, JobQueue, Topology, attempt_of, headers};

/// Why a broker operation failed. `Clone` so that one failed connection can fail every
/// message of a batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    #[error("RabbitMQ did not complete {operation} within {timeout_secs} s")]
    Timeout { operation: &'static str, timeout_secs: u64 },
    #[error("RabbitMQ {operation}: {error}")]
    Amqp { operation: &'static str, error: lapin::Error },
    #[error("RabbitMQ refused the message (nack)")]
    Nacked,
    #[error("RabbitMQ could not route the message to any queue: {reply_text}")]
    Unroutable { reply_text: String },
    #[error("RabbitMQ sent no publisher confirm on a confirming channel")]
    Unconfirmed,
    /// The broker ended a consumer (its queue was deleted, its channel closed).
    #[error("RabbitMQ cancelled the consumer of {queue}")]
    ConsumerCancelled { queue: String },
    #[error("declaring {object}: {error}")]
    Declare { object: String, error: Box<BrokerError> },
    #[error("rabbitmq.url is not a valid AMQP URL: {0}")]
    InvalidUrl(String),
}

impl BrokerError {
    /// True when the connection or channel can no longer be trusted and must be rebuilt; a
    /// nack or an unroutable message leaves it usable.
    pub fn breaks_connection(&self) -> bool {
        match self {
            Self::Timeout { .. }
            | Self::Amqp { .. }
            | Self::Unconfirmed
            | Self::ConsumerCancelled { .. }
            | Self::InvalidUrl(_) => true,
            Self::Nacked | Self::Unroutable { .. } => false,
            Self::Declare { error, .. } => error.breaks_connection(),
        }
    }

    /// True when the broker refused the request itself (queue arguments that differ from
    /// the existing queue's, access refused): retrying will not help, unlike an unreachable
    /// or slow broker.
    pub fn is_refusal(&self) -> bool {
        use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
        match self {
            Self::Declare { error, .. } => error.is_refusal(),
            Self::InvalidUrl(_) => true,
            Self::Amqp { error, .. } => match error.kind() {
                lapin::ErrorKind::ProtocolError(amqp) => matches!(
                    amqp.kind(),
                    AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED | AMQPSoftError::ACCESSREFUSED)
                        | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED)
                ),
                _ => false,
            },
            _ => false,
        }
    }
}
