use std::future::Future;
use std::hash::Hash;

use futures_core::Stream;
use pin_project_lite::pin_project;

use super::async_lane::AsyncLane;
use super::engine::{engine_stream, PlainEngine};
use super::keyed::KeyedCall;

pin_project! {
    /// Stream for [`map_concurrent_by_key`](crate::FlowExt::map_concurrent_by_key).
    ///
    /// Runs a future per item on the runtime, one at a time per key and up to `limit` at once across keys, and yields the results in input order. See the method for the bound, cancellation and panic rules, and an example.
    #[must_use = "streams do nothing unless polled"]
    pub struct MapConcurrentByKey<St, KF, K, F, Fut>
    where
        St: Stream,
        Fut: Future,
    {
        #[pin]
        inner: PlainEngine<St, KeyedCall<F, KF, K, St::Item>, AsyncLane<Fut>, Fut::Output>,
    }
}

impl<St, KF, K, F, Fut> MapConcurrentByKey<St, KF, K, F, Fut>
where
    St: Stream,
    Fut: Future,
{
    pub(crate) fn new(upstream: St, limit: usize, key: KF, f: F) -> Self
    where
        KF: FnMut(&St::Item) -> K,
        K: Hash + Eq,
        F: FnMut(St::Item) -> Fut,
    {
        MapConcurrentByKey {
            inner: PlainEngine::new::<St::Item>(
                "map_concurrent_by_key",
                upstream,
                KeyedCall::new(f, key),
                AsyncLane::new(limit),
                limit,
                true,
            ),
        }
    }

    super::engine::engine_methods!();

    /// Lets up to `window` items be pulled and not yet yielded (running, waiting for
    /// their key, or finished and waiting to leave), while at most `limit` jobs run at
    /// once.
    ///
    /// By default the window equals `limit`. Items waiting for a busy key hold places in
    /// the window: a wider one lets more items of other keys be pulled past a slow or
    /// hot key. Memory stays bounded by `window` items.
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
    /// // Key 0 takes every other item and 10 ms each; with room for 32 items in the
    /// // window, the other keys' items get past its queue.
    /// let start = tokio::time::Instant::now();
    /// let out: Vec<u64> = flowgate::source::iter(0..40u64)
    ///     .map_concurrent_by_key(4, |x| if x % 2 == 0 { 0 } else { *x }, |x| async move {
    ///         let ms = if x % 2 == 0 { 10 } else { 1 };
    ///         tokio::time::sleep(Duration::from_millis(ms)).await;
    ///         x
    ///     })
    ///     .with_window(32)
    ///     .collect()
    ///     .await;
    /// assert_eq!(out.len(), 40);
    /// // Key 0's 20 items one at a time: 200 ms, the rest alongside.
    /// assert_eq!(start.elapsed(), Duration::from_millis(200));
    /// # }
    /// ```
    #[track_caller]
    pub fn with_window(mut self, window: usize) -> Self {
        self.inner.set_window(window);
        self
    }
}

engine_stream!(
    impl<St, KF, K, F, Fut> MapConcurrentByKey<St, KF, K, F, Fut>,
    Item = Fut::Output,
    lower_at_most = usize::MAX,
    where
    St: Stream,
    KF: FnMut(&St::Item) -> K,
    K: Hash + Eq,
    F: FnMut(St::Item) -> Fut,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
);
