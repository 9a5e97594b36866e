//! `chunks_within`: count, deadline from the chunk's first item, "what is ready" at zero
//! wait, laziness, fusing, size hints and argument checks. Timings are exact: the tests
//! run on tokio's paused clock and read its virtual time.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowgate::prelude::*;
use futures::stream::FusedStream;
use futures::{Stream, StreamExt};
use tokio::time::{sleep, Instant};

use crate::{PanicAfterEnd, Pulls};

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// Milliseconds of virtual time since `start`.
fn since(start: Instant) -> u64 {
    start.elapsed().as_millis().try_into().unwrap()
}

/// Drains `chunks`, returning each chunk with the virtual time (ms since the call) at
/// which it was yielded, and the time at which the stream ended.
async fn timed<S: Stream>(chunks: S) -> (Vec<(u64, S::Item)>, u64) {
    let start = Instant::now();
    let mut chunks = pin!(chunks);
    let mut out = Vec::new();
    while let Some(chunk) = chunks.next().await {
        out.push((since(start), chunk));
    }
    (out, since(start))
}

#[tokio::test(start_paused = true)]
async fn flushes_at_max_items_without_waiting() {
    let (chunks, end) = timed(flowgate::source::iter(0..7).chunks_within(3, ms(1000))).await;
    assert_eq!(
        chunks,
        vec![(0, vec![0, 1, 2]), (0, vec![3, 4, 5]), (0, vec![6])]
    );
    assert_eq!(end, 0, "the end flushes the rest at once");
}

#[tokio::test(start_paused = true)]
async fn flushes_max_wait_after_the_chunks_first_item() {
    let readings = stream! {
        sleep(ms(30)).await;
        yield 0; // t = 30: the first chunk's timer runs until 130
        sleep(ms(50)).await;
        yield 1; // t = 80
        sleep(ms(120)).await;
        yield 2; // t = 200: the second chunk's timer runs until 300
        sleep(ms(50)).await;
        yield 3; // t = 250
        sleep(ms(10)).await;
        yield 4; // t = 260
        sleep(ms(90)).await;
        yield 5; // t = 350
        sleep(ms(50)).await;
        // ends at t = 400, before the third chunk's timer (450)
    };
    let (chunks, end) = timed(readings.chunks_within(10, ms(100))).await;
    assert_eq!(
        chunks,
        vec![(130, vec![0, 1]), (300, vec![2, 3, 4]), (400, vec![5])]
    );
    assert_eq!(end, 400);
}

/// The same schedule scripted with the test kit's `MockSource`, which also shows when
/// `chunks_within` pulled: at once after each item, never ahead of time.
#[tokio::test(start_paused = true)]
async fn flushes_max_wait_after_the_chunks_first_item_with_a_mock_source() {
    use flowgate::testing::MockSource;
    let readings = MockSource::new()
        .wait(ms(30))
        .item(0)
        .wait(ms(50))
        .item(1)
        .wait(ms(120))
        .item(2)
        .wait(ms(50))
        .item(3)
        .wait(ms(10))
        .item(4)
        .wait(ms(90))
        .item(5)
        .wait(ms(50));
    let pulls = readings.handle();
    let (chunks, end) = timed(readings.chunks_within(10, ms(100))).await;
    assert_eq!(
        chunks,
        vec![(130, vec![0, 1]), (300, vec![2, 3, 4]), (400, vec![5])]
    );
    assert_eq!(end, 400);
    assert_eq!(
        pulls.pulled_at(),
        [0, 30, 80, 200, 250, 260, 350].map(ms),
        "one pull per item, each as the previous item arrived, and one for the end"
    );
    assert!(pulls.is_finished());
}

#[tokio::test(start_paused = true)]
async fn the_timer_restarts_at_each_chunks_first_item() {
    let readings = stream! {
        yield 0;
        yield 1; // t = 0: full, flushed at once (its timer would have run until 100)
        sleep(ms(50)).await;
        yield 2; // t = 50: a new timer, until 150 (not 100, nor 0 + 100 after the flush)
        sleep(ms(500)).await;
        yield 3; // t = 550: until 650
        sleep(ms(500)).await;
    };
    let (chunks, end) = timed(readings.chunks_within(2, ms(100))).await;
    assert_eq!(
        chunks,
        vec![(0, vec![0, 1]), (150, vec![2]), (650, vec![3])]
    );
    assert_eq!(end, 1050);
}

