//! [`RateLimit`]: at most `n` items per period, on tokio's clock.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_core::{FusedStream, Stream};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

pin_project! {
    /// Stream for [`rate_limit`](crate::FlowExt::rate_limit).
    ///
    /// Lets at most `n` items pass in any span of `per` (a sliding window: it remembers
    /// when each of the last `n` items passed), so up to `n` may pass at once after a
    /// quiet period. It holds at most one item pulled ahead of its permit, so upstream
    /// works one item ahead (its time overlaps the wait) and the stream's end is seen
    /// at once; before a concurrent operator it paces job starts. Memory: `n` instants
    /// and one item.
    #[must_use = "streams do nothing unless polled"]
    pub struct RateLimit<St: Stream> {
        #[pin]
        upstream: St,
        n: usize,
        per: Duration,
        // When each of the last `n` items passed, oldest first.
        passed: VecDeque<Instant>,
        // The item pulled and waiting for its permit.
        ahead: Option<St::Item>,
        sleep: Option<Pin<Box<Sleep>>>,
        done: bool,
    }
}

impl<St: Stream> RateLimit<St> {
    #[track_caller]
    pub(crate) fn new(upstream: St, n: usize, per: Duration) -> Self {
        if n == 0 {
            panic!("flowgate: `rate_limit` needs `n` of at least 1 item per period, got 0");
        }
        if per.is_zero() {
            panic!("flowgate: `rate_limit` needs a period `per` above zero");
        }
        RateLimit {
            upstream,
            n,
            per,
            passed: VecDeque::new(),
            ahead: None,
            sleep: None,
            done: false,
        }
    }
}

impl<St: Stream> Stream for RateLimit<St> {
    type Item = St::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<St::Item>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        if this.ahead.is_none() {
            match ready!(this.upstream.poll_next(cx)) {
                Some(item) => *this.ahead = Some(item),
                None => {
                    *this.done = true;
                    return Poll::Ready(None);
                }
            }
        }
        if this.passed.len() == *this.n {
            let oldest = *this.passed.front().expect("n >= 1 items passed");
            let free_at = oldest + *this.per;
            if Instant::now() < free_at {
                let sleep = match this.sleep {
                    Some(sleep) => {
                        if sleep.deadline() != free_at {
                            sleep.as_mut().reset(free_at);
                        }
                        sleep
                    }
                    None => this
                        .sleep
                        .insert(Box::pin(tokio::time::sleep_until(free_at))),
                };
                ready!(sleep.as_mut().poll(cx));
            }
            this.passed.pop_front();
        }
        this.passed.push_back(Instant::now());
        Poll::Ready(this.ahead.take())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            return (0, Some(0));
        }
        let ahead = usize::from(self.ahead.is_some());
        let (lower, upper) = self.upstream.size_hint();
        (
            lower.saturating_add(ahead),
            upper.and_then(|upper| upper.checked_add(ahead)),
        )
    }
}

impl<St: Stream> FusedStream for RateLimit<St> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<St: Stream> fmt::Debug for RateLimit<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("n", &self.n)
            .field("per", &self.per)
            .field("passed_in_window", &self.passed.len())
            .field("holds_one_ahead", &self.ahead.is_some())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
