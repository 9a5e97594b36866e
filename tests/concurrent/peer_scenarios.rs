//! Scenarios the peers test (futures-rs' buffered streams and `catch_unwind`, tokio-stream's
//! chunking and fusing, Pekko's `mapAsync`) that the rest of this suite did not cover: an
//! upstream panic behind finished work, wake-ups from other threads while streams are
//! dropped, a consumer blocking on a thread outside the runtime's workers, chunking in real
//! time on many workers, cancellation reaching a channel upstream, `select!` over our fused
//! streams, and constructor panics that point at the caller's line. Every multi-thread
//! scenario runs on 1, 2, 4 and 8 workers.

use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flowgate::prelude::*;
use futures::stream::FusedStream;
use futures::{FutureExt, StreamExt};

use crate::support::*;

// An upstream panic after items whose jobs can finish.

/// Upstream hands out 3 items, then panics; the jobs wait on gates. In input order each
/// gate is opened as its result is due (the panic comes after them); in finish order none
/// is, and the panic arrives with all three jobs in flight. Either way: the upstream's
/// payload, nothing pulled after it, the other jobs cancelled, then the end.
async fn upstream_panic_behind_work(op: Op) {
    const AT: u64 = 3;
    let probe = Probe::new();
    let (gates, mut keys) = gates(AT);
    let (upstream, polled_after) = breaking_source(oks(AT), &probe);
    let mut flow = build(op, 8, None, upstream, Work::new(&probe).gated(&gates));
    let mut out = Vec::new();
    let payload = loop {
        if op.is_ordered() && (out.len() as u64) < AT {
            keys.open(out.len() as u64);
        }
        match next_or_panic(&mut flow, &probe).await {
            Ok(Some(item)) => out.push(item),
            Ok(None) => panic!("the upstream panic was lost: the stream ended instead"),
            Err(payload) => break payload,
        }
    };
    assert_eq!(panic_message(&*payload), format!("upstream broke at {AT}"));
    let expected = sequential(&oks(AT));
    if op.is_ordered() {
        assert_eq!(out[..], expected[..out.len()], "results out of order");
    } else {
        assert!(
            out.iter().all(|item| expected.contains(item)),
            "unexpected results {out:?}"
        );
    }
    others_cancelled(op, &probe, &mut keys).await;
    assert_eq!(probe.pulled() as u64, AT, "pulled after the panic");
    assert_eq!(
        polled_after.load(SeqCst),
        0,
        "the broken upstream was polled again"
    );
    over_for_good(&mut flow, &probe).await;
}

all_ops! {
    #[tokio::test]
    async fn an_upstream_panic_behind_work_cancels_the_rest_on_current_thread(op: Op) {
        upstream_panic_behind_work(op).await;
    }
}

all_ops! {
    #[on_workers]
    async fn an_upstream_panic_behind_work_cancels_the_rest_on_multi_thread(op: Op) {
        upstream_panic_behind_work(op).await;
    }
}

// Wake-ups from other threads while streams are dropped.

/// 200 times: the jobs wait on gates that a plain thread opens in a scrambled order (each
/// open wakes a job from that thread, on the async lane through its waker), while the
/// consumer takes a few results and drops the stream mid-way. Nothing hangs, nothing
/// panics, every job is released.
async fn wake_ups_from_another_thread(op: Op) {
    const N: u64 = 24;
    for round in 0..200u64 {
        let probe = Probe::new();
        let (gates, mut keys) = gates(N);
        let work = Work::new(&probe).gated(&gates).plan(|i| Step {
            yields: (i % 3) as u32,
            ..Step::default()
        });
        let mut flow = build(op, 4, None, source(oks(N), &probe), work);
        let opener = std::thread::spawn(move || {
            // 7 is prime to N: every gate once, out of order.
            for k in 0..N {
                keys.open((k * 7 + round) % N);
                if k % 3 == 0 {
                    std::thread::yield_now();
                }
            }
        });
        for taken in 0..round % 6 {
            assert!(
                next(&mut flow, &probe).await.is_some(),
                "round {round}: the stream ended after {taken} results"
            );
        }
        drop(flow);
        eventually("the opening thread finished", || opener.is_finished()).await;
        opener.join().expect("the opening thread panicked");
        eventually("every job was released", || probe.live() == 0).await;
        assert_eq!(
            probe.upstream_alive(),
            0,
            "round {round}: the upstream outlived the stream"
        );
    }
}

