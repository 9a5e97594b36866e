//! [`Guarded`]: the async `try_` operators with failure policies, and the methods that
//! attach the first policy to their plain streams.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use futures_core::{Stream, TryStream};
use pin_project_lite::pin_project;

use super::async_lane::AsyncLane;
use super::engine::{engine_stream, Engine};
use super::mappers::TryCallAsync;
use super::policies::{Policies, Timed, TimedOutput};
use super::{Mapper, Prepared};
use crate::error::Error;

/// Async lane with policies: calls `f` on the consumer's task and wraps each attempt's
/// future in the per-attempt timeout.
pub(crate) struct GuardCall<F> {
    f: F,
    timeout: Option<Duration>,
}

impl<T, E, U, F, Fut> Mapper<Result<T, E>> for GuardCall<F>
where
    F: FnMut(T) -> Fut,
    Fut: Future<Output = Result<U, E>>,
{
    type Input = T;
    type Job = Timed<Fut>;
    type Out = TimedOutput<Result<U, E>>;

    fn admit(item: Result<T, E>) -> Result<T, Self::Out> {
        item.map_err(|error| TimedOutput::Finished(Err(error)))
    }

    fn prepare(&mut self, item: T) -> Prepared<Timed<Fut>, Self::Out> {
        match catch_unwind(AssertUnwindSafe(|| (self.f)(item))) {
            Ok(future) => Prepared::Start(Timed::new(future, self.timeout)),
            Err(payload) => Prepared::Done(Err(payload)),
        }
    }

    fn is_failure(out: &Self::Out) -> bool {
        !matches!(out, TimedOutput::Finished(Ok(_)))
    }
}

type GuardedEngine<St, F, Fut, T, U, E> = Engine<
    St,
    GuardCall<F>,
    AsyncLane<Timed<Fut>>,
    Policies<T, E>,
    Result<U, Error<E>>,
    TimedOutput<Result<U, E>>,
>;

pin_project! {
    /// Stream for [`try_map_concurrent`](crate::TryFlowExt::try_map_concurrent) and
    /// [`try_map_concurrent_unordered`](crate::TryFlowExt::try_map_concurrent_unordered)
    /// with failure policies: made by [`with_timeout`](Guarded::with_timeout),
    /// [`with_retry`](Guarded::with_retry), [`keep_going`](Guarded::keep_going) or
    /// [`catch_panics`](Guarded::catch_panics) on their streams, and taking the others
    /// in any order. Yields `Result<U, flowgate::Error<E>>`.
    ///
    /// The policies are the engine's: a retried item keeps its position (in input
    /// order, its result leaves in its place), holds its place in the window while it
    /// waits out its backoff (but no running slot), and `f` is called only from the
    /// consumer's `poll_next`, for retries too. The bound, cancellation on drop and the
    /// rest of the promises in the [crate docs](crate) hold unchanged.
    #[must_use = "streams do nothing unless polled"]
    pub struct Guarded<St, F, Fut, U>
    where
        St: TryStream,
        Fut: Future,
    {
        #[pin]
        inner: GuardedEngine<St, F, Fut, St::Ok, U, St::Error>,
    }
}

