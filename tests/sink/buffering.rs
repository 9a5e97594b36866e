//! Bounded buffering, partial writes and pending writers.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use flowgate::sink::{self, WriteSink};
use futures::{Sink, SinkExt, StreamExt};
use tokio_test::{assert_pending, assert_ready_ok, task};

use crate::writers::{Event, Recorder};

#[tokio::test]
async fn the_buffer_holds_at_most_its_size_minus_one_plus_one_item() {
    let mut out = sink::lines(Recorder::new()).buffer(10);
    // Encodings of 2, 3, 4 and 5 bytes: the buffer reaches 2, 5, 9 and then 14, as 9 is
    // below 10 when "dddd" is sent. Nothing is written meanwhile.
    for word in ["a", "bb", "ccc", "dddd"] {
        out.feed(word).await.unwrap();
        assert!(out.get_ref().offered.is_empty(), "written before full");
        assert_eq!(out.written(), 0);
    }
    // 14 >= 10: written out (14 = 10 - 1 + 5, the bound met exactly) before "eeeee".
    out.feed("eeeee").await.unwrap();
    assert_eq!(out.get_ref().offered, [14]);
    assert_eq!(out.written(), 4);
    out.feed("ffffff").await.unwrap(); // 6 + 7 = 13
    out.feed("g").await.unwrap(); // 13 >= 10: written out first
    assert_eq!(out.get_ref().offered, [14, 13]);
    out.close().await.unwrap();
    assert_eq!(out.get_ref().offered, [14, 13, 2]);
    assert_eq!(out.written(), 7);
    assert_eq!(out.get_ref().text(), "a\nbb\nccc\ndddd\neeeee\nffffff\ng\n");
}

#[tokio::test]
async fn the_bound_holds_over_a_long_run() {
    let words: Vec<String> = (0..500).map(|i| "x".repeat(i * 7 % 23)).collect();
    let longest = words.iter().map(|w| w.len() + 1).max().unwrap();
    let mut out = sink::lines(Recorder::new()).buffer(32);
    futures::stream::iter(words.clone())
        .map(Ok)
        .forward(&mut out)
        .await
        .unwrap();
    let writer = out.get_ref();
    assert!(writer.max_offered() <= 32 - 1 + longest);
    // The stream was never pending, so only the close wrote a buffer that was not full.
    let (last, full) = writer.offered.split_last().unwrap();
    assert!(full.iter().all(|&offered| offered >= 32), "{full:?}");
    assert!(*last <= 32 - 1 + longest);
    assert_eq!(out.written(), 500);
    let expected: String = words.iter().map(|w| format!("{w}\n")).collect();
    assert_eq!(out.get_ref().text(), expected);
}

#[tokio::test]
async fn nothing_is_written_before_the_buffer_fills_or_a_flush() {
    let mut out = sink::lines(Recorder::new());
    for i in 0..100 {
        out.feed(i).await.unwrap();
    }
    assert!(out.get_ref().events.is_empty());
    out.flush().await.unwrap();
    assert_eq!(out.get_ref().events, [Event::Write(290), Event::Flush]);
    assert_eq!(out.written(), 100);
    // A flush with nothing buffered still flushes the writer.
    out.flush().await.unwrap();
    assert_eq!(out.get_ref().events.last(), Some(&Event::Flush));
}

fn poll_flush<E>(out: &mut WriteSink<Recorder, E>) -> Poll<std::io::Result<()>>
where
    WriteSink<Recorder, E>: Sink<&'static str, Error = std::io::Error>,
{
    let mut cx = Context::from_waker(Waker::noop());
    Sink::<&'static str>::poll_flush(Pin::new(out), &mut cx)
}

#[tokio::test]
async fn partial_writes_keep_order_and_count_whole_items_only() {
    let mut out = sink::lines(Recorder::new().per_call(3).gated());
    for word in ["hello", "a", "", "world!"] {
        out.feed(word).await.unwrap();
    }
    // "hello\n" "a\n" "\n" "world!\n", three bytes a call, one call at a time.
    assert!(poll_flush(&mut out).is_pending());
    let steps = [
        ("hel", 0),
        ("hello\n", 1),
        ("hello\na\n\n", 3), // "a" and the empty line end in the same write
        ("hello\na\n\nwor", 3),
        ("hello\na\n\nworld!", 3),
    ];
    for (text, written) in steps {
        out.get_mut().grant(1);
        assert!(poll_flush(&mut out).is_pending());
        assert_eq!((out.get_ref().text(), out.written()), (text, written));
    }
    out.get_mut().grant(1);
    assert!(matches!(poll_flush(&mut out), Poll::Ready(Ok(()))));
    assert_eq!(out.get_ref().text(), "hello\na\n\nworld!\n");
    assert_eq!(out.written(), 4);
    assert_eq!(out.get_ref().offered, [16, 13, 10, 7, 4, 1]);
    assert_eq!(out.get_ref().events.last(), Some(&Event::Flush));
}

#[tokio::test]
async fn a_writer_that_waits_wakes_the_sink_s_task() {
    let mut out = sink::lines(Recorder::new().gated()).buffer(1);
    out.feed(1).await.unwrap();
    // The buffer is full: `poll_ready` for the next item must write it, and waits.
    let mut waiting = task::spawn(());
    let ready = waiting.enter(|cx, _| Sink::<i32>::poll_ready(Pin::new(&mut out), cx));
    assert!(ready.is_pending());
    assert!(!waiting.is_woken());
    out.get_mut().grant(1);
    assert!(waiting.is_woken());
    let ready = waiting.enter(|cx, _| Sink::<i32>::poll_ready(Pin::new(&mut out), cx));
    assert!(matches!(ready, Poll::Ready(Ok(()))));
    assert_eq!(out.written(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_pending_writer_wakes_the_sink_when_it_can_write() {
    let writer = tokio_test::io::Builder::new()
        .wait(Duration::from_secs(1))
        .write(b"1\n2\n")
        .wait(Duration::from_secs(1))
        .write(b"3\n")
        .build();
    let mut out = sink::lines(writer).buffer(4);
    out.feed(1).await.unwrap();
    out.feed(2).await.unwrap();

    // 4 bytes buffered: the next item waits until the writer takes them.
    let mut feed = task::spawn(out.feed(3));
    assert_pending!(feed.poll());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(feed.is_woken());
    assert_ready_ok!(feed.poll());
    drop(feed);
    assert_eq!(out.written(), 2);

    let mut close = task::spawn(out.close());
    assert_pending!(close.poll());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(close.is_woken());
    assert_ready_ok!(close.poll());
    drop(close);
    assert_eq!(out.written(), 3);
}
