//! [`GuardedPar`]: the blocking `try_` operators with failure policies, and the methods
//! that attach the first policy to their plain streams.

use std::marker::PhantomData;
use std::time::Duration;

use futures_core::{Stream, TryStream};
use pin_project_lite::pin_project;

use super::blocking_lane::BlockingLane;
use super::engine::{engine_stream, Engine, PlainEngine};
use super::mappers::TryPassItem;
use super::policies::{Policies, TimedOutput};
use super::{Mapper, Prepared};
use crate::error::Error;

/// Blocking lane with policies: the item is the job; an upstream `Err` is the item's
/// result at once.
pub(crate) struct GuardPass<U, E> {
    out: PhantomData<fn() -> (U, E)>,
}

impl<T, E, U> Mapper<Result<T, E>> for GuardPass<U, E> {
    type Input = T;
    type Job = T;
    type Out = TimedOutput<Result<U, E>>;

    fn admit(item: Result<T, E>) -> Result<T, Self::Out> {
        item.map_err(|error| TimedOutput::Finished(Err(error)))
    }

    fn prepare(&mut self, item: T) -> Prepared<T, Self::Out> {
        Prepared::Start(item)
    }

    fn is_failure(out: &Self::Out) -> bool {
        !matches!(out, TimedOutput::Finished(Ok(_)))
    }
}

/// The user's closure, boxed once so that its output can be wrapped for the timeout.
type Work<T, O> = Box<dyn Fn(T) -> O + Send + Sync>;

type GuardedParEngine<St, T, U, E> = Engine<
    St,
    GuardPass<U, E>,
    BlockingLane<Work<T, TimedOutput<Result<U, E>>>, T, TimedOutput<Result<U, E>>>,
    Policies<T, E>,
    Result<U, Error<E>>,
    TimedOutput<Result<U, E>>,
>;

/// The engine of the plain blocking `try_` operators.
type PlainParEngine<St, F, U> = PlainEngine<
    St,
    TryPassItem<U>,
    BlockingLane<F, <St as TryStream>::Ok, Result<U, <St as TryStream>::Error>>,
    Result<U, <St as TryStream>::Error>,
>;

pin_project! {
    /// Stream for [`try_par_map`](crate::TryFlowExt::try_par_map) and
    /// [`try_par_map_unordered`](crate::TryFlowExt::try_par_map_unordered) with failure
    /// policies: made by [`with_timeout`](GuardedPar::with_timeout),
    /// [`with_retry`](GuardedPar::with_retry), [`keep_going`](GuardedPar::keep_going) or
    /// [`catch_panics`](GuardedPar::catch_panics) on their streams, and taking the
    /// others in any order. Yields `Result<U, flowgate::Error<E>>`.
    ///
    /// The policies behave as on the async operators ([`Guarded`](super::Guarded)),
    /// with one difference a thread imposes: a call cannot be interrupted, so a timeout
    /// abandons it (see [`with_timeout`](GuardedPar::with_timeout)).
    ///
    /// # Examples
    /// ```
    /// use flowgate::prelude::*;
    /// use flowgate::Retry;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main]
    /// # async fn main() {
    /// let out: Vec<_> = flowgate::source::iter((0..6u32).map(Ok::<u32, String>))
    ///     .try_par_map(2, |i| if i == 4 { Err(format!("bad chunk {i}")) } else { Ok(i * 2) })
    ///     .with_retry(Retry::attempts(2))
    ///     .keep_going()
    ///     .collect()
    ///     .await;
    /// assert_eq!(out[3], Ok(6));
    /// assert_eq!(out[4].as_ref().unwrap_err().to_string(), "item 4 failed after 2 attempts: bad chunk 4");
    /// # }
    /// ```
    #[must_use = "streams do nothing unless polled"]
    pub struct GuardedPar<St, U>
    where
        St: TryStream,
    {
        #[pin]
        inner: GuardedParEngine<St, St::Ok, U, St::Error>,
    }
}

