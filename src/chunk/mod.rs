//! Chunking operators: cut a stream into `Vec` chunks by count and time, or by weight.
//!
//! - [`ChunksWithin`] ([`FlowExt::chunks_within`](crate::FlowExt::chunks_within)): at most
//!   `max_items` per chunk, and a partial chunk goes `max_wait` after its first item, so a
//!   slow source still delivers promptly.
//! - [`ChunksWeighted`] ([`FlowExt::chunks_weighted`](crate::FlowExt::chunks_weighted)):
//!   chunks whose summed weight (bytes, cost) stays within `max_weight`; a heavier item
//!   goes alone.
//!
//! Both are lazy (they pull from upstream only while filling a chunk), never emit an empty
//! chunk, hold at most one chunk (plus, for the weighted one, the item that did not fit),
//! and are fused. Count-only chunking is `futures::StreamExt::chunks`; flowgate does not
//! redefine it.

mod weighted;
mod within;

pub use weighted::ChunksWeighted;
pub use within::ChunksWithin;
