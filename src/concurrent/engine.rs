//! The consumer side shared by every concurrent operator: the bound, the pulling, and the
//! hand-off between a lane (where jobs run) and an exit (how results leave).
//!
//! Upstream and the mapper (holding the user's `f`) live here and are only touched from
//! `poll_next`; only jobs cross to the lane.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Instant;

use futures_core::Stream;
use pin_project_lite::pin_project;

use super::reorder::{Cancel, Exit};
use super::tuning::{refill_batch, BUSY_AHEAD, CONSUMER_LINGER, FREE_LOOKS, LONG_WAIT};
use crate::policy::shutdown::{Shutdown, ShutdownReport, Step};
use crate::stats::{Core, Recorder, Stats};

use super::{
    current_runtime, drop_contained, Direct, Gated, Handover, Lane, Mapper, Outcome, Pace,
    Prepared, Settle, Settled, Workers,
};

pin_project! {
    /// The consumer side of an operator: upstream, the mapper (holding `f`), the lane,
    /// how attempts' outcomes become items (`S`), and the state of the bound. `O` is
    /// the item the stream yields, `R` the output of a job (the lane's).
    pub(crate) struct Engine<St, M, L, S, O, R> {
        // `None` once the stream has ended: upstream is dropped then, so that what it
        // holds (and the stages above it) are released without waiting for this
        // stream's own drop.
        #[pin]
        upstream: Option<St>,
        mapper: M,
        lane: L,
        settle: S,
        state: State<O, R>,
    }
}

/// The engine of the plain operators: every outcome is the item.
pub(crate) type PlainEngine<St, M, L, O> = Engine<St, M, L, Direct<O>, O, O>;

/// Items waiting out a retry's backoff, by when they are due: they hold their places
/// in the window, not a running slot.
struct Retries {
    due: BinaryHeap<Reverse<(tokio::time::Instant, u64)>>,
    /// The timer of the earliest, made at the first retry (only where retries happen).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

struct State<O, R> {
    operator: &'static str,
    /// Jobs running at once, at most.
    limit: usize,
    /// Items pulled and not yet yielded, at most (the bound of semantic 1).
    window: usize,
    /// The refill batch while jobs finish at their first poll (see [`refill_batch`]).
    batch: usize,
    /// Whether the last look that took results back took more than one.
    burst: bool,
    /// How the results last taken back came (see [`Pace`] and [`State::lingers`]).
    pace: Pace,
    /// Position of the next item to pull (= items pulled so far).
    next_index: u64,
    /// Items pulled and not yet yielded.
    held: usize,
    /// Jobs handed to the lane whose result has not come back.
    running: usize,
    exit: Exit<O>,
    retries: Retries,
    /// The shutdown token and its grace period, with `with_shutdown`.
    shutdown: Option<Box<Shutdown>>,
    /// Whether inputs may wait for one another (a keyed operator: [`Mapper::GATED`]).
    gated: bool,
    /// Gated: positions whose final result came since the mapper was last told.
    settled: Vec<u64>,
    /// Gated: the first position a failure cancelled (`u64::MAX`: none). Inputs from it
    /// on that were waiting never start.
    cancelled_from: u64,
    /// With a shutdown on the unordered exit: the positions pulled and not yielded,
    /// for the report (the ordered exit knows them).
    in_flight: BTreeSet<u64>,
    /// The grace period is over: what is ready leaves, then the stream ends.
    grace_over: bool,
    upstream_done: bool,
    bound: bool,
    ended: bool,
    /// The lane's results, taken back and not yet recorded (a buffer kept for reuse).
    finished: Vec<(u64, Outcome<R>)>,
    yields_since_collect: usize,
    /// Whether the consumer may spin briefly for results instead of waiting at once: on
    /// a multi-thread runtime, while recent waits were short.
    may_linger: bool,
    multi_worker: bool,
    lingering_since: Option<Instant>,
    /// Looks taken in the current spin.
    lingering_looks: u32,
    waiting_since: Option<Instant>,
    /// The stage's name and its statistics, if asked for (see [`Observed`]).
    observed: Observed,
    /// The consumer's side of the statistics, from the first poll when they were asked
    /// for.
    recorder: Option<Box<Recorder>>,
    /// The stage's span, made at the first poll.
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

/// A stage's name and the shared part of its statistics, made when `.stats()` is first
/// called (before the first poll).
#[derive(Default)]
pub(crate) struct Observed {
    name: Option<Arc<str>>,
    core: OnceLock<Arc<Core>>,
}

/// A stage dropped before its first poll still ends, so that snapshot streams over
/// it end too.
impl Drop for Observed {
    fn drop(&mut self) {
        if let Some(core) = self.core.get() {
            if core.meta().is_none() {
                core.end_unstarted();
            }
        }
    }
}

/// What an engine never polled passes on to the one built around its parts (a policy
/// set on a plain operator): its bounds, its exit, its shutdown and its statistics.
pub(crate) struct Carried {
    pub(crate) limit: usize,
    pub(crate) window: usize,
    pub(crate) ordered: bool,
    shutdown: Option<Box<Shutdown>>,
    observed: Observed,
}

impl<St, M, L, O> PlainEngine<St, M, L, O> {
    /// The engine of a plain operator.
    pub(crate) fn new<T>(
        operator: &'static str,
        upstream: St,
        mapper: M,
        lane: L,
        limit: usize,
        ordered: bool,
    ) -> Self
    where
        M: Mapper<T, Out = O>,
    {
        Engine::with_settle(
            operator,
            upstream,
            mapper,
            lane,
            Direct::new::<T, M>(),
            limit,
            ordered,
        )
    }
}

impl<St, M, L, S, O, R> Engine<St, M, L, S, O, R> {
    /// The engine of an operator whose outcomes become items through `settle`.
    pub(crate) fn with_settle(
        operator: &'static str,
        upstream: St,
        mapper: M,
        lane: L,
        settle: S,
        limit: usize,
        ordered: bool,
    ) -> Self {
        Engine {
            upstream: Some(upstream),
            mapper,
            lane,
            settle,
            state: State {
                operator,
                limit,
                window: limit,
                batch: refill_batch(limit),
                burst: false,
                pace: Pace::FirstPoll,
                next_index: 0,
                held: 0,
                running: 0,
                exit: Exit::new(ordered),
                retries: Retries {
                    due: BinaryHeap::new(),
                    timer: None,
                },
                shutdown: None,
                gated: false,
                settled: Vec::new(),
                cancelled_from: u64::MAX,
                in_flight: BTreeSet::new(),
                grace_over: false,
                upstream_done: false,
                bound: false,
                ended: false,
                finished: Vec::new(),
                yields_since_collect: 0,
                may_linger: false,
                multi_worker: false,
                lingering_since: None,
                lingering_looks: 0,
                waiting_since: None,
                observed: Observed::default(),
                recorder: None,
                #[cfg(feature = "tracing")]
                span: tracing::Span::none(),
            },
        }
    }