impl<St, U> GuardedPar<St, U>
where
    St: TryStream,
{
    /// Rebuilds a plain blocking operator's engine, never polled, around the policies.
    pub(crate) fn from_plain<F>(engine: PlainParEngine<St, F, U>) -> Self
    where
        F: Fn(St::Ok) -> Result<U, St::Error> + Send + Sync + 'static,
    {
        let operator = engine.operator();
        let (upstream, _, lane, carried) = engine.into_parts();
        let f = lane.into_f();
        let work: Work<St::Ok, TimedOutput<Result<U, St::Error>>> =
            Box::new(move |item| TimedOutput::Finished(f(item)));
        let inner = Engine::with_carried(
            operator,
            upstream,
            GuardPass { out: PhantomData },
            BlockingLane::new(carried.limit, work),
            Policies::new(),
            carried,
        );
        GuardedPar { inner }
    }

    super::engine::engine_methods!();

    /// Gives up an attempt that runs longer than `timeout`, timed on tokio's clock from
    /// its hand-over to the blocking pool (which gives it a thread at once): the
    /// attempt fails with a timeout ([`Error::is_timeout`]), which
    /// [`with_retry`](GuardedPar::with_retry) retries.
    ///
    /// A thread cannot be interrupted: the abandoned call runs on until it returns, and
    /// its late result is discarded. It no longer counts against `limit`, so other
    /// jobs (its retry among them) get a thread meanwhile: threads busy with abandoned
    /// calls come on top of `limit`. The timer needs tokio's time driver.
    ///
    /// # Panics
    /// If `timeout` is zero, naming `timeout`.
    #[track_caller]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        super::policies::check_timeout(timeout, self.inner.operator());
        self.inner
            .lane_mut()
            .set_timeout(timeout, TimedOutput::TimedOut);
        self
    }
}

engine_stream!(
    impl<St, U> GuardedPar<St, U>,
    Item = Result<U, Error<St::Error>>,
    lower_at_most = 1,
    where
    St: TryStream + Stream<Item = Result<St::Ok, St::Error>>,
    St::Ok: Send + 'static,
    St::Error: Send + 'static,
    U: Send + 'static,
);

/// The policy methods of a plain blocking `try_` operator: each rebuilds it as a
/// [`GuardedPar`] stream with that policy (the others follow in any order).
macro_rules! guard_par_methods {
    () => {
        /// Attaches a per-attempt timeout: see [`GuardedPar::with_timeout`], which this
        /// calls on the operator turned [`GuardedPar`].
        ///
        /// # Panics
        /// If `timeout` is zero, naming `timeout`.
        #[track_caller]
        pub fn with_timeout(self, timeout: std::time::Duration) -> GuardedPar<St, U>
        where
            F: Fn(St::Ok) -> Result<U, St::Error> + Send + Sync + 'static,
        {
            GuardedPar::from_plain(self.inner).with_timeout(timeout)
        }

        /// Retries failed attempts: see [`GuardedPar::with_retry`], which this calls on
        /// the operator turned [`GuardedPar`].
        pub fn with_retry(self, retry: crate::Retry<St::Error>) -> GuardedPar<St, U>
        where
            St::Ok: Clone,
            F: Fn(St::Ok) -> Result<U, St::Error> + Send + Sync + 'static,
        {
            GuardedPar::from_plain(self.inner).with_retry(retry)
        }

        /// Yields failures as values and goes on: see [`GuardedPar::keep_going`], which
        /// this calls on the operator turned [`GuardedPar`].
        pub fn keep_going(self) -> GuardedPar<St, U>
        where
            F: Fn(St::Ok) -> Result<U, St::Error> + Send + Sync + 'static,
        {
            GuardedPar::from_plain(self.inner).keep_going()
        }

        /// Turns panics in the closure into failures: see [`GuardedPar::catch_panics`],
        /// which this calls on the operator turned [`GuardedPar`].
        pub fn catch_panics(self) -> GuardedPar<St, U>
        where
            F: Fn(St::Ok) -> Result<U, St::Error> + Send + Sync + 'static,
        {
            GuardedPar::from_plain(self.inner).catch_panics()
        }

        /// Sends failures to `sink` and yields the successes: see
        /// [`GuardedPar::dead_letters`], which this calls on the operator turned
        /// [`GuardedPar`].
        pub fn dead_letters<Si>(
            self,
            sink: Si,
        ) -> crate::policy::DeadLetters<GuardedPar<St, U>, Si, St::Ok, St::Error>
        where
            F: Fn(St::Ok) -> Result<U, St::Error> + Send + Sync + 'static,
        {
            GuardedPar::from_plain(self.inner).dead_letters(sink)
        }
    };
}

pub(crate) use guard_par_methods;

super::guarded::supervised!(
    impl<St, U> GuardedPar<St, U>
    where
        St: TryStream,
);
