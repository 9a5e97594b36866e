//! The pipeline view: named stages' snapshots side by side, their throughput over a
//! recent interval, and the stage that holds the run back.

use std::fmt;
use std::time::Duration;

use futures_core::Stream;

use super::{check_period, Snapshot, Stats};

/// Below this share of an interval, no stage (nor the source, nor the consumer) is
/// called the bottleneck: nothing much happened.
const LEAST_SHARE: f64 = 0.05;

/// A view of a pipeline's stages, in order from the source to the consumer, that
/// samples their snapshots and names the bottleneck.
///
/// Each [`sample`](Pipeline::sample) covers the interval since the previous one (the
/// first, since the stages started). Within it, a stage *limits* the run for the time it
/// was busy while neither starved nor backpressured; the source limits it for the time
/// the first stage was starved, the consumer for the time the last stage was
/// backpressured. The one that limited it longest is the [`Bottleneck`]: a slow stage is
/// busy while the stage before it is backpressured and the one after it starves.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use flowgate::prelude::*;
/// use flowgate::stats::{Bottleneck, Pipeline};
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let sleep = |ms| tokio::time::sleep(Duration::from_millis(ms));
/// let fetch = flowgate::source::iter(0..200u64)
///     .map_concurrent(8, move |i| async move { sleep(1).await; i })
///     .named("fetch");
/// let fetch_stats = fetch.stats();
/// let parse = fetch
///     .map_concurrent(2, move |i| async move { sleep(20).await; i })
///     .named("parse");
/// let parse_stats = parse.stats();
/// let store = parse
///     .map_concurrent(8, move |i| async move { sleep(1).await; i })
///     .named("store");
/// let store_stats = store.stats();
///
/// let mut view = Pipeline::new()
///     .stage(&fetch_stats)
///     .stage(&parse_stats)
///     .stage(&store_stats);
/// assert_eq!(store.count().await, 200);
/// let sample = view.sample();
/// assert_eq!(sample.bottleneck, Bottleneck::Stage { index: 1, name: "parse".into() });
/// println!("{sample}"); // a table: pulled, yielded, items/s, busy %, starved %, ...
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct Pipeline {
    stages: Vec<(Stats, Option<Snapshot>)>,
}

impl Pipeline {
    /// A view with no stages yet.
    pub fn new() -> Self {
        Pipeline::default()
    }

    /// Adds the next stage downstream.
    pub fn stage(mut self, stats: &Stats) -> Self {
        self.stages.push((stats.clone(), None));
        self
    }

    /// The stages' snapshots now, what happened since the previous sample, and the
    /// bottleneck over that interval.
    pub fn sample(&mut self) -> PipelineSample {
        let stages: Vec<StageSample> = self
            .stages
            .iter_mut()
            .map(|(stats, last)| {
                let total = stats.snapshot();
                let interval = match last {
                    Some(earlier) => total.since(earlier),
                    None => total.clone(),
                };
                *last = Some(total.clone());
                StageSample { total, interval }
            })
            .collect();
        let bottleneck = bottleneck(&stages);
        PipelineSample { stages, bottleneck }
    }

    /// The stages since they started, without moving the interval [`sample`]
    /// measures from: for a summary at the end of a run.
    ///
    /// [`sample`]: Pipeline::sample
    pub fn totals(&self) -> PipelineSample {
        let stages: Vec<StageSample> = self
            .stages
            .iter()
            .map(|(stats, _)| {
                let total = stats.snapshot();
                StageSample {
                    interval: total.clone(),
                    total,
                }
            })
            .collect();
        let bottleneck = bottleneck(&stages);
        PipelineSample { stages, bottleneck }
    }

    /// A stream of samples, one every `period` on tokio's clock (the first after one
    /// period), each over the interval since the previous one. After every stage has
    /// ended it yields one last sample and ends. Needs tokio's time driver.
    ///
    /// # Panics
    /// If `period` is zero, naming `period`.
    #[track_caller]
    pub fn every(mut self, period: Duration) -> impl Stream<Item = PipelineSample> + Send {
        check_period(period, "Pipeline::every");
        async_stream::stream! {
            let start = tokio::time::Instant::now() + period;
            let mut ticks = tokio::time::interval_at(start, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let sample = self.sample();
                let ended = sample.stages.iter().all(|stage| stage.total.ended);
                yield sample;
                if ended {
                    break;
                }
            }
        }
    }
}

