//! How each operator turns an upstream item into a job.

use std::future::Future;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::{Mapper, Prepared};

/// Async lane: calls `f` on the consumer's task; only the future crosses to the runtime.
/// A panic in `f` itself is caught and deferred to the item's position.
pub(crate) struct CallAsync<F> {
    pub(crate) f: F,
}

impl<T, F, Fut> Mapper<T> for CallAsync<F>
where
    F: FnMut(T) -> Fut,
    Fut: Future,
{
    type Input = T;
    type Job = Fut;
    type Out = Fut::Output;

    fn admit(item: T) -> Result<T, Fut::Output> {
        Ok(item)
    }

    fn prepare(&mut self, item: T) -> Prepared<Fut, Fut::Output> {
        match catch_unwind(AssertUnwindSafe(|| (self.f)(item))) {
            Ok(future) => Prepared::Start(future),
            Err(payload) => Prepared::Done(Err(payload)),
        }
    }

    fn is_failure(_: &Fut::Output) -> bool {
        false
    }
}

/// Async lane, fallible: an upstream `Err` is a failed result at its position.
pub(crate) struct TryCallAsync<F> {
    pub(crate) f: F,
}

impl<T, E, U, F, Fut> Mapper<Result<T, E>> for TryCallAsync<F>
where
    F: FnMut(T) -> Fut,
    Fut: Future<Output = Result<U, E>>,
{
    type Input = T;
    type Job = Fut;
    type Out = Result<U, E>;

    fn admit(item: Result<T, E>) -> Result<T, Result<U, E>> {
        item.map_err(Err)
    }

    fn prepare(&mut self, item: T) -> Prepared<Fut, Result<U, E>> {
        match catch_unwind(AssertUnwindSafe(|| (self.f)(item))) {
            Ok(future) => Prepared::Start(future),
            Err(payload) => Prepared::Done(Err(payload)),
        }
    }

    fn is_failure(out: &Result<U, E>) -> bool {
        out.is_err()
    }
}

/// Blocking lane: the item itself is the job; the lane holds the shared `f`.
pub(crate) struct PassItem<O> {
    out: PhantomData<fn() -> O>,
}

impl<O> PassItem<O> {
    pub(crate) fn new() -> Self {
        PassItem { out: PhantomData }
    }
}

impl<T, O> Mapper<T> for PassItem<O> {
    type Input = T;
    type Job = T;
    type Out = O;

    fn admit(item: T) -> Result<T, O> {
        Ok(item)
    }

    fn prepare(&mut self, item: T) -> Prepared<T, O> {
        Prepared::Start(item)
    }

    fn is_failure(_: &O) -> bool {
        false
    }
}

/// Blocking lane, fallible: an upstream `Err` is a failed result at its position.
pub(crate) struct TryPassItem<U> {
    out: PhantomData<fn() -> U>,
}

impl<U> TryPassItem<U> {
    pub(crate) fn new() -> Self {
        TryPassItem { out: PhantomData }
    }
}

impl<T, E, U> Mapper<Result<T, E>> for TryPassItem<U> {
    type Input = T;
    type Job = T;
    type Out = Result<U, E>;

    fn admit(item: Result<T, E>) -> Result<T, Result<U, E>> {
        item.map_err(Err)
    }

    fn prepare(&mut self, item: T) -> Prepared<T, Result<U, E>> {
        Prepared::Start(item)
    }

    fn is_failure(out: &Result<U, E>) -> bool {
        out.is_err()
    }
}
