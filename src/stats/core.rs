//! What a stage's [`Stats`](super::Stats) handle reads: counters and clocks written by
//! the stage's consumer (its `poll_next`) and by the workers that run its jobs.
//!
//! Who writes what:
//! - The consumer publishes its counters and its starved / backpressured clocks at the
//!   end of every poll, under a sequence lock (one writer): a reader sees them all from
//!   the same poll, so `pulled - yielded` is the bound's count at that moment.
//!   The consumer also publishes before every hand-over of jobs, so a job that
//!   finishes was counted as started first.
//! - `finished` is added to by the workers as jobs end. A reader loads it before the
//!   consumer's counters, so `finished <= started` in every snapshot.
//! - `running` (jobs in flight) is changed with one read-modify-write per job start
//!   (by the consumer, before the hand-over) and end or cancellation (by whoever ended
//!   it), so it never exceeds the limit and never goes below zero.
//! - Busy time: only `running`'s transitions between 0 and 1 take the small `busy` lock, which keeps the
//!   union of the busy intervals. A start and an end racing at such a transition may
//!   reach the lock in either order: `Busy::depth` counts them, so the worst case merges
//!   two intervals across a gap of a few instructions.
//!
//! Times are nanoseconds since the stage's first poll, read from `tokio::time::Instant`
//! (exact on the paused clock).

use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::Snapshot;

/// "Not in this state": an open interval's start when none is open.
const NONE: u64 = u64::MAX;

/// The facts of a stage fixed at its first poll.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meta {
    pub(crate) operator: &'static str,
    pub(crate) limit: usize,
    pub(crate) window: usize,
    pub(crate) base: Instant,
}

#[derive(Default)]
struct Busy {
    /// Starts minus ends of the transitions seen (see the module docs).
    depth: i64,
    since: u64,
    total: u64,
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
    starved_total: AtomicU64,
    starved_since: AtomicU64,
    backpressured_total: AtomicU64,
    backpressured_since: AtomicU64,
    finished: AtomicU64,
    running: AtomicU64,
    busy: Mutex<Busy>,
    /// The times last shown (busy, starved, backpressured), so that no snapshot shows
    /// less than an earlier one (see [`Core::shown`]).
    shown: [AtomicU64; 3],
    ended: AtomicBool,
    ended_at: AtomicU64,
}

