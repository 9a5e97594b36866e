//! Seeing a run: a stage's [`Stats`] and its [`Snapshot`]s, and the [`Pipeline`] view
//! that gathers named stages and says which one holds the run back.
//!
//! Every concurrent operator's stream type has `.stats()` (take it before the first
//! poll) and `.named(..)`. A [`Stats`] handle is cheap to clone and to keep: atomics
//! written as the stage runs, read from any task or thread, no lock per item. Not
//! asking for it costs nothing measurable; asking costs under 10% per item on trivial
//! jobs (section 12 of `BENCHMARKS.md` in the repository).
//!
//! # What a snapshot counts
//! - `pulled_count`: items taken from upstream (a poll that returned an item, an
//!   upstream error included); `yielded_count`: items handed downstream;
//!   `held_count = pulled_count - yielded_count`, never above the window (the bound
//!   every concurrent operator keeps). After a fail-fast end, the items pulled and
//!   never yielded (cancelled) stay in `held_count`.
//! - `started_count`: jobs handed to the workers (every attempt: a retry is a job);
//!   `finished_count`: jobs whose code returned (a result or a panic, counted on the
//!   worker as it returns); `in_flight_count`: jobs started and neither finished nor
//!   cancelled (a blocking call abandoned at its timeout counts as cancelled: its
//!   thread runs on, outside the stage's limit). Items waiting for their key (keyed
//!   operators) or for a retry's backoff are held, not in flight.
//! - `failed_count`: items yielded as failures (an error, a timeout, a panic);
//!   `retried_count`: attempts that failed and were given another (counted when the
//!   retry is scheduled, so one cancelled during its backoff still counts).
//!
//! # What the times mean
//! Measured on tokio's clock (`tokio::time::Instant`, exact on the paused clock) from
//! the stage's first poll, at changes of state, never per item (on the paused clock,
//! blocking work such as a `par_map` closure takes no virtual time: only what awaits
//! tokio's timers does):
//! - **busy** while at least one job runs (from a job's hand-over to the return of
//!   its code; a job cancelled ends its part at its cancellation);
//! - **starved** while the stage has room and upstream is pending: from a poll of
//!   upstream that returned `Pending` until the stage next takes an item from it (or
//!   yields one downstream, after which the wait belongs to downstream);
//! - **backpressured** while its bound is full and a finished result waits for
//!   downstream: from a yield made with the bound full until downstream polls again.
//!
//! Starved and backpressured never overlap; busy overlaps either. A stage neither busy
//! nor waiting in either way is idle: between polls of a downstream that is busy
//! elsewhere while the stage has room, or before the first poll.
//!
//! # Failures, drops and readers
//! A failure that ends the run (fail fast, a re-raised panic) is counted in
//! `failed_count` as it leaves, its cancelled jobs leave `in_flight_count`, the clocks
//! stop, and then the stage is `ended`: the first snapshot that says `ended` has the
//! final counts. Dropping the stream ends it the same way (an open backpressure
//! interval counts to the drop); so does dropping it before its first poll (with
//! nothing counted), and a stage whose stream ends drops its upstream, which ends the
//! stages above it. Afterwards only `in_flight_count` and `finished_count` may still
//! move: a blocking call running when the stream was dropped cannot be interrupted and
//! returns on its thread. Every snapshot is consistent with itself: `held_count <=
//! window`, `in_flight_count <= limit`, `in_flight_count + finished_count <=
//! started_count`, every time `<= elapsed`; counts and times never go back between two
//! snapshots read by one task. Read snapshots inside the stage's runtime: on the
//! paused clock, a read from outside one uses the system clock, which does not agree
//! with the paused one. Times of a live stage count an open busy or starved
//! interval up to the reader's clock; an open backpressured interval is counted from
//! the first snapshot that saw it open (so a live figure lags by at most the time
//! between two snapshots), and its exact length joins the total when it closes. (Backpressure
//! opens and closes at every refill of a stage whose consumer keeps up, for
//! nanoseconds: timing it on the consumer's side alone keeps it cheap.)
//!
//! # Examples
//! ```
//! use std::time::Duration;
//! use flowgate::prelude::*;
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let flow = flowgate::source::iter(0..100u64)
//!     .map_concurrent(10, |i| async move {
//!         tokio::time::sleep(Duration::from_millis(10)).await;
//!         i
//!     })
//!     .named("fetch");
//! let stats = flow.stats(); // before the first poll
//! let out: Vec<u64> = flow.collect().await;
//! assert_eq!(out.len(), 100);
//!
//! let snapshot = stats.snapshot();
//! assert_eq!(snapshot.name.as_deref(), Some("fetch"));
//! assert_eq!(snapshot.pulled_count, 100);
//! assert_eq!(snapshot.yielded_count, 100);
//! assert_eq!(snapshot.in_flight_count, 0);
//! // Ten rounds of ten jobs, each 10 ms, on the paused clock: busy exactly 100 ms.
//! assert_eq!(snapshot.total_busy_duration, Duration::from_millis(100));
//! assert!(snapshot.ended);
//! # }
//! ```

