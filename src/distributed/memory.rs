//! [`MemoryBroker`]: a broker in one process, with a JetStream work queue's semantics.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::broker::{
    BoxStream, Broker, BrokerError, DeadLetter, Delivery, Exhausted, Returned, WorkAddress,
};
use crate::sync::lock;

/// A broker in one process, with the delivery semantics of a JetStream work queue, on
/// tokio's clock: for tests of pipelines and workers without a server (exact on the
/// paused clock).
///
/// - A work item goes to one worker at a time. One not acknowledged within the ack
///   wait (default 30 s; [`in_progress`](Delivery::in_progress) restarts it) or refused
///   with [`nak`](Delivery::nak) is delivered again; when its `max_deliver`-th delivery
///   (default 5) runs out or is refused, it is given up and reported on
///   [`Broker::exhausted`].
/// - At most `max_ack_pending` items of a task (default 1,000) are out at its workers at
///   once.
/// - Work and results published twice under the same address are stored once.
/// - [`dead_letters`](MemoryBroker::dead_letters), [`queued`](MemoryBroker::queued) and
///   [`stored_results`](MemoryBroker::stored_results) let a test see inside.
///
/// Clones share the same broker. The `with_*` settings make a new, empty broker: set
/// them first, then clone it for the workers and the coordinators.
///
/// ```
/// use flowgate::distributed::{MemoryBroker, Task, Worker};
/// use flowgate::prelude::*;
/// use futures::StreamExt;
/// use tokio_util::sync::CancellationToken;
///
/// const DOUBLE: Task<u64, u64> = Task::new("double");
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let broker = MemoryBroker::new();
/// let stop = CancellationToken::new();
/// let worker = Worker::new(broker.clone(), 4)
///     .task(DOUBLE, |n: u64| async move { Ok::<_, String>(n * 2) })
///     .serve(stop.clone());
/// let worker = tokio::spawn(worker);
///
/// let doubled: Vec<u64> = stream! { for n in 0..10u64 { yield n } }
///     .map_remote(broker.clone(), DOUBLE, 4)
///     .map(|result| result.unwrap())
///     .collect()
///     .await;
/// assert_eq!(doubled, (0..10).map(|n| n * 2).collect::<Vec<_>>());
///
/// stop.cancel();
/// worker.await.unwrap().unwrap();
/// assert!(broker.dead_letters().is_empty());
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    changed: Notify,
    config: Config,
}

#[derive(Clone, Copy)]
struct Config {
    ack_wait: Duration,
    max_deliver: u64,
    max_ack_pending: usize,
    max_payload: usize,
}

#[derive(Default)]
struct State {
    next_sequence: u64,
    // By sequence: delivery order is publication order.
    work: BTreeMap<u64, Work>,
    work_ids: HashSet<String>,
    workers: HashSet<String>,
    results: HashMap<String, Vec<Returned>>,
    result_ids: HashSet<String>,
    dead: Vec<(String, DeadLetter)>,
    // Every exhausted item, with its task, in order; readers keep a cursor.
    exhausted: Vec<(String, Exhausted)>,
    next_delivery: u64,
}

struct Work {
    address: WorkAddress,
    subject: String,
    payload: Arc<[u8]>,
    delivered: u64,
    state: WorkState,
}

#[derive(Clone, Copy, PartialEq)]
enum WorkState {
    Ready { at: Instant },
    Out { deadline: Instant, delivery: u64 },
    GivenUp,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        MemoryBroker::new()
    }
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = lock(&self.shared.state);
        f.debug_struct("MemoryBroker")
            .field("queued", &state.work.len())
            .field("jobs_with_results", &state.results.len())
            .field("dead_letters", &state.dead.len())
            .finish()
    }
}

impl MemoryBroker {
    /// A broker with an ack wait of 30 s, 5 deliveries at most, 1,000 items out at
    /// workers at most, and a maximum message size of 1 MiB (NATS' defaults, except
    /// the deliveries, which NATS does not limit by default).
    pub fn new() -> Self {
        MemoryBroker::with_config(Config {
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            max_ack_pending: 1000,
            max_payload: 1024 * 1024,
        })
    }

