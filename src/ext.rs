//! The extension traits: thin methods that check their arguments and build an operator.

use std::future::Future;
use std::time::Duration;

use futures_core::{Stream, TryStream};

use crate::chunk::{ChunksWeighted, ChunksWithin};
use crate::concurrent::{
    MapConcurrent, MapConcurrentByKey, MapConcurrentByKeyUnordered, MapConcurrentUnordered, ParMap,
    ParMapUnordered, TryMapConcurrent, TryMapConcurrentUnordered, TryParMap, TryParMapUnordered,
};
use crate::policy::RateLimit;

/// Panics with a message naming `name` when `value` is zero.
#[track_caller]
pub(crate) fn assert_nonzero(value: usize, name: &str, operator: &str) {
    if value == 0 {
        panic!("flowgate: `{operator}` needs `{name}` > 0, got 0");
    }
}

/// Chunking and bounded concurrency for any [`Stream`].
///
/// Imported by `use flowgate::prelude::*`. The method names do not clash with
/// `futures::StreamExt`, `futures::TryStreamExt` or `tokio_stream::StreamExt`.
///
/// Every concurrent operator here keeps the same promises (see the [crate docs](crate)):
/// it holds at most `limit` items pulled from upstream and not yet yielded, its work runs
/// on the caller's tokio runtime and progresses while the consumer is busy, dropping the
/// stream cancels its work, and a panic in user code re-raises in the consumer with its
/// original payload.
pub trait FlowExt: Stream {
    /// Groups items into `Vec` chunks of at most `max_items`, flushing a partial chunk
    /// `max_wait` after its first item arrived.
    ///
    /// - A chunk is emitted as soon as it holds `max_items` items, or when `max_wait` has
    ///   passed since its first item (the timer starts at that item, not at the previous
    ///   flush), or when upstream ends. No chunk is ever empty.
    /// - When the timer fires, items upstream has ready at once are taken first (up to
    ///   `max_items`), then the chunk goes.
    /// - `max_wait == Duration::ZERO` creates no timer: a chunk is the first item plus
    ///   whatever upstream has ready in the same poll, up to `max_items`.
    /// - Nothing is read ahead: upstream is polled only while a chunk is being filled.
    ///
    /// Count-only chunking is `futures::StreamExt::chunks`; this operator adds the deadline.
    ///
    /// # Panics
    /// Panics at once if `max_items == 0`. With `max_wait > 0`, the first poll panics
    /// outside a tokio runtime (the timer needs one).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use flowgate::prelude::*;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let readings = stream! {
    ///     for i in 0..5 {
    ///         if i == 3 {
    ///             // a pause longer than max_wait: the partial chunk is flushed
    ///             tokio::time::sleep(Duration::from_millis(500)).await;
    ///         }
    ///         yield i;
    ///     }
    /// };
    /// let chunks: Vec<Vec<u32>> = readings
    ///     .chunks_within(2, Duration::from_millis(100))
    ///     .collect()
    ///     .await;
    /// assert_eq!(chunks, vec![vec![0, 1], vec![2], vec![3, 4]]);
    /// # }
    /// ```
    #[track_caller]
    fn chunks_within(self, max_items: usize, max_wait: Duration) -> ChunksWithin<Self>
    where
        Self: Sized,
    {
        assert_nonzero(max_items, "max_items", "chunks_within");
        ChunksWithin::new(self, max_items, max_wait)
    }

