//! The counters stay consistent with each other at every moment, on 1 to 8 workers,
//! read by another task while the stage runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use flowgate::prelude::*;
use flowgate::stats::Snapshot;
use futures::StreamExt;

fn check(s: &Snapshot, limit: u64, window: u64, last: &mut Snapshot) {
    assert_eq!(s.held_count, s.pulled_count - s.yielded_count, "{s:?}");
    assert!(s.held_count <= window, "held above the window: {s:?}");
    assert!(
        s.in_flight_count <= limit,
        "more jobs than the limit: {s:?}"
    );
    assert!(s.finished_count <= s.started_count, "{s:?}");
    assert!(s.started_count <= s.pulled_count + s.retried_count, "{s:?}");
    for (now, before) in [
        (s.pulled_count, last.pulled_count),
        (s.yielded_count, last.yielded_count),
        (s.started_count, last.started_count),
        (s.finished_count, last.finished_count),
    ] {
        assert!(now >= before, "a count went back: {last:?} then {s:?}");
    }
    assert!(
        s.in_flight_count + s.finished_count <= s.started_count,
        "{s:?}"
    );
    assert!(
        s.elapsed >= last.elapsed,
        "elapsed went back: {last:?} then {s:?}"
    );
    assert!(s.total_busy_duration <= s.elapsed, "{s:?}");
    assert!(s.total_busy_duration >= last.total_busy_duration, "{s:?}");
    assert!(
        s.total_starved_duration >= last.total_starved_duration,
        "{s:?}"
    );
    assert!(
        s.total_backpressured_duration >= last.total_backpressured_duration,
        "{s:?}"
    );
    *last = s.clone();
}

fn stress(workers: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for round in 0..4u64 {
            const ITEMS: u64 = 20_000;
            let (limit, window) = (8u64, 32u64);
            let flow = flowgate::source::iter(0..ITEMS)
                .map_concurrent(limit as usize, move |i| async move {
                    if i % 7 == round {
                        tokio::task::yield_now().await;
                    }
                    i
                })
                .with_window(window as usize);
            let stats = flow.stats();
            let par = flow.par_map(2, |i| i + 1);
            let par_stats = par.stats();
            let done = Arc::new(AtomicBool::new(false));
            let reader = tokio::spawn({
                let done = Arc::clone(&done);
                async move {
                    let mut last = stats.snapshot();
                    let mut last_par = par_stats.snapshot();
                    let mut reads = 0u64;
                    while !done.load(Ordering::Acquire) {
                        check(&stats.snapshot(), limit, window, &mut last);
                        check(&par_stats.snapshot(), 2, 2, &mut last_par);
                        reads += 1;
                        tokio::task::yield_now().await;
                    }
                    let (s, p) = (stats.snapshot(), par_stats.snapshot());
                    check(&s, limit, window, &mut last);
                    check(&p, 2, 2, &mut last_par);
                    (s, p, reads)
                }
            });
            let sum: u64 = par.fold(0, |sum, i| async move { sum + i }).await;
            done.store(true, Ordering::Release);
            let (s, p, reads) = reader.await.unwrap();
            assert_eq!(sum, ITEMS * (ITEMS + 1) / 2);
            assert!(reads > 0);
            for s in [&s, &p] {
                assert!(s.ended, "{s:?}");
                assert_eq!(s.pulled_count, ITEMS);
                assert_eq!(s.yielded_count, ITEMS);
                assert_eq!(s.started_count, ITEMS);
                assert_eq!(s.finished_count, ITEMS);
                assert_eq!(s.in_flight_count, 0);
            }
        }
    });
}

#[test]
fn consistent_on_1_worker() {
    stress(1);
}

#[test]
fn consistent_on_2_workers() {
    stress(2);
}

#[test]
fn consistent_on_4_workers() {
    stress(4);
}

#[test]
fn consistent_on_8_workers() {
    stress(8);
}
