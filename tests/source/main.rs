//! Integration tests of the sources, through the public API only.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use flowgate::prelude::*;
use flowgate::source::Iter;

mod blocking_iter;
mod lines;
use futures::stream::FusedStream;
use futures::{Stream, StreamExt};

fn is_send<T: Send>() {}
fn is_sync<T: Sync>() {}
fn is_unpin<T: Unpin>() {}

/// An iterator that is not `Unpin`.
struct Pinned(std::marker::PhantomPinned);

impl Iterator for Pinned {
    type Item = ();
    fn next(&mut self) -> Option<()> {
        None
    }
}

#[test]
fn iter_is_send_when_its_iterator_is_and_always_unpin() {
    is_send::<Iter<std::vec::IntoIter<String>>>();
    is_sync::<Iter<std::vec::IntoIter<String>>>();
    is_unpin::<Iter<std::vec::IntoIter<String>>>();
    is_unpin::<Iter<Pinned>>();
}

/// An iterator that counts its `next()` calls and ends after `len` items, but yields
/// again if called after its end (a non-fused iterator may).
struct Counting {
    calls: Rc<Cell<usize>>,
    len: usize,
}

impl Iterator for Counting {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        let call = self.calls.get();
        self.calls.set(call + 1);
        (call != self.len).then_some(call)
    }
}

#[tokio::test]
async fn iter_is_lazy() {
    let calls = Rc::new(Cell::new(0));
    let mut items = flowgate::source::iter(Counting {
        calls: calls.clone(),
        len: 100,
    });
    assert_eq!(calls.get(), 0, "nothing is read at construction");
    assert_eq!(items.next().await, Some(0));
    assert_eq!(calls.get(), 1, "one next() per item, nothing ahead");
    let first: Vec<usize> = items.by_ref().take(3).collect().await;
    assert_eq!(first, vec![1, 2, 3]);
    assert_eq!(calls.get(), 4);
}

#[tokio::test]
async fn iter_over_an_endless_iterator_materialises_nothing() {
    let chunks: Vec<Vec<u64>> = flowgate::source::iter(0u64..)
        .chunks(2)
        .take(2)
        .collect()
        .await;
    assert_eq!(chunks, vec![vec![0, 1], vec![2, 3]]);
}

#[tokio::test]
async fn iter_is_fused_and_never_calls_an_ended_iterator() {
    let calls = Rc::new(Cell::new(0));
    let mut items = flowgate::source::iter(Counting {
        calls: calls.clone(),
        len: 2,
    });
    assert!(!items.is_terminated());
    assert_eq!(items.next().await, Some(0));
    assert_eq!(items.next().await, Some(1));
    assert_eq!(items.next().await, None);
    assert!(items.is_terminated());
    for _ in 0..3 {
        assert_eq!(items.next().await, None);
    }
    assert_eq!(calls.get(), 3);
}

#[test]
fn iter_size_hint_is_the_iterators() {
    let mut items = flowgate::source::iter(vec!['a', 'b', 'c']);
    assert_eq!(items.size_hint(), (3, Some(3)));
    futures::executor::block_on(async {
        assert_eq!(items.next().await, Some('a'));
        assert_eq!(items.size_hint(), (2, Some(2)));
        while items.next().await.is_some() {}
    });
    assert_eq!(items.size_hint(), (0, Some(0)));
    assert_eq!(flowgate::source::iter(0..).size_hint(), (usize::MAX, None));
    assert_eq!(
        flowgate::source::iter((0..9).filter(|n| n % 3 == 0)).size_hint(),
        (0, Some(9))
    );
}

#[test]
fn iter_works_in_any_executor() {
    let items: Vec<u32> = futures::executor::block_on(flowgate::source::iter(0..1000).collect());
    assert_eq!(items, (0..1000).collect::<Vec<_>>());
}

#[tokio::test]
async fn iter_does_not_starve_other_tasks() {
    let other_ran = Arc::new(AtomicBool::new(false));
    let flag = other_ran.clone();
    tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
    let mut items = flowgate::source::iter(0u64..);
    let mut taken = 0;
    while !other_ran.load(Ordering::SeqCst) {
        assert_eq!(items.next().await, Some(taken));
        taken += 1;
        assert!(taken < 10_000, "the other task never ran");
    }
    // The budget ran out, the task yielded, and nothing was lost or repeated meanwhile.
    assert_eq!(items.next().await, Some(taken));
}

#[tokio::test]
async fn iter_feeds_a_pipeline() {
    let weighted: Vec<Vec<&str>> = flowgate::source::iter(["a", "bb", "ccc", "dddd"])
        .chunks_weighted(4, |s| s.len())
        .collect()
        .await;
    assert_eq!(weighted, vec![vec!["a", "bb"], vec!["ccc"], vec!["dddd"]]);
}
