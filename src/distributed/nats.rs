//! [`NatsBroker`]: the [`Broker`] on NATS JetStream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream, AckKind};
use async_nats::HeaderMap;
use futures_util::StreamExt;
use serde::Deserialize;

use super::broker::{
    BoxStream, Broker, BrokerError, DeadLetter, Delivery, Exhausted, Returned, WorkAddress,
};
use crate::sync::lock;

/// The stream of work items: a work queue (an item is removed once acknowledged).
pub const WORK_STREAM: &str = "FLOWGATE_WORK";
/// The stream of results, per job (`results.<job>.<position>`).
pub const RESULTS_STREAM: &str = "FLOWGATE_RESULTS";
/// The stream of dead letters, per task (`dead.<task>`).
pub const DEAD_STREAM: &str = "FLOWGATE_DEAD";

/// A [`Broker`] on NATS JetStream (async-nats).
///
/// - Work goes to the stream `FLOWGATE_WORK` (subjects `work.>`, work-queue retention,
///   file storage), published with a message id (`Nats-Msg-Id: <job>/<position>`) and
///   an awaited acknowledgement. The workers of a task share one durable pull consumer,
///   `flowgate-<task>` (filter `work.<task>.>`, explicit acks, the ack wait, maximum
///   deliveries and maximum acks pending set here; deleted by the server after
///   [`inactive_threshold`](NatsBroker::with_inactive_threshold) without workers).
/// - Results go to `FLOWGATE_RESULTS` (subjects `results.>`, file storage), with a
///   message id; the coordinator reads its job's results with an ordered consumer and
///   purges them at the end.
/// - Dead letters go to `FLOWGATE_DEAD` (subjects `dead.<task>`), with the original
///   subject, the deliveries and the reason in headers (`Flowgate-Subject`,
///   `Flowgate-Deliveries`, `Flowgate-Reason`); read them with
///   [`dead_letters`](NatsBroker::dead_letters).
/// - Items the server gives up after the last delivery are read from its advisories
///   (`$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.FLOWGATE_WORK.flowgate-<task>`).
/// - The maximum message size is the server's `max_payload`, read from the connection.
///
/// A job's results stay stored until the job ends (then they are purged): a job of a
/// million chunks keeps a million results on the server's disk until its end.
///
/// The streams keep items and results for a day ([`max_age`](NatsBroker::with_max_age)), so
/// what a crashed coordinator leaves behind expires. The consumer's settings are those
/// of the first worker that created it; to change them, delete the consumer (running
/// workers set it up again, with their own settings, at their next pull).
///
/// ```no_run
/// use flowgate::distributed::NatsBroker;
/// use std::time::Duration;
///
/// # async fn run() -> Result<(), flowgate::distributed::BrokerError> {
/// let broker = NatsBroker::connect("nats://127.0.0.1:4222")
///     .await?
///     .with_ack_wait(Duration::from_secs(10))
///     .with_max_deliver(3);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NatsBroker {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    url: String,
    config: Config,
    consumers: Arc<Mutex<HashMap<String, consumer::PullConsumer>>>,
}

#[derive(Clone, Copy, Debug)]
struct Config {
    ack_wait: Duration,
    max_deliver: u64,
    max_ack_pending: usize,
    inactive_threshold: Duration,
    max_age: Duration,
}

/// The advisory the server publishes when it stops delivering an item.
#[derive(Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    deliveries: u64,
}

fn failed(what: impl std::fmt::Display, error: impl std::fmt::Display) -> BrokerError {
    BrokerError::new(format!("{what}: {error}"))
}

impl NatsBroker {
    /// Connects to the NATS server at `url` (e.g. `nats://127.0.0.1:4222`; several
    /// comma-separated URLs of one cluster are allowed).
    ///
    /// # Errors
    /// Within 10 s, an error naming the URL when the server cannot be reached or
    /// refuses the connection; after that, the client reconnects by itself whenever the
    /// connection drops.
    pub async fn connect(url: &str) -> Result<NatsBroker, BrokerError> {
        let connecting = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(url);
        let client = match tokio::time::timeout(Duration::from_secs(10), connecting).await {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => {
                return Err(failed(
                    format_args!("connecting to NATS at {url} failed"),
                    error,
                ))
            }
            Err(_) => {
                return Err(BrokerError::new(format!(
                    "connecting to NATS at {url} failed: no answer within 10 s"
                )))
            }
        };
        Ok(NatsBroker::from_client(client, url))
    }

