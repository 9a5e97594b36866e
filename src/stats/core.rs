//! What a stage's [`Stats`](super::Stats) handle reads: counters and clocks written by
//! the stage's consumer (its `poll_next`) and by the workers that run its jobs.
//!
//! Who writes what:
//! - The consumer publishes its counters at the end of every poll, under a sequence
//!   lock (one writer): a reader sees them all from the same poll, so `pulled -
//!   yielded` is the bound's count at that moment.
//! - `running` (jobs in flight) is changed with one read-modify-write per job's start
//!   (by the consumer, before the lane holds the job: a cancellation may sweep it
//!   before its hand-over) and one per job's end or cancellation (by whoever ended it,
//!   a blocking call abandoned at its timeout included), so it never exceeds the limit
//!   and never goes below zero. `cancelled` is added to before `running` is taken
//!   from. A reader shows at most `started - finished` of it in flight.
//! - Jobs finished are not counted apart (that would be a second read-modify-write per
//!   job): they are `started - running - cancelled`, read in that order, and never more
//!   than `started`. A job counted in `started` was in `running` first, so the
//!   difference never counts a job that has not ended; one in `running` and not yet in
//!   the published `started` may lower it for a moment, which [`Core::shown`] keeps
//!   from showing.
//! - The busy and starved clocks are intervals of `tokio::time::Instant` (exact on the
//!   paused clock) under one small lock, taken only when a state changes: by the
//!   consumer when the stage starts or stops starving, by whoever turns `running` from
//!   0 to 1 or back for busy. A start and an end racing at such a turn may reach the
//!   lock in either order: `Clocks::busy_depth` counts them, so the worst case merges
//!   two busy intervals across a gap of a few instructions. A reader counts an open
//!   interval up to its own clock reading.
//! - Backpressure changes far more often (with a quick consumer, at every refill, for
//!   nanoseconds): the consumer times it alone, with the instant it opened kept on its
//!   side, and publishes the closed total and whether an interval is open (and which:
//!   a count of those opened). A reader counts an open interval from the moment a
//!   reader first saw it open (`Core::backpressure_seen`): live figures lag by at most
//!   the time between two snapshots, and each interval's exact length is in the total
//!   once it closes.
//! - The end: the consumer's last poll (or the drop of its `Recorder`) stops the
//!   clocks, publishes the last counts, and only then sets `ended`, so the first
//!   snapshot that says `ended` is final. A busy interval closed after the end (a
//!   blocking call returning after a drop) closes at the end.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use super::Snapshot;
use crate::sync::lock;

/// The facts of a stage fixed at its first poll.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meta {
    pub(crate) operator: &'static str,
    pub(crate) limit: usize,
    pub(crate) window: usize,
    pub(crate) base: Instant,
}

/// Time spent in one state: the closed intervals' total, and the open one's start.
#[derive(Default)]
struct Interval {
    total: Duration,
    since: Option<Instant>,
}

impl Interval {
    fn open(&mut self, now: Instant) {
        self.since.get_or_insert(now);
    }

    fn close(&mut self, now: Instant) {
        if let Some(since) = self.since.take() {
            self.total += now.saturating_duration_since(since);
        }
    }

    /// The total at `now`, the open interval included.
    fn at(&self, now: Instant) -> Duration {
        match self.since {
            Some(since) => self.total + now.saturating_duration_since(since),
            None => self.total,
        }
    }
}

#[derive(Default)]
struct Clocks {
    /// Starts minus ends of `running`'s turns seen (see the module docs).
    busy_depth: i64,
    busy: Interval,
    starved: Interval,
}

/// The shared part of a stage's statistics.
pub(crate) struct Core {
    name: Mutex<Option<std::sync::Arc<str>>>,
    meta: OnceLock<Meta>,
    seq: AtomicU64,
    pulled: AtomicU64,
    yielded: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    started: AtomicU64,
    backpressured_total: AtomicU64,
    /// Backpressure intervals opened so far, times two, plus one while one is open.
    backpressured_turns: AtomicU64,
    cancelled: AtomicU64,
    running: AtomicU64,
    clocks: Mutex<Clocks>,
    /// The open backpressure interval a reader saw first (its turn count), and when.
    backpressure_seen: Mutex<(u64, Option<Instant>)>,
    /// The times (nanoseconds) and the finished jobs last shown (busy, starved,
    /// backpressured, finished, elapsed), so that no snapshot shows less than an
    /// earlier one (see [`Core::shown`]).
    shown: [AtomicU64; 5],
    ended: AtomicBool,
    ended_at: OnceLock<Instant>,
}

