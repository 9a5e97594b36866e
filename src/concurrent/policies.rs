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

/// Values by position, for the positions admitted and not yet settled (at most the
/// window's worth: an item settles when its attempt's outcome is taken back, in
/// whatever order that happens).
///
/// A direct-mapped table: position `p` lives at `p & mask`, so the usual insert,
/// lookup and removal cost a mask and a compare. A position whose place is taken by an
/// older one still unsettled (an unordered run whose item waits far behind the others)
/// goes to a small map beside the table; the table doubles once that map holds more
/// than a quarter of its size. Memory follows the number of positions kept, never the
/// span between the oldest and the newest.
struct ByPosition<T> {
    table: Vec<Option<(u64, T)>>,
    spilled: HashMap<u64, T>,
}

impl<T> ByPosition<T> {
    /// The table's first size.
    const FIRST: usize = 64;

    fn new() -> Self {
        ByPosition {
            table: Vec::new(),
            spilled: HashMap::new(),
        }
    }

    #[inline]
    fn place(&self, index: u64) -> usize {
        // The table's length is a power of two: truncating to usize keeps the low bits.
        (index as usize) & (self.table.len() - 1)
    }

    #[inline]
    fn insert(&mut self, index: u64, value: T) {
        if self.table.is_empty() {
            self.table.resize_with(Self::FIRST, || None);
        }
        let place = self.place(index);
        match &mut self.table[place] {
            free @ None => *free = Some((index, value)),
            Some(_) => self.spill(index, value),
        }
    }

    #[cold]
    fn spill(&mut self, index: u64, value: T) {
        let previous = self.spilled.insert(index, value);
        debug_assert!(previous.is_none(), "a position is kept once");
        if self.spilled.len() > self.table.len() / 4 {
            self.grow();
        }
    }

    /// Doubles the table, moving the spilled values that find a free place into it.
    fn grow(&mut self) {
        let size = self.table.len() * 2;
        let old = std::mem::take(&mut self.table);
        self.table.resize_with(size, || None);
        // Two positions with different places keep different places in a table twice
        // the size: the table's own values never meet.
        for (index, value) in old.into_iter().flatten() {
            let place = self.place(index);
            self.table[place] = Some((index, value));
        }
        let spilled = std::mem::take(&mut self.spilled);
        for (index, value) in spilled {
            let place = self.place(index);
            match &mut self.table[place] {
                free @ None => *free = Some((index, value)),
                Some(_) => {
                    self.spilled.insert(index, value);
                }
            }
        }
    }

    #[inline]
    fn get_mut(&mut self, index: u64) -> Option<&mut T> {
        if self.table.is_empty() {
            return None;
        }
        let place = self.place(index);
        match &mut self.table[place] {
            Some((at, value)) if *at == index => Some(value),
            _ => self.spilled.get_mut(&index),
        }
    }

