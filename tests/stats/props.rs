//! Property tests: whatever the items, limits and failures, the counts add up, and the
//! intervals of a snapshot stream add up to the totals.

use std::collections::HashMap;
use std::time::Duration;

use flowgate::prelude::*;
use flowgate::stats::Pipeline;
use flowgate::{Backoff, Retry};
use futures::StreamExt;
use proptest::prelude::*;

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Items fail their first `fails[i]` attempts; with 3 attempts in all and
    /// keep-going, an item failing 3 or more times is a failure. Every count is exact.
    #[test]
    fn counts_add_up(
        fails in proptest::collection::vec(0u32..5, 1..60),
        limit in 1usize..10,
        extra_window in 0usize..10,
        unordered in any::<bool>(),
    ) {
        let n = fails.len() as u64;
        let failing: u64 = fails.iter().filter(|&&f| f >= 3).count() as u64;
        let retries: u64 = fails.iter().map(|&f| u64::from(f.min(2))).sum();
        let snapshot = paused_runtime().block_on(async {
            let attempts = std::sync::Arc::new(std::sync::Mutex::new(HashMap::<u64, u32>::new()));
            let fails = fails.clone();
            let f = move |i: u64| {
                let attempt = {
                    let mut attempts = attempts.lock().unwrap();
                    let attempt = attempts.entry(i).or_insert(0);
                    *attempt += 1;
                    *attempt
                };
                let fail = attempt <= fails[i as usize];
                async move {
                    tokio::time::sleep(Duration::from_millis(1 + i % 3)).await;
                    if fail { Err(format!("{i}")) } else { Ok(i) }
                }
            };
            let source = flowgate::source::iter((0..n).map(Ok::<u64, String>));
            let retry = Retry::attempts(3).backoff(Backoff::fixed(Duration::from_millis(2)));
            let (count, stats) = if unordered {
                let flow = source.try_map_concurrent_unordered(limit, f);
                let stats = flow.stats();
                (flow.with_retry(retry).keep_going().count().await, stats)
            } else {
                let flow = source.try_map_concurrent(limit, f).with_window(limit + extra_window);
                let stats = flow.stats();
                (flow.with_retry(retry).keep_going().count().await, stats)
            };
            assert_eq!(count as u64, n);
            stats.snapshot()
        });
        prop_assert_eq!(snapshot.pulled_count, n);
        prop_assert_eq!(snapshot.yielded_count, n);
        prop_assert_eq!(snapshot.failed_count, failing);
        prop_assert_eq!(snapshot.retried_count, retries);
        prop_assert_eq!(snapshot.started_count, n + retries);
        prop_assert_eq!(snapshot.finished_count, n + retries);
        prop_assert_eq!(snapshot.in_flight_count, 0);
        prop_assert!(snapshot.ended);
        prop_assert!(snapshot.total_busy_duration <= snapshot.elapsed);
        prop_assert!(
            snapshot.total_starved_duration + snapshot.total_backpressured_duration
                <= snapshot.elapsed
        );
    }

    /// The samples of a view's stream add up to the stage's totals (tokio-metrics'
    /// intervals, translated).
    #[test]
    fn intervals_add_up_to_the_totals(
        n in 1u64..200,
        limit in 1usize..8,
        period_ms in 1u64..50,
        consumer_ms in 0u64..3,
    ) {
        let (samples, total) = paused_runtime().block_on(async {
            let flow = flowgate::source::iter(0..n)
                .map_concurrent(limit, |i| async move {
                    tokio::time::sleep(Duration::from_millis(1 + i % 5)).await;
                    i
                })
                .named("stage");
            let stats = flow.stats();
            let view = Pipeline::new().stage(&stats);
            let samples = tokio::spawn(view.every(Duration::from_millis(period_ms)).collect::<Vec<_>>());
            let mut flow = Box::pin(flow);
            while flow.next().await.is_some() {
                tokio::time::sleep(Duration::from_millis(consumer_ms)).await;
            }
            drop(flow);
            (samples.await.unwrap(), stats.snapshot())
        });
        let sum = |f: fn(&flowgate::stats::Snapshot) -> Duration| {
            samples.iter().map(|s| f(&s.stages[0].interval)).sum::<Duration>()
        };
        let yielded: u64 = samples.iter().map(|s| s.stages[0].interval.yielded_count).sum();
        prop_assert_eq!(yielded, total.yielded_count);
        prop_assert_eq!(sum(|s| s.total_busy_duration), total.total_busy_duration);
        prop_assert_eq!(sum(|s| s.total_starved_duration), total.total_starved_duration);
        prop_assert_eq!(sum(|s| s.total_backpressured_duration), total.total_backpressured_duration);
        prop_assert_eq!(sum(|s| s.elapsed), total.elapsed);
    }
}
