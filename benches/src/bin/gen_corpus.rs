//! Writes the input files of the Python-recipe comparison (`benches/run_recipe.sh`).
//!
//! ```text
//! gen_corpus words N PATH     # N lines of words, as examples/wordcount.rs generates them
//! gen_corpus records N PATH   # N CSV records "id,a,b,c,d"
//! ```
//!
//! Both files are deterministic: the same N always gives the same bytes. The word corpus
//! uses the generator of `examples/wordcount.rs` (a fixed vocabulary of 10,000 words,
//! log-uniform ranks, 4 to 15 words a line), so `wordcount PATH` on a file of N lines
//! prints the same counts as `wordcount --lines N`.

use std::fs::File;
use std::io::{BufWriter, Write};

const VOCABULARY: usize = 10_000;

/// xorshift64*: small, fast and deterministic.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1) with 53 bits.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// The word of each frequency rank, spelled in base 16 with one syllable per digit,
/// least significant first.
fn vocabulary() -> Vec<String> {
    const SYLLABLES: [&str; 16] = [
        "ka", "be", "mi", "zo", "ru", "ta", "no", "shi", "ve", "lo", "pa", "du", "ge", "fi", "ya",
        "wu",
    ];
    let mut words = Vec::with_capacity(VOCABULARY);
    for rank in 0..VOCABULARY {
        let mut digits = rank + 1;
        let mut word = String::new();
        while digits != 0 {
            word += SYLLABLES[digits & 15];
            digits >>= 4;
        }
        words.push(word);
    }
    words
}

fn write_words(lines: u64, out: &mut impl Write) -> std::io::Result<()> {
    let words = vocabulary();
    let ln_v = (VOCABULARY as f64).ln();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut line = String::with_capacity(128);
    for _ in 0..lines {
        line.clear();
        let count = 4 + rng.next() % 12;
        for k in 0..count {
            if k != 0 {
                line.push(' ');
            }
            let rank = ((rng.unit() * ln_v).exp() as usize - 1).min(VOCABULARY - 1);
            line.push_str(&words[rank]);
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    Ok(())
}

/// A fixed-point number with 4 decimals, written exactly (no float formatting).
fn decimal(ten_thousandths: i64) -> String {
    let sign = if ten_thousandths < 0 { "-" } else { "" };
    let abs = ten_thousandths.unsigned_abs();
    format!("{sign}{}.{:04}", abs / 10_000, abs % 10_000)
}

/// Records `id,a,b,c,d`: `a`, `b` whole numbers below 1,000,000; `c` in [0, 100) and
/// `d` in [-50, 50), with 4 decimals.
fn write_records(records: u64, out: &mut impl Write) -> std::io::Result<()> {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for id in 0..records {
        let a = rng.next() % 1_000_000;
        let b = rng.next() % 1_000_000;
        let c = (rng.next() % 1_000_000) as i64;
        let d = (rng.next() % 1_000_000) as i64 - 500_000;
        writeln!(out, "{id},{a},{b},{},{}", decimal(c), decimal(d))?;
    }
    Ok(())
}

fn usage() -> ! {
    eprintln!("usage: gen_corpus words|records N PATH");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, n, path] = args.as_slice() else {
        usage()
    };
    let n: u64 = n.replace('_', "").parse().unwrap_or_else(|_| usage());
    let file = File::create(path).unwrap_or_else(|error| {
        eprintln!("gen_corpus: cannot create {path}: {error}");
        std::process::exit(1)
    });
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let written = match kind.as_str() {
        "words" => write_words(n, &mut out),
        "records" => write_records(n, &mut out),
        _ => usage(),
    };
    if let Err(error) = written.and_then(|()| out.flush()) {
        eprintln!("gen_corpus: writing {path}: {error}");
        std::process::exit(1)
    }
}