    /// A broker on an existing connection (`url` names it in error messages).
    pub fn from_client(client: async_nats::Client, url: &str) -> NatsBroker {
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(Duration::from_secs(5));
        NatsBroker {
            client,
            jetstream,
            url: url.to_owned(),
            config: Config {
                ack_wait: Duration::from_secs(30),
                max_deliver: 5,
                max_ack_pending: 1000,
                inactive_threshold: Duration::from_secs(3600),
                max_age: Duration::from_secs(24 * 3600),
            },
            consumers: Arc::default(),
        }
    }

    /// The ack wait of the consumers this broker creates (default 30 s): a delivery
    /// not acknowledged or reported in progress within it is delivered again.
    ///
    /// # Panics
    /// If `ack_wait` is under a millisecond.
    #[track_caller]
    pub fn with_ack_wait(mut self, ack_wait: Duration) -> Self {
        assert!(
            ack_wait >= Duration::from_millis(1),
            "flowgate: `NatsBroker::with_ack_wait` needs `ack_wait` >= 1 ms, got {ack_wait:?}"
        );
        self.config.ack_wait = ack_wait;
        self
    }

    /// The maximum deliveries of an item by the consumers this broker creates
    /// (default 5).
    ///
    /// # Panics
    /// If `max_deliver` is zero.
    #[track_caller]
    pub fn with_max_deliver(mut self, max_deliver: u64) -> Self {
        assert!(
            max_deliver > 0,
            "flowgate: `NatsBroker::with_max_deliver` needs `max_deliver` > 0"
        );
        self.config.max_deliver = max_deliver;
        self
    }

    /// The cap on items out at all the workers of a task at once, for the consumers this
    /// broker creates (default 1,000).
    ///
    /// # Panics
    /// If `max_ack_pending` is zero.
    #[track_caller]
    pub fn with_max_ack_pending(mut self, max_ack_pending: usize) -> Self {
        assert!(
            max_ack_pending > 0,
            "flowgate: `NatsBroker::with_max_ack_pending` needs `max_ack_pending` > 0"
        );
        self.config.max_ack_pending = max_ack_pending;
        self
    }

    /// How long a task's consumer lives without any worker pulling (default 1 hour).
    pub fn with_inactive_threshold(mut self, threshold: Duration) -> Self {
        self.config.inactive_threshold = threshold;
        self
    }

