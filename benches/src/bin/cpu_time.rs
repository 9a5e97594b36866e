//! The process's CPU time (user + system, all threads) and the wall time of work that
//! waits: jobs that sleep, a pipeline whose upstream is pending, a pipeline whose jobs
//! are all pending, and an empty runtime that only sleeps.
//!
//! ```text
//! cpu_time                                  # 5 rounds, multi_thread with 2 workers
//! cpu_time --rounds 5 --workers 1
//! cpu_time --items 20000 --job-ms 2 --limit 64 --idle-ms 1000 --workers 4
//! cpu_time --rounds 1 --case "sleep 2 ms: map_concurrent_unordered"   # e.g. under perf
//! ```
//!
//! Cases, each on a fresh `multi_thread` runtime with `--workers` workers, and each run
//! as one spawned task (`in_task`), so the consumer sits on a runtime worker:
//!
//! - **I/O-bound**: `--items` jobs that each `tokio::time::sleep(--job-ms)`, `--limit` in
//!   flight, through flowgate's `map_concurrent_unordered` and `map_concurrent`, futures'
//!   `buffer_unordered` and `buffered`, and one `tokio::spawn` per item with a `JoinSet`
//!   holding at most `--limit`.
//! - **Idle upstream**: a source that sleeps `--idle-ms` before its only item, feeding
//!   flowgate's operators; the consumer waits on it all that time.
//! - **Idle jobs**: `--limit` jobs that each sleep `--idle-ms`, through every operator
//!   above: all jobs pending, nothing else to do.
//! - **Empty runtime**: the runtime started, one task sleeping `--idle-ms`, nothing else:
//!   tokio's own idle cost, the floor of every idle case.
//!
//! CPU time is `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)` (nanoseconds, every thread of
//! the process) read just before and just after `block_on`; the runtime is built, its
//! workers started and left to settle before the first reading, and it is dropped after
//! the second, so neither start-up nor shutdown is counted. The user/system split and
//! the context switches come from `getrusage(RUSAGE_SELF)`. Every round runs every case
//! once, one case further on than the last round; the table gives the median and min of
//! the rounds, as markdown. `--case TEXT` (repeatable) keeps only the cases whose name
//! contains one of the texts.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use flowgate::prelude::*;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::task::JoinSet;

use flowgate_benches::{expected_sum, in_task, load_average, multi_thread_runtime, number};

const USAGE: &str = "usage: cpu_time [--rounds N] [--workers N] [--items N] [--limit N] \
    [--job-ms N] [--idle-ms N] [--case TEXT]...";

/// The ways to run jobs `limit` at a time.
#[derive(Debug, Clone, Copy)]
enum Operator {
    MapConcurrentUnordered,
    /// `map_concurrent_unordered` with its statistics taken and read at the end.
    MapConcurrentUnorderedStats,
    MapConcurrent,
    BufferUnordered,
    Buffered,
    Spawn,
}

impl Operator {
    const ALL: [Operator; 6] = [
        Operator::MapConcurrentUnordered,
        Operator::MapConcurrentUnorderedStats,
        Operator::MapConcurrent,
        Operator::BufferUnordered,
        Operator::Buffered,
        Operator::Spawn,
    ];

    fn name(self, limit: usize) -> String {
        match self {
            Operator::MapConcurrentUnordered => format!("map_concurrent_unordered({limit})"),
            Operator::MapConcurrentUnorderedStats => {
                format!("map_concurrent_unordered({limit}) + stats")
            }
            Operator::MapConcurrent => format!("map_concurrent({limit})"),
            Operator::BufferUnordered => format!("futures buffer_unordered({limit})"),
            Operator::Buffered => format!("futures buffered({limit})"),
            Operator::Spawn => format!("tokio::spawn per item, JoinSet ≤ {limit}"),
        }
    }

