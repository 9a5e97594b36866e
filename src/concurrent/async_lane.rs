//! The async lane: a small executor inside the engine.
//!
//! Each running job sits in a reusable [`Slot`] that is its own waker. Waking a job puts
//! its slot on one shared run queue; a few driver tasks (about one per runtime worker,
//! never more than `limit`) pop slots and poll them one at a time, so a job busy in a long
//! poll holds back only its own driver. Slots are reused, and so is the box each one keeps
//! its future in: nothing is allocated per item. The consumer hands jobs over and takes
//! results back in batches, each with one wake-up, and no lock is held while user code
//! runs.

use std::collections::VecDeque;
use std::future::Future;
use std::mem;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use super::{Lane, Outcome};

/// Driver polls per turn before it yields to the runtime.
const POLLS_PER_TURN: usize = 64;
/// How long a driver with an empty queue stays awake while the consumer is busy.
const DRIVER_LINGER: std::time::Duration = std::time::Duration::from_micros(100);

// A slot's life: IDLE (waiting for a wake) -> SCHEDULED (on the run queue) -> RUNNING
// (a driver polls it) -> IDLE again, or DONE (finished or cancelled; free for reuse).
// A wake during a poll turns RUNNING into NOTIFIED, and the driver queues it again.
const IDLE: u8 = 0;
const SCHEDULED: u8 = 1;
const RUNNING: u8 = 2;
const NOTIFIED: u8 = 3;
const DONE: u8 = 4;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // User code never runs under these locks, so a poisoned one still holds consistent data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where a job's future lives. The box is kept across jobs (`Pin::set` replaces its
/// contents in place), and is lent to a driver while it polls.
type FutureBox<Fut> = Pin<Box<Option<Fut>>>;

struct Slot<Fut: Future> {
    shared: Arc<Shared<Fut>>,
    state: AtomicU8,
    cell: Mutex<Cell<Fut>>,
}

struct Cell<Fut: Future> {
    /// `None` while a driver is polling the future (or after a cancellation took it).
    future: Option<FutureBox<Fut>>,
    index: u64,
    output: Option<Outcome<Fut::Output>>,
}

struct Shared<Fut: Future> {
    run: Mutex<RunQueue<Fut>>,
    exchange: Mutex<Exchange<Fut>>,
    /// Jobs at this position or later are cancelled.
    cutoff: AtomicU64,
    /// Set first when the lane shuts; read under the run queue's and the exchange's
    /// locks, which the shutdown takes after setting it, so nothing is queued or
    /// handed over once they are emptied.
    closed: AtomicBool,
    /// Set when a failure was handed over and the consumer has not collected since.
    failure_handed: AtomicBool,
    /// Set while the consumer waits for a result (it registered its waker).
    consumer_waiting: AtomicBool,
    /// Counts wake-ups of parked drivers, so a driver can tell it woke one itself.
    helper_wakes: AtomicUsize,
}

struct RunQueue<Fut: Future> {
    queue: VecDeque<Arc<Slot<Fut>>>,
    /// Parked drivers, by driver id.
    parked: Vec<(usize, Waker)>,
    /// Drivers spawned.
    drivers: usize,
    /// Drivers awake with an empty queue, about to look at it again: a job queued now
    /// needs no wake-up.
    searching: usize,
}

struct Exchange<Fut: Future> {
    finished: Vec<Arc<Slot<Fut>>>,
    consumer: Option<Waker>,
}

impl<Fut: Future> Shared<Fut> {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Puts a slot on the run queue and wakes a parked driver, if any.
    fn schedule(&self, slot: Arc<Slot<Fut>>) {
        let mut run = lock(&self.run);
        if self.is_closed() {
            return;
        }
        run.queue.push_back(slot);
        let parked = if run.searching == 0 {
            run.parked.pop()
        } else {
            None
        };
        drop(run);
        if let Some((_, waker)) = parked {
            self.helper_wakes.fetch_add(1, Ordering::Relaxed);
            waker.wake();
        }
    }

    fn is_cancelled(&self, index: u64) -> bool {
        index >= self.cutoff.load(Ordering::Acquire)
    }
}

