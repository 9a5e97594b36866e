//! Keyed concurrency and its peers: flowgate's `map_concurrent_by_key` (both forms), the
//! hand-rolled per-key task with a bounded channel that applications write today, and
//! `map_concurrent` with limit 1 (everything serial: what per-key order costs without
//! keys).

use std::collections::HashMap;
use std::sync::Arc;

use flowgate::prelude::*;
use futures::StreamExt;
use tokio::sync::{mpsc, Semaphore};

/// How keys are spread over the items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// Every key equally likely.
    Uniform,
    /// Zipf-like: key `k` (from 1) about `1/k` as likely as key 1 (log-uniform ranks).
    Zipf,
}

impl Spread {
    pub fn name(self) -> &'static str {
        match self {
            Spread::Uniform => "uniform",
            Spread::Zipf => "zipf",
        }
    }
}

/// `n` keys for `keys` distinct keys, deterministic.
pub fn keys(n: u64, keys: u32, spread: Spread) -> Vec<u32> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let ln = f64::from(keys).ln();
    (0..n)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            match spread {
                Spread::Uniform => (r % u64::from(keys)) as u32,
                Spread::Zipf => {
                    let unit = (r >> 11) as f64 / (1u64 << 53) as f64;
                    ((unit * ln).exp() as u32).saturating_sub(1).min(keys - 1)
                }
            }
        })
        .collect()
}

/// How long a job waits: `0` yields once (an I/O call ready at once), otherwise it
/// sleeps that many microseconds on tokio's timer (1 ms resolution).
static WAIT_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sets how long every job waits (see [`WAIT_US`]).
pub fn set_wait_us(us: u64) {
    WAIT_US.store(us, std::sync::atomic::Ordering::Relaxed);
}

/// The job: one wait and a trivial computation.
async fn job(key: u32, x: u64) -> u64 {
    match WAIT_US.load(std::sync::atomic::Ordering::Relaxed) {
        0 => tokio::task::yield_now().await,
        us => tokio::time::sleep(std::time::Duration::from_micros(us)).await,
    }
    x.wrapping_add(u64::from(key))
}

/// flowgate's keyed operator over `keys`, with `window` (at least `limit`): the sum of
/// the results.
pub async fn flowgate_by_key(
    keys: Arc<Vec<u32>>,
    limit: usize,
    window: usize,
    ordered: bool,
) -> u64 {
    let items = flowgate::source::iter((0..keys.len()).map(move |i| (keys[i], i as u64)));
    let key = |(key, _): &(u32, u64)| *key;
    let work = |(key, x): (u32, u64)| job(key, x);
    if ordered {
        items
            .map_concurrent_by_key(limit, key, work)
            .with_window(window)
            .fold(0u64, |sum, y| async move { sum.wrapping_add(y) })
            .await
    } else {
        items
            .map_concurrent_by_key_unordered(limit, key, work)
            .with_window(window)
            .fold(0u64, |sum, y| async move { sum.wrapping_add(y) })
            .await
    }
}

/// The hand-rolled version: a task per key fed by a bounded channel (16 items), created
/// when the key is first seen and kept to the end, at most `limit` jobs at once across
/// keys (a semaphore), results through one channel, in no particular order.
pub async fn hand_rolled(keys: Arc<Vec<u32>>, limit: usize) -> u64 {
    let permits = Arc::new(Semaphore::new(limit));
    let (results, mut out) = mpsc::channel::<u64>(1024);
    let producer = async move {
        let mut queues: HashMap<u32, mpsc::Sender<u64>> = HashMap::new();
        for (i, &key) in keys.iter().enumerate() {
            let queue = queues.entry(key).or_insert_with(|| {
                let (tx, mut rx) = mpsc::channel::<u64>(16);
                let results = results.clone();
                let permits = Arc::clone(&permits);
                tokio::spawn(async move {
                    while let Some(x) = rx.recv().await {
                        let permit = permits.acquire().await.expect("never closed");
                        let y = job(key, x).await;
                        drop(permit);
                        if results.send(y).await.is_err() {
                            return;
                        }
                    }
                });
                tx
            });
            queue.send(i as u64).await.expect("the key's task runs");
        }
    };
    let consumer = async move {
        let mut sum = 0u64;
        while let Some(y) = out.recv().await {
            sum = sum.wrapping_add(y);
        }
        sum
    };
    let ((), sum) = tokio::join!(producer, consumer);
    sum
}

/// Everything one at a time: `map_concurrent(1)`.
pub async fn serial(keys: Arc<Vec<u32>>) -> u64 {
    flowgate::source::iter((0..keys.len()).map(move |i| (keys[i], i as u64)))
        .map_concurrent(1, |(key, x)| job(key, x))
        .fold(0u64, |sum, y| async move { sum.wrapping_add(y) })
        .await
}

/// The sum every variant must give.
pub fn expected(keys: &[u32]) -> u64 {
    keys.iter().enumerate().fold(0u64, |sum, (i, &key)| {
        sum.wrapping_add((i as u64).wrapping_add(u64::from(key)))
    })
}

/// The per-item workload of `per_item_instructions`: `x + 1` over `0..n`, keyed by
/// `x % keys`, summed (the same sum as the other async workloads).
pub async fn by_key_trivial(n: u64, limit: usize, keys: u64, ordered: bool) -> u64 {
    let items = flowgate::source::iter(0..n);
    let key = move |x: &u64| x % keys;
    let work = |x: u64| async move { x + 1 };
    if ordered {
        items
            .map_concurrent_by_key(limit, key, work)
            .fold(0u64, |sum, y| async move { sum.wrapping_add(y) })
            .await
    } else {
        items
            .map_concurrent_by_key_unordered(limit, key, work)
            .fold(0u64, |sum, y| async move { sum.wrapping_add(y) })
            .await
    }
}