#[tokio::test(start_paused = true)]
async fn when_the_timer_fires_ready_items_go_first() {
    let readings = || {
        stream! {
            yield 0; // t = 0: the timer runs until 100
            sleep(ms(100)).await;
            yield 1; // t = 100, as the timer fires
            yield 2;
            yield 3;
            sleep(ms(1000)).await;
        }
    };
    let (chunks, end) = timed(readings().chunks_within(10, ms(100))).await;
    assert_eq!(chunks, vec![(100, vec![0, 1, 2, 3])]);
    assert_eq!(end, 1100);

    // Up to max_items: the rest starts the next chunk, with its own timer.
    let (chunks, _) = timed(readings().chunks_within(3, ms(100))).await;
    assert_eq!(chunks, vec![(100, vec![0, 1, 2]), (200, vec![3])]);
}

#[tokio::test(start_paused = true)]
async fn zero_wait_takes_only_what_is_ready() {
    let bursts = || {
        stream! {
            yield 0;
            yield 1;
            yield 2;
            tokio::task::yield_now().await; // not ready: the chunk goes
            yield 3;
            tokio::task::yield_now().await;
            yield 4;
            yield 5;
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
        }
    };
    let chunks: Vec<Vec<u32>> = bursts().chunks_within(10, Duration::ZERO).collect().await;
    assert_eq!(chunks, vec![vec![0, 1, 2], vec![3], vec![4, 5]]);
    let chunks: Vec<Vec<u32>> = bursts().chunks_within(2, Duration::ZERO).collect().await;
    assert_eq!(chunks, vec![vec![0, 1], vec![2], vec![3], vec![4, 5]]);

    let timed_bursts = stream! {
        sleep(ms(10)).await;
        yield 0;
        sleep(ms(10)).await;
        yield 1;
        yield 2;
    };
    let (chunks, end) = timed(timed_bursts.chunks_within(10, Duration::ZERO)).await;
    assert_eq!(chunks, vec![(10, vec![0]), (20, vec![1, 2])]);
    assert_eq!(end, 20);
}

#[tokio::test(start_paused = true)]
async fn zero_wait_reads_nothing_ahead() {
    let pulls = Pulls::default();
    let counted = pulls.clone();
    let bursts = stream! {
        for burst in 0..3 {
            for i in 0..3 {
                counted.record();
                yield burst * 10 + i;
            }
            tokio::task::yield_now().await;
        }
    };
    let mut chunks = pin!(bursts.chunks_within(100, Duration::ZERO));
    assert_eq!(pulls.get(), 0, "nothing is pulled before the first poll");
    assert_eq!(chunks.next().await, Some(vec![0, 1, 2]));
    assert_eq!(pulls.get(), 3);
    assert_eq!(chunks.next().await, Some(vec![10, 11, 12]));
    assert_eq!(pulls.get(), 6);
}

#[tokio::test(start_paused = true)]
async fn reads_nothing_ahead() {
    let pulls = Pulls::default();
    let counted = pulls.clone();
    let numbers = stream! {
        for i in 0..10 {
            counted.record();
            yield i;
            if i == 4 {
                sleep(ms(1000)).await;
            }
        }
    };
    let mut chunks = pin!(numbers.chunks_within(3, ms(100)));
    assert_eq!(pulls.get(), 0);
    assert_eq!(chunks.next().await, Some(vec![0, 1, 2]));
    assert_eq!(pulls.get(), 3, "a full chunk stops the pulling");
    // The consumer is busy: upstream is not polled meanwhile.
    sleep(ms(5000)).await;
    assert_eq!(pulls.get(), 3);
    let start = Instant::now();
    assert_eq!(chunks.next().await, Some(vec![3, 4]));
    assert_eq!(since(start), 100);
    assert_eq!(pulls.get(), 5);
    assert_eq!(chunks.next().await, Some(vec![5, 6, 7]));
    assert_eq!(pulls.get(), 8);
}

#[tokio::test(start_paused = true)]
async fn the_end_flushes_the_rest_without_waiting_for_the_timer() {
    let short = stream! {
        yield 0;
        sleep(ms(10)).await;
    };
    let (chunks, end) = timed(short.chunks_within(10, ms(100))).await;
    assert_eq!(chunks, vec![(10, vec![0])]);
    assert_eq!(end, 10);
}

#[tokio::test(start_paused = true)]
async fn never_emits_an_empty_chunk() {
    for max_wait in [Duration::ZERO, ms(100)] {
        let (chunks, _) =
            timed(flowgate::source::iter(Vec::<u32>::new()).chunks_within(3, max_wait)).await;
        assert!(chunks.is_empty());

        let silent = stream! {
            sleep(ms(1000)).await;
            if false {
                yield 0u32;
            }
        };
        let (chunks, end) = timed(silent.chunks_within(3, max_wait)).await;
        assert!(chunks.is_empty());
        assert_eq!(end, 1000);

        // Long gaps: the timer of an emitted chunk is long past when the next item comes.
        let sparse = stream! {
            for i in 0..4 {
                sleep(ms(1000)).await;
                yield i;
            }
            sleep(ms(1000)).await;
        };
        let (chunks, end) = timed(sparse.chunks_within(3, max_wait)).await;
        let wait = u64::try_from(max_wait.as_millis()).unwrap();
        let expected: Vec<(u64, Vec<u32>)> = (0..4)
            .map(|i| (1000 * (u64::from(i) + 1) + wait, vec![i]))
            .collect();
        assert_eq!(chunks, expected);
        assert_eq!(end, 5000);
    }
}

