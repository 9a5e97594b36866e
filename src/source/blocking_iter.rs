//! `source::blocking_iter`: an iterator that blocks, read on tokio's blocking pool a
//! bounded way ahead of the consumer.
//!
//! # Protocol
//!
//! The stream (the consumer) and at most one reader (a `spawn_blocking` task) share one
//! `Mutex<State>`. The iterator is always in exactly one place:
//! - **parked** in `State::parked`: no reader exists. The consumer takes it out and
//!   starts a reader with it when at least [`batch`] places are free (at the first poll,
//!   all of them are).
//! - **with the reader**, which calls `next()` with no lock held, then pushes the item
//!   under the lock. In that same critical section it looks at the queue: full (`ahead`
//!   items), it parks the iterator and ends, giving its thread back to the pool; the
//!   consumer gone, it drops the iterator and ends. So the reader never waits for room
//!   (no thread is held, and tokio's paused clock is not stopped, while a slow consumer
//!   catches up), and the only blocking it does is the iterator's own.
//! - **gone**: the iterator ended or panicked (the reader records the [`End`]), the
//!   reader was dropped unstarted (the runtime shut down), or the consumer dropped the
//!   stream.
//!
//! The bound: the reader calls `next()` only after seeing, under the lock, fewer than
//! `ahead` items queued; the queue only shrinks until it pushes again. So the items queued
//! plus the one in the reader's hands never exceed `ahead`.
//!
//! Wake-ups: the consumer registers its waker under the lock it found the queue empty
//! under, and the reader takes it under the lock it pushes (or records the end) under,
//! so a wake-up is never lost; the reader wakes the consumer only when it waits.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};

use futures_core::{FusedStream, Stream};
use tokio::runtime::Handle;
use tokio::task::coop;

use crate::concurrent::{drop_contained, runtime_gone};
use crate::sync::lock;

/// The bound when [`BlockingIter::ahead`] is not called: items read and not yet yielded.
const DEFAULT_AHEAD: usize = 256;

/// Free places to wait for before a reader is started again: a quarter of the bound, at
/// least one. A reader then reads at least that many items per start (unless the
/// iterator ends), and the consumer still has three quarters of the bound queued to take
/// while the new reader gets a thread. The quarter was picked, not measured: any value
/// from 1 to `ahead` keeps the promises (it trades `spawn_blocking` calls against how
/// far the queue drains before reading resumes).
fn batch(ahead: usize) -> usize {
    (ahead / 4).max(1)
}

/// Stream for [`blocking_iter`]: the items of an iterator, read on tokio's blocking pool.
///
/// Created by [`blocking_iter`]; see there for its promises.
#[must_use = "streams do nothing unless polled"]
pub struct BlockingIter<I: Iterator> {
    shared: Arc<Mutex<State<I>>>,
    /// The bound: items returned by `next()` and not yet yielded.
    ahead: usize,
    /// The runtime of the first poll, on whose blocking pool every reader runs. `None`
    /// until then.
    runtime: Option<Handle>,
    /// Set once the stream has returned `None` or resumed a panic.
    terminated: bool,
    /// [`drop_on_pool`] for this `I`.
    drop_on_pool: fn(&Handle, I),
}

struct State<I: Iterator> {
    /// Items read and not yet yielded.
    queue: VecDeque<I::Item>,
    /// The iterator while no reader holds it (see the protocol above).
    parked: Option<I>,
    /// The consumer, when it found the queue empty and waits.
    waker: Option<Waker>,
    /// Why no more items will come, recorded by the reader; taken by the consumer once
    /// the queue is empty.
    end: Option<End>,
    /// The stream was dropped: the reader stops before its next call to `next()`.
    consumer_gone: bool,
}

enum End {
    /// `next()` returned `None`.
    Exhausted,
    /// `next()` (or the iterator's drop after its end) panicked with this payload.
    Panicked(Box<dyn Any + Send>),
    /// A reader was dropped unstarted: the runtime of the first poll has shut down.
    RuntimeGone,
}

