use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_core::{FusedStream, Stream};
use pin_project_lite::pin_project;
use tokio::task::coop;
use tokio::time::{Instant, Sleep};

/// A chunk's first allocation holds at most this many items, so that a huge `max_items`
/// (used as "no count limit") costs nothing up front; the `Vec` grows as items arrive.
const INITIAL_CAPACITY_LIMIT: usize = 1024;

pin_project! {
    /// Stream for [`FlowExt::chunks_within`](crate::FlowExt::chunks_within) (see there for
    /// an example): `Vec` chunks of at most `max_items`, each flushed at the latest
    /// `max_wait` after its first item.
    ///
    /// - A chunk goes when it holds `max_items` items, when `max_wait` has passed since
    ///   its first item, or when upstream ends; no chunk is ever empty. When the timer
    ///   fires, the items upstream has ready are taken first (up to `max_items`).
    /// - `max_wait == Duration::ZERO` uses no timer: a chunk is the first item plus what
    ///   upstream has ready in the same poll, up to `max_items`. An upstream that returns
    ///   `Pending` because its tokio task budget ran out (as
    ///   [`source::iter`](crate::source::iter) does) counts as not ready.
    /// - Lazy: upstream is polled only while the consumer polls and a chunk is being
    ///   filled; at most `max_items` items are held.
    /// - Building the stream needs no runtime. With `max_wait > 0`, the first poll panics
    ///   outside a tokio runtime (the timer needs one); the timer is created at the first
    ///   item and re-armed for each chunk.
    /// - On a tokio runtime each chunk spends one unit of the task's budget
    ///   (`tokio::task::coop`), so an always-ready upstream does not starve other tasks;
    ///   when the budget is spent, the finished chunk waits for the next poll, and nothing
    ///   more is pulled meanwhile.
    /// - Fused: after it returned `None`, it returns `None` forever and never polls
    ///   upstream again.
    #[must_use = "streams do nothing unless polled"]
    #[derive(Debug)]
    pub struct ChunksWithin<St: Stream> {
        #[pin]
        upstream: St,
        buffer: Vec<St::Item>,
        max_items: usize,
        max_wait: Duration,
        // Created at the first item that needs it (never when `max_wait` is zero), then
        // reset at each chunk's first item.
        deadline: Option<Pin<Box<Sleep>>>,
        // The buffered chunk is final and waits only for the task budget to be emitted.
        chunk_complete: bool,
        upstream_done: bool,
        runtime_checked: bool,
    }
}

impl<St: Stream> ChunksWithin<St> {
    pub(crate) fn new(upstream: St, max_items: usize, max_wait: Duration) -> Self {
        ChunksWithin {
            upstream,
            buffer: Vec::new(),
            max_items,
            max_wait,
            deadline: None,
            chunk_complete: false,
            upstream_done: false,
            // Without a timer the operator works in any executor.
            runtime_checked: max_wait.is_zero(),
        }
    }
}

impl<St: Stream> Stream for ChunksWithin<St> {
    type Item = Vec<St::Item>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut me = self.project();
        if !*me.runtime_checked {
            assert_runtime();
            *me.runtime_checked = true;
        }

        if !*me.chunk_complete {
            while !*me.upstream_done && me.buffer.len() < *me.max_items {
                match me.upstream.as_mut().poll_next(cx) {
                    Poll::Ready(Some(item)) => {
                        if me.buffer.is_empty() {
                            me.buffer
                                .reserve_exact((*me.max_items).min(INITIAL_CAPACITY_LIMIT));
                            arm(me.deadline, *me.max_wait);
                        }
                        me.buffer.push(item);
                    }
                    Poll::Ready(None) => *me.upstream_done = true,
                    Poll::Pending => break,
                }
            }
            if me.buffer.is_empty() {
                return if *me.upstream_done {
                    Poll::Ready(None)
                } else {
                    Poll::Pending
                };
            }
            let complete = me.buffer.len() >= *me.max_items
                || *me.upstream_done
                || match me.deadline {
                    Some(deadline) => deadline.as_mut().poll(cx).is_ready(),
                    // No timer (`max_wait == 0`): the chunk is what was ready.
                    None => true,
                };
            if !complete {
                return Poll::Pending;
            }
            *me.chunk_complete = true;
        }

