//! Wall-clock cost per item of async-lane workloads, in interleaved rounds: each round
//! runs every named workload once, in turn, so a co-tenant's load falls on all of them
//! alike. Prints the median and the minimum of the rounds, in ns per item.
//!
//! ```text
//! interleaved [--flavor multi|current] [--items N] [--limit N[,N...]] [--rounds N] WORKLOAD...
//! interleaved --items 1000000 --rounds 7 map_concurrent_unordered buffer_unordered
//! interleaved --limit 8,64,512 map_concurrent_unordered map_concurrent
//! ```
//!
//! With several limits, every round runs every workload at every limit, so the figures
//! across limits are interleaved too. Each round starts one case further on than the
//! last.
//!
//! Workloads are the names of `flowgate_benches::AsyncWorkload` (`map_concurrent_unordered`,
//! `map_concurrent`, `buffer_unordered`, `buffered`, `for_each_concurrent`, `spawn`,
//! `par_stream_then`, `par_stream_then_unordered`, `map_concurrent_stats`,
//! `map_concurrent_unordered_stats`). Every workload runs as one spawned
//! task (`in_task`), as in the criterion benchmark; the default runtime is `multi_thread`
//! with two workers.

use std::process::ExitCode;
use std::time::Instant;

use flowgate_benches::{
    current_thread_runtime, expected_sum, in_task, multi_thread_runtime, number, AsyncWorkload,
};

const USAGE: &str = "usage: interleaved [--flavor multi|current] [--items N] \
    [--limit N[,N...]] [--rounds N] WORKLOAD...";

fn main() -> ExitCode {
    let mut multi = true;
    let mut items = 1_000_000u64;
    let mut limits = vec![64usize];
    let mut rounds = 7usize;
    let mut workloads = Vec::new();
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        let parsed = match arg.as_str() {
            "--flavor" => match argv.next().as_deref() {
                Some("multi") => {
                    multi = true;
                    Some(())
                }
                Some("current") => {
                    multi = false;
                    Some(())
                }
                _ => None,
            },
            "--items" => number(argv.next()).map(|n| items = n),
            "--limit" => argv.next().and_then(|list| {
                let parsed: Option<Vec<usize>> = list
                    .split(',')
                    .map(|n| number(Some(n.to_owned())).map(|n| n as usize))
                    .collect();
                parsed.map(|parsed| limits = parsed)
            }),
            "--rounds" => number(argv.next()).map(|n| rounds = n as usize),
            name => AsyncWorkload::from_name(name).map(|w| workloads.push(w)),
        };
        if parsed.is_none() {
            eprintln!("bad argument {arg:?} (or its value)\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    if workloads.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }

    let runtime = if multi {
        multi_thread_runtime(2)
    } else {
        current_thread_runtime()
    };
    let cases: Vec<(AsyncWorkload, usize)> = limits
        .iter()
        .flat_map(|&limit| workloads.iter().map(move |&workload| (workload, limit)))
        .collect();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        // Each round starts one case further on, so no case always runs first.
        for k in (0..cases.len()).map(|i| (i + round) % cases.len()) {
            let (workload, limit) = &cases[k];
            let started = Instant::now();
            let sum = runtime.block_on(in_task(workload.run(items, *limit)));
            let ns = started.elapsed().as_nanos() as f64 / items as f64;
            assert_eq!(sum, expected_sum(items), "{} lost items", workload.name());
            times[k].push(ns);
        }
    }
    println!(
        "{} runtime, {items} items, {rounds} interleaved rounds; ns per item",
        if multi {
            "multi_thread (2 workers)"
        } else {
            "current_thread"
        }
    );
    println!(
        "{:<28} {:>6} {:>9} {:>9}",
        "workload", "limit", "median", "min"
    );
    for ((workload, limit), mut ns) in cases.iter().zip(times) {
        ns.sort_by(f64::total_cmp);
        println!(
            "{:<28} {:>6} {:>9.1} {:>9.1}",
            workload.name(),
            limit,
            ns[ns.len() / 2],
            ns[0]
        );
    }
    ExitCode::SUCCESS
}
