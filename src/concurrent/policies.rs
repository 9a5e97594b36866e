//! The failure policies as the engine applies them: how an attempt's outcome becomes an
//! item, a retry, or the end of the run ([`Policies`], the [`Settle`] of the guarded
//! operators), and the per-attempt timeout of async jobs ([`Timed`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::{drop_contained, Outcome, Settle, Settled};
use crate::error::{panic_message, Error};
use crate::policy::Retry;

/// How one attempt ended, as the policies see it.
pub(crate) enum Attempt<U, E> {
    Done(U),
    Failed(E),
    TimedOut(Duration),
}

/// A job's output split into success, the work's error, or a timeout.
pub(crate) trait AttemptOut {
    type Ok;
    type Err;
    fn split(self) -> Attempt<Self::Ok, Self::Err>;
    fn succeeded(&self) -> bool;
}

impl<U, E> AttemptOut for Result<U, E> {
    type Ok = U;
    type Err = E;

    fn split(self) -> Attempt<U, E> {
        match self {
            Ok(value) => Attempt::Done(value),
            Err(error) => Attempt::Failed(error),
        }
    }

    fn succeeded(&self) -> bool {
        self.is_ok()
    }
}

/// The output of a [`Timed`] job: the job's own, or its timeout.
pub(crate) enum TimedOutput<O> {
    Finished(O),
    TimedOut(Duration),
}

impl<O: AttemptOut> AttemptOut for TimedOutput<O> {
    type Ok = O::Ok;
    type Err = O::Err;

    fn split(self) -> Attempt<O::Ok, O::Err> {
        match self {
            TimedOutput::Finished(out) => out.split(),
            TimedOutput::TimedOut(after) => Attempt::TimedOut(after),
        }
    }

    fn succeeded(&self) -> bool {
        match self {
            TimedOutput::Finished(out) => out.succeeded(),
            TimedOutput::TimedOut(_) => false,
        }
    }
}

pin_project! {
    /// One attempt of an async job, given up (its future dropped with it) once it has
    /// run `timeout`, timed from its first poll on tokio's clock. The job is polled
    /// before the timer: a job ready at its deadline succeeds.
    pub(crate) struct Timed<Fut> {
        #[pin]
        future: Fut,
        timeout: Option<Duration>,
        #[pin]
        deadline: Option<Sleep>,
    }
}

impl<Fut> Timed<Fut> {
    pub(crate) fn new(future: Fut, timeout: Option<Duration>) -> Self {
        Timed {
            future,
            timeout,
            deadline: None,
        }
    }
}

impl<Fut: Future> Future for Timed<Fut> {
    type Output = TimedOutput<Fut::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(timeout) = *this.timeout else {
            return this.future.poll(cx).map(TimedOutput::Finished);
        };
        if this.deadline.is_none() {
            this.deadline
                .set(Some(tokio::time::sleep_until(Instant::now() + timeout)));
        }
        if let Poll::Ready(out) = this.future.poll(cx) {
            return Poll::Ready(TimedOutput::Finished(out));
        }
        match this.deadline.as_pin_mut().map(|deadline| deadline.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(TimedOutput::TimedOut(timeout)),
            _ => Poll::Pending,
        }
    }
}

/// What the policies keep of an item while it may be retried.
struct Kept<T> {
    input: T,
    /// Attempts started so far.
    attempts: u32,
    first_started: Instant,
}

/// The failure policies of a guarded operator: the engine's [`Settle`] for it.
pub(crate) struct Policies<T, E> {
    pub(crate) timeout: Option<Duration>,
    retry: Option<Retry<E>>,
    /// How to copy an input for its next attempt (set with the retry policy, which
    /// needs `T: Clone`).
    copy: Option<fn(&T) -> T>,
    pub(crate) keep_going: bool,
    pub(crate) catch_panics: bool,
    /// Items that may be retried, by position: only while a retry policy is set.
    kept: HashMap<u64, Kept<T>>,
    /// Whether the kept input of an item that failed for good is put aside for its
    /// dead letter (see `dead_letters`).
    pub(crate) keep_failed: bool,
    /// Inputs of items that failed for good, by position, until their dead letter
    /// takes them.
    failed: HashMap<u64, T>,
    /// Retries started or scheduled so far.
    pub(crate) retried: u64,
}

impl<T, E> Policies<T, E> {
    pub(crate) fn new() -> Self {
        Policies {
            timeout: None,
            retry: None,
            copy: None,
            keep_going: false,
            catch_panics: false,
            kept: HashMap::new(),
            keep_failed: false,
            failed: HashMap::new(),
            retried: 0,
        }
    }