    /// How long the streams this broker creates keep an item, a result or a dead letter
    /// (default 1 day).
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.config.max_age = max_age;
        self
    }

    /// The connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// The dead letters of `task`, oldest first.
    ///
    /// # Errors
    /// When the server fails to answer.
    pub async fn dead_letters(&self, task: &str) -> Result<Vec<DeadLetter>, BrokerError> {
        let subject = format!("dead.{task}");
        let stream = self.stream(DEAD_STREAM, "dead.>", false).await?;
        let count = self.count(DEAD_STREAM, &subject).await?;
        if count == 0 {
            return Ok(Vec::new());
        }
        let reader = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: subject,
                ..Default::default()
            })
            .await
            .map_err(|error| failed("reading dead letters failed", error))?;
        let mut messages = reader
            .messages()
            .await
            .map_err(|error| failed("reading dead letters failed", error))?;
        let mut letters = Vec::with_capacity(count);
        while letters.len() < count {
            let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
            let Ok(Some(Ok(message))) = next else {
                return Err(BrokerError::new(
                    "reading dead letters failed: the stream ended early",
                ));
            };
            let header = |name: &str| {
                message
                    .headers
                    .as_ref()
                    .and_then(|headers| headers.get(name))
                    .map(|value| value.as_str().to_owned())
                    .unwrap_or_default()
            };
            letters.push(DeadLetter {
                subject: header("Flowgate-Subject"),
                payload: message.payload.to_vec(),
                deliveries: header("Flowgate-Deliveries").parse().unwrap_or(0),
                reason: header("Flowgate-Reason"),
            });
        }
        Ok(letters)
    }

    /// How many messages of the stream `stream` are stored under subjects matching
    /// `filter`.
    ///
    /// # Errors
    /// When the server fails to answer.
    pub async fn count(&self, stream: &str, filter: &str) -> Result<usize, BrokerError> {
        let stream = self
            .jetstream
            .get_stream(stream)
            .await
            .map_err(|error| failed(format_args!("reading stream {stream} failed"), error))?;
        let mut subjects = stream
            .info_with_subjects(filter)
            .await
            .map_err(|error| failed("reading subjects failed", error))?;
        let mut total = 0;
        while let Some(subject) = subjects.next().await {
            let (_, count) = subject.map_err(|error| failed("reading subjects failed", error))?;
            total += count;
        }
        Ok(total)
    }

    async fn stream(
        &self,
        name: &str,
        subjects: &str,
        work_queue: bool,
    ) -> Result<stream::Stream, BrokerError> {
        let config = stream::Config {
            name: name.to_owned(),
            subjects: vec![subjects.to_owned()],
            retention: if work_queue {
                stream::RetentionPolicy::WorkQueue
            } else {
                stream::RetentionPolicy::Limits
            },
            storage: stream::StorageType::File,
            max_age: self.config.max_age,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        self.jetstream
            .get_or_create_stream(config)
            .await
            .map_err(|error| {
                failed(
                    format_args!("setting up stream {name} on {} failed", self.url),
                    error,
                )
            })
    }

    async fn consumer(&self, task: &str) -> Result<consumer::PullConsumer, BrokerError> {
        if let Some(consumer) = lock(&self.consumers).get(task) {
            return Ok(consumer.clone());
        }
        let stream = self.stream(WORK_STREAM, "work.>", true).await?;
        let name = format!("flowgate-{task}");
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: format!("work.{task}.>"),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.config.ack_wait,
            max_deliver: i64::try_from(self.config.max_deliver).unwrap_or(i64::MAX),
            max_ack_pending: i64::try_from(self.config.max_ack_pending).unwrap_or(i64::MAX),
            inactive_threshold: self.config.inactive_threshold,
            ..Default::default()
        };
        let consumer = stream
            .get_or_create_consumer(&name, config)
            .await
            .map_err(|error| failed(format_args!("setting up consumer {name} failed"), error))?;
        lock(&self.consumers).insert(task.to_owned(), consumer.clone());
        Ok(consumer)
    }

    async fn publish(
        &self,
        subject: String,
        id: Option<String>,
        headers: Option<HeaderMap>,
        payload: Vec<u8>,
    ) -> Result<u64, BrokerError> {
        let mut headers = headers.unwrap_or_default();
        if let Some(id) = id {
            headers.insert("Nats-Msg-Id", id.as_str());
        }
        let ack = self
            .jetstream
            .publish_with_headers(subject.clone(), headers, payload.into())
            .await
            .map_err(|error| failed(format_args!("publishing to {subject} failed"), error))?;
        let ack = ack.await.map_err(|error| {
            failed(
                format_args!("publishing to {subject} was not acknowledged"),
                error,
            )
        })?;
        Ok(ack.sequence)
    }
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker")
            .field("url", &self.url)
            .field("config", &self.config)
            .finish()
    }
}

impl Broker for NatsBroker {
    type Delivery = NatsDelivery;

    fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    async fn prepare_job(&self, _task: &str) -> Result<(), BrokerError> {
        self.stream(WORK_STREAM, "work.>", true).await?;
        self.stream(RESULTS_STREAM, "results.>", false).await?;
        Ok(())
    }

    async fn prepare_worker(&self, task: &str) -> Result<(), BrokerError> {
        self.stream(RESULTS_STREAM, "results.>", false).await?;
        self.stream(DEAD_STREAM, "dead.>", false).await?;
        self.consumer(task).await.map(drop)
    }

