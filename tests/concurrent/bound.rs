//! The bound: items pulled from upstream and not yet yielded never exceed the window
//! (`limit`, or `with_window(w)`), counted at every pull; jobs running at once never exceed
//! `limit`. A slow consumer fills the bound exactly; a slow head stops an ordered operator
//! from pulling; an upstream error holds its place like any item.

use crate::support::*;

const N: u64 = 60;
const LIMIT: usize = 4;

/// The consumer takes its time: before each next item, every job it started has finished,
/// so finished results pile up to the bound.
async fn slow_consumer(op: Op) {
    for window in windows(op, LIMIT) {
        let context = format!("{} window {window:?}", op.name());
        let probe = Probe::new();
        // The test kit's probe beside the counters: it sees the operator from outside.
        let kit = flowgate::testing::Probe::new();
        let work = Work::new(&probe);
        let flow = build(op, LIMIT, window, kit.input(source(oks(N), &probe)), work);
        // Results carry value(i) = 3i + 1: their input position, whatever the order.
        let mut flow: Flow = Box::pin(kit.output_by(flow, |item: &Item| match item {
            Ok(v) => (v - 1) / 3,
            Err(_) => unreachable!("no item fails"),
        }));
        let mut out = Vec::new();
        loop {
            let item = next(&mut flow, &probe).await;
            let Some(item) = item else { break };
            out.push(item);
            eventually("the pulled jobs finished", || {
                probe.completed() == probe.pulled()
            })
            .await;
        }
        let expected = sequential(&oks(N));
        if op.is_ordered() {
            assert_eq!(out, expected, "{context}");
        } else {
            assert_eq!(sorted(out), expected, "{context}");
        }
        assert_eq!(
            probe.max_held(),
            window.unwrap_or(LIMIT),
            "{context}: the bound is not filled exactly"
        );
        assert!(
            probe.max_running() <= LIMIT,
            "{context}: {} jobs ran at once",
            probe.max_running()
        );
        let bound = window.unwrap_or(LIMIT) as u64;
        kit.assert_max_in_flight(bound);
        assert_eq!(
            kit.max_in_flight(),
            bound,
            "{context}: the bound is not filled"
        );
        kit.assert_pulled(N);
        kit.assert_yielded(N);
    }
}

all_ops! {
    #[tokio::test]
    async fn a_slow_consumer_fills_the_bound_exactly_on_current_thread(op: Op) {
        slow_consumer(op).await;
    }
}

all_ops! {
    #[on_workers]
    async fn a_slow_consumer_fills_the_bound_exactly_on_multi_thread(op: Op) {
        slow_consumer(op).await;
    }
}

/// The head job waits on its gate while every other job finishes at once: the operator
/// pulls until the window is full and then stops, with at most `limit` jobs running.
async fn slow_head_stops_pulling(op: Op) {
    for window in windows(op, LIMIT) {
        let context = format!("{} window {window:?}", op.name());
        let bound = window.unwrap_or(LIMIT);
        let probe = Probe::new();
        let (gates, mut keys) = gates(1);
        let work = Work::new(&probe).gated(&gates);
        let mut flow = build(op, LIMIT, window, source(oks(N), &probe), work);
        for _ in 0..bound + 2 {
            assert!(
                poll_once(&mut flow, &probe).await.is_pending(),
                "{context}: a result passed the head"
            );
            eventually("every job but the head finished", || {
                probe.completed() + 1 == probe.pulled()
            })
            .await;
        }
        assert_eq!(
            probe.pulled(),
            bound,
            "{context}: pulls while the head is slow"
        );
        assert!(probe.max_running() <= LIMIT, "{context}: running cap");
        keys.open(0);
        assert_eq!(
            drain(&mut flow, &probe).await,
            sequential(&oks(N)),
            "{context}"
        );
        assert!(probe.max_held() <= bound, "{context}: bound");
        assert!(probe.max_running() <= LIMIT, "{context}: running cap");
    }
}

ordered_ops! {
    #[tokio::test]
    async fn a_slow_head_stops_ordered_pulling_on_current_thread(op: Op) {
        slow_head_stops_pulling(op).await;
    }
}

