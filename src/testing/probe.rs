//! `Probe`: records the items entering and leaving a stage, and what was in flight.

use std::fmt::{self, Write as _};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use crate::sync::lock;
use futures_core::{FusedStream, Stream};
use pin_project_lite::pin_project;
use tokio::time::Instant;

/// What happened at one of a [`Probe`]'s two ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeEventKind {
    /// The stage pulled the item at this position (counted from 0) from upstream.
    Pulled(u64),
    /// The stage yielded an item: the item at this position (the `n`th yielded, or the
    /// position named by [`Probe::output_by`]).
    Yielded(u64),
    /// Upstream ended.
    InputEnded,
    /// The stage's output ended.
    OutputEnded,
}

/// One event a [`Probe`] recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProbeEvent {
    /// When, as virtual time since the probe was created.
    pub at: Duration,
    /// What happened.
    pub kind: ProbeEventKind,
    /// Items pulled and not yet yielded, just after the event.
    pub in_flight: u64,
}

impl fmt::Display for ProbeEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ProbeEventKind::Pulled(position) => format!("pulled item {position}"),
            ProbeEventKind::Yielded(position) => format!("yielded item {position}"),
            ProbeEventKind::InputEnded => "upstream ended".to_string(),
            ProbeEventKind::OutputEnded => "output ended".to_string(),
        };
        write!(
            f,
            "{:>9.3} ms  {what:<24} in flight {}",
            self.at.as_secs_f64() * 1e3,
            self.in_flight
        )
    }
}

#[derive(Debug)]
struct Record {
    created: Instant,
    events: Vec<ProbeEvent>,
    pulled: u64,
    yielded: u64,
    max_in_flight: u64,
}

impl Record {
    fn push(&mut self, kind: ProbeEventKind) {
        let in_flight = self.pulled.saturating_sub(self.yielded);
        self.max_in_flight = self.max_in_flight.max(in_flight);
        let at = Instant::now().duration_since(self.created);
        self.events.push(ProbeEvent {
            at,
            kind,
            in_flight,
        });
    }
}

/// Records what enters and leaves a stage of a pipeline: items pulled from upstream,
/// items yielded, and so the items in flight (pulled and not yet yielded) at every
/// moment and the most ever in flight; with assertions whose failure messages show the
/// recorded history.
///
/// Wrap the stage's upstream with [`input`](Probe::input) and its output with
/// [`output`](Probe::output) (or [`output_by`](Probe::output_by) when results leave in
/// another order than the input's and carry their position). The counts are in items:
/// they mean "in flight" for stages that yield one item per item pulled (the concurrent
/// operators); around `chunks` they count items in and chunks out. Times are virtual
/// (tokio's clock) since the probe was created: exact on the paused clock.
///
/// A `Probe` is a cheap handle (clone it freely); the streams it wraps hold a clone.
///
/// # Examples
/// ```
/// use flowgate::prelude::*;
/// use flowgate::testing::Probe;
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let probe = Probe::new();
/// let source = probe.input(flowgate::source::iter(0..100u32));
/// let out = source.map_concurrent(8, |x| async move {
///     tokio::time::sleep(std::time::Duration::from_millis(u64::from(x % 3))).await;
///     x
/// });
/// let all: Vec<u32> = probe.output(out).collect().await;
/// assert_eq!(all.len(), 100);
/// probe.assert_max_in_flight(8); // never more than 8 pulled and not yielded
/// probe.assert_pulled_before_yielded(8, 1); // item 8 started while item 1 had not left
/// # }
/// ```
#[derive(Clone)]
pub struct Probe {
    record: Arc<Mutex<Record>>,
}

impl Default for Probe {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let record = lock(&self.record);
        f.debug_struct("Probe")
            .field("pulled", &record.pulled)
            .field("yielded", &record.yielded)
            .field("max_in_flight", &record.max_in_flight)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// Stream for [`Probe::input`]: upstream, with each item it yields recorded as pulled.
    #[must_use = "streams do nothing unless polled"]
    pub struct ProbeInput<S> {
        #[pin]
        stream: S,
        record: Arc<Mutex<Record>>,
    }
}

