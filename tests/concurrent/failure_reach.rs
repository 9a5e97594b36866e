//! How far a failure reaches without the consumer: an upstream panic ends the stream like
//! any other panic, and a failed job stops later work before the consumer looks.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use flowgate::prelude::*;
use futures::stream::FusedStream;
use futures::{FutureExt, StreamExt};

use crate::support::{Live, Probe};

/// Unordered, an upstream panic is a failure when it happens: jobs still running are
/// cancelled before it re-raises. (In input order it waits for the results before its
/// position: see `defects.rs`.)
#[tokio::test]
async fn an_upstream_panic_cancels_the_work_first_and_ends_the_stream() {
    let probe = Probe::new();
    let upstream = stream! {
        yield 0u64;
        yield 1;
        panic!("upstream broke");
    };
    let jobs = probe.clone();
    let mut flow = Box::pin(upstream.map_concurrent_unordered(4, move |i| {
        let guard = Live::new(&jobs);
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            i
        }
    }));
    let caught = AssertUnwindSafe(flow.next()).catch_unwind().await;
    let payload = caught.expect_err("the upstream panic reaches the consumer");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"upstream broke"));
    assert_eq!(probe.live(), 0, "work was cancelled before the re-raise");
    assert!(flow.is_terminated());
    assert_eq!(
        flow.next().await,
        None,
        "the broken upstream is never polled again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_job_stops_later_work_before_the_consumer_looks() {
    for ordered in [true, false] {
        let probe = Probe::new();
        let polls = Arc::new(AtomicUsize::new(0));
        let (fail, failed) = tokio::sync::oneshot::channel::<()>();
        let mut failed = Some(failed);
        let (jobs, polled) = (probe.clone(), Arc::clone(&polls));
        let job = move |i: u64| {
            let guard = Live::new(&jobs);
            let polled = Arc::clone(&polled);
            let failed = if i == 0 { failed.take() } else { None };
            async move {
                let _guard = guard;
                match failed {
                    Some(failed) => {
                        let _ = failed.await;
                        Err(format!("job {i} failed"))
                    }
                    None => loop {
                        polled.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                    },
                }
            }
        };
        let items = flowgate::source::iter((0..2u64).map(Ok::<u64, String>));
        let mut flow: futures::stream::BoxStream<'static, Result<u64, String>> = if ordered {
            items.try_map_concurrent(2, job).boxed()
        } else {
            items.try_map_concurrent_unordered(2, job).boxed()
        };
        assert!(futures::poll!(flow.next()).is_pending());
        assert_eq!(probe.live(), 2);
        fail.send(()).unwrap();
        // The consumer does not poll: the failure alone stops job 1, which the drivers
        // drop at its next poll.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            probe.live(),
            0,
            "job 1 still runs after job 0 failed (ordered: {ordered})"
        );
        let frozen = polls.load(Ordering::SeqCst);
        tokio::task::yield_now().await;
        assert_eq!(polls.load(Ordering::SeqCst), frozen);
        assert_eq!(flow.next().await, Some(Err("job 0 failed".to_string())));
        assert_eq!(flow.next().await, None);
    }
}
