//! `MockService`: a scripted function side with a record of its calls.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::hash::Hash;
use std::ops::{Bound, RangeBounds};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::sync::lock;
use tokio::time::{Instant, Sleep};

/// How one scripted attempt behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Fail,
    Hang,
    Panic,
}

#[derive(Debug, Clone)]
struct Rule {
    from: u32,
    to: u32,
    behaviour: Option<Behaviour>,
    latency: Option<Duration>,
}

impl Rule {
    fn covers(&self, attempt: u32) -> bool {
        (self.from..=self.to).contains(&attempt)
    }
}

/// How a call of a [`MockService`] ended (or that it has not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallOutcome {
    /// Still running (its future not finished, not dropped).
    Running,
    /// Returned its item.
    Succeeded,
    /// Returned a scripted [`MockError`].
    Failed,
    /// Panicked, as scripted.
    Panicked,
    /// Dropped before it finished (cancelled, or given up by a timeout).
    Cancelled,
}

/// One call of a [`MockService`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Call<K> {
    /// The item it was called with.
    pub item: K,
    /// Which attempt for that item (from 1).
    pub attempt: u32,
    /// When it was called, as virtual time since the service was created.
    pub started: Duration,
    /// When it ended (succeeded, failed, panicked or was dropped).
    pub finished: Option<Duration>,
    /// How it ended.
    pub outcome: CallOutcome,
}

/// The error of a call that a [`MockService`]'s script made fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockError<K> {
    /// The item called with.
    pub item: K,
    /// The attempt that failed (from 1).
    pub attempt: u32,
}

impl<K: fmt::Debug> fmt::Display for MockError<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "scripted failure of key {:?} (attempt {})",
            self.item, self.attempt
        )
    }
}

impl<K: fmt::Debug> std::error::Error for MockError<K> {}

struct State<K> {
    created: Instant,
    latency: Duration,
    rules: HashMap<K, Vec<Rule>>,
    attempts: HashMap<K, u32>,
    calls: Vec<Call<K>>,
    running: usize,
    max_running: usize,
}

/// A scripted function side for tests: per-item latencies and failures (by item, or by
/// attempt of an item), with a record of every call (which item, which attempt, when it
/// started and ended, how). The partner of the failure policies: script item 3 to fail
/// twice and check that the retry policy called it three times, 10 and 20 ms apart.
///
/// Items are identified by a key `K` (`u64`, a `String`, an id): call it with the key
/// and it returns the key back on success. Scripts are set up front with the builder
/// methods; unscripted calls succeed after [`latency`](MockService::latency).
///
/// - [`call`](MockService::call) is the async side: a future that waits its latency on
///   tokio's clock (exact on the paused clock), then succeeds, fails with a
///   [`MockError`], panics, or never finishes, as scripted.
/// - [`call_blocking`](MockService::call_blocking) is the blocking side, for `par_map`:
///   the same failures and panics, no latency and no hang (blocking work cannot wait on
///   the paused clock; see the [module docs](crate::testing)).
///
/// Attempts are counted per key in call order: the `n`th call with a key is its attempt
/// `n`, whichever position of the stream it came from. So give each item its own key:
/// where items repeat a key by design (the keys of
/// [`map_concurrent_by_key`](crate::FlowExt::map_concurrent_by_key), an account's
/// events), key the calls by `(key, sequence number)`, or the second event of an account
/// reads as the retry of the first. A `MockService` is a cheap handle: clone it into the
/// pipeline and keep one to read the record.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use flowgate::prelude::*;
/// use flowgate::testing::{MockError, MockService};
/// use flowgate::{Backoff, Retry};
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let ms = Duration::from_millis;
/// let service = MockService::new().latency(ms(5)).fail(3, 1..=2);
/// let calls = service.clone();
/// let out: Vec<_> = flowgate::source::iter((0..6u64).map(Ok::<u64, MockError<u64>>))
///     .try_map_concurrent(4, move |x| calls.call(x))
///     .with_retry(Retry::attempts(3).backoff(Backoff::fixed(ms(10))))
///     .collect()
///     .await;
/// assert!(out.iter().all(|r| r.is_ok()));
/// assert_eq!(service.attempts(&3), 3);
/// // Each failed attempt took 5 ms, then 10 ms of backoff.
/// assert_eq!(service.started_at(&3), [ms(0), ms(15), ms(30)]);
/// service.assert_max_concurrent(4);
/// # }
/// ```
pub struct MockService<K> {
    state: Arc<Mutex<State<K>>>,
}

