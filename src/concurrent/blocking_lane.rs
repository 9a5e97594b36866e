//! The blocking lane: a shared `Fn` run on short-lived drain loops in tokio's blocking pool.
//!
//! Each loop takes queued items one after another and lingers briefly when the queue is
//! empty, so a steady stream of jobs does not pay a `spawn_blocking` each; once it has
//! stayed empty for the linger, the loop exits (tokio's paused clock can only advance
//! while no blocking task exists). At most `limit` loops exist, so at most `limit`
//! closures run at once. No global pool is used.
//!
//! With a per-attempt timeout (the guarded operators), each job handed over gets a
//! deadline; a job still running at it is abandoned: the consumer reports its timeout,
//! its loop stops counting against `limit` (so other jobs, a retry among them, get a
//! thread), and when its call returns, the result is discarded and the loop ends. A
//! thread cannot be interrupted, so an abandoned call keeps its thread until it returns.

use std::collections::VecDeque;
use std::future::Future;
use std::mem;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::task::{Context, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::tuning::BLOCKING_LINGER;
use super::{drop_contained, Handover, Lane, Outcome, Pace, Workers};
use crate::stats::Core;
use crate::sync::lock;

struct Shared<F, T, O> {
    f: F,
    /// Set at the first poll: which outputs end the stream.
    is_failure: OnceLock<fn(&Outcome<O>) -> bool>,
    /// Set when a failure was finished and the consumer has not collected since.
    failure_finished: AtomicBool,
    /// Whether the exit is ordered (which jobs a failure cancels).
    ordered: AtomicBool,
    state: Mutex<State<T, O>>,
    job_ready: Condvar,
    /// Jobs at this position or later are cancelled. Moved only under the lock of
    /// `state`, under which a loop also claims a job: so each job is either claimed
    /// before its cancellation (it runs to its end) or never started.
    cutoff: AtomicU64,
    /// Set when a drain loop could not start because the runtime had shut down.
    runtime_gone: AtomicBool,
    /// Whether jobs have deadlines (see [`Deadline`]); set before the first hand-over.
    timed: AtomicBool,
    /// The stage's statistics, when asked for; set before the lane is bound.
    stats: OnceLock<Arc<Core>>,
    /// The stage's span; set before the lane is bound.
    #[cfg(feature = "tracing")]
    span: OnceLock<tracing::Span>,
}

/// A job queued for a loop: its position, its ticket (unique per job handed over: a
/// retry of the same position is another job) and its input.
struct Queued<T> {
    index: u64,
    ticket: u64,
    item: T,
}

/// The deadline of a job handed over while a timeout is set.
struct Deadline {
    ticket: u64,
    index: u64,
    due: Instant,
    /// A loop has taken the job and is running it.
    claimed: bool,
    /// The consumer reported its timeout: its result is to be discarded.
    abandoned: bool,
}

struct State<T, O> {
    queue: VecDeque<Queued<T>>,
    /// Deadlines of the jobs handed over and not yet finished (with a timeout only).
    deadlines: Vec<Deadline>,
    finished: Vec<(u64, Outcome<O>)>,
    consumer: Option<Waker>,
    /// Drain loops alive.
    loops: usize,
    /// Loops waiting for a job and not yet signalled.
    idle: usize,
    /// Signals sent to idle loops and not yet taken.
    signals: usize,
    closed: bool,
}

/// A drain loop's right to run, handed to `spawn_blocking`. Dropped without being
/// used, it means tokio dropped the loop unstarted: the runtime has shut down.
struct LoopTicket<F, T, O>(Option<Arc<Shared<F, T, O>>>);

impl<F, T, O> Drop for LoopTicket<F, T, O> {
    fn drop(&mut self) {
        let Some(shared) = self.0.take() else {
            return;
        };
        shared.runtime_gone.store(true, Ordering::Release);
        let consumer = {
            let mut state = lock(&shared.state);
            state.loops -= 1;
            state.consumer.take()
        };
        if let Some(waker) = consumer {
            waker.wake();
        }
    }
}

impl<F, T, O> Shared<F, T, O> {
    /// Moves the cutoff to `from` and takes the queued jobs it cancels, to be dropped
    /// once the lock is released. Queued positions grow, except for a retry queued
    /// behind later positions, so the queue is split by position, not at one place.
    fn cancel_from(&self, state: &mut State<T, O>, from: u64) -> VecDeque<Queued<T>> {
        self.cutoff.fetch_min(from, Ordering::AcqRel);
        if !state.queue.iter().any(|queued| queued.index >= from) {
            return VecDeque::new();
        }
        let (keep, cancelled): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut state.queue)
            .into_iter()
            .partition(|queued| queued.index < from);
        state.queue = keep;
        if let Some(stats) = self.stats.get() {
            stats.jobs_cancelled(cancelled.len() as u64);
        }
        if !state.deadlines.is_empty() {
            // Jobs that will never run have no deadline to keep.
            state
                .deadlines
                .retain(|deadline| deadline.claimed || deadline.index < from);
        }
        cancelled
    }

    /// Whether `outcome` ends the stream (see [`Lane::bind`]).
    fn is_failure(&self, outcome: &Outcome<O>) -> bool {
        self.is_failure
            .get()
            .is_some_and(|is_failure| is_failure(outcome))
    }
}

