//! The outbox relay against real PostgreSQL (one database per test) and RabbitMQ (one queue
//! prefix per test).

use std::collections::BTreeSet;
use std::time::Duration;

use shared::broker::{BrokerError, JobQueue, Publisher};
use shared::db::outbox;
use shared::events::ImageUploaded;
use shared::model::ImageId;
use shared::relay::{RelayError, publish_pending_once, run, run_polling_every};
use shared::test_support::{TcpProxy, TestBroker, eventually, rabbit_config};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

async fn enqueue(pool: &PgPool, count: usize) -> BTreeSet<String> {
    let mut tx = pool.begin().await.unwrap();
    let mut ids = BTreeSet::new();
    for _ in 0..count {
        let id = outbox::enqueue(&mut *tx, ImageUploaded { image_id: ImageId::new() }).await.unwrap();
        ids.insert(id.to_string());
    }
    tx.commit().await.unwrap();
    ids
}

async fn unpublished(pool: &PgPool) -> i64 {
    outbox::backlog(pool).await.unwrap().0
}

/// Fewest publication attempts recorded on a pending row.
async fn least_attempts(pool: &PgPool) -> i32 {
    sqlx::query_scalar::<_, Option<i32>>("SELECT min(attempts) FROM outbox WHERE published_at IS NULL")
        .fetch_one(pool)
        .await
        .unwrap()
        .unwrap_or(0)
}

