//! Regression tests of defects found in review: each once failed.
#![allow(dead_code, unused_imports)]

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::distributed::{
    BoxStream, Broker, BrokerError, DeadLetter, Delivery, Exhausted, MemoryBroker, Returned, Task,
    Waiting, WorkAddress, Worker,
};
use flowgate::prelude::*;
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const IDLE: Task<u64, u64> = Task::new("aaa-idle");
const BUSY: Task<u64, u64> = Task::new("busy");
const NAP: Task<u64, u64> = Task::new("nap");

fn numbers(n: u64) -> impl futures::Stream<Item = u64> + Send + 'static {
    stream! { for i in 0..n { yield i } }
}

// R1: a worker serving two tasks, only one of which has work: the idle task's pull
// held (limit - 1) slots for its whole wait; now it holds one.
#[tokio::test(start_paused = true)]
async fn an_idle_task_holds_one_slot_and_the_busy_one_the_rest() {
    let broker = MemoryBroker::new();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (r, m) = (running.clone(), most.clone());
    let stop = CancellationToken::new();
    let worker = Worker::new(broker.clone(), 4)
        .task(IDLE, |n: u64| async move { Ok::<_, String>(n) })
        .task(BUSY, move |n: u64| {
            let (r, m) = (r.clone(), m.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, String>(n)
            }
        });
    let serving = tokio::spawn(worker.serve(stop.clone()));
    let start = Instant::now();
    let out: Vec<u64> = numbers(16)
        .map_remote(broker.clone(), BUSY, 16)
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(out.len(), 16);
    let took = start.elapsed();
    stop.cancel();
    serving.await.unwrap().unwrap();
    eprintln!("R1 took {took:?}, most {}", most.load(Ordering::SeqCst));
    // The idle task holds one slot while it waits for work (it once held three): 3 of
    // 4 slots run BUSY items, 16 one-second items take 6 s.
    assert_eq!(took, Duration::from_secs(6));
    assert_eq!(
        most.load(Ordering::SeqCst),
        3,
        "at most {} BUSY items ran at once on a limit-4 worker; 16 items took {took:?}",
        most.load(Ordering::SeqCst)
    );
}

// R2: MemoryBroker redelivers an item refused (nak, or a dropped delivery) at its last
// delivery, past max_deliver, and never reports it exhausted. JetStream stops at
// max_deliver and sends the MAX_DELIVERIES advisory.
#[tokio::test(start_paused = true)]
async fn memory_gives_up_a_refused_last_delivery() {
    let broker = MemoryBroker::new().with_max_deliver(2);
    broker.prepare_worker("nap").await.unwrap();
    let mut exhausted = broker.exhausted("nap").await.unwrap();
    let address = WorkAddress {
        task: "nap".into(),
        job: "j".into(),
        position: 0,
    };
    broker.publish_work(&address, vec![0]).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let mut batch = broker
            .pull_work("nap", 1, Duration::from_secs(1))
            .await
            .unwrap();
        if let Some(delivery) = batch.next().await {
            let delivery = delivery.unwrap();
            seen.push(delivery.delivered());
            drop(delivery); // a worker handing it back (shutdown), or nak(0)
        }
    }
    let gave_up = tokio::time::timeout(Duration::from_secs(5), exhausted.next())
        .await
        .is_ok();
    assert!(
        seen.iter().all(|&d| d <= 2) && gave_up,
        "deliveries {seen:?} with max_deliver 2; exhausted reported: {gave_up}"
    );
}

// R3: waiting_for_workers keeps saying NoWorker after a worker came and results flow,
// while items are still out.
#[tokio::test(start_paused = true)]
async fn waiting_goes_back_to_no_when_results_arrive() {
    let broker = MemoryBroker::new();
    let mut results = numbers(50).map_remote(broker.clone(), NAP, 4);
    let waiting = results.waiting_for_workers();
    assert!(
        tokio::time::timeout(Duration::from_secs(90), results.next())
            .await
            .is_err()
    );
    assert_eq!(waiting.get(), Waiting::NoWorker);
    let stop = CancellationToken::new();
    let worker = Worker::new(broker.clone(), 2).task(NAP, |n: u64| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, String>(n)
    });
    let serving = tokio::spawn(worker.serve(stop.clone()));
    for _ in 0..10 {
        results.next().await.unwrap().unwrap();
    }
    // Ten results arrived within seconds; items are still out.
    let state = waiting.get();
    stop.cancel();
    drop(results);
    serving.await.unwrap().unwrap();
    assert_eq!(
        state,
        Waiting::No,
        "results arrive, yet the handle says {state:?}"
    );
}