ordered_ops! {
    #[on_workers]
    async fn a_slow_head_stops_ordered_pulling_on_multi_thread(op: Op) {
        slow_head_stops_pulling(op).await;
    }
}

/// In finish order, a slow item holds only its own place: everything else flows past it.
async fn slow_item_holds_its_place(op: Op) {
    let probe = Probe::new();
    let (gates, mut keys) = gates(1);
    let work = Work::new(&probe).gated(&gates);
    let mut flow = build(op, LIMIT, None, source(oks(N), &probe), work);
    let mut out = Vec::new();
    for _ in 1..N {
        out.push(next(&mut flow, &probe).await.unwrap());
    }
    assert_eq!(sorted(out), sequential(&oks(N))[1..]);
    keys.open(0);
    assert_eq!(next(&mut flow, &probe).await, Some(Ok(value(0))));
    assert_eq!(next(&mut flow, &probe).await, None);
    assert!(probe.max_held() <= LIMIT);
    assert!(probe.max_running() <= LIMIT);
}

unordered_ops! {
    #[tokio::test]
    async fn a_slow_item_holds_only_its_place_on_current_thread(op: Op) {
        slow_item_holds_its_place(op).await;
    }
}

unordered_ops! {
    #[on_workers]
    async fn a_slow_item_holds_only_its_place_on_multi_thread(op: Op) {
        slow_item_holds_its_place(op).await;
    }
}

/// Items: a slow `Ok(0)`, an upstream error at 1, then more items.
fn head_then_error() -> Vec<Item> {
    let mut items = oks(10);
    items[1] = Err(Fail::Upstream(1));
    items
}

/// An upstream error is pulled like an item and counts against the bound; nothing after
/// it is pulled. Ordered: it waits for its turn behind the slow head.
async fn upstream_error_holds_its_place(op: Op, limit: usize) {
    let context = format!("{} limit {limit}", op.name());
    let probe = Probe::new();
    let (gates, mut keys) = gates(1);
    let work = Work::new(&probe).gated(&gates);
    let mut flow = build(op, limit, None, source(head_then_error(), &probe), work);
    if op.is_ordered() {
        for _ in 0..3 {
            assert!(poll_once(&mut flow, &probe).await.is_pending(), "{context}");
            eventually("the head started", || probe.started() == 1).await;
        }
        // With one place left, the error takes it; with none, it waits for the head.
        assert_eq!(probe.pulled(), limit.min(2), "{context}: pulls");
        keys.open(0);
        assert_eq!(
            drain(&mut flow, &probe).await,
            vec![Ok(value(0)), Err(Fail::Upstream(1))],
            "{context}"
        );
    } else {
        if limit == 1 {
            // The error cannot be pulled while the only place is taken by the head.
            assert!(poll_once(&mut flow, &probe).await.is_pending(), "{context}");
            eventually("the head started", || probe.started() == 1).await;
            assert!(poll_once(&mut flow, &probe).await.is_pending(), "{context}");
            assert_eq!(probe.pulled(), 1, "{context}: pulls");
            keys.open(0);
        }
        let out = drain(&mut flow, &probe).await;
        assert_eq!(
            out.last(),
            Some(&Err(Fail::Upstream(1))),
            "{context}: the error ends the stream"
        );
        if limit > 1 {
            assert_eq!(out, vec![Err(Fail::Upstream(1))], "{context}");
        }
    }
    assert_eq!(probe.pulled(), 2, "{context}: pulls after the error");
    assert!(probe.max_held() <= limit, "{context}: bound");
    keys.open_all();
    eventually("the jobs ended", || probe.live() == 0).await;
}

try_ops! {
    #[tokio::test]
    async fn an_upstream_error_holds_its_place_on_current_thread(op: Op) {
        for limit in [1, 2, 4] {
            upstream_error_holds_its_place(op, limit).await;
        }
    }
}

try_ops! {
    #[on_workers]
    async fn an_upstream_error_holds_its_place_on_multi_thread(op: Op) {
        for limit in [1, 2, 4] {
            upstream_error_holds_its_place(op, limit).await;
        }
    }
}