/// What the consumer counts and publishes (see [`Core::publish`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Published {
    pub(crate) pulled: u64,
    pub(crate) yielded: u64,
    pub(crate) failed: u64,
    pub(crate) retried: u64,
    pub(crate) started: u64,
    /// Closed backpressure, in nanoseconds.
    pub(crate) backpressured_total: u64,
    /// See [`Core::backpressured_turns`].
    pub(crate) backpressured_turns: u64,
}

impl Core {
    pub(crate) fn new() -> Self {
        Core {
            name: Mutex::new(None),
            meta: OnceLock::new(),
            seq: AtomicU64::new(0),
            pulled: AtomicU64::new(0),
            yielded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            started: AtomicU64::new(0),
            backpressured_total: AtomicU64::new(0),
            backpressured_turns: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            running: AtomicU64::new(0),
            clocks: Mutex::new(Clocks::default()),
            backpressure_seen: Mutex::new((0, None)),
            shown: Default::default(),
            ended: AtomicBool::new(false),
            ended_at: OnceLock::new(),
        }
    }

    pub(crate) fn set_name(&self, name: std::sync::Arc<str>) {
        *lock(&self.name) = Some(name);
    }

    pub(crate) fn name(&self) -> Option<std::sync::Arc<str>> {
        lock(&self.name).clone()
    }

    /// Called once, at the stage's first poll (inside its runtime): the clock starts.
    pub(crate) fn bind(&self, operator: &'static str, limit: usize, window: usize) {
        let _ = self.meta.set(Meta {
            operator,
            limit,
            window,
            base: Instant::now(),
        });
    }

    /// A stage dropped before its first poll: it ends with nothing counted.
    pub(crate) fn end_unstarted(&self) {
        self.ended.store(true, Ordering::Release);
    }

    pub(crate) fn meta(&self) -> Option<Meta> {
        self.meta.get().copied()
    }

    /// The consumer's counters, all from one poll (a sequence lock: the consumer is the
    /// one writer). The counts that change at every poll are always written; the rest
    /// only when `all` (they changed).
    #[inline(always)]
    pub(crate) fn publish(&self, p: &Published, all: bool) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.pulled.store(p.pulled, Ordering::Relaxed);
        self.yielded.store(p.yielded, Ordering::Relaxed);
        if all {
            self.publish_rest(p);
        }
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// The counts that change rarely (see [`Core::publish`]).
    #[cold]
    fn publish_rest(&self, p: &Published) {
        self.started.store(p.started, Ordering::Relaxed);
        self.failed.store(p.failed, Ordering::Relaxed);
        self.retried.store(p.retried, Ordering::Relaxed);
        self.backpressured_total
            .store(p.backpressured_total, Ordering::Relaxed);
        self.backpressured_turns
            .store(p.backpressured_turns, Ordering::Relaxed);
    }

