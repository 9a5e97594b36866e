use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_core::{FusedStream, Stream};
use tokio::task::coop;

/// Stream for [`iter`]: yields the items of an iterator, one per poll, on demand.
///
/// Created by [`iter`]; see there for its promises.
#[must_use = "streams do nothing unless polled"]
#[derive(Debug, Clone)]
pub struct Iter<I> {
    /// `None` once the iterator has returned `None`: it is dropped then and never called
    /// again.
    iter: Option<I>,
}

/// A lazy stream over any iterator.
///
/// - **Lazy:** the iterator's `next()` is called only when the stream is polled, once per
///   item yielded; nothing is read ahead. A generator of any size (or an endless one) is
///   never collected into memory.
/// - **Cooperative:** on a tokio runtime every item spends one unit of the task's budget
///   (`tokio::task::coop`). When the budget is used up the stream returns `Pending` and
///   wakes its task at once, so an always-ready source does not starve the other tasks of
///   its worker. Outside a tokio runtime there is no budget, and the stream works in any
///   executor.
/// - **Fused:** once the iterator has returned `None`, the iterator is dropped and every
///   later poll returns `None` ([`FusedStream`]).
/// - `size_hint` is the iterator's own.
///
/// The stream is `Unpin` whatever the iterator, and `Send`/`Sync` when the iterator is.
/// A panic in the iterator's `next()` propagates to the caller of `poll_next`.
///
/// # Examples
/// ```
/// use flowgate::prelude::*;
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // The range is never materialised: each number is produced when it is needed.
/// let lines = flowgate::source::iter(0..u64::MAX).map(|i| format!("line {i}"));
/// let first: Vec<Vec<String>> = lines
///     .chunks_weighted(14, |line| line.len())
///     .take(2)
///     .collect()
///     .await;
/// assert_eq!(first, vec![vec!["line 0", "line 1"], vec!["line 2", "line 3"]]);
/// # }
/// ```
pub fn iter<I: IntoIterator>(items: I) -> Iter<I::IntoIter> {
    Iter {
        iter: Some(items.into_iter()),
    }
}

// No field is ever pinned: the iterator is only used through `&mut`.
impl<I> Unpin for Iter<I> {}

impl<I: Iterator> Stream for Iter<I> {
    type Item = I::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<I::Item>> {
        let Some(iter) = self.iter.as_mut() else {
            return Poll::Ready(None);
        };
        let budget = ready!(coop::poll_proceed(cx));
        match iter.next() {
            Some(item) => {
                budget.made_progress();
                Poll::Ready(Some(item))
            }
            None => {
                self.iter = None;
                Poll::Ready(None)
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.iter {
            Some(iter) => iter.size_hint(),
            None => (0, Some(0)),
        }
    }
}

impl<I: Iterator> FusedStream for Iter<I> {
    fn is_terminated(&self) -> bool {
        self.iter.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::task::Waker;

    fn poll<S: Stream + Unpin>(stream: &mut S) -> Poll<Option<S::Item>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(stream).poll_next(&mut cx)
    }

    /// An iterator that counts its `next()` calls and ends after `len` items, but would
    /// go on yielding if called again after its end (as a non-fused iterator may).
    struct Counting<'a> {
        calls: &'a Cell<usize>,
        len: usize,
    }

    impl Iterator for Counting<'_> {
        type Item = usize;
        fn next(&mut self) -> Option<usize> {
            let call = self.calls.get();
            self.calls.set(call + 1);
            if call == self.len {
                None
            } else {
                Some(call)
            }
        }
    }

    #[test]
    fn one_next_call_per_poll_and_none_after_the_end() {
        let calls = Cell::new(0);
        let mut stream = iter(Counting {
            calls: &calls,
            len: 2,
        });
        assert_eq!(calls.get(), 0);
        assert_eq!(poll(&mut stream), Poll::Ready(Some(0)));
        assert_eq!(calls.get(), 1);
        assert_eq!(poll(&mut stream), Poll::Ready(Some(1)));
        assert!(!stream.is_terminated());
        assert_eq!(poll(&mut stream), Poll::Ready(None));
        assert!(stream.is_terminated());
        assert!(stream.iter.is_none());
        assert_eq!(poll(&mut stream), Poll::Ready(None));
        assert_eq!(calls.get(), 3);
    }

    #[test]
    fn size_hint_follows_the_iterator() {
        let mut stream = iter(vec![1, 2, 3]);
        assert_eq!(stream.size_hint(), (3, Some(3)));
        let _ = poll(&mut stream);
        assert_eq!(stream.size_hint(), (2, Some(2)));
        let mut filtered = iter((0..10).filter(|n| n % 2 == 0));
        assert_eq!(filtered.size_hint(), (0, Some(10)));
        while let Poll::Ready(Some(_)) = poll(&mut filtered) {}
        assert_eq!(filtered.size_hint(), (0, Some(0)));
    }
}