    /// Groups items into `Vec` chunks whose summed `weigh(&item)` stays within `max_weight`.
    ///
    /// - A chunk is emitted as soon as its weight reaches `max_weight`, or when the next
    ///   item would push it over (that item starts the next chunk), and at the end.
    /// - An item heavier than `max_weight` is a chunk of its own: it is never dropped.
    /// - The sum is checked, never saturated: a chunk of several items never weighs more
    ///   than `max_weight`, even near `usize::MAX`. Items of weight 0 are allowed; an
    ///   endless run of them keeps growing the current chunk.
    /// - `weigh` is called once per item. Nothing is read ahead.
    ///
    /// # Panics
    /// Panics at once if `max_weight == 0`.
    ///
    /// # Examples
    /// ```
    /// use flowgate::prelude::*;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let lines = flowgate::source::iter(["a", "bb", "ccc", "dddddd", "e"]);
    /// let batches: Vec<Vec<&str>> = lines.chunks_weighted(5, |s| s.len()).collect().await;
    /// assert_eq!(batches, vec![vec!["a", "bb"], vec!["ccc"], vec!["dddddd"], vec!["e"]]);
    /// # }
    /// ```
    #[track_caller]
    fn chunks_weighted<F>(self, max_weight: usize, weigh: F) -> ChunksWeighted<Self, F>
    where
        Self: Sized,
        F: FnMut(&Self::Item) -> usize,
    {
        assert_nonzero(max_weight, "max_weight", "chunks_weighted");
        ChunksWeighted::new(self, max_weight, weigh)
    }