    /// Runs a job sleeping `job` (none if zero) for every item of `source`, `limit` at a
    /// time, and returns the sum of the results (`x + 1` each).
    async fn run(self, source: BoxStream<'static, u64>, limit: usize, job: Duration) -> u64 {
        let work = move |x: u64| async move {
            if !job.is_zero() {
                tokio::time::sleep(job).await;
            }
            x + 1
        };
        let add = |total: u64, x: u64| async move { total + x };
        match self {
            Operator::MapConcurrentUnordered => {
                source
                    .map_concurrent_unordered(limit, work)
                    .fold(0, add)
                    .await
            }
            Operator::MapConcurrentUnorderedStats => {
                let flow = source.map_concurrent_unordered(limit, work);
                let stats = flow.stats();
                let sum = flow.fold(0, add).await;
                assert!(stats.snapshot().ended);
                sum
            }
            Operator::MapConcurrent => source.map_concurrent(limit, work).fold(0, add).await,
            Operator::BufferUnordered => {
                source.map(work).buffer_unordered(limit).fold(0, add).await
            }
            Operator::Buffered => source.map(work).buffered(limit).fold(0, add).await,
            Operator::Spawn => {
                let mut source = source;
                let mut set = JoinSet::new();
                let mut total = 0;
                while let Some(x) = source.next().await {
                    if set.len() >= limit {
                        let done = set.join_next().await.expect("a task is running");
                        total += done.expect("the task panicked");
                    }
                    set.spawn(work(x));
                }
                while let Some(done) = set.join_next().await {
                    total += done.expect("the task panicked");
                }
                total
            }
        }
    }
}

/// What a case runs.
#[derive(Debug, Clone, Copy)]
enum Case {
    /// One task sleeping `idle`, nothing else.
    Empty,
    /// A source pending for `idle` before its only item, through `Operator`.
    IdleUpstream(Operator),
    /// `limit` jobs that each sleep `idle`, through `Operator`.
    IdleJobs(Operator),
    /// `items` jobs that each sleep `job`, through `Operator`.
    Io(Operator),
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    items: u64,
    limit: usize,
    job: Duration,
    idle: Duration,
}

impl Case {
    fn name(self, s: &Settings) -> String {
        let idle = s.idle.as_millis();
        match self {
            Case::Empty => format!("empty runtime, one task sleeping {idle} ms"),
            Case::IdleUpstream(op) => {
                format!("idle upstream ({idle} ms) → {}", op.name(s.limit))
            }
            Case::IdleJobs(op) => format!("idle jobs ({idle} ms): {}", op.name(s.limit)),
            Case::Io(op) => format!(
                "{} × sleep {} ms: {}",
                s.items,
                s.job.as_millis(),
                op.name(s.limit)
            ),
        }
    }

    /// The number of jobs the case runs (0 for the empty runtime).
    fn jobs(self, s: &Settings) -> u64 {
        match self {
            Case::Empty => 0,
            Case::IdleUpstream(_) => 1,
            Case::IdleJobs(_) => s.limit as u64,
            Case::Io(_) => s.items,
        }
    }

    /// Runs the case to its end (inside a runtime) and returns its sum.
    async fn run(self, s: Settings) -> u64 {
        match self {
            Case::Empty => {
                tokio::time::sleep(s.idle).await;
                0
            }
            Case::IdleUpstream(op) => {
                let idle = s.idle;
                let source = futures::stream::once(async move {
                    tokio::time::sleep(idle).await;
                    0u64
                });
                op.run(source.boxed(), s.limit, Duration::ZERO).await
            }
            Case::IdleJobs(op) => {
                let source = futures::stream::iter(0..s.limit as u64);
                op.run(source.boxed(), s.limit, s.idle).await
            }
            Case::Io(op) => {
                let source = futures::stream::iter(0..s.items);
                op.run(source.boxed(), s.limit, s.job).await
            }
        }
    }
}

/// The process's CPU time and what `getrusage` adds to it.
#[derive(Debug, Clone, Copy)]
struct Usage {
    /// `CLOCK_PROCESS_CPUTIME_ID`: user + system time of every thread.
    cpu: Duration,
    user: Duration,
    system: Duration,
    voluntary_switches: i64,
    involuntary_switches: i64,
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

impl Usage {
    fn now() -> Usage {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
        // SAFETY: `rusage` is plain old data, for which all zeroes is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `ru` is a valid, writable rusage for the duration of the call.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        assert_eq!(rc, 0, "getrusage(RUSAGE_SELF) failed");
        Usage {
            cpu: Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32),
            user: timeval(ru.ru_utime),
            system: timeval(ru.ru_stime),
            voluntary_switches: ru.ru_nvcsw,
            involuntary_switches: ru.ru_nivcsw,
        }
    }
}

