//! Shared helpers of the side-by-side benchmarks: runtimes, settings read from the
//! environment, the async-lane workloads (flowgate and its peers, each summing
//! `x + 1` over `0..n`), and the calibrated CPU work of the blocking lane.
//!
//! Every async workload returns the same sum, `n * (n + 1) / 2`, so a benchmark can
//! check that a peer did all the work.

pub mod keyed;

use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use flowgate::prelude::*;
use futures::StreamExt;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

/// The environment variable that overrides a benchmark's item count (for quick runs).
pub const ITEMS_ENV: &str = "FLOWGATE_BENCH_ITEMS";

/// The environment variable that adds the 10^7 size to the growth benchmark.
pub const BIG_ENV: &str = "FLOWGATE_BENCH_BIG";

/// The item count: `FLOWGATE_BENCH_ITEMS` if set, else `default`.
///
/// # Panics
/// Panics if the variable is set but is not a positive integer (underscores allowed).
pub fn items_from_env(default: u64) -> u64 {
    match std::env::var(ITEMS_ENV) {
        Ok(text) => {
            let n: u64 = text
                .replace('_', "")
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{ITEMS_ENV}={text:?} is not an item count"));
            assert!(n > 0, "{ITEMS_ENV} must be positive");
            n
        }
        Err(_) => default,
    }
}

/// Whether an environment flag is set to `1` (or `true`/`yes`).
pub fn env_flag(name: &str) -> bool {
    matches!(
        std::env::var(name).as_deref(),
        Ok("1" | "true" | "yes" | "TRUE" | "YES")
    )
}

/// The two runtime flavours every async benchmark runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `current_thread`: everything on the benchmark's own thread.
    CurrentThread,
    /// `multi_thread` with two workers (the machine has two cores).
    MultiThread,
}

impl Flavor {
    /// Both flavours, in the order they are reported.
    pub const ALL: [Flavor; 2] = [Flavor::CurrentThread, Flavor::MultiThread];

    /// The name used in benchmark group names.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::CurrentThread => "current_thread",
            Flavor::MultiThread => "multi_thread",
        }
    }

    /// Builds a runtime of this flavour, with all drivers enabled.
    pub fn runtime(self) -> Runtime {
        match self {
            Flavor::CurrentThread => current_thread_runtime(),
            Flavor::MultiThread => multi_thread_runtime(2),
        }
    }
}

/// A `current_thread` runtime with all drivers enabled.
pub fn current_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a current_thread runtime")
}

/// A `multi_thread` runtime with `workers` workers and all drivers enabled.
pub fn multi_thread_runtime(workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("building a multi_thread runtime")
}

/// Runs `future` as a task of the current runtime and waits for it.
///
/// Every workload runs this way, so on a `multi_thread` runtime the consumer sits on a
/// runtime worker, as a pipeline inside a tokio application does, rather than on the
/// thread that called `block_on`.
pub async fn in_task<F>(future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future).await.expect("the workload panicked")
}

/// The expected result of every async workload over `0..n`: the sum of `x + 1`.
pub fn expected_sum(n: u64) -> u64 {
    n * (n + 1) / 2
}

/// The async-lane workloads: flowgate's two operators and their peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsyncWorkload {
    /// `flowgate::source::iter(0..n).map_concurrent_unordered(limit, ..)`.
    MapConcurrentUnordered,
    /// `flowgate::source::iter(0..n).map_concurrent(limit, ..)`.
    MapConcurrent,
    /// `futures::stream::iter(0..n).map(..).buffer_unordered(limit)`.
    BufferUnordered,
    /// `futures::stream::iter(0..n).map(..).buffered(limit)`.
    Buffered,
    /// `futures::stream::iter(0..n).for_each_concurrent(limit, ..)`, summing into an atomic.
    ForEachConcurrent,
    /// One `tokio::spawn` per item, at most `limit` in a `JoinSet`.
    SpawnJoinSet,
    /// par-stream's ordered `par_then` with `limit` workers and a buffer of `limit`.
    ParStreamThen,
    /// par-stream's `par_then_unordered` with `limit` workers and a buffer of `limit`.
    ParStreamThenUnordered,
    /// `map_concurrent` with its statistics taken (`.stats()`).
    MapConcurrentStats,
    /// `map_concurrent_unordered` with its statistics taken (`.stats()`).
    MapConcurrentUnorderedStats,
}

impl AsyncWorkload {
    /// Every workload, in the order they are reported.
    pub const ALL: [AsyncWorkload; 10] = [
        AsyncWorkload::MapConcurrentUnordered,
        AsyncWorkload::MapConcurrent,
        AsyncWorkload::BufferUnordered,
        AsyncWorkload::Buffered,
        AsyncWorkload::ForEachConcurrent,
        AsyncWorkload::SpawnJoinSet,
        AsyncWorkload::ParStreamThen,
        AsyncWorkload::ParStreamThenUnordered,
        AsyncWorkload::MapConcurrentStats,
        AsyncWorkload::MapConcurrentUnorderedStats,
    ];

