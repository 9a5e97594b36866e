use futures_core::{Stream, TryStream};
use pin_project_lite::pin_project;

use super::blocking_lane::BlockingLane;
use super::engine::{engine_stream, PlainEngine};
use super::guarded_par::GuardedPar;
use super::mappers::TryPassItem;

pin_project! {
    /// Stream for [`try_par_map_unordered`](crate::TryFlowExt::try_par_map_unordered).
    ///
    /// Runs a fallible blocking closure per item on up to `limit` threads off the runtime; results as they finish, the first error ends the stream. See the method for the bound, cancellation, panic and error rules, and an example.
    #[must_use = "streams do nothing unless polled"]
    pub struct TryParMapUnordered<St, F, U>
    where
        St: TryStream,
    {
        #[pin]
        inner: PlainEngine<St, TryPassItem<U>, BlockingLane<F, St::Ok, Result<U, St::Error>>, Result<U, St::Error>>,
    }
}

impl<St, F, U> TryParMapUnordered<St, F, U>
where
    St: TryStream,
{
    pub(crate) fn new(upstream: St, limit: usize, f: F) -> Self
    where
        St: TryStream + Stream<Item = Result<St::Ok, St::Error>>,
        F: Fn(St::Ok) -> Result<U, St::Error>,
    {
        TryParMapUnordered {
            inner: PlainEngine::new::<St::Item>(
                "try_par_map_unordered",
                upstream,
                TryPassItem::new(),
                BlockingLane::new(limit, f),
                limit,
                false,
            ),
        }
    }

    super::engine::engine_methods!();

    super::guarded_par::guard_par_methods!();
}

engine_stream!(
    impl<St, F, U> TryParMapUnordered<St, F, U>,
    Item = Result<U, St::Error>,
    lower_at_most = 1,
    where
    St: TryStream + Stream<Item = Result<St::Ok, St::Error>>,
    St::Ok: Send + 'static,
    St::Error: Send + 'static,
    F: Fn(St::Ok) -> Result<U, St::Error> + Send + Sync + 'static,
    U: Send + 'static,
);