mod core;
mod pipeline;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;

pub(crate) use self::core::{Core, Recorder};
pub use pipeline::{Bottleneck, Pipeline, PipelineSample, StageSample};

/// A handle on one stage's statistics: see the [module docs](self).
///
/// Made by `.stats()` on a concurrent operator's stream type, before its first poll.
/// Clones share the same counters. Reading is lock-free for the counters (a short
/// lock guards the busy and starved clocks, taken by the stage only when it turns busy
/// or idle, starved or not). The handle outlives the stage: after the stream ends or
/// is dropped, the snapshot is `ended`, with the clocks stopped and the counts final
/// (but for blocking calls still returning: see the [module docs](self)).
#[derive(Clone)]
pub struct Stats {
    core: Arc<Core>,
}

impl Stats {
    pub(crate) fn from_core(core: Arc<Core>) -> Self {
        Stats { core }
    }

    /// The stage's counters and times now: see the [module docs](self).
    ///
    /// Before the stage's first poll every count and time is zero. Read inside a tokio
    /// runtime for exact times on the paused clock; outside one, times are read from
    /// the system clock (a multi-thread runtime uses it anyway).
    pub fn snapshot(&self) -> Snapshot {
        self.core.snapshot()
    }

    /// The stage's name, if it was given one with `.named(..)`.
    pub fn name(&self) -> Option<Arc<str>> {
        self.core.name()
    }

    /// A stream of snapshots, one every `period` on tokio's clock (the first at once),
    /// for forwarding to a metrics system. After the stage ends it yields one last,
    /// final snapshot (`ended`) and ends. Ticks missed while the consumer was busy are
    /// not made up for (each snapshot is current when it is taken). Needs tokio's time
    /// driver.
    ///
    /// # Panics
    /// If `period` is zero, naming `period`.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use flowgate::prelude::*;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let flow = flowgate::source::iter(0..50u64)
    ///     .map_concurrent(5, |i| async move {
    ///         tokio::time::sleep(Duration::from_millis(100)).await;
    ///         i
    ///     });
    /// let stats = flow.stats();
    /// // Forward a snapshot every 250 ms, here to a Vec; a service would set gauges.
    /// let reporter = tokio::spawn(async move {
    ///     stats
    ///         .every(Duration::from_millis(250))
    ///         .map(|s| s.yielded_count)
    ///         .collect::<Vec<u64>>()
    ///         .await
    /// });
    /// let total = flow.count().await;
    /// let yielded_over_time = reporter.await.unwrap();
    /// assert_eq!(total, 50);
    /// assert_eq!(yielded_over_time.last(), Some(&50));
    /// assert!(yielded_over_time.windows(2).all(|w| w[0] <= w[1]));
    /// # }
    /// ```
    #[track_caller]
    pub fn every(&self, period: Duration) -> impl Stream<Item = Snapshot> + Send + 'static {
        check_period(period, "Stats::every");
        let stats = self.clone();
        async_stream::stream! {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let snapshot = stats.snapshot();
                let ended = snapshot.ended;
                yield snapshot;
                if ended {
                    break;
                }
            }
        }
    }
}

impl fmt::Debug for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Stats").field(&self.snapshot()).finish()
    }
}

#[track_caller]
pub(crate) fn check_period(period: Duration, what: &str) {
    if period.is_zero() {
        panic!("flowgate: `{what}` needs a `period` above zero");
    }
}

