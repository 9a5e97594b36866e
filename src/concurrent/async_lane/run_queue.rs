//! The run queue: scheduled slots waiting for a driver, the parked drivers, and the
//! count of drivers in each role.
//!
//! Owns: [`RunQueue`] (behind `Shared::run`), [`Role`], the [`Watch`] a standing-by
//! driver reads without the lock, the [`Fifo`] the queue is made of, and the `Shared`
//! methods that queue jobs and wake drivers for them.

use std::future::Future;
use std::mem;
use std::sync::Arc;
use std::task::Waker;

use super::lock;
use super::shared::Shared;
use super::slot::Slot;
use super::sync::{AtomicU64, AtomicUsize, Ordering};

/// What a standing-by driver reads in its spin, without the run queue's lock. Written
/// under that lock, and only when the value changes (about once per batch of jobs, not
/// per job); kept on its own cache line so that the spinning reads do not slow the
/// driver and the consumer down on their fields.
#[repr(align(128))]
pub(super) struct Watch {
    /// The push that queued the job at the front of the run queue, or 0 while the queue
    /// is empty. A standing-by driver times how long one push stays at the front.
    pub(super) front_push: AtomicU64,
    /// `RunQueue::active`.
    pub(super) active: AtomicUsize,
    /// The thread the consumer last handed jobs over from (`this_thread`), written only
    /// when it changes.
    pub(super) consumer_thread: AtomicUsize,
}

impl Watch {
    pub(super) fn new() -> Self {
        Watch {
            front_push: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            consumer_thread: AtomicUsize::new(0),
        }
    }
}

/// What a driver does with the run queue.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Role {
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

pub(super) struct RunQueue<Fut: Future> {
    /// Scheduled slots.
    pub(super) queue: Fifo<Arc<Slot<Fut>>>,
    /// Parked drivers, by driver id.
    pub(super) parked: Vec<(usize, Waker)>,
    /// The role each driver was last woken with, by driver id: counted in `active` or
    /// `standby` from the moment of the wake-up.
    pub(super) woken_as: Vec<Role>,
    /// Drivers taking jobs, or woken to.
    pub(super) active: usize,
    /// Drivers standing by, or woken to.
    pub(super) standby: usize,
    /// Pushes so far (a batch handed over is one push; a job woken is one).
    pub(super) pushes: u64,
    /// The value of `Watch::front_push`, to write it only when it changes.
    pub(super) front_push: u64,
    /// Whether drivers stand by: on multi-thread runtimes only (set at bind).
    pub(super) standby_enabled: bool,
}

impl<Fut: Future> RunQueue<Fut> {
    pub(super) fn new() -> Self {
        RunQueue {
            queue: Fifo::default(),
            parked: Vec::new(),
            woken_as: Vec::new(),
            active: 0,
            standby: 0,
            pushes: 0,
            front_push: 0,
            standby_enabled: false,
        }
    }
}

impl<Fut: Future> Shared<Fut> {
    /// Publishes the push of the queue's front job, if it changed (only where a driver
    /// stands by to read it).
    pub(super) fn watch_front(&self, run: &mut RunQueue<Fut>) {
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
    pub(super) fn push(&self, run: &mut RunQueue<Fut>, slots: &mut Vec<Option<Arc<Slot<Fut>>>>) {
        number_push(run, slots.iter().flatten());
        run.queue.append(slots);
        self.watch_front(run);
    }

    pub(super) fn pop(&self, run: &mut RunQueue<Fut>) -> Option<Arc<Slot<Fut>>> {
        let slot = run.queue.pop_front()?;
        self.watch_front(run);
        Some(slot)
    }

    /// Counts a driver into `role` (`joins`) or out of it, keeping `Watch::active` in
    /// step with `RunQueue::active`.
    pub(super) fn count(&self, run: &mut RunQueue<Fut>, role: Role, joins: bool) {
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
    pub(super) fn unpark(&self, run: &mut RunQueue<Fut>, role: Role) -> Option<Waker> {
        let (id, waker) = run.parked.pop()?;
        run.woken_as[id] = role;
        self.count(run, role, true);
        Some(waker)
    }

    /// After jobs were queued: makes sure a driver takes them at once, and, on a
    /// multi-thread runtime, that one stands by if the active ones may be busy in long
    /// polls. (A driver woken now to take the jobs wakes one to stand by itself, if it
    /// leaves jobs behind.) At most two wake-ups; none while both roles are held.
    pub(super) fn wake_for_work(&self, run: &mut RunQueue<Fut>) -> (Option<Waker>, Option<Waker>) {
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
    pub(super) fn schedule(&self, slot: Arc<Slot<Fut>>) {
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
}

/// A first-in first-out queue on one vector, read from `head` on: a batch is appended
/// with one copy (a `VecDeque` copies a wrapped buffer in pieces), and taking the front
/// moves nothing. Taken places hold `None` until the queue empties, or until a push to
/// the back finds them the larger part of the vector and drops them: the vector never
/// grows past twice what is queued.
pub(super) struct Fifo<T> {
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
    pub(super) fn is_empty(&self) -> bool {
        self.head == self.items.len()
    }

    pub(super) fn front(&self) -> Option<&T> {
        self.items.get(self.head)?.as_ref()
    }

    pub(super) fn pop_front(&mut self) -> Option<T> {
        let item = self.items.get_mut(self.head)?.take();
        self.head += 1;
        if self.head == self.items.len() {
            self.items.clear();
            self.head = 0;
        }
        item
    }

    pub(super) fn push_back(&mut self, item: T) {
        self.compact();
        self.items.push(Some(item));
    }

    /// Puts `item` back in front: in the place taken last, if any (the vector does not
    /// grow then).
    pub(super) fn push_front(&mut self, item: T) {
        if self.head > 0 {
            self.head -= 1;
            self.items[self.head] = Some(item);
        } else {
            self.items.insert(0, Some(item));
        }
    }

    /// Moves every item of `batch` (each `Some`) to the back, leaving `batch` empty.
    pub(super) fn append(&mut self, batch: &mut Vec<Option<T>>) {
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

/// Gives the slots about to be queued together the number of a new push.
pub(super) fn number_push<'a, Fut: Future + 'a>(
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
pub(super) fn wake(active: Option<Waker>, standby: Option<Waker>) {
    if let Some(waker) = active {
        waker.wake();
    }
    if let Some(waker) = standby {
        waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

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
}
