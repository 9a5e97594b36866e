//! Async lane overhead: `n` items (default 1,000,000; `FLOWGATE_BENCH_ITEMS` overrides),
//! the trivial future `async move { x + 1 }`, at most 64 in flight, results summed.
//!
//! One group per runtime flavour (`async_lane/current_thread`, `async_lane/multi_thread`
//! with two workers), each holding flowgate's two operators beside their peers. flowgate
//! reads `flowgate::source::iter(0..n)` (which spends tokio's coop budget); the futures
//! and par-stream peers read `futures::stream::iter(0..n)`; the spawn peer loops over
//! `0..n` directly. Every workload runs as one task on the runtime (see
//! `flowgate_benches::in_task`).
//!
//! ```sh
//! cargo bench -p flowgate-benches --bench async_lane
//! ```

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flowgate_benches::{expected_sum, in_task, items_from_env, AsyncWorkload, Flavor};

const DEFAULT_ITEMS: u64 = 1_000_000;
const LIMIT: usize = 64;

fn async_lane(c: &mut Criterion) {
    let n = items_from_env(DEFAULT_ITEMS);
    for flavor in Flavor::ALL {
        let runtime = flavor.runtime();
        let mut group = c.benchmark_group(format!("async_lane/{}", flavor.name()));
        group.throughput(Throughput::Elements(n));
        for workload in AsyncWorkload::ALL {
            let mut checked = false;
            group.bench_with_input(BenchmarkId::new(workload.name(), n), &n, |b, &n| {
                // Once, outside the timing (and only if not filtered out): all the work done.
                if !std::mem::replace(&mut checked, true) {
                    let sum = runtime.block_on(in_task(workload.run(n, LIMIT)));
                    assert_eq!(sum, expected_sum(n), "{} lost items", workload.name());
                }
                b.to_async(&runtime)
                    .iter(|| in_task(workload.run(n, LIMIT)))
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    // Defaults for the real run; command-line flags (`--sample-size`, `--warm-up-time`,
    // `--measurement-time`) override them.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    targets = async_lane
}
criterion_main!(benches);
