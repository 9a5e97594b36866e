//! The consumer's handle on the async lane: slots given jobs, batches handed over,
//! results taken back, cancellation and shutdown.
//!
//! Owns: [`AsyncLane`] and its [`Lane`] impl, the list of free slots, the spawning of
//! the drivers at the first hand-over.

use std::future::Future;
use std::mem;
use std::sync::Arc;
use std::task::Waker;

use super::driver::Driver;
use super::lock;
use super::run_queue::{wake, Role};
use super::shared::Shared;
use super::slot::Slot;
use super::standby::this_thread;
use super::sync::Ordering;
use crate::concurrent::{drop_contained, Handover, IsFailure, Lane, Outcome, Pace, Workers};

/// The consumer's handle on the async lane.
pub(crate) struct AsyncLane<Fut: Future> {
    shared: Arc<Shared<Fut>>,
    limit: usize,
    handle: Option<tokio::runtime::Handle>,
    /// Drivers still to spawn at the next flush: about one per runtime worker.
    unspawned_drivers: usize,
    /// Worker threads of the runtime.
    workers: usize,
    is_failure: Option<IsFailure<Fut::Output>>,
    ordered: bool,
    free: Vec<Arc<Slot<Fut>>>,
    /// Jobs started since the last flush (each `Some`, in the run queue's element type).
    starting: Vec<Option<Arc<Slot<Fut>>>>,
    /// Finished slots taken from the exchange, swapped with it to reuse both buffers.
    taken: Vec<Arc<Slot<Fut>>>,
    /// Hand-overs so far: a result whose job was handed over in one of the last two
    /// follows the hand-overs closely, whether or not its job waited (see [`Pace`]).
    flushes: u64,
}

impl<Fut: Future> AsyncLane<Fut> {
    pub(crate) fn new(limit: usize) -> Self {
        AsyncLane {
            shared: Arc::new(Shared::new()),
            limit,
            handle: None,
            unspawned_drivers: 0,
            workers: 1,
            is_failure: None,
            ordered: true,
            free: Vec::new(),
            starting: Vec::new(),
            taken: Vec::new(),
            flushes: 0,
        }
    }

    fn new_slot(&mut self) -> Arc<Slot<Fut>> {
        let slot = Arc::new(Slot::new(Arc::clone(&self.shared)));
        lock(&self.shared.slots).push(Arc::clone(&slot));
        slot
    }

    /// Whether a driver may stand by: on a runtime with more than one worker. What only a
    /// standing-by driver reads, the consumer skips otherwise.
    fn standby_enabled(&self) -> bool {
        self.workers > 1
    }

    /// Spawns the drivers, at the first hand-over: about one per runtime worker.
    fn spawn_drivers(&mut self)
    where
        Fut: Send + 'static,
        Fut::Output: Send + 'static,
    {
        let handle = self
            .handle
            .as_ref()
            .expect("flowgate: the lane is bound at the first poll");
        let paced = self.unspawned_drivers > 1;
        while self.unspawned_drivers > 0 {
            self.unspawned_drivers -= 1;
            handle.spawn(Driver::new(
                Arc::clone(&self.shared),
                self.unspawned_drivers,
                self.is_failure.unwrap_or(|outcome| outcome.is_err()),
                self.ordered,
                paced,
                self.workers > 1,
            ));
        }
    }

    /// Before the consumer waits: every queued job gets a driver, so that a job busy in a
    /// long poll holds back no other job (the parked drivers run on other workers).
    ///
    /// With one worker no driver stands by, and a queued job always has an active driver
    /// already (every push wakes one if none is, and an active driver parks only with an
    /// empty queue): nothing to do.
    fn wake_for_queued(&self) {
        if !self.standby_enabled() {
            return;
        }
        let mut run = lock(&self.shared.run);
        let (active, standby) = self.shared.wake_for_work(&mut run);
        drop(run);
        wake(active, standby);
    }

    /// Cancels every job, stops the drivers and breaks the reference cycles between the
    /// shared state and the slots. Idempotent.
    fn shut(&mut self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.cancel_from(0);
        let slots = mem::take(&mut *lock(&self.shared.slots));
        for slot in &slots {
            drop_contained(slot.take_output());
        }
        let (queued, parked) = {
            let mut run = lock(&self.shared.run);
            let queued = mem::take(&mut run.queue);
            self.shared.watch_front(&mut run);
            (queued, mem::take(&mut run.parked))
        };
        drop(queued);
        for (_, waker) in parked {
            waker.wake();
        }
        let (finished, consumer) = {
            let mut exchange = lock(&self.shared.exchange);
            (mem::take(&mut exchange.finished), exchange.consumer.take())
        };
        drop(consumer);
        drop(finished);
    }
}

/// What the loom models drive by hand: the lane bound to no runtime, with one driver
/// task the model runs itself (on one worker: no standby, no clock).
#[cfg(all(test, loom))]
impl<Fut> AsyncLane<Fut>
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    pub(super) fn bind_for_model(&mut self, ordered: bool) -> Driver<Fut> {
        self.is_failure = Some(|outcome| outcome.is_err());
        self.ordered = ordered;
        lock(&self.shared.run).woken_as = vec![Role::Idle];
        Driver::new(
            Arc::clone(&self.shared),
            0,
            |_| false,
            ordered,
            false,
            false,
        )
    }

    pub(super) fn shared(&self) -> &Arc<Shared<Fut>> {
        &self.shared
    }
}

