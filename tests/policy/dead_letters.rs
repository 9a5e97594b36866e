//! `dead_letters`: successes flow on, failures go to any sink, nothing is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flowgate::policy::DeadLetter;
use flowgate::prelude::*;
use flowgate::Retry;
use futures::{SinkExt, StreamExt};
use tokio_util::sync::PollSender;

type Letter = DeadLetter<u32, String>;

fn items(n: u32) -> impl futures::Stream<Item = Result<u32, String>> {
    flowgate::source::iter((0..n).map(Ok))
}

#[tokio::test]
async fn failures_go_to_the_sink_with_their_items_and_the_summary_counts_all() {
    let (letters, mut received) = tokio::sync::mpsc::channel::<Letter>(4);
    let attempts = Arc::new(AtomicU64::new(0));
    let counted = attempts.clone();
    let flow = items(20)
        .try_map_concurrent(4, move |i| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if i % 5 == 0 {
                    Err(format!("bad {i}"))
                } else {
                    Ok(i * 2)
                }
            }
        })
        .with_retry(Retry::attempts(2))
        .dead_letters(PollSender::new(letters));
    let summary = flow.summary();
    assert_eq!(summary.get(), None);
    let reader = tokio::spawn(async move {
        let mut letters = Vec::new();
        while let Some(letter) = received.recv().await {
            letters.push(letter);
        }
        letters
    });
    let ok: Vec<u32> = flow.map(|r| r.expect("the sink works")).collect().await;
    assert_eq!(
        ok,
        (0..20)
            .filter(|i| i % 5 != 0)
            .map(|i| i * 2)
            .collect::<Vec<_>>()
    );
    let letters = reader.await.unwrap();
    let failed: Vec<(u64, Option<u32>, u32)> = letters
        .iter()
        .map(|l| (l.error.position(), l.item, l.error.attempts()))
        .collect();
    assert_eq!(
        failed,
        [
            (0, Some(0), 2),
            (5, Some(5), 2),
            (10, Some(10), 2),
            (15, Some(15), 2)
        ]
    );
    let summary = summary.get().expect("the run ended");
    assert_eq!(
        (summary.succeeded, summary.failed, summary.retried),
        (16, 4, 4)
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 24);
}

#[tokio::test]
async fn a_sink_that_closes_ends_the_run_with_its_error() {
    let (letters, received) = futures::channel::mpsc::channel::<Letter>(0);
    drop(received);
    let out: Vec<Result<u32, String>> = items(10)
        .try_map_concurrent(1, |i| async move {
            if i == 3 {
                Err(String::from("bad"))
            } else {
                Ok(i)
            }
        })
        .dead_letters(letters.sink_map_err(|e| format!("dead letters lost: {e}")))
        .collect()
        .await;
    assert_eq!(&out[..3], &[Ok(0), Ok(1), Ok(2)]);
    assert_eq!(out.len(), 4, "the run ends at the sink's error");
    assert!(out[3]
        .as_ref()
        .unwrap_err()
        .starts_with("dead letters lost"));
}

#[tokio::test]
async fn a_sink_that_is_not_ready_holds_the_run_back_with_bounded_buffering() {
    let (letters, mut received) = futures::channel::mpsc::channel::<Letter>(0);
    let pulls = Arc::new(AtomicU64::new(0));
    let counted = pulls.clone();
    let upstream = items(1000).inspect(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    let mut flow = Box::pin(
        upstream
            .try_map_concurrent(4, |i| async move { Err::<u32, _>(format!("bad {i}")) })
            .dead_letters(letters.sink_map_err(|e| e.to_string())),
    );
    let mut next = tokio_test::task::spawn(flow.next());
    for _ in 0..50 {
        tokio_test::assert_pending!(next.poll());
        tokio::task::yield_now().await;
    }
    let held = pulls.load(Ordering::SeqCst);
    assert!(
        held <= 4 + 3,
        "pulled {held} items with nobody reading the sink"
    );
    drop(next);
    let reader = tokio::spawn(async move {
        let mut n = 0u64;
        while received.next().await.is_some() {
            n += 1;
        }
        n
    });
    assert_eq!(flow.next().await, None);
    let summary = flow.summary().get().unwrap();
    assert_eq!(summary.failed, 1000);
    drop(flow);
    assert_eq!(
        reader.await.unwrap(),
        1000,
        "every failure reached the sink"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_operators_send_dead_letters_too() {
    let (letters, received) = futures::channel::mpsc::unbounded::<Letter>();
    let ok: Vec<u32> = items(30)
        .try_par_map_unordered(3, |i| {
            if i % 7 == 0 {
                Err(format!("bad {i}"))
            } else {
                Ok(i)
            }
        })
        .catch_panics()
        .dead_letters(letters)
        .map(|r| r.unwrap())
        .collect()
        .await;
    let mut positions: Vec<u64> = received.map(|l| l.error.position()).collect().await;
    positions.sort_unstable();
    assert_eq!(positions, [0, 7, 14, 21, 28]);
    assert_eq!(ok.len(), 25);
}
