use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_core::{FusedStream, Stream};
use pin_project_lite::pin_project;
use tokio::task::coop;

pin_project! {
    /// Stream for [`FlowExt::chunks_weighted`](crate::FlowExt::chunks_weighted) (see there
    /// for an example): `Vec` chunks whose summed `weigh(&item)` stays within `max_weight`.
    ///
    /// - A chunk goes as soon as its weight reaches `max_weight`, when the next item would
    ///   push it over (that item starts the next chunk), or when upstream ends; no chunk
    ///   is ever empty.
    /// - An item heavier than `max_weight` is a chunk of its own (after the chunk pending
    ///   before it): it is never dropped.
    /// - An item joins the chunk only if the chunk's true weight with it stays within
    ///   `max_weight`: the sum is checked, so even at `max_weight == usize::MAX` no chunk
    ///   of several items ever weighs more (a sum past `usize::MAX` does not fit).
    ///   Items of weight 0 are allowed; an endless run of them keeps growing the current
    ///   chunk, without bound.
    /// - `weigh` is called exactly once per item. Nothing is read ahead beyond the one
    ///   item that did not fit; no runtime is needed.
    /// - On a tokio runtime each chunk spends one unit of the task's budget
    ///   (`tokio::task::coop`).
    /// - Fused: after it returned `None`, it returns `None` forever and never polls
    ///   upstream again.
    #[must_use = "streams do nothing unless polled"]
    pub struct ChunksWeighted<St: Stream, F> {
        #[pin]
        upstream: St,
        weigh: F,
        buffer: Vec<St::Item>,
        // Sum of the weights in `buffer`: exact, since an item joins only if the sum
        // stays within `max_weight` (or the buffer was empty).
        weight: usize,
        // The item that did not fit in `buffer`, with its weight: it starts the next chunk.
        overflow: Option<(St::Item, usize)>,
        max_weight: usize,
        upstream_done: bool,
    }
}

impl<St: Stream, F> ChunksWeighted<St, F> {
    pub(crate) fn new(upstream: St, max_weight: usize, weigh: F) -> Self {
        ChunksWeighted {
            upstream,
            weigh,
            buffer: Vec::new(),
            weight: 0,
            overflow: None,
            max_weight,
            upstream_done: false,
        }
    }
}

impl<St: Stream, F: FnMut(&St::Item) -> usize> Stream for ChunksWeighted<St, F> {
    type Item = Vec<St::Item>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut me = self.project();
        loop {
            let complete =
                *me.weight >= *me.max_weight || me.overflow.is_some() || *me.upstream_done;
            if complete && !me.buffer.is_empty() {
                let budget = ready!(coop::poll_proceed(cx));
                budget.made_progress();
                // The next chunk is likely about as long: room for as many items saves
                // the buffer's regrowth item by item.
                let room = me.buffer.len();
                let chunk = std::mem::replace(me.buffer, Vec::with_capacity(room));
                *me.weight = 0;
                if let Some((item, weight)) = me.overflow.take() {
                    me.buffer.push(item);
                    *me.weight = weight;
                }
                return Poll::Ready(Some(chunk));
            }
            if *me.upstream_done {
                return Poll::Ready(None);
            }
            match ready!(me.upstream.as_mut().poll_next(cx)) {
                Some(item) => {
                    let weight = (me.weigh)(&item);
                    let fits = me
                        .weight
                        .checked_add(weight)
                        .filter(|total| *total <= *me.max_weight);
                    match fits {
                        Some(total) => {
                            me.buffer.push(item);
                            *me.weight = total;
                        }
                        None if me.buffer.is_empty() => {
                            // Heavier than `max_weight` on its own: a chunk by itself.
                            me.buffer.push(item);
                            *me.weight = weight;
                        }
                        None => *me.overflow = Some((item, weight)),
                    }
                }
                None => *me.upstream_done = true,
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let buffered = self.buffer.len() + usize::from(self.overflow.is_some());
        let (upstream_lower, upstream_upper) = if self.upstream_done {
            (0, Some(0))
        } else {
            self.upstream.size_hint()
        };
        // Any number of items may share a chunk (weight 0), but each chunk holds one.
        let lower = usize::from(buffered > 0 || upstream_lower > 0);
        let upper = upstream_upper.and_then(|upper| upper.checked_add(buffered));
        (lower, upper)
    }
}

impl<St: Stream, F: FnMut(&St::Item) -> usize> FusedStream for ChunksWeighted<St, F> {
    fn is_terminated(&self) -> bool {
        self.upstream_done && self.buffer.is_empty()
    }
}

impl<St, F> fmt::Debug for ChunksWeighted<St, F>
where
    St: Stream + fmt::Debug,
    St::Item: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunksWeighted")
            .field("upstream", &self.upstream)
            .field("buffer", &self.buffer)
            .field("weight", &self.weight)
            .field("overflow", &self.overflow)
            .field("max_weight", &self.max_weight)
            .field("upstream_done", &self.upstream_done)
            .finish_non_exhaustive()
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