fn drain<F, T, O>(mut ticket: LoopTicket<F, T, O>)
where
    F: Fn(T) -> O,
{
    let shared = ticket.0.take().expect("a ticket is used once");
    let timed = shared.timed.load(Ordering::Relaxed);
    let stats = shared.stats.get().cloned();
    #[cfg(feature = "tracing")]
    let span = shared
        .span
        .get()
        .cloned()
        .unwrap_or_else(tracing::Span::none);
    // Jobs' spans go to the stage's subscriber, even where it is not this thread's
    // default (a subscriber set for one thread only).
    #[cfg(feature = "tracing")]
    let _dispatch = span
        .with_subscriber(|(_, dispatch)| dispatch.clone())
        .map(|dispatch| tracing::dispatcher::set_default(&dispatch));
    let mut state = lock(&shared.state);
    loop {
        if let Some(Queued {
            index,
            ticket,
            item,
        }) = state.queue.pop_front()
        {
            // The claim: taken and checked under the lock that every cancellation takes.
            if index >= shared.cutoff.load(Ordering::Acquire) {
                drop(state);
                if let Some(stats) = &stats {
                    stats.jobs_cancelled(1);
                }
                drop_contained(item);
                state = lock(&shared.state);
                continue;
            }
            if timed {
                if let Some(deadline) = deadline_of(&mut state.deadlines, ticket) {
                    deadline.claimed = true;
                }
            }
            drop(state);
            #[cfg(feature = "tracing")]
            let traced = tracing::trace_span!(parent: &span, "flowgate.job", position = index);
            #[cfg(feature = "tracing")]
            let traced = traced.enter();
            let outcome = catch_unwind(AssertUnwindSafe(|| (shared.f)(item)));
            #[cfg(feature = "tracing")]
            drop(traced);
            let failed = shared.is_failure(&outcome);
            state = lock(&shared.state);
            if timed && finish_deadline(&mut state.deadlines, ticket) {
                // Abandoned at its deadline: the consumer reported its timeout, and this
                // loop no longer counts against the limit (nor in the statistics' jobs
                // in flight). Its result is discarded.
                drop(state);
                drop_contained(outcome);
                return;
            }
            if let Some(stats) = &stats {
                stats.job_finished();
            }
            let mut cancelled = VecDeque::new();
            if failed {
                // Fail fast: queued jobs after it are dropped now, not when the
                // consumer next looks.
                let ordered = shared.ordered.load(Ordering::Relaxed);
                let from = super::cancel_from_after_failure(index, ordered);
                cancelled = shared.cancel_from(&mut state, from);
            }
            let (consumer, discarded) = if state.closed {
                (None, Some(outcome))
            } else {
                state.finished.push((index, outcome));
                if failed {
                    shared.failure_finished.store(true, Ordering::Release);
                }
                (state.consumer.take(), None)
            };
            if !cancelled.is_empty() || consumer.is_some() || discarded.is_some() {
                // Outside the lock: the consumer is woken first, then user data
                // (cancelled items, a closed stream's result) is dropped, a panic in
                // its destructor contained: the loop goes on, the consumer was told.
                drop(state);
                if let Some(consumer) = consumer {
                    consumer.wake();
                }
                drop_contained(cancelled);
                drop_contained(discarded);
                state = lock(&shared.state);
            }
            continue;
        }
        if state.closed {
            break;
        }
        state.idle += 1;
        let (guard, _) = shared
            .job_ready
            .wait_timeout(state, BLOCKING_LINGER)
            .unwrap_or_else(PoisonError::into_inner);
        state = guard;
        let signalled = if state.signals > 0 {
            state.signals -= 1;
            true
        } else {
            state.idle -= 1;
            false
        };
        if !signalled && state.queue.is_empty() {
            break;
        }
    }
    state.loops -= 1;
}

