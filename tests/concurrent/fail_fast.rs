//! Fail fast in the `try_` operators: the first error, from `f` or from upstream, is
//! yielded in its position (ordered) or when it happens (unordered), then `None` for good;
//! work after the failing position is cancelled at once; nothing is pulled once the
//! failure is known; in input order the earliest failing position wins. The non-`try`
//! operators treat an `Err` as a plain value.

use futures::stream::FusedStream;

use crate::support::*;

const N: u64 = 20;
const LIMIT: usize = 4;

/// The stream is over: `None` at every poll, terminated, nothing more pulled.
async fn over_for_good(flow: &mut Flow, probe: &Probe) {
    let pulled = probe.pulled();
    for _ in 0..3 {
        assert_eq!(next(flow, probe).await, None);
    }
    assert!(flow.is_terminated());
    assert_eq!(flow.size_hint(), (0, Some(0)));
    assert_eq!(probe.pulled(), pulled, "pulled after the end");
}

/// Async jobs still alive must number `expected` (checked at once on `current_thread`,
/// where a cancellation takes effect before the consumer's poll returns).
async fn live_jobs(op: Op, probe: &Probe, expected: usize, what: &str) {
    if op.is_blocking() {
        return;
    }
    if on_current_thread() {
        assert_eq!(probe.live(), expected, "{what}");
    } else {
        eventually(what, || probe.live() == expected).await;
    }
}

/// Job 2 fails as soon as its gate opens; jobs 0, 1 and 3 wait on theirs.
async fn job_error(op: Op) {
    let probe = Probe::new();
    let (gates, mut keys) = gates(N);
    let work = Work::new(&probe).gated(&gates).plan(|i| Step {
        fail: i == 2,
        ..Step::default()
    });
    let mut flow = build(op, LIMIT, None, source(oks(N), &probe), work);
    assert!(poll_once(&mut flow, &probe).await.is_pending());
    assert_eq!(probe.pulled(), LIMIT);
    keys.open(2);
    eventually("the failing job ran", || probe.completed() == 1).await;
    if op.is_ordered() {
        assert!(
            poll_once(&mut flow, &probe).await.is_pending(),
            "the error jumped ahead of its position"
        );
        live_jobs(op, &probe, 2, "job 3 runs on after the failure at 2").await;
        assert_eq!(probe.pulled(), LIMIT, "pulled after the failure was known");
        // Three results remain: 0, 1 and the error.
        let (lower, upper) = flow.size_hint();
        assert!(
            lower <= 3 && upper.is_none_or(|upper| upper >= 3),
            "dishonest size_hint {:?}",
            (lower, upper)
        );
        keys.open(0);
        assert_eq!(next(&mut flow, &probe).await, Some(Ok(value(0))));
        keys.open(1);
        assert_eq!(next(&mut flow, &probe).await, Some(Ok(value(1))));
    }
    assert_eq!(next(&mut flow, &probe).await, Some(Err(Fail::Job(2))));
    live_jobs(op, &probe, 0, "jobs run on after the error").await;
    assert_eq!(probe.pulled(), LIMIT, "pulled after the failure was known");
    over_for_good(&mut flow, &probe).await;
    keys.open_all();
    eventually("the jobs ended", || probe.live() == 0).await;
}

try_ops! {
    #[tokio::test]
    async fn an_error_from_f_ends_the_stream_on_current_thread(op: Op) {
        job_error(op).await;
    }
}

try_ops! {
    #[on_workers]
    async fn an_error_from_f_ends_the_stream_on_multi_thread(op: Op) {
        job_error(op).await;
    }
}

/// Upstream fails at 2, behind two gated jobs, with room in the bound for more.
async fn upstream_error(op: Op) {
    let probe = Probe::new();
    let (gates, mut keys) = gates(N);
    let mut items = oks(N);
    items[2] = Err(Fail::Upstream(2));
    let work = Work::new(&probe).gated(&gates);
    let mut flow = build(op, LIMIT, None, source(items, &probe), work);
    if op.is_ordered() {
        assert!(poll_once(&mut flow, &probe).await.is_pending());
        assert_eq!(probe.pulled(), 3, "pulled past the error");
        keys.open(0);
        assert_eq!(next(&mut flow, &probe).await, Some(Ok(value(0))));
        keys.open(1);
        assert_eq!(next(&mut flow, &probe).await, Some(Ok(value(1))));
    }
    assert_eq!(next(&mut flow, &probe).await, Some(Err(Fail::Upstream(2))));
    live_jobs(op, &probe, 0, "jobs run on after the error").await;
    assert_eq!(probe.pulled(), 3, "pulled past the error");
    over_for_good(&mut flow, &probe).await;
    keys.open_all();
    eventually("the jobs ended", || probe.live() == 0).await;
}

try_ops! {
    #[tokio::test]
    async fn an_upstream_error_ends_the_stream_on_current_thread(op: Op) {
        upstream_error(op).await;
    }
}

try_ops! {
    #[on_workers]
    async fn an_upstream_error_ends_the_stream_on_multi_thread(op: Op) {
        upstream_error(op).await;
    }
}

