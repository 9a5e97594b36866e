use std::future::Future;

use futures_core::Stream;
use pin_project_lite::pin_project;

use super::async_lane::AsyncLane;
use super::engine::{engine_stream, PlainEngine};
use super::mappers::CallAsync;

pin_project! {
    /// Stream for [`map_concurrent_unordered`](crate::FlowExt::map_concurrent_unordered).
    ///
    /// Runs a future per item on the runtime, up to `limit` at once, and yields the results as they finish. See the method for the bound, cancellation and panic rules, and an example.
    #[must_use = "streams do nothing unless polled"]
    pub struct MapConcurrentUnordered<St, F, Fut>
    where
        Fut: Future,
    {
        #[pin]
        inner: PlainEngine<St, CallAsync<F>, AsyncLane<Fut>, Fut::Output>,
    }
}

impl<St, F, Fut> MapConcurrentUnordered<St, F, Fut>
where
    Fut: Future,
{
    pub(crate) fn new(upstream: St, limit: usize, f: F) -> Self
    where
        St: Stream,
        F: FnMut(St::Item) -> Fut,
    {
        MapConcurrentUnordered {
            inner: PlainEngine::new::<St::Item>(
                "map_concurrent_unordered",
                upstream,
                CallAsync { f },
                AsyncLane::new(limit),
                limit,
                false,
            ),
        }
    }

    super::engine::engine_methods!();
}

engine_stream!(
    impl<St, F, Fut> MapConcurrentUnordered<St, F, Fut>,
    Item = Fut::Output,
    lower_at_most = usize::MAX,
    where
    St: Stream,
    F: FnMut(St::Item) -> Fut,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
);