/// A stream of the items of an iterator that blocks (a database cursor, a CSV reader, a
/// `BufRead`'s lines), read on tokio's blocking pool so that the runtime never blocks.
///
/// - **Bounded read-ahead:** reading starts at the first poll and runs ahead of the
///   consumer while it is busy elsewhere, but never further than the bound ([`ahead`],
///   256 items unless set): at every moment, the items the iterator's `next()` has
///   returned (or is returning) and the stream has not yet yielded number at most the
///   bound. Memory is O(bound) whatever the iterator's length; an endless iterator is
///   fine.
/// - **Batches:** once the bound is full, the reading thread is given back to the pool;
///   reading starts again (`spawn_blocking`) only when a quarter of the bound (at least
///   one item) is free again, and goes on, one `next()` after another, until the bound is
///   full again, the iterator ends or the stream is dropped. So a slow consumer costs no
///   thread and no wake-up per item. A bound below 8 starts reading again for every item
///   yielded (its quarter rounds down to zero, and one is the least).
/// - **One blocking thread while reading:** the reading holds one thread of tokio's
///   blocking pool (of the runtime of the first poll) from its start until the bound is
///   full, the iterator ends, or the stream is dropped and the current `next()` returns.
///   While it holds one, tokio's paused clock (`start_paused`) does not auto-advance, as
///   with any blocking task. Streams reading at the same time take a thread each, up to
///   the pool's limit (`max_blocking_threads`); past it, their reading waits in the
///   pool's queue.
/// - **End and fusing:** when `next()` returns `None`, the iterator is dropped on the
///   reading thread and never called again; the stream yields the items still queued,
///   then `None`, and `None` ever after ([`FusedStream`]).
/// - **Panics:** a panic in `next()` (or in the iterator's drop after its end) is caught
///   on the reading thread; the stream yields the items read before it, then re-raises
///   it in the consumer's `poll_next` with its original payload (then ends).
/// - **Drop:** dropping the stream stops the reading without waiting for it: a `next()`
///   call under way cannot be interrupted, so the reading thread finishes it, drops the
///   item it returns, and never calls `next()` again. The iterator is dropped on a
///   blocking thread (the reading one, or a new one if none is reading), so a blocking
///   `Drop` (closing a cursor) does not block the runtime either. Dropped before its
///   first poll, the stream has started nothing and drops the iterator in place.
/// - **Cooperative:** every item yielded spends one unit of the task's budget
///   (`tokio::task::coop`), like [`iter`](super::iter).
/// - `size_hint`: the items queued, plus the iterator's own hint while no reading is
///   under way; `(queued, None)` while one is, since the iterator is on another thread.
///
/// The stream is `Unpin` whatever the iterator, and `Send` and `Sync` when the iterator
/// and its items are `Send` (which `blocking_iter` requires).
///
/// # Panics
///
/// The first poll panics outside a tokio runtime. A later poll panics if that runtime
/// has shut down and more items must be read (the items already read are yielded first).
///
/// # Examples
///
/// Counting the words of a text read through `std::io::BufRead` (here from memory; a
/// file or a socket blocks the same way), at most 64 lines ahead of the pipeline:
/// ```
/// use std::io::BufRead;
///
/// use flowgate::prelude::*;
/// use futures::StreamExt;
///
/// # #[tokio::main]
/// # async fn main() {
/// let text: String = (0..1_000).map(|i| format!("record {i} of the file\n")).collect();
/// let reader = std::io::Cursor::new(text.into_bytes());
///
/// let words: usize = flowgate::source::blocking_iter(reader.lines())
///     .ahead(64)
///     .map(|line| line.expect("reading from memory does not fail"))
///     .chunks(100)
///     .par_map_unordered(2, |chunk: Vec<String>| {
///         chunk.iter().map(|line| line.split_whitespace().count()).sum::<usize>()
///     })
///     .fold(0, |sum, n| async move { sum + n })
///     .await;
/// assert_eq!(words, 1_000 * 5);
/// # }
/// ```
///
/// [`ahead`]: BlockingIter::ahead
pub fn blocking_iter<I>(iter: I) -> BlockingIter<I::IntoIter>
where
    I: IntoIterator,
    I::IntoIter: Send + 'static,
    I::Item: Send + 'static,
{
    BlockingIter {
        shared: Arc::new(Mutex::new(State {
            queue: VecDeque::new(),
            parked: Some(iter.into_iter()),
            waker: None,
            end: None,
            consumer_gone: false,
        })),
        ahead: DEFAULT_AHEAD,
        runtime: None,
        terminated: false,
        drop_on_pool: drop_on_pool::<I::IntoIter>,
    }
}

