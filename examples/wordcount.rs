//! The main job: count the words of a corpus of any size, on all cores, in bounded memory.
//!
//! ```text
//! cargo run --release --example wordcount                    # 5,000,000 generated lines
//! cargo run --release --example wordcount -- --lines 200000  # fewer
//! cargo run --release --example wordcount -- corpus.txt      # a file
//! cargo run --release --example wordcount -- --all corpus.txt  # every word and its count
//! ```
//!
//! The pipeline is the classic "generator -> chunks -> pool.map" recipe done as a stream.
//! A generator produces the text on demand, in blocks of whole lines of about 1 MiB.
//! A file is read with `flowgate::source::lines` (numbered lines, read as they are
//! pulled) and its lines joined into blocks; a line that is not UTF-8 is reported with
//! the path and its number, and the rest of the file is still counted.
//! `par_map_unordered` counts the words of each block on the blocking pool; cutting a
//! block into words is part of that work, so the consumer's thread only produces blocks
//! and merges counts, as they arrive. A block holds some 20,000 lines and 190,000 words
//! but fewer than 10,000 distinct words, so merging is small next to counting. At most
//! `workers` blocks are pulled and not yet merged, plus the one being produced: memory
//! does not grow with the input.
//!
//! A word is a run of bytes other than ASCII white space (space, tab, newline, vertical
//! tab, form feed, carriage return), case and punctuation kept: the counts printed by
//! `--all` equal those of `LC_ALL=C tr -s '[:space:]' '\n' < FILE | sort | uniq -c`.
//!
//! While it runs, the counting stage's statistics drive a progress report: a live bar
//! (lines, blocks/s, how busy the workers are, and what holds the run back: the source,
//! the counting stage, or the merge on the consumer's side) when stdout is a terminal,
//! otherwise a line on stderr every few seconds. It ends with the stage's summary.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "shared/words.rs"]
mod words;

use flowgate::prelude::*;
use flowgate::stats::{Pipeline, PipelineSample};
use futures::stream::BoxStream;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;
use words::{count_block, generated, print_top, Counts};

/// Bytes per block of lines: some 20,000 lines, milliseconds of counting.
const BLOCK_BYTES: usize = 1 << 20;
/// How many of the most frequent words to print.
const TOP: usize = 20;

struct Args {
    lines: u64,
    path: Option<String>,
    all: bool,
}

const USAGE: &str = "usage: wordcount [--lines N] [--all] [PATH]";

fn parse_args() -> Args {
    let mut args = Args {
        lines: 5_000_000,
        path: None,
        all: false,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--lines" => {
                let value = argv.next().unwrap_or_default();
                args.lines = value.replace('_', "").parse().unwrap_or_else(|_| {
                    eprintln!("wordcount: --lines needs a whole number, got {value:?}");
                    std::process::exit(2)
                });
            }
            "--all" => args.all = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            flag if flag.starts_with('-') => {
                eprintln!("wordcount: unknown option {flag:?} ({USAGE})");
                std::process::exit(2)
            }
            path => args.path = Some(path.to_string()),
        }
    }
    args
}

/// The lines of a file, read as they are pulled, joined into blocks of about
/// `BLOCK_BYTES` (each line's memory is freed on this thread, as soon as it is copied:
/// the workers get one buffer per block). A line that cannot be read as text is reported
/// (path and line number) and left out; an I/O error or a missing file ends the program
/// with its message.
fn from_file(path: &str) -> BoxStream<'static, Vec<u8>> {
    let lines = flowgate::source::lines(path);
    stream! {
        let mut lines = std::pin::pin!(lines);
        let mut block = Vec::with_capacity(BLOCK_BYTES + 256);
        while let Some(line) = lines.next().await {
            match line {
                Ok(line) => {
                    block.extend_from_slice(line.text.as_bytes());
                    block.push(b'\n');
                    if block.len() >= BLOCK_BYTES {
                        let full = std::mem::replace(&mut block, Vec::with_capacity(BLOCK_BYTES + 256));
                        yield full;
                    }
                }
                Err(error) if error.is_recoverable() => {
                    eprintln!("wordcount: {error}; the line is not counted");
                }
                Err(error) => {
                    eprintln!("wordcount: {error}");
                    std::process::exit(1)
                }
            }
        }
        if !block.is_empty() {
            yield block;
        }
    }
    .boxed()
}

