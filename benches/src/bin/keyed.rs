//! Throughput of keyed concurrency beside its peers, in one run, interleaved rounds.
//!
//! ```text
//! keyed [--items N] [--rounds R] [--workers W] [--limit L] [--window W] [--wait-us U]
//! ```
//!
//! For 1, 16 and 10,000 keys, uniform and Zipf-skewed: flowgate's
//! `map_concurrent_by_key` (ordered) and `_unordered`, the hand-rolled per-key task with a
//! bounded channel and a semaphore, and `map_concurrent(1)` (serial). Each job awaits
//! once (a yield) and adds. Prints items per second, the median of the rounds, and the

use std::sync::Arc;
use std::time::Instant;

use flowgate_benches::keyed::{
    expected, flowgate_by_key, hand_rolled, keys, serial, set_wait_us, Spread,
};
use flowgate_benches::multi_thread_runtime;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.replace('_', "").parse().expect("a whole number"))
        .unwrap_or(default)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let items = arg("--items", 200_000);
    let rounds = arg("--rounds", 5) as usize;
    let workers = arg("--workers", 2) as usize;
    let limit = arg("--limit", 16) as usize;
    let window = (arg("--window", limit as u64) as usize).max(limit);
    set_wait_us(arg("--wait-us", 0));
    let runtime = multi_thread_runtime(workers);
    println!(
        "{items} items, limit {limit}, window {window}, {workers} workers, jobs wait {} us, \
         median of {rounds} interleaved rounds (items/s)",
        arg("--wait-us", 0)
    );
    println!(
        "{:<8} {:<8} {:>14} {:>14} {:>14} {:>14}",
        "keys", "spread", "by_key", "by_key_unord", "hand-rolled", "serial"
    );
    for key_count in [1u32, 16, 10_000] {
        for spread in [Spread::Uniform, Spread::Zipf] {
            if key_count == 1 && spread == Spread::Zipf {
                continue;
            }
            let keys = Arc::new(keys(items, key_count, spread));
            let want = expected(&keys);
            let mut rates: [Vec<f64>; 4] = Default::default();
            for _ in 0..rounds {
                for (variant, rate) in rates.iter_mut().enumerate() {
                    let keys = Arc::clone(&keys);
                    let start = Instant::now();
                    let sum = runtime.block_on(async move {
                        tokio::spawn(async move {
                            match variant {
                                0 => flowgate_by_key(keys, limit, window, true).await,
                                1 => flowgate_by_key(keys, limit, window, false).await,
                                2 => hand_rolled(keys, limit).await,
                                _ => serial(keys).await,
                            }
                        })
                        .await
                        .expect("the run does not panic")
                    });
                    let secs = start.elapsed().as_secs_f64();
                    assert_eq!(sum, want, "variant {variant} lost or changed items");
                    rate.push(items as f64 / secs);
                }
            }
            let [a, b, c, d] = rates.map(median);
            println!(
                "{:<8} {:<8} {:>14.0} {:>14.0} {:>14.0} {:>14.0}",
                key_count,
                spread.name(),
                a,
                b,
                c,
                d
            );
        }
    }
}
