//! The async lane: a small executor inside the engine.
//!
//! Each running job sits in a reusable [`Slot`] that is its own waker. Waking a job puts
//! its slot on one shared run queue; a few driver tasks (about one per runtime worker,
//! never more than `limit`) pop slots and poll them one at a time, so a job busy in a long
//! poll holds back only its own driver. Slots are reused, and so is the box each one keeps
//! its future in: nothing is allocated per item. The consumer hands jobs over and takes
//! results back in batches, each with one wake-up, and no lock is held while user code
//! runs.
//!
//! On a multi-thread runtime, quick jobs stay on one worker: the consumer's batch wakes a
//! parked driver into its own worker's LIFO slot, and that *active* driver takes the
//! whole batch. Another driver *stands by* on the other worker, looking every
//! `STANDBY_LOOK_EVERY` at two atomics that change about once per batch: it takes a job
//! only once the job's batch has stood `STANDBY_AGE` at the front of the queue under its
//! eyes (the active drivers are busy in long polls), so no job waits long behind a long
//! poll, and no thread sleeps and is woken per batch. Between looks it reads nothing the
//! consumer writes, and on an otherwise idle worker it waits for the look in place
//! rather than going through tokio's scheduler, so the hand-offs on the consumer's
//! worker pay almost no cache misses.
//! Queuing a job reads no clock: the driver standing by times the front itself.

use std::future::Future;
use std::mem;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use super::{Lane, Outcome, Payload};

/// Driver polls per turn before it yields to the runtime.
const POLLS_PER_TURN: usize = 64;
/// How long a standing-by driver stays awake after it last saw a job queued.
const DRIVER_LINGER: Duration = Duration::from_micros(100);
/// How long a job may wait in the queue, while another driver is active, before a
/// standing-by driver takes it: longer means the active driver is busy in a long poll.
const STANDBY_AGE: Duration = Duration::from_micros(20);
/// How often a standing-by driver looks at the queue.
///
/// Each look reads what the consumer and the active driver write about once per batch,
/// and each turn through tokio's scheduler (a yield) writes a word that every worker
/// shares: a standby that looked and yielded at every turn, some tens of nanoseconds
/// apart, would pull those cache lines to its core between each of their writes, and
/// every hand-off cycle on the consumer's worker would pay cache misses. So it looks
/// every `STANDBY_LOOK_EVERY`, and where it may (see [`plan_turn`]) waits for the look
/// in place rather than yielding.
const STANDBY_LOOK_EVERY: Duration = Duration::from_micros(5);
/// A standing-by driver polled again within this long of its yield had, as a rule, a
/// worker with nothing else to run.
const BACK_AT_ONCE: Duration = Duration::from_micros(1);

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
    /// The push that last queued the slot (see `RunQueue::pushes`), written under the run
    /// queue's lock as it is queued.
    queued_in: AtomicU64,
    cell: Mutex<Cell<Fut>>,
}

struct Cell<Fut: Future> {
    /// `None` while a driver is polling the future (or after a cancellation took it).
    future: Option<FutureBox<Fut>>,
    index: u64,
    output: Option<Outcome<Fut::Output>>,
    /// Whether the job returned `Pending` at some poll.
    waited: bool,
}

struct Shared<Fut: Future> {
    run: Mutex<RunQueue<Fut>>,
    /// What a standing-by driver watches, on a cache line of its own.
    watch: Watch,
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
    /// Every slot ever made (at most `limit`), for cancellation sweeps: the consumer's,
    /// and a driver's as soon as it sees a failure. Emptied at shutdown, which breaks
    /// the reference cycle through `Slot::shared`.
    slots: Mutex<Vec<Arc<Slot<Fut>>>>,
    /// Set when a driver task was dropped while the lane was open: only the runtime's
    /// shutdown does that, and the jobs it held are lost.
    runtime_gone: AtomicBool,
}

/// What a standing-by driver reads in its spin, without the run queue's lock. Written
/// under that lock, and only when the value changes (about once per batch of jobs, not
/// per job); kept on its own cache line so that the spinning reads do not slow the
/// driver and the consumer down on their fields.
#[repr(align(128))]
struct Watch {
    /// The push that queued the job at the front of the run queue, or 0 while the queue
    /// is empty. A standing-by driver times how long one push stays at the front.
    front_push: AtomicU64,
    /// `RunQueue::active`.
    active: AtomicUsize,
    /// The thread the consumer last handed jobs over from (`this_thread`), written only
    /// when it changes.
    consumer_thread: AtomicUsize,
}