    fn with_config(config: Config) -> Self {
        MemoryBroker {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: Notify::new(),
                config,
            }),
        }
    }

    fn reconfigured(&self, change: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.shared.config;
        change(&mut config);
        MemoryBroker::with_config(config)
    }

    /// The same settings with an ack wait of `ack_wait`: a new, empty broker.
    ///
    /// # Panics
    /// If `ack_wait` is zero.
    #[track_caller]
    pub fn with_ack_wait(self, ack_wait: Duration) -> Self {
        assert!(
            !ack_wait.is_zero(),
            "flowgate: `MemoryBroker::with_ack_wait` needs `ack_wait` > 0"
        );
        self.reconfigured(|config| config.ack_wait = ack_wait)
    }

    /// The same settings with at most `max_deliver` deliveries of an item: a new, empty
    /// broker.
    ///
    /// # Panics
    /// If `max_deliver` is zero.
    #[track_caller]
    pub fn with_max_deliver(self, max_deliver: u64) -> Self {
        assert!(
            max_deliver > 0,
            "flowgate: `MemoryBroker::with_max_deliver` needs `max_deliver` > 0"
        );
        self.reconfigured(|config| config.max_deliver = max_deliver)
    }

    /// The same settings with at most `max_ack_pending` items out at workers at once:
    /// a new, empty broker.
    ///
    /// # Panics
    /// If `max_ack_pending` is zero.
    #[track_caller]
    pub fn with_max_ack_pending(self, max_ack_pending: usize) -> Self {
        assert!(
            max_ack_pending > 0,
            "flowgate: `MemoryBroker::with_max_ack_pending` needs `max_ack_pending` > 0"
        );
        self.reconfigured(|config| config.max_ack_pending = max_ack_pending)
    }

    /// The same settings with a maximum message size of `max_payload` bytes: a new,
    /// empty broker.
    ///
    /// # Panics
    /// If `max_payload` is zero.
    #[track_caller]
    pub fn with_max_payload(self, max_payload: usize) -> Self {
        assert!(
            max_payload > 0,
            "flowgate: `MemoryBroker::with_max_payload` needs `max_payload` > 0"
        );
        self.reconfigured(|config| config.max_payload = max_payload)
    }

    /// The messages set aside by workers so far, with their task, oldest first.
    pub fn dead_letters(&self) -> Vec<(String, DeadLetter)> {
        lock(&self.shared.state).dead.clone()
    }

    /// The work items stored and not yet acknowledged, terminated or purged (given-up
    /// items included), as their addresses in publication order.
    pub fn queued(&self) -> Vec<WorkAddress> {
        lock(&self.shared.state)
            .work
            .values()
            .map(|work| work.address.clone())
            .collect()
    }

    /// How many results of `job` are stored.
    pub fn stored_results(&self, job: &str) -> usize {
        lock(&self.shared.state)
            .results
            .get(job)
            .map_or(0, Vec::len)
    }

    /// Publishes a raw message on a work subject, as another program could (a test of
    /// what workers do with a message they cannot read).
    pub fn publish_raw(&self, subject: &str, payload: Vec<u8>) {
        let mut state = lock(&self.shared.state);
        let address = WorkAddress::parse(subject).unwrap_or_else(|| {
            // A subject workers of some task still receive: `work.<task>.…`.
            let task = subject.split('.').nth(1).unwrap_or_default().to_owned();
            WorkAddress {
                task,
                job: String::new(),
                position: 0,
            }
        });
        state.store(address, subject.to_owned(), payload);
        drop(state);
        self.shared.changed.notify_waiters();
    }

    /// Gives up the items out at workers whose ack wait has passed (reporting them
    /// exhausted at their last delivery) and makes the others ready again. Returns when
    /// the next deadline falls.
    fn sweep(&self, state: &mut State, now: Instant) -> Option<Instant> {
        let config = self.shared.config;
        let mut next: Option<Instant> = None;
        let mut changed = false;
        for (sequence, work) in state.work.iter_mut() {
            match work.state {
                WorkState::Out { deadline, .. } if deadline <= now => {
                    changed = true;
                    if work.delivered >= config.max_deliver {
                        work.state = WorkState::GivenUp;
                        state.exhausted.push((
                            work.address.task.clone(),
                            Exhausted {
                                sequence: *sequence,
                                deliveries: work.delivered,
                            },
                        ));
                    } else {
                        work.state = WorkState::Ready { at: now };
                    }
                }
                WorkState::Out { deadline, .. } | WorkState::Ready { at: deadline }
                    if deadline > now =>
                {
                    next = Some(next.map_or(deadline, |next| next.min(deadline)));
                }
                _ => {}
            }
        }
        if changed {
            self.shared.changed.notify_waiters();
        }
        next
    }

    /// Takes up to `max` ready items of `task` (within `max_ack_pending`); also returns
    /// when the next deadline falls.
    fn take(&self, task: &str, max: usize) -> (Vec<MemoryDelivery>, Option<Instant>) {
        let config = self.shared.config;
        let mut state = lock(&self.shared.state);
        let now = Instant::now();
        let next = self.sweep(&mut state, now);
        // The cap is per consumer, that is per task.
        let out = state
            .work
            .values()
            .filter(|work| work.address.task == task && matches!(work.state, WorkState::Out { .. }))
            .count();
        let room = config.max_ack_pending.saturating_sub(out).min(max);
        let ready: Vec<u64> = state
            .work
            .iter()
            .filter(|(_, work)| {
                work.address.task == task
                    && matches!(work.state, WorkState::Ready { at } if at <= now)
            })
            .map(|(sequence, _)| *sequence)
            .take(room)
            .collect();
        let mut deliveries = Vec::with_capacity(ready.len());
        for sequence in ready {
            state.next_delivery += 1;
            let delivery = state.next_delivery;
            let work = state.work.get_mut(&sequence).expect("listed above");
            work.delivered += 1;
            work.state = WorkState::Out {
                deadline: now + config.ack_wait,
                delivery,
            };
            deliveries.push(MemoryDelivery {
                broker: self.clone(),
                sequence,
                delivery,
                subject: work.subject.clone(),
                payload: work.payload.clone(),
                delivered: work.delivered,
                settled: false,
            });
        }
        (deliveries, next)
    }

    fn settle(&self, sequence: u64, delivery: u64, settle: Settle) -> Result<(), BrokerError> {
        let mut state = lock(&self.shared.state);
        let now = Instant::now();
        let Some(work) = state.work.get_mut(&sequence) else {
            return Err(BrokerError::new(format!(
                "work message {sequence} is no longer stored (acknowledged, terminated or purged)"
            )));
        };
        let current = matches!(work.state, WorkState::Out { delivery: d, .. } if d == delivery);
        match settle {
            // An acknowledgement or termination of an earlier delivery still counts (as
            // with JetStream, where a late ack of a redelivered message is accepted).
            Settle::Ack | Settle::Term => {
                state.work.remove(&sequence);
            }
            // As with JetStream, a refused last delivery is given up, not delivered again.
            Settle::Nak(_) if current && work.delivered >= self.shared.config.max_deliver => {
                work.state = WorkState::GivenUp;
                let exhausted = Exhausted {
                    sequence,
                    deliveries: work.delivered,
                };
                let task = work.address.task.clone();
                state.exhausted.push((task, exhausted));
            }
            Settle::Nak(delay) if current => work.state = WorkState::Ready { at: now + delay },
            Settle::Progress if current => {
                work.state = WorkState::Out {
                    deadline: now + self.shared.config.ack_wait,
                    delivery,
                }
            }
            Settle::Nak(_) | Settle::Progress => {
                return Err(BrokerError::new(format!(
                "work message {sequence}: this delivery is no longer current (its ack wait passed)"
            )))
            }
        }
        drop(state);
        self.shared.changed.notify_waiters();
        Ok(())
    }
}

