//! Scenarios that try to break `map_concurrent_by_key` / `_unordered`: each test names
//! the promise it checks (start times with a busy consumer, panics and failures with
//! items waiting for their key, shutdowns, windows, limit 1, colliding hashes, many
//! keys, multi-thread runtimes).

use std::any::Any;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::policy::CancellationToken;
use flowgate::prelude::*;
use flowgate::testing::{LeakCheck, MockSource, Probe};
use futures::stream::FusedStream;
use futures::{FutureExt, Stream, StreamExt};
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

type Payload = Box<dyn Any + Send>;

/// Drains a stream, catching a re-raised panic: (items before it, the payload).
async fn drain<S: Stream + Unpin>(flow: &mut S) -> (Vec<S::Item>, Option<Payload>) {
    let mut out = Vec::new();
    loop {
        match AssertUnwindSafe(flow.next()).catch_unwind().await {
            Ok(Some(item)) => out.push(item),
            Ok(None) => return (out, None),
            Err(payload) => return (out, Some(payload)),
        }
    }
}

fn payload_str(payload: &Payload) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string payload>".to_string()
    }
}

/// Jobs running per key and in all, counted by a guard that leaves on Drop (so a job
/// whose future is still alive counts, even after it returned Ready).
#[derive(Default)]
struct Running {
    per_key: Mutex<HashMap<u64, usize>>,
    max_per_key: AtomicUsize,
    all: AtomicUsize,
    max_all: AtomicUsize,
}

struct Guard {
    running: Arc<Running>,
    key: u64,
}

