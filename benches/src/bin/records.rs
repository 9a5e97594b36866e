//! The records job of the Python-recipe comparison, done as a flowgate pipeline.
//!
//! ```text
//! records PATH [--workers N] [--chunk N] [--rounds N]
//! ```
//!
//! `--chunk N` sets the block size to about N records (N × 32 bytes).
//!
//! Reads a CSV file of records `id,a,b,c,d` (written by `gen_corpus records`) as it goes,
//! in blocks of whole lines (a generator of chunks: no `String` per line on the reading
//! side), scores each block's records on the blocking pool with `par_map_unordered`, and
//! merges the per-chunk results: the record count, the sum of
//! the scores truncated to whole numbers (a checksum) and the 10 best-scoring records.
//! `process_record` is the same computation, step for step, as `process_data` in
//! `benches/python_baseline.py`, so both print the same checksum and top 10.
//! Prints records per second (file reading included) and the peak resident memory.

use std::cmp::Ordering;
use std::time::Instant;

use flowgate::prelude::*;
use futures::StreamExt;
use tokio::io::AsyncReadExt;

/// How many of the best records to keep.
const TOP: usize = 10;
/// Rounds of arithmetic per record, 13 steps each, unless `--rounds` says otherwise.
const ROUNDS: u64 = 4;

/// What a chunk (and then the whole file) adds up to.
struct Summary {
    records: u64,
    checksum: i64,
    /// The best records, `(score, id)`, best first.
    top: Vec<(f64, u64)>,
}

/// Best first: higher score, then lower id.
fn rank(a: &(f64, u64), b: &(f64, u64)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

impl Summary {
    fn new() -> Self {
        Summary {
            records: 0,
            checksum: 0,
            top: Vec::with_capacity(TOP + 1),
        }
    }

    /// Keeps `entry` if it is among the best `TOP` seen so far.
    fn offer(&mut self, entry: (f64, u64)) {
        if self.top.len() == TOP && rank(&entry, &self.top[TOP - 1]) != Ordering::Less {
            return;
        }
        let at = self
            .top
            .partition_point(|kept| rank(kept, &entry) == Ordering::Less);
        self.top.insert(at, entry);
        self.top.truncate(TOP);
    }

    fn merge(&mut self, other: Summary) {
        self.records += other.records;
        self.checksum += other.checksum;
        for entry in other.top {
            self.offer(entry);
        }
    }
}

fn field<T: std::str::FromStr>(fields: &mut std::str::Split<'_, char>, line: &str) -> T {
    fields
        .next()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("records: malformed line {line:?}"))
}

/// Parses one record and scores it in `rounds` rounds of arithmetic: `(id, score)`.
fn process_record(line: &str, rounds: u64) -> (u64, f64) {
    let mut fields = line.split(',');
    let id: u64 = field(&mut fields, line);
    let a: u64 = field(&mut fields, line);
    let b: u64 = field(&mut fields, line);
    let c: f64 = field(&mut fields, line);
    let d: f64 = field(&mut fields, line);
    let (mut x, mut y) = (a, b);
    let mut score = 0.0f64;
    for k in 0..rounds {
        x = (x * 1_103_515_245 + 12_345 + k) & 0x7fff_ffff;
        y = (y * 31 + (x >> 16)) % 65_521;
        score += (x % 1000) as f64 * c - y as f64 * d;
    }
    (id, score / rounds as f64)
}

/// Scores the records of one block of whole lines.
fn process_chunk(block: Vec<u8>, rounds: u64) -> Summary {
    let text = std::str::from_utf8(&block).expect("records: the file is not UTF-8");
    let mut summary = Summary::new();
    for line in text.lines().filter(|line| !line.is_empty()) {
        let (id, score) = process_record(line, rounds);
        summary.records += 1;
        summary.checksum += score as i64;
        summary.offer((score, id));
    }
    summary
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn usage() -> ! {
    eprintln!("usage: records PATH [--workers N] [--chunk N] [--rounds N]");
    std::process::exit(2)
}

fn number(value: Option<String>) -> usize {
    value
        .and_then(|v| v.replace('_', "").parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| usage())
}

#[tokio::main]
async fn main() {
    let mut path = None;
    let mut workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut chunk = 4096;
    let mut rounds = ROUNDS;
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--workers" => workers = number(argv.next()),
            "--chunk" => chunk = number(argv.next()),
            "--rounds" => rounds = number(argv.next()) as u64,
            flag if flag.starts_with('-') => usage(),
            other => path = Some(other.to_string()),
        }
    }
    let path = path.unwrap_or_else(|| usage());

    let started = Instant::now();
    let file = tokio::fs::File::open(&path).await.unwrap_or_else(|error| {
        eprintln!("records: cannot open {path}: {error}");
        std::process::exit(1)
    });
    let block_size = chunk * 32;
    let mut file = file;
    // Blocks of about `block_size` bytes, cut after their last newline; the rest of
    // the line starts the next block.
    let input = stream! {
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let mut block = std::mem::take(&mut carry);
            let start = block.len();
            block.resize(start + block_size, 0);
            let read = match file.read(&mut block[start..]).await {
                Ok(read) => read,
                Err(error) => {
                    eprintln!("records: reading {path}: {error}");
                    std::process::exit(1)
                }
            };
            block.truncate(start + read);
            if read == 0 {
                if !block.is_empty() {
                    yield block;
                }
                break;
            }
            match block.iter().rposition(|&byte| byte == b'\n') {
                Some(end) => {
                    carry = block.split_off(end + 1);
                    yield block;
                }
                None => carry = block,
            }
        }
    };
    let total = input
        .par_map_unordered(workers, move |block| process_chunk(block, rounds))
        .fold(Summary::new(), |mut total, part| async move {
            total.merge(part);
            total
        })
        .await;
    let elapsed = started.elapsed().as_secs_f64();

    println!("records: {}", total.records);
    println!("checksum: {}", total.checksum);
    println!("top {TOP}:");
    for (score, id) in &total.top {
        println!("{id:>12} {score:?}");
    }
    println!(
        "{} records in {elapsed:.2} s: {:.0} records/s on {workers} workers",
        total.records,
        total.records as f64 / elapsed.max(1e-9)
    );
    match peak_rss_mib() {
        Some(mib) => println!("peak memory (VmHWM): {mib:.1} MiB"),
        None => println!("peak memory: not available on this platform"),
    }
}
