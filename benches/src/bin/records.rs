//! The records job of the Python-recipe comparison, done as a flowgate pipeline.
//!
//! ```text
//! records PATH [--workers N] [--chunk N] [--rounds N]
//! ```
//!
//! Scores a CSV file of records `id,a,b,c,d` (written by `gen_corpus records`) and prints
//! the record count, the sum of the scores truncated to whole numbers (a checksum) and
//! the 10 best-scoring records, then records per second (file reading included) and the
//! peak resident memory. `process_record` is the same computation, step for step, as
//! `process_data` in `benches/python_baseline.py`, so both print the same checksum and
//! top 10.
//!
//! The pipeline: a generator yields the start offsets of the file's blocks, on demand;
//! `par_map_unordered` hands each offset to a blocking-pool thread, which reads its block
//! itself (`FileExt::read_at`, Unix: no shared file position) and scores it; the
//! per-block summaries are merged as they arrive. A block owns the lines that start inside
//! it: its job skips the piece of line it starts in (the end of the previous block's last
//! line) and reads on past its own end to finish its last line. So the reading is spread
//! over the workers, each byte is copied once (from the page cache into the block), and
//! the consumer only merges summaries. At most `workers` blocks are in memory.
//!
//! Blocks are 1 MiB (some 28,000 records; `--chunk N` makes them N × 32 bytes): about a
//! millisecond of work each, so handing a block over costs little and the last blocks
//! still spread over the workers.
//!
//! Parsing is by hand, on bytes, and is most of the work. Each field is one unaligned
//! 8-byte load: its digits are found and converted all at once (`leading_digits`), and
//! its delimiter is read from the same load. A decimal of the shape `gen_corpus` writes
//! (1 or 2 whole digits, exactly 4 fraction digits) becomes an integer mantissa `m` and
//! the value `m as f64 / 10_000.0`: both operands are exact and IEEE division rounds
//! correctly, so this is the double nearest the decimal, the one Python's `float()`
//! gives. A line of any other shape goes through `str::parse`, and a line that is not a
//! record panics with the line in the message.

use std::cmp::Ordering;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use flowgate::prelude::*;
use futures::StreamExt;

/// How many of the best records to keep.
const TOP: usize = 10;
/// Rounds of arithmetic per record, 13 steps each, unless `--rounds` says otherwise.
const ROUNDS: u64 = 4;
/// Records per block unless `--chunk` says otherwise; a block is about 32 bytes a record.
const CHUNK: usize = 32_768;
/// How far a job reads past its block's end at first, to finish its last line.
const OVERHANG: usize = 4096;

/// What a block (and then the whole file) adds up to.
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

/// The fields of one record.
struct Record {
    id: u64,
    a: u64,
    b: u64,
    c: f64,
    d: f64,
}

/// `10^n`, to join the digits of consecutive 8-byte loads.
const POWERS_OF_TEN: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// The digits at the start of 8 bytes loaded little-endian (the first byte lowest): how
/// many there are (0 to 8) and their value. Eight bytes at once, without a loop.
fn leading_digits(word: u64) -> (usize, u64) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // A byte is a digit when subtracting b'0' leaves it below 0x80 (no borrow) and adding
    // 0x46 leaves it below 0x80 (it is at most b'9'). The lowest byte flagged is always
    // right: the digits before it neither borrow nor carry into it.
    let flags = (word.wrapping_sub(ONES * u64::from(b'0')) | word.wrapping_add(ONES * 0x46))
        & (ONES * 0x80);
    let count = (flags.trailing_zeros() / 8) as usize;
    if count == 0 {
        return (0, 0);
    }
    // The digits' values, moved to the top bytes with zeros below (the leading zeros of
    // an 8-digit number); then neighbours combine: pairs, fours, all eight.
    let mut value = word.wrapping_sub(ONES * u64::from(b'0')) << (64 - 8 * count);
    value = (value * 10 + (value >> 8)) & 0x00ff_00ff_00ff_00ff;
    value = (value * 100 + (value >> 16)) & 0x0000_ffff_0000_ffff;
    value = (value * 10_000 + (value >> 32)) & 0xffff_ffff;
    (count, value)
}

