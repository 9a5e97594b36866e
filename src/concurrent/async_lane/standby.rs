//! The standing-by driver's pacing: when it looks at the queue, when it takes a job,
//! and when it stops standing by. Speed only: no promise depends on it (a job queued
//! while no driver is active always wakes a parked one).
//!
//! Owns: [`Standby`] (the fields that live only while a driver stands by), [`plan_turn`]
//! and [`Turn`], and the thread mark that tells a standby whether it runs beside the
//! consumer. Every knob it reads is in `concurrent::tuning`.

use std::task::{Context, Poll};
use std::time::Instant;

use crate::concurrent::tuning::{
    BACK_AT_ONCE, DRIVER_LINGER, SNOOZE_LIMIT, STANDBY_AGE, STANDBY_LOOK_EVERY,
};

/// The clock the standby's pacing reads. Under loom it is frozen: the models check the
/// protocol, and a clock read would make their runs differ from one another.
pub(super) fn now() -> Instant {
    #[cfg(not(all(test, loom)))]
    {
        Instant::now()
    }
    #[cfg(all(test, loom))]
    {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }
}

/// What a driver keeps while it stands by; reset when it takes a job or parks.
#[derive(Default)]
pub(super) struct Standby {
    /// Since when it has seen the queue empty.
    idle_since: Option<Instant>,
    /// The push it saw at the front of the queue, and since when.
    front_seen: Option<(u64, Instant)>,
    /// When it last looked at the queue.
    looked_at: Option<Instant>,
    /// When it last yielded to the runtime.
    yielded_at: Option<Instant>,
    /// Whether, at its last look, it ran on the consumer's thread.
    beside_consumer: bool,
    /// The step of its next in-place spin (see `SNOOZE_LIMIT`).
    snoozes: u32,
}

/// What a paced standing-by driver does at a turn.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Turn {
    /// Look at the queue now.
    Look,
    /// Yield to the runtime: the next look is not due, and other tasks may want the
    /// worker.
    Yield,
    /// Spin in place a bounded while (a backoff step, see `SNOOZE_LIMIT`), then yield.
    Snooze,
}

impl Standby {
    /// The turn of a paced standby (see [`plan_turn`]), now.
    pub(super) fn plan(&self) -> Turn {
        match self.looked_at {
            Some(looked) => plan_turn(now(), looked, self.yielded_at, self.beside_consumer),
            None => Turn::Look,
        }
    }

    /// Notes a look at the queue, and whether it runs beside the consumer (which last
    /// handed jobs over from `consumer_thread`).
    pub(super) fn looked(&mut self, consumer_thread: usize) {
        self.looked_at = Some(now());
        self.beside_consumer = consumer_thread == this_thread();
    }

    /// Whether the jobs of `front` (a push, 0 for none) have waited `STANDBY_AGE` at the
    /// front of the queue, as far as this driver has watched: timed from when it first
    /// saw that push there, so pushing jobs costs no clock reading.
    pub(super) fn has_waited(&mut self, front: u64) -> bool {
        if front == 0 {
            return false;
        }
        let now = now();
        match self.front_seen {
            Some((push, since)) if push == front => now.duration_since(since) >= STANDBY_AGE,
            _ => {
                self.front_seen = Some((front, now));
                false
            }
        }
    }

    /// Whether to go on standing by, given whether a job is queued now and whether
    /// new jobs are due soon (`jobs_due`: the consumer neither waits for results nor
    /// takes back results that came slowly).
    ///
    /// A standing-by driver stays while jobs keep being queued, and for `DRIVER_LINGER`
    /// after the last one: a consumer busy yielding results will hand over new jobs
    /// within microseconds, and waking a parked driver on another worker costs far more
    /// than that. A consumer waiting for results hands over nothing until one comes, and
    /// one taking back results paced by timers or I/O hands new jobs over only as they
    /// come (a job woken meanwhile wakes a driver): then it parks at once, since a
    /// linger after every burst of wake-ups would only burn CPU. Measured in real time:
    /// tokio's paused clock does not advance while a task keeps yielding.
    pub(super) fn keeps_standing(&mut self, queued: bool, jobs_due: bool) -> bool {
        if queued {
            self.idle_since = None;
            return true;
        }
        if !jobs_due {
            return false;
        }
        let now = now();
        let since = *self.idle_since.get_or_insert(now);
        now.duration_since(since) < DRIVER_LINGER
    }

