//! `source::blocking_iter`: order and no loss, the bound, the runtime never blocked,
//! panics, drop, fusing, and the arguments. Steps across threads are ordered with
//! channels; a wait for the reader to stop reads `size_hint` (exact only while no
//! reading is under way). Timeouts are backstops that only fire on a failure.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::thread::ThreadId;
use std::time::Duration;

use flowgate::prelude::*;
use flowgate::source::{blocking_iter, BlockingIter};
use futures::stream::FusedStream;
use futures::{FutureExt, Stream, StreamExt};
use proptest::prelude::*;
use tokio::sync::{mpsc, oneshot};

/// How long a step may take before the test fails instead of hanging.
const BACKSTOP: Duration = Duration::from_secs(60);

/// An iterator that yields `0..len`, then `None`, then more items if called again (as a
/// non-fused iterator may). It counts its `next()` calls as they start, can report each
/// one, hold one until the test releases it, and report its drop.
struct Probe {
    len: usize,
    calls: Arc<AtomicUsize>,
    entered: Option<mpsc::UnboundedSender<usize>>,
    hold: Option<(usize, std_mpsc::Receiver<()>)>,
    dropped: Option<oneshot::Sender<ThreadId>>,
}

impl Probe {
    fn new(len: usize) -> Self {
        Probe {
            len,
            calls: Arc::new(AtomicUsize::new(0)),
            entered: None,
            hold: None,
            dropped: None,
        }
    }

    fn calls(&self) -> Arc<AtomicUsize> {
        self.calls.clone()
    }

    /// Reports the index of every `next()` call as it starts.
    fn report_calls(mut self) -> (Self, mpsc::UnboundedReceiver<usize>) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.entered = Some(tx);
        (self, rx)
    }

    /// `next()` call `call` waits until the test sends on the returned sender.
    fn hold_call(mut self, call: usize) -> (Self, std_mpsc::Sender<()>) {
        let (tx, rx) = std_mpsc::channel();
        self.hold = Some((call, rx));
        (self, tx)
    }

    /// Reports the thread the iterator is dropped on.
    fn report_drop(mut self) -> (Self, oneshot::Receiver<ThreadId>) {
        let (tx, rx) = oneshot::channel();
        self.dropped = Some(tx);
        (self, rx)
    }
}

impl Iterator for Probe {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(entered) = &self.entered {
            let _ = entered.send(call);
        }
        if let Some((held, release)) = &self.hold {
            if *held == call {
                release
                    .recv_timeout(BACKSTOP)
                    .expect("the test never released the held next()");
            }
        }
        (call != self.len).then_some(call)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.len.saturating_sub(self.calls.load(Ordering::SeqCst));
        (left, Some(left))
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(dropped) = self.dropped.take() {
            let _ = dropped.send(std::thread::current().id());
        }
    }
}