    /// The engine of an operator rebuilt from another's parts (see [`Carried`]).
    pub(crate) fn with_carried(
        operator: &'static str,
        upstream: St,
        mapper: M,
        lane: L,
        settle: S,
        carried: Carried,
    ) -> Self {
        let mut engine = Engine::with_settle(
            operator,
            upstream,
            mapper,
            lane,
            settle,
            carried.limit,
            carried.ordered,
        );
        engine.set_window(carried.window);
        engine.state.shutdown = carried.shutdown;
        engine.state.observed = carried.observed;
        engine
    }

    #[track_caller]
    pub(crate) fn set_window(&mut self, window: usize) {
        let state = &mut self.state;
        if window < state.limit {
            panic!(
                "flowgate: `with_window` needs `window` >= `limit` ({}) on `{}`, got {window}",
                state.limit, state.operator
            );
        }
        state.window = window;
    }

    /// The parts of an engine never polled, to build another around them: upstream,
    /// the mapper, the lane, and what the new engine carries on (see [`Carried`]).
    pub(crate) fn into_parts(self) -> (St, M, L, Carried) {
        let state = self.state;
        assert!(
            !state.bound,
            "flowgate: a policy is set on `{}` after it was polled",
            state.operator
        );
        let carried = Carried {
            limit: state.limit,
            window: state.window,
            ordered: state.exit.is_ordered(),
            shutdown: state.shutdown,
            observed: state.observed,
        };
        let upstream = self
            .upstream
            .expect("flowgate: an engine never polled still holds its upstream");
        (upstream, self.mapper, self.lane, carried)
    }

    /// Names the stage (in its statistics, its `Debug` output and its tracing span).
    pub(crate) fn set_name(&mut self, name: Arc<str>) {
        if let Some(core) = self.state.observed.core.get() {
            core.set_name(Arc::clone(&name));
        }
        self.state.observed.name = Some(name);
    }

    /// The stage's statistics handle, made at the first call.
    #[track_caller]
    pub(crate) fn stats(&self) -> Stats {
        let state = &self.state;
        if let Some(core) = state.observed.core.get() {
            return Stats::from_core(Arc::clone(core));
        }
        if state.bound {
            panic!(
                "flowgate: `stats` on `{}` after its first poll: take the handle before the \
                 stream runs",
                state.operator
            );
        }
        let core = state.observed.core.get_or_init(|| {
            let core = Core::new();
            if let Some(name) = &state.observed.name {
                core.set_name(Arc::clone(name));
            }
            Arc::new(core)
        });
        Stats::from_core(Arc::clone(core))
    }

    /// Sets the shutdown token and grace period; returns the handle on the report.
    pub(crate) fn set_shutdown(
        &mut self,
        token: tokio_util::sync::CancellationToken,
        grace: std::time::Duration,
    ) {
        let state = &mut self.state;
        assert!(
            !state.bound,
            "flowgate: `with_shutdown` is set on `{}` after it was polled",
            state.operator
        );
        state.shutdown = Some(Box::new(Shutdown::new(token, grace)));
    }

    /// The handle on the shutdown report.
    #[track_caller]
    pub(crate) fn shutdown_report(&self) -> ShutdownReport {
        match &self.state.shutdown {
            Some(shutdown) => shutdown.report(),
            None => panic!(
                "flowgate: `shutdown_report` on `{}` needs `with_shutdown` first: without a \
                 token the stream is never shut down",
                self.state.operator
            ),
        }
    }

