//! `map_concurrent_by_key` and `map_concurrent_by_key_unordered`, through the public API:
//! per-key order, one job per key, the bound with items waiting for their key, slow and
//! hot keys on the paused clock, and the core's semantics (cancellation, panics, bad
//! arguments, shutdown).
//!
//! Akka's `mapAsyncPartitioned` scenarios, translated: elements processed in parallel
//! with order kept within a partition, never more than `parallelism` futures at once
//! (the property tests), a partitioner that throws (a panic in `key`, re-raised at its
//! position). Where flowgate differs on purpose: Akka emits in input order only; the
//! unordered form here emits as jobs finish, each key's results still in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::prelude::*;
use flowgate::testing::{LeakCheck, MockSource, Probe};
use futures::{Stream, StreamExt};
use proptest::prelude::*;

mod scenarios;
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Jobs running, per key and in all, with the most ever seen.
#[derive(Default)]
struct Running {
    per_key: Mutex<HashMap<u32, usize>>,
    max_per_key: AtomicUsize,
    all: AtomicUsize,
    max_all: AtomicUsize,
}

impl Running {
    fn enter(&self, key: u32) {
        let mut per_key = self.per_key.lock().unwrap();
        let n = per_key.entry(key).or_insert(0);
        *n += 1;
        self.max_per_key.fetch_max(*n, Ordering::SeqCst);
        let all = self.all.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_all.fetch_max(all, Ordering::SeqCst);
    }

    fn leave(&self, key: u32) {
        *self.per_key.lock().unwrap().get_mut(&key).unwrap() -= 1;
        self.all.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One generated case: (key, delay in ms) per item, the limit, the extra window.
#[derive(Debug, Clone)]
struct Case {
    items: Vec<(u32, u64)>,
    limit: usize,
    extra: usize,
    ordered: bool,
}

fn cases(keys: u32) -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec((0..keys, 0u64..5), 0..120),
        1usize..8,
        0usize..16,
        any::<bool>(),
    )
        .prop_map(|(items, limit, extra, ordered)| Case {
            items,
            limit,
            extra,
            ordered,
        })
}

/// Runs a case and checks every promise; `timed` jobs sleep their delay (paused clock),
/// others yield that many times (any runtime).
async fn check(case: Case, timed: bool) {
    let Case {
        items,
        limit,
        extra,
        ordered,
    } = case;
    let window = limit + extra;
    let running = Arc::new(Running::default());
    let probe = Probe::new();
    let source = probe.input(flowgate::source::iter(
        items.clone().into_iter().enumerate(),
    ));
    let key = |(_, (key, _)): &(usize, (u32, u64))| *key;
    let work = {
        let running = Arc::clone(&running);
        move |(position, (key, delay)): (usize, (u32, u64))| {
            let running = Arc::clone(&running);
            async move {
                running.enter(key);
                if timed {
                    tokio::time::sleep(ms(delay)).await;
                } else {
                    for _ in 0..delay {
                        tokio::task::yield_now().await;
                    }
                }
                running.leave(key);
                (position, key)
            }
        }
    };
    let out: Vec<(usize, u32)> = if ordered {
        let flow = source
            .map_concurrent_by_key(limit, key, work)
            .with_window(window);
        probe.output_by(flow, |(p, _)| *p as u64).collect().await
    } else {
        let flow = source
            .map_concurrent_by_key_unordered(limit, key, work)
            .with_window(window);
        probe.output_by(flow, |(p, _)| *p as u64).collect().await
    };
    // No loss, no duplicate.
    let mut positions: Vec<usize> = out.iter().map(|(p, _)| *p).collect();
    if ordered {
        assert_eq!(
            positions,
            (0..items.len()).collect::<Vec<_>>(),
            "input order"
        );
    }
    positions.sort_unstable();
    assert_eq!(
        positions,
        (0..items.len()).collect::<Vec<_>>(),
        "each item once"
    );
    // Per-key order.
    let mut last: HashMap<u32, usize> = HashMap::new();
    for (position, key) in &out {
        if let Some(before) = last.insert(*key, *position) {
            assert!(before < *position, "key {key}: {position} after {before}");
        }
    }
    assert!(
        running.max_per_key.load(Ordering::SeqCst) <= 1,
        "two jobs of one key at once"
    );
    assert!(
        running.max_all.load(Ordering::SeqCst) <= limit,
        "more than limit jobs"
    );
    probe.assert_max_in_flight(window as u64);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn per_key_order_one_job_per_key_and_the_bound_on_the_paused_clock(case in cases(6)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(check(case, true));
    }

    #[test]
    fn per_key_order_one_job_per_key_and_the_bound_on_multi_thread(case in cases(6)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(check(case, false));
    }

    #[test]
    fn many_distinct_keys(case in cases(10_000)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(check(case, true));
    }
}

