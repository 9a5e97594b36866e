//! Promises the engine was found to break, one test per defect, through the public API:
//! an upstream panic keeps its position in input order; fail fast drops later jobs as soon
//! as the failure happens, not at the consumer's next poll; a stream whose runtime is gone
//! panics instead of waiting forever; a panic in a finished job's destructor re-raises at
//! that job's position; and a dropped `par_map` starts no job it had not claimed yet.
//! (The chunking defect is in `tests/chunk/weighted.rs`.)

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use flowgate::prelude::*;
use futures::stream::FusedStream;
use futures::{FutureExt, StreamExt};

use crate::support::*;

/// The stream is over: `None` at every poll, and terminated.
async fn over<S: FusedStream + Unpin>(flow: &mut S)
where
    S::Item: std::fmt::Debug,
{
    for _ in 0..3 {
        let item = within("the end", flow.next()).await;
        assert!(item.is_none(), "{item:?} after the end");
    }
    assert!(flow.is_terminated(), "the stream does not say it is over");
}

/// The next item of `flow`, or the panic it raised (bounded by [`within`]).
async fn next_caught<S: futures::Stream + Unpin>(
    flow: &mut S,
) -> Result<Option<S::Item>, Box<dyn std::any::Any + Send>> {
    AssertUnwindSafe(within("the next result", flow.next()))
        .catch_unwind()
        .await
}

// 1. An upstream panic keeps its position.

#[tokio::test]
async fn an_upstream_panic_comes_after_the_result_pulled_before_it() {
    let mut flow = flowgate::source::iter(vec![Some(10u32), None])
        .map(|o: Option<u32>| o.unwrap())
        .map_concurrent(2, |x| async move { x });
    let first = next_caught(&mut flow).await.unwrap_or_else(|payload| {
        panic!(
            "the upstream panic ({:?}) was raised before 10, pulled ahead of it, was yielded",
            panic_message(&*payload)
        )
    });
    assert_eq!(first, Some(10));
    let payload = next_caught(&mut flow)
        .await
        .expect_err("the upstream panic was lost");
    assert_eq!(
        panic_message(&*payload),
        "called `Option::unwrap()` on a `None` value",
        "not the upstream's own payload"
    );
    over(&mut flow).await;
}

/// Upstream hands out 37 items, then panics: every result before it arrives, in order,
/// then the upstream's own panic, then nothing; the broken upstream is never polled again.
async fn upstream_panic_keeps_its_position(op: Op) {
    const AT: u64 = 37;
    let probe = Probe::new();
    let (upstream, polled_after) = breaking_source(oks(AT), &probe);
    let work = Work::new(&probe).plan(|i| Step {
        yields: (i % 3) as u32,
        ..Step::default()
    });
    let mut flow = build(op, 4, None, upstream, work);
    let mut out = Vec::new();
    let payload = loop {
        match next_or_panic(&mut flow, &probe).await {
            Ok(Some(item)) => out.push(item),
            Ok(None) => panic!("the upstream panic was lost: the stream ended instead"),
            Err(payload) => break payload,
        }
    };
    assert_eq!(
        out.len() as u64,
        AT,
        "the upstream panic was raised after {} of the {AT} results before it",
        out.len()
    );
    assert_eq!(out, sequential(&oks(AT)), "the results before the panic");
    assert_eq!(panic_message(&*payload), format!("upstream broke at {AT}"));
    assert_eq!(
        next(&mut flow, &probe).await,
        None,
        "a result after the panic"
    );
    assert!(flow.is_terminated());
    assert_eq!(
        polled_after.load(SeqCst),
        0,
        "the broken upstream was polled again"
    );
}

ordered_ops! {
    #[tokio::test]
    async fn an_upstream_panic_keeps_its_position_on_current_thread(op: Op) {
        upstream_panic_keeps_its_position(op).await;
    }
}

ordered_ops! {
    #[on_workers]
    async fn an_upstream_panic_keeps_its_position_on_multi_thread(op: Op) {
        upstream_panic_keeps_its_position(op).await;
    }
}

unordered_ops! {
    // In finish order an upstream panic is a failure like a panic in `f`: raised when it
    // happens; results finished and not yet yielded may be dropped.
    #[tokio::test]
    async fn an_upstream_panic_ends_an_unordered_stream(op: Op) {
        let probe = Probe::new();
        let (upstream, polled_after) = breaking_source(oks(37), &probe);
        let mut flow = build(op, 4, None, upstream, Work::new(&probe));
        let payload = loop {
            match next_or_panic(&mut flow, &probe).await {
                Ok(Some(item)) => assert!(item.is_ok(), "unexpected {item:?}"),
                Ok(None) => panic!("the upstream panic was lost: the stream ended instead"),
                Err(payload) => break payload,
            }
        };
        assert_eq!(panic_message(&*payload), "upstream broke at 37");
        over(&mut flow).await;
        assert_eq!(polled_after.load(SeqCst), 0, "the broken upstream was polled again");
    }
}