/// What a driver does with the run queue.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    /// Parked, or polled without being woken for anything.
    Idle,
    /// Takes queued jobs at once.
    Active,
    /// Awake with nothing to do, watching the queue: takes a job once its batch has
    /// stood `STANDBY_AGE` at the front (the active drivers are busy in long polls), or
    /// at once when no driver is active. As a rule on another worker, and looking only
    /// every `STANDBY_LOOK_EVERY`, it costs the consumer's worker nothing, and no job
    /// waits behind a long poll much longer than `STANDBY_AGE + 2 * STANDBY_LOOK_EVERY`.
    Standby,
}

struct RunQueue<Fut: Future> {
    /// Scheduled slots.
    queue: Fifo<Arc<Slot<Fut>>>,
    /// Parked drivers, by driver id.
    parked: Vec<(usize, Waker)>,
    /// The role each driver was last woken with, by driver id: counted in `active` or
    /// `standby` from the moment of the wake-up.
    woken_as: Vec<Role>,
    /// Drivers taking jobs, or woken to.
    active: usize,
    /// Drivers standing by, or woken to.
    standby: usize,
    /// Pushes so far (a batch handed over is one push; a job woken is one).
    pushes: u64,
    /// The value of `Watch::front_push`, to write it only when it changes.
    front_push: u64,
    /// Whether drivers stand by: on multi-thread runtimes only (set at bind).
    standby_enabled: bool,
}

struct Exchange<Fut: Future> {
    finished: Vec<Arc<Slot<Fut>>>,
    consumer: Option<Waker>,
}

impl<Fut: Future> Shared<Fut> {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Publishes the push of the queue's front job, if it changed (only where a driver
    /// stands by to read it).
    fn watch_front(&self, run: &mut RunQueue<Fut>) {
        if !run.standby_enabled {
            return;
        }
        let front = run
            .queue
            .front()
            .map_or(0, |slot| slot.queued_in.load(Ordering::Relaxed));
        if front != run.front_push {
            run.front_push = front;
            self.watch.front_push.store(front, Ordering::Release);
        }
    }

    /// Queues `slots` in one push. Pushes are numbered only where a driver stands by to
    /// watch them.
    fn push(&self, run: &mut RunQueue<Fut>, slots: &mut Vec<Option<Arc<Slot<Fut>>>>) {
        number_push(run, slots.iter().flatten());
        run.queue.append(slots);
        self.watch_front(run);
    }

    fn pop(&self, run: &mut RunQueue<Fut>) -> Option<Arc<Slot<Fut>>> {
        let slot = run.queue.pop_front()?;
        self.watch_front(run);
        Some(slot)
    }

    /// Counts a driver into `role` (`joins`) or out of it, keeping `Watch::active` in
    /// step with `RunQueue::active`.
    fn count(&self, run: &mut RunQueue<Fut>, role: Role, joins: bool) {
        match role {
            Role::Active => {
                run.active = if joins {
                    run.active + 1
                } else {
                    run.active - 1
                };
                self.watch.active.store(run.active, Ordering::Relaxed);
            }
            Role::Standby => {
                run.standby = if joins {
                    run.standby + 1
                } else {
                    run.standby - 1
                };
            }
            Role::Idle => {}
        }
    }

    /// Wakes a parked driver with `role`, counting it at once. Returns its waker, to be
    /// woken once the lock is released.
    fn unpark(&self, run: &mut RunQueue<Fut>, role: Role) -> Option<Waker> {
        let (id, waker) = run.parked.pop()?;
        run.woken_as[id] = role;
        self.count(run, role, true);
        Some(waker)
    }