#[test]
fn on_1_2_4_and_8_workers() {
    for workers in [1, 2, 4, 8] {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap();
        for ordered in [true, false] {
            let items = (0..2_000u32)
                .map(|i| ((i * 7919) % 13, u64::from(i % 3)))
                .collect();
            runtime.block_on(check(
                Case {
                    items,
                    limit: 6,
                    extra: 10,
                    ordered,
                },
                false,
            ));
        }
    }
}

/// The items' times of completion, by key, in virtual ms from the start.
async fn finish_times<S>(flow: S, start: Instant) -> HashMap<char, Vec<u64>>
where
    S: Stream<Item = char>,
{
    let mut times: HashMap<char, Vec<u64>> = HashMap::new();
    let mut flow = std::pin::pin!(flow);
    while let Some(key) = flow.next().await {
        times
            .entry(key)
            .or_default()
            .push(start.elapsed().as_millis() as u64);
    }
    times
}

#[tokio::test(start_paused = true)]
async fn a_slow_key_does_not_hold_up_the_others_while_the_window_has_room() {
    // Four rounds of A..Z; A takes 100 ms an item, B..Z 1 ms.
    let keys: Vec<char> = (0..4).flat_map(|_| 'A'..='Z').collect();
    let start = Instant::now();
    let flow = flowgate::source::iter(keys)
        .map_concurrent_by_key_unordered(
            4,
            |key| *key,
            |key| async move {
                tokio::time::sleep(ms(if key == 'A' { 100 } else { 1 })).await;
                key
            },
        )
        .with_window(64);
    let times = finish_times(flow, start).await;
    assert_eq!(times[&'A'], [100, 200, 300, 400], "A's items one at a time");
    let others = times
        .iter()
        .filter(|(key, _)| **key != 'A')
        .flat_map(|(_, t)| t.iter().copied())
        .max()
        .unwrap();
    // 100 items of 1 ms on the 3 places A leaves free: 34 ms.
    assert_eq!(others, 34, "B..Z in their own time, not A's");
}

#[tokio::test(start_paused = true)]
async fn a_hot_key_that_fills_the_window_stops_the_pulling_as_documented() {
    // 100 items of key A (10 ms each), then one of key B.
    let source = MockSource::new().items((0..100).map(|_| 'A')).item('B');
    let pulls = source.handle();
    let start = Instant::now();
    let flow = source
        .map_concurrent_by_key_unordered(
            4,
            |key| *key,
            |key| async move {
                tokio::time::sleep(ms(if key == 'A' { 10 } else { 1 })).await;
                key
            },
        )
        .with_window(64);
    let times = finish_times(flow, start).await;
    let pulled = pulls.pulled_at();
    assert_eq!(pulled[..64], [ms(0); 64], "the window fills at once");
    // Then one place frees as each A item leaves: item 64 at 10 ms, ..., item 100 (B)
    // once 37 A items left.
    assert_eq!(pulled[64], ms(10));
    assert_eq!(pulled[100], ms(370), "B waits for a place in the window");
    assert_eq!(times[&'B'], [371], "and runs at once, beside A");
    assert_eq!(times[&'A'].last(), Some(&1000));
}

#[tokio::test(start_paused = true)]
async fn an_ordered_run_yields_in_input_order_while_keys_run_alongside() {
    let start = Instant::now();
    let out: Vec<(u32, Duration)> =
        flowgate::source::iter([(1u32, 30u64), (2, 10), (1, 10), (3, 5)])
            .map_concurrent_by_key(
                4,
                |(key, _)| *key,
                move |(key, delay)| async move {
                    tokio::time::sleep(ms(delay)).await;
                    (key, start.elapsed())
                },
            )
            .collect()
            .await;
    // Key 1's second item starts when its first finished (30 ms), not when it leaves.
    assert_eq!(out, [(1, ms(30)), (2, ms(10)), (1, ms(40)), (3, ms(5))]);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_stream_cancels_running_jobs_and_drops_waiting_items() {
    let leaks = LeakCheck::new();
    let tracked = leaks.clone();
    let mut flow = flowgate::source::iter((0..100u64).map({
        let leaks = leaks.clone();
        move |i| (i, leaks.token())
    }))
    .map_concurrent_by_key(
        8,
        |(i, _)| i % 3,
        move |(i, token)| {
            tracked.track(async move {
                let _token = token;
                tokio::time::sleep(ms(1000)).await;
                i
            })
        },
    );
    let mut next = flowgate::testing::spawn(flow.next());
    flowgate::testing::assert_pending!(next.poll());
    drop(next);
    assert_eq!(leaks.futures_made(), 3, "one job per key");
    assert_eq!(
        leaks.live(),
        3 + 8,
        "3 jobs, 8 items held (5 waiting for their key)"
    );
    drop(flow);
    leaks.assert_none_left().await;
}

#[tokio::test]
async fn a_panic_in_key_is_re_raised_at_its_position_with_its_payload() {
    let flow = flowgate::source::iter(0..10u32).map_concurrent_by_key(
        4,
        |i| {
            if *i == 5 {
                std::panic::panic_any(format!("no key for {i}"));
            }
            i % 2
        },
        |i| async move { i },
    );
    let mut flow = std::pin::pin!(flow);
    let mut seen = Vec::new();
    let panicked = loop {
        match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(flow.next())).await {
            Ok(Some(i)) => seen.push(i),
            Ok(None) => panic!("the panic was lost"),
            Err(payload) => break payload,
        }
    };
    assert_eq!(seen, [0, 1, 2, 3, 4], "the results before it first");
    assert_eq!(panicked.downcast_ref::<String>().unwrap(), "no key for 5");
}