    async fn has_worker(&self, task: &str) -> Result<bool, BrokerError> {
        let stream = self.stream(WORK_STREAM, "work.>", true).await?;
        let name = format!("flowgate-{task}");
        match stream.consumer_info(&name).await {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {
                Ok(false)
            }
            Err(error) => Err(failed(
                format_args!("reading consumer {name} failed"),
                error,
            )),
        }
    }

    async fn publish_work(
        &self,
        address: &WorkAddress,
        payload: Vec<u8>,
    ) -> Result<u64, BrokerError> {
        self.publish(address.subject(), Some(address.message_id()), None, payload)
            .await
    }

    async fn pull_work(
        &self,
        task: &str,
        max: usize,
        wait: Duration,
    ) -> Result<BoxStream<Result<NatsDelivery, BrokerError>>, BrokerError> {
        let consumer = match self.consumer(task).await {
            Ok(consumer) => consumer,
            Err(error) => {
                // The consumer may have been deleted (inactivity, an operator): set it
                // up again next time.
                lock(&self.consumers).remove(task);
                return Err(error);
            }
        };
        // `fetch` ends as soon as messages came (or `wait` passed); `batch` would wait
        // for all `max`.
        let batch = consumer
            .fetch()
            .max_messages(max)
            .expires(wait.max(Duration::from_millis(100)))
            .messages()
            .await;
        let batch = match batch {
            Ok(batch) => batch,
            Err(error) => {
                lock(&self.consumers).remove(task);
                return Err(failed(
                    format_args!("pulling work of task {task} failed"),
                    error,
                ));
            }
        };
        // The consumer's own settings: another worker may have created it.
        let info = &consumer.cached_info().config;
        let max_deliver = u64::try_from(info.max_deliver)
            .ok()
            .filter(|max| *max > 0)
            .unwrap_or(u64::MAX);
        let ack_wait = if info.ack_wait.is_zero() {
            Duration::from_secs(30)
        } else {
            info.ack_wait
        };
        let consumers = Arc::clone(&self.consumers);
        let task = task.to_owned();
        Ok(Box::pin(batch.map(move |message| {
            let message = message.map_err(|error| {
                // Most likely the consumer is gone (deleted by an operator, or after
                // its inactive threshold): set it up again at the next pull.
                lock(&consumers).remove(&task);
                failed(format_args!("pulling work of task {task} failed"), error)
            })?;
            let delivered = message
                .info()
                .map(|info| u64::try_from(info.delivered).unwrap_or(0))
                .map_err(|error| failed("reading a delivery's metadata failed", error))?;
            Ok(NatsDelivery {
                message: Some(message),
                delivered,
                max_deliver,
                ack_wait,
            })
        })))
    }

    async fn publish_result(
        &self,
        address: &WorkAddress,
        payload: Vec<u8>,
    ) -> Result<(), BrokerError> {
        let subject = format!("results.{}.{}", address.job, address.position);
        self.publish(subject, Some(address.message_id()), None, payload)
            .await
            .map(drop)
    }

