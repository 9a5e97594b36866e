//! Bounded concurrent maps: the stream types behind [`FlowExt`](crate::FlowExt) and
//! [`TryFlowExt`](crate::TryFlowExt).
//!
//! All eight are one machine: it pulls items from upstream while its bound has room,
//! runs each as a job, and lets the results leave in input order or as they finish.
//! Async jobs (the futures `f` returns) run on a small executor of driver tasks spawned
//! on the caller's runtime; blocking jobs run on short-lived loops in tokio's blocking
//! pool. See the methods of the extension traits for the rules and examples, and
//! `ARCHITECTURE.md` for how an item flows through the engine.

use std::any::Any;

mod async_lane;
mod blocking_lane;
mod engine;
mod guarded;
mod guarded_par;
mod keyed;
mod mappers;
mod policies;
mod reorder;
mod tuning;

mod map_concurrent;
mod map_concurrent_by_key;
mod map_concurrent_by_key_unordered;
mod map_concurrent_unordered;
mod par_map;
mod par_map_unordered;
mod try_map_concurrent;
mod try_map_concurrent_unordered;
mod try_par_map;
mod try_par_map_unordered;

pub use guarded::Guarded;
pub use guarded_par::GuardedPar;
pub use map_concurrent::MapConcurrent;
pub use map_concurrent_by_key::MapConcurrentByKey;
pub use map_concurrent_by_key_unordered::MapConcurrentByKeyUnordered;
pub use map_concurrent_unordered::MapConcurrentUnordered;
pub use par_map::ParMap;
pub use par_map_unordered::ParMapUnordered;
pub use try_map_concurrent::TryMapConcurrent;
pub use try_map_concurrent_unordered::TryMapConcurrentUnordered;
pub use try_par_map::TryParMap;
pub use try_par_map_unordered::TryParMapUnordered;

/// A caught panic, carried to the consumer as the item's result.
pub(crate) type Payload = Box<dyn Any + Send + 'static>;

/// The result of one job: its output, or the panic it raised.
pub(crate) type Outcome<T> = Result<T, Payload>;

/// What the consumer does with an item's input: start a job, or record a result at once
/// (a panic in the synchronous part of `f`).
pub(crate) enum Prepared<J, O> {
    Start(J),
    Done(Outcome<O>),
}

/// Tells which outcomes (outputs or panics) end the run: see [`Lane::bind`].
pub(crate) type IsFailure<O> = fn(&Outcome<O>) -> bool;

/// Turns upstream items into jobs for a lane. Lives in the consumer's stream struct.
pub(crate) trait Mapper<In> {
    /// What an attempt of the work takes: the item, or the `Ok` value of a `try_` item.
    type Input;
    type Job;
    type Out;
    /// Splits an upstream item into the work's input, or a result of its own (an
    /// upstream `Err` in the `try_` operators: no work to do).
    fn admit(item: In) -> Result<Self::Input, Self::Out>;
    /// Makes the job of one attempt (the first, or a retry).
    fn prepare(&mut self, input: Self::Input) -> Prepared<Self::Job, Self::Out>;
    /// Whether a finished output ends the stream (an `Err` in the `try_` operators).
    fn is_failure(out: &Self::Out) -> bool;

    /// Whether inputs may wait for one another before they start (the keyed operators:
    /// one job per key at a time). The engine then asks [`Mapper::gate`] before each
    /// start and tells [`Mapper::settled`] each final result.
    const GATED: bool = false;
    /// Whether the input of the item at `index` may start now: `Start`, or `Wait` (the
    /// mapper keeps it until [`Mapper::next_ready`] gives it back).
    #[inline]
    fn gate(&mut self, index: u64, input: Self::Input) -> Gated<Self::Input> {
        let _ = index;
        Gated::Start(input)
    }
    /// The item at `index` has its final result: whatever waited for it may start.
    #[inline]
    fn settled(&mut self, index: u64) {
        let _ = index;
    }
    /// An input that waited and may start now, oldest first.
    #[inline]
    fn next_ready(&mut self) -> Option<(u64, Self::Input)> {
        None
    }
    /// Whether inputs wait for their key (or are ready to start): the engine then takes
    /// finished results back at every turn, since each may free a key.
    #[inline]
    fn has_waiting(&self) -> bool {
        false
    }
    /// The stream has ended: drops every input still waiting.
    #[inline]
    fn clear(&mut self) {}
}

/// What [`Mapper::gate`] decides for an input.
pub(crate) enum Gated<I> {
    /// Start it now.
    Start(I),
    /// It waits (kept by the mapper).
    Wait,
    /// Deciding panicked (the key function): the item's result is that panic.
    Panicked(Payload),
}

