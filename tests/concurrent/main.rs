//! The concurrent operators, through the public API.

#[macro_use]
mod support;

mod arguments;
mod bound;
mod cancellation;
mod defects;
mod fail_fast;
mod failure_reach;
mod fused;
mod head_of_line;
mod ordering;
mod panics;
mod peer_scenarios;
mod progress;
mod props;
mod send_check;
