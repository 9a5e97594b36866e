//! [`DeadLetters`]: successes flow on, failures go to a sink.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use futures_core::{FusedStream, Stream};
use futures_sink::Sink;
use pin_project_lite::pin_project;

use crate::error::Error;

/// A failed item, as [`dead_letters`](crate::concurrent::Guarded::dead_letters) sends it
/// to its sink: the failure, and the item when the operator kept it (with
/// [`with_retry`](crate::concurrent::Guarded::with_retry), which keeps a copy of every
/// item until it settles; never for an `Err` item from upstream).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter<T, E> {
    /// Why the item failed, with its position and the attempts made.
    pub error: Error<E>,
    /// The item (the input of `f`), when the operator kept it.
    pub item: Option<T>,
}

/// What a run with dead letters did: see [`DeadLetters::summary`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Items yielded as successes.
    pub succeeded: u64,
    /// Items sent to the sink as dead letters.
    pub failed: u64,
    /// Retries made (attempts after the first), over all items.
    pub retried: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} succeeded, {} failed, {} retries",
            self.succeeded, self.failed, self.retried
        )
    }
}

/// A handle on the [`Summary`] of a run with dead letters, filled when the stream ends
/// (upstream ran out, or the sink failed). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    summary: Arc<Mutex<Option<Summary>>>,
}

impl RunSummary {
    /// The summary, once the stream has ended; `None` before, and when it was dropped
    /// before its end.
    pub fn get(&self) -> Option<Summary> {
        *self.summary.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, summary: Summary) {
        *self.summary.lock().unwrap_or_else(PoisonError::into_inner) = Some(summary);
    }
}

pub(crate) mod sealed {
    use std::pin::Pin;

    /// The guarded operators, whose failures a [`DeadLetters`](super::DeadLetters)
    /// stream sends on. Sealed: implemented inside the crate only.
    pub trait Supervised {
        /// The input of `f` (kept with a retry policy).
        type Input;
        /// Makes failures flow on and keeps failed inputs aside.
        #[doc(hidden)]
        fn keep_failed(&mut self);
        /// The kept input of the item at `position`, which failed for good.
        #[doc(hidden)]
        fn take_failed(self: Pin<&mut Self>, position: u64) -> Option<Self::Input>;
        /// Retries made so far.
        #[doc(hidden)]
        fn retried(&self) -> u64;
    }
}

use sealed::Supervised;

pin_project! {
    /// Stream for [`dead_letters`](crate::concurrent::Guarded::dead_letters): yields the
    /// successes as `Ok`, sends each failure to the sink as a [`DeadLetter`], and ends
    /// with the sink's error, as an `Err`, if the sink fails or closes.
    ///
    /// Buffering is bounded: while the sink is not ready for a dead letter, that one
    /// letter waits and nothing more is taken from the operator (its bound then holds
    /// the rest back). The sink is flushed whenever the operator has nothing to yield,
    /// and at the end; it is not closed (it may be shared).
    #[must_use = "streams do nothing unless polled"]
    pub struct DeadLetters<S, Si, T, E> {
        #[pin]
        inner: Option<S>,
        #[pin]
        sink: Si,
        letter: Option<DeadLetter<T, E>>,
        unflushed: bool,
        counts: Summary,
        summary: RunSummary,
        ended: bool,
    }
}

impl<S, Si, T, E> DeadLetters<S, Si, T, E>
where
    S: Supervised<Input = T>,
{
    pub(crate) fn new(mut inner: S, sink: Si) -> Self {
        inner.keep_failed();
        DeadLetters {
            inner: Some(inner),
            sink,
            letter: None,
            unflushed: false,
            counts: Summary::default(),
            summary: RunSummary::default(),
            ended: false,
        }
    }

    /// The handle on the run's [`Summary`] (succeeded, failed, retried), filled when the
    /// stream ends. Take it before the stream runs.
    pub fn summary(&self) -> RunSummary {
        self.summary.clone()
    }
}

impl<S, Si, T, E, U> Stream for DeadLetters<S, Si, T, E>
where
    S: Stream<Item = Result<U, Error<E>>> + Supervised<Input = T>,
    Si: Sink<DeadLetter<T, E>>,
{
    type Item = Result<U, Si::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        loop {
            if this.letter.is_some() {
                let sent = match ready!(this.sink.as_mut().poll_ready(cx)) {
                    Ok(()) => {
                        let letter = this.letter.take().expect("a letter waits");
                        this.sink.as_mut().start_send(letter)
                    }
                    Err(error) => Err(error),
                };
                if let Err(error) = sent {
                    end(this.inner, this.ended, this.counts, this.summary);
                    return Poll::Ready(Some(Err(error)));
                }
                *this.unflushed = true;
                this.counts.failed += 1;
            }
            let Some(mut inner) = this.inner.as_mut().as_pin_mut() else {
                return Poll::Ready(None);
            };
            let flushed = match inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(value))) => {
                    this.counts.succeeded += 1;
                    return Poll::Ready(Some(Ok(value)));
                }
                Poll::Ready(Some(Err(error))) => {
                    let item = inner.take_failed(error.position());
                    *this.letter = Some(DeadLetter { error, item });
                    continue;
                }
                Poll::Ready(None) if *this.unflushed => ready!(this.sink.as_mut().poll_flush(cx)),
                Poll::Ready(None) => Ok(()),
                Poll::Pending if *this.unflushed => match this.sink.as_mut().poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        *this.unflushed = false;
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(error)) => Err(error),
                    Poll::Pending => return Poll::Pending,
                },
                Poll::Pending => return Poll::Pending,
            };
            // The operator ended (or the sink failed while it had nothing to yield).
            end(this.inner, this.ended, this.counts, this.summary);
            return Poll::Ready(flushed.err().map(Err));
        }
    }
}

/// Ends the run: the operator is dropped (its work cancelled), the summary written.
fn end<S: Supervised>(
    mut inner: Pin<&mut Option<S>>,
    ended: &mut bool,
    counts: &mut Summary,
    summary: &RunSummary,
) {
    if let Some(operator) = inner.as_ref().get_ref() {
        counts.retried = operator.retried();
    }
    inner.set(None);
    *ended = true;
    summary.set(*counts);
}

impl<S, Si, T, E> FusedStream for DeadLetters<S, Si, T, E>
where
    Self: Stream,
{
    fn is_terminated(&self) -> bool {
        self.ended
    }
}

impl<S, Si, T, E> fmt::Debug for DeadLetters<S, Si, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetters")
            .field("counts", &self.counts)
            .field("letter_waiting", &self.letter.is_some())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}