impl State {
    fn store(&mut self, address: WorkAddress, subject: String, payload: Vec<u8>) -> u64 {
        self.next_sequence += 1;
        let sequence = self.next_sequence;
        self.work.insert(
            sequence,
            Work {
                address,
                subject,
                payload: payload.into(),
                delivered: 0,
                state: WorkState::Ready { at: Instant::now() },
            },
        );
        sequence
    }
}

enum Settle {
    Ack,
    Nak(Duration),
    Progress,
    Term,
}

impl Broker for MemoryBroker {
    type Delivery = MemoryDelivery;

    fn max_payload(&self) -> usize {
        self.shared.config.max_payload
    }

    async fn prepare_job(&self, _task: &str) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn prepare_worker(&self, task: &str) -> Result<(), BrokerError> {
        lock(&self.shared.state).workers.insert(task.to_owned());
        Ok(())
    }

    async fn has_worker(&self, task: &str) -> Result<bool, BrokerError> {
        Ok(lock(&self.shared.state).workers.contains(task))
    }

    async fn publish_work(
        &self,
        address: &WorkAddress,
        payload: Vec<u8>,
    ) -> Result<u64, BrokerError> {
        let size = payload.len() + self.overhead(address);
        if size > self.shared.config.max_payload {
            return Err(BrokerError::new(format!(
                "a message of {size} bytes is over the maximum of {} bytes",
                self.shared.config.max_payload
            )));
        }
        let mut state = lock(&self.shared.state);
        let id = address.message_id();
        if !state.work_ids.insert(id) {
            let sequence = state
                .work
                .iter()
                .find(|(_, work)| &work.address == address)
                .map_or(0, |(sequence, _)| *sequence);
            return Ok(sequence);
        }
        let sequence = state.store(address.clone(), address.subject(), payload);
        drop(state);
        self.shared.changed.notify_waiters();
        Ok(sequence)
    }

