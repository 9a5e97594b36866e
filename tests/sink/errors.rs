//! The writer's failures, `Ok(0)`, close and what is (not) written on drop.

use std::io;

use flowgate::sink::{self, Lines, WriteSink};
use futures::{SinkExt, StreamExt};

use crate::writers::{Event, Recorder};

#[tokio::test]
async fn a_writer_failing_mid_run_ends_forward_with_its_error() {
    // Accepts 7 bytes: "aa\nbb\n" and the "c" of "cc\n", then fails.
    let writer = Recorder::new().fail_at(7, io::ErrorKind::BrokenPipe, "disk on fire");
    let mut out = sink::lines(writer).buffer(1);
    let error = futures::stream::iter(["aa", "bb", "cc", "dd", "ee"])
        .map(Ok)
        .forward(&mut out)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    assert_eq!(error.to_string(), "disk on fire");
    // Whole items only: "cc" was cut short.
    assert_eq!(out.written(), 2);
    assert_eq!(out.get_ref().text(), "aa\nbb\nc");

    // Failed for good: every later call says so, with the first error's kind.
    let repeated = "the sink failed earlier and writes nothing more (disk on fire); 2 items \
                    were written";
    let later = out.send("ff").await.unwrap_err();
    assert_eq!(
        (later.kind(), later.to_string()),
        (io::ErrorKind::BrokenPipe, repeated.into())
    );
    let flush = SinkExt::<&str>::flush(&mut out).await.unwrap_err();
    assert_eq!(
        (flush.kind(), flush.to_string()),
        (io::ErrorKind::BrokenPipe, repeated.into())
    );
    let close = SinkExt::<&str>::close(&mut out).await.unwrap_err();
    assert_eq!(close.kind(), io::ErrorKind::BrokenPipe);
    assert_eq!(out.written(), 2);
    assert_eq!(
        out.get_ref().text(),
        "aa\nbb\nc",
        "nothing written after the failure"
    );
}

#[tokio::test]
async fn a_failing_flush_fails_the_sink() {
    let writer = Recorder::new().fail_flush(io::ErrorKind::StorageFull, "no space left");
    let mut out = sink::lines(writer);
    out.feed(1).await.unwrap();
    let error = SinkExt::<i32>::flush(&mut out).await.unwrap_err();
    assert_eq!(
        (error.kind(), error.to_string().as_str()),
        (io::ErrorKind::StorageFull, "no space left")
    );
    // The bytes reached the writer before its flush failed.
    assert_eq!(out.written(), 1);
    let later = out.feed(2).await.unwrap_err();
    assert_eq!(later.kind(), io::ErrorKind::StorageFull);
    assert!(
        later.to_string().ends_with("1 items were written"),
        "{later}"
    );
}

#[tokio::test]
async fn a_writer_that_accepts_nothing_is_write_zero() {
    let mut out = sink::lines(Recorder::new().accepts_nothing());
    let error = out.send("lost").await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::WriteZero);
    assert_eq!(
        error.to_string(),
        "the writer accepted none of the 5 bytes it was offered"
    );
    assert_eq!(out.written(), 0);
    assert_eq!(out.get_ref().offered, [5], "asked once, not in a loop");
    let later = out.send("more").await.unwrap_err();
    assert_eq!(later.kind(), io::ErrorKind::WriteZero);
}

#[tokio::test]
async fn close_writes_flushes_then_shuts_down_once() {
    let mut out = sink::lines(Recorder::new());
    out.feed("one").await.unwrap();
    out.feed("two").await.unwrap();
    assert!(out.get_ref().events.is_empty());
    SinkExt::<&str>::close(&mut out).await.unwrap();
    assert_eq!(
        out.get_ref().events,
        [Event::Write(8), Event::Flush, Event::Shutdown]
    );
    assert_eq!(out.written(), 2);

    // Closing again does nothing; a closed sink refuses items.
    SinkExt::<&str>::close(&mut out).await.unwrap();
    SinkExt::<&str>::flush(&mut out).await.unwrap();
    assert_eq!(out.get_ref().events.len(), 3);
    let refused = out.feed("three").await.unwrap_err();
    assert_eq!(
        refused.to_string(),
        "the sink was closed and takes no more items"
    );
    assert_eq!(out.written(), 2);
}

#[tokio::test]
async fn into_inner_does_not_write_the_buffer() {
    let mut out = sink::lines(Recorder::new());
    out.feed("buffered").await.unwrap();
    let writer = out.into_inner();
    assert!(writer.events.is_empty());
}

#[test]
#[should_panic(expected = "`buffer` needs a size of at least 1 byte on a `WriteSink`, got 0")]
fn a_zero_buffer_panics_naming_buffer() {
    let _ = sink::lines::<u32, _>(Vec::new()).buffer(0);
}

#[test]
fn sinks_are_send_and_unpin_when_their_parts_are() {
    fn is_send<T: Send>() {}
    fn is_unpin<T: Unpin>() {}
    is_send::<WriteSink<tokio::fs::File, Lines<std::rc::Rc<u32>>>>();
    is_unpin::<WriteSink<tokio::fs::File, Lines<std::rc::Rc<u32>>>>();
    let encoder = |n: &u32, out: &mut Vec<u8>| {
        out.extend_from_slice(&n.to_le_bytes());
        Ok(())
    };
    fn send_of<T: Send + Unpin>(_: &T) {}
    send_of(&sink::encoded(tokio::io::stdout(), encoder));
}
