//! Property tests over random sizes, limits, windows, per-item delays and consumer pauses:
//! ordered output is the sequential map, unordered output a permutation, no item is lost or
//! duplicated, and neither the window (items pulled and not yet yielded, checked at every
//! pull) nor the running cap is ever exceeded.

use std::sync::Arc;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;

use crate::support::*;

const ASYNC_OPS: [Op; 4] = [
    Op::MapConcurrent,
    Op::MapConcurrentUnordered,
    Op::TryMapConcurrent,
    Op::TryMapConcurrentUnordered,
];

const BLOCKING_OPS: [Op; 4] = [
    Op::ParMap,
    Op::ParMapUnordered,
    Op::TryParMap,
    Op::TryParMapUnordered,
];

/// One random scenario.
#[derive(Clone, Debug)]
struct Case {
    /// Per-item delay: milliseconds of tokio's clock on the async lane; yields and a few
    /// tens of microseconds of real sleep on the blocking lane.
    delays: Vec<u64>,
    limit: usize,
    /// The window on ordered operators is `limit + extra`.
    extra: usize,
    /// The consumer pauses after every `pause_every`-th result (0: never).
    pause_every: usize,
}

fn cases(max_items: usize) -> impl Strategy<Value = Case> {
    (
        vec(0u64..5, 0..max_items),
        1usize..16,
        0usize..=32,
        0usize..6,
    )
        .prop_map(|(delays, limit, extra, pause_every)| Case {
            delays,
            limit,
            extra,
            pause_every,
        })
}

fn windows_of(op: Op, case: &Case) -> Vec<Option<usize>> {
    if op.is_ordered() {
        vec![None, Some(case.limit + case.extra)]
    } else {
        vec![None]
    }
}

/// Runs `op` on `case` inside `runtime` and checks every property. On the paused clock the
/// async lane's jobs and the consumer's pauses sleep in virtual time; elsewhere they
/// only yield.
fn check(
    runtime: &tokio::runtime::Runtime,
    paused: bool,
    op: Op,
    window: Option<usize>,
    case: &Case,
) -> Result<(), TestCaseError> {
    let n = case.delays.len() as u64;
    let delays = Arc::new(case.delays.clone());
    let plan = move |i: u64| {
        let delay = delays[i as usize];
        Step {
            sleep: Duration::from_millis(if paused { delay } else { 0 }),
            thread_sleep: Duration::from_micros(delay * 10),
            yields: delay as u32,
            ..Step::default()
        }
    };
    let probe = Probe::new();
    let mut flow = build(
        op,
        case.limit,
        window,
        source(oks(n), &probe),
        Work::new(&probe).plan(plan),
    );
    let pause_every = case.pause_every;
    let out = runtime.block_on(async {
        let mut out = Vec::new();
        while let Some(item) = next(&mut flow, &probe).await {
            out.push(item);
            if pause_every > 0 && out.len() % pause_every == 0 {
                if paused && !op.is_blocking() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                } else {
                    settle().await;
                }
            }
        }
        out
    });
    let expected = sequential(&oks(n));
    let bound = window.unwrap_or(case.limit);
    if op.is_ordered() {
        prop_assert_eq!(out, expected, "{} {:?}", op.name(), window);
    } else {
        prop_assert_eq!(sorted(out), expected, "{} {:?}", op.name(), window);
    }
    prop_assert!(
        probe.max_held() <= bound,
        "{}: {} held, window {}",
        op.name(),
        probe.max_held(),
        bound
    );
    prop_assert!(
        probe.max_running() <= case.limit,
        "{}: {} running, limit {}",
        op.name(),
        probe.max_running(),
        case.limit
    );
    prop_assert_eq!(probe.pulled() as u64, n);
    prop_assert_eq!(probe.completed() as u64, n);
    Ok(())
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// [`check`] on a multi-thread runtime of `workers` workers; a failure names the count.
fn check_on_workers(
    workers: usize,
    runtime: &tokio::runtime::Runtime,
    op: Op,
    window: Option<usize>,
    case: &Case,
) -> Result<(), TestCaseError> {
    let context = format!("on {workers} worker threads");
    match in_context(&context, || check(runtime, false, op, window, case)) {
        Err(TestCaseError::Fail(reason)) => {
            Err(TestCaseError::fail(format!("{context}: {reason}")))
        }
        outcome => outcome,
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_async_lane_keeps_order_every_item_and_its_bounds(case in cases(300)) {
        let runtime = paused_runtime();
        for op in ASYNC_OPS {
            for window in windows_of(op, &case) {
                check(&runtime, true, op, window, &case)?;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_blocking_lane_keeps_order_every_item_and_its_bounds(case in cases(300)) {
        let runtime = paused_runtime();
        for op in BLOCKING_OPS {
            for window in windows_of(op, &case) {
                check(&runtime, true, op, window, &case)?;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn both_lanes_keep_order_and_every_item_on_multi_thread(case in cases(300)) {
        for workers in WORKER_COUNTS {
            let runtime = multi_thread(workers);
            for op in [Op::MapConcurrent, Op::MapConcurrentUnordered, Op::ParMap, Op::ParMapUnordered] {
                for window in windows_of(op, &case) {
                    check_on_workers(workers, &runtime, op, window, &case)?;
                }
            }
        }
    }
}
