//! Fault tests on a real server with real worker processes: the test binary runs
//! itself as a worker (`worker_process` below, with `FLOWGATE_TEST_WORKER` set) and
//! kills those processes, or the server, in the middle of a job.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flowgate::distributed::{NatsBroker, Task, Worker, WORK_STREAM};
use flowgate::prelude::*;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::server::Server;

/// Triples a number after `ms` milliseconds.
const CRUNCH: Task<(u64, u64), u64> = Task::new("crunch");
/// Fails on 7 and panics on 13, at every delivery.
const POISON: Task<u64, u64> = Task::new("poison");

async fn broker(url: &str) -> NatsBroker {
    NatsBroker::connect(url)
        .await
        .expect("connecting to the test server")
        .with_ack_wait(Duration::from_secs(2))
        .with_max_deliver(3)
}

/// The worker process: serves `crunch` and `poison` until killed. Not a test: the
/// fault tests run it in a process of its own (`--ignored --exact`).
#[test]
#[ignore = "the worker process of the fault tests"]
fn worker_process() {
    let url = std::env::var("FLOWGATE_TEST_WORKER")
        .expect("FLOWGATE_TEST_WORKER: the server's URL (the fault tests set it)");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let worker = Worker::new(broker(&url).await, 4)
            .retry_delay(Duration::from_millis(20))
            .task(CRUNCH, |(n, ms): (u64, u64)| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, String>(n * 3)
            })
            .task(POISON, |n: u64| async move {
                match n {
                    7 => Err(format!("no {n}")),
                    13 => panic!("thirteen"),
                    _ => Ok(n),
                }
            });
        worker.serve(CancellationToken::new()).await.unwrap();
    });
}

/// A worker process, killed (SIGKILL) on drop.
struct WorkerProcess(Child);

