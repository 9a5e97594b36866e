//! The coordinator: [`MapRemote`], the stream of [`map_remote`](crate::FlowExt::map_remote)
//! and [`map_remote_unordered`](crate::FlowExt::map_remote_unordered).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_util::stream::FuturesUnordered;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use super::broker::{BoxStream, Broker, BrokerError, Exhausted, Returned, WorkAddress};
use super::codec::{self, Outcome};
use super::{retrying, Task};
use crate::stats::{Core, Recorder, Stats};
use crate::Error;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The stream of [`FlowExt::map_remote`](crate::FlowExt::map_remote) and
/// [`FlowExt::map_remote_unordered`](crate::FlowExt::map_remote_unordered): each item is
/// published as work of a [`Task`] through a [`Broker`], run by a
/// [`Worker`](super::Worker) somewhere, and its result yielded, in input order or as
/// results arrive.
///
/// - **Bound:** at most `limit` items pulled from upstream and not yet yielded (so at
///   most `limit` published and not yet yielded): the generator waits while the
///   workers are busy.
/// - **Exactly once:** each input position yields one item, a result or an
///   [`Error`]; a result the broker delivers twice (a worker that died after
///   publishing, a redelivery) is dropped by position.
/// - **Failures** are values in their position: the task's error at its last delivery
///   ([`Cause::Failed`](crate::Cause::Failed), `attempts` = deliveries), a panic in the
///   task ([`Cause::Panicked`](crate::Cause::Panicked)), an item that could not be
///   carried ([`Cause::Broker`](crate::Cause::Broker): over the broker's maximum message
///   size (the encoded item plus its subject and headers, some 100 to 150 bytes),
///   failed to encode, its result failed to decode, given up by the broker after
///   its last delivery, the broker failing for a minute on end).
/// - **Given up by the broker:** an item every worker crashed on (or ran past the ack
///   wait with) is learnt of from the broker's report at its last delivery; a report
///   made while this coordinator was disconnected from the server is missed, and that
///   item then waits (in order, holding up the results after it).
/// - **No worker:** a job whose task no worker serves waits; after a minute without a
///   result it says so once through [`waiting_for_workers`](Self::waiting_for_workers)
///   (and a `tracing` warning with the feature `tracing`).
/// - **Drop** before the end purges the job's work not yet taken and its results (on a
///   spawned task, when a tokio runtime is at hand); results of items that were
///   running then arrive later and stay until the broker's age limit (a day on
///   [`NatsBroker`](super::NatsBroker)). At the end the job's results are purged before
///   the stream ends.
#[must_use = "streams do nothing unless polled"]
pub struct MapRemote<St, B, T, U, E> {
    upstream: Option<Pin<Box<St>>>,
    broker: B,
    task: Task<T, U, E>,
    limit: usize,
    ordered: bool,
    job: String,
    phase: Phase,
    next_position: u64,
    yielded: u64,
    awaiting: HashSet<u64>,
    // Ordered: outcomes by position, waiting for their turn.
    done: HashMap<u64, Result<U, Error<E>>>,
    // Unordered: outcomes in arrival order.
    ready: VecDeque<Result<U, Error<E>>>,
    // Broker sequence -> position and back, for the items out (given-up reports name
    // sequences).
    sequences: HashMap<u64, u64>,
    positions: HashMap<u64, u64>,
    publishing: FuturesUnordered<BoxFuture<(u64, Result<u64, BrokerError>)>>,
    results: Option<Results>,
    reopening: Option<BoxFuture<Result<Results, BrokerError>>>,
    exhausted: Option<BoxStream<Exhausted>>,
    fatal: Option<String>,
    last_result: Option<Instant>,
    watchdog: Option<Pin<Box<tokio::time::Sleep>>>,
    checking: Option<BoxFuture<Result<bool, BrokerError>>>,
    waiting: std::sync::Arc<std::sync::atomic::AtomicU8>,
    purger: Box<dyn Fn() -> BoxFuture<()> + Send + Sync>,
    name: Option<std::sync::Arc<str>>,
    core: std::sync::OnceLock<std::sync::Arc<Core>>,
    recorder: Option<Box<Recorder>>,
    bound: bool,
}

