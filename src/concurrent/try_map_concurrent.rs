use std::future::Future;

use futures_core::{Stream, TryStream};
use pin_project_lite::pin_project;

use super::async_lane::AsyncLane;
use super::engine::{engine_stream, PlainEngine};
use super::guarded::Guarded;
use super::mappers::TryCallAsync;

pin_project! {
    /// Stream for [`try_map_concurrent`](crate::TryFlowExt::try_map_concurrent).
    ///
    /// Runs a fallible future per item on the runtime, up to `limit` at once; results in input order, the first error ends the stream. See the method for the bound, cancellation, panic and error rules, and an example.
    #[must_use = "streams do nothing unless polled"]
    pub struct TryMapConcurrent<St, F, Fut>
    where
        Fut: Future,
    {
        #[pin]
        inner: PlainEngine<St, TryCallAsync<F>, AsyncLane<Fut>, Fut::Output>,
    }
}

impl<St, F, Fut> TryMapConcurrent<St, F, Fut>
where
    Fut: Future,
{
    pub(crate) fn new<U>(upstream: St, limit: usize, f: F) -> Self
    where
        St: TryStream + Stream<Item = Result<St::Ok, St::Error>>,
        F: FnMut(St::Ok) -> Fut,
        Fut: Future<Output = Result<U, St::Error>>,
    {
        TryMapConcurrent {
            inner: PlainEngine::new::<St::Item>(
                "try_map_concurrent",
                upstream,
                TryCallAsync { f },
                AsyncLane::new(limit),
                limit,
                true,
            ),
        }
    }

    super::engine::engine_methods!();

    super::guarded::guard_methods!("try_map_concurrent");

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
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let out: Vec<u32> = flowgate::source::iter((0..10u32).map(Ok::<u32, String>))
    ///     .try_map_concurrent(2, |i| async move { Ok(i + 1) })
    ///     .with_window(8)
    ///     .try_collect()
    ///     .await
    ///     .unwrap();
    /// assert_eq!(out, (1..=10).collect::<Vec<_>>());
    /// # }
    /// ```
    #[track_caller]
    pub fn with_window(mut self, window: usize) -> Self {
        self.inner.set_window(window);
        self
    }
}

engine_stream!(
    impl<St, F, Fut, U> TryMapConcurrent<St, F, Fut>,
    Item = Fut::Output,
    lower_at_most = 1,
    where
    St: TryStream + Stream<Item = Result<St::Ok, St::Error>>,
    F: FnMut(St::Ok) -> Fut,
    Fut: Future<Output = Result<U, St::Error>> + Send + 'static,
    U: Send + 'static,
    St::Error: Send + 'static,
);
