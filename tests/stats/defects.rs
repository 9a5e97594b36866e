//! Scenarios from a review of the statistics: each failed before its fix.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use flowgate::prelude::*;
use flowgate::stats::{Pipeline, Snapshot};
use flowgate::Stats;
use futures::StreamExt;

use super::{ms, sleep};

/// Reads `stats` on a thread of its own until `done`, checking every snapshot with
/// `check`; returns the snapshots that satisfied `keep`.
fn reader(
    stats: Stats,
    done: Arc<AtomicBool>,
    check: fn(&Snapshot),
) -> std::thread::JoinHandle<Vec<Snapshot>> {
    std::thread::spawn(move || {
        let mut ended = Vec::new();
        while !done.load(Ordering::Acquire) {
            let s = stats.snapshot();
            check(&s);
            if s.ended && ended.is_empty() {
                ended.push(s);
            }
        }
        ended
    })
}

fn one_worker() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn jobs_cancelled_before_their_hand_over_never_wrap_in_flight() {
    let runtime = one_worker();
    for _ in 0..300 {
        let flow = flowgate::source::iter((0..16u64).map(|i| {
            if i == 6 {
                Err("up".to_owned())
            } else {
                Ok(i)
            }
        }))
        .try_map_concurrent_unordered(8, |i| async move { Ok::<u64, String>(i) });
        let stats = flow.stats();
        let done = Arc::new(AtomicBool::new(false));
        let reading = reader(stats.clone(), Arc::clone(&done), |s| {
            assert!(s.in_flight_count <= s.limit as u64, "{s:?}");
            assert!(
                s.in_flight_count + s.finished_count <= s.started_count,
                "{s:?}"
            );
        });
        let _ = runtime.block_on(flow.collect::<Vec<_>>());
        done.store(true, Ordering::Release);
        reading.join().unwrap();
        assert_eq!(stats.snapshot().in_flight_count, 0);
    }
}

#[test]
fn the_first_ended_snapshot_is_the_final_one() {
    let runtime = one_worker();
    let mut seen_ended = 0;
    for _ in 0..300 {
        let flow = flowgate::source::iter((0..64u64).map(Ok::<u64, String>)).try_map_concurrent(
            8,
            |i| async move {
                if i == 3 {
                    Err("boom".to_owned())
                } else {
                    Ok(i)
                }
            },
        );
        let stats = flow.stats();
        let done = Arc::new(AtomicBool::new(false));
        let reading = reader(stats.clone(), Arc::clone(&done), |_| {});
        let out = runtime.block_on(flow.collect::<Vec<_>>());
        assert_eq!(out.len(), 4);
        done.store(true, Ordering::Release);
        let first_ended = reading.join().unwrap();
        let last = stats.snapshot();
        assert_eq!((last.failed_count, last.yielded_count), (1, 4));
        if let Some(first) = first_ended.first() {
            assert_eq!(first, &last);
            seen_ended += 1;
        }
    }
    assert!(
        seen_ended > 0,
        "the reader never saw the stage end while it ran"
    );
}

