//! Where data comes from.
//!
//! Any `Stream` can feed a pipeline; the generator macros [`stream!`](crate::stream) and
//! [`try_stream!`](crate::try_stream) write one inline. This module adds sources with the
//! properties a pipeline relies on (laziness, cooperative scheduling, bounded memory):
//!
//! | source | for | items |
//! |---|---|---|
//! | [`iter()`] | an iterator that does not block | its items |
//! | [`lines()`] | a text file of any size | numbered lines, or an error naming the path and line |
//! | [`blocking_iter()`] | an iterator that blocks (a database cursor, a CSV reader) | its items, read on a blocking thread a bounded way ahead |
//!
//! # Channels
//!
//! A channel needs no adapter here: tokio-stream's
//! [`ReceiverStream`](https://docs.rs/tokio-stream/latest/tokio_stream/wrappers/struct.ReceiverStream.html)
//! turns a `tokio::sync::mpsc::Receiver` into a source (it ends when every sender is
//! dropped), and tokio-util's
//! [`PollSender`](https://docs.rs/tokio-util/latest/tokio_util/sync/struct.PollSender.html)
//! turns a `Sender` into a `futures::Sink` for results (see [`sink`](crate::sink)).

mod blocking_iter;
mod iter;
// tokio's file system module is left out of its loom builds (the loom models check the
// async lane only).
#[cfg(not(loom))]
mod lines;

pub use blocking_iter::{blocking_iter, BlockingIter};
pub use iter::{iter, Iter};
#[cfg(not(loom))]
pub use lines::{lines, Line, Lines, LinesError, LinesErrorKind};