/// One run of one case.
#[derive(Debug, Clone, Copy)]
struct Sample {
    cpu_ms: f64,
    user_ms: f64,
    system_ms: f64,
    wall_ms: f64,
    switches: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs `case` once on a fresh runtime and measures it.
fn measure(case: Case, s: Settings, workers: usize) -> Sample {
    let runtime = multi_thread_runtime(workers);
    // Start the workers and the timer, then let the threads settle.
    runtime.block_on(in_task(async {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }));
    std::thread::sleep(Duration::from_millis(20));

    let before = Usage::now();
    let started = Instant::now();
    let sum = runtime.block_on(in_task(case.run(s)));
    let wall = started.elapsed();
    let after = Usage::now();
    drop(runtime);

    let n = case.jobs(&s);
    assert_eq!(sum, expected_sum(n), "{} lost items", case.name(&s));
    Sample {
        cpu_ms: ms(after.cpu - before.cpu),
        user_ms: ms(after.user.saturating_sub(before.user)),
        system_ms: ms(after.system.saturating_sub(before.system)),
        wall_ms: ms(wall),
        switches: ((after.voluntary_switches - before.voluntary_switches)
            + (after.involuntary_switches - before.involuntary_switches)) as f64,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn min(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(f64::INFINITY, f64::min)
}

fn main() -> ExitCode {
    let mut rounds = 5usize;
    let mut workers = 2usize;
    let mut items = 20_000u64;
    let mut limit = 64usize;
    let mut job_ms = 2u64;
    let mut idle_ms = 1_000u64;
    let mut filters: Vec<String> = Vec::new();
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        let parsed = match arg.as_str() {
            "--rounds" => number(argv.next()).map(|n| rounds = n as usize),
            "--workers" => number(argv.next()).map(|n| workers = n as usize),
            "--items" => number(argv.next()).map(|n| items = n),
            "--limit" => number(argv.next()).map(|n| limit = n as usize),
            "--job-ms" => number(argv.next()).map(|n| job_ms = n),
            "--idle-ms" => number(argv.next()).map(|n| idle_ms = n),
            "--case" => argv.next().map(|text| filters.push(text)),
            _ => None,
        };
        if parsed.is_none() {
            eprintln!("bad argument {arg:?} (or its value)\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let s = Settings {
        items,
        limit,
        job: Duration::from_millis(job_ms),
        idle: Duration::from_millis(idle_ms),
    };

    let mut cases = vec![Case::Empty];
    cases.extend(
        [Operator::MapConcurrentUnordered, Operator::MapConcurrent].map(Case::IdleUpstream),
    );
    cases.extend(Operator::ALL.map(Case::IdleJobs));
    cases.extend(Operator::ALL.map(Case::Io));
    if !filters.is_empty() {
        cases.retain(|case| {
            filters
                .iter()
                .any(|text| case.name(&s).contains(text.as_str()))
        });
        if cases.is_empty() {
            eprintln!("no case matches {filters:?}");
            return ExitCode::from(2);
        }
    }

    let load_before = load_average();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        // Each round starts one case further on, so no case always runs first.
        for k in (0..cases.len()).map(|i| (i + round) % cases.len()) {
            let sample = measure(cases[k], s, workers);
            println!(
                "round {}  {:<60} {:9.2} ms CPU {:9.1} ms wall",
                round + 1,
                cases[k].name(&s),
                sample.cpu_ms,
                sample.wall_ms
            );
            samples[k].push(sample);
        }
    }
    let load_after = load_average();

    println!(
        "\nmulti_thread ({workers} worker{}), {rounds} interleaved rounds, a fresh runtime \
         per run; load average {load_before} before, {load_after} after\n",
        if workers == 1 { "" } else { "s" }
    );
    println!(
        "| case | jobs | CPU ms median | CPU ms min | CPU µs per job | user ms | system ms \
         | context switches | wall ms median |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (case, runs) in cases.iter().zip(&samples) {
        let column = |field: fn(&Sample) -> f64| median(runs.iter().map(field).collect());
        let cpu = column(|r| r.cpu_ms);
        let jobs = case.jobs(&s);
        let per_job = match case {
            Case::Io(_) => format!("{:.2}", cpu * 1e3 / jobs as f64),
            _ => "–".to_owned(),
        };
        println!(
            "| {} | {jobs} | {cpu:.2} | {:.2} | {per_job} | {:.1} | {:.1} | {:.0} | {:.0} |",
            case.name(&s),
            min(runs.iter().map(|r| r.cpu_ms)),
            column(|r| r.user_ms),
            column(|r| r.system_ms),
            column(|r| r.switches),
            column(|r| r.wall_ms),
        );
    }
    ExitCode::SUCCESS
}