all_ops! {
    #[on_workers]
    async fn wake_ups_from_another_thread_while_streams_are_dropped(op: Op) {
        wake_ups_from_another_thread(op).await;
    }
}

// A consumer that blocks on a thread which entered the runtime.

const BLOCKING_N: u64 = 500;

#[test]
fn map_concurrent_serves_a_consumer_blocking_on_a_thread_that_entered_the_runtime() {
    for workers in WORKER_COUNTS {
        let out = on_a_thread("the blocking consumer", move || {
            let runtime = multi_thread(workers);
            let _entered = runtime.enter();
            let flow = flowgate::source::iter(0..BLOCKING_N).map_concurrent(8, |i| async move {
                if i % 3 == 0 {
                    tokio::task::yield_now().await;
                }
                if i % 5 == 0 {
                    tokio::time::sleep(Duration::from_micros(100)).await;
                }
                i * 2
            });
            futures::executor::block_on_stream(flow).collect::<Vec<_>>()
        });
        let expected: Vec<u64> = (0..BLOCKING_N).map(|i| i * 2).collect();
        assert_eq!(out, expected, "on {workers} worker threads");
    }
}

#[test]
fn par_map_serves_a_consumer_blocking_on_a_thread_that_entered_the_runtime() {
    for workers in WORKER_COUNTS {
        let out = on_a_thread("the blocking consumer", move || {
            let runtime = multi_thread(workers);
            let _entered = runtime.enter();
            let flow = flowgate::source::iter(0..BLOCKING_N).par_map(4, |i| {
                if i % 7 == 0 {
                    std::thread::yield_now();
                }
                i * 2
            });
            futures::executor::block_on_stream(flow).collect::<Vec<_>>()
        });
        let expected: Vec<u64> = (0..BLOCKING_N).map(|i| i * 2).collect();
        assert_eq!(out, expected, "on {workers} worker threads");
    }
}

// `chunks_within` in real time on a multi-thread runtime.

/// A producer task on the runtime sends items through a channel, pausing now and then;
/// the chunks, whatever their timing, hold every item once and in order, none is empty and
/// none is over `max_items`. No duration is asserted.
#[test]
fn chunks_within_keeps_every_item_in_order_on_multi_thread() {
    const N: u64 = 2000;
    const MAX_ITEMS: usize = 16;
    on_workers(|| async {
        for max_wait in [
            Duration::ZERO,
            Duration::from_micros(200),
            Duration::from_millis(5),
        ] {
            let (tx, mut rx) = tokio::sync::mpsc::channel(8);
            let producer = tokio::spawn(async move {
                for i in 0..N {
                    if i % 50 == 0 {
                        tokio::time::sleep(Duration::from_micros(500)).await;
                    } else if i % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                    tx.send(i).await.expect("the consumer is there");
                }
            });
            let upstream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
            let chunks: Vec<Vec<u64>> = within(
                "the chunks",
                upstream.chunks_within(MAX_ITEMS, max_wait).collect(),
            )
            .await;
            producer.await.expect("the producer ran");
            assert!(
                chunks.iter().all(|chunk| !chunk.is_empty()),
                "an empty chunk with max_wait {max_wait:?}"
            );
            let largest = chunks.iter().map(Vec::len).max().unwrap_or(0);
            assert!(
                largest <= MAX_ITEMS,
                "a chunk of {largest} items with max_wait {max_wait:?}"
            );
            assert_eq!(
                chunks.concat(),
                (0..N).collect::<Vec<_>>(),
                "items lost, duplicated or reordered with max_wait {max_wait:?}"
            );
        }
    });
}