/// One stage's counters and times at one moment: see the [module docs](self) for what
/// each counts. Field names follow tokio-metrics (`*_count`, `total_*_duration`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The name given with `.named(..)`.
    pub name: Option<Arc<str>>,
    /// The operator (`"map_concurrent"`, `"par_map"`, ...); empty before the first
    /// poll.
    pub operator: &'static str,
    /// Jobs running at once, at most.
    pub limit: usize,
    /// Items pulled and not yet yielded, at most.
    pub window: usize,
    /// Items taken from upstream.
    pub pulled_count: u64,
    /// Jobs handed to the workers (attempts, retries included).
    pub started_count: u64,
    /// Jobs whose code returned (a result or a panic).
    pub finished_count: u64,
    /// Jobs started and neither finished nor cancelled.
    pub in_flight_count: u64,
    /// Items pulled and not yet yielded (`pulled_count - yielded_count`).
    pub held_count: u64,
    /// Items handed downstream.
    pub yielded_count: u64,
    /// Items whose final result is a failure.
    pub failed_count: u64,
    /// Attempts that failed and were tried again.
    pub retried_count: u64,
    /// Time with at least one job running.
    pub total_busy_duration: Duration,
    /// Time with room, waiting for upstream.
    pub total_starved_duration: Duration,
    /// Time with the bound full, a result waiting for downstream.
    pub total_backpressured_duration: Duration,
    /// Time since the stage's first poll (until its end, once it ended).
    pub elapsed: Duration,
    /// Whether the stage's stream has ended or was dropped.
    pub ended: bool,
}

impl Snapshot {
    fn unstarted(name: Option<Arc<str>>, ended: bool) -> Self {
        Snapshot {
            name,
            operator: "",
            limit: 0,
            window: 0,
            pulled_count: 0,
            started_count: 0,
            finished_count: 0,
            in_flight_count: 0,
            held_count: 0,
            yielded_count: 0,
            failed_count: 0,
            retried_count: 0,
            total_busy_duration: Duration::ZERO,
            total_starved_duration: Duration::ZERO,
            total_backpressured_duration: Duration::ZERO,
            elapsed: Duration::ZERO,
            ended,
        }
    }

    /// What happened between `earlier` (a snapshot of the same stage) and this one:
    /// counts and times as differences, `elapsed` the interval; the gauges
    /// (`in_flight_count`, `held_count`) and `ended` are this snapshot's.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            name: self.name.clone(),
            operator: self.operator,
            limit: self.limit,
            window: self.window,
            pulled_count: self.pulled_count.saturating_sub(earlier.pulled_count),
            started_count: self.started_count.saturating_sub(earlier.started_count),
            finished_count: self.finished_count.saturating_sub(earlier.finished_count),
            in_flight_count: self.in_flight_count,
            held_count: self.held_count,
            yielded_count: self.yielded_count.saturating_sub(earlier.yielded_count),
            failed_count: self.failed_count.saturating_sub(earlier.failed_count),
            retried_count: self.retried_count.saturating_sub(earlier.retried_count),
            total_busy_duration: self
                .total_busy_duration
                .saturating_sub(earlier.total_busy_duration),
            total_starved_duration: self
                .total_starved_duration
                .saturating_sub(earlier.total_starved_duration),
            total_backpressured_duration: self
                .total_backpressured_duration
                .saturating_sub(earlier.total_backpressured_duration),
            elapsed: self.elapsed.saturating_sub(earlier.elapsed),
            ended: self.ended,
        }
    }

    /// Busy time as a fraction of `elapsed` (0 when nothing elapsed).
    pub fn busy_ratio(&self) -> f64 {
        ratio(self.total_busy_duration, self.elapsed)
    }

    /// Starved time as a fraction of `elapsed`.
    pub fn starved_ratio(&self) -> f64 {
        ratio(self.total_starved_duration, self.elapsed)
    }

    /// Backpressured time as a fraction of `elapsed`.
    pub fn backpressured_ratio(&self) -> f64 {
        ratio(self.total_backpressured_duration, self.elapsed)
    }

    /// Items yielded per second of `elapsed` (0 when nothing elapsed).
    pub fn yielded_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.yielded_count as f64 / secs
        } else {
            0.0
        }
    }

    /// The name, or the operator for a stage without one.
    pub fn label(&self) -> &str {
        match &self.name {
            Some(name) => name,
            None if self.operator.is_empty() => "(not started)",
            None => self.operator,
        }
    }
}

fn ratio(part: Duration, whole: Duration) -> f64 {
    if whole.is_zero() {
        0.0
    } else {
        (part.as_secs_f64() / whole.as_secs_f64()).min(1.0)
    }
}
