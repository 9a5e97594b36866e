//! [`WriteSink`]: items encoded into a bounded buffer, written to an `AsyncWrite`.

use std::fmt::{self, Display};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_sink::Sink;
use pin_project_lite::pin_project;
use tokio::io::AsyncWrite;

use super::buffer::Buffer;
use super::encode::{Encode, Lines};

/// The buffer size of a new [`WriteSink`]: 64 KiB.
pub const DEFAULT_BUFFER: usize = 64 * 1024;

/// A sink that writes each item as a line: its `Display` form, then `\n`.
///
/// A `Sink<T>` for one `T: Display`, usually inferred from what it is fed (name it as
/// `lines::<T, _>(writer)` otherwise). It buffers up to 64 KiB (see
/// [`WriteSink::buffer`]) and writes to `writer` only when the buffer is full, when it is
/// flushed and when it is closed; its error type is `std::io::Error`.
/// See [`WriteSink`] for the bound on its buffer and what happens after an error, and
/// the [module docs](crate::sink) for files, standard output and channels.
///
/// # Examples
/// ```
/// use flowgate::sink;
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let mut out = sink::lines(Vec::new());
/// // `forward` sends every item, then closes the sink: the buffer is written out.
/// futures::stream::iter([1.5, 2.0, 42.25]).map(Ok).forward(&mut out).await?;
/// assert_eq!(out.written(), 3);
/// assert_eq!(out.into_inner(), b"1.5\n2\n42.25\n");
/// # Ok(())
/// # }
/// ```
pub fn lines<T: Display, W: AsyncWrite>(writer: W) -> WriteSink<W, Lines<T>> {
    WriteSink::new(writer, Lines::new())
}