    async fn pull_work(
        &self,
        task: &str,
        max: usize,
        wait: Duration,
    ) -> Result<BoxStream<Result<MemoryDelivery, BrokerError>>, BrokerError> {
        let broker = self.clone();
        let task = task.to_owned();
        let end = Instant::now() + wait;
        Ok(Box::pin(async_stream::stream! {
            let mut wanted = max;
            while wanted > 0 {
                let changed = broker.shared.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let (taken, next) = broker.take(&task, wanted);
                wanted -= taken.len();
                let none = taken.is_empty();
                for delivery in taken {
                    yield Ok(delivery);
                }
                if wanted == 0 || Instant::now() >= end {
                    break;
                }
                if none {
                    let until = next.map_or(end, |next| next.min(end));
                    tokio::select! {
                        _ = &mut changed => {}
                        _ = tokio::time::sleep_until(until) => {}
                    }
                }
            }
        }))
    }

    async fn publish_result(
        &self,
        address: &WorkAddress,
        payload: Vec<u8>,
    ) -> Result<(), BrokerError> {
        let mut state = lock(&self.shared.state);
        if state.result_ids.insert(address.message_id()) {
            state
                .results
                .entry(address.job.clone())
                .or_default()
                .push(Returned {
                    position: address.position,
                    payload,
                });
            drop(state);
            self.shared.changed.notify_waiters();
        }
        Ok(())
    }

    async fn results(
        &self,
        job: &str,
    ) -> Result<BoxStream<Result<Returned, BrokerError>>, BrokerError> {
        let broker = self.clone();
        let job = job.to_owned();
        Ok(Box::pin(async_stream::stream! {
            let mut seen = 0;
            loop {
                let changed = broker.shared.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let fresh: Vec<Returned> = {
                    let state = lock(&broker.shared.state);
                    let all = state.results.get(&job).map_or(&[][..], Vec::as_slice);
                    // A purge empties the list: start over (duplicates are the reader's to drop).
                    if all.len() < seen {
                        seen = 0;
                    }
                    all[seen..].to_vec()
                };
                seen += fresh.len();
                if fresh.is_empty() {
                    changed.await;
                }
                for returned in fresh {
                    yield Ok(returned);
                }
            }
        }))
    }

