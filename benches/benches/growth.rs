//! How the per-item cost of the async lane grows, with the trivial future
//! `async move { x + 1 }`, on both runtime flavours:
//!
//! - `growth/<flavor>/items`: item counts 10^4, 10^5, 10^6 (and 10^7 with
//!   `FLOWGATE_BENCH_BIG=1`) at limit 64;
//! - `growth/<flavor>/limit`: limits 1, 8, 64, 512 at 10^5 items.
//!
//! Operators: flowgate's `map_concurrent_unordered` and `map_concurrent`, and futures'
//! `buffer_unordered` and `buffered` as the references. The benchmark id is
//! `<operator>/<items or limit>`, so criterion's results sit in
//! `target/criterion/growth_<flavor>_<items|limit>/<operator>/<value>/new/estimates.json`
//! (criterion turns `/` in a group name into `_`; `benchmark.json` beside it holds the
//! group, operator and value as written here). The throughput is the item count, so
//! per-item times are `estimates.mean.point_estimate / items`.
//!
//! `FLOWGATE_BENCH_ITEMS=m` (for quick runs) keeps only the sizes up to `m` (or `m` alone
//! if it is below 10^4) and runs the limit sweep at `min(m, 10^5)` items.
//!
//! ```sh
//! cargo bench -p flowgate-benches --bench growth
//! ```

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flowgate_benches::{
    env_flag, expected_sum, in_task, AsyncWorkload, Flavor, BIG_ENV, ITEMS_ENV,
};

const LIMIT: usize = 64;
const LIMITS: [usize; 4] = [1, 8, 64, 512];
const LIMIT_SWEEP_ITEMS: u64 = 100_000;

const OPERATORS: [AsyncWorkload; 4] = [
    AsyncWorkload::MapConcurrentUnordered,
    AsyncWorkload::MapConcurrent,
    AsyncWorkload::BufferUnordered,
    AsyncWorkload::Buffered,
];

/// The item counts of the size sweep and the item count of the limit sweep.
fn sizes() -> (Vec<u64>, u64) {
    let mut sizes = vec![10_000, 100_000, 1_000_000];
    if env_flag(BIG_ENV) {
        sizes.push(10_000_000);
    }
    if std::env::var_os(ITEMS_ENV).is_none() {
        return (sizes, LIMIT_SWEEP_ITEMS);
    }
    let max = flowgate_benches::items_from_env(0);
    sizes.retain(|&n| n <= max);
    if sizes.is_empty() {
        sizes.push(max);
    }
    (sizes, max.min(LIMIT_SWEEP_ITEMS))
}

fn growth(c: &mut Criterion) {
    let (sizes, sweep_items) = sizes();
    for flavor in Flavor::ALL {
        let runtime = flavor.runtime();

        let mut group = c.benchmark_group(format!("growth/{}/items", flavor.name()));
        for &n in &sizes {
            group.throughput(Throughput::Elements(n));
            for op in OPERATORS {
                let mut checked = false;
                group.bench_with_input(BenchmarkId::new(op.name(), n), &n, |b, _| {
                    // Once, outside the timing (and only if not filtered out): all the work.
                    if !std::mem::replace(&mut checked, true) {
                        let sum = runtime.block_on(in_task(op.run(n, LIMIT)));
                        assert_eq!(sum, expected_sum(n), "{} lost items", op.name());
                    }
                    b.to_async(&runtime).iter(|| in_task(op.run(n, LIMIT)))
                });
            }
        }
        group.finish();

        let n = sweep_items;
        let mut group = c.benchmark_group(format!("growth/{}/limit", flavor.name()));
        group.throughput(Throughput::Elements(n));
        for limit in LIMITS {
            for op in OPERATORS {
                let mut checked = false;
                group.bench_with_input(BenchmarkId::new(op.name(), limit), &limit, |b, _| {
                    // Once, outside the timing (and only if not filtered out): all the work.
                    if !std::mem::replace(&mut checked, true) {
                        let sum = runtime.block_on(in_task(op.run(n, limit)));
                        assert_eq!(sum, expected_sum(n), "{} lost items", op.name());
                    }
                    b.to_async(&runtime).iter(|| in_task(op.run(n, limit)))
                });
            }
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
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = growth
}
criterion_main!(benches);