    #[test]
    fn the_item_that_did_not_fit_is_held_and_weighed_once() {
        let weighed = Cell::new(0);
        let weigh = |w: &usize| {
            weighed.set(weighed.get() + 1);
            *w
        };
        let mut stream = ChunksWeighted::new(crate::source::iter([2, 2, 3, 1]), 4, weigh);
        assert_eq!(poll(&mut stream), Poll::Ready(Some(vec![2, 2])));
        assert_eq!(
            weighed.get(),
            2,
            "reaching max_weight emits without reading on"
        );
        assert_eq!(poll(&mut stream), Poll::Ready(Some(vec![3, 1])));
        assert_eq!(poll(&mut stream), Poll::Ready(None));
        assert_eq!(weighed.get(), 4);
        let mut stream = ChunksWeighted::new(crate::source::iter([3, 2, 1]), 4, |w: &usize| *w);
        assert_eq!(poll(&mut stream), Poll::Ready(Some(vec![3])));
        assert_eq!(stream.buffer, vec![2]);
        assert_eq!(stream.weight, 2);
        assert!(stream.overflow.is_none());
    }

    #[test]
    fn a_sum_past_usize_max_never_shares_a_chunk() {
        let half = usize::MAX / 2 + 1;
        let weights = [half, 0, half, usize::MAX, 1];
        let mut stream =
            ChunksWeighted::new(crate::source::iter(weights), usize::MAX, |w: &usize| *w);
        assert_eq!(poll(&mut stream), Poll::Ready(Some(vec![half, 0])));
        assert_eq!(poll(&mut stream), Poll::Ready(Some(vec![half])));
        assert_eq!(poll(&mut stream), Poll::Ready(Some(vec![usize::MAX])));
        assert_eq!(poll(&mut stream), Poll::Ready(Some(vec![1])));
        assert_eq!(poll(&mut stream), Poll::Ready(None));
    }

    #[test]
    fn size_hint_counts_the_held_item() {
        let mut stream = ChunksWeighted::new(crate::source::iter([3, 2, 1]), 4, |w: &usize| *w);
        assert_eq!(stream.size_hint(), (1, Some(3)));
        assert_eq!(poll(&mut stream), Poll::Ready(Some(vec![3])));
        assert_eq!(stream.size_hint(), (1, Some(2)));
        assert_eq!(poll(&mut stream), Poll::Ready(Some(vec![2, 1])));
        assert_eq!(stream.size_hint(), (0, Some(0)));
    }

    #[test]
    fn debug_leaves_out_the_closure() {
        let stream = ChunksWeighted::new(crate::source::iter([1u8]), 4, |_: &u8| 1);
        let debug = format!("{stream:?}");
        assert!(debug.starts_with("ChunksWeighted {"), "{debug}");
        assert!(debug.contains("max_weight: 4"), "{debug}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_chunk_waits_for_the_budget() {
        // A plain iterator stream does not spend the budget: only the chunks do.
        let upstream = futures::stream::iter(0..);
        let mut stream = ChunksWeighted::new(upstream, 2, |_: &i32| 1);
        let mut next = 0;
        while let Poll::Ready(Some(chunk)) = poll(&mut stream) {
            assert_eq!(chunk, vec![next, next + 1]);
            next += 2;
            assert!(next < 100_000, "the budget never ran out");
        }
        tokio::task::yield_now().await;
        assert_eq!(poll(&mut stream), Poll::Ready(Some(vec![next, next + 1])));
    }
}
