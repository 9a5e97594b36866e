//! Ordering and no loss: an ordered operator yields the sequential map whatever order its
//! jobs finish in; an unordered one yields a permutation, in the order the jobs finish.
//! Checked on both runtimes, with the bound and the running cap checked along the way.

use std::time::Duration;

use futures::stream::FusedStream;

use crate::support::*;

const N: u64 = 150;
const LIMITS: [usize; 5] = [1, 2, 3, 8, 64];

/// Jobs that yield a few times, so they finish out of order on several threads.
fn jitter(i: u64) -> Step {
    Step {
        yields: (i * 7 % 5) as u32,
        ..Step::default()
    }
}

/// Jobs that sleep 0 to 10 ms on tokio's clock, in a scrambled pattern.
fn scrambled_sleeps(i: u64) -> Step {
    Step {
        sleep: Duration::from_millis(i * 37 % 11),
        ..Step::default()
    }
}

/// Upstream is always ready, or hesitates (is `Pending` once) before every few items.
#[derive(Clone, Copy, Debug)]
enum Upstream {
    Ready,
    Hesitant,
}

/// Runs `op` over `0..N` and checks order, no loss, the bound and the running cap.
async fn order_no_loss_and_bound(
    op: Op,
    limit: usize,
    window: Option<usize>,
    plan: fn(u64) -> Step,
) {
    for upstream in [Upstream::Ready, Upstream::Hesitant] {
        order_no_loss_and_bound_with(op, limit, window, plan, upstream).await;
    }
}

async fn order_no_loss_and_bound_with(
    op: Op,
    limit: usize,
    window: Option<usize>,
    plan: fn(u64) -> Step,
    upstream: Upstream,
) {
    let context = format!("{} limit {limit} window {window:?} {upstream:?}", op.name());
    let probe = Probe::new();
    let items = oks(N);
    let work = Work::new(&probe).plan(plan);
    let mut flow = match upstream {
        Upstream::Ready => build(op, limit, window, source(items.clone(), &probe), work),
        Upstream::Hesitant => build(
            op,
            limit,
            window,
            hesitant_source(items.clone(), &probe, 3),
            work,
        ),
    };
    let out = drain(&mut flow, &probe).await;
    let expected = sequential(&items);
    if op.is_ordered() {
        assert_eq!(out, expected, "{context}: not the sequential map");
    } else {
        assert_eq!(sorted(out), expected, "{context}: not a permutation");
    }
    assert!(
        probe.max_held() <= window.unwrap_or(limit),
        "{context}: {} items pulled and not yet yielded",
        probe.max_held()
    );
    assert!(
        probe.max_running() <= limit,
        "{context}: {} jobs ran at once",
        probe.max_running()
    );
    assert_eq!(probe.pulled(), N as usize, "{context}: pulls");
    assert_eq!(probe.completed(), N as usize, "{context}: jobs run");
    assert_eq!(probe.live(), 0, "{context}: jobs left alive");
    assert!(flow.is_terminated(), "{context}: not terminated");
    drop(flow);
    assert_eq!(
        probe.upstream_alive(),
        0,
        "{context}: upstream outlived the stream"
    );
}

all_ops! {
    #[tokio::test]
    async fn order_no_loss_and_bound_on_current_thread(op: Op) {
        for limit in LIMITS {
            for window in windows(op, limit) {
                order_no_loss_and_bound(op, limit, window, jitter).await;
            }
        }
    }
}

all_ops! {
    #[on_workers]
    async fn order_no_loss_and_bound_on_multi_thread(op: Op) {
        for limit in LIMITS {
            for window in windows(op, limit) {
                order_no_loss_and_bound(op, limit, window, jitter).await;
            }
        }
    }
}

async_ops! {
    #[tokio::test(start_paused = true)]
    async fn order_no_loss_and_bound_with_sleeps_on_the_paused_clock(op: Op) {
        for limit in LIMITS {
            for window in windows(op, limit) {
                order_no_loss_and_bound(op, limit, window, scrambled_sleeps).await;
            }
        }
    }
}

