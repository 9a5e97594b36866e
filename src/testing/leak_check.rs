//! `LeakCheck`: counts the futures, values and runtime tasks a pipeline leaves behind.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

#[derive(Debug, Default)]
struct Counts {
    futures: AtomicUsize,
    tokens: AtomicUsize,
    futures_made: AtomicUsize,
}

/// Counts the live futures and values a pipeline was given, and the tasks alive on the
/// runtime, and asserts after a drop that none are left.
///
/// - **Futures:** wrap the futures the pipeline's work creates with
///   [`track`](LeakCheck::track); each counts as live from its creation until it is
///   dropped (finished futures are dropped by the operators at once).
/// - **Values:** move a [`token`](LeakCheck::token) into anything else whose lifetime
///   matters (an item, a closure, a connection); it counts until it is dropped.
/// - **Tasks:** the runtime's alive tasks (`num_alive_tasks`, which counts tokio's
///   tasks, not the blocking pool's threads) when the check was created are the
///   baseline; after the drop, no more may be alive.
///
/// [`assert_none_left`](LeakCheck::assert_none_left) gives the runtime a bounded number
/// of turns (the operators' driver tasks finish on their next poll after a drop) and
/// then panics naming what is left. Work on the blocking lane ends when the call in
/// progress returns, in real time: its tokens are dropped then, on that thread. Let such
/// calls return (a channel, a barrier), then use
/// [`assert_none_left_within_time`](LeakCheck::assert_none_left_within_time), which
/// waits in real time.
///
/// # Examples
/// ```
/// use flowgate::prelude::*;
/// use flowgate::testing::LeakCheck;
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let leaks = LeakCheck::new();
/// let tracked = leaks.clone();
/// let mut out = flowgate::source::iter(0..1_000u64).map_concurrent(8, move |x| {
///     tracked.track(async move {
///         tokio::time::sleep(std::time::Duration::from_secs(x)).await;
///         x
///     })
/// });
/// assert_eq!(out.next().await, Some(0));
/// assert_eq!(leaks.live(), 7, "item 0 finished, 7 jobs still wait");
/// drop(out); // cancels the jobs in flight
/// leaks.assert_none_left().await;
/// # }
/// ```
#[derive(Clone)]
pub struct LeakCheck {
    counts: Arc<Counts>,
    tasks_before: Option<usize>,
}

impl Default for LeakCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LeakCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeakCheck")
            .field("futures", &self.counts.futures.load(Ordering::SeqCst))
            .field("tokens", &self.counts.tokens.load(Ordering::SeqCst))
            .field("tasks_before", &self.tasks_before)
            .finish()
    }
}

pin_project! {
    /// A future counted by a [`LeakCheck`] while it lives. Created by
    /// [`LeakCheck::track`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Tracked<F> {
        #[pin]
        future: F,
        token: LeakToken,
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().future.poll(cx)
    }
}

impl<F> fmt::Debug for Tracked<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracked").finish_non_exhaustive()
    }
}

/// A value counted by a [`LeakCheck`] until it is dropped. Created by
/// [`LeakCheck::token`].
pub struct LeakToken {
    counts: Arc<Counts>,
    future: bool,
}

impl Drop for LeakToken {
    fn drop(&mut self) {
        let count = if self.future {
            &self.counts.futures
        } else {
            &self.counts.tokens
        };
        count.fetch_sub(1, Ordering::SeqCst);
    }
}

impl fmt::Debug for LeakToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeakToken").finish_non_exhaustive()
    }
}

impl LeakCheck {
    /// The number of runtime turns [`assert_none_left`](Self::assert_none_left) gives.
    pub const TURNS: usize = 64;

    /// A check with nothing counted; inside a tokio runtime, the tasks alive now are the
    /// baseline (outside one, tasks are not checked).
    pub fn new() -> Self {
        LeakCheck {
            counts: Arc::default(),
            tasks_before: alive_tasks(),
        }
    }