/// What the consumer keeps and publishes (see [`Core::publish`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Published {
    pub(crate) pulled: u64,
    pub(crate) yielded: u64,
    pub(crate) failed: u64,
    pub(crate) retried: u64,
    pub(crate) started: u64,
    pub(crate) starved_total: u64,
    pub(crate) starved_since: Option<u64>,
    pub(crate) backpressured_total: u64,
    pub(crate) backpressured_since: Option<u64>,
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
            starved_total: AtomicU64::new(0),
            starved_since: AtomicU64::new(NONE),
            backpressured_total: AtomicU64::new(0),
            backpressured_since: AtomicU64::new(NONE),
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            running: AtomicU64::new(0),
            busy: Mutex::new(Busy::default()),
            shown: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            ended: AtomicBool::new(false),
            ended_at: AtomicU64::new(NONE),
        }
    }

    pub(crate) fn set_name(&self, name: std::sync::Arc<str>) {
        *self.name.lock().unwrap_or_else(PoisonError::into_inner) = Some(name);
    }

    pub(crate) fn name(&self) -> Option<std::sync::Arc<str>> {
        self.name
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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

    pub(crate) fn meta(&self) -> Option<Meta> {
        self.meta.get().copied()
    }

    /// Nanoseconds since the first poll, on tokio's clock.
    pub(crate) fn now(&self) -> u64 {
        match self.meta.get() {
            Some(meta) => since(meta.base),
            None => 0,
        }
    }

    /// The consumer's counters and clocks, all from one poll (a sequence lock: the
    /// consumer is the one writer). The counts that change at every poll are always
    /// written; the rest only when `all` (they changed).
    #[inline(always)]
    pub(crate) fn publish(&self, p: &Published, all: bool) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.pulled.store(p.pulled, Ordering::Relaxed);
        self.yielded.store(p.yielded, Ordering::Relaxed);
        self.started.store(p.started, Ordering::Relaxed);
        if all {
            self.failed.store(p.failed, Ordering::Relaxed);
            self.retried.store(p.retried, Ordering::Relaxed);
            self.starved_total.store(p.starved_total, Ordering::Relaxed);
            self.starved_since
                .store(p.starved_since.unwrap_or(NONE), Ordering::Relaxed);
            self.backpressured_total
                .store(p.backpressured_total, Ordering::Relaxed);
            self.backpressured_since
                .store(p.backpressured_since.unwrap_or(NONE), Ordering::Relaxed);
        }
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    fn read_published(&self) -> Published {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let since = |cell: &AtomicU64| match cell.load(Ordering::Relaxed) {
                NONE => None,
                at => Some(at),
            };
            let p = Published {
                pulled: self.pulled.load(Ordering::Relaxed),
                yielded: self.yielded.load(Ordering::Relaxed),
                failed: self.failed.load(Ordering::Relaxed),
                retried: self.retried.load(Ordering::Relaxed),
                started: self.started.load(Ordering::Relaxed),
                starved_total: self.starved_total.load(Ordering::Relaxed),
                starved_since: since(&self.starved_since),
                backpressured_total: self.backpressured_total.load(Ordering::Relaxed),
                backpressured_since: since(&self.backpressured_since),
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
        self.finished.fetch_add(1, Ordering::Release);
        if self.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.busy_turn(false);
        }
    }

    /// `count` jobs were dropped before their end (cancelled).
    pub(crate) fn jobs_cancelled(&self, count: u64) {
        if count == 0 {
            return;
        }
        if self.running.fetch_sub(count, Ordering::AcqRel) == count {
            self.busy_turn(false);
        }
    }

    #[cold]
    fn busy_turn(&self, start: bool) {
        let now = self.now();
        let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        if start {
            busy.depth += 1;
            if busy.depth == 1 {
                busy.since = now;
            }
        } else {
            busy.depth -= 1;
            if busy.depth == 0 {
                busy.total += now.saturating_sub(busy.since);
            }
        }
    }

    /// The stage ended (its stream ended or was dropped): its clocks stop.
    pub(crate) fn end(&self) {
        if !self.ended.swap(true, Ordering::AcqRel) {
            self.ended_at.store(self.now(), Ordering::Release);
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let name = self.name();
        let Some(meta) = self.meta() else {
            return Snapshot::unstarted(name, self.ended.load(Ordering::Acquire));
        };
        let ended_at = match self.ended_at.load(Ordering::Acquire) {
            NONE => None,
            at => Some(at),
        };
        let now = ended_at.unwrap_or_else(|| self.now());
        let finished = self.finished.load(Ordering::Acquire);
        let in_flight = self.running.load(Ordering::Acquire);
        let p = self.read_published();
        let busy_total = {
            let busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
            let open = if busy.depth > 0 {
                now.saturating_sub(busy.since)
            } else {
                0
            };
            busy.total + open
        };
        let open = |since: Option<u64>| since.map_or(0, |since| now.saturating_sub(since));
        let busy_total = self.shown(0, busy_total);
        let starved_total = self.shown(1, p.starved_total + open(p.starved_since));
        let backpressured_total =
            self.shown(2, p.backpressured_total + open(p.backpressured_since));
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
            total_busy_duration: Duration::from_nanos(busy_total),
            total_starved_duration: Duration::from_nanos(starved_total),
            total_backpressured_duration: Duration::from_nanos(backpressured_total),
            elapsed: Duration::from_nanos(now),
            ended: ended_at.is_some(),
        }
    }
}