impl<Fut> Lane for AsyncLane<Fut>
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    type Job = Fut;
    type Out = Fut::Output;
    const WORKERS: Workers = Workers::RuntimeTasks;

    fn observe(&mut self, core: Arc<crate::stats::Core>) {
        let _ = self.shared.stats.set(core);
    }

    #[cfg(feature = "tracing")]
    fn trace(&mut self, span: &tracing::Span) {
        let _ = self.shared.span.set(span.clone());
    }

    fn bind(
        &mut self,
        handle: &tokio::runtime::Handle,
        is_failure: fn(&Outcome<Fut::Output>) -> bool,
        ordered: bool,
    ) {
        self.is_failure = Some(is_failure);
        self.ordered = ordered;
        self.workers = handle.metrics().num_workers();
        self.unspawned_drivers = self.workers.clamp(1, self.limit);
        self.handle = Some(handle.clone());
        let mut run = lock(&self.shared.run);
        run.woken_as = vec![Role::Idle; self.unspawned_drivers];
        run.standby_enabled = self.standby_enabled();
    }

    fn start(&mut self, index: u64, job: Fut) {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => self.new_slot(),
        };
        {
            let mut cell = lock(&slot.cell);
            cell.index = index;
            cell.waited = false;
            cell.flush = self.flushes + 1;
            let future = cell
                .future
                .as_mut()
                .expect("flowgate: a free slot keeps its box");
            future.as_mut().set(Some(job));
        }
        slot.state.to_scheduled();
        self.starting.push(Some(slot));
    }

    fn flush(&mut self) -> Handover {
        if self.starting.is_empty() {
            return Handover::Nothing;
        }
        self.flushes += 1;
        if self.standby_enabled() {
            // For a driver standing by: whether it runs beside the consumer.
            let consumer_thread = &self.shared.watch.consumer_thread;
            let here = this_thread();
            if consumer_thread.load(Ordering::Relaxed) != here {
                consumer_thread.store(here, Ordering::Relaxed);
            }
        }
        let mut run = lock(&self.shared.run);
        if self.shared.is_closed() {
            return Handover::Nothing;
        }
        self.shared.push(&mut run, &mut self.starting);
        // An active driver takes the whole batch, and one standing by takes what waits
        // behind a long poll; a parked driver is woken only for a role nobody holds, so
        // a stream of batches of trivial jobs costs no wake-up at all.
        let watched = run.standby > 0;
        let (active, standby) = self.shared.wake_for_work(&mut run);
        drop(run);
        // A driver woken from here sits in this worker's LIFO slot until the consumer's
        // task yields; with a driver standing by (on another worker, as a rule), jobs
        // never wait long for that. The engine decides whether to yield.
        let woke = active.is_some() || standby.is_some();
        if woke {
            wake(active, standby);
        }
        if self.unspawned_drivers > 0 {
            self.spawn_drivers();
        }
        Handover::ToDrivers {
            woke_unwatched: woke && !watched,
        }
    }

    fn failure_waiting(&self) -> bool {
        self.shared.failure_handed.load(Ordering::Acquire)
    }

    fn runtime_gone(&self) -> bool {
        self.shared.runtime_gone.load(Ordering::Acquire)
    }

    fn collect(
        &mut self,
        into: &mut Vec<(u64, Outcome<Fut::Output>)>,
        waker: Option<&Waker>,
    ) -> Pace {
        // Written only when set: a driver standing by reads words on the same cache line.
        if self.shared.failure_handed.load(Ordering::Acquire) {
            self.shared.failure_handed.store(false, Ordering::Release);
        }
        {
            let mut exchange = lock(&self.shared.exchange);
            mem::swap(&mut exchange.finished, &mut self.taken);
            // Written only when it changes: a driver standing by on another core reads it
            // (with one worker, none stands by).
            let waiting = self.taken.is_empty() && waker.is_some();
            if self.standby_enabled()
                && self.shared.consumer_waiting.load(Ordering::Relaxed) != waiting
            {
                self.shared
                    .consumer_waiting
                    .store(waiting, Ordering::Relaxed);
            }
            if self.taken.is_empty() {
                if let Some(waker) = waker {
                    // A waker replaced is dropped after the lock: a waker is user code.
                    let replaced = match &exchange.consumer {
                        Some(current) if current.will_wake(waker) => None,
                        _ => exchange.consumer.replace(waker.clone()),
                    };
                    drop(exchange);
                    drop(replaced);
                    self.wake_for_queued();
                }
                return Pace::FirstPoll;
            }
        }
        let (mut waited, mut recent) = (false, false);
        for slot in &self.taken {
            let (index, output) = {
                let mut cell = lock(&slot.cell);
                waited |= cell.waited;
                recent |= cell.flush + 1 >= self.flushes;
                (cell.index, cell.output.take())
            };
            if let Some(output) = output {
                into.push((index, output));
            }
        }
        self.free.append(&mut self.taken);
        let pace = match (waited, recent) {
            (false, _) => Pace::FirstPoll,
            (true, true) => Pace::Waited,
            (true, false) => Pace::Slow,
        };
        // For a driver standing by (see `Driver::jobs_due`); written only when it
        // changes, and only where one may stand by.
        let slow = &self.shared.results_slow;
        if self.standby_enabled() && slow.load(Ordering::Relaxed) != (pace == Pace::Slow) {
            slow.store(pace == Pace::Slow, Ordering::Relaxed);
        }
        pace
    }

    fn cancel_from(&mut self, index: u64) {
        self.shared.cancel_from(index);
    }

    fn close(&mut self) {
        self.shut();
        self.starting.clear();
        self.free.clear();
        self.taken.clear();
    }
}

impl<Fut: Future> Drop for AsyncLane<Fut> {
    fn drop(&mut self) {
        self.shut();
    }
}
