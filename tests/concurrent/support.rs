//! What every test here shares: the eight operators as data, a probe that counts what
//! happens (pulls, yields, jobs started, running and alive), scripted jobs that run on
//! either lane, gates the test opens one by one, and bounded waits that fail clearly
//! instead of hanging.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use flowgate::prelude::*;
use futures::future::Either;
use futures::stream::FusedStream;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::oneshot;

/// The eight concurrent operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    MapConcurrent,
    MapConcurrentUnordered,
    ParMap,
    ParMapUnordered,
    TryMapConcurrent,
    TryMapConcurrentUnordered,
    TryParMap,
    TryParMapUnordered,
}

impl Op {
    pub const ALL: [Op; 8] = [
        Op::MapConcurrent,
        Op::MapConcurrentUnordered,
        Op::ParMap,
        Op::ParMapUnordered,
        Op::TryMapConcurrent,
        Op::TryMapConcurrentUnordered,
        Op::TryParMap,
        Op::TryParMapUnordered,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::MapConcurrent => "map_concurrent",
            Op::MapConcurrentUnordered => "map_concurrent_unordered",
            Op::ParMap => "par_map",
            Op::ParMapUnordered => "par_map_unordered",
            Op::TryMapConcurrent => "try_map_concurrent",
            Op::TryMapConcurrentUnordered => "try_map_concurrent_unordered",
            Op::TryParMap => "try_par_map",
            Op::TryParMapUnordered => "try_par_map_unordered",
        }
    }

    pub fn is_ordered(self) -> bool {
        matches!(
            self,
            Op::MapConcurrent | Op::ParMap | Op::TryMapConcurrent | Op::TryParMap
        )
    }

    pub fn is_try(self) -> bool {
        matches!(
            self,
            Op::TryMapConcurrent
                | Op::TryMapConcurrentUnordered
                | Op::TryParMap
                | Op::TryParMapUnordered
        )
    }

    /// Runs its jobs on threads off the runtime (the blocking lane).
    pub fn is_blocking(self) -> bool {
        matches!(
            self,
            Op::ParMap | Op::ParMapUnordered | Op::TryParMap | Op::TryParMapUnordered
        )
    }
}

/// Generates one test per operator from one body: `mod $name { fn <operator>() }`.
///
/// Exactly one attribute is given, the runtime: a tokio one (e.g. `#[tokio::test]`), or
/// `#[on_workers]`, which makes each test a plain `#[test]` that runs the body on fresh
/// multi-thread runtimes of 1, 2, 4 and 8 workers in turn ([`on_workers`]; a failure names
/// the worker count). `#[on_workers(counts)]` runs it on the worker counts given instead,
/// an expression that may use the operator. The body sees the operator under the name
/// given in the signature.
macro_rules! op_tests {
    (
        ops: [$($op_fn:ident => $variant:ident),* $(,)?],
        #[on_workers]
        async fn $name:ident($op:ident: Op) $body:block
    ) => {
        op_tests! {
            ops: [$($op_fn => $variant),*],
            #[on_workers(WORKER_COUNTS)]
            async fn $name($op: Op) $body
        }
    };
    (
        ops: [$($op_fn:ident => $variant:ident),* $(,)?],
        #[on_workers($counts:expr)]
        async fn $name:ident($op:ident: Op) $body:block
    ) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn check($op: Op) $body

            $(
                #[test]
                fn $op_fn() {
                    let $op = Op::$variant;
                    on_worker_counts($counts, || check($op));
                }
            )*
        }
    };
    (
        ops: [$($op_fn:ident => $variant:ident),* $(,)?],
        #[$attr:meta]
        async fn $name:ident($op:ident: Op) $body:block
    ) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn check($op: Op) $body

            $(
                #[$attr]
                async fn $op_fn() {
                    check(Op::$variant).await
                }
            )*
        }
    };
}