    #[inline]
    fn remove(&mut self, index: u64) -> Option<T> {
        if self.table.is_empty() {
            return None;
        }
        let place = self.place(index);
        let entry = &mut self.table[place];
        if matches!(entry, Some((at, _)) if *at == index) {
            return entry.take().map(|(_, value)| value);
        }
        if self.spilled.is_empty() {
            None
        } else {
            self.spilled.remove(&index)
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.iter().flatten().count() + self.spilled.len()
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
    /// Inputs of the items that may be retried, by position: only while a retry policy
    /// is set.
    kept: ByPosition<T>,
    /// Attempts started so far, for the items whose attempt failed at least once (one
    /// attempt for the others).
    attempts: HashMap<u64, u32>,
    /// When each kept item's first attempt started: only where the retry policy has a
    /// total time.
    first_started: ByPosition<Instant>,
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
            attempts: HashMap::new(),
            first_started: ByPosition::new(),
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

    #[inline]
    fn admitted(&mut self, index: u64, input: &T) {
        if let Some(copy) = self.copy {
            self.kept.insert(index, copy(input));
            if self.clock {
                self.first_started.insert(index, Instant::now());
            }
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
        copy(kept)
    }

    #[inline]
    fn ends_run(&self, item: &Self::Item) -> bool {
        item.is_err() && !self.keep_going
    }

    #[inline]
    fn is_failed(&self, item: &Self::Item) -> bool {
        item.is_err()
    }

    #[cfg(feature = "tracing")]
    fn failure_of(&self, item: &Self::Item) -> Option<(&'static str, u32)> {
        let error = item.as_ref().err()?;
        let kind = if error.is_timeout() {
            "timeout"
        } else if error.is_panic() {
            "panic"
        } else {
            "error"
        };
        Some((kind, error.attempts()))
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
        let attempts = self.attempts.get(&index).copied().unwrap_or(1);
        if worth {
            // Only a kept item can have another attempt: its input is needed again.
            let kept = self.kept.get_mut(index).is_some();
            if let (Some(retry), true) = (&self.retry, kept) {
                let elapsed = self
                    .first_started
                    .get_mut(index)
                    .map_or(Duration::ZERO, |first| {
                        Instant::now().saturating_duration_since(*first)
                    });
                if let Some(delay) = retry.next_delay(index, attempts, elapsed) {
                    self.attempts.insert(index, attempts + 1);
                    self.retried += 1;
                    return Settled::Retry(delay);
                }
            }
        }
        if self.keep_failed {
            if let Some(input) = self.kept.remove(index) {
                self.failed.insert(index, input);
            }
            self.forget_retries(index);
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
    #[inline]
    fn forget(&mut self, index: u64) {
        if let Some(input) = self.kept.remove(index) {
            if std::mem::needs_drop::<T>() {
                drop_contained(input);
            }
        }
        self.forget_retries(index);
    }

    /// Drops the item's count of attempts and its start time, if it has them.
    #[inline]
    fn forget_retries(&mut self, index: u64) {
        if !self.attempts.is_empty() {
            self.attempts.remove(&index);
        }
        if self.clock {
            self.first_started.remove(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ByPosition;

    #[test]
    fn values_by_position_are_found_and_removed_once() {
        let mut kept = ByPosition::new();
        assert_eq!(kept.get_mut(0), None, "nothing kept yet");
        assert_eq!(kept.remove(0), None);
        kept.insert(3, "three");
        kept.insert(4, "four");
        kept.insert(7, "seven");
        assert_eq!(kept.get_mut(5), None, "a gap");
        assert_eq!(
            kept.get_mut(3 + 64),
            None,
            "the same place, another position"
        );
        assert_eq!(kept.remove(4), Some("four"));
        assert_eq!(kept.remove(4), None, "removed once");
        assert_eq!(kept.get_mut(7), Some(&mut "seven"));
        assert_eq!(kept.remove(3), Some("three"));
        assert_eq!(kept.remove(7), Some("seven"));
        assert_eq!(kept.len(), 0);
        kept.insert(100, "again");
        assert_eq!(kept.get_mut(100), Some(&mut "again"));
    }

    #[test]
    fn a_position_kept_far_behind_the_others_costs_no_memory_for_the_span() {
        // Unordered: position 0 waits while a million others pass, 32 at a time.
        let mut kept = ByPosition::new();
        kept.insert(0u64, 0u64);
        let live = 32u64;
        for index in 1..1_000_000u64 {
            kept.insert(index, index);
            if index > live {
                assert_eq!(kept.remove(index - live), Some(index - live));
            }
        }
        assert_eq!(kept.remove(0), Some(0), "the old position is still there");
        assert!(
            kept.table.len() <= 256,
            "the table follows the positions kept, not their span: {} places",
            kept.table.len()
        );
        assert_eq!(kept.len(), live as usize);
    }

    #[test]
    fn many_positions_kept_at_once_grow_the_table_and_all_stay_found() {
        let mut kept = ByPosition::new();
        // Every 64th position first: all share one place in the first table.
        let order: Vec<u64> = (0..64)
            .flat_map(|offset| (0..40).map(move |round| round * 64 + offset))
            .collect();
        for &index in &order {
            kept.insert(index, index * 10);
        }
        assert_eq!(kept.len(), order.len());
        for &index in &order {
            assert_eq!(kept.get_mut(index).copied(), Some(index * 10), "{index}");
        }
        for &index in order.iter().rev() {
            assert_eq!(kept.remove(index), Some(index * 10), "{index}");
        }
        assert_eq!(kept.len(), 0);
        assert!(kept.spilled.is_empty());
    }
}
