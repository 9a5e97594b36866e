//! The [`Broker`] trait: what the coordinator and the workers need from a message broker.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;

/// A failure of the broker itself: it could not be reached, refused an operation, or
/// timed out. It names the operation and, for a connection, the URL.
///
/// The coordinator and the workers retry broker operations; a failure that outlasts
/// their patience becomes a [`flowgate::Error`](crate::Error) with
/// [`Cause::Broker`](crate::Cause::Broker) for the item concerned (coordinator) or ends
/// [`Worker::serve`](super::Worker::serve) with this error (a worker that cannot set
/// up its consumer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerError {
    message: String,
}

impl BrokerError {
    /// A broker failure described by `message`.
    pub fn new(message: impl Into<String>) -> Self {
        BrokerError {
            message: message.into(),
        }
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BrokerError {}

/// Where one item of one job goes: the task that runs it, the job it belongs to and its
/// position in the job's input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkAddress {
    /// The task's name (a [`Task`](super::Task)'s name).
    pub task: String,
    /// The job: one run of [`map_remote`](crate::FlowExt::map_remote), a unique token.
    pub job: String,
    /// The item's position in the job's input, from 0.
    pub position: u64,
}

impl WorkAddress {
    /// The subject the item is published on: `work.<task>.<job>.<position>`.
    pub fn subject(&self) -> String {
        format!("work.{}.{}.{}", self.task, self.job, self.position)
    }

    /// Reads a work subject back; `None` when `subject` is not of the form
    /// `work.<task>.<job>.<position>`.
    pub fn parse(subject: &str) -> Option<WorkAddress> {
        let mut parts = subject.split('.');
        let (work, task, job, position) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if work != "work" || parts.next().is_some() || task.is_empty() || job.is_empty() {
            return None;
        }
        Some(WorkAddress {
            task: task.to_owned(),
            job: job.to_owned(),
            position: position.parse().ok()?,
        })
    }

    /// The id that makes a repeated publication of the same item (or of its result) a
    /// duplicate the broker drops: `<job>/<position>`.
    pub fn message_id(&self) -> String {
        format!("{}/{}", self.job, self.position)
    }
}

/// A result as the broker hands it back to the coordinator: the item's position and
/// the encoded outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Returned {
    /// The position of the item this result is for.
    pub position: u64,
    /// The encoded outcome (the worker's result, or the reason it failed).
    pub payload: Vec<u8>,
}

/// An item the broker stopped delivering after its last delivery, without a result:
/// every worker that took it crashed or ran past the ack wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted {
    /// The broker's sequence number of the work message, as
    /// [`publish_work`](Broker::publish_work) returned it.
    pub sequence: u64,
    /// How many times it was delivered.
    pub deliveries: u64,
}

/// A message a worker could not process, set aside with the reason: an item that failed
/// at its last delivery, or a message that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The subject it was published on.
    pub subject: String,
    /// Its payload, as published.
    pub payload: Vec<u8>,
    /// How many times it was delivered.
    pub deliveries: u64,
    /// Why it was set aside: the last error, or the decode error.
    pub reason: String,
}

/// A stream the broker hands out, boxed.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = T> + Send + 'static>>;

