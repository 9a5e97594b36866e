//! The ordered window as a scheduling ratio, in virtual time (exact on the paused clock):
//! with rare slow items, a wide window keeps `limit` jobs busy and finishes about as soon
//! as the unordered operator, while the default window (= `limit`) stalls behind each slow
//! head, as futures' `buffered` does, and is never slower than `buffered`.

use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use crate::support::*;

const N: u64 = 400;
const LIMIT: usize = 8;

/// Every 50th item takes 50 ms, the others 1 ms.
fn rare_slow_items(i: u64) -> Step {
    Step {
        sleep: Duration::from_millis(if i % 50 == 0 { 50 } else { 1 }),
        ..Step::default()
    }
}

/// The virtual time `op` takes over the workload, after checking its output.
async fn time_of(op: Op, window: Option<usize>) -> Duration {
    let probe = Probe::new();
    let work = Work::new(&probe).plan(rare_slow_items);
    let start = Instant::now();
    let mut flow = build(op, LIMIT, window, source(oks(N), &probe), work);
    let out = drain(&mut flow, &probe).await;
    let elapsed = start.elapsed();
    if op.is_ordered() {
        assert_eq!(out, sequential(&oks(N)));
    } else {
        assert_eq!(sorted(out), sequential(&oks(N)));
    }
    assert!(probe.max_held() <= window.unwrap_or(LIMIT));
    assert!(probe.max_running() <= LIMIT);
    elapsed
}

/// The same workload through futures' `buffered`.
async fn time_of_buffered() -> Duration {
    let probe = Probe::new();
    let work = Work::new(&probe).plan(rare_slow_items);
    let start = Instant::now();
    let out: Vec<Item> = futures::stream::iter(0..N)
        .map(move |i| work.call(i))
        .buffered(LIMIT)
        .collect()
        .await;
    assert_eq!(out, sequential(&oks(N)));
    start.elapsed()
}

op_tests! {
    ops: [map_concurrent => MapConcurrent, try_map_concurrent => TryMapConcurrent],
    #[tokio::test(start_paused = true)]
    async fn a_wide_window_absorbs_rare_slow_items(op: Op) {
        let unordered = match op {
            Op::MapConcurrent => Op::MapConcurrentUnordered,
            _ => Op::TryMapConcurrentUnordered,
        };
        let free = time_of(unordered, None).await;
        let windowed = time_of(op, Some(256)).await;
        let plain = time_of(op, None).await;
        let buffered = time_of_buffered().await;
        let report = format!(
            "unordered {free:?}, window 256 {windowed:?}, plain {plain:?}, buffered {buffered:?}"
        );
        assert!(
            windowed.as_secs_f64() <= free.as_secs_f64() * 1.25,
            "the wide window is not close to unordered: {report}"
        );
        assert!(
            plain >= windowed * 2,
            "the default window does not stall behind slow heads: {report}"
        );
        assert!(plain <= buffered, "slower than buffered: {report}");
    }
}
