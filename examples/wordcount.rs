//! The main job: count the words of a corpus of any size, on all cores, in bounded memory.
//!
//! ```text
//! cargo run --release --example wordcount                    # 5,000,000 generated lines
//! cargo run --release --example wordcount -- --lines 200000  # fewer
//! cargo run --release --example wordcount -- corpus.txt      # a file, read line by line
//! ```
//!
//! The pipeline is the classic "generator -> chunks -> pool.map" recipe done as a stream:
//! lines are produced on demand (generated, or read from the file as they are needed),
//! cut into chunks, counted chunk by chunk on the blocking pool with `par_map_unordered`,
//! and merged as the counts arrive. At most `workers` chunks are alive at any moment, so
//! memory does not grow with the number of lines.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use flowgate::prelude::*;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::io::AsyncBufReadExt;

/// Lines per chunk: big enough that a chunk is a millisecond or more of work.
const CHUNK_LINES: usize = 4096;
/// Distinct words in the generated corpus.
const VOCABULARY: usize = 10_000;
/// How many of the most frequent words to print.
const TOP: usize = 20;

struct Args {
    lines: u64,
    path: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        lines: 5_000_000,
        path: None,
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
            "-h" | "--help" => {
                println!("usage: wordcount [--lines N] [PATH]");
                std::process::exit(0)
            }
            flag if flag.starts_with('-') => {
                eprintln!(
                    "wordcount: unknown option {flag:?} (usage: wordcount [--lines N] [PATH])"
                );
                std::process::exit(2)
            }
            path => args.path = Some(path.to_string()),
        }
    }
    args
}

/// FNV-1a: short words hash faster with it than with the default SipHash.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for byte in bytes {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

type Counts<K> = HashMap<K, u64, BuildHasherDefault<Fnv>>;

/// A deterministic word for each frequency rank: "ka", "kabe", "mizo", ...
fn vocabulary() -> Vec<String> {
    const SYLLABLES: [&str; 16] = [
        "ka", "be", "mi", "zo", "ru", "ta", "no", "shi", "ve", "lo", "pa", "du", "ge", "fi", "ya",
        "wu",
    ];
    (0..VOCABULARY)
        .map(|rank| {
            let mut word = String::new();
            let mut n = rank + 1;
            while n > 0 {
                word.push_str(SYLLABLES[n % 16]);
                n /= 16;
            }
            word
        })
        .collect()
}

/// A small, fast, deterministic random number generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `lines` generated lines of 4 to 15 words, produced one at a time as they are pulled.
/// Word ranks are log-uniform, so frequencies fall off like Zipf's law.
fn generated(lines: u64) -> BoxStream<'static, String> {
    let words = vocabulary();
    let ln_vocabulary = (VOCABULARY as f64).ln();
    stream! {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..lines {
            let count = 4 + rng.next() % 12;
            let mut line = String::with_capacity(96);
            for i in 0..count {
                if i > 0 {
                    line.push(' ');
                }
                let rank = (rng.unit() * ln_vocabulary).exp() as usize - 1;
                line.push_str(&words[rank.min(VOCABULARY - 1)]);
            }
            yield line;
        }
    }
    .boxed()
}

/// The lines of a file, read as they are pulled (never the whole file at once).
async fn from_file(path: &str) -> std::io::Result<BoxStream<'static, String>> {
    let file = tokio::fs::File::open(path).await?;
    let mut lines = tokio::io::BufReader::with_capacity(1 << 16, file).lines();
    let path = path.to_string();
    Ok(stream! {
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => yield line,
                Ok(None) => break,
                Err(error) => {
                    eprintln!("wordcount: reading {path}: {error}");
                    std::process::exit(1)
                }
            }
        }
    }
    .boxed())
}

/// Counts the words of one chunk (runs on a blocking-pool thread).
fn count_chunk(lines: Vec<String>) -> (usize, Counts<String>) {
    let mut counts: Counts<&str> = Counts::default();
    for line in &lines {
        for word in line.split_ascii_whitespace() {
            *counts.entry(word).or_insert(0) += 1;
        }
    }
    let owned = counts
        .into_iter()
        .map(|(word, n)| (word.to_string(), n))
        .collect();
    (lines.len(), owned)
}

/// Peak resident memory of this process (Linux), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let lines = match &args.path {
        Some(path) => from_file(path).await.unwrap_or_else(|error| {
            eprintln!("wordcount: cannot open {path}: {error}");
            std::process::exit(1)
        }),
        None => generated(args.lines),
    };

    let started = Instant::now();
    let mut total: Counts<String> = Counts::default();
    let mut line_count = 0usize;
    let mut per_chunk = lines
        .chunks(CHUNK_LINES)
        .par_map_unordered(workers, count_chunk);
    while let Some((chunk_lines, counts)) = per_chunk.next().await {
        line_count += chunk_lines;
        for (word, n) in counts {
            match total.get_mut(&word) {
                Some(sum) => *sum += n,
                None => {
                    total.insert(word, n);
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();

    let mut top: Vec<(&String, &u64)> = total.iter().collect();
    top.sort_unstable_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    println!("top {TOP} of {} distinct words:", total.len());
    for (word, n) in top.iter().take(TOP) {
        println!("{n:>12}  {word}");
    }
    let words: u64 = total.values().sum();
    println!(
        "{line_count} lines, {words} words in {elapsed:.2} s: {:.0} lines/s on {workers} workers",
        line_count as f64 / elapsed.max(1e-9)
    );
    match peak_rss_mib() {
        Some(mib) => println!("peak memory (VmHWM): {mib:.1} MiB"),
        None => println!("peak memory: not available on this platform"),
    }
}
