//! The publisher: persistent messages with publisher confirms over one shared connection
//! that is rebuilt from scratch after any failure.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::connection::{call, call_timeout, close_channel, reconnect_delay};
use super::{BrokerConnection, BrokerError, Topology};
use crate::config::RabbitConfig;

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
    /// Makes an unroutable message an error ([`BrokerError::Unroutable`]) instead of a
    /// silent drop. Set for everything this service publishes but notifications: every job
    /// event type is bound to a job queue, so one routed nowhere means a missing binding or
    /// queue, and the outbox keeps it until the topology is back. A notification nobody has
    /// bound a queue to is dropped, as a topic's subscribers expect.
    pub mandatory: bool,
}

impl Outgoing {
    /// An event for the events exchange (a notification for the notifications exchange):
    /// persistent JSON, routed by its type, with the event id as `message_id` so consumers
    /// can de-duplicate.
    pub fn event(topology: &Topology, event_id: Uuid, event_type: &str, body: Vec<u8>) -> Self {
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(event_id.to_string().into())
            .with_type(event_type.into())
            .with_timestamp(u64::try_from(Utc::now().timestamp()).unwrap_or(0));
        let notification = crate::events::is_notification(event_type);
        Self {
            exchange: if notification { topology.notifications_exchange() } else { topology.events_exchange() },
            routing_key: event_type.to_owned(),
            body,
            properties,
            mandatory: !notification,
        }
    }
}

/// Publishes with confirms; cheap to clone, and every clone shares one connection. Connects
/// lazily on first use, so creating one never fails.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
}

struct Shared {
    config: RabbitConfig,
    topology: Topology,
    name: String,
    link: Mutex<Link>,
}

#[derive(Default)]
struct Link {
    live: Option<Live>,
    /// Counts connections made, so a task whose publish failed on an old connection does
    /// not throw away the new one another task just built.
    generation: u64,
    failed_at: Option<Instant>,
}

struct Live {
    connection: BrokerConnection,
    channel: Channel,
    generation: u64,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("name", &self.shared.name).finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher for the deployment `config` describes; `name` labels its connection in
    /// the RabbitMQ dashboard.
    pub fn new(config: &RabbitConfig, name: &str) -> Self {
        let shared = Shared {
            config: config.clone(),
            topology: Topology::new(config),
            name: name.to_owned(),
            link: Mutex::new(Link::default()),
        };
        Self { shared: Arc::new(shared) }
    }

    pub fn topology(&self) -> &Topology {
        &self.shared.topology
    }

    /// Publishes an event envelope (JSON) to the events exchange and waits for its confirm.
    pub async fn publish_event(&self, event_id: Uuid, event_type: &str, body: Vec<u8>) -> Result<(), BrokerError> {
        self.publish(&Outgoing::event(&self.shared.topology, event_id, event_type, body)).await
    }

    /// Publishes one message and waits for the broker to confirm it.
    pub async fn publish(&self, message: &Outgoing) -> Result<(), BrokerError> {
        self.publish_batch(std::slice::from_ref(message)).await.pop().unwrap_or(Err(BrokerError::Unconfirmed))
    }