    /// Counts `future` as live until it is dropped.
    pub fn track<F: Future>(&self, future: F) -> Tracked<F> {
        self.counts.futures_made.fetch_add(1, Ordering::SeqCst);
        self.counts.futures.fetch_add(1, Ordering::SeqCst);
        Tracked {
            future,
            token: LeakToken {
                counts: Arc::clone(&self.counts),
                future: true,
            },
        }
    }

    /// A value counted as live until it is dropped.
    pub fn token(&self) -> LeakToken {
        self.counts.tokens.fetch_add(1, Ordering::SeqCst);
        LeakToken {
            counts: Arc::clone(&self.counts),
            future: false,
        }
    }

    /// Tracked futures and tokens alive now.
    pub fn live(&self) -> usize {
        self.counts.futures.load(Ordering::SeqCst) + self.counts.tokens.load(Ordering::SeqCst)
    }

    /// Futures tracked so far, alive or not.
    pub fn futures_made(&self) -> usize {
        self.counts.futures_made.load(Ordering::SeqCst)
    }

    /// Tasks alive on the runtime beyond the baseline (zero or less when none were
    /// left); `None` outside a runtime or when the check was made outside one.
    pub fn extra_tasks(&self) -> Option<isize> {
        let before = self.tasks_before?;
        let now = alive_tasks()?;
        Some(now as isize - before as isize)
    }

    /// Whether nothing counted is alive and no task beyond the baseline.
    pub fn is_clean(&self) -> bool {
        self.live() == 0 && self.extra_tasks().is_none_or(|extra| extra <= 0)
    }

    /// Gives the runtime up to [`TURNS`](Self::TURNS) turns for dropped work to finish,
    /// then asserts that no tracked future or token is alive and no task beyond the
    /// baseline.
    ///
    /// # Panics
    /// If something is left, naming what.
    #[track_caller]
    pub fn assert_none_left(&self) -> impl Future<Output = ()> + '_ {
        self.assert_none_left_within(Self::TURNS)
    }

    /// As [`assert_none_left`](Self::assert_none_left), with `turns` turns of the
    /// runtime (`tokio::task::yield_now`) at most.
    ///
    /// # Panics
    /// If something is left after them, naming what.
    #[track_caller]
    pub fn assert_none_left_within(&self, turns: usize) -> impl Future<Output = ()> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            let mut turn = 0;
            while !self.is_clean() && turn < turns {
                tokio::task::yield_now().await;
                turn += 1;
            }
            if !self.is_clean() {
                self.left_behind(caller, &format!("after {turns} runtime turns"));
            }
        }
    }

    /// As [`assert_none_left`](Self::assert_none_left), for work on tokio's blocking
    /// pool (`par_map` jobs, [`blocking_iter`](crate::source::blocking_iter)), whose
    /// calls end in real time, however busy the machine: checks after each of the first
    /// [`TURNS`](Self::TURNS) runtime turns, then every millisecond of tokio's clock,
    /// for up to `patience` of real time.
    ///
    /// # Panics
    /// If something is still left after `patience`, naming what.
    #[track_caller]
    pub fn assert_none_left_within_time(
        &self,
        patience: std::time::Duration,
    ) -> impl Future<Output = ()> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            let deadline = std::time::Instant::now() + patience;
            let mut checks = 0;
            while !self.is_clean() && std::time::Instant::now() < deadline {
                checks += 1;
                if checks <= Self::TURNS {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
            if !self.is_clean() {
                self.left_behind(caller, &format!("after {patience:?}"));
            }
        }
    }

    #[track_caller]
    fn left_behind(&self, caller: &std::panic::Location<'_>, after: &str) -> ! {
        panic!(
            "LeakCheck at {caller}: {after}, {} tracked futures (of {} made), {} tokens and \
             {} tasks beyond the {} alive at the start are still alive",
            self.counts.futures.load(Ordering::SeqCst),
            self.futures_made(),
            self.counts.tokens.load(Ordering::SeqCst),
            self.extra_tasks().unwrap_or(0).max(0),
            self.tasks_before.unwrap_or(0),
        );
    }
}

fn alive_tasks() -> Option<usize> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    Some(handle.metrics().num_alive_tasks())
}