/// [`op_tests!`] over all eight operators.
macro_rules! all_ops {
    ($($body:tt)*) => {
        op_tests! {
            ops: [
                map_concurrent => MapConcurrent,
                map_concurrent_unordered => MapConcurrentUnordered,
                par_map => ParMap,
                par_map_unordered => ParMapUnordered,
                try_map_concurrent => TryMapConcurrent,
                try_map_concurrent_unordered => TryMapConcurrentUnordered,
                try_par_map => TryParMap,
                try_par_map_unordered => TryParMapUnordered,
            ],
            $($body)*
        }
    };
}

/// [`op_tests!`] over the four ordered operators.
macro_rules! ordered_ops {
    ($($body:tt)*) => {
        op_tests! {
            ops: [
                map_concurrent => MapConcurrent,
                par_map => ParMap,
                try_map_concurrent => TryMapConcurrent,
                try_par_map => TryParMap,
            ],
            $($body)*
        }
    };
}

/// [`op_tests!`] over the four unordered operators.
macro_rules! unordered_ops {
    ($($body:tt)*) => {
        op_tests! {
            ops: [
                map_concurrent_unordered => MapConcurrentUnordered,
                par_map_unordered => ParMapUnordered,
                try_map_concurrent_unordered => TryMapConcurrentUnordered,
                try_par_map_unordered => TryParMapUnordered,
            ],
            $($body)*
        }
    };
}

/// [`op_tests!`] over the four operators of the async lane.
macro_rules! async_ops {
    ($($body:tt)*) => {
        op_tests! {
            ops: [
                map_concurrent => MapConcurrent,
                map_concurrent_unordered => MapConcurrentUnordered,
                try_map_concurrent => TryMapConcurrent,
                try_map_concurrent_unordered => TryMapConcurrentUnordered,
            ],
            $($body)*
        }
    };
}

/// [`op_tests!`] over the four operators of the blocking lane.
macro_rules! blocking_ops {
    ($($body:tt)*) => {
        op_tests! {
            ops: [
                par_map => ParMap,
                par_map_unordered => ParMapUnordered,
                try_par_map => TryParMap,
                try_par_map_unordered => TryParMapUnordered,
            ],
            $($body)*
        }
    };
}

/// [`op_tests!`] over the four non-`try` operators.
macro_rules! plain_ops {
    ($($body:tt)*) => {
        op_tests! {
            ops: [
                map_concurrent => MapConcurrent,
                map_concurrent_unordered => MapConcurrentUnordered,
                par_map => ParMap,
                par_map_unordered => ParMapUnordered,
            ],
            $($body)*
        }
    };
}

/// [`op_tests!`] over the four `try_` operators.
macro_rules! try_ops {
    ($($body:tt)*) => {
        op_tests! {
            ops: [
                try_map_concurrent => TryMapConcurrent,
                try_map_concurrent_unordered => TryMapConcurrentUnordered,
                try_par_map => TryParMap,
                try_par_map_unordered => TryParMapUnordered,
            ],
            $($body)*
        }
    };
}

/// Why an item failed: an error from upstream or from the job, with the item's position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fail {
    Upstream(u64),
    Job(u64),
}

/// Every pipeline here maps `Result<u64, Fail>` items to `Result<u64, Fail>` results. The
/// non-`try` operators treat an `Err` as a plain value; the `try_` ones fail fast on it.
pub type Item = Result<u64, Fail>;

/// An operator's stream, boxed so that the eight types can be handled alike.
pub type Flow = Pin<Box<dyn FusedStream<Item = Item> + Send>>;

/// What a job computes from item `i`.
pub fn value(i: u64) -> u64 {
    i * 3 + 1
}

/// The sequential map of `items`: what an ordered operator yields.
pub fn sequential(items: &[Item]) -> Vec<Item> {
    items.iter().map(|item| item.clone().map(value)).collect()
}

/// Items `0..n`, all `Ok`.
pub fn oks(n: u64) -> Vec<Item> {
    (0..n).map(Ok).collect()
}

/// Counters shared by a test, its source, its jobs and its consumer.
#[derive(Clone, Default)]
pub struct Probe(Arc<Counters>);

