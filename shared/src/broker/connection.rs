//! One AMQP connection (over TLS with an `amqps://` URL) whose every call has a deadline,
//! and the queue-depth probe that health checks use.

use std::future::Future;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::tcp::OwnedTLSConfig;
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, DefaultConnectionBuilder};
use secrecy::ExposeSecret;

use super::BrokerError;
use crate::config::RabbitConfig;

/// Heartbeat bounds, in seconds, when `rabbitmq.url` sets none: a silently dead link (a
/// black-holed socket, a broker paused by an alarm) is then noticed within two heartbeats
/// even by a consumer that makes no calls of its own.
const HEARTBEAT_SECS: (u64, u64) = (5, 60);

const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(100);

/// Runs one broker call, turning a missed deadline into [`BrokerError::Timeout`].
pub async fn call<T>(
    timeout: Duration,
    operation: &'static str,
    future: impl Future<Output = lapin::Result<T>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(timeout, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(BrokerError::Amqp { operation, error }),
        Err(_) => Err(BrokerError::Timeout { operation, timeout_secs: timeout.as_secs() }),
    }
}

/// Messages waiting in a queue and consumers attached to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueDepth {
    /// Ready messages; messages delivered but not yet acknowledged are not counted.
    pub messages: u32,
    pub consumers: u32,
}

/// An open connection. Dropping it closes it; it is never repaired, only replaced.
#[derive(Debug)]
pub struct BrokerConnection {
    connection: Connection,
    call_timeout: Duration,
}

impl BrokerConnection {
    /// Connects to `rabbitmq.url`, trusting `rabbitmq.caFile` besides the system's roots
    /// when it is `amqps://`; `name` shows in the RabbitMQ dashboard.
    pub async fn open(config: &RabbitConfig, name: &str) -> Result<Self, BrokerError> {
        let call_timeout = call_timeout(config);
        let mut uri: AMQPUri = config.url.expose_secret().parse().map_err(BrokerError::InvalidUrl)?;
        if uri.query.heartbeat.is_none() {
            let secs = config.call_timeout_secs.clamp(HEARTBEAT_SECS.0, HEARTBEAT_SECS.1);
            uri.query.heartbeat = Some(u16::try_from(secs).unwrap_or(u16::MAX));
        }
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let connect_error = |error: lapin::Error| BrokerError::Amqp { operation: "connect", error };
        // Read when connecting, not once at start-up, so that a renewed CA file is picked up.
        let ca = config.ca_certificates().map_err(|error| connect_error(std::io::Error::other(error).into()))?;
        let tls =
            OwnedTLSConfig { cert_chain: ca.map(|pem| String::from_utf8_lossy(&pem).into_owned()), identity: None };
        let builder = DefaultConnectionBuilder::new()
            .map_err(connect_error)?
            .with_uri(uri)
            .with_properties(properties)
            .with_tls_config(tls);
        let connection = call(call_timeout, "connect", builder.connect()).await?;
        Ok(Self { connection, call_timeout })
    }

    /// The deadline of every call made through this connection.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// False once the connection failed or was closed.
    pub fn is_connected(&self) -> bool {
        self.connection.status().connected()
    }

    pub async fn open_channel(&self) -> Result<Channel, BrokerError> {
        call(self.call_timeout, "channel.open", self.connection.create_channel()).await
    }

    /// Depth of an existing queue (a passive declare, on a channel of its own since a missing
    /// queue closes the channel it was asked on).
    pub async fn queue_depth(&self, queue: &str) -> Result<QueueDepth, BrokerError> {
        let channel = self.open_channel().await?;
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let declared = call(
            self.call_timeout,
            "queue.declare",
            channel.queue_declare(queue.into(), options, FieldTable::default()),
        )
        .await?;
        close_channel(&channel, self.call_timeout).await;
        Ok(QueueDepth { messages: declared.message_count(), consumers: declared.consumer_count() })
    }

    /// Closes politely, within the call deadline; a dead connection is simply dropped.
    pub async fn close(self) {
        if self.is_connected() {
            let _ = call(self.call_timeout, "connection.close", self.connection.close(200, "OK".into())).await;
        }
    }
}

/// Closes a channel politely if it is still open; errors are moot since it is discarded.
pub(crate) async fn close_channel(channel: &Channel, timeout: Duration) {
    if channel.status().connected() {
        let _ = call(timeout, "channel.close", channel.close(200, "OK".into())).await;
    }
}

pub(crate) fn call_timeout(config: &RabbitConfig) -> Duration {
    Duration::from_secs(config.call_timeout_secs.max(1))
}

/// The wait before rebuilding a failed connection (`rabbitmq.reconnectDelaySecs`), at least
/// 100 ms so that a delay of 0 cannot spin against a broker that is down.
pub fn reconnect_delay(config: &RabbitConfig) -> Duration {
    Duration::from_secs(config.reconnect_delay_secs).max(MIN_RECONNECT_DELAY)
}