// 2. Fail fast drops later jobs at once, without waiting for the consumer.

/// Jobs 0..3 finish at once, job 3 fails after 20 ms, jobs 4..7 sleep 10 s, each counted
/// alive on `later` until its future is dropped. The consumer reads three results, then
/// stays away for 300 ms; 20 ms after the failure, jobs 4..7 must be gone.
async fn later_jobs_dropped_while_the_consumer_is_away(ordered: bool) {
    let later = Probe::new();
    let counted = later.clone();
    let job = move |i: u64| {
        let guard = (i >= 4).then(|| Live::new(&counted));
        async move {
            let _guard = guard;
            match i {
                3 => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Err(i)
                }
                4.. => {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    Ok(i)
                }
                _ => Ok(i),
            }
        }
    };
    let upstream = flowgate::source::iter(0..8u64).map(Ok::<u64, u64>);
    let mut flow: Pin<Box<dyn FusedStream<Item = Result<u64, u64>> + Send>> = if ordered {
        Box::pin(upstream.try_map_concurrent(8, job))
    } else {
        Box::pin(upstream.try_map_concurrent_unordered(8, job))
    };
    let start = tokio::time::Instant::now();
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(within("a result", flow.next()).await);
    }
    first.sort();
    assert_eq!(first, [Some(Ok(0)), Some(Ok(1)), Some(Ok(2))]);
    assert_eq!(later.live(), 4, "jobs 4..7 run before the failure");
    // The consumer stays away; the failure comes at 20 ms.
    tokio::time::sleep_until(start + Duration::from_millis(40)).await;
    assert_eq!(
        later.live(),
        0,
        "20 ms after job 3 failed, later jobs are still alive: they wait for the consumer"
    );
    tokio::time::sleep_until(start + Duration::from_millis(300)).await;
    assert_eq!(within("the error", flow.next()).await, Some(Err(3)));
    over(&mut flow).await;
    assert_eq!(later.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_drops_later_jobs_without_waiting_for_the_consumer() {
    later_jobs_dropped_while_the_consumer_is_away(true).await;
}

#[tokio::test(start_paused = true)]
async fn fail_fast_drops_other_jobs_without_waiting_for_the_consumer_unordered() {
    later_jobs_dropped_while_the_consumer_is_away(false).await;
}

// 3. A stream whose first runtime is gone panics, not hangs.

/// `flow` was polled in a runtime that is gone: polled in `second`, it must panic saying
/// the runtime shut down. Waits at most 2 s for that, so the test fails instead of hanging.
fn must_panic_in(second: &tokio::runtime::Runtime, flow: &mut Flow) {
    let outcome = second.block_on(async {
        let waited = tokio::time::timeout(Duration::from_secs(2), flow.next());
        AssertUnwindSafe(waited).catch_unwind().await
    });
    match outcome {
        Err(payload) => {
            let message = panic_message(&*payload);
            assert!(
                message.contains("shut down"),
                "the panic does not say the runtime shut down: {message}"
            );
        }
        Ok(Err(_)) => panic!(
            "polled in a second runtime after its first one was dropped, the stream waits \
             forever instead of panicking"
        ),
        Ok(Ok(item)) => panic!("polled after its runtime was dropped, the stream gave {item:?}"),
    }
}

/// `map_concurrent` over jobs that never finish: polled once in a runtime of flavor
/// `first`, which is then dropped, then polled in one of flavor `second`.
fn map_concurrent_outliving_its_runtime(first: Flavor, second: Flavor) {
    in_context(format_args!("{first}, then {second}"), || {
        let probe = Probe::new();
        let upstream = source(oks(10), &probe);
        let mut flow: Flow =
            Box::pin(upstream.map_concurrent(4, |_: Item| std::future::pending::<Item>()));
        let first = first.runtime();
        first.block_on(async {
            assert!(futures::poll!(flow.next()).is_pending());
        });
        assert_eq!(probe.pulled(), 4, "the first poll started the jobs");
        drop(first);
        let second = second.runtime();
        must_panic_in(&second, &mut flow);
    });
}

/// A stream whose work was all done when its runtime went waits for upstream as usual
/// (it neither spins nor panics while it holds nothing), and panics once upstream's next
/// item would need the gone runtime.
#[test]
fn a_stream_whose_runtime_is_gone_waits_for_upstream_then_panics() {
    on_a_thread("polling after the runtime was gone", || {
        let (tx, rx) = futures::channel::mpsc::unbounded::<u64>();
        let mut flow = Box::pin(rx.map_concurrent(2, |i| async move { i * 2 }));
        let first = Flavor::MultiThread(2).runtime();
        tx.unbounded_send(1).expect("the stream holds the receiver");
        assert_eq!(first.block_on(flow.next()), Some(2));
        drop(first);
        let second = Flavor::CurrentThread.runtime();
        second.block_on(async {
            assert!(
                futures::poll!(flow.next()).is_pending(),
                "with nothing held, the stream waits for upstream"
            );
        });
        tx.unbounded_send(2).expect("the stream holds the receiver");
        let caught = second.block_on(async {
            AssertUnwindSafe(tokio::time::timeout(Duration::from_secs(2), flow.next()))
                .catch_unwind()
                .await
        });
        let payload = caught.expect_err("the item needing the gone runtime did not panic");
        let message = panic_message(&*payload);
        assert!(
            message.contains("shut down"),
            "the panic does not say the runtime shut down: {message}"
        );
    });
}

#[test]
fn a_stream_whose_runtime_is_gone_panics_current_thread_then_current_thread() {
    map_concurrent_outliving_its_runtime(Flavor::CurrentThread, Flavor::CurrentThread);
}

#[test]
fn a_stream_whose_runtime_is_gone_panics_current_thread_then_multi_thread() {
    for second in Flavor::multi_threads() {
        map_concurrent_outliving_its_runtime(Flavor::CurrentThread, second);
    }
}

#[test]
fn a_stream_whose_runtime_is_gone_panics_multi_thread_then_current_thread() {
    for first in Flavor::multi_threads() {
        map_concurrent_outliving_its_runtime(first, Flavor::CurrentThread);
    }
}

#[test]
fn a_stream_whose_runtime_is_gone_panics_multi_thread_then_multi_thread() {
    for first in Flavor::multi_threads() {
        for second in Flavor::multi_threads() {
            map_concurrent_outliving_its_runtime(first, second);
        }
    }
}

/// `par_map`'s closures run on the first runtime's blocking threads: the jobs started
/// there finish, and dropping the runtime waits for those threads. Polled in a second
/// runtime, the stream may yield the results that had finished, in order, but the next
/// job needs the first runtime: the stream must then panic, never wait forever.
#[test]
fn a_par_map_whose_runtime_is_gone_panics() {
    for second in Flavor::multi_threads() {
        in_context(format_args!("current_thread, then {second}"), || {
            par_map_outliving_its_runtime(second);
        });
    }
}

/// `par_map` polled once in a `current_thread` runtime, which is dropped once the four jobs
/// started there have run, then polled in one of flavor `second`.
fn par_map_outliving_its_runtime(second: Flavor) {
    let probe = Probe::new();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let done = std::sync::Mutex::new(done);
    let mut flow: Flow = Box::pin(source(oks(10), &probe).par_map(4, move |item: Item| {
        let _ = done.lock().expect("the sender").send(());
        item
    }));
    let first = Flavor::CurrentThread.runtime();
    first.block_on(async {
        assert!(futures::poll!(flow.next()).is_pending());
    });
    assert_eq!(probe.pulled(), 4, "the first poll started the jobs");
    for _ in 0..4 {
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("the first jobs ran");
    }
    drop(first);
    let second = second.runtime();
    let outcome = second.block_on(async {
        let mut yielded = Vec::new();
        AssertUnwindSafe(async {
            loop {
                let next = tokio::time::timeout(Duration::from_secs(2), flow.next()).await;
                match next {
                    Ok(Some(item)) => yielded.push(item),
                    Ok(None) => panic!("the stream ended after {yielded:?}"),
                    Err(_) => {
                        panic!("after {yielded:?}, the stream waits forever instead of panicking")
                    }
                }
            }
        })
        .catch_unwind()
        .await
        .map(|()| yielded.clone())
        .map_err(|payload| (panic_message(&*payload), yielded.clone()))
    });
    let (message, yielded) = outcome.expect_err("the loop only ends by a panic");
    assert!(
        message.contains("shut down"),
        "the panic does not say the runtime shut down: {message}"
    );
    assert!(yielded.len() <= 4, "{yielded:?} went past the jobs started");
    assert_eq!(yielded, oks(yielded.len() as u64), "out of order");
}

// 4. A panic in a finished job's future destructor re-raises at that job's position.

/// Panics with `"boom in drop"` when dropped, if armed.
struct Bomb(bool);

impl Drop for Bomb {
    fn drop(&mut self) {
        if self.0 && !std::thread::panicking() {
            panic!("boom in drop");
        }
    }
}

/// Ready with its value at the first poll (or never, if `value` is `None`), and carries a
/// [`Bomb`].
struct Job {
    value: Option<u64>,
    _bomb: Bomb,
}

impl Future for Job {
    type Output = u64;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u64> {
        match self.value {
            Some(value) => Poll::Ready(value),
            None => Poll::Pending,
        }
    }
}

async fn destructor_panic_at_its_position() {
    let mut flow = flowgate::source::iter(0..3u64).map_concurrent(2, |i| Job {
        value: Some(i),
        _bomb: Bomb(i == 1),
    });
    assert_eq!(next_caught(&mut flow).await.ok(), Some(Some(0)));
    match next_caught(&mut flow).await {
        Err(payload) => assert_eq!(panic_message(&*payload), "boom in drop"),
        Ok(item) => panic!(
            "the panic in job 1's destructor was lost: the stream gave {item:?} at its position"
        ),
    }
    over(&mut flow).await;
}

#[tokio::test]
async fn a_panic_in_a_finished_jobs_destructor_re_raises_at_its_position_on_current_thread() {
    destructor_panic_at_its_position().await;
}

#[test]
fn a_panic_in_a_finished_jobs_destructor_re_raises_at_its_position_on_multi_thread() {
    on_workers(destructor_panic_at_its_position);
}

/// Jobs that never finish, whose destructors panic: the stream is dropped with them
/// running. The drop returns normally and the runtime goes on working.
async fn destructor_panic_of_a_cancelled_job_is_contained() {
    let mut flow = flowgate::source::iter(0..4u64).map_concurrent(4, |i| Job {
        value: None,
        _bomb: Bomb(i % 2 == 1),
    });
    assert!(futures::poll!(flow.next()).is_pending());
    settle().await;
    let dropped = std::panic::catch_unwind(AssertUnwindSafe(|| drop(flow)));
    assert!(
        dropped.is_ok(),
        "dropping the stream raised a cancelled job's destructor panic"
    );
    let answer = within("a task after the drop", tokio::spawn(async { 42 })).await;
    assert_eq!(answer.ok(), Some(42), "the runtime stopped working");
}

#[tokio::test]
async fn a_panic_in_a_cancelled_jobs_destructor_is_contained_on_current_thread() {
    destructor_panic_of_a_cancelled_job_is_contained().await;
}

#[test]
fn a_panic_in_a_cancelled_jobs_destructor_is_contained_on_multi_thread() {
    on_workers(destructor_panic_of_a_cancelled_job_is_contained);
}

// 6. A dropped par_map starts nothing it had not claimed.

/// A race, so a stress loop. Closures count themselves started (first) and running. Right
/// after the drop returns, a drain loop is either running a closure, or holds at most one
/// item it claimed before the drop and has not started, or holds nothing (the queue is
/// gone). So closures starting later number at most `limit` minus those running then;
/// any more were started from items taken after the drop.
#[test]
fn a_dropped_par_map_starts_nothing_it_had_not_claimed() {
    on_workers(dropped_par_map_starts_nothing_unclaimed);
}

async fn dropped_par_map_starts_nothing_unclaimed() {
    const LIMIT: usize = 4;
    const ROUNDS: u64 = 400;
    for round in 0..ROUNDS {
        let started = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let (s, r) = (Arc::clone(&started), Arc::clone(&running));
        let mut flow = flowgate::source::iter(0..10_000u64).par_map(LIMIT, move |i| {
            s.fetch_add(1, SeqCst);
            r.fetch_add(1, SeqCst);
            for _ in 0..(i % 4) * 200 {
                std::hint::spin_loop();
            }
            r.fetch_sub(1, SeqCst);
            i
        });
        for _ in 0..round % 5 + 1 {
            assert!(within("a result", flow.next()).await.is_some());
        }
        drop(flow);
        // Running first: a claimed closure that starts between the two reads is counted
        // running and not late.
        let running_at_drop = running.load(SeqCst);
        let started_at_drop = started.load(SeqCst);
        eventually("the running closures ended", || running.load(SeqCst) == 0).await;
        // Claimed closures may start a little later still.
        tokio::time::sleep(Duration::from_millis(1)).await;
        eventually("the running closures ended", || running.load(SeqCst) == 0).await;
        let late = started.load(SeqCst) - started_at_drop;
        assert!(
            late <= LIMIT - running_at_drop,
            "round {round}: {late} closures started after the drop, with {running_at_drop} \
             running then: at most {} can have been claimed before it",
            LIMIT - running_at_drop
        );
    }
}
