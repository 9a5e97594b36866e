//! The blocking lane: `n` items (default 50,000; `FLOWGATE_BENCH_ITEMS` overrides) of
//! about 30 µs of CPU each (an integer mix whose round count is calibrated once at
//! start-up and printed), summed, on a `multi_thread` runtime with two workers.
//!
//! - `blocking_lane/per_item`: one job per item, at most 2 at once.
//! - `blocking_lane/chunks_64`: the same work in chunks of 64 items, one job per chunk.
//!
//! Each group holds the sequential loop and the machine's ideal (the items split
//! statically over two `std::thread`s) as references, so speedups can be read from one
//! run: `sequential / x`, and as a fraction of `sequential / ideal_2_threads`.
//!
//! ```sh
//! cargo bench -p flowgate-benches --bench blocking_lane
//! ```

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use flowgate::prelude::*;
use flowgate_benches::{calibrated_work, in_task, items_from_env, multi_thread_runtime, Work};
use futures::StreamExt;
use rayon::prelude::*;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

const DEFAULT_ITEMS: u64 = 50_000;
/// Jobs at once: the core count.
const LIMIT: usize = 2;
const CHUNK: usize = 64;

/// Everything a workload needs, built once.
struct Setup {
    n: u64,
    work: Work,
    inputs: Arc<Vec<u64>>,
    runtime: Runtime,
    rayon: rayon::ThreadPool,
}

impl Setup {
    /// Runs `future` as a task on the runtime (the consumer sits on a runtime worker,
    /// as in the async-lane benchmarks) and waits for its sum.
    fn in_task(&self, future: impl Future<Output = u64> + Send + 'static) -> u64 {
        self.runtime.block_on(in_task(future))
    }
}

async fn add(total: u64, x: u64) -> u64 {
    total + x
}

/// A blocking-lane workload: a name and a function from the setup to the sum.
type Workload = (&'static str, fn(&Setup) -> u64);

fn sequential(s: &Setup) -> u64 {
    s.work.sequential(s.n)
}

fn ideal(s: &Setup) -> u64 {
    s.work.ideal(s.n, LIMIT as u64)
}

const PER_ITEM: [Workload; 8] = [
    ("sequential", sequential),
    ("ideal_2_threads", ideal),
    ("par_map", |s| {
        let (n, work) = (s.n, s.work);
        s.in_task(async move {
            flowgate::source::iter(0..n)
                .par_map(LIMIT, move |x| work.item(x))
                .fold(0, add)
                .await
        })
    }),
    ("par_map_unordered", |s| {
        let (n, work) = (s.n, s.work);
        s.in_task(async move {
            flowgate::source::iter(0..n)
                .par_map_unordered(LIMIT, move |x| work.item(x))
                .fold(0, add)
                .await
        })
    }),
    ("spawn_blocking", |s| {
        let (n, work) = (s.n, s.work);
        s.in_task(async move {
            let mut set = JoinSet::new();
            let mut total = 0;
            for x in 0..n {
                if set.len() >= LIMIT {
                    total += set.join_next().await.expect("running").expect("no panic");
                }
                set.spawn_blocking(move || work.item(x));
            }
            while let Some(done) = set.join_next().await {
                total += done.expect("no panic");
            }
            total
        })
    }),
    ("par_stream_map", |s| {
        let (n, work) = (s.n, s.work);
        s.in_task(async move {
            par_stream::ParStreamExt::par_map(
                futures::stream::iter(0..n),
                flowgate_benches::par_stream_params(LIMIT),
                move |x| move || work.item(x),
            )
            .fold(0, add)
            .await
        })
    }),
    ("par_stream_map_unordered", |s| {
        let (n, work) = (s.n, s.work);
        s.in_task(async move {
            par_stream::ParStreamExt::par_map_unordered(
                futures::stream::iter(0..n),
                flowgate_benches::par_stream_params(LIMIT),
                move |x| move || work.item(x),
            )
            .fold(0, add)
            .await
        })
    }),
    ("rayon_par_iter", |s| {
        let work = s.work;
        s.rayon
            .install(|| s.inputs.par_iter().map(|&x| work.item(x)).sum())
    }),
];

const CHUNKS: [Workload; 7] = [
    ("sequential", sequential),
    ("ideal_2_threads", ideal),
    ("par_map", |s| {
        let (n, work) = (s.n, s.work);
        s.in_task(async move {
            flowgate::source::iter(0..n)
                .chunks(CHUNK)
                .par_map(LIMIT, move |chunk: Vec<u64>| work.chunk(&chunk))
                .fold(0, add)
                .await
        })
    }),
    ("par_map_unordered", |s| {
        let (n, work) = (s.n, s.work);
        s.in_task(async move {
            flowgate::source::iter(0..n)
                .chunks(CHUNK)
                .par_map_unordered(LIMIT, move |chunk: Vec<u64>| work.chunk(&chunk))
                .fold(0, add)
                .await
        })
    }),
    ("spawn_blocking", |s| {
        let (inputs, work) = (Arc::clone(&s.inputs), s.work);
        s.in_task(async move {
            let mut set = JoinSet::new();
            let mut total = 0;
            for chunk in inputs.chunks(CHUNK) {
                if set.len() >= LIMIT {
                    total += set.join_next().await.expect("running").expect("no panic");
                }
                let chunk = chunk.to_vec();
                set.spawn_blocking(move || work.chunk(&chunk));
            }
            while let Some(done) = set.join_next().await {
                total += done.expect("no panic");
            }
            total
        })
    }),
    ("par_stream_map", |s| {
        let (n, work) = (s.n, s.work);
        s.in_task(async move {
            par_stream::ParStreamExt::par_map(
                futures::stream::iter(0..n).chunks(CHUNK),
                flowgate_benches::par_stream_params(LIMIT),
                move |chunk: Vec<u64>| move || work.chunk(&chunk),
            )
            .fold(0, add)
            .await
        })
    }),
    ("rayon_par_chunks", |s| {
        let work = s.work;
        s.rayon.install(|| {
            s.inputs
                .par_chunks(CHUNK)
                .map(|chunk| work.chunk(chunk))
                .sum()
        })
    }),
];

fn blocking_lane(c: &mut Criterion) {
    let n = items_from_env(DEFAULT_ITEMS);
    let setup = Setup {
        n,
        work: calibrated_work(),
        inputs: Arc::new((0..n).collect()),
        runtime: multi_thread_runtime(2),
        rayon: rayon::ThreadPoolBuilder::new()
            .num_threads(LIMIT)
            .build()
            .expect("building a rayon pool"),
    };
    // The reference sum, computed on first use (not at all if everything is filtered out).
    let expected = OnceLock::new();

    for (group_name, workloads) in [("per_item", &PER_ITEM[..]), ("chunks_64", &CHUNKS[..])] {
        let mut group = c.benchmark_group(format!("blocking_lane/{group_name}"));
        group
            .throughput(Throughput::Elements(n))
            .sampling_mode(SamplingMode::Flat);
        for &(name, run) in workloads {
            let mut checked = false;
            group.bench_with_input(BenchmarkId::new(name, n), &setup, |b, s| {
                // Once, outside the timing (and only if not filtered out): all the work done.
                if !std::mem::replace(&mut checked, true) {
                    let expected = *expected.get_or_init(|| sequential(s));
                    assert_eq!(run(s), expected, "{group_name}/{name} lost items");
                }
                b.iter(|| run(s))
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    // Defaults for the real run (an iteration takes about a second); command-line flags
    // (`--sample-size`, `--warm-up-time`, `--measurement-time`) override them.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(12));
    targets = blocking_lane
}
criterion_main!(benches);
