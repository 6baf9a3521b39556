//! The consumer runtime against the real RabbitMQ, each test under its own queue prefix,
//! with handlers that succeed, fail, stall or count.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use shared::broker::{JobQueue, Outgoing, Publisher, headers};
use shared::config::Config;
use shared::events::{Envelope, ImageUploaded};
use shared::model::ImageId;
use shared::test_support::{TcpProxy, TestBroker, config, eventually};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use worker::consumer::{Consumer, GivenUp, Handler, Job, JobError};

const WAIT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy)]
enum Behaviour {
    Succeed,
    Retry,
    Reject,
    /// Takes this long, then succeeds.
    Take(Duration),
    /// Panics on the first attempt, succeeds on the next.
    PanicFirst,
}

/// Records every call; behaves as told.
struct Recorder {
    behaviour: Behaviour,
    calls: Mutex<Vec<(Job, Instant)>>,
    finished: Mutex<Vec<String>>,
    dead: Mutex<Vec<(Job, String)>>,
}

impl Recorder {
    fn new(behaviour: Behaviour) -> Arc<Self> {
        Arc::new(Self { behaviour, calls: Mutex::default(), finished: Mutex::default(), dead: Mutex::default() })
    }

    fn calls(&self) -> Vec<Job> {
        self.calls.lock().unwrap().iter().map(|(job, _)| job.clone()).collect()
    }

    fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    fn finished(&self) -> Vec<String> {
        self.finished.lock().unwrap().clone()
    }

    fn dead(&self) -> Vec<(Job, String)> {
        self.dead.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Handler for Recorder {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        self.calls.lock().unwrap().push((job.clone(), Instant::now()));
        let outcome = match self.behaviour {
            Behaviour::Succeed => Ok(()),
            Behaviour::Retry => Err(JobError::retry("storage is busy")),
            Behaviour::Reject => Err(JobError::reject("not an image")),
            Behaviour::Take(duration) => {
                tokio::time::sleep(duration).await;
                Ok(())
            }
            Behaviour::PanicFirst => {
                assert!(job.attempt > 1, "the handler crashed");
                Ok(())
            }
        };
        if outcome.is_ok() {
            self.finished.lock().unwrap().push(job.message_id.clone().unwrap_or_default());
        }
        outcome
    }

    async fn on_dead_letter(&self, job: &Job, reason: &str, _given_up: GivenUp) {
        self.dead.lock().unwrap().push((job.clone(), reason.to_owned()));
    }
}

struct Harness {
    config: Config,
    broker: TestBroker,
    publisher: Publisher,
    shutdown: CancellationToken,
}

impl Harness {
    async fn start(adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = config();
        config.worker.concurrency = 4;
        config.worker.shutdown_grace_secs = 5;
        adjust(&mut config);
        let broker = TestBroker::start(&config.rabbitmq).await;
        let publisher = Publisher::new(&config.rabbitmq, "test publisher");
        Self { config, broker, publisher, shutdown: CancellationToken::new() }
    }

    /// Publishes `count` `image.uploaded` events; returns their ids.
    async fn publish(&self, count: usize) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        for _ in 0..count {
            let envelope = Envelope::new(ImageUploaded { image_id: ImageId::new() });
            let body = serde_json::to_vec(&envelope).unwrap();
            self.publisher.publish_event(envelope.id, "image.uploaded", body).await.unwrap();
            ids.insert(envelope.id.to_string());
        }
        ids
    }