    /// After jobs were queued: makes sure a driver takes them at once, and, on a
    /// multi-thread runtime, that one stands by if the active ones may be busy in long
    /// polls. (A driver woken now to take the jobs wakes one to stand by itself, if it
    /// leaves jobs behind.) At most two wake-ups; none while both roles are held.
    fn wake_for_work(&self, run: &mut RunQueue<Fut>) -> (Option<Waker>, Option<Waker>) {
        if run.queue.is_empty() {
            return (None, None);
        }
        if run.active == 0 {
            return (self.unpark(run, Role::Active), None);
        }
        let standby = if run.standby_enabled && run.standby == 0 {
            self.unpark(run, Role::Standby)
        } else {
            None
        };
        (None, standby)
    }

    /// Puts a woken job on the run queue and wakes a driver for it, if needed.
    fn schedule(&self, slot: Arc<Slot<Fut>>) {
        let mut run = lock(&self.run);
        if self.is_closed() {
            return;
        }
        number_push(&mut run, [&slot]);
        run.queue.push_back(slot);
        self.watch_front(&mut run);
        let (active, standby) = self.wake_for_work(&mut run);
        drop(run);
        if active.is_some() || standby.is_some() {
            self.helper_wakes.fetch_add(1, Ordering::Relaxed);
        }
        wake(active, standby);
    }

    fn is_cancelled(&self, index: u64) -> bool {
        index >= self.cutoff.load(Ordering::Acquire)
    }

    /// Cancels every job at `from` or later: the cutoff first, so that no driver claims
    /// one of them from now on, then a sweep that drops the futures not being polled (a
    /// driver polling one drops it when its poll returns, see `Driver::park_job`).
    /// Runs no user code under a lock: each future is dropped after its cell's lock is
    /// released, and a panic in its destructor is contained (the failure or the drop
    /// that cancelled it is what the consumer sees).
    fn cancel_from(&self, from: u64) {
        self.cutoff.fetch_min(from, Ordering::AcqRel);
        let slots = lock(&self.slots).clone();
        for slot in slots {
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
            drop(drop_job(&mut taken));
        }
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
    /// What it does with the queue (counted in `RunQueue` under this role).
    role: Role,
    is_failure: fn(&Fut::Output) -> bool,
    ordered: bool,
    /// A failure is among the finished results not yet handed over.
    failed: bool,
    /// While standing by: since when it has seen the queue empty.
    idle_since: Option<Instant>,
    /// While standing by: the push it saw at the front of the queue, and since when.
    front_seen: Option<(u64, Instant)>,
    /// While standing by: when it last looked at the queue.
    looked_at: Option<Instant>,
    /// While standing by: when it last yielded to the runtime.
    yielded_at: Option<Instant>,
    /// While standing by: whether, at its last look, it ran on the consumer's thread.
    beside_consumer: bool,
    /// Whether it looks only every `STANDBY_LOOK_EVERY` while standing by: where it has
    /// a sibling. Jobs queued while no driver is active wake a parked one, so only a
    /// lone driver must see them itself, at once.
    paced: bool,
    /// Whether the runtime has other workers (which may run a task this one wakes).
    other_workers: bool,
}

impl<Fut> Driver<Fut>
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    /// Hands finished slots to the consumer in one batch, with one wake-up. Returns
    /// whether it woke the consumer.
    fn hand_over(&mut self) -> bool {
        if self.finished.is_empty() {
            return false;
        }
        let mut exchange = lock(&self.shared.exchange);
        if self.shared.is_closed() {
            drop(exchange);
            for slot in self.finished.drain(..) {
                drop_contained(take_output(&slot));
            }
            return false;
        }
        exchange.finished.append(&mut self.finished);
        let consumer = exchange.consumer.take();
        drop(exchange);
        if mem::take(&mut self.failed) {
            self.shared.failure_handed.store(true, Ordering::Release);
        }
        match consumer {
            Some(waker) => {
                waker.wake();
                true
            }
            None => false,
        }
    }

    /// Changes role, keeping the counts of `run` in step.
    fn set_role(&mut self, run: &mut RunQueue<Fut>, role: Role) {
        if self.role == role {
            return;
        }
        self.shared.count(run, self.role, false);
        self.shared.count(run, role, true);
        self.role = role;
    }