    /// The name of the operator, for messages.
    pub(crate) fn operator(&self) -> &'static str {
        self.state.operator
    }

    pub(crate) fn settle_mut(&mut self) -> &mut S {
        &mut self.settle
    }

    /// The settling of an engine that may be running.
    pub(crate) fn settle_pinned(self: Pin<&mut Self>) -> &mut S {
        self.project().settle
    }

    pub(crate) fn settle_ref(&self) -> &S {
        &self.settle
    }

    pub(crate) fn mapper_mut(&mut self) -> &mut M {
        &mut self.mapper
    }

    pub(crate) fn lane_mut(&mut self) -> &mut L {
        &mut self.lane
    }

    pub(crate) fn is_terminated(&self) -> bool {
        self.state.ended
    }

    pub(crate) fn fmt_named(&self, f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
        let state = &self.state;
        f.debug_struct(name)
            .field("name", &state.observed.name)
            .field("limit", &state.limit)
            .field("window", &state.window)
            .field("pulled", &state.next_index)
            .field("held", &state.held)
            .field("running", &state.running)
            .field("ended", &state.ended)
            .finish_non_exhaustive()
    }
}

impl<O, R> State<O, R> {
    /// Takes the results the lane has finished; registers `waker` if there are none.
    /// Returns whether any came back.
    fn collect<I, L: Lane<Out = R>, S: Settle<I, R, Item = O>>(
        &mut self,
        lane: &mut L,
        settle: &mut S,
        waker: Option<&std::task::Waker>,
    ) -> bool {
        self.yields_since_collect = 0;
        let mut finished = std::mem::take(&mut self.finished);
        let pace = lane.collect(&mut finished, waker);
        let any = !finished.is_empty();
        if any {
            self.pace = pace;
            self.burst = finished.len() > 1;
        }
        // In the order the lane gave them (finish order, for the unordered exit).
        finished.reverse();
        while let Some((index, outcome)) = finished.pop() {
            self.running -= 1;
            self.record(lane, settle, index, outcome);
        }
        self.finished = finished;
        any
    }

    /// Records how an attempt of the item at `index` ended: its result, or a retry.
    fn record<I, L: Lane<Out = R>, S: Settle<I, R, Item = O>>(
        &mut self,
        lane: &mut L,
        settle: &mut S,
        index: u64,
        outcome: Outcome<R>,
    ) {
        match settle.settle(index, outcome) {
            Settled::Final(outcome, failure) => self.finish(lane, index, outcome, failure),
            Settled::Retry(delay) => {
                if let Some(recorder) = &mut self.recorder {
                    recorder.retried();
                }
                #[cfg(feature = "tracing")]
                tracing::debug!(
                    position = index,
                    retry_in_ms = delay.as_secs_f64() * 1e3,
                    "flowgate: an attempt failed; retrying"
                );
                let due = tokio::time::Instant::now() + delay;
                self.retries.due.push(Reverse((due, index)));
            }
        }
    }

    /// Gives the item at `index` its result; a failure cancels the work it makes useless
    /// (retries waiting included).
    fn finish<L: Lane<Out = R>>(
        &mut self,
        lane: &mut L,
        index: u64,
        outcome: Outcome<O>,
        failure: bool,
    ) {
        if self.gated {
            self.settled.push(index);
        }
        if let Cancel::From(from) = self.exit.finish(index, outcome, failure) {
            self.cancelled_from = self.cancelled_from.min(from);
            lane.cancel_from(from);
            if !self.retries.due.is_empty() {
                self.retries.due.retain(|Reverse((_, i))| *i < from);
            }
        }
    }

    /// Prepares an attempt of the item at `index` from `input` and starts its job, or
    /// records its result at once (a panic in `f`). Returns whether a job started.
    #[inline]
    fn start<I, M, L, S>(
        &mut self,
        mapper: &mut M,
        lane: &mut L,
        settle: &mut S,
        index: u64,
        input: M::Input,
    ) -> bool
    where
        M: Mapper<I, Job = L::Job, Out = R>,
        L: Lane<Out = R>,
        S: Settle<M::Input, R, Item = O>,
    {
        match mapper.prepare(input) {
            Prepared::Start(job) => {
                self.running += 1;
                if let Some(recorder) = &mut self.recorder {
                    // In flight before the lane holds it: a cancellation may sweep it
                    // before the hand-over.
                    recorder.job_started();
                }
                lane.start(index, job);
                true
            }
            Prepared::Done(outcome) => {
                self.record(lane, settle, index, outcome);
                false
            }
        }
    }