/// One stage in a [`PipelineSample`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StageSample {
    /// Since the stage started.
    pub total: Snapshot,
    /// Since the previous sample (see [`Snapshot::since`]).
    pub interval: Snapshot,
}

impl StageSample {
    /// How long, as a share of the interval, the stage was busy while neither starved
    /// nor backpressured, as far as the interval's totals tell: `min(busy, 1 - starved
    /// - backpressured)` of its ratios (the overlaps themselves are not timed).
    pub fn limiting_ratio(&self) -> f64 {
        let i = &self.interval;
        let free = 1.0 - i.starved_ratio() - i.backpressured_ratio();
        i.busy_ratio().min(free).max(0.0)
    }
}

/// What held a pipeline back over an interval: see [`Pipeline`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Bottleneck {
    /// A stage, by its place in the view (0 is nearest the source) and its label (its
    /// name, or its operator).
    Stage {
        /// Its place in the view.
        index: usize,
        /// Its name, or its operator.
        name: String,
    },
    /// The source: the first stage starved.
    Source,
    /// The consumer: the last stage was backpressured.
    Consumer,
    /// Nothing held the run back for a measurable share of the interval (or nothing
    /// ran).
    None,
}

impl fmt::Display for Bottleneck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bottleneck::Stage { name, .. } => write!(f, "stage `{name}`"),
            Bottleneck::Source => f.write_str("the source (the first stage starves)"),
            Bottleneck::Consumer => f.write_str("the consumer (the last stage is backpressured)"),
            Bottleneck::None => f.write_str("none"),
        }
    }
}

fn bottleneck(stages: &[StageSample]) -> Bottleneck {
    let (Some(first), Some(last)) = (stages.first(), stages.last()) else {
        return Bottleneck::None;
    };
    let mut best = (LEAST_SHARE, Bottleneck::None);
    for (index, stage) in stages.iter().enumerate() {
        let share = stage.limiting_ratio();
        if share > best.0 {
            best = (
                share,
                Bottleneck::Stage {
                    index,
                    name: stage.total.label().to_owned(),
                },
            );
        }
    }
    let source = first.interval.starved_ratio();
    if source > best.0 {
        best = (source, Bottleneck::Source);
    }
    let consumer = last.interval.backpressured_ratio();
    if consumer > best.0 {
        best = (consumer, Bottleneck::Consumer);
    }
    best.1
}

/// The stages of a [`Pipeline`] at one moment, and its bottleneck. `Display` prints a
/// table, one row per stage: pulled, yielded and in flight since the stage started;
/// items/s, busy, starved and backpressured over the sample's interval (for
/// [`Pipeline::totals`], since the stage started); then the bottleneck.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PipelineSample {
    /// The stages, from the source to the consumer.
    pub stages: Vec<StageSample>,
    /// What held the run back over the interval.
    pub bottleneck: Bottleneck,
}

impl fmt::Display for PipelineSample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .stages
            .iter()
            .map(|stage| stage.total.label().len())
            .max()
            .unwrap_or(0)
            .max("stage".len());
        writeln!(
            f,
            "{:<width$} {:>12} {:>12} {:>9} {:>12} {:>6} {:>8} {:>8}",
            "stage", "pulled", "yielded", "in flight", "items/s", "busy", "starved", "backpr."
        )?;
        for stage in &self.stages {
            let (total, interval) = (&stage.total, &stage.interval);
            writeln!(
                f,
                "{:<width$} {:>12} {:>12} {:>9} {:>12.0} {:>5.0}% {:>7.0}% {:>7.0}%",
                total.label(),
                total.pulled_count,
                total.yielded_count,
                total.in_flight_count,
                interval.yielded_per_sec(),
                interval.busy_ratio() * 100.0,
                interval.starved_ratio() * 100.0,
                interval.backpressured_ratio() * 100.0,
            )?;
        }
        write!(f, "bottleneck: {}", self.bottleneck)
    }
}
