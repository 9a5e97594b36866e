//! Slow jobs behind a consumer that takes time with each result, in real time.
//!
//! ```text
//! slow_consumer                                   # 1 ms jobs, 100 us per result, limit 8
//! slow_consumer --job-ms 10 --consume-us 1000 --items 1000
//! slow_consumer --limit 64 --consume-us 20 --rounds 5
//! ```
//!
//! Each job sleeps `--job-ms` (`tokio::time::sleep`); the consumer spins `--consume-us`
//! of real time on every result it receives, as a downstream write would take. Neither
//! side alone is much faster than the other, so the pipeline's throughput depends on
//! how quickly a place freed by a result is filled again: a consumer that waits for
//! several free places before it pulls leaves jobs idle while it works. Runs on a
//! `multi_thread` runtime with 2 workers; every round runs every variant once, in turn.
//! Prints the wall time per variant (median and min over the rounds) and its ratio to
//! futures' `buffer_unordered` with the same limit.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use flowgate::prelude::*;
use futures::{Stream, StreamExt};

use flowgate_benches::{expected_sum, in_task, multi_thread_runtime, number};

const USAGE: &str = "usage: slow_consumer [--items N] [--limit N] [--job-ms N] \
    [--consume-us N] [--rounds N]";

#[derive(Clone, Copy)]
enum Variant {
    BufferUnordered,
    Buffered,
    MapConcurrentUnordered,
    MapConcurrent,
}

impl Variant {
    const ALL: [Variant; 4] = [
        Variant::BufferUnordered,
        Variant::Buffered,
        Variant::MapConcurrentUnordered,
        Variant::MapConcurrent,
    ];

    fn name(self, limit: usize) -> String {
        match self {
            Variant::BufferUnordered => format!("futures buffer_unordered({limit})"),
            Variant::Buffered => format!("futures buffered({limit})"),
            Variant::MapConcurrentUnordered => format!("map_concurrent_unordered({limit})"),
            Variant::MapConcurrent => format!("map_concurrent({limit})"),
        }
    }
}

/// Spins for `length` of real time: the consumer's own work on a result.
fn consume(length: Duration) {
    let until = Instant::now() + length;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

async fn drain(results: impl Stream<Item = u64>, consume_for: Duration) -> u64 {
    let mut results = std::pin::pin!(results);
    let mut sum = 0;
    while let Some(x) = results.next().await {
        consume(consume_for);
        sum += x;
    }
    sum
}

async fn run(
    variant: Variant,
    items: u64,
    limit: usize,
    job: Duration,
    consume_for: Duration,
) -> u64 {
    let work = move |x: u64| async move {
        tokio::time::sleep(job).await;
        x + 1
    };
    let source = futures::stream::iter(0..items);
    match variant {
        Variant::BufferUnordered => {
            drain(source.map(work).buffer_unordered(limit), consume_for).await
        }
        Variant::Buffered => drain(source.map(work).buffered(limit), consume_for).await,
        Variant::MapConcurrentUnordered => {
            drain(source.map_concurrent_unordered(limit, work), consume_for).await
        }
        Variant::MapConcurrent => drain(source.map_concurrent(limit, work), consume_for).await,
    }
}

fn main() -> ExitCode {
    let mut items = 4_000u64;
    let mut limit = 8usize;
    let mut job_ms = 1u64;
    let mut consume_us = 100u64;
    let mut rounds = 3usize;
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        let parsed = match arg.as_str() {
            "--items" => number(argv.next()).map(|n| items = n),
            "--limit" => number(argv.next()).map(|n| limit = n as usize),
            "--job-ms" => number(argv.next()).map(|n| job_ms = n),
            "--consume-us" => number(argv.next()).map(|n| consume_us = n),
            "--rounds" => number(argv.next()).map(|n| rounds = n as usize),
            _ => None,
        };
        if parsed.is_none() {
            eprintln!("bad argument {arg:?} (or its value)\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let job = Duration::from_millis(job_ms);
    let consume_for = Duration::from_micros(consume_us);

    let runtime = multi_thread_runtime(2);
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); Variant::ALL.len()];
    for round in 0..rounds {
        for k in (0..Variant::ALL.len()).map(|i| (i + round) % Variant::ALL.len()) {
            let variant = Variant::ALL[k];
            let started = Instant::now();
            let sum = runtime.block_on(in_task(run(variant, items, limit, job, consume_for)));
            let seconds = started.elapsed().as_secs_f64();
            assert_eq!(
                sum,
                expected_sum(items),
                "{} lost items",
                variant.name(limit)
            );
            println!(
                "round {}  {:<40} {seconds:8.3} s",
                round + 1,
                variant.name(limit)
            );
            times[k].push(seconds);
        }
    }
    for t in &mut times {
        t.sort_by(f64::total_cmp);
    }
    let base = times[0][times[0].len() / 2];
    println!(
        "\n{items} items, jobs of {job_ms} ms, {consume_us} us per result, limit {limit}, \
         multi_thread (2 workers), {rounds} rounds"
    );
    println!(
        "{:<40} {:>9} {:>9} {:>11}",
        "variant", "median s", "min s", "x buf_unord"
    );
    for (variant, t) in Variant::ALL.iter().zip(&times) {
        let median = t[t.len() / 2];
        println!(
            "{:<40} {median:9.3} {:9.3} {:11.2}",
            variant.name(limit),
            t[0],
            median / base
        );
    }
    ExitCode::SUCCESS
}
