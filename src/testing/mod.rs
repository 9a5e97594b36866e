//! The test kit (cargo feature `test-util`): test your own pipelines exactly, on
//! tokio's paused clock, without real sleeps.
//!
//! ```toml
//! [dev-dependencies]
//! flowgate = { version = "0.1", features = ["test-util"] }
//! tokio = { version = "1", features = ["macros", "rt", "test-util"] }
//! ```
//!
//! | you want to | use |
//! |---|---|
//! | a source that yields, fails, waits, stalls or ends on cue, and records its pulls | [`MockSource`] |
//! | the items in flight through a stage, and the most ever | [`Probe`] |
//! | the work side: latencies, failures, hangs, panics per item or attempt, and a record of calls | [`MockService`] |
//! | nothing left alive after a drop: futures, values, tasks | [`LeakCheck`] |
//! | to poll a stream step by step | [`spawn`] with [`assert_pending!`], [`assert_ready!`] (from tokio-test) |
//!
//! # Testing a pipeline end to end
//!
//! The pipeline under test fetches records through a service with a timeout and
//! retries, in input order, at most 4 at a time. The test scripts the source and the
//! service, and checks the output, the retries' schedule and the bound, in virtual time:
//! it runs in microseconds of real time, and the same way every time.
//!
//! ```
//! use std::time::Duration;
//! use flowgate::prelude::*;
//! use flowgate::testing::{MockError, MockService, MockSource, Probe};
//! use flowgate::{Backoff, Error, Retry};
//! use futures::{Stream, StreamExt};
//!
//! /// The pipeline under test (the user's code).
//! fn fetch_all<S, F, Fut>(ids: S, fetch: F) -> impl Stream<Item = Result<u64, Error<MockError<u64>>>>
//! where
//!     S: Stream<Item = Result<u64, MockError<u64>>>,
//!     F: FnMut(u64) -> Fut,
//!     Fut: std::future::Future<Output = Result<u64, MockError<u64>>> + Send + 'static,
//! {
//!     ids.try_map_concurrent(4, fetch)
//!         .with_timeout(Duration::from_millis(100))
//!         .with_retry(Retry::attempts(3).backoff(Backoff::fixed(Duration::from_millis(10))))
//!         .keep_going()
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // In a test: #[tokio::test(start_paused = true)]
//! let ms = Duration::from_millis;
//! let source = MockSource::new().ok(1).ok(2).ok(3).wait(ms(50)).ok(4).ok(5);
//! let pulls = source.handle();
//! let service = MockService::new()
//!     .latency(ms(20))
//!     .fail(2, 1..=1)   // item 2: its first attempt fails
//!     .hang(3, 1..=2)   // item 3: its first two attempts never answer
//!     .fail(5, ..);     // item 5: every attempt fails
//! let probe = Probe::new();
//!
//! let calls = service.clone();
//! let out: Vec<_> = probe
//!     .output(fetch_all(probe.input(source), move |id| calls.call(id)))
//!     .collect()
//!     .await;
//!
//! // Results in input order, failures in their place.
//! assert_eq!(out.len(), 5);
//! assert_eq!(out[..4].iter().map(|r| *r.as_ref().unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4]);
//! let failed = out[4].as_ref().unwrap_err();
//! assert_eq!((failed.position(), failed.attempts()), (4, 3));
//! // Item 2: failed at 20 ms, retried after 10 ms of backoff.
//! assert_eq!(service.started_at(&2), [ms(0), ms(30)]);
//! // Item 3: two attempts timed out at 100 ms each, 10 ms apart, the third answered.
//! assert_eq!(service.started_at(&3), [ms(0), ms(110), ms(220)]);
//! // The source was pulled 4 times at once (limit 4), then after its wait.
//! assert_eq!(pulls.pulled_at()[..4], [ms(0); 4]);
//! probe.assert_max_in_flight(4);
//! service.assert_max_concurrent(4);
//! # }
//! ```
//!
//! # The paused clock: what it does, and its pitfalls
//!
//! `#[tokio::test(start_paused = true)]` runs the test on a `current_thread` runtime
//! whose clock stands still while any task can run and jumps to the next timer when all
//! are idle. Sleeps, timeouts, backoff, `rate_limit` and [`MockSource::wait`] then take
//! no real time and happen at exact virtual instants.
//!
//! - **Blocking-lane work stops the jumps.** While a task of tokio's blocking pool runs
//!   (a `par_map` job, the reader of [`source::blocking_iter`](crate::source::blocking_iter),
//!   tokio's own file I/O) the clock does not auto-advance: timers wait for real until
//!   the blocking work ends, and a blocking job that waits for something behind a timer
//!   never returns. Test the blocking lane's logic with [`MockService::call_blocking`]
//!   (no latency, no hangs), order its steps with channels or barriers, and assert
//!   order, bounds and loss, never durations; test schedules (backoff, timeouts) with
//!   the async `try_` operators and [`MockService::call`].
//! - **Real I/O does not advance virtual time**, and a timer elsewhere can fire first:
//!   a test mixing files or sockets with the paused clock may see its timeouts expire
//!   "instantly". Use [`MockSource`] and [`MockService`] instead, or a real clock.
//! - **Only `current_thread`.** The paused clock needs it; on a `multi_thread` runtime
//!   assert order, bounds and no loss, never durations.
//! - **Each record has its own zero.** The kit's times are virtual time since the object
//!   that records them was created (the `MockSource`, the `MockService`, the `Probe`),
//!   not since the runtime started: create them at the start of the test.

mod leak_check;
mod mock_service;
mod mock_source;
mod probe;

pub use leak_check::{LeakCheck, LeakToken, Tracked};
pub use mock_service::{Call, CallOutcome, MockCall, MockError, MockService};
pub use mock_source::{MockSource, MockSourceHandle};
pub use probe::{InOrder, Position, Probe, ProbeEvent, ProbeEventKind, ProbeInput, ProbeOutput};

/// Asserts that a poll is `Pending`. Re-exported from tokio-test.
pub use tokio_test::assert_pending;
/// Asserts that a poll is `Ready`, and gives its value. Re-exported from tokio-test.
pub use tokio_test::assert_ready;
/// Asserts that a poll is `Ready` with a value equal to the one given. Re-exported from
/// tokio-test.
pub use tokio_test::assert_ready_eq;
/// Polls a future or stream step by step in a test, with a mock task context that
/// records wake-ups. Re-exported from tokio-test (`tokio_test::task::spawn`).
pub use tokio_test::task::spawn;