    /// Spins in place a bounded while, twice as long as the last time while it has
    /// stood by (up to `SNOOZE_LIMIT`), then yields: never a wait in place that only the
    /// clock ends.
    pub(super) fn snooze(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..1u32 << self.snoozes {
            std::hint::spin_loop();
        }
        self.snoozes = (self.snoozes + 1).min(SNOOZE_LIMIT);
        self.yield_now(cx)
    }

    /// Yields to the runtime while standing by, noting when (see [`plan_turn`]).
    pub(super) fn yield_now(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.yielded_at = Some(now());
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Plans the turn of a standing-by driver that last looked at the queue at `looked` and
/// last yielded at `yielded`, now.
///
/// Once a look is due, it looks. Before that it yields, unless its yield came straight
/// back (within `BACK_AT_ONCE`: nothing else ran on its worker) and its worker is not
/// the consumer's: then it first spins in place a bounded while (without reading the
/// clock), so that it goes through the scheduler only every microsecond or two. Beside
/// the consumer it always yields at once, so that the consumer and the driver on its
/// worker never wait for the standby's spin.
pub(super) fn plan_turn(
    now: Instant,
    looked: Instant,
    yielded: Option<Instant>,
    beside_consumer: bool,
) -> Turn {
    let due = looked + STANDBY_LOOK_EVERY;
    if now >= due {
        return Turn::Look;
    }
    let worker_idle = yielded.is_some_and(|at| now.saturating_duration_since(at) < BACK_AT_ONCE);
    if worker_idle && !beside_consumer {
        Turn::Snooze
    } else {
        Turn::Yield
    }
}

/// An address that tells the current thread from every other one alive.
pub(super) fn this_thread() -> usize {
    thread_local! {
        static MARK: u8 = const { 0 };
    }
    MARK.with(|mark| mark as *const u8 as usize)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn a_standby_looks_once_its_look_is_due() {
        let looked = Instant::now();
        let now = looked + STANDBY_LOOK_EVERY;
        assert_eq!(plan_turn(now, looked, None, false), Turn::Look);
        assert_eq!(plan_turn(now, looked, Some(now), false), Turn::Look);
        assert_eq!(plan_turn(now + US, looked, Some(now), true), Turn::Look);
    }

    #[test]
    fn a_standby_alone_on_its_worker_spins_in_place_a_bounded_while() {
        let looked = Instant::now();
        let yielded = looked + US;
        let now = yielded + BACK_AT_ONCE / 2;
        assert_eq!(plan_turn(now, looked, Some(yielded), false), Turn::Snooze);
    }

    #[test]
    fn a_standby_s_spins_grow_to_a_bound_and_start_afresh() {
        let mut standby = Standby::default();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for step in 0..SNOOZE_LIMIT + 3 {
            assert_eq!(standby.snoozes, step.min(SNOOZE_LIMIT));
            assert!(
                standby.snooze(&mut cx).is_pending(),
                "a snooze always yields"
            );
        }
        assert_eq!(standby.snoozes, SNOOZE_LIMIT);
        assert_eq!(Standby::default().snoozes, 0);
    }

    #[test]
    fn a_standby_yields_when_other_tasks_ran_on_its_worker() {
        let looked = Instant::now();
        let yielded = looked + US;
        let now = yielded + BACK_AT_ONCE;
        assert!(now < looked + STANDBY_LOOK_EVERY);
        assert_eq!(plan_turn(now, looked, Some(yielded), false), Turn::Yield);
        // Not yielded since its look: it does not know, so it yields.
        assert_eq!(plan_turn(looked + US, looked, None, false), Turn::Yield);
    }

    #[test]
    fn a_standby_beside_the_consumer_never_waits_in_place() {
        let looked = Instant::now();
        let yielded = looked + US;
        let now = yielded + BACK_AT_ONCE / 2;
        assert_eq!(plan_turn(now, looked, Some(yielded), true), Turn::Yield);
    }

    #[test]
    fn threads_have_marks_of_their_own() {
        let here = this_thread();
        assert_eq!(here, this_thread());
        let there = std::thread::spawn(this_thread)
            .join()
            .expect("the thread ran");
        assert_ne!(here, there);
    }
}