/// A reading position in a run of lines, for [`parse_fast`].
///
/// Each field takes one 8-byte load, which holds its digits and the delimiter after them
/// (the decimals `gen_corpus` writes, `D.DDDD` and `DD.DDDD`, fit in one load with their
/// delimiter): no loop over bytes, and no branch on how many digits a field has.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    /// The next 8 bytes as a little-endian number, zeros past the end.
    #[inline]
    fn word(&self) -> u64 {
        match self.bytes.get(self.at..self.at + 8) {
            Some(eight) => u64::from_le_bytes(eight.try_into().expect("8 bytes")),
            None => self.last_word(),
        }
    }

    /// [`Cursor::word`] near the end of the bytes.
    #[cold]
    fn last_word(&self) -> u64 {
        let rest = &self.bytes[self.at.min(self.bytes.len())..];
        let mut eight = [0; 8];
        eight[..rest.len()].copy_from_slice(rest);
        u64::from_le_bytes(eight)
    }

    /// Whether `byte`, found at `at`, ends a field that `delimiter` ends. A field ended by
    /// a newline may also end with the bytes (the last line of a file without one).
    #[inline]
    fn ends(&self, byte: u8, at: usize, delimiter: u8) -> bool {
        byte == delimiter || (delimiter == b'\n' && at >= self.bytes.len())
    }

    /// Steps over a whole number and the `delimiter` after it.
    #[inline]
    fn whole(&mut self, delimiter: u8) -> Option<u64> {
        let word = self.word();
        let (count, value) = leading_digits(word);
        if count == 8 {
            return self.long_whole(value, delimiter);
        }
        if count == 0 || !self.ends((word >> (8 * count)) as u8, self.at + count, delimiter) {
            return None;
        }
        self.at += count + 1;
        Some(value)
    }

    /// [`Cursor::whole`] for 8 digits or more, `value` being the first 8 (`None` past
    /// `u64::MAX`).
    #[cold]
    fn long_whole(&mut self, mut value: u64, delimiter: u8) -> Option<u64> {
        self.at += 8;
        loop {
            let word = self.word();
            let (count, part) = leading_digits(word);
            value = value.checked_mul(POWERS_OF_TEN[count])?.checked_add(part)?;
            self.at += count;
            if count < 8 {
                if !self.ends((word >> (8 * count)) as u8, self.at, delimiter) {
                    return None;
                }
                self.at += 1;
                return Some(value);
            }
        }
    }

    /// Steps over a decimal `-?D.DDDD` or `-?DD.DDDD` and the `delimiter` after it.
    #[inline]
    fn decimal(&mut self, delimiter: u8) -> Option<f64> {
        let negative = self.bytes.get(self.at) == Some(&b'-');
        self.at += usize::from(negative);
        let word = self.word();
        let (count, units) = leading_digits(word);
        if !(1..=2).contains(&count) {
            return None;
        }
        // After the units: the point, 4 digits, the delimiter, all inside `word`.
        let rest = word >> (8 * count);
        let (4, fraction) = leading_digits(rest >> 8) else {
            return None;
        };
        if rest as u8 != b'.' || !self.ends((rest >> 40) as u8, self.at + count + 5, delimiter) {
            return None;
        }
        self.at += count + 6;
        // The mantissa and 10,000 are exact as f64, and IEEE division rounds correctly: the
        // quotient is the double nearest the decimal, which is what Python's float() gives.
        let magnitude = (units * 10_000 + fraction) as f64 / 10_000.0;
        Some(if negative { -magnitude } else { magnitude })
    }
}

/// The common case: a record `id,a,b,c,d` of the shape `gen_corpus` writes, at the start
/// of `bytes`, ended by a newline or by the end of `bytes`. Returns it and the bytes it
/// took, newline included; `None` for any other shape.
fn parse_fast(bytes: &[u8]) -> Option<(Record, usize)> {
    let mut line = Cursor { bytes, at: 0 };
    let record = Record {
        id: line.whole(b',')?,
        a: line.whole(b',')?,
        b: line.whole(b',')?,
        c: line.decimal(b',')?,
        d: line.decimal(b'\n')?,
    };
    Some((record, line.at.min(bytes.len())))
}

/// Any other line, at the start of `bytes`: parsed with `str::parse`, or a panic naming
/// it. Returns the record (`None` for a blank line) and the bytes the line took.
fn parse_slow(bytes: &[u8]) -> (Option<Record>, usize) {
    let end = bytes.iter().position(|&byte| byte == b'\n');
    let used = end.map_or(bytes.len(), |end| end + 1);
    let raw = &bytes[..end.unwrap_or(bytes.len())];
    let line = std::str::from_utf8(raw)
        .unwrap_or_else(|_| panic!("records: line is not UTF-8: {raw:?}"))
        .trim_end_matches('\r');
    if line.is_empty() {
        return (None, used);
    }
    let mut fields = line.split(',');
    let record = (|| {
        let mut int = || fields.next()?.parse::<u64>().ok();
        let (id, a, b) = (int()?, int()?, int()?);
        let mut float = || fields.next()?.parse::<f64>().ok();
        let (c, d) = (float()?, float()?);
        fields.next().is_none().then_some(Record { id, a, b, c, d })
    })();
    match record {
        Some(record) => (Some(record), used),
        None => panic!("records: malformed line {line:?}"),
    }
}

