//! [`Worker`]: serves named tasks, pulling work from a [`Broker`] only as fast as it can
//! start it.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::broker::{Broker, BrokerError, DeadLetter, Delivery, WorkAddress};
use super::codec::{self, Outcome};
use super::{broker_backoff, retrying, Task};
use crate::FlowExt;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What running one item gave.
enum Handled {
    /// The encoded result.
    Done(Vec<u8>),
    /// A failure worth another delivery: the encoded outcome to send back if this was
    /// the last one, and the error's text for the dead letter.
    Failed { last: Vec<u8>, reason: String },
    /// The item cannot be run, at any delivery: its payload failed to decode, or its
    /// result failed to encode.
    Unrunnable(String),
}

type Handler = dyn Fn(&[u8], u64) -> BoxFuture<Handled> + Send + Sync;

/// Serves the tasks it registers: takes their work from a [`Broker`], runs it with at
/// most `limit` items at once, publishes each result, and only then acknowledges the
/// work.
///
/// - **Pulling:** a worker takes only as many items as it has free slots, so items
///   wait in the broker (where other workers can take them), not in a worker. While
///   an item runs, the worker tells the broker it is in progress every third of the
///   ack wait, so long items are not redelivered. A task with no work waits for it
///   with one free slot reserved (for up to a second at a time), and asks for every
///   free slot once work comes: with `n` tasks idle, a busy one runs on `limit - n`
///   slots, so give a worker serving several tasks more slots than tasks.
/// - **Failures:** a task's `Err` or panic (panics are caught, the worker goes on) is
///   refused with a delay (doubling from [`retry_delay`](Self::retry_delay)) and
///   delivered again, up to the consumer's maximum deliveries; at the last one the
///   failure is sent back as the item's result (the coordinator yields it as a
///   [`flowgate::Error`](crate::Error)), set aside as a dead letter, and terminated. A
///   message that fails to decode, or whose result fails to encode or is over the
///   broker's maximum size, is sent back and set aside at once.
/// - **Joining and leaving:** workers of a task share the broker's work for it; start
///   and stop them at any time. A worker that dies leaves its items unacknowledged:
///   the broker delivers them again after the ack wait.
/// - **Shutdown:** when the token passed to [`serve`](Self::serve) fires, the worker
///   takes no more work, gives the items running [`grace`](Self::grace) to finish
///   (default 30 s), refuses the rest (so other workers take them at once) and
///   returns. An item the broker hands it while it stops (into a pull request made
///   before) is refused at once too; like any delivery, that delivery counts towards
///   the maximum.
///
/// Runs on the core engine (`map_concurrent_unordered` with `with_shutdown`), on the
/// caller's tokio runtime; a CPU-heavy task should use [`task_blocking`](Self::task_blocking) or `tokio::task::spawn_blocking`
/// inside its future.
///
/// ```
/// use flowgate::distributed::{MemoryBroker, Task, Worker};
/// use tokio_util::sync::CancellationToken;
///
/// const WORDS: Task<Vec<String>, usize> = Task::new("words");
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let stop = CancellationToken::new();
/// let worker = Worker::new(MemoryBroker::new(), 8).task(WORDS, |lines: Vec<String>| async move {
///     Ok::<_, String>(lines.iter().map(|line| line.split_whitespace().count()).sum())
/// });
/// let serving = tokio::spawn(worker.serve(stop.clone()));
/// stop.cancel();
/// let report = serving.await.unwrap().unwrap();
/// assert_eq!(report.done, 0);
/// # }
/// ```
pub struct Worker<B> {
    broker: B,
    limit: usize,
    handlers: HashMap<&'static str, Arc<Handler>>,
    grace: Duration,
    retry_delay: Duration,
    pull_wait: Duration,
}

/// What a worker did, returned by [`Worker::serve`] when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Items whose result was published and whose work was acknowledged.
    pub done: u64,
    /// Failed deliveries refused for another delivery.
    pub refused: u64,
    /// Items sent back as failures and set aside as dead letters.
    pub dead_lettered: u64,
    /// Items handed back to the broker at shutdown, or left unacknowledged because
    /// publishing their result or the acknowledgement failed (the broker delivers them
    /// again).
    pub returned: u64,
    /// Broker operations that failed (and were retried).
    pub broker_errors: u64,
}

enum Ended {
    Done,
    Refused,
    DeadLettered,
    Returned,
}

