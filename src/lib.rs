//! Lazy, bounded, concurrent stream pipelines on tokio.
//!
//! flowgate processes datasets of any size as async streams: a generator produces the data
//! on demand, the pipeline cuts it into chunks, processes the chunks concurrently (in
//! input order or as they finish) with a hard bound on the work in flight, and hands the
//! results on. It is the async answer to the "generator → chunks → `Pool.map`" recipe,
//! without its flaws: nothing is materialised, memory is bounded by the concurrency limit,
//! a slow consumer slows the producer (backpressure), results can stream in order, and
//! dropping the pipeline cancels its work.
//!
//! It runs on the caller's tokio runtime (it never builds one), takes any
//! [`Stream`](futures_core::Stream) in and gives a plain `Stream` out, so it composes with
//! `futures::StreamExt`, `futures::TryStreamExt` and `tokio_stream::StreamExt`: no method
//! name clashes.
//!
//! # A complete pipeline
//!
//! ```
//! use flowgate::prelude::*;
//! use futures::StreamExt;
//!
//! # #[tokio::main]
//! # async fn main() {
//! // A generator: produces lines on demand, never all at once.
//! let lines = stream! {
//!     for i in 0..10_000u32 {
//!         yield format!("record {i} with a few words");
//!     }
//! };
//!
//! // Cut into chunks, count words per chunk on 2 threads, merge as chunks finish.
//! let total: usize = lines
//!     .chunks(1_000)
//!     .par_map_unordered(2, |chunk: Vec<String>| {
//!         chunk.iter().map(|line| line.split_whitespace().count()).sum::<usize>()
//!     })
//!     .fold(0, |sum, n| async move { sum + n })
//!     .await;
//! assert_eq!(total, 10_000 * 6);
//! # }
//! ```
//!
//! # Which operator when
//!
//! | you have | use | results |
//! |---|---|---|
//! | async work per item (I/O, RPC) | [`map_concurrent`](FlowExt::map_concurrent) | input order |
//! | the same, order does not matter | [`map_concurrent_unordered`](FlowExt::map_concurrent_unordered) | as they finish |
//! | CPU-bound or blocking work per item or chunk | [`par_map`](FlowExt::par_map) | input order |
//! | the same, order does not matter | [`par_map_unordered`](FlowExt::par_map_unordered) | as they finish |
//! | work one at a time per entity (account, device), entities concurrently | [`map_concurrent_by_key`](FlowExt::map_concurrent_by_key) | input order (per key for [`_unordered`](FlowExt::map_concurrent_by_key_unordered)) |
//! | fallible work, stop at the first error | the `try_` forms on [`TryFlowExt`] | same |
//! | batches by count, with a deadline | [`chunks_within`](FlowExt::chunks_within) | `Vec` chunks |
//! | batches by size (bytes, cost) | [`chunks_weighted`](FlowExt::chunks_weighted) | `Vec` chunks |
//! | batches by count only | `futures::StreamExt::chunks` | `Vec` chunks |
//! | a lazy source from an iterator | [`source::iter`] | items |
//! | a text file of any size | [`source::lines`] | numbered lines; bad lines as errors naming path and line |
//! | an iterator that blocks (a database cursor) | [`source::blocking_iter`] | items, read ahead a bounded way on a blocking thread |
//! | results to a file or stdout | [`sink::lines`], [`sink::encoded`] | a `futures::Sink` |
//! | tests of your own pipelines | `flowgate::testing` (feature `test-util`) | mock sources and services, probes, leak checks |
//! | at most n items per period | [`rate_limit`](FlowExt::rate_limit) | items |
//! | more than one machine: chunks to worker processes through NATS JetStream | `map_remote`, `map_remote_unordered` and `Worker` in `flowgate::distributed` (feature `nats`) | input order (or as they arrive), exactly once |
//!
//! An ordered operator with a rare slow item stalls once `limit` results wait behind it;
//! `.with_window(w)` (for example [`MapConcurrent::with_window`](concurrent::MapConcurrent::with_window))
//! lets up to `w` results wait while `limit` jobs keep running.
//!
//! # What every concurrent operator promises
//!
//! 1. **Bounded.** At every moment, items pulled from upstream but not yet yielded number
//!    at most `limit` (or the window), running work and finished results waiting for their
//!    turn together. Memory is O(limit), whatever the size of the dataset.
//! 2. **Progress on its own.** Work runs as tasks on the caller's runtime (or, for
//!    `par_map`, on the blocking pool), so it advances while the consumer is busy
//!    elsewhere, and in parallel on a multi-thread runtime.
//! 3. **Cancellation on drop.** Dropping the stream aborts its in-flight work and starts
//!    nothing new: a worker claims a job in one step that the cancellation also takes,
//!    so a job not claimed by then never starts. A blocking closure already running (or
//!    claimed and about to be called) cannot be interrupted: it finishes and its result
//!    is discarded. A panic raised while a cancelled future is dropped is contained:
//!    after a drop nobody is left to receive it.
//! 4. **Panics are never lost.** A panic in user code (in `f`, in its future, in a
//!    finished future's destructor, or in upstream) re-raises in the consumer, with its
//!    original payload, when the consumer reaches it: in input order, only after the
//!    results before its position. All other work is cancelled first.
//! 5. **Fail fast.** In the `try_` operators the first error, from upstream or from `f`,
//!    is yielded in its position (ordered) or when it happens (unordered), then the stream
//!    ends. Work the failure makes useless (after its position, or all other work when
//!    unordered) is cancelled as soon as the failure happens, without waiting for the
//!    consumer's next poll.
//! 6. **Bad arguments fail loudly.** `limit == 0`, `max_items == 0`, `max_weight == 0` or
//!    a window below the limit panic where the operator is created. Building a pipeline
//!    needs no runtime; polling one that runs work outside a tokio runtime panics with a
//!    message saying so. A stream runs its work on the runtime of its first poll; if that
//!    runtime shuts down while the stream still needs it (jobs running there, or more to
//!    start), the next poll panics saying so, instead of waiting forever for work that
//!    died with it.
//!
//! # Handling failures
//!
//! A run over millions of items meets failing items, slow items and a request to stop.
//! The `try_` operators take failure policies as builder methods, in any order; the
//! engine applies them, so a retried item keeps its position, counts against the bound,
//! and `f` is still called only from the consumer's `poll_next`. With any of them the
//! stream yields `Result<U, flowgate::Error<E>>`: [`Error`] names the item's position,
//! the attempts made and the cause (the work's error, a timeout, a caught panic).
//!
//! | situation | policy |
//! |---|---|
//! | a service fails now and then | [`with_retry`](concurrent::Guarded::with_retry)`(`[`Retry`]`::attempts(n).backoff(..))` |
//! | some calls hang | [`with_timeout`](concurrent::Guarded::with_timeout)`(d)`, per attempt (and retried) |
//! | a bad record must not stop the run | [`keep_going`](concurrent::Guarded::keep_going)`()`: failures flow on as `Err` values |
//! | a library panics on some inputs | [`catch_panics`](concurrent::Guarded::catch_panics)`()`: a panic becomes an `Err` |
//! | failures go to a queue for later | [`dead_letters`](concurrent::Guarded::dead_letters)`(sink)`: any `futures::Sink` |
//! | Ctrl-C, a deploy, a deadline | [`with_shutdown`](concurrent::MapConcurrent::with_shutdown)`(token, grace)`, on every concurrent operator |
//! | a service allows n calls per second | [`rate_limit`](FlowExt::rate_limit)`(n, per)` before the operator |
//!
//! Without a policy nothing changes: the first error ends a `try_` stream (fail fast)
//! and a panic re-raises in the consumer. Every policy keeps the accounting promise:
//! each input position ends exactly once, as a success, a failure, or a position the
//! shutdown report names as not completed. The blocking operators take the same
//! policies ([`GuardedPar`](concurrent::GuardedPar)); a blocking call cannot be
//! interrupted, so a timeout abandons it and discards its late result.
//!
//! Retries with exponential backoff and a per-attempt timeout (exact on tokio's paused
//! clock):
//!
//! ```
//! use std::time::Duration;
//! use flowgate::prelude::*;
//! use flowgate::{Backoff, Retry};
//! use futures::TryStreamExt;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let tries = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let seen = tries.clone();
//! let out: Vec<u32> = flowgate::source::iter((0..3u32).map(Ok::<u32, String>))
//!     .try_map_concurrent(3, move |i| {
//!         let attempt = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!         async move {
//!             if i == 1 && attempt < 4 {
//!                 // Hangs at its first attempt, then the service is busy once.
//!                 tokio::time::sleep(Duration::from_secs(60)).await;
//!             }
//!             Ok(i)
//!         }
//!     })
//!     .with_timeout(Duration::from_millis(200))
//!     .with_retry(Retry::attempts(4)
//!         .backoff(Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1))))
//!     .try_collect()
//!     .await
//!     .unwrap();
//! assert_eq!(out, [0, 1, 2]);
//! # }
//! ```
//!
//! Keep going past failures, and send them to a dead-letter channel:
//!
//! ```
//! use flowgate::prelude::*;
//! use futures::{SinkExt, StreamExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let parse = |line: &'static str| async move { line.parse::<u32>().map_err(|e| e.to_string()) };
//! let lines = flowgate::source::iter(["1", "x", "3"].map(Ok::<&str, String>));
//!
//! // As values, in position:
//! let out: Vec<_> = lines.try_map_concurrent(2, parse).keep_going().collect().await;
//! assert_eq!(out[0], Ok(1));
//! assert_eq!(out[1].as_ref().unwrap_err().to_string(), "item 1 failed: invalid digit found in string");
//!
//! // Or aside, to any sink:
//! let (letters, failed) = futures::channel::mpsc::unbounded();
//! let lines = flowgate::source::iter(["1", "x", "3"].map(Ok::<&str, String>));
//! let ok: Vec<u32> = lines
//!     .try_map_concurrent(2, parse)
//!     .dead_letters(letters.sink_map_err(|_| "dead letters lost"))
//!     .map(Result::unwrap)
//!     .collect()
//!     .await;
//! assert_eq!(ok, [1, 3]);
//! assert_eq!(failed.map(|l| l.error.position()).collect::<Vec<_>>().await, [1]);
//! # }
//! ```
//!
//! Caught panics, and a graceful shutdown that reports what to resume:
//!
//! ```
//! use std::time::Duration;
//! use flowgate::policy::CancellationToken;
//! use flowgate::prelude::*;
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let token = CancellationToken::new();
//! let flow = flowgate::source::iter((0..100u32).map(Ok::<u32, String>))
//!     .try_map_concurrent(4, |i| async move {
//!         if i == 2 { panic!("corrupt record {i}") }
//!         tokio::time::sleep(Duration::from_millis(10)).await;
//!         Ok(i)
//!     })
//!     .catch_panics()
//!     .keep_going()
//!     .with_shutdown(token.clone(), Duration::from_millis(50));
//! let report = flow.shutdown_report();
//! let mut flow = Box::pin(flow);
//! let mut seen = 0;
//! while let Some(result) = flow.next().await {
//!     seen += 1;
//!     if let Err(e) = result {
//!         assert!(e.is_panic());
//!     }
//!     if seen == 10 {
//!         token.cancel();
//!     }
//! }
//! let left = report.get().expect("shut down");
//! assert_eq!(left.first_not_pulled(), seen as u64 + left.cancelled().len() as u64);
//! # }
//! ```
//!
//! # Seeing a run
//!
//! Every concurrent operator's stream type has `.stats()` and `.named(..)`: the
//! [`Stats`] handle is cheap, cloneable and readable from any task or thread while the
//! pipeline runs, and a [`Snapshot`] counts items pulled, started,
//! finished, in flight, yielded, failed and retried, and the time the stage was busy,
//! starved (waiting for upstream) and backpressured (waiting for downstream), on tokio's
//! clock. A [`Pipeline`](stats::Pipeline) view gathers named stages, gives each one's
//! throughput over the last interval and names the bottleneck: the stage busy while the
//! one before it is backpressured and the one after it starves (or the source, or the
//! consumer). Not asking for stats costs nothing measurable; asking costs under 10% on
//! the per-item benchmark of trivial jobs. With the feature `tracing`, each stage has a
//! `flowgate.stage` span (level INFO; fields `stage`, `operator`, `limit`, `window`),
//! each poll of a job a `flowgate.job` span under it (TRACE; `position`), and failures
//! and retries are events inside the stage's span (WARN "flowgate: an item failed" with
//! `position`, `kind`, `attempts`; DEBUG "flowgate: an attempt failed; retrying" with
//! `position`, `retry_in_ms`). A stage's span is entered while it is polled, and it
//! polls the stage before it: an upstream stage's span opens inside its downstream
//! stage's span.
//!
//! A progress bar (here indicatif's) driven by the pipeline view:
//!
//! ```
//! use std::time::Duration;
//! use flowgate::prelude::*;
//! use flowgate::stats::Pipeline;
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let fetch = flowgate::source::iter(0..1_000u64)
//!     .map_concurrent(16, |i| async move {
//!         tokio::time::sleep(Duration::from_millis(20)).await; // a request
//!         i
//!     })
//!     .named("fetch");
//! let view = Pipeline::new().stage(&fetch.stats());
//! let parse = fetch.par_map(2, |i| i * 2).named("parse");
//! let view = view.stage(&parse.stats());
//!
//! let bar = indicatif::ProgressBar::new(1_000);
//! let progress = tokio::spawn({
//!     let (bar, summary) = (bar.clone(), view.clone());
//!     async move {
//!         let mut samples = std::pin::pin!(view.every(Duration::from_millis(100)));
//!         while let Some(sample) = samples.next().await {
//!             let last = &sample.stages[sample.stages.len() - 1];
//!             bar.set_position(last.total.yielded_count);
//!             bar.set_message(format!("bottleneck: {}", sample.bottleneck));
//!         }
//!         summary.totals()
//!     }
//! });
//! assert_eq!(parse.count().await, 1_000);
//! let summary = progress.await.unwrap();
//! bar.finish_and_clear();
//! println!("{summary}"); // pulled, yielded, in flight, items/s, busy %, starved %, ...
//! assert_eq!(summary.stages[1].total.yielded_count, 1_000);
//! # }
//! ```
//!
//! Forwarding a stage's snapshots to a metrics system, every ten seconds:
//!
//! ```
//! use std::time::Duration;
//! use flowgate::prelude::*;
//! use futures::StreamExt;
//!
//! /// Stands for your metrics client (a gauge or counter per field).
//! fn gauge(name: &str, value: f64) {
//!     let _ = (name, value);
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let enrich = flowgate::source::iter(0..500u64)
//!     .map_concurrent(8, |i| async move {
//!         tokio::time::sleep(Duration::from_millis(100)).await;
//!         i
//!     })
//!     .named("enrich");
//! let stats = enrich.stats();
//! let exporter = tokio::spawn(async move {
//!     let mut every = std::pin::pin!(stats.every(Duration::from_secs(10)));
//!     let mut last = None;
//!     while let Some(now) = every.next().await {
//!         // Rates over the interval since the previous snapshot.
//!         let interval = match &last {
//!             Some(earlier) => now.since(earlier),
//!             None => now.clone(),
//!         };
//!         gauge("enrich.yielded_per_sec", interval.yielded_per_sec());
//!         gauge("enrich.busy_ratio", interval.busy_ratio());
//!         gauge("enrich.in_flight", now.in_flight_count as f64);
//!         gauge("enrich.failed_total", now.failed_count as f64);
//!         last = Some(now);
//!     }
//!     last.expect("a final snapshot").yielded_count
//! });
//! assert_eq!(enrich.count().await, 500);
//! assert_eq!(exporter.await.unwrap(), 500);
//! # }
//! ```
//!
//! # How it differs from `buffered` / `buffer_unordered`
//!
//! `futures::StreamExt::buffered(n)` polls its futures only while the consumer polls the
//! stream: when the consumer is busy, the work stalls (futures-rs issue 2387), and
//! `buffered(0)` hangs instead of failing (issue 2348). Its futures also all run inside
//! the consumer's task, so they never run in parallel. flowgate's operators run the work
//! as tasks on the runtime: it progresses on its own and in parallel, dropping the stream
//! cancels it, a panic in one job reaches the consumer at its position (in input order,
//! after the results before it), and a zero limit is rejected at once. The cost is a
//! handoff per item, amortized in batches: about 2x `buffer_unordered` per trivial job
//! (see BENCHMARKS.md in the repository).
//!
//! # What runs where
//!
//! The async operators run their futures on a few driver tasks of the caller's runtime
//! (about one per worker, never more than `limit`), not one task per item. On a
//! multi-thread runtime, quick jobs run on the consumer's own worker; while jobs keep
//! being queued, one driver stands by, as a rule on another worker, and takes any job
//! that has waited some tens of microseconds behind a long poll; it parks soon after
//! the queue was last seen non-empty, or at once when the consumer waits with nothing
//! queued. The blocking operators run their closures in short-lived loops on tokio's
//! blocking pool, at most `limit` at once. These timings are tuning, not promises: each
//! is named, with what it trades and how it was measured, in the engine's `tuning`
//! module (see ARCHITECTURE.md in the repository).
//!
//! # Bounds on types
//!
//! Upstream and the async lane's `f` stay inside the stream and are only called from its
//! `poll_next`, so neither needs to be `Send` or `'static`; only the futures `f` returns
//! (and their outputs) must be `Send + 'static`. The blocking lane needs a
//! `Fn + Send + Sync + 'static` closure and `Send + 'static` items and results. Every
//! stream type is `Send` when its parts are.
#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod chunk;
pub mod concurrent;
#[cfg(feature = "nats")]
pub mod distributed;
mod error;
mod ext;
pub mod policy;
pub mod sink;
pub mod source;
pub mod stats;
mod sync;
#[cfg(feature = "test-util")]
pub mod testing;

pub use error::{Cause, Error};
pub use ext::{FlowExt, TryFlowExt};
pub use policy::{Backoff, Retry};
pub use stats::{Snapshot, Stats};

/// Writes a stream as a generator: `yield` items from an `async` block.
///
/// Re-exported from [`async-stream`](https://docs.rs/async-stream).
pub use async_stream::stream;
/// Writes a fallible stream as a generator: `yield` items, `?` ends it with the error.
///
/// Re-exported from [`async-stream`](https://docs.rs/async-stream).
pub use async_stream::try_stream;

/// Everything a pipeline needs: `use flowgate::prelude::*;`.
///
/// Brings the extension traits [`FlowExt`] and [`TryFlowExt`] into scope (their methods
/// do not clash with `futures::StreamExt` or `tokio_stream::StreamExt`) and the
/// generator macros [`stream!`] and [`try_stream!`].
pub mod prelude {
    pub use crate::ext::{FlowExt, TryFlowExt};
    pub use crate::{stream, try_stream};
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