    /// Runs `f(item)` for up to `limit` items at once on the tokio runtime and yields the
    /// results **in input order**.
    ///
    /// - **Bound:** at most `limit` items are pulled from upstream and not yet yielded,
    ///   running or finished and waiting for their turn; a slow head item therefore stops
    ///   the pulling once `limit` items wait behind it. [`MapConcurrent::with_window`]
    ///   widens the number of waiting items while keeping `limit` jobs running.
    /// - **Progress:** each future runs as work on the caller's runtime (in parallel on a
    ///   multi-thread runtime), so it advances while the consumer is busy elsewhere.
    ///   Unlike `futures::StreamExt::buffered`, which only advances while it is polled.
    /// - **Cancellation:** dropping the stream aborts every future still running; no new
    ///   item is pulled after that.
    /// - **Panics:** a panic in `f`, in its future (polled, or dropped once finished) or
    ///   in upstream is re-raised in the consumer, with its original payload, at that
    ///   item's position; the results before it are yielded first and all other work is
    ///   cancelled before the re-raise. A panic while a cancelled future is dropped is
    ///   contained.
    ///
    /// `f` is called on the consumer's task; only the futures it returns cross to the
    /// runtime, so neither upstream nor `f` need to be `Send` or `'static`.
    ///
    /// While jobs run and finished results still wait to be taken, the stream may wait
    /// until a batch of places is free before it pulls again (an eighth of `limit`, at
    /// least 8 but at most half of `limit`; a batch hand-over is cheaper than one per
    /// item), so a job must not wait for an item that has not been pulled yet. It batches
    /// only while jobs finish at their first poll: behind jobs that waited (for a timer,
    /// I/O or another task) it fills every free place at once, as `buffer_unordered`
    /// does. A consumer that has taken every result pulls at once, and nothing waits
    /// while nothing runs.
    ///
    /// # Panics
    /// Panics at once if `limit == 0`; the first poll panics outside a tokio runtime,
    /// and a later poll panics if the runtime of the first poll has shut down while the
    /// stream still needs it.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use flowgate::prelude::*;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let results: Vec<u64> = flowgate::source::iter([30u64, 10, 20])
    ///     .map_concurrent(2, |ms| async move {
    ///         tokio::time::sleep(Duration::from_millis(ms)).await;
    ///         ms
    ///     })
    ///     .collect()
    ///     .await;
    /// assert_eq!(results, vec![30, 10, 20]); // input order, whatever finished first
    /// # }
    /// ```
    #[track_caller]
    fn map_concurrent<F, Fut>(self, limit: usize, f: F) -> MapConcurrent<Self, F, Fut>
    where
        Self: Sized,
        F: FnMut(Self::Item) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        assert_nonzero(limit, "limit", "map_concurrent");
        MapConcurrent::new(self, limit, f)
    }

    /// Runs `f(item)` for up to `limit` items at once on the tokio runtime and yields the
    /// results **as they finish**.
    ///
    /// The same bound, progress, cancellation and panic rules as
    /// [`map_concurrent`](FlowExt::map_concurrent), except that a result is yielded as
    /// soon as it is ready, so a slow item holds back nothing but its own place: the
    /// stream keeps `limit` jobs busy. A panic is re-raised when it happens; results
    /// finished but not yet yielded are dropped with the cancelled work.
    ///
    /// # Panics
    /// Panics at once if `limit == 0`; the first poll panics outside a tokio runtime,
    /// and a later poll panics if the runtime of the first poll has shut down while the
    /// stream still needs it.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use flowgate::prelude::*;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let results: Vec<u64> = flowgate::source::iter([30u64, 10, 20])
    ///     .map_concurrent_unordered(3, |ms| async move {
    ///         tokio::time::sleep(Duration::from_millis(ms)).await;
    ///         ms
    ///     })
    ///     .collect()
    ///     .await;
    /// assert_eq!(results, vec![10, 20, 30]); // the order they finished in
    /// # }
    /// ```
    #[track_caller]
    fn map_concurrent_unordered<F, Fut>(
        self,
        limit: usize,
        f: F,
    ) -> MapConcurrentUnordered<Self, F, Fut>
    where
        Self: Sized,
        F: FnMut(Self::Item) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        assert_nonzero(limit, "limit", "map_concurrent_unordered");
        MapConcurrentUnordered::new(self, limit, f)
    }

    /// Runs `f(item)` one item at a time **per key** and up to `limit` items at once
    /// across keys, on the tokio runtime, and yields the results **in input order**.
    ///
    /// `key(&item)` names the entity an item belongs to (an account, a device, a
    /// document): its items run one after another, in input order, each starting as
    /// soon as the previous one's job finished (not when its result is yielded), while
    /// items of other keys run alongside.
    ///
    /// - **Bound:** at most `limit` jobs run, and at most `limit` items (or the window,
    ///   [`MapConcurrentByKey::with_window`]) are pulled and not yet yielded, counting
    ///   the items that wait for their key. Memory stays O(window) however skewed the
    ///   keys, and a key is forgotten once nothing of it is in flight: memory does not
    ///   grow with the number of distinct keys seen.
    /// - **A slow key** does not hold the others up while the window has room: items
    ///   of other keys are pulled past its waiting items and run. **A hot key** whose
    ///   items fill the whole window stops the pulling until its items drain, one at a
    ///   time: widen the window (`with_window`) so that other keys' items fit beside
    ///   its backlog, or split the hot entity's work into finer keys where its order
    ///   allows.
    /// - **Progress, cancellation, panics:** as [`map_concurrent`](FlowExt::map_concurrent):
    ///   jobs run while the consumer is busy, dropping the stream cancels them (and
    ///   the items waiting for their key are dropped), and a panic in `key`, in `f` or
    ///   in its future is re-raised in the consumer at that item's position, with its
    ///   payload.
    ///
    /// `key` and `f` are called on the consumer's task; only the futures cross to the
    /// runtime. The stream is `Send` when upstream, `key`, `f`, the items and the keys
    /// are (`K` needs neither `Clone` nor `Sync`).
    ///
    /// # Panics
    /// Panics at once if `limit == 0`; the first poll panics outside a tokio runtime.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use flowgate::prelude::*;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// // (account, amount): an account's events apply one at a time, in order.
    /// let events = flowgate::source::iter([("a", 10), ("b", 5), ("a", -3), ("c", 7), ("a", 1)]);
    /// let start = tokio::time::Instant::now();
    /// let applied: Vec<(&str, i32)> = events
    ///     .map_concurrent_by_key(4, |(account, _)| *account, |event| async move {
    ///         tokio::time::sleep(Duration::from_millis(10)).await; // a write to a store
    ///         event
    ///     })
    ///     .collect()
    ///     .await;
    /// assert_eq!(applied, [("a", 10), ("b", 5), ("a", -3), ("c", 7), ("a", 1)]);
    /// // Account a's three writes one after another; b and c alongside the first.
    /// assert_eq!(start.elapsed(), Duration::from_millis(30));
    /// # }
    /// ```
    #[track_caller]
    fn map_concurrent_by_key<KF, K, F, Fut>(
        self,
        limit: usize,
        key: KF,
        f: F,
    ) -> MapConcurrentByKey<Self, KF, K, F, Fut>
    where
        Self: Sized,
        KF: FnMut(&Self::Item) -> K,
        K: std::hash::Hash + Eq,
        F: FnMut(Self::Item) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        assert_nonzero(limit, "limit", "map_concurrent_by_key");
        MapConcurrentByKey::new(self, limit, key, f)
    }

    /// Like [`map_concurrent_by_key`](FlowExt::map_concurrent_by_key), but yields the
    /// results **as they finish**: each key's results still in input order (its items
    /// run one at a time), different keys' results in any order.
    ///
    /// The bound counts, as for the ordered form, the items running, waiting for their
    /// key and finished but not yet yielded (at most `limit`, or the window); a result
    /// leaves as soon as its job finished, so only a hot key whose waiting items fill
    /// the window stops the pulling.
    ///
    /// # Panics
    /// Panics at once if `limit == 0`; the first poll panics outside a tokio runtime.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use flowgate::prelude::*;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// // Device 1 is slow; device 2's readings are not held up by it.
    /// let readings = flowgate::source::iter([(1, 'a'), (2, 'x'), (1, 'b'), (2, 'y'), (2, 'z')]);
    /// let out: Vec<(u32, char)> = readings
    ///     .map_concurrent_by_key_unordered(4, |(device, _)| *device, |(device, r)| async move {
    ///         let ms = if device == 1 { 50 } else { 1 };
    ///         tokio::time::sleep(Duration::from_millis(ms)).await;
    ///         (device, r)
    ///     })
    ///     .collect()
    ///     .await;
    /// assert_eq!(out, [(2, 'x'), (2, 'y'), (2, 'z'), (1, 'a'), (1, 'b')]);
    /// # }
    /// ```
    #[track_caller]
    fn map_concurrent_by_key_unordered<KF, K, F, Fut>(
        self,
        limit: usize,
        key: KF,
        f: F,
    ) -> MapConcurrentByKeyUnordered<Self, KF, K, F, Fut>
    where
        Self: Sized,
        KF: FnMut(&Self::Item) -> K,
        K: std::hash::Hash + Eq,
        F: FnMut(Self::Item) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        assert_nonzero(limit, "limit", "map_concurrent_by_key_unordered");
        MapConcurrentByKeyUnordered::new(self, limit, key, f)
    }

    /// Runs the blocking or CPU-bound `f(item)` on up to `limit` threads off the async
    /// runtime (tokio's blocking pool) and yields the results **in input order**.
    ///
    /// - **Bound:** at most `limit` items are pulled and not yet yielded
    ///   ([`ParMap::with_window`] widens it); at most `limit` closures run at once.
    /// - **Threads:** for CPU work choose a `limit` near the number of cores; for blocking
    ///   I/O, as many as the calls you want in flight. Each item costs a round trip
    ///   through the consumer (about 8 to 50 µs, measured on a 2-core machine), during
    ///   which its thread waits, so for fine-grained work (well under a millisecond per
    ///   item) chunk first (`futures::StreamExt::chunks` or [`chunks_within`](FlowExt::chunks_within))
    ///   and map whole chunks.
    /// - **Cancellation:** dropping the stream discards queued items; a closure already
    ///   running on a thread cannot be interrupted: it runs to its end and its result is
    ///   dropped.
    /// - **Panics:** a panic in `f` or in upstream is re-raised in the consumer at the
    ///   item's position, with the original payload, after the results before it.
    ///
    /// # Panics
    /// Panics at once if `limit == 0`; the first poll panics outside a tokio runtime,
    /// and a later poll panics if the runtime of the first poll has shut down while the
    /// stream still needs it.
    ///
    /// # Examples
    /// ```
    /// use flowgate::prelude::*;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main]
    /// # async fn main() {
    /// let sums: Vec<u64> = flowgate::source::iter(0..4u64)
    ///     .map(|i| (i * 1000..(i + 1) * 1000).collect::<Vec<u64>>())
    ///     .par_map(2, |chunk| chunk.iter().sum::<u64>())
    ///     .collect()
    ///     .await;
    /// assert_eq!(sums, vec![499500, 1499500, 2499500, 3499500]);
    /// # }
    /// ```
    #[track_caller]
    fn par_map<F, U>(self, limit: usize, f: F) -> ParMap<Self, F, U>
    where
        Self: Sized,
        Self::Item: Send + 'static,
        F: Fn(Self::Item) -> U + Send + Sync + 'static,
        U: Send + 'static,
    {
        assert_nonzero(limit, "limit", "par_map");
        ParMap::new(self, limit, f)
    }

    /// Runs the blocking or CPU-bound `f(item)` on up to `limit` threads off the async
    /// runtime and yields the results **as they finish**.
    ///
    /// The same bound, thread, cancellation and panic rules as
    /// [`par_map`](FlowExt::par_map); a panic is re-raised when it happens, and results
    /// finished but not yet yielded are dropped.
    ///
    /// # Panics
    /// Panics at once if `limit == 0`; the first poll panics outside a tokio runtime,
    /// and a later poll panics if the runtime of the first poll has shut down while the
    /// stream still needs it.
    ///
    /// # Examples
    /// ```
    /// use flowgate::prelude::*;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main]
    /// # async fn main() {
    /// let mut lengths: Vec<usize> = flowgate::source::iter(["a b", "c d e", "f"])
    ///     .par_map_unordered(2, |line| line.split_whitespace().count())
    ///     .collect()
    ///     .await;
    /// lengths.sort();
    /// assert_eq!(lengths, vec![1, 2, 3]);
    /// # }
    /// ```
    #[track_caller]
    fn par_map_unordered<F, U>(self, limit: usize, f: F) -> ParMapUnordered<Self, F, U>
    where
        Self: Sized,
        Self::Item: Send + 'static,
        F: Fn(Self::Item) -> U + Send + Sync + 'static,
        U: Send + 'static,
    {
        assert_nonzero(limit, "limit", "par_map_unordered");
        ParMapUnordered::new(self, limit, f)
    }

    /// Lets at most `n` items pass in any span of `per`, on tokio's clock: up to `n` at
    /// once after a quiet period (a burst), then one more each time the oldest of the
    /// last `n` is `per` old.
    ///
    /// It holds at most one item pulled ahead of its permit: upstream works one item
    /// ahead (its time overlaps the wait), and the stream's end is seen at once. Before
    /// a concurrent operator it limits job starts, since the operator pulls only when a
    /// job can start. Items are never dropped or reordered, only delayed. It waits on a tokio timer (so it needs a
    /// runtime with the time driver when polled, and is exact on the paused clock);
    /// memory holds the instants of the last `n` items and one item.
    ///
    /// # Panics
    /// If `n == 0` (naming `n`) or `per` is zero (naming `per`).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use flowgate::prelude::*;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let start = tokio::time::Instant::now();
    /// // At most 2 requests per 100 ms: 6 requests take 200 ms (2 at 0, 100, 200 ms).
    /// let replies: Vec<u32> = flowgate::source::iter(0..6u32)
    ///     .rate_limit(2, Duration::from_millis(100))
    ///     .map_concurrent(4, |i| async move { i * 10 })
    ///     .collect()
    ///     .await;
    /// assert_eq!(replies, [0, 10, 20, 30, 40, 50]);
    /// assert_eq!(start.elapsed(), Duration::from_millis(200));
    /// # }
    /// ```
    #[track_caller]
    fn rate_limit(self, n: usize, per: Duration) -> RateLimit<Self>
    where
        Self: Sized + Stream,
    {
        RateLimit::new(self, n, per)
    }

    /// Hands each item to a remote [`Worker`](crate::distributed::Worker) serving `task`
    /// through `broker`, and yields the results **in input order** (feature `nats`).
    ///
    /// - **Bound:** at most `limit` items pulled and not yet yielded, so at most `limit`
    ///   published and waiting: the generator waits while the workers are busy.
    /// - **Exactly once:** each position yields exactly one `Ok` result or
    ///   [`flowgate::Error`](crate::Error), whatever workers die or the broker
    ///   redelivers; duplicates are dropped by position.
    /// - **Failures** are values in their position: the task's error after its last
    ///   delivery ([`Cause::Failed`](crate::Cause::Failed), `attempts` = deliveries), a
    ///   panic in the task ([`Cause::Panicked`](crate::Cause::Panicked)), an item that
    ///   could not be carried ([`Cause::Broker`](crate::Cause::Broker): over the
    ///   broker's maximum message size, with its size and the limit; failed to encode;
    ///   given up by the broker; the broker failing for a minute on end). The run goes
    ///   on.
    /// - **No worker:** the job waits for one (see
    ///   [`MapRemote::waiting_for_workers`](crate::distributed::MapRemote::waiting_for_workers)).
    /// - **Drop** before the end purges the job's work not yet taken.
    ///
    /// See [`flowgate::distributed`](crate::distributed) for the promises in full.
    ///
    /// # Panics
    /// If `limit` is zero.
    ///
    /// # Examples
    /// ```
    /// use flowgate::distributed::{MemoryBroker, Task, Worker};
    /// use flowgate::prelude::*;
    /// use futures::StreamExt;
    /// use tokio_util::sync::CancellationToken;
    ///
    /// const SQUARE: Task<u64, u64> = Task::new("square");
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let broker = MemoryBroker::new();
    /// let stop = CancellationToken::new();
    /// let worker = Worker::new(broker.clone(), 2)
    ///     .task(SQUARE, |n: u64| async move { Ok::<_, String>(n * n) });
    /// tokio::spawn(worker.serve(stop.clone()));
    ///
    /// let squares: Vec<u64> = stream! { for n in 1..=5u64 { yield n } }
    ///     .map_remote(broker, SQUARE, 3)
    ///     .map(Result::unwrap)
    ///     .collect()
    ///     .await;
    /// assert_eq!(squares, [1, 4, 9, 16, 25]);
    /// stop.cancel();
    /// # }
    /// ```
    #[cfg(feature = "nats")]
    #[track_caller]
    fn map_remote<B, U, E>(
        self,
        broker: B,
        task: crate::distributed::Task<Self::Item, U, E>,
        limit: usize,
    ) -> crate::distributed::MapRemote<Self, B, Self::Item, U, E>
    where
        Self: Sized + Send + 'static,
        Self::Item: serde::Serialize,
        B: crate::distributed::Broker,
        U: serde::de::DeserializeOwned,
        E: serde::de::DeserializeOwned,
    {
        assert_nonzero(limit, "limit", "map_remote");
        crate::distributed::MapRemote::new(self, broker, task, limit, true)
    }

    /// [`map_remote`](FlowExt::map_remote), yielding results **as they arrive** (feature
    /// `nats`): the same bound, exactly once, failures as values; a slow item holds up
    /// nothing but its own slot.
    ///
    /// # Panics
    /// If `limit` is zero.
    ///
    /// # Examples
    /// ```
    /// use flowgate::distributed::{MemoryBroker, Task, Worker};
    /// use flowgate::prelude::*;
    /// use futures::StreamExt;
    /// use tokio_util::sync::CancellationToken;
    ///
    /// const NAP: Task<u64, u64> = Task::new("nap");
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let broker = MemoryBroker::new();
    /// let stop = CancellationToken::new();
    /// let worker = Worker::new(broker.clone(), 4).task(NAP, |ms: u64| async move {
    ///     tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    ///     Ok::<_, String>(ms)
    /// });
    /// tokio::spawn(worker.serve(stop.clone()));
    ///
    /// let arrived: Vec<u64> = stream! { for ms in [30, 10, 20u64] { yield ms } }
    ///     .map_remote_unordered(broker, NAP, 3)
    ///     .map(Result::unwrap)
    ///     .collect()
    ///     .await;
    /// assert_eq!(arrived, [10, 20, 30]);
    /// stop.cancel();
    /// # }
    /// ```
    #[cfg(feature = "nats")]
    #[track_caller]
    fn map_remote_unordered<B, U, E>(
        self,
        broker: B,
        task: crate::distributed::Task<Self::Item, U, E>,
        limit: usize,
    ) -> crate::distributed::MapRemote<Self, B, Self::Item, U, E>
    where
        Self: Sized + Send + 'static,
        Self::Item: serde::Serialize,
        B: crate::distributed::Broker,
        U: serde::de::DeserializeOwned,
        E: serde::de::DeserializeOwned,
    {
        assert_nonzero(limit, "limit", "map_remote_unordered");
        crate::distributed::MapRemote::new(self, broker, task, limit, false)
    }
}