// R5: an item taking 3x ack_wait is not redelivered (heartbeats): a check that passes.
#[tokio::test(start_paused = true)]
async fn a_long_item_is_not_redelivered() {
    let broker = MemoryBroker::new().with_ack_wait(Duration::from_secs(2));
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let stop = CancellationToken::new();
    let worker = Worker::new(broker.clone(), 2).task(NAP, move |n: u64| {
        c.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_secs(6)).await;
            Ok::<_, String>(n)
        }
    });
    let serving = tokio::spawn(worker.serve(stop.clone()));
    let out: Vec<_> = numbers(1)
        .map_remote(broker.clone(), NAP, 1)
        .collect()
        .await;
    assert_eq!(out, [Ok(0)]);
    stop.cancel();
    let report = serving.await.unwrap().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(report.done, 1);
}

// R6: MemoryBroker's max_ack_pending counts items out of every task: one task's
// items out block another task's. JetStream's max_ack_pending is per consumer (task).
#[tokio::test(start_paused = true)]
async fn memory_caps_items_out_per_task() {
    let broker = MemoryBroker::new().with_max_ack_pending(1);
    for task in ["idle", "busy"] {
        broker.prepare_worker(task).await.unwrap();
        let address = WorkAddress {
            task: task.into(),
            job: format!("job-{task}"),
            position: 0,
        };
        broker.publish_work(&address, vec![0]).await.unwrap();
    }
    let mut a = broker
        .pull_work("idle", 1, Duration::from_millis(100))
        .await
        .unwrap();
    let held = a.next().await.unwrap().unwrap();
    let mut b = broker
        .pull_work("busy", 1, Duration::from_millis(100))
        .await
        .unwrap();
    let got = b.next().await;
    drop(held);
    assert!(
        got.is_some(),
        "task busy got nothing while one item of task idle was out"
    );
}

// R10: edge cases: no items, limit 1.
#[tokio::test(start_paused = true)]
async fn no_items_and_limit_one() {
    let broker = MemoryBroker::new();
    let stop = CancellationToken::new();
    let worker =
        Worker::new(broker.clone(), 1).task(NAP, |n: u64| async move { Ok::<_, String>(n) });
    let serving = tokio::spawn(worker.serve(stop.clone()));
    let none: Vec<_> = numbers(0)
        .map_remote(broker.clone(), NAP, 1)
        .collect()
        .await;
    assert!(none.is_empty());
    let some: Vec<_> = numbers(5)
        .map_remote_unordered(broker.clone(), NAP, 1)
        .collect()
        .await;
    assert_eq!(some.len(), 5);
    let mut values: Vec<u64> = some.into_iter().map(Result::unwrap).collect();
    values.sort_unstable();
    assert_eq!(values, [0, 1, 2, 3, 4]);
    stop.cancel();
    serving.await.unwrap().unwrap();
}

/// A MemoryBroker whose results reading can be broken: the open stream yields one
/// error, and `results()` fails until `down` passes.
#[derive(Clone)]
struct Flaky {
    inner: MemoryBroker,
    down: Arc<Mutex<Option<Instant>>>,
    brk: Arc<tokio::sync::Notify>,
}

