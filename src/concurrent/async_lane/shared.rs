//! What the consumer, the drivers and the wakers share: one `Arc<Shared>` per lane.
//!
//! Owns: the [`Shared`] struct (its fields are described once, in the protocol notes
//! of `mod.rs`), the exchange where finished jobs wait for the consumer, the
//! cancellation cutoff and its sweep.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use crate::stats::Core;
use std::task::Waker;

use super::lock;
use super::run_queue::{RunQueue, Watch};
use super::slot::{cancel_job, Slot};
use super::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering};

pub(super) struct Shared<Fut: Future> {
    pub(super) run: Mutex<RunQueue<Fut>>,
    /// What a standing-by driver watches, on a cache line of its own.
    pub(super) watch: Watch,
    pub(super) exchange: Mutex<Exchange<Fut>>,
    /// Jobs at this position or later are cancelled.
    pub(super) cutoff: AtomicU64,
    /// Set first when the lane shuts.
    pub(super) closed: AtomicBool,
    /// Set when a failure was handed over and the consumer has not collected since.
    pub(super) failure_handed: AtomicBool,
    /// Set while the consumer waits for a result (it registered its waker).
    pub(super) consumer_waiting: AtomicBool,
    /// Set while the results the consumer last took back came slowly (`Pace::Slow`).
    pub(super) results_slow: AtomicBool,
    /// Counts wake-ups of parked drivers, so a driver can tell it woke one itself.
    pub(super) helper_wakes: AtomicUsize,
    /// Every slot ever made (at most `limit`), for cancellation sweeps.
    pub(super) slots: Mutex<Vec<Arc<Slot<Fut>>>>,
    /// Set when a driver task was dropped while the lane was open.
    pub(super) runtime_gone: AtomicBool,
    /// The stage's statistics, when asked for; set before the lane is bound.
    pub(super) stats: OnceLock<Arc<Core>>,
    /// The stage's span; set before the lane is bound.
    #[cfg(feature = "tracing")]
    pub(super) span: OnceLock<tracing::Span>,
}

/// Finished jobs on their way to the consumer, and the consumer's waker.
pub(super) struct Exchange<Fut: Future> {
    pub(super) finished: Vec<Arc<Slot<Fut>>>,
    pub(super) consumer: Option<Waker>,
}

impl<Fut: Future> Shared<Fut> {
    pub(super) fn new() -> Self {
        Shared {
            run: Mutex::new(RunQueue::new()),
            watch: Watch::new(),
            exchange: Mutex::new(Exchange {
                finished: Vec::new(),
                consumer: None,
            }),
            cutoff: AtomicU64::new(u64::MAX),
            closed: AtomicBool::new(false),
            consumer_waiting: AtomicBool::new(false),
            results_slow: AtomicBool::new(false),
            failure_handed: AtomicBool::new(false),
            helper_wakes: AtomicUsize::new(0),
            slots: Mutex::new(Vec::new()),
            runtime_gone: AtomicBool::new(false),
            stats: OnceLock::new(),
            #[cfg(feature = "tracing")]
            span: OnceLock::new(),
        }
    }

    /// Counts `count` jobs dropped before their end in the statistics, if any.
    pub(super) fn count_cancelled(&self, count: u64) {
        if let Some(stats) = self.stats.get() {
            stats.jobs_cancelled(count);
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(super) fn is_cancelled(&self, index: u64) -> bool {
        index >= self.cutoff.load(Ordering::Acquire)
    }

    /// Cancels every job at `from` or later: the cutoff first, so that no driver claims
    /// one of them from now on, then a sweep that drops the futures not being polled (a
    /// driver polling one drops it when its poll returns, see `Driver::park_job`).
    /// Runs no user code under a lock: each future is dropped after its cell's lock is
    /// released, and a panic in its destructor is contained (the failure or the drop
    /// that cancelled it is what the consumer sees).
    pub(super) fn cancel_from(&self, from: u64) {
        self.cutoff.fetch_min(from, Ordering::AcqRel);
        let slots = lock(&self.slots).clone();
        let mut cancelled = 0;
        for slot in slots {
            let cell = lock(&slot.cell);
            if cell.index >= from && cancel_job(cell) {
                cancelled += 1;
            }
        }
        self.count_cancelled(cancelled);
    }

    /// The runtime dropped a driver task while the lane was open (see `Driver`'s `Drop`):
    /// the jobs are lost. Tells the consumer, and wakes it to learn it.
    pub(super) fn runtime_shut_down(&self) {
        if self.is_closed() {
            return;
        }
        self.runtime_gone.store(true, Ordering::Release);
        let consumer = lock(&self.exchange).consumer.take();
        if let Some(waker) = consumer {
            waker.wake();
        }
    }
}
