//! A job against a flaky service: retries, timeouts, dead letters and a graceful
//! shutdown, with every item accounted for.
//!
//! ```text
//! cargo run --release --example resilient                      # 5,000 items; Ctrl-C stops it gracefully
//! cargo run --release --example resilient -- --items 2000 --stop-after-ms 300
//! ```
//!
//! The simulated service (seeded, so every run is the same) answers most calls within
//! 20 ms, fails some transiently (busy), fails a few for good (not found), and hangs on
//! a few first calls. The pipeline calls it for up to 32 items at once (512 held, in
//! input order, so that items waiting for a retry do not stall the others), gives each
//! attempt 100 ms, retries busy answers and hangs with exponential backoff and seeded
//! jitter, sends the items that fail for good to a dead-letter channel, and on Ctrl-C
//! (or after `--stop-after-ms`) stops pulling, lets the calls in flight finish within
//! half a second and reports the positions to resume from. At the end it checks that
//! every item is a success, a dead letter or a position to resume, exactly once.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowgate::policy::{CancellationToken, DeadLetter};
use flowgate::prelude::*;
use flowgate::{Backoff, Cause, Retry};
use futures::StreamExt;
use tokio_util::sync::PollSender;

const CALLS_IN_FLIGHT: usize = 32;
const SEED: u64 = 2026;

#[derive(Clone, Debug, PartialEq, Eq)]
enum ServiceError {
    Busy,
    NotFound(u64),
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::Busy => f.write_str("service busy"),
            ServiceError::NotFound(id) => write!(f, "record {id} not found"),
        }
    }
}

impl std::error::Error for ServiceError {}

/// A number from `id` and the seed, the same on every run.
fn mix(id: u64, salt: u64) -> u64 {
    let mut x = id ^ SEED.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt;
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    x
}

/// The flaky service: what a call for `id` does at its `attempt`-th try.
async fn call(id: u64, attempt: u32) -> Result<u64, ServiceError> {
    let kind = mix(id, 1) % 100;
    let latency = Duration::from_millis(1 + mix(id, 2) % 20);
    match kind {
        0..=3 if attempt == 1 => {
            // Hangs: only the timeout ends this attempt.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            unreachable!("the attempt timed out")
        }
        4..=5 => Err(ServiceError::NotFound(id)),
        6..=15 if attempt <= 2 => {
            tokio::time::sleep(latency / 2).await;
            Err(ServiceError::Busy)
        }
        _ => {
            tokio::time::sleep(latency).await;
            Ok(id * 10)
        }
    }
}

struct Args {
    items: u64,
    stop_after: Option<Duration>,
}

fn args() -> Args {
    let mut args = Args {
        items: 5_000,
        stop_after: None,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given
            .next()
            .unwrap_or_else(|| panic!("`{flag}` needs a value"));
        let number: u64 = value
            .parse()
            .unwrap_or_else(|_| panic!("`{flag}` needs a number, got `{value}`"));
        match flag.as_str() {
            "--items" => args.items = number,
            "--stop-after-ms" => args.stop_after = Some(Duration::from_millis(number)),
            other => panic!("unknown flag `{other}` (known: --items N, --stop-after-ms T)"),
        }
    }
    args
}

#[tokio::main]
async fn main() {
    let args = args();
    let token = CancellationToken::new();
    let stopper = token.clone();
    tokio::spawn(async move {
        match args.stop_after {
            Some(after) => tokio::time::sleep(after).await,
            None => {
                if tokio::signal::ctrl_c().await.is_err() {
                    return;
                }
            }
        }
        eprintln!("stopping: no new calls, 500 ms for the calls in flight");
        stopper.cancel();
    });

    // Attempts per item, to show the retries (the service itself keeps no state).
    let attempts: Arc<Vec<AtomicU32>> =
        Arc::new((0..args.items).map(|_| AtomicU32::new(0)).collect());
    let counted = Arc::clone(&attempts);

    let (letters, mut dead) = tokio::sync::mpsc::channel::<DeadLetter<u64, ServiceError>>(64);
    let dead_letter_reader = tokio::spawn(async move {
        let mut by_cause = BTreeMap::new();
        let mut positions = Vec::new();
        while let Some(letter) = dead.recv().await {
            let cause = match letter.error.cause() {
                Cause::Failed(ServiceError::NotFound(_)) => "not found",
                Cause::Failed(ServiceError::Busy) => "still busy at the last attempt",
                Cause::TimedOut { .. } => "timed out at the last attempt",
                Cause::Panicked { .. } => "panicked",
                _ => "other",
            };
            *by_cause.entry(cause).or_insert(0u64) += 1;
            positions.push(letter.error.position());
        }
        (by_cause, positions)
    });

    let started = Instant::now();
    let flow = flowgate::source::iter((0..args.items).map(Ok::<u64, ServiceError>))
        .try_map_concurrent(CALLS_IN_FLIGHT, move |id| {
            let attempt = counted[id as usize].fetch_add(1, Ordering::Relaxed) + 1;
            call(id, attempt)
        })
        .with_timeout(Duration::from_millis(100))
        .with_retry(
            Retry::attempts(4)
                .backoff(Backoff::exponential(
                    Duration::from_millis(10),
                    Duration::from_millis(200),
                ))
                .jitter(SEED)
                .retry_if(|error: &ServiceError| *error == ServiceError::Busy),
        )
        // Items waiting out a backoff hold their places: a wider window keeps 32 calls
        // going behind them, in input order, with at most 512 items held.
        .with_window(512)
        .with_shutdown(token.clone(), Duration::from_millis(500));
    let report = flow.shutdown_report();
    let flow = flow.dead_letters(PollSender::new(letters));
    let summary = flow.summary();

    let mut flow = Box::pin(flow);
    let mut succeeded = Vec::new();
    while let Some(result) = flow.next().await {
        match result {
            Ok(value) => succeeded.push(value / 10),
            Err(error) => {
                eprintln!("the dead-letter channel failed: {error}");
                std::process::exit(1);
            }
        }
    }
    let elapsed = started.elapsed();
    // The stream holds the dead-letter sender: dropping it ends the reader.
    drop(flow);
    let (by_cause, failed) = dead_letter_reader.await.expect("the reader ran");
    let summary = summary.get().expect("the run ended");

    println!(
        "{} items in {:.2} s: {summary}",
        args.items,
        elapsed.as_secs_f64()
    );
    for (cause, count) in &by_cause {
        println!("  dead letters, {cause}: {count}");
    }
    let retried_items = attempts
        .iter()
        .filter(|a| a.load(Ordering::Relaxed) > 1)
        .count();
    println!("  items that needed more than one attempt: {retried_items}");

    let not_completed = report.get();
    match &not_completed {
        Some(left) => println!(
            "shut down: resume from position {} (and re-run {} cancelled: {:?})",
            left.first_not_pulled(),
            left.cancelled().len(),
            left.cancelled()
        ),
        None => println!("ran to the end: nothing to resume"),
    }

    // Every item exactly once: a success, a dead letter, or a position to resume.
    let mut ends = vec![0u8; args.items as usize];
    for id in succeeded.iter().chain(&failed) {
        ends[*id as usize] += 1;
    }
    if let Some(left) = &not_completed {
        for id in 0..args.items {
            if left.contains(id) {
                ends[id as usize] += 1;
            }
        }
    }
    let wrong: Vec<usize> = (0..ends.len()).filter(|i| ends[*i] != 1).collect();
    if !wrong.is_empty() {
        eprintln!(
            "accounting failed for {} items, the first: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(10)]
        );
        std::process::exit(1);
    }
    println!("accounted for: every item once");
}
