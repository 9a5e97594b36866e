use futures_core::Stream;
use pin_project_lite::pin_project;

use super::blocking_lane::BlockingLane;
use super::engine::{engine_stream, PlainEngine};
use super::mappers::PassItem;

pin_project! {
    /// Stream for [`par_map_unordered`](crate::FlowExt::par_map_unordered).
    ///
    /// Runs a blocking closure per item on up to `limit` threads off the runtime, and yields the results as they finish. See the method for the bound, cancellation and panic rules, and an example.
    #[must_use = "streams do nothing unless polled"]
    pub struct ParMapUnordered<St, F, U>
    where
        St: Stream,
    {
        #[pin]
        inner: PlainEngine<St, PassItem<U>, BlockingLane<F, St::Item, U>, U>,
    }
}

impl<St, F, U> ParMapUnordered<St, F, U>
where
    St: Stream,
{
    pub(crate) fn new(upstream: St, limit: usize, f: F) -> Self
    where
        St: Stream,
        F: Fn(St::Item) -> U,
    {
        ParMapUnordered {
            inner: PlainEngine::new::<St::Item>(
                "par_map_unordered",
                upstream,
                PassItem::new(),
                BlockingLane::new(limit, f),
                limit,
                false,
            ),
        }
    }

    super::engine::engine_methods!();
}

engine_stream!(
    impl<St, F, U> ParMapUnordered<St, F, U>,
    Item = U,
    lower_at_most = usize::MAX,
    where
    St: Stream,
    St::Item: Send + 'static,
    F: Fn(St::Item) -> U + Send + Sync + 'static,
    U: Send + 'static,
);