enum Phase {
    Starting(BoxFuture<Result<Opened, BrokerError>>),
    Running,
    Ending(BoxFuture<()>),
    Ended,
}

type Results = BoxStream<Result<Returned, BrokerError>>;
type Opened = (Results, BoxStream<Exhausted>);

/// What [`MapRemote::waiting_for_workers`] says about a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Waiting {
    /// Results arrive (the state goes back to `No` at the next result), or nothing is
    /// out.
    No,
    /// Items have been out for a minute without any result, and a worker has set up
    /// the task: the workers are busy or slow, or have all left (the task's consumer
    /// outlives its workers: on NATS for its inactive threshold, an hour by default; on
    /// a `MemoryBroker` for good).
    Slow,
    /// Items have been out for a minute without any result, and no worker has set up
    /// the task (on NATS: the task's consumer does not exist, never made or deleted
    /// after its inactive threshold): start one.
    NoWorker,
}

/// A handle on what a [`MapRemote`] stream is waiting for; see
/// [`MapRemote::waiting_for_workers`].
#[derive(Clone)]
pub struct WaitingHandle(std::sync::Arc<std::sync::atomic::AtomicU8>);

impl WaitingHandle {
    /// Whether the job is waiting for workers, as of its last check (a minute after
    /// the last result, while items are out).
    pub fn get(&self) -> Waiting {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            1 => Waiting::Slow,
            2 => Waiting::NoWorker,
            _ => Waiting::No,
        }
    }
}

impl fmt::Debug for WaitingHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WaitingHandle").field(&self.get()).finish()
    }
}

/// How long without a result before the coordinator checks for workers.
const WATCH: Duration = Duration::from_secs(60);

impl<St, B, T, U, E> MapRemote<St, B, T, U, E> {
    /// The job's id: the `<job>` token in its work subjects
    /// (`work.<task>.<job>.<position>`), unique per stream.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// A handle that says whether the job waits for workers: items out for a minute
    /// without a result, with or without a worker that ever set up the task.
    ///
    /// ```
    /// use flowgate::distributed::{MemoryBroker, Task, Waiting};
    /// use flowgate::prelude::*;
    /// use futures::StreamExt;
    /// use std::time::Duration;
    ///
    /// const NOBODY: Task<u32, u32> = Task::new("nobody-serves-this");
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut results = stream! { yield 1u32 }.map_remote(MemoryBroker::new(), NOBODY, 4);
    /// let waiting = results.waiting_for_workers();
    /// // No worker serves the task: the job waits (a timeout here to see it).
    /// assert!(tokio::time::timeout(Duration::from_secs(120), results.next()).await.is_err());
    /// assert_eq!(waiting.get(), Waiting::NoWorker);
    /// # }
    /// ```
    pub fn waiting_for_workers(&self) -> WaitingHandle {
        WaitingHandle(self.waiting.clone())
    }

    /// Names the stage in its statistics (see [`stats`](Self::stats)).
    pub fn named(mut self, name: impl Into<std::sync::Arc<str>>) -> Self {
        let name = name.into();
        if let Some(core) = self.core.get() {
            core.set_name(std::sync::Arc::clone(&name));
        }
        self.name = Some(name);
        self
    }

