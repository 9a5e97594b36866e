//! Integration tests of the chunking operators, through the public API only.

mod props;
mod weighted;
mod within;

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use flowgate::chunk::{ChunksWeighted, ChunksWithin};
use flowgate::source::Iter;
use futures::Stream;

/// Counts the items handed out by a generator: a pull is a poll that returned an item.
#[derive(Clone, Default)]
struct Pulls(Arc<AtomicUsize>);

impl Pulls {
    fn record(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Wraps a stream and panics if it is polled again after it returned `None`, so a test
/// proves that an operator never polls an ended upstream.
struct PanicAfterEnd<S> {
    inner: S,
    ended: bool,
}

impl<S> PanicAfterEnd<S> {
    fn new(inner: S) -> Self {
        PanicAfterEnd {
            inner,
            ended: false,
        }
    }
}

impl<S: Stream + Unpin> Stream for PanicAfterEnd<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        assert!(!self.ended, "upstream polled after it ended");
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(None) = next {
            self.ended = true;
        }
        next
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

fn is_send<T: Send>() {}
fn is_sync<T: Sync>() {}
fn is_unpin<T: Unpin>() {}
fn is_send_val<T: Send>(_: &T) {}
fn is_unpin_val<T: Unpin>(_: &T) {}

/// A type-erased `Send` stream.
type Boxed = Pin<Box<dyn Stream<Item = u32> + Send>>;

#[test]
fn stream_types_are_send_and_unpin_when_their_parts_are() {
    type Source = Iter<std::vec::IntoIter<u32>>;
    is_send::<Source>();
    is_sync::<Source>();
    is_unpin::<Source>();
    is_send::<ChunksWithin<Source>>();
    is_sync::<ChunksWithin<Source>>();
    is_unpin::<ChunksWithin<Source>>();
    is_send::<ChunksWithin<Boxed>>();
    is_send::<ChunksWeighted<Source, fn(&u32) -> usize>>();
    is_unpin::<ChunksWeighted<Source, fn(&u32) -> usize>>();
    is_send::<ChunksWeighted<Boxed, fn(&u32) -> usize>>();

    use flowgate::prelude::*;
    let factor = 2;
    let weighted =
        flowgate::source::iter(vec![1u32]).chunks_weighted(4, move |x| *x as usize * factor);
    is_send_val(&weighted);
    is_unpin_val(&weighted);
    // A generator is not `Unpin`; the operator is `Send` all the same.
    let generated = stream! { yield 1u32; };
    let within = generated.chunks_within(4, std::time::Duration::from_secs(1));
    is_send_val(&within);
}
