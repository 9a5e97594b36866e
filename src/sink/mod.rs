//! Where results go.
//!
//! A pipeline's results go wherever a `futures::Sink` takes them: `forward` a stream of
//! `Ok` items into one, or give one to a failure policy's `dead_letters`. This module
//! adds the sink for bytes, [`WriteSink`], which writes items to any tokio
//! [`AsyncWrite`](tokio::io::AsyncWrite) (a file, standard output, a socket, a
//! `Vec<u8>`) through a bounded buffer:
//!
//! | sink | writes each item as | for |
//! |---|---|---|
//! | [`lines`] | its `Display` form and `\n` | logs, plain text, one value per line |
//! | [`encoded`] | what your closure appends to the buffer | CSV, JSON lines, any format |
//! | [`WriteSink::new`] | what your [`Encode`] implementation appends | an encoder with a name or state |
//!
//! What every `WriteSink` promises (details on [`WriteSink`]):
//!
//! - **Bounded buffering.** The buffer never holds more than `bytes - 1` plus one item's
//!   encoding, `bytes` being its size ([`WriteSink::buffer`], 64 KiB by default), and it
//!   is written out whenever it fills.
//! - **A final flush.** A close writes the buffer out, flushes the writer and shuts it
//!   down; `forward` closes the sink at the end of the stream, and flushes it whenever
//!   the stream has nothing ready, so output never waits behind a quiet stream. Dropping
//!   the sink without a flush or a close loses its buffer, as with any buffered writer.
//! - **An I/O error ends the run** with that error, as the writer returned it. The sink
//!   is failed from then on: every later call returns an error, and
//!   [`written`](WriteSink::written) says how many whole items were written, so a run can
//!   resume from there. Nothing is accepted and dropped silently.
//!
//! Its error type is `std::io::Error`. A stream with another error type converts it
//! first: `.map_err(std::io::Error::other)` (for a `flowgate::Error<E>` with
//! `E: std::error::Error + Send + Sync + 'static`, for one).
//!
//! # Standard output
//!
//! ```
//! use flowgate::sink;
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let squares = futures::stream::iter(1..=3u32).map(|n| n * n);
//! squares.map(Ok).forward(sink::lines(tokio::io::stdout())).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # A file
//!
//! tokio's `File` writes on a blocking thread: the sink's buffer turns many small items
//! into few large writes, and its close waits for the last one to land.
//!
//! ```
//! use flowgate::sink;
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let path = std::env::temp_dir().join(format!("flowgate-sink-doc-{}.txt", std::process::id()));
//! let file = tokio::fs::File::create(&path).await?;
//! let records = flowgate::source::iter(0..1_000u32).map(|i| format!("record {i}"));
//! records.map(Ok).forward(sink::lines(file)).await?;
//!
//! let text = tokio::fs::read_to_string(&path).await?;
//! assert_eq!(text.lines().count(), 1_000);
//! assert_eq!(text.lines().last(), Some("record 999"));
//! # tokio::fs::remove_file(&path).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # A channel
//!
//! A tokio `mpsc::Sender` is no `Sink`; tokio-util's
//! [`PollSender`](tokio_util::sync::PollSender) makes it one (its error,
//! `PollSendError`, says the receiver is gone). No adapter is needed here:
//!
//! ```
//! use futures::StreamExt;
//! use tokio_util::sync::{PollSendError, PollSender};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (tx, mut rx) = tokio::sync::mpsc::channel(8);
//! let results = futures::stream::iter(["a", "b", "c"]).map(Ok::<_, PollSendError<&str>>);
//! let run = tokio::spawn(results.forward(PollSender::new(tx)));
//!
//! let mut received = Vec::new();
//! while let Some(item) = rx.recv().await {
//!     received.push(item);
//! }
//! assert_eq!(received, ["a", "b", "c"]);
//! run.await.unwrap().unwrap();
//! # }
//! ```
//!
//! # Dead letters
//!
//! `dead_letters(sink)` (on the `try_` operators, see
//! [`Guarded::dead_letters`](crate::concurrent::Guarded::dead_letters)) takes any
//! `futures::Sink`, a `WriteSink` among them: the failures go to a file while the
//! successes flow on. `dead_letters` flushes its sink at the end of the run but does not
//! close it; pass `&mut sink` to close it yourself, or read it afterwards.
//!
//! ```
//! use std::io::Write;
//! use flowgate::policy::DeadLetter;
//! use flowgate::prelude::*;
//! use flowgate::sink;
//! use futures::TryStreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let mut failures = sink::encoded(Vec::new(), |letter: &DeadLetter<&str, String>, out: &mut Vec<u8>| {
//!     writeln!(out, "{}", letter.error)
//! });
//! let ok: Vec<u32> = flowgate::source::iter(["1", "x", "3"].map(Ok::<&str, String>))
//!     .try_map_concurrent(2, |line| async move { line.parse::<u32>().map_err(|e| e.to_string()) })
//!     .dead_letters(&mut failures)
//!     .try_collect()
//!     .await?;
//! assert_eq!(ok, [1, 3]);
//! assert_eq!(failures.written(), 1);
//! assert_eq!(failures.get_ref(), b"item 1 failed: invalid digit found in string\n");
//! # Ok(())
//! # }
//! ```

mod buffer;
mod encode;
mod write;

pub use encode::{Encode, Lines};
pub use write::{encoded, lines, WriteSink, DEFAULT_BUFFER};