    pub(crate) fn set_retry(&mut self, retry: Retry<E>)
    where
        T: Clone,
    {
        self.retry = Some(retry);
        self.copy = Some(T::clone);
    }
}

/// Any failure or panic ends the run: neither retries nor keep-going.
fn fails_on_any<O: AttemptOut>(outcome: &Outcome<O>) -> bool {
    match outcome {
        Ok(out) => !out.succeeded(),
        Err(_) => true,
    }
}

/// Only a panic ends the run at once (a failure may be retried or kept going).
fn fails_on_panic<O>(outcome: &Outcome<O>) -> bool {
    outcome.is_err()
}

/// Nothing ends the run at once: the consumer decides.
fn fails_never<O>(_: &Outcome<O>) -> bool {
    false
}

impl<T, O> Settle<T, O> for Policies<T, O::Err>
where
    O: AttemptOut,
{
    type Item = Result<O::Ok, Error<O::Err>>;

    fn lane_failure(&self) -> fn(&Outcome<O>) -> bool {
        if self.retry.is_none() && !self.keep_going {
            fails_on_any::<O>
        } else if !self.catch_panics {
            fails_on_panic::<O>
        } else {
            fails_never::<O>
        }
    }

    fn admitted(&mut self, index: u64, input: &T) {
        if let Some(copy) = self.copy {
            let kept = Kept {
                input: copy(input),
                attempts: 1,
                first_started: Instant::now(),
            };
            self.kept.insert(index, kept);
        }
    }

    fn settle(&mut self, index: u64, outcome: Outcome<O>) -> Settled<Self::Item> {
        let attempts = self.kept.get(&index).map_or(1, |kept| kept.attempts);
        let (error, worth_retrying) = match outcome {
            Ok(out) => match out.split() {
                Attempt::Done(value) => {
                    self.forget(index);
                    return Settled::Final(Ok(Ok(value)), false);
                }
                Attempt::Failed(error) => {
                    let worth = self
                        .retry
                        .as_ref()
                        .is_some_and(|retry| retry.worth_retrying(&error));
                    (Error::failed(index, attempts, error), worth)
                }
                Attempt::TimedOut(after) => (Error::timed_out(index, attempts, after), true),
            },
            Err(payload) if self.catch_panics => {
                let message = panic_message(payload.as_ref());
                drop_contained(payload);
                (Error::panicked(index, attempts, message), true)
            }
            Err(payload) => {
                self.forget(index);
                return Settled::Final(Err(payload), true);
            }
        };
        if worth_retrying {
            if let (Some(retry), Some(kept)) = (&self.retry, self.kept.get_mut(&index)) {
                let elapsed = Instant::now().saturating_duration_since(kept.first_started);
                if let Some(delay) = retry.next_delay(index, attempts, elapsed) {
                    kept.attempts += 1;
                    self.retried += 1;
                    return Settled::Retry(delay);
                }
            }
        }
        if self.keep_failed {
            if let Some(kept) = self.kept.remove(&index) {
                self.failed.insert(index, kept.input);
            }
        } else {
            self.forget(index);
        }
        Settled::Final(Ok(Err(error)), !self.keep_going)
    }

    fn rejected(&mut self, index: u64, out: O) -> (Outcome<Self::Item>, bool) {
        match out.split() {
            Attempt::Done(value) => (Ok(Ok(value)), false),
            Attempt::Failed(error) => (Ok(Err(Error::failed(index, 0, error))), !self.keep_going),
            Attempt::TimedOut(after) => {
                (Ok(Err(Error::timed_out(index, 0, after))), !self.keep_going)
            }
        }
    }

    fn retry_input(&mut self, index: u64) -> T {
        let kept = self
            .kept
            .get(&index)
            .expect("flowgate: an item waiting for a retry keeps its input");
        let copy = self.copy.expect("flowgate: retries copy their input");
        copy(&kept.input)
    }

    fn ends_run(&self, item: &Self::Item) -> bool {
        item.is_err() && !self.keep_going
    }
}

impl<T, E> Policies<T, E> {
    /// The input of the item at `position`, which failed for good, if it was kept.
    pub(crate) fn take_failed(&mut self, position: u64) -> Option<T> {
        self.failed.remove(&position)
    }

    /// Drops what was kept for a settled item (its input is the user's: a panic in its
    /// destructor is contained, as for any value the engine drops on its own).
    fn forget(&mut self, index: u64) {
        if !self.kept.is_empty() {
            if let Some(kept) = self.kept.remove(&index) {
                drop_contained(kept);
            }
        }
    }
}