/// A sink that writes each item through `encode`, which appends the item's bytes to the
/// sink's buffer.
///
/// `encode(&item, out)` gets the item and the buffer, and must only append to it (the
/// buffer also holds earlier items not yet written). An error from `encode` is the
/// sink's error for that item: the bytes it appended are removed, the item is not
/// written, and the sink stays usable (the writer did not fail; items sent before are
/// still written by a flush or a close). Anything `io::Write` can write to a `Vec<u8>`
/// works: `writeln!`, a CSV writer, `serde_json::to_writer(&mut *out, &item)` and a
/// newline. Otherwise the sink is the same as [`lines`]: see [`WriteSink`].
///
/// The closure's item type is often inferred from the stream; when it is not, annotate
/// it (`|row: &Row, out: &mut Vec<u8>| ...`).
///
/// # Examples
/// ```
/// use std::io::{self, Write};
/// use flowgate::sink;
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> io::Result<()> {
/// let rows = [("apples", 3), ("pears", 5)];
/// let mut out = sink::encoded(Vec::new(), |(name, count): &(&str, u32), out: &mut Vec<u8>| {
///     writeln!(out, "{name},{count}")
/// });
/// futures::stream::iter(rows).map(Ok).forward(&mut out).await?;
/// assert_eq!(out.get_ref(), b"apples,3\npears,5\n");
///
/// // An encoder's error fails its item only: nothing of it is written.
/// let mut out = sink::encoded(Vec::new(), |n: &i32, out: &mut Vec<u8>| {
///     write!(out, "{n}")?;
///     if *n < 0 {
///         return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{n} is negative")));
///     }
///     writeln!(out)
/// });
/// let error = futures::stream::iter([1, -2, 3]).map(Ok).forward(&mut out).await.unwrap_err();
/// assert_eq!(error.to_string(), "-2 is negative");
/// futures::SinkExt::close(&mut out).await?; // writes the items sent before the error
/// assert_eq!(out.into_inner(), b"1\n");
/// # Ok(())
/// # }
/// ```
pub fn encoded<T, W, F>(writer: W, encode: F) -> WriteSink<W, F>
where
    T: ?Sized,
    W: AsyncWrite,
    F: FnMut(&T, &mut Vec<u8>) -> io::Result<()>,
{
    WriteSink::new(writer, encode)
}

pin_project! {
    /// Sink for [`lines`] and [`encoded`]: encodes items into a bounded buffer and writes
    /// it to an [`AsyncWrite`].
    ///
    /// A `Sink<T>` for every `T` its encoder `E` encodes ([`Encode<T>`]), with
    /// `std::io::Error` as its error, so a `TryStream<Error = io::Error>` can
    /// [`forward`](https://docs.rs/futures/latest/futures/stream/trait.StreamExt.html#method.forward)
    /// into it.
    ///
    /// # What each call does
    ///
    /// - `start_send` only encodes the item into the buffer; it never writes.
    /// - `poll_ready` is ready at once while the buffer holds fewer than `bytes` (see
    ///   [`buffer`](WriteSink::buffer)); otherwise it writes the buffer out, all of it
    ///   unless the writer makes it wait, and is ready once fewer than `bytes` are left.
    /// - `poll_flush` writes the whole buffer out, then flushes the writer.
    /// - `poll_close` writes the whole buffer out, flushes the writer, then shuts it down
    ///   (`poll_shutdown`). After a close the sink takes no more items (they are refused
    ///   with an error); closing again does nothing.
    ///
    /// `forward` closes the sink when the stream ends; `send`, `send_all` and
    /// `dead_letters` flush it. **Dropping the sink does not write its buffer**, as with
    /// any buffered writer: close or flush it first. To read [`written`](WriteSink::written)
    /// after a run, forward into `&mut sink`.
    ///
    /// # Bounded buffering
    ///
    /// With `bytes` the buffer size and `n` the length of the longest encoding of one
    /// item, the buffer never holds more than **`bytes - 1 + n`** bytes: `poll_ready`
    /// writes it out whenever it holds `bytes` or more, so it holds at most `bytes - 1`
    /// when the next item is encoded. No single write offers the writer more than that
    /// either. This holds under the `Sink` protocol (`poll_ready` before each
    /// `start_send`), which `forward`, `send`, `feed` and `send_all` follow. The record of
    /// item boundaries that makes `written` exact takes at most one entry per buffered
    /// byte. Nothing is written before the buffer fills, a flush or a close.
    ///
    /// # Errors
    ///
    /// - An error of the **writer** (from `poll_write`, `poll_flush` or `poll_shutdown`)
    ///   is returned as it is, the same kind and message, and fails the sink for good. A
    ///   writer that accepts no bytes (`Ok(0)`) while bytes wait is an
    ///   `io::ErrorKind::WriteZero` error. The items still in the buffer are discarded
    ///   and never count as written; the output may end with part of an item (the writer
    ///   had accepted it), but [`written`](WriteSink::written) counts whole items only,
    ///   so a run can resume from there. Every later call (`poll_ready`, `start_send`,
    ///   `poll_flush`, `poll_close`) returns an error **of the same kind**, whose message
    ///   says that the sink failed earlier, repeats the first message and says how many
    ///   items were written: nothing is accepted and dropped silently.
    /// - An error of the **encoder** fails that item only (see [`encoded`]).
    ///
    /// # Panics
    ///
    /// A panic of the encoder or the writer propagates to the caller. The sink panics
    /// itself only on a broken contract: a writer that reports writing more bytes than
    /// it was offered, or an encoder that removes bytes it had not appended.
    ///
    /// The sink is `Send` and `Sync` when the writer and the encoder are, and `Unpin`
    /// when the writer is.
    #[must_use = "sinks do nothing unless polled"]
    pub struct WriteSink<W, E> {
        #[pin]
        writer: W,
        encoder: E,
        buffer: Buffer,
        // The buffer size: `poll_ready` writes the buffer out once it holds this many.
        capacity: usize,
        state: State,
    }
}

/// Where a sink is in its life.
#[derive(Debug)]
enum State {
    Open,
    /// `poll_close` was called; `flushed` once the writer was flushed for it.
    Closing {
        flushed: bool,
    },
    /// The writer was shut down.
    Closed,
    /// The writer failed, with this error (its kind and message kept, to repeat them).
    Failed {
        kind: io::ErrorKind,
        message: String,
    },
}

impl<W, E> WriteSink<W, E> {
    /// A sink that writes to `writer` through `encoder`, any [`Encode`] implementation
    /// (the [`Lines`] marker, a closure, or a type of your own), with the default buffer
    /// of 64 KiB ([`DEFAULT_BUFFER`]).
    ///
    /// [`lines`] and [`encoded`] call it; an example is on [`Encode`].
    pub fn new(writer: W, encoder: E) -> Self {
        WriteSink {
            writer,
            encoder,
            buffer: Buffer::default(),
            capacity: DEFAULT_BUFFER,
            state: State::Open,
        }
    }

    /// Sets the buffer size: `poll_ready` writes the buffer out once it holds at least
    /// `bytes` bytes, so the buffer never holds more than `bytes - 1` plus one item's
    /// encoding (see [Bounded buffering](WriteSink#bounded-buffering)). The default is
    /// 64 KiB. `buffer(1)` writes every item out before the next is encoded.
    ///
    /// # Panics
    /// Panics if `bytes` is 0, naming `buffer`.
    ///
    /// # Examples
    /// ```
    /// use flowgate::sink;
    /// use futures::SinkExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let mut out = sink::lines(Vec::new()).buffer(4);
    /// out.feed("ab").await?; // 3 bytes buffered, nothing written
    /// out.feed("cd").await?; // 3 < 4: ready at once, 6 bytes buffered
    /// assert_eq!((out.get_ref().len(), out.written()), (0, 0));
    /// out.feed("ef").await?; // 6 >= 4: the buffer is written out first
    /// assert_eq!((out.get_ref().as_slice(), out.written()), (&b"ab\ncd\n"[..], 2));
    /// # Ok(())
    /// # }
    /// ```
    #[track_caller]
    pub fn buffer(mut self, bytes: usize) -> Self {
        if bytes == 0 {
            panic!("flowgate: `buffer` needs a size of at least 1 byte on a `WriteSink`, got 0");
        }
        self.capacity = bytes;
        self
    }

    /// Items whose every byte the writer has accepted, exact even when the writer takes
    /// part of an item at a time. Items encoded but still (even partly) in the buffer do
    /// not count, nor do items discarded when the writer failed.
    pub fn written(&self) -> u64 {
        self.buffer.written()
    }

    /// The writer.
    pub fn get_ref(&self) -> &W {
        &self.writer
    }

    /// The writer, mutably. Writing to it directly puts those bytes before the ones still
    /// in the sink's buffer: flush the sink first.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.writer
    }

    /// The writer, pinned. Writing to it directly puts those bytes before the ones still
    /// in the sink's buffer: flush the sink first.
    pub fn get_pin_mut(self: Pin<&mut Self>) -> Pin<&mut W> {
        self.project().writer
    }

    /// Gives the writer back. Bytes still in the buffer are dropped, not written: flush
    /// or close the sink first.
    pub fn into_inner(self) -> W {
        self.writer
    }
}

