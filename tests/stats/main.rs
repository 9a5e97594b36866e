//! Statistics through the public API: exact counts and times on the paused clock, the
//! pipeline view's bottleneck, the snapshot streams, and consistency under load.

mod consistency;
mod defects;
mod props;
#[cfg(feature = "tracing")]
mod traced;
mod view;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowgate::prelude::*;
use flowgate::testing::MockSource;
use flowgate::{Backoff, Retry};
use futures::StreamExt;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn sleep(n: u64) {
    tokio::time::sleep(ms(n)).await;
}

#[tokio::test(start_paused = true)]
async fn busy_and_starved_times_are_exact() {
    // Items 0 and 1 at once, item 2 after 50 ms; each job takes 10 ms.
    let source = MockSource::new()
        .item(0u64)
        .item(1)
        .wait(ms(50))
        .item(2)
        .end();
    let flow = source
        .map_concurrent(4, |i| async move {
            sleep(10).await;
            i
        })
        .named("work");
    let stats = flow.stats();
    let out: Vec<u64> = flow.collect().await;
    assert_eq!(out, [0, 1, 2]);

    let s = stats.snapshot();
    assert_eq!(s.name.as_deref(), Some("work"));
    assert_eq!(s.operator, "map_concurrent");
    assert_eq!((s.limit, s.window), (4, 4));
    assert_eq!(s.pulled_count, 3);
    assert_eq!(s.started_count, 3);
    assert_eq!(s.finished_count, 3);
    assert_eq!(s.yielded_count, 3);
    assert_eq!((s.in_flight_count, s.held_count), (0, 0));
    assert_eq!((s.failed_count, s.retried_count), (0, 0));
    // Jobs 0 and 1 run 0..10 ms, job 2 runs 50..60 ms.
    assert_eq!(s.total_busy_duration, ms(20));
    // Waiting for upstream 0..10 ms (until item 0 left) and 10..50 ms.
    assert_eq!(s.total_starved_duration, ms(50));
    assert_eq!(s.total_backpressured_duration, Duration::ZERO);
    assert_eq!(s.elapsed, ms(60));
    assert!(s.ended);
}

#[tokio::test(start_paused = true)]
async fn a_slow_consumer_shows_as_backpressure() {
    let flow = flowgate::source::iter(0..6u64).map_concurrent(2, |i| async move {
        sleep(1).await;
        i
    });
    let stats = flow.stats();
    let mut flow = Box::pin(flow);
    let mut out = Vec::new();
    while let Some(i) = flow.next().await {
        out.push(i);
        sleep(10).await; // the consumer's own work
    }
    assert_eq!(out, (0..6).collect::<Vec<_>>());
    let s = stats.snapshot();
    // Items 0..4 leave at 1, 11, 21, 31 and 41 ms with the window full (the next item
    // was pulled in the same poll), each followed by 10 ms of the consumer's work; item
    // 5 leaves at 51 ms with nothing left to pull.
    assert_eq!(s.total_backpressured_duration, ms(50));
    // Jobs 0 and 1 at 0..1 ms, jobs 2..5 at 11..12, 21..22, 31..32, 41..42 ms.
    assert_eq!(s.total_busy_duration, ms(5));
    assert_eq!(s.total_starved_duration, Duration::ZERO);
    assert_eq!(s.elapsed, ms(61));
    assert_eq!((s.pulled_count, s.yielded_count), (6, 6));
}