    /// Whether the jobs of `front` (a push, 0 for none) have waited `STANDBY_AGE` at the
    /// front of the queue, as far as this driver has watched: timed from when it first
    /// saw that push there, so pushing jobs costs no clock reading.
    fn has_waited(&mut self, front: u64) -> bool {
        if front == 0 {
            return false;
        }
        let now = Instant::now();
        match self.front_seen {
            Some((push, since)) if push == front => now.duration_since(since) >= STANDBY_AGE,
            _ => {
                self.front_seen = Some((front, now));
                false
            }
        }
    }

    /// Yields to the runtime while standing by, noting when (see [`plan_turn`]).
    fn yield_standing(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<()> {
        self.yielded_at = Some(now);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Whether to go on standing by, given whether a job is queued now.
    ///
    /// A standing-by driver stays while jobs keep being queued, and for `DRIVER_LINGER`
    /// after the last one: a consumer busy yielding results will hand over new jobs
    /// within microseconds, and waking a parked driver on another worker costs far more
    /// than that. A consumer waiting for results hands over nothing until one comes
    /// (and a job woken meanwhile wakes a driver), so then it parks at once. Measured in
    /// real time: tokio's paused clock does not advance while a task keeps yielding.
    fn keeps_standing(&mut self, queued: bool) -> bool {
        if queued {
            self.idle_since = None;
            return true;
        }
        if self.shared.consumer_waiting.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        let since = *self.idle_since.get_or_insert(now);
        now.duration_since(since) < DRIVER_LINGER
    }

    /// Polls one job. Returns the slot when it finished.
    fn run(&mut self, slot: Arc<Slot<Fut>>) {
        slot.state.store(RUNNING, Ordering::Release);
        // The claim: the future is taken and the cutoff checked under the cell's lock,
        // the lock a cancellation sweeps under after it moved the cutoff. So a job is
        // either claimed before its cancellation (it is polled, and dropped once its
        // poll returns) or dropped by the sweep, never polled after it.
        let (mut future, index) = {
            let mut cell = lock(&slot.cell);
            let cancelled = self.shared.is_cancelled(cell.index);
            match cell.future.as_mut() {
                Some(future) if cancelled && future.is_some() => {
                    let mut taken = mem::replace(future, Box::pin(None));
                    drop(cell);
                    drop(drop_job(&mut taken));
                    slot.state.store(DONE, Ordering::Release);
                    return;
                }
                Some(_) if !cancelled => {
                    let future = cell.future.take().expect("matched as present");
                    (future, cell.index)
                }
                _ => {
                    drop(cell);
                    slot.state.store(DONE, Ordering::Release);
                    return;
                }
            }
        };
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
            Ok(Poll::Ready(output)) => match drop_job(&mut future) {
                // A panic in the finished future's destructor is that job's panic.
                Some(payload) => {
                    drop_contained(output);
                    Err(payload)
                }
                None => Ok(output),
            },
            Err(payload) => {
                drop(drop_job(&mut future));
                Err(payload)
            }
        };
        let failed = match &output {
            Ok(output) => (self.is_failure)(output),
            Err(_) => true,
        };
        if failed {
            // Fail fast: later jobs are dropped now, not when the consumer next looks.
            self.failed = true;
            let from = super::cancel_from_after_failure(index, self.ordered);
            self.shared.cancel_from(from);
        }
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
            drop(drop_job(&mut future));
            lock(&slot.cell).future = Some(future);
            slot.state.store(DONE, Ordering::Release);
            return;
        }
        cell.future = Some(future);
        cell.waited = true;
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

/// A first-in first-out queue on one vector, read from `head` on: a batch is appended
/// with one copy (a `VecDeque` copies a wrapped buffer in pieces), and taking the front
/// moves nothing. Taken places hold `None` until the queue empties, or until a push to
/// the back finds them the larger part of the vector and drops them: the vector never
/// grows past twice what is queued.
struct Fifo<T> {
    items: Vec<Option<T>>,
    head: usize,
}

impl<T> Default for Fifo<T> {
    fn default() -> Self {
        Fifo {
            items: Vec::new(),
            head: 0,
        }
    }
}

impl<T> Fifo<T> {
    fn is_empty(&self) -> bool {
        self.head == self.items.len()
    }

    fn front(&self) -> Option<&T> {
        self.items.get(self.head)?.as_ref()
    }

    fn pop_front(&mut self) -> Option<T> {
        let item = self.items.get_mut(self.head)?.take();
        self.head += 1;
        if self.head == self.items.len() {
            self.items.clear();
            self.head = 0;
        }
        item
    }

    fn push_back(&mut self, item: T) {
        self.compact();
        self.items.push(Some(item));
    }

    /// Puts `item` back in front: in the place taken last, if any (the vector does not
    /// grow then).
    fn push_front(&mut self, item: T) {
        if self.head > 0 {
            self.head -= 1;
            self.items[self.head] = Some(item);
        } else {
            self.items.insert(0, Some(item));
        }
    }

    /// Moves every item of `batch` (each `Some`) to the back, leaving `batch` empty.
    fn append(&mut self, batch: &mut Vec<Option<T>>) {
        debug_assert!(
            batch.iter().all(Option::is_some),
            "flowgate: a batch handed to the run queue holds a taken place"
        );
        if self.is_empty() {
            // As a rule the drivers have emptied the queue: trade buffers, copy nothing.
            self.items.clear();
            self.head = 0;
            mem::swap(&mut self.items, batch);
        } else {
            self.compact();
            self.items.append(batch);
        }
    }

    /// Drops the taken places once they are the larger part of the vector.
    fn compact(&mut self) {
        if self.head > 0 && self.head * 2 >= self.items.len() {
            self.items.drain(..self.head);
            self.head = 0;
        }
    }
}

/// What a paced standing-by driver does at a turn.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Turn {
    /// Look at the queue now.
    Look,
    /// Yield to the runtime: the next look is not due, and other tasks may want the
    /// worker.
    Yield,
    /// Wait in place until the next look is due, then look.
    WaitThenLook(Instant),
}

/// Plans the turn of a standing-by driver that last looked at the queue at `looked` and
/// last yielded at `yielded`, now.
///
/// Once a look is due, it looks. Before that it yields, unless its yield came straight
/// back (within `BACK_AT_ONCE`: nothing else ran on its worker) and its worker is not
/// the consumer's: then it waits in place for the look, at most `STANDBY_LOOK_EVERY`,
/// without going through the scheduler. Beside the consumer it always yields, so that
/// the consumer and the driver on its worker never wait for the standby's spin.
fn plan_turn(
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
        Turn::WaitThenLook(due)
    } else {
        Turn::Yield
    }
}