impl<W: AsyncWrite, E> WriteSink<W, E> {
    /// Refuses new items once the sink is closing, closed or failed.
    fn check_open(&self) -> io::Result<()> {
        if let Some(error) = self.failure() {
            return Err(error);
        }
        match self.state {
            State::Open => Ok(()),
            _ => Err(io::Error::other(
                "the sink was closed and takes no more items",
            )),
        }
    }

    /// The error every call returns once the writer has failed; `None` before.
    fn failure(&self) -> Option<io::Error> {
        let State::Failed { kind, message } = &self.state else {
            return None;
        };
        Some(io::Error::new(
            *kind,
            format!(
                "the sink failed earlier and writes nothing more ({message}); {} items were \
                 written",
                self.buffer.written()
            ),
        ))
    }

    /// Writes the whole buffer out. On a writer's error (or `Ok(0)`) the sink fails.
    fn poll_write_buffer(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        while !this.buffer.is_empty() {
            let wrote = ready!(this.writer.as_mut().poll_write(cx, this.buffer.unwritten()));
            let error = match wrote {
                Ok(0) => io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!(
                        "the writer accepted none of the {} bytes it was offered",
                        this.buffer.len()
                    ),
                ),
                Ok(n) => {
                    this.buffer.advance(n);
                    continue;
                }
                Err(error) => error,
            };
            return Poll::Ready(Err(fail(this.state, this.buffer, error)));
        }
        Poll::Ready(Ok(()))
    }

    /// Writes the buffer out and flushes the writer.
    fn poll_write_and_flush(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_write_buffer(cx))?;
        let this = self.project();
        match ready!(this.writer.poll_flush(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(error) => Poll::Ready(Err(fail(this.state, this.buffer, error))),
        }
    }
}

/// Fails the sink with the writer's `error`, which is returned to report it once as it
/// is; the buffered items are discarded.
fn fail(state: &mut State, buffer: &mut Buffer, error: io::Error) -> io::Error {
    *state = State::Failed {
        kind: error.kind(),
        message: error.to_string(),
    };
    buffer.discard();
    error
}

