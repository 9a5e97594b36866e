//! The failure policies and pacing, through the public API.

mod accounting;
mod blocking;
mod dead_letters;
mod peer_scenarios;
mod rate_limit;
mod retry;
mod shutdown;