/// Peak resident memory of this process (Linux), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Reports progress from the pipeline view's samples until the stage ends: a live bar
/// on a terminal, otherwise (and with `--all`, whose output is the counts) a line on
/// stderr every few seconds. `lines_done` is the consumer's count of merged lines;
/// `total_lines` is known for a generated corpus.
fn report_progress(
    view: Pipeline,
    lines_done: Arc<AtomicU64>,
    total_lines: Option<u64>,
    live: bool,
    done: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let describe = |sample: &PipelineSample| {
        let stage = &sample.stages[0].interval;
        format!(
            "{:.0} blocks/s, busy {:.0}%, bottleneck: {}",
            stage.yielded_per_sec(),
            stage.busy_ratio() * 100.0,
            sample.bottleneck
        )
    };
    tokio::spawn(async move {
        if live {
            let bar = ProgressBar::with_draw_target(total_lines, ProgressDrawTarget::stdout());
            let template = match total_lines {
                Some(_) => "{bar:20} {human_pos}/{human_len} lines, {wide_msg}",
                None => "{spinner} {human_pos} lines, {wide_msg}",
            };
            bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
            let mut samples = std::pin::pin!(view.every(Duration::from_millis(200)));
            while let Some(sample) = done.run_until_cancelled(samples.next()).await.flatten() {
                bar.set_position(lines_done.load(Ordering::Relaxed));
                let rate = indicatif::HumanCount(bar.per_sec() as u64);
                bar.set_message(format!("{rate}/s, {}", describe(&sample)));
            }
            bar.finish_and_clear();
        } else {
            let mut samples = std::pin::pin!(view.every(Duration::from_secs(3)));
            while let Some(sample) = done.run_until_cancelled(samples.next()).await.flatten() {
                let lines = lines_done.load(Ordering::Relaxed);
                eprintln!("wordcount: {lines} lines, {}", describe(&sample));
            }
        }
    })
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = Instant::now();
    let blocks = match &args.path {
        Some(path) => from_file(path),
        None => generated(args.lines, BLOCK_BYTES),
    };
    let per_block = blocks
        .par_map_unordered(workers, count_block)
        .named("count");
    let view = Pipeline::new().stage(&per_block.stats());
    let summary = view.clone();
    let lines_done = Arc::new(AtomicU64::new(0));
    let total_lines = args.path.is_none().then_some(args.lines);
    let live = std::io::stdout().is_terminal() && !args.all;
    let done = CancellationToken::new();
    let progress = report_progress(
        view,
        Arc::clone(&lines_done),
        total_lines,
        live,
        done.clone(),
    );

    let mut total: Counts<String> = Counts::default();
    let mut line_count = 0usize;
    let mut per_block = per_block;
    while let Some((lines, counts)) = per_block.next().await {
        line_count += lines;
        lines_done.store(line_count as u64, Ordering::Relaxed);
        for (word, n) in counts {
            *total.entry(word).or_insert(0) += n;
        }
    }
    drop(per_block);
    let elapsed = started.elapsed().as_secs_f64();
    done.cancel();
    progress
        .await
        .expect("the progress report ends with the run");

    if args.all {
        let mut all: Vec<(&String, &u64)> = total.iter().collect();
        all.sort_unstable();
        for (word, n) in all {
            println!("{n} {word}");
        }
        return;
    }
    print_top(&total, TOP);
    let words: u64 = total.values().sum();
    println!(
        "{line_count} lines, {words} words in {elapsed:.2} s: {:.0} lines/s on {workers} workers",
        line_count as f64 / elapsed.max(1e-9)
    );
    match peak_rss_mib() {
        Some(mib) => println!("peak memory (VmHWM): {mib:.1} MiB"),
        None => println!("peak memory: not available on this platform"),
    }
    println!("\n{}", summary.totals());
}