#[test]
fn in_flight_and_finished_never_exceed_started() {
    let runtime = one_worker();
    for _ in 0..100 {
        let flow = flowgate::source::iter(0..2_000u64).map_concurrent(8, |i| async move { i });
        let stats = flow.stats();
        let done = Arc::new(AtomicBool::new(false));
        let reading = reader(stats.clone(), Arc::clone(&done), |s| {
            assert!(
                s.in_flight_count + s.finished_count <= s.started_count,
                "{s:?}"
            );
        });
        assert_eq!(runtime.block_on(flow.count()), 2_000);
        done.store(true, Ordering::Release);
        reading.join().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn the_clocks_stop_at_the_end_though_a_blocking_call_outlives_it() {
    let (release, gate) = mpsc::channel::<()>();
    let (started, mut started_now) = tokio::sync::mpsc::unbounded_channel();
    let gate = std::sync::Mutex::new(gate);
    let flow = flowgate::source::iter(0..1u64).par_map(1, move |i| {
        started.send(()).unwrap();
        gate.lock().unwrap().recv().unwrap();
        i
    });
    let stats = flow.stats();
    let mut flow = Box::pin(flow);
    let mut next = tokio_test::task::spawn(flow.next());
    tokio_test::assert_pending!(next.poll());
    started_now.recv().await.unwrap();
    tokio::time::advance(ms(100)).await;
    drop(next);
    drop(flow);
    let at_drop = stats.snapshot();
    assert!(at_drop.ended);
    assert_eq!(at_drop.total_busy_duration, ms(100));
    assert_eq!(at_drop.in_flight_count, 1, "the call runs on");
    tokio::time::advance(ms(500)).await;
    release.send(()).unwrap();
    // The call returns on its thread; the clocks stay stopped.
    let later = stats.snapshot();
    assert_eq!(later.total_busy_duration, ms(100));
    assert_eq!(later.elapsed, ms(100));
}

#[test]
fn a_blocking_call_abandoned_at_its_timeout_leaves_the_jobs_in_flight() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (release, gate) = mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    let flow = flowgate::source::iter((0..4u64).map(Ok::<u64, String>))
        .try_par_map(1, move |i| {
            // Every call hangs until released, far past its timeout.
            let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(10));
            Ok::<u64, String>(i)
        })
        .with_timeout(ms(20))
        .keep_going();
    let stats = flow.stats();
    let done = Arc::new(AtomicBool::new(false));
    let reading = reader(stats.clone(), Arc::clone(&done), |s| {
        assert!(s.in_flight_count <= s.limit as u64, "{s:?}");
    });
    let out = runtime.block_on(flow.collect::<Vec<_>>());
    assert!(out
        .iter()
        .all(|r| r.as_ref().is_err_and(|e| e.is_timeout())));
    for _ in 0..4 {
        let _ = release.send(());
    }
    done.store(true, Ordering::Release);
    reading.join().unwrap();
    let s = stats.snapshot();
    assert_eq!((s.failed_count, s.in_flight_count), (4, 0));
}

#[tokio::test(start_paused = true)]
async fn a_stage_dropped_before_its_first_poll_ends() {
    let flow = flowgate::source::iter(0..10u64).map_concurrent(2, |i| async move { i });
    let stats = flow.stats();
    let polled = flowgate::source::iter(0..3u64).map_concurrent(2, |i| async move { i });
    let view = Pipeline::new().stage(&polled.stats()).stage(&stats);
    drop(flow);
    assert!(stats.snapshot().ended);
    assert_eq!(stats.every(ms(100)).count().await, 1);
    assert_eq!(polled.count().await, 3);
    assert_eq!(view.every(ms(100)).count().await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_stage_ends_when_the_stage_after_it_ends_early() {
    let first = flowgate::source::iter(0..1_000u64)
        .map_concurrent(4, |i| async move {
            sleep(10).await;
            if i == 20 {
                Err(i)
            } else {
                Ok(i)
            }
        })
        .named("first");
    let first_stats = first.stats();
    let second = first.try_map_concurrent(2, |i| async move {
        sleep(5).await;
        Ok::<u64, u64>(i)
    });
    let mut second = Box::pin(second);
    while let Some(item) = second.next().await {
        if item.is_err() {
            break;
        }
    }
    assert_eq!(second.next().await, None);
    // `second` is still held: `first` ended with it all the same.
    let at_end = first_stats.snapshot();
    assert!(at_end.ended, "{at_end:?}");
    sleep(1_000).await;
    assert_eq!(first_stats.snapshot(), at_end);
}

#[tokio::test(start_paused = true)]
async fn backpressure_open_at_a_drop_counts_to_the_drop() {
    for read_between in [false, true] {
        let flow = flowgate::source::iter(0..100u64).map_concurrent(2, |i| async move { i });
        let stats = flow.stats();
        let mut flow = Box::pin(flow);
        flow.next().await; // the bound full: backpressured from here
        sleep(50).await;
        if read_between {
            let _ = stats.snapshot();
        }
        sleep(50).await;
        drop(flow);
        assert_eq!(stats.snapshot().total_backpressured_duration, ms(100));
    }
}
