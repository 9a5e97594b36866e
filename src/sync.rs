//! The crate's one way to take a `std` lock (the async lane keeps its own, which loom
//! can model).

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Takes `mutex`, poisoned or not. Every lock taken this way holds consistent data even
/// after a panic elsewhere: no user code runs under the crate's locks, and the test
/// kit's records are written whole (a failing assertion in another thread leaves them
/// readable).
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
