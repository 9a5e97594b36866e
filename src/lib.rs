//! TOUR
#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod chunk;
pub mod concurrent;
mod ext;
pub mod source;

pub use ext::{FlowExt, TryFlowExt};

/// Writes a stream as a generator: `yield` items from an `async` block.
///
/// Re-exported from [`async-stream`](https://docs.rs/async-stream).
pub use async_stream::stream;
/// Writes a fallible stream as a generator: `yield` items, `?` ends it with the error.
///
/// Re-exported from [`async-stream`](https://docs.rs/async-stream).
pub use async_stream::try_stream;

/// Everything a pipeline needs: `use flowgate::prelude::*;`.
///
/// Brings the extension traits [`FlowExt`] and [`TryFlowExt`] into scope (their methods
/// do not clash with `futures::StreamExt` or `tokio_stream::StreamExt`) and the
/// generator macros [`stream!`] and [`try_stream!`].
pub mod prelude {
    pub use crate::ext::{FlowExt, TryFlowExt};
    pub use crate::{stream, try_stream};
}