/// The jobs finish last to first; the ordered output still starts with the head, and
/// only once the head is done.
async fn waits_for_the_head(op: Op) {
    let probe = Probe::new();
    let (gates, mut keys) = gates(4);
    let work = Work::new(&probe).gated(&gates);
    let mut flow = build(op, 4, None, source(oks(4), &probe), work);
    assert!(poll_once(&mut flow, &probe).await.is_pending());
    for i in [3, 2, 1] {
        keys.open(i);
        eventually("the job finished", || probe.completed() == 4 - i as usize).await;
        assert!(
            poll_once(&mut flow, &probe).await.is_pending(),
            "a result was yielded before the head"
        );
    }
    keys.open(0);
    assert_eq!(drain(&mut flow, &probe).await, sequential(&oks(4)));
    assert_eq!(probe.finish_order(), vec![3, 2, 1, 0]);
}

ordered_ops! {
    #[tokio::test]
    async fn ordered_waits_for_the_head_on_current_thread(op: Op) {
        waits_for_the_head(op).await;
    }
}

ordered_ops! {
    #[on_workers]
    async fn ordered_waits_for_the_head_on_multi_thread(op: Op) {
        waits_for_the_head(op).await;
    }
}

/// The jobs finish in an order the test chooses; each result comes out as its job ends.
async fn yields_in_finish_order(op: Op) {
    let order = [4u64, 1, 5, 0, 3, 2];
    let probe = Probe::new();
    let (gates, mut keys) = gates(6);
    let work = Work::new(&probe).gated(&gates);
    let mut flow = build(op, 6, None, source(oks(6), &probe), work);
    assert!(poll_once(&mut flow, &probe).await.is_pending());
    for i in order {
        keys.open(i);
        assert_eq!(next(&mut flow, &probe).await, Some(Ok(value(i))));
    }
    assert_eq!(next(&mut flow, &probe).await, None);
}

unordered_ops! {
    #[tokio::test]
    async fn unordered_yields_in_finish_order_on_current_thread(op: Op) {
        yields_in_finish_order(op).await;
    }
}

unordered_ops! {
    #[on_workers]
    async fn unordered_yields_in_finish_order_on_multi_thread(op: Op) {
        yields_in_finish_order(op).await;
    }
}

/// The finish order of jobs with these durations, started greedily on `limit` places in
/// input order (a job starts the moment a place frees up).
fn simulated_finish_order(durations: &[u64], limit: usize) -> Vec<u64> {
    let mut places = vec![0u64; limit];
    let mut finishes: Vec<(u64, u64)> = Vec::new();
    for (i, duration) in durations.iter().enumerate() {
        let place = (0..limit).min_by_key(|&p| places[p]).unwrap();
        places[place] += duration;
        finishes.push((places[place], i as u64));
    }
    finishes.sort();
    let mut times: Vec<u64> = finishes.iter().map(|(t, _)| *t).collect();
    times.dedup();
    assert_eq!(
        times.len(),
        durations.len(),
        "the scenario has simultaneous finishes"
    );
    finishes.into_iter().map(|(_, i)| i).collect()
}

op_tests! {
    ops: [
        map_concurrent_unordered => MapConcurrentUnordered,
        try_map_concurrent_unordered => TryMapConcurrentUnordered,
    ],
    #[tokio::test(start_paused = true)]
    async fn unordered_yields_in_finish_order_on_the_paused_clock(op: Op) {
        const LIMIT: usize = 3;
        let durations: Vec<u64> = (0..40).map(|i| i * 5 % 101 + 1).collect();
        let expected: Vec<Item> = simulated_finish_order(&durations, LIMIT)
            .into_iter()
            .map(|i| Ok(value(i)))
            .collect();
        let probe = Probe::new();
        let plan = move |i: u64| Step {
            sleep: Duration::from_millis(i * 5 % 101 + 1),
            ..Step::default()
        };
        let work = Work::new(&probe).plan(plan);
        let mut flow = build(op, LIMIT, None, source(oks(40), &probe), work);
        assert_eq!(drain(&mut flow, &probe).await, expected);
    }
}

all_ops! {
    #[on_workers]
    async fn many_items_arrive_complete_on_multi_thread(op: Op) {
        const MANY: u64 = 5_000;
        for limit in [1, 16] {
            let probe = Probe::new();
            let work = Work::new(&probe).plan(|i| Step {
                yields: (i % 2) as u32,
                ..Step::default()
            });
            let mut flow = build(op, limit, None, source(oks(MANY), &probe), work);
            let out = drain(&mut flow, &probe).await;
            if op.is_ordered() {
                assert_eq!(out, sequential(&oks(MANY)), "limit {limit}");
            } else {
                assert_eq!(sorted(out), sequential(&oks(MANY)), "limit {limit}");
            }
            assert!(probe.max_held() <= limit);
        }
    }
}
