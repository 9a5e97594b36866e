//! `chunks_weighted`: exact boundaries, heavy items, zero weights, saturating sums,
//! laziness, fusing, size hints and argument checks.

use std::cell::Cell;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowgate::prelude::*;
use futures::stream::FusedStream;
use futures::{Stream, StreamExt};
use tokio::time::{sleep, Instant};

use crate::{PanicAfterEnd, Pulls};

/// Chunks `weights`, each item weighing its own value.
fn chunk(max_weight: usize, weights: Vec<usize>) -> Vec<Vec<usize>> {
    let chunks = flowgate::source::iter(weights).chunks_weighted(max_weight, |w| *w);
    futures::executor::block_on(chunks.collect())
}

#[test]
fn boundaries_are_exact() {
    // Reaching max_weight exactly closes the chunk.
    assert_eq!(chunk(10, vec![4, 6, 1]), vec![vec![4, 6], vec![1]]);
    assert_eq!(chunk(10, vec![10, 10]), vec![vec![10], vec![10]]);
    // One past it does not fit: that item starts the next chunk.
    assert_eq!(chunk(10, vec![4, 5, 2]), vec![vec![4, 5], vec![2]]);
    assert_eq!(
        chunk(10, vec![9, 2, 8, 3]),
        vec![vec![9], vec![2, 8], vec![3]]
    );
    // Everything fits: one chunk, emitted at the end.
    assert_eq!(chunk(10, vec![1, 2, 3]), vec![vec![1, 2, 3]]);
    assert_eq!(chunk(1, vec![1, 1, 1]), vec![vec![1], vec![1], vec![1]]);
    assert!(chunk(10, vec![]).is_empty());
}

#[test]
fn an_item_heavier_than_max_weight_goes_alone() {
    assert_eq!(chunk(10, vec![50]), vec![vec![50]]);
    assert_eq!(
        chunk(10, vec![1, 2, 50, 3]),
        vec![vec![1, 2], vec![50], vec![3]]
    );
    assert_eq!(
        chunk(10, vec![50, 60, 1]),
        vec![vec![50], vec![60], vec![1]]
    );
    assert_eq!(chunk(10, vec![11, 0]), vec![vec![11], vec![0]]);
}

#[test]
fn zero_weights_are_allowed() {
    assert_eq!(chunk(1, vec![0, 0, 1, 0]), vec![vec![0, 0, 1], vec![0]]);
    assert_eq!(chunk(1, vec![1, 0, 0]), vec![vec![1], vec![0, 0]]);
    assert_eq!(chunk(5, vec![0, 0]), vec![vec![0, 0]]);
    // A long run of them keeps growing the chunk.
    let zeros = chunk(1, vec![0; 10_000]);
    assert_eq!(zeros.len(), 1);
    assert_eq!(zeros[0].len(), 10_000);
}

#[test]
fn a_sum_past_usize_max_does_not_fit() {
    let max = usize::MAX;
    assert_eq!(
        chunk(10, vec![max, max, 3]),
        vec![vec![max], vec![max], vec![3]]
    );
    assert_eq!(chunk(10, vec![3, max]), vec![vec![3], vec![max]]);
    // 1 + MAX is past usize::MAX: over a max_weight of usize::MAX, so MAX goes alone.
    assert_eq!(
        chunk(max, vec![1, max, 2]),
        vec![vec![1], vec![max], vec![2]]
    );
    let half = max / 2 + 1;
    assert_eq!(
        chunk(max - 1, vec![half, half, 1]),
        vec![vec![half], vec![half, 1]]
    );
    // Two halves weigh 2^64 together: never one chunk, even beside a weight of 0.
    assert_eq!(
        chunk(max, vec![half, 0, half]),
        vec![vec![half, 0], vec![half]]
    );
    assert_eq!(chunk(max, vec![max, 0, 0]), vec![vec![max], vec![0, 0]]);
}

#[test]
fn weigh_is_called_once_per_item() {
    let calls = Cell::new(0);
    let chunks = flowgate::source::iter([3, 3, 3, 9, 3]).chunks_weighted(6, |w| {
        calls.set(calls.get() + 1);
        *w
    });
    let chunks: Vec<Vec<usize>> = futures::executor::block_on(chunks.collect());
    assert_eq!(chunks, vec![vec![3, 3], vec![3], vec![9], vec![3]]);
    assert_eq!(calls.get(), 5);
}

#[test]
fn reads_nothing_ahead_beyond_the_item_that_did_not_fit() {
    let pulls = Pulls::default();
    let counted = pulls.clone();
    let weights = stream! {
        for w in [2usize, 3, 4, 1, 1, 1, 1] {
            counted.record();
            yield w;
        }
    };
    futures::executor::block_on(async {
        let mut chunks = pin!(weights.chunks_weighted(5, |w| *w));
        assert_eq!(pulls.get(), 0);
        assert_eq!(chunks.next().await, Some(vec![2, 3]));
        assert_eq!(
            pulls.get(),
            2,
            "reaching max_weight emits without reading on"
        );
        assert_eq!(chunks.next().await, Some(vec![4, 1]));
        assert_eq!(pulls.get(), 4);
        assert_eq!(chunks.next().await, Some(vec![1, 1, 1]));
        assert_eq!(pulls.get(), 7);
        assert_eq!(chunks.next().await, None);
    });

    let pulls = Pulls::default();
    let counted = pulls.clone();
    let weights = stream! {
        for w in [2usize, 2, 4, 1] {
            counted.record();
            yield w;
        }
    };
    futures::executor::block_on(async {
        let mut chunks = pin!(weights.chunks_weighted(5, |w| *w));
        assert_eq!(chunks.next().await, Some(vec![2, 2]));
        assert_eq!(
            pulls.get(),
            3,
            "the item that did not fit is the only one read ahead"
        );
        assert_eq!(chunks.next().await, Some(vec![4, 1]));
        assert_eq!(pulls.get(), 4);
    });
}