#[tokio::test(start_paused = true)]
async fn is_fused_and_never_polls_an_ended_upstream() {
    for max_wait in [Duration::ZERO, ms(100)] {
        let upstream = PanicAfterEnd::new(flowgate::source::iter(0..5));
        let mut chunks = upstream.chunks_within(2, max_wait);
        assert!(!chunks.is_terminated());
        assert_eq!(chunks.next().await, Some(vec![0, 1]));
        assert_eq!(chunks.next().await, Some(vec![2, 3]));
        assert_eq!(chunks.next().await, Some(vec![4]));
        assert!(chunks.is_terminated(), "upstream ended with the last chunk");
        for _ in 0..3 {
            assert_eq!(chunks.next().await, None);
        }
        assert!(chunks.is_terminated());
    }
}

#[tokio::test(start_paused = true)]
async fn size_hint_divides_rounding_up() {
    let mut chunks = flowgate::source::iter(0..10).chunks_within(3, ms(100));
    assert_eq!(chunks.size_hint(), (4, Some(10)));
    assert_eq!(chunks.next().await, Some(vec![0, 1, 2]));
    assert_eq!(chunks.size_hint(), (3, Some(7)));
    while chunks.next().await.is_some() {}
    assert_eq!(chunks.size_hint(), (0, Some(0)));

    // Buffered items count: two items wait for the timer, upstream promises nothing more.
    let upstream = futures::stream::iter([1, 2]).chain(futures::stream::pending());
    let mut chunks = upstream.chunks_within(10, ms(100));
    assert_eq!(chunks.size_hint(), (1, Some(2)));
    assert_eq!(futures::poll!(chunks.next()), std::task::Poll::Pending);
    assert_eq!(chunks.size_hint(), (1, Some(2)));

    // An unknown upper bound stays unknown; an overflowing one is unknown too.
    let unbounded = flowgate::source::iter(0..).chunks_within(5, ms(100));
    assert_eq!(unbounded.size_hint(), (usize::MAX.div_ceil(5), None));
    let generated = stream! {
        yield 1u8;
    };
    let generated = generated.chunks_within(5, ms(100));
    assert_eq!(generated.size_hint(), (0, None));
}

#[tokio::test(start_paused = true)]
async fn a_huge_max_wait_means_no_deadline() {
    let late = stream! {
        yield 0;
        sleep(Duration::from_secs(86_400)).await;
        yield 1;
    };
    let (chunks, end) = timed(late.chunks_within(10, Duration::MAX)).await;
    assert_eq!(chunks, vec![(86_400_000, vec![0, 1])]);
    assert_eq!(end, 86_400_000);
}

#[tokio::test(start_paused = true)]
async fn an_always_ready_upstream_does_not_starve_other_tasks() {
    let other_ran = Arc::new(AtomicBool::new(false));
    let flag = other_ran.clone();
    tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
    // `repeat` never returns `Pending` and spends no budget of its own.
    let mut chunks = futures::stream::repeat(1u8).chunks_within(4, ms(100));
    let mut taken = 0;
    while !other_ran.load(Ordering::SeqCst) {
        assert_eq!(chunks.next().await, Some(vec![1; 4]));
        taken += 1;
        assert!(taken < 10_000, "the other task never ran");
    }
}

#[test]
#[should_panic(expected = "max_items")]
fn zero_max_items_panics_at_construction() {
    let _ = flowgate::source::iter(0..3).chunks_within(0, ms(100));
}

#[test]
#[should_panic(expected = "tokio runtime")]
fn polling_with_a_timer_outside_a_runtime_panics() {
    let chunks = flowgate::source::iter(0..3).chunks_within(2, ms(100));
    let _ = futures::executor::block_on(chunks.collect::<Vec<_>>());
}

#[test]
fn zero_wait_needs_no_runtime() {
    let chunks = flowgate::source::iter(0..5).chunks_within(2, Duration::ZERO);
    let chunks: Vec<Vec<u32>> = futures::executor::block_on(chunks.collect());
    assert_eq!(chunks, vec![vec![0, 1], vec![2, 3], vec![4]]);
}

#[test]
fn built_outside_a_runtime_runs_inside_one() {
    let chunks = flowgate::source::iter(0..5).chunks_within(2, ms(100));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let chunks: Vec<Vec<u32>> = runtime.block_on(chunks.collect());
    assert_eq!(chunks, vec![vec![0, 1], vec![2, 3], vec![4]]);
}
