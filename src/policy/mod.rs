//! Failure policies and pacing: [`Retry`] and [`Backoff`] (for
//! [`with_retry`](crate::concurrent::Guarded::with_retry)), the report of a graceful
//! shutdown ([`ShutdownReport`], [`NotCompleted`]) and [`RateLimit`] (the stream of
//! [`rate_limit`](crate::FlowExt::rate_limit)).

pub(crate) mod dead_letters;
mod rate_limit;
mod retry;
pub(crate) mod shutdown;

pub use dead_letters::{DeadLetter, DeadLetters, RunSummary, Summary};
pub use rate_limit::RateLimit;
pub use retry::{Backoff, Retry};
pub use shutdown::{NotCompleted, ShutdownReport};
/// The trigger of [`with_shutdown`](crate::concurrent::MapConcurrent::with_shutdown),
/// re-exported from [`tokio-util`](https://docs.rs/tokio-util).
pub use tokio_util::sync::CancellationToken;