impl<K> Clone for MockService<K> {
    fn clone(&self) -> Self {
        MockService {
            state: Arc::clone(&self.state),
        }
    }
}

impl<K: fmt::Debug> fmt::Debug for MockService<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("MockService")
            .field("latency", &state.latency)
            .field("calls", &state.calls.len())
            .field("running", &state.running)
            .finish_non_exhaustive()
    }
}

/// The attempts `range` covers, as `from..=to` (from 1).
#[track_caller]
fn attempts(range: impl RangeBounds<u32>) -> (u32, u32) {
    let from = match range.start_bound() {
        Bound::Included(&n) => n,
        Bound::Excluded(&n) => n + 1,
        Bound::Unbounded => 1,
    };
    let to = match range.end_bound() {
        Bound::Included(&n) => n,
        Bound::Excluded(&n) => n.saturating_sub(1),
        Bound::Unbounded => u32::MAX,
    };
    assert!(
        from >= 1 && from <= to,
        "flowgate: MockService attempts are counted from 1 and the range must not be \
         empty, got {from}..={to}"
    );
    (from, to)
}

impl<K> Default for MockService<K>
where
    K: Clone + Eq + Hash + fmt::Debug + Send + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K> MockService<K>
where
    K: Clone + Eq + Hash + fmt::Debug + Send + 'static,
{
    /// A service whose calls all succeed at once. Its record's clock starts now
    /// (tokio's clock).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new() -> Self {
        MockService {
            state: Arc::new(Mutex::new(State {
                created: Instant::now(),
                latency: Duration::ZERO,
                rules: HashMap::new(),
                attempts: HashMap::new(),
                calls: Vec::new(),
                running: 0,
                max_running: 0,
            })),
        }
    }

    /// Adds a rule for the `attempts` of `item`.
    #[track_caller]
    fn rule(
        self,
        item: K,
        attempts: impl RangeBounds<u32>,
        behaviour: Option<Behaviour>,
        latency: Option<Duration>,
    ) -> Self {
        let (from, to) = self::attempts(attempts);
        let rule = Rule {
            from,
            to,
            behaviour,
            latency,
        };
        lock(&self.state).rules.entry(item).or_default().push(rule);
        self
    }

    /// Every call takes `latency` (unless scripted otherwise for its item).
    pub fn latency(self, latency: Duration) -> Self {
        lock(&self.state).latency = latency;
        self
    }

    /// Every attempt of `item` takes `latency`.
    pub fn latency_of(self, item: K, latency: Duration) -> Self {
        self.slow(item, .., latency)
    }

    /// The `attempts` of `item` (counted from 1: `1..=2` is the first two, `3..` every
    /// one from the third) take `latency`.
    ///
    /// # Panics
    /// If `attempts` is empty or starts at 0.
    #[track_caller]
    pub fn slow(self, item: K, attempts: impl RangeBounds<u32>, latency: Duration) -> Self {
        self.rule(item, attempts, None, Some(latency))
    }

    /// The `attempts` of `item` fail with a [`MockError`] (after their latency).
    ///
    /// # Panics
    /// If `attempts` is empty or starts at 0.
    #[track_caller]
    pub fn fail(self, item: K, attempts: impl RangeBounds<u32>) -> Self {
        self.behave(item, attempts, Behaviour::Fail)
    }

    /// The `attempts` of `item` never finish (for timeouts and shutdowns).
    ///
    /// # Panics
    /// If `attempts` is empty or starts at 0.
    #[track_caller]
    pub fn hang(self, item: K, attempts: impl RangeBounds<u32>) -> Self {
        self.behave(item, attempts, Behaviour::Hang)
    }

    /// The `attempts` of `item` panic (after their latency), with the message
    /// `"scripted panic of key {item:?} (attempt {n})"`. Rust's panic hook still prints
    /// the panic where it happens, even when the pipeline catches it (`catch_panics`):
    /// that line in a test's output is expected.
    ///
    /// # Panics
    /// If `attempts` is empty or starts at 0.
    #[track_caller]
    pub fn panic(self, item: K, attempts: impl RangeBounds<u32>) -> Self {
        self.behave(item, attempts, Behaviour::Panic)
    }

    #[track_caller]
    fn behave(self, item: K, attempts: impl RangeBounds<u32>, behaviour: Behaviour) -> Self {
        self.rule(item, attempts, Some(behaviour), None)
    }

    /// Records a new call of `item`: its attempt, latency and behaviour.
    fn start(&self, item: &K) -> (usize, u32, Duration, Option<Behaviour>) {
        let mut state = lock(&self.state);
        let attempt = {
            let count = state.attempts.entry(item.clone()).or_insert(0);
            *count += 1;
            *count
        };
        let rules = state.rules.get(item).map(Vec::as_slice).unwrap_or_default();
        // The last rule that covers the attempt wins.
        let latency = rules
            .iter()
            .rev()
            .filter(|rule| rule.covers(attempt))
            .find_map(|rule| rule.latency)
            .unwrap_or(state.latency);
        let behaviour = rules
            .iter()
            .rev()
            .filter(|rule| rule.covers(attempt))
            .find_map(|rule| rule.behaviour);
        let started = Instant::now().duration_since(state.created);
        state.calls.push(Call {
            item: item.clone(),
            attempt,
            started,
            finished: None,
            outcome: CallOutcome::Running,
        });
        state.running += 1;
        state.max_running = state.max_running.max(state.running);
        (state.calls.len() - 1, attempt, latency, behaviour)
    }

    /// Calls the service with `item`: a future that resolves to `Ok(item)` or to a
    /// scripted `Err(MockError)`, panics, or never finishes, after the scripted latency.
    /// The call is recorded now; dropping the future before it finishes records it as
    /// [`CallOutcome::Cancelled`].
    pub fn call(&self, item: K) -> MockCall<K> {
        let (index, attempt, latency, behaviour) = self.start(&item);
        MockCall {
            state: Arc::clone(&self.state),
            index,
            item: Some(item),
            attempt,
            behaviour,
            latency,
            sleep: None,
        }
    }

    /// Calls the service with `item` on a blocking thread (`par_map`): returns `Ok(item)`
    /// or a scripted `Err(MockError)`, or panics, at once. Latencies are not applied.
    ///
    /// # Panics
    /// As scripted; and if `item`'s attempt is scripted to hang (a blocking call cannot
    /// wait on tokio's paused clock: script a failure instead).
    pub fn call_blocking(&self, item: K) -> Result<K, MockError<K>> {
        let (index, attempt, _, behaviour) = self.start(&item);
        match behaviour {
            None => {
                end_call(&self.state, index, CallOutcome::Succeeded);
                Ok(item)
            }
            Some(Behaviour::Fail) => {
                end_call(&self.state, index, CallOutcome::Failed);
                Err(MockError { item, attempt })
            }
            Some(Behaviour::Panic) => {
                end_call(&self.state, index, CallOutcome::Panicked);
                panic!("scripted panic of key {item:?} (attempt {attempt})")
            }
            Some(Behaviour::Hang) => {
                end_call(&self.state, index, CallOutcome::Panicked);
                panic!(
                    "flowgate: MockService::call_blocking cannot hang item {item:?} (attempt \
                     {attempt}): a blocking call cannot wait on tokio's clock; script a \
                     failure, or use the async `call`"
                )
            }
        }
    }

    /// Every call so far, in call order.
    pub fn calls(&self) -> Vec<Call<K>> {
        lock(&self.state).calls.clone()
    }

    /// The calls of `item`, in order.
    pub fn calls_of(&self, item: &K) -> Vec<Call<K>> {
        lock(&self.state)
            .calls
            .iter()
            .filter(|call| &call.item == item)
            .cloned()
            .collect()
    }

    /// How many times `item` was called.
    pub fn attempts(&self, item: &K) -> u32 {
        lock(&self.state).attempts.get(item).copied().unwrap_or(0)
    }

    /// When each attempt of `item` started, as virtual time since the service was
    /// created.
    pub fn started_at(&self, item: &K) -> Vec<Duration> {
        self.calls_of(item)
            .iter()
            .map(|call| call.started)
            .collect()
    }

    /// Calls running now (started, not finished, not dropped).
    pub fn running(&self) -> usize {
        lock(&self.state).running
    }

    /// The most calls ever running at once.
    pub fn max_concurrent(&self) -> usize {
        lock(&self.state).max_running
    }

    /// The record as a table, one call per line (what the assertions print).
    pub fn history(&self) -> String {
        let state = lock(&self.state);
        let mut out = String::new();
        for call in &state.calls {
            let finished = call.finished.map_or("-".to_string(), |at| {
                format!("{:.3} ms", at.as_secs_f64() * 1e3)
            });
            let _ = writeln!(
                out,
                "  item {:?} attempt {}: started {:.3} ms, ended {finished}, {:?}",
                call.item,
                call.attempt,
                call.started.as_secs_f64() * 1e3,
                call.outcome
            );
        }
        if out.is_empty() {
            out.push_str("  (no calls)\n");
        }
        out
    }

    /// Asserts that never more than `limit` calls ran at once.
    ///
    /// # Panics
    /// If more did, with the record of calls.
    #[track_caller]
    pub fn assert_max_concurrent(&self, limit: usize) {
        let max = self.max_concurrent();
        if max > limit {
            panic!(
                "MockService: {max} calls ran at once, more than {limit}\ncalls:\n{}",
                self.history()
            );
        }
    }

    /// Asserts that `first` was first called before the last call of `then` ended (or
    /// while it has not ended): work on `first` started while `then` was unfinished.
    ///
    /// # Panics
    /// Otherwise (or if `first` was never called), with the record of calls.
    #[track_caller]
    pub fn assert_started_before_finished(&self, first: &K, then: &K) {
        let started = self.calls_of(first).first().map(|call| call.started);
        let finished = self.calls_of(then).last().map(|call| call.finished);
        let holds = match (started, finished) {
            (Some(started), Some(Some(finished))) => started < finished,
            (Some(_), Some(None) | None) => true,
            (None, _) => false,
        };
        if !holds {
            panic!(
                "MockService: item {first:?} did not start before item {then:?} finished\n\
                 calls:\n{}",
                self.history()
            );
        }
    }
}