impl Running {
    fn enter(self: &Arc<Self>, key: u64) -> Guard {
        let mut per_key = self.per_key.lock().unwrap();
        let n = per_key.entry(key).or_insert(0);
        *n += 1;
        self.max_per_key.fetch_max(*n, Ordering::SeqCst);
        let all = self.all.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_all.fetch_max(all, Ordering::SeqCst);
        Guard {
            running: Arc::clone(self),
            key,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        *self
            .running
            .per_key
            .lock()
            .unwrap()
            .get_mut(&self.key)
            .unwrap() -= 1;
        self.running.all.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A tiny deterministic generator.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

// ---------------------------------------------------------------------------------
// "a key's next item starting as soon as its previous job finished"
// ---------------------------------------------------------------------------------

/// The consumer is prompt: key A's items start back to back.
#[tokio::test(start_paused = true)]
async fn next_item_of_a_key_starts_when_the_previous_finishes_prompt_consumer() {
    let start = Instant::now();
    let starts = Arc::new(Mutex::new(HashMap::new()));
    let s2 = Arc::clone(&starts);
    // Items: A, B, A, B, A (A 10 ms, B 100 ms).
    let items = vec![('A', 10), ('B', 100), ('A', 10), ('B', 100), ('A', 10)];
    let out: Vec<usize> = flowgate::source::iter(items.into_iter().enumerate())
        .map_concurrent_by_key_unordered(
            4,
            |(_, (k, _))| *k,
            move |(i, (_, d))| {
                s2.lock().unwrap().insert(i, start.elapsed());
                async move {
                    tokio::time::sleep(ms(d)).await;
                    i
                }
            },
        )
        .with_window(8)
        .collect()
        .await;
    assert_eq!(out, [0, 2, 4, 1, 3]);
    let starts = starts.lock().unwrap();
    assert_eq!(starts[&0], ms(0));
    assert_eq!(starts[&2], ms(10));
    assert_eq!(starts[&4], ms(20));
}

/// A consumer that takes 5 ms per item, with finished results of other keys waiting to
/// leave and upstream exhausted: key A's next item must start when its previous job
/// finished (10 ms), or at worst at the consumer's next poll (by 15 ms) — not once the
/// consumer has drained every other ready result.
#[tokio::test(start_paused = true)]
async fn unordered_next_item_of_a_key_waits_for_the_consumer_to_drain_other_results() {
    let start = Instant::now();
    let starts = Arc::new(Mutex::new(HashMap::new()));
    let s2 = Arc::clone(&starts);
    // 0: A 10 ms, 1: A 10 ms (waits for 0), 2..=8: distinct keys, 9 ms.
    let mut items: Vec<(u32, u64)> = vec![(0, 10), (0, 10)];
    items.extend((1..=7).map(|k| (k, 9)));
    let mut flow = Box::pin(
        flowgate::source::iter(items.into_iter().enumerate())
            .map_concurrent_by_key_unordered(
                8,
                |(_, (k, _))| *k,
                move |(i, (_, d))| {
                    s2.lock().unwrap().insert(i, start.elapsed());
                    async move {
                        tokio::time::sleep(ms(d)).await;
                        i
                    }
                },
            )
            .with_window(16),
    );
    let mut out = Vec::new();
    while let Some(i) = flow.next().await {
        out.push(i);
        tokio::time::sleep(ms(5)).await; // a consumer busy 5 ms per item
    }
    assert_eq!(out.len(), 9);
    let started = starts.lock().unwrap()[&1];
    assert!(
        started <= ms(15),
        "item 1 (key A) started at {started:?}; its key was free at 10 ms and the consumer \
         polled every 5 ms"
    );
}

/// The same in input order: positions 0..=6 (distinct keys) are ready and leave one per
/// 5 ms; position 7 (key A) finishes at 10 ms; position 8 (key A) should start then.
#[tokio::test(start_paused = true)]
async fn ordered_next_item_of_a_key_waits_for_the_consumer_to_drain_other_results() {
    let start = Instant::now();
    let starts = Arc::new(Mutex::new(HashMap::new()));
    let s2 = Arc::clone(&starts);
    let mut items: Vec<(u32, u64)> = (1..=7).map(|k| (k, 9)).collect();
    items.push((0, 10));
    items.push((0, 10));
    let mut flow = Box::pin(
        flowgate::source::iter(items.into_iter().enumerate())
            .map_concurrent_by_key(
                8,
                |(_, (k, _))| *k,
                move |(i, (_, d))| {
                    s2.lock().unwrap().insert(i, start.elapsed());
                    async move {
                        tokio::time::sleep(ms(d)).await;
                        i
                    }
                },
            )
            .with_window(16),
    );
    let mut out = Vec::new();
    while let Some(i) = flow.next().await {
        out.push(i);
        tokio::time::sleep(ms(5)).await;
    }
    assert_eq!(out, (0..9).collect::<Vec<_>>());
    let started = starts.lock().unwrap()[&8];
    assert!(
        started <= ms(15),
        "item 8 (key A) started at {started:?}; its key was free at 10 ms and the consumer \
         polled every 5 ms"
    );
}

// ---------------------------------------------------------------------------------
// Panics
// ---------------------------------------------------------------------------------

/// A job of key 0 panics while later items of key 0 (and key 1) wait: earlier positions
/// leave first, the payload is the job's, nothing is left after the drop.
#[tokio::test(start_paused = true)]
async fn ordered_panic_in_a_job_with_items_of_its_key_waiting() {
    let leaks = LeakCheck::new();
    let tracked = leaks.clone();
    let items: Vec<_> = (0..12u64).map(|i| (i, leaks.token())).collect();
    let mut flow = Box::pin(
        flowgate::source::iter(items)
            .map_concurrent_by_key(
                4,
                |(i, _)| i % 2,
                move |(i, tok)| {
                    tracked.track(async move {
                        let _tok = tok;
                        tokio::time::sleep(ms(10)).await;
                        if i == 2 {
                            std::panic::panic_any(format!("job {i} failed"));
                        }
                        i
                    })
                },
            )
            .with_window(8),
    );
    let (out, payload) = drain(&mut flow).await;
    assert_eq!(out, [0, 1]);
    assert_eq!(payload_str(&payload.expect("the panic")), "job 2 failed");
    // Fused after the re-raise.
    assert!(flow.next().await.is_none());
    assert!(flow.is_terminated());
    assert_eq!(flow.size_hint(), (0, Some(0)));
    drop(flow);
    leaks.assert_none_left().await;
}

#[tokio::test(start_paused = true)]
async fn unordered_panic_in_a_job_with_items_of_its_key_waiting() {
    let leaks = LeakCheck::new();
    let tracked = leaks.clone();
    let items: Vec<_> = (0..12u64).map(|i| (i, leaks.token())).collect();
    let mut flow = Box::pin(
        flowgate::source::iter(items)
            .map_concurrent_by_key_unordered(
                4,
                |(i, _)| i % 2,
                move |(i, tok)| {
                    tracked.track(async move {
                        let _tok = tok;
                        tokio::time::sleep(ms(10 + i)).await;
                        if i == 2 {
                            std::panic::panic_any(format!("job {i} failed"));
                        }
                        i
                    })
                },
            )
            .with_window(8),
    );
    let (out, payload) = drain(&mut flow).await;
    assert_eq!(out, [0, 1]);
    assert_eq!(payload_str(&payload.expect("the panic")), "job 2 failed");
    assert!(flow.next().await.is_none());
    drop(flow);
    leaks.assert_none_left().await;
}

/// After a failure the stream has ended; items still waiting for their key were
/// "cancelled" (never start). Are they released while the ended stream is kept, as
/// the futures of cancelled jobs are? (map_concurrent for comparison below.)
#[tokio::test(start_paused = true)]
async fn waiting_items_are_released_when_the_stream_ends_by_a_panic() {
    let leaks = LeakCheck::new();
    let items: Vec<_> = (0..8u64).map(|i| (i, leaks.token())).collect();
    let mut flow = Box::pin(
        flowgate::source::iter(items)
            // Limit 3 with 2 keys: a place stays free, so all 8 items are pulled (6 of
            // them wait for their key) rather than left upstream.
            .map_concurrent_by_key_unordered(
                3,
                |(i, _)| i % 2,
                move |(i, tok)| async move {
                    let _tok = tok;
                    tokio::time::sleep(ms(10)).await;
                    assert!(i != 0, "job 0 failed");
                    i
                },
            )
            .with_window(8),
    );
    let (_, payload) = drain(&mut flow).await;
    assert!(payload.is_some());
    assert!(flow.next().await.is_none());
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
    let live = leaks.live();
    drop(flow);
    assert_eq!(
        live, 0,
        "{live} items still held by the ended (not dropped) stream"
    );
}

#[tokio::test(start_paused = true)]
async fn control_map_concurrent_releases_cancelled_items_when_ended() {
    let leaks = LeakCheck::new();
    let items: Vec<_> = (0..8u64).map(|i| (i, leaks.token())).collect();
    let mut flow = Box::pin(flowgate::source::iter(items).map_concurrent_unordered(
        8,
        move |(i, tok)| async move {
            let _tok = tok;
            tokio::time::sleep(ms(10 + 10 * i)).await;
            assert!(i != 0, "job 0 failed");
            i
        },
    ));
    let (_, payload) = drain(&mut flow).await;
    assert!(payload.is_some());
    assert!(flow.next().await.is_none());
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
    let live = leaks.live();
    drop(flow);
    assert_eq!(live, 0, "{live} items still held");
}

/// `f` itself panics (before a future exists) for an item that waited for its key:
/// results before it leave first.
#[tokio::test(start_paused = true)]
async fn ordered_sync_panic_in_f_for_an_item_that_waited() {
    let mut flow = Box::pin(
        flowgate::source::iter(
            vec![('A', 10u64), ('B', 30), ('A', 0), ('C', 1)]
                .into_iter()
                .enumerate(),
        )
        .map_concurrent_by_key(
            4,
            |(_, (k, _))| *k,
            |(i, (_, d))| {
                assert!(i != 2, "no future for 2");
                async move {
                    tokio::time::sleep(ms(d)).await;
                    i
                }
            },
        ),
    );
    let (out, payload) = drain(&mut flow).await;
    assert_eq!(out, [0, 1]);
    assert_eq!(payload_str(&payload.unwrap()), "no future for 2");
    assert!(flow.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn unordered_sync_panic_in_f_for_an_item_that_waited() {
    let mut flow = Box::pin(
        flowgate::source::iter(
            vec![('A', 10u64), ('B', 30), ('A', 0), ('C', 1)]
                .into_iter()
                .enumerate(),
        )
        .map_concurrent_by_key_unordered(
            4,
            |(_, (k, _))| *k,
            |(i, (_, d))| {
                assert!(i != 2, "no future for 2");
                async move {
                    tokio::time::sleep(ms(d)).await;
                    i
                }
            },
        ),
    );
    let (out, payload) = drain(&mut flow).await;
    // 3 (1 ms) leaves; 0 finishes at 10 ms, in the same collect as 2 is prepared and
    // panics: an unordered failure drops results not yet yielded (documented).
    assert_eq!(out, [3]);
    assert_eq!(payload_str(&payload.unwrap()), "no future for 2");
    assert!(flow.next().await.is_none());
}

/// An upstream panic while items wait for their key: positions before it leave, in
/// order, then its payload.
#[tokio::test(start_paused = true)]
async fn ordered_upstream_panic_with_items_waiting() {
    let up = flowgate::source::iter(0..10u64).map(|i| {
        if i == 5 {
            std::panic::panic_any(String::from("upstream broke at 5"));
        }
        i
    });
    let mut flow = Box::pin(
        up.map_concurrent_by_key(
            2,
            |i| i % 2,
            |i| async move {
                tokio::time::sleep(ms(10)).await;
                i
            },
        )
        .with_window(8),
    );
    let (out, payload) = drain(&mut flow).await;
    assert_eq!(out, [0, 1, 2, 3, 4]);
    assert_eq!(payload_str(&payload.unwrap()), "upstream broke at 5");
    assert!(flow.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn unordered_upstream_panic_with_items_waiting() {
    let up = flowgate::source::iter(0..10u64).map(|i| {
        if i == 5 {
            std::panic::panic_any(String::from("upstream broke at 5"));
        }
        i
    });
    let mut flow = Box::pin(
        up.map_concurrent_by_key_unordered(
            2,
            |i| i % 2,
            |i| async move {
                tokio::time::sleep(ms(10)).await;
                i
            },
        )
        .with_window(8),
    );
    let (out, payload) = drain(&mut flow).await;
    assert!(out.iter().all(|i| *i < 5), "{out:?}");
    assert_eq!(payload_str(&payload.unwrap()), "upstream broke at 5");
    assert!(flow.next().await.is_none());
}

/// A key panic in the unordered form, with items of other keys waiting.
#[tokio::test(start_paused = true)]
async fn unordered_key_panic() {
    let mut flow = Box::pin(
        flowgate::source::iter(0..10u64)
            .map_concurrent_by_key_unordered(
                2,
                |i| {
                    assert!(*i != 4, "no key for 4");
                    i % 2
                },
                |i| async move {
                    tokio::time::sleep(ms(10)).await;
                    i
                },
            )
            .with_window(8),
    );
    let (out, payload) = drain(&mut flow).await;
    assert!(out.len() <= 4, "{out:?}");
    assert_eq!(payload_str(&payload.unwrap()), "no key for 4");
    assert!(flow.next().await.is_none());
}

/// A job that panics in its Drop while being cancelled (after another job's panic): the
/// consumer sees the first panic's payload, and the runtime keeps working.
struct PanicOnDrop;
impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("drop panic");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_future_panicking_in_drop_does_not_replace_the_payload() {
    for ordered in [true, false] {
        let f = |(i, k): (u64, u64)| async move {
            if i == 0 {
                tokio::time::sleep(ms(5)).await;
                panic!("job 0 failed");
            }
            let _bomb = PanicOnDrop;
            tokio::time::sleep(ms(1000)).await;
            (i, k)
        };
        let items = vec![(0u64, 0u64), (1, 1), (2, 2), (3, 1)];
        let (out, payload) = if ordered {
            let mut flow =
                Box::pin(flowgate::source::iter(items).map_concurrent_by_key(4, |(_, k)| *k, f));
            drain(&mut flow).await
        } else {
            let mut flow = Box::pin(
                flowgate::source::iter(items).map_concurrent_by_key_unordered(4, |(_, k)| *k, f),
            );
            drain(&mut flow).await
        };
        assert!(out.is_empty());
        assert_eq!(
            payload_str(&payload.unwrap()),
            "job 0 failed",
            "ordered: {ordered}"
        );
    }
    // The runtime still runs another keyed stream.
    let out: Vec<u64> = flowgate::source::iter(0..20u64)
        .map_concurrent_by_key(4, |i| i % 3, |i| async move { i })
        .collect()
        .await;
    assert_eq!(out, (0..20).collect::<Vec<_>>());
}

/// A finished future whose Drop panics: that is the job's panic, at its position.
#[tokio::test(start_paused = true)]
async fn a_finished_future_panicking_in_drop_is_the_jobs_panic() {
    let mut flow = Box::pin(flowgate::source::iter(0..6u64).map_concurrent_by_key(
        2,
        |i| i % 2,
        |i| async move {
            let bomb = if i == 3 { Some(PanicOnDrop) } else { None };
            tokio::time::sleep(ms(10)).await;
            let _keep = bomb;
            i
        },
    ));
    let (out, payload) = drain(&mut flow).await;
    assert_eq!(out, [0, 1, 2]);
    assert_eq!(payload_str(&payload.unwrap()), "drop panic");
}

// ---------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------

/// Every position ends exactly once: yielded, cancelled, or at/after first_not_pulled.
fn check_accounting(n: u64, out: &[u64], report: &flowgate::policy::ShutdownReport) {
    let nc = report.get().expect("ended by the shutdown");
    let mut seen = vec![0u32; n as usize];
    for &i in out {
        seen[i as usize] += 1;
        assert!(
            i < nc.first_not_pulled(),
            "{i} yielded but reported never pulled"
        );
    }
    for &i in nc.cancelled() {
        assert!(i < nc.first_not_pulled(), "{i} cancelled but never pulled");
        seen[i as usize] += 1;
    }
    for i in nc.first_not_pulled()..n {
        seen[i as usize] += 1;
    }
    for (i, c) in seen.iter().enumerate() {
        assert_eq!(
            *c,
            1,
            "position {i} accounted {c} times (out {out:?}, cancelled {:?}, first not pulled {})",
            nc.cancelled(),
            nc.first_not_pulled()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_grace_ends_while_keys_have_waiting_items() {
    for ordered in [true, false] {
        for grace in [0u64, 3, 15, 40] {
            for cancel_at in [1u64, 12, 25] {
                let token = CancellationToken::new();
                let n = 200u64;
                let f = |i: u64| async move {
                    tokio::time::sleep(ms(1 + (i * 7) % 13)).await;
                    i
                };
                let key = |i: &u64| if i % 3 == 0 { 0 } else { i % 5 };
                let t2 = token.clone();
                let stopper = tokio::spawn(async move {
                    tokio::time::sleep(ms(cancel_at)).await;
                    t2.cancel();
                });
                let (out, report) = if ordered {
                    let flow = flowgate::source::iter(0..n)
                        .map_concurrent_by_key(3, key, f)
                        .with_window(12)
                        .with_shutdown(token.clone(), ms(grace));
                    let report = flow.shutdown_report();
                    let out: Vec<u64> = flow.collect().await;
                    (out, report)
                } else {
                    let flow = flowgate::source::iter(0..n)
                        .map_concurrent_by_key_unordered(3, key, f)
                        .with_window(12)
                        .with_shutdown(token.clone(), ms(grace));
                    let report = flow.shutdown_report();
                    let out: Vec<u64> = flow.collect().await;
                    (out, report)
                };
                stopper.await.unwrap();
                if ordered {
                    assert!(out.windows(2).all(|w| w[0] < w[1]), "{out:?}");
                }
                check_accounting(n, &out, &report);
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_token_cancelled_before_the_first_poll() {
    for ordered in [true, false] {
        let token = CancellationToken::new();
        token.cancel();
        let probe = Probe::new();
        let src = probe.input(flowgate::source::iter(0..10u64));
        let f = |i: u64| async move { i };
        let (out, report) = if ordered {
            let flow = src
                .map_concurrent_by_key(2, |i| i % 2, f)
                .with_shutdown(token.clone(), ms(100));
            let report = flow.shutdown_report();
            (flow.collect::<Vec<_>>().await, report)
        } else {
            let flow = src
                .map_concurrent_by_key_unordered(2, |i| i % 2, f)
                .with_shutdown(token.clone(), ms(100));
            let report = flow.shutdown_report();
            (flow.collect::<Vec<_>>().await, report)
        };
        assert!(out.is_empty(), "{out:?}");
        probe.assert_pulled(0);
        let nc = report.get().expect("ended by the shutdown");
        assert_eq!(nc.first_not_pulled(), 0);
        assert!(nc.cancelled().is_empty());
    }
}

// ---------------------------------------------------------------------------------
// Window, limit, ordering
// ---------------------------------------------------------------------------------

/// The window exactly full of key A's items (1 running, 3 waiting) while key B's item is
/// next upstream: pulling waits (documented); B is pulled when A's first result leaves.
#[tokio::test(start_paused = true)]
async fn window_full_of_one_key_with_another_key_next() {
    for ordered in [true, false] {
        let start = Instant::now();
        let probe = Probe::new();
        let items = vec![
            ('A', 10u64),
            ('A', 10),
            ('A', 10),
            ('A', 10),
            ('B', 1),
            ('C', 1),
        ];
        let src = probe.input(flowgate::source::iter(items.into_iter().enumerate()));
        let key = |(_, (k, _)): &(usize, (char, u64))| *k;
        let f = move |(i, (_, d)): (usize, (char, u64))| async move {
            tokio::time::sleep(ms(d)).await;
            (i, start.elapsed())
        };
        let out: Vec<(usize, Duration)> = if ordered {
            probe
                .output_by(
                    src.map_concurrent_by_key(2, key, f).with_window(4),
                    |(i, _)| *i as u64,
                )
                .collect()
                .await
        } else {
            probe
                .output_by(
                    src.map_concurrent_by_key_unordered(2, key, f)
                        .with_window(4),
                    |(i, _)| *i as u64,
                )
                .collect()
                .await
        };
        probe.assert_max_in_flight(4);
        let t: HashMap<usize, Duration> = out.iter().copied().collect();
        assert_eq!(t.len(), 6);
        assert_eq!(t[&3], ms(40), "A one at a time");
        assert_eq!(
            t[&4],
            ms(11),
            "B pulled when A's first result left (ordered {ordered})"
        );
        // The window is full again once B is pulled: C waits for the next result to
        // leave, B (11 ms) unordered, A's second (20 ms) in input order.
        assert_eq!(
            t[&5],
            if ordered { ms(21) } else { ms(12) },
            "ordered {ordered}"
        );
        if ordered {
            assert_eq!(
                out.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
                [0, 1, 2, 3, 4, 5]
            );
        }
    }
}

/// limit 1, many keys: fully serial, `f` called in input order, output in input order
/// (both forms).
#[tokio::test(start_paused = true)]
async fn limit_one_with_many_keys_is_serial_in_input_order() {
    for ordered in [true, false] {
        let mut rng = Lcg(7);
        let items: Vec<(u64, u64)> = (0..300)
            .map(|_| (rng.next() % 17, rng.next() % 4))
            .collect();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(Running::default());
        let c2 = Arc::clone(&calls);
        let r2 = Arc::clone(&running);
        let f = move |(i, (k, d)): (usize, (u64, u64))| {
            c2.lock().unwrap().push(i);
            let r = Arc::clone(&r2);
            async move {
                let _g = r.enter(k);
                tokio::time::sleep(ms(d)).await;
                i
            }
        };
        let key = |(_, (k, _)): &(usize, (u64, u64))| *k;
        let src = flowgate::source::iter(items.clone().into_iter().enumerate());
        let out: Vec<usize> = if ordered {
            src.map_concurrent_by_key(1, key, f)
                .with_window(10)
                .collect()
                .await
        } else {
            src.map_concurrent_by_key_unordered(1, key, f)
                .with_window(10)
                .collect()
                .await
        };
        let all: Vec<usize> = (0..300).collect();
        assert_eq!(out, all, "ordered {ordered}");
        assert_eq!(*calls.lock().unwrap(), all);
        assert_eq!(running.max_all.load(Ordering::SeqCst), 1);
    }
}

/// size_hint brackets what is really left at every step; (0, Some(0)) after the end.
#[tokio::test(start_paused = true)]
async fn size_hint_is_honest() {
    for ordered in [true, false] {
        let n = 50usize;
        let f = |i: u64| async move {
            tokio::time::sleep(ms(i % 4)).await;
            i
        };
        let mut flow: Pin<Box<dyn Stream<Item = u64>>> = if ordered {
            Box::pin(
                flowgate::source::iter(0..n as u64)
                    .map_concurrent_by_key(3, |i| i % 4, f)
                    .with_window(7),
            )
        } else {
            Box::pin(
                flowgate::source::iter(0..n as u64)
                    .map_concurrent_by_key_unordered(3, |i| i % 4, f)
                    .with_window(7),
            )
        };
        let mut yielded = 0usize;
        loop {
            let (lo, hi) = flow.size_hint();
            let left = n - yielded;
            assert!(lo <= left, "lower {lo} > {left} left");
            assert!(hi.is_none_or(|hi| hi >= left), "upper {hi:?} < {left} left");
            match flow.next().await {
                Some(_) => yielded += 1,
                None => break,
            }
        }
        assert_eq!(yielded, n);
        assert_eq!(flow.size_hint(), (0, Some(0)));
        assert!(flow.next().await.is_none());
        assert!(flow.next().await.is_none());
    }
}

/// A consumer that stops midway and drops the stream: nothing left.
#[tokio::test(start_paused = true)]
async fn consumer_stops_midway_and_drops() {
    for ordered in [true, false] {
        let leaks = LeakCheck::new();
        let tracked = leaks.clone();
        let items: Vec<_> = (0..100u64).map(|i| (i, leaks.token())).collect();
        let f = move |(i, tok): (u64, flowgate::testing::LeakToken)| {
            tracked.track(async move {
                let _tok = tok;
                tokio::time::sleep(ms(1 + i % 5)).await;
                i
            })
        };
        let key = |(i, _): &(u64, flowgate::testing::LeakToken)| i % 3;
        let mut flow: Pin<Box<dyn Stream<Item = u64> + Send>> = if ordered {
            Box::pin(
                flowgate::source::iter(items)
                    .map_concurrent_by_key(4, key, f)
                    .with_window(12),
            )
        } else {
            Box::pin(
                flowgate::source::iter(items)
                    .map_concurrent_by_key_unordered(4, key, f)
                    .with_window(12),
            )
        };
        for _ in 0..10 {
            flow.next().await.unwrap();
        }
        drop(flow);
        leaks.assert_none_left().await;
    }
}

// ---------------------------------------------------------------------------------
// Multi-thread runtimes
// ---------------------------------------------------------------------------------

fn multi_thread_case(workers: usize, seed: u64, ordered: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let mut rng = Lcg(seed);
    let keys = 1 + rng.next() % 12;
    let limit = 1 + (rng.next() % 8) as usize;
    let window = limit + (rng.next() % 12) as usize;
    let n = 2000;
    let items: Vec<(u64, u64)> = (0..n)
        .map(|_| (rng.next() % keys, rng.next() % 6))
        .collect();
    let running = Arc::new(Running::default());
    let calls: Arc<Mutex<Vec<usize>>> = Arc::default();
    let r2 = Arc::clone(&running);
    let c2 = Arc::clone(&calls);
    let f = move |(i, (k, d)): (usize, (u64, u64))| {
        c2.lock().unwrap().push(i);
        let r = Arc::clone(&r2);
        async move {
            let _g = r.enter(k);
            for _ in 0..d {
                tokio::task::yield_now().await;
            }
            if d == 5 {
                // some CPU work
                let mut x = 0u64;
                for j in 0..2000u64 {
                    x = x.wrapping_add(std::hint::black_box(j));
                }
                std::hint::black_box(x);
            }
            (i, k)
        }
    };
    let key = |(_, (k, _)): &(usize, (u64, u64))| *k;
    let probe_out: Vec<(usize, u64)> = runtime.block_on(async {
        let probe = Probe::new();
        let src = probe.input(flowgate::source::iter(
            items.clone().into_iter().enumerate(),
        ));
        let out: Vec<(usize, u64)> = if ordered {
            probe
                .output_by(
                    src.map_concurrent_by_key(limit, key, f).with_window(window),
                    |(i, _)| *i as u64,
                )
                .collect()
                .await
        } else {
            probe
                .output_by(
                    src.map_concurrent_by_key_unordered(limit, key, f)
                        .with_window(window),
                    |(i, _)| *i as u64,
                )
                .collect()
                .await
        };
        probe.assert_max_in_flight(window as u64);
        out
    });
    let out = probe_out;
    let mut pos: Vec<usize> = out.iter().map(|(i, _)| *i).collect();
    if ordered {
        assert_eq!(pos, (0..n as usize).collect::<Vec<_>>());
    }
    pos.sort_unstable();
    assert_eq!(pos, (0..n as usize).collect::<Vec<_>>(), "each once");
    let mut last: HashMap<u64, usize> = HashMap::new();
    for (i, k) in &out {
        if let Some(b) = last.insert(*k, *i) {
            assert!(b < *i, "key {k}: {i} after {b}");
        }
    }
    // f called per key in input order
    let mut lastc: HashMap<u64, usize> = HashMap::new();
    for &i in calls.lock().unwrap().iter() {
        let k = items[i].0;
        if let Some(b) = lastc.insert(k, i) {
            assert!(b < i, "f: key {k}: {i} after {b}");
        }
    }
    assert_eq!(
        running.max_per_key.load(Ordering::SeqCst),
        1,
        "two jobs of one key at once"
    );
    assert!(running.max_all.load(Ordering::SeqCst) <= limit);
}

#[test]
fn multi_thread_1_2_4_8_workers_random_keys() {
    for workers in [1, 2, 4, 8] {
        for seed in 0..12u64 {
            multi_thread_case(workers, seed * 31 + workers as u64, seed % 2 == 0);
        }
    }
}

/// Panics on a multi-thread runtime with many keys waiting: payload, earlier positions.
#[test]
fn multi_thread_panic_payload_and_prefix() {
    for workers in [1, 2, 4, 8] {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap();
        for round in 0..20u64 {
            let bad = 100 + round * 17;
            let (out, payload) = runtime.block_on(async move {
                let mut flow = Box::pin(
                    flowgate::source::iter(0..1000u64)
                        .map_concurrent_by_key(
                            6,
                            |i| i % 5,
                            move |i| async move {
                                for _ in 0..(i % 3) {
                                    tokio::task::yield_now().await;
                                }
                                if i == bad {
                                    std::panic::panic_any(i);
                                }
                                i
                            },
                        )
                        .with_window(20),
                );
                drain(&mut flow).await
            });
            assert_eq!(out, (0..bad).collect::<Vec<_>>());
            assert_eq!(*payload.unwrap().downcast_ref::<u64>().unwrap(), bad);
        }
    }
}

// ---------------------------------------------------------------------------------
// Keys: many distinct, colliding hashes
// ---------------------------------------------------------------------------------

/// A key that counts how many of its kind are alive.
struct CountedKey {
    k: u64,
    live: Arc<AtomicUsize>,
}
impl CountedKey {
    fn new(k: u64, live: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        CountedKey {
            k,
            live: Arc::clone(live),
        }
    }
}
impl Drop for CountedKey {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}
impl PartialEq for CountedKey {
    fn eq(&self, o: &Self) -> bool {
        self.k == o.k
    }
}
impl Eq for CountedKey {}
impl Hash for CountedKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.k.hash(h);
    }
}

#[tokio::test(start_paused = true)]
async fn many_distinct_keys_are_forgotten() {
    for ordered in [true, false] {
        let live = Arc::new(AtomicUsize::new(0));
        let max_live = Arc::new(AtomicUsize::new(0));
        let (l2, m2) = (Arc::clone(&live), Arc::clone(&max_live));
        let l3 = Arc::clone(&live);
        let n = 200_000u64;
        let key = move |i: &u64| CountedKey::new(*i / 2, &l3); // pairs share a key
        let f = move |i: u64| {
            m2.fetch_max(l2.load(Ordering::SeqCst), Ordering::SeqCst);
            async move {
                if i % 64 == 0 {
                    tokio::time::sleep(ms(1)).await;
                }
                i
            }
        };
        let src = flowgate::source::iter(0..n);
        let count = if ordered {
            let mut s = Box::pin(src.map_concurrent_by_key(8, key, f).with_window(16));
            let mut c = 0u64;
            while let Some(i) = s.next().await {
                assert_eq!(i, c);
                c += 1;
                max_live.fetch_max(live.load(Ordering::SeqCst), Ordering::SeqCst);
            }
            c
        } else {
            let mut s = Box::pin(
                src.map_concurrent_by_key_unordered(8, key, f)
                    .with_window(16),
            );
            let mut c = 0u64;
            while s.next().await.is_some() {
                c += 1;
                max_live.fetch_max(live.load(Ordering::SeqCst), Ordering::SeqCst);
            }
            c
        };
        assert_eq!(count, n);
        assert_eq!(live.load(Ordering::SeqCst), 0);
        assert!(
            max_live.load(Ordering::SeqCst) <= 17,
            "max live keys {}",
            max_live.load(Ordering::SeqCst)
        );
    }
}

/// Keys whose hash is constant: all land in one bucket. Correct, and different keys
/// still run at once.
#[derive(PartialEq, Eq, Debug, Clone, Copy)]
struct Colliding(u64);
impl Hash for Colliding {
    fn hash<H: Hasher>(&self, h: &mut H) {
        42u64.hash(h);
    }
}

#[tokio::test(start_paused = true)]
async fn colliding_hashes_still_run_concurrently_and_serial_per_key() {
    for ordered in [true, false] {
        let start = Instant::now();
        let running = Arc::new(Running::default());
        let r2 = Arc::clone(&running);
        // 8 keys x 3 items, 10 ms each, limit 8: 30 ms in all.
        let f = move |i: u64| {
            let r = Arc::clone(&r2);
            async move {
                let _g = r.enter(i % 8);
                tokio::time::sleep(ms(10)).await;
                i
            }
        };
        let src = flowgate::source::iter(0..24u64);
        let out: Vec<u64> = if ordered {
            src.map_concurrent_by_key(8, |i| Colliding(i % 8), f)
                .with_window(24)
                .collect()
                .await
        } else {
            src.map_concurrent_by_key_unordered(8, |i| Colliding(i % 8), f)
                .with_window(24)
                .collect()
                .await
        };
        assert_eq!(start.elapsed(), ms(30), "ordered {ordered}");
        assert_eq!(running.max_per_key.load(Ordering::SeqCst), 1);
        assert_eq!(running.max_all.load(Ordering::SeqCst), 8);
        let mut sorted = out.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..24).collect::<Vec<_>>());
        let mut last: HashMap<u64, u64> = HashMap::new();
        for i in &out {
            if let Some(b) = last.insert(i % 8, *i) {
                assert!(b < *i);
            }
        }
    }
}

/// Colliding hashes with keys forgotten and re-added in varied order (swap_remove in
/// one bucket), on a multi-thread runtime.
#[test]
fn colliding_hashes_random_on_multi_thread() {
    for workers in [1, 4] {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap();
        for seed in 0..6u64 {
            let mut rng = Lcg(seed + 100);
            let items: Vec<(u64, u64)> = (0..1500)
                .map(|_| (rng.next() % 9, rng.next() % 4))
                .collect();
            let running = Arc::new(Running::default());
            let r2 = Arc::clone(&running);
            let it = items.clone();
            let out: Vec<(usize, u64)> = runtime.block_on(async move {
                flowgate::source::iter(it.into_iter().enumerate())
                    .map_concurrent_by_key_unordered(
                        5,
                        |(_, (k, _))| Colliding(*k),
                        move |(i, (k, d))| {
                            let r = Arc::clone(&r2);
                            async move {
                                let _g = r.enter(k);
                                for _ in 0..d {
                                    tokio::task::yield_now().await;
                                }
                                (i, k)
                            }
                        },
                    )
                    .with_window(11)
                    .collect()
                    .await
            });
            assert_eq!(out.len(), items.len());
            let mut last: HashMap<u64, usize> = HashMap::new();
            for (i, k) in &out {
                if let Some(b) = last.insert(*k, *i) {
                    assert!(b < *i);
                }
            }
            assert_eq!(running.max_per_key.load(Ordering::SeqCst), 1);
        }
    }
}

// ---------------------------------------------------------------------------------
// Arguments and runtime
// ---------------------------------------------------------------------------------

#[test]
#[should_panic(expected = "`map_concurrent_by_key_unordered` needs `limit` > 0, got 0")]
fn zero_limit_unordered() {
    let _ = flowgate::source::iter(0..1).map_concurrent_by_key_unordered(
        0,
        |i| *i,
        |i| async move { i },
    );
}

#[test]
#[should_panic(
    expected = "`with_window` needs `window` >= `limit` (4) on `map_concurrent_by_key`, got 3"
)]
fn small_window_ordered() {
    let _ = flowgate::source::iter(0..1)
        .map_concurrent_by_key(4, |i| *i, |i| async move { i })
        .with_window(3);
}

#[test]
fn first_poll_outside_a_runtime_panics_clearly() {
    let flow = flowgate::source::iter(0..3).map_concurrent_by_key(2, |i| *i, |i| async move { i });
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
        futures::executor::block_on(flow.collect::<Vec<_>>())
    }));
    let p = r.unwrap_err();
    let msg = payload_str(&p);
    assert!(msg.contains("tokio runtime"), "{msg}");
}

/// MockSource upstream that waits between items: keyed items still wait for their key,
/// and a pending upstream does not stop waiting items from starting.
#[tokio::test(start_paused = true)]
async fn pending_upstream_does_not_block_waiting_items() {
    let start = Instant::now();
    let src = MockSource::new()
        .items([0u64, 1, 2])
        .wait(ms(100))
        .items([3u64])
        .end();
    let out: Vec<(u64, Duration)> = src
        .map_concurrent_by_key(
            4,
            |_| 0u8,
            move |i| async move {
                tokio::time::sleep(ms(10)).await;
                (i, start.elapsed())
            },
        )
        .collect()
        .await;
    assert_eq!(out, [(0, ms(10)), (1, ms(20)), (2, ms(30)), (3, ms(110))]);
}

/// Ordered: a failure at p; items waiting for their key after p never start (f is never
/// called for them); an item before p waiting for its key still starts and is delivered.
#[tokio::test(start_paused = true)]
async fn ordered_failure_cancels_waiting_after_and_runs_waiting_before() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c2 = Arc::clone(&calls);
    // 0: A 10 ms, 1: A 10 ms (waits), 2: B panics at 1 ms, 3: C 100 ms, 4: B (waits),
    // 5: A (waits)
    let items = vec![
        ('A', 10u64),
        ('A', 10),
        ('B', 1),
        ('C', 100),
        ('B', 1),
        ('A', 1),
    ];
    let mut flow = Box::pin(
        flowgate::source::iter(items.into_iter().enumerate())
            .map_concurrent_by_key(
                3,
                |(_, (k, _))| *k,
                move |(i, (_, d))| {
                    c2.lock().unwrap().push(i);
                    async move {
                        tokio::time::sleep(ms(d)).await;
                        assert!(i != 2, "job 2 failed");
                        i
                    }
                },
            )
            .with_window(6),
    );
    let (out, payload) = drain(&mut flow).await;
    assert_eq!(out, [0, 1]);
    assert_eq!(payload_str(&payload.unwrap()), "job 2 failed");
    assert_eq!(*calls.lock().unwrap(), [0, 2, 3, 1], "4 and 5 never start");
}

#[tokio::test(start_paused = true)]
async fn unordered_failure_never_starts_waiting_items() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c2 = Arc::clone(&calls);
    let items = vec![('A', 10u64), ('B', 5), ('A', 1), ('B', 1)];
    let mut flow = Box::pin(
        flowgate::source::iter(items.into_iter().enumerate())
            .map_concurrent_by_key_unordered(
                2,
                |(_, (k, _))| *k,
                move |(i, (_, d))| {
                    c2.lock().unwrap().push(i);
                    async move {
                        tokio::time::sleep(ms(d)).await;
                        assert!(i != 1, "job 1 failed");
                        i
                    }
                },
            )
            .with_window(4),
    );
    let (out, payload) = drain(&mut flow).await;
    assert!(out.is_empty());
    assert_eq!(payload_str(&payload.unwrap()), "job 1 failed");
    tokio::time::sleep(ms(50)).await;
    assert_eq!(*calls.lock().unwrap(), [0, 1]);
}

/// Ordered: items waiting behind a cancelled running job (after the failing position)
/// are they released when the stream ends, while it is kept?
#[tokio::test(start_paused = true)]
async fn ordered_waiting_items_behind_cancelled_jobs_released_at_end() {
    let leaks = LeakCheck::new();
    // 0: key 0 fails at 5 ms; 1: key 1 runs 1000 ms (cancelled); 2..8: key 1, waiting.
    let items: Vec<_> = (0..8u64).map(|i| (i, leaks.token())).collect();
    let mut flow = Box::pin(
        flowgate::source::iter(items)
            // Limit 3 with 2 keys: every item is pulled (items 2..8 wait for key 1).
            .map_concurrent_by_key(
                3,
                |(i, _)| u64::from(*i != 0),
                |(i, tok)| async move {
                    let _tok = tok;
                    if i == 0 {
                        tokio::time::sleep(ms(5)).await;
                        panic!("job 0 failed");
                    }
                    tokio::time::sleep(ms(1000)).await;
                    i
                },
            )
            .with_window(8),
    );
    let (_, payload) = drain(&mut flow).await;
    assert!(payload.is_some());
    tokio::time::sleep(ms(2000)).await;
    let live = leaks.live();
    drop(flow);
    assert_eq!(
        live, 0,
        "{live} items still held by the ended (not dropped) stream"
    );
}

/// Shutdown: the grace ends with items waiting for their key; the stream has ended
/// (returned None) but is kept: are the waiting items released?
#[tokio::test(start_paused = true)]
async fn waiting_items_released_when_the_stream_ends_by_shutdown() {
    let leaks = LeakCheck::new();
    let token = CancellationToken::new();
    let items: Vec<_> = (0..8u64).map(|i| (i, leaks.token())).collect();
    let mut flow = Box::pin(
        flowgate::source::iter(items)
            .map_concurrent_by_key_unordered(
                2,
                |_| 0u8,
                |(i, tok)| async move {
                    let _tok = tok;
                    tokio::time::sleep(ms(10)).await;
                    i
                },
            )
            .with_window(8)
            .with_shutdown(token.clone(), ms(5)),
    );
    assert_eq!(flow.next().await, Some(0));
    token.cancel();
    while flow.next().await.is_some() {}
    tokio::time::sleep(ms(100)).await;
    let live = leaks.live();
    drop(flow);
    assert_eq!(
        live, 0,
        "{live} items still held by the ended (not dropped) stream"
    );
}

/// `key` is called exactly once per item, in input order.
#[tokio::test(start_paused = true)]
async fn key_called_once_per_item_in_input_order() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c2 = Arc::clone(&calls);
    let out: Vec<u64> = flowgate::source::iter(0..200u64)
        .map_concurrent_by_key_unordered(
            3,
            move |i| {
                c2.lock().unwrap().push(*i);
                i % 7
            },
            |i| async move {
                tokio::time::sleep(ms(i % 5)).await;
                i
            },
        )
        .with_window(9)
        .collect()
        .await;
    assert_eq!(out.len(), 200);
    assert_eq!(*calls.lock().unwrap(), (0..200).collect::<Vec<_>>());
}

/// Upstream still has items and the window is nearly full: newer items (pulled later)
/// start while an older input, whose key has been free since 10 ms, keeps waiting until
/// the consumer has drained the ready results ("inputs that waited for their key start
/// before new items are pulled", oldest first).
#[tokio::test(start_paused = true)]
async fn newer_items_start_before_an_older_input_whose_key_is_free() {
    let start = Instant::now();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&starts);
    // 0: A 10 ms, 1: A (waits), 2..=8: distinct keys 9 ms, 9..40: distinct keys 9 ms.
    let mut items: Vec<(u32, u64)> = vec![(0, 10), (0, 10)];
    items.extend((1..=38).map(|k| (k, 9)));
    let mut flow = Box::pin(
        flowgate::source::iter(items.into_iter().enumerate())
            .map_concurrent_by_key_unordered(
                8,
                |(_, (k, _))| *k,
                move |(i, (_, d))| {
                    s2.lock().unwrap().push((i, start.elapsed()));
                    async move {
                        tokio::time::sleep(ms(d)).await;
                        i
                    }
                },
            )
            .with_window(9),
    );
    let mut n = 0;
    while flow.next().await.is_some() {
        n += 1;
        tokio::time::sleep(ms(5)).await;
    }
    assert_eq!(n, 40);
    let starts = starts.lock().unwrap();
    let at = starts.iter().position(|(i, _)| *i == 1).unwrap();
    let (_, started) = starts[at];
    let overtook: Vec<(usize, Duration)> = starts[..at]
        .iter()
        .copied()
        .filter(|(i, t)| *i > 1 && *t > ms(10))
        .collect();
    assert!(
        started <= ms(15) && overtook.is_empty(),
        "item 1 (key free at 10 ms) started at {started:?}; newer items started before it \
         after 10 ms: {overtook:?}"
    );
}
