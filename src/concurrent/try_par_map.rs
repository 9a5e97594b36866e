use futures_core::{Stream, TryStream};
use pin_project_lite::pin_project;

use super::blocking_lane::BlockingLane;
use super::engine::{engine_stream, PlainEngine};
use super::guarded_par::GuardedPar;
use super::mappers::TryPassItem;

pin_project! {
    /// Stream for [`try_par_map`](crate::TryFlowExt::try_par_map).
    ///
    /// Runs a fallible blocking closure per item on up to `limit` threads off the runtime; results in input order, the first error ends the stream. See the method for the bound, cancellation, panic and error rules, and an example.
    #[must_use = "streams do nothing unless polled"]
    pub struct TryParMap<St, F, U>
    where
        St: TryStream,
    {
        #[pin]
        inner: PlainEngine<St, TryPassItem<U>, BlockingLane<F, St::Ok, Result<U, St::Error>>, Result<U, St::Error>>,
    }
}

impl<St, F, U> TryParMap<St, F, U>
where
    St: TryStream,
{
    pub(crate) fn new(upstream: St, limit: usize, f: F) -> Self
    where
        St: TryStream + Stream<Item = Result<St::Ok, St::Error>>,
        F: Fn(St::Ok) -> Result<U, St::Error>,
    {
        TryParMap {
            inner: PlainEngine::new::<St::Item>(
                "try_par_map",
                upstream,
                TryPassItem::new(),
                BlockingLane::new(limit, f),
                limit,
                true,
            ),
        }
    }

    super::engine::engine_methods!();

    super::guarded_par::guard_par_methods!();

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
    /// use futures::TryStreamExt;
    ///
    /// # #[tokio::main]
    /// # async fn main() {
    /// let out: Vec<u32> = flowgate::source::iter((0..10u32).map(Ok::<u32, String>))
    ///     .try_par_map(2, |i| Ok(i * 2))
    ///     .with_window(8)
    ///     .try_collect()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(out[9], 18);
    /// # }
    /// ```
    #[track_caller]
    pub fn with_window(mut self, window: usize) -> Self {
        self.inner.set_window(window);
        self
    }
}

engine_stream!(
    impl<St, F, U> TryParMap<St, F, U>,
    Item = Result<U, St::Error>,
    lower_at_most = 1,
    where
    St: TryStream + Stream<Item = Result<St::Ok, St::Error>>,
    St::Ok: Send + 'static,
    St::Error: Send + 'static,
    F: Fn(St::Ok) -> Result<U, St::Error> + Send + Sync + 'static,
    U: Send + 'static,
);
