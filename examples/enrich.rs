//! An async job: enrich records by batches with a remote service, in input order.
//!
//! ```text
//! cargo run --example enrich
//! ```
//!
//! Records arrive from a generator at an uneven pace. `chunks_within` cuts them into
//! batches of up to 50 records, or whatever came within 20 ms; each batch is sent to a
//! simulated remote service whose latency varies, at most 4 calls at a time, with
//! `map_concurrent`. The batches come back in input order even though the calls finish
//! out of order, and never more than 4 batches are held between the generator and the
//! printer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowgate::prelude::*;
use futures::StreamExt;

const RECORDS: u64 = 1_000;
const CALLS_IN_FLIGHT: usize = 4;

#[derive(Debug)]
struct Record {
    id: u64,
    user: String,
}

#[derive(Debug)]
struct Enriched {
    id: u64,
    user: String,
    score: u64,
}

/// A simulated remote call: 10 to 80 ms, depending on the batch.
async fn enrich_batch(batch_no: u64, batch: Vec<Record>) -> Vec<Enriched> {
    let latency = 10 + (batch_no * 37) % 71;
    tokio::time::sleep(Duration::from_millis(latency)).await;
    batch
        .into_iter()
        .map(|record| Enriched {
            score: record.id * 7 % 100,
            id: record.id,
            user: record.user,
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&pulled);
    let records = stream! {
        for id in 0..RECORDS {
            if id % 100 == 99 {
                // a lull: the batch in progress is flushed by its deadline
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            counter.fetch_add(1, Ordering::Relaxed);
            yield Record { id, user: format!("user-{}", id % 17) };
        }
    };

    let started = Instant::now();
    let mut batch_no = 0u64;
    let mut enriched = std::pin::pin!(records
        .chunks_within(50, Duration::from_millis(20))
        .map(|batch| {
            batch_no += 1;
            (batch_no, batch)
        })
        .map_concurrent(CALLS_IN_FLIGHT, |(batch_no, batch)| enrich_batch(
            batch_no, batch
        )));

    let mut next_id = 0;
    let mut batches = 0;
    let mut max_waiting = 0;
    while let Some(batch) = enriched.next().await {
        for record in &batch {
            assert_eq!(record.id, next_id, "records come back in input order");
            next_id += 1;
        }
        batches += 1;
        // records pulled from the generator but not yet printed: at most 4 batches
        let waiting = pulled.load(Ordering::Relaxed) as u64 - next_id;
        max_waiting = max_waiting.max(waiting);
        if let (Some(first), Some(last)) = (batch.first(), batch.last()) {
            println!(
                "batch {batches:>3}: records {:>4}..={:<4} ({:>2} records, first {} score {})",
                first.id,
                last.id,
                batch.len(),
                first.user,
                first.score
            );
        }
    }
    println!(
        "{next_id} records in {batches} batches, in input order, in {:.2} s; \
         at most {max_waiting} records were held between the generator and this loop \
         ({CALLS_IN_FLIGHT} batches of at most 50)",
        started.elapsed().as_secs_f64()
    );
}
