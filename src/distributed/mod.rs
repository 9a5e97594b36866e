//! The scale-out (feature `nats`): a pipeline's items, usually chunks, handed to worker
//! processes on other machines through a message broker, NATS JetStream, and their
//! results back as a plain `Stream`.
//!
//! - [`Task`]: a named function's signature, shared by the coordinator and the workers:
//!   `const COUNT: Task<Vec<String>, u64> = Task::new("count");` (the error type
//!   defaults to `String`)..
//! - The coordinator: [`FlowExt::map_remote`](crate::FlowExt::map_remote) (results in
//!   input order) and [`FlowExt::map_remote_unordered`](crate::FlowExt::map_remote_unordered)
//!   (as they arrive), with at most `limit` items published and not yet yielded.
//! - [`Worker`]: registers task functions and serves them until a
//!   `CancellationToken` fires, with its own concurrency limit.
//! - [`Broker`]: what both need from a broker; [`NatsBroker`] (NATS JetStream) and
//!   [`MemoryBroker`] (one process, tokio's clock: for tests).
//!
//! Items and results are serde types, encoded with postcard.
//!
//! # Promises
//! - **Exactly once, in order:** each input position yields exactly one result or
//!   [`flowgate::Error`](crate::Error), whatever workers die or the server restarts; a
//!   worker acknowledges an item only after its result is stored, and the coordinator
//!   drops a result it has already seen by position.
//! - **Bound:** at most `limit` items published and not yet yielded: backpressure
//!   reaches the generator.
//! - **Poison items:** a task that fails or panics on an item is retried by
//!   redelivery; after the last delivery the failure is sent back and the item set
//!   aside as a dead letter. A worker never crashes on an item.
//! - **Workers join and leave at any time**; a dead worker's items are delivered again
//!   after the ack wait.
//!
//! # Example
//! The coordinator and a worker, here in one process on a [`MemoryBroker`]; across
//! machines, each side connects a [`NatsBroker`] to the same server.
//! ```
//! use flowgate::distributed::{MemoryBroker, Task, Worker};
//! use flowgate::prelude::*;
//! use futures::StreamExt;
//! use tokio_util::sync::CancellationToken;
//!
//! const LENGTHS: Task<Vec<String>, Vec<usize>> = Task::new("lengths");
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let broker = MemoryBroker::new();
//! let stop = CancellationToken::new();
//! let worker = Worker::new(broker.clone(), 4).task(LENGTHS, |chunk: Vec<String>| async move {
//!     Ok::<_, String>(chunk.iter().map(String::len).collect())
//! });
//! let serving = tokio::spawn(worker.serve(stop.clone()));
//!
//! let words = stream! { for word in ["a", "bb", "ccc", "dddd", "eeeee"] { yield word.to_string() } };
//! let lengths: Vec<usize> = words
//!     .chunks_within(2, std::time::Duration::ZERO)
//!     .map_remote(broker, LENGTHS, 8)
//!     .flat_map(|chunk| futures::stream::iter(chunk.unwrap()))
//!     .collect()
//!     .await;
//! assert_eq!(lengths, [1, 2, 3, 4, 5]);
//!
//! stop.cancel();
//! serving.await.unwrap().unwrap();
//! # }
//! ```

mod broker;
mod codec;
mod memory;
mod nats;
mod remote;
mod worker;

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use crate::Backoff;

/// The NATS client crate, as [`NatsBroker`] uses it.
pub use async_nats;
pub use broker::{
    BoxStream, Broker, BrokerError, DeadLetter, Delivery, Exhausted, Returned, WorkAddress,
};
pub use memory::{MemoryBroker, MemoryDelivery};
pub use nats::{NatsBroker, NatsDelivery, DEAD_STREAM, RESULTS_STREAM, WORK_STREAM};
pub use remote::{MapRemote, Waiting, WaitingHandle};
pub use worker::{Worker, WorkerReport};

/// A named remote function: items of type `T` in, `Result<U, E>` out. The coordinator
/// ([`map_remote`](crate::FlowExt::map_remote)) and the [`Worker`] that serves it use the
/// same `Task` value, so their types agree.
///
/// The name is a NATS subject token: ASCII letters, digits, `-` and `_`.
///
/// ```
/// use flowgate::distributed::Task;
///
/// const COUNT: Task<Vec<String>, u64> = Task::new("count");
/// assert_eq!(COUNT.name(), "count");
/// ```
pub struct Task<T, U, E = String> {
    name: &'static str,
    types: PhantomData<fn(T) -> Result<U, E>>,
}

impl<T, U, E> Task<T, U, E> {
    /// The task called `name`.
    ///
    /// # Panics
    /// If `name` is empty or holds anything but ASCII letters, digits, `-` and `_` (in
    /// a `const`, at compile time).
    #[track_caller]
    pub const fn new(name: &'static str) -> Self {
        let bytes = name.as_bytes();
        assert!(
            !bytes.is_empty(),
            "flowgate: `Task::new` needs a non-empty name"
        );
        let mut i = 0;
        while i < bytes.len() {
            let byte = bytes[i];
            assert!(
                byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_',
                "flowgate: `Task::new`: a task name holds only ASCII letters, digits, `-` and `_`"
            );
            i += 1;
        }
        Task {
            name,
            types: PhantomData,
        }
    }

    /// The task's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<T, U, E> Clone for Task<T, U, E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, U, E> Copy for Task<T, U, E> {}

impl<T, U, E> fmt::Debug for Task<T, U, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Task").field(&self.name).finish()
    }
}

/// How long the coordinator and the workers retry a broker operation before they give
/// up on it (the item concerned fails with [`Cause::Broker`](crate::Cause::Broker), or a
/// worker's set-up fails).
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// The delays between retries of a broker operation: 50 ms, doubling up to 2 s.
pub(crate) fn broker_backoff() -> Backoff {
    Backoff::exponential(Duration::from_millis(50), Duration::from_secs(2))
}

/// Runs `operation` until it succeeds, retrying after [`broker_backoff`]'s delays for
/// [`PATIENCE`], on tokio's clock; then its last error.
pub(crate) async fn retrying<F, Fut, R>(mut operation: F) -> Result<R, BrokerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<R, BrokerError>>,
{
    let start = tokio::time::Instant::now();
    let backoff = broker_backoff();
    let mut attempt = 1;
    loop {
        match operation().await {
            Ok(value) => return Ok(value),
            Err(error) if start.elapsed() >= PATIENCE => return Err(error),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(backoff.delay(attempt)).await;
            }
        }
    }
}

/// A job id unique across processes and time: 16 hex digits from a randomly seeded
/// hash of the process id, the time and a counter.
pub(crate) fn job_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    format!("{:016x}", hasher.finish())
}
