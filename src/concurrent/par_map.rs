use futures_core::Stream;
use pin_project_lite::pin_project;

use super::blocking_lane::BlockingLane;
use super::engine::{engine_stream, PlainEngine};
use super::mappers::PassItem;

pin_project! {
    /// Stream for [`par_map`](crate::FlowExt::par_map).
    ///
    /// Runs a blocking closure per item on up to `limit` threads off the runtime, and yields the results in input order. See the method for the bound, cancellation and panic rules, and an example.
    #[must_use = "streams do nothing unless polled"]
    pub struct ParMap<St, F, U>
    where
        St: Stream,
    {
        #[pin]
        inner: PlainEngine<St, PassItem<U>, BlockingLane<F, St::Item, U>, U>,
    }
}

impl<St, F, U> ParMap<St, F, U>
where
    St: Stream,
{
    pub(crate) fn new(upstream: St, limit: usize, f: F) -> Self
    where
        St: Stream,
        F: Fn(St::Item) -> U,
    {
        ParMap {
            inner: PlainEngine::new::<St::Item>(
                "par_map",
                upstream,
                PassItem::new(),
                BlockingLane::new(limit, f),
                limit,
                true,
            ),
        }
    }

    super::engine::engine_methods!();

    /// Lets up to `window` items be pulled and not yet yielded, while at most `limit`
    /// jobs still run at once.
    ///
    /// By default the window equals `limit`, so a slow item at the head stalls the stream
    /// once `limit` items wait behind it. A wider window keeps the jobs running past a
    /// rare slow item: memory stays bounded by `window` items.
    ///
    /// # Panics
    /// Panics if `window < limit`, naming `window`.
    ///
    /// # Examples
    /// ```
    /// use flowgate::prelude::*;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main]
    /// # async fn main() {
    /// let out: Vec<u64> = flowgate::source::iter(0..100u64)
    ///     .par_map(2, |i| (0..=i).sum::<u64>())
    ///     .with_window(16)
    ///     .collect()
    ///     .await;
    /// assert_eq!(out[10], 55);
    /// # }
    /// ```
    #[track_caller]
    pub fn with_window(mut self, window: usize) -> Self {
        self.inner.set_window(window);
        self
    }
}

engine_stream!(
    impl<St, F, U> ParMap<St, F, U>,
    Item = U,
    lower_at_most = usize::MAX,
    where
    St: Stream,
    St::Item: Send + 'static,
    F: Fn(St::Item) -> U + Send + Sync + 'static,
    U: Send + 'static,
);
