//! The async lane: a small executor inside the engine.
//!
//! Each running job sits in a reusable slot that is its own waker. Waking a job puts its
//! slot on one shared run queue; a few driver tasks (about one per runtime worker, never
//! more than `limit`) pop slots and poll them one at a time, so a job busy in a long poll
//! holds back only its own driver. Slots are reused, and so is the box each one keeps its
//! future in: nothing is allocated per item. The consumer hands jobs over and takes
//! results back in batches, each with one wake-up, and no lock is held while user code
//! runs.
//!
//! On a multi-thread runtime, quick jobs stay on one worker: the consumer's batch wakes
//! a parked driver into its own worker's LIFO slot, and that *active* driver takes the
//! whole batch. Another driver *stands by*, as a rule on another worker, and takes a job
//! only once its batch has stood `STANDBY_AGE` at the front of the queue (the active
//! drivers are busy in long polls); between its looks it spins a bounded while, then
//! yields, and it parks as soon as no new jobs are due (the consumer waits, or takes
//! back results paced by timers or I/O). The knobs are in `concurrent::tuning`.
//!
//! One file per mechanism:
//! - `slot.rs`: a job's slot, its states and their transitions, the `Wake` impl;
//! - `run_queue.rs`: the queue of scheduled slots, parked drivers, roles, the `Watch`;
//! - `shared.rs`: what the consumer, drivers and wakers share; cancellation sweeps;
//! - `driver.rs`: the driver task (take a job, stand by, park, poll, hand over);
//! - `standby.rs`: the standing-by driver's pacing (speed only);
//! - `lane.rs`: the consumer's handle, the `Lane` impl the engine uses.
//!
//! # The protocol
//!
//! ## Locks
//! `Shared::run` (the run queue), `Shared::exchange` (finished jobs and the consumer's
//! waker), `Shared::slots` (the slot list) and each `Slot::cell`. **No two are ever held
//! at once**, so there is no lock order to keep; and no user code (a poll, a
//! destructor, a waker of the user's) runs under any of them: futures and outputs are
//! taken out of a cell before they are polled or dropped. A poisoned lock still holds
//! consistent data for the same reason, and is used as is.
//!
//! ## Shared fields: who writes them, and why each read is enough
//! - `run` (lock): the consumer pushes batches (`flush`); wakers (any thread) push one
//!   slot (`schedule`); drivers pop, park, and change roles. `RunQueue::active` and
//!   `standby` count drivers by role from the moment they are woken with it.
//! - `exchange` (lock): drivers append finished slots and take the consumer's waker;
//!   the consumer swaps the finished list out and, if it was empty, registers its waker
//!   **in the same critical section**. So a result handed over after the consumer
//!   looked always finds its waker: no wake-up is lost (a promise rule).
//! - `cutoff` (atomic, `fetch_min` only, `AcqRel`): moved by the consumer's cancellation
//!   and by a driver that sees a failure; it only ever decreases. A driver **claims** a
//!   job by taking its future out of the cell and reading `cutoff` under the cell's
//!   lock; a cancellation moves `cutoff` first, then sweeps every cell under its lock.
//!   So each job is either claimed before its cancellation (polled, then dropped when
//!   its poll returns: `Driver::park_job` reads `cutoff` under the lock again) or
//!   dropped by the sweep, never polled after it (a promise rule: cancellation, fail
//!   fast).
//! - `closed` (atomic, set once by `AsyncLane::shut`, `AcqRel`): read under the run
//!   queue's lock (`schedule`, `Driver::next_job`) and the exchange's lock
//!   (`hand_over`); the shutdown sets it before it empties both under their locks, so
//!   nothing is queued or handed over afterwards (a promise rule: nothing leaks, the
//!   drivers end).
//! - `slots` (lock): the consumer appends a slot as it makes one; sweeps clone the list
//!   (at most `limit` `Arc`s, only on a failure or at shutdown); the shutdown empties it,
//!   which breaks the reference cycle through `Slot::shared`.
//! - `runtime_gone` (atomic, `Release`/`Acquire`): set by a driver's `Drop` while the
//!   lane is open (only a runtime's shutdown drops a driver before it returns), before
//!   it takes the consumer's waker under the exchange's lock and wakes it: the consumer
//!   either sees the flag at its next poll or is woken to (a promise rule: a gone
//!   runtime panics instead of hanging).
//! - `failure_handed` (atomic, `Release`/`Acquire`): set by a driver after it handed a
//!   failure over; the consumer then collects at once. A stale read delays that by one
//!   poll at most: the failure is in the exchange already and the exit orders it
//!   (speed of reaction only).
//! - `consumer_waiting`, `results_slow`, `helper_wakes` and `watch` (atomics, `Relaxed`
//!   hints): written only when they change, read by drivers to choose between standing
//!   by, parking and yielding. A stale read makes a driver stand by a little longer, park a little
//!   sooner, or yield once more or less. None can lose a job: every push wakes a parked
//!   driver when no driver is active, under the run queue's lock (speed only).
//!
//! ## Slot fields
//! - `state`: see `slot::SlotState`. Wakers change it only by a read-modify-write
//!   (IDLE -> SCHEDULED, and then they queue the slot; RUNNING -> NOTIFIED, and the
//!   polling driver queues it); every other transition is a plain store by the one
//!   party that holds the slot (consumer while free, driver while queued or polled). A
//!   job woken while it runs is polled again (a promise rule: progress).
//! - `cell` (lock): `future` is lent to the polling driver (`None` meanwhile); `index`
//!   is written by the consumer while the slot is free; `output` by the driver that
//!   finished the job, taken by the consumer; `waited` likewise.
//! - `queued_in` (atomic, `Relaxed`, written under the run queue's lock): the push that
//!   queued the slot, a hint for the standby's timing (speed only).
//!
//! ## What keeps the promises, and what is only speed
//! The promise rules are the ones marked above: the consumer's waker registered in the
//! same critical section that found no result; the claim and the sweep under the cell's
//! lock, ordered by the cutoff; `closed` read under the locks the shutdown empties; a
//! wake during a poll turning into a new poll; a driver's `Drop` reporting a gone
//! runtime. Everything else (roles, the standby and its pacing, refill batches, the
//! consumer's spin before it waits, yields after a hand-over) only decides *when*
//! work happens and on which thread, and may be changed freely as long as the tests
//! and benchmarks named in `concurrent::tuning` agree.

mod driver;
mod lane;
mod run_queue;
mod shared;
mod slot;
mod standby;
mod sync;

#[cfg(all(test, loom))]
mod loom_tests;

use std::sync::PoisonError;

use super::{Outcome, Payload};

pub(crate) use lane::AsyncLane;

fn lock<T>(mutex: &sync::Mutex<T>) -> sync::MutexGuard<'_, T> {
    // User code never runs under these locks, so a poisoned one still holds consistent data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