impl<St: Stream + ?Sized> FlowExt for St {}

/// Fail-fast bounded concurrency for any [`TryStream`] (a stream of `Result<T, E>`).
///
/// Imported by `use flowgate::prelude::*`. Each operator keeps upstream's error type `E`:
/// `f` returns `Result<U, E>`. The first error, from upstream or from `f`, is yielded (in
/// its position for the ordered operators, when it happens for the unordered ones), then
/// the stream ends and its in-flight work is cancelled. An upstream error holds its
/// position and counts against the bound like any other item.
pub trait TryFlowExt: TryStream {
    /// Like [`FlowExt::map_concurrent`], for fallible work: results in input order, the
    /// first error ends the stream.
    ///
    /// Results before the failing position are yielded, then the error, then nothing;
    /// work after that position is cancelled as soon as the error is known, and nothing
    /// more is pulled.
    ///
    /// # Panics
    /// Panics at once if `limit == 0`; the first poll panics outside a tokio runtime,
    /// and a later poll panics if the runtime of the first poll has shut down while the
    /// stream still needs it. A panic in `f`, its future or upstream is re-raised at its
    /// position.
    ///
    /// # Examples
    /// ```
    /// use flowgate::prelude::*;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let out: Vec<Result<u32, String>> = flowgate::source::iter(vec![Ok(1), Ok(2), Ok(3), Ok(4)])
    ///     .try_map_concurrent(2, |x: u32| async move {
    ///         if x == 3 { Err(format!("item {x} is bad")) } else { Ok(x * 10) }
    ///     })
    ///     .collect()
    ///     .await;
    /// assert_eq!(out, vec![Ok(10), Ok(20), Err("item 3 is bad".to_string())]);
    /// # }
    /// ```
    #[track_caller]
    fn try_map_concurrent<F, Fut, U>(self, limit: usize, f: F) -> TryMapConcurrent<Self, F, Fut>
    where
        Self: Sized + Stream<Item = Result<Self::Ok, Self::Error>>,
        F: FnMut(Self::Ok) -> Fut,
        Fut: Future<Output = Result<U, Self::Error>> + Send + 'static,
        U: Send + 'static,
        Self::Error: Send + 'static,
    {
        assert_nonzero(limit, "limit", "try_map_concurrent");
        TryMapConcurrent::new(self, limit, f)
    }