/// A call of a [`MockService`]: a future of `Result<K, MockError<K>>`. Created by
/// [`MockService::call`].
#[must_use = "futures do nothing unless polled"]
pub struct MockCall<K> {
    state: Arc<Mutex<State<K>>>,
    index: usize,
    item: Option<K>,
    attempt: u32,
    behaviour: Option<Behaviour>,
    latency: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<K> Unpin for MockCall<K> {}

impl<K: fmt::Debug> fmt::Debug for MockCall<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockCall")
            .field("item", &self.item)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl<K> Future for MockCall<K>
where
    K: Clone + Eq + Hash + fmt::Debug + Send + 'static,
{
    type Output = Result<K, MockError<K>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(item) = this.item.as_ref() else {
            panic!("flowgate: a MockCall was polled after it finished");
        };
        if this.behaviour == Some(Behaviour::Hang) {
            return Poll::Pending;
        }
        if !this.latency.is_zero() {
            let latency = this.latency;
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(latency)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        let attempt = this.attempt;
        match this.behaviour {
            Some(Behaviour::Panic) => {
                let message = format!("scripted panic of key {item:?} (attempt {attempt})");
                end_call(&this.state, this.index, CallOutcome::Panicked);
                this.item = None;
                std::panic::panic_any(message)
            }
            Some(Behaviour::Fail) => {
                end_call(&this.state, this.index, CallOutcome::Failed);
                let item = this.item.take().expect("checked above");
                Poll::Ready(Err(MockError { item, attempt }))
            }
            _ => {
                end_call(&this.state, this.index, CallOutcome::Succeeded);
                Poll::Ready(Ok(this.item.take().expect("checked above")))
            }
        }
    }
}

impl<K> Drop for MockCall<K> {
    fn drop(&mut self) {
        if self.item.is_some() {
            end_call(&self.state, self.index, CallOutcome::Cancelled);
        }
    }
}

/// Records how call `call` ended, unless it already has.
fn end_call<K>(state: &Mutex<State<K>>, call: usize, outcome: CallOutcome) {
    let mut state = lock(state);
    let now = Instant::now().duration_since(state.created);
    let record = &mut state.calls[call];
    if record.outcome == CallOutcome::Running {
        record.outcome = outcome;
        record.finished = Some(now);
        state.running -= 1;
    }
}