/// What a sweep of the deadlines leaves the consumer to do once the lock is released.
struct Swept<T> {
    /// Loops to spawn for queued jobs, now that abandoned ones no longer count.
    spawn: usize,
    /// Jobs abandoned at their deadline while they run (no longer in flight).
    abandoned: u64,
    /// Jobs timed out before a loop took them, to drop.
    dropped: Vec<Queued<T>>,
    /// The earliest deadline still running, for the timer.
    earliest: Option<Instant>,
}

/// Reports the jobs past their deadline as timed out (into `into`), abandoning the
/// running ones (their loops stop counting against `limit`) and taking out the ones no
/// loop took yet.
fn sweep_deadlines<T, O>(
    state: &mut State<T, O>,
    (timeout, timed_out): Timeout<O>,
    limit: usize,
    into: &mut Vec<(u64, Outcome<O>)>,
) -> Swept<T> {
    let now = Instant::now();
    let mut dropped = Vec::new();
    let mut abandoned = 0;
    let mut at = 0;
    while at < state.deadlines.len() {
        let deadline = &mut state.deadlines[at];
        if deadline.abandoned || deadline.due > now {
            at += 1;
            continue;
        }
        into.push((deadline.index, Ok(timed_out(timeout))));
        if deadline.claimed {
            deadline.abandoned = true;
            state.loops -= 1;
            abandoned += 1;
            at += 1;
        } else {
            let ticket = deadline.ticket;
            state.deadlines.swap_remove(at);
            if let Some(queued) = state.queue.iter().position(|q| q.ticket == ticket) {
                dropped.extend(state.queue.remove(queued));
            }
        }
    }
    let waiting = state.queue.len().saturating_sub(state.idle);
    let spawn = waiting.min(limit.saturating_sub(state.loops));
    state.loops += spawn;
    Swept {
        spawn,
        abandoned,
        dropped,
        earliest: earliest_due(&state.deadlines),
    }
}

/// The earliest deadline of a job not abandoned.
fn earliest_due(deadlines: &[Deadline]) -> Option<Instant> {
    deadlines
        .iter()
        .filter(|deadline| !deadline.abandoned)
        .map(|deadline| deadline.due)
        .min()
}

fn deadline_of(deadlines: &mut [Deadline], ticket: u64) -> Option<&mut Deadline> {
    deadlines
        .iter_mut()
        .find(|deadline| deadline.ticket == ticket)
}

/// Removes the deadline of a finished job; returns whether the job was abandoned.
fn finish_deadline(deadlines: &mut Vec<Deadline>, ticket: u64) -> bool {
    match deadlines
        .iter()
        .position(|deadline| deadline.ticket == ticket)
    {
        Some(at) => deadlines.swap_remove(at).abandoned,
        None => false,
    }
}

/// A per-attempt timeout, and how a timeout is reported as an output.
type Timeout<O> = (Duration, fn(Duration) -> O);