impl<St, F, Fut, U> Guarded<St, F, Fut, U>
where
    St: TryStream,
    Fut: Future,
{
    /// Rebuilds a plain operator's engine, never polled, around the policies.
    pub(crate) fn from_plain<O>(
        engine: super::engine::PlainEngine<St, TryCallAsync<F>, AsyncLane<Fut>, O>,
    ) -> Self {
        let operator = engine.operator();
        let (upstream, TryCallAsync { f }, _, carried) = engine.into_parts();
        let inner = Engine::with_carried(
            operator,
            upstream,
            GuardCall { f, timeout: None },
            AsyncLane::new(carried.limit),
            Policies::new(),
            carried,
        );
        Guarded { inner }
    }

    super::engine::engine_methods!();

    /// Gives up an attempt that waits longer than `timeout`, timed on tokio's clock from
    /// its first poll that returns `Pending` (an attempt ready at its first poll costs
    /// no timer; one that never yields cannot be interrupted, as with any timeout on an
    /// async runtime): its future is dropped, and the attempt fails with a timeout
    /// ([`Error::is_timeout`]), which [`with_retry`](Guarded::with_retry) retries.
    /// Never a panic, never a silent skip. The timer needs tokio's time driver.
    ///
    /// # Panics
    /// If `timeout` is zero, naming `timeout`.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use flowgate::prelude::*;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let out: Vec<Result<u64, flowgate::Error<String>>> =
    ///     flowgate::source::iter([10u64, 500, 20].map(Ok::<u64, String>))
    ///         .try_map_concurrent(2, |ms| async move {
    ///             tokio::time::sleep(Duration::from_millis(ms)).await;
    ///             Ok(ms)
    ///         })
    ///         .with_timeout(Duration::from_millis(100))
    ///         .keep_going()
    ///         .collect()
    ///         .await;
    /// assert_eq!(out[0], Ok(10));
    /// assert!(out[1].as_ref().unwrap_err().is_timeout());
    /// assert_eq!(out[2], Ok(20));
    /// # }
    /// ```
    #[track_caller]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        super::policies::check_timeout(timeout, self.inner.operator());
        self.inner.mapper_mut().timeout = Some(timeout);
        self
    }
}

engine_stream!(
    impl<St, F, Fut, U> Guarded<St, F, Fut, U>,
    Item = Result<U, Error<St::Error>>,
    lower_at_most = 1,
    where
    St: TryStream + Stream<Item = Result<St::Ok, St::Error>>,
    F: FnMut(St::Ok) -> Fut,
    Fut: Future<Output = Result<U, St::Error>> + Send + 'static,
    U: Send + 'static,
    St::Error: Send + 'static,
);