/// What becomes of an attempt's outcome (see [`Settle`]).
pub(crate) enum Settled<I> {
    /// The item's final outcome, and whether it ends the run (fail fast, or a panic).
    Final(Outcome<I>, bool),
    /// The attempt failed and is tried again after this delay (on tokio's clock).
    Retry(std::time::Duration),
}

/// How attempts' outcomes become the stream's items: directly (the plain operators), or
/// through failure policies (timeouts, retries, keep-going, caught panics).
pub(crate) trait Settle<Input, Out> {
    /// What the stream yields.
    type Item;
    /// For the lane: the outcomes that end the run as soon as they happen (it then
    /// cancels the work they make useless, without waiting for the consumer).
    fn lane_failure(&self) -> fn(&Outcome<Out>) -> bool;
    /// An item was pulled and its first attempt is about to be prepared.
    fn admitted(&mut self, index: u64, input: &Input);
    /// An attempt of the item at `index` ended with `outcome`.
    fn settle(&mut self, index: u64, outcome: Outcome<Out>) -> Settled<Self::Item>;
    /// The item at `index` was rejected at admission (an upstream `Err`): no attempt ran.
    fn rejected(&mut self, index: u64, out: Out) -> (Outcome<Self::Item>, bool);
    /// The input of the next attempt of the item at `index`, after `Settled::Retry`.
    fn retry_input(&mut self, index: u64) -> Input;
    /// Whether a yielded item ends the stream.
    fn ends_run(&self, item: &Self::Item) -> bool;
    /// Whether a yielded item is a failure that does not end the run (one kept going
    /// past), for the statistics: failures that end it are told by [`Settle::ends_run`].
    fn is_failed(&self, item: &Self::Item) -> bool;
    /// For a yielded item that is a failure: its kind (`"error"`, `"timeout"`,
    /// `"panic"`) and the attempts made, for the `tracing` event.
    #[cfg(feature = "tracing")]
    fn failure_of(&self, item: &Self::Item) -> Option<(&'static str, u32)>;
}

/// The plain operators' settling: every outcome is final; failures are what the mapper
/// says (an `Err` of a `try_` operator) and panics.
pub(crate) struct Direct<O> {
    is_failure: fn(&O) -> bool,
    lane_failure: fn(&Outcome<O>) -> bool,
}

impl<O> Direct<O> {
    pub(crate) fn new<In, M: Mapper<In, Out = O>>() -> Self {
        Direct {
            is_failure: M::is_failure,
            lane_failure: outcome_fails::<In, M>,
        }
    }
}

/// A panic, or an output the mapper calls a failure.
fn outcome_fails<In, M: Mapper<In>>(outcome: &Outcome<M::Out>) -> bool {
    match outcome {
        Ok(out) => M::is_failure(out),
        Err(_) => true,
    }
}

impl<Input, O> Settle<Input, O> for Direct<O> {
    type Item = O;

    fn lane_failure(&self) -> fn(&Outcome<O>) -> bool {
        self.lane_failure
    }

    fn admitted(&mut self, _: u64, _: &Input) {}

    fn settle(&mut self, _: u64, outcome: Outcome<O>) -> Settled<O> {
        let failure = (self.lane_failure)(&outcome);
        Settled::Final(outcome, failure)
    }

    fn rejected(&mut self, _: u64, out: O) -> (Outcome<O>, bool) {
        let failure = (self.is_failure)(&out);
        (Ok(out), failure)
    }

    fn retry_input(&mut self, _: u64) -> Input {
        unreachable!("flowgate: the plain operators never retry")
    }

    fn ends_run(&self, item: &O) -> bool {
        (self.is_failure)(item)
    }

    #[inline]
    fn is_failed(&self, _: &O) -> bool {
        // Every failure of a plain operator ends the run.
        false
    }

    #[cfg(feature = "tracing")]
    fn failure_of(&self, item: &O) -> Option<(&'static str, u32)> {
        (self.is_failure)(item).then_some(("error", 1))
    }
}

/// Where a lane runs its jobs.
pub(crate) enum Workers {
    /// Tasks of the caller's runtime (the async lane): results come from runtime workers
    /// within microseconds, so a consumer on a multi-thread runtime may spin briefly for
    /// them instead of waiting at once.
    RuntimeTasks,
    /// Threads of tokio's blocking pool (the blocking lane): every core may be busy
    /// running jobs, so the consumer waits at once.
    BlockingThreads,
}

/// What [`Lane::flush`] did: the facts the engine needs to choose whether to yield.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Handover {
    /// Nothing was handed over.
    Nothing,
    /// Jobs went to threads off the runtime: nothing waits for the consumer's task.
    OffRuntime,
    /// Jobs went to the runtime's driver tasks. `woke_unwatched`: a driver was woken
    /// while no other stood by; woken from the consumer's task, it sits in this worker's
    /// LIFO slot (which no other worker may steal) until the consumer's task yields.
    ToDrivers { woke_unwatched: bool },
}

