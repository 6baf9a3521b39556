//! The broker topology and the publisher against the real RabbitMQ, each test under its own
//! random prefix; network failures are played with a TCP proxy.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use shared::broker::{BrokerConnection, BrokerError, DeadLetter, JobQueue, Outgoing, Publisher, Topology, headers};
use shared::events::{Envelope, ImageUploaded};
use shared::model::ImageId;
use shared::test_support::{TcpProxy, TestBroker, rabbit_config};

const WAIT: Duration = Duration::from_secs(10);

fn event_body() -> (uuid::Uuid, Vec<u8>) {
    let envelope = Envelope::new(ImageUploaded { image_id: ImageId::new() });
    (envelope.id, serde_json::to_vec(&envelope).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declaring_twice_is_harmless_and_an_event_reaches_both_job_queues() {
    let config = rabbit_config();
    let broker = TestBroker::start(&config).await;
    broker.topology.declare(&config).await.expect("a second declaration is a no-op");
    let publisher = Publisher::new(&config, "test publisher");

    let (id, body) = event_body();
    publisher.publish_event(id, "image.uploaded", body.clone()).await.unwrap();

    for queue in [JobQueue::Thumbnails, JobQueue::Checksums] {
        let name = broker.topology.queue(queue);
        broker.wait_for_depth(&name, 1, WAIT).await;
        let taken = broker.take_all(&name).await;
        assert_eq!(taken.len(), 1);
        let message = &taken[0];
        assert_eq!(message.message_id(), Some(id.to_string().as_str()));
        assert_eq!(message.properties.kind().as_ref().map(|k| k.as_str()), Some("image.uploaded"));
        assert_eq!(message.properties.content_type().as_ref().map(|c| c.as_str()), Some("application/json"));
        assert_eq!(message.properties.delivery_mode(), &Some(2));
        assert_eq!(message.body, body);
    }
    publisher.close().await;
    broker.delete().await;
}

/// Every event type is bound to a queue, so one that reaches none is an error for its
/// publisher (the outbox keeps it), never a silent drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_no_queue_takes_is_returned_as_unroutable() {
    let config = rabbit_config();
    let broker = TestBroker::start(&config).await;
    let publisher = Publisher::new(&config, "test publisher");
    let (id, body) = event_body();
    let error = publisher.publish_event(id, "nothing.happened", body).await.unwrap_err();
    assert!(matches!(error, BrokerError::Unroutable { .. }), "{error}");
    assert_eq!(broker.depth(&broker.topology.queue(JobQueue::Thumbnails)).await, 0);
    publisher.close().await;
    broker.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_copy_waits_out_its_delay_then_returns_to_its_own_queue() {
    let config = rabbit_config();
    let broker = TestBroker::start(&config).await;
    let publisher = Publisher::new(&config, "test publisher");
    let (id, body) = event_body();
    let original = BasicProperties::default().with_message_id(id.to_string().into()).with_type("image.uploaded".into());

    let copy = broker.topology.retry_message(JobQueue::Checksums, &original, body.clone(), 1, "disk busy");
    let sent_at = Instant::now();
    publisher.publish(&copy).await.unwrap();

    let checksums = broker.topology.queue(JobQueue::Checksums);
    assert_eq!(broker.depth(&broker.topology.retry_queue(1)).await, 1, "the copy waits in the 1 s delay queue");
    broker.wait_for_depth(&checksums, 1, WAIT).await;
    assert!(sent_at.elapsed() >= Duration::from_millis(900), "came back after {:?}", sent_at.elapsed());
    assert_eq!(broker.depth(&broker.topology.queue(JobQueue::Thumbnails)).await, 0, "only its own queue gets it");

    let returned = broker.take_all(&checksums).await;
    assert_eq!(returned[0].message_id(), Some(id.to_string().as_str()));
    assert_eq!(returned[0].header(headers::ATTEMPT).as_deref(), Some("2"));
    assert_eq!(returned[0].header(headers::ERROR).as_deref(), Some("disk busy"));
    assert_eq!(returned[0].body, body);
    publisher.close().await;
    broker.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_lands_in_its_queues_dead_letter_queue_with_the_reason() {
    let config = rabbit_config();
    let broker = TestBroker::start(&config).await;
    let publisher = Publisher::new(&config, "test publisher");
    let (id, body) = event_body();
    let original = BasicProperties::default().with_message_id(id.to_string().into());

    let dead = DeadLetter { queue: JobQueue::Thumbnails, attempts: 3, error: "undecodable image" };
    publisher.publish(&broker.topology.dead_letter_message(&original, body, &dead)).await.unwrap();

    let dead_queue = broker.topology.dead_letter_queue(JobQueue::Thumbnails);
    broker.wait_for_depth(&dead_queue, 1, WAIT).await;
    let taken = broker.take_all(&dead_queue).await;
    assert_eq!(taken[0].header(headers::ERROR).as_deref(), Some("undecodable image"));
    assert_eq!(taken[0].header(headers::ATTEMPTS).as_deref(), Some("3"));
    assert_eq!(taken[0].header(headers::QUEUE), Some(broker.topology.queue(JobQueue::Thumbnails)));
    assert!(taken[0].header(headers::FAILED_AT).is_some_and(|at| chrono::DateTime::parse_from_rfc3339(&at).is_ok()));
    assert_eq!(broker.depth(&broker.topology.dead_letter_queue(JobQueue::Checksums)).await, 0);
    publisher.close().await;
    broker.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_returned_too_often_is_dead_lettered_by_the_broker_itself() {
    let config = rabbit_config(); // maxAttempts 3, so x-delivery-limit 3
    let broker = TestBroker::start(&config).await;
    let publisher = Publisher::new(&config, "test publisher");
    let (id, body) = event_body();
    publisher.publish_event(id, "image.uploaded", body).await.unwrap();
    let queue = broker.topology.queue(JobQueue::Thumbnails);
    broker.wait_for_depth(&queue, 1, WAIT).await;

    // Consumers that die with the message or reject it back, as a crashing worker would.
    let dead_queue = broker.topology.dead_letter_queue(JobQueue::Thumbnails);
    let deliveries = broker.return_until_dead_lettered(&queue, &dead_queue, 1).await;
    assert_eq!(deliveries, 4, "delivered once plus the three redeliveries the limit allows");
    let dead = broker.take_all(&dead_queue).await;
    assert_eq!(dead[0].message_id(), Some(id.to_string().as_str()));
    assert_eq!(dead[0].header("x-first-death-reason").as_deref(), Some("delivery_limit"));
    assert_eq!(dead[0].header(headers::ERROR), None, "the broker knows no reason of ours");
    publisher.close().await;
    broker.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mandatory_message_with_no_queue_is_an_error() {
    let config = rabbit_config();
    let broker = TestBroker::start(&config).await;
    let publisher = Publisher::new(&config, "test publisher");
    let message = Outgoing {
        exchange: broker.topology.dead_letter_exchange(),
        routing_key: "no-such-queue".to_owned(),
        body: b"{}".to_vec(),
        properties: BasicProperties::default(),
        mandatory: true,
    };
    let error = publisher.publish(&message).await.unwrap_err();
    assert!(matches!(error, BrokerError::Unroutable { .. }), "{error}");
    // The connection stays usable.
    let (id, body) = event_body();
    publisher.publish_event(id, "image.uploaded", body).await.unwrap();
    publisher.close().await;
    broker.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_reconnects_after_its_connection_is_cut() {
    let config = rabbit_config();
    let broker = TestBroker::start(&config).await;
    let proxy = TcpProxy::start(&config).await;
    let publisher = Publisher::new(&proxy.proxied(&config), "test publisher");
    let mut sent = BTreeSet::new();
    let (id, body) = event_body();
    publisher.publish_event(id, "image.uploaded", body).await.unwrap();
    sent.insert(id.to_string());

    proxy.stop().await;
    let (id, body) = event_body();
    let started = Instant::now();
    assert!(publisher.publish_event(id, "image.uploaded", body).await.is_err(), "no broker, no confirm");
    assert!(started.elapsed() < Duration::from_secs(10), "failed in {:?}, not hung", started.elapsed());

    proxy.resume().await;
    let (id, body) = event_body();
    publisher.publish_event(id, "image.uploaded", body).await.expect("reconnected from scratch");
    sent.insert(id.to_string());

    let queue = broker.topology.queue(JobQueue::Thumbnails);
    broker.wait_for_depth(&queue, 2, WAIT).await;
    let received: BTreeSet<String> =
        broker.take_all(&queue).await.iter().filter_map(|m| m.message_id().map(str::to_owned)).collect();
    assert_eq!(received, sent);
    publisher.close().await;
    broker.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_never_answers_makes_a_publish_time_out_instead_of_hanging() {
    let config = rabbit_config(); // callTimeoutSecs 2
    let broker = TestBroker::start(&config).await;
    let proxy = TcpProxy::start(&config).await;
    let publisher = Publisher::new(&proxy.proxied(&config), "test publisher");
    let (id, body) = event_body();
    publisher.publish_event(id, "image.uploaded", body).await.unwrap();

    proxy.black_hole();
    let started = Instant::now();
    let (id, body) = event_body();
    let error = publisher.publish_event(id, "image.uploaded", body).await.unwrap_err();
    assert!(matches!(error, BrokerError::Timeout { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(6), "gave up after {:?}", started.elapsed());

    proxy.resume().await;
    let (id, body) = event_body();
    publisher.publish_event(id, "image.uploaded", body).await.expect("a fresh connection works");
    publisher.close().await;
    broker.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_depth_counts_ready_messages_and_consumers() {
    let config = rabbit_config();
    let broker = TestBroker::start(&config).await;
    let publisher = Publisher::new(&config, "test publisher");
    for _ in 0..3 {
        let (id, body) = event_body();
        publisher.publish_event(id, "image.uploaded", body).await.unwrap();
    }
    let connection = BrokerConnection::open(&config, "health").await.unwrap();
    let queue = broker.topology.queue(JobQueue::Checksums);
    broker.wait_for_depth(&queue, 3, WAIT).await;
    let depth = connection.queue_depth(&queue).await.unwrap();
    assert_eq!((depth.messages, depth.consumers), (3, 0));
    assert!(connection.queue_depth("no-such-queue").await.is_err());
    assert!(connection.queue_depth(&queue).await.is_ok(), "a missing queue costs a channel, not the connection");
    connection.close().await;
    publisher.close().await;
    broker.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_topology_removes_its_queues_and_can_be_repeated() {
    let config = rabbit_config();
    let topology = Topology::new(&config);
    topology.declare(&config).await.unwrap();
    topology.delete(&config).await.unwrap();
    topology.delete(&config).await.expect("deleting what is gone is a no-op");
    let connection = BrokerConnection::open(&config, "test").await.unwrap();
    for queue in JobQueue::ALL {
        assert!(connection.queue_depth(&topology.queue(*queue)).await.is_err());
        assert!(connection.queue_depth(&topology.dead_letter_queue(*queue)).await.is_err());
    }
    assert!(connection.queue_depth(&topology.retry_queue(1)).await.is_err());
    connection.close().await;
}
