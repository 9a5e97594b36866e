//! Every timing and batching knob of the engine and its two lanes, in one place.
//!
//! None of these keeps a promise: the bound, progress, cancellation, panics and fail-fast
//! hold for any value (each knob's safe range says where speed, not correctness, starts
//! to suffer). They trade CPU against latency on one machine kind and were measured on
//! a shared 2-core x86_64 virtual machine, at the commit named for each; the test or
//! benchmark named beside each one is what notices a bad value. Docs elsewhere refer to
//! a knob by its name, never by a copied value.
//!
//! The rules that keep the promises are not here: they are written at the top of
//! `async_lane/mod.rs` (slot states, the cancellation cutoff, `closed`, waking the
//! consumer before it waits) and in `engine.rs` (the bound, the refill rule that never
//! waits while nothing runs).

use std::time::Duration;

// --- The consumer (engine.rs) ---

/// How long the consumer spins (yields and looks again) for results before it waits,
/// on a multi-thread runtime, while recent waits were short.
///
/// Trades CPU for latency: waiting puts the consumer's thread to sleep, and the
/// result's arrival costs a wake-up from another thread, far more than a trivial job.
/// Measured at 0718fc0; safe range 0 (never spin: each result then pays a wake-up,
/// about 2x per item on `multi_thread`) to a few hundred µs (more only burns CPU).
/// Guarded by the `async_lane` benchmark (`multi_thread`) and `cpu_time`.
/// Never while the results last taken back came slowly (`Pace::Slow`): those follow
/// timers and I/O, and a spin after each burst of them only burns CPU.
pub(crate) const CONSUMER_LINGER: Duration = Duration::from_micros(100);

/// Looks a spin takes before it starts to read the clock: most spins end within them,
/// and a clock read costs about as much as a trivial job. Measured at e12c2b7 (in
/// instructions per item); safe range 0 to 64. Guarded by `benches/callgrind.sh`.
pub(crate) const FREE_LOOKS: u32 = 16;

/// A wait longer than this means results are slow to come: the consumer stops
/// spinning until a wait is short again. Measured at 0718fc0; safe range from
/// `CONSUMER_LINGER` to a few ms. Guarded by `cpu_time` (jobs that sleep) and the
/// `async_lane` benchmark.
pub(crate) const LONG_WAIT: Duration = Duration::from_micros(500);

/// Results still to yield that keep the consumer busy long enough (some µs) for a batch
/// it hands over to be worth a yield, so that the driver it woke (kept on this worker's
/// LIFO slot) runs at once rather than a standing-by one on another worker. Measured at
/// 11f5c46; safe range 16 to 1024. Guarded by the `growth` benchmark at limit 512 and
/// `a_long_poll_holds_back_no_other_job_with_the_consumer_on_a_worker`.
pub(crate) const BUSY_AHEAD: usize = 128;

/// Free places to wait for before pulling again, while results wait to leave and jobs
/// finish at their first poll: an eighth of `limit`, at least 8 places but never more
/// than half of `limit`. A batch saves a hand-over (and, on a multi-thread runtime, a
/// wake-up) per item, and costs no concurrency that matters while the consumer is
/// behind. Measured at 34fcf08, refined at df96e8c and 8e12ab0; any value from 1 to
/// `limit / 2` keeps the promises (the engine never waits for a batch while nothing
/// runs). Guarded by `quick_jobs_behind_a_burst_of_results_are_refilled_in_batches`,
/// `a_place_freed_while_no_job_runs_is_filled_at_once` and the `growth` benchmark.
pub(crate) fn refill_batch(limit: usize) -> usize {
    (limit / 8).max(8).min(limit / 2).max(1)
}

// --- The async lane's drivers (async_lane/) ---

/// Jobs a driver polls in one turn before it yields to the runtime, so other tasks on
/// its worker run. Measured at 34fcf08; safe range 8 to 256 (tokio's own budget, 128
/// units, also ends a turn). Guarded by the `async_lane` benchmark.
pub(crate) const POLLS_PER_TURN: usize = 64;

/// How long a standing-by driver stays awake after it last saw a job queued: a consumer
/// busy yielding results hands over new jobs within µs, and waking a parked driver on
/// another worker costs more than that. Not at all while results come slowly
/// (`Pace::Slow`): then it parks as soon as the queue is empty. Measured at 0718fc0; safe range 0 to a few
/// hundred µs (longer burns CPU on waiting work). Guarded by the `async_lane` benchmark
/// (`multi_thread`) and `cpu_time`.
pub(crate) const DRIVER_LINGER: Duration = Duration::from_micros(100);

/// How long a job may wait at the front of the queue, while another driver is active,
/// before a standing-by driver takes it: longer means the active driver is busy in a
/// long poll. Measured at ef3ba11; safe range 5 to 100 µs (shorter moves quick jobs
/// across threads, longer delays jobs behind a long poll). Guarded by
/// `a_long_poll_holds_back_no_other_job` and the `head_of_line` benchmark.
pub(crate) const STANDBY_AGE: Duration = Duration::from_micros(20);

/// How often a standing-by driver looks at the queue. Each look reads cache lines the
/// consumer and the active driver write, and each yield through tokio's scheduler
/// writes a word every worker shares: looking at every turn made each hand-off on the
/// consumer's worker pay cache misses. Measured at 95888c8; safe range 1 to 20 µs.
/// Guarded by the `interleaved` and `async_lane` benchmarks (`multi_thread`, limit 8).
pub(crate) const STANDBY_LOOK_EVERY: Duration = Duration::from_micros(5);

/// The longest in-place spin of a standing-by driver between two trips through tokio's
/// scheduler, as a power of two of `spin_loop` hints (crossbeam's `Backoff` spin limit):
/// 64 hints, some 1.5–2.5 µs on the benchmark machine. Its spins grow from one hint,
/// doubling, to this cap while it stands by (as crossbeam's `Backoff` does), each
/// followed by a yield; it parks once it stops standing by.
/// Bounded by construction: no wait in place that only the clock ends. Measured at
/// cd935d1 (`cpu_time`, `interleaved`); safe range 0 to 8. Guarded by the `plan_turn`
/// unit tests, `cpu_time` and `interleaved` (`multi_thread`, limit 8).
pub(crate) const SNOOZE_LIMIT: u32 = 6;

/// A standing-by driver polled again within this long of its yield had, as a rule, a
/// worker with nothing else to run. Measured at 95888c8; safe range 0.5 to 5 µs.
/// Guarded by the `plan_turn` unit tests and the `interleaved` benchmark.
pub(crate) const BACK_AT_ONCE: Duration = Duration::from_micros(1);

// --- The blocking lane (blocking_lane.rs) ---

/// How long an idle drain loop waits for its next job before its thread is released.
/// Without it every job pays a `spawn_blocking`, and CPU chunks lose about a quarter of
/// their speedup; while a loop lingers, tokio's paused clock cannot auto-advance.
/// Measured at 34fcf08; safe range 50 µs to a few ms. Guarded by the `blocking_lane`
/// benchmark (speedup over chunks against rayon).
pub(crate) const BLOCKING_LINGER: Duration = Duration::from_micros(250);
