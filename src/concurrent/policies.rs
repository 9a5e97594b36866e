//! The failure policies as the engine applies them: how an attempt's outcome becomes an
//! item, a retry, or the end of the run ([`Policies`], the [`Settle`] of the guarded
//! operators), and the per-attempt timeout of async jobs ([`Timed`]).

use std::collections::{HashMap, VecDeque};
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
    /// waited `timeout`, timed on tokio's clock from its first poll that returned
    /// `Pending`. The job is polled before the timer: a job ready at its deadline
    /// succeeds.
    pub(crate) struct Timed<Fut> {
        #[pin]
        future: Fut,
        timeout: Option<Duration>,
        // Boxed, and made only once the attempt waits: a job that finishes at its first
        // poll moves no timer around.
        deadline: Option<Pin<Box<Sleep>>>,
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
        let this = self.project();
        if let Poll::Ready(out) = this.future.poll(cx) {
            return Poll::Ready(TimedOutput::Finished(out));
        }
        let Some(timeout) = *this.timeout else {
            return Poll::Pending;
        };
        // Timed from the attempt's first wait: one that finishes at its first poll (or
        // never waits, and so cannot be interrupted anyway) costs no timer.
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(TimedOutput::TimedOut(timeout)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Panics, naming `timeout` and `operator`, if `timeout` is zero.
#[track_caller]
pub(crate) fn check_timeout(timeout: Duration, operator: &str) {
    if timeout.is_zero() {
        panic!("flowgate: `with_timeout` needs a `timeout` above zero on `{operator}`");
    }
}

/// What the policies keep of an item while it may be retried.
struct Kept<T> {
    input: T,
    /// Attempts started so far.
    attempts: u32,
    /// When its first attempt started: read only where a total time is set.
    first_started: Option<Instant>,
}

/// Values by position, for the positions pulled and not yet settled: a ring from the
/// oldest one kept. Positions are inserted in increasing order (those never inserted,
/// such as upstream errors, are empty places), so every operation is O(1) and the ring
/// spans at most the window.
struct ByPosition<T> {
    base: u64,
    places: VecDeque<Option<T>>,
}

impl<T> ByPosition<T> {
    fn new() -> Self {
        ByPosition {
            base: 0,
            places: VecDeque::new(),
        }
    }

    fn offset(&self, index: u64) -> Option<usize> {
        let offset = usize::try_from(index.checked_sub(self.base)?).ok()?;
        (offset < self.places.len()).then_some(offset)
    }

    fn insert(&mut self, index: u64, value: T) {
        if self.places.is_empty() {
            self.base = index;
        }
        let offset = usize::try_from(index - self.base)
            .expect("flowgate: kept positions lie within the window");
        debug_assert!(offset >= self.places.len(), "positions are kept in order");
        if offset > self.places.len() {
            self.places.resize_with(offset, || None);
        }
        self.places.push_back(Some(value));
    }

    fn get_mut(&mut self, index: u64) -> Option<&mut T> {
        let offset = self.offset(index)?;
        self.places[offset].as_mut()
    }

    fn remove(&mut self, index: u64) -> Option<T> {
        let offset = self.offset(index)?;
        let value = self.places[offset].take();
        while let Some(None) = self.places.front() {
            self.places.pop_front();
            self.base += 1;
        }
        value
    }
}

/// The failure policies of a guarded operator: the engine's [`Settle`] for it.
pub(crate) struct Policies<T, E> {
    retry: Option<Retry<E>>,
    /// How to copy an input for its next attempt (set with the retry policy, which
    /// needs `T: Clone`).
    copy: Option<fn(&T) -> T>,
    pub(crate) keep_going: bool,
    pub(crate) catch_panics: bool,
    /// Items that may be retried, by position: only while a retry policy is set.
    kept: ByPosition<Kept<T>>,
    /// Whether the kept input of an item that failed for good is put aside for its
    /// dead letter (see `dead_letters`).
    pub(crate) keep_failed: bool,
    /// Inputs of items that failed for good, by position, until their dead letter
    /// takes them.
    failed: HashMap<u64, T>,
    /// Retries started or scheduled so far.
    pub(crate) retried: u64,
    /// Whether an item's first start is read (the retry policy has a total time).
    clock: bool,
}

impl<T, E> Policies<T, E> {
    pub(crate) fn new() -> Self {
        Policies {
            retry: None,
            copy: None,
            keep_going: false,
            catch_panics: false,
            kept: ByPosition::new(),
            keep_failed: false,
            failed: HashMap::new(),
            retried: 0,
            clock: false,
        }
    }

    pub(crate) fn set_retry(&mut self, retry: Retry<E>)
    where
        T: Clone,
    {
        self.clock = retry.has_total_time();
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
                first_started: self.clock.then(Instant::now),
            };
            self.kept.insert(index, kept);
        }
    }

    #[inline]
    fn settle(&mut self, index: u64, outcome: Outcome<O>) -> Settled<Self::Item> {
        match outcome {
            Ok(out) if out.succeeded() => {
                self.forget(index);
                match out.split() {
                    Attempt::Done(value) => Settled::Final(Ok(Ok(value)), false),
                    _ => unreachable!("flowgate: a successful attempt splits into its value"),
                }
            }
            outcome => self.settle_unsuccessful(index, outcome),
        }
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
            .get_mut(index)
            .expect("flowgate: an item waiting for a retry keeps its input");
        let copy = self.copy.expect("flowgate: retries copy their input");
        copy(&kept.input)
    }

    #[inline]
    fn ends_run(&self, item: &Self::Item) -> bool {
        item.is_err() && !self.keep_going
    }
}