/// The methods every guarded stream shares (`dead_letters`, `with_window`), and its
/// place among the streams a [`DeadLetters`](crate::policy::DeadLetters) wraps.
macro_rules! supervised {
    (impl<$($gen:ident),*> $ty:ty where $($bounds:tt)*) => {
        impl<$($gen),*> $ty
        where
            $($bounds)*
        {
            /// Retries a failed attempt as `retry` says: after its backoff (on tokio's clock),
            /// until the attempts, the total time or its `retry_if` say stop; the last failure
            /// is the item's. An `Err` item from upstream is never retried (no attempt ran), a
            /// panic only when caught ([`catch_panics`](Self::catch_panics)).
            ///
            /// The item is cloned before its first attempt and kept until it settles, so that
            /// each attempt gets its own copy (hence `Clone`): memory holds at most a window of
            /// them. While an item waits out its backoff it holds its place in the window but
            /// no running slot, and in input order its result still leaves in its place.
            /// Without [`keep_going`](Self::keep_going), an item's last failure ends the run
            /// (the work it makes useless is cancelled when the consumer receives it).
            ///
            /// # Examples
            /// ```
            /// use std::sync::atomic::{AtomicU32, Ordering};
            /// use std::sync::Arc;
            /// use std::time::Duration;
            /// use flowgate::prelude::*;
            /// use flowgate::{Backoff, Retry};
            /// use futures::TryStreamExt;
            ///
            /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
            /// # async fn main() {
            /// // A service that refuses every first call.
            /// let calls = Arc::new(AtomicU32::new(0));
            /// let out: Vec<u32> = flowgate::source::iter((0..4u32).map(Ok::<u32, String>))
            ///     .try_map_concurrent(2, |i| {
            ///         let calls = calls.clone();
            ///         async move {
            ///             if calls.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
            ///                 Err(format!("busy at {i}"))
            ///             } else {
            ///                 Ok(i * 10)
            ///             }
            ///         }
            ///     })
            ///     .with_retry(Retry::attempts(3).backoff(Backoff::fixed(Duration::from_millis(5))))
            ///     .try_collect()
            ///     .await
            ///     .unwrap();
            /// assert_eq!(out, [0, 10, 20, 30]);
            /// # }
            /// ```
            pub fn with_retry(mut self, retry: crate::Retry<St::Error>) -> Self
            where
                St::Ok: Clone,
            {
                self.inner.settle_mut().set_retry(retry);
                self
            }

            /// Goes on after failures: each item's final failure is yielded as an `Err` in its
            /// position (input order) or when it happens (finish order), and the run continues
            /// with the next items. Panics still end the run unless caught
            /// ([`catch_panics`](Self::catch_panics)).
            ///
            /// # Examples
            /// ```
            /// use flowgate::prelude::*;
            /// use futures::StreamExt;
            ///
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() {
            /// let out: Vec<_> = flowgate::source::iter((0..5u32).map(Ok::<u32, String>))
            ///     .try_map_concurrent(2, |i| async move {
            ///         if i % 2 == 1 { Err(format!("odd {i}")) } else { Ok(i) }
            ///     })
            ///     .keep_going()
            ///     .collect()
            ///     .await;
            /// let failed: Vec<u64> = out.iter().filter_map(|r| r.as_ref().err()).map(|e| e.position()).collect();
            /// assert_eq!(failed, [1, 3]);
            /// assert_eq!(out[4], Ok(4));
            /// # }
            /// ```
            pub fn keep_going(mut self) -> Self {
                self.inner.settle_mut().keep_going = true;
                self
            }

            /// Turns a panic in `f` or in its future into the item's failure
            /// ([`Error::is_panic`], with the panic's message), which
            /// [`with_retry`](Self::with_retry) retries and [`keep_going`](Self::keep_going)
            /// yields as a value. Opt-in: without it, a panic re-raises in the consumer (at its
            /// position, in input order). A panic of upstream itself always re-raises: upstream
            /// cannot go on after it.
            ///
            /// # Examples
            /// ```
            /// use flowgate::prelude::*;
            /// use futures::StreamExt;
            ///
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() {
            /// let out: Vec<_> = flowgate::source::iter((0..3u32).map(Ok::<u32, String>))
            ///     .try_map_concurrent(2, |i| async move {
            ///         if i == 1 { panic!("bad record {i}") }
            ///         Ok(i)
            ///     })
            ///     .catch_panics()
            ///     .keep_going()
            ///     .collect()
            ///     .await;
            /// assert_eq!(out[0], Ok(0));
            /// assert_eq!(out[1].as_ref().unwrap_err().to_string(), "item 1 panicked (attempt 1): bad record 1");
            /// assert_eq!(out[2], Ok(2));
            /// # }
            /// ```
            pub fn catch_panics(mut self) -> Self {
                self.inner.settle_mut().catch_panics = true;
                self
            }

            /// Sends each failure to `sink` as a [`DeadLetter`](crate::policy::DeadLetter) (with
            /// the item when the operator keeps one: with [`with_retry`](Self::with_retry)) and
            /// yields the successes, as `Ok`; the run goes on after failures, as with
            /// [`keep_going`](Self::keep_going). Any [`futures::Sink`](futures_sink::Sink) will
            /// do: tokio-util's `PollSender` for a tokio channel, a file writer, a queue client.
            ///
            /// Buffering is bounded: a dead letter the sink is not ready for waits (one at a
            /// time), and nothing more is taken from the operator meanwhile. A sink that fails
            /// or closes ends the run with its error, yielded as an `Err`: failures are never
            /// dropped silently. The stream's [`summary`](crate::policy::DeadLetters::summary)
            /// (succeeded, failed, retried) is there when it ends.
            ///
            /// # Examples
            /// ```
            /// use flowgate::prelude::*;
            /// use futures::{SinkExt, StreamExt};
            ///
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() {
            /// let (letters, mut failures) = futures::channel::mpsc::unbounded();
            /// let flow = flowgate::source::iter((0..6u32).map(Ok::<u32, String>))
            ///     .try_map_concurrent(2, |i| async move {
            ///         if i % 3 == 0 { Err(format!("bad {i}")) } else { Ok(i) }
            ///     })
            ///     .dead_letters(letters.sink_map_err(|_| "the dead-letter queue closed"));
            /// let summary = flow.summary();
            /// let ok: Vec<u32> = flow.map(Result::unwrap).collect().await;
            /// assert_eq!(ok, [1, 2, 4, 5]);
            /// let failed: Vec<u64> = failures.map(|letter| letter.error.position()).collect().await;
            /// assert_eq!(failed, [0, 3]);
            /// assert_eq!(summary.get().unwrap().to_string(), "4 succeeded, 2 failed, 0 retries");
            /// # }
            /// ```
            pub fn dead_letters<Si>(
                self,
                sink: Si,
            ) -> crate::policy::DeadLetters<Self, Si, St::Ok, St::Error> {
                crate::policy::DeadLetters::new(self, sink)
            }

            /// Lets up to `window` items be pulled and not yet yielded (items waiting out a
            /// backoff included), while at most `limit` jobs still run at once.
            ///
            /// # Panics
            /// Panics if `window < limit`, naming `window`.
            #[track_caller]
            pub fn with_window(mut self, window: usize) -> Self {
                self.inner.set_window(window);
                self
            }
        }

        impl<$($gen),*> crate::policy::dead_letters::sealed::Supervised for $ty
        where
            $($bounds)*
        {
            type Input = St::Ok;

            fn keep_failed(&mut self) {
                let policies = self.inner.settle_mut();
                policies.keep_going = true;
                policies.keep_failed = true;
            }

            fn take_failed(self: std::pin::Pin<&mut Self>, position: u64) -> Option<St::Ok> {
                self.project().inner.settle_pinned().take_failed(position)
            }

            fn retried(&self) -> u64 {
                self.inner.settle_ref().retried
            }
        }
    };
}

pub(crate) use supervised;

/// The policy methods of a plain async `try_` operator: each rebuilds it as a
/// [`Guarded`] stream with that policy (the others follow in any order).
macro_rules! guard_methods {
    ($operator:literal) => {
        /// Attaches a per-attempt timeout: see [`Guarded::with_timeout`], which this
        /// calls on the operator turned [`Guarded`].
        ///
        /// # Panics
        /// If `timeout` is zero, naming `timeout`.
        #[track_caller]
        pub fn with_timeout<U>(self, timeout: std::time::Duration) -> Guarded<St, F, Fut, U>
        where
            St: futures_core::TryStream,
            Fut: Future<Output = Result<U, St::Error>>,
        {
            Guarded::from_plain(self.inner).with_timeout(timeout)
        }

        /// Retries failed attempts: see [`Guarded::with_retry`], which this calls on
        /// the operator turned [`Guarded`].
        pub fn with_retry<U>(self, retry: crate::Retry<St::Error>) -> Guarded<St, F, Fut, U>
        where
            St: futures_core::TryStream,
            St::Ok: Clone,
            Fut: Future<Output = Result<U, St::Error>>,
        {
            Guarded::from_plain(self.inner).with_retry(retry)
        }

        /// Yields failures as values and goes on: see [`Guarded::keep_going`], which
        /// this calls on the operator turned [`Guarded`].
        pub fn keep_going<U>(self) -> Guarded<St, F, Fut, U>
        where
            St: futures_core::TryStream,
            Fut: Future<Output = Result<U, St::Error>>,
        {
            Guarded::from_plain(self.inner).keep_going()
        }

        /// Turns panics in `f` and its future into failures: see
        /// [`Guarded::catch_panics`], which this calls on the operator turned
        /// [`Guarded`].
        pub fn catch_panics<U>(self) -> Guarded<St, F, Fut, U>
        where
            St: futures_core::TryStream,
            Fut: Future<Output = Result<U, St::Error>>,
        {
            Guarded::from_plain(self.inner).catch_panics()
        }

        /// Sends failures to `sink` and yields the successes: see
        /// [`Guarded::dead_letters`], which this calls on the operator turned
        /// [`Guarded`].
        #[allow(clippy::type_complexity)]
        pub fn dead_letters<U, Si>(
            self,
            sink: Si,
        ) -> crate::policy::DeadLetters<Guarded<St, F, Fut, U>, Si, St::Ok, St::Error>
        where
            St: futures_core::TryStream,
            Fut: Future<Output = Result<U, St::Error>>,
        {
            Guarded::from_plain(self.inner).dead_letters(sink)
        }
    };
}

pub(crate) use guard_methods;

supervised!(
    impl<St, F, Fut, U> Guarded<St, F, Fut, U>
    where
        St: TryStream,
        Fut: Future,
);
