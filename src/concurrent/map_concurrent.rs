use std::future::Future;

use futures_core::Stream;
use pin_project_lite::pin_project;

use super::async_lane::AsyncLane;
use super::engine::{engine_stream, PlainEngine};
use super::mappers::CallAsync;

pin_project! {
    /// Stream for [`map_concurrent`](crate::FlowExt::map_concurrent).
    ///
    /// Runs a future per item on the runtime, up to `limit` at once, and yields the results in input order. See the method for the bound, cancellation and panic rules, and an example.
    #[must_use = "streams do nothing unless polled"]
    pub struct MapConcurrent<St, F, Fut>
    where
        Fut: Future,
    {
        #[pin]
        inner: PlainEngine<St, CallAsync<F>, AsyncLane<Fut>, Fut::Output>,
    }
}

impl<St, F, Fut> MapConcurrent<St, F, Fut>
where
    Fut: Future,
{
    pub(crate) fn new(upstream: St, limit: usize, f: F) -> Self
    where
        St: Stream,
        F: FnMut(St::Item) -> Fut,
    {
        MapConcurrent {
            inner: PlainEngine::new::<St::Item>(
                "map_concurrent",
                upstream,
                CallAsync { f },
                AsyncLane::new(limit),
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
    /// use std::time::Duration;
    /// use flowgate::prelude::*;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// // Every tenth item is slow; up to 40 finished items may wait behind it.
    /// let out: Vec<u64> = flowgate::source::iter(0..100u64)
    ///     .map_concurrent(4, |i| async move {
    ///         let ms = if i % 10 == 0 { 50 } else { 1 };
    ///         tokio::time::sleep(Duration::from_millis(ms)).await;
    ///         i
    ///     })
    ///     .with_window(40)
    ///     .collect()
    ///     .await;
    /// assert_eq!(out, (0..100).collect::<Vec<_>>());
    /// # }
    /// ```
    #[track_caller]
    pub fn with_window(mut self, window: usize) -> Self {
        self.inner.set_window(window);
        self
    }
}

engine_stream!(
    impl<St, F, Fut> MapConcurrent<St, F, Fut>,
    Item = Fut::Output,
    lower_at_most = usize::MAX,
    where
    St: Stream,
    F: FnMut(St::Item) -> Fut,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
);
