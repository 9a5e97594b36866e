//! The distributed part through the public API: one conformance suite run against the
//! in-process broker (on the paused clock) and against a real NATS server (see
//! `server.rs`), and the fault tests with real worker processes (`faults.rs`).

mod defects;
mod faults;
mod server;
mod suite;

use std::future::Future;
use std::time::Duration;

use flowgate::distributed::{
    Broker, DeadLetter, MemoryBroker, MemoryDelivery, NatsBroker, NatsDelivery, RESULTS_STREAM,
    WORK_STREAM,
};

/// A broker under test, and what the suite needs to see inside it.
pub trait Fixture: Send + 'static {
    type Broker: Broker;

    /// The broker, with at most `max_deliver()` deliveries and a short ack wait.
    fn broker(&self) -> impl Future<Output = Self::Broker> + Send;
    fn max_deliver(&self) -> u64;
    /// Publishes a raw message on a subject, as another program could.
    fn publish_raw(&self, subject: &str, payload: Vec<u8>) -> impl Future<Output = ()> + Send;
    fn dead_letters(&self, task: &str) -> impl Future<Output = Vec<DeadLetter>> + Send;
    /// Work items of `job` still stored.
    fn queued(&self, task: &str, job: &str) -> impl Future<Output = usize> + Send;
    /// Results of `job` still stored.
    fn stored_results(&self, job: &str) -> impl Future<Output = usize> + Send;
    /// Drops a delivery as a crashed worker would.
    fn abandon(&self, delivery: <Self::Broker as Broker>::Delivery);
}

struct Memory(MemoryBroker);

impl Memory {
    fn new() -> Self {
        Memory(
            MemoryBroker::new()
                .with_max_deliver(3)
                .with_ack_wait(Duration::from_secs(2))
                .with_max_payload(64 * 1024),
        )
    }
}

impl Fixture for Memory {
    type Broker = MemoryBroker;

    async fn broker(&self) -> MemoryBroker {
        self.0.clone()
    }

    fn max_deliver(&self) -> u64 {
        3
    }

    async fn publish_raw(&self, subject: &str, payload: Vec<u8>) {
        self.0.publish_raw(subject, payload);
    }

    async fn dead_letters(&self, task: &str) -> Vec<DeadLetter> {
        self.0
            .dead_letters()
            .into_iter()
            .filter(|(of, _)| of == task)
            .map(|(_, letter)| letter)
            .collect()
    }

    async fn queued(&self, task: &str, job: &str) -> usize {
        self.0
            .queued()
            .iter()
            .filter(|address| address.task == task && address.job == job)
            .count()
    }

    async fn stored_results(&self, job: &str) -> usize {
        self.0.stored_results(job)
    }

    fn abandon(&self, delivery: MemoryDelivery) {
        delivery.abandon();
    }
}

/// A real server per test, with a broker on it.
struct Nats {
    _server: server::Server,
    broker: NatsBroker,
}

impl Nats {
    /// `None` (said loudly by the harness) where no server can be had.
    async fn new() -> Option<Self> {
        let server = server::Server::start()?;
        let broker = NatsBroker::connect(&server.url())
            .await
            .expect("connecting to the test server")
            .with_max_deliver(3)
            .with_ack_wait(Duration::from_secs(2));
        Some(Nats {
            _server: server,
            broker,
        })
    }
}

impl Fixture for Nats {
    type Broker = NatsBroker;

    async fn broker(&self) -> NatsBroker {
        self.broker.clone()
    }

    fn max_deliver(&self) -> u64 {
        3
    }

    async fn publish_raw(&self, subject: &str, payload: Vec<u8>) {
        let client = self.broker.client();
        client
            .publish(subject.to_owned(), payload.into())
            .await
            .unwrap();
        client.flush().await.unwrap();
    }

    async fn dead_letters(&self, task: &str) -> Vec<DeadLetter> {
        self.broker.dead_letters(task).await.unwrap()
    }

    async fn queued(&self, task: &str, job: &str) -> usize {
        self.broker
            .count(WORK_STREAM, &format!("work.{task}.{job}.>"))
            .await
            .unwrap()
    }

    async fn stored_results(&self, job: &str) -> usize {
        self.broker
            .count(RESULTS_STREAM, &format!("results.{job}.>"))
            .await
            .unwrap()
    }

    fn abandon(&self, delivery: NatsDelivery) {
        delivery.abandon();
    }
}

/// Runs a server case on a multi-thread runtime of `FLOWGATE_TEST_WORKERS` workers
/// (default 2).
fn on_workers(case: impl Future<Output = ()>) {
    let workers = std::env::var("FLOWGATE_TEST_WORKERS")
        .ok()
        .and_then(|workers| workers.parse().ok())
        .unwrap_or(2);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
        .block_on(case);
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(start_paused = true)]
                async fn $case() {
                    super::suite::$case(super::Memory::new()).await;
                }
            )*
        }
        mod nats {
            $(
                #[test]
                fn $case() {
                    super::on_workers(async {
                        let Some(nats) = super::Nats::new().await else { return };
                        tokio::time::timeout(
                            std::time::Duration::from_secs(60),
                            super::suite::$case(nats),
                        )
                        .await
                        .expect("the case finishes within 60 s");
                    });
                }
            )*
        }
    };
}

conformance!(
    results_come_back_in_order_exactly_once,
    unordered_results_arrive_as_they_finish,
    at_most_limit_items_are_out,
    a_failing_item_is_an_error_in_its_position,
    an_item_over_the_maximum_size_is_an_error_naming_sizes,
    an_item_that_fails_to_encode_is_an_error_the_rest_go_on,
    a_malformed_message_is_dead_lettered,
    two_jobs_through_the_same_workers_get_their_own_results,
    a_crashed_delivery_is_delivered_again,
    an_item_every_worker_crashes_on_is_given_up,
    a_dropped_job_leaves_no_work_behind,
    a_job_cleans_up_when_it_ends,
    a_worker_stopping_finishes_its_items_and_leaves_the_rest,
);

/// Cases on the paused clock only (a minute and more of waiting).
mod memory_only {
    #[tokio::test(start_paused = true)]
    async fn a_job_without_workers_waits_and_says_so() {
        super::suite::a_job_without_workers_waits_and_says_so(super::Memory::new()).await;
    }
}
