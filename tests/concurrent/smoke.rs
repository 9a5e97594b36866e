use std::time::Duration;

use flowgate::prelude::*;
use futures::StreamExt;

#[tokio::test(start_paused = true)]
async fn ordered_and_unordered_basic() {
    let out: Vec<u64> = futures::stream::iter(0..1000u64)
        .map_concurrent(8, |i| async move {
            tokio::time::sleep(Duration::from_millis(1000 - i)).await;
            i * 2
        })
        .collect()
        .await;
    assert_eq!(out, (0..1000).map(|i| i * 2).collect::<Vec<_>>());
    let mut out: Vec<u64> = futures::stream::iter(0..1000u64)
        .map_concurrent_unordered(8, |i| async move { i * 2 })
        .collect()
        .await;
    out.sort();
    assert_eq!(out, (0..1000).map(|i| i * 2).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_basic() {
    for limit in [1, 2, 8, 64] {
        let out: Vec<u64> = futures::stream::iter(0..20000u64)
            .map_concurrent(limit, |i| async move {
                tokio::task::yield_now().await;
                i
            })
            .collect()
            .await;
        assert_eq!(out, (0..20000).collect::<Vec<_>>());
        let out: Vec<u64> = futures::stream::iter(0..2000u64)
            .par_map(limit, |i| i + 1)
            .collect()
            .await;
        assert_eq!(out, (1..2001).collect::<Vec<_>>());
        let mut out: Vec<u64> = futures::stream::iter(0..2000u64)
            .par_map_unordered(limit, |i| i + 1)
            .collect()
            .await;
        out.sort();
        assert_eq!(out, (1..2001).collect::<Vec<_>>());
    }
}
