//! Compile-time checks: every operator is `Send` (and `Unpin`) when its parts are; and
//! neither the upstream nor the async lane's `f` needs to be `Send` or `'static` (only the
//! futures `f` returns cross to other tasks).

use std::cell::Cell;
use std::rc::Rc;

use flowgate::concurrent::{
    MapConcurrent, MapConcurrentUnordered, ParMap, ParMapUnordered, TryMapConcurrent,
    TryMapConcurrentUnordered, TryParMap, TryParMapUnordered,
};
use flowgate::prelude::*;
use futures::{StreamExt, TryStreamExt};

fn is_send<T: Send>(_: &T) {}
fn is_unpin<T: Unpin>(_: &T) {}

fn upstream() -> impl futures::Stream<Item = u64> + Send + Unpin {
    futures::stream::iter(0..4u64)
}

fn try_upstream() -> impl futures::Stream<Item = Result<u64, String>> + Send + Unpin {
    futures::stream::iter((0..4u64).map(Ok))
}

#[test]
fn every_operator_is_send_and_unpin_when_its_parts_are() {
    // `async` blocks are not `Unpin`; the operators are, all the same.
    let s: MapConcurrent<_, _, _> = upstream().map_concurrent(2, |i| async move { i });
    is_send(&s);
    is_unpin(&s);
    let s = s.with_window(4);
    is_send(&s);
    is_unpin(&s);

    let s: MapConcurrentUnordered<_, _, _> =
        upstream().map_concurrent_unordered(2, |i| async move { i });
    is_send(&s);
    is_unpin(&s);

    let s: ParMap<_, _, _> = upstream().par_map(2, |i| i + 1);
    is_send(&s);
    is_unpin(&s);
    let s = s.with_window(4);
    is_send(&s);
    is_unpin(&s);

    let s: ParMapUnordered<_, _, _> = upstream().par_map_unordered(2, |i| i + 1);
    is_send(&s);
    is_unpin(&s);

    let s: TryMapConcurrent<_, _, _> =
        try_upstream().try_map_concurrent(2, |i| async move { Ok::<u64, String>(i) });
    is_send(&s);
    is_unpin(&s);
    let s = s.with_window(4);
    is_send(&s);
    is_unpin(&s);

    let s: TryMapConcurrentUnordered<_, _, _> =
        try_upstream().try_map_concurrent_unordered(2, |i| async move { Ok::<u64, String>(i) });
    is_send(&s);
    is_unpin(&s);

    let s: TryParMap<_, _, _> = try_upstream().try_par_map(2, |i| Ok(i + 1));
    is_send(&s);
    is_unpin(&s);
    let s = s.with_window(4);
    is_send(&s);
    is_unpin(&s);

    let s: TryParMapUnordered<_, _, _> = try_upstream().try_par_map_unordered(2, |i| Ok(i + 1));
    is_send(&s);
    is_unpin(&s);
}

/// A generator that holds an `Rc` across its yields (so it is not `Send`) and borrows
/// `base` (so it is not `'static`).
fn local_upstream(base: &u64) -> impl futures::Stream<Item = u64> + '_ {
    stream! {
        let held = Rc::new(*base);
        for i in 0..20u64 {
            yield i + *held;
        }
    }
}

#[tokio::test]
async fn the_async_lane_needs_neither_send_nor_static_upstream_or_f() {
    let base = 100u64;
    let calls = Rc::new(Cell::new(0));
    let step = 3u64;
    let step = &step;
    let expected: Vec<u64> = (0..20).map(|i| (i + 100) * 3).collect();

    let f = {
        let calls = Rc::clone(&calls);
        move |i: u64| {
            calls.set(calls.get() + 1);
            let step = *step;
            async move { i * step }
        }
    };
    let out: Vec<u64> = local_upstream(&base)
        .map_concurrent(3, f.clone())
        .collect()
        .await;
    assert_eq!(out, expected);
    let mut out: Vec<u64> = local_upstream(&base)
        .map_concurrent_unordered(3, f.clone())
        .collect()
        .await;
    out.sort();
    assert_eq!(out, expected);

    let try_f = move |i: u64| {
        let next = f(i);
        async move { Ok::<u64, String>(next.await) }
    };
    let out: Vec<u64> = local_upstream(&base)
        .map(Ok::<u64, String>)
        .try_map_concurrent(3, try_f.clone())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(out, expected);
    let mut out: Vec<u64> = local_upstream(&base)
        .map(Ok::<u64, String>)
        .try_map_concurrent_unordered(3, try_f)
        .try_collect()
        .await
        .unwrap();
    out.sort();
    assert_eq!(out, expected);
    assert_eq!(calls.get(), 80);
}

#[tokio::test]
async fn the_blocking_lane_needs_no_send_or_static_upstream() {
    let base = 100u64;
    let expected: Vec<u64> = (0..20).map(|i| (i + 100) * 3).collect();
    let out: Vec<u64> = local_upstream(&base).par_map(3, |i| i * 3).collect().await;
    assert_eq!(out, expected);
    let mut out: Vec<u64> = local_upstream(&base)
        .par_map_unordered(3, |i| i * 3)
        .collect()
        .await;
    out.sort();
    assert_eq!(out, expected);
    let out: Vec<u64> = local_upstream(&base)
        .map(Ok::<u64, String>)
        .try_par_map(3, |i| Ok(i * 3))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(out, expected);
    let mut out: Vec<u64> = local_upstream(&base)
        .map(Ok::<u64, String>)
        .try_par_map_unordered(3, |i| Ok(i * 3))
        .try_collect()
        .await
        .unwrap();
    out.sort();
    assert_eq!(out, expected);
}
