//! The test kit (`flowgate::testing`), through the public API: each tool on a working
//! pipeline, and each assertion failing with a readable message on a broken one.

use std::time::Duration;

use flowgate::prelude::*;
use flowgate::testing::{
    assert_pending, assert_ready, spawn, CallOutcome, LeakCheck, MockError, MockService,
    MockSource, Probe, ProbeEventKind,
};
use flowgate::{Backoff, Retry};
use futures::{Stream, StreamExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn mock_source_plays_its_steps_at_their_virtual_times() {
    let source = MockSource::new()
        .item(1)
        .wait(ms(10))
        .items([2, 3])
        .wait(ms(5))
        .end()
        .item(99);
    let handle = source.handle();
    assert_eq!(
        source.size_hint(),
        (3, Some(3)),
        "the steps after the end do not count"
    );
    let out: Vec<u32> = source.collect().await;
    assert_eq!(out, [1, 2, 3]);
    assert_eq!(handle.pulled_at(), [ms(0), ms(0), ms(10), ms(10)]);
    assert_eq!(handle.yielded(), 3);
    assert!(handle.is_finished());
    assert!(handle.is_dropped());
    assert!(
        handle.polls() >= 5,
        "polls while waiting count as polls, not pulls"
    );
}

#[tokio::test(start_paused = true)]
async fn mock_source_holds_until_released_and_keeps_an_early_release() {
    let source = MockSource::<Result<u32, String>>::new()
        .ok(1)
        .hold()
        .error("bad".into())
        .hold()
        .ok(2);
    let handle = source.handle();
    let mut out = spawn(source);
    assert_eq!(assert_ready!(out.poll_next()), Some(Ok(1)));
    assert_pending!(out.poll_next());
    assert!(handle.is_held());
    assert!(!out.is_woken());
    handle.release();
    assert!(out.is_woken(), "a release wakes the held poll");
    assert_eq!(assert_ready!(out.poll_next()), Some(Err("bad".to_string())));
    handle.release(); // before the second hold is reached: kept for it
    assert_eq!(assert_ready!(out.poll_next()), Some(Ok(2)));
    assert_eq!(assert_ready!(out.poll_next()), None);
    assert_eq!(handle.pulls(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_pipeline_dropped_early_drops_its_mock_source() {
    let source = MockSource::new().items(0..100u32).pending_forever();
    let handle = source.handle();
    let first: Vec<u32> = source
        .map_concurrent(4, |x| async move { x })
        .take(3)
        .collect()
        .await;
    assert_eq!(first, [0, 1, 2]);
    assert!(handle.is_dropped());
    assert!(!handle.is_finished());
    assert!(
        handle.pulls() <= 3 + 4,
        "at most the limit pulled beyond what was taken: {}",
        handle.pulls()
    );
}

#[tokio::test(start_paused = true)]
async fn probe_records_the_bound_of_an_operator_and_its_history() {
    let probe = Probe::new();
    let source = probe.input(MockSource::new().items(0..50u64).wait(ms(1)));
    let out: Vec<u64> = probe
        .output(source.map_concurrent(8, |x| async move {
            tokio::time::sleep(ms(x % 4)).await;
            x
        }))
        .collect()
        .await;
    assert_eq!(out, (0..50).collect::<Vec<_>>());
    probe.assert_max_in_flight(8);
    probe.assert_pulled(50);
    probe.assert_yielded(50);
    assert_eq!(probe.max_in_flight(), 8);
    probe.assert_pulled_before_yielded(7, 0);
    let events = probe.events();
    assert_eq!(events[0].kind, ProbeEventKind::Pulled(0));
    assert_eq!(events.last().unwrap().kind, ProbeEventKind::OutputEnded);
    assert!(
        probe.history().contains("earlier events"),
        "a long history is cut"
    );
    assert!(probe.history().contains("output ended"));
}

#[tokio::test(start_paused = true)]
async fn probe_output_by_follows_positions_out_of_order() {
    let probe = Probe::new();
    let source = probe.input(flowgate::source::iter(0..20u64));
    let out = source.map_concurrent_unordered(4, |x| async move {
        tokio::time::sleep(ms(20 - x)).await;
        x
    });
    let all: Vec<u64> = probe.output_by(out, |x| *x).collect().await;
    assert_eq!(all.len(), 20);
    assert_ne!(all, (0..20).collect::<Vec<_>>(), "left as they finished");
    probe.assert_max_in_flight(4);
    probe.assert_pulled_before_yielded(3, 0);
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "probe: more than 8 items pulled and not yet yielded: 9")]
async fn probe_names_a_broken_bound() {
    // A broken pipeline: futures' buffer_unordered(16) where 8 was meant.
    let probe = Probe::new();
    let source = probe.input(flowgate::source::iter(0..40u64));
    let out = source
        .map(|x| async move {
            tokio::time::sleep(ms(1)).await;
            x
        })
        .buffer_unordered(16);
    let _: Vec<u64> = probe.output_by(out, |x| *x).collect().await;
    probe.assert_max_in_flight(8);
}

#[test]
fn probe_failure_messages_show_the_history() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let message = runtime.block_on(async {
        // Sequential work: item 1 is pulled only after item 0 has left.
        let probe = Probe::new();
        let source = probe.input(flowgate::source::iter(0..3u64));
        let out = source.then(|x| async move { x });
        let _: Vec<u64> = probe.output(out).collect().await;
        let probe = std::panic::AssertUnwindSafe(probe);
        let failure = std::panic::catch_unwind(|| probe.assert_pulled_before_yielded(1, 0));
        *failure
            .expect_err("item 1 was pulled after item 0 left")
            .downcast::<String>()
            .unwrap()
    });
    assert!(
        message.starts_with("probe: item 1 was pulled only after item 0 was yielded"),
        "{message}"
    );
    assert!(message.contains(">>"), "the pull is marked: {message}");
    assert!(message.contains("yielded item 0"), "{message}");
    assert!(message.contains("output ended"), "{message}");
}

#[tokio::test(start_paused = true)]
async fn mock_service_scripts_by_item_and_attempt_and_records_the_calls() {
    let service = MockService::new()
        .latency(ms(10))
        .slow(1, 2..=2, ms(50))
        .fail(1, 1..=1)
        .hang(2, 1..=1)
        .panic(3, ..);
    let calls = service.clone();
    let out: Vec<_> = flowgate::source::iter((0..4u64).map(Ok::<u64, MockError<u64>>))
        .try_map_concurrent(4, move |x| calls.call(x))
        .with_timeout(ms(100))
        .with_retry(Retry::attempts(2).backoff(Backoff::fixed(ms(5))))
        .catch_panics()
        .keep_going()
        .collect()
        .await;
    assert_eq!(*out[0].as_ref().unwrap(), 0);
    assert_eq!(*out[1].as_ref().unwrap(), 1);
    assert_eq!(*out[2].as_ref().unwrap(), 2);
    let panicked = out[3].as_ref().unwrap_err();
    assert!(panicked.is_panic());
    assert!(panicked
        .to_string()
        .contains("scripted panic of key 3 (attempt 2)"));

    // Item 1: failed after 10 ms, retried 5 ms later, slow second attempt (50 ms).
    let one = service.calls_of(&1);
    assert_eq!(
        one.iter()
            .map(|c| (c.attempt, c.started, c.finished, c.outcome))
            .collect::<Vec<_>>(),
        [
            (1, ms(0), Some(ms(10)), CallOutcome::Failed),
            (2, ms(15), Some(ms(65)), CallOutcome::Succeeded),
        ]
    );
    // Item 2: hung, given up at its 100 ms timeout (recorded as cancelled), retried.
    let two = service.calls_of(&2);
    assert_eq!(two[0].outcome, CallOutcome::Cancelled);
    assert_eq!(two[0].finished, Some(ms(100)));
    assert_eq!(two[1].started, ms(105));
    assert_eq!(service.attempts(&3), 2);
    assert_eq!(service.running(), 0);
    service.assert_max_concurrent(4);
    service.assert_started_before_finished(&3, &1);
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "MockService: 6 calls ran at once, more than 4")]
async fn mock_service_names_a_broken_concurrency_bound() {
    let service = MockService::new().latency(ms(10));
    let calls = service.clone();
    let _: Vec<_> = futures::stream::iter(0..6u64)
        .map(move |x| calls.call(x))
        .buffer_unordered(6)
        .collect()
        .await;
    service.assert_max_concurrent(4);
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "MockService: item 1 did not start before item 0 finished")]
async fn mock_service_names_work_that_ran_one_at_a_time() {
    let service = MockService::new().latency(ms(10));
    let calls = service.clone();
    let _: Vec<_> = futures::stream::iter(0..3u64)
        .then(move |x| calls.call(x))
        .collect()
        .await;
    service.assert_started_before_finished(&1, &0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_service_on_the_blocking_lane() {
    let service = MockService::new().fail(2, ..).panic(4, 1..=1);
    let calls = service.clone();
    let out: Vec<_> = flowgate::source::iter((0..6u64).map(Ok::<u64, MockError<u64>>))
        .try_par_map(2, move |x| calls.call_blocking(x))
        .catch_panics()
        .keep_going()
        .collect()
        .await;
    assert_eq!(out.len(), 6);
    assert!(out[2]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("scripted failure of key 2"));
    assert!(out[4].as_ref().unwrap_err().is_panic());
    assert_eq!(out.iter().filter(|r| r.is_ok()).count(), 4);
    assert_eq!(service.calls().len(), 6);
    service.assert_max_concurrent(2);
}

#[tokio::test(start_paused = true)]
async fn leak_check_sees_nothing_left_after_a_drop_in_flight() {
    let leaks = LeakCheck::new();
    let tracked = leaks.clone();
    let mut out = spawn(MockSource::new().items(0..100u64).map_concurrent_unordered(
        16,
        move |x| {
            let token = tracked.token();
            tracked.track(async move {
                let _token = token;
                tokio::time::sleep(ms(1000 + x)).await;
                x
            })
        },
    ));
    assert_pending!(out.poll_next());
    assert_eq!(leaks.futures_made(), 16);
    assert_eq!(leaks.live(), 32, "16 futures and their 16 tokens");
    drop(out);
    leaks.assert_none_left().await;
    assert!(leaks.is_clean());
}

#[tokio::test(start_paused = true)]
#[should_panic(
    expected = "after 64 runtime turns, 0 tracked futures (of 0 made), 1 tokens and 1 tasks beyond"
)]
async fn leak_check_names_what_a_broken_pipeline_left_behind() {
    let leaks = LeakCheck::new();
    let tracked = leaks.clone();
    // A broken stage: it spawns a task per item that outlives the pipeline.
    let out = flowgate::source::iter(0..1u64).map(move |x| {
        let token = tracked.token();
        tokio::spawn(async move {
            let _token = token;
            std::future::pending::<()>().await;
        });
        x
    });
    let _: Vec<u64> = out.collect().await;
    leaks.assert_none_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leak_check_after_the_blocking_lane_is_dropped() {
    let leaks = LeakCheck::new();
    let (started, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let tracked = leaks.clone();
    let mut out = flowgate::source::iter(0..100u64)
        .map(move |x| (x, tracked.token()))
        .par_map(2, move |(x, token)| {
            let _token = token;
            started.send(x).unwrap();
            let _ = go_rx.lock().unwrap().recv();
            x
        });
    let first = tokio::spawn(async move { out.next().await.map(|_| out) });
    started_rx.recv().await.unwrap();
    first.abort(); // drops the pipeline while a call blocks
    let _ = first.await;
    drop(go); // the blocked calls return, in real time
    leaks
        .assert_none_left_within_time(Duration::from_secs(10))
        .await;
}