impl Broker for Flaky {
    type Delivery = <MemoryBroker as Broker>::Delivery;
    fn max_payload(&self) -> usize {
        Broker::max_payload(&self.inner)
    }
    async fn prepare_job(&self, task: &str) -> Result<(), BrokerError> {
        self.inner.prepare_job(task).await
    }
    async fn prepare_worker(&self, task: &str) -> Result<(), BrokerError> {
        self.inner.prepare_worker(task).await
    }
    async fn has_worker(&self, task: &str) -> Result<bool, BrokerError> {
        self.inner.has_worker(task).await
    }
    async fn publish_work(&self, a: &WorkAddress, p: Vec<u8>) -> Result<u64, BrokerError> {
        self.inner.publish_work(a, p).await
    }
    async fn pull_work(
        &self,
        task: &str,
        max: usize,
        wait: Duration,
    ) -> Result<BoxStream<Result<Self::Delivery, BrokerError>>, BrokerError> {
        self.inner.pull_work(task, max, wait).await
    }
    async fn publish_result(&self, a: &WorkAddress, p: Vec<u8>) -> Result<(), BrokerError> {
        self.inner.publish_result(a, p).await
    }
    async fn results(
        &self,
        job: &str,
    ) -> Result<BoxStream<Result<Returned, BrokerError>>, BrokerError> {
        if let Some(until) = *self.down.lock().unwrap() {
            if Instant::now() < until {
                return Err(BrokerError::new("results unavailable"));
            }
        }
        let mut inner = self.inner.results(job).await?;
        let brk = self.brk.clone();
        Ok(Box::pin(stream! {
            loop {
                tokio::select! {
                    next = inner.next() => match next {
                        Some(item) => yield item,
                        None => break,
                    },
                    _ = brk.notified() => {
                        yield Err(BrokerError::new("connection lost"));
                        break;
                    }
                }
            }
        }))
    }
    async fn exhausted(&self, task: &str) -> Result<BoxStream<Exhausted>, BrokerError> {
        self.inner.exhausted(task).await
    }
    async fn dead_letter(&self, task: &str, l: DeadLetter) -> Result<(), BrokerError> {
        self.inner.dead_letter(task, l).await
    }
    async fn purge_job(&self, task: &str, job: &str) -> Result<(), BrokerError> {
        self.inner.purge_job(task, job).await
    }
}

// R4: after the results stream breaks and re-reading fails for more than PATIENCE, the
// items then out fail (as documented) but results is left None for good: every item
// published afterwards is processed by workers and never yielded: the job hangs, even
// though the broker is healthy again.
#[tokio::test(start_paused = true)]
async fn a_results_outage_over_a_minute_fails_the_items_out_and_not_the_rest() {
    let broker = Flaky {
        inner: MemoryBroker::new(),
        down: Arc::default(),
        brk: Arc::default(),
    };
    let stop = CancellationToken::new();
    let worker = Worker::new(broker.clone(), 2).task(NAP, |n: u64| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, String>(n)
    });
    let serving = tokio::spawn(worker.serve(stop.clone()));
    let mut results = numbers(20).map_remote_unordered(broker.clone(), NAP, 4);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(results.next().await.unwrap());
    }
    // The results connection breaks; the broker is back 70 s later.
    *broker.down.lock().unwrap() = Some(Instant::now() + Duration::from_secs(70));
    broker.brk.notify_waiters();
    let rest = tokio::time::timeout(Duration::from_secs(3600), async {
        while let Some(result) = results.next().await {
            got.push(result);
        }
    })
    .await;
    let errors = got.iter().filter(|r| r.is_err()).count();
    stop.cancel();
    let done = serving.await.unwrap().unwrap().done;
    assert!(
        rest.is_ok(),
        "after an hour: {} of 20 positions yielded ({errors} errors); the worker finished {done} items; {} results stored",
        got.len(),
        broker.inner.stored_results(results.job()),
    );
}

mod nats {
    use super::*;
    use crate::server::Server;
    use flowgate::distributed::{NatsBroker, WORK_STREAM};

    const BIG: Task<Vec<u8>, u64> = Task::new("big");

    async fn connect(server: &Server) -> NatsBroker {
        NatsBroker::connect(&server.url())
            .await
            .unwrap()
            .with_ack_wait(Duration::from_secs(2))
            .with_max_deliver(3)
    }

    fn nap_worker(
        broker: NatsBroker,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<Result<flowgate::distributed::WorkerReport, BrokerError>>,
    ) {
        let stop = CancellationToken::new();
        let worker = Worker::new(broker, 2)
            .retry_delay(Duration::from_millis(20))
            .task(NAP, |n: u64| async move { Ok::<_, String>(n) });
        (stop.clone(), tokio::spawn(worker.serve(stop)))
    }