pin_project! {
    /// Stream for [`Probe::output`] and [`Probe::output_by`]: a stage's output, with
    /// each item it yields recorded as yielded.
    #[must_use = "streams do nothing unless polled"]
    pub struct ProbeOutput<S, F> {
        #[pin]
        stream: S,
        position: F,
        record: Arc<Mutex<Record>>,
    }
}

/// The position of the `n`th item yielded: in input order.
#[derive(Debug, Clone, Copy)]
pub struct InOrder(u64);

/// How [`ProbeOutput`] learns the position of an item it yields.
pub trait Position<T> {
    /// The position (in the input) of `item`, the next one yielded.
    fn position(&mut self, item: &T) -> u64;
}

impl<T> Position<T> for InOrder {
    fn position(&mut self, _: &T) -> u64 {
        let position = self.0;
        self.0 += 1;
        position
    }
}

impl<T, F: FnMut(&T) -> u64> Position<T> for F {
    fn position(&mut self, item: &T) -> u64 {
        self(item)
    }
}

impl Probe {
    /// A probe with nothing recorded; its clock starts now (tokio's clock).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new() -> Self {
        Probe {
            record: Arc::new(Mutex::new(Record {
                created: Instant::now(),
                events: Vec::new(),
                pulled: 0,
                yielded: 0,
                max_in_flight: 0,
            })),
        }
    }

    /// Wraps a stage's upstream: every item it yields is recorded as pulled, with its
    /// position (0, 1, 2, ...).
    pub fn input<S: Stream>(&self, stream: S) -> ProbeInput<S> {
        ProbeInput {
            stream,
            record: Arc::clone(&self.record),
        }
    }

    /// Wraps a stage's output whose items leave in input order: the `n`th item yielded
    /// is recorded as the item at position `n`.
    pub fn output<S: Stream>(&self, stream: S) -> ProbeOutput<S, InOrder> {
        ProbeOutput {
            stream,
            position: InOrder(0),
            record: Arc::clone(&self.record),
        }
    }

    /// Wraps a stage's output whose items leave in any order: `position` names the input
    /// position of each item yielded.
    pub fn output_by<S, F>(&self, stream: S, position: F) -> ProbeOutput<S, F>
    where
        S: Stream,
        F: FnMut(&S::Item) -> u64,
    {
        ProbeOutput {
            stream,
            position,
            record: Arc::clone(&self.record),
        }
    }

    /// Items pulled from upstream so far.
    pub fn pulled(&self) -> u64 {
        lock(&self.record).pulled
    }

    /// Items yielded so far.
    pub fn yielded(&self) -> u64 {
        lock(&self.record).yielded
    }

    /// Items pulled and not yet yielded, now.
    pub fn in_flight(&self) -> u64 {
        let record = lock(&self.record);
        record.pulled.saturating_sub(record.yielded)
    }

    /// The most items ever pulled and not yet yielded at once.
    pub fn max_in_flight(&self) -> u64 {
        lock(&self.record).max_in_flight
    }

    /// Everything recorded, in order.
    pub fn events(&self) -> Vec<ProbeEvent> {
        lock(&self.record).events.clone()
    }

    /// The recorded history, one event per line (what the assertions print).
    pub fn history(&self) -> String {
        history(&lock(&self.record).events, None)
    }

    /// Asserts that never more than `limit` items were pulled and not yet yielded.
    ///
    /// # Panics
    /// If more ever were, naming the first event that went over, with the history.
    #[track_caller]
    pub fn assert_max_in_flight(&self, limit: u64) {
        let record = lock(&self.record);
        if let Some(over) = record.events.iter().position(|e| e.in_flight > limit) {
            let event = record.events[over];
            panic!(
                "probe: more than {limit} items pulled and not yet yielded: {} at {:.3} ms, \
                 after this event:\n{event}\nhistory (the first time over is marked):\n{}",
                event.in_flight,
                event.at.as_secs_f64() * 1e3,
                history(&record.events, Some(over))
            );
        }
    }

    /// Asserts that exactly `count` items were pulled from upstream.
    ///
    /// # Panics
    /// Otherwise, with the history.
    #[track_caller]
    pub fn assert_pulled(&self, count: u64) {
        let record = lock(&self.record);
        if record.pulled != count {
            panic!(
                "probe: {} items pulled, expected {count}\nhistory:\n{}",
                record.pulled,
                history(&record.events, None)
            );
        }
    }

    /// Asserts that exactly `count` items were yielded.
    ///
    /// # Panics
    /// Otherwise, with the history.
    #[track_caller]
    pub fn assert_yielded(&self, count: u64) {
        let record = lock(&self.record);
        if record.yielded != count {
            panic!(
                "probe: {} items yielded, expected {count}\nhistory:\n{}",
                record.yielded,
                history(&record.events, None)
            );
        }
    }

    /// Asserts that the item at position `pulled` was pulled before the item at position
    /// `yielded` was yielded (or that item was never yielded): work on the first started
    /// while the second had not finished leaving.
    ///
    /// # Panics
    /// If `pulled` was never pulled, or only after `yielded` left, with the history.
    #[track_caller]
    pub fn assert_pulled_before_yielded(&self, pulled: u64, yielded: u64) {
        let record = lock(&self.record);
        let find = |kind: ProbeEventKind| record.events.iter().position(|e| e.kind == kind);
        let pull = find(ProbeEventKind::Pulled(pulled));
        let left = find(ProbeEventKind::Yielded(yielded));
        match (pull, left) {
            (Some(pull), Some(left)) if pull < left => {}
            (Some(_), None) => {}
            (None, _) => panic!(
                "probe: item {pulled} was never pulled\nhistory:\n{}",
                history(&record.events, None)
            ),
            (Some(pull), Some(_)) => panic!(
                "probe: item {pulled} was pulled only after item {yielded} was yielded\n\
                 history (the pull is marked):\n{}",
                history(&record.events, Some(pull))
            ),
        }
    }
}