fn ids_of(messages: &[shared::test_support::TakenMessage]) -> Vec<String> {
    messages.iter().map(|m| m.message_id().expect("every event has a message_id").to_owned()).collect()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn enqueued_events_are_published_once_and_marked_sent(pool: PgPool) {
    let config = rabbit_config();
    let broker = TestBroker::start(&config).await;
    let publisher = Publisher::new(&config, "test relay");
    let ids = enqueue(&pool, 3).await;

    assert_eq!(publish_pending_once(&pool, &publisher).await.unwrap(), 3);
    assert_eq!(publish_pending_once(&pool, &publisher).await.unwrap(), 0, "nothing is published twice");
    assert_eq!(unpublished(&pool).await, 0);

    let queue = broker.topology.queue(JobQueue::Thumbnails);
    broker.wait_for_depth(&queue, 3, WAIT).await;
    let messages = broker.take_all(&queue).await;
    assert_eq!(ids_of(&messages).into_iter().collect::<BTreeSet<_>>(), ids);
    let envelope: serde_json::Value = serde_json::from_slice(&messages[0].body).unwrap();
    assert_eq!(envelope["type"], "image.uploaded");
    assert!(ids.contains(envelope["id"].as_str().unwrap()), "the body is the stored envelope");
    publisher.close().await;
    broker.delete().await;
}

/// Events are published `mandatory`: one that no queue takes (its queues lost) is not
/// dropped but stays in the outbox with the reason, and goes out once the topology is back.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_event_routed_to_no_queue_stays_in_the_outbox_until_its_queues_are_back(pool: PgPool) {
    let config = rabbit_config();
    let broker = TestBroker::start(&config).await;
    let publisher = Publisher::new(&config, "test relay");
    for queue in [JobQueue::Thumbnails, JobQueue::Checksums] {
        broker.delete_queue(&broker.topology.queue(queue)).await;
    }
    let ids = enqueue(&pool, 1).await;
    let error = publish_pending_once(&pool, &publisher).await.unwrap_err();
    assert!(matches!(error, RelayError::Broker { error: BrokerError::Unroutable { .. }, .. }), "{error}");
    assert_eq!(unpublished(&pool).await, 1, "kept, not dropped");
    assert_eq!(least_attempts(&pool).await, 1, "the failure is recorded");

    broker.topology.declare(&config).await.unwrap();
    assert_eq!(publish_pending_once(&pool, &publisher).await.unwrap(), 1);
    let queue = broker.topology.queue(JobQueue::Thumbnails);
    broker.wait_for_depth(&queue, 1, WAIT).await;
    assert_eq!(ids_of(&broker.take_all(&queue).await).into_iter().collect::<BTreeSet<_>>(), ids);
    publisher.close().await;
    broker.delete().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn two_relays_running_at_once_publish_each_of_200_rows_exactly_once(pool: PgPool) {
    let config = rabbit_config();
    let broker = TestBroker::start(&config).await;
    let shutdown = CancellationToken::new();
    let relays: Vec<_> = (0..2)
        .map(|n| tokio::spawn(run(pool.clone(), Publisher::new(&config, &format!("relay {n}")), shutdown.clone())))
        .collect();
    let mut ids = BTreeSet::new();
    for _ in 0..4 {
        ids.extend(enqueue(&pool, 50).await);
    }

    eventually(WAIT, "every row is published", || async { unpublished(&pool).await == 0 }).await;
    shutdown.cancel();
    for relay in relays {
        tokio::time::timeout(Duration::from_secs(5), relay).await.expect("relays stop on shutdown").unwrap();
    }

    let queue = broker.topology.queue(JobQueue::Checksums);
    broker.wait_for_depth(&queue, 200, WAIT).await;
    let received = ids_of(&broker.take_all(&queue).await);
    assert_eq!(received.len(), 200, "no duplicates");
    assert_eq!(received.into_iter().collect::<BTreeSet<_>>(), ids);
    broker.delete().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn rows_wait_out_a_broker_outage_and_go_out_when_it_is_back(pool: PgPool) {
    let config = rabbit_config();
    let broker = TestBroker::start(&config).await;
    let proxy = TcpProxy::start(&config).await;
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(run(pool.clone(), Publisher::new(&proxy.proxied(&config), "relay"), shutdown.clone()));
    let before = enqueue(&pool, 2).await;
    eventually(WAIT, "the first rows are published", || async { unpublished(&pool).await == 0 }).await;

    proxy.stop().await;
    let during = enqueue(&pool, 5).await;
    eventually(WAIT, "failed attempts are recorded", || async { least_attempts(&pool).await >= 2 }).await;
    assert_eq!(unpublished(&pool).await, 5, "nothing is lost or skipped");
    let last_error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM outbox WHERE published_at IS NULL LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(last_error.is_some_and(|e| e.contains("RabbitMQ")));

    proxy.resume().await;
    eventually(WAIT, "the waiting rows are published", || async { unpublished(&pool).await == 0 }).await;
    shutdown.cancel();
    relay.await.unwrap();

    let queue = broker.topology.queue(JobQueue::Thumbnails);
    broker.wait_for_depth(&queue, 7, WAIT).await;
    let received = ids_of(&broker.take_all(&queue).await);
    assert_eq!(received.len(), 7);
    let expected: BTreeSet<String> = before.union(&during).cloned().collect();
    assert_eq!(received.into_iter().collect::<BTreeSet<_>>(), expected);
    broker.delete().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_failed_pass_records_the_failure_and_keeps_the_rows(pool: PgPool) {
    let config = rabbit_config();
    let broker = TestBroker::start(&config).await;
    let proxy = TcpProxy::start(&config).await;
    let publisher = Publisher::new(&proxy.proxied(&config), "test relay");
    proxy.stop().await;
    enqueue(&pool, 3).await;

    assert!(publish_pending_once(&pool, &publisher).await.is_err());
    assert_eq!(unpublished(&pool).await, 3);
    assert_eq!(least_attempts(&pool).await, 1);

    proxy.resume().await;
    assert_eq!(publish_pending_once(&pool, &publisher).await.unwrap(), 3);
    assert_eq!(unpublished(&pool).await, 0);
    publisher.close().await;
    broker.delete().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_relay_publishes_a_new_row_without_waiting_for_a_poll(pool: PgPool) {
    let config = rabbit_config();
    let broker = TestBroker::start(&config).await;
    let shutdown = CancellationToken::new();
    // Polling far beyond the test's own timeout: only the insert's notification can wake it.
    let never = Duration::from_secs(3600);
    let relay =
        tokio::spawn(run_polling_every(pool.clone(), Publisher::new(&config, "relay"), shutdown.clone(), never));
    enqueue(&pool, 1).await;
    eventually(WAIT, "the first row is published", || async { unpublished(&pool).await == 0 }).await;

    enqueue(&pool, 1).await;
    eventually(WAIT, "the second row is published on its notification", || async { unpublished(&pool).await == 0 })
        .await;
    shutdown.cancel();
    relay.await.unwrap();
    broker.delete().await;
}