    /// The name used in benchmark ids and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            AsyncWorkload::MapConcurrentUnordered => "map_concurrent_unordered",
            AsyncWorkload::MapConcurrent => "map_concurrent",
            AsyncWorkload::BufferUnordered => "buffer_unordered",
            AsyncWorkload::Buffered => "buffered",
            AsyncWorkload::ForEachConcurrent => "for_each_concurrent",
            AsyncWorkload::SpawnJoinSet => "spawn",
            AsyncWorkload::ParStreamThen => "par_stream_then",
            AsyncWorkload::ParStreamThenUnordered => "par_stream_then_unordered",
            AsyncWorkload::MapConcurrentStats => "map_concurrent_stats",
            AsyncWorkload::MapConcurrentUnorderedStats => "map_concurrent_unordered_stats",
        }
    }

    /// The workload with this name, if any.
    pub fn from_name(name: &str) -> Option<AsyncWorkload> {
        Self::ALL.into_iter().find(|w| w.name() == name)
    }

    /// Runs the workload over `0..n` with `limit` in flight and returns its sum. Must be
    /// awaited inside a tokio runtime (see [`in_task`]).
    pub async fn run(self, n: u64, limit: usize) -> u64 {
        match self {
            AsyncWorkload::MapConcurrentUnordered => {
                flowgate_unordered(flowgate::source::iter(0..n), limit).await
            }
            AsyncWorkload::MapConcurrent => {
                flowgate_ordered(flowgate::source::iter(0..n), limit).await
            }
            AsyncWorkload::BufferUnordered => buffer_unordered(n, limit).await,
            AsyncWorkload::Buffered => buffered(n, limit).await,
            AsyncWorkload::ForEachConcurrent => for_each_concurrent(n, limit).await,
            AsyncWorkload::SpawnJoinSet => spawn_join_set(n, limit).await,
            AsyncWorkload::ParStreamThen => par_stream_then(n, limit).await,
            AsyncWorkload::ParStreamThenUnordered => par_stream_then_unordered(n, limit).await,
            AsyncWorkload::MapConcurrentStats => flowgate_with_stats(n, limit, true).await,
            AsyncWorkload::MapConcurrentUnorderedStats => {
                flowgate_with_stats(n, limit, false).await
            }
        }
    }
}

async fn add_wrapping(total: u64, x: u64) -> u64 {
    total.wrapping_add(x)
}

/// flowgate's `map_concurrent_unordered` over `source`, summed with `fold`.
pub async fn flowgate_unordered<S>(source: S, limit: usize) -> u64
where
    S: futures::Stream<Item = u64>,
{
    source
        .map_concurrent_unordered(limit, |x| async move { x + 1 })
        .fold(0u64, add_wrapping)
        .await
}

/// flowgate's `map_concurrent` over `source`, summed with `fold`.
pub async fn flowgate_ordered<S>(source: S, limit: usize) -> u64
where
    S: futures::Stream<Item = u64>,
{
    source
        .map_concurrent(limit, |x| async move { x + 1 })
        .fold(0u64, add_wrapping)
        .await
}

/// flowgate's `map_concurrent` (`ordered`) or `map_concurrent_unordered` with its
/// statistics taken (`.stats()`), summed with `fold` as [`flowgate_ordered`] and
/// [`flowgate_unordered`] are; checks the final snapshot's counts.
pub async fn flowgate_with_stats(n: u64, limit: usize, ordered: bool) -> u64 {
    let source = flowgate::source::iter(0..n);
    let (sum, stats) = if ordered {
        let flow = source.map_concurrent(limit, |x| async move { x + 1 });
        let stats = flow.stats();
        (flow.fold(0u64, add_wrapping).await, stats)
    } else {
        let flow = source.map_concurrent_unordered(limit, |x| async move { x + 1 });
        let stats = flow.stats();
        (flow.fold(0u64, add_wrapping).await, stats)
    };
    let snapshot = stats.snapshot();
    assert_eq!(
        (
            snapshot.pulled_count,
            snapshot.finished_count,
            snapshot.yielded_count
        ),
        (n, n, n),
        "the statistics count every item"
    );
    sum
}

/// Which failure policies a `try_map_concurrent` benchmark attaches (no item fails):
/// what they cost when nothing goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policies {
    /// None: the plain fail-fast operator.
    None,
    /// A timeout per attempt, keep-going and caught panics.
    TimeoutKeepGoing,
    /// The same, and retries with backoff (each item is cloned and kept until it
    /// settles).
    WithRetry,
}