/// The events as lines, with a mark at `marked`; long histories are cut around it.
fn history(events: &[ProbeEvent], marked: Option<usize>) -> String {
    const AROUND: usize = 40;
    let focus = marked.unwrap_or(events.len().saturating_sub(1));
    let from = focus.saturating_sub(AROUND);
    let to = (focus + AROUND / 4 + 1).min(events.len());
    let mut out = String::new();
    if from > 0 {
        let _ = writeln!(out, "  ... {from} earlier events");
    }
    for (i, event) in events.iter().enumerate().take(to).skip(from) {
        let mark = if Some(i) == marked { ">>" } else { "  " };
        let _ = writeln!(out, "{mark}{event}");
    }
    if to < events.len() {
        let _ = writeln!(out, "  ... {} later events", events.len() - to);
    }
    if events.is_empty() {
        out.push_str("  (nothing recorded)\n");
    }
    out
}

impl<S: Stream> Stream for ProbeInput<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.project();
        let item = ready!(this.stream.poll_next(cx));
        let mut record = lock(this.record);
        match &item {
            Some(_) => {
                let position = record.pulled;
                record.pulled += 1;
                record.push(ProbeEventKind::Pulled(position));
            }
            None => record.push(ProbeEventKind::InputEnded),
        }
        Poll::Ready(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}

impl<S: FusedStream> FusedStream for ProbeInput<S> {
    fn is_terminated(&self) -> bool {
        self.stream.is_terminated()
    }
}

impl<S: Stream, F: Position<S::Item>> Stream for ProbeOutput<S, F> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.project();
        let item = ready!(this.stream.poll_next(cx));
        let position = item.as_ref().map(|item| this.position.position(item));
        let mut record = lock(this.record);
        match position {
            Some(position) => {
                record.yielded += 1;
                record.push(ProbeEventKind::Yielded(position));
            }
            None => record.push(ProbeEventKind::OutputEnded),
        }
        Poll::Ready(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}

impl<S: FusedStream, F: Position<S::Item>> FusedStream for ProbeOutput<S, F> {
    fn is_terminated(&self) -> bool {
        self.stream.is_terminated()
    }
}

impl<S> fmt::Debug for ProbeInput<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeInput").finish_non_exhaustive()
    }
}

impl<S, F> fmt::Debug for ProbeOutput<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeOutput").finish_non_exhaustive()
    }
}