impl<I> BlockingIter<I>
where
    I: Iterator + Send + 'static,
    I::Item: Send + 'static,
{
    /// Sets the bound: at most `n` items returned by the iterator's `next()` and not yet
    /// yielded by the stream, at every moment (256 by default). Reading starts again when
    /// a quarter of it is free (see [`blocking_iter`]).
    ///
    /// # Panics
    ///
    /// If `n == 0` (nothing could ever be read), or if the stream has already been polled.
    ///
    /// # Examples
    /// ```
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main]
    /// # async fn main() {
    /// let items = flowgate::source::blocking_iter(0..10).ahead(2);
    /// assert_eq!(items.collect::<Vec<_>>().await, (0..10).collect::<Vec<_>>());
    /// # }
    /// ```
    #[track_caller]
    pub fn ahead(mut self, n: usize) -> Self {
        assert!(
            n > 0,
            "flowgate: `blocking_iter(..).ahead(n)` needs n > 0 (items read ahead), got 0"
        );
        assert!(
            self.runtime.is_none(),
            "flowgate: `blocking_iter(..).ahead(n)` must be called before the stream is \
             first polled"
        );
        self.ahead = n;
        self
    }

    /// Starts a reader with the parked iterator if there is room for a batch.
    /// Returns it, to be spawned once the lock is released.
    fn reader_if_room(&self, state: &mut State<I>) -> Option<Reader<I>> {
        let room = self.ahead.saturating_sub(state.queue.len());
        if room < batch(self.ahead) || state.consumer_gone {
            return None;
        }
        let iter = state.parked.take()?;
        Some(Reader {
            shared: self.shared.clone(),
            iter: Some(iter),
            ahead: self.ahead,
        })
    }

    fn spawn(&self, reader: Reader<I>) {
        let runtime = self
            .runtime
            .as_ref()
            .expect("a reader is started only after the first poll");
        // On a runtime that has shut down, tokio drops the closure at once: `Reader`'s
        // `Drop` then records `End::RuntimeGone`.
        drop(runtime.spawn_blocking(move || reader.read()));
    }
}

/// The runtime of the first poll.
#[track_caller]
fn current_runtime() -> Handle {
    match Handle::try_current() {
        Ok(handle) => handle,
        Err(_) => panic!(
            "flowgate: `blocking_iter` must be polled inside a tokio runtime (it reads its \
             iterator on tokio's blocking pool); no tokio runtime is running on this thread"
        ),
    }
}

// No field is ever pinned.
impl<I: Iterator> Unpin for BlockingIter<I> {}