    /// Gated operators: tells the mapper which items settled, then starts the inputs
    /// that waited and may now start (oldest first), while jobs may start; those a
    /// failure cancelled never start. Returns `true` when the consumer should yield once
    /// (see [`State::yields_after`]).
    fn start_ready<I, M, L, S>(&mut self, mapper: &mut M, lane: &mut L, settle: &mut S) -> bool
    where
        M: Mapper<I, Job = L::Job, Out = R>,
        L: Lane<Out = R>,
        S: Settle<M::Input, R, Item = O>,
    {
        let mut started = false;
        loop {
            for index in self.settled.drain(..) {
                mapper.settled(index);
            }
            if self.running >= self.limit || self.grace_over {
                break;
            }
            let Some((index, input)) = mapper.next_ready() else {
                break;
            };
            if index >= self.cancelled_from {
                // Never started: the key's next input is cancelled in turn.
                drop_contained(input);
                mapper.settled(index);
                continue;
            }
            started |= self.start(mapper, lane, settle, index, input);
        }
        started && self.yields_after(lane.flush(), false)
    }

    /// Starts the retries that are due, while jobs may start, and hands them over.
    /// Otherwise sets the timer for the earliest (when a job could start for it), so
    /// that the consumer is woken then. Returns `true` when the consumer should yield
    /// once (see [`State::yields_after`]).
    fn retry_due<I, M, L, S>(
        &mut self,
        mapper: &mut M,
        lane: &mut L,
        settle: &mut S,
        cx: &mut Context<'_>,
    ) -> bool
    where
        M: Mapper<I, Job = L::Job, Out = R>,
        L: Lane<Out = R>,
        S: Settle<M::Input, R, Item = O>,
    {
        let mut started = false;
        while self.running < self.limit {
            let Some(Reverse((due, index))) = self.retries.due.peek().copied() else {
                break;
            };
            if due > tokio::time::Instant::now() {
                let timer = match &mut self.retries.timer {
                    Some(timer) => {
                        if timer.deadline() != due {
                            timer.as_mut().reset(due);
                        }
                        timer
                    }
                    None => self
                        .retries
                        .timer
                        .insert(Box::pin(tokio::time::sleep_until(due))),
                };
                if timer.as_mut().poll(cx).is_pending() {
                    break;
                }
            }
            self.retries.due.pop();
            let input = settle.retry_input(index);
            started |= self.start(mapper, lane, settle, index, input);
        }
        started && self.yields_after(lane.flush(), false)
    }

    /// Whether to yield and look again rather than wait, while results are due soon.
    ///
    /// On a multi-thread runtime, results come from other threads: waiting puts this
    /// thread to sleep and the result's arrival wakes it, which costs far more than a
    /// trivial job. So while jobs run and recent waits were short, the consumer yields and
    /// looks again for up to `CONSUMER_LINGER` before it waits. Measured in real time,
    /// since tokio's paused clock does not advance while a task keeps yielding; the first
    /// `FREE_LOOKS` looks go unmeasured, since most spins end within them and reading the
    /// clock costs about as much as a trivial job.
    ///
    /// Not while the results last taken back came slowly (`Pace::Slow`: jobs that
    /// waited, none of them handed over lately): those come when timers fire or I/O is
    /// ready, often many within microseconds (so the waits between them look short),
    /// and a spin after each burst only burns CPU (`cpu_time` in the benchmarks).
    /// Waiting then costs a wake-up per hand-over, as `buffer_unordered` pays per
    /// result.
    fn lingers(&mut self) -> bool {
        if !self.may_linger || self.pace == Pace::Slow || self.running == 0 {
            return false;
        }
        self.lingering_looks += 1;
        if self.lingering_looks <= FREE_LOOKS {
            return true;
        }
        let now = Instant::now();
        let since = *self.lingering_since.get_or_insert(now);
        now.duration_since(since) < CONSUMER_LINGER
    }

    /// A spin is over: the next one starts afresh.
    fn stop_lingering(&mut self) {
        self.lingering_looks = 0;
        self.lingering_since = None;
    }

    /// Called at each poll: learns from the length of the wait that just ended.
    fn end_wait(&mut self) {
        if let Some(since) = self.waiting_since.take() {
            self.may_linger = self.multi_worker && since.elapsed() < LONG_WAIT;
        }
    }

    /// Whether jobs counted as running (some of them finished and not yet collected) are
    /// all that keeps the next refill batch from being pulled.
    ///
    /// (The refill batch: see [`State::refill`].)
    fn limit_blocks_refill(&self) -> bool {
        let refill = self.refill();
        self.yields_since_collect >= refill
            && self.limit - self.running < refill
            && self.window - self.held >= refill
    }

    /// Free places to wait for before pulling again, while jobs run and the consumer is
    /// behind: `batch` while the jobs last taken back finished at their first poll, 1
    /// once one of them waited (see `refill_batch` in `tuning`).
    fn refill(&self) -> usize {
        match self.pace {
            Pace::FirstPoll => self.batch,
            Pace::Waited | Pace::Slow => 1,
        }
    }

    /// Whether results wait to be yielded after the one about to leave; or, while the
    /// consumer drains a burst, whether one is about to leave (see [`State::pull`]).
    fn behind(&self) -> bool {
        if self.burst {
            self.exit.has_ready()
        } else {
            self.exit.has_backlog()
        }
    }

    fn may_pull(&self) -> bool {
        self.held < self.window && self.running < self.limit
    }

