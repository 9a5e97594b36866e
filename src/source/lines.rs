//! `source::lines`: a text file's numbered lines, read as they are pulled.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_core::{FusedStream, Stream};
use tokio::fs::File;
use tokio::io::{AsyncBufRead, BufReader};
use tokio::task::coop;

/// The size of the read buffer: the file is read in blocks of this many bytes.
const READ_BUFFER: usize = 64 * 1024;
/// The longest line kept by default, in bytes (see [`Lines::max_line_bytes`]).
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// One line of a file read by [`lines`]: its number (from 1) and its text, without the
/// line ending (`\n` or `\r\n`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Line {
    /// The line's number in the file, counted from 1.
    pub number: u64,
    /// The line's text, without its `\n` or `\r\n`.
    pub text: String,
}

/// What went wrong reading a file with [`lines`]: the path, the line (where there is
/// one) and the cause.
///
/// Its `Display` names all three, for example
/// `corpus.txt: line 12: invalid UTF-8 at byte 7 of the line`.
#[derive(Debug)]
pub struct LinesError {
    path: PathBuf,
    line: Option<u64>,
    kind: LinesErrorKind,
}

/// The cause of a [`LinesError`].
#[derive(Debug)]
#[non_exhaustive]
pub enum LinesErrorKind {
    /// The file could not be opened (it is missing, or not readable): the stream's only
    /// item.
    Open(io::Error),
    /// Reading failed at the line: the stream's last item.
    Read(io::Error),
    /// The line is not valid UTF-8: its bytes from `valid_up_to` on are not. The line is
    /// skipped and the stream goes on with the next one.
    InvalidUtf8 {
        /// How many bytes at the start of the line are valid UTF-8: the offset (from 0)
        /// of the first invalid byte, which `Display` names as "at byte N of the line".
        valid_up_to: usize,
    },
    /// The line is longer than the limit ([`Lines::max_line_bytes`]): it is skipped
    /// (read to its end without being kept) and the stream goes on with the next one.
    TooLong {
        /// The limit it exceeded, in bytes.
        limit: usize,
    },
}

impl LinesError {
    /// The path of the file, as given to [`lines`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of the line (from 1) the error is about; `None` when the file could
    /// not be opened.
    pub fn line(&self) -> Option<u64> {
        self.line
    }

    /// What went wrong.
    pub fn kind(&self) -> &LinesErrorKind {
        &self.kind
    }

    /// Whether the stream goes on after this error: `true` for a line that is not
    /// UTF-8 or too long, `false` for an I/O error (the stream ends after it).
    pub fn is_recoverable(&self) -> bool {
        matches!(
            self.kind,
            LinesErrorKind::InvalidUtf8 { .. } | LinesErrorKind::TooLong { .. }
        )
    }
}

impl fmt::Display for LinesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ": line {line}")?;
        }
        match &self.kind {
            LinesErrorKind::Open(error) => write!(f, ": cannot open: {error}"),
            LinesErrorKind::Read(error) => write!(f, ": read error: {error}"),
            LinesErrorKind::InvalidUtf8 { valid_up_to } => {
                write!(f, ": invalid UTF-8 at byte {valid_up_to} of the line")
            }
            LinesErrorKind::TooLong { limit } => {
                write!(f, ": longer than {limit} bytes, skipped")
            }
        }
    }
}

impl std::error::Error for LinesError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            LinesErrorKind::Open(error) | LinesErrorKind::Read(error) => Some(error),
            _ => None,
        }
    }
}

type Opening = Pin<Box<dyn Future<Output = io::Result<File>> + Send>>;

enum State {
    /// Not polled yet: the file is opened at the first poll.
    Start,
    Opening(Opening),
    Reading(BufReader<File>),
    Done,
}

/// Stream for [`lines`]: a file's numbered lines, or errors naming the path and line.
///
/// Created by [`lines`]; see there for its promises.
#[must_use = "streams do nothing unless polled"]
pub struct Lines {
    path: PathBuf,
    state: State,
    /// The number of the line being read.
    number: u64,
    /// The line read so far (its bytes up to the newline not yet found).
    line: Vec<u8>,
    /// Bytes of the current line beyond the limit were found: the rest of it is skipped.
    too_long: bool,
    max_line_bytes: usize,
}