impl<Fut: Future> Wake for Slot<Fut> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let next = match state {
                IDLE => SCHEDULED,
                RUNNING => NOTIFIED,
                _ => return,
            };
            match self
                .state
                .compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(actual) => state = actual,
            }
        }
        if state == IDLE {
            self.shared.schedule(Arc::clone(self));
        }
    }
}

/// A driver task: pops scheduled slots and polls them, one at a time.
struct Driver<Fut: Future> {
    shared: Arc<Shared<Fut>>,
    id: usize,
    parked: bool,
    finished: Vec<Arc<Slot<Fut>>>,
    /// Awake with an empty queue, looking for work (counted in `RunQueue::searching`).
    searching: bool,
    is_failure: fn(&Fut::Output) -> bool,
    ordered: bool,
    /// A failure is among the finished results not yet handed over.
    failed: bool,
    /// Since when the queue has been empty, while lingering.
    idle_since: Option<std::time::Instant>,
    /// Whether to linger at all: only when other workers can run the consumer.
    may_linger: bool,
}

impl<Fut> Driver<Fut>
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    /// Hands finished slots to the consumer in one batch, with one wake-up.
    fn hand_over(&mut self) {
        if self.finished.is_empty() {
            return;
        }
        let mut exchange = lock(&self.shared.exchange);
        if self.shared.is_closed() {
            drop(exchange);
            for slot in self.finished.drain(..) {
                drop(take_output(&slot));
            }
            return;
        }
        exchange.finished.append(&mut self.finished);
        let consumer = exchange.consumer.take();
        drop(exchange);
        if mem::take(&mut self.failed) {
            self.shared.failure_handed.store(true, Ordering::Release);
        }
        if let Some(waker) = consumer {
            waker.wake();
        }
    }

    fn stop_searching(&mut self, run: &mut RunQueue<Fut>) {
        if self.searching {
            self.searching = false;
            run.searching -= 1;
        }
    }

    /// Whether to stay awake a little longer with an empty queue, instead of parking.
    ///
    /// A consumer that is busy yielding results will hand over new jobs within
    /// microseconds; waking a parked driver on another worker costs far more than that.
    /// A consumer waiting for results hands over nothing until one comes, so then the
    /// driver parks at once. The linger is measured in real time: tokio's paused clock
    /// does not advance while a task keeps yielding.
    fn lingers(&mut self) -> bool {
        if !self.may_linger || self.shared.consumer_waiting.load(Ordering::Relaxed) {
            return false;
        }
        let now = std::time::Instant::now();
        let since = *self.idle_since.get_or_insert(now);
        now.duration_since(since) < DRIVER_LINGER
    }

    /// Polls one job. Returns the slot when it finished.
    fn run(&mut self, slot: Arc<Slot<Fut>>) {
        slot.state.store(RUNNING, Ordering::Release);
        let (mut future, index) = {
            let mut cell = lock(&slot.cell);
            match cell.future.take() {
                Some(future) => (future, cell.index),
                None => {
                    drop(cell);
                    slot.state.store(DONE, Ordering::Release);
                    return;
                }
            }
        };
        if self.shared.is_cancelled(index) {
            drop_job(&mut future);
            lock(&slot.cell).future = Some(future);
            slot.state.store(DONE, Ordering::Release);
            return;
        }
        let waker = Waker::from(Arc::clone(&slot));
        let mut cx = Context::from_waker(&waker);
        let polled = catch_unwind(AssertUnwindSafe(|| match future.as_mut().as_pin_mut() {
            Some(job) => job.poll(&mut cx),
            None => Poll::Pending,
        }));
        let output = match polled {
            Ok(Poll::Pending) => {
                self.park_job(&slot, future, index);
                return;
            }
            Ok(Poll::Ready(output)) => {
                self.failed |= (self.is_failure)(&output);
                Ok(output)
            }
            Err(payload) => {
                self.failed = true;
                Err(payload)
            }
        };
        if self.failed {
            // Fail fast: later jobs stop now, not when the consumer next looks.
            let from = super::cancel_from_after_failure(index, self.ordered);
            self.shared.cutoff.fetch_min(from, Ordering::AcqRel);
        }
        drop_job(&mut future);
        {
            let mut cell = lock(&slot.cell);
            cell.future = Some(future);
            cell.output = Some(output);
        }
        slot.state.store(DONE, Ordering::Release);
        self.finished.push(slot);
    }

    /// Returns a pending job's future to its slot, or drops it if it was cancelled
    /// meanwhile; queues the job again if it was woken during the poll.
    fn park_job(&mut self, slot: &Arc<Slot<Fut>>, mut future: FutureBox<Fut>, index: u64) {
        let mut cell = lock(&slot.cell);
        // Checked under the cell's lock: a cancellation sweeps cells under the same lock
        // after setting the cutoff, so the job is dropped by one side or the other.
        if self.shared.is_cancelled(index) {
            drop(cell);
            drop_job(&mut future);
            lock(&slot.cell).future = Some(future);
            slot.state.store(DONE, Ordering::Release);
            return;
        }
        cell.future = Some(future);
        drop(cell);
        if slot
            .state
            .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Woken while it ran (NOTIFIED): it goes to the back of the queue.
            slot.state.store(SCHEDULED, Ordering::Release);
            self.shared.schedule(Arc::clone(slot));
        }
    }
}