impl<B: Broker> Worker<B> {
    /// A worker taking work from `broker`, running the tasks of at most `limit` items
    /// at once. An item whose task returned frees its slot at once, so while its
    /// outcome is published and acknowledged (up to `limit` items more) the next item
    /// is already pulled and running.
    ///
    /// # Panics
    /// If `limit` is zero.
    #[track_caller]
    pub fn new(broker: B, limit: usize) -> Self {
        crate::ext::assert_nonzero(limit, "limit", "Worker::new");
        Worker {
            broker,
            limit,
            handlers: HashMap::new(),
            grace: Duration::from_secs(30),
            retry_delay: Duration::from_millis(500),
            pull_wait: Duration::from_secs(1),
        }
    }

    /// Serves `task` with `f`: an item of the task is decoded, `f(item)` runs, and its
    /// `Ok` is sent back as the item's result; its `Err` (or a panic) is retried by
    /// redelivery and sent back after the last delivery (see [`Worker`]).
    ///
    /// `f`'s future runs on the caller's runtime: for CPU-heavy work use
    /// [`task_blocking`](Self::task_blocking).
    ///
    /// # Panics
    /// If the worker already serves a task of that name.
    #[track_caller]
    pub fn task<T, U, E, F, Fut>(self, task: Task<T, U, E>, f: F) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        U: Serialize + Send + 'static,
        E: Serialize + fmt::Display + Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<U, E>> + Send + 'static,
    {
        self.register(task, move |item| {
            let running = catch_unwind(AssertUnwindSafe(|| f(item)));
            Box::pin(async move {
                match running {
                    Ok(future) => CatchUnwind(Box::pin(future)).await,
                    Err(panic) => Err(panic),
                }
            })
        })
    }

