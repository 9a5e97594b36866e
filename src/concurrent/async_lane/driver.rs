//! A driver task: pops scheduled slots and polls them, one at a time, then hands the
//! finished ones to the consumer.
//!
//! Owns: [`Driver`] (its roles, parking and waking, the claim of a job, the poll, the
//! hand-over of results) and its `Drop`, which tells the consumer when the runtime
//! shut down under it. The standby's pacing is in `standby.rs`.

use std::future::Future;
use std::mem;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::lock;
use super::run_queue::{Role, RunQueue};
use super::shared::Shared;
use super::slot::{cancel_job, drop_job, FutureBox, Slot};
use super::standby::{Standby, Turn};
use super::sync::{MutexGuard, Ordering};
use super::{Outcome, Payload};
use crate::concurrent::tuning::POLLS_PER_TURN;
use crate::concurrent::{cancel_from_after_failure, drop_contained};

pub(super) struct Driver<Fut: Future> {
    shared: Arc<Shared<Fut>>,
    id: usize,
    /// Whether its last poll parked it (its waker is in `RunQueue::parked`).
    parked: bool,
    /// Finished slots not yet handed over.
    finished: Vec<Arc<Slot<Fut>>>,
    /// What it does with the queue (counted in `RunQueue` under this role).
    role: Role,
    /// Its pacing while `role` is `Standby`.
    standby: Standby,
    is_failure: fn(&Outcome<Fut::Output>) -> bool,
    ordered: bool,
    /// A failure is among the finished results not yet handed over.
    failed: bool,
    /// Whether it looks only every `STANDBY_LOOK_EVERY` while standing by: where it has
    /// a sibling. Jobs queued while no driver is active wake a parked one, so only a
    /// lone driver must see them itself, at once.
    paced: bool,
    /// Whether the runtime has other workers (which may run a task this one wakes).
    other_workers: bool,
    /// The stage's statistics, when asked for: each job's end is counted.
    stats: Option<Arc<crate::stats::Core>>,
    /// The stage's span, the parent of each poll's `flowgate.job` span.
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

/// What a driver does next, decided under the run queue's lock.
enum Next<Fut: Future> {
    Poll(Arc<Slot<Fut>>),
    /// Return `Pending`, woken again at once (it yields) or by a job (it parked).
    Pending,
    /// The lane is closed: the task ends.
    Exit,
}

impl<Fut> Driver<Fut>
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    pub(super) fn new(
        shared: Arc<Shared<Fut>>,
        id: usize,
        is_failure: fn(&Outcome<Fut::Output>) -> bool,
        ordered: bool,
        paced: bool,
        other_workers: bool,
    ) -> Self {
        Driver {
            stats: shared.stats.get().cloned(),
            #[cfg(feature = "tracing")]
            span: shared
                .span
                .get()
                .cloned()
                .unwrap_or_else(tracing::Span::none),
            shared,
            id,
            parked: false,
            finished: Vec::new(),
            role: Role::Idle,
            standby: Standby::default(),
            is_failure,
            ordered,
            failed: false,
            paced,
            other_workers,
        }
    }

    /// Changes role, keeping the counts of `run` in step. A new standby starts afresh.
    fn set_role(&mut self, run: &mut RunQueue<Fut>, role: Role) {
        if self.role == role {
            return;
        }
        self.shared.count(run, self.role, false);
        self.shared.count(run, role, true);
        if role == Role::Standby {
            self.standby = Standby::default();
        }
        self.role = role;
    }

    /// A standing-by driver's look at the queue, without its lock. Returns `Pending`
    /// when there is nothing to take: the queue is empty, or its front job is young
    /// while another driver is active.
    fn look_while_standing(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Between looks, read nothing the consumer or the active driver writes.
        if self.paced {
            match self.standby.plan() {
                Turn::Look => {}
                Turn::Yield => return self.standby.yield_now(cx),
                Turn::Snooze => return self.standby.snooze(cx),
            }
        }
        let watch = &self.shared.watch;
        self.standby
            .looked(watch.consumer_thread.load(Ordering::Relaxed));
        let front = watch.front_push.load(Ordering::Acquire);
        let nothing_to_take = front == 0
            || (watch.active.load(Ordering::Relaxed) > 0 && !self.standby.has_waited(front));
        if nothing_to_take
            && !self.shared.is_closed()
            && self.standby.keeps_standing(front != 0, self.jobs_due())
        {
            return self.standby.yield_now(cx);
        }
        Poll::Ready(())
    }

    /// Whether the consumer will hand new jobs over soon: it neither waits for results
    /// nor takes back results paced by timers or I/O (hints: see the protocol notes).
    fn jobs_due(&self) -> bool {
        !self.shared.consumer_waiting.load(Ordering::Relaxed)
            && !self.shared.results_slow.load(Ordering::Relaxed)
    }