    // R7: once a task's consumer is deleted (by an operator — the documented way to
    // change its settings — or by inactive_threshold), a running worker never sets it up
    // again: the cached PullConsumer's fetches fail, and the cache is only cleared when
    // `consumer()` or `messages()` itself fails.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deleted_consumer_is_set_up_again() {
        let Some(server) = Server::start() else {
            return;
        };
        let broker = connect(&server).await;
        let (stop, serving) = nap_worker(connect(&server).await);
        let first: Vec<_> = numbers(3)
            .map_remote(broker.clone(), NAP, 3)
            .collect()
            .await;
        assert_eq!(first, [Ok(0), Ok(1), Ok(2)]);
        broker
            .jetstream()
            .get_stream(WORK_STREAM)
            .await
            .unwrap()
            .delete_consumer("flowgate-nap")
            .await
            .unwrap();
        let second = tokio::time::timeout(
            Duration::from_secs(30),
            numbers(3)
                .map_remote(broker.clone(), NAP, 3)
                .collect::<Vec<_>>(),
        )
        .await;
        stop.cancel();
        let report = serving.await.unwrap().unwrap();
        assert!(
            second.is_ok(),
            "no result within 30 s after the consumer was deleted; worker report {report:?}"
        );
    }

    // R8: dead letters are published with Nats-Msg-Id `<subject>/<deliveries>`: two
    // different malformed messages on the same subject within the 2-minute duplicate
    // window: the second dead letter is silently dropped (MemoryBroker keeps both).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn alike_dead_letters_are_all_stored() {
        let Some(server) = Server::start() else {
            return;
        };
        let broker = connect(&server).await;
        broker.prepare_job("nap").await.unwrap();
        let (stop, serving) = nap_worker(connect(&server).await);
        for payload in [&b"first"[..], &b"second"[..]] {
            broker
                .client()
                .publish("work.nap.garbage", payload.to_vec().into())
                .await
                .unwrap();
        }
        broker.client().flush().await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.cancel();
        let report = serving.await.unwrap().unwrap();
        let letters = broker.dead_letters("nap").await.unwrap();
        assert_eq!(
            letters.len() as u64,
            report.dead_lettered,
            "the worker dead-lettered {} messages, {} are stored: {letters:?}",
            report.dead_lettered,
            letters.len()
        );
    }

    // R9a: a task error larger than max_payload is published as the failure outcome
    // without any size check (the Done path has one): the server rejects it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_huge_task_error_comes_back_clipped() {
        let Some(server) = Server::start() else {
            return;
        };
        let broker = connect(&server).await;
        let worker_broker = connect(&server).await;
        let wclient = worker_broker.client().clone();
        let stop = CancellationToken::new();
        let worker = Worker::new(worker_broker, 2)
            .retry_delay(Duration::from_millis(20))
            .task(BIG, |_: Vec<u8>| async move {
                Err::<u64, _>("x".repeat(2 << 20))
            });
        let serving = tokio::spawn(worker.serve(stop.clone()));
        let start = std::time::Instant::now();
        let out: Vec<_> = tokio::time::timeout(
            Duration::from_secs(240),
            stream! { yield vec![1u8] }
                .map_remote(broker.clone(), BIG, 1)
                .collect::<Vec<_>>(),
        )
        .await
        .expect("a result within 240 s");
        let took = start.elapsed();
        stop.cancel();
        let report = serving.await.unwrap().unwrap();
        let connects = wclient.statistics().connects.load(Ordering::Relaxed);
        let error = out[0].as_ref().unwrap_err();
        eprintln!(
            "R9a took {took:?}: {}; report {report:?}; worker connects {connects}",
            &error.to_string()[..200.min(error.to_string().len())]
        );
        assert!(
            took < Duration::from_secs(30) && !error.to_string().contains("gave it up"),
            "took {took:?}; error {:.200}; worker report {report:?}",
            error.to_string()
        );
    }

    // R9b: a poison item near max_payload: the dead letter (payload + headers, reason
    // included) is over max_payload; nothing checks it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_poison_item_is_dead_lettered_cut() {
        let Some(server) = Server::start() else {
            return;
        };
        let broker = connect(&server).await;
        let worker_broker = connect(&server).await;
        let wclient = worker_broker.client().clone();
        let max = Broker::max_payload(&broker);
        let stop = CancellationToken::new();
        let worker = Worker::new(worker_broker, 2)
            .retry_delay(Duration::from_millis(20))
            .task(
                BIG,
                |_: Vec<u8>| async move { Err::<u64, _>("no".repeat(150)) },
            );
        let serving = tokio::spawn(worker.serve(stop.clone()));
        let item = vec![7u8; max - 125];
        let out: Vec<_> = tokio::time::timeout(
            Duration::from_secs(120),
            stream! { yield item }
                .map_remote(broker.clone(), BIG, 1)
                .collect::<Vec<_>>(),
        )
        .await
        .expect("a result within 120 s");
        assert!(out[0].is_err());
        tokio::time::sleep(Duration::from_secs(8)).await;
        stop.cancel();
        let report = serving.await.unwrap().unwrap();
        let letters = broker.dead_letters("big").await.unwrap();
        let connects = wclient.statistics().connects.load(Ordering::Relaxed);
        assert!(
            letters.len() == 1,
            "{} dead letters; worker report {report:?}; worker connected {connects} times",
            letters.len()
        );
    }

    // R2n: JetStream itself: a nak at the last delivery is not redelivered, and the
    // advisory comes (what MemoryBroker should copy).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jetstream_gives_up_a_refused_last_delivery() {
        let Some(server) = Server::start() else {
            return;
        };
        let broker = NatsBroker::connect(&server.url())
            .await
            .unwrap()
            .with_max_deliver(2);
        broker.prepare_job("nap").await.unwrap();
        broker.prepare_worker("nap").await.unwrap();
        let mut exhausted = broker.exhausted("nap").await.unwrap();
        let address = WorkAddress {
            task: "nap".into(),
            job: "j".into(),
            position: 0,
        };
        broker.publish_work(&address, vec![0]).await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            let mut batch = broker
                .pull_work("nap", 1, Duration::from_millis(500))
                .await
                .unwrap();
            if let Some(delivery) = batch.next().await {
                let delivery = delivery.unwrap();
                seen.push(delivery.delivered());
                delivery.nak(Duration::ZERO).await.unwrap();
            }
        }
        let gave_up = tokio::time::timeout(Duration::from_secs(5), exhausted.next()).await;
        eprintln!(
            "R2n: deliveries {seen:?}, advisory {:?}",
            gave_up.map(|e| e.map(|e| (e.sequence, e.deliveries)))
        );
    }
}

