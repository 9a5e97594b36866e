//! A scripted `AsyncWrite` that records what the sink does to it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::AsyncWrite;

/// What a [`Recorder`] was asked to do, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A `poll_write` that accepted this many bytes.
    Write(usize),
    Flush,
    Shutdown,
}

/// A writer that records every call, and can be told to accept few bytes per call, to
/// fail after some bytes, to accept nothing, or to stay pending until granted calls.
#[derive(Debug, Default)]
pub struct Recorder {
    /// The bytes accepted, in order.
    pub out: Vec<u8>,
    /// The size of the buffer offered to each `poll_write` that got past the gate.
    pub offered: Vec<usize>,
    pub events: Vec<Event>,
    per_call: Option<usize>,
    fail_at: Option<(usize, io::ErrorKind, &'static str)>,
    fail_flush: Option<(io::ErrorKind, &'static str)>,
    accepts_nothing: bool,
    /// `poll_write` calls allowed before it returns `Pending`; `None` for no gate.
    gate: Option<usize>,
    waker: Option<Waker>,
    /// Every `k`-th `poll_write` call returns `Pending` and wakes its task at once.
    pending_every: Option<usize>,
    calls: usize,
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts at most `bytes` bytes per `poll_write`.
    pub fn per_call(mut self, bytes: usize) -> Self {
        self.per_call = Some(bytes);
        self
    }

    /// Accepts the first `bytes` bytes, then fails every write with this error.
    pub fn fail_at(mut self, bytes: usize, kind: io::ErrorKind, message: &'static str) -> Self {
        self.fail_at = Some((bytes, kind, message));
        self
    }

    /// Fails every `poll_flush` with this error.
    pub fn fail_flush(mut self, kind: io::ErrorKind, message: &'static str) -> Self {
        self.fail_flush = Some((kind, message));
        self
    }

    /// Returns `Ok(0)` from every `poll_write`.
    pub fn accepts_nothing(mut self) -> Self {
        self.accepts_nothing = true;
        self
    }

    /// Returns `Pending` from `poll_write` until [`grant`](Self::grant)ed calls.
    pub fn gated(mut self) -> Self {
        self.gate = Some(0);
        self
    }

    /// Lets `calls` more `poll_write` calls through the gate, and wakes the waiting task.
    pub fn grant(&mut self, calls: usize) {
        *self.gate.as_mut().expect("a gated recorder") += calls;
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Every `k`-th `poll_write` returns `Pending` (and wakes its task at once).
    pub fn pending_every(mut self, k: usize) -> Self {
        assert!(k >= 2, "every call pending would never write");
        self.pending_every = Some(k);
        self
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.out).expect("the output is UTF-8")
    }

    pub fn max_offered(&self) -> usize {
        self.offered.iter().copied().max().unwrap_or(0)
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.calls += 1;
        if this.pending_every.is_some_and(|k| this.calls % k == 0) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match this.gate.as_mut() {
            Some(0) => {
                this.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Some(calls) => *calls -= 1,
            None => {}
        }
        this.offered.push(buf.len());
        if this.accepts_nothing {
            return Poll::Ready(Ok(0));
        }
        let mut n = buf.len().min(this.per_call.unwrap_or(usize::MAX));
        if let Some((at, kind, message)) = this.fail_at {
            if this.out.len() >= at {
                return Poll::Ready(Err(io::Error::new(kind, message)));
            }
            n = n.min(at - this.out.len());
        }
        this.out.extend_from_slice(&buf[..n]);
        this.events.push(Event::Write(n));
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.events.push(Event::Flush);
        match self.fail_flush {
            Some((kind, message)) => Poll::Ready(Err(io::Error::new(kind, message))),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.events.push(Event::Shutdown);
        Poll::Ready(Ok(()))
    }
}