/// The consumer's handle on the blocking lane.
pub(crate) struct BlockingLane<F, T, O> {
    shared: Arc<Shared<F, T, O>>,
    limit: usize,
    handle: Option<tokio::runtime::Handle>,
    starting: Vec<Queued<T>>,
    taken: Vec<(u64, Outcome<O>)>,
    /// Tickets given so far.
    tickets: u64,
    /// The per-attempt timeout, and how a timeout is reported as an output.
    timeout: Option<Timeout<O>>,
    /// Wakes the consumer at the earliest deadline (with a timeout only).
    timer: Option<Pin<Box<Sleep>>>,
}

impl<F, T, O> BlockingLane<F, T, O> {
    pub(crate) fn new(limit: usize, f: F) -> Self {
        BlockingLane {
            shared: Arc::new(Shared {
                f,
                is_failure: OnceLock::new(),
                failure_finished: AtomicBool::new(false),
                ordered: AtomicBool::new(true),
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    deadlines: Vec::new(),
                    finished: Vec::new(),
                    consumer: None,
                    loops: 0,
                    idle: 0,
                    signals: 0,
                    closed: false,
                }),
                job_ready: Condvar::new(),
                cutoff: AtomicU64::new(u64::MAX),
                runtime_gone: AtomicBool::new(false),
                timed: AtomicBool::new(false),
                stats: OnceLock::new(),
                #[cfg(feature = "tracing")]
                span: OnceLock::new(),
            }),
            limit,
            handle: None,
            starting: Vec::new(),
            taken: Vec::new(),
            tickets: 0,
            timeout: None,
            timer: None,
        }
    }

    /// The closure of a lane never bound, to build another lane around it.
    pub(crate) fn into_f(self) -> F {
        let shared = Arc::clone(&self.shared);
        drop(self);
        match Arc::try_unwrap(shared) {
            Ok(shared) => shared.f,
            Err(_) => unreachable!("flowgate: a lane never bound shares its closure with no loop"),
        }
    }

    /// Gives every job handed over from now on a deadline `timeout` after its hand-over
    /// (each job handed over gets a thread at once: at most `limit` run, and abandoned
    /// ones do not count). A job still running then is abandoned and reported as
    /// `timed_out(timeout)`. Set before the first hand-over.
    pub(crate) fn set_timeout(&mut self, timeout: Duration, timed_out: fn(Duration) -> O) {
        self.timeout = Some((timeout, timed_out));
        self.shared.timed.store(true, Ordering::Relaxed);
    }

    /// Sets the timer to wake the consumer (`waker`) at `due`, the earliest deadline.
    fn arm_timer(&mut self, due: Instant, waker: &Waker) {
        let timer = match &mut self.timer {
            Some(timer) => {
                if timer.deadline() != due {
                    timer.as_mut().reset(due);
                }
                timer
            }
            None => self.timer.insert(Box::pin(tokio::time::sleep_until(due))),
        };
        if timer
            .as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_ready()
        {
            waker.wake_by_ref();
        }
    }

    /// Starts `count` drain loops on the blocking pool.
    fn spawn_loops(&self, count: usize)
    where
        F: Fn(T) -> O + Send + Sync + 'static,
        T: Send + 'static,
        O: Send + 'static,
    {
        if count == 0 {
            return;
        }
        let handle = self
            .handle
            .as_ref()
            .expect("flowgate: the lane is bound at the first poll");
        for _ in 0..count {
            let ticket = LoopTicket(Some(Arc::clone(&self.shared)));
            handle.spawn_blocking(move || drain(ticket));
        }
    }

    fn shut(&mut self) {
        let (queue, finished) = {
            let mut state = lock(&self.shared.state);
            state.closed = true;
            state.consumer = None;
            let queue = self.shared.cancel_from(&mut state, 0);
            (queue, mem::take(&mut state.finished))
        };
        self.shared.job_ready.notify_all();
        drop_contained(queue);
        drop_contained(finished);
        self.starting.clear();
    }
}