#[derive(Default)]
pub struct Counters {
    pulled: AtomicUsize,
    yielded: AtomicUsize,
    max_held: AtomicUsize,
    started: AtomicUsize,
    running: AtomicUsize,
    max_running: AtomicUsize,
    completed: AtomicUsize,
    live: AtomicUsize,
    upstream_alive: AtomicUsize,
    gave_up: AtomicUsize,
    finish_order: Mutex<Vec<u64>>,
}

impl Probe {
    pub fn new() -> Self {
        Probe::default()
    }

    /// Items upstream handed out (a poll that returned `Ready(Some(_))`, errors included).
    pub fn pulled(&self) -> usize {
        self.0.pulled.load(SeqCst)
    }
    /// Items the consumer received.
    pub fn yielded(&self) -> usize {
        self.0.yielded.load(SeqCst)
    }
    /// The most items ever pulled and not yet yielded, checked at every pull.
    pub fn max_held(&self) -> usize {
        self.0.max_held.load(SeqCst)
    }
    /// Jobs whose body began to run.
    pub fn started(&self) -> usize {
        self.0.started.load(SeqCst)
    }
    /// Jobs whose body is running now.
    pub fn running(&self) -> usize {
        self.0.running.load(SeqCst)
    }
    /// The most job bodies ever running at once.
    pub fn max_running(&self) -> usize {
        self.0.max_running.load(SeqCst)
    }
    /// Jobs that ran to their end (whatever their outcome).
    pub fn completed(&self) -> usize {
        self.0.completed.load(SeqCst)
    }
    /// Jobs alive: futures not yet dropped (async lane) or closures still running
    /// (blocking lane).
    pub fn live(&self) -> usize {
        self.0.live.load(SeqCst)
    }
    /// Sources not yet dropped.
    pub fn upstream_alive(&self) -> usize {
        self.0.upstream_alive.load(SeqCst)
    }
    /// Jobs that stopped holding their thread because what they waited for never came.
    pub fn gave_up(&self) -> usize {
        self.0.gave_up.load(SeqCst)
    }
    /// Positions of the jobs, in the order they completed.
    pub fn finish_order(&self) -> Vec<u64> {
        self.0.finish_order.lock().unwrap().clone()
    }

    fn on_pull(&self) {
        let pulled = self.0.pulled.fetch_add(1, SeqCst) + 1;
        let held = pulled - self.yielded();
        self.0.max_held.fetch_max(held, SeqCst);
    }

    fn on_yield(&self) {
        self.0.yielded.fetch_add(1, SeqCst);
    }
}

/// Counts a live job from its creation to its drop.
pub struct Live(Probe);

impl Live {
    pub fn new(probe: &Probe) -> Self {
        probe.0.live.fetch_add(1, SeqCst);
        Live(probe.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0 .0.live.fetch_sub(1, SeqCst);
    }
}

/// Counts a job body from its first step to its end (or its cancellation).
struct Running(Probe);

impl Running {
    fn new(probe: &Probe) -> Self {
        probe.0.started.fetch_add(1, SeqCst);
        let running = probe.0.running.fetch_add(1, SeqCst) + 1;
        probe.0.max_running.fetch_max(running, SeqCst);
        Running(probe.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0 .0.running.fetch_sub(1, SeqCst);
    }
}

/// Counts a source from its creation to its drop.
struct UpstreamAlive(Probe);

impl UpstreamAlive {
    fn new(probe: &Probe) -> Self {
        probe.0.upstream_alive.fetch_add(1, SeqCst);
        UpstreamAlive(probe.clone())
    }
}

impl Drop for UpstreamAlive {
    fn drop(&mut self) {
        self.0 .0.upstream_alive.fetch_sub(1, SeqCst);
    }
}

/// A source over `items` that counts every pull on `probe` and checks the bound there.
/// Its `size_hint` is exact.
pub fn source(items: Vec<Item>, probe: &Probe) -> impl Stream<Item = Item> + Send + 'static {
    let probe = probe.clone();
    let alive = UpstreamAlive::new(&probe);
    futures::stream::iter(items).inspect(move |_| {
        let _alive = &alive;
        probe.on_pull();
    })
}

/// Like [`source`], but before every `every`-th item upstream is not ready: it returns
/// `Pending` once (waking itself), as a producer that has to wait does.
pub fn hesitant_source(
    items: Vec<Item>,
    probe: &Probe,
    every: usize,
) -> impl Stream<Item = Item> + Send + 'static {
    let probe = probe.clone();
    let alive = UpstreamAlive::new(&probe);
    stream! {
        let _alive = alive;
        for (i, item) in items.into_iter().enumerate() {
            if i % every == 0 {
                tokio::task::yield_now().await;
            }
            probe.on_pull();
            yield item;
        }
    }
}

