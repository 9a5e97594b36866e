//! The word counting shared by the wordcount examples: the generated corpus and the
//! counting of one block of lines.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use flowgate::prelude::*;
use futures::stream::BoxStream;
use futures::StreamExt;

/// Distinct words in the generated corpus.
pub const VOCABULARY: usize = 10_000;

/// FNV-1a: short words hash faster with it than with the default SipHash.
#[derive(Default)]
pub struct Fnv(u64);

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

pub type Counts<K> = HashMap<K, u64, BuildHasherDefault<Fnv>>;

/// A deterministic word for each frequency rank: "ka", "kabe", "mizo", ...
pub fn vocabulary() -> Vec<String> {
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
pub struct Rng(u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `lines` generated lines of 4 to 15 words, in blocks of whole lines of about
/// `block_bytes` (at most a line more), each produced when it is pulled. Word ranks are
/// log-uniform, so frequencies fall off like Zipf's law.
pub fn generated(lines: u64, block_bytes: usize) -> BoxStream<'static, Vec<u8>> {
    let words = vocabulary();
    let ln_vocabulary = (VOCABULARY as f64).ln();
    stream! {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut block = String::with_capacity(block_bytes + 256);
        for _ in 0..lines {
            let count = 4 + rng.next() % 12;
            for i in 0..count {
                if i > 0 {
                    block.push(' ');
                }
                let rank = (rng.unit() * ln_vocabulary).exp() as usize - 1;
                block.push_str(&words[rank.min(VOCABULARY - 1)]);
            }
            block.push('\n');
            if block.len() >= block_bytes {
                let full = std::mem::replace(&mut block, String::with_capacity(block_bytes + 256));
                yield full.into_bytes();
            }
        }
        if !block.is_empty() {
            yield block.into_bytes();
        }
    }
    .boxed()
}

/// The bytes that separate words: ASCII white space as `tr`'s `[:space:]` in the C
/// locale (space, tab, newline, vertical tab, form feed, carriage return).
pub const SPACE: [bool; 256] = {
    let mut space = [false; 256];
    let mut i = 0;
    while i < 6 {
        space[[b' ', b'\t', b'\n', 0x0B, 0x0C, b'\r'][i] as usize] = true;
        i += 1;
    }
    space
};

/// Counts the words of `text` into `counts`, in one pass over its bytes (the separators
/// are ASCII, so every cut falls between characters).
pub fn count_words<'a>(text: &'a str, counts: &mut Counts<&'a str>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && SPACE[usize::from(bytes[i])] {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && !SPACE[usize::from(bytes[i])] {
            i += 1;
        }
        if i > start {
            *counts.entry(&text[start..i]).or_insert(0) += 1;
        }
    }
}

pub fn owned(counts: Counts<&str>) -> Counts<String> {
    counts
        .into_iter()
        .map(|(word, n)| (word.to_string(), n))
        .collect()
}

/// Counts the lines and the words of one block of whole lines (runs on a blocking-pool
/// thread).
pub fn count_block(block: Vec<u8>) -> (usize, Counts<String>) {
    let text = std::str::from_utf8(&block).expect("blocks are made of text lines");
    let mut counts = Counts::default();
    count_words(text, &mut counts);
    let lines = block.iter().filter(|&&byte| byte == b'\n').count()
        + usize::from(block.last().is_some_and(|&byte| byte != b'\n'));
    (lines, owned(counts))
}

/// Prints the `top` most frequent words with their counts, most frequent first (ties in
/// byte order), after the number of distinct words.
pub fn print_top(total: &Counts<String>, top: usize) {
    let mut ranked: Vec<(&String, &u64)> = total.iter().collect();
    ranked.sort_unstable_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    println!("top {top} of {} distinct words:", total.len());
    for (word, n) in ranked.iter().take(top) {
        println!("{n:>12}  {word}");
    }
}
