//! What reaches the writer: lines of `Display` types, and a user's encoder.

use std::fmt;
use std::io::{self, Write};

use flowgate::sink;
use futures::{SinkExt, StreamExt};

use crate::writers::Recorder;

struct Point(i32, i32);

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.0, self.1)
    }
}

/// The output of a lines sink fed `items` one by one, then closed.
async fn lines_of<T: fmt::Display>(items: Vec<T>) -> String {
    let count = items.len() as u64;
    let mut out = sink::lines(Recorder::new());
    for item in items {
        out.feed(item).await.unwrap();
    }
    assert_eq!(out.written(), 0, "nothing written before a flush");
    out.close().await.unwrap();
    assert_eq!(out.written(), count);
    String::from_utf8(out.into_inner().out).unwrap()
}

#[tokio::test]
async fn lines_of_several_display_types() {
    assert_eq!(lines_of(vec![42, -7, 0]).await, "42\n-7\n0\n");
    assert_eq!(lines_of(vec![-1.5, 2.0]).await, "-1.5\n2\n");
    assert_eq!(lines_of(vec!["text", ""]).await, "text\n\n");
    assert_eq!(lines_of(vec![String::from("owned")]).await, "owned\n");
    assert_eq!(lines_of(vec!['c', 'é']).await, "c\né\n");
    assert_eq!(lines_of(vec![true]).await, "true\n");
    assert_eq!(lines_of(vec![Point(1, -2)]).await, "(1, -2)\n");
    assert_eq!(lines_of(Vec::<u8>::new()).await, "");
    // Several types through one sink, as trait objects.
    let mixed: Vec<Box<dyn fmt::Display>> =
        vec![Box::new(1), Box::new("two"), Box::new(Point(3, 3))];
    assert_eq!(lines_of(mixed).await, "1\ntwo\n(3, 3)\n");
}

#[tokio::test]
async fn forward_writes_every_item_and_closes() {
    let mut out = sink::lines(Vec::new());
    futures::stream::iter(0..5u8)
        .map(Ok)
        .forward(&mut out)
        .await
        .unwrap();
    assert_eq!(out.written(), 5);
    assert_eq!(out.into_inner(), b"0\n1\n2\n3\n4\n");
}

#[derive(Debug)]
struct Row {
    name: &'static str,
    quantity: i64,
}

fn row(name: &'static str, quantity: i64) -> Row {
    Row { name, quantity }
}

/// A CSV-like encoder that writes the name before it checks the quantity, so a failing
/// row leaves partial bytes for the sink to remove.
fn csv(row: &Row, out: &mut Vec<u8>) -> io::Result<()> {
    write!(out, "{},", row.name)?;
    if row.quantity < 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("negative quantity {} for {}", row.quantity, row.name),
        ));
    }
    writeln!(out, "{}", row.quantity)
}

#[tokio::test]
async fn an_encoder_writes_any_format() {
    let mut out = sink::encoded(Recorder::new(), csv);
    let rows = [row("apples", 3), row("pears", 5)];
    futures::stream::iter(rows)
        .map(Ok)
        .forward(&mut out)
        .await
        .unwrap();
    assert_eq!(out.get_ref().text(), "apples,3\npears,5\n");
    assert_eq!(out.written(), 2);

    // The closure's types are inferred from the stream it is fed.
    let mut out = sink::encoded(Vec::new(), |item, out| writeln!(out, "{item:?}"));
    futures::stream::iter([Some(1), None])
        .map(Ok)
        .forward(&mut out)
        .await
        .unwrap();
    assert_eq!(out.get_ref(), b"Some(1)\nNone\n");
}

#[tokio::test]
async fn an_encoder_error_ends_the_run_and_leaves_no_partial_bytes() {
    // 8 bytes: "a,1\nb,2\n" fills the buffer, so it is written before "c,3\n" is sent.
    let mut out = sink::encoded(Recorder::new(), csv).buffer(8);
    let rows = [
        row("a", 1),
        row("b", 2),
        row("c", 3),
        row("d", -4),
        row("e", 5),
    ];
    let error = futures::stream::iter(rows)
        .map(Ok)
        .forward(&mut out)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    assert_eq!(error.to_string(), "negative quantity -4 for d");
    assert_eq!(out.written(), 2);
    assert_eq!(out.get_ref().text(), "a,1\nb,2\n");

    // The writer did not fail: closing writes the row sent before the failing one, and
    // nothing of the failing row ("d,").
    out.close().await.unwrap();
    assert_eq!(out.written(), 3);
    assert_eq!(out.get_ref().text(), "a,1\nb,2\nc,3\n");
}

/// A `Display` that fails after writing part of its form.
struct Broken;

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("half")?;
        Err(fmt::Error)
    }
}

#[tokio::test]
async fn a_failing_display_fails_its_item_only() {
    let mut out = sink::lines(Vec::new());
    out.feed(Box::new("before") as Box<dyn fmt::Display>)
        .await
        .unwrap();
    let error = out.feed(Box::new(Broken)).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::Other);
    assert_eq!(
        error.to_string(),
        "an item's `Display` implementation returned an error"
    );
    out.feed(Box::new("after")).await.unwrap();
    out.close().await.unwrap();
    assert_eq!(out.written(), 2);
    assert_eq!(out.get_ref(), b"before\nafter\n");
}