/// flowgate's `try_map_concurrent` (ordered) with `policies` attached.
pub async fn flowgate_try_ordered(n: u64, limit: usize, policies: Policies) -> u64 {
    let source = flowgate::source::iter((0..n).map(Ok::<u64, String>));
    let plain = source.try_map_concurrent(limit, |x| async move { Ok::<u64, String>(x + 1) });
    let timeout = std::time::Duration::from_secs(60);
    match policies {
        Policies::None => {
            plain
                .fold(0u64, |sum, r| add_wrapping(sum, r.expect("no item fails")))
                .await
        }
        Policies::TimeoutKeepGoing => {
            plain
                .with_timeout(timeout)
                .keep_going()
                .catch_panics()
                .fold(0u64, |sum, r| add_wrapping(sum, r.expect("no item fails")))
                .await
        }
        Policies::WithRetry => {
            plain
                .with_timeout(timeout)
                .keep_going()
                .catch_panics()
                .with_retry(
                    flowgate::Retry::attempts(3).backoff(flowgate::Backoff::exponential(
                        std::time::Duration::from_millis(10),
                        std::time::Duration::from_secs(1),
                    )),
                )
                .fold(0u64, |sum, r| add_wrapping(sum, r.expect("no item fails")))
                .await
        }
    }
}

/// futures' `buffer_unordered`.
pub async fn buffer_unordered(n: u64, limit: usize) -> u64 {
    futures::stream::iter(0..n)
        .map(|x| async move { x + 1 })
        .buffer_unordered(limit)
        .fold(0u64, add_wrapping)
        .await
}

/// futures' `buffered`.
pub async fn buffered(n: u64, limit: usize) -> u64 {
    futures::stream::iter(0..n)
        .map(|x| async move { x + 1 })
        .buffered(limit)
        .fold(0u64, add_wrapping)
        .await
}

/// futures' `for_each_concurrent`: it yields nothing, so each future adds its result to
/// a shared atomic (relaxed).
pub async fn for_each_concurrent(n: u64, limit: usize) -> u64 {
    let total = AtomicU64::new(0);
    futures::stream::iter(0..n)
        .for_each_concurrent(limit, |x| {
            let total = &total;
            async move {
                total.fetch_add(x + 1, Ordering::Relaxed);
            }
        })
        .await;
    total.into_inner()
}

/// One `tokio::spawn` per item, at most `limit` at once in a `JoinSet`.
pub async fn spawn_join_set(n: u64, limit: usize) -> u64 {
    let mut set = JoinSet::new();
    let mut total = 0u64;
    for x in 0..n {
        if set.len() >= limit {
            let done = set.join_next().await.expect("a task is running");
            total = total.wrapping_add(done.expect("the task panicked"));
        }
        set.spawn(async move { x + 1 });
    }
    while let Some(done) = set.join_next().await {
        total = total.wrapping_add(done.expect("the task panicked"));
    }
    total
}

/// par-stream's parameters: `workers` workers and a channel buffer of the same size.
pub fn par_stream_params(workers: usize) -> par_stream::ParParams {
    par_stream::ParParams {
        num_workers: workers,
        buf_size: Some(workers),
    }
}

/// par-stream's ordered `par_then`.
pub async fn par_stream_then(n: u64, limit: usize) -> u64 {
    par_stream::ParStreamExt::par_then(
        futures::stream::iter(0..n),
        par_stream_params(limit),
        |x| async move { x + 1 },
    )
    .fold(0u64, add_wrapping)
    .await
}

/// par-stream's `par_then_unordered`.
pub async fn par_stream_then_unordered(n: u64, limit: usize) -> u64 {
    par_stream::ParStreamExt::par_then_unordered(
        futures::stream::iter(0..n),
        par_stream_params(limit),
        |x| async move { x + 1 },
    )
    .fold(0u64, add_wrapping)
    .await
}

/// flowgate's `par_map` with a trivial closure: the blocking lane's handoff cost.
pub async fn flowgate_par_map_trivial(n: u64, limit: usize) -> u64 {
    flowgate::source::iter(0..n)
        .par_map(limit, |x| x + 1)
        .fold(0u64, add_wrapping)
        .await
}

// ---------------------------------------------------------------------------------------
// The blocking lane's CPU work.
// ---------------------------------------------------------------------------------------

/// The target cost of one blocking-lane item.
pub const TARGET_ITEM_TIME: Duration = Duration::from_micros(30);