impl<T, W, E> Sink<T> for WriteSink<W, E>
where
    W: AsyncWrite,
    E: Encode<T>,
{
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_open()?;
        if self.buffer.len() >= self.capacity {
            ready!(self.poll_write_buffer(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: T) -> io::Result<()> {
        self.check_open()?;
        let this = self.project();
        let encoder = this.encoder;
        this.buffer.push_item(|out| encoder.encode(&item, out))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(error) = self.failure() {
            return Poll::Ready(Err(error));
        }
        if let State::Closed = self.state {
            return Poll::Ready(Ok(()));
        }
        self.poll_write_and_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(error) = self.failure() {
            return Poll::Ready(Err(error));
        }
        let flushed = match self.state {
            State::Closed => return Poll::Ready(Ok(())),
            State::Closing { flushed } => flushed,
            _ => false,
        };
        if !flushed {
            // Closing from here on: the sink refuses items even if this close is dropped
            // before it completes.
            *self.as_mut().project().state = State::Closing { flushed: false };
            ready!(self.as_mut().poll_write_and_flush(cx))?;
            *self.as_mut().project().state = State::Closing { flushed: true };
        }
        let this = self.project();
        match ready!(this.writer.poll_shutdown(cx)) {
            Ok(()) => {
                *this.state = State::Closed;
                Poll::Ready(Ok(()))
            }
            Err(error) => Poll::Ready(Err(fail(this.state, this.buffer, error))),
        }
    }
}

impl<W: fmt::Debug, E> fmt::Debug for WriteSink<W, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteSink")
            .field("writer", &self.writer)
            .field("buffered_bytes", &self.buffer.len())
            .field("buffer_size", &self.capacity)
            .field("written", &self.buffer.written())
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    /// A writer that fails every call with `BrokenPipe`.
    struct Broken;

    impl AsyncWrite for Broken {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "pipe gone")))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_failure_is_reported_once_as_it_is_then_repeated_with_its_kind() {
        let mut sink = lines(Broken);
        let mut sink = Pin::new(&mut sink);
        sink.as_mut().start_send("a").unwrap();
        let first = Sink::<&str>::poll_flush(sink.as_mut(), &mut cx());
        let Poll::Ready(Err(first)) = first else {
            panic!("the flush should fail")
        };
        assert_eq!(
            (first.kind(), first.to_string()),
            (io::ErrorKind::BrokenPipe, "pipe gone".into())
        );
        assert_eq!(sink.buffer.len(), 0, "the unwritten item is discarded");
        let later = sink.as_mut().start_send("b").unwrap_err();
        assert_eq!(later.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(
            later.to_string(),
            "the sink failed earlier and writes nothing more (pipe gone); 0 items were written"
        );
        let Poll::Ready(Err(close)) = Sink::<&str>::poll_close(sink.as_mut(), &mut cx()) else {
            panic!("a failed sink does not close")
        };
        assert_eq!(close.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn a_closed_sink_refuses_items_and_closes_again_at_once() {
        let mut sink = lines(Vec::new());
        let mut sink = Pin::new(&mut sink);
        sink.as_mut().start_send(1).unwrap();
        assert!(matches!(
            Sink::<i32>::poll_close(sink.as_mut(), &mut cx()),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(sink.get_ref(), b"1\n");
        let refused = Sink::<i32>::poll_ready(sink.as_mut(), &mut cx());
        let Poll::Ready(Err(refused)) = refused else {
            panic!("a closed sink is not ready")
        };
        assert_eq!(
            refused.to_string(),
            "the sink was closed and takes no more items"
        );
        assert!(sink.as_mut().start_send(2).is_err());
        assert!(matches!(
            Sink::<i32>::poll_close(sink.as_mut(), &mut cx()),
            Poll::Ready(Ok(()))
        ));
        assert!(matches!(
            Sink::<i32>::poll_flush(sink.as_mut(), &mut cx()),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(sink.written(), 1);
    }

    #[test]
    #[should_panic(expected = "`buffer` needs a size of at least 1 byte")]
    fn a_zero_buffer_panics() {
        let _ = lines::<u32, _>(Vec::new()).buffer(0);
    }

    #[test]
    fn debug_names_the_state() {
        let sink = lines::<u32, _>(Vec::new()).buffer(16);
        assert_eq!(
            format!("{sink:?}"),
            "WriteSink { writer: [], buffered_bytes: 0, buffer_size: 16, written: 0, state: Open, .. }"
        );
    }
}