    /// The handle on this stage's statistics, as for the local operators
    /// ([`flowgate::stats`](crate::stats)), seen from the coordinator: an item is
    /// *started* when its publication is sent, *in flight* until its result (or its
    /// failure) arrives, *finished* then; the stage is *busy* while any item is out at
    /// the workers. A job whose task no worker serves shows its items in flight, none
    /// finished, and busy time growing. Redeliveries happen between the broker and the
    /// workers, so `retried_count` stays 0 here; a failure after the last delivery
    /// counts in `failed_count`.
    ///
    /// Take it before the first poll.
    ///
    /// # Panics
    /// After the first poll.
    ///
    /// ```
    /// use flowgate::distributed::{MemoryBroker, Task, Worker};
    /// use flowgate::prelude::*;
    /// use futures::StreamExt;
    /// use tokio_util::sync::CancellationToken;
    ///
    /// const HALF: Task<u64, u64> = Task::new("half");
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let broker = MemoryBroker::new();
    /// let stop = CancellationToken::new();
    /// tokio::spawn(Worker::new(broker.clone(), 2).task(HALF, |n: u64| async move { Ok::<_, String>(n / 2) }).serve(stop.clone()));
    ///
    /// let halves = stream! { for n in 0..10u64 { yield n } }.map_remote(broker, HALF, 4).named("halve");
    /// let stats = halves.stats();
    /// assert_eq!(halves.count().await, 10);
    /// let snapshot = stats.snapshot();
    /// assert_eq!((snapshot.started_count, snapshot.finished_count, snapshot.yielded_count), (10, 10, 10));
    /// assert!(snapshot.ended);
    /// stop.cancel();
    /// # }
    /// ```
    #[track_caller]
    pub fn stats(&self) -> Stats {
        assert!(
            !self.bound,
            "flowgate: `stats` on `map_remote` after its first poll: take the handle before the stream runs"
        );
        let core = self.core.get_or_init(|| {
            let core = Core::new();
            if let Some(name) = &self.name {
                core.set_name(std::sync::Arc::clone(name));
            }
            std::sync::Arc::new(core)
        });
        Stats::from_core(std::sync::Arc::clone(core))
    }

    /// The item at `position`, out at the workers, got its outcome.
    fn out_ended(&mut self, position: u64) {
        if let Some(sequence) = self.positions.remove(&position) {
            self.sequences.remove(&sequence);
        }
        if let Some(core) = self.core.get() {
            core.job_finished();
        }
    }
}

