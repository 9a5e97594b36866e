//! Graceful shutdown: [`ShutdownReport`] and [`NotCompleted`], and the engine's side of
//! `with_shutdown` ([`Shutdown`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The positions a stream shut down by its token did not complete, so that a job can
/// resume from them: every position from [`first_not_pulled`](NotCompleted::first_not_pulled)
/// on (never pulled from upstream), and the [`cancelled`](NotCompleted::cancelled) ones
/// (pulled, but not yielded when the grace period ended).
///
/// Positions count upstream's items from 0, as the operator took them. Resuming needs
/// positions that mean the same on the next run: number the items before chunking with
/// `chunks_within`, whose boundaries depend on timing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotCompleted {
    first_not_pulled: u64,
    cancelled: Vec<u64>,
}

impl NotCompleted {
    /// The first position never pulled: it and every later one were not started.
    pub fn first_not_pulled(&self) -> u64 {
        self.first_not_pulled
    }

    /// The positions pulled but not yielded when the grace period ended (their work
    /// was cancelled, or their results could not leave in input order), in increasing
    /// order. Empty when the in-flight work finished within the grace period.
    pub fn cancelled(&self) -> &[u64] {
        &self.cancelled
    }

    /// Whether `position` was not completed.
    pub fn contains(&self, position: u64) -> bool {
        position >= self.first_not_pulled || self.cancelled.binary_search(&position).is_ok()
    }
}

impl fmt::Display for NotCompleted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "positions from {} on", self.first_not_pulled)?;
        if !self.cancelled.is_empty() {
            write!(
                f,
                ", and {} cancelled: {:?}",
                self.cancelled.len(),
                self.cancelled
            )?;
        }
        Ok(())
    }
}

/// A handle on a stream's shutdown report, from `shutdown_report()` on an operator
/// with [`with_shutdown`](crate::concurrent::MapConcurrent::with_shutdown). Cheap to
/// clone; read it from anywhere once the stream has ended.
#[derive(Clone, Debug, Default)]
pub struct ShutdownReport {
    report: Arc<Mutex<Option<NotCompleted>>>,
}

impl ShutdownReport {
    /// What the shutdown left undone: `None` while the stream runs, and when it ended
    /// without being shut down (upstream ran out, a failure ended it, or it was
    /// dropped).
    pub fn get(&self) -> Option<NotCompleted> {
        self.report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, not_completed: NotCompleted) {
        *self.report.lock().unwrap_or_else(PoisonError::into_inner) = Some(not_completed);
    }
}

/// Where a stream with a shutdown token stands.
enum Phase {
    /// Running; the future wakes the consumer when the token is cancelled.
    Running(Pin<Box<WaitForCancellationFutureOwned>>),
    /// Cancelled: nothing more is pulled; in-flight work has until the timer.
    Draining(Pin<Box<Sleep>>),
    /// Over: the report is written.
    Over,
}

/// The engine's side of `with_shutdown`.
pub(crate) struct Shutdown {
    token: CancellationToken,
    grace: Duration,
    phase: Phase,
    report: ShutdownReport,
}

/// What the engine does after a look at its shutdown.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Step {
    /// Nothing changed.
    Carry,
    /// The token was just cancelled: stop pulling (the grace period started).
    StopPulling,
    /// The grace period is over: cancel what is left and end.
    GraceOver,
}

impl Shutdown {
    pub(crate) fn new(token: CancellationToken, grace: Duration) -> Self {
        let cancelled = Box::pin(token.clone().cancelled_owned());
        Shutdown {
            token,
            grace,
            phase: Phase::Running(cancelled),
            report: ShutdownReport::default(),
        }
    }

    pub(crate) fn report(&self) -> ShutdownReport {
        self.report.clone()
    }

    /// Whether the token was cancelled (the stream pulls nothing more).
    pub(crate) fn stopped(&self) -> bool {
        !matches!(self.phase, Phase::Running(_))
    }

    /// A look without waiting: the token is read (an atomic load), the grace timer
    /// compared with the clock.
    pub(crate) fn look(&mut self) -> Step {
        match &self.phase {
            Phase::Running(_) if self.token.is_cancelled() => {
                self.start_grace();
                Step::StopPulling
            }
            Phase::Draining(timer) if Instant::now() >= timer.deadline() => Step::GraceOver,
            _ => Step::Carry,
        }
    }

    /// Before the consumer waits: registers its waker with the token or the grace
    /// timer. Returns the step to take if one is due already.
    pub(crate) fn register(&mut self, cx: &mut Context<'_>) -> Step {
        match &mut self.phase {
            Phase::Running(cancelled) => {
                if cancelled.as_mut().poll(cx).is_ready() {
                    self.start_grace();
                    return Step::StopPulling;
                }
                Step::Carry
            }
            Phase::Draining(timer) => match timer.as_mut().poll(cx) {
                Poll::Ready(()) => Step::GraceOver,
                Poll::Pending => Step::Carry,
            },
            Phase::Over => Step::Carry,
        }
    }

    fn start_grace(&mut self) {
        let timer = Box::pin(tokio::time::sleep(self.grace));
        self.phase = Phase::Draining(timer);
    }

    /// The stream ends: after a shutdown, the report is written.
    pub(crate) fn end(&mut self, first_not_pulled: u64, mut cancelled: Vec<u64>) {
        if self.stopped() && !matches!(self.phase, Phase::Over) {
            cancelled.sort_unstable();
            self.report.set(NotCompleted {
                first_not_pulled,
                cancelled,
            });
        }
        self.phase = Phase::Over;
    }
}