#[tokio::test(start_paused = true)]
async fn open_backpressure_shows_from_the_first_snapshot_that_sees_it() {
    let flow = flowgate::source::iter(0..4u64).map_concurrent(2, |i| async move { i });
    let stats = flow.stats();
    let mut flow = Box::pin(flow);
    assert_eq!(flow.next().await, Some(0)); // left with the window full
    sleep(100).await; // the consumer is away
    let first = stats.snapshot();
    assert_eq!(first.total_backpressured_duration, Duration::ZERO);
    sleep(50).await;
    let second = stats.snapshot();
    assert_eq!(second.total_backpressured_duration, ms(50));
    assert_eq!(flow.next().await, Some(1)); // the interval closes: its exact length
    let closed = stats.snapshot();
    assert_eq!(closed.total_backpressured_duration, ms(150));
    assert_eq!(flow.collect::<Vec<_>>().await, [2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_live_snapshot_counts_the_open_intervals() {
    let flow = MockSource::new()
        .item(0u64)
        .wait(ms(100))
        .item(1)
        .end()
        .map_concurrent(2, |i| async move {
            sleep(30).await;
            i
        });
    let stats = flow.stats();
    let before = stats.snapshot();
    assert_eq!(before.operator, "");
    assert_eq!(before.pulled_count, 0);
    assert!(!before.ended);
    let run = tokio::spawn(flow.collect::<Vec<u64>>());
    sleep(20).await;
    // At 20 ms: job 0 running since 0 ms, the stage starved since 0 ms.
    let s = stats.snapshot();
    assert_eq!(
        (s.pulled_count, s.started_count, s.in_flight_count),
        (1, 1, 1)
    );
    assert_eq!(s.total_busy_duration, ms(20));
    assert_eq!(s.total_starved_duration, ms(20));
    assert_eq!(s.elapsed, ms(20));
    sleep(20).await;
    // At 40 ms: job 0 finished at 30 ms and left; starved again since then.
    let s = stats.snapshot();
    assert_eq!(
        (s.finished_count, s.yielded_count, s.in_flight_count),
        (1, 1, 0)
    );
    assert_eq!(s.total_busy_duration, ms(30));
    assert_eq!(s.total_starved_duration, ms(40));
    assert_eq!(run.await.unwrap(), [0, 1]);
    let s = stats.snapshot();
    assert_eq!(s.total_busy_duration, ms(60));
    assert_eq!(s.total_starved_duration, ms(100));
    assert_eq!(s.elapsed, ms(130));
    // Once ended, the clocks stop.
    sleep(1_000).await;
    assert_eq!(stats.snapshot(), s);
}

#[tokio::test(start_paused = true)]
async fn failures_and_retries_are_counted() {
    let calls = Arc::new(AtomicU32::new(0));
    let flow = flowgate::source::iter((0..10u64).map(Ok::<u64, String>))
        .try_map_concurrent(3, {
            let calls = Arc::clone(&calls);
            move |i| {
                let call = calls.fetch_add(1, Ordering::Relaxed);
                async move {
                    sleep(1).await;
                    // Item 3 always fails; item 5 fails only on its first attempt.
                    match i {
                        3 => Err(format!("{i} failed")),
                        5 if call < 6 => Err(format!("{i} failed once")),
                        _ => Ok(i),
                    }
                }
            }
        })
        .named("flaky");
    // Taken before the policies: they keep the counters.
    let stats = flow.stats();
    let flow = flow
        .with_retry(Retry::attempts(3).backoff(Backoff::fixed(ms(5))))
        .keep_going();
    let out: Vec<_> = flow.collect().await;
    assert_eq!(out.iter().filter(|r| r.is_err()).count(), 1);
    let s = stats.snapshot();
    assert_eq!(s.name.as_deref(), Some("flaky"));
    assert_eq!(s.pulled_count, 10);
    assert_eq!(s.yielded_count, 10);
    assert_eq!(s.failed_count, 1);
    // Item 3: two retries; item 5: one.
    assert_eq!(s.retried_count, 3);
    assert_eq!(s.started_count, 13);
    assert_eq!(s.finished_count, 13);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_counts_the_failure_and_the_cancelled_work() {
    let flow = flowgate::source::iter((0..20u64).map(Ok::<u64, String>)).try_map_concurrent(
        4,
        |i| async move {
            sleep(if i == 1 { 1 } else { 50 }).await;
            if i == 1 {
                Err("boom".to_owned())
            } else {
                Ok(i)
            }
        },
    );
    let stats = flow.stats();
    let out: Vec<_> = flow.collect().await;
    assert_eq!(out.len(), 2); // item 0, then the error
    let s = stats.snapshot();
    assert_eq!(s.failed_count, 1);
    assert_eq!(s.pulled_count, 4);
    assert_eq!(s.yielded_count, 2);
    assert_eq!(
        s.in_flight_count, 0,
        "cancelled jobs are not in flight: {s:?}"
    );
    assert!(s.ended);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_stage_ends_its_snapshot() {
    let flow = flowgate::source::iter(0..100u64).map_concurrent_unordered(8, |i| async move {
        sleep(100).await;
        i
    });
    let stats = flow.stats();
    let mut flow = Box::pin(flow);
    tokio::select! {
        _ = flow.next() => unreachable!("jobs take 100 ms"),
        _ = sleep(10) => {}
    }
    assert_eq!(stats.snapshot().in_flight_count, 8);
    drop(flow);
    tokio::task::yield_now().await;
    let s = stats.snapshot();
    assert!(s.ended);
    assert_eq!(s.in_flight_count, 0);
    assert_eq!(s.started_count, 8);
    assert_eq!(s.finished_count, 0);
    assert_eq!(s.elapsed, ms(10));
    assert_eq!(s.total_busy_duration, ms(10));
}

#[tokio::test(start_paused = true)]
async fn blocking_stages_count_and_time_their_jobs() {
    let flow = flowgate::source::iter(0..40u64)
        .par_map(2, |i| i * 2)
        .named("double");
    let stats = flow.stats();
    let out: Vec<u64> = flow.collect().await;
    assert_eq!(out.len(), 40);
    let s = stats.snapshot();
    assert_eq!(s.operator, "par_map");
    assert_eq!(
        (s.pulled_count, s.started_count, s.finished_count),
        (40, 40, 40)
    );
    assert_eq!((s.yielded_count, s.in_flight_count), (40, 0));
    assert!(s.ended);
}

#[tokio::test(start_paused = true)]
async fn keyed_stages_count_items_waiting_for_their_key_as_held() {
    let flow = flowgate::source::iter(0..6u64).map_concurrent_by_key(
        4,
        |_| 0u8, // one key: one job at a time
        |i| async move {
            sleep(10).await;
            i
        },
    );
    let stats = flow.stats();
    let run = tokio::spawn(flow.collect::<Vec<u64>>());
    sleep(5).await;
    let s = stats.snapshot();
    assert_eq!((s.pulled_count, s.held_count, s.in_flight_count), (4, 4, 1));
    assert_eq!(run.await.unwrap(), (0..6).collect::<Vec<_>>());
    let s = stats.snapshot();
    assert_eq!(s.total_busy_duration, ms(60));
    assert_eq!((s.started_count, s.yielded_count), (6, 6));
}

#[tokio::test(start_paused = true)]
async fn the_handle_is_taken_before_the_first_poll() {
    let mut flow =
        Box::pin(flowgate::source::iter(0..3u64).map_concurrent(2, |i| async move { i }));
    assert_eq!(flow.next().await, Some(0));
    let late = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| flow.stats()));
    let message = *late.unwrap_err().downcast::<String>().unwrap();
    assert!(
        message.contains("`stats` on `map_concurrent` after its first poll"),
        "{message}"
    );
}

#[tokio::test(start_paused = true)]
async fn every_handle_counts_the_same_and_names_may_come_later() {
    let flow = flowgate::source::iter(0..5u64).map_concurrent(2, |i| async move { i });
    let first = flow.stats();
    let flow = flow.named("late");
    let second = flow.stats();
    assert_eq!(flow.count().await, 5);
    assert_eq!(first.snapshot(), second.snapshot());
    assert_eq!(first.name().as_deref(), Some("late"));
    assert!(format!("{first:?}").contains("late"));
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_set_before_a_policy_is_kept() {
    let token = tokio_util::sync::CancellationToken::new();
    let flow = flowgate::source::iter((0..1_000u64).map(Ok::<u64, String>))
        .try_map_concurrent(2, |i| async move {
            sleep(10).await;
            Ok(i)
        })
        .with_shutdown(token.clone(), ms(5))
        .with_timeout(ms(100))
        .keep_going();
    let report = flow.shutdown_report();
    let mut flow = Box::pin(flow);
    let mut done = Vec::new();
    while let Some(item) = flow.next().await {
        done.push(item.expect("no failures"));
        if done.len() == 4 {
            token.cancel();
        }
    }
    let not_completed = report
        .get()
        .expect("the shutdown reached the policies' stream");
    // Every pulled position is either done or reported, never both.
    for i in 0..not_completed.first_not_pulled() {
        assert_ne!(done.contains(&i), not_completed.contains(i), "position {i}");
    }
    assert!(not_completed.first_not_pulled() < 10);
}

#[tokio::test(start_paused = true)]
async fn snapshots_on_an_interval_end_with_the_stage() {
    let flow = flowgate::source::iter(0..10u64).map_concurrent(1, |i| async move {
        sleep(100).await;
        i
    });
    let stats = flow.stats();
    let every = tokio::spawn(stats.every(ms(230)).collect::<Vec<_>>());
    assert_eq!(flow.count().await, 10);
    let snapshots = every.await.unwrap();
    // At 0, 230, 460, 690, 920 and 1150 ms (the run ends at 1000 ms: the last is final).
    let yielded: Vec<u64> = snapshots.iter().map(|s| s.yielded_count).collect();
    assert_eq!(yielded, [0, 2, 4, 6, 9, 10]);
    assert!(snapshots.last().unwrap().ended);
    assert!(snapshots[..snapshots.len() - 1].iter().all(|s| !s.ended));
}

#[test]
#[should_panic(expected = "`Stats::every` needs a `period` above zero")]
fn a_zero_period_panics() {
    let flow = flowgate::source::iter(0..1u64).map_concurrent(1, |i| async move { i });
    let _ = flow.stats().every(Duration::ZERO);
}