    /// Like [`FlowExt::map_concurrent_unordered`], for fallible work: results as they
    /// finish, the first error ends the stream.
    ///
    /// The error is yielded as soon as it is known; results already finished but not yet
    /// yielded are dropped with the cancelled work. To keep every success, handle the
    /// error inside `f` (return `Ok(Err(e))`) instead.
    ///
    /// # Panics
    /// Panics at once if `limit == 0`; the first poll panics outside a tokio runtime,
    /// and a later poll panics if the runtime of the first poll has shut down while the
    /// stream still needs it.
    ///
    /// # Examples
    /// ```
    /// use flowgate::prelude::*;
    /// use futures::TryStreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut ok: Vec<u32> = flowgate::source::iter((1..=4).map(Ok::<u32, std::io::Error>))
    ///     .try_map_concurrent_unordered(2, |x| async move { Ok(x * 10) })
    ///     .try_collect()
    ///     .await
    ///     .unwrap();
    /// ok.sort();
    /// assert_eq!(ok, vec![10, 20, 30, 40]);
    /// # }
    /// ```
    #[track_caller]
    fn try_map_concurrent_unordered<F, Fut, U>(
        self,
        limit: usize,
        f: F,
    ) -> TryMapConcurrentUnordered<Self, F, Fut>
    where
        Self: Sized + Stream<Item = Result<Self::Ok, Self::Error>>,
        F: FnMut(Self::Ok) -> Fut,
        Fut: Future<Output = Result<U, Self::Error>> + Send + 'static,
        U: Send + 'static,
        Self::Error: Send + 'static,
    {
        assert_nonzero(limit, "limit", "try_map_concurrent_unordered");
        TryMapConcurrentUnordered::new(self, limit, f)
    }

