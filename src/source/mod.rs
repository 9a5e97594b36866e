//! Where data comes from.
//!
//! Any `Stream` can feed a pipeline; the generator macros [`stream!`](crate::stream) and
//! [`try_stream!`](crate::try_stream) write one inline. This module adds sources with the
//! properties a pipeline relies on (laziness, cooperative scheduling).

mod iter;

pub use iter::{iter, Iter};