impl<I> Stream for BlockingIter<I>
where
    I: Iterator + Send + 'static,
    I::Item: Send + 'static,
{
    type Item = I::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<I::Item>> {
        let this = &mut *self;
        if this.terminated {
            return Poll::Ready(None);
        }
        if this.runtime.is_none() {
            this.runtime = Some(current_runtime());
        }
        let budget = ready!(coop::poll_proceed(cx));
        let mut state = lock(&this.shared);
        let polled = match state.queue.pop_front() {
            Some(item) => Poll::Ready(Some(item)),
            None => match state.end.take() {
                Some(end) => {
                    drop(state);
                    this.terminated = true;
                    return match end {
                        End::Exhausted => Poll::Ready(None),
                        End::Panicked(payload) => resume_unwind(payload),
                        End::RuntimeGone => runtime_gone("blocking_iter"),
                    };
                }
                None => {
                    // Registered under the lock the queue was found empty under: the
                    // reader's next push (or end) takes it and wakes us.
                    match &mut state.waker {
                        Some(waker) => waker.clone_from(cx.waker()),
                        None => state.waker = Some(cx.waker().clone()),
                    }
                    Poll::Pending
                }
            },
        };
        let reader = this.reader_if_room(&mut state);
        drop(state);
        if let Some(reader) = reader {
            this.spawn(reader);
        }
        if polled.is_ready() {
            budget.made_progress();
        }
        polled
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.terminated {
            return (0, Some(0));
        }
        let state = lock(&self.shared);
        let queued = state.queue.len();
        match (&state.parked, &state.end) {
            (Some(iter), _) => {
                let (low, high) = iter.size_hint();
                (
                    queued.saturating_add(low),
                    high.and_then(|high| high.checked_add(queued)),
                )
            }
            // Ended, or the queue then a panic.
            (None, Some(_)) => (queued, Some(queued)),
            (None, None) => (queued, None),
        }
    }
}

impl<I> FusedStream for BlockingIter<I>
where
    I: Iterator + Send + 'static,
    I::Item: Send + 'static,
{
    fn is_terminated(&self) -> bool {
        self.terminated
    }
}

impl<I: Iterator> Drop for BlockingIter<I> {
    fn drop(&mut self) {
        let (queue, parked) = {
            let mut state = lock(&self.shared);
            state.consumer_gone = true;
            state.waker = None;
            (std::mem::take(&mut state.queue), state.parked.take())
        };
        if let Some(iter) = parked {
            match &self.runtime {
                // Its drop may block (closing a cursor): not on the runtime's thread.
                Some(runtime) => (self.drop_on_pool)(runtime, iter),
                // Never polled: nothing started, and no runtime is known.
                None => drop(iter),
            }
        }
        drop(queue);
    }
}

/// Drops a parked iterator on `runtime`'s blocking pool (in place if it has shut down).
/// Made where `I: Send + 'static` is known, for `Drop`, which cannot require it.
fn drop_on_pool<I: Send + 'static>(runtime: &Handle, iter: I) {
    drop(runtime.spawn_blocking(move || drop_contained(iter)));
}

impl<I: Iterator> fmt::Debug for BlockingIter<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.shared);
        f.debug_struct("BlockingIter")
            .field("ahead", &self.ahead)
            .field("queued", &state.queue.len())
            .field(
                "reading",
                &(self.runtime.is_some()
                    && !self.terminated
                    && state.parked.is_none()
                    && state.end.is_none()),
            )
            .field("started", &self.runtime.is_some())
            .field("terminated", &self.terminated)
            .finish_non_exhaustive()
    }
}

/// A reader's right to read, handed to `spawn_blocking` with the iterator. Dropped with
/// the iterator still inside, it was never run: the runtime has shut down.
struct Reader<I: Iterator> {
    shared: Arc<Mutex<State<I>>>,
    iter: Option<I>,
    ahead: usize,
}

impl<I: Iterator> Reader<I> {
    /// Reads until the queue is full, the iterator ends or panics, or the consumer is gone.
    fn read(mut self) {
        let Some(mut iter) = self.iter.take() else {
            return;
        };
        let mut state = lock(&self.shared);
        loop {
            if state.consumer_gone {
                drop(state);
                drop_contained(iter);
                return;
            }
            if state.queue.len() >= self.ahead {
                state.parked = Some(iter);
                return;
            }
            drop(state);
            let read = catch_unwind(AssertUnwindSafe(|| iter.next()));
            let item = match read {
                Ok(Some(item)) => item,
                Ok(None) => {
                    // A panic in its drop is the iterator's last word: reported as one.
                    let end = match catch_unwind(AssertUnwindSafe(move || drop(iter))) {
                        Ok(()) => End::Exhausted,
                        Err(payload) => End::Panicked(payload),
                    };
                    return self.finish(end);
                }
                Err(payload) => {
                    // The first panic wins; one from the drop after it is contained.
                    drop_contained(iter);
                    return self.finish(End::Panicked(payload));
                }
            };
            state = lock(&self.shared);
            if state.consumer_gone {
                drop(state);
                drop_contained(item);
                drop_contained(iter);
                return;
            }
            state.queue.push_back(item);
            if let Some(waker) = state.waker.take() {
                drop(state);
                waker.wake();
                state = lock(&self.shared);
            }
        }
    }