/// A source fed by the test through the returned sender: `Pending` while it is empty,
/// over when the sender is dropped. Counts pulls like [`source`].
pub fn channel_source(
    probe: &Probe,
) -> (
    futures::channel::mpsc::UnboundedSender<Item>,
    impl Stream<Item = Item> + Send + 'static,
) {
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let probe = probe.clone();
    let alive = UpstreamAlive::new(&probe);
    let upstream = rx.inspect(move |_| {
        let _alive = &alive;
        probe.on_pull();
    });
    (tx, upstream)
}

/// A waker that only records that it was woken.
#[derive(Default)]
pub struct Flag(std::sync::atomic::AtomicBool);

impl Flag {
    pub fn new() -> Arc<Self> {
        Arc::new(Flag::default())
    }

    pub fn take(&self) -> bool {
        self.0.swap(false, SeqCst)
    }

    pub fn is_set(&self) -> bool {
        self.0.load(SeqCst)
    }
}

impl std::task::Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, SeqCst);
    }
}

/// Polls `flow` with `flag` as the waker until a poll returns `Pending` without waking it
/// at once: from then on the stream waits, and a wake means something happened.
pub async fn poll_until_waiting(flow: &mut Flow, flag: &Arc<Flag>) {
    let waker = std::task::Waker::from(Arc::clone(flag));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        flag.take();
        let polled = flow
            .as_mut()
            .poll_next(&mut std::task::Context::from_waker(&waker));
        assert!(polled.is_pending(), "the stream did not wait");
        if !flag.is_set() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stream never waits"
        );
        tokio::task::yield_now().await;
    }
}

/// Gates the jobs wait on, one per position below their count; the test opens them.
/// Dropping the [`Keys`] opens every gate still closed, so a failing test never leaves a
/// blocked thread behind.
#[derive(Clone)]
pub struct Gates(Arc<Vec<Mutex<Option<oneshot::Receiver<()>>>>>);

/// The test's side of [`Gates`].
pub struct Keys(Vec<Option<oneshot::Sender<()>>>);

pub fn gates(n: u64) -> (Gates, Keys) {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Mutex::new(Some(rx)))
        })
        .unzip();
    (Gates(Arc::new(receivers)), Keys(senders))
}

impl Gates {
    fn take(&self, i: u64) -> Option<oneshot::Receiver<()>> {
        let gate = self.0.get(usize::try_from(i).unwrap())?;
        gate.lock().unwrap().take()
    }

    pub async fn wait(&self, i: u64) {
        if let Some(rx) = self.take(i) {
            let _ = rx.await;
        }
    }

    pub fn wait_blocking(&self, i: u64) {
        if let Some(rx) = self.take(i) {
            let _ = rx.blocking_recv();
        }
    }
}

impl Keys {
    pub fn open(&mut self, i: u64) {
        if let Some(tx) = self.0[usize::try_from(i).unwrap()].take() {
            let _ = tx.send(());
        }
    }

    pub fn open_all(&mut self) {
        for i in 0..self.0.len() {
            self.open(i as u64);
        }
    }
}

