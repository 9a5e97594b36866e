//! A channel as the source, forwarded into a sink.

use futures::StreamExt;

use flowgate::sink;

use crate::writers::{Event, Recorder};

#[tokio::test]
async fn a_receiver_whose_senders_are_gone_ends_the_run_cleanly() {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let producer = tokio::spawn(async move {
        for i in 0..100u32 {
            tx.send(i).await.unwrap();
        }
        // `tx` is dropped here: the receiver ends once it is drained.
    });
    let received = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut out = sink::lines(Recorder::new()).buffer(16);
    received.map(Ok).forward(&mut out).await.unwrap();
    producer.await.unwrap();

    assert_eq!(out.written(), 100);
    let expected: String = (0..100).map(|i| format!("{i}\n")).collect();
    assert_eq!(out.get_ref().text(), expected);
    let events = &out.get_ref().events;
    assert_eq!(events[events.len() - 2..], [Event::Flush, Event::Shutdown]);
}