impl<F, T, O> Lane for BlockingLane<F, T, O>
where
    F: Fn(T) -> O + Send + Sync + 'static,
    T: Send + 'static,
    O: Send + 'static,
{
    type Job = T;
    type Out = O;
    const WORKERS: Workers = Workers::BlockingThreads;

    fn observe(&mut self, core: Arc<Core>) {
        let _ = self.shared.stats.set(core);
    }

    #[cfg(feature = "tracing")]
    fn trace(&mut self, span: &tracing::Span) {
        let _ = self.shared.span.set(span.clone());
    }

    fn bind(
        &mut self,
        handle: &tokio::runtime::Handle,
        is_failure: fn(&Outcome<O>) -> bool,
        ordered: bool,
    ) {
        let _ = self.shared.is_failure.set(is_failure);
        self.shared.ordered.store(ordered, Ordering::Relaxed);
        self.handle = Some(handle.clone());
    }

    fn start(&mut self, index: u64, job: T) {
        self.tickets += 1;
        self.starting.push(Queued {
            index,
            ticket: self.tickets,
            item: job,
        });
    }

    fn flush(&mut self) -> Handover {
        if self.starting.is_empty() {
            return Handover::Nothing;
        }
        let count = self.starting.len();
        let mut arm_for = None;
        let (signal, spawn) = {
            let mut state = lock(&self.shared.state);
            if state.closed {
                self.starting.clear();
                return Handover::Nothing;
            }
            if let Some((timeout, _)) = self.timeout {
                let due = Instant::now() + timeout;
                let deadlines = self.starting.iter().map(|queued| Deadline {
                    ticket: queued.ticket,
                    index: queued.index,
                    due,
                    claimed: false,
                    abandoned: false,
                });
                state.deadlines.extend(deadlines);
            }
            state.queue.extend(self.starting.drain(..));
            if self.timeout.is_some() {
                // A consumer that registered its waker before this hand-over waits for
                // results: it must also be woken at the earliest deadline.
                arm_for = state.consumer.clone().zip(earliest_due(&state.deadlines));
            }
            let signal = count.min(state.idle);
            state.idle -= signal;
            state.signals += signal;
            let spawn = (count - signal).min(self.limit.saturating_sub(state.loops));
            state.loops += spawn;
            (signal, spawn)
        };
        for _ in 0..signal {
            self.shared.job_ready.notify_one();
        }
        self.spawn_loops(spawn);
        if let Some((waker, due)) = arm_for {
            self.arm_timer(due, &waker);
        }
        Handover::OffRuntime
    }

    fn failure_waiting(&self) -> bool {
        self.shared.failure_finished.load(Ordering::Acquire)
    }

    fn collect(&mut self, into: &mut Vec<(u64, Outcome<O>)>, waker: Option<&Waker>) -> Pace {
        self.shared.failure_finished.store(false, Ordering::Release);
        let mut swept = None;
        {
            let mut state = lock(&self.shared.state);
            mem::swap(&mut state.finished, &mut self.taken);
            if let Some(timeout) = self.timeout.filter(|_| !state.closed) {
                swept = Some(sweep_deadlines(
                    &mut state,
                    timeout,
                    self.limit,
                    &mut self.taken,
                ));
            }
            if self.taken.is_empty() {
                if let Some(waker) = waker {
                    match &state.consumer {
                        Some(current) if current.will_wake(waker) => {}
                        _ => state.consumer = Some(waker.clone()),
                    }
                }
            }
        }
        if let Some(swept) = swept {
            if let Some(stats) = self.shared.stats.get() {
                stats.jobs_cancelled(swept.dropped.len() as u64 + swept.abandoned);
            }
            drop_contained(swept.dropped);
            self.spawn_loops(swept.spawn);
            if let (true, Some(waker), Some(due)) = (self.taken.is_empty(), waker, swept.earliest) {
                self.arm_timer(due, waker);
            }
        }
        into.append(&mut self.taken);
        // A blocking job runs to its end in one call: it never waits.
        Pace::FirstPoll
    }

    fn cancel_from(&mut self, index: u64) {
        let cancelled = self
            .shared
            .cancel_from(&mut lock(&self.shared.state), index);
        drop_contained(cancelled);
    }

    fn runtime_gone(&self) -> bool {
        self.shared.runtime_gone.load(Ordering::Acquire)
    }

    fn close(&mut self) {
        self.shut();
    }
}

impl<F, T, O> Drop for BlockingLane<F, T, O> {
    fn drop(&mut self) {
        self.shut();
    }
}
