//! The failure policies and pacing, through the public API.

mod blocking;
mod rate_limit;
mod retry;
mod shutdown;
