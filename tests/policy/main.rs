//! The failure policies and pacing, through the public API.

mod rate_limit;
mod retry;