    /// Records why no more items will come and wakes the consumer if it waits.
    fn finish(&self, end: End) {
        let mut state = lock(&self.shared);
        if state.consumer_gone {
            drop(state);
            drop_contained(end);
            return;
        }
        state.end = Some(end);
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<I: Iterator> Drop for Reader<I> {
    fn drop(&mut self) {
        let Some(iter) = self.iter.take() else {
            return;
        };
        self.finish(End::RuntimeGone);
        drop_contained(iter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_batch_is_a_quarter_of_the_bound_and_at_least_one() {
        let batches: Vec<usize> = [1, 2, 3, 4, 7, 8, 256, usize::MAX]
            .into_iter()
            .map(batch)
            .collect();
        assert_eq!(batches, [1, 1, 1, 1, 1, 2, 64, usize::MAX / 4]);
    }

    /// Counts its `next()` calls; endless.
    struct Counting(Arc<AtomicUsize>);

    impl Iterator for Counting {
        type Item = usize;
        fn next(&mut self) -> Option<usize> {
            Some(self.0.fetch_add(1, Ordering::SeqCst))
        }
    }

    fn is_parked<I: Iterator>(stream: &BlockingIter<I>) -> bool {
        lock(&stream.shared).parked.is_some()
    }

    async fn until_parked<I>(stream: &BlockingIter<I>)
    where
        I: Iterator + Send + 'static,
        I::Item: Send + 'static,
    {
        while !is_parked(stream) {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn the_reader_parks_when_full_and_starts_again_only_for_a_batch() {
        use futures::StreamExt;
        let calls = Arc::new(AtomicUsize::new(0));
        let mut items = blocking_iter(Counting(calls.clone())).ahead(8);
        assert!(is_parked(&items), "nothing starts before the first poll");
        // The first poll finds the queue empty (nothing was read yet) and starts a reader.
        assert!(futures::poll!(items.next()).is_pending());
        until_parked(&items).await;
        assert_eq!(lock(&items.shared).queue.len(), 8);
        assert_eq!(calls.load(Ordering::SeqCst), 8);

        // One place free: less than a batch (2), so the iterator stays parked.
        assert_eq!(items.next().await, Some(0));
        assert!(is_parked(&items));
        assert_eq!(calls.load(Ordering::SeqCst), 8);
        // Two free: a reader takes the iterator in the same poll, and fills the queue.
        assert_eq!(items.next().await, Some(1));
        until_parked(&items).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2 + 8);
    }

    #[tokio::test]
    async fn a_parked_iterator_is_dropped_on_a_blocking_thread() {
        use futures::StreamExt;
        struct Dropped(std::sync::mpsc::Sender<std::thread::ThreadId>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                let _ = self.0.send(std::thread::current().id());
            }
        }
        let (dropped, on_drop) = std::sync::mpsc::channel();
        let guard = Dropped(dropped);
        let mut next = 0;
        let mut items = blocking_iter(std::iter::from_fn(move || {
            let _owned_by_the_iterator = &guard;
            next += 1;
            Some(next - 1)
        }))
        .ahead(2);
        assert_eq!(items.next().await, Some(0));
        until_parked(&items).await;
        drop(items);
        let thread = tokio::task::spawn_blocking(move || on_drop.recv().unwrap())
            .await
            .unwrap();
        assert_ne!(thread, std::thread::current().id());
    }
}
