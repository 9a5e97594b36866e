//! `with_retry`, `with_timeout`, `keep_going` and `catch_panics` on the async `try_`
//! operators, on the paused clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::prelude::*;
use flowgate::{Backoff, Error, Retry};
use futures::{StreamExt, TryStreamExt};
use tokio::time::{sleep, Instant};

const MS: Duration = Duration::from_millis(1);

/// Calls of `f`: (item, virtual ms since the start).
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<(u32, u128)>>>);

impl Calls {
    fn record(&self, item: u32, start: Instant) -> usize {
        let mut calls = self.0.lock().unwrap();
        calls.push((item, start.elapsed().as_millis()));
        calls.iter().filter(|(i, _)| *i == item).count()
    }

    fn of(&self, item: u32) -> Vec<u128> {
        let calls = self.0.lock().unwrap();
        calls
            .iter()
            .filter(|(i, _)| *i == item)
            .map(|(_, at)| *at)
            .collect()
    }
}

fn items(n: u32) -> impl futures::Stream<Item = Result<u32, String>> {
    flowgate::source::iter((0..n).map(Ok))
}

#[tokio::test(start_paused = true)]
async fn exponential_backoff_retries_at_0_10_30_70_ms() {
    let calls = Calls::default();
    let start = Instant::now();
    let seen = calls.clone();
    let out: Vec<Result<u32, Error<String>>> = items(1)
        .try_map_concurrent(4, move |i| {
            seen.record(i, start);
            async move { Err::<u32, _>(format!("refused {i}")) }
        })
        .with_retry(Retry::attempts(4).backoff(Backoff::exponential(10 * MS, 1000 * MS)))
        .collect()
        .await;
    assert_eq!(calls.of(0), [0, 10, 30, 70]);
    let error = out[0].as_ref().unwrap_err();
    assert_eq!(error.attempts(), 4);
    assert_eq!(error.position(), 0);
    assert_eq!(error.inner().map(String::as_str), Some("refused 0"));
    assert_eq!(
        error.to_string(),
        "item 0 failed after 4 attempts: refused 0"
    );
    assert_eq!(out.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_seeded_jitter_gives_the_same_schedule_every_run() {
    async fn schedule(seed: u64) -> Vec<Vec<u128>> {
        let calls = Calls::default();
        let start = Instant::now();
        let seen = calls.clone();
        let _: Vec<_> = items(3)
            .try_map_concurrent(3, move |i| {
                seen.record(i, start);
                async move { Err::<u32, _>(String::from("no")) }
            })
            .with_retry(
                Retry::attempts(5)
                    .backoff(Backoff::exponential(10 * MS, 1000 * MS))
                    .jitter(seed),
            )
            .keep_going()
            .collect()
            .await;
        (0..3).map(|i| calls.of(i)).collect()
    }
    let first = schedule(7).await;
    assert_eq!(first, schedule(7).await);
    assert_ne!(first, schedule(8).await);
    for times in &first {
        // Each delay lies in the upper half of 10, 20, 40, 80 ms.
        let delays: Vec<u128> = times.windows(2).map(|w| w[1] - w[0]).collect();
        for (delay, full) in delays.iter().zip([10, 20, 40, 80]) {
            assert!(*delay >= full / 2 && *delay <= full, "{delays:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn retry_if_decides_which_errors_are_worth_it() {
    let calls = Calls::default();
    let start = Instant::now();
    let seen = calls.clone();
    let out: Vec<_> = items(2)
        .try_map_concurrent(2, move |i| {
            seen.record(i, start);
            async move { Err::<u32, _>(if i == 0 { "transient" } else { "fatal" }.to_owned()) }
        })
        .with_retry(Retry::attempts(3).retry_if(|e: &String| e == "transient"))
        .keep_going()
        .collect()
        .await;
    assert_eq!(calls.of(0).len(), 3);
    assert_eq!(calls.of(1).len(), 1);
    assert_eq!(out[0].as_ref().unwrap_err().attempts(), 3);
    assert_eq!(out[1].as_ref().unwrap_err().attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn max_elapsed_stops_retries_that_would_start_too_late() {
    let calls = Calls::default();
    let start = Instant::now();
    let seen = calls.clone();
    let out: Vec<_> = items(1)
        .try_map_concurrent(1, move |i| {
            seen.record(i, start);
            async move {
                sleep(5 * MS).await;
                Err::<u32, _>(String::from("slow failure"))
            }
        })
        .with_retry(
            Retry::attempts(10)
                .backoff(Backoff::fixed(10 * MS))
                .max_elapsed(40 * MS),
        )
        .collect()
        .await;
    // Attempts start at 0, 15, 30 ms; the next would start at 45 ms, past 40.
    assert_eq!(calls.of(0), [0, 15, 30]);
    assert_eq!(out[0].as_ref().unwrap_err().attempts(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_retried_item_keeps_its_position_and_frees_its_running_slot() {
    // Item 0 fails at once and waits 100 ms; meanwhile items 1..=3 run, two at a time.
    let calls = Calls::default();
    let start = Instant::now();
    let seen = calls.clone();
    let out: Vec<u32> = items(4)
        .try_map_concurrent(2, move |i| {
            let n = seen.record(i, start);
            async move {
                if i == 0 && n == 1 {
                    return Err(String::from("first try fails"));
                }
                sleep(10 * MS).await;
                Ok(i)
            }
        })
        .with_retry(Retry::attempts(2).backoff(Backoff::fixed(100 * MS)))
        .with_window(4)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        out,
        [0, 1, 2, 3],
        "input order, the retried item in its place"
    );
    assert_eq!(calls.of(0), [0, 100]);
    assert_eq!(calls.of(1), [0]);
    assert_eq!(calls.of(2), [0], "item 2 took the running slot item 0 left");
    assert_eq!(calls.of(3), [10]);
}

#[tokio::test(start_paused = true)]
async fn an_item_waiting_for_a_retry_holds_its_place_in_the_window() {
    let pulled = Arc::new(Mutex::new(Vec::new()));
    let log = pulled.clone();
    let start = Instant::now();
    let upstream = items(3).inspect(move |_| log.lock().unwrap().push(start.elapsed().as_millis()));
    let calls = Calls::default();
    let seen = calls.clone();
    let out: Vec<u32> = upstream
        .try_map_concurrent(2, move |i| {
            let n = seen.record(i, start);
            async move {
                if i == 0 && n == 1 {
                    Err(String::from("again"))
                } else {
                    Ok(i)
                }
            }
        })
        .with_retry(Retry::attempts(2).backoff(Backoff::fixed(50 * MS)))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(out, [0, 1, 2]);
    // Window 2: item 0 (waiting) and item 1 fill it; item 2 is pulled once item 0 and
    // item 1 have left, after item 0's retry at 50 ms.
    assert_eq!(*pulled.lock().unwrap(), [0, 0, 50]);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_fires_exactly_at_its_deadline_and_is_retried() {
    let calls = Calls::default();
    let start = Instant::now();
    let seen = calls.clone();
    let mut out = Box::pin(
        items(1)
            .try_map_concurrent(1, move |i| {
                let n = seen.record(i, start);
                async move {
                    if n < 3 {
                        futures::future::pending::<()>().await;
                    }
                    Ok(i)
                }
            })
            .with_timeout(50 * MS)
            .with_retry(Retry::attempts(3).backoff(Backoff::fixed(5 * MS))),
    );
    assert_eq!(out.next().await, Some(Ok(0)));
    assert_eq!(calls.of(0), [0, 55, 110]);
    assert_eq!(start.elapsed(), 110 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_is_an_error_value_with_the_time_spent() {
    let start = Instant::now();
    let out: Vec<_> = items(3)
        .try_map_concurrent(3, |i| async move {
            sleep(MS * (40 * i)).await;
            Ok(i)
        })
        .keep_going()
        .with_timeout(50 * MS)
        .collect()
        .await;
    assert_eq!(out[0], Ok(0));
    assert_eq!(out[1], Ok(1));
    let error = out[2].as_ref().unwrap_err();
    assert!(error.is_timeout());
    assert_eq!(error.cause(), &flowgate::Cause::TimedOut { after: 50 * MS });
    assert_eq!(error.to_string(), "item 2 timed out after 50ms (attempt 1)");
    assert_eq!(start.elapsed(), 50 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_job_ready_at_its_deadline_succeeds() {
    let out: Vec<_> = items(1)
        .try_map_concurrent(1, |i| async move {
            sleep(50 * MS).await;
            Ok(i)
        })
        .with_timeout(50 * MS)
        .collect()
        .await;
    assert_eq!(out, [Ok(0)]);
}

#[tokio::test(start_paused = true)]
async fn without_keep_going_the_first_final_failure_ends_the_run() {
    let out: Vec<_> = items(6)
        .try_map_concurrent(2, |i| async move {
            sleep(MS * i).await;
            if i == 2 {
                Err(String::from("bad"))
            } else {
                Ok(i)
            }
        })
        .with_timeout(Duration::from_secs(1))
        .collect()
        .await;
    assert_eq!(out.len(), 3);
    assert_eq!(&out[..2], &[Ok(0), Ok(1)]);
    assert_eq!(out[2].as_ref().unwrap_err().position(), 2);
}

#[tokio::test(start_paused = true)]
async fn keep_going_yields_failures_in_position_or_as_they_happen() {
    let work = |i: u32| async move {
        sleep(MS * (10 - i)).await;
        if i % 3 == 0 {
            Err(format!("bad {i}"))
        } else {
            Ok(i)
        }
    };
    let ordered: Vec<_> = items(10)
        .try_map_concurrent(4, work)
        .keep_going()
        .collect()
        .await;
    let shape: Vec<Result<u32, u64>> = ordered
        .iter()
        .map(|r| r.clone().map_err(|e| e.position()))
        .collect();
    assert_eq!(
        shape,
        [
            Err(0),
            Ok(1),
            Ok(2),
            Err(3),
            Ok(4),
            Ok(5),
            Err(6),
            Ok(7),
            Ok(8),
            Err(9)
        ]
    );
    let unordered: Vec<_> = items(10)
        .try_map_concurrent_unordered(10, work)
        .keep_going()
        .collect()
        .await;
    let positions: Vec<u64> = unordered
        .iter()
        .map(|r| match r {
            Ok(i) => u64::from(*i),
            Err(e) => e.position(),
        })
        .collect();
    assert_eq!(positions, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0], "as they finish");
}

#[tokio::test(start_paused = true)]
async fn upstream_errors_flow_on_and_are_never_retried() {
    let upstream = flowgate::source::iter([Ok(1u32), Err(String::from("bad line")), Ok(3)]);
    let calls = Calls::default();
    let start = Instant::now();
    let seen = calls.clone();
    let out: Vec<_> = upstream
        .try_map_concurrent(2, move |i| {
            seen.record(i, start);
            async move { Ok(i) }
        })
        .with_retry(Retry::attempts(3))
        .keep_going()
        .collect()
        .await;
    assert_eq!(out[0], Ok(1));
    let error = out[1].as_ref().unwrap_err();
    assert_eq!((error.position(), error.attempts()), (1, 0));
    assert_eq!(error.to_string(), "item 1 failed upstream: bad line");
    assert_eq!(out[2], Ok(3));
    assert_eq!(calls.0.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn caught_panics_are_values_and_retried() {
    let calls = Calls::default();
    let start = Instant::now();
    let seen = calls.clone();
    let out: Vec<_> = items(3)
        .try_map_concurrent(3, move |i| {
            let n = seen.record(i, start);
            if i == 2 && n == 1 {
                panic!("f itself panics for {i}");
            }
            async move {
                if i == 1 {
                    panic!("always {i}");
                }
                Ok(i)
            }
        })
        .catch_panics()
        .with_retry(Retry::attempts(2))
        .keep_going()
        .collect()
        .await;
    assert_eq!(out[0], Ok(0));
    let error = out[1].as_ref().unwrap_err();
    assert!(error.is_panic());
    assert_eq!(error.to_string(), "item 1 panicked (attempt 2): always 1");
    assert_eq!(out[2], Ok(2), "the panic in `f` was retried");
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "not caught")]
async fn without_catch_panics_a_panic_re_raises_even_with_keep_going() {
    let _: Vec<_> = items(3)
        .try_map_concurrent(2, |i| async move {
            if i == 1 {
                panic!("not caught");
            }
            Ok::<u32, String>(i)
        })
        .keep_going()
        .with_retry(Retry::attempts(3))
        .collect()
        .await;
}

#[tokio::test(start_paused = true)]
async fn policies_apply_in_any_order() {
    let work = |i: u32| async move {
        if i == 1 {
            Err(String::from("x"))
        } else {
            Ok(i)
        }
    };
    let a: Vec<_> = items(3)
        .try_map_concurrent(2, work)
        .with_timeout(MS * 100)
        .keep_going()
        .catch_panics()
        .collect()
        .await;
    let b: Vec<_> = items(3)
        .try_map_concurrent(2, work)
        .catch_panics()
        .keep_going()
        .with_timeout(MS * 100)
        .collect()
        .await;
    assert_eq!(a, b);
    assert_eq!(a.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_call_f_only_from_the_consumer_s_task() {
    tokio::task_local! {
        static CONSUMER: ();
    }
    let out: Vec<u32> = CONSUMER
        .scope((), async {
            items(50)
                .try_map_concurrent(8, |i| {
                    assert!(
                        CONSUMER.try_with(|_| ()).is_ok(),
                        "`f` called outside the consumer's task"
                    );
                    async move {
                        tokio::task::yield_now().await;
                        if i % 2 == 0 {
                            Err(String::from("retry me"))
                        } else {
                            Ok(i)
                        }
                    }
                })
                .with_retry(Retry::attempts(3))
                .keep_going()
                .filter_map(|r| async move { r.ok() })
                .collect()
                .await
        })
        .await;
    assert_eq!(out, (0..50).filter(|i| i % 2 == 1).collect::<Vec<_>>());
}

#[test]
#[should_panic(expected = "`timeout` above zero on `try_map_concurrent`")]
fn a_zero_timeout_panics_naming_it() {
    let _ = items(1)
        .try_map_concurrent(1, |i| async move { Ok(i) })
        .with_timeout(Duration::ZERO);
}

/// The policies on 1, 2, 4 and 8 runtime workers (8 oversubscribe the machine): every
/// item ends once, in input order, retries and caught panics included, on both lanes.
#[test]
fn the_policies_hold_on_any_number_of_workers() {
    for workers in [1, 2, 4, 8] {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let tries = Arc::new(Mutex::new(vec![0u32; 300]));
            let seen = tries.clone();
            let out: Vec<_> = items(300)
                .try_map_concurrent(16, move |i| {
                    let n = {
                        let mut tries = seen.lock().unwrap();
                        tries[i as usize] += 1;
                        tries[i as usize]
                    };
                    async move {
                        tokio::task::yield_now().await;
                        match i % 10 {
                            0 if n == 1 => Err(format!("transient {i}")),
                            1 if n == 1 => panic!("panics once at {i}"),
                            2 => Err(format!("permanent {i}")),
                            _ => Ok(i),
                        }
                    }
                })
                .with_retry(Retry::attempts(2).retry_if(|e: &String| e.starts_with("transient")))
                .catch_panics()
                .keep_going()
                .with_timeout(Duration::from_secs(30))
                .collect()
                .await;
            assert_eq!(out.len(), 300, "{workers} workers");
            for (i, result) in out.iter().enumerate() {
                match result {
                    Ok(v) => assert_eq!(*v as usize, i),
                    Err(e) => {
                        assert_eq!(e.position() as usize, i, "{workers} workers: order");
                        assert_eq!(i % 10, 2, "{workers} workers: {e}");
                    }
                }
            }
            let blocking: Vec<_> = items(200)
                .try_par_map_unordered(3, |i| {
                    if i % 7 == 0 {
                        Err(format!("bad {i}"))
                    } else {
                        Ok(i)
                    }
                })
                .with_retry(Retry::attempts(2))
                .keep_going()
                .collect()
                .await;
            let mut positions: Vec<u64> = blocking
                .iter()
                .map(|r| r.as_ref().map_or_else(|e| e.position(), |v| u64::from(*v)))
                .collect();
            positions.sort_unstable();
            assert_eq!(
                positions,
                (0..200).collect::<Vec<u64>>(),
                "{workers} workers"
            );
        });
    }
}

#[tokio::test(start_paused = true)]
async fn unordered_items_retried_far_behind_the_others_keep_their_inputs() {
    // Items 0 and 100 fail their first attempts and wait out a long backoff while
    // thousands of others pass them: each retry gets its own input back.
    let calls = Calls::default();
    let start = Instant::now();
    let seen = calls.clone();
    let out: Vec<u32> = items(5000)
        .try_map_concurrent_unordered(8, move |i| {
            let attempt = seen.record(i, start);
            async move {
                sleep(MS).await;
                if (i == 0 || i == 100) && attempt < 3 {
                    Err(format!("busy {i}"))
                } else {
                    Ok(i)
                }
            }
        })
        .with_retry(Retry::attempts(3).backoff(Backoff::fixed(400 * MS)))
        .map(|r| r.expect("every item succeeds in the end"))
        .collect()
        .await;
    assert_eq!(out.len(), 5000);
    assert_eq!(out.iter().filter(|&&i| i == 0 || i == 100).count(), 2);
    let mut sorted = out.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..5000).collect::<Vec<_>>(), "each item once");
    assert_eq!(calls.of(0), [0, 401, 802]);
    let at = calls.of(100);
    assert_eq!(
        [at[1] - at[0], at[2] - at[1]],
        [401, 401],
        "each attempt takes 1 ms, each backoff 400 ms: {at:?}"
    );
}
