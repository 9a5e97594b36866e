//! Runs ONE async-lane workload on a `current_thread` runtime, for instruction counting
//! under `valgrind --tool=callgrind` (see `benches/callgrind.sh`).
//!
//! ```text
//! per_item_instructions <workload> <items> [limit]
//! ```
//!
//! Workloads: `buffer_unordered`, `buffered`, `map_concurrent_unordered`,
//! `map_concurrent`, `spawn` (one `tokio::spawn` per item in a `JoinSet`),
//! `for_each_concurrent`, `par_stream_then`, `par_stream_then_unordered` (all with the
//! trivial future `async move { x + 1 }`, limit 64 by default), and `par_map` (flowgate's
//! blocking lane with the trivial closure `|x| x + 1`, limit 2 by default), and
//! `try_map_concurrent`, `try_map_concurrent_timeout` (with a timeout, keep-going and
//! caught panics) and `try_map_concurrent_retry` (the same and retries), no item
//! failing, `map_concurrent_by_key` / `map_concurrent_by_key_unordered` (the trivial
//! future, keyed by `x % 16`), and `map_concurrent_stats` /
//! `map_concurrent_unordered_stats` (the plain operators with `.stats()` taken).
//!
//! Running a workload at two item counts and dividing the difference of the instruction
//! counts by the difference of the item counts gives the cost per item without start-up.

use std::process::ExitCode;

use flowgate_benches::{
    current_thread_runtime, expected_sum, flowgate_par_map_trivial, flowgate_try_ordered, in_task,
    AsyncWorkload, Policies,
};

const USAGE: &str = "usage: per_item_instructions <workload> <items> [limit]\n\
    workloads: buffer_unordered buffered map_concurrent_unordered map_concurrent spawn \
    for_each_concurrent par_stream_then par_stream_then_unordered par_map \
    try_map_concurrent try_map_concurrent_timeout try_map_concurrent_retry \
    map_concurrent_by_key map_concurrent_by_key_unordered \
    map_concurrent_stats map_concurrent_unordered_stats";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (name, items, limit) = match args.as_slice() {
        [name, items] => (name.as_str(), items, None),
        [name, items, limit] => (name.as_str(), items, Some(limit)),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Ok(n) = items.replace('_', "").parse::<u64>() else {
        eprintln!("not an item count: {items}\n{USAGE}");
        return ExitCode::from(2);
    };
    let limit = match limit.map(|l| l.parse::<usize>()) {
        None => None,
        Some(Ok(l)) if l > 0 => Some(l),
        Some(_) => {
            eprintln!("not a positive limit\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let runtime = current_thread_runtime();
    let (sum, limit) = if name == "par_map" {
        let limit = limit.unwrap_or(2);
        (
            runtime.block_on(in_task(flowgate_par_map_trivial(n, limit))),
            limit,
        )
    } else if let Some(policies) = match name {
        "try_map_concurrent" => Some(Policies::None),
        "try_map_concurrent_timeout" => Some(Policies::TimeoutKeepGoing),
        "try_map_concurrent_retry" => Some(Policies::WithRetry),
        _ => None,
    } {
        let limit = limit.unwrap_or(64);
        (
            runtime.block_on(in_task(flowgate_try_ordered(n, limit, policies))),
            limit,
        )
    } else if let Some(ordered) = match name {
        "map_concurrent_by_key" => Some(true),
        "map_concurrent_by_key_unordered" => Some(false),
        _ => None,
    } {
        let limit = limit.unwrap_or(64);
        (
            runtime.block_on(in_task(flowgate_benches::keyed::by_key_trivial(
                n, limit, 16, ordered,
            ))),
            limit,
        )
    } else if let Some(workload) = AsyncWorkload::from_name(name) {
        let limit = limit.unwrap_or(64);
        (runtime.block_on(in_task(workload.run(n, limit))), limit)
    } else {
        eprintln!("unknown workload: {name}\n{USAGE}");
        return ExitCode::from(2);
    };
    drop(runtime);

    if sum != expected_sum(n) {
        eprintln!("{name}: wrong sum {sum}, expected {}", expected_sum(n));
        return ExitCode::FAILURE;
    }
    println!("{name} items={n} limit={limit} sum={sum}");
    ExitCode::SUCCESS
}