    /// Under the run queue's lock: takes the front job, or stands by, or parks.
    ///
    /// `shared` is this driver's own `Arc`, cloned once per poll of the task by the
    /// caller: a clone per job would write the `Arc`'s count, on the cache line of the
    /// run queue's lock, once more per job.
    fn next_job(&mut self, shared: &Shared<Fut>, cx: &mut Context<'_>) -> Next<Fut> {
        let mut run = lock(&shared.run);
        if mem::take(&mut self.parked) {
            let id = self.id;
            match run.parked.iter().position(|(parked, _)| *parked == id) {
                // Polled without a wake-up meant for it.
                Some(at) => drop(run.parked.swap_remove(at)),
                // Woken with a role, already counted.
                None => {
                    self.role = run.woken_as[id];
                    self.standby = Standby::default();
                }
            }
        }
        if shared.is_closed() {
            return Next::Exit;
        }
        let take = match run.queue.front() {
            None => false,
            Some(slot) => {
                self.role != Role::Standby
                    || run.active == 0
                    || self
                        .standby
                        .has_waited(slot.queued_in.load(Ordering::Relaxed))
            }
        };
        if take {
            self.take_job(shared, run, cx)
        } else {
            self.stand_by_or_park(run, cx)
        }
    }

    /// Pops the front job as an active driver. Jobs left behind need a driver standing
    /// by before this one starts a poll that may be long: a helper is woken into this
    /// worker's LIFO slot, which no other worker may steal, so this driver puts the job
    /// back and yields first (tokio then calls another worker), and takes it up on its
    /// next turn.
    fn take_job(
        &mut self,
        shared: &Shared<Fut>,
        mut run: MutexGuard<'_, RunQueue<Fut>>,
        cx: &mut Context<'_>,
    ) -> Next<Fut> {
        let slot = shared.pop(&mut run).expect("the queue has a front job");
        self.set_role(&mut run, Role::Active);
        if run.standby_enabled && run.standby == 0 && !run.queue.is_empty() {
            if let Some(helper) = shared.unpark(&mut run, Role::Standby) {
                run.queue.push_front(slot);
                shared.watch_front(&mut run);
                drop(run);
                helper.wake();
                cx.waker().wake_by_ref();
                return Next::Pending;
            }
        }
        Next::Poll(slot)
    }

    /// Nothing to take now: stand by (one driver at a time; more would only compete for
    /// cores with the consumer and with each other) or park.
    fn stand_by_or_park(
        &mut self,
        mut run: MutexGuard<'_, RunQueue<Fut>>,
        cx: &mut Context<'_>,
    ) -> Next<Fut> {
        let queued = !run.queue.is_empty();
        let stand_by = match self.role {
            Role::Standby => true,
            _ => run.standby_enabled && run.standby == 0,
        };
        if stand_by {
            self.set_role(&mut run, Role::Standby);
            if self.standby.keeps_standing(queued, self.jobs_due()) {
                drop(run);
                let _ = self.standby.yield_now(cx);
                return Next::Pending;
            }
        }
        // The queue is empty here: a standing-by driver keeps standing while a job is
        // queued, and any other takes it.
        self.set_role(&mut run, Role::Idle);
        run.parked.push((self.id, cx.waker().clone()));
        self.parked = true;
        Next::Pending
    }

    /// Polls one job; keeps the slot among the finished ones when it finished.
    fn run(&mut self, slot: Arc<Slot<Fut>>) {
        slot.state.to_running();
        let Some((mut future, index)) = self.claim(&slot) else {
            slot.state.to_done();
            return;
        };
        let waker = Waker::from(Arc::clone(&slot));
        let mut cx = Context::from_waker(&waker);
        #[cfg(feature = "tracing")]
        let traced = tracing::trace_span!(parent: &self.span, "flowgate.job", position = index);
        #[cfg(feature = "tracing")]
        let traced = traced.enter();
        let polled = catch_unwind(AssertUnwindSafe(|| match future.as_mut().as_pin_mut() {
            Some(job) => job.poll(&mut cx),
            None => Poll::Pending,
        }));
        let output = match polled {
            Ok(Poll::Pending) => {
                self.park_job(&slot, future, index);
                return;
            }
            Ok(Poll::Ready(output)) => finish(&mut future, Ok(output)),
            Err(payload) => finish(&mut future, Err(payload)),
        };
        #[cfg(feature = "tracing")]
        drop(traced);
        if let Some(stats) = &self.stats {
            stats.job_finished();
        }
        let failed = (self.is_failure)(&output);
        if failed {
            // Fail fast: later jobs are dropped now, not when the consumer next looks.
            self.failed = true;
            let from = cancel_from_after_failure(index, self.ordered);
            self.shared.cancel_from(from);
        }
        {
            let mut cell = lock(&slot.cell);
            cell.future = Some(future);
            cell.output = Some(output);
        }
        slot.state.to_done();
        self.finished.push(slot);
    }