/// A rendezvous of `parties` jobs, each spinning synchronously (it holds its thread) until
/// all have arrived: it completes only if the jobs really run at the same time. Gives up
/// after 2 s, so a serial engine fails the test instead of hanging it.
pub struct Meeting {
    parties: usize,
    arrived: AtomicUsize,
    met: AtomicUsize,
    missed: AtomicUsize,
}

impl Meeting {
    pub fn new(parties: usize) -> Arc<Self> {
        Arc::new(Meeting {
            parties,
            arrived: AtomicUsize::new(0),
            met: AtomicUsize::new(0),
            missed: AtomicUsize::new(0),
        })
    }

    fn attend(&self) {
        self.arrived.fetch_add(1, SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while self.arrived.load(SeqCst) < self.parties {
            if std::time::Instant::now() > deadline {
                self.missed.fetch_add(1, SeqCst);
                return;
            }
            std::thread::yield_now();
        }
        self.met.fetch_add(1, SeqCst);
    }

    pub fn met(&self) -> usize {
        self.met.load(SeqCst)
    }

    pub fn missed(&self) -> usize {
        self.missed.load(SeqCst)
    }
}

/// What the job for one item does.
#[derive(Clone, Copy, Debug, Default)]
pub struct Step {
    /// Async lane: sleep this long (on tokio's clock).
    pub sleep: Duration,
    /// Blocking lane: sleep this long on the thread (real time; never asserted).
    pub thread_sleep: Duration,
    /// Yield this many times first (to the runtime, or to the OS on the blocking lane).
    pub yields: u32,
    /// Return `Err(Fail::Job(i))`.
    pub fail: bool,
    /// Panic with the `String` payload `"boom at {i}"` at the end of the job.
    pub panic: bool,
    /// Async lane: panic with the `&str` payload `"boom before the future"` in `f` itself.
    pub panic_in_f: bool,
    /// Hold the thread (a synchronous spin, as CPU work does) until this many other jobs
    /// have completed; give up after 3 s (counted in [`Probe::gave_up`]) and return
    /// `Err(Fail::Job(i))`.
    pub spin_until_completed: Option<usize>,
    /// Hold the thread likewise until the consumer has received this many results.
    pub spin_until_yielded: Option<usize>,
}

/// The scripted job: run through [`build`] on either lane.
#[derive(Clone)]
pub struct Work {
    probe: Probe,
    plan: Arc<dyn Fn(u64) -> Step + Send + Sync>,
    gates: Option<Gates>,
    meeting: Option<Arc<Meeting>>,
}

impl Work {
    /// A job that computes [`value`] at once.
    pub fn new(probe: &Probe) -> Self {
        Work {
            probe: probe.clone(),
            plan: Arc::new(|_| Step::default()),
            gates: None,
            meeting: None,
        }
    }

    pub fn plan(mut self, plan: impl Fn(u64) -> Step + Send + Sync + 'static) -> Self {
        self.plan = Arc::new(plan);
        self
    }

    pub fn gated(mut self, gates: &Gates) -> Self {
        self.gates = Some(gates.clone());
        self
    }

    pub fn meeting(mut self, meeting: &Arc<Meeting>) -> Self {
        self.meeting = Some(Arc::clone(meeting));
        self
    }

    /// The async lane's job for item `i`.
    pub fn call(&self, i: u64) -> impl Future<Output = Item> + Send + 'static {
        let step = (self.plan)(i);
        if step.panic_in_f {
            panic!("boom before the future");
        }
        let live = Live::new(&self.probe);
        let work = self.clone();
        async move {
            let _live = live;
            let _running = Running::new(&work.probe);
            if let Some(gates) = &work.gates {
                gates.wait(i).await;
            }
            for _ in 0..step.yields {
                tokio::task::yield_now().await;
            }
            if !step.sleep.is_zero() {
                tokio::time::sleep(step.sleep).await;
            }
            work.finish(i, step)
        }
    }