/// A deterministic busy computation: `rounds` rounds of an integer mix seeded by `x`.
///
/// The result is below 2^16, so sums over millions of items never overflow.
#[inline(never)]
pub fn busy(x: u64, rounds: u64) -> u64 {
    let mut h = black_box(x) ^ 0x9E37_79B9_7F4A_7C15;
    for _ in 0..black_box(rounds) {
        h ^= h >> 33;
        h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        h ^= h >> 29;
        h = h.wrapping_add(0x2545_F491_4F6C_DD1D);
    }
    h >> 48
}

/// The work of one blocking-lane item, with the calibrated round count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    /// Rounds of [`busy`] per item.
    pub rounds: u64,
}

impl Work {
    /// One item's work.
    #[inline]
    pub fn item(self, x: u64) -> u64 {
        busy(x, self.rounds)
    }

    /// A chunk's work: the sum of its items' work.
    pub fn chunk(self, xs: &[u64]) -> u64 {
        xs.iter().map(|&x| self.item(x)).sum()
    }

    /// The work of `0..n` on this thread: the sequential reference.
    pub fn sequential(self, n: u64) -> u64 {
        (0..n).map(|x| self.item(x)).sum()
    }

    /// The machine's ideal: `0..n` split statically into `threads` contiguous parts,
    /// each on its own `std::thread`, with no coordination beyond the final join.
    pub fn ideal(self, n: u64, threads: u64) -> u64 {
        std::thread::scope(|scope| {
            let parts: Vec<_> = (0..threads)
                .map(|t| {
                    let (start, end) = (n * t / threads, n * (t + 1) / threads);
                    scope.spawn(move || (start..end).map(|x| self.item(x)).sum::<u64>())
                })
                .collect();
            parts
                .into_iter()
                .map(|part| part.join().expect("a worker panicked"))
                .sum()
        })
    }
}

/// The environment variable that fixes the round count of [`busy`] per item, skipping
/// the calibration (to keep the same work across runs).
pub const ROUNDS_ENV: &str = "FLOWGATE_BENCH_ROUNDS";

/// The work of one item, fixed once per process: `FLOWGATE_BENCH_ROUNDS` rounds of
/// [`busy`] if set, else the round count calibrated to take about [`TARGET_ITEM_TIME`]
/// on this machine. Prints the round count and the time per item it measures.
///
/// Calibration keeps the fastest of several timed batches, so a co-tenant busy during
/// calibration does not shrink the items much; `FLOWGATE_BENCH_ROUNDS` makes runs on
/// different days do the same work.
pub fn calibrated_work() -> Work {
    static WORK: OnceLock<Work> = OnceLock::new();
    *WORK.get_or_init(|| {
        let (rounds, how) = match std::env::var(ROUNDS_ENV) {
            Ok(text) => (
                text.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{ROUNDS_ENV}={text:?} is not a round count")),
                "set by FLOWGATE_BENCH_ROUNDS",
            ),
            Err(_) => (calibrate(TARGET_ITEM_TIME), "calibrated"),
        };
        let work = Work { rounds };
        let per_item = time_per_item(work, 100);
        eprintln!(
            "calibration: {rounds} rounds of the integer mix per item ({how}; \
             {ROUNDS_ENV}={rounds} repeats it), {:.1} µs per item now (target {} µs)",
            per_item.as_secs_f64() * 1e6,
            TARGET_ITEM_TIME.as_micros()
        );
        work
    })
}

/// The fastest time per item over several batches of `batch` items.
fn time_per_item(work: Work, batch: u64) -> Duration {
    (0..11)
        .map(|round| {
            let start = Instant::now();
            for x in 0..batch {
                black_box(work.item(x + round * batch));
            }
            start.elapsed() / batch as u32
        })
        .min()
        .expect("at least one batch")
}

/// The round count that makes one item take about `target`.
fn calibrate(target: Duration) -> u64 {
    let mut rounds = 1_000u64;
    // Grow until a single item is measurable, then rescale until two successive
    // measurements agree with the target within 3%.
    while time_per_item(Work { rounds }, 20) < Duration::from_micros(2) {
        rounds *= 4;
    }
    let mut agreed = 0;
    for _ in 0..12 {
        let ratio = target.as_secs_f64() / time_per_item(Work { rounds }, 100).as_secs_f64();
        if (ratio - 1.0).abs() < 0.03 {
            agreed += 1;
            if agreed == 2 {
                break;
            }
        } else {
            agreed = 0;
            rounds = ((rounds as f64) * ratio).round().max(1.0) as u64;
        }
    }
    rounds
}

/// The machine's load averages over 1, 5 and 15 minutes (Linux), for a run's header.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// A command-line number above zero (`_` separators allowed), or `None`.
pub fn number(value: Option<String>) -> Option<u64> {
    value?.replace('_', "").parse().ok().filter(|&n| n > 0)
}