mod nats2 {
    use super::*;
    use crate::server::Server;
    use flowgate::distributed::NatsBroker;

    // R11: a worker whose limit is over the consumer's max_ack_pending.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_limit_over_max_ack_pending() {
        let Some(server) = Server::start() else {
            return;
        };
        let broker = NatsBroker::connect(&server.url())
            .await
            .unwrap()
            .with_ack_wait(Duration::from_secs(2))
            .with_max_ack_pending(2);
        let stop = CancellationToken::new();
        let worker = Worker::new(broker.clone(), 4).task(NAP, |n: u64| async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok::<_, String>(n)
        });
        let serving = tokio::spawn(worker.serve(stop.clone()));
        let start = std::time::Instant::now();
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            numbers(8)
                .map_remote(broker.clone(), NAP, 8)
                .collect::<Vec<_>>(),
        )
        .await;
        let took = start.elapsed();
        stop.cancel();
        let report = serving.await.unwrap().unwrap();
        eprintln!("R11 took {took:?}; report {report:?}");
        assert!(
            out.is_ok() && report.broker_errors < 100,
            "took {took:?}; report {report:?}"
        );
    }
}

// R12: wakeups of a coordinator waiting for workers (an hour, paused clock).
#[tokio::test(start_paused = true)]
async fn an_idle_coordinator_does_not_spin() {
    let broker = MemoryBroker::new();
    let mut results = numbers(3).map_remote(broker.clone(), NAP, 2);
    let mut polls = 0u64;
    let start = Instant::now();
    let waiting = futures::future::poll_fn(|cx| {
        polls += 1;
        eprintln!("R12 poll at {:?}", start.elapsed());
        results.poll_next_unpin(cx)
    });
    assert!(tokio::time::timeout(Duration::from_secs(3600), waiting)
        .await
        .is_err());
    eprintln!("R12: {polls} polls in an hour");
    assert!(polls < 200, "{polls} polls in an hour");
}

