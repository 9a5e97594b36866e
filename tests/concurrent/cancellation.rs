//! Cancellation on drop: dropping the stream aborts its async jobs promptly (at once on a
//! `current_thread` runtime), starts no new job and pulls nothing more; a blocking closure
//! already running finishes on its thread and its result is discarded. Nothing is leaked:
//! items, futures, finished results and the upstream are all released.

use flowgate::prelude::*;
use futures::StreamExt;

use crate::support::*;
use flowgate::testing::{LeakCheck, LeakToken};

const N: u64 = 50;
const LIMIT: usize = 4;

async fn drop_mid_way(op: Op) {
    let probe = Probe::new();
    let (gates, mut keys) = gates(N);
    let work = Work::new(&probe).gated(&gates);
    let mut flow = build(op, LIMIT, None, source(oks(N), &probe), work);
    keys.open(0);
    assert_eq!(next(&mut flow, &probe).await, Some(Ok(value(0))));
    let pulled = probe.pulled();
    eventually("every pulled job started", || probe.started() == pulled).await;
    assert_eq!(probe.live(), pulled - 1, "the jobs behind their gates");
    drop(flow);
    if op.is_blocking() {
        // Running closures cannot be interrupted: they finish, and nothing else starts.
        assert_eq!(
            probe.upstream_alive(),
            0,
            "the upstream outlived the stream"
        );
        keys.open_all();
        eventually("the running closures finished", || probe.live() == 0).await;
        assert_eq!(probe.completed(), pulled, "closures run to their end");
    } else {
        if on_current_thread() {
            assert_eq!(probe.live(), 0, "futures still alive right after the drop");
            assert_eq!(
                probe.running(),
                0,
                "futures still running right after the drop"
            );
        } else {
            eventually("the futures were dropped", || probe.live() == 0).await;
        }
        keys.open_all();
        settle().await;
        assert_eq!(probe.completed(), 1, "a cancelled future ran to its end");
    }
    assert_eq!(probe.started(), pulled, "a job started after the drop");
    assert_eq!(probe.pulled(), pulled, "an item was pulled after the drop");
    assert_eq!(
        probe.upstream_alive(),
        0,
        "the upstream outlived the stream"
    );
}

all_ops! {
    #[tokio::test]
    async fn dropping_the_stream_cancels_its_work_on_current_thread(op: Op) {
        drop_mid_way(op).await;
    }
}

all_ops! {
    #[on_workers]
    async fn dropping_the_stream_cancels_its_work_on_multi_thread(op: Op) {
        drop_mid_way(op).await;
    }
}

all_ops! {
    #[tokio::test]
    async fn a_stream_dropped_before_its_first_poll_did_nothing(op: Op) {
        let probe = Probe::new();
        let flow = build(op, LIMIT, None, source(oks(N), &probe), Work::new(&probe));
        drop(flow);
        settle().await;
        assert_eq!(
            (probe.pulled(), probe.started(), probe.live(), probe.upstream_alive()),
            (0, 0, 0, 0)
        );
    }
}

/// An item that counts itself alive (a test kit token) until dropped.
struct Tracked(#[allow(dead_code)] u64, #[allow(dead_code)] LeakToken);

/// Items carry a guard, and so do the results: after a drop with jobs running, queued
/// and finished-but-waiting (behind a slow head), every guard is released.
async fn nothing_is_leaked(ordered: bool, blocking: bool) {
    let leaks = LeakCheck::new();
    let (gates, mut keys) = gates(1);
    let items = leaks.clone();
    let upstream = futures::stream::iter(0..N).map(move |i| Tracked(i, items.token()));
    let mut flow: std::pin::Pin<Box<dyn futures::Stream<Item = Tracked> + Send>> = match blocking {
        false => {
            let job = move |item: Tracked| {
                let gates = gates.clone();
                async move {
                    gates.wait(item.0).await;
                    Tracked(item.0 * 2, item.1)
                }
            };
            if ordered {
                Box::pin(upstream.map_concurrent(LIMIT, job).with_window(LIMIT * 2))
            } else {
                Box::pin(upstream.map_concurrent_unordered(LIMIT, job))
            }
        }
        true => {
            let job = move |item: Tracked| {
                gates.wait_blocking(item.0);
                Tracked(item.0 * 2, item.1)
            };
            if ordered {
                Box::pin(upstream.par_map(LIMIT, job).with_window(LIMIT * 2))
            } else {
                Box::pin(upstream.par_map_unordered(LIMIT, job))
            }
        }
    };
    if ordered {
        // The head waits on its gate while results pile up behind it.
        for _ in 0..LIMIT * 4 {
            assert!(futures::poll!(flow.next()).is_pending());
            settle().await;
        }
    } else {
        // Results finish while the consumer looks away.
        let first = within("a result", flow.next()).await;
        assert!(first.is_some());
        drop(first);
        settle().await;
    }
    assert!(leaks.live() > 1, "nothing held at the drop");
    drop(flow);
    keys.open_all();
    // Blocked calls return once their gates open, on the blocking pool's threads, in
    // real time.
    leaks
        .assert_none_left_within_time(std::time::Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn nothing_is_leaked_map_concurrent() {
    nothing_is_leaked(true, false).await;
}

#[tokio::test]
async fn nothing_is_leaked_map_concurrent_unordered() {
    nothing_is_leaked(false, false).await;
}

#[tokio::test]
async fn nothing_is_leaked_par_map() {
    nothing_is_leaked(true, true).await;
}

#[tokio::test]
async fn nothing_is_leaked_par_map_unordered() {
    nothing_is_leaked(false, true).await;
}

#[test]
fn nothing_is_leaked_on_multi_thread() {
    on_workers(|| async {
        for (ordered, blocking) in [(true, false), (false, false), (true, true), (false, true)] {
            nothing_is_leaked(ordered, blocking).await;
        }
    });
}

/// Drops at many points, with jobs busy yielding and finishing on every worker: every job
/// is released each time.
async fn drop_anywhere(op: Op) {
    for stop_after in 0..40u64 {
        let probe = Probe::new();
        let work = Work::new(&probe).plan(|i| Step {
            yields: (i % 4) as u32,
            ..Step::default()
        });
        let mut flow = build(op, 8, None, source(oks(200), &probe), work);
        for _ in 0..stop_after * 3 {
            assert!(next(&mut flow, &probe).await.is_some());
        }
        let pulled = probe.pulled();
        drop(flow);
        eventually("every job was released", || probe.live() == 0).await;
        assert_eq!(probe.pulled(), pulled);
        assert_eq!(probe.upstream_alive(), 0);
    }
}

all_ops! {
    #[on_workers]
    async fn dropping_at_any_point_releases_every_job_on_multi_thread(op: Op) {
        drop_anywhere(op).await;
    }
}
