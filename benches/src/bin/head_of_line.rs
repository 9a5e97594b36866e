//! Head-of-line blocking in real time: a rare slow item among fast ones.
//!
//! ```text
//! head_of_line            # 3 rounds of 20,000 items
//! head_of_line 5          # 5 rounds
//! head_of_line 1 --items 2000
//! ```
//!
//! Every hundredth item sleeps 50 ms, the others 1 ms (`tokio::time::sleep`), 64 at a
//! time, on a multi-thread runtime with 2 workers. Each round runs every variant once,
//! in turn, so that a busy machine slows them all alike. For each variant the program
//! prints the wall time (median and min over the rounds), its ratio to futures'
//! `buffer_unordered`, and the largest number of items that were pulled from the source
//! and not yet received by the consumer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowgate::prelude::*;
use futures::{Stream, StreamExt};

const LIMIT: usize = 64;
const WINDOW: usize = 2048;
const SLOW_EVERY: u64 = 100;
const SLOW: Duration = Duration::from_millis(50);
const FAST: Duration = Duration::from_millis(1);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    BufferUnordered,
    Buffered,
    MapConcurrent,
    MapConcurrentWindow,
    MapConcurrentUnordered,
}

impl Variant {
    const ALL: [Variant; 5] = [
        Variant::BufferUnordered,
        Variant::Buffered,
        Variant::MapConcurrent,
        Variant::MapConcurrentWindow,
        Variant::MapConcurrentUnordered,
    ];

    fn name(self) -> String {
        match self {
            Variant::BufferUnordered => format!("futures buffer_unordered({LIMIT})"),
            Variant::Buffered => format!("futures buffered({LIMIT})"),
            Variant::MapConcurrent => format!("map_concurrent({LIMIT})"),
            Variant::MapConcurrentWindow => {
                format!("map_concurrent({LIMIT}).with_window({WINDOW})")
            }
            Variant::MapConcurrentUnordered => format!("map_concurrent_unordered({LIMIT})"),
        }
    }

    fn ordered(self) -> bool {
        matches!(
            self,
            Variant::Buffered | Variant::MapConcurrent | Variant::MapConcurrentWindow
        )
    }
}

/// Pulls counted at the source and receipts counted at the consumer.
#[derive(Default)]
struct Counters {
    pulled: AtomicU64,
    received: AtomicU64,
    max_held: AtomicU64,
}

/// Items `0..n`, counting each pull and the number of items held past the source.
fn source(n: u64, counters: Arc<Counters>) -> impl Stream<Item = u64> {
    stream! {
        for i in 0..n {
            let pulled = counters.pulled.fetch_add(1, Ordering::SeqCst) + 1;
            let held = pulled - counters.received.load(Ordering::SeqCst);
            counters.max_held.fetch_max(held, Ordering::SeqCst);
            yield i;
        }
    }
}

/// The job: sleeps 50 ms for every hundredth item, 1 ms for the others.
async fn job(i: u64) -> u64 {
    let pause = if i.is_multiple_of(SLOW_EVERY) {
        SLOW
    } else {
        FAST
    };
    tokio::time::sleep(pause).await;
    i
}

/// Drains `results`, counting each receipt, and checks that every item came back once
/// (and in input order when `ordered`).
async fn consume<S: Stream<Item = u64>>(results: S, n: u64, counters: &Counters, ordered: bool) {
    let mut results = std::pin::pin!(results);
    let mut seen = vec![false; n as usize];
    let mut next = 0u64;
    while let Some(i) = results.next().await {
        counters.received.fetch_add(1, Ordering::SeqCst);
        if ordered {
            assert_eq!(i, next, "results out of input order");
        }
        next += 1;
        assert!(
            !std::mem::replace(&mut seen[i as usize], true),
            "item {i} twice"
        );
    }
    assert_eq!(next, n, "every item comes back");
}