/// Scores one record in `rounds` rounds of arithmetic: `(id, score)`.
fn process_record(record: &Record, rounds: u64) -> (u64, f64) {
    // Python's integers never overflow. Only the low 31 bits of `a` reach the mask and
    // only `b` modulo 65,521 reaches the remainder, so starting from those gives exactly
    // Python's `x` and `y` for any u64 input, with every product below 2^63.
    let (mut x, mut y) = (record.a & 0x7fff_ffff, record.b % 65_521);
    let mut score = 0.0f64;
    for k in 0..rounds {
        x = (x * 1_103_515_245 + 12_345 + k) & 0x7fff_ffff;
        y = (y * 31 + (x >> 16)) % 65_521;
        score += (x % 1000) as f64 * record.c - y as f64 * record.d;
    }
    (record.id, score / rounds as f64)
}

/// Scores every record of `bytes`, a run of whole lines.
fn process_lines(mut bytes: &[u8], rounds: u64) -> Summary {
    let mut summary = Summary::new();
    while let Some(&first) = bytes.first() {
        if first == b'\n' {
            bytes = &bytes[1..];
            continue;
        }
        let (record, used) = match parse_fast(bytes) {
            Some((record, used)) => (Some(record), used),
            None => parse_slow(bytes),
        };
        bytes = &bytes[used..];
        if let Some(record) = record {
            let (id, score) = process_record(&record, rounds);
            summary.records += 1;
            summary.checksum += score as i64;
            summary.offer((score, id));
        }
    }
    summary
}

/// Reads from `offset` until `buf` is full or the file ends; returns the bytes read.
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Reads the block of `len` bytes at `start` and scores the lines that start in it.
fn process_block(file: &File, start: u64, len: usize, rounds: u64) -> Summary {
    let read = |buf: &mut [u8], offset| {
        read_at_most(file, buf, offset).unwrap_or_else(|error| {
            eprintln!("records: reading at byte {offset}: {error}");
            std::process::exit(1)
        })
    };
    // Read from one byte early: a line starts at `start` if that byte is a newline.
    let from = start.saturating_sub(1);
    let end = (start - from) as usize + len; // the block's end, relative to `from`
    let mut buf = vec![0; end + OVERHANG];
    let mut filled = read(&mut buf, from);
    // The first line of the block starts after the first newline (none to skip at 0).
    let first = if start == 0 {
        0
    } else {
        match buf[..filled].iter().position(|&byte| byte == b'\n') {
            Some(newline) => newline + 1,
            None => return Summary::new(),
        }
    };
    // The last line starting before `end` ends at the first newline from `end - 1` on.
    let mut search_from = end - 1;
    let last = loop {
        let from_here = search_from.min(filled);
        if let Some(at) = buf[from_here..filled]
            .iter()
            .position(|&byte| byte == b'\n')
        {
            break from_here + at + 1;
        }
        if filled < buf.len() {
            break filled; // the end of the file
        }
        // A long line: read on.
        search_from = filled;
        buf.resize(buf.len() + OVERHANG.max(buf.len() / 2), 0);
        filled += read(&mut buf[filled..], from + filled as u64);
    };
    if first >= last {
        return Summary::new(); // no line starts in this block
    }
    process_lines(&buf[first..last], rounds)
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
    let mut chunk = CHUNK;
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
    let (file, size) = File::open(&path)
        .and_then(|file| file.metadata().map(|meta| (file, meta.len())))
        .unwrap_or_else(|error| {
            eprintln!("records: cannot open {path}: {error}");
            std::process::exit(1)
        });
    let block = chunk * 32;
    // The generator: the start of each block, produced as the workers ask for work.
    let starts = stream! {
        let mut start = 0;
        while start < size {
            yield start;
            start += block as u64;
        }
    };
    let total = starts
        .par_map_unordered(workers, move |start| {
            process_block(&file, start, block, rounds)
        })
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