    /// Publishes several messages, then waits for all their confirms; one result per
    /// message, in order. After a connection failure the remaining messages fail without
    /// being sent, and the connection is rebuilt on the next call.
    pub async fn publish_batch(&self, messages: &[Outgoing]) -> Vec<Result<(), BrokerError>> {
        if messages.is_empty() {
            return Vec::new();
        }
        let (channel, generation) = match self.channel().await {
            Ok(link) => link,
            Err(error) => return vec![Err(error); messages.len()],
        };
        let timeout = call_timeout(&self.shared.config);
        let mut pending = Vec::with_capacity(messages.len());
        let mut broken = None;
        for message in messages {
            if let Some(error) = &broken {
                pending.push(Err(BrokerError::clone(error)));
                continue;
            }
            let options = BasicPublishOptions { mandatory: message.mandatory, ..BasicPublishOptions::default() };
            let sent = channel.basic_publish(
                message.exchange.as_str().into(),
                message.routing_key.as_str().into(),
                options,
                &message.body,
                message.properties.clone(),
            );
            match call(timeout, "basic.publish", sent).await {
                Ok(confirm) => pending.push(Ok(confirm)),
                Err(error) => {
                    broken = Some(error.clone());
                    pending.push(Err(error));
                }
            }
        }
        // One deadline for all confirms: they arrive in order, so waiting for each in turn
        // costs no more than waiting for the last.
        let deadline = tokio::time::Instant::now() + timeout;
        let mut results = Vec::with_capacity(pending.len());
        for sent in pending {
            let result = match sent {
                Err(error) => Err(error),
                Ok(confirm) => match tokio::time::timeout_at(deadline, confirm).await {
                    Err(_) => {
                        Err(BrokerError::Timeout { operation: "publisher confirm", timeout_secs: timeout.as_secs() })
                    }
                    Ok(Err(error)) => Err(BrokerError::Amqp { operation: "publisher confirm", error }),
                    Ok(Ok(Confirmation::Ack(None))) => Ok(()),
                    Ok(Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)))) => {
                        Err(BrokerError::Unroutable { reply_text: returned.reply_text.to_string() })
                    }
                    Ok(Ok(Confirmation::Nack(None))) => Err(BrokerError::Nacked),
                    Ok(Ok(Confirmation::NotRequested)) => Err(BrokerError::Unconfirmed),
                },
            };
            results.push(result);
        }
        if let Some(error) = results.iter().filter_map(|r| r.as_ref().err()).find(|e| e.breaks_connection()) {
            tracing::warn!(broker.connection = %self.shared.name, error = %error, "dropping the publisher connection");
            self.discard(generation).await;
        }
        results
    }

    /// Closes the connection politely (at shutdown); a later publish reconnects.
    pub async fn close(&self) {
        let live = self.shared.link.lock().await.live.take();
        if let Some(live) = live {
            close_channel(&live.channel, live.connection.call_timeout()).await;
            live.connection.close().await;
        }
    }

    /// The confirming channel of the current connection, connecting first if there is none.
    /// Callers queue on the lock while one of them connects, so a broker outage costs one
    /// connection attempt per reconnect delay, not one per message.
    async fn channel(&self) -> Result<(Channel, u64), BrokerError> {
        let mut link = self.shared.link.lock().await;
        if let Some(live) = &link.live {
            if live.connection.is_connected() && live.channel.status().connected() {
                return Ok((live.channel.clone(), live.generation));
            }
            link.live = None;
            link.failed_at = Some(Instant::now());
        }
        if let Some(failed_at) = link.failed_at {
            let wait = reconnect_delay(&self.shared.config).saturating_sub(failed_at.elapsed());
            tokio::time::sleep(wait).await;
        }
        match self.connect().await {
            Ok((connection, channel)) => {
                link.generation += 1;
                link.failed_at = None;
                let generation = link.generation;
                tracing::info!(broker.connection = %self.shared.name, "publisher connected");
                link.live = Some(Live { connection, channel: channel.clone(), generation });
                Ok((channel, generation))
            }
            Err(error) => {
                link.failed_at = Some(Instant::now());
                Err(error)
            }
        }
    }

    async fn connect(&self) -> Result<(BrokerConnection, Channel), BrokerError> {
        let connection = BrokerConnection::open(&self.shared.config, &self.shared.name).await?;
        let channel = connection.open_channel().await?;
        call(connection.call_timeout(), "confirm.select", channel.confirm_select(ConfirmSelectOptions::default()))
            .await?;
        Ok((connection, channel))
    }

    /// Throws the connection of `generation` away, unless it was already replaced.
    async fn discard(&self, generation: u64) {
        let mut link = self.shared.link.lock().await;
        if link.live.as_ref().is_some_and(|live| live.generation == generation) {
            link.live = None;
            link.failed_at = Some(Instant::now());
        }
    }
}