    fn read_published(&self) -> Published {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let p = Published {
                pulled: self.pulled.load(Ordering::Relaxed),
                yielded: self.yielded.load(Ordering::Relaxed),
                failed: self.failed.load(Ordering::Relaxed),
                retried: self.retried.load(Ordering::Relaxed),
                started: self.started.load(Ordering::Relaxed),
                backpressured_total: self.backpressured_total.load(Ordering::Relaxed),
                backpressured_turns: self.backpressured_turns.load(Ordering::Relaxed),
            };
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == before {
                return p;
            }
        }
    }

    /// `count` jobs are about to be handed over (called by the consumer).
    #[inline]
    pub(crate) fn jobs_started(&self, count: u64) {
        if self.running.fetch_add(count, Ordering::AcqRel) == 0 {
            self.busy_turn(true);
        }
    }

    /// A job's code returned (its result, or its panic), on the worker that ran it.
    #[inline]
    pub(crate) fn job_finished(&self) {
        if self.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.busy_turn(false);
        }
    }

    /// `count` jobs were dropped before their end (cancelled).
    pub(crate) fn jobs_cancelled(&self, count: u64) {
        if count == 0 {
            return;
        }
        self.cancelled.fetch_add(count, Ordering::AcqRel);
        if self.running.fetch_sub(count, Ordering::AcqRel) == count {
            self.busy_turn(false);
        }
    }

    #[cold]
    fn busy_turn(&self, start: bool) {
        let now = Instant::now();
        let mut clocks = lock(&self.clocks);
        if start {
            clocks.busy_depth += 1;
            if clocks.busy_depth == 1 {
                clocks.busy.open(now);
            }
        } else {
            clocks.busy_depth -= 1;
            if clocks.busy_depth == 0 {
                // A blocking call that outlived the stage: the clocks stopped at its end.
                clocks.busy.close(self.stopped_at(now));
            }
        }
    }

    /// `now`, or the end if the stage has ended before it.
    fn stopped_at(&self, now: Instant) -> Instant {
        self.ended_at.get().map_or(now, |&end| end.min(now))
    }

    /// Opens (`true`) or closes the consumer's starved clock.
    #[cold]
    fn starve(&self, starved: bool) {
        let now = Instant::now();
        let mut clocks = lock(&self.clocks);
        if starved {
            clocks.starved.open(now);
        } else {
            clocks.starved.close(now);
        }
    }

    /// The stage ended (its stream ended or was dropped), its last counts published:
    /// its clocks stop at `at`.
    pub(crate) fn end(&self, at: Instant) {
        let _ = self.ended_at.set(at);
        self.ended.store(true, Ordering::Release);
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let name = self.name();
        let Some(meta) = self.meta() else {
            return Snapshot::unstarted(name, self.ended.load(Ordering::Acquire));
        };
        let ended = self.ended.load(Ordering::Acquire);
        let ended_at = if ended {
            self.ended_at.get().copied()
        } else {
            None
        };
        let now = ended_at.unwrap_or_else(Instant::now);
        let elapsed =
            Duration::from_nanos(self.shown(4, nanos(now.saturating_duration_since(meta.base))));
        let p = self.read_published();
        let running = self.running.load(Ordering::Acquire);
        let cancelled = self.cancelled.load(Ordering::Acquire);
        let finished = p.started.saturating_sub(running.saturating_add(cancelled));
        let finished = self.shown(3, finished).min(p.started);
        // Jobs given to the lane since the last publication are in `running` and not yet
        // in `started`: in flight are at most the started ones not finished.
        let in_flight = running.min(p.started - finished);
        let (busy, starved) = {
            let clocks = lock(&self.clocks);
            // A blocking call abandoned at the end may return after it: the clocks stop
            // at the end.
            let at = |interval: &Interval| nanos(interval.at(now).min(elapsed));
            (at(&clocks.busy), at(&clocks.starved))
        };
        let backpressured = p.backpressured_total + self.backpressure_open(&p, now);
        let backpressured = backpressured.min(nanos(elapsed));
        Snapshot {
            name,
            operator: meta.operator,
            limit: meta.limit,
            window: meta.window,
            pulled_count: p.pulled,
            started_count: p.started,
            finished_count: finished,
            in_flight_count: in_flight,
            held_count: p.pulled - p.yielded,
            yielded_count: p.yielded,
            failed_count: p.failed,
            retried_count: p.retried,
            total_busy_duration: Duration::from_nanos(self.shown(0, busy)),
            total_starved_duration: Duration::from_nanos(self.shown(1, starved)),
            total_backpressured_duration: Duration::from_nanos(self.shown(2, backpressured)),
            elapsed,
            ended,
        }
    }

    /// The open backpressure interval's part, counted from when a reader first saw it.
    fn backpressure_open(&self, p: &Published, now: Instant) -> u64 {
        if p.backpressured_turns % 2 == 0 {
            return 0;
        }
        let mut seen = lock(&self.backpressure_seen);
        match *seen {
            (turns, Some(first)) if turns == p.backpressured_turns => {
                nanos(now.saturating_duration_since(first))
            }
            _ => {
                *seen = (p.backpressured_turns, Some(now));
                0
            }
        }
    }

    /// A time (or the finished jobs) as shown: never less than one shown before. A reader
    /// counts an open interval up to its own clock reading; the worker or consumer that
    /// closes it read its clock a moment earlier (before the lock), so the closed total
    /// may fall short of what was shown by that moment. Kept from going back, a time is
    /// at most that moment (microseconds) ahead; on the paused clock the two readings
    /// are equal.
    fn shown(&self, which: usize, computed: u64) -> u64 {
        self.shown[which]
            .fetch_max(computed, Ordering::AcqRel)
            .max(computed)
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The consumer's side of a stage's statistics: what it counts between publications,
/// and which of its clocks are open (so that the lock is taken only at a change).
pub(crate) struct Recorder {
    core: std::sync::Arc<Core>,
    local: Published,
    /// Whether more than the per-poll counts changed since the last publication.
    dirty: bool,
    starved: bool,
    /// When the open backpressure interval opened, if one is open.
    backpressured_since: Option<Instant>,
    /// The stage's window (the bound is full when it holds this many).
    window: usize,
    /// The last counts are published and the stage is ended.
    finished: bool,
}

impl Recorder {
    /// The recorder of a stage bound to `core` (see [`Core::bind`]).
    pub(crate) fn new(core: std::sync::Arc<Core>) -> Self {
        let meta = core
            .meta()
            .expect("flowgate: a stage's statistics are bound first");
        Recorder {
            core,
            local: Published::default(),
            dirty: false,
            starved: false,
            backpressured_since: None,
            window: meta.window,
            finished: false,
        }
    }

    /// An attempt failed and waits for its retry.
    pub(crate) fn retried(&mut self) {
        self.local.retried += 1;
        self.dirty = true;
    }

    /// A job is about to be given to the lane: in flight from now (a cancellation may
    /// sweep it before the hand-over), counted as started at the poll's end (until then
    /// a reader's `started - running` may fall short, which [`Core::shown`] keeps from
    /// showing).
    #[inline]
    pub(crate) fn job_started(&mut self) {
        self.local.started += 1;
        self.core.jobs_started(1);
        self.dirty = true;
    }

    /// A poll begins: the time since the last yield with a full bound was backpressure.
    #[inline]
    pub(crate) fn polled(&mut self) {
        if let Some(since) = self.backpressured_since.take() {
            self.backpressure_closes(since);
        }
    }

    /// Upstream was looked at: `pending` while the stage had room.
    #[inline]
    pub(crate) fn upstream(&mut self, pending: bool) {
        if pending != self.starved {
            self.starved = pending;
            self.core.starve(pending);
        }
    }

    /// A poll ends: with an item (`yielded` is `Some(failed)`: whether it is a
    /// failure), or not; publishes. `held` is counted after the item left.
    #[inline(always)]
    pub(crate) fn poll_ends(
        &mut self,
        pulled: u64,
        held: usize,
        yielded: Option<bool>,
        ended: bool,
    ) {
        if ended {
            return self.last_poll_ends(pulled, held, yielded);
        }
        if let Some(failed) = yielded {
            if failed {
                self.failed();
            }
            // The time from here belongs to downstream: backpressured (until the next
            // poll) if the bound was full as the item left, and not starved any more
            // (a stage with a full bound was not starved: it had no room).
            if held + 1 == self.window {
                self.backpressured_since = Some(Instant::now());
                self.local.backpressured_turns += 1;
                self.dirty = true;
            } else {
                self.upstream(false);
            }
        }
        self.local.pulled = pulled;
        self.local.yielded = pulled - held as u64;
        self.core
            .publish(&self.local, std::mem::take(&mut self.dirty));
    }

    #[inline(never)]
    fn backpressure_closes(&mut self, since: Instant) {
        let length = Instant::now().saturating_duration_since(since);
        self.local.backpressured_total += nanos(length);
        self.local.backpressured_turns += 1;
        self.dirty = true;
    }

    #[cold]
    fn failed(&mut self) {
        self.local.failed += 1;
        self.dirty = true;
    }

    /// The stage's last poll: every clock stops.
    #[cold]
    #[inline(never)]
    fn last_poll_ends(&mut self, pulled: u64, held: usize, yielded: Option<bool>) {
        if yielded == Some(true) {
            self.failed();
        }
        self.local.pulled = pulled;
        self.local.yielded = pulled - held as u64;
        self.finish();
    }

    /// Stops the clocks now, publishes the last counts, then marks the stage ended
    /// (so that a snapshot that says `ended` has them). Idempotent.
    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let now = Instant::now();
        self.upstream(false);
        if let Some(since) = self.backpressured_since.take() {
            self.local.backpressured_total += nanos(now.saturating_duration_since(since));
            self.local.backpressured_turns += 1;
        }
        self.core.publish(&self.local, true);
        self.core.end(now);
    }
}

/// A stage dropped before its end (the stream dropped mid-run, or a panic re-raised
/// past a runtime that shut down): its clocks stop and it ends, an open backpressure
/// interval counted to the drop.
impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish();
    }
}