    /// The blocking lane's job for item `i`.
    pub fn call_blocking(&self, i: u64) -> Item {
        let step = (self.plan)(i);
        let _live = Live::new(&self.probe);
        let _running = Running::new(&self.probe);
        if let Some(gates) = &self.gates {
            gates.wait_blocking(i);
        }
        for _ in 0..step.yields {
            std::thread::yield_now();
        }
        if !step.thread_sleep.is_zero() {
            std::thread::sleep(step.thread_sleep);
        }
        self.finish(i, step)
    }

    fn finish(&self, i: u64, step: Step) -> Item {
        if let Some(meeting) = &self.meeting {
            meeting.attend();
        }
        let spins = [
            step.spin_until_completed
                .map(|n| (n, &self.probe.0.completed)),
            step.spin_until_yielded.map(|n| (n, &self.probe.0.yielded)),
        ];
        for (count, counter) in spins.into_iter().flatten() {
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            while counter.load(SeqCst) < count {
                if std::time::Instant::now() > deadline {
                    self.probe.0.gave_up.fetch_add(1, SeqCst);
                    return Err(Fail::Job(i));
                }
                std::thread::yield_now();
            }
        }
        self.probe.0.finish_order.lock().unwrap().push(i);
        self.probe.0.completed.fetch_add(1, SeqCst);
        if step.panic {
            panic!("boom at {i}");
        }
        if step.fail {
            return Err(Fail::Job(i));
        }
        Ok(value(i))
    }

    /// A non-`try` operator's `f`: an `Err` item passes through as a value.
    fn call_item(&self, item: Item) -> impl Future<Output = Item> + Send + 'static {
        match item {
            Ok(i) => Either::Left(self.call(i)),
            Err(error) => Either::Right(futures::future::ready(Err(error))),
        }
    }

    fn call_blocking_item(&self, item: Item) -> Item {
        item.and_then(|i| self.call_blocking(i))
    }
}

/// Builds `op` over `upstream`, with `window` applied to the ordered operators.
#[track_caller]
pub fn build<S>(op: Op, limit: usize, window: Option<usize>, upstream: S, work: Work) -> Flow
where
    S: Stream<Item = Item> + Send + 'static,
{
    fn unordered(window: Option<usize>) {
        assert!(
            window.is_none(),
            "with_window exists on ordered operators only"
        );
    }
    /// An ordered operator, with its window widened when the test asks for it.
    fn widened<F>(flow: F, window: Option<usize>, widen: impl FnOnce(F, usize) -> F) -> Flow
    where
        F: FusedStream<Item = Item> + Send + 'static,
    {
        match window {
            Some(window) => Box::pin(widen(flow, window)),
            None => Box::pin(flow),
        }
    }
    match op {
        Op::MapConcurrent => widened(
            upstream.map_concurrent(limit, move |item| work.call_item(item)),
            window,
            |flow, w| flow.with_window(w),
        ),
        Op::MapConcurrentUnordered => {
            unordered(window);
            Box::pin(upstream.map_concurrent_unordered(limit, move |item| work.call_item(item)))
        }
        Op::ParMap => widened(
            upstream.par_map(limit, move |item| work.call_blocking_item(item)),
            window,
            |flow, w| flow.with_window(w),
        ),
        Op::ParMapUnordered => {
            unordered(window);
            Box::pin(upstream.par_map_unordered(limit, move |item| work.call_blocking_item(item)))
        }
        Op::TryMapConcurrent => widened(
            upstream.try_map_concurrent(limit, move |i| work.call(i)),
            window,
            |flow, w| flow.with_window(w),
        ),
        Op::TryMapConcurrentUnordered => {
            unordered(window);
            Box::pin(upstream.try_map_concurrent_unordered(limit, move |i| work.call(i)))
        }
        Op::TryParMap => widened(
            upstream.try_par_map(limit, move |i| work.call_blocking(i)),
            window,
            |flow, w| flow.with_window(w),
        ),
        Op::TryParMapUnordered => {
            unordered(window);
            Box::pin(upstream.try_par_map_unordered(limit, move |i| work.call_blocking(i)))
        }
    }
}

