//! Dead letters against the real RabbitMQ: looking at them leaves them in place, a re-drive
//! moves a bounded number back with their identity and a fresh set of attempts.

use std::time::{Duration, Instant};

use lapin::BasicProperties;
use shared::broker::{DeadLetter, JobQueue, Publisher, attempt_of, headers};
use shared::events::{Envelope, ImageUploaded};
use shared::model::ImageId;
use shared::redrive;
use shared::test_support::{TestBroker, eventually, rabbit_config};

/// Gives `count` `image.uploaded` jobs up on the thumbnails queue, as a worker would after
/// its last attempt; returns their message ids and image ids, oldest first.
async fn give_up(broker: &TestBroker, count: usize) -> Vec<(String, ImageId)> {
    let publisher = Publisher::new(&broker.config, "test give-up");
    let mut given_up = Vec::new();
    for _ in 0..count {
        let image_id = ImageId::new();
        let envelope = Envelope::new(ImageUploaded { image_id });
        let properties = BasicProperties::default()
            .with_message_id(envelope.id.to_string().into())
            .with_type("image.uploaded".into())
            .with_content_type("application/json".into());
        let dead = DeadLetter { queue: JobQueue::Thumbnails, attempts: 3, error: "disk unreadable" };
        let body = serde_json::to_vec(&envelope).unwrap();
        publisher.publish(&broker.topology.dead_letter_message(&properties, body, &dead)).await.unwrap();
        given_up.push((envelope.id.to_string(), image_id));
    }
    publisher.close().await;
    given_up
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looking_at_dead_letters_again_and_again_leaves_them_where_they_are() {
    let config = rabbit_config();
    let broker = TestBroker::start(&config).await;
    let given_up = give_up(&broker, 3).await;
    let dead_queue = broker.topology.dead_letter_queue(JobQueue::Thumbnails);

    // More looks than RabbitMQ's default delivery limit of quorum queues (20, from 4.0).
    for _ in 0..25 {
        let seen = redrive::dead_letters(&config, JobQueue::Thumbnails, 10).await.unwrap();
        assert_eq!((seen.waiting, seen.oldest.len()), (3, 3));
    }
    let seen = redrive::dead_letters(&config, JobQueue::Thumbnails, 2).await.unwrap();
    assert_eq!((seen.waiting, seen.oldest.len()), (3, 2), "the limit bounds a look");
    let first = &seen.oldest[0];
    assert_eq!(first.message_id.as_deref(), Some(given_up[0].0.as_str()));
    assert_eq!(first.image_id, Some(given_up[0].1.0));
    assert_eq!(first.event_type.as_deref(), Some("image.uploaded"));
    assert_eq!(first.reason.as_deref(), Some("disk unreadable"));
    assert_eq!(first.attempts, Some(3));
    assert!(first.failed_at.is_some());
    // A look hands its messages back by closing its channel, which the broker finishes
    // after the look returns: wait until they are ready again.
    eventually(Duration::from_secs(20), "the looked-at dead letters are back in their queue", || async {
        broker.depth(&dead_queue).await == 3
    })
    .await;
    broker.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_moves_at_most_its_limit_back_with_their_identity_and_all_their_attempts() {
    let config = rabbit_config();
    let broker = TestBroker::start(&config).await;
    let given_up = give_up(&broker, 3).await;
    let (queue, dead_queue) =
        (broker.topology.queue(JobQueue::Thumbnails), broker.topology.dead_letter_queue(JobQueue::Thumbnails));

    let done = redrive::redrive(&config, JobQueue::Thumbnails, 2).await.unwrap();
    assert_eq!(done, redrive::Redriven { moved: 2, remaining: 1 });
    assert_eq!(broker.depth(&dead_queue).await, 1);
    let checksums = broker.topology.queue(JobQueue::Checksums);
    assert_eq!(broker.depth(&checksums).await, 0, "a re-drive reaches its own job queue only");

    let back = broker.take_all(&queue).await;
    let ids: Vec<&str> = back.iter().filter_map(|message| message.message_id()).collect();
    assert_eq!(ids, [given_up[0].0.as_str(), given_up[1].0.as_str()]);
    for message in &back {
        assert_eq!(attempt_of(&message.properties), 1);
        for cleared in [headers::ERROR, headers::ATTEMPTS, headers::QUEUE, headers::FAILED_AT] {
            assert_eq!(message.header(cleared), None, "{cleared} is cleared");
        }
        assert_eq!(message.properties.delivery_mode(), &Some(2));
        let envelope: Envelope<ImageUploaded> = serde_json::from_slice(&message.body).unwrap();
        assert_eq!(envelope.id.to_string(), message.message_id().unwrap());
    }

    let rest = redrive::redrive(&config, JobQueue::Thumbnails, redrive::MAX_BATCH + 1).await.unwrap();
    assert_eq!(rest, redrive::Redriven { moved: 1, remaining: 0 });
    assert_eq!(broker.depth(&queue).await, 1);
    broker.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_stats_count_the_jobs_and_dead_letters_of_every_queue() {
    let config = rabbit_config();
    let broker = TestBroker::start(&config).await;
    give_up(&broker, 2).await;

    let stats = redrive::queue_stats(&config).await.unwrap();
    assert_eq!(stats.len(), JobQueue::ALL.len());
    let thumbnails = stats.iter().find(|stats| stats.queue == JobQueue::Thumbnails).unwrap();
    assert_eq!(thumbnails.name, broker.topology.queue(JobQueue::Thumbnails));
    assert_eq!((thumbnails.jobs.messages, thumbnails.dead.messages), (0, 2));
    assert!(stats.iter().filter(|stats| stats.queue != JobQueue::Thumbnails).all(|stats| stats.dead.messages == 0));
    broker.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_without_a_broker_fails_at_once_and_moves_nothing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut config = rabbit_config();
    config.url = format!("amqp://guest:guest@127.0.0.1:{closed_port}/%2f").into();

    let started = Instant::now();
    let error = redrive::redrive(&config, JobQueue::Thumbnails, 10).await.unwrap_err();
    assert_eq!(error.moved, 0);
    assert!(redrive::dead_letters(&config, JobQueue::Thumbnails, 10).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}