/// Waits until no reading is under way: the queue is full (or the iterator ended), so
/// the iterator is parked and `size_hint` has an upper bound again.
async fn until_reading_stops<S: Stream>(items: &S) {
    tokio::time::timeout(BACKSTOP, async {
        while items.size_hint().1.is_none() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the reading never stopped");
}

/// The message of a caught panic, `&str` or `String`.
fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

fn is_send<T: Send>() {}
fn is_sync<T: Sync>() {}
fn is_unpin<T: Unpin>() {}

/// An iterator that is not `Unpin`.
struct Pinned(std::marker::PhantomPinned);

impl Iterator for Pinned {
    type Item = String;
    fn next(&mut self) -> Option<String> {
        None
    }
}

#[test]
fn blocking_iter_is_send_sync_and_unpin_when_its_iterator_is_send() {
    is_send::<BlockingIter<std::vec::IntoIter<String>>>();
    is_sync::<BlockingIter<std::vec::IntoIter<String>>>();
    is_unpin::<BlockingIter<std::vec::IntoIter<String>>>();
    is_send::<BlockingIter<Pinned>>();
    is_unpin::<BlockingIter<Pinned>>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_iter_yields_every_item_in_order_for_every_size_and_bound() {
    for bound in [1, 2, 7, 256] {
        for len in [0, 1, bound - 1, bound, bound + 1, 10 * bound] {
            let items: Vec<usize> = blocking_iter(0..len).ahead(bound).collect().await;
            assert_eq!(
                items,
                (0..len).collect::<Vec<_>>(),
                "len {len}, bound {bound}"
            );
        }
    }
    // The default bound.
    let items: Vec<usize> = blocking_iter(0..3000).collect().await;
    assert_eq!(items, (0..3000).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_iter_never_reads_more_than_the_bound_ahead_of_a_slow_consumer() {
    for bound in [1, 2, 7, 256] {
        let probe = Probe::new(10 * bound + 3);
        let calls = probe.calls();
        let mut items = blocking_iter(probe).ahead(bound);
        let mut received = 0;
        while let Some(item) = items.next().await {
            assert_eq!(item, received);
            received += 1;
            // Calls started (the one under way included) minus items received.
            let ahead = calls.load(Ordering::SeqCst) - received;
            assert!(ahead <= bound, "{ahead} ahead with bound {bound}");
            // Slower than the iterator: give the reader time to run ahead.
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(received, 10 * bound + 3);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            10 * bound + 4,
            "bound {bound}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_iter_reads_ahead_on_its_own_up_to_the_bound_and_then_in_batches() {
    let (probe, mut entered) = Probe::new(1_000_000).report_calls();
    let calls = probe.calls();
    // A bound of 8 reads again once 2 places (a quarter) are free.
    let mut items = blocking_iter(probe).ahead(8);
    assert_eq!(items.size_hint(), (1_000_000, Some(1_000_000)));
    // The first poll finds nothing read yet, and starts reading.
    assert!(futures::poll!(items.next()).is_pending());

    // Not polled meanwhile, the stream reads the bound's worth ahead by itself...
    for call in 0..8 {
        let started = tokio::time::timeout(BACKSTOP, entered.recv()).await;
        assert_eq!(started, Ok(Some(call)));
    }
    // ...and then stops: no reading is under way and no call was made past the bound.
    until_reading_stops(&items).await;
    assert_eq!(calls.load(Ordering::SeqCst), 8);
    assert!(entered.try_recv().is_err());
    assert_eq!(items.size_hint(), (1_000_000, Some(1_000_000)));

    // One place free is less than a batch: reading does not start (it would start in
    // the poll that freed the place, so the count cannot change later).
    assert_eq!(items.next().await, Some(0));
    assert_eq!(items.size_hint().1, Some(1_000_000 - 1));
    assert_eq!(calls.load(Ordering::SeqCst), 8);
    // Two free: reading starts and fills the bound again.
    assert_eq!(items.next().await, Some(1));
    for call in 8..10 {
        let started = tokio::time::timeout(BACKSTOP, entered.recv()).await;
        assert_eq!(started, Ok(Some(call)));
    }
    until_reading_stops(&items).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2 + 8);
    assert!(entered.try_recv().is_err());
}

#[tokio::test(flavor = "current_thread")]
async fn blocking_iter_never_blocks_the_runtime() {
    let runtime_thread = std::thread::current().id();
    let (gate, gate_rx) = std_mpsc::channel::<u32>();
    // Each `next()` blocks until the test, on this very thread, sends a value: if it ran
    // on the runtime's thread, it would never return (the assert catches that first).
    let blocking = std::iter::from_fn(move || {
        assert_ne!(
            std::thread::current().id(),
            runtime_thread,
            "next() ran on the runtime's thread"
        );
        gate_rx.recv_timeout(BACKSTOP).ok()
    });
    let mut items = blocking_iter(blocking);
    for value in 0..5 {
        let mut next = std::pin::pin!(items.next());
        assert!(futures::poll!(next.as_mut()).is_pending());
        // The runtime goes on with other tasks while `next()` waits on its thread.
        assert_eq!(
            tokio::spawn(async move { value * 10 }).await.unwrap(),
            value * 10
        );
        gate.send(value).unwrap();
        assert_eq!(tokio::time::timeout(BACKSTOP, next).await, Ok(Some(value)));
    }
    drop(gate);
    assert_eq!(tokio::time::timeout(BACKSTOP, items.next()).await, Ok(None));
}

#[derive(Debug, PartialEq)]
struct Payload(u64);

/// Yields `0..3`, then panics with `panic`.
fn panics_after_three(panic: fn() -> usize) -> impl Iterator<Item = usize> + Send + 'static {
    let mut next = 0;
    std::iter::from_fn(move || {
        next += 1;
        Some(if next <= 3 { next - 1 } else { panic() })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_iter_raises_the_iterators_panic_after_the_items_before_it() {
    let panics: [fn() -> usize; 3] = [
        || panic!("static message"),
        || panic!("formatted {}", std::hint::black_box(42)),
        || std::panic::panic_any(Payload(7)),
    ];
    for (case, panic) in panics.into_iter().enumerate() {
        let mut items = blocking_iter(panics_after_three(panic)).ahead(2);
        for expected in 0..3 {
            assert_eq!(items.next().await, Some(expected), "case {case}");
        }
        let payload = AssertUnwindSafe(items.next())
            .catch_unwind()
            .await
            .expect_err("the iterator's panic reaches the consumer");
        match case {
            0 => assert_eq!(payload.downcast_ref::<&str>(), Some(&"static message")),
            1 => assert_eq!(
                payload.downcast_ref::<String>().map(String::as_str),
                Some("formatted 42")
            ),
            _ => assert_eq!(payload.downcast_ref::<Payload>(), Some(&Payload(7))),
        }
        // Raised once; then the stream is over.
        assert!(items.is_terminated());
        assert_eq!(items.next().await, None);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_the_stream_stops_the_reader_after_the_call_under_way() {
    let (probe, mut entered) = Probe::new(1_000).report_calls();
    let (probe, release) = probe.hold_call(3);
    let (probe, dropped) = probe.report_drop();
    let calls = probe.calls();
    let mut items = blocking_iter(probe).ahead(16);
    assert_eq!(items.next().await, Some(0));
    // Wait until the reader is inside call 3, which holds.
    for call in 0..=3 {
        let started = tokio::time::timeout(BACKSTOP, entered.recv()).await;
        assert_eq!(started, Ok(Some(call)));
    }
    drop(items);
    release.send(()).unwrap();
    // The call under way returns, then the iterator is dropped on the reader's thread
    // without another call.
    let thread = tokio::time::timeout(BACKSTOP, dropped).await;
    let thread = thread.expect("the iterator was never dropped").unwrap();
    assert_ne!(
        thread,
        std::thread::current().id(),
        "dropped on the runtime"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(entered.recv().await, None, "no call after the drop");
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_the_stream_while_its_bound_is_full_drops_the_iterator_off_the_runtime() {
    let (probe, dropped) = Probe::new(1_000).report_drop();
    let (probe, mut entered) = probe.report_calls();
    let calls = probe.calls();
    let mut items = blocking_iter(probe).ahead(4);
    assert_eq!(items.next().await, Some(0));
    until_reading_stops(&items).await;
    drop(items);
    let thread = tokio::time::timeout(BACKSTOP, dropped).await;
    let thread = thread.expect("the iterator was never dropped").unwrap();
    assert_ne!(
        thread,
        std::thread::current().id(),
        "dropped on the runtime"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1 + 4);
    for call in 0..5 {
        assert_eq!(entered.recv().await, Some(call));
    }
    assert_eq!(entered.recv().await, None, "no call after the drop");
}

#[test]
fn dropping_the_stream_before_its_first_poll_starts_nothing_and_drops_the_iterator() {
    // No runtime here: a thread could not even be started.
    let (probe, mut dropped) = Probe::new(10).report_drop();
    let calls = probe.calls();
    let items = blocking_iter(probe).ahead(3);
    assert!(dropped.try_recv().is_err());
    drop(items);
    assert_eq!(dropped.try_recv(), Ok(std::thread::current().id()));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn blocking_iter_ends_fused_and_never_calls_an_ended_iterator() {
    let (probe, dropped) = Probe::new(3).report_drop();
    let calls = probe.calls();
    let mut items = blocking_iter(probe).ahead(2);
    assert!(!items.is_terminated());
    for expected in 0..3 {
        assert_eq!(items.next().await, Some(expected));
    }
    assert_eq!(items.next().await, None);
    assert!(items.is_terminated());
    assert_eq!(items.size_hint(), (0, Some(0)));
    for _ in 0..3 {
        assert_eq!(items.next().await, None);
    }
    // Dropped on its thread as soon as it returned `None`, before the stream.
    let thread = tokio::time::timeout(BACKSTOP, dropped).await;
    assert_ne!(thread.unwrap().unwrap(), std::thread::current().id());
    assert_eq!(calls.load(Ordering::SeqCst), 4, "three items, one None");
}

#[test]
fn ahead_zero_panics_naming_ahead_and_blocking_iter() {
    let payload = std::panic::catch_unwind(|| blocking_iter(0..3).ahead(0)).unwrap_err();
    let message = message(&*payload);
    assert!(
        message.contains("`blocking_iter(..).ahead(n)`") && message.contains("n > 0"),
        "{message}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn ahead_after_the_first_poll_panics() {
    let mut items = blocking_iter(0..3);
    assert_eq!(items.next().await, Some(0));
    let payload = std::panic::catch_unwind(AssertUnwindSafe(|| items.ahead(2))).unwrap_err();
    let message = message(&*payload);
    assert!(
        message.contains("ahead") && message.contains("before the stream is first polled"),
        "{message}"
    );
}

#[test]
fn polling_outside_a_tokio_runtime_panics_saying_so() {
    let probe = Probe::new(3);
    let calls = probe.calls();
    let mut items = blocking_iter(probe);
    let payload = std::panic::catch_unwind(AssertUnwindSafe(|| {
        futures::executor::block_on(items.next())
    }))
    .unwrap_err();
    let message = message(&*payload);
    assert!(
        message.contains("`blocking_iter` must be polled inside a tokio runtime"),
        "{message}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn polling_after_the_runtime_shut_down_yields_what_was_read_then_panics_saying_so() {
    let (probe, dropped) = Probe::new(1_000).report_drop();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut items = runtime.block_on(async {
        let mut items = blocking_iter(probe).ahead(4);
        assert_eq!(items.next().await, Some(0));
        until_reading_stops(&items).await;
        items
    });
    // No thread is held while the bound is full: the runtime shuts down at once.
    drop(runtime);
    futures::executor::block_on(async {
        for expected in 1..=4 {
            assert_eq!(items.next().await, Some(expected));
        }
        let payload = AssertUnwindSafe(items.next())
            .catch_unwind()
            .await
            .unwrap_err();
        let message = message(&*payload);
        assert!(
            message.contains("`blocking_iter`") && message.contains("shut down"),
            "{message}"
        );
        assert!(dropped.await.is_ok(), "the iterator was dropped");
        assert_eq!(items.next().await, None);
    });
}

#[tokio::test(flavor = "current_thread")]
async fn blocking_iter_does_not_starve_other_tasks() {
    let mut items = blocking_iter(Probe::new(1_000_000)).ahead(1_000);
    assert_eq!(items.next().await, Some(0));
    until_reading_stops(&items).await;
    // A thousand items are ready: only the task budget makes the stream yield to others.
    let other_ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = other_ran.clone();
    tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
    let mut taken = 1;
    while !other_ran.load(Ordering::SeqCst) {
        assert_eq!(items.next().await, Some(taken));
        taken += 1;
        assert!(taken < 1_000, "the other task never ran");
    }
    assert_eq!(items.next().await, Some(taken), "nothing lost meanwhile");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_iter_feeds_a_pipeline() {
    use std::io::BufRead;
    let text: String = (0..2_000).map(|i| format!("{i}\n")).collect();
    let lines = std::io::Cursor::new(text.into_bytes()).lines();
    let sums: Vec<u64> = blocking_iter(lines)
        .ahead(32)
        .map(|line| line.unwrap().parse::<u64>().unwrap())
        .chunks(500)
        .par_map(2, |chunk: Vec<u64>| chunk.iter().sum::<u64>())
        .collect()
        .await;
    let expected: Vec<u64> = (0..4).map(|c| (c * 500..(c + 1) * 500).sum()).collect();
    assert_eq!(sums, expected);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn blocking_iter_loses_and_reorders_nothing_and_keeps_its_bound(
        len in 0usize..2000,
        bound in 1usize..64,
        pause_every in 1usize..8,
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let probe = Probe::new(len);
        let calls = probe.calls();
        let (received, most_ahead) = runtime.block_on(async {
            let mut items = blocking_iter(probe).ahead(bound);
            let mut received = Vec::with_capacity(len);
            let mut most_ahead = 0;
            while let Some(item) = items.next().await {
                received.push(item);
                most_ahead = most_ahead.max(calls.load(Ordering::SeqCst) - received.len());
                if received.len() % pause_every == 0 {
                    tokio::task::yield_now().await;
                }
            }
            (received, most_ahead)
        });
        prop_assert_eq!(received, (0..len).collect::<Vec<_>>());
        prop_assert!(most_ahead <= bound, "{} ahead with bound {}", most_ahead, bound);
        prop_assert_eq!(calls.load(Ordering::SeqCst), len + 1);
    }
}