        let budget = ready!(coop::poll_proceed(cx));
        budget.made_progress();
        *me.chunk_complete = false;
        Poll::Ready(Some(std::mem::take(me.buffer)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let buffered = self.buffer.len();
        let (upstream_lower, upstream_upper) = if self.upstream_done {
            (0, Some(0))
        } else {
            self.upstream.size_hint()
        };
        // Every chunk holds between 1 and `max_items` items.
        let lower = buffered
            .saturating_add(upstream_lower)
            .div_ceil(self.max_items);
        let upper = upstream_upper.and_then(|upper| upper.checked_add(buffered));
        (lower, upper)
    }
}

impl<St: Stream> FusedStream for ChunksWithin<St> {
    fn is_terminated(&self) -> bool {
        self.upstream_done && self.buffer.is_empty()
    }
}

/// Starts the timer of a chunk whose first item just arrived; no timer when `max_wait`
/// is zero.
fn arm(deadline: &mut Option<Pin<Box<Sleep>>>, max_wait: Duration) {
    if max_wait.is_zero() {
        return;
    }
    let at = deadline_after(Instant::now(), max_wait);
    match deadline {
        Some(sleep) => sleep.as_mut().reset(at),
        None => *deadline = Some(Box::pin(tokio::time::sleep_until(at))),
    }
}

/// `now + max_wait`, or a deadline decades away when that overflows (a `max_wait` of
/// `Duration::MAX` means "no deadline").
fn deadline_after(now: Instant, max_wait: Duration) -> Instant {
    const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);
    now.checked_add(max_wait)
        .unwrap_or_else(|| now + FAR_FUTURE)
}

fn assert_runtime() {
    if tokio::runtime::Handle::try_current().is_err() {
        panic!(
            "flowgate: `chunks_within` must be polled inside a tokio runtime (its max_wait \
             timer needs one); poll it from a tokio task, or use `max_wait == \
             Duration::ZERO` for chunks without a timer"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn poll<S: Stream + Unpin>(stream: &mut S) -> Poll<Option<S::Item>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(stream).poll_next(&mut cx)
    }

    #[test]
    fn construction_needs_no_runtime_and_creates_no_timer() {
        let stream = ChunksWithin::new(crate::source::iter(0..3), 2, Duration::from_secs(1));
        assert!(stream.deadline.is_none());
        assert_eq!(stream.buffer.capacity(), 0);
        assert!(!stream.runtime_checked);
    }

    #[test]
    fn zero_wait_works_outside_a_runtime_without_a_timer() {
        let mut stream = ChunksWithin::new(crate::source::iter(0..5), 2, Duration::ZERO);
        assert_eq!(poll(&mut stream), Poll::Ready(Some(vec![0, 1])));
        assert_eq!(poll(&mut stream), Poll::Ready(Some(vec![2, 3])));
        assert_eq!(poll(&mut stream), Poll::Ready(Some(vec![4])));
        assert!(stream.deadline.is_none());
        assert!(stream.is_terminated());
        assert_eq!(poll(&mut stream), Poll::Ready(None));
    }

    #[test]
    fn initial_capacity_is_capped() {
        let mut stream = ChunksWithin::new(crate::source::iter([1u8]), usize::MAX, Duration::ZERO);
        let Poll::Ready(Some(chunk)) = poll(&mut stream) else {
            panic!("expected a chunk")
        };
        assert_eq!(chunk, vec![1]);
        assert!(chunk.capacity() <= INITIAL_CAPACITY_LIMIT);
    }

    #[test]
    fn a_huge_wait_does_not_overflow() {
        let now = Instant::now();
        assert!(deadline_after(now, Duration::MAX) > now + Duration::from_secs(86_400 * 365));
        assert_eq!(
            deadline_after(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_timer_is_reused_across_chunks() {
        let mut stream = ChunksWithin::new(crate::source::iter(0..4), 2, Duration::from_secs(1));
        assert_eq!(poll(&mut stream), Poll::Ready(Some(vec![0, 1])));
        let first: *const Sleep = &**stream.deadline.as_ref().expect("armed at the first item");
        assert_eq!(poll(&mut stream), Poll::Ready(Some(vec![2, 3])));
        let second: *const Sleep = &**stream.deadline.as_ref().expect("still armed");
        assert_eq!(first, second);
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_chunk_waits_for_the_budget_without_pulling_more() {
        // Items from a plain iterator stream do not spend the budget, so only the chunks do.
        let pulled = std::cell::Cell::new(0);
        let upstream = futures::stream::iter((0..).inspect(|_| pulled.set(pulled.get() + 1)));
        let mut stream = ChunksWithin::new(upstream, 1, Duration::from_secs(1));
        let mut chunks = 0;
        while let Poll::Ready(Some(chunk)) = poll(&mut stream) {
            assert_eq!(chunk, vec![chunks]);
            chunks += 1;
            assert!(chunks < 10_000, "the budget never ran out");
        }
        // The budget ran out with a complete chunk in hand: it goes first on the next poll.
        assert!(stream.chunk_complete);
        assert_eq!(pulled.get(), chunks + 1);
        tokio::task::yield_now().await;
        assert_eq!(poll(&mut stream), Poll::Ready(Some(vec![chunks])));
        assert_eq!(pulled.get(), chunks + 1);
    }
}