    async fn exhausted(&self, task: &str) -> Result<BoxStream<Exhausted>, BrokerError> {
        let broker = self.clone();
        let task = task.to_owned();
        let mut seen = lock(&self.shared.state).exhausted.len();
        Ok(Box::pin(async_stream::stream! {
            loop {
                let changed = broker.shared.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let (fresh, next) = {
                    let mut state = lock(&broker.shared.state);
                    let next = broker.sweep(&mut state, Instant::now());
                    let fresh: Vec<Exhausted> = state.exhausted[seen..]
                        .iter()
                        .filter(|(of, _)| *of == task)
                        .map(|(_, exhausted)| exhausted.clone())
                        .collect();
                    seen = state.exhausted.len();
                    (fresh, next)
                };
                if fresh.is_empty() {
                    match next {
                        Some(next) => tokio::select! {
                            _ = &mut changed => {}
                            _ = tokio::time::sleep_until(next) => {}
                        },
                        None => changed.await,
                    }
                }
                for exhausted in fresh {
                    yield exhausted;
                }
            }
        }))
    }

    async fn dead_letter(&self, task: &str, letter: DeadLetter) -> Result<(), BrokerError> {
        lock(&self.shared.state)
            .dead
            .push((task.to_owned(), letter));
        Ok(())
    }

    async fn purge_job(&self, task: &str, job: &str) -> Result<(), BrokerError> {
        let mut state = lock(&self.shared.state);
        state
            .work
            .retain(|_, work| !(work.address.task == task && work.address.job == job));
        state.results.remove(job);
        drop(state);
        self.shared.changed.notify_waiters();
        Ok(())
    }
}

/// A work message delivered by a [`MemoryBroker`].
#[derive(Debug)]
pub struct MemoryDelivery {
    broker: MemoryBroker,
    sequence: u64,
    delivery: u64,
    subject: String,
    payload: Arc<[u8]>,
    delivered: u64,
    settled: bool,
}

impl MemoryDelivery {
    /// Drops the delivery as a crashed worker would: neither acknowledged nor refused,
    /// it is delivered again when its ack wait passes.
    pub fn abandon(mut self) {
        self.settled = true;
    }

    fn settle(&mut self, settle: Settle) -> Result<(), BrokerError> {
        self.settled = true;
        self.broker.settle(self.sequence, self.delivery, settle)
    }
}

impl Drop for MemoryDelivery {
    fn drop(&mut self) {
        if !self.settled {
            let _ = self.settle(Settle::Nak(Duration::ZERO));
        }
    }
}

impl Delivery for MemoryDelivery {
    fn subject(&self) -> &str {
        &self.subject
    }

    fn payload(&self) -> &[u8] {
        &self.payload
    }

    fn delivered(&self) -> u64 {
        self.delivered
    }

    fn max_deliver(&self) -> u64 {
        self.broker.shared.config.max_deliver
    }

    fn ack_wait(&self) -> Duration {
        self.broker.shared.config.ack_wait
    }

    async fn ack(mut self) -> Result<(), BrokerError> {
        self.settle(Settle::Ack)
    }

    async fn nak(mut self, delay: Duration) -> Result<(), BrokerError> {
        self.settle(Settle::Nak(delay))
    }

    async fn in_progress(&self) -> Result<(), BrokerError> {
        self.broker
            .settle(self.sequence, self.delivery, Settle::Progress)
    }

    async fn term(mut self) -> Result<(), BrokerError> {
        self.settle(Settle::Term)
    }
}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Work")
            .field("subject", &self.subject)
            .field("delivered", &self.delivered)
            .finish()
    }
}