    /// Like [`FlowExt::par_map`], for fallible blocking work: results in input order, the
    /// first error ends the stream.
    ///
    /// Queued items after the failing position never start; a closure already running
    /// finishes on its thread and its result is dropped.
    ///
    /// # Panics
    /// Panics at once if `limit == 0`; the first poll panics outside a tokio runtime,
    /// and a later poll panics if the runtime of the first poll has shut down while the
    /// stream still needs it.
    ///
    /// # Examples
    /// ```
    /// use flowgate::prelude::*;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main]
    /// # async fn main() {
    /// let parsed: Vec<Result<i64, String>> = flowgate::source::iter(["1", "2", "x", "4"])
    ///     .map(Ok::<&str, String>)
    ///     .try_par_map(2, |s| s.parse::<i64>().map_err(|e| format!("{s:?}: {e}")))
    ///     .collect()
    ///     .await;
    /// assert_eq!(parsed.len(), 3);
    /// assert_eq!(parsed[..2], [Ok(1), Ok(2)]);
    /// assert!(parsed[2].is_err());
    /// # }
    /// ```
    #[track_caller]
    fn try_par_map<F, U>(self, limit: usize, f: F) -> TryParMap<Self, F, U>
    where
        Self: Sized + Stream<Item = Result<Self::Ok, Self::Error>>,
        Self::Ok: Send + 'static,
        Self::Error: Send + 'static,
        F: Fn(Self::Ok) -> Result<U, Self::Error> + Send + Sync + 'static,
        U: Send + 'static,
    {
        assert_nonzero(limit, "limit", "try_par_map");
        TryParMap::new(self, limit, f)
    }

