//! `MockSource`: a scripted stream that records how it was pulled.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::sync::lock;
use futures_core::{FusedStream, Stream};
use tokio::time::{Instant, Sleep};

enum Step<T> {
    Item(T),
    Wait(Duration),
    Hold,
    PendingForever,
    End,
}

impl<T> fmt::Debug for Step<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Item(_) => f.write_str("item"),
            Step::Wait(duration) => write!(f, "wait {duration:?}"),
            Step::Hold => f.write_str("hold"),
            Step::PendingForever => f.write_str("pending forever"),
            Step::End => f.write_str("end"),
        }
    }
}

/// What a [`MockSource`] saw, shared with its [`MockSourceHandle`].
#[derive(Debug)]
struct Record {
    created: Instant,
    /// When each item (or the end) was asked for.
    pulls: Vec<Instant>,
    /// Whether the last pull is still waiting for its answer.
    asking: bool,
    polls: u64,
    yielded: u64,
    /// Releases given and not yet used by a hold.
    releases: u64,
    /// The waker of a poll stopped at a hold.
    held: Option<Waker>,
    ended: bool,
    dropped: bool,
}

/// A scripted [`Stream`] for tests: a list of steps (yield an item, yield an error, wait
/// a duration, stay pending until released, end) played as it is pulled, recording when
/// and how often it was pulled.
///
/// Build it with [`MockSource::new`] and the step methods, take a [`MockSourceHandle`]
/// with [`handle`](MockSource::handle) before handing the source to a pipeline, then
/// release holds and read the record through the handle.
///
/// - **A pull** is the consumer asking for the next item: the first poll after an item
///   was yielded (or the first poll of all). Polls while a step waits are not pulls.
///   [`MockSourceHandle::pulled_at`] gives the virtual time of each, from the source's
///   creation: on tokio's paused clock they are exact.
/// - **Waits** sleep on tokio's clock; on the paused clock they take no real time.
/// - **Holds** stay pending until [`MockSourceHandle::release`] is called (a release
///   given before the hold is reached is kept for it).
/// - **The end:** after the last step the stream ends (fused), unless the last step is
///   [`pending_forever`](MockSource::pending_forever).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use flowgate::prelude::*;
/// use flowgate::testing::MockSource;
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let ms = Duration::from_millis;
/// let source = MockSource::new().items([1, 2]).wait(ms(10)).item(3);
/// let handle = source.handle();
/// let doubled: Vec<u32> = source.map_concurrent(2, |x| async move { x * 2 }).collect().await;
/// assert_eq!(doubled, [2, 4, 6]);
/// // Two pulls at once (limit 2), the third and the end 10 ms later, as scripted.
/// assert_eq!(handle.pulled_at(), [ms(0), ms(0), ms(0), ms(10)]);
/// assert!(handle.is_finished());
/// # }
/// ```
#[must_use = "streams do nothing unless polled"]
pub struct MockSource<T> {
    steps: VecDeque<Step<T>>,
    sleep: Option<Pin<Box<Sleep>>>,
    record: Arc<Mutex<Record>>,
}

/// A handle on a [`MockSource`]: releases its holds and reads what it saw, while a
/// pipeline owns the source. Cheap to clone.
#[derive(Clone)]
pub struct MockSourceHandle {
    record: Arc<Mutex<Record>>,
}

impl<T> Default for MockSource<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> MockSource<T> {
    /// A source with no steps yet (played as is, it ends at once). Its record's clock
    /// starts now, on tokio's clock.
    ///
    /// # Panics
    /// Outside a tokio runtime (tokio's clock needs one).
    pub fn new() -> Self {
        MockSource {
            steps: VecDeque::new(),
            sleep: None,
            record: Arc::new(Mutex::new(Record {
                created: Instant::now(),
                pulls: Vec::new(),
                asking: false,
                polls: 0,
                yielded: 0,
                releases: 0,
                held: None,
                ended: false,
                dropped: false,
            })),
        }
    }

    /// Then yields `item`.
    pub fn item(mut self, item: T) -> Self {
        self.steps.push_back(Step::Item(item));
        self
    }

    /// Then yields each of `items`, one per pull.
    pub fn items(mut self, items: impl IntoIterator<Item = T>) -> Self {
        self.steps.extend(items.into_iter().map(Step::Item));
        self
    }

    /// Then waits `duration` on tokio's clock before the next step.
    pub fn wait(mut self, duration: Duration) -> Self {
        self.steps.push_back(Step::Wait(duration));
        self
    }

    /// Then stays pending until [`MockSourceHandle::release`] is called.
    pub fn hold(mut self) -> Self {
        self.steps.push_back(Step::Hold);
        self
    }