/// What [`map_remote`](crate::FlowExt::map_remote) and [`Worker`](super::Worker) need from
/// a message broker, with the delivery semantics of a JetStream work queue: a work item
/// is delivered to one worker at a time, redelivered when it is not acknowledged within
/// the ack wait (or is refused with [`nak`](Delivery::nak)), and given up after the
/// consumer's maximum number of deliveries.
///
/// Two implementations: [`MemoryBroker`](super::MemoryBroker) (in one process, on
/// tokio's clock, for tests) and [`NatsBroker`](super::NatsBroker) (NATS JetStream).
/// Both pass the same conformance suite (`tests/distributed` in the repository).
///
/// Every method may fail with a [`BrokerError`]; the callers retry.
pub trait Broker: Clone + Send + Sync + 'static {
    /// A work message delivered to a worker.
    type Delivery: Delivery;

    /// The largest message the broker accepts, in bytes, headers included (for NATS, the
    /// server's `max_payload`, read from the connection).
    fn max_payload(&self) -> usize;

    /// The bytes a work message carries besides its payload (subject and headers), so
    /// that `payload + overhead <= max_payload` is the size check.
    fn overhead(&self, address: &WorkAddress) -> usize {
        // Subject, message id header and framing, with room to spare.
        2 * address.subject().len() + 64
    }

    /// Creates what a job of `task` needs (idempotent): the work queue and the results
    /// store.
    fn prepare_job(&self, task: &str) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Creates what a worker of `task` needs (idempotent): the work queue and the
    /// consumer the workers of `task` share.
    fn prepare_worker(&self, task: &str) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Whether a worker has set up `task` (its consumer exists now).
    fn has_worker(&self, task: &str) -> impl Future<Output = Result<bool, BrokerError>> + Send;

    /// Publishes a work item and waits until the broker stored it; returns its sequence
    /// number. Publishing the same address twice stores it once.
    fn publish_work(
        &self,
        address: &WorkAddress,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<u64, BrokerError>> + Send;

    /// A pull request for up to `max` work items of `task`: the stream yields them as
    /// they come and ends when `max` came or `wait` passed. A worker keeps reading it
    /// to its end (a delivery left unread would run out its ack wait).
    fn pull_work(
        &self,
        task: &str,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<BoxStream<Result<Self::Delivery, BrokerError>>, BrokerError>> + Send;

    /// Publishes the result of `address` and waits until the broker stored it.
    /// Publishing a result for the same address twice stores it once.
    fn publish_result(
        &self,
        address: &WorkAddress,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// The results of `job`, from the first one stored, then as they come; it does not
    /// end by itself.
    fn results(
        &self,
        job: &str,
    ) -> impl Future<Output = Result<BoxStream<Result<Returned, BrokerError>>, BrokerError>> + Send;

    /// The work items of `task` that the broker gave up on after the last delivery
    /// without a result, from now on.
    fn exhausted(
        &self,
        task: &str,
    ) -> impl Future<Output = Result<BoxStream<Exhausted>, BrokerError>> + Send;

    /// Sets a message aside in the dead-letter store of `task`.
    fn dead_letter(
        &self,
        task: &str,
        letter: DeadLetter,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Removes what is left of `job`: its work items not yet taken, and its results.
    fn purge_job(
        &self,
        task: &str,
        job: &str,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;
}

/// A work message delivered to a worker: acknowledge it when its result is stored,
/// refuse it to have it redelivered, or terminate it to stop its deliveries.
///
/// Dropping a delivery that was neither acknowledged, refused nor terminated refuses it
/// without delay (best effort), so that another worker takes it at once.
pub trait Delivery: Send + Sync + 'static {
    /// The subject it was published on (`work.<task>.<job>.<position>`).
    fn subject(&self) -> &str;

    /// Its payload.
    fn payload(&self) -> &[u8];

    /// This delivery's number, from 1.
    fn delivered(&self) -> u64;

    /// The consumer's maximum number of deliveries: the last delivery is the one with
    /// `delivered() >= max_deliver()`.
    fn max_deliver(&self) -> u64;

    /// The consumer's ack wait: a delivery not acknowledged, refused or reported in
    /// progress within it is redelivered.
    fn ack_wait(&self) -> Duration;

    /// Acknowledges it: the work is done and will not be delivered again.
    fn ack(self) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Refuses it: it is delivered again after `delay`.
    fn nak(self, delay: Duration) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Says the work is still going on: the ack wait starts again.
    fn in_progress(&self) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Stops its deliveries for good, without a result.
    fn term(self) -> impl Future<Output = Result<(), BrokerError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_subjects() {
        let address = WorkAddress {
            task: "count".into(),
            job: "j1".into(),
            position: 42,
        };
        assert_eq!(address.subject(), "work.count.j1.42");
        assert_eq!(
            WorkAddress::parse(&address.subject()),
            Some(address.clone())
        );
        assert_eq!(address.message_id(), "j1/42");
        for bad in [
            "work.count.j1",
            "work.count.j1.x",
            "jobs.count.j1.1",
            "work.count.j1.1.2",
            "work..j.1",
        ] {
            assert_eq!(WorkAddress::parse(bad), None, "{bad}");
        }
    }
}