/// Jobs 1 and 3 fail; 3 fails first in time, 1 later: in input order, 1 wins.
async fn earliest_position_wins(op: Op) {
    let probe = Probe::new();
    let (gates, mut keys) = gates(N);
    let work = Work::new(&probe).gated(&gates).plan(|i| Step {
        fail: i == 1 || i == 3,
        ..Step::default()
    });
    let mut flow = build(op, LIMIT, None, source(oks(N), &probe), work);
    assert!(poll_once(&mut flow, &probe).await.is_pending());
    keys.open(3);
    if !op.is_ordered() {
        // In finish order, the first failure to happen wins.
        assert_eq!(next(&mut flow, &probe).await, Some(Err(Fail::Job(3))));
        over_for_good(&mut flow, &probe).await;
        return;
    }
    eventually("job 3 failed", || probe.completed() == 1).await;
    assert!(poll_once(&mut flow, &probe).await.is_pending());
    keys.open(1);
    eventually("job 1 failed", || probe.completed() == 2).await;
    assert!(poll_once(&mut flow, &probe).await.is_pending());
    live_jobs(op, &probe, 1, "jobs after the earliest failure run on").await;
    keys.open(0);
    assert_eq!(
        drain(&mut flow, &probe).await,
        vec![Ok(value(0)), Err(Fail::Job(1))]
    );
    assert_eq!(probe.pulled(), LIMIT);
    over_for_good(&mut flow, &probe).await;
}

try_ops! {
    #[tokio::test]
    async fn the_first_failure_in_order_wins_on_current_thread(op: Op) {
        earliest_position_wins(op).await;
    }
}

try_ops! {
    #[on_workers]
    async fn the_first_failure_in_order_wins_on_multi_thread(op: Op) {
        earliest_position_wins(op).await;
    }
}

/// Upstream fails at 3 (known at once), job 1 fails later: ordered, job 1 wins.
async fn earlier_job_error_beats_upstream_error(op: Op) {
    let probe = Probe::new();
    let (gates, mut keys) = gates(N);
    let mut items = oks(N);
    items[3] = Err(Fail::Upstream(3));
    let work = Work::new(&probe).gated(&gates).plan(|i| Step {
        fail: i == 1,
        ..Step::default()
    });
    let mut flow = build(op, LIMIT, None, source(items, &probe), work);
    assert!(poll_once(&mut flow, &probe).await.is_pending());
    assert_eq!(probe.pulled(), 4);
    keys.open(1);
    eventually("job 1 failed", || probe.completed() == 1).await;
    assert!(poll_once(&mut flow, &probe).await.is_pending());
    live_jobs(op, &probe, 1, "job 2 runs on after the failure at 1").await;
    keys.open(0);
    assert_eq!(
        drain(&mut flow, &probe).await,
        vec![Ok(value(0)), Err(Fail::Job(1))]
    );
    assert_eq!(probe.pulled(), 4);
    keys.open_all();
    eventually("the jobs ended", || probe.live() == 0).await;
}

op_tests! {
    ops: [try_map_concurrent => TryMapConcurrent, try_par_map => TryParMap],
    #[tokio::test]
    async fn an_earlier_job_error_beats_a_known_upstream_error(op: Op) {
        earlier_job_error_beats_upstream_error(op).await;
    }
}

plain_ops! {
    #[tokio::test]
    async fn errors_are_plain_values_without_try(op: Op) {
        let probe = Probe::new();
        let mut items = oks(N);
        items[3] = Err(Fail::Upstream(3));
        let work = Work::new(&probe).plan(|i| Step {
            fail: i == 5,
            ..Step::default()
        });
        let mut flow = build(op, LIMIT, None, source(items.clone(), &probe), work);
        let out = drain(&mut flow, &probe).await;
        let mut expected = sequential(&items);
        expected[5] = Err(Fail::Job(5));
        if op.is_ordered() {
            assert_eq!(out, expected);
        } else {
            assert_eq!(sorted(out), sorted(expected));
        }
    }
}

/// In finish order, an error overtakes the results that finished before it and are not
/// yet yielded: once it has happened, it is the next result, and those are dropped. With
/// a wide `limit`, many results wait to leave when the error comes.
async fn error_overtakes_finished_results(op: Op) {
    const WIDE: usize = 64;
    let probe = Probe::new();
    let (gates, mut keys) = gates(WIDE as u64);
    let work = Work::new(&probe).gated(&gates).plan(|i| Step {
        fail: i == 20,
        ..Step::default()
    });
    let mut flow = build(op, WIDE, None, source(oks(WIDE as u64), &probe), work);
    assert!(poll_once(&mut flow, &probe).await.is_pending());
    for i in 0..20 {
        keys.open(i);
    }
    eventually("20 jobs finished", || probe.completed() == 20).await;
    assert!(matches!(next(&mut flow, &probe).await, Some(Ok(_))));
    keys.open(20);
    eventually("the failing job ran", || probe.completed() == 21).await;
    assert_eq!(
        next(&mut flow, &probe).await,
        Some(Err(Fail::Job(20))),
        "a result was yielded after the error happened"
    );
    assert_eq!(next(&mut flow, &probe).await, None);
}

op_tests! {
    ops: [try_map_concurrent_unordered => TryMapConcurrentUnordered],
    // On `current_thread`, a job's result is handed over before the test task runs again,
    // so "the job ran" means "the consumer can see it".
    #[tokio::test]
    async fn an_error_overtakes_finished_results_in_finish_order(op: Op) {
        error_overtakes_finished_results(op).await;
    }
}
