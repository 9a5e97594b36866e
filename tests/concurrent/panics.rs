//! Panics are never lost: a panic in user code re-raises in the consumer with its original
//! payload; in input order only after the results before its position; all other work is
//! cancelled before the re-raise; and afterwards the stream is over for good.

use flowgate::prelude::*;
use futures::{FutureExt, StreamExt};

use crate::support::*;

const N: u64 = 10;
const LIMIT: usize = 4;

/// Item 2 panics at once; items 0, 1 and 3 wait on their gates.
async fn panic_at_its_position(op: Op) {
    let probe = Probe::new();
    let (gates, mut keys) = gates(N);
    keys.open(2);
    let work = Work::new(&probe).gated(&gates).plan(|i| Step {
        panic: i == 2,
        ..Step::default()
    });
    let mut flow = build(op, LIMIT, None, source(oks(N), &probe), work);
    if op.is_ordered() {
        assert!(poll_once(&mut flow, &probe).await.is_pending());
        eventually("the panicking job ran", || probe.completed() == 1).await;
        assert!(
            poll_once(&mut flow, &probe).await.is_pending(),
            "the panic jumped ahead of its position"
        );
        keys.open(0);
        assert_eq!(next(&mut flow, &probe).await, Some(Ok(value(0))));
        keys.open(1);
        assert_eq!(next(&mut flow, &probe).await, Some(Ok(value(1))));
    }
    let payload = next_or_panic(&mut flow, &probe)
        .await
        .expect_err("the panic was lost");
    assert_eq!(panic_message(&*payload), "boom at 2");
    others_cancelled(op, &probe, &mut keys).await;
    over_for_good(&mut flow, &probe).await;
}

all_ops! {
    #[tokio::test]
    async fn a_panic_re_raises_at_its_position_on_current_thread(op: Op) {
        panic_at_its_position(op).await;
    }
}

all_ops! {
    #[on_workers]
    async fn a_panic_re_raises_at_its_position_on_multi_thread(op: Op) {
        panic_at_its_position(op).await;
    }
}

/// `f` itself panics for item 2, before any future exists: the panic waits for its
/// position like any other.
async fn panic_in_f(op: Op) {
    let probe = Probe::new();
    let (gates, mut keys) = gates(N);
    let work = Work::new(&probe).gated(&gates).plan(|i| Step {
        panic_in_f: i == 2,
        ..Step::default()
    });
    let mut flow = build(op, LIMIT, None, source(oks(N), &probe), work);
    if op.is_ordered() {
        assert!(
            poll_once(&mut flow, &probe).await.is_pending(),
            "the panic jumped ahead of its position"
        );
        assert_eq!(probe.pulled(), 3, "pulled after the panic was known");
        keys.open(0);
        assert_eq!(next(&mut flow, &probe).await, Some(Ok(value(0))));
        keys.open(1);
        assert_eq!(next(&mut flow, &probe).await, Some(Ok(value(1))));
    }
    let payload = next_or_panic(&mut flow, &probe)
        .await
        .expect_err("the panic was lost");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"boom before the future")
    );
    assert_eq!(probe.pulled(), 3, "pulled after the panic was known");
    others_cancelled(op, &probe, &mut keys).await;
    over_for_good(&mut flow, &probe).await;
}

async_ops! {
    #[tokio::test]
    async fn a_panic_in_f_is_deferred_to_its_position_on_current_thread(op: Op) {
        panic_in_f(op).await;
    }
}

async_ops! {
    #[on_workers]
    async fn a_panic_in_f_is_deferred_to_its_position_on_multi_thread(op: Op) {
        panic_in_f(op).await;
    }
}

/// A payload that is neither `&str` nor `String`.
#[derive(Debug, PartialEq)]
struct Poison(u64);

async fn custom_payload<S>(flow: S)
where
    S: futures::Stream<Item = u64>,
{
    let mut flow = Box::pin(flow);
    let mut out = Vec::new();
    let payload = loop {
        match std::panic::AssertUnwindSafe(flow.next())
            .catch_unwind()
            .await
        {
            Ok(Some(item)) => out.push(item),
            Ok(None) => panic!("the panic was lost"),
            Err(payload) => break payload,
        }
    };
    assert_eq!(payload.downcast_ref::<Poison>(), Some(&Poison(7)));
    assert_eq!(out, (0..7).collect::<Vec<_>>());
    assert_eq!(flow.next().await, None);
}

fn poison_at_7(i: u64) -> u64 {
    if i == 7 {
        std::panic::panic_any(Poison(7));
    }
    i
}

#[tokio::test]
async fn a_custom_payload_survives_map_concurrent() {
    let flow = futures::stream::iter(0..20u64).map_concurrent(3, |i| async move { poison_at_7(i) });
    custom_payload(flow).await;
}

#[tokio::test]
async fn a_custom_payload_survives_par_map() {
    let flow = futures::stream::iter(0..20u64).par_map(3, poison_at_7);
    custom_payload(flow).await;
}

#[test]
fn a_custom_payload_survives_try_map_concurrent() {
    on_workers(|| async {
        let flow = futures::stream::iter(0..20u64)
            .map(Ok::<u64, ()>)
            .try_map_concurrent(3, |i| async move { Ok(poison_at_7(i)) })
            .map(Result::unwrap);
        custom_payload(flow).await;
    });
}

#[test]
fn a_custom_payload_survives_try_par_map() {
    on_workers(|| async {
        let flow = futures::stream::iter(0..20u64)
            .map(Ok::<u64, ()>)
            .try_par_map(3, |i| Ok(poison_at_7(i)))
            .map(Result::unwrap);
        custom_payload(flow).await;
    });
}

/// In finish order, a panic overtakes the results that finished before it and are not
/// yet yielded: once it has happened, it is re-raised at the next poll.
async fn panic_overtakes_finished_results(op: Op) {
    const WIDE: usize = 64;
    let probe = Probe::new();
    let (gates, mut keys) = gates(WIDE as u64);
    let work = Work::new(&probe).gated(&gates).plan(|i| Step {
        panic: i == 20,
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
    eventually("the panicking job ran", || probe.completed() == 21).await;
    let payload = next_or_panic(&mut flow, &probe)
        .await
        .expect_err("a result was yielded after the panic happened");
    assert_eq!(panic_message(&*payload), "boom at 20");
    assert_eq!(probe.live(), 0, "jobs left running after the re-raise");
}

op_tests! {
    ops: [
        map_concurrent_unordered => MapConcurrentUnordered,
        try_map_concurrent_unordered => TryMapConcurrentUnordered,
    ],
    // On `current_thread`, a job's result is handed over before the test task runs again,
    // so "the job ran" means "the consumer can see it".
    #[tokio::test]
    async fn a_panic_overtakes_finished_results_in_finish_order(op: Op) {
        panic_overtakes_finished_results(op).await;
    }
}