#[tokio::test]
async fn a_panic_in_a_job_is_re_raised_with_its_payload() {
    let flow = flowgate::source::iter(0..10u32).map_concurrent_by_key_unordered(
        4,
        |i| i % 2,
        |i| async move {
            assert!(i != 3, "job 3 failed");
            i
        },
    );
    let result = tokio::spawn(flow.collect::<Vec<u32>>()).await;
    let payload = result.unwrap_err().into_panic();
    assert_eq!(*payload.downcast_ref::<&str>().unwrap(), "job 3 failed");
}

/// Keys need only `Hash + Eq`: not `Clone`, not `Sync`; the stream is `Send` when its
/// parts are.
#[test]
fn keys_need_neither_clone_nor_sync_and_the_stream_is_send() {
    #[derive(Hash, PartialEq, Eq)]
    struct Account(u32, std::marker::PhantomData<std::cell::Cell<()>>); // neither Clone nor Sync
    fn is_send<T: Send>(_: &T) {}
    let flow = flowgate::source::iter(0..10u32).map_concurrent_by_key(
        2,
        |i| Account(i % 3, std::marker::PhantomData),
        |i| async move { i },
    );
    is_send(&flow);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out: Vec<u32> = runtime.block_on(flow.collect());
    assert_eq!(out, (0..10).collect::<Vec<_>>());
}

#[test]
#[should_panic(expected = "flowgate: `map_concurrent_by_key` needs `limit` > 0, got 0")]
fn a_zero_limit_is_refused() {
    let _ = flowgate::source::iter(0..1).map_concurrent_by_key(0, |i| *i, |i| async move { i });
}

#[test]
#[should_panic(
    expected = "`with_window` needs `window` >= `limit` (4) on `map_concurrent_by_key_unordered`, got 2"
)]
fn a_window_below_the_limit_is_refused() {
    let _ = flowgate::source::iter(0..1)
        .map_concurrent_by_key_unordered(4, |i| *i, |i| async move { i })
        .with_window(2);
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_reports_items_waiting_for_their_key_as_not_completed() {
    let token = flowgate::policy::CancellationToken::new();
    let flow = flowgate::source::iter(0..20u64)
        .map_concurrent_by_key_unordered(
            4,
            |i| i % 2,
            |i| async move {
                tokio::time::sleep(ms(10)).await;
                i
            },
        )
        .with_window(8)
        .with_shutdown(token.clone(), ms(20));
    let report = flow.shutdown_report();
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(ms(25)).await;
        token.cancel();
    });
    let out: Vec<u64> = flow.collect().await;
    stopper.await.unwrap();
    let report = report.get().expect("the stream ended by the shutdown");
    // Keys 0 and 1: 10 ms per item, one at a time, two results every 10 ms, each pair
    // making room for two more pulls; cancelled at 25 ms (items 0..12 pulled), grace
    // until 45 ms: 4, 5 finish at 30 ms, 6, 7 at 40 ms, 8 and 9 run past the grace.
    assert_eq!(out, [0, 1, 2, 3, 4, 5, 6, 7]);
    let mut not_completed: Vec<u64> = report.cancelled().to_vec();
    not_completed.sort_unstable();
    assert_eq!(
        not_completed,
        [8, 9, 10, 11],
        "8 and 9 cancelled running; 10 and 11 waited for their key and never started"
    );
    assert_eq!(report.first_not_pulled(), 12);
}
