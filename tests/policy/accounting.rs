//! The accounting property behind every policy: with random failures, timeouts, panics
//! (caught), retries and a shutdown at a random moment, every input position ends
//! exactly once as a success, a final failure (yielded, or sent as a dead letter) or
//! "not completed" in the shutdown report; and the window holds at every pull.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use flowgate::policy::{CancellationToken, DeadLetter};
use flowgate::prelude::*;
use flowgate::{Backoff, Error, Retry};
use futures::{SinkExt, StreamExt};
use proptest::collection::vec;
use proptest::prelude::*;

const MS: Duration = Duration::from_millis(1);

/// What an item's attempts do.
#[derive(Clone, Copy, Debug)]
enum Script {
    /// Succeeds after `delay` ms.
    Ok(u8),
    /// Fails its first `n` attempts (after `delay` ms each), then succeeds.
    FailFirst(u8, u8),
    /// Always fails.
    FailAlways,
    /// Hangs at its first attempt (until the timeout), then succeeds.
    HangFirst,
    /// Panics at its first attempt, then succeeds.
    PanicFirst,
    /// Always panics.
    PanicAlways,
}

fn script() -> impl Strategy<Value = Script> {
    prop_oneof![
        4 => (0u8..20).prop_map(Script::Ok),
        2 => (1u8..4, 0u8..10).prop_map(|(n, d)| Script::FailFirst(n, d)),
        1 => Just(Script::FailAlways),
        1 => Just(Script::HangFirst),
        1 => Just(Script::PanicFirst),
        1 => Just(Script::PanicAlways),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    scripts: Vec<Script>,
    limit: usize,
    extra: usize,
    attempts: u32,
    ordered: bool,
    dead_letters: bool,
    /// Cancel the token once this many items were received (never, if past the end).
    cancel_after: usize,
    grace_ms: u64,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        vec(script(), 0..40),
        1usize..8,
        0usize..8,
        1u32..4,
        any::<bool>(),
        any::<bool>(),
        0usize..50,
        0u64..40,
    )
        .prop_map(
            |(scripts, limit, extra, attempts, ordered, dead_letters, cancel_after, grace_ms)| {
                Case {
                    scripts,
                    limit,
                    extra,
                    attempts,
                    ordered,
                    dead_letters,
                    cancel_after,
                    grace_ms,
                }
            },
        )
}

/// How each position ended.
#[derive(Default)]
struct Ledger {
    succeeded: Vec<u64>,
    failed: Vec<u64>,
    /// The positions in the order they were yielded (dead letters aside).
    yielded: Vec<u64>,
}

/// In input order, what was yielded came in increasing positions.
fn check_order(ledger: &Ledger) -> Result<(), TestCaseError> {
    prop_assert!(
        ledger.yielded.windows(2).all(|w| w[0] < w[1]),
        "out of order: {:?}",
        ledger.yielded
    );
    Ok(())
}

/// Checks that every position of `0..n` ended exactly once.
fn check_accounting(
    n: u64,
    ledger: &Ledger,
    report: Option<flowgate::policy::NotCompleted>,
) -> Result<(), TestCaseError> {
    let mut seen = BTreeSet::new();
    for position in ledger.succeeded.iter().chain(&ledger.failed) {
        prop_assert!(seen.insert(*position), "position {} ended twice", position);
    }
    if let Some(report) = report {
        for position in report.cancelled() {
            prop_assert!(
                seen.insert(*position),
                "position {} done and reported",
                position
            );
        }
        for position in report.first_not_pulled()..n {
            prop_assert!(
                seen.insert(position),
                "position {} done and not pulled",
                position
            );
        }
    }
    prop_assert_eq!(seen, (0..n).collect::<BTreeSet<u64>>(), "positions lost");
    Ok(())
}

/// The items of a case, counting pulls and checking the window at each one.
fn upstream(
    n: u64,
    window: usize,
    yielded: &Arc<AtomicU64>,
) -> impl futures::Stream<Item = Result<u64, String>> + Send + 'static {
    let yielded = yielded.clone();
    let pulled = Arc::new(AtomicU64::new(0));
    flowgate::source::iter((0..n).map(Ok)).inspect(move |_| {
        let pulled = pulled.fetch_add(1, Ordering::SeqCst) + 1;
        let held = pulled - yielded.load(Ordering::SeqCst);
        assert!(held <= window as u64, "{held} items held, window {window}");
    })
}

/// Drains `flow`, recording every result, cancelling `token` after `cancel_after` of
/// them.
async fn drain<S>(
    flow: S,
    yielded: &AtomicU64,
    token: &CancellationToken,
    cancel_after: usize,
    ledger: &mut Ledger,
) where
    S: futures::Stream<Item = Result<u64, Error<String>>>,
{
    let mut flow = std::pin::pin!(flow);
    let mut received = 0;
    while let Some(result) = flow.next().await {
        yielded.fetch_add(1, Ordering::SeqCst);
        received += 1;
        let position = match result {
            Ok(position) => {
                ledger.succeeded.push(position);
                position
            }
            Err(error) => {
                ledger.failed.push(error.position());
                error.position()
            }
        };
        ledger.yielded.push(position);
        if received == cancel_after {
            token.cancel();
        }
    }
}