    /// Then stays pending for ever: the stream never ends (a source that goes quiet;
    /// for shutdown and timeout tests). Steps after it are never played.
    pub fn pending_forever(mut self) -> Self {
        self.steps.push_back(Step::PendingForever);
        self
    }

    /// Then ends (the steps after it are never played). A source also ends after its
    /// last step without this.
    pub fn end(mut self) -> Self {
        self.steps.push_back(Step::End);
        self
    }

    /// A handle to release holds and read the record once the source is handed over.
    pub fn handle(&self) -> MockSourceHandle {
        MockSourceHandle {
            record: Arc::clone(&self.record),
        }
    }
}

impl<T, E> MockSource<Result<T, E>> {
    /// Then yields `Ok(value)`.
    pub fn ok(self, value: T) -> Self {
        self.item(Ok(value))
    }

    /// Then yields `Err(error)`.
    pub fn error(self, error: E) -> Self {
        self.item(Err(error))
    }
}

impl<T> Unpin for MockSource<T> {}

impl<T> Stream for MockSource<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        let mut record = lock(&this.record);
        record.polls += 1;
        if record.ended {
            return Poll::Ready(None);
        }
        if !record.asking {
            record.asking = true;
            let now = Instant::now();
            record.pulls.push(now);
        }
        loop {
            match this.steps.front() {
                None | Some(Step::End) => {
                    record.ended = true;
                    record.asking = false;
                    return Poll::Ready(None);
                }
                Some(Step::Item(_)) => {
                    let Some(Step::Item(item)) = this.steps.pop_front() else {
                        unreachable!()
                    };
                    record.asking = false;
                    record.yielded += 1;
                    return Poll::Ready(Some(item));
                }
                Some(Step::Wait(duration)) => {
                    let duration = *duration;
                    let sleep = this
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(duration)));
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.sleep = None;
                    this.steps.pop_front();
                }
                Some(Step::Hold) => {
                    if record.releases == 0 {
                        record.held = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                    record.releases -= 1;
                    this.steps.pop_front();
                }
                Some(Step::PendingForever) => return Poll::Pending,
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let items = self
            .steps
            .iter()
            .take_while(|step| !matches!(step, Step::PendingForever | Step::End))
            .filter(|step| matches!(step, Step::Item(_)))
            .count();
        let forever = self
            .steps
            .iter()
            .find(|step| matches!(step, Step::PendingForever | Step::End));
        if matches!(forever, Some(Step::PendingForever)) {
            (items, None)
        } else {
            (items, Some(items))
        }
    }
}

impl<T> FusedStream for MockSource<T> {
    fn is_terminated(&self) -> bool {
        lock(&self.record).ended
    }
}

impl<T> Drop for MockSource<T> {
    fn drop(&mut self) {
        lock(&self.record).dropped = true;
    }
}

impl<T> fmt::Debug for MockSource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockSource")
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

impl MockSourceHandle {
    /// Releases the source's current hold, or the next one it reaches.
    pub fn release(&self) {
        let waker = {
            let mut record = lock(&self.record);
            record.releases += 1;
            record.held.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// How many times the source was pulled (asked for an item or for its end).
    pub fn pulls(&self) -> usize {
        lock(&self.record).pulls.len()
    }

    /// When each pull happened, as virtual time since the source was created.
    pub fn pulled_at(&self) -> Vec<Duration> {
        let record = lock(&self.record);
        record
            .pulls
            .iter()
            .map(|at| at.duration_since(record.created))
            .collect()
    }

    /// How many times the source was polled (pulls, and polls while a step waited).
    pub fn polls(&self) -> u64 {
        lock(&self.record).polls
    }

    /// How many items the source yielded.
    pub fn yielded(&self) -> u64 {
        lock(&self.record).yielded
    }

    /// Whether the source ended (returned `None`).
    pub fn is_finished(&self) -> bool {
        lock(&self.record).ended
    }

    /// Whether the source was dropped (a pipeline that was dropped, or that ended early,
    /// drops its upstream).
    pub fn is_dropped(&self) -> bool {
        lock(&self.record).dropped
    }

    /// Whether the source is stopped at a hold, waiting for [`release`](Self::release).
    pub fn is_held(&self) -> bool {
        lock(&self.record).held.is_some()
    }
}

impl fmt::Debug for MockSourceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let record = lock(&self.record);
        f.debug_struct("MockSourceHandle")
            .field("pulls", &record.pulls.len())
            .field("yielded", &record.yielded)
            .field("ended", &record.ended)
            .field("dropped", &record.dropped)
            .finish_non_exhaustive()
    }
}