/// How the results a [`Lane::collect`] moved came back: facts from which the engine
/// chooses its refill batches and whether to spin for more results.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Pace {
    /// Every job finished at its first poll (CPU work, or nothing to wait for; every
    /// blocking job).
    FirstPoll,
    /// A job returned `Pending` at some poll (it waited for a timer, I/O or another
    /// task), but one of them was handed over in the last two hand-overs: results still
    /// follow the hand-overs closely.
    Waited,
    /// A job returned `Pending`, and none was handed over in the last two hand-overs:
    /// results come when timers fire or I/O is ready, not when workers get to them.
    Slow,
}

/// A way to run jobs: the async lane or the blocking lane.
///
/// All methods are called from the consumer's `poll_next` (or its `Drop`).
pub(crate) trait Lane {
    type Job;
    type Out;
    /// Where the jobs run.
    const WORKERS: Workers;
    /// Attaches the lane to the runtime it will run on; called once, at the first poll.
    /// `is_failure` tells which outcomes (outputs or panics) end the stream (see
    /// [`Lane::failure_waiting`]); when one is seen, the lane cancels at once the jobs
    /// after it (`ordered`) or all other jobs, without waiting for the consumer.
    fn bind(
        &mut self,
        handle: &tokio::runtime::Handle,
        is_failure: fn(&Outcome<Self::Out>) -> bool,
        ordered: bool,
    );
    /// Queues a job; it is handed over at the next [`Lane::flush`].
    fn start(&mut self, index: u64, job: Self::Job);
    /// Hands every queued job over to the workers, with one wake-up, and says what it
    /// did (see [`Handover`]).
    fn flush(&mut self) -> Handover;
    /// Moves finished results into `into`. With a waker and nothing finished, registers it
    /// to be woken when something finishes.
    ///
    /// Returns how the results moved came back (see [`Pace`]); `Pace::FirstPoll` when
    /// none did.
    fn collect(
        &mut self,
        into: &mut Vec<(u64, Outcome<Self::Out>)>,
        waker: Option<&std::task::Waker>,
    ) -> Pace;
    /// Whether a failure (a panic, or an output `is_failure` accepts) was handed over
    /// and not yet collected. An unordered exit must see it before it yields anything
    /// else, so the consumer collects at once when this is set.
    fn failure_waiting(&self) -> bool;
    /// Whether the runtime the lane was bound to has shut down while the lane was open:
    /// its workers (driver tasks, drain loops) died with it, or could not be started on
    /// it, so jobs handed over will never finish.
    fn runtime_gone(&self) -> bool;
    /// Cancels every job at position `index` or later: queued ones never start, running
    /// futures are dropped; their results are never reported.
    fn cancel_from(&mut self, index: u64);
    /// Cancels everything and releases the workers. Idempotent; also run on drop.
    fn close(&mut self);
    /// The stage's span: each job's polls are traced as `flowgate.job` spans under it.
    /// Called before [`Lane::bind`].
    #[cfg(feature = "tracing")]
    fn trace(&mut self, span: &tracing::Span);
    /// Counts the jobs' ends (and cancellations) in a stage's statistics, and ends them
    /// when the lane closes. Called before [`Lane::bind`], when statistics were asked
    /// for.
    fn observe(&mut self, core: std::sync::Arc<crate::stats::Core>);
}

/// Drops a value of the user's (an item, a future, an output, a panic payload) where no
/// consumer is there to receive a panic from its destructor: the panic is contained,
/// and the lane goes on (a worker never dies of it, a consumer waiting is still woken).
pub(crate) fn drop_contained<T>(value: T) {
    drop(std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        move || drop(value),
    )));
}

/// The first position to cancel once the job at `index` failed.
pub(crate) fn cancel_from_after_failure(index: u64, ordered: bool) -> u64 {
    if ordered {
        index.saturating_add(1)
    } else {
        0
    }
}

/// The panic raised when a stream's work died with the runtime it was started on.
#[track_caller]
pub(crate) fn runtime_gone(operator: &str) -> ! {
    panic!(
        "flowgate: `{operator}` was started on a tokio runtime that has shut down, and \
         its work was lost with it; a stream cannot move to another runtime once polled"
    )
}

/// The message of the panic raised when an operator is polled outside a tokio runtime.
#[track_caller]
pub(crate) fn current_runtime(operator: &str) -> tokio::runtime::Handle {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle,
        Err(_) => panic!(
            "flowgate: `{operator}` must be polled inside a tokio runtime \
             (it runs its work as tokio tasks); no tokio runtime is running on this thread"
        ),
    }
}
