//! Loom models of the lane's protocol: the slot states, the wake, the claim and the
//! cancellation sweep, the hand-over and the consumer's waker, the shutdown.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --lib --release loom` (see `.ci/run`).
//! The models drive the consumer's handle ([`AsyncLane`]) and the driver tasks by hand,
//! each on a loom thread (`loom::future::block_on`), on one worker: no standby, no clock.
//! A lost wake-up shows as a deadlock, which loom reports.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::sync::Mutex;

use super::lock;
use super::AsyncLane;
use crate::concurrent::{Lane, Outcome};

/// Few preemptions: the protocol's races need one or two, and the models stay quick.
fn model(body: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(body);
}

/// A job that publishes its waker and stays pending until `go` is set; counts its polls
/// and whether it was dropped.
struct Gated {
    go: Arc<AtomicBool>,
    waker: Arc<Mutex<Option<Waker>>>,
    polls: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
    value: u32,
}

struct Handles {
    go: Arc<AtomicBool>,
    waker: Arc<Mutex<Option<Waker>>>,
    polls: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

fn gated(value: u32) -> (Gated, Handles) {
    let handles = Handles {
        go: Arc::new(AtomicBool::new(false)),
        waker: Arc::new(Mutex::new(None)),
        polls: Arc::new(AtomicUsize::new(0)),
        dropped: Arc::new(AtomicBool::new(false)),
    };
    let job = Gated {
        go: Arc::clone(&handles.go),
        waker: Arc::clone(&handles.waker),
        polls: Arc::clone(&handles.polls),
        dropped: Arc::clone(&handles.dropped),
        value,
    };
    (job, handles)
}

impl Future for Gated {
    type Output = u32;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
        self.polls.fetch_add(1, SeqCst);
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        if self.go.load(SeqCst) {
            Poll::Ready(self.value)
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        self.dropped.store(true, SeqCst);
    }
}

impl Handles {
    /// Opens the gate and wakes the job, once it has published a waker.
    fn open(&self) {
        self.go.store(true, SeqCst);
        loop {
            if let Some(waker) = self.waker.lock().unwrap().take() {
                waker.wake();
                return;
            }
            loom::thread::yield_now();
        }
    }
}

/// Runs a driver task on a loom thread of its own, until the lane closes.
fn run<Fut>(driver: super::driver::Driver<Fut>) -> loom::thread::JoinHandle<()>
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    loom::thread::spawn(move || loom::future::block_on(driver))
}

/// Waits (as the consumer does) until the lane hands over at least one result.
fn collect_some<Fut>(lane: &mut AsyncLane<Fut>) -> Vec<(u64, Outcome<Fut::Output>)>
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    loom::future::block_on(std::future::poll_fn(|cx| {
        let mut into = Vec::new();
        lane.collect(&mut into, Some(cx.waker()));
        if into.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(into)
        }
    }))
}

fn values<T: Copy>(results: &[(u64, Outcome<T>)]) -> Vec<(u64, T)> {
    results
        .iter()
        .map(|(index, outcome)| match outcome {
            Ok(value) => (*index, *value),
            Err(_) => panic!("job {index} panicked"),
        })
        .collect()
}

/// A job woken from another thread, while it runs or after, is polled again and its
/// result reaches the consumer: the wake turns RUNNING into NOTIFIED (the driver
/// queues the job again) or IDLE into SCHEDULED (the waker does).
#[test]
fn loom_a_job_woken_while_it_runs_is_polled_again() {
    model(|| {
        let mut lane = AsyncLane::new(1);
        let driver = lane.bind_for_model(true);
        let runner = run(driver);
        let (job, handles) = gated(7);
        lane.start(0, job);
        lane.flush();
        let opener = loom::thread::spawn(move || handles.open());
        let results = collect_some(&mut lane);
        assert_eq!(values(&results), [(0, 7)]);
        opener.join().unwrap();
        lane.close();
        runner.join().unwrap();
    });
}

/// A cancellation racing a wake: the cancelled job is polled at most once more (a poll
/// that claimed it first), is dropped without waiting for the shutdown, and the job
/// before the cutoff still delivers.
#[test]
fn loom_a_cancel_racing_a_wake_drops_the_job_and_keeps_earlier_results() {
    model(|| {
        let mut lane = AsyncLane::new(2);
        let driver = lane.bind_for_model(true);
        let runner = run(driver);
        let (first, first_handles) = gated(1);
        let (second, second_handles) = gated(2);
        first_handles.go.store(true, SeqCst);
        let polls = Arc::clone(&second_handles.polls);
        let dropped = Arc::clone(&second_handles.dropped);
        lane.start(0, first);
        lane.start(1, second);
        lane.flush();
        let waker = loom::thread::spawn(move || {
            if let Some(waker) = second_handles.waker.lock().unwrap().take() {
                waker.wake();
            }
        });
        lane.cancel_from(1);
        let polls_at_cancel = polls.load(SeqCst);
        let results = collect_some(&mut lane);
        assert_eq!(
            values(&results),
            [(0, 1)],
            "the job before the cutoff delivers"
        );
        // Dropped without the consumer doing anything more: by the sweep, or by the
        // driver once its poll returns. (Never dropped, this spins until loom gives up.)
        while !dropped.load(SeqCst) {
            loom::thread::yield_now();
        }
        waker.join().unwrap();
        lane.close();
        runner.join().unwrap();
        assert!(
            polls.load(SeqCst) <= polls_at_cancel + 1,
            "a cancelled job was polled after its cancellation"
        );
    });
}

/// The shutdown racing a hand-over: afterwards nothing is queued, nothing waits in the
/// exchange, every slot is released and every output dropped.
#[test]
fn loom_close_racing_a_hand_over_leaves_nothing_behind() {
    model(|| {
        let mut lane = AsyncLane::new(1);
        let driver = lane.bind_for_model(true);
        let (job, handles) = gated(3);
        handles.go.store(true, SeqCst);
        lane.start(0, job);
        lane.flush();
        let shared = Arc::clone(lane.shared());
        let runner = run(driver);
        lane.close();
        runner.join().unwrap();
        assert!(lock(&shared.run).queue.is_empty(), "a job is still queued");
        assert!(
            lock(&shared.exchange).finished.is_empty(),
            "a result is still handed over"
        );
        assert!(lock(&shared.slots).is_empty(), "a slot is still listed");
        assert!(
            handles.dropped.load(SeqCst),
            "the job's future was never dropped"
        );
    });
}

/// A result handed over while the consumer registers its waker wakes it: the consumer
/// looks and registers in one critical section of the exchange, the driver hands over
/// and takes the waker in one. (A lost wake-up would deadlock the model.)
#[test]
fn loom_a_result_handed_over_while_the_consumer_registers_wakes_it() {
    model(|| {
        let mut lane = AsyncLane::new(2);
        let driver = lane.bind_for_model(false);
        let (first, first_handles) = gated(1);
        let (second, second_handles) = gated(2);
        first_handles.go.store(true, SeqCst);
        second_handles.go.store(true, SeqCst);
        lane.start(0, first);
        lane.start(1, second);
        lane.flush();
        let runner = run(driver);
        let mut seen = values(&collect_some(&mut lane));
        if seen.len() < 2 {
            seen.extend(values(&collect_some(&mut lane)));
        }
        seen.sort_unstable();
        assert_eq!(seen, [(0, 1), (1, 2)]);
        lane.close();
        runner.join().unwrap();
    });
}