    async fn results(
        &self,
        job: &str,
    ) -> Result<BoxStream<Result<Returned, BrokerError>>, BrokerError> {
        let stream = self.stream(RESULTS_STREAM, "results.>", false).await?;
        let reader = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: format!("results.{job}.>"),
                ..Default::default()
            })
            .await
            .map_err(|error| {
                failed(
                    format_args!("reading the results of job {job} failed"),
                    error,
                )
            })?;
        let messages = reader.messages().await.map_err(|error| {
            failed(
                format_args!("reading the results of job {job} failed"),
                error,
            )
        })?;
        Ok(Box::pin(messages.map(|message| {
            let message = message.map_err(|error| failed("reading results failed", error))?;
            let position = message
                .subject
                .rsplit('.')
                .next()
                .and_then(|position| position.parse().ok())
                .ok_or_else(|| {
                    BrokerError::new(format!("a result on {} names no position", message.subject))
                })?;
            Ok(Returned {
                position,
                payload: message.payload.to_vec(),
            })
        })))
    }

    async fn exhausted(&self, task: &str) -> Result<BoxStream<Exhausted>, BrokerError> {
        let subject =
            format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{WORK_STREAM}.flowgate-{task}");
        let advisories = self
            .client
            .subscribe(subject.clone())
            .await
            .map_err(|error| failed(format_args!("subscribing to {subject} failed"), error))?;
        Ok(Box::pin(advisories.filter_map(|message| async move {
            let advisory: MaxDeliveries = serde_json::from_slice(&message.payload).ok()?;
            Some(Exhausted {
                sequence: advisory.stream_seq,
                deliveries: advisory.deliveries,
            })
        })))
    }

    async fn dead_letter(&self, task: &str, letter: DeadLetter) -> Result<(), BrokerError> {
        self.stream(DEAD_STREAM, "dead.>", false).await?;
        let mut headers = HeaderMap::new();
        headers.insert("Flowgate-Subject", letter.subject.as_str());
        headers.insert(
            "Flowgate-Deliveries",
            letter.deliveries.to_string().as_str(),
        );
        // A header value is one line.
        let reason: String = letter
            .reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        headers.insert("Flowgate-Reason", reason.as_str());
        // No message id: two letters may look alike (the same stranger's message twice),
        // and a letter stored twice is better than one dropped.
        self.publish(format!("dead.{task}"), None, Some(headers), letter.payload)
            .await
            .map(drop)
    }

    async fn purge_job(&self, task: &str, job: &str) -> Result<(), BrokerError> {
        let work = self.stream(WORK_STREAM, "work.>", true).await?;
        work.purge()
            .filter(format!("work.{task}.{job}.>"))
            .await
            .map_err(|error| failed(format_args!("purging the work of job {job} failed"), error))?;
        let results = self.stream(RESULTS_STREAM, "results.>", false).await?;
        results
            .purge()
            .filter(format!("results.{job}.>"))
            .await
            .map_err(|error| {
                failed(
                    format_args!("purging the results of job {job} failed"),
                    error,
                )
            })?;
        Ok(())
    }
}

/// A work message delivered by a [`NatsBroker`].
pub struct NatsDelivery {
    message: Option<jetstream::Message>,
    delivered: u64,
    max_deliver: u64,
    ack_wait: Duration,
}

impl NatsDelivery {
    /// Drops the delivery as a crashed worker would: neither acknowledged nor refused,
    /// it is delivered again when its ack wait passes.
    pub fn abandon(mut self) {
        self.message = None;
    }

    fn message(&self) -> &jetstream::Message {
        self.message
            .as_ref()
            .expect("flowgate: a delivery's message is present until it is settled")
    }

    async fn settle(mut self, kind: AckKind, what: &str) -> Result<(), BrokerError> {
        let message = self
            .message
            .take()
            .expect("flowgate: a delivery is settled once");
        message
            .ack_with(kind)
            .await
            .map_err(|error| failed(format_args!("{what} {} failed", message.subject), error))
    }
}

impl Drop for NatsDelivery {
    fn drop(&mut self) {
        if let Some(message) = self.message.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                });
            }
        }
    }
}

impl std::fmt::Debug for NatsDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsDelivery")
            .field(
                "subject",
                &self
                    .message
                    .as_ref()
                    .map(|message| message.subject.as_str()),
            )
            .field("delivered", &self.delivered)
            .finish()
    }
}

impl Delivery for NatsDelivery {
    fn subject(&self) -> &str {
        self.message().subject.as_str()
    }

    fn payload(&self) -> &[u8] {
        &self.message().payload
    }

    fn delivered(&self) -> u64 {
        self.delivered
    }

    fn max_deliver(&self) -> u64 {
        self.max_deliver
    }

    fn ack_wait(&self) -> Duration {
        self.ack_wait
    }

    async fn ack(self) -> Result<(), BrokerError> {
        self.settle(AckKind::Ack, "acknowledging").await
    }

    async fn nak(self, delay: Duration) -> Result<(), BrokerError> {
        self.settle(AckKind::Nak(Some(delay)), "refusing").await
    }

    async fn in_progress(&self) -> Result<(), BrokerError> {
        let message = self.message();
        message.ack_with(AckKind::Progress).await.map_err(|error| {
            failed(
                format_args!("reporting progress on {} failed", message.subject),
                error,
            )
        })
    }

    async fn term(self) -> Result<(), BrokerError> {
        self.settle(AckKind::Term, "terminating").await
    }
}