impl Core {
    /// A time as shown: never less than one shown before. A reader counts an open
    /// interval up to its own clock reading; the worker or consumer that closes it
    /// read its clock a moment earlier (before the lock or the publication), so the
    /// closed total may fall short of what was shown by that moment. Kept from going
    /// back, a time is at most that moment (microseconds) ahead; on the paused clock
    /// the two readings are equal.
    fn shown(&self, which: usize, computed: u64) -> u64 {
        self.shown[which]
            .fetch_max(computed, Ordering::AcqRel)
            .max(computed)
    }
}

/// Nanoseconds from `base` to now on tokio's clock (`u64` holds 584 years).
#[inline]
fn since(base: Instant) -> u64 {
    let elapsed = Instant::now().saturating_duration_since(base);
    elapsed.as_secs() * 1_000_000_000 + u64::from(elapsed.subsec_nanos())
}

/// The consumer's side of a stage's statistics: what it counts between publications.
pub(crate) struct Recorder {
    core: std::sync::Arc<Core>,
    base: Instant,
    local: Published,
    /// Whether more than the per-poll counts changed since the last publication.
    dirty: bool,
    /// The stage's window (the bound is full when it holds this many).
    window: usize,
}

impl Recorder {
    /// The recorder of a stage bound to `core` (see [`Core::bind`]).
    pub(crate) fn new(core: std::sync::Arc<Core>) -> Self {
        let meta = core
            .meta()
            .expect("flowgate: a stage's statistics are bound first");
        Recorder {
            core,
            base: meta.base,
            local: Published::default(),
            dirty: false,
            window: meta.window,
        }
    }

    #[inline]
    fn now(&self) -> u64 {
        since(self.base)
    }

    /// An attempt failed and waits for its retry.
    pub(crate) fn retried(&mut self) {
        self.local.retried += 1;
        self.dirty = true;
    }

    /// Jobs are about to be handed over (`starts` counts every job started so far):
    /// they are counted as started, and published, before any of them can finish.
    #[inline]
    pub(crate) fn before_hand_over(&mut self, pulled: u64, held: usize, starts: u64) {
        let new = starts - self.local.started;
        if new > 0 {
            self.local.started = starts;
            self.core.jobs_started(new);
        }
        self.local.pulled = pulled;
        self.local.yielded = pulled - held as u64;
        self.core
            .publish(&self.local, std::mem::take(&mut self.dirty));
    }

    /// A poll begins: the time since the last yield with a full bound was backpressure.
    #[inline]
    pub(crate) fn polled(&mut self) {
        if let Some(since) = self.local.backpressured_since.take() {
            self.local.backpressured_total += self.now().saturating_sub(since);
            self.dirty = true;
        }
    }

    /// Upstream was looked at: `pending` while the stage had room.
    #[inline]
    pub(crate) fn upstream(&mut self, pending: bool) {
        match (pending, self.local.starved_since) {
            (true, None) => {
                self.local.starved_since = Some(self.now());
                self.dirty = true;
            }
            (false, Some(since)) => {
                self.local.starved_since = None;
                self.local.starved_total += self.now().saturating_sub(since);
                self.dirty = true;
            }
            _ => {}
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
        self.local.pulled = pulled;
        self.local.yielded = pulled - held as u64;
        if let Some(failed) = yielded {
            if failed {
                self.local.failed += 1;
                self.dirty = true;
            }
            // The bound was full as the item left: backpressured until the next poll.
            if held + 1 == self.window || self.local.starved_since.is_some() {
                self.times_at_yield(held + 1 == self.window);
            }
        }
        if ended {
            self.upstream(false);
            self.polled();
        }
        self.core
            .publish(&self.local, std::mem::take(&mut self.dirty));
        if ended {
            self.core.end();
        }
    }

    /// After a yield the time belongs to downstream: not starved any more, and
    /// backpressured if the bound was `full` as the item left.
    #[inline(never)]
    fn times_at_yield(&mut self, full: bool) {
        self.upstream(false);
        if full {
            self.local.backpressured_since = Some(self.now());
            self.dirty = true;
        }
    }
}
