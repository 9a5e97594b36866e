//! Progress on its own: jobs already started keep running while the consumer is busy
//! elsewhere (and nothing new is pulled meanwhile), and they run in parallel: a job that
//! holds its thread in a long synchronous poll holds back no other job.
//!
//! The multi-thread tests run on 1, 2, 4 and 8 workers, except that a test in which two
//! jobs must hold a thread each at the same time runs the async lane on 2, 4 and 8 only
//! ([`parallel_worker_counts`]): async jobs run on the runtime's workers, and one worker
//! runs one job at a time, whatever the engine does.

use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use crate::support::*;

const N: u64 = 20;
const LIMIT: usize = 4;

/// After one result, the consumer stops polling; the jobs it started finish anyway.
async fn progress_while_away(op: Op) {
    let probe = Probe::new();
    let (gates, mut keys) = gates(N);
    let work = Work::new(&probe).gated(&gates);
    let mut flow = build(op, LIMIT, None, source(oks(N), &probe), work);
    keys.open(0);
    assert_eq!(next(&mut flow, &probe).await, Some(Ok(value(0))));
    let pulled = probe.pulled() as u64;
    assert!(pulled > 1, "only {pulled} item pulled");
    for i in 1..pulled {
        keys.open(i);
    }
    eventually("the started jobs finished without the consumer", || {
        probe.completed() as u64 == pulled
    })
    .await;
    assert_eq!(
        probe.pulled() as u64,
        pulled,
        "items pulled while the consumer was away"
    );
    keys.open_all();
    let rest = drain(&mut flow, &probe).await;
    assert_eq!(rest.len() as u64, N - 1);
}

all_ops! {
    #[tokio::test]
    async fn jobs_progress_while_the_consumer_is_away_on_current_thread(op: Op) {
        progress_while_away(op).await;
    }
}

all_ops! {
    #[on_workers]
    async fn jobs_progress_while_the_consumer_is_away_on_multi_thread(op: Op) {
        progress_while_away(op).await;
    }
}

/// Item 0 takes 1 ms, the others 50 ms.
fn quick_head(i: u64) -> Step {
    Step {
        sleep: Duration::from_millis(if i == 0 { 1 } else { 50 }),
        ..Step::default()
    }
}