impl<T, E> Policies<T, E> {
    /// An attempt that did not succeed: an error, a timeout or a panic.
    #[inline(never)]
    fn settle_unsuccessful<O>(
        &mut self,
        index: u64,
        outcome: Outcome<O>,
    ) -> Settled<Result<O::Ok, Error<E>>>
    where
        O: AttemptOut<Err = E>,
    {
        match outcome {
            Ok(out) => match out.split() {
                Attempt::Done(value) => {
                    self.forget(index);
                    Settled::Final(Ok(Ok(value)), false)
                }
                Attempt::Failed(error) => {
                    let worth = self
                        .retry
                        .as_ref()
                        .is_some_and(|retry| retry.worth_retrying(&error));
                    self.settle_failure(index, worth, |attempts| {
                        Error::failed(index, attempts, error)
                    })
                }
                Attempt::TimedOut(after) => self.settle_failure(index, true, |attempts| {
                    Error::timed_out(index, attempts, after)
                }),
            },
            Err(payload) if self.catch_panics => {
                let message = panic_message(payload.as_ref());
                drop_contained(payload);
                self.settle_failure(index, true, |attempts| {
                    Error::panicked(index, attempts, message)
                })
            }
            Err(payload) => {
                self.forget(index);
                Settled::Final(Err(payload), true)
            }
        }
    }

    /// A failed attempt of the item at `index`: a retry if it is `worth` one and the
    /// policy allows it, otherwise the item's final failure, made by `error` from the
    /// attempts made.
    fn settle_failure<U>(
        &mut self,
        index: u64,
        worth: bool,
        error: impl FnOnce(u32) -> Error<E>,
    ) -> Settled<Result<U, Error<E>>> {
        let attempts = self.kept.get_mut(index).map_or(1, |kept| kept.attempts);
        if worth {
            if let (Some(retry), Some(kept)) = (&self.retry, self.kept.get_mut(index)) {
                let elapsed = kept.first_started.map_or(Duration::ZERO, |first| {
                    Instant::now().saturating_duration_since(first)
                });
                if let Some(delay) = retry.next_delay(index, attempts, elapsed) {
                    kept.attempts += 1;
                    self.retried += 1;
                    return Settled::Retry(delay);
                }
            }
        }
        if self.keep_failed {
            if let Some(kept) = self.kept.remove(index) {
                self.failed.insert(index, kept.input);
            }
        } else {
            self.forget(index);
        }
        Settled::Final(Ok(Err(error(attempts))), !self.keep_going)
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
        if let Some(kept) = self.kept.remove(index) {
            if std::mem::needs_drop::<T>() {
                drop_contained(kept);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ByPosition;

    #[test]
    fn values_by_position_skip_gaps_and_shrink_from_the_front() {
        let mut kept = ByPosition::new();
        kept.insert(3, "three");
        kept.insert(4, "four");
        kept.insert(7, "seven");
        assert_eq!(kept.get_mut(5), None, "a gap");
        assert_eq!(kept.get_mut(2), None, "before the ring");
        assert_eq!(kept.get_mut(9), None, "after the ring");
        assert_eq!(kept.remove(4), Some("four"));
        assert_eq!(kept.places.len(), 5, "the front is still kept");
        assert_eq!(kept.remove(3), Some("three"));
        assert_eq!(
            (kept.base, kept.places.len()),
            (7, 1),
            "gaps dropped with the front"
        );
        assert_eq!(kept.remove(7), Some("seven"));
        assert!(kept.places.is_empty());
        assert_eq!(kept.remove(7), None);
        kept.insert(100, "again");
        assert_eq!(kept.get_mut(100), Some(&mut "again"));
    }
}