impl<St, B, T, U, E> MapRemote<St, B, T, U, E>
where
    St: Stream<Item = T> + Send + 'static,
    B: Broker,
    T: Serialize,
    U: DeserializeOwned,
    E: DeserializeOwned,
{
    pub(crate) fn new(
        upstream: St,
        broker: B,
        task: Task<T, U, E>,
        limit: usize,
        ordered: bool,
    ) -> Self {
        let job = super::job_id();
        let opening = {
            let broker = broker.clone();
            let job = job.clone();
            let name = task.name();
            Box::pin(async move {
                retrying(|| broker.prepare_job(name)).await?;
                let results = retrying(|| broker.results(&job)).await?;
                let exhausted = retrying(|| broker.exhausted(name)).await?;
                Ok((results, exhausted))
            }) as BoxFuture<Result<Opened, BrokerError>>
        };
        let purger = {
            let broker = broker.clone();
            let job = job.clone();
            let name = task.name();
            Box::new(move || {
                let broker = broker.clone();
                let job = job.clone();
                Box::pin(async move {
                    // Best effort: what is left expires with the streams' age limits.
                    let purge = broker.purge_job(name, &job);
                    let _ = tokio::time::timeout(Duration::from_secs(10), purge).await;
                }) as BoxFuture<()>
            })
        };
        MapRemote {
            name: None,
            core: std::sync::OnceLock::new(),
            recorder: None,
            bound: false,
            purger,
            upstream: Some(Box::pin(upstream)),
            broker,
            task,
            limit,
            ordered,
            job,
            phase: Phase::Starting(opening),
            next_position: 0,
            yielded: 0,
            awaiting: HashSet::new(),
            done: HashMap::new(),
            ready: VecDeque::new(),
            sequences: HashMap::new(),
            positions: HashMap::new(),
            publishing: FuturesUnordered::new(),
            results: None,
            reopening: None,
            exhausted: None,
            fatal: None,
            last_result: None,
            watchdog: None,
            checking: None,
            waiting: Default::default(),
        }
    }

    fn settle(&mut self, position: u64, outcome: Result<U, Error<E>>) {
        if self.ordered {
            self.done.insert(position, outcome);
        } else {
            self.ready.push_back(outcome);
        }
    }

    fn take_ready(&mut self) -> Option<Result<U, Error<E>>> {
        let outcome = if self.ordered {
            // In order, the next position to yield is the count yielded so far.
            self.done.remove(&self.yielded)?
        } else {
            self.ready.pop_front()?
        };
        self.yielded += 1;
        Some(outcome)
    }

    fn outstanding(&self) -> u64 {
        self.next_position - self.yielded
    }

    /// Takes an item from upstream: encodes it and starts its publication, or settles
    /// it as a failure when it cannot go.
    fn send(&mut self, item: T) {
        let position = self.next_position;
        self.next_position += 1;
        if let Some(fatal) = &self.fatal {
            let message = format!("the job could not start: {fatal}");
            self.settle(position, Err(Error::broker(position, 0, message)));
            return;
        }
        let address = WorkAddress {
            task: self.task.name().to_owned(),
            job: self.job.clone(),
            position,
        };
        let payload = match codec::encode(&item) {
            Ok(payload) => payload,
            Err(error) => {
                // postcard drops a custom serializer's message: name the type instead.
                let message = format!(
                    "it failed to encode as a `{}`: {error}",
                    std::any::type_name::<T>()
                );
                self.settle(position, Err(Error::broker(position, 0, message)));
                return;
            }
        };
        let overhead = self.broker.overhead(&address);
        let max = self.broker.max_payload();
        if payload.len() + overhead > max {
            let message = format!(
                "it encodes to {} bytes ({} with subject and headers), over the broker's maximum message size of {max} bytes",
                payload.len(),
                payload.len() + overhead
            );
            self.settle(position, Err(Error::broker(position, 0, message)));
            return;
        }
        self.awaiting.insert(position);
        if let Some(recorder) = &mut self.recorder {
            recorder.job_started();
        }
        let broker = self.broker.clone();
        self.publishing.push(Box::pin(async move {
            let published = retrying(|| broker.publish_work(&address, payload.clone())).await;
            (position, published)
        }));
    }

    fn receive(&mut self, returned: Returned) {
        let position = returned.position;
        if !self.awaiting.remove(&position) {
            return; // A duplicate, or a result for an item that failed here already.
        }
        self.out_ended(position);
        self.last_result = Some(Instant::now());
        self.waiting.store(0, std::sync::atomic::Ordering::Relaxed);
        let outcome = match codec::decode::<Outcome<U, E>>(&returned.payload) {
            Ok(Outcome::Done(value)) => Ok(value),
            Ok(Outcome::Failed { deliveries, error }) => {
                Err(Error::failed(position, deliveries, error))
            }
            Ok(Outcome::Panicked {
                deliveries,
                message,
            }) => Err(Error::panicked(position, deliveries, message)),
            Ok(Outcome::Undeliverable {
                deliveries,
                message,
            }) => Err(Error::broker(position, deliveries, message)),
            Err(error) => Err(Error::broker(
                position,
                0,
                format!("its result failed to decode: {error}"),
            )),
        };
        self.settle(position, outcome);
    }

    fn give_up(&mut self, exhausted: Exhausted) {
        let Some(&position) = self.sequences.get(&exhausted.sequence) else {
            return; // Another job's item.
        };
        if self.awaiting.remove(&position) {
            self.out_ended(position);
            let message = format!(
                "the broker gave it up after {} deliveries without a result (every worker that took it crashed or ran past the ack wait)",
                exhausted.deliveries
            );
            let attempts = codec::clamp(exhausted.deliveries);
            self.settle(position, Err(Error::broker(position, attempts, message)));
        }
    }

    /// Polls everything but the upstream once; whether anything moved.
    fn poll_broker(&mut self, cx: &mut Context<'_>) -> bool {
        let mut moved = false;
        while let Poll::Ready(Some((position, published))) =
            Pin::new(&mut self.publishing).poll_next(cx)
        {
            moved = true;
            match published {
                // An item whose result came first needs no mapping.
                Ok(sequence) if self.awaiting.contains(&position) => {
                    self.sequences.insert(sequence, position);
                    self.positions.insert(position, sequence);
                }
                Ok(_) => {}
                Err(error) => {
                    if self.awaiting.remove(&position) {
                        self.out_ended(position);
                        let message = format!("publishing it failed: {error}");
                        self.settle(position, Err(Error::broker(position, 0, message)));
                    }
                }
            }
        }
        if let Some(reopening) = &mut self.reopening {
            if let Poll::Ready(opened) = reopening.as_mut().poll(cx) {
                self.reopening = None;
                moved = true;
                match opened {
                    Ok(results) => self.results = Some(results),
                    Err(error) => {
                        // The items out fail; later ones get another reader.
                        self.fail_awaiting(&format!("reading results failed: {error}"));
                        self.reopen(Duration::from_secs(1));
                    }
                }
            }
        }
        while let Some(results) = &mut self.results {
            match results.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(returned))) => {
                    moved = true;
                    self.receive(returned);
                }
                Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                    // Read again from the first result; duplicates are dropped.
                    moved = true;
                    self.reopen(Duration::from_millis(100));
                }
                Poll::Pending => break,
            }
        }
        while let Some(exhausted) = &mut self.exhausted {
            match exhausted.as_mut().poll_next(cx) {
                Poll::Ready(Some(exhausted)) => {
                    moved = true;
                    self.give_up(exhausted);
                }
                Poll::Ready(None) => self.exhausted = None,
                Poll::Pending => break,
            }
        }
        moved |= self.watch(cx);
        moved
    }

    /// Checks for workers when items have been out a while without a result.
    fn watch(&mut self, cx: &mut Context<'_>) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        if self.awaiting.is_empty() {
            self.watchdog = None;
            self.last_result = None;
            self.waiting.store(0, Relaxed);
            return false;
        }
        if let Some(checking) = &mut self.checking {
            let Poll::Ready(served) = checking.as_mut().poll(cx) else {
                return false;
            };
            self.checking = None;
            let state = if matches!(served, Ok(false)) { 2 } else { 1 };
            if self.waiting.swap(state, Relaxed) != state {
                #[cfg(feature = "tracing")]
                tracing::warn!(
                    task = self.task.name(),
                    job = %self.job,
                    out = self.awaiting.len(),
                    no_worker = state == 2,
                    "flowgate: no result from any worker for a minute"
                );
            }
        }
        // The next check falls a minute after the last result or check.
        let due = *self.last_result.get_or_insert_with(Instant::now) + WATCH;
        match &mut self.watchdog {
            Some(sleep) if sleep.deadline() == due => {}
            _ => self.watchdog = Some(Box::pin(tokio::time::sleep_until(due))),
        }
        let sleep = self.watchdog.as_mut().expect("set above");
        if sleep.as_mut().poll(cx).is_ready() {
            self.last_result = Some(Instant::now());
            let broker = self.broker.clone();
            let name = self.task.name();
            self.checking = Some(Box::pin(async move { broker.has_worker(name).await }));
            return true;
        }
        false
    }

    /// Opens the job's results again after `delay`, retrying for a minute.
    fn reopen(&mut self, delay: Duration) {
        self.results = None;
        let broker = self.broker.clone();
        let job = self.job.clone();
        self.reopening = Some(Box::pin(async move {
            tokio::time::sleep(delay).await;
            retrying(|| broker.results(&job)).await
        }));
    }

    fn fail_awaiting(&mut self, message: &str) {
        let positions: Vec<u64> = self.awaiting.drain().collect();
        for position in positions {
            self.out_ended(position);
            self.settle(
                position,
                Err(Error::broker(position, 0, message.to_owned())),
            );
        }
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<U, Error<E>>>> {
        let this = self;
        loop {
            match &mut this.phase {
                Phase::Starting(opening) => match opening.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok((results, exhausted))) => {
                        this.results = Some(results);
                        this.exhausted = Some(exhausted);
                        this.phase = Phase::Running;
                    }
                    Poll::Ready(Err(error)) => {
                        this.fatal = Some(error.to_string());
                        this.phase = Phase::Running;
                    }
                },
                Phase::Running => {}
                Phase::Ending(purging) => {
                    if purging.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.phase = Phase::Ended;
                    return Poll::Ready(None);
                }
                Phase::Ended => return Poll::Ready(None),
            }
            if let Some(outcome) = this.take_ready() {
                return Poll::Ready(Some(outcome));
            }
            if this.upstream.is_none() && this.outstanding() == 0 {
                this.results = None;
                this.exhausted = None;
                this.phase = Phase::Ending((this.purger)());
                continue;
            }
            let mut moved = false;
            while this.outstanding() < this.limit as u64 {
                let Some(upstream) = &mut this.upstream else {
                    break;
                };
                match upstream.as_mut().poll_next(cx) {
                    Poll::Ready(Some(item)) => {
                        moved = true;
                        if let Some(recorder) = &mut this.recorder {
                            recorder.upstream(false);
                        }
                        this.send(item);
                    }
                    Poll::Ready(None) => {
                        moved = true;
                        this.upstream = None;
                    }
                    Poll::Pending => {
                        if let Some(recorder) = &mut this.recorder {
                            recorder.upstream(true);
                        }
                        break;
                    }
                }
            }
            moved |= this.poll_broker(cx);
            if !moved {
                return Poll::Pending;
            }
        }
    }

    fn hint(&self) -> (usize, Option<usize>) {
        let held = (self.outstanding()) as usize;
        match &self.upstream {
            Some(upstream) => {
                let (low, high) = upstream.size_hint();
                (
                    low.saturating_add(held),
                    high.and_then(|high| high.checked_add(held)),
                )
            }
            None if matches!(self.phase, Phase::Ended) => (0, Some(0)),
            None => (held, Some(held)),
        }
    }
}