async_ops! {
    #[tokio::test(start_paused = true)]
    async fn jobs_progress_while_the_consumer_is_away_in_virtual_time(op: Op) {
        let probe = Probe::new();
        let work = Work::new(&probe).plan(quick_head);
        let mut flow = build(op, LIMIT, None, source(oks(N), &probe), work);
        let start = Instant::now();
        assert_eq!(next(&mut flow, &probe).await, Some(Ok(value(0))));
        assert_eq!(start.elapsed(), Duration::from_millis(1));
        let pulled = probe.pulled();
        assert_eq!(probe.completed(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(probe.completed(), pulled, "jobs stood still without the consumer");
        assert_eq!(probe.pulled(), pulled, "items pulled while the consumer was away");
        assert_eq!(drain(&mut flow, &probe).await.len() as u64, N - 1);
    }
}

/// What the test above tells apart: futures' `buffered` only advances while polled.
#[tokio::test(start_paused = true)]
async fn buffered_stands_still_without_its_consumer() {
    let probe = Probe::new();
    let work = Work::new(&probe).plan(quick_head);
    let mut buffered = futures::stream::iter(0..N)
        .map(move |i| work.call(i))
        .buffered(LIMIT);
    assert_eq!(buffered.next().await, Some(Ok(value(0))));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(probe.completed(), 1);
}

/// Two jobs meet: each holds its thread until the other has arrived too, which only
/// works if they run at the same time. The synchronous work comes at once, or after an
/// `.await`.
///
/// tokio itself (a task spawned per job) now and then misses such a meeting, when a
/// worker about to block keeps the other task in its LIFO slot; so a missed meeting is
/// tried again, twice. An engine that cannot run two jobs at once misses every time.
async fn run_in_parallel(op: Op) {
    for yields in [0, 1] {
        let mut attempts = Vec::new();
        for _ in 0..3 {
            let attempt = meet_once(op, yields).await;
            attempts.push(attempt);
            if attempt == (2, 0) {
                break;
            }
        }
        assert_eq!(
            attempts.last(),
            Some(&(2, 0)),
            "the jobs did not run in parallel (yields first: {yields}); \
             (met, missed) per attempt: {attempts:?}"
        );
    }
}

/// One meeting of two jobs; returns how many met and how many gave up.
async fn meet_once(op: Op, yields: u32) -> (usize, usize) {
    let probe = Probe::new();
    let meeting = Meeting::new(2);
    let work = Work::new(&probe).meeting(&meeting).plan(move |_| Step {
        yields,
        ..Step::default()
    });
    let mut flow = build(op, 2, None, source(oks(2), &probe), work);
    let out = drain(&mut flow, &probe).await;
    assert_eq!(sorted(out), sequential(&oks(2)));
    (meeting.met(), meeting.missed())
}

all_ops! {
    #[on_workers(parallel_worker_counts(op))]
    async fn jobs_run_in_parallel_on_multi_thread(op: Op) {
        run_in_parallel(op).await;
    }
}

blocking_ops! {
    #[tokio::test]
    async fn blocking_jobs_run_in_parallel_on_current_thread(op: Op) {
        run_in_parallel(op).await;
    }
}

async_ops! {
    #[on_workers(parallel_worker_counts(op))]
    async fn a_long_poll_holds_back_no_other_job(op: Op) {
        // Job 0 holds its thread until jobs 1 and 2 have completed; they yield a few times
        // first, so they are woken (and must be polled elsewhere) while job 0 runs.
        let probe = Probe::new();
        let work = Work::new(&probe).plan(|i| match i {
            0 => Step {
                spin_until_completed: Some(2),
                ..Step::default()
            },
            _ => Step {
                yields: 3,
                ..Step::default()
            },
        });
        let mut flow = build(op, 3, None, source(oks(3), &probe), work);
        let out = drain(&mut flow, &probe).await;
        assert_eq!(sorted(out), sequential(&oks(3)));
    }
}

/// The consumer moves: polled once in one task, then drained in another. The results
/// must wake the task that polled last.
async fn wakes_the_latest_consumer(op: Op) {
    let probe = Probe::new();
    let (gates, mut keys) = gates(N);
    let work = Work::new(&probe).gated(&gates);
    let flow = build(op, LIMIT, None, source(oks(N), &probe), work);
    let first_probe = probe.clone();
    let mut flow = tokio::spawn(async move {
        let mut flow = flow;
        assert!(poll_once(&mut flow, &first_probe).await.is_pending());
        flow
    })
    .await
    .unwrap();
    eventually("the first jobs started", || probe.started() == LIMIT).await;
    keys.open_all();
    let out = drain(&mut flow, &probe).await;
    assert_eq!(out.len() as u64, N);
}

all_ops! {
    #[tokio::test]
    async fn results_wake_the_task_that_polled_last_on_current_thread(op: Op) {
        wakes_the_latest_consumer(op).await;
    }
}

all_ops! {
    #[on_workers]
    async fn results_wake_the_task_that_polled_last_on_multi_thread(op: Op) {
        wakes_the_latest_consumer(op).await;
    }
}

all_ops! {
    #[on_workers(parallel_worker_counts(op))]
    async fn jobs_run_in_parallel_with_the_consumer_on_a_worker(op: Op) {
        // The consumer runs as a task on a worker, as in most applications, rather than on
        // the test's own thread.
        within("the spawned consumer", tokio::spawn(run_in_parallel(op)))
            .await
            .unwrap();
    }
}

async_ops! {
    #[on_workers(parallel_worker_counts(op))]
    async fn a_long_poll_holds_back_no_other_job_with_the_consumer_on_a_worker(op: Op) {
        let consumer = async move {
            let probe = Probe::new();
            let work = Work::new(&probe).plan(|i| match i {
                0 => Step {
                    spin_until_completed: Some(2),
                    ..Step::default()
                },
                _ => Step {
                    yields: 3,
                    ..Step::default()
                },
            });
            let mut flow = build(op, 3, None, source(oks(3), &probe), work);
            drain(&mut flow, &probe).await
        };
        let out = within("the spawned consumer", tokio::spawn(consumer))
            .await
            .unwrap();
        assert_eq!(sorted(out), sequential(&oks(3)));
    }
}

all_ops! {
    #[on_workers]
    async fn a_long_poll_holds_back_no_finished_result(op: Op) {
        // Job 0 finishes at once; job 1 then holds its thread until the consumer has
        // received job 0's result. That result must reach the consumer meanwhile.
        let probe = Probe::new();
        let work = Work::new(&probe).plan(|i| match i {
            1 => Step {
                spin_until_yielded: Some(1),
                ..Step::default()
            },
            _ => Step::default(),
        });
        let mut flow = build(op, 2, None, source(oks(2), &probe), work);
        let out = drain(&mut flow, &probe).await;
        assert_eq!(out, sequential(&oks(2)), "job 0's result came only after job 1");
    }
}

/// Takes job 0's result (the poll that pulls job 2), then looks away while job 1 holds
/// its thread until job 2 has completed: job 2 must run on another worker meanwhile.
async fn job_2_runs_while_the_consumer_looks_away(
    mut flow: Flow,
    probe: &Probe,
    tx: futures::channel::mpsc::UnboundedSender<Item>,
    not_pulled: &str,
) {
    assert_eq!(next(&mut flow, probe).await, Some(Ok(value(0))));
    assert_eq!(probe.pulled(), 3, "{not_pulled}");
    eventually("job 2 ran", || probe.finish_order().contains(&2)).await;
    assert_eq!(
        probe.gave_up(),
        0,
        "job 2 ran only once job 1 let go of its thread: it waited for the consumer"
    );
    drop(tx);
    let rest = drain(&mut flow, probe).await;
    assert_eq!(sorted(rest), vec![Ok(value(1)), Ok(value(2))]);
}

async_ops! {
    #[on_workers(parallel_worker_counts(op))]
    async fn a_job_handed_over_while_another_holds_its_thread_runs_without_the_consumer(op: Op) {
        // Job 1 holds its thread until job 2 has completed; job 0 waits on its gate. Job 2
        // is pulled in the poll that yields job 0's result; after that poll the consumer
        // looks away. Job 2 must still run, on another worker.
        let probe = Probe::new();
        let (gates, mut keys) = gates(1);
        let work = Work::new(&probe).gated(&gates).plan(|i| match i {
            1 => Step {
                spin_until_completed: Some(2),
                ..Step::default()
            },
            _ => Step::default(),
        });
        let (tx, upstream) = channel_source(&probe);
        tx.unbounded_send(Ok(0)).unwrap();
        tx.unbounded_send(Ok(1)).unwrap();
        let mut flow = build(op, 3, None, upstream, work);
        let flag = Flag::new();
        poll_until_waiting(&mut flow, &flag).await;
        assert_eq!(probe.pulled(), 2);
        eventually("both jobs started", || probe.started() == 2).await;
        keys.open(0);
        eventually("job 0's result came back", || flag.is_set()).await;
        assert_eq!(probe.finish_order(), vec![0], "job 1 let go of its thread");
        tx.unbounded_send(Ok(2)).unwrap();
        let why = "job 2 was not pulled with job 0's result";
        job_2_runs_while_the_consumer_looks_away(flow, &probe, tx, why).await;
    }
}

async_ops! {
    #[on_workers(parallel_worker_counts(op))]
    async fn jobs_handed_over_together_run_in_parallel_without_the_consumer(op: Op) {
        // Jobs 1 and 2 are pulled together, in the poll that yields job 0's result;
        // then the consumer looks away. Job 1 holds its thread until job 2 has completed,
        // so job 2 must get a driver of its own, on another worker.
        let probe = Probe::new();
        let (gates, mut keys) = gates(1);
        let work = Work::new(&probe).gated(&gates).plan(|i| match i {
            1 => Step {
                spin_until_completed: Some(2),
                ..Step::default()
            },
            _ => Step::default(),
        });
        let (tx, upstream) = channel_source(&probe);
        tx.unbounded_send(Ok(0)).unwrap();
        let mut flow = build(op, 4, None, upstream, work);
        let flag = Flag::new();
        poll_until_waiting(&mut flow, &flag).await;
        keys.open(0);
        eventually("job 0's result came back", || flag.is_set()).await;
        tx.unbounded_send(Ok(1)).unwrap();
        tx.unbounded_send(Ok(2)).unwrap();
        let why = "jobs 1 and 2 were not pulled with job 0's result";
        job_2_runs_while_the_consumer_looks_away(flow, &probe, tx, why).await;
    }
}

async_ops! {
    #[on_workers(parallel_worker_counts(op))]
    async fn a_job_woken_while_another_holds_its_thread_runs_at_once(op: Op) {
        // Job 0 waits on its gate; job 1 holds its thread until job 0 has completed. The
        // gate opens while job 1 runs: job 0 must be polled on another worker.
        let probe = Probe::new();
        let (gates, mut keys) = gates(1);
        let work = Work::new(&probe).gated(&gates).plan(|i| match i {
            1 => Step {
                spin_until_completed: Some(1),
                ..Step::default()
            },
            _ => Step::default(),
        });
        let mut flow = build(op, 2, None, source(oks(2), &probe), work);
        assert!(poll_once(&mut flow, &probe).await.is_pending());
        eventually("both jobs started", || probe.started() == 2).await;
        keys.open(0);
        let out = drain(&mut flow, &probe).await;
        assert_eq!(
            sorted(out),
            sequential(&oks(2)),
            "job 0 waited for job 1 to let go of its thread"
        );
    }
}

async_ops! {
    #[on_workers(parallel_worker_counts(op))]
    async fn a_long_poll_after_a_stream_of_quick_jobs_holds_back_no_other_job(op: Op) {
        // Two hundred quick jobs first, so that the lane is in its steady state (one driver
        // taking jobs beside the consumer, one standing by); then job 200 holds its thread
        // until five more jobs have completed, which only jobs queued behind it can do.
        let consumer = async move {
            let probe = Probe::new();
            let work = Work::new(&probe).plan(|i| match i {
                200 => Step {
                    spin_until_completed: Some(205),
                    ..Step::default()
                },
                _ => Step::default(),
            });
            let mut flow = build(op, 8, None, source(oks(300), &probe), work);
            let out = drain(&mut flow, &probe).await;
            (out, probe.gave_up())
        };
        let (out, gave_up) = within("the spawned consumer", tokio::spawn(consumer))
            .await
            .unwrap();
        assert_eq!(gave_up, 0, "the jobs behind job 200 waited for its long poll");
        assert_eq!(sorted(out), sequential(&oks(300)));
    }
}

async_ops! {
    #[on_workers(parallel_worker_counts(op))]
    async fn a_result_handed_over_before_a_long_poll_reaches_a_waiting_consumer(op: Op) {
        // The consumer, a task on a worker, waits for jobs 0 and 1, both held at their
        // gates. The gates open together: a driver finishes job 0 and wakes the consumer
        // (into that worker's LIFO slot), then takes job 1, which holds its thread until
        // the consumer has received job 0's result. The consumer must not wait for it.
        let probe = Probe::new();
        let (gates, mut keys) = gates(2);
        let consumer = {
            let probe = probe.clone();
            let work = Work::new(&probe).gated(&gates).plan(|i| match i {
                1 => Step {
                    spin_until_yielded: Some(1),
                    ..Step::default()
                },
                _ => Step::default(),
            });
            tokio::spawn(async move {
                let mut flow = build(op, 2, None, source(oks(2), &probe), work);
                drain(&mut flow, &probe).await
            })
        };
        eventually("both jobs started", || probe.started() == 2).await;
        // Long enough for the consumer to stop looking again at once and register its
        // waker (a setup step, not a measurement: the test asserts no duration).
        tokio::time::sleep(Duration::from_millis(5)).await;
        keys.open(0);
        keys.open(1);
        let out = within("the spawned consumer", consumer).await.unwrap();
        assert_eq!(probe.gave_up(), 0, "job 0's result waited behind job 1's poll");
        assert_eq!(sorted(out), sequential(&oks(2)));
    }
}

all_ops! {
    #[tokio::test]
    async fn a_place_freed_while_no_job_runs_is_filled_at_once(op: Op) {
        // All 16 jobs finish while the consumer looks away. Taking results back, the
        // consumer is behind (results wait to be yielded), but no job runs: a freed place
        // must start a job in the next poll, not wait for a refill batch of free places.
        let probe = Probe::new();
        let work = Work::new(&probe);
        let mut flow = build(op, 16, None, source(oks(40), &probe), work);
        assert!(poll_once(&mut flow, &probe).await.is_pending());
        assert_eq!(probe.pulled(), 16);
        eventually("all 16 jobs finished", || probe.completed() == 16).await;
        let mut out = Vec::new();
        out.extend(next(&mut flow, &probe).await);
        assert_eq!(probe.pulled(), 16, "nothing was free before the first result left");
        out.extend(next(&mut flow, &probe).await);
        assert_eq!(
            probe.pulled(),
            17,
            "the place freed by the first result waited for more places to be freed"
        );
        out.extend(drain(&mut flow, &probe).await);
        assert_eq!(sorted(out), sequential(&oks(40)));
    }
}

async_ops! {
    #[tokio::test]
    async fn a_place_freed_behind_jobs_that_waited_is_filled_at_once(op: Op) {
        // Jobs 0-15 wait at their gates, then finish together while the consumer looks
        // away. From the third result on, results wait to be yielded and a job runs,
        // but the jobs waited (for a timer, I/O...): each place the consumer frees must
        // start a job in its next poll, not wait for a refill batch, so that waiting
        // jobs keep every place busy.
        let probe = Probe::new();
        let (gates, mut keys) = gates(40);
        let work = Work::new(&probe).gated(&gates);
        let mut flow = build(op, 16, None, source(oks(40), &probe), work);
        assert!(poll_once(&mut flow, &probe).await.is_pending());
        assert_eq!(probe.pulled(), 16);
        eventually("jobs 0-15 waiting at their gates", || probe.started() == 16).await;
        for i in 0..16 {
            keys.open(i);
        }
        eventually("jobs 0-15 finished", || probe.completed() == 16).await;
        let mut out = Vec::new();
        out.extend(next(&mut flow, &probe).await);
        assert_eq!(probe.pulled(), 16, "nothing was free before the first result left");
        for yielded in 2..=6 {
            out.extend(next(&mut flow, &probe).await);
            assert_eq!(
                probe.pulled(),
                16 + yielded - 1,
                "a place freed behind jobs that waited stayed empty"
            );
        }
        keys.open_all();
        out.extend(drain(&mut flow, &probe).await);
        assert_eq!(sorted(out), sequential(&oks(40)));
    }
}

/// Limit 16 over 40 items, each job held at its gate, the gates of `open` open: the
/// consumer polls once (16 pulled) and looks away until jobs 0-15 have finished at
/// their first poll.
async fn sixteen_finished(op: Op, open: std::ops::Range<u64>) -> (Probe, Keys, Flow) {
    let probe = Probe::new();
    let (gates, mut keys) = gates(40);
    for i in open {
        keys.open(i);
    }
    let work = Work::new(&probe).gated(&gates);
    let mut flow = build(op, 16, None, source(oks(40), &probe), work);
    assert!(poll_once(&mut flow, &probe).await.is_pending());
    eventually("jobs 0-15 finished", || probe.completed() == 16).await;
    (probe, keys, flow)
}

async_ops! {
    #[tokio::test]
    async fn quick_jobs_behind_a_burst_of_results_are_refilled_in_batches(op: Op) {
        // Jobs that finish at their first poll: while the consumer drains a burst of
        // results with a job running, freed places wait for a refill batch (here 8 of
        // 16) instead of costing a hand-off each.
        let (probe, mut keys, mut flow) = sixteen_finished(op, 0..16).await;
        let mut out = Vec::new();
        out.extend(next(&mut flow, &probe).await);
        out.extend(next(&mut flow, &probe).await);
        assert_eq!(probe.pulled(), 17, "nothing ran: the first freed place is filled");
        for _ in 3..=9 {
            out.extend(next(&mut flow, &probe).await);
            assert_eq!(probe.pulled(), 17, "a freed place was filled before a batch was");
        }
        out.extend(next(&mut flow, &probe).await);
        assert_eq!(probe.pulled(), 25, "eight free places were not filled together");
        keys.open_all();
        out.extend(drain(&mut flow, &probe).await);
        assert_eq!(sorted(out), sequential(&oks(40)));
    }
}

async_ops! {
    #[tokio::test]
    async fn quick_jobs_after_jobs_that_waited_are_refilled_in_batches_again(op: Op) {
        // Jobs 0-15 wait at their gates: behind them every freed place is filled at
        // once. Jobs 16-31 then finish at their first poll, in the same places: behind
        // their results the consumer waits for refill batches again.
        let probe = Probe::new();
        let (gates, mut keys) = gates(48);
        let work = Work::new(&probe).gated(&gates);
        let mut flow = build(op, 16, None, source(oks(48), &probe), work);
        assert!(poll_once(&mut flow, &probe).await.is_pending());
        eventually("jobs 0-15 waiting at their gates", || probe.started() == 16).await;
        for i in 0..32 {
            keys.open(i);
        }
        eventually("jobs 0-15 finished", || probe.completed() == 16).await;
        let mut out = Vec::new();
        for _ in 0..16 {
            out.extend(next(&mut flow, &probe).await);
        }
        assert_eq!(probe.pulled(), 31, "a place freed behind jobs that waited stayed empty");
        assert!(poll_once(&mut flow, &probe).await.is_pending());
        assert_eq!(probe.pulled(), 32);
        eventually("jobs 16-31 finished", || probe.completed() == 32).await;
        out.extend(next(&mut flow, &probe).await);
        out.extend(next(&mut flow, &probe).await);
        assert_eq!(probe.pulled(), 33, "nothing ran: the first freed place is filled");
        out.extend(next(&mut flow, &probe).await);
        assert_eq!(
            probe.pulled(),
            33,
            "behind quick jobs, a freed place was filled before a batch was"
        );
        keys.open_all();
        out.extend(drain(&mut flow, &probe).await);
        assert_eq!(sorted(out), sequential(&oks(48)));
    }
}

async_ops! {
    #[tokio::test]
    async fn a_lone_result_taken_back_leaves_no_free_place_behind(op: Op) {
        // A result that comes back on its own, with nothing else left to yield, means
        // the consumer keeps up: the places free when it is taken back are filled
        // before it leaves, not after (they would stay empty while the consumer works
        // on it).
        let (probe, mut keys, mut flow) = sixteen_finished(op, 0..17).await;
        let mut out = Vec::new();
        out.extend(next(&mut flow, &probe).await);
        out.extend(next(&mut flow, &probe).await);
        assert_eq!(probe.pulled(), 17);
        // Job 16 finishes at its first poll; jobs pulled after it wait at their gates.
        eventually("job 16 finished", || probe.completed() == 17).await;
        for _ in 3..=16 {
            out.extend(next(&mut flow, &probe).await);
        }
        assert_eq!(probe.pulled(), 25, "one refill batch while the burst drained");
        // Job 16's result comes back alone: 8 jobs run, 7 places are free.
        out.extend(next(&mut flow, &probe).await);
        assert_eq!(out.len(), 17);
        assert_eq!(
            probe.pulled(),
            32,
            "free places stayed empty while a lone result left"
        );
        keys.open_all();
        out.extend(drain(&mut flow, &probe).await);
        assert_eq!(sorted(out), sequential(&oks(40)));
    }
}

all_ops! {
    #[tokio::test]
    async fn a_consumer_that_yielded_every_result_fills_every_free_place(op: Op) {
        // Jobs 0-15 finish while the consumer looks away; every later job stays running,
        // held at its gate. While results wait to be yielded the consumer may wait for a
        // refill batch of free places, but once it has yielded them all, its next poll
        // must fill every free place: slow jobs keep all `limit` places busy.
        let (probe, mut keys, mut flow) = sixteen_finished(op, 0..16).await;
        let mut out = Vec::new();
        for _ in 0..16 {
            out.extend(next(&mut flow, &probe).await);
        }
        assert_eq!(out.len(), 16);
        assert!(poll_once(&mut flow, &probe).await.is_pending());
        assert_eq!(probe.pulled(), 32, "free places stayed empty behind running jobs");
        eventually("16 jobs running", || probe.running() == 16).await;
        keys.open_all();
        out.extend(drain(&mut flow, &probe).await);
        assert_eq!(sorted(out), sequential(&oks(40)));
    }
}
