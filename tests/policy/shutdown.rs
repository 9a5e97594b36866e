//! `with_shutdown`: graceful shutdown on a cancellation token, on the paused clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowgate::policy::CancellationToken;
use flowgate::prelude::*;
use flowgate::Retry;
use futures::StreamExt;
use tokio::time::{sleep, Instant};

const MS: Duration = Duration::from_millis(1);

/// Cancels `token` after `after` on tokio's clock.
fn cancel_after(token: &CancellationToken, after: Duration) {
    let token = token.clone();
    tokio::spawn(async move {
        sleep(after).await;
        token.cancel();
    });
}

/// Items 0.. that count their pulls.
fn counted(n: u64, pulls: &Arc<AtomicU64>) -> impl futures::Stream<Item = u64> {
    let pulls = pulls.clone();
    flowgate::source::iter(0..n).inspect(move |_| {
        pulls.fetch_add(1, Ordering::SeqCst);
    })
}

#[tokio::test(start_paused = true)]
async fn the_grace_period_ends_exactly_on_time_and_the_rest_is_reported() {
    let token = CancellationToken::new();
    let pulls = Arc::new(AtomicU64::new(0));
    let flow = counted(100, &pulls)
        .map_concurrent(4, |i| async move {
            sleep(100 * MS).await;
            i
        })
        .with_shutdown(token.clone(), 50 * MS);
    let report = flow.shutdown_report();
    assert_eq!(report.get(), None, "nothing to report before the run");
    cancel_after(&token, 10 * MS);
    let start = Instant::now();
    let out: Vec<u64> = flow.collect().await;
    assert!(
        out.is_empty(),
        "no job could finish within the grace period"
    );
    assert_eq!(
        start.elapsed(),
        60 * MS,
        "cancelled at 10 ms, 50 ms of grace"
    );
    let not_completed = report.get().expect("shut down");
    assert_eq!(not_completed.first_not_pulled(), 4);
    assert_eq!(not_completed.cancelled(), &[0, 1, 2, 3]);
    assert_eq!(
        pulls.load(Ordering::SeqCst),
        4,
        "nothing pulled after the token"
    );
}