/// The async lane, on the paused clock.
fn run_async(case: &Case) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let n = case.scripts.len() as u64;
        let window = case.limit + case.extra;
        let yielded = Arc::new(AtomicU64::new(0));
        let calls = Arc::new(Mutex::new(vec![0u8; case.scripts.len()]));
        let scripts = case.scripts.clone();
        let f = move |position: u64| {
            let attempt = {
                let mut calls = calls.lock().unwrap();
                calls[position as usize] += 1;
                calls[position as usize]
            };
            let script = scripts[position as usize];
            async move {
                match script {
                    Script::Ok(delay) => {
                        tokio::time::sleep(MS * u32::from(delay)).await;
                        Ok(position)
                    }
                    Script::FailFirst(times, delay) => {
                        tokio::time::sleep(MS * u32::from(delay)).await;
                        if attempt <= times {
                            Err(format!("transient {position}"))
                        } else {
                            Ok(position)
                        }
                    }
                    Script::FailAlways => Err(format!("permanent {position}")),
                    Script::HangFirst => {
                        if attempt == 1 {
                            futures::future::pending::<()>().await;
                        }
                        Ok(position)
                    }
                    Script::PanicFirst if attempt == 1 => panic!("panic at {position}"),
                    Script::PanicFirst => Ok(position),
                    Script::PanicAlways => panic!("always at {position}"),
                }
            }
        };
        let token = CancellationToken::new();
        let retry = Retry::attempts(case.attempts).backoff(Backoff::exponential(MS, 8 * MS));
        let source = upstream(n, window, &yielded);
        let mut ledger = Ledger::default();
        let report;
        let letters = Arc::new(Mutex::new(Vec::new()));
        let grace = MS * case.grace_ms as u32;
        macro_rules! run {
            ($flow:expr) => {{
                let flow = $flow
                    .with_timeout(30 * MS)
                    .with_retry(retry)
                    .catch_panics()
                    .with_window(window)
                    .with_shutdown(token.clone(), grace);
                report = flow.shutdown_report();
                if case.dead_letters {
                    let (sink, received) =
                        futures::channel::mpsc::unbounded::<DeadLetter<u64, String>>();
                    // A letter leaves the operator as a result does: it counts as yielded.
                    let counter = yielded.clone();
                    let sink = sink.with(move |letter| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        futures::future::ready(Ok::<_, futures::channel::mpsc::SendError>(letter))
                    });
                    let collected = letters.clone();
                    let reader = tokio::spawn(async move {
                        let letters: Vec<_> = received.collect().await;
                        collected.lock().unwrap().extend(letters);
                    });
                    let flow = flow
                        .dead_letters(sink)
                        .map(|r| r.map_err(|_| unreachable!()));
                    drain(flow, &yielded, &token, case.cancel_after, &mut ledger).await;
                    reader.await.unwrap();
                } else {
                    drain(
                        flow.keep_going(),
                        &yielded,
                        &token,
                        case.cancel_after,
                        &mut ledger,
                    )
                    .await;
                }
            }};
        }
        if case.ordered {
            run!(source.try_map_concurrent(case.limit, f));
        } else {
            run!(source.try_map_concurrent_unordered(case.limit, f));
        }
        for letter in letters.lock().unwrap().iter() {
            prop_assert_eq!(letter.item, Some(letter.error.position()), "the item kept");
            ledger.failed.push(letter.error.position());
        }
        if case.ordered {
            check_order(&ledger)?;
        }
        check_accounting(n, &ledger, report.get())
    })
}

/// A gate hung blocking calls wait on, opened at the end of a case.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// The blocking lane, on a multi-thread runtime: hung calls wait on a gate (opened at
/// the end) and are abandoned at their timeout; nothing about time is asserted.
fn run_blocking(case: &Case) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let gate = Arc::new(Gate::default());
    let outcome = runtime.block_on(async {
        let n = case.scripts.len() as u64;
        let window = case.limit + case.extra;
        let yielded = Arc::new(AtomicU64::new(0));
        let calls = Arc::new(Mutex::new(vec![0u8; case.scripts.len()]));
        let scripts = case.scripts.clone();
        let hung = gate.clone();
        let f = move |position: u64| {
            let attempt = {
                let mut calls = calls.lock().unwrap();
                calls[position as usize] += 1;
                calls[position as usize]
            };
            match scripts[position as usize] {
                Script::Ok(_) => Ok(position),
                Script::FailFirst(times, _) if attempt <= times => {
                    Err(format!("transient {position}"))
                }
                Script::FailFirst(..) => Ok(position),
                Script::FailAlways => Err(format!("permanent {position}")),
                Script::HangFirst => {
                    if attempt == 1 {
                        hung.wait();
                    }
                    Ok(position)
                }
                Script::PanicFirst if attempt == 1 => panic!("panic at {position}"),
                Script::PanicFirst => Ok(position),
                Script::PanicAlways => panic!("always at {position}"),
            }
        };
        let token = CancellationToken::new();
        let retry = Retry::attempts(case.attempts);
        let source = upstream(n, window, &yielded);
        let mut ledger = Ledger::default();
        let grace = MS * case.grace_ms as u32;
        let flow = if case.ordered {
            source.try_par_map(case.limit, f).with_timeout(5 * MS)
        } else {
            source
                .try_par_map_unordered(case.limit, f)
                .with_timeout(5 * MS)
        };
        let flow = flow
            .with_retry(retry)
            .catch_panics()
            .keep_going()
            .with_window(window)
            .with_shutdown(token.clone(), grace);
        let report = flow.shutdown_report();
        drain(flow, &yielded, &token, case.cancel_after, &mut ledger).await;
        if case.ordered {
            check_order(&ledger)?;
        }
        check_accounting(n, &ledger, report.get())
    });
    gate.open();
    drop(runtime);
    outcome
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 3000,
        timeout: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_position_ends_exactly_once_on_the_async_lane(case in cases()) {
        run_async(&case)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        timeout: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_position_ends_exactly_once_on_the_blocking_lane(case in cases()) {
        run_blocking(&case)?;
    }
}