/// An address that tells the current thread from every other one alive.
fn this_thread() -> usize {
    thread_local! {
        static MARK: u8 = const { 0 };
    }
    MARK.with(|mark| mark as *const u8 as usize)
}

/// Gives the slots about to be queued together the number of a new push.
fn number_push<'a, Fut: Future + 'a>(
    run: &mut RunQueue<Fut>,
    slots: impl IntoIterator<Item = &'a Arc<Slot<Fut>>>,
) {
    if run.standby_enabled {
        run.pushes += 1;
        for slot in slots {
            slot.queued_in.store(run.pushes, Ordering::Relaxed);
        }
    }
}

/// Wakes the drivers `wake_for_work` chose (tokio task wakers: waking runs no user code).
fn wake(active: Option<Waker>, standby: Option<Waker>) {
    if let Some(waker) = active {
        waker.wake();
    }
    if let Some(waker) = standby {
        waker.wake();
    }
}

/// Takes a finished job's output out of its slot, to be dropped outside the lock: an
/// output holding its own slot's waker would otherwise keep the slot alive forever.
fn take_output<Fut: Future>(slot: &Slot<Fut>) -> Option<Outcome<Fut::Output>> {
    lock(&slot.cell).output.take()
}

/// Drops a job's future in place (its box is kept for the next job). Returns the panic
/// its destructor raised, if any: the caller decides whether it is the job's own panic
/// (a finished job) or one to contain (a job cancelled, whose cancellation is what the
/// consumer sees, or none at all when the stream was dropped).
#[must_use = "a destructor's panic is reported or contained on purpose"]
fn drop_job<Fut>(future: &mut FutureBox<Fut>) -> Option<Payload> {
    catch_unwind(AssertUnwindSafe(|| future.as_mut().set(None))).err()
}

