//! The lane's locks and atomics: std's, or loom's when the protocol is model-checked
//! (`RUSTFLAGS="--cfg loom"`, in the crate's own tests). `Arc` stays std's: `std::task::Wake` needs it, and loom
//! checks the interleavings of the locks and atomics, where the protocol lives.

#[cfg(all(test, loom))]
pub(super) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
#[cfg(all(test, loom))]
pub(super) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(all(test, loom)))]
pub(super) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
#[cfg(not(all(test, loom)))]
pub(super) use std::sync::{Mutex, MutexGuard};
