//! Scenarios from the peers' own test suites, translated to flowgate's policies. Where
//! flowgate differs on purpose, the test says so and checks flowgate's behaviour.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::policy::CancellationToken;
use flowgate::prelude::*;
use flowgate::{Backoff, Retry};
use futures::StreamExt;
use tokio::time::{sleep, Instant};

const MS: Duration = Duration::from_millis(1);

fn items(n: u32) -> impl futures::Stream<Item = Result<u32, String>> {
    flowgate::source::iter((0..n).map(Ok))
}

/// Virtual ms since `start` of each call of `f`.
fn recorder(start: Instant) -> (Arc<Mutex<Vec<u128>>>, impl Fn() + Clone) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    (calls, move || {
        seen.lock().unwrap().push(start.elapsed().as_millis())
    })
}

/// Reactor, `FluxRetryWhenTest` / `Retry.backoff(..).maxBackoff(..)`: the delays double
/// from the first backoff and stay at the cap; the last error surfaces once the attempts
/// are spent.
#[tokio::test(start_paused = true)]
async fn reactor_backoff_doubles_up_to_its_cap_then_the_error_surfaces() {
    let (calls, record) = recorder(Instant::now());
    let out: Vec<_> = items(1)
        .try_map_concurrent(1, move |_| {
            record();
            async { Err::<u32, _>(String::from("boom")) }
        })
        .with_retry(Retry::attempts(6).backoff(Backoff::exponential(100 * MS, 500 * MS)))
        .collect()
        .await;
    assert_eq!(*calls.lock().unwrap(), [0, 100, 300, 700, 1200, 1700]);
    assert_eq!(out[0].as_ref().unwrap_err().attempts(), 6);
}

/// Reactor, `Retry.max(n).filter(..)`: an error the filter rejects is not retried and
/// surfaces at once, while a retried one goes on.
#[tokio::test(start_paused = true)]
async fn reactor_filtered_errors_surface_at_once() {
    let (calls, record) = recorder(Instant::now());
    let out: Vec<_> = items(1)
        .try_map_concurrent(1, move |_| {
            record();
            async { Err::<u32, _>(String::from("IllegalArgument")) }
        })
        .with_retry(
            Retry::attempts(5)
                .backoff(Backoff::fixed(10 * MS))
                .retry_if(|e: &String| e == "Timeout"),
        )
        .collect()
        .await;
    assert_eq!(*calls.lock().unwrap(), [0]);
    assert_eq!(out[0].as_ref().unwrap_err().attempts(), 1);
}

/// Reactor, `timeout(..).retry(n)`: each attempt that exceeds the timeout is cancelled
/// and retried; the first one within the timeout is the value.
#[tokio::test(start_paused = true)]
async fn reactor_timeout_then_retry_takes_the_first_attempt_in_time() {
    let (calls, record) = recorder(Instant::now());
    let attempt = Arc::new(Mutex::new(0u64));
    let out: Vec<_> = items(1)
        .try_map_concurrent(1, move |i| {
            record();
            let n = {
                let mut attempt = attempt.lock().unwrap();
                *attempt += 1;
                *attempt
            };
            async move {
                // 300, 200, 100 ms: only the third fits in 150 ms.
                sleep(MS * (400 - 100 * n as u32)).await;
                Ok(i)
            }
        })
        .with_timeout(150 * MS)
        .with_retry(Retry::attempts(3))
        .collect()
        .await;
    assert_eq!(out, [Ok(0)]);
    assert_eq!(*calls.lock().unwrap(), [0, 150, 300]);
}

/// Akka Streams, `mapAsync` with `Supervision.resume`: the failing element is dropped
/// and the stream goes on. flowgate differs on purpose: with `keep_going` nothing is
/// dropped silently; the failure is yielded in the element's position, and the
/// successes are the same.
#[tokio::test(start_paused = true)]
async fn akka_resume_goes_on_but_flowgate_yields_the_failure_in_place() {
    let out: Vec<_> = items(5)
        .try_map_concurrent(4, |i| async move {
            if i == 2 {
                Err(format!("element {i}"))
            } else {
                Ok(i)
            }
        })
        .keep_going()
        .collect()
        .await;
    let successes: Vec<u32> = out
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(successes, [0, 1, 3, 4], "what Akka's resume yields");
    assert_eq!(
        out[2].as_ref().unwrap_err().position(),
        2,
        "and the failure, in place"
    );
}

/// Akka Streams, `KillSwitches.shared(..).shutdown()`: the stream completes at once,
/// upstream is cancelled, and elements not yet emitted are dropped. flowgate differs on
/// purpose: results already finished are yielded (the work is done), work still running
/// gets the grace period and is then cancelled, and the report names what was not done.
#[tokio::test(start_paused = true)]
async fn akka_kill_switch_shutdown_completes_the_stream() {
    let token = CancellationToken::new();
    let flow = flowgate::source::iter(0..u64::MAX)
        .map_concurrent(3, |i| async move {
            sleep(10 * MS).await;
            i
        })
        .with_shutdown(token.clone(), Duration::ZERO);
    let report = flow.shutdown_report();
    let mut flow = Box::pin(flow);
    // Items 0, 1, 2 finish together at 10 ms; the switch comes before the next poll,
    // which would have pulled item 3.
    assert_eq!(flow.next().await, Some(0));
    token.cancel();
    let rest: Vec<u64> = flow.collect().await;
    assert_eq!(rest, [1, 2], "the finished results, then the end");
    let left = report.get().unwrap();
    assert_eq!(
        left.first_not_pulled(),
        3,
        "nothing pulled after the switch"
    );
    assert!(left.cancelled().is_empty());
}

/// tokio-stream, `StreamExt::throttle`: items are spaced by the period. `rate_limit(1,
/// per)` does the same; with `n` above 1 it lets bursts of `n` through (a sliding
/// window), which `throttle` cannot.
#[tokio::test(start_paused = true)]
async fn tokio_stream_throttle_spacing_and_bursts() {
    let start = Instant::now();
    let mut at = Vec::new();
    let mut spaced = Box::pin(flowgate::source::iter(0..4u32).rate_limit(1, 100 * MS));
    while spaced.next().await.is_some() {
        at.push(start.elapsed().as_millis());
    }
    assert_eq!(at, [0, 100, 200, 300]);
    let start = Instant::now();
    let mut at = Vec::new();
    let mut bursts = Box::pin(flowgate::source::iter(0..4u32).rate_limit(2, 100 * MS));
    while bursts.next().await.is_some() {
        at.push(start.elapsed().as_millis());
    }
    assert_eq!(at, [0, 0, 100, 100]);
}
