//! Integration tests of the sinks, through the public API only.

mod buffering;
mod channel;
mod encoding;
mod errors;
mod props;
mod writers;
