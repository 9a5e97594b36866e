//! [`Encode`]: how a [`WriteSink`](super::WriteSink) turns an item into bytes.

use std::fmt::{self, Display};
use std::io;
use std::marker::PhantomData;

/// Turns an item into bytes for a [`WriteSink`](super::WriteSink): appends the item's
/// encoding to the sink's buffer.
///
/// Implemented by [`Lines`] (an item's `Display` form and `\n`) and by every closure
/// `FnMut(&T, &mut Vec<u8>) -> io::Result<()>`, as [`encoded`](super::encoded) takes
/// them. Implement it for a type of your own when the encoder has a name or state worth
/// keeping (a CSV header written once, a serializer's settings) and pass it to
/// [`WriteSink::new`](super::WriteSink::new).
///
/// # Contract
///
/// `encode` may only **append** to `out`: the vector also holds earlier items that the
/// writer has not taken yet. On an error the sink removes whatever `encode` appended, so
/// a failed item leaves no partial bytes behind; the error is the sink's error for that
/// item. Removing bytes that were there before is a bug the sink detects: it panics.
///
/// # Examples
/// ```
/// use std::io::{self, Write};
/// use flowgate::sink::{Encode, WriteSink};
/// use futures::SinkExt;
///
/// /// Comma-separated values, with a header line before the first row.
/// struct Csv {
///     header_written: bool,
/// }
///
/// impl Encode<(&str, u32)> for Csv {
///     fn encode(&mut self, (name, count): &(&str, u32), out: &mut Vec<u8>) -> io::Result<()> {
///         if !self.header_written {
///             out.extend_from_slice(b"name,count\n");
///             self.header_written = true;
///         }
///         writeln!(out, "{name},{count}")
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> io::Result<()> {
/// let mut sink = WriteSink::new(Vec::new(), Csv { header_written: false });
/// sink.send(("apples", 3)).await?;
/// sink.send(("pears", 5)).await?;
/// assert_eq!(sink.get_ref(), b"name,count\napples,3\npears,5\n");
/// # Ok(())
/// # }
/// ```
pub trait Encode<T: ?Sized> {
    /// Appends the encoding of `item` to `out`; see the [contract](Encode#contract).
    fn encode(&mut self, item: &T, out: &mut Vec<u8>) -> io::Result<()>;
}

/// The encoder of [`lines`](super::lines): an item's `Display` form, then `\n`.
///
/// Typed by the item, as a sink takes one item type; several types go through one sink
/// as `Box<dyn Display>` items. A `Display` form that contains a newline spans several
/// lines of output (use [`encoded`](super::encoded) to escape it). A `Display`
/// implementation that returns an error is the sink's error for that item
/// (`io::ErrorKind::Other`), and none of its bytes stay in the buffer.
pub struct Lines<T> {
    // `fn(&T)`: the marker encodes `T`s and owns none, so it is `Send`, `Sync` and
    // `Unpin` whatever `T`.
    item: PhantomData<fn(&T)>,
}

impl<T> Lines<T> {
    /// The encoder for items of type `T`.
    pub const fn new() -> Self {
        Lines { item: PhantomData }
    }
}

impl<T> Default for Lines<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Lines<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Lines<T> {}

impl<T> fmt::Debug for Lines<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Lines")
    }
}

impl<T: Display> Encode<T> for Lines<T> {
    fn encode(&mut self, item: &T, out: &mut Vec<u8>) -> io::Result<()> {
        // Through `fmt::write`, not `io::Write::write_fmt`: recent versions of std panic
        // when a `Display` implementation fails while the vector did not.
        fmt::write(&mut Utf8Into(out), format_args!("{item}\n")).map_err(|fmt::Error| {
            io::Error::other("an item's `Display` implementation returned an error")
        })
    }
}

/// A `fmt::Write` that appends to a byte vector.
struct Utf8Into<'a>(&'a mut Vec<u8>);

impl fmt::Write for Utf8Into<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }
}

impl<T, F> Encode<T> for F
where
    T: ?Sized,
    F: FnMut(&T, &mut Vec<u8>) -> io::Result<()>,
{
    fn encode(&mut self, item: &T, out: &mut Vec<u8>) -> io::Result<()> {
        self(item, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Failing;

    impl fmt::Display for Failing {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("partial")?;
            Err(fmt::Error)
        }
    }

    #[test]
    fn lines_writes_display_and_a_newline() {
        let mut out = Vec::new();
        Lines::new().encode(&42, &mut out).unwrap();
        Lines::new().encode(&"text", &mut out).unwrap();
        let boxed: Box<dyn Display> = Box::new(format!("{:>4}", 'c'));
        Lines::new().encode(&boxed, &mut out).unwrap();
        assert_eq!(out, b"42\ntext\n   c\n");
    }

    #[test]
    fn a_display_error_is_an_io_error() {
        let mut out = b"before\n".to_vec();
        let error = Lines::new().encode(&Failing, &mut out).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::Other);
        assert_eq!(
            error.to_string(),
            "an item's `Display` implementation returned an error"
        );
    }

    #[test]
    fn closures_are_encoders() {
        let mut calls = 0;
        let mut encoder = |item: &u8, out: &mut Vec<u8>| {
            calls += 1;
            out.push(*item);
            Ok(())
        };
        let mut out = Vec::new();
        encoder.encode(&7, &mut out).unwrap();
        encoder.encode(&8, &mut out).unwrap();
        assert_eq!(out, [7, 8]);
        assert_eq!(calls, 2);
    }
}