    fn consume(&self, config: &Config, handler: Arc<Recorder>) -> JoinHandle<()> {
        let consumer = Consumer::new(config, JobQueue::Thumbnails, handler);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move { consumer.run(shutdown).await.expect("the consumer ends cleanly") })
    }

    fn queue(&self) -> String {
        self.broker.topology.queue(JobQueue::Thumbnails)
    }

    fn dead_letter_queue(&self) -> String {
        self.broker.topology.dead_letter_queue(JobQueue::Thumbnails)
    }

    async fn stop(&self, consumer: JoinHandle<()>) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, consumer).await.expect("the consumer stops").unwrap();
    }

    async fn delete(self) {
        self.publisher.close().await;
        self.broker.delete().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_succeeds_is_acked_exactly_once() {
    let harness = Harness::start(|_| {}).await;
    let handler = Recorder::new(Behaviour::Succeed);
    let consumer = harness.consume(&harness.config, handler.clone());
    let ids = harness.publish(5).await;

    eventually(WAIT, "every job is handled", || async { handler.call_count() >= 5 }).await;
    harness.stop(consumer).await;

    // Acked: nothing comes back to the queue when the consumer's channel closes.
    assert_eq!(harness.broker.depth(&harness.queue()).await, 0);
    assert_eq!(harness.broker.depth(&harness.dead_letter_queue()).await, 0);
    let calls = handler.calls();
    assert_eq!(calls.len(), 5, "each job is handled once");
    let handled: BTreeSet<String> = calls.iter().filter_map(|job| job.message_id.clone()).collect();
    assert_eq!(handled, ids);
    assert!(calls.iter().all(|job| job.attempt == 1 && job.event_type == "image.uploaded"));
    harness.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_failing_is_retried_with_back_off_then_dead_lettered_with_its_reason() {
    let harness = Harness::start(|_| {}).await; // maxAttempts 3, retry delay 1 s
    let handler = Recorder::new(Behaviour::Retry);
    let consumer = harness.consume(&harness.config, handler.clone());
    let ids = harness.publish(1).await;
    let id = ids.first().unwrap().clone();

    harness.broker.wait_for_depth(&harness.dead_letter_queue(), 1, WAIT).await;
    eventually(WAIT, "on_dead_letter is called", || async { !handler.dead().is_empty() }).await;
    harness.stop(consumer).await;

    let calls = handler.calls.lock().unwrap().clone();
    assert_eq!(calls.iter().map(|(job, _)| job.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    for pair in calls.windows(2) {
        let waited = pair[1].1 - pair[0].1;
        assert!(waited >= Duration::from_millis(900), "retried after {waited:?}, before its back-off");
    }
    let dead = handler.dead();
    assert_eq!(dead.len(), 1, "on_dead_letter is called once");
    assert_eq!(dead[0].0.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(dead[0].1, "storage is busy");

    let dead_letters = harness.broker.take_all(&harness.dead_letter_queue()).await;
    assert_eq!(dead_letters.len(), 1);
    let message = &dead_letters[0];
    assert_eq!(message.message_id(), Some(id.as_str()));
    assert_eq!(message.header(headers::ERROR).as_deref(), Some("storage is busy"));
    assert_eq!(message.header(headers::ATTEMPTS).as_deref(), Some("3"));
    assert_eq!(message.header(headers::QUEUE), Some(harness.queue()));
    assert!(message.header(headers::FAILED_AT).is_some());
    assert_eq!(harness.broker.depth(&harness.queue()).await, 0);
    assert_eq!(harness.broker.depth(&harness.broker.topology.retry_queue(1)).await, 0);
    harness.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_job_goes_straight_to_the_dead_letter_queue() {
    let harness = Harness::start(|_| {}).await;
    let handler = Recorder::new(Behaviour::Reject);
    let consumer = harness.consume(&harness.config, handler.clone());
    harness.publish(1).await;

    harness.broker.wait_for_depth(&harness.dead_letter_queue(), 1, WAIT).await;
    eventually(WAIT, "on_dead_letter is called", || async { !handler.dead().is_empty() }).await;
    harness.stop(consumer).await;

    assert_eq!(handler.call_count(), 1, "no retry");
    assert_eq!(handler.dead().len(), 1);
    let message = &harness.broker.take_all(&harness.dead_letter_queue()).await[0];
    assert_eq!(message.header(headers::ERROR).as_deref(), Some("not an image"));
    assert_eq!(message.header(headers::ATTEMPTS).as_deref(), Some("1"));
    harness.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_is_dead_lettered_without_reaching_the_handler() {
    let harness = Harness::start(|_| {}).await;
    let handler = Recorder::new(Behaviour::Succeed);
    let consumer = harness.consume(&harness.config, handler.clone());
    let garbage = Outgoing {
        exchange: harness.broker.topology.events_exchange(),
        routing_key: "image.uploaded".to_owned(),
        body: b"{not json".to_vec(),
        properties: BasicProperties::default().with_message_id("garbage-1".into()),
        mandatory: true,
    };
    harness.publisher.publish(&garbage).await.unwrap();

    harness.broker.wait_for_depth(&harness.dead_letter_queue(), 1, WAIT).await;
    harness.stop(consumer).await;

    assert_eq!(handler.call_count(), 0);
    let message = &harness.broker.take_all(&harness.dead_letter_queue()).await[0];
    assert_eq!(message.message_id(), Some("garbage-1"));
    assert!(message.header(headers::ERROR).is_some_and(|e| e.starts_with("malformed message")));
    assert_eq!(message.body, b"{not json");
    harness.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_its_connection_is_cut_the_consumer_reconnects_and_finishes_the_rest() {
    let harness = Harness::start(|config| config.worker.concurrency = 2).await;
    let proxy = TcpProxy::start(&harness.config.rabbitmq).await;
    let mut proxied = harness.config.clone();
    proxied.rabbitmq = proxy.proxied(&harness.config.rabbitmq);
    let handler = Recorder::new(Behaviour::Take(Duration::from_millis(50)));
    let ids = harness.publish(30).await;
    let consumer = harness.consume(&proxied, handler.clone());

    eventually(WAIT, "some jobs are done", || async { handler.finished().len() >= 5 }).await;
    proxy.cut_connections();
    eventually(WAIT, "every job is done", || async { handler.finished().into_iter().collect::<BTreeSet<_>>() == ids })
        .await;
    eventually(WAIT, "the queue is empty", || async { harness.broker.depth(&harness.queue()).await == 0 }).await;
    assert_eq!(harness.broker.consumers(&harness.queue()).await, 1, "consuming again");
    harness.stop(consumer).await;

    assert_eq!(harness.broker.depth(&harness.queue()).await, 0, "every job was acked");
    assert_eq!(harness.broker.depth(&harness.dead_letter_queue()).await, 0);
    harness.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_unfinished_jobs_to_the_queue() {
    let harness = Harness::start(|config| {
        config.worker.concurrency = 2;
        config.worker.shutdown_grace_secs = 1;
    })
    .await;
    let handler = Recorder::new(Behaviour::Take(Duration::from_secs(60)));
    let consumer = harness.consume(&harness.config, handler.clone());
    harness.publish(5).await;

    eventually(WAIT, "two jobs are running", || async { handler.call_count() == 2 }).await;
    let stopping = Instant::now();
    harness.stop(consumer).await;
    assert!(stopping.elapsed() < Duration::from_secs(5), "stopped after {:?}", stopping.elapsed());

    // Two abandoned after the grace period, three prefetched but never started.
    harness.broker.wait_for_depth(&harness.queue(), 5, WAIT).await;
    assert!(handler.finished().is_empty());
    assert_eq!(harness.broker.depth(&harness.dead_letter_queue()).await, 0);
    harness.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_running_job_finish_within_the_grace_period() {
    let harness = Harness::start(|config| config.worker.concurrency = 1).await;
    let handler = Recorder::new(Behaviour::Take(Duration::from_millis(700)));
    let consumer = harness.consume(&harness.config, handler.clone());
    harness.publish(3).await;

    eventually(WAIT, "a job is running", || async { handler.call_count() == 1 }).await;
    harness.stop(consumer).await;

    assert_eq!(handler.finished().len(), 1, "the running job finished");
    assert_eq!(handler.call_count(), 1, "no new job started after shutdown");
    harness.broker.wait_for_depth(&harness.queue(), 2, WAIT).await;
    harness.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_panics_is_retried_instead_of_losing_the_job() {
    let harness = Harness::start(|_| {}).await;
    let handler = Recorder::new(Behaviour::PanicFirst);
    let consumer = harness.consume(&harness.config, handler.clone());
    harness.publish(1).await;

    eventually(WAIT, "the retry succeeds", || async { handler.finished().len() == 1 }).await;
    harness.stop(consumer).await;

    assert_eq!(handler.calls().iter().map(|job| job.attempt).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(harness.broker.depth(&harness.queue()).await, 0);
    assert_eq!(harness.broker.depth(&harness.dead_letter_queue()).await, 0);
    harness.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_consumes_every_job_queue_and_stops_on_shutdown() {
    let harness = Harness::start(|_| {}).await;
    let storage = tempfile::tempdir().unwrap();
    let mut config = harness.config.clone();
    config.storage.base_path = storage.path().to_owned();
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(worker::run(config, shutdown.clone()));

    for queue in JobQueue::ALL {
        let name = harness.broker.topology.queue(*queue);
        eventually(WAIT, &format!("{name} has a consumer"), || async { harness.broker.consumers(&name).await == 1 })
            .await;
    }
    shutdown.cancel();
    tokio::time::timeout(WAIT, worker).await.expect("the worker stops").unwrap().expect("and exits cleanly");
    for queue in JobQueue::ALL {
        assert_eq!(harness.broker.consumers(&harness.broker.topology.queue(*queue)).await, 0);
    }
    harness.delete().await;
}