impl WorkerProcess {
    fn start(url: &str) -> WorkerProcess {
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "faults::worker_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FLOWGATE_TEST_WORKER", url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting a worker process");
        WorkerProcess(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    fn is_alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn crunch_items(n: u64, ms: u64) -> impl futures::Stream<Item = (u64, u64)> + Send + 'static {
    stream! { for i in 0..n { yield (i, ms) } }
}

async fn within<F: std::future::Future>(seconds: u64, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(seconds), future)
        .await
        .expect("the fault test finishes in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_loses_and_duplicates_nothing() {
    let Some(server) = Server::start() else {
        return;
    };
    let broker = broker(&server.url()).await;
    let mut doomed = WorkerProcess::start(&server.url());
    let mut survivor = WorkerProcess::start(&server.url());
    within(90, async {
        let mut results = crunch_items(300, 20).map_remote(broker.clone(), CRUNCH, 16);
        let mut expected = 0;
        while let Some(result) = results.next().await {
            assert_eq!(result.unwrap(), expected * 3, "position {expected}");
            expected += 1;
            if expected == 60 {
                // Items of the doomed worker are running: none may be lost or doubled.
                doomed.kill();
            }
        }
        assert_eq!(expected, 300);
    })
    .await;
    assert!(survivor.is_alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_job_loses_and_duplicates_nothing() {
    let Some(mut server) = Server::start() else {
        return;
    };
    let broker = broker(&server.url()).await;
    let _workers = [
        WorkerProcess::start(&server.url()),
        WorkerProcess::start(&server.url()),
    ];
    within(120, async {
        let mut results = crunch_items(200, 10).map_remote(broker.clone(), CRUNCH, 16);
        let mut expected = 0;
        while let Some(result) = results.next().await {
            assert_eq!(result.unwrap(), expected * 3, "position {expected}");
            expected += 1;
            if expected == 50 {
                server.kill();
                tokio::time::sleep(Duration::from_millis(500)).await;
                server.restart();
            }
        }
        assert_eq!(expected, 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_and_malformed_items_are_dead_lettered_and_no_worker_crashes() {
    let Some(server) = Server::start() else {
        return;
    };
    let broker = broker(&server.url()).await;
    let mut workers = [
        WorkerProcess::start(&server.url()),
        WorkerProcess::start(&server.url()),
    ];
    within(60, async {
        let results: Vec<_> = stream! { for i in 0..30u64 { yield i } }
            .map_remote(broker.clone(), POISON, 8)
            .collect()
            .await;
        for (i, result) in results.iter().enumerate() {
            match i {
                7 => {
                    let error = result.as_ref().unwrap_err();
                    assert_eq!(error.inner(), Some(&"no 7".to_string()));
                    assert_eq!(error.attempts(), 3);
                }
                13 => {
                    let error = result.as_ref().unwrap_err();
                    assert!(error.is_panic(), "{error:?}");
                    assert_eq!(error.attempts(), 3);
                }
                _ => assert_eq!(result.as_ref().unwrap(), &(i as u64)),
            }
        }
        // Someone else's garbage on the work subject.
        broker
            .client()
            .publish("work.poison.stranger.1", vec![0xff; 12].into())
            .await
            .unwrap();
        broker.client().flush().await.unwrap();
        let mut letters = Vec::new();
        for _ in 0..100 {
            letters = broker.dead_letters("poison").await.unwrap();
            if letters.len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(letters.len(), 3, "{letters:?}");
        assert!(
            letters
                .iter()
                .any(|letter| letter.reason.contains("failed to decode")),
            "{letters:?}"
        );
        assert!(
            letters
                .iter()
                .any(|letter| letter.reason.contains("thirteen")),
            "{letters:?}"
        );
    })
    .await;
    for worker in &mut workers {
        assert!(worker.is_alive(), "a worker process died");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_coordinator_leaves_no_work_and_workers_serve_other_jobs() {
    let Some(server) = Server::start() else {
        return;
    };
    let broker = broker(&server.url()).await;
    let mut workers = [
        WorkerProcess::start(&server.url()),
        WorkerProcess::start(&server.url()),
    ];
    within(60, async {
        let mut results = crunch_items(1000, 100).map_remote(broker.clone(), CRUNCH, 40);
        for _ in 0..5 {
            results.next().await.unwrap().unwrap();
        }
        let job = results.job().to_owned();
        let filter = format!("work.crunch.{job}.>");
        assert!(broker.count(WORK_STREAM, &filter).await.unwrap() > 0);
        drop(results);
        let mut left = usize::MAX;
        for _ in 0..100 {
            left = broker.count(WORK_STREAM, &filter).await.unwrap();
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(left, 0, "the dropped job's work is still queued");
        // Two more coordinators at once, through the same workers: each gets its own.
        let first = crunch_items(100, 1)
            .map_remote(broker.clone(), CRUNCH, 10)
            .map(Result::unwrap)
            .collect::<Vec<u64>>();
        let second = stream! { for i in 500..600u64 { yield (i, 1u64) } }
            .map_remote_unordered(broker.clone(), CRUNCH, 10)
            .map(Result::unwrap)
            .collect::<Vec<u64>>();
        let (first, mut second) = tokio::join!(first, second);
        assert_eq!(first, (0..100).map(|i| i * 3).collect::<Vec<_>>());
        second.sort_unstable();
        assert_eq!(second, (500..600).map(|i| i * 3).collect::<Vec<_>>());
    })
    .await;
    for worker in &mut workers {
        assert!(worker.is_alive());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_an_error_naming_the_url() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let error = within(15, NatsBroker::connect(&url)).await.unwrap_err();
    assert!(error.to_string().contains(&url), "{error}");
    // A listener that never speaks NATS: bounded too.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("nats://{}", silent.local_addr().unwrap());
    let error = within(15, NatsBroker::connect(&url)).await.unwrap_err();
    assert!(error.to_string().contains(&url), "{error}");
}