/// Drops a value of the user's, containing a panic in its destructor.
fn drop_contained<T>(value: T) {
    drop(catch_unwind(AssertUnwindSafe(move || drop(value))));
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
            if this.role == Role::Standby {
                // Between looks, read nothing the consumer or the active driver writes.
                let now = Instant::now();
                if let Some(looked) = this.looked_at.filter(|_| this.paced) {
                    let turn = plan_turn(now, looked, this.yielded_at, this.beside_consumer);
                    match turn {
                        Turn::Look => {}
                        Turn::Yield => return this.yield_standing(cx, now),
                        Turn::WaitThenLook(due) => {
                            while Instant::now() < due {
                                std::hint::spin_loop();
                            }
                        }
                    }
                }
                let now = Instant::now();
                this.looked_at = Some(now);
                this.beside_consumer =
                    shared.watch.consumer_thread.load(Ordering::Relaxed) == this_thread();
                // Without the lock: nothing to take while the queue is empty, or while
                // its front job is young and another driver is active.
                let front = shared.watch.front_push.load(Ordering::Acquire);
                let nothing_to_take = front == 0
                    || (shared.watch.active.load(Ordering::Relaxed) > 0 && !this.has_waited(front));
                if nothing_to_take && !shared.is_closed() && this.keeps_standing(front != 0) {
                    return this.yield_standing(cx, now);
                }
            }
            let slot = {
                let mut run = lock(&shared.run);
                if mem::take(&mut this.parked) {
                    let id = this.id;
                    match run.parked.iter().position(|(parked, _)| *parked == id) {
                        // Polled without a wake-up meant for it.
                        Some(at) => drop(run.parked.swap_remove(at)),
                        // Woken with a role, already counted.
                        None => this.role = run.woken_as[id],
                    }
                }
                if shared.is_closed() {
                    return Poll::Ready(());
                }
                let take = match run.queue.front() {
                    None => false,
                    Some(slot) => {
                        this.role != Role::Standby
                            || run.active == 0
                            || this.has_waited(slot.queued_in.load(Ordering::Relaxed))
                    }
                };
                if take {
                    let slot = shared.pop(&mut run).expect("the queue has a front job");
                    this.set_role(&mut run, Role::Active);
                    this.idle_since = None;
                    // Jobs left behind need a driver standing by before this one starts
                    // a poll that may be long. The helper is woken into this worker's
                    // LIFO slot, which no other worker may steal, so this driver yields
                    // first (tokio then calls another worker) and takes the job up on
                    // its next turn.
                    if run.standby_enabled && run.standby == 0 && !run.queue.is_empty() {
                        if let Some(helper) = shared.unpark(&mut run, Role::Standby) {
                            run.queue.push_front(slot);
                            shared.watch_front(&mut run);
                            drop(run);
                            helper.wake();
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                    }
                    slot
                } else {
                    let queued = !run.queue.is_empty();
                    // One driver at a time stands by: more would only compete for cores
                    // with the consumer and with each other.
                    let stand_by = match this.role {
                        Role::Standby => true,
                        _ => run.standby_enabled && run.standby == 0,
                    };
                    if stand_by && this.keeps_standing(queued) {
                        this.set_role(&mut run, Role::Standby);
                        drop(run);
                        return this.yield_standing(cx, Instant::now());
                    }
                    // The queue is empty here: a standing-by driver keeps standing while
                    // a job is queued, and any other takes it.
                    this.set_role(&mut run, Role::Idle);
                    this.idle_since = None;
                    run.parked.push((this.id, cx.waker().clone()));
                    this.parked = true;
                    return Poll::Pending;
                }
            };
            let wakes_before = shared.helper_wakes.load(Ordering::Relaxed);
            this.run(slot);
            // A result never waits in a driver while it polls another job.
            let woke_consumer = this.hand_over();
            polls += 1;
            // A task woken from inside this one (a helper driver, or the consumer) sits in
            // this worker's LIFO slot, where no other worker can steal it: yield so that it
            // runs while this driver polls its next job, which may be long. With one
            // worker nothing else can run during that poll anyway, and with no job queued
            // there is no next poll, so the consumer counts only when both hold.
            let woke_helper = shared.helper_wakes.load(Ordering::Relaxed) != wakes_before;
            let woke_consumer = woke_consumer
                && this.other_workers
                && shared.watch.front_push.load(Ordering::Relaxed) != 0;
            if woke_helper
                || woke_consumer
                || polls >= POLLS_PER_TURN
                || !tokio::task::coop::has_budget_remaining()
            {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    }
}

/// A driver task is dropped before it returns only when its runtime shuts down (the
/// lane never aborts one): the jobs it would have polled are lost, so the consumer is
/// told, and woken to learn it, instead of waiting for them forever.
impl<Fut: Future> Drop for Driver<Fut> {
    fn drop(&mut self) {
        if self.shared.is_closed() {
            return;
        }
        self.shared.runtime_gone.store(true, Ordering::Release);
        let consumer = lock(&self.shared.exchange).consumer.take();
        if let Some(waker) = consumer {
            waker.wake();
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
    free: Vec<Arc<Slot<Fut>>>,
    /// Jobs started since the last flush (each `Some`, in the run queue's element type).
    starting: Vec<Option<Arc<Slot<Fut>>>>,
    /// Finished slots taken from the exchange, swapped with it to reuse both buffers.
    taken: Vec<Arc<Slot<Fut>>>,
}

impl<Fut: Future> AsyncLane<Fut> {
    pub(crate) fn new(limit: usize) -> Self {
        AsyncLane {
            shared: Arc::new(Shared {
                run: Mutex::new(RunQueue {
                    queue: Fifo::default(),
                    parked: Vec::new(),
                    woken_as: Vec::new(),
                    active: 0,
                    standby: 0,
                    pushes: 0,
                    front_push: 0,
                    standby_enabled: false,
                }),
                watch: Watch {
                    front_push: AtomicU64::new(0),
                    active: AtomicUsize::new(0),
                    consumer_thread: AtomicUsize::new(0),
                },
                exchange: Mutex::new(Exchange {
                    finished: Vec::new(),
                    consumer: None,
                }),
                cutoff: AtomicU64::new(u64::MAX),
                closed: AtomicBool::new(false),
                consumer_waiting: AtomicBool::new(false),
                failure_handed: AtomicBool::new(false),
                helper_wakes: AtomicUsize::new(0),
                slots: Mutex::new(Vec::new()),
                runtime_gone: AtomicBool::new(false),
            }),
            limit,
            handle: None,
            unspawned_drivers: 0,
            workers: 1,
            is_failure: None,
            ordered: true,
            free: Vec::new(),
            starting: Vec::new(),
            taken: Vec::new(),
        }
    }

    fn new_slot(&mut self) -> Arc<Slot<Fut>> {
        let slot = Arc::new(Slot {
            shared: Arc::clone(&self.shared),
            state: AtomicU8::new(DONE),
            queued_in: AtomicU64::new(0),
            cell: Mutex::new(Cell {
                future: Some(Box::pin(None)),
                index: 0,
                output: None,
                waited: false,
            }),
        });
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
            handle.spawn(Driver {
                shared: Arc::clone(&self.shared),
                id: self.unspawned_drivers,
                parked: false,
                finished: Vec::new(),
                role: Role::Idle,
                is_failure: self.is_failure.unwrap_or(|_| false),
                ordered: self.ordered,
                failed: false,
                idle_since: None,
                front_seen: None,
                looked_at: None,
                yielded_at: None,
                beside_consumer: false,
                paced,
                other_workers: self.workers > 1,
            });
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
            drop_contained(take_output(slot));
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
            let future = cell
                .future
                .as_mut()
                .expect("flowgate: a free slot keeps its box");
            future.as_mut().set(Some(job));
        }
        slot.state.store(SCHEDULED, Ordering::Release);
        self.starting.push(Some(slot));
    }

    fn flush(&mut self, busy_ahead: bool) -> bool {
        if self.starting.is_empty() {
            return false;
        }
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
            return false;
        }
        self.shared.push(&mut run, &mut self.starting);
        // An active driver takes the whole batch, and one standing by takes what waits
        // behind a long poll; a parked driver is woken only for a role nobody holds, so
        // a stream of batches of trivial jobs costs no wake-up at all.
        let watched = run.standby > 0;
        let (active, standby) = self.shared.wake_for_work(&mut run);
        drop(run);
        // A driver woken from here sits in this worker's LIFO slot until the consumer's
        // task yields. With a driver standing by (on another worker, as a rule), jobs
        // never wait long for that; without one, the consumer yields once. It also
        // yields when it will be busy yielding results for a while: the jobs would wait
        // long enough for the standing-by driver to take them, on another core.
        let woke = active.is_some() || standby.is_some();
        if woke {
            wake(active, standby);
        }
        if self.unspawned_drivers > 0 {
            self.spawn_drivers();
        }
        (busy_ahead || (woke && !watched)) && self.workers > 1
    }

    fn consumer_may_linger(&self) -> bool {
        true
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
    ) -> bool {
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
                    match &exchange.consumer {
                        Some(current) if current.will_wake(waker) => {}
                        _ => exchange.consumer = Some(waker.clone()),
                    }
                    drop(exchange);
                    self.wake_for_queued();
                }
                return false;
            }
        }
        let mut waited = false;
        for slot in &self.taken {
            let (index, output) = {
                let mut cell = lock(&slot.cell);
                waited |= cell.waited;
                (cell.index, cell.output.take())
            };
            if let Some(output) = output {
                into.push((index, output));
            }
        }
        self.free.append(&mut self.taken);
        waited
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

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
    fn a_standby_alone_on_its_worker_waits_in_place_for_its_look() {
        let looked = Instant::now();
        let yielded = looked + US;
        let now = yielded + BACK_AT_ONCE / 2;
        assert_eq!(
            plan_turn(now, looked, Some(yielded), false),
            Turn::WaitThenLook(looked + STANDBY_LOOK_EVERY)
        );
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
    fn a_fifo_appends_batches_and_takes_the_front_in_order() {
        let mut fifo = Fifo::default();
        assert!(fifo.is_empty());
        assert_eq!(fifo.pop_front(), None);
        let mut batch = vec![Some(1), Some(2)];
        fifo.append(&mut batch);
        assert!(batch.is_empty());
        fifo.push_back(3);
        let mut batch = vec![Some(4), Some(5)];
        fifo.append(&mut batch);
        assert_eq!(fifo.front(), Some(&1));
        assert_eq!(fifo.pop_front(), Some(1));
        fifo.push_front(0);
        assert_eq!(fifo.pop_front(), Some(0));
        let rest: Vec<_> = std::iter::from_fn(|| fifo.pop_front()).collect();
        assert_eq!(rest, [2, 3, 4, 5]);
        assert!(fifo.is_empty());
        fifo.push_front(6);
        assert_eq!(fifo.front(), Some(&6));
    }

    proptest::proptest! {
        /// Against `VecDeque` as the model: the same items in the same order, and the
        /// vector never grows past twice what is queued.
        #[test]
        fn a_fifo_behaves_as_a_deque_and_stays_small(
            ops in proptest::collection::vec((0u8..4, 0usize..6), 0..300)
        ) {
            let mut fifo = Fifo::default();
            let mut model = VecDeque::new();
            let mut next = 0u32;
            for (op, n) in ops {
                let before = fifo.items.len();
                match op {
                    0 => {
                        let mut batch: Vec<_> = (next..next + n as u32).map(Some).collect();
                        model.extend(next..next + n as u32);
                        next += n as u32;
                        fifo.append(&mut batch);
                        proptest::prop_assert!(batch.is_empty());
                    }
                    1 => {
                        fifo.push_back(next);
                        model.push_back(next);
                        next += 1;
                    }
                    2 => {
                        fifo.push_front(next);
                        model.push_front(next);
                        next += 1;
                    }
                    _ => {
                        for _ in 0..n {
                            proptest::prop_assert_eq!(fifo.pop_front(), model.pop_front());
                        }
                    }
                }
                proptest::prop_assert_eq!(fifo.front(), model.front());
                proptest::prop_assert_eq!(fifo.is_empty(), model.is_empty());
                let after = fifo.items.len();
                if after > before {
                    proptest::prop_assert!(after <= 2 * model.len());
                }
            }
            let rest: Vec<_> = std::iter::from_fn(|| fifo.pop_front()).collect();
            proptest::prop_assert_eq!(rest, Vec::from(model));
        }
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