    /// The claim: the future is taken and the cutoff checked under the cell's lock, the
    /// lock a cancellation sweeps under after it moved the cutoff. So a job is either
    /// claimed before its cancellation (it is polled, and dropped once its poll
    /// returns) or dropped by the sweep, never polled after it. Returns `None` when the
    /// job is cancelled (dropping it here if the sweep has not) or already gone.
    fn claim(&self, slot: &Slot<Fut>) -> Option<(FutureBox<Fut>, u64)> {
        let mut cell = lock(&slot.cell);
        if self.shared.is_cancelled(cell.index) {
            if cancel_job(cell) {
                self.shared.count_cancelled(1);
            }
            return None;
        }
        let future = cell.future.take()?;
        Some((future, cell.index))
    }

    /// Returns a pending job's future to its slot, or drops it if it was cancelled
    /// meanwhile; queues the job again if it was woken during the poll.
    fn park_job(&mut self, slot: &Arc<Slot<Fut>>, future: FutureBox<Fut>, index: u64) {
        let mut cell = lock(&slot.cell);
        cell.future = Some(future);
        // Checked under the cell's lock: a cancellation sweeps cells under the same lock
        // after setting the cutoff, so the job is dropped by one side or the other.
        if self.shared.is_cancelled(index) {
            if cancel_job(cell) {
                self.shared.count_cancelled(1);
            }
            slot.state.to_done();
            return;
        }
        cell.waited = true;
        drop(cell);
        if !slot.state.to_idle() {
            // Woken while it ran: it goes to the back of the queue.
            self.shared.schedule(Arc::clone(slot));
        }
    }

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
                drop_contained(slot.take_output());
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

    /// After a job's poll: whether to yield before the next one.
    ///
    /// A task woken from inside this one (a helper driver, or the consumer) sits in this
    /// worker's LIFO slot, where no other worker can steal it: yield so that it runs
    /// while this driver polls its next job, which may be long. With one worker nothing
    /// else can run during that poll anyway, and with no job queued there is no next
    /// poll, so the consumer counts only when both hold.
    fn yields_after_poll(&self, woke_helper: bool, woke_consumer: bool, polls: usize) -> bool {
        let woke_consumer = woke_consumer
            && self.other_workers
            && self.shared.watch.front_push.load(Ordering::Relaxed) != 0;
        woke_helper
            || woke_consumer
            || polls >= POLLS_PER_TURN
            || !tokio::task::coop::has_budget_remaining()
    }
}

/// The result of a job whose future finished (`Ready`, or a panic): its future is
/// dropped now, and a panic in that destructor is the job's panic (replacing a `Ready`
/// output, which is dropped with its own destructor panic contained).
fn finish<T, Fut>(future: &mut FutureBox<Fut>, outcome: Outcome<T>) -> Outcome<T> {
    let destructor: Option<Payload> = drop_job(future);
    match (outcome, destructor) {
        (Ok(output), Some(payload)) => {
            drop_contained(output);
            Err(payload)
        }
        (outcome, None) => outcome,
        (outcome, Some(payload)) => {
            // The job's own panic wins; the destructor's is contained.
            drop_contained(payload);
            outcome
        }
    }
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
        // Jobs' spans go to the stage's subscriber, even where it is not this worker's
        // default (a subscriber set for one thread only).
        #[cfg(feature = "tracing")]
        let _dispatch = this
            .span
            .with_subscriber(|(_, dispatch)| dispatch.clone())
            .map(|dispatch| tracing::dispatcher::set_default(&dispatch));
        let mut polls = 0;
        loop {
            if this.role == Role::Standby && this.look_while_standing(cx).is_pending() {
                return Poll::Pending;
            }
            let slot = match this.next_job(&shared, cx) {
                Next::Poll(slot) => slot,
                Next::Pending => return Poll::Pending,
                Next::Exit => return Poll::Ready(()),
            };
            let wakes_before = shared.helper_wakes.load(Ordering::Relaxed);
            this.run(slot);
            // A result never waits in a driver while it polls another job.
            let woke_consumer = this.hand_over();
            polls += 1;
            let woke_helper = shared.helper_wakes.load(Ordering::Relaxed) != wakes_before;
            if this.yields_after_poll(woke_helper, woke_consumer, polls) {
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
        self.shared.runtime_shut_down();
    }
}