// Cancellation reaching a channel upstream.

all_ops! {
    // The receiver is the upstream, owned by the stream: dropping the stream closes the
    // channel at once, so the producer learns that nobody listens any more.
    #[tokio::test]
    async fn dropping_the_stream_closes_a_futures_channel_upstream(op: Op) {
        let probe = Probe::new();
        let (mut tx, rx) = futures::channel::mpsc::channel::<Item>(16);
        for i in 0..6 {
            tx.try_send(Ok(i)).expect("room in the channel");
        }
        let mut flow = build(op, 4, None, rx, Work::new(&probe));
        assert!(next(&mut flow, &probe).await.is_some());
        assert!(!tx.is_closed(), "the channel closed while the stream runs");
        drop(flow);
        assert!(tx.is_closed(), "the channel is open after the stream was dropped");
        let refused = tx.try_send(Ok(99)).expect_err("a send after the drop went through");
        assert!(refused.is_disconnected(), "the send failed, but not as disconnected");
        eventually("every job was released", || probe.live() == 0).await;
    }
}

all_ops! {
    #[on_workers]
    async fn dropping_the_stream_closes_a_tokio_channel_upstream(op: Op) {
        let probe = Probe::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Item>(16);
        for i in 0..6 {
            tx.send(Ok(i)).await.expect("the receiver is there");
        }
        let upstream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut flow = build(op, 4, None, upstream, Work::new(&probe));
        assert!(next(&mut flow, &probe).await.is_some());
        assert!(!tx.is_closed(), "the channel closed while the stream runs");
        drop(flow);
        assert!(tx.is_closed(), "the channel is open after the stream was dropped");
        within("the sender to see the channel closed", tx.closed()).await;
        assert!(tx.send(Ok(99)).await.is_err(), "a send after the drop went through");
        eventually("every job was released", || probe.live() == 0).await;
    }
}

// `select_next_some` inside `futures::select!`.

all_ops! {
    // Our streams are fused, so `select_next_some` may be polled in a `select!` loop: every
    // result arrives, the timer fires once between them, and `complete` ends the loop once
    // both the stream and the timer are done.
    #[tokio::test(start_paused = true)]
    async fn select_next_some_takes_every_result_then_completes(op: Op) {
        const N: u64 = 30;
        let probe = Probe::new();
        let work = Work::new(&probe).plan(|i| Step {
            sleep: Duration::from_millis(i % 4),
            yields: (i % 3) as u32,
            ..Step::default()
        });
        let mut flow = build(op, 4, None, source(oks(N), &probe), work);
        let timer = tokio::time::sleep(Duration::from_millis(5)).fuse();
        futures::pin_mut!(timer);
        let mut out = Vec::new();
        let mut rang = 0;
        within("the select loop", async {
            loop {
                futures::select! {
                    item = flow.select_next_some() => out.push(item),
                    () = timer => rang += 1,
                    complete => break,
                }
            }
        })
        .await;
        assert_eq!(rang, 1, "the timer fired {rang} times");
        if op.is_ordered() {
            assert_eq!(out, sequential(&oks(N)));
        } else {
            assert_eq!(sorted(out), sequential(&oks(N)));
        }
        assert!(flow.is_terminated(), "complete ran before the stream was over");
    }
}

// Constructor panics point at the caller (`#[track_caller]`).

/// Serializes the tests that replace the process-wide panic hook.
static PANIC_HOOK: Mutex<()> = Mutex::new(());

type Hook = Box<dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static>;

/// Builds an operator with a bad argument.
type Construct = Box<dyn FnOnce()>;