#[tokio::test(start_paused = true)]
async fn work_in_flight_finishes_within_the_grace_period() {
    let token = CancellationToken::new();
    let flow = flowgate::source::iter(0..100u64)
        .map_concurrent_unordered(4, |i| async move {
            sleep(MS * (10 + 5 * (i % 4) as u32)).await;
            i
        })
        .with_shutdown(token.clone(), 100 * MS);
    let report = flow.shutdown_report();
    cancel_after(&token, 12 * MS);
    let start = Instant::now();
    let mut out: Vec<u64> = flow.collect().await;
    out.sort_unstable();
    // At 12 ms: item 0 done (10 ms), item 4 started at 10 ms; items 1, 2, 3, 4 in flight.
    assert_eq!(out, [0, 1, 2, 3, 4]);
    assert_eq!(start.elapsed(), 25 * MS, "ends when the last one finishes");
    let not_completed = report.get().expect("shut down");
    assert_eq!(not_completed.first_not_pulled(), 5);
    assert!(not_completed.cancelled().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_unordered_report_names_exactly_the_positions_not_yielded() {
    let token = CancellationToken::new();
    let flow = flowgate::source::iter(0..8u64)
        .map_concurrent_unordered(8, |i| async move {
            sleep(MS * if i % 2 == 0 { 5 } else { 500 }).await;
            i
        })
        .with_shutdown(token.clone(), 20 * MS);
    let report = flow.shutdown_report();
    cancel_after(&token, 10 * MS);
    let mut out: Vec<u64> = flow.collect().await;
    out.sort_unstable();
    assert_eq!(out, [0, 2, 4, 6]);
    let not_completed = report.get().unwrap();
    assert_eq!(not_completed.cancelled(), &[1, 3, 5, 7]);
    assert_eq!(not_completed.first_not_pulled(), 8);
    assert_eq!(
        not_completed.to_string(),
        "positions from 8 on, and 4 cancelled: [1, 3, 5, 7]"
    );
}

#[tokio::test(start_paused = true)]
async fn ordered_results_behind_an_unfinished_position_count_as_not_completed() {
    let token = CancellationToken::new();
    let flow = flowgate::source::iter(0..4u64)
        .map_concurrent(4, |i| async move {
            sleep(MS * if i == 1 { 500 } else { 5 }).await;
            i
        })
        .with_shutdown(token.clone(), 20 * MS);
    let report = flow.shutdown_report();
    cancel_after(&token, 10 * MS);
    let out: Vec<u64> = flow.collect().await;
    assert_eq!(out, [0]);
    assert_eq!(report.get().unwrap().cancelled(), &[1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_token_cancelled_before_the_first_poll_ends_the_stream_at_once() {
    let token = CancellationToken::new();
    token.cancel();
    token.cancel();
    let pulls = Arc::new(AtomicU64::new(0));
    let flow = counted(10, &pulls)
        .par_map(2, |i| i)
        .with_shutdown(token.clone(), Duration::from_secs(1));
    let report = flow.shutdown_report();
    let start = Instant::now();
    assert_eq!(flow.collect::<Vec<_>>().await, Vec::<u64>::new());
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(pulls.load(Ordering::SeqCst), 0);
    let not_completed = report.get().unwrap();
    assert_eq!(not_completed.first_not_pulled(), 0);
    assert!(not_completed.contains(0) && not_completed.contains(9));
}

#[tokio::test(start_paused = true)]
async fn a_consumer_waiting_on_a_silent_upstream_is_woken_by_the_token() {
    let token = CancellationToken::new();
    let upstream = flowgate::source::iter(0..2u64).chain(futures::stream::pending());
    let flow = upstream
        .map_concurrent(2, |i| async move { i })
        .with_shutdown(token.clone(), Duration::from_secs(5));
    let report = flow.shutdown_report();
    cancel_after(&token, 30 * MS);
    let start = Instant::now();
    assert_eq!(flow.collect::<Vec<_>>().await, [0, 1]);
    assert_eq!(
        start.elapsed(),
        30 * MS,
        "nothing in flight: no grace to wait for"
    );
    assert_eq!(report.get().unwrap().first_not_pulled(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_run_that_ends_on_its_own_reports_nothing() {
    let token = CancellationToken::new();
    let flow = flowgate::source::iter(0..5u64)
        .map_concurrent(2, |i| async move { i })
        .with_shutdown(token.clone(), MS);
    let report = flow.shutdown_report();
    assert_eq!(flow.collect::<Vec<_>>().await, [0, 1, 2, 3, 4]);
    token.cancel();
    assert_eq!(report.get(), None);
}

#[tokio::test(start_paused = true)]
async fn items_waiting_for_a_retry_at_the_end_are_reported() {
    let token = CancellationToken::new();
    let flow = flowgate::source::iter((0..4u32).map(Ok::<u32, String>))
        .try_map_concurrent(4, |i| async move {
            if i == 2 {
                Err(String::from("busy"))
            } else {
                Ok(i)
            }
        })
        .with_retry(Retry::attempts(5).backoff(flowgate::Backoff::fixed(100 * MS)))
        .with_shutdown(token.clone(), 10 * MS);
    let report = flow.shutdown_report();
    cancel_after(&token, MS);
    let out: Vec<_> = flow.collect().await;
    assert_eq!(out, [Ok(0), Ok(1)]);
    let not_completed = report.get().unwrap();
    assert_eq!(not_completed.cancelled(), &[2, 3]);
    assert_eq!(not_completed.first_not_pulled(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_calls_in_flight_at_the_end_are_reported() {
    let token = CancellationToken::new();
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    let flow = flowgate::source::iter(0..10u64)
        .par_map_unordered(2, move |i| {
            if i >= 3 {
                let _ = gate.lock().unwrap().recv();
            }
            i
        })
        .with_shutdown(token.clone(), Duration::ZERO);
    let report = flow.shutdown_report();
    let mut flow = Box::pin(flow);
    let mut out = Vec::new();
    while let Some(i) = flow.next().await {
        out.push(i);
        if out.len() == 3 {
            token.cancel();
        }
    }
    out.sort_unstable();
    assert_eq!(out, [0, 1, 2]);
    let not_completed = report.get().unwrap();
    let pulled = not_completed.first_not_pulled();
    let cancelled = not_completed.cancelled().to_vec();
    assert_eq!(cancelled, (3..pulled).collect::<Vec<_>>());
    drop(release);
}

#[test]
#[should_panic(expected = "needs `with_shutdown` first")]
fn a_report_without_a_token_panics_naming_with_shutdown() {
    let _ = flowgate::source::iter(0..1u32)
        .map_concurrent(1, |i| async move { i })
        .shutdown_report();
}