    /// Pulls while a job can start at once, then hands the new jobs over in one batch.
    /// Returns `true` when the consumer should yield once (see [`State::yields_after`]).
    fn pull<St, M, L, S>(
        &mut self,
        mut upstream: Pin<&mut Option<St>>,
        mapper: &mut M,
        lane: &mut L,
        settle: &mut S,
        cx: &mut Context<'_>,
    ) -> bool
    where
        St: Stream,
        M: Mapper<St::Item, Job = L::Job, Out = R>,
        L: Lane<Out = R>,
        S: Settle<M::Input, R, Item = O>,
    {
        if self.upstream_done || self.exit.failed() {
            return false;
        }
        let free = self
            .window
            .saturating_sub(self.held)
            .min(self.limit.saturating_sub(self.running));
        // A refill batch is waited for only while jobs run (never while nothing runs:
        // work goes on while the consumer is away) and results wait to be yielded after
        // the one about to leave (the consumer is behind, so batching costs no
        // concurrency). While the consumer drains a burst of results, the one about to
        // leave counts too: filling every free place just before the burst's last
        // result leaves would hand that result's own place over alone right after (at
        // limit 8, four handoffs per eight results instead of three). When results come
        // back one at a time, a lone result about to leave is no backlog: the consumer
        // keeps up, and its free places are filled at once.
        if free < self.refill() && self.running > 0 && self.behind() {
            return false;
        }
        let first = self.next_index;
        let mut pending = false;
        while self.may_pull() && !self.exit.failed() {
            let polled = catch_unwind(AssertUnwindSafe(|| match upstream.as_mut().as_pin_mut() {
                Some(upstream) => upstream.poll_next(cx),
                None => Poll::Ready(None),
            }));
            let polled = match polled {
                Ok(polled) => polled,
                Err(payload) => {
                    // An upstream panic is the result of the position it took, a failure
                    // like any other: in input order the results before it leave first,
                    // later work is cancelled, and the broken upstream is never polled
                    // again.
                    self.upstream_done = true;
                    let index = self.take_position();
                    self.finish(lane, index, Err(payload), true);
                    break;
                }
            };
            match polled {
                Poll::Ready(Some(item)) => {
                    let index = self.take_position();
                    match M::admit(item) {
                        Ok(input) => {
                            settle.admitted(index, &input);
                            let input = match mapper.gate(index, input) {
                                Gated::Start(input) => input,
                                // It holds its place in the window until its key is free.
                                Gated::Wait => continue,
                                Gated::Panicked(payload) => {
                                    self.record(lane, settle, index, Err(payload));
                                    continue;
                                }
                            };
                            self.start(mapper, lane, settle, index, input);
                        }
                        Err(out) => {
                            let (outcome, failure) = settle.rejected(index, out);
                            self.finish(lane, index, outcome, failure);
                        }
                    }
                }
                Poll::Ready(None) => {
                    self.upstream_done = true;
                    break;
                }
                Poll::Pending => {
                    pending = true;
                    break;
                }
            }
        }
        if let Some(recorder) = &mut self.recorder {
            // Starved: room, and upstream pending.
            recorder.upstream(pending);
        }
        // Results finished and not yet yielded: with many of them, the consumer will be
        // busy yielding for a while before it next waits, which is worth a yield after a
        // full refill batch, not after one or a few jobs (behind jobs that waited).
        let busy_ahead =
            self.held - self.running >= BUSY_AHEAD && self.next_index - first >= self.batch as u64;
        let handover = lane.flush();
        self.yields_after(handover, busy_ahead)
    }

    /// Whether the consumer yields once after a hand-over, so that the driver it woke
    /// runs: a driver woken from the consumer's task sits in this worker's LIFO slot,
    /// which no other worker may steal, until the task yields. Worth it (on a runtime
    /// with other workers) when no driver stood by to take the jobs from another worker,
    /// or when the consumer will be busy yielding results for a while (`busy_ahead`):
    /// the jobs would wait that long. Speed only: the jobs run either way.
    fn yields_after(&self, handover: Handover, busy_ahead: bool) -> bool {
        match handover {
            Handover::ToDrivers { woke_unwatched } => {
                self.multi_worker && (busy_ahead || woke_unwatched)
            }
            Handover::Nothing | Handover::OffRuntime => false,
        }
    }

    /// Acts on a step of the shutdown (see [`Step`]).
    fn shutdown_step(&mut self, step: Step) {
        match step {
            Step::Carry => {}
            Step::StopPulling => self.upstream_done = true,
            Step::GraceOver => self.grace_over = true,
        }
    }

    /// Gives the next position to an item just pulled (or to the panic that took its
    /// place): it counts against the bound until its result is yielded.
    fn take_position(&mut self) -> u64 {
        let index = self.next_index;
        self.next_index += 1;
        self.held += 1;
        self.exit.pulled();
        if self.shutdown.is_some() && !self.exit.is_ordered() {
            self.in_flight.insert(index);
        }
        index
    }

