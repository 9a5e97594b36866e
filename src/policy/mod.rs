//! Failure policies and pacing: [`Retry`] and [`Backoff`] (for
//! [`with_retry`](crate::concurrent::Guarded::with_retry)) and [`RateLimit`] (the stream of
//! [`rate_limit`](crate::FlowExt::rate_limit)).

mod rate_limit;
mod retry;

pub use rate_limit::RateLimit;
pub use retry::{Backoff, Retry};
