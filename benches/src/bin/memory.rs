//! Peak memory of one case per process: an empty runtime, a lazy pipeline, or the same
//! work with the whole input collected first (the `Pool.map` way).
//!
//! ```text
//! memory empty
//! memory pipeline 2000000
//! memory collect 2000000
//! ```
//!
//! Every case runs on a tokio multi-thread runtime with 2 workers and prints the
//! process's peak resident set (`VmHWM` from `/proc/self/status`) at the end. Run each
//! case in a fresh process (`benches/run_memory.sh` does) and compare with `empty`.

use std::time::Instant;

use flowgate::prelude::*;
use futures::{Stream, StreamExt};

/// A 64-byte record.
type Record = [u64; 8];

/// Records per chunk.
const CHUNK: usize = 1024;
/// Chunks processed at once.
const LIMIT: usize = 8;

/// Record `i`, derived from its index alone (splitmix64 of each field's seed).
fn record(i: u64) -> Record {
    let mut out = [0u64; 8];
    for (k, field) in out.iter_mut().enumerate() {
        let mut z = i
            .wrapping_mul(8)
            .wrapping_add(k as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        *field = z ^ (z >> 31);
    }
    out
}

/// `n` records, each produced when it is pulled.
fn records(n: u64) -> impl Stream<Item = Record> {
    stream! {
        for i in 0..n {
            yield record(i);
        }
    }
}

/// An order-independent checksum of a chunk.
fn checksum(chunk: &[Record]) -> u64 {
    chunk.iter().fold(0u64, |acc, r| {
        let mixed = r
            .iter()
            .enumerate()
            .fold(0u64, |h, (k, v)| h ^ v.rotate_left(k as u32 * 8));
        acc.wrapping_add(mixed)
    })
}

/// Chunks the records, checksums the chunks concurrently, sums the checksums.
async fn process<S: Stream<Item = Record>>(input: S) -> (u64, u64) {
    input
        .chunks(CHUNK)
        .map_concurrent_unordered(LIMIT, |chunk: Vec<Record>| async move {
            (chunk.len() as u64, checksum(&chunk))
        })
        .fold((0u64, 0u64), |(count, sum), (n, c)| async move {
            (count + n, sum.wrapping_add(c))
        })
        .await
}

/// Peak resident set of this process in KiB (`VmHWM`), if the platform reports it.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn usage() -> ! {
    eprintln!("usage: memory empty | memory pipeline N | memory collect N");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let case = args.first().map(String::as_str).unwrap_or_else(|| usage());
    let n: u64 = match (case, args.get(1)) {
        ("empty", None) => 0,
        ("pipeline" | "collect", Some(n)) => n.replace('_', "").parse().unwrap_or_else(|_| usage()),
        _ => usage(),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");

    let started = Instant::now();
    let outcome = runtime.block_on(async move {
        match case {
            "pipeline" => Some(process(records(n)).await),
            "collect" => {
                // Everything in memory first, as `Pool.map(f, generator)` does.
                let all: Vec<Record> = records(n).collect().await;
                Some(process(flowgate::source::iter(all)).await)
            }
            _ => None,
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    drop(runtime);

    match outcome {
        Some((count, sum)) => {
            assert_eq!(count, n, "every record is processed once");
            println!(
                "case: {case} {n}  records: {count}  checksum: {sum:016x}  time: {elapsed:.2} s"
            );
        }
        None => println!("case: {case}"),
    }
    match peak_rss_kib() {
        Some(kib) => println!("peak_rss_kib: {kib}  ({:.2} MiB)", kib as f64 / 1024.0),
        None => println!("peak_rss_kib: unavailable"),
    }
}