/// The file `f` panics in, as the panic hook reports it. Panics on other threads go to the
/// previous hook meanwhile, which is restored afterwards.
fn panic_file(f: impl FnOnce()) -> String {
    let _serial = PANIC_HOOK.lock().unwrap_or_else(PoisonError::into_inner);
    let seen = Arc::new(Mutex::new(None::<String>));
    let previous: Arc<Hook> = Arc::new(std::panic::take_hook());
    let me = std::thread::current().id();
    {
        let seen = Arc::clone(&seen);
        let previous = Arc::clone(&previous);
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().id() == me {
                let file = info.location().map(|at| at.file().to_owned());
                *seen.lock().unwrap_or_else(PoisonError::into_inner) = file;
            } else {
                previous(info);
            }
        }));
    }
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(f));
    drop(std::panic::take_hook());
    match Arc::try_unwrap(previous) {
        Ok(hook) => std::panic::set_hook(hook),
        Err(shared) => std::panic::set_hook(Box::new(move |info| shared(info))),
    }
    assert!(outcome.is_err(), "it did not panic");
    let file = seen.lock().unwrap_or_else(PoisonError::into_inner).take();
    file.expect("the panic hook saw no location")
}

#[test]
fn constructor_panics_point_at_the_callers_line() {
    let iter = || flowgate::source::iter(0..3u64);
    let tries = || flowgate::source::iter(0..3u64).map(Ok::<u64, ()>);
    let cases: Vec<(&str, Construct)> = vec![
        (
            "map_concurrent(0)",
            Box::new(move || drop(iter().map_concurrent(0, |i| async move { i }))),
        ),
        (
            "map_concurrent_unordered(0)",
            Box::new(move || drop(iter().map_concurrent_unordered(0, |i| async move { i }))),
        ),
        (
            "par_map(0)",
            Box::new(move || drop(iter().par_map(0, |i| i))),
        ),
        (
            "par_map_unordered(0)",
            Box::new(move || drop(iter().par_map_unordered(0, |i| i))),
        ),
        (
            "try_map_concurrent(0)",
            Box::new(move || drop(tries().try_map_concurrent(0, |i| async move { Ok(i) }))),
        ),
        (
            "try_map_concurrent_unordered(0)",
            Box::new(move || {
                drop(tries().try_map_concurrent_unordered(0, |i| async move { Ok(i) }))
            }),
        ),
        (
            "try_par_map(0)",
            Box::new(move || drop(tries().try_par_map(0, Ok))),
        ),
        (
            "try_par_map_unordered(0)",
            Box::new(move || drop(tries().try_par_map_unordered(0, Ok))),
        ),
        (
            "map_concurrent(4).with_window(3)",
            Box::new(move || {
                drop(
                    iter()
                        .map_concurrent(4, |i| async move { i })
                        .with_window(3),
                )
            }),
        ),
        (
            "par_map(4).with_window(3)",
            Box::new(move || drop(iter().par_map(4, |i| i).with_window(3))),
        ),
        (
            "try_map_concurrent(4).with_window(3)",
            Box::new(move || {
                drop(
                    tries()
                        .try_map_concurrent(4, |i| async move { Ok(i) })
                        .with_window(3),
                )
            }),
        ),
        (
            "try_par_map(4).with_window(3)",
            Box::new(move || drop(tries().try_par_map(4, Ok).with_window(3))),
        ),
        (
            "chunks_within(0, _)",
            Box::new(move || drop(iter().chunks_within(0, Duration::from_millis(1)))),
        ),
        (
            "chunks_weighted(0, _)",
            Box::new(move || drop(iter().chunks_weighted(0, |_| 1))),
        ),
    ];
    let mut wrong = Vec::new();
    for (what, call) in cases {
        let file = panic_file(call);
        if file != file!() {
            wrong.push(format!("{what} panics in {file}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "constructor panics that point into the library instead of at the caller: {wrong:?}"
    );
}
