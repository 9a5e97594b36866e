//! The `tracing` feature: a span per stage, a span per job poll under it, and events for
//! failures and retries, seen by a small recording subscriber.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::prelude::*;
use flowgate::Retry;
use futures::StreamExt;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// What the subscriber saw: spans (name, fields, parent's name) and events (message
/// and fields, the span they happened in).
#[derive(Default)]
struct Seen {
    spans: Vec<(String, String, Option<String>)>,
    events: Vec<(String, Option<String>)>,
    /// The spans entered, per thread.
    current: std::collections::HashMap<std::thread::ThreadId, Vec<u64>>,
}

#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Seen>>,
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl Recorder {
    fn span_name(seen: &Seen, id: u64) -> Option<String> {
        seen.spans.get(id as usize - 1).map(|span| span.0.clone())
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut fields = Fields(String::new());
        attrs.record(&mut fields);
        // Ids are places in `spans`: given under the lock, spans from several threads
        // keep their places.
        let mut seen = self.seen.lock().unwrap();
        let id = seen.spans.len() as u64 + 1;
        let parent = match attrs.parent() {
            Some(parent) => Self::span_name(&seen, parent.into_u64()),
            None if attrs.is_contextual() => seen
                .current
                .get(&std::thread::current().id())
                .and_then(|stack| stack.last())
                .and_then(|&id| Self::span_name(&seen, id)),
            None => None,
        };
        seen.spans
            .push((attrs.metadata().name().to_owned(), fields.0, parent));
        Id::from_u64(id)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let mut seen = self.seen.lock().unwrap();
        let within = seen
            .current
            .get(&std::thread::current().id())
            .and_then(|stack| stack.last())
            .and_then(|&id| Self::span_name(&seen, id));
        seen.events.push((fields.0, within));
    }

    fn enter(&self, span: &Id) {
        let thread = std::thread::current().id();
        let mut seen = self.seen.lock().unwrap();
        seen.current
            .entry(thread)
            .or_default()
            .push(span.into_u64());
    }

    fn exit(&self, _: &Id) {
        let thread = std::thread::current().id();
        let mut seen = self.seen.lock().unwrap();
        seen.current.entry(thread).or_default().pop();
    }
}

#[test]
fn stages_jobs_failures_and_retries_are_traced() {
    let recorder = Recorder::default();
    let seen = Arc::clone(&recorder.seen);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    tracing::subscriber::with_default(recorder, || {
        runtime.block_on(async {
            let out: Vec<_> = flowgate::source::iter((0..4u64).map(Ok::<u64, String>))
                .try_map_concurrent(2, |i| async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    if i == 2 {
                        Err("two".to_owned())
                    } else {
                        Ok(i)
                    }
                })
                .named("fetch")
                .with_retry(Retry::attempts(2))
                .keep_going()
                .collect()
                .await;
            assert_eq!(out.iter().filter(|r| r.is_err()).count(), 1);
        })
    });
    let seen = seen.lock().unwrap();
    let stages: Vec<_> = seen
        .spans
        .iter()
        .filter(|span| span.0 == "flowgate.stage")
        .collect();
    assert_eq!(stages.len(), 1, "{:?}", seen.spans);
    assert!(stages[0].1.contains("stage=\"fetch\""), "{:?}", stages[0]);
    assert!(
        stages[0].1.contains("operator=\"try_map_concurrent\""),
        "{:?}",
        stages[0]
    );
    assert!(stages[0].1.contains("limit=2"), "{:?}", stages[0]);
    // Every poll of every job (two polls each: before and after its sleep; five
    // attempts, item 2 twice).
    let jobs = job_spans(&seen, 10);
    assert!(jobs.iter().any(|job| job.1.contains("position=2")));
    let retries: Vec<_> = seen
        .events
        .iter()
        .filter(|event| event.0.contains("retrying"))
        .collect();
    assert_eq!(retries.len(), 1, "{:?}", seen.events);
    assert!(retries[0].0.contains("position=2"), "{:?}", retries[0]);
    let failures: Vec<_> = seen
        .events
        .iter()
        .filter(|event| event.0.contains("an item failed"))
        .collect();
    assert_eq!(failures.len(), 1, "{:?}", seen.events);
    let failure = failures[0];
    assert!(failure.0.contains("position=2"), "{failure:?}");
    assert!(failure.0.contains("kind=\"error\""), "{failure:?}");
    assert!(failure.0.contains("attempts=2"), "{failure:?}");
    assert_eq!(failure.1.as_deref(), Some("flowgate.stage"), "{failure:?}");
}

#[test]
fn blocking_jobs_are_traced_under_their_stage() {
    let recorder = Recorder::default();
    let seen = Arc::clone(&recorder.seen);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dispatch = tracing::Dispatch::new(recorder);
    tracing::dispatcher::with_default(&dispatch, || {
        runtime.block_on(async {
            let out: Vec<u64> = flowgate::source::iter(0..5u64)
                .par_map(2, |i| i + 1)
                .named("add")
                .collect()
                .await;
            assert_eq!(out, [1, 2, 3, 4, 5]);
        })
    });
    drop(runtime);
    let seen = seen.lock().unwrap();
    job_spans(&seen, 5);
}

/// The `flowgate.job` spans seen, checked to be `count`, each under a stage's span.
fn job_spans(seen: &Seen, count: usize) -> Vec<&(String, String, Option<String>)> {
    let jobs: Vec<_> = seen
        .spans
        .iter()
        .filter(|span| span.0 == "flowgate.job")
        .collect();
    assert_eq!(jobs.len(), count, "{:?}", seen.spans);
    assert!(jobs
        .iter()
        .all(|job| job.2.as_deref() == Some("flowgate.stage")));
    jobs
}
