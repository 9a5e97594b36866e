//! The conformance suite: every case runs against each broker (see `main.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowgate::distributed::{Broker, Delivery, Task, Waiting, Worker, WorkerReport};
use flowgate::prelude::*;
use flowgate::Cause;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Fixture;

pub const DOUBLE: Task<u64, u64> = Task::new("double");
pub const SLOW: Task<(u64, u64), u64> = Task::new("slow");
pub const PICKY: Task<u64, u64, Picky> = Task::new("picky");
pub const BLOB: Task<Vec<u8>, usize> = Task::new("blob");
pub const ODD: Task<Odd, u64> = Task::new("odd");

/// The task error of `PICKY`: serde, with a `Display`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Picky(pub String);

impl std::fmt::Display for Picky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "picky: {}", self.0)
    }
}

/// An item whose odd values fail to encode.
#[derive(Debug, Clone, Deserialize)]
pub struct Odd(pub u64);

impl Serialize for Odd {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0 % 2 == 1 {
            return Err(serde::ser::Error::custom(format!("{} is odd", self.0)));
        }
        serializer.serialize_u64(self.0)
    }
}

pub struct Serving {
    pub stop: CancellationToken,
    pub handle: JoinHandle<Result<WorkerReport, flowgate::distributed::BrokerError>>,
}

impl Serving {
    pub async fn stop(self) -> WorkerReport {
        self.stop.cancel();
        self.handle
            .await
            .expect("the worker task")
            .expect("the worker")
    }
}

/// A worker serving the suite's task `task`, with `limit` slots.
pub fn worker<B: Broker>(broker: B, limit: usize, task: &str) -> Serving {
    let stop = CancellationToken::new();
    let worker = Worker::new(broker, limit)
        .grace(Duration::from_secs(5))
        .retry_delay(Duration::from_millis(20));
    let worker = match task {
        "double" => worker.task(DOUBLE, |n: u64| async move { Ok::<_, String>(n * 2) }),
        "slow" => worker.task(SLOW, |(n, ms): (u64, u64)| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(n)
        }),
        "picky" => worker.task(PICKY, |n: u64| async move {
            match n {
                7 => Err(Picky(format!("no {n}"))),
                13 => panic!("thirteen"),
                _ => Ok(n),
            }
        }),
        // On the blocking pool; panics on an empty blob.
        "blob" => worker.task_blocking(BLOB, |blob: Vec<u8>| {
            assert!(!blob.is_empty(), "an empty blob");
            Ok::<_, String>(blob.len())
        }),
        "odd" => worker.task(ODD, |odd: Odd| async move { Ok::<_, String>(odd.0) }),
        other => panic!("no task {other} in the suite"),
    };
    let handle = tokio::spawn(worker.serve(stop.clone()));
    Serving { stop, handle }
}

fn numbers(n: u64) -> impl futures::Stream<Item = u64> + Send + 'static {
    stream! { for i in 0..n { yield i } }
}

pub async fn results_come_back_in_order_exactly_once<F: Fixture>(fixture: F) {
    let broker = fixture.broker().await;
    let workers = [
        worker(broker.clone(), 4, "double"),
        worker(broker.clone(), 3, "double"),
    ];
    let results = numbers(200)
        .map_remote(broker.clone(), DOUBLE, 16)
        .named("double");
    let stats = results.stats();
    let doubled: Vec<u64> = results.map(Result::unwrap).collect().await;
    assert_eq!(doubled, (0..200).map(|i| i * 2).collect::<Vec<_>>());
    let snapshot = stats.snapshot();
    assert!(snapshot.ended);
    assert_eq!(snapshot.pulled_count, 200);
    assert_eq!(snapshot.started_count, 200);
    assert_eq!(snapshot.finished_count, 200);
    assert_eq!(snapshot.yielded_count, 200);
    assert_eq!(
        (
            snapshot.in_flight_count,
            snapshot.held_count,
            snapshot.failed_count
        ),
        (0, 0, 0)
    );
    let mut done = 0;
    for serving in workers {
        done += serving.stop().await.done;
    }
    assert_eq!(done, 200);
}

