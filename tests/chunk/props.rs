//! Property tests: the chunkers lose, duplicate and reorder nothing, and cut where their
//! contract says.

use std::time::Duration;

use flowgate::prelude::*;
use futures::StreamExt;
use proptest::prelude::*;

/// A chunk's true weight, which may be past `usize::MAX`.
fn weight_of(chunk: &[usize]) -> u128 {
    chunk.iter().map(|w| *w as u128).sum()
}

/// Weights with zeros, small values and values near `usize::MAX` (sums past it).
fn weights() -> impl Strategy<Value = Vec<usize>> {
    let weight = prop_oneof![
        2 => Just(0usize),
        8 => 1usize..40,
        1 => (usize::MAX - 3)..=usize::MAX,
    ];
    prop::collection::vec(weight, 0..200)
}

fn max_weight() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 1usize..50, 1 => Just(usize::MAX), 1 => Just(usize::MAX - 1)]
}

/// Runs `chunks` to its end on a paused current-thread runtime.
fn collect_paused<S: futures::Stream>(chunks: S) -> Vec<S::Item> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(chunks.collect())
}

proptest! {
    #[test]
    fn chunks_weighted_cuts_greedily_and_loses_nothing(
        weights in weights(),
        max_weight in max_weight(),
    ) {
        let chunks: Vec<Vec<usize>> = futures::executor::block_on(
            flowgate::source::iter(weights.clone()).chunks_weighted(max_weight, |w| *w).collect(),
        );

        let flat: Vec<usize> = chunks.concat();
        prop_assert_eq!(&flat, &weights, "concatenated chunks differ from the input");
        for (i, chunk) in chunks.iter().enumerate() {
            prop_assert!(!chunk.is_empty(), "chunk {} is empty", i);
            prop_assert!(
                chunk.len() == 1 || weight_of(chunk) <= max_weight as u128,
                "chunk {} {:?} is over max_weight {}", i, chunk, max_weight
            );
            if let Some(next) = chunks.get(i + 1) {
                let max_weight = max_weight as u128;
                let full = weight_of(chunk) >= max_weight
                    || weight_of(chunk) + next[0] as u128 > max_weight;
                prop_assert!(full, "chunk {} {:?} could have taken {}", i, chunk, next[0]);
            }
        }
    }

    #[test]
    fn chunks_within_a_long_wait_on_a_ready_source_is_chunks(
        len in 0usize..400,
        max_items in 1usize..40,
        max_wait in prop_oneof![Just(Duration::MAX), Just(Duration::from_secs(3600))],
    ) {
        // More items than one task budget: the source's cooperative pauses cut nothing.
        let ours = collect_paused(flowgate::source::iter(0..len).chunks_within(max_items, max_wait));
        let theirs: Vec<Vec<usize>> =
            futures::executor::block_on(futures::stream::iter(0..len).chunks(max_items).collect());
        prop_assert_eq!(ours, theirs);
    }

    #[test]
    fn chunks_within_zero_wait_on_an_always_ready_source_is_chunks(
        len in 0usize..400,
        max_items in 1usize..40,
    ) {
        // A source that never returns `Pending` always has the next item ready.
        let ours = collect_paused(
            futures::stream::iter(0..len).chunks_within(max_items, Duration::ZERO),
        );
        let theirs: Vec<Vec<usize>> =
            futures::executor::block_on(futures::stream::iter(0..len).chunks(max_items).collect());
        prop_assert_eq!(ours, theirs);
    }

    #[test]
    fn chunks_within_keeps_order_and_bounds_with_any_timing(
        gaps in prop::collection::vec(0u64..30, 0..60),
        max_items in 1usize..8,
        max_wait_ms in 0u64..50,
    ) {
        let count = gaps.len();
        let timed = stream! {
            for (i, gap) in gaps.into_iter().enumerate() {
                if gap > 0 {
                    tokio::time::sleep(Duration::from_millis(gap)).await;
                }
                yield i;
            }
        };
        let chunks = collect_paused(
            timed.chunks_within(max_items, Duration::from_millis(max_wait_ms)),
        );
        prop_assert_eq!(chunks.concat(), (0..count).collect::<Vec<_>>());
        for chunk in &chunks {
            prop_assert!(!chunk.is_empty() && chunk.len() <= max_items, "bad chunk {:?}", chunk);
        }
    }
}