    /// Hands a result to the consumer; a failure ends the stream, a panic re-raises.
    fn deliver<I, L: Lane<Out = R>, S: Settle<I, R, Item = O>>(
        &mut self,
        lane: &mut L,
        settle: &S,
        outcome: Outcome<O>,
    ) -> Option<O> {
        self.held -= 1;
        match outcome {
            Ok(out) => {
                if settle.ends_run(&out) {
                    self.end(lane);
                }
                Some(out)
            }
            Err(payload) => {
                self.end(lane);
                if let Some(recorder) = &mut self.recorder {
                    // The panic leaves in the item's place: a failure, yielded.
                    recorder.poll_ends(self.next_index, self.held, Some(true), true);
                }
                resume_unwind(payload)
            }
        }
    }

    /// Before the consumer waits: whether it may. If the runtime the lane was bound to
    /// has shut down, results that still came back (a worker that finished during the
    /// shutdown) are taken, and the consumer goes round again to yield them; holding
    /// nothing, it waits for upstream; holding items none of which is ready, it would
    /// wait for work lost with that runtime (or that no worker will start): it panics,
    /// saying so. Checked only before waiting, where a stream that needs a gone runtime
    /// always arrives, so the lane's flag is not read at every poll.
    fn may_wait<I, L: Lane<Out = R>, S: Settle<I, R, Item = O>>(
        &mut self,
        lane: &mut L,
        settle: &mut S,
    ) -> bool {
        if !self.bound || !lane.runtime_gone() {
            return true;
        }
        self.collect(lane, settle, None);
        if self.exit.has_ready() {
            return false;
        }
        if self.held == 0 {
            // Nothing in the lane: it waits for upstream, whose next item will find the
            // runtime gone.
            return true;
        }
        self.end(lane);
        super::runtime_gone(self.operator)
    }