/// The next result, counted as yielded on `probe`; fails the test after 10 s (of tokio's
/// clock) instead of hanging.
pub async fn next(flow: &mut Flow, probe: &Probe) -> Option<Item> {
    let item = within("the next result", flow.next()).await;
    if item.is_some() {
        probe.on_yield();
    }
    item
}

/// Every remaining result, counted as yielded on `probe`.
pub async fn drain(flow: &mut Flow, probe: &Probe) -> Vec<Item> {
    let mut out = Vec::new();
    while let Some(item) = next(flow, probe).await {
        out.push(item);
    }
    out
}

/// Polls the stream once (with the task's own waker), counting a result as yielded.
pub async fn poll_once(flow: &mut Flow, probe: &Probe) -> Poll<Option<Item>> {
    let polled = futures::poll!(flow.next());
    if let Poll::Ready(Some(_)) = polled {
        probe.on_yield();
    }
    polled
}

/// The next result, or the panic it re-raised.
pub async fn next_or_panic(
    flow: &mut Flow,
    probe: &Probe,
) -> Result<Option<Item>, Box<dyn std::any::Any + Send>> {
    AssertUnwindSafe(next(flow, probe)).catch_unwind().await
}

/// The message of a panic payload that is a `&str` or a `String`.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        panic!("the panic payload is neither &str nor String")
    }
}

/// Fails the test if `future` takes more than 10 s of tokio's clock.
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(10), future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Waits until `condition` holds, without polling any stream; fails the test after 10 s of
/// real time. Yields to the runtime a few times, then sleeps a millisecond of tokio's
/// clock between checks (on the paused clock, that lets virtual time pass).
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut checks = 0;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        checks += 1;
        if checks < 32 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Lets the runtime run everything ready: a few turns of the scheduler.
pub async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

/// Sorts results for comparisons as multisets.
pub fn sorted(mut items: Vec<Item>) -> Vec<Item> {
    items.sort_by_key(|item| match item {
        Ok(v) => (0, *v),
        Err(Fail::Upstream(i)) => (1, *i),
        Err(Fail::Job(i)) => (2, *i),
    });
    items
}

/// Whether the test runs on a `current_thread` runtime (where nothing runs while the test
/// task runs, so cancellation is observable at once).
pub fn on_current_thread() -> bool {
    tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread
}

/// The windows to try with `limit`: the default, and wider ones on the ordered operators.
pub fn windows(op: Op, limit: usize) -> Vec<Option<usize>> {
    if op.is_ordered() {
        vec![None, Some(limit), Some(limit * 3 + 1)]
    } else {
        vec![None]
    }
}

/// Like [`source`], but after `items` the next poll panics with the `String` payload
/// `"upstream broke at {n}"` (`n` = the number of items). Also returns a count of the polls
/// made after that panic: a stage must never poll a broken upstream again.
pub fn breaking_source(
    items: Vec<Item>,
    probe: &Probe,
) -> (impl Stream<Item = Item> + Send + 'static, Arc<AtomicUsize>) {
    let at = items.len();
    let polled_after = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&polled_after);
    let mut broken = false;
    let tail = futures::stream::poll_fn(move |_| {
        if broken {
            counter.fetch_add(1, SeqCst);
            return Poll::Ready(None);
        }
        broken = true;
        panic!("upstream broke at {at}");
    });
    (source(items, probe).chain(tail), polled_after)
}

/// The worker counts every multi-thread scenario runs on: one, the machine's two cores, and
/// more workers than cores (the engine must be correct on any number of workers).
pub const WORKER_COUNTS: [usize; 4] = [1, 2, 4, 8];

/// A multi-thread runtime with `workers` worker threads, time and I/O enabled.
pub fn multi_thread(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("a multi-thread runtime")
}

/// A runtime a test builds for itself: `current_thread`, or `multi_thread` with this many
/// workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    CurrentThread,
    MultiThread(usize),
}

impl Flavor {
    /// `current_thread`, then `multi_thread` on each of [`WORKER_COUNTS`].
    pub fn all() -> impl Iterator<Item = Flavor> {
        std::iter::once(Flavor::CurrentThread).chain(WORKER_COUNTS.map(Flavor::MultiThread))
    }