/// Takes a finished job's output out of its slot, to be dropped outside the lock: an
/// output holding its own slot's waker would otherwise keep the slot alive forever.
fn take_output<Fut: Future>(slot: &Slot<Fut>) -> Option<Outcome<Fut::Output>> {
    lock(&slot.cell).output.take()
}

/// Drops a job's future in place (its box is kept for the next job). A panic in the
/// future's destructor is contained: the job's own result or panic is what counts.
fn drop_job<Fut>(future: &mut FutureBox<Fut>) {
    let _ = catch_unwind(AssertUnwindSafe(|| future.as_mut().set(None)));
}

impl<Fut> Future for Driver<Fut>
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let shared = Arc::clone(&this.shared);
        let mut polls = 0;
        loop {
            let slot = {
                let mut run = lock(&shared.run);
                if this.parked {
                    let id = this.id;
                    run.parked.retain(|(parked, _)| *parked != id);
                    this.parked = false;
                }
                if shared.is_closed() {
                    return Poll::Ready(());
                }
                match run.queue.pop_front() {
                    Some(slot) => {
                        this.stop_searching(&mut run);
                        // Jobs left behind get a driver of their own before this one
                        // starts a poll that may be long. The helper is woken into this
                        // worker's LIFO slot, which no other worker may steal, so this
                        // driver yields first and takes the job up on its next turn.
                        if !run.queue.is_empty() && run.searching == 0 {
                            if let Some((_, helper)) = run.parked.pop() {
                                run.queue.push_front(slot);
                                drop(run);
                                helper.wake();
                                cx.waker().wake_by_ref();
                                return Poll::Pending;
                            }
                        }
                        slot
                    }
                    // One driver at a time searches: more would only compete for cores
                    // with the consumer and with each other.
                    None if (this.searching || run.searching == 0) && this.lingers() => {
                        if !this.searching {
                            this.searching = true;
                            run.searching += 1;
                        }
                        drop(run);
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    None => {
                        this.stop_searching(&mut run);
                        run.parked.push((this.id, cx.waker().clone()));
                        this.parked = true;
                        this.idle_since = None;
                        return Poll::Pending;
                    }
                }
            };
            this.idle_since = None;
            let wakes_before = shared.helper_wakes.load(Ordering::Relaxed);
            this.run(slot);
            // A result never waits in a driver while it polls another job.
            this.hand_over();
            polls += 1;
            // A driver woken from inside this task sits in this worker's LIFO slot, where
            // no other worker can steal it: yield so that it runs while we are away.
            let woke_helper = shared.helper_wakes.load(Ordering::Relaxed) != wakes_before;
            if woke_helper || polls >= POLLS_PER_TURN || !tokio::task::coop::has_budget_remaining()
            {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    }
}

/// The consumer's handle on the async lane.
pub(crate) struct AsyncLane<Fut: Future> {
    shared: Arc<Shared<Fut>>,
    limit: usize,
    handle: Option<tokio::runtime::Handle>,
    /// Drivers still to spawn at the next flush: about one per runtime worker.
    unspawned_drivers: usize,
    /// Worker threads of the runtime.
    workers: usize,
    is_failure: Option<fn(&Fut::Output) -> bool>,
    ordered: bool,
    /// Every slot ever made (at most `limit`), for cancellation sweeps.
    slots: Vec<Arc<Slot<Fut>>>,
    free: Vec<Arc<Slot<Fut>>>,
    /// Jobs started since the last flush.
    starting: Vec<Arc<Slot<Fut>>>,
    /// Finished slots taken from the exchange, swapped with it to reuse both buffers.
    taken: Vec<Arc<Slot<Fut>>>,
}

impl<Fut: Future> AsyncLane<Fut> {
    pub(crate) fn new(limit: usize) -> Self {
        AsyncLane {
            shared: Arc::new(Shared {
                run: Mutex::new(RunQueue {
                    queue: VecDeque::new(),
                    parked: Vec::new(),
                    drivers: 0,
                    searching: 0,
                }),
                exchange: Mutex::new(Exchange {
                    finished: Vec::new(),
                    consumer: None,
                }),
                cutoff: AtomicU64::new(u64::MAX),
                closed: AtomicBool::new(false),
                consumer_waiting: AtomicBool::new(false),
                failure_handed: AtomicBool::new(false),
                helper_wakes: AtomicUsize::new(0),
            }),
            limit,
            handle: None,
            unspawned_drivers: 0,
            workers: 1,
            is_failure: None,
            ordered: true,
            slots: Vec::new(),
            free: Vec::new(),
            starting: Vec::new(),
            taken: Vec::new(),
        }
    }

    fn new_slot(&mut self) -> Arc<Slot<Fut>> {
        let slot = Arc::new(Slot {
            shared: Arc::clone(&self.shared),
            state: AtomicU8::new(DONE),
            cell: Mutex::new(Cell {
                future: Some(Box::pin(None)),
                index: 0,
                output: None,
            }),
        });
        self.slots.push(Arc::clone(&slot));
        slot
    }

    /// Drops the future of every job at `from` or later that is not being polled; a driver
    /// polling one drops it when its poll returns (see `Driver::park_job`).
    fn sweep(&self, from: u64) {
        for slot in &self.slots {
            let mut cell = lock(&slot.cell);
            if cell.index < from {
                continue;
            }
            let Some(future) = cell.future.as_mut() else {
                continue;
            };
            if future.is_none() {
                continue;
            }
            let mut taken = mem::replace(future, Box::pin(None));
            drop(cell);
            drop_job(&mut taken);
        }
    }

    /// Before the consumer waits: every queued job gets a driver, so that a job busy in a
    /// long poll holds back no other job (the parked drivers run on other workers).
    fn wake_for_queued(&self) {
        let mut run = lock(&self.shared.run);
        let wanted = run.queue.len().min(run.parked.len());
        for _ in 0..wanted {
            if let Some((_, waker)) = run.parked.pop() {
                waker.wake();
            }
        }
    }

    /// Cancels every job, stops the drivers and breaks the reference cycles between the
    /// shared state and the slots. Idempotent.
    fn shut(&mut self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.cutoff.store(0, Ordering::Release);
        self.sweep(0);
        for slot in &self.slots {
            drop(take_output(slot));
        }
        let (queued, parked) = {
            let mut run = lock(&self.shared.run);
            (mem::take(&mut run.queue), mem::take(&mut run.parked))
        };
        drop(queued);
        for (_, waker) in parked {
            waker.wake();
        }
        let finished = {
            let mut exchange = lock(&self.shared.exchange);
            exchange.consumer = None;
            mem::take(&mut exchange.finished)
        };
        drop(finished);
    }
}

impl<Fut> Lane for AsyncLane<Fut>
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    type Job = Fut;
    type Out = Fut::Output;

    fn bind(
        &mut self,
        handle: &tokio::runtime::Handle,
        is_failure: fn(&Fut::Output) -> bool,
        ordered: bool,
    ) {
        self.is_failure = Some(is_failure);
        self.ordered = ordered;
        self.workers = handle.metrics().num_workers();
        self.unspawned_drivers = self.workers.clamp(1, self.limit);
        self.handle = Some(handle.clone());
    }

    fn start(&mut self, index: u64, job: Fut) {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => self.new_slot(),
        };
        {
            let mut cell = lock(&slot.cell);
            cell.index = index;
            let future = cell
                .future
                .as_mut()
                .expect("flowgate: a free slot keeps its box");
            future.as_mut().set(Some(job));
        }
        slot.state.store(SCHEDULED, Ordering::Release);
        self.starting.push(slot);
    }

    fn flush(&mut self) -> bool {
        if self.starting.is_empty() {
            return false;
        }
        let handle = self
            .handle
            .as_ref()
            .expect("flowgate: the lane is bound at the first poll");
        let mut run = lock(&self.shared.run);
        if self.shared.is_closed() {
            return false;
        }
        run.queue.extend(self.starting.drain(..));
        let mut woke = false;
        // A driver that is awake and looking for work takes the whole batch. Otherwise
        // one parked driver is woken: the awake ones may be busy in long polls. More are
        // woken only if the consumer is about to wait (see `wake_for_queued`), so that a
        // batch of trivial jobs costs at most one wake-up.
        if run.searching == 0 {
            if let Some((_, waker)) = run.parked.pop() {
                // Driver wakers are tokio task wakers: waking them runs no user code.
                waker.wake();
                woke = true;
            }
        }
        drop(run);
        if self.unspawned_drivers > 0 {
            lock(&self.shared.run).drivers += self.unspawned_drivers;
        }
        while self.unspawned_drivers > 0 {
            self.unspawned_drivers -= 1;
            handle.spawn(Driver {
                shared: Arc::clone(&self.shared),
                id: self.unspawned_drivers,
                parked: false,
                finished: Vec::new(),
                searching: false,
                is_failure: self.is_failure.unwrap_or(|_| false),
                ordered: self.ordered,
                failed: false,
                idle_since: None,
                may_linger: self.workers > 1,
            });
        }
        woke && self.workers > 1
    }

    fn consumer_may_linger(&self) -> bool {
        true
    }

    fn failure_waiting(&self) -> bool {
        self.shared.failure_handed.load(Ordering::Acquire)
    }

    fn collect(&mut self, into: &mut Vec<(u64, Outcome<Fut::Output>)>, waker: Option<&Waker>) {
        self.shared.failure_handed.store(false, Ordering::Release);
        {
            let mut exchange = lock(&self.shared.exchange);
            mem::swap(&mut exchange.finished, &mut self.taken);
            let waiting = self.taken.is_empty() && waker.is_some();
            self.shared
                .consumer_waiting
                .store(waiting, Ordering::Relaxed);
            if self.taken.is_empty() {
                if let Some(waker) = waker {
                    match &exchange.consumer {
                        Some(current) if current.will_wake(waker) => {}
                        _ => exchange.consumer = Some(waker.clone()),
                    }
                    drop(exchange);
                    self.wake_for_queued();
                }
                return;
            }
        }
        for slot in self.taken.drain(..) {
            let (index, output) = {
                let mut cell = lock(&slot.cell);
                (cell.index, cell.output.take())
            };
            if let Some(output) = output {
                into.push((index, output));
            }
            self.free.push(slot);
        }
    }

    fn cancel_from(&mut self, index: u64) {
        self.shared.cutoff.fetch_min(index, Ordering::AcqRel);
        self.sweep(index);
    }

    fn close(&mut self) {
        self.shut();
        self.starting.clear();
        self.free.clear();
        self.taken.clear();
        self.slots.clear();
    }
}

impl<Fut: Future> Drop for AsyncLane<Fut> {
    fn drop(&mut self) {
        self.shut();
    }
}
