//! `FusedStream` and `size_hint`: once over, always over; a map's hint adds the items it
//! holds to upstream's, a `try_` operator's lower bound is at most 1, and after the end it
//! is `(0, Some(0))`.

use futures::stream::FusedStream;

use crate::support::*;

const LIMIT: usize = 4;

all_ops! {
    #[tokio::test]
    async fn after_the_end_every_poll_is_none(op: Op) {
        for n in [0, 1, 25] {
            let probe = Probe::new();
            let mut flow = build(op, LIMIT, None, source(oks(n), &probe), Work::new(&probe));
            assert!(!flow.is_terminated());
            assert_eq!(drain(&mut flow, &probe).await.len() as u64, n);
            assert!(flow.is_terminated());
            for _ in 0..3 {
                assert_eq!(next(&mut flow, &probe).await, None);
                assert!(flow.is_terminated());
                assert_eq!(flow.size_hint(), (0, Some(0)));
            }
            assert_eq!(probe.pulled() as u64, n);
        }
    }
}

/// The hint for `remaining` results still to come.
fn exact(op: Op, remaining: usize) -> (usize, Option<usize>) {
    if op.is_try() {
        (remaining.min(1), Some(remaining))
    } else {
        (remaining, Some(remaining))
    }
}

async fn size_hint_is_honest(op: Op) {
    for window in windows(op, LIMIT) {
        const N: usize = 30;
        let probe = Probe::new();
        let mut flow = build(
            op,
            LIMIT,
            window,
            source(oks(N as u64), &probe),
            Work::new(&probe),
        );
        assert_eq!(flow.size_hint(), exact(op, N), "before the first poll");
        for yielded in 1..=N {
            assert!(next(&mut flow, &probe).await.is_some());
            assert_eq!(
                flow.size_hint(),
                exact(op, N - yielded),
                "{} window {window:?}: after {yielded} results, {} pulled",
                op.name(),
                probe.pulled()
            );
        }
        assert_eq!(next(&mut flow, &probe).await, None);
        assert_eq!(flow.size_hint(), (0, Some(0)));
    }
}

all_ops! {
    #[tokio::test]
    async fn size_hint_counts_held_items_on_current_thread(op: Op) {
        size_hint_is_honest(op).await;
    }
}

all_ops! {
    #[on_workers]
    async fn size_hint_counts_held_items_on_multi_thread(op: Op) {
        size_hint_is_honest(op).await;
    }
}
