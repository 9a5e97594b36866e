use std::future::Future;

use futures_core::{Stream, TryStream};
use pin_project_lite::pin_project;

use super::async_lane::AsyncLane;
use super::engine::{engine_stream, PlainEngine};
use super::guarded::Guarded;
use super::mappers::TryCallAsync;

pin_project! {
    /// Stream for [`try_map_concurrent_unordered`](crate::TryFlowExt::try_map_concurrent_unordered).
    ///
    /// Runs a fallible future per item on the runtime, up to `limit` at once; results as they finish, the first error ends the stream. See the method for the bound, cancellation, panic and error rules, and an example.
    #[must_use = "streams do nothing unless polled"]
    pub struct TryMapConcurrentUnordered<St, F, Fut>
    where
        Fut: Future,
    {
        #[pin]
        inner: PlainEngine<St, TryCallAsync<F>, AsyncLane<Fut>, Fut::Output>,
    }
}

impl<St, F, Fut> TryMapConcurrentUnordered<St, F, Fut>
where
    Fut: Future,
{
    pub(crate) fn new<U>(upstream: St, limit: usize, f: F) -> Self
    where
        St: TryStream + Stream<Item = Result<St::Ok, St::Error>>,
        F: FnMut(St::Ok) -> Fut,
        Fut: Future<Output = Result<U, St::Error>>,
    {
        TryMapConcurrentUnordered {
            inner: PlainEngine::new::<St::Item>(
                "try_map_concurrent_unordered",
                upstream,
                TryCallAsync { f },
                AsyncLane::new(limit),
                limit,
                false,
            ),
        }
    }

    super::engine::engine_methods!();

    super::guarded::guard_methods!("try_map_concurrent_unordered");
}

engine_stream!(
    impl<St, F, Fut, U> TryMapConcurrentUnordered<St, F, Fut>,
    Item = Fut::Output,
    lower_at_most = 1,
    where
    St: TryStream + Stream<Item = Result<St::Ok, St::Error>>,
    F: FnMut(St::Ok) -> Fut,
    Fut: Future<Output = Result<U, St::Error>> + Send + 'static,
    U: Send + 'static,
    St::Error: Send + 'static,
);