    /// [`Flavor::MultiThread`] on each of [`WORKER_COUNTS`].
    pub fn multi_threads() -> impl Iterator<Item = Flavor> {
        WORKER_COUNTS.into_iter().map(Flavor::MultiThread)
    }

    /// A fresh runtime of this flavor, time and I/O enabled.
    pub fn runtime(self) -> tokio::runtime::Runtime {
        match self {
            Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime"),
            Flavor::MultiThread(workers) => multi_thread(workers),
        }
    }
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flavor::CurrentThread => write!(f, "current_thread"),
            Flavor::MultiThread(workers) => write!(f, "multi_thread with {workers} workers"),
        }
    }
}

/// Runs `f`; if it panics, panics again with the message prefixed by `context`, so that a
/// failure in a loop says in which round it happened.
#[track_caller]
pub fn in_context<T>(context: impl std::fmt::Display, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|message| (*message).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with a custom payload".to_owned());
            panic!("{context}: {message}");
        }
    }
}

/// Runs `body` to its end on a fresh multi-thread runtime of each of [`WORKER_COUNTS`]; a
/// failure says on how many workers it happened.
pub fn on_workers<F: Future>(body: impl FnMut() -> F) {
    on_worker_counts(WORKER_COUNTS, body);
}

/// Like [`on_workers`], on the worker counts given.
pub fn on_worker_counts<F: Future>(
    counts: impl IntoIterator<Item = usize>,
    mut body: impl FnMut() -> F,
) {
    for workers in counts {
        let runtime = multi_thread(workers);
        in_context(format_args!("on {workers} worker threads"), || {
            runtime.block_on(body())
        });
    }
}

/// The worker counts on which two jobs of `op` can hold a thread each at the same time:
/// every count on the blocking lane (its jobs run on threads off the runtime), but on the
/// async lane only counts of two or more, as jobs there run on the runtime's workers and
/// one worker runs one job at a time, whatever the engine does.
pub fn parallel_worker_counts(op: Op) -> Vec<usize> {
    WORKER_COUNTS
        .into_iter()
        .filter(|&workers| op.is_blocking() || workers >= 2)
        .collect()
}

/// The stream is over: `None` at every poll, terminated, an empty `size_hint`, nothing
/// more pulled.
pub async fn over_for_good(flow: &mut Flow, probe: &Probe) {
    let pulled = probe.pulled();
    for _ in 0..3 {
        assert_eq!(next(flow, probe).await, None, "a result after the end");
    }
    assert!(flow.is_terminated(), "the stream does not say it is over");
    assert_eq!(flow.size_hint(), (0, Some(0)));
    assert_eq!(probe.pulled(), pulled, "pulled after the end");
}

/// After a failure or a re-raise: async jobs are cancelled (at once on `current_thread`);
/// running closures finish once their gates open, their results discarded. Nothing is
/// pulled meanwhile.
pub async fn others_cancelled(op: Op, probe: &Probe, keys: &mut Keys) {
    let pulled = probe.pulled();
    if !op.is_blocking() {
        if on_current_thread() {
            assert_eq!(probe.live(), 0, "jobs left running after the re-raise");
        } else {
            eventually("the other jobs were cancelled", || probe.live() == 0).await;
        }
    }
    let completed = probe.completed();
    keys.open_all();
    eventually("the jobs ended", || probe.live() == 0).await;
    if !op.is_blocking() {
        settle().await;
        assert_eq!(
            probe.completed(),
            completed,
            "a cancelled job ran to its end"
        );
    }
    assert_eq!(probe.pulled(), pulled, "pulled after the re-raise");
}

/// Runs `f` on a thread of its own; fails the test if it takes more than 30 s.
pub fn on_a_thread<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(value)) => value,
        Ok(Err(payload)) => std::panic::resume_unwind(payload),
        Err(_) => panic!("{what} hung"),
    }
}
