//! The failure policies on the blocking `try_` operators (`try_par_map`,
//! `try_par_map_unordered`). Steps are ordered with channels, never with sleeps; the
//! paused clock is moved by hand, since a running blocking call stops it from advancing
//! on its own.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use flowgate::prelude::*;
use flowgate::{Backoff, Error, Retry};
use futures::StreamExt;

const MS: Duration = Duration::from_millis(1);

fn items(n: u32) -> impl futures::Stream<Item = Result<u32, String>> {
    flowgate::source::iter((0..n).map(Ok))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_keep_going_account_for_every_item_in_both_orders() {
    for ordered in [true, false] {
        let attempts = Arc::new(Mutex::new(vec![0u32; 40]));
        let seen = attempts.clone();
        let work = move |i: u32| {
            let n = {
                let mut attempts = seen.lock().unwrap();
                attempts[i as usize] += 1;
                attempts[i as usize]
            };
            match i % 4 {
                0 => Ok(i),
                1 if n < 3 => Err(format!("transient {i}")),
                1 => Ok(i),
                2 => Err(format!("permanent {i}")),
                _ => Ok(i),
            }
        };
        let retry = Retry::attempts(3).retry_if(|e: &String| e.starts_with("transient"));
        let out: Vec<Result<u32, Error<String>>> = if ordered {
            items(40)
                .try_par_map(3, work)
                .with_retry(retry)
                .keep_going()
                .collect()
                .await
        } else {
            items(40)
                .try_par_map_unordered(3, work)
                .keep_going()
                .with_retry(retry)
                .collect()
                .await
        };
        let mut positions: Vec<u64> = out
            .iter()
            .map(|r| match r {
                Ok(i) => u64::from(*i),
                Err(e) => e.position(),
            })
            .collect();
        if ordered {
            assert_eq!(positions, (0..40).collect::<Vec<u64>>());
        }
        positions.sort_unstable();
        assert_eq!(
            positions,
            (0..40).collect::<Vec<u64>>(),
            "each position once"
        );
        for r in &out {
            match r {
                Ok(i) => assert_ne!(i % 4, 2),
                Err(e) => {
                    assert_eq!(e.position() % 4, 2);
                    assert_eq!(e.attempts(), 1, "a permanent error is not retried");
                }
            }
        }
        let attempts = attempts.lock().unwrap();
        assert!((0..40).filter(|i| i % 4 == 1).all(|i| attempts[i] == 3));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caught_panics_in_the_closure_are_values() {
    let out: Vec<_> = items(4)
        .try_par_map(2, |i| {
            if i == 2 {
                panic!("chunk {i} is corrupt");
            }
            Ok(i)
        })
        .catch_panics()
        .keep_going()
        .collect()
        .await;
    assert_eq!(out[..2], [Ok(0), Ok(1)]);
    let error = out[2].as_ref().unwrap_err();
    assert!(error.is_panic());
    assert_eq!(
        error.to_string(),
        "item 2 panicked (attempt 1): chunk 2 is corrupt"
    );
    assert_eq!(out[3], Ok(3));
}

/// A closure that blocks on `gate` for the items in `hang` at their first call, after
/// saying so on `hung`.
fn hanging(
    hang: &'static [u32],
    gate: mpsc::Receiver<()>,
    hung: tokio::sync::mpsc::UnboundedSender<u32>,
    calls: Arc<AtomicU32>,
) -> impl Fn(u32) -> Result<u32, String> + Send + Sync + 'static {
    let gate = Mutex::new(gate);
    let first = Mutex::new(Vec::new());
    move |i| {
        calls.fetch_add(1, Ordering::SeqCst);
        let first_call = {
            let mut first = first.lock().unwrap();
            let fresh = !first.contains(&i);
            first.push(i);
            fresh
        };
        if hang.contains(&i) && first_call {
            hung.send(i).unwrap();
            gate.lock().unwrap().recv().unwrap();
        }
        Ok(i)
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_call_times_out_at_its_deadline() {
    // Unordered: item 1 comes back first (the clock stands still meanwhile: a running
    // blocking call stops it from advancing on its own), then item 0 times out.
    let (release, gate) = mpsc::channel();
    let (hung, mut hanging_now) = tokio::sync::mpsc::unbounded_channel();
    let calls = Arc::new(AtomicU32::new(0));
    let mut flow = Box::pin(
        items(2)
            .try_par_map_unordered(2, hanging(&[0], gate, hung, calls.clone()))
            .with_timeout(50 * MS)
            .keep_going(),
    );
    assert_eq!(flow.next().await, Some(Ok(1)));
    let mut next = tokio_test::task::spawn(flow.next());
    tokio_test::assert_pending!(next.poll());
    assert_eq!(
        hanging_now.recv().await,
        Some(0),
        "item 0's call is running"
    );
    tokio::time::advance(49 * MS).await;
    tokio_test::assert_pending!(next.poll());
    tokio::time::advance(MS).await;
    let error = next.await.expect("an item").expect_err("item 0 timed out");
    assert!(error.is_timeout());
    assert_eq!(error.to_string(), "item 0 timed out after 50ms (attempt 1)");
    assert_eq!(flow.next().await, None, "item 0 is not yielded again");
    release.send(()).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_hung_call_does_not_hold_back_its_retry_even_at_limit_1() {
    let (release, gate) = mpsc::channel();
    let (hung, mut hanging_now) = tokio::sync::mpsc::unbounded_channel();
    let calls = Arc::new(AtomicU32::new(0));
    let mut flow = Box::pin(
        items(3)
            .try_par_map(1, hanging(&[1], gate, hung, calls.clone()))
            .with_retry(Retry::attempts(2).backoff(Backoff::fixed(10 * MS)))
            .with_timeout(50 * MS),
    );
    assert_eq!(flow.next().await, Some(Ok(0)));
    let mut second = tokio_test::task::spawn(flow.next());
    tokio_test::assert_pending!(second.poll());
    assert_eq!(
        hanging_now.recv().await,
        Some(1),
        "item 1's first call is running"
    );
    tokio::time::advance(50 * MS).await;
    tokio_test::assert_pending!(second.poll());
    tokio::time::advance(10 * MS).await;
    // The retry runs on a thread of its own while the first attempt still hangs.
    assert_eq!(second.await, Some(Ok(1)));
    // The abandoned call returns now; its late result is discarded (position 1 has
    // left: a second result for it would break the order, or show as an extra item).
    release.send(()).unwrap();
    assert_eq!(flow.next().await, Some(Ok(2)));
    assert_eq!(flow.next().await, None);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "items 0 and 2 once, item 1 twice"
    );
}

#[test]
#[should_panic(expected = "`timeout` above zero on `try_par_map_unordered`")]
fn a_zero_timeout_panics_naming_it() {
    let _ = items(1)
        .try_par_map_unordered(1, Ok)
        .with_timeout(Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_calls_one_after_another_at_limit_1_all_time_out() {
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let hung = gate.clone();
    let out: Vec<_> = items(3)
        .try_par_map_unordered(1, move |i| {
            let (open, opened) = &*hung;
            let mut open = open.lock().unwrap();
            while !*open {
                open = opened.wait(open).unwrap();
            }
            Ok(i)
        })
        .with_timeout(5 * MS)
        .keep_going()
        .collect()
        .await;
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|r| r.as_ref().unwrap_err().is_timeout()));
}