impl<St, B, T, U, E> Stream for MapRemote<St, B, T, U, E>
where
    St: Stream<Item = T> + Send + 'static,
    B: Broker,
    T: Serialize,
    U: DeserializeOwned,
    E: DeserializeOwned,
{
    type Item = Result<U, Error<E>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if !this.bound {
            this.bound = true;
            if let Some(core) = this.core.get() {
                let operator = if this.ordered {
                    "map_remote"
                } else {
                    "map_remote_unordered"
                };
                core.bind(operator, this.limit, this.limit);
                this.recorder = Some(Box::new(Recorder::new(std::sync::Arc::clone(core))));
            }
        }
        if let Some(recorder) = &mut this.recorder {
            recorder.polled();
        }
        let polled = this.poll_inner(cx);
        let held = usize::try_from(this.outstanding()).unwrap_or(usize::MAX);
        if let Some(recorder) = &mut this.recorder {
            let (yielded, ended) = match &polled {
                Poll::Ready(Some(outcome)) => (Some(outcome.is_err()), false),
                Poll::Ready(None) => (None, true),
                Poll::Pending => (None, false),
            };
            recorder.poll_ends(this.next_position, held, yielded, ended);
        }
        polled
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.hint()
    }
}

// Nothing inside is pinned in place: upstream is boxed, everything else moves freely.
impl<St, B, T, U, E> Unpin for MapRemote<St, B, T, U, E> {}

impl<St, B, T, U, E> Drop for MapRemote<St, B, T, U, E> {
    fn drop(&mut self) {
        if let Some(core) = self.core.get() {
            if self.bound {
                // Items still out are cancelled as far as this stage is concerned.
                let out = self.awaiting.len() as u64;
                core.jobs_cancelled(out);
            } else {
                core.end_unstarted();
            }
        }
        // The recorder's drop stops the clocks and ends the stage.
        self.recorder = None;
        if matches!(self.phase, Phase::Ended | Phase::Ending(_)) {
            return;
        }
        // Dropping the stream releases upstream first, as every operator does.
        self.upstream = None;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn((self.purger)());
        }
    }
}

impl<St, B, T, U, E> fmt::Debug for MapRemote<St, B, T, U, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapRemote")
            .field("task", &self.task.name())
            .field("job", &self.job)
            .field("limit", &self.limit)
            .field("ordered", &self.ordered)
            .field("pulled", &self.next_position)
            .field("yielded", &self.yielded)
            .field("awaiting", &self.awaiting.len())
            .finish()
    }
}