/// A text file's lines, numbered from 1, read as they are pulled, in bounded memory
/// whatever the file's size.
///
/// - **Lazy and bounded:** the file is opened at the first poll and read in blocks of
///   64 KiB as lines are pulled; the stream holds one block and the line being read,
///   never more (a line longer than [`max_line_bytes`](Lines::max_line_bytes), 16 MiB
///   unless set, is not kept: see below). Reading is tokio's file I/O, on its blocking
///   pool: the runtime is never blocked.
/// - **Lines:** split at `\n`; a `\r` before it is removed too. The last line may end
///   without a newline; an empty file has no lines.
/// - **Errors are items, naming the path and the line** ([`LinesError`]):
///   - the file cannot be opened (missing, not readable): one error item, then the end;
///   - a line is not valid UTF-8: an error item for that line, then the next lines (a
///     word count over a file with one bad line still counts the rest);
///   - a line is longer than the limit: an error item, the line skipped, then the next;
///   - reading fails: an error item for the line being read, then the end.
///
///   None of them panics, and the stream never ends without saying where it stopped.
/// - **Cooperative and fused:** each line spends one unit of tokio's task budget, as
///   [`iter`](crate::source::iter) does; after its end every poll returns `None`.
///
/// Must be polled within a tokio runtime (its file I/O needs one).
///
/// # Examples
/// ```
/// use flowgate::prelude::*;
/// use flowgate::source::{lines, Line};
/// use futures::{StreamExt, TryStreamExt};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("flowgate-doc-lines-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// let path = dir.join("notes.txt");
/// std::fs::write(&path, "first line\r\nsecond\n\nlast, without a newline")?;
///
/// let all: Vec<Line> = lines(&path).try_collect().await?;
/// assert_eq!(all.len(), 4);
/// assert_eq!(all[0], Line { number: 1, text: "first line".into() });
/// assert_eq!(all[2].text, "");
///
/// // Words per line, counted on 2 threads in chunks of 1,000 lines.
/// let words: usize = lines(&path)
///     .map(|line| line.map(|line| line.text))
///     .try_chunks(1_000)
///     .map_err(|error| error.1)
///     .try_par_map_unordered(2, |chunk: Vec<String>| {
///         Ok(chunk.iter().map(|text| text.split_whitespace().count()).sum::<usize>())
///     })
///     .try_fold(0, |total, n| async move { Ok(total + n) })
///     .await?;
/// assert_eq!(words, 7);
///
/// // Report the bad lines and keep the others (`try_` adapters stop at the first error).
/// let mut bad = Vec::new();
/// let good: Vec<String> = lines(&path)
///     .filter_map(|line| {
///         let text = match line {
///             Ok(line) => Some(line.text),
///             Err(error) if error.is_recoverable() => {
///                 bad.push(error.to_string());
///                 None
///             }
///             Err(error) => panic!("{error}"), // the file cannot be read: give up
///         };
///         std::future::ready(text)
///     })
///     .collect()
///     .await;
/// assert_eq!((good.len(), bad.len()), (4, 0));
///
/// // A missing file: one error naming the path.
/// let missing: Vec<_> = lines(dir.join("missing.txt")).collect().await;
/// let error = missing[0].as_ref().unwrap_err();
/// assert!(error.to_string().ends_with("missing.txt: cannot open: No such file or directory (os error 2)"));
/// assert_eq!(missing.len(), 1);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
pub fn lines(path: impl AsRef<Path>) -> Lines {
    Lines {
        path: path.as_ref().to_path_buf(),
        state: State::Start,
        number: 1,
        line: Vec::new(),
        too_long: false,
        max_line_bytes: MAX_LINE_BYTES,
    }
}

impl Lines {
    /// Sets the longest line kept, in bytes (16 MiB unless set). A longer line is read
    /// to its end without being kept and reported as
    /// [`LinesErrorKind::TooLong`]; the stream goes on with the next line. This bounds
    /// the memory of a file that has no newlines at all.
    ///
    /// # Panics
    /// If `bytes` is zero.
    #[track_caller]
    pub fn max_line_bytes(mut self, bytes: usize) -> Self {
        assert!(
            bytes > 0,
            "flowgate: `max_line_bytes` needs `bytes` above zero on `lines`"
        );
        self.max_line_bytes = bytes;
        self
    }