    /// Like [`FlowExt::par_map_unordered`], for fallible blocking work: results as they
    /// finish, the first error ends the stream (finished results not yet yielded are
    /// dropped).
    ///
    /// # Panics
    /// Panics at once if `limit == 0`; the first poll panics outside a tokio runtime,
    /// and a later poll panics if the runtime of the first poll has shut down while the
    /// stream still needs it.
    ///
    /// # Examples
    /// ```
    /// use flowgate::prelude::*;
    /// use futures::TryStreamExt;
    ///
    /// # #[tokio::main]
    /// # async fn main() {
    /// let mut squares: Vec<u64> = flowgate::source::iter((1..=3u64).map(Ok::<u64, String>))
    ///     .try_par_map_unordered(2, |x| Ok(x * x))
    ///     .try_collect()
    ///     .await
    ///     .unwrap();
    /// squares.sort();
    /// assert_eq!(squares, vec![1, 4, 9]);
    /// # }
    /// ```
    #[track_caller]
    fn try_par_map_unordered<F, U>(self, limit: usize, f: F) -> TryParMapUnordered<Self, F, U>
    where
        Self: Sized + Stream<Item = Result<Self::Ok, Self::Error>>,
        Self::Ok: Send + 'static,
        Self::Error: Send + 'static,
        F: Fn(Self::Ok) -> Result<U, Self::Error> + Send + Sync + 'static,
        U: Send + 'static,
    {
        assert_nonzero(limit, "limit", "try_par_map_unordered");
        TryParMapUnordered::new(self, limit, f)
    }
}

impl<St: TryStream + ?Sized> TryFlowExt for St {}
