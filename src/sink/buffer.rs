//! [`Buffer`]: encoded items waiting for the writer, and where each of them ends.

use std::collections::VecDeque;
use std::io;

/// The bytes of encoded items the writer has not accepted yet, with the item boundaries
/// that make [`written`](Buffer::written) exact whatever sizes the writer accepts.
///
/// Positions are counted over the whole output (`accepted` is the number of bytes the
/// writer has taken so far), so moving the unwritten bytes to the front of `bytes`
/// never touches the boundaries.
#[derive(Debug, Default)]
pub(super) struct Buffer {
    /// `bytes[start..]` waits for the writer; `bytes[..start]` was accepted already and
    /// is dropped before the next item is encoded.
    bytes: Vec<u8>,
    start: usize,
    /// Bytes the writer has accepted, over the whole output.
    accepted: u64,
    /// `(end, items)`: `items` items end at output position `end`. Ends are strictly
    /// increasing and above `accepted`, so there is at most one entry per unwritten byte
    /// (items that encode to nothing share their predecessor's entry).
    ends: VecDeque<(u64, u64)>,
    /// Items whose every byte the writer has accepted.
    written: u64,
}

impl Buffer {
    /// Bytes encoded and not yet accepted by the writer.
    pub(super) fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes to offer the writer next.
    pub(super) fn unwritten(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    /// Items whose every byte the writer has accepted.
    pub(super) fn written(&self) -> u64 {
        self.written
    }

    /// Appends one item with `encode`, which appends its bytes to the vector it is given.
    /// On an error the bytes `encode` appended are removed: the buffer is as before and
    /// the item does not count.
    ///
    /// # Panics
    /// Panics if `encode` removed bytes it had not appended.
    pub(super) fn push_item(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        // Drop the accepted prefix first, so the vector holds only what still waits.
        self.bytes.drain(..self.start);
        self.start = 0;
        let before = self.bytes.len();
        let encoded = encode(&mut self.bytes);
        assert!(
            self.bytes.len() >= before,
            "flowgate: a sink's encoder removed bytes it had not appended (the buffer held \
             {before} bytes, the encoder left {}); an encoder must only append",
            self.bytes.len()
        );
        if let Err(error) = encoded {
            self.bytes.truncate(before);
            return Err(error);
        }
        let end = self.accepted + self.bytes.len() as u64;
        match self.ends.back_mut() {
            Some((last, items)) if *last == end => *items += 1,
            _ => self.ends.push_back((end, 1)),
        }
        // An item that encodes to nothing behind fully written bytes is written at once.
        self.count_written();
        Ok(())
    }

    /// Records that the writer accepted the first `n` unwritten bytes.
    ///
    /// # Panics
    /// Panics if `n` is more than the writer was offered.
    pub(super) fn advance(&mut self, n: usize) {
        assert!(
            n <= self.len(),
            "flowgate: a writer reported writing {n} bytes of the {} it was offered",
            self.len()
        );
        self.start += n;
        self.accepted += n as u64;
        if self.start == self.bytes.len() {
            self.bytes.clear();
            self.start = 0;
        }
        self.count_written();
    }

    /// Forgets the unwritten bytes and their items, which are then never written (after
    /// a failure of the writer). Frees the memory they held.
    pub(super) fn discard(&mut self) {
        self.bytes = Vec::new();
        self.start = 0;
        self.ends = VecDeque::new();
    }

    fn count_written(&mut self) {
        while let Some(&(end, items)) = self.ends.front() {
            if end > self.accepted {
                break;
            }
            self.written += items;
            self.ends.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn push(buffer: &mut Buffer, text: &str) {
        buffer
            .push_item(|out| out.write_all(text.as_bytes()))
            .unwrap();
    }

    #[test]
    fn items_count_once_their_last_byte_is_accepted() {
        let mut buffer = Buffer::default();
        push(&mut buffer, "ab");
        push(&mut buffer, "cde");
        assert_eq!((buffer.len(), buffer.written()), (5, 0));
        buffer.advance(1);
        assert_eq!((buffer.unwritten(), buffer.written()), (&b"bcde"[..], 0));
        buffer.advance(1);
        assert_eq!((buffer.unwritten(), buffer.written()), (&b"cde"[..], 1));
        buffer.advance(2);
        assert_eq!(buffer.written(), 1);
        buffer.advance(1);
        assert_eq!((buffer.len(), buffer.written()), (0, 2));
        assert!(buffer.ends.is_empty());
    }

    #[test]
    fn empty_items_count_in_order() {
        let mut buffer = Buffer::default();
        // Nothing waits: an empty item is written at once.
        push(&mut buffer, "");
        assert_eq!(buffer.written(), 1);
        push(&mut buffer, "ab");
        push(&mut buffer, "");
        push(&mut buffer, "");
        // Empty items behind unwritten bytes wait for them, and share one entry.
        assert_eq!(buffer.written(), 1);
        assert_eq!(buffer.ends.len(), 1);
        buffer.advance(1);
        assert_eq!(buffer.written(), 1);
        buffer.advance(1);
        assert_eq!(buffer.written(), 4);
    }

    #[test]
    fn the_accepted_prefix_is_dropped_before_the_next_item() {
        let mut buffer = Buffer::default();
        push(&mut buffer, "abcd");
        buffer.advance(3);
        assert_eq!(buffer.bytes.len(), 4);
        push(&mut buffer, "ef");
        assert_eq!(buffer.bytes, b"def");
        assert_eq!(buffer.unwritten(), b"def");
        buffer.advance(1);
        assert_eq!(buffer.written(), 1);
        buffer.advance(2);
        assert_eq!(buffer.written(), 2);
        assert!(buffer.bytes.is_empty());
    }

    #[test]
    fn a_failed_encoding_leaves_no_bytes_and_no_item() {
        let mut buffer = Buffer::default();
        push(&mut buffer, "ok\n");
        let error = buffer
            .push_item(|out| {
                out.write_all(b"half")?;
                Err(io::Error::new(io::ErrorKind::InvalidData, "bad item"))
            })
            .unwrap_err();
        assert_eq!(error.to_string(), "bad item");
        assert_eq!(buffer.unwritten(), b"ok\n");
        buffer.advance(3);
        assert_eq!(buffer.written(), 1);
        assert!(buffer.ends.is_empty());
    }

    #[test]
    fn discard_forgets_unwritten_items() {
        let mut buffer = Buffer::default();
        push(&mut buffer, "ab");
        push(&mut buffer, "cd");
        buffer.advance(3);
        buffer.discard();
        assert_eq!((buffer.len(), buffer.written()), (0, 1));
        assert!(buffer.ends.is_empty());
    }

    #[test]
    #[should_panic(expected = "an encoder must only append")]
    fn an_encoder_that_removes_bytes_panics() {
        let mut buffer = Buffer::default();
        push(&mut buffer, "ab");
        let _ = buffer.push_item(|out| {
            out.clear();
            Ok(())
        });
    }

    #[test]
    #[should_panic(expected = "reported writing 3 bytes of the 2 it was offered")]
    fn a_writer_that_accepts_more_than_offered_panics() {
        let mut buffer = Buffer::default();
        push(&mut buffer, "ab");
        buffer.advance(3);
    }
}