    /// Serves `task` with the blocking function `f`, run on tokio's blocking thread
    /// pool (CPU-heavy work: parsing, counting, compressing): otherwise as
    /// [`task`](Self::task). At most the worker's `limit` calls run at once.
    ///
    /// # Panics
    /// If the worker already serves a task of that name.
    ///
    /// ```
    /// use flowgate::distributed::{MemoryBroker, Task, Worker};
    ///
    /// const CHECKSUM: Task<Vec<u8>, u64> = Task::new("checksum");
    ///
    /// let worker = Worker::new(MemoryBroker::new(), 2).task_blocking(CHECKSUM, |bytes: Vec<u8>| {
    ///     Ok::<_, String>(bytes.iter().map(|&b| u64::from(b)).sum())
    /// });
    /// # drop(worker);
    /// ```
    #[track_caller]
    pub fn task_blocking<T, U, E, F>(self, task: Task<T, U, E>, f: F) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        U: Serialize + Send + 'static,
        E: Serialize + fmt::Display + Send + 'static,
        F: Fn(T) -> Result<U, E> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.register(task, move |item| {
            let f = f.clone();
            let running = tokio::task::spawn_blocking(move || f(item));
            Box::pin(async move {
                match running.await {
                    Ok(result) => Ok(result),
                    Err(error) if error.is_panic() => Err(error.into_panic()),
                    // The runtime is shutting down: the item is handed back.
                    Err(error) => Err(
                        Box::new(format!("the blocking call was cancelled: {error}"))
                            as Box<dyn std::any::Any + Send>,
                    ),
                }
            })
        })
    }

    #[track_caller]
    fn register<T, U, E, R>(mut self, task: Task<T, U, E>, run: R) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        U: Serialize + Send + 'static,
        E: Serialize + fmt::Display + Send + 'static,
        R: Fn(T) -> BoxFuture<Result<Result<U, E>, Box<dyn std::any::Any + Send>>>
            + Send
            + Sync
            + 'static,
    {
        let handler = move |payload: &[u8], delivered: u64| -> BoxFuture<Handled> {
            let item: T = match codec::decode(payload) {
                Ok(item) => item,
                Err(error) => {
                    let reason = format!("the item failed to decode: {error}");
                    return Box::pin(std::future::ready(Handled::Unrunnable(reason)));
                }
            };
            let running = run(item);
            Box::pin(async move {
                let deliveries = codec::clamp(delivered);
                match running.await {
                    Ok(Ok(value)) => match codec::encode(&Outcome::<U, E>::Done(value)) {
                        Ok(bytes) => Handled::Done(bytes),
                        Err(error) => {
                            Handled::Unrunnable(format!("its result failed to encode: {error}"))
                        }
                    },
                    Ok(Err(error)) => {
                        let reason = error.to_string();
                        let last = codec::encode(&Outcome::<U, E>::Failed { deliveries, error })
                            .unwrap_or_else(|encoding| {
                                codec::undeliverable(
                                    delivered,
                                    format!("{reason} (the error failed to encode: {encoding})"),
                                )
                            });
                        Handled::Failed { last, reason }
                    }
                    Err(panic) => {
                        let message = crate::error::panic_message(&*panic);
                        let reason = format!("panicked: {message}");
                        let last = codec::encode(&Outcome::<U, E>::Panicked {
                            deliveries,
                            message,
                        })
                        .expect("flowgate: a panic outcome always encodes");
                        Handled::Failed { last, reason }
                    }
                }
            })
        };
        let name = task.name();
        assert!(
            self.handlers.insert(name, Arc::new(handler)).is_none(),
            "flowgate: `Worker::task`: the worker already serves a task named `{name}`"
        );
        self
    }

    /// How long items still running at shutdown may take to finish before they are
    /// handed back to the broker (default 30 s).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The delay before a failed item is delivered again, doubling with each delivery
    /// up to 30 s, or `delay` if that is longer (default 500 ms; zero: no delay).
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// Serves the registered tasks until `shutdown` fires, then finishes as described
    /// under [`Worker`] and returns what it did.
    ///
    /// # Errors
    /// When the broker cannot set up a task's consumer within a minute of retries (the
    /// error names the task).
    ///
    /// # Panics
    /// If no task is registered.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<WorkerReport, BrokerError> {
        assert!(
            !self.handlers.is_empty(),
            "flowgate: `Worker::serve` needs at least one task (`Worker::task`)"
        );
        let Worker {
            broker,
            limit,
            handlers,
            grace,
            retry_delay,
            pull_wait,
        } = self;
        let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut names: Vec<&'static str> = handlers.keys().copied().collect();
        names.sort_unstable();
        for name in &names {
            tokio::select! {
                prepared = retrying(|| broker.prepare_worker(name)) => {
                    if let Err(error) = prepared {
                        return Err(BrokerError::new(format!(
                            "setting up task `{name}` failed: {error}"
                        )));
                    }
                }
                _ = shutdown.cancelled() => return Ok(WorkerReport::default()),
            }
        }
        // Slots bound what is in the channel and running together: it never fills.
        let (to, mut from) = tokio::sync::mpsc::channel(limit);
        let puller = Puller {
            broker: broker.clone(),
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            wait: pull_wait,
            errors: errors.clone(),
            shutdown: shutdown.clone(),
            to,
        };
        let mut pulls = AbortOnDrop(
            names
                .iter()
                .map(|name| tokio::spawn(pull(puller.clone(), name)))
                .collect(),
        );
        drop(puller);
        let deliveries = futures_util::stream::poll_fn(move |cx| from.poll_recv(cx));
        let handlers = Arc::new(handlers);
        let retry_backoff = if retry_delay.is_zero() {
            crate::Backoff::none()
        } else {
            crate::Backoff::exponential(retry_delay, retry_delay.max(Duration::from_secs(30)))
        };
        let context = Arc::new(JobContext {
            broker,
            handlers,
            retry_backoff,
            errors: errors.clone(),
        });
        let mut jobs = deliveries
            // A slot is freed when its task returns, so the next item is pulled while
            // the result travels: up to `limit` more jobs may be publishing.
            .map_concurrent_unordered(2 * limit, move |(delivery, slot)| {
                let context = context.clone();
                async move { context.run(delivery, slot).await }
            })
            .with_shutdown(shutdown.clone(), grace);
        let report = jobs.shutdown_report();
        let mut summary = WorkerReport::default();
        while let Some(ended) = jobs.next().await {
            match ended {
                Ended::Done => summary.done += 1,
                Ended::Refused => summary.refused += 1,
                Ended::DeadLettered => summary.dead_lettered += 1,
                Ended::Returned => summary.returned += 1,
            }
        }
        // Jobs cancelled after the grace handed their deliveries back on drop.
        if let Some(report) = report.get() {
            summary.returned += report.cancelled().len() as u64;
        }
        drop(jobs);
        // The pulls end with their last request (within the pull wait).
        for pulling in std::mem::take(&mut pulls.0) {
            if let Err(error) = pulling.await {
                if error.is_panic() {
                    std::panic::resume_unwind(error.into_panic());
                }
            }
        }
        summary.broker_errors = errors.load(std::sync::atomic::Ordering::Relaxed);
        Ok(summary)
    }
}

/// What the pulls of a worker's tasks share.
struct Puller<B: Broker> {
    broker: B,
    slots: Arc<Semaphore>,
    limit: usize,
    wait: Duration,
    errors: Arc<std::sync::atomic::AtomicU64>,
    shutdown: CancellationToken,
    to: tokio::sync::mpsc::Sender<(B::Delivery, OwnedSemaphorePermit)>,
}