#[tokio::test(start_paused = true)]
async fn a_partial_chunk_waits_for_upstream() {
    let slow = stream! {
        yield 1usize;
        sleep(Duration::from_millis(1000)).await;
        yield 2;
        sleep(Duration::from_millis(1000)).await;
        yield 3;
    };
    let start = Instant::now();
    let mut chunks = pin!(slow.chunks_weighted(3, |w| *w));
    assert_eq!(chunks.next().await, Some(vec![1, 2]));
    assert_eq!(start.elapsed(), Duration::from_millis(1000));
    assert_eq!(chunks.next().await, Some(vec![3]));
    assert_eq!(start.elapsed(), Duration::from_millis(2000));
    assert_eq!(chunks.next().await, None);
}

#[test]
fn is_fused_and_never_polls_an_ended_upstream() {
    let upstream = PanicAfterEnd::new(flowgate::source::iter([1usize, 2, 3, 9]));
    let mut chunks = upstream.chunks_weighted(4, |w| *w);
    futures::executor::block_on(async {
        assert!(!chunks.is_terminated());
        assert_eq!(chunks.next().await, Some(vec![1, 2]));
        assert_eq!(chunks.next().await, Some(vec![3]));
        // 9 was read as the item that did not fit: the end is not known yet.
        assert_eq!(chunks.next().await, Some(vec![9]));
        assert!(!chunks.is_terminated());
        assert_eq!(chunks.next().await, None);
        assert!(chunks.is_terminated());
        for _ in 0..3 {
            assert_eq!(chunks.next().await, None);
        }
    });
}

#[test]
fn size_hint_is_honest() {
    let mut chunks = flowgate::source::iter([1usize, 2, 3, 9]).chunks_weighted(4, |w| *w);
    assert_eq!(chunks.size_hint(), (1, Some(4)));
    futures::executor::block_on(async {
        assert_eq!(chunks.next().await, Some(vec![1, 2]));
        // 3 is held (it did not fit), 9 is upstream.
        assert_eq!(chunks.size_hint(), (1, Some(2)));
        while chunks.next().await.is_some() {}
    });
    assert_eq!(chunks.size_hint(), (0, Some(0)));

    let empty = flowgate::source::iter(Vec::<usize>::new()).chunks_weighted(4, |w| *w);
    assert_eq!(empty.size_hint(), (0, Some(0)));
    let maybe_empty = flowgate::source::iter((0..10usize).filter(|w| w % 2 == 0));
    assert_eq!(
        maybe_empty.chunks_weighted(4, |w| *w).size_hint(),
        (0, Some(10))
    );
    let endless = flowgate::source::iter(0..).chunks_weighted(4, |_| 1);
    assert_eq!(endless.size_hint(), (1, None));
}

#[tokio::test(start_paused = true)]
async fn an_always_ready_upstream_does_not_starve_other_tasks() {
    let other_ran = Arc::new(AtomicBool::new(false));
    let flag = other_ran.clone();
    tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
    let mut chunks = futures::stream::repeat(1usize).chunks_weighted(3, |w| *w);
    let mut taken = 0;
    while !other_ran.load(Ordering::SeqCst) {
        assert_eq!(chunks.next().await, Some(vec![1; 3]));
        taken += 1;
        assert!(taken < 10_000, "the other task never ran");
    }
}

#[test]
#[should_panic(expected = "max_weight")]
fn zero_max_weight_panics_at_construction() {
    let _ = flowgate::source::iter([1usize]).chunks_weighted(0, |w| *w);
}

/// The true sum of a chunk's weights, which cannot overflow.
fn true_weight(chunk: &[usize]) -> u128 {
    chunk.iter().map(|w| *w as u128).sum()
}

#[test]
fn a_chunk_never_holds_more_than_max_weight_near_usize_max() {
    // Two halves of usize::MAX (plus one) sum to more than it: saturating at usize::MAX,
    // the sum must not pass for one that fits.
    let half = usize::MAX / 2 + 1;
    assert_eq!(
        chunk(usize::MAX, vec![half, 0, half]),
        vec![vec![half, 0], vec![half]],
        "a chunk whose true weight exceeds usize::MAX"
    );
}

proptest::proptest! {
    /// For every `max_weight` near `usize::MAX` and weights around its halves and thirds,
    /// a chunk of more than one item weighs (truly, in `u128`) at most `max_weight`; and
    /// nothing is lost or reordered.
    #[test]
    fn chunks_stay_within_max_weight_by_their_true_sum(
        max_weight in proptest::prop_oneof![
            proptest::strategy::Just(usize::MAX), proptest::strategy::Just(usize::MAX - 1), (usize::MAX / 2)..=usize::MAX
        ],
        weights in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::strategy::Just(0usize),
                proptest::strategy::Just(1usize),
                proptest::strategy::Just(usize::MAX),
                (usize::MAX / 3 - 2)..=(usize::MAX / 3 + 2),
                (usize::MAX / 2 - 2)..=(usize::MAX / 2 + 2),
                proptest::num::usize::ANY,
            ],
            0..12,
        ),
    ) {
        let chunks = chunk(max_weight, weights.clone());
        proptest::prop_assert_eq!(chunks.concat(), weights);
        for piece in &chunks {
            proptest::prop_assert!(!piece.is_empty(), "an empty chunk");
            proptest::prop_assert!(
                piece.len() == 1 || true_weight(piece) <= max_weight as u128,
                "chunk {:?} weighs {} over max_weight {}",
                piece,
                true_weight(piece),
                max_weight
            );
        }
    }
}