    fn end<L: Lane<Out = R>>(&mut self, lane: &mut L) {
        if let Some(shutdown) = &mut self.shutdown {
            let cancelled = self.exit.not_yielded(self.next_index, &self.in_flight);
            shutdown.end(self.next_index, cancelled);
        }
        self.ended = true;
        self.finished = Vec::new();
        self.retries.due.clear();
        lane.close();
    }
}

impl<O, R> State<O, R> {
    /// One poll of the consumer, once bound: takes results back, starts what may start,
    /// pulls, and yields a result, ends, or waits.
    #[inline(always)]
    fn turn<St, M, L, S>(
        &mut self,
        mut upstream: Pin<&mut Option<St>>,
        mapper: &mut M,
        lane: &mut L,
        settle: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Option<O>>
    where
        St: Stream,
        M: Mapper<St::Item, Job = L::Job, Out = R>,
        L: Lane<Out = R>,
        S: Settle<M::Input, R, Item = O>,
    {
        self.end_wait();
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        loop {
            // Results are taken back in batches: while some wait to leave, the lane is
            // visited again only when finished jobs it still counts as running are what
            // keeps the next batch from starting; a failure is taken at once, since it
            // overtakes the waiting results.
            //
            // With nothing to yield, a consumer that will not spin (one runtime worker)
            // registers its waker in the same look: if no result came, it is about to
            // wait, and a result handed over from now on wakes it.
            let mut registered = false;
            if !self.exit.has_ready() {
                let waker = (!self.multi_worker).then(|| cx.waker());
                registered = !self.collect(lane, settle, waker) && waker.is_some();
            } else if lane.failure_waiting()
                || self.limit_blocks_refill()
                || (self.gated && mapper.has_waiting())
            {
                // (Keyed: a finished job may free its key's next input, which starts
                // as soon as its key is free, not once the results ahead have left.)
                self.collect(lane, settle, None);
            }
            if let Some(shutdown) = &mut self.shutdown {
                let step = shutdown.look();
                self.shutdown_step(step);
            }
            // Inputs that waited for their key start before new items are pulled, as
            // do items waiting out a backoff: they already hold their places in the
            // window.
            if self.gated && self.start_ready(mapper, lane, settle) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !self.retries.due.is_empty() && self.retry_due(mapper, lane, settle, cx) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if self.pull(upstream.as_mut(), mapper, lane, settle, cx) {
                // The woken driver runs once this task yields; a consumer that goes on
                // with a long computation would otherwise hold the new jobs back.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if let Some((index, outcome)) = self.exit.pop() {
                #[cfg(feature = "tracing")]
                trace_failure(settle, index, &outcome);
                if !self.in_flight.is_empty() {
                    self.in_flight.remove(&index);
                }
                if self.gated && outcome.as_ref().map_or(true, |out| settle.ends_run(out)) {
                    // The run ends with this result: inputs waiting for their key are
                    // dropped now, not when the stream is.
                    mapper.clear();
                }
                self.yields_since_collect += 1;
                self.stop_lingering();
                coop.made_progress();
                return Poll::Ready(self.deliver(lane, settle, outcome));
            }
            if (self.upstream_done && self.held == 0) || self.grace_over {
                self.end(lane);
                if self.gated {
                    mapper.clear();
                }
                return Poll::Ready(None);
            }
            if self.lingers() {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if registered || !self.collect(lane, settle, Some(cx.waker())) {
                if !self.may_wait(lane, settle) {
                    continue;
                }
                if let Some(shutdown) = &mut self.shutdown {
                    let step = shutdown.register(cx);
                    if step != Step::Carry {
                        self.shutdown_step(step);
                        continue;
                    }
                }
                self.stop_lingering();
                // Timed only where it may decide a spin (two clock reads per wait).
                if self.multi_worker && self.pace != Pace::Slow {
                    self.waiting_since = Some(Instant::now());
                }
                return Poll::Pending;
            }
        }
    }
}

impl<St, M, L, S, O, R> Stream for Engine<St, M, L, S, O, R>
where
    St: Stream,
    M: Mapper<St::Item, Job = L::Job, Out = R>,
    L: Lane<Out = R>,
    S: Settle<M::Input, R, Item = O>,
{
    type Item = O;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<O>> {
        let this = self.project();
        let state = this.state;
        let lane = this.lane;
        let settle = this.settle;
        if state.ended {
            return Poll::Ready(None);
        }
        if !state.bound {
            let handle = current_runtime(state.operator);
            let spins_for_results = matches!(L::WORKERS, Workers::RuntimeTasks);
            state.multi_worker = handle.metrics().num_workers() > 1 && spins_for_results;
            state.may_linger = state.multi_worker;
            if let Some(core) = state.observed.core.get() {
                core.bind(state.operator, state.limit, state.window);
                lane.observe(Arc::clone(core));
                state.recorder = Some(Box::new(Recorder::new(Arc::clone(core))));
            }
            #[cfg(feature = "tracing")]
            {
                let name = state.observed.name.as_deref().unwrap_or(state.operator);
                state.span = tracing::info_span!(
                    "flowgate.stage",
                    stage = name,
                    operator = state.operator,
                    limit = state.limit,
                    window = state.window,
                );
                lane.trace(&state.span);
            }
            lane.bind(&handle, settle.lane_failure(), state.exit.is_ordered());
            state.gated = M::GATED;
            state.bound = true;
        }
        #[cfg(feature = "tracing")]
        let span = state.span.clone();
        #[cfg(feature = "tracing")]
        let _entered = span.enter();
        if let Some(recorder) = &mut state.recorder {
            recorder.polled();
        }
        let mut upstream = this.upstream;
        let polled = state.turn(upstream.as_mut(), this.mapper, lane, settle, cx);
        if state.ended && upstream.is_some() {
            // Released as soon as the stream ends (a panic in its destructor is
            // contained: the stream's end is what the consumer sees).
            drop_contained(catch_unwind(AssertUnwindSafe(|| upstream.set(None))));
        }
        if state.recorder.is_none() {
            return polled;
        }
        // An item that leaves is a failure if it ends the run (only failures end it
        // with an item) or if it is one kept going past.
        let failed = match &polled {
            Poll::Ready(Some(item)) => Some(state.ended || settle.is_failed(item)),
            _ => None,
        };
        if let Some(recorder) = &mut state.recorder {
            recorder.poll_ends(state.next_index, state.held, failed, state.ended);
        }
        polled
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let state = &self.state;
        if state.ended {
            return (0, Some(0));
        }
        if state.exit.failed() {
            return (0, Some(state.held));
        }
        let (lower, upper) = match &self.upstream {
            Some(upstream) if !state.upstream_done => upstream.size_hint(),
            _ => (0, Some(0)),
        };
        (
            lower.saturating_add(state.held),
            upper.and_then(|upper| upper.checked_add(state.held)),
        )
    }
}

/// The `tracing` event of an item that leaves as a failure (in the stage's span).
#[cfg(feature = "tracing")]
fn trace_failure<I, R, S: Settle<I, R>>(settle: &S, index: u64, outcome: &Outcome<S::Item>) {
    let (kind, attempts) = match outcome {
        Err(_) => ("panic", 1),
        Ok(item) => match settle.failure_of(item) {
            Some(failure) => failure,
            None => return,
        },
    };
    tracing::warn!(position = index, kind, attempts, "flowgate: an item failed");
}

/// Implements `Stream`, `FusedStream` and `Debug` for an operator that wraps an
/// [`Engine`] in a field named `inner`. `try` operators cap the lower size bound at 1:
/// they may end at the first error.
macro_rules! engine_stream {
    (
        impl<$($gen:ident),*> $name:ident<$($param:ident),*>,
        Item = $item:ty,
        lower_at_most = $cap:expr,
        where $($bounds:tt)*
    ) => {
        impl<$($gen),*> futures_core::Stream for $name<$($param),*>
        where
            $($bounds)*
        {
            type Item = $item;

            fn poll_next(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Self::Item>> {
                self.project().inner.poll_next(cx)
            }

            fn size_hint(&self) -> (usize, Option<usize>) {
                let (lower, upper) = self.inner.size_hint();
                (lower.min($cap), upper)
            }
        }

        impl<$($gen),*> futures_core::FusedStream for $name<$($param),*>
        where
            $($bounds)*
        {
            fn is_terminated(&self) -> bool {
                self.inner.is_terminated()
            }
        }

        impl<$($gen),*> std::fmt::Debug for $name<$($param),*>
        where
            $($bounds)*
        {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.inner.fmt_named(f, stringify!($name))
            }
        }
    };
}

pub(crate) use engine_stream;

/// `with_shutdown`, `shutdown_report`, `named` and `stats` for an operator that wraps an
/// [`Engine`] in a field named `inner`.
macro_rules! engine_methods {
    () => {
        /// Names the stage: the name shows in its [`Stats`](crate::Stats) snapshots, in a
        /// [`Pipeline`](crate::stats::Pipeline) view's table and bottleneck, in its
        /// `Debug` output, and (feature `tracing`) in its span. Any order with the other
        /// builder methods.
        ///
        /// # Examples
        /// ```
        /// use flowgate::prelude::*;
        ///
        /// let flow = flowgate::source::iter(0..10u64)
        ///     .map_concurrent(4, |i| async move { i * 2 })
        ///     .named("double");
        /// assert_eq!(flow.stats().name().as_deref(), Some("double"));
        /// ```
        pub fn named(mut self, name: impl Into<std::sync::Arc<str>>) -> Self {
            self.inner.set_name(name.into());
            self
        }

        /// The handle on this stage's statistics: counts, in-flight gauges and busy /
        /// starved / backpressured times, readable from any task or thread while the
        /// stream runs. See [`flowgate::stats`](crate::stats) for what each number means,
        /// and for the [`Pipeline`](crate::stats::Pipeline) view over several stages.
        ///
        /// Take it before the first poll; every call gives a handle on the same counters,
        /// and policies set afterwards keep them. A stage whose statistics were never
        /// asked for counts nothing and pays nothing.
        ///
        /// # Panics
        /// If called for the first time after the stream was first polled, naming the
        /// operator (its first polls would be missing from the counts).
        ///
        /// # Examples
        /// ```
        /// use std::time::Duration;
        /// use flowgate::prelude::*;
        /// use futures::StreamExt;
        ///
        /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
        /// # async fn main() {
        /// let flow = flowgate::source::iter(0..8u64).map_concurrent(4, |i| async move {
        ///     tokio::time::sleep(Duration::from_millis(5)).await;
        ///     i
        /// });
        /// let stats = flow.stats();
        /// let mut flow = Box::pin(flow);
        /// assert_eq!(flow.next().await, Some(0));
        /// let now = stats.snapshot();
        /// assert_eq!((now.pulled_count, now.yielded_count, now.held_count), (4, 1, 3));
        /// assert!(now.held_count as usize <= now.window);
        /// # }
        /// ```
        #[track_caller]
        pub fn stats(&self) -> crate::Stats {
            self.inner.stats()
        }

        /// Shuts the stream down gracefully when `token` is cancelled: nothing more is
        /// pulled, work in flight gets `grace` (on tokio's clock) to finish and its
        /// results are yielded, then the rest is cancelled and the stream ends. The item
        /// type is unchanged; [`shutdown_report`](Self::shutdown_report), taken before
        /// the stream runs, then says which positions were not completed, so that a job
        /// can resume from them.
        ///
        /// A token cancelled before the first poll ends the stream at that poll, with
        /// nothing pulled; cancelling it again is harmless. Results that finished but
        /// cannot leave in input order by the end of the grace period (a position before
        /// them did not finish) count as not completed. Blocking calls still running at
        /// the end are abandoned, as on drop. Needs tokio's time driver.
        ///
        /// # Examples
        /// ```
        /// use std::time::Duration;
        /// use flowgate::prelude::*;
        /// use futures::StreamExt;
        /// use tokio_util::sync::CancellationToken;
        ///
        /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
        /// # async fn main() {
        /// let token = CancellationToken::new();
        /// let flow = flowgate::source::iter(0..1_000u64)
        ///     .map_concurrent(4, |i| async move {
        ///         tokio::time::sleep(Duration::from_millis(10 * (i % 3 + 1))).await;
        ///         i
        ///     })
        ///     .with_shutdown(token.clone(), Duration::from_millis(15));
        /// let report = flow.shutdown_report();
        /// let mut flow = Box::pin(flow);
        /// let mut done = Vec::new();
        /// while let Some(i) = flow.next().await {
        ///     done.push(i);
        ///     if i == 9 {
        ///         token.cancel(); // Ctrl-C, a deploy, a deadline...
        ///     }
        /// }
        /// let not_completed = report.get().expect("the stream was shut down");
        /// // Every position is either done or reported, never both.
        /// for i in 0..1_000 {
        ///     assert_ne!(done.contains(&i), not_completed.contains(i));
        /// }
        /// assert!(not_completed.first_not_pulled() < 20);
        /// # }
        /// ```
        pub fn with_shutdown(
            mut self,
            token: tokio_util::sync::CancellationToken,
            grace: std::time::Duration,
        ) -> Self {
            self.inner.set_shutdown(token, grace);
            self
        }

        /// The handle on the report of a shutdown: see
        /// [`with_shutdown`](Self::with_shutdown). Take it before the stream runs.
        ///
        /// # Panics
        /// If `with_shutdown` was not called first.
        #[track_caller]
        pub fn shutdown_report(&self) -> crate::policy::ShutdownReport {
            self.inner.shutdown_report()
        }
    };
}

pub(crate) use engine_methods;
