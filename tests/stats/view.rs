//! The pipeline view: which stage holds a run back, and the table it prints.

use flowgate::prelude::*;
use flowgate::stats::{Bottleneck, Pipeline};
use futures::StreamExt;

use super::{ms, sleep};

/// Three stages of `map_concurrent`, with jobs of `a`, `b` and `c` ms, and a consumer
/// that works `consumer` ms per item; returns the view's sample over the whole run.
async fn three_stages(
    source_wait: u64,
    (a, b, c): (u64, u64, u64),
    consumer: u64,
) -> flowgate::stats::PipelineSample {
    let source = flowgate::source::iter(0..100u64).then(move |i| async move {
        sleep(source_wait).await;
        i
    });
    let first = source
        .map_concurrent(4, move |i| async move {
            sleep(a).await;
            i
        })
        .named("first");
    let first_stats = first.stats();
    let second = first
        .map_concurrent(4, move |i| async move {
            sleep(b).await;
            i
        })
        .named("second");
    let second_stats = second.stats();
    let third = second
        .map_concurrent(4, move |i| async move {
            sleep(c).await;
            i
        })
        .named("third");
    let third_stats = third.stats();
    let mut view = Pipeline::new()
        .stage(&first_stats)
        .stage(&second_stats)
        .stage(&third_stats);
    let mut third = Box::pin(third);
    let mut count = 0;
    while third.next().await.is_some() {
        count += 1;
        sleep(consumer).await;
    }
    assert_eq!(count, 100);
    view.sample()
}

#[tokio::test(start_paused = true)]
async fn a_slow_middle_stage_is_the_bottleneck() {
    let sample = three_stages(0, (1, 40, 1), 0).await;
    assert_eq!(
        sample.bottleneck,
        Bottleneck::Stage {
            index: 1,
            name: "second".into()
        },
        "\n{sample}"
    );
    let [first, second, third] = &sample.stages[..] else {
        unreachable!()
    };
    // Before it, results wait for it; after it, the stage waits for it.
    assert!(first.interval.backpressured_ratio() > 0.9, "\n{sample}");
    assert!(second.interval.busy_ratio() > 0.99, "\n{sample}");
    assert!(third.interval.starved_ratio() > 0.9, "\n{sample}");
    assert!(second.limiting_ratio() > 0.95, "\n{sample}");
}

#[tokio::test(start_paused = true)]
async fn a_slow_consumer_is_the_bottleneck() {
    let sample = three_stages(0, (1, 1, 1), 20).await;
    assert_eq!(sample.bottleneck, Bottleneck::Consumer, "\n{sample}");
    let third = &sample.stages[2];
    assert!(third.interval.backpressured_ratio() > 0.9, "\n{sample}");
}

#[tokio::test(start_paused = true)]
async fn a_slow_source_is_the_bottleneck() {
    let sample = three_stages(20, (1, 1, 1), 0).await;
    assert_eq!(sample.bottleneck, Bottleneck::Source, "\n{sample}");
    assert!(
        sample.stages[0].interval.starved_ratio() > 0.9,
        "\n{sample}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_last_stage_can_be_the_bottleneck() {
    let sample = three_stages(0, (1, 1, 40), 0).await;
    assert_eq!(
        sample.bottleneck,
        Bottleneck::Stage {
            index: 2,
            name: "third".into()
        },
        "\n{sample}"
    );
}

#[tokio::test(start_paused = true)]
async fn samples_cover_the_interval_since_the_last_one() {
    let flow = flowgate::source::iter(0..20u64)
        .map_concurrent(2, |i| async move {
            sleep(10).await;
            i
        })
        .named("steady");
    let stats = flow.stats();
    let mut view = Pipeline::new().stage(&stats);
    let run = tokio::spawn(flow.count());
    sleep(45).await;
    let first = view.sample();
    sleep(50).await;
    let second = view.sample();
    assert_eq!(run.await.unwrap(), 20);
    // Two jobs every 10 ms: 8 items by 45 ms, then 10 items in 50 ms (200 items/s).
    let (first, second) = (&first.stages[0], &second.stages[0]);
    assert_eq!(first.interval.yielded_count, 8);
    assert_eq!(first.interval.total_busy_duration, ms(45));
    assert_eq!(second.interval.elapsed, ms(50));
    assert_eq!(second.interval.yielded_count, 10);
    assert_eq!(second.interval.yielded_per_sec(), 200.0);
    assert_eq!(second.interval.total_busy_duration, ms(50));
    assert_eq!(second.total.yielded_count, 18);
    // The totals do not move the interval.
    let totals = view.totals();
    assert_eq!(totals.stages[0].interval.elapsed, ms(100));
    assert_eq!(view.sample().stages[0].interval.yielded_count, 2);
}

#[tokio::test(start_paused = true)]
async fn the_table_names_every_stage_and_the_bottleneck() {
    let sample = three_stages(0, (1, 40, 1), 0).await;
    let table = sample.to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(lines[0].starts_with("stage"), "{table}");
    for (line, name) in lines[1..4].iter().zip(["first", "second", "third"]) {
        assert!(line.starts_with(name), "{table}");
        assert!(line.contains(" 100 "), "{table}");
    }
    assert_eq!(lines[4], "bottleneck: stage `second`");
}

#[tokio::test(start_paused = true)]
async fn a_view_streams_samples_until_every_stage_ended() {
    let flow = flowgate::source::iter(0..10u64)
        .map_concurrent(1, |i| async move {
            sleep(100).await;
            i
        })
        .named("slow");
    let view = Pipeline::new().stage(&flow.stats());
    let samples = tokio::spawn(view.every(ms(320)).collect::<Vec<_>>());
    assert_eq!(flow.count().await, 10);
    let samples = samples.await.unwrap();
    // At 320, 640, 960 and 1280 ms (ended at 1000 ms).
    let yielded: Vec<u64> = samples
        .iter()
        .map(|s| s.stages[0].interval.yielded_count)
        .collect();
    assert_eq!(yielded, [3, 3, 3, 1]);
    assert!(samples.last().unwrap().stages[0].total.ended);
}

#[test]
fn an_empty_view_has_no_bottleneck() {
    let sample = Pipeline::new().sample();
    assert_eq!(sample.bottleneck, Bottleneck::None);
    assert_eq!(sample.stages.len(), 0);
}