    /// The path of the file, as given to [`lines`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, line: Option<u64>, kind: LinesErrorKind) -> LinesError {
        LinesError {
            path: self.path.clone(),
            line,
            kind,
        }
    }

    /// The line read so far is complete: it becomes an item (or an error item).
    fn take_line(&mut self) -> Result<Line, LinesError> {
        let number = self.number;
        self.number += 1;
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        if std::mem::take(&mut self.too_long) || self.line.len() > self.max_line_bytes {
            self.line = Vec::new();
            return Err(self.error(
                Some(number),
                LinesErrorKind::TooLong {
                    limit: self.max_line_bytes,
                },
            ));
        }
        let bytes = std::mem::take(&mut self.line);
        match String::from_utf8(bytes) {
            Ok(text) => Ok(Line { number, text }),
            Err(error) => {
                let valid_up_to = error.utf8_error().valid_up_to();
                // Keep the allocation for the next line.
                self.line = error.into_bytes();
                self.line.clear();
                Err(self.error(Some(number), LinesErrorKind::InvalidUtf8 { valid_up_to }))
            }
        }
    }

    /// Reads on until a line ends (or the file does).
    fn poll_line(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Line, LinesError>>> {
        loop {
            let State::Reading(reader) = &mut self.state else {
                unreachable!("flowgate: lines are read only from an open file");
            };
            let mut reader = Pin::new(reader);
            let available = match ready!(reader.as_mut().poll_fill_buf(cx)) {
                Ok(available) => available,
                Err(error) => {
                    self.state = State::Done;
                    let number = self.number;
                    return Poll::Ready(Some(Err(
                        self.error(Some(number), LinesErrorKind::Read(error))
                    )));
                }
            };
            if available.is_empty() {
                // The end of the file: a last line without a newline, then the end.
                self.state = State::Done;
                if self.line.is_empty() && !self.too_long {
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(self.take_line()));
            }
            let newline = find_newline(available);
            let part = newline.unwrap_or(available.len());
            append(
                &mut self.line,
                &mut self.too_long,
                self.max_line_bytes,
                &available[..part],
            );
            match newline {
                Some(at) => {
                    reader.consume(at + 1);
                    return Poll::Ready(Some(self.take_line()));
                }
                None => reader.consume(part),
            }
        }
    }
}

/// The position of the first `\n` in `bytes`: eight bytes at a time (a byte of the word
/// is zero after the XOR exactly where a newline is; the lowest flagged byte is the
/// first one, as a borrow only flags bytes above a zero byte), the tail one at a time.
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().expect("chunks of eight bytes"));
        let zeroed = word ^ NEWLINES;
        let flags = zeroed.wrapping_sub(ONES) & !zeroed & HIGHS;
        if flags != 0 {
            return Some(offset + (flags.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    let tail = words.remainder();
    tail.iter()
        .position(|&byte| byte == b'\n')
        .map(|at| offset + at)
}

/// Adds `bytes` to the line read so far, unless that makes it longer than `limit` (one
/// byte more is allowed, for a `\r` that the line ending removes): then the line is
/// dropped and marked too long, and the rest of it is not kept.
fn append(line: &mut Vec<u8>, too_long: &mut bool, limit: usize, bytes: &[u8]) {
    if *too_long {
        return;
    }
    if line.len() + bytes.len() > limit.saturating_add(1) {
        *too_long = true;
        *line = Vec::new();
    } else {
        line.extend_from_slice(bytes);
    }
}

impl fmt::Debug for Lines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Start => "not opened",
            State::Opening(_) => "opening",
            State::Reading(_) => "reading",
            State::Done => "done",
        };
        f.debug_struct("Lines")
            .field("path", &self.path)
            .field("state", &state)
            .field("next_line", &self.number)
            .field("max_line_bytes", &self.max_line_bytes)
            .finish_non_exhaustive()
    }
}

impl Stream for Lines {
    type Item = Result<Line, LinesError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Start => {
                    let path = this.path.clone();
                    this.state = State::Opening(Box::pin(File::open(path)));
                }
                State::Opening(opening) => match ready!(opening.as_mut().poll(cx)) {
                    Ok(file) => {
                        this.state = State::Reading(BufReader::with_capacity(READ_BUFFER, file))
                    }
                    Err(error) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(
                            this.error(None, LinesErrorKind::Open(error))
                        )));
                    }
                },
                State::Reading(_) => {
                    let budget = ready!(coop::poll_proceed(cx));
                    let line = ready!(this.poll_line(cx));
                    budget.made_progress();
                    return Poll::Ready(line);
                }
            }
        }
    }
}

impl FusedStream for Lines {
    fn is_terminated(&self) -> bool {
        matches!(self.state, State::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::find_newline;

    #[test]
    fn the_first_newline_is_found_at_every_offset_and_among_lookalikes() {
        for len in 0..40 {
            for at in 0..len {
                // Bytes that differ from `\n` by one bit, and 0x0b just above it.
                let mut bytes: Vec<u8> =
                    (0..len).map(|i| [0x0b, 0x8a, 0x0e, 0x09][i % 4]).collect();
                assert_eq!(find_newline(&bytes), None, "len {len}");
                bytes[at] = b'\n';
                if at + 1 < len {
                    bytes[at + 1] = b'\n';
                }
                assert_eq!(find_newline(&bytes), Some(at), "len {len}, at {at}");
            }
        }
    }
}