// R13: the watchdog checks once per poll of the stream: when its check completes, watch()
// returns without polling the new sleep, so no timer is armed and a consumer waiting in
// one `next()` never sees the state change from NoWorker to Slow when a worker sets the
// task up but yields nothing.
#[tokio::test(start_paused = true)]
async fn the_watchdog_checks_every_minute() {
    let broker = MemoryBroker::new();
    let mut results = numbers(3).map_remote(broker.clone(), NAP, 2);
    let waiting = results.waiting_for_workers();
    let (b, w) = (broker.clone(), waiting.clone());
    let observer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert_eq!(w.get(), Waiting::NoWorker);
        // A worker sets the task up (and is stuck: no result).
        b.prepare_worker("nap").await.unwrap();
        tokio::time::sleep(Duration::from_secs(500)).await;
        w.get()
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(600), results.next())
            .await
            .is_err()
    );
    let state = observer.await.unwrap();
    assert_eq!(
        state,
        Waiting::Slow,
        "8 minutes after a worker set up the task"
    );
}

mod nats3 {
    use super::*;
    use crate::server::Server;
    use flowgate::distributed::NatsBroker;

    const SLEEPY: Task<(u64, u64), u64> = Task::new("sleepy");

    fn sleepy(
        broker: NatsBroker,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<Result<flowgate::distributed::WorkerReport, BrokerError>>,
    ) {
        let stop = CancellationToken::new();
        let worker = Worker::new(broker, 2).task(SLEEPY, |(n, ms): (u64, u64)| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(n)
        });
        (stop.clone(), tokio::spawn(worker.serve(stop)))
    }

    // R14: a worker stopping while an item runs kept its open pull request (for its free
    // slot) alive through the grace period without reading it: work published then was
    // delivered into it, never started, and waited out the ack wait. Now the stopping
    // worker reads its last request to the end and hands back at once what comes (which
    // counts as a delivery, as JetStream counts it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopping_worker_hands_back_new_work_at_once() {
        let Some(server) = Server::start() else {
            return;
        };
        let connect = || async {
            NatsBroker::connect(&server.url())
                .await
                .unwrap()
                .with_ack_wait(Duration::from_secs(5))
                .with_max_deliver(3)
        };
        let broker = connect().await;
        let (stop1, w1) = sleepy(connect().await);
        let long = tokio::spawn(
            stream! { yield (0u64, 3000u64) }
                .map_remote(broker.clone(), SLEEPY, 1)
                .collect::<Vec<_>>(),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop1.cancel(); // W1 finishes item 0 within its grace
        let (stop2, w2) = sleepy(connect().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let start = std::time::Instant::now();
        let quick: Vec<_> = stream! { yield (1u64, 0u64) }
            .map_remote(broker.clone(), SLEEPY, 1)
            .collect()
            .await;
        let took = start.elapsed();
        assert_eq!(long.await.unwrap(), [Ok(0)]);
        stop2.cancel();
        let r1 = w1.await.unwrap().unwrap();
        let r2 = w2.await.unwrap().unwrap();
        assert!(
            quick == [Ok(1)] && took < Duration::from_secs(2),
            "a 0 ms item took {took:?}: {quick:?}; stopping worker {r1:?}; other worker {r2:?}"
        );
    }
}

mod nats4 {
    use super::*;
    use crate::server::Server;
    use flowgate::distributed::NatsBroker;
    const EDGE: Task<Vec<u8>, u64> = Task::new("edge");

    // Check (passes): an item at exactly the coordinator's limit goes through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_item_at_the_size_limit_goes_through() {
        let Some(server) = Server::start() else {
            return;
        };
        let broker = NatsBroker::connect(&server.url()).await.unwrap();
        let max = Broker::max_payload(&broker);
        let stop = CancellationToken::new();
        let worker = Worker::new(broker.clone(), 1).task(EDGE, |v: Vec<u8>| async move {
            Ok::<_, String>(v.len() as u64)
        });
        let serving = tokio::spawn(worker.serve(stop.clone()));
        let subject_len = "work.edge.0123456789abcdef.0".len();
        let n = max - (2 * subject_len + 64) - 3;
        let out: Vec<_> = stream! { yield vec![1u8; n]; yield vec![1u8; n + 1] }
            .map_remote(broker.clone(), EDGE, 2)
            .collect()
            .await;
        stop.cancel();
        serving.await.unwrap().unwrap();
        assert_eq!(out[0], Ok(n as u64));
        assert!(out[1].as_ref().unwrap_err().is_broker());
    }
}