pub async fn unordered_results_arrive_as_they_finish<F: Fixture>(fixture: F) {
    let broker = fixture.broker().await;
    let serving = worker(broker.clone(), 4, "slow");
    // Item 0 takes longest: unordered yields it last.
    let items =
        stream! { for (n, ms) in [(0u64, 600u64), (1, 10), (2, 10), (3, 10)] { yield (n, ms) } };
    let arrived: Vec<u64> = items
        .map_remote_unordered(broker.clone(), SLOW, 4)
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(arrived.len(), 4);
    assert_eq!(arrived[3], 0, "{arrived:?}");
    let mut sorted = arrived.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [0, 1, 2, 3]);
    serving.stop().await;
}

pub async fn at_most_limit_items_are_out<F: Fixture>(fixture: F) {
    let broker = fixture.broker().await;
    let serving = worker(broker.clone(), 8, "slow");
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    let items = stream! {
        for i in 0..60u64 {
            counter.fetch_add(1, Ordering::SeqCst);
            yield (i, 5u64);
        }
    };
    let mut results = items.map_remote(broker.clone(), SLOW, 5);
    let mut yielded = 0u64;
    let mut most = 0;
    while let Some(result) = results.next().await {
        assert_eq!(result.unwrap(), yielded);
        yielded += 1;
        let out = pulled.load(Ordering::SeqCst) - yielded;
        most = most.max(out);
        assert!(out <= 5, "{out} items out with a limit of 5");
        // A slow consumer: the generator must wait for it.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(yielded, 60);
    assert!(most >= 3, "the bound was never approached: {most}");
    serving.stop().await;
}

pub async fn a_failing_item_is_an_error_in_its_position<F: Fixture>(fixture: F) {
    let broker = fixture.broker().await;
    let serving = worker(broker.clone(), 4, "picky");
    let results = numbers(20).map_remote(broker.clone(), PICKY, 6);
    let stats = results.stats();
    let results: Vec<_> = results.collect().await;
    assert_eq!(stats.snapshot().failed_count, 2);
    assert_eq!(results.len(), 20);
    for (i, result) in results.iter().enumerate() {
        let i = i as u64;
        match i {
            7 => {
                let error = result.as_ref().unwrap_err();
                assert_eq!(error.position(), 7);
                assert_eq!(error.attempts() as u64, fixture.max_deliver());
                assert_eq!(error.inner(), Some(&Picky("no 7".into())));
                assert!(
                    error.to_string().contains("picky: no 7") || error.to_string().contains("no 7"),
                    "{error}"
                );
            }
            13 => {
                let error = result.as_ref().unwrap_err();
                assert_eq!(error.position(), 13);
                assert!(error.is_panic(), "{error:?}");
                assert!(
                    matches!(error.cause(), Cause::Panicked { message } if message == "thirteen")
                );
            }
            _ => assert_eq!(result.as_ref().unwrap(), &i),
        }
    }
    let report = serving.stop().await;
    assert_eq!(report.dead_lettered, 2, "{report:?}");
    assert_eq!(
        report.refused as u64,
        2 * (fixture.max_deliver() - 1),
        "{report:?}"
    );
    let letters = fixture.dead_letters("picky").await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(
        letters.iter().any(|letter| letter.reason.contains("no 7")),
        "{letters:?}"
    );
    assert!(
        letters
            .iter()
            .any(|letter| letter.reason.contains("thirteen")),
        "{letters:?}"
    );
    assert!(letters
        .iter()
        .all(|letter| letter.deliveries == fixture.max_deliver()));
}

pub async fn an_item_over_the_maximum_size_is_an_error_naming_sizes<F: Fixture>(fixture: F) {
    let broker = fixture.broker().await;
    let max = broker.max_payload();
    let serving = worker(broker.clone(), 2, "blob");
    let items = stream! {
        yield vec![1u8; 10];
        yield vec![2u8; max + 1];
        yield vec![3u8; 20];
        yield Vec::new();
    };
    let results: Vec<_> = items.map_remote(broker.clone(), BLOB, 4).collect().await;
    assert_eq!(results[0], Ok(10));
    let error = results[1].as_ref().unwrap_err();
    assert!(error.is_broker(), "{error:?}");
    let text = error.to_string();
    // The size (the bytes plus postcard's 3-byte length prefix) and the limit.
    assert!(
        text.contains(&format!("encodes to {} bytes", max + 1 + 3)),
        "{text}"
    );
    assert!(
        text.contains(&format!("maximum message size of {max} bytes")),
        "{text}"
    );
    assert_eq!(results[2], Ok(20));
    // A panic on the blocking pool is a value too, after the last delivery.
    let error = results[3].as_ref().unwrap_err();
    assert!(
        matches!(error.cause(), Cause::Panicked { message } if message == "an empty blob"),
        "{error:?}"
    );
    assert_eq!(error.attempts() as u64, fixture.max_deliver());
    serving.stop().await;
}

pub async fn an_item_that_fails_to_encode_is_an_error_the_rest_go_on<F: Fixture>(fixture: F) {
    let broker = fixture.broker().await;
    let serving = worker(broker.clone(), 2, "odd");
    let items = stream! { for i in 0..6u64 { yield Odd(i) } };
    let results: Vec<_> = items.map_remote(broker.clone(), ODD, 3).collect().await;
    for (i, result) in results.iter().enumerate() {
        if i % 2 == 1 {
            let error = result.as_ref().unwrap_err();
            assert_eq!(error.position(), i as u64);
            assert!(error.is_broker(), "{error:?}");
            assert!(
                error.to_string().contains("failed to encode as a `")
                    && error.to_string().contains("Odd`"),
                "{error}"
            );
        } else {
            assert_eq!(result.as_ref().unwrap(), &(i as u64));
        }
    }
    serving.stop().await;
}

pub async fn a_malformed_message_is_dead_lettered<F: Fixture>(fixture: F) {
    let broker = fixture.broker().await;
    let serving = worker(broker.clone(), 2, "double");
    // The work queue exists before anyone publishes on it.
    broker.prepare_job("double").await.unwrap();
    fixture
        .publish_raw(
            "work.double.stranger.0",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
        )
        .await;
    fixture
        .publish_raw("work.double.no-position", b"hello".to_vec())
        .await;
    // The worker goes on serving.
    let doubled: Vec<u64> = numbers(5)
        .map_remote(broker.clone(), DOUBLE, 2)
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(doubled, [0, 2, 4, 6, 8]);
    let mut letters = Vec::new();
    for _ in 0..100 {
        letters = fixture.dead_letters("double").await;
        if letters.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(
        letters
            .iter()
            .any(|letter| letter.reason.contains("failed to decode")),
        "{letters:?}"
    );
    assert!(
        letters
            .iter()
            .any(|letter| letter.reason.contains("not of the form")),
        "{letters:?}"
    );
    let report = serving.stop().await;
    assert_eq!(report.dead_lettered, 2);
}

pub async fn two_jobs_through_the_same_workers_get_their_own_results<F: Fixture>(fixture: F) {
    let broker = fixture.broker().await;
    let serving = worker(broker.clone(), 4, "double");
    let first = numbers(100)
        .map_remote(broker.clone(), DOUBLE, 8)
        .map(Result::unwrap)
        .collect::<Vec<u64>>();
    let second = stream! { for i in 1000..1100u64 { yield i } }
        .map_remote_unordered(broker.clone(), DOUBLE, 8)
        .map(Result::unwrap)
        .collect::<Vec<u64>>();
    let (first, mut second) = tokio::join!(first, second);
    assert_eq!(first, (0..100).map(|i| i * 2).collect::<Vec<_>>());
    second.sort_unstable();
    assert_eq!(second, (1000..1100).map(|i| i * 2).collect::<Vec<_>>());
    serving.stop().await;
}

pub async fn a_crashed_delivery_is_delivered_again<F: Fixture>(fixture: F) {
    let broker = fixture.broker().await;
    let results = numbers(3).map_remote(broker.clone(), DOUBLE, 3);
    let collecting = tokio::spawn(results.map(Result::unwrap).collect::<Vec<u64>>());
    // A worker that takes an item and dies without a word.
    broker.prepare_worker("double").await.unwrap();
    let taken = loop {
        let mut batch = broker
            .pull_work("double", 1, Duration::from_millis(500))
            .await
            .unwrap();
        if let Some(delivery) = batch.next().await {
            break delivery.unwrap();
        }
    };
    assert_eq!(taken.delivered(), 1);
    fixture.abandon(taken);
    let serving = worker(broker.clone(), 2, "double");
    assert_eq!(collecting.await.unwrap(), [0, 2, 4]);
    serving.stop().await;
}

pub async fn an_item_every_worker_crashes_on_is_given_up<F: Fixture>(fixture: F) {
    let broker = fixture.broker().await;
    let mut results = numbers(1).map_remote(broker.clone(), DOUBLE, 1);
    let first = tokio::spawn(async move { results.next().await });
    broker.prepare_worker("double").await.unwrap();
    let mut crashes = 0;
    while crashes < fixture.max_deliver() {
        let mut batch = broker
            .pull_work("double", 1, Duration::from_millis(500))
            .await
            .unwrap();
        while let Some(delivery) = batch.next().await {
            let delivery = delivery.unwrap();
            crashes += 1;
            assert_eq!(delivery.delivered(), crashes);
            fixture.abandon(delivery);
        }
    }
    // Workers go on pulling (a broker notices the last ack wait passing as it delivers).
    let serving = worker(broker.clone(), 2, "double");
    let error = first.await.unwrap().unwrap().unwrap_err();
    assert_eq!(serving.stop().await.done, 0);
    assert_eq!(error.position(), 0);
    assert!(error.is_broker(), "{error:?}");
    assert_eq!(error.attempts() as u64, fixture.max_deliver());
    assert!(error.to_string().contains("gave it up"), "{error}");
}

pub async fn a_dropped_job_leaves_no_work_behind<F: Fixture>(fixture: F) {
    let broker = fixture.broker().await;
    // No worker yet: the job's items wait in the broker.
    let mut results = numbers(10).map_remote(broker.clone(), DOUBLE, 6);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), results.next())
            .await
            .is_err()
    );
    let job = results.job().to_owned();
    assert_eq!(fixture.queued("double", &job).await, 6);
    drop(results);
    for _ in 0..100 {
        if fixture.queued("double", &job).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fixture.queued("double", &job).await, 0);
    // Workers started afterwards serve the next job and never see the dropped one.
    let serving = worker(broker.clone(), 2, "double");
    let doubled: Vec<u64> = numbers(4)
        .map_remote(broker.clone(), DOUBLE, 2)
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(doubled, [0, 2, 4, 6]);
    let report = serving.stop().await;
    assert_eq!(report.done, 4, "{report:?}");
}