/// One run of one variant: wall time and the largest number of items held.
async fn run(variant: Variant, n: u64) -> (Duration, u64) {
    let counters = Arc::new(Counters::default());
    let input = source(n, Arc::clone(&counters));
    let ordered = variant.ordered();
    let started = Instant::now();
    match variant {
        Variant::BufferUnordered => {
            consume(
                input.map(job).buffer_unordered(LIMIT),
                n,
                &counters,
                ordered,
            )
            .await
        }
        Variant::Buffered => consume(input.map(job).buffered(LIMIT), n, &counters, ordered).await,
        Variant::MapConcurrent => {
            consume(input.map_concurrent(LIMIT, job), n, &counters, ordered).await
        }
        Variant::MapConcurrentWindow => {
            let results = input.map_concurrent(LIMIT, job).with_window(WINDOW);
            consume(results, n, &counters, ordered).await
        }
        Variant::MapConcurrentUnordered => {
            consume(
                input.map_concurrent_unordered(LIMIT, job),
                n,
                &counters,
                ordered,
            )
            .await
        }
    }
    let elapsed = started.elapsed();
    (elapsed, counters.max_held.load(Ordering::SeqCst))
}

fn median(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

fn usage() -> ! {
    eprintln!("usage: head_of_line [ROUNDS] [--items N]");
    std::process::exit(2)
}

fn main() {
    let mut rounds = 3usize;
    let mut items = 20_000u64;
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--items" => {
                let value = argv.next().unwrap_or_else(|| usage());
                items = value.replace('_', "").parse().unwrap_or_else(|_| usage());
            }
            value => rounds = value.parse().unwrap_or_else(|_| usage()),
        }
    }
    if rounds == 0 || items == 0 {
        usage();
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");

    println!(
        "{items} items, 1 in {SLOW_EVERY} sleeps {} ms and the others {} ms, {LIMIT} at a time, \
         multi_thread runtime with 2 workers, {rounds} round(s)",
        SLOW.as_millis(),
        FAST.as_millis()
    );
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); Variant::ALL.len()];
    let mut held = vec![0u64; Variant::ALL.len()];
    for round in 1..=rounds {
        for (v, variant) in Variant::ALL.into_iter().enumerate() {
            let (elapsed, max_held) = runtime.block_on(run(variant, items));
            println!(
                "round {round}  {:<45} {:>8.3} s  max held {max_held}",
                variant.name(),
                elapsed.as_secs_f64()
            );
            times[v].push(elapsed.as_secs_f64());
            held[v] = held[v].max(max_held);
        }
    }

    for t in &mut times {
        t.sort_by(f64::total_cmp);
    }
    let base_median = median(&times[0]);
    let base_min = times[0][0];
    println!();
    println!(
        "{:<45} {:>9} {:>9} {:>11} {:>9} {:>9}",
        "variant", "median s", "min s", "x buf_unord", "x (min)", "max held"
    );
    for (v, variant) in Variant::ALL.into_iter().enumerate() {
        let med = median(&times[v]);
        let min = times[v][0];
        println!(
            "{:<45} {:>9.3} {:>9.3} {:>11.2} {:>9.2} {:>9}",
            variant.name(),
            med,
            min,
            med / base_median,
            min / base_min,
            held[v]
        );
    }

    let window = Variant::ALL
        .iter()
        .position(|v| *v == Variant::MapConcurrentWindow)
        .expect("listed");
    let plain = Variant::ALL
        .iter()
        .position(|v| *v == Variant::MapConcurrent)
        .expect("listed");
    let buffered = Variant::ALL
        .iter()
        .position(|v| *v == Variant::Buffered)
        .expect("listed");
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!();
    println!(
        "with_window({WINDOW}) within 1.25x of buffer_unordered (median): {:.2}x, {}",
        median(&times[window]) / base_median,
        verdict(median(&times[window]) <= 1.25 * base_median)
    );
    println!(
        "with_window({WINDOW}) never holds more than {WINDOW}: max {}, {}",
        held[window],
        verdict(held[window] <= WINDOW as u64)
    );
    // Both wait out the same slow heads, so equal times differ only by noise.
    let plain_ratio = median(&times[plain]) / median(&times[buffered]);
    println!(
        "map_concurrent({LIMIT}) no slower than buffered({LIMIT}) (median, 2% noise allowed): \
         {plain_ratio:.3}x buffered, {}",
        verdict(plain_ratio <= 1.02)
    );
}
