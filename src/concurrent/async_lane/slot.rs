//! A job's slot: its state, the cell holding its future and result, and the `Wake` impl
//! that makes the slot its own waker.
//!
//! Owns: [`SlotState`] and its transitions, [`Slot`], [`Cell`], and the helpers that drop
//! user values (futures, outputs) with their destructor panics either reported or
//! contained.

use std::future::Future;
use std::mem;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Wake;

use super::shared::Shared;
use super::sync::{AtomicU64, AtomicU8, Mutex, MutexGuard, Ordering};
use super::{lock, Outcome, Payload};
use crate::concurrent::drop_contained;

/// Where a job's future lives. The box is kept across jobs (`Pin::set` replaces its
/// contents in place), and is lent to a driver while it polls.
pub(super) type FutureBox<Fut> = Pin<Box<Option<Fut>>>;

// A slot's life: DONE (free) -> SCHEDULED (on the run queue) -> RUNNING (a driver polls
// it) -> IDLE (waiting for a wake) -> SCHEDULED again, or DONE (finished or cancelled).
// A wake during a poll turns RUNNING into NOTIFIED, and the driver queues it again.
const IDLE: u8 = 0;
const SCHEDULED: u8 = 1;
const RUNNING: u8 = 2;
const NOTIFIED: u8 = 3;
const DONE: u8 = 4;

/// A slot's state, changed only through the named transitions below.
///
/// Who may change it: wakers (any thread) only through [`SlotState::wake`], a
/// read-modify-write; everything else is done by the one party that holds the slot at
/// that moment (the consumer while it is free, the driver that popped it while it is
/// queued, polled or finished), so those are plain stores.
pub(super) struct SlotState(AtomicU8);

impl SlotState {
    /// A new slot is free.
    pub(super) fn new() -> Self {
        SlotState(AtomicU8::new(DONE))
    }

    /// The consumer gives a free slot its next job: DONE -> SCHEDULED. A plain store: no
    /// driver holds a free slot, and a waker left over from its last job sees DONE or
    /// SCHEDULED and does nothing.
    pub(super) fn to_scheduled(&self) {
        self.0.store(SCHEDULED, Ordering::Release);
    }

    /// A wake: IDLE -> SCHEDULED (returns `true`: the caller must queue the slot) or
    /// RUNNING -> NOTIFIED (the polling driver queues it again); otherwise nothing (it is
    /// queued already, or done).
    pub(super) fn wake(&self) -> bool {
        let mut state = self.0.load(Ordering::Acquire);
        loop {
            let next = match state {
                IDLE => SCHEDULED,
                RUNNING => NOTIFIED,
                _ => return false,
            };
            match self
                .0
                .compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return state == IDLE,
                Err(actual) => state = actual,
            }
        }
    }

    /// The driver that popped the slot is about to poll it: SCHEDULED -> RUNNING. A plain
    /// store: wakes while SCHEDULED do nothing, and the poll covers them.
    pub(super) fn to_running(&self) {
        self.0.store(RUNNING, Ordering::Release);
    }

    /// After a poll returned `Pending`: RUNNING -> IDLE, and `true`. If a wake came
    /// during the poll (NOTIFIED), SCHEDULED instead, and `false`: the driver queues the
    /// slot again, since the waker left that to it.
    pub(super) fn to_idle(&self) -> bool {
        let parked = self
            .0
            .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !parked {
            self.0.store(SCHEDULED, Ordering::Release);
        }
        parked
    }

    /// The job finished or was cancelled: DONE. A plain store by the driver that holds
    /// the slot; a later wake does nothing.
    pub(super) fn to_done(&self) {
        self.0.store(DONE, Ordering::Release);
    }
}

pub(super) struct Slot<Fut: Future> {
    pub(super) shared: Arc<Shared<Fut>>,
    pub(super) state: SlotState,
    /// The push that last queued the slot (see `RunQueue::pushes`), written under the run
    /// queue's lock as it is queued; a hint for the driver standing by.
    pub(super) queued_in: AtomicU64,
    pub(super) cell: Mutex<Cell<Fut>>,
}

pub(super) struct Cell<Fut: Future> {
    /// `None` while a driver is polling the future (it claimed it), or after a
    /// cancellation took it.
    pub(super) future: Option<FutureBox<Fut>>,
    /// The job's position; written by the consumer while the slot is free.
    pub(super) index: u64,
    /// The finished job's result, until the consumer takes it.
    pub(super) output: Option<Outcome<Fut::Output>>,
    /// Whether the job returned `Pending` at some poll.
    pub(super) waited: bool,
    /// The hand-over that queued the job (see `AsyncLane::flushes`).
    pub(super) flush: u64,
}

impl<Fut: Future> Slot<Fut> {
    pub(super) fn new(shared: Arc<Shared<Fut>>) -> Self {
        Slot {
            shared,
            state: SlotState::new(),
            queued_in: AtomicU64::new(0),
            cell: Mutex::new(Cell {
                future: Some(Box::pin(None)),
                index: 0,
                output: None,
                waited: false,
                flush: 0,
            }),
        }
    }

    /// Takes a finished job's output out of the slot, to be dropped outside the lock: an
    /// output holding its own slot's waker would otherwise keep the slot alive forever.
    pub(super) fn take_output(&self) -> Option<Outcome<Fut::Output>> {
        lock(&self.cell).output.take()
    }
}

impl<Fut: Future> Wake for Slot<Fut> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.state.wake() {
            self.shared.schedule(Arc::clone(self));
        }
    }
}

/// Drops the cancelled job in `cell`, if it holds one that no driver is polling: the
/// future is taken out under the lock and dropped after it (it is user code), a panic
/// in its destructor contained (the cancellation is what the consumer sees). The
/// claim, the sweep and a driver's re-check after a poll all drop a job this way.
pub(super) fn cancel_job<Fut: Future>(mut cell: MutexGuard<'_, Cell<Fut>>) -> bool {
    let Some(future) = cell.future.as_mut() else {
        return false;
    };
    if future.is_none() {
        return false;
    }
    let mut taken = mem::replace(future, Box::pin(None));
    drop(cell);
    drop_contained(drop_job(&mut taken));
    true
}

/// Drops a job's future in place (its box is kept for the next job). Returns the panic
/// its destructor raised, if any: the caller decides whether it is the job's own panic
/// (a finished job) or one to contain (a job cancelled, whose cancellation is what the
/// consumer sees, or none at all when the stream was dropped).
#[must_use = "a destructor's panic is reported or contained on purpose"]
pub(super) fn drop_job<Fut>(future: &mut FutureBox<Fut>) -> Option<Payload> {
    catch_unwind(AssertUnwindSafe(|| future.as_mut().set(None))).err()
}