impl<B: Broker> Clone for Puller<B> {
    fn clone(&self) -> Self {
        Puller {
            broker: self.broker.clone(),
            slots: self.slots.clone(),
            limit: self.limit,
            wait: self.wait,
            errors: self.errors.clone(),
            shutdown: self.shutdown.clone(),
            to: self.to.clone(),
        }
    }
}

/// Pulls the deliveries of one task into `to`, each with a free slot, until `shutdown`
/// fires: asks for one item while the task is idle (so an idle task holds one slot
/// while it waits) and for every free slot once work comes. A pull request is read to
/// its end, even past the shutdown: what comes after it is handed back at once (a
/// dropped delivery is refused without delay), not left to run out its ack wait.
async fn pull<B: Broker>(puller: Puller<B>, task: &'static str) {
    let Puller {
        broker,
        slots,
        limit,
        wait,
        errors,
        shutdown,
        to,
    } = puller;
    let error = || errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let backoff = broker_backoff();
    let mut failures = 0;
    let mut idle = true;
    while !shutdown.is_cancelled() {
        let first = tokio::select! {
            first = slots.clone().acquire_owned() => first,
            _ = shutdown.cancelled() => break,
        };
        let Ok(first) = first else { break };
        let mut permits = vec![first];
        while !idle && permits.len() < limit {
            match slots.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        let failed = match broker.pull_work(task, permits.len(), wait).await {
            Ok(mut batch) => {
                let mut failed = false;
                let mut came = 0;
                while let Some(delivery) = batch.next().await {
                    match delivery {
                        Ok(delivery) => {
                            came += 1;
                            let permit = permits
                                .pop()
                                .expect("a broker hands out at most `max` deliveries");
                            if shutdown.is_cancelled() {
                                continue; // Dropped: handed back at once.
                            }
                            // The receiver is gone only when the worker stops.
                            let _ = to.send((delivery, permit)).await;
                        }
                        Err(_) => {
                            error();
                            failed = true;
                        }
                    }
                }
                idle = came == 0;
                failed
            }
            Err(_) => {
                error();
                true
            }
        };
        drop(permits);
        if failed {
            failures += 1;
            tokio::select! {
                _ = tokio::time::sleep(backoff.delay(failures + 1)) => {}
                _ = shutdown.cancelled() => break,
            }
            idle = true;
        } else {
            failures = 0;
        }
    }
}

struct JobContext<B> {
    broker: B,
    handlers: Arc<HashMap<&'static str, Arc<Handler>>>,
    /// The delays before redeliveries of a failed item.
    retry_backoff: crate::Backoff,
    errors: Arc<std::sync::atomic::AtomicU64>,
}

impl<B: Broker> JobContext<B> {
    fn error(&self) {
        self.errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    async fn run(&self, delivery: B::Delivery, slot: OwnedSemaphorePermit) -> Ended {
        let delivered = delivery.delivered();
        let address = WorkAddress::parse(delivery.subject());
        let handler = address
            .as_ref()
            .and_then(|address| self.handlers.get(address.task.as_str()));
        let (address, handler) = match (address, handler) {
            (Some(address), Some(handler)) => (address, handler.clone()),
            (address, _) => {
                let reason = match address {
                    None => format!(
                        "subject `{}` is not of the form work.<task>.<job>.<position>",
                        delivery.subject()
                    ),
                    Some(address) => format!("this worker does not serve task `{}`", address.task),
                };
                return self.set_aside(delivery, None, reason).await;
            }
        };
        let running = handler(delivery.payload(), delivered);
        let handled = with_progress(&delivery, running).await;
        // The task is done: its slot takes the next item while this one's outcome
        // travels.
        drop(slot);
        match handled {
            Handled::Done(result) => {
                let size = result.len() + self.broker.overhead(&address);
                if size > self.broker.max_payload() {
                    let reason = format!(
                        "its result encodes to {size} bytes with subject and headers, over the broker's maximum message size of {} bytes",
                        self.broker.max_payload()
                    );
                    let outcome = codec::undeliverable(delivered, reason.clone());
                    return self
                        .set_aside(delivery, Some((&address, outcome)), reason)
                        .await;
                }
                if !self.publish(&delivery, &address, result).await {
                    return Ended::Returned;
                }
                // A lost ack means a redelivery, whose result is a duplicate the
                // broker and the coordinator drop.
                match delivery.ack().await {
                    Ok(()) => Ended::Done,
                    Err(_) => {
                        self.error();
                        Ended::Returned
                    }
                }
            }
            Handled::Failed { last, reason } if delivered >= delivery.max_deliver() => {
                self.set_aside(delivery, Some((&address, last)), reason)
                    .await
            }
            Handled::Failed { .. } => {
                // Delivery n waits the delay before attempt n + 1.
                let attempt = u32::try_from(delivered)
                    .unwrap_or(u32::MAX)
                    .saturating_add(1);
                let delay = self.retry_backoff.delay(attempt);
                if delivery.nak(delay).await.is_err() {
                    self.error();
                }
                Ended::Refused
            }
            Handled::Unrunnable(reason) => {
                let outcome = codec::undeliverable(delivered, reason.clone());
                self.set_aside(delivery, Some((&address, outcome)), reason)
                    .await
            }
        }
    }

    /// Publishes a result, retrying for a minute while telling the broker the item is
    /// in progress; false when it never went through.
    async fn publish(
        &self,
        delivery: &B::Delivery,
        address: &WorkAddress,
        payload: Vec<u8>,
    ) -> bool {
        let published = retrying(|| async {
            let published = self.broker.publish_result(address, payload.clone()).await;
            if published.is_err() {
                self.error();
                // Keep the delivery ours while the broker is away.
                let _ = delivery.in_progress().await;
            }
            published
        });
        published.await.is_ok()
    }

    /// Sends the failure back (when the item belongs to a job), sets the message aside
    /// as a dead letter and terminates it.
    async fn set_aside(
        &self,
        delivery: B::Delivery,
        result: Option<(&WorkAddress, Vec<u8>)>,
        reason: String,
    ) -> Ended {
        let max = self.broker.max_payload();
        let reason = clip(reason, 1024);
        if let Some((address, mut outcome)) = result {
            // A failure outcome over the broker's maximum (a huge error value) goes back
            // as its text, clipped.
            if outcome.len() + self.broker.overhead(address) > max {
                let room = max.saturating_sub(self.broker.overhead(address) + 64);
                outcome = codec::undeliverable(delivery.delivered(), clip(reason.clone(), room));
            }
            if !self.publish(&delivery, address, outcome).await {
                return Ended::Returned;
            }
        }
        let mut letter = DeadLetter {
            subject: delivery.subject().to_owned(),
            payload: delivery.payload().to_vec(),
            deliveries: delivery.delivered(),
            reason,
        };
        // The letter carries the message with its subject and reason in headers: cut
        // the payload where the whole would be over the broker's maximum.
        let around = 2 * letter.subject.len() + letter.reason.len() + 256;
        if letter.payload.len() + around > max {
            let size = letter.payload.len();
            letter.payload.truncate(max.saturating_sub(around));
            letter.reason = format!(
                "{} (payload cut to its first {} of {size} bytes)",
                letter.reason,
                letter.payload.len()
            );
        }
        let task = letter
            .subject
            .split('.')
            .nth(1)
            .unwrap_or("unknown")
            .to_owned();
        let mut stored = false;
        for _ in 0..5 {
            if self.broker.dead_letter(&task, letter.clone()).await.is_ok() {
                stored = true;
                break;
            }
            self.error();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !stored {
            return Ended::Returned;
        }
        if delivery.term().await.is_err() {
            self.error();
        }
        Ended::DeadLettered
    }
}

/// `text` cut to at most `max` bytes (at a character boundary), marked when cut.
fn clip(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str("...");
    text
}

/// Runs `running` while telling the broker, every third of the ack wait, that the
/// item is in progress. A failed report is not fatal: the work goes on, and should
/// the item be delivered elsewhere meanwhile, the duplicate result is dropped.
async fn with_progress<D: Delivery>(delivery: &D, running: BoxFuture<Handled>) -> Handled {
    let every = (delivery.ack_wait() / 3).max(Duration::from_millis(10));
    let mut running = running;
    loop {
        tokio::select! {
            handled = &mut running => return handled,
            _ = tokio::time::sleep(every) => {
                // A failed progress report is not fatal: the work goes on, and a
                // redelivery's result is a duplicate the coordinator drops.
                let _ = delivery.in_progress().await;
            }
        }
    }
}

/// Tasks aborted when the worker's future is dropped before it returns.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Catches a panic in a future's poll, as a value.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(future).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

impl<B> fmt::Debug for Worker<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut tasks: Vec<&str> = self.handlers.keys().copied().collect();
        tasks.sort_unstable();
        f.debug_struct("Worker")
            .field("tasks", &tasks)
            .field("limit", &self.limit)
            .field("grace", &self.grace)
            .finish()
    }
}
