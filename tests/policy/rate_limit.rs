//! `rate_limit`: at most `n` items in any span of `per`, on the paused clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowgate::prelude::*;
use futures::StreamExt;
use tokio::time::{sleep, Instant};

const MS: Duration = Duration::from_millis(1);

/// The virtual times, in ms from the start, at which the items of `stream` arrive.
async fn arrival_ms<S: futures::Stream + Unpin>(mut stream: S) -> Vec<u128> {
    let start = Instant::now();
    let mut at = Vec::new();
    while stream.next().await.is_some() {
        at.push(start.elapsed().as_millis());
    }
    at
}

#[tokio::test(start_paused = true)]
async fn n_items_pass_per_period_in_bursts() {
    let limited = flowgate::source::iter(0..10u32).rate_limit(3, 100 * MS);
    assert_eq!(
        arrival_ms(limited).await,
        [0, 0, 0, 100, 100, 100, 200, 200, 200, 300]
    );
}

#[tokio::test(start_paused = true)]
async fn the_window_slides_with_each_item() {
    // The consumer takes one item, pauses 50 ms, then takes the rest as fast as it may.
    let mut limited = flowgate::source::iter(0..6u32).rate_limit(3, 100 * MS);
    let start = Instant::now();
    limited.next().await;
    sleep(50 * MS).await;
    let mut at = vec![0];
    while limited.next().await.is_some() {
        at.push(start.elapsed().as_millis());
    }
    // Items 1 and 2 at 50 ms; item 3 waits for item 0 to be 100 ms old, items 4 and 5
    // for items 1 and 2.
    assert_eq!(at, [0, 50, 50, 100, 150, 150]);
}

#[tokio::test(start_paused = true)]
async fn any_span_of_the_period_holds_at_most_n_items() {
    // An upstream with irregular gaps: whatever the gaps, no 100 ms span holds more than 4.
    let gaps = [
        0u32, 7, 0, 0, 31, 0, 90, 2, 0, 0, 0, 55, 13, 0, 0, 0, 0, 120, 0, 1,
    ];
    let upstream = stream! {
        for (i, gap) in gaps.into_iter().enumerate() {
            sleep(MS * gap).await;
            yield i;
        }
    };
    let at = arrival_ms(Box::pin(upstream.rate_limit(4, 100 * MS))).await;
    assert_eq!(at.len(), gaps.len());
    for (i, first) in at.iter().enumerate() {
        let within = at[i..].iter().filter(|t| **t < first + 100).count();
        assert!(
            within <= 4,
            "{within} items within 100 ms of {first} ms: {at:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_upstream_is_not_held_back_and_works_one_item_ahead() {
    // Upstream takes 200 ms per pull; the limit allows one item per 100 ms: upstream
    // sets the pace.
    let upstream = stream! {
        for i in 0..4u32 {
            sleep(MS * 200).await;
            yield i;
        }
    };
    let at = arrival_ms(Box::pin(upstream.rate_limit(1, 100 * MS))).await;
    assert_eq!(at, [200, 400, 600, 800]);
    // Quicker than the limit: the limit sets the pace, and each pull's 30 ms overlap
    // the wait for the permit.
    let upstream = stream! {
        for i in 0..4u32 {
            sleep(MS * 30).await;
            yield i;
        }
    };
    let at = arrival_ms(Box::pin(upstream.rate_limit(1, 100 * MS))).await;
    assert_eq!(at, [30, 130, 230, 330]);
}

#[tokio::test(start_paused = true)]
async fn at_most_one_item_is_pulled_ahead_of_its_permit() {
    let pulls = Arc::new(AtomicUsize::new(0));
    let counted = pulls.clone();
    let upstream = flowgate::source::iter(0..5u32).inspect(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    let mut limited = upstream.rate_limit(2, 100 * MS);
    assert_eq!(limited.next().await, Some(0));
    assert_eq!(limited.next().await, Some(1));
    let mut third = tokio_test::task::spawn(limited.next());
    tokio_test::assert_pending!(third.poll());
    tokio_test::assert_pending!(third.poll());
    assert_eq!(
        pulls.load(Ordering::SeqCst),
        3,
        "one item held ahead, no more"
    );
    sleep(100 * MS).await;
    assert_eq!(tokio_test::assert_ready!(third.poll()), Some(2));
}

#[tokio::test(start_paused = true)]
async fn the_end_is_seen_at_once() {
    let start = Instant::now();
    let n = flowgate::source::iter(0..4u32)
        .rate_limit(2, 100 * MS)
        .count()
        .await;
    assert_eq!(n, 4);
    assert_eq!(
        start.elapsed(),
        100 * MS,
        "no wait for a permit after the last item"
    );
}

#[tokio::test(start_paused = true)]
async fn before_a_concurrent_operator_it_paces_job_starts() {
    let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let start = Instant::now();
    let recorded = starts.clone();
    let out: Vec<u32> = flowgate::source::iter(0..6u32)
        .rate_limit(2, 100 * MS)
        .map_concurrent(6, move |i| {
            recorded.lock().unwrap().push(start.elapsed().as_millis());
            async move {
                sleep(30 * MS).await;
                i
            }
        })
        .collect()
        .await;
    assert_eq!(out, [0, 1, 2, 3, 4, 5]);
    assert_eq!(*starts.lock().unwrap(), [0, 0, 100, 100, 200, 200]);
}

#[tokio::test(start_paused = true)]
async fn it_ends_and_stays_ended() {
    use futures::stream::FusedStream;
    let mut limited = flowgate::source::iter(0..1u32).rate_limit(1, MS);
    assert_eq!(limited.next().await, Some(0));
    assert_eq!(limited.next().await, None);
    assert!(limited.is_terminated());
    assert_eq!(limited.next().await, None);
}

#[test]
#[should_panic(expected = "`n` of at least 1")]
fn zero_items_per_period_panics_naming_n() {
    let _ = flowgate::source::iter(0..1u32).rate_limit(0, MS);
}

#[test]
#[should_panic(expected = "period `per` above zero")]
fn a_zero_period_panics_naming_per() {
    let _ = flowgate::source::iter(0..1u32).rate_limit(1, Duration::ZERO);
}