pub async fn a_job_cleans_up_when_it_ends<F: Fixture>(fixture: F) {
    let broker = fixture.broker().await;
    let serving = worker(broker.clone(), 2, "double");
    let mut results = numbers(5).map_remote(broker.clone(), DOUBLE, 2);
    let job = results.job().to_owned();
    let mut count = 0;
    while let Some(result) = results.next().await {
        result.unwrap();
        count += 1;
    }
    assert_eq!(count, 5);
    assert_eq!(fixture.queued("double", &job).await, 0);
    assert_eq!(fixture.stored_results(&job).await, 0);
    serving.stop().await;
}

pub async fn a_worker_stopping_finishes_its_items_and_leaves_the_rest<F: Fixture>(fixture: F) {
    let broker = fixture.broker().await;
    let first = worker(broker.clone(), 2, "slow");
    let items = stream! { for i in 0..6u64 { yield (i, 400u64) } };
    let collecting = tokio::spawn(
        items
            .map_remote(broker.clone(), SLOW, 6)
            .map(Result::unwrap)
            .collect::<Vec<u64>>(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Two items run; the first worker stops and finishes them within its grace.
    let report = first.stop().await;
    assert_eq!(report.done, 2, "{report:?}");
    let second = worker(broker.clone(), 4, "slow");
    assert_eq!(collecting.await.unwrap(), [0, 1, 2, 3, 4, 5]);
    assert_eq!(second.stop().await.done, 4);
}

pub async fn a_job_without_workers_waits_and_says_so<F: Fixture>(fixture: F) {
    let broker = fixture.broker().await;
    const NOBODY: Task<u64, u64> = Task::new("nobody");
    let mut results = numbers(3).map_remote(broker.clone(), NOBODY, 2);
    let waiting = results.waiting_for_workers();
    let stats = results.stats();
    assert_eq!(waiting.get(), Waiting::No);
    assert!(
        tokio::time::timeout(Duration::from_secs(90), results.next())
            .await
            .is_err()
    );
    assert_eq!(waiting.get(), Waiting::NoWorker);
    // The statistics say it too: items out, none back, busy all along.
    let snapshot = stats.snapshot();
    assert_eq!(
        (
            snapshot.started_count,
            snapshot.in_flight_count,
            snapshot.finished_count
        ),
        (2, 2, 0)
    );
    assert_eq!(snapshot.total_busy_duration, Duration::from_secs(90));
    drop(results);
    let snapshot = stats.snapshot();
    assert!(snapshot.ended);
    assert_eq!(snapshot.in_flight_count, 0);
}
