//! Per-key queues: the mapper of the keyed operators, which lets one job per key run at a
//! time while the engine starts jobs of different keys concurrently.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::mappers::CallAsync;
use super::{Gated, Mapper, Prepared};

/// Hashes a `u64` that is already well spread (a key's hash) or unique and dense (a
/// position) with one multiplication: the maps keyed by them need no SipHash.
#[derive(Default)]
struct SpreadU64(u64);

impl Hasher for SpreadU64 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type U64Map<V> = HashMap<u64, V, BuildHasherDefault<SpreadU64>>;

/// A key with an item in flight: the position running (or ready) for it, and the inputs
/// of its later items, waiting in input order.
struct InFlight<K, T> {
    key: K,
    running: u64,
    waiting: VecDeque<(u64, T)>,
}

/// Async lane, keyed: calls `key` on each item as it is pulled and `f` when the item may
/// start, which is when no earlier item of its key is in flight.
///
/// A key is known exactly while one of its items is in flight: running, or ready to
/// start as soon as a job may. Its later items wait in its queue, in input order. When
/// an item settles, its key's next input becomes ready (`ready`, started by the engine
/// before anything new is pulled); a key with nothing left is forgotten. So memory
/// follows the items pulled and not settled (at most the window), never the number of
/// distinct keys seen.
///
/// A key is hashed once per item (with the standard library's keyed SipHash, safe
/// against chosen keys): the keys in flight are found by that hash (a list per hash,
/// for the rare keys that share one) and each position in flight remembers its key's
/// hash, so `K` needs neither `Clone` nor a second hashing when the item settles.
pub(crate) struct KeyedCall<F, KF, K, T> {
    /// Calls `f`, as for `map_concurrent`.
    call: CallAsync<F>,
    key: KF,
    hasher: RandomState,
    /// The keys with an item in flight, by hash.
    keys: U64Map<Vec<InFlight<K, T>>>,
    /// The hash of the key of each position in flight (running or ready).
    running: U64Map<u64>,
    /// Inputs whose key became free, oldest first.
    ready: VecDeque<(u64, T)>,
    /// Inputs waiting for their key, in all the keys' queues.
    waiting: usize,
}

impl<F, KF, K, T> KeyedCall<F, KF, K, T> {
    pub(crate) fn new(f: F, key: KF) -> Self {
        KeyedCall {
            call: CallAsync { f },
            key,
            hasher: RandomState::new(),
            keys: U64Map::default(),
            running: U64Map::default(),
            ready: VecDeque::new(),
            waiting: 0,
        }
    }

    /// Keys with an item in flight, and items in flight (for tests of the bound on
    /// memory).
    #[cfg(test)]
    fn known(&self) -> (usize, usize) {
        let keys: usize = self.keys.values().map(Vec::len).sum();
        let waiting: usize = self
            .keys
            .values()
            .flatten()
            .map(|key| key.waiting.len())
            .sum();
        (keys, self.running.len() + waiting)
    }
}

impl<T, F, Fut, KF, K> Mapper<T> for KeyedCall<F, KF, K, T>
where
    F: FnMut(T) -> Fut,
    Fut: Future,
    KF: FnMut(&T) -> K,
    K: Hash + Eq,
{
    type Input = T;
    type Job = Fut;
    type Out = Fut::Output;

    const GATED: bool = true;

    fn admit(item: T) -> Result<T, Fut::Output> {
        Ok(item)
    }

    fn prepare(&mut self, item: T) -> Prepared<Fut, Fut::Output> {
        self.call.prepare(item)
    }

    fn is_failure(_: &Fut::Output) -> bool {
        false
    }

    fn gate(&mut self, index: u64, input: T) -> Gated<T> {
        let key = match catch_unwind(AssertUnwindSafe(|| (self.key)(&input))) {
            Ok(key) => key,
            Err(payload) => {
                super::drop_contained(input);
                return Gated::Panicked(payload);
            }
        };
        let hash = self.hasher.hash_one(&key);
        let same_hash = self.keys.entry(hash).or_default();
        if let Some(in_flight) = same_hash.iter_mut().find(|in_flight| in_flight.key == key) {
            in_flight.waiting.push_back((index, input));
            self.waiting += 1;
            return Gated::Wait;
        }
        same_hash.push(InFlight {
            key,
            running: index,
            waiting: VecDeque::new(),
        });
        self.running.insert(index, hash);
        Gated::Start(input)
    }

    fn settled(&mut self, index: u64) {
        // Positions settled without a key (a panic of `key`) were never running.
        let Some(hash) = self.running.remove(&index) else {
            return;
        };
        let Some(same_hash) = self.keys.get_mut(&hash) else {
            return;
        };
        let Some(at) = same_hash.iter().position(|key| key.running == index) else {
            return;
        };
        match same_hash[at].waiting.pop_front() {
            Some((next, input)) => {
                self.waiting -= 1;
                same_hash[at].running = next;
                self.running.insert(next, hash);
                self.ready.push_back((next, input));
            }
            None => {
                same_hash.swap_remove(at);
                if same_hash.is_empty() {
                    self.keys.remove(&hash);
                }
                // Shrink what a burst of many keys left behind, once it is four times
                // what is in use: memory follows the items in flight.
                if self.keys.capacity() > 64 && self.keys.capacity() > 4 * self.keys.len() {
                    self.keys.shrink_to(2 * self.keys.len());
                    self.running.shrink_to(2 * self.running.len());
                }
            }
        }
    }

    fn next_ready(&mut self) -> Option<(u64, T)> {
        self.ready.pop_front()
    }

    fn has_waiting(&self) -> bool {
        self.waiting > 0 || !self.ready.is_empty()
    }

    fn clear(&mut self) {
        let waiting = self.keys.drain().flat_map(|(_, same_hash)| same_hash);
        for input in waiting
            .flat_map(|key| key.waiting)
            .chain(self.ready.drain(..))
        {
            super::drop_contained(input);
        }
        self.running.clear();
        self.waiting = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Call = KeyedCall<fn(u64) -> std::future::Ready<u64>, fn(&u64) -> u64, u64, u64>;

    /// Keys 0, 1, 2 for items 0, 1, 2, 3, ...
    fn keyed() -> Call {
        KeyedCall::new(std::future::ready, |x| x % 3)
    }

    fn started(gated: Gated<u64>) -> Option<u64> {
        match gated {
            Gated::Start(input) => Some(input),
            Gated::Wait => None,
            Gated::Panicked(_) => panic!("no key panics here"),
        }
    }

    #[test]
    fn one_item_per_key_in_flight_and_the_next_in_input_order() {
        let mut call = keyed();
        // Items 0..6, keys 0, 1, 2, 0, 1, 2.
        let starts: Vec<Option<u64>> = (0..6).map(|i| started(call.gate(i, i))).collect();
        assert_eq!(starts, [Some(0), Some(1), Some(2), None, None, None]);
        assert_eq!(call.known(), (3, 6));
        assert!(call.next_ready().is_none());
        call.settled(1);
        assert_eq!(call.next_ready(), Some((4, 4)), "key 1's next item");
        assert!(call.next_ready().is_none());
        call.settled(0);
        call.settled(2);
        assert_eq!(call.next_ready(), Some((3, 3)));
        assert_eq!(call.next_ready(), Some((5, 5)));
        call.settled(3);
        call.settled(4);
        call.settled(5);
        assert_eq!(
            call.known(),
            (0, 0),
            "keys with nothing in flight are forgotten"
        );
    }

    #[test]
    fn a_million_distinct_keys_leave_nothing_behind() {
        let mut call: Call = KeyedCall::new(std::future::ready, |x| *x);
        for i in 0..1_000_000u64 {
            assert!(started(call.gate(i, i)).is_some());
            if i >= 16 {
                call.settled(i - 16);
            }
        }
        assert_eq!(call.known(), (16, 16), "the 16 in flight");
        assert!(
            call.keys.capacity() <= 128 && call.running.capacity() <= 128,
            "the maps follow the keys in flight: {} and {} places",
            call.keys.capacity(),
            call.running.capacity()
        );
    }

    #[test]
    fn a_key_that_panics_is_the_items_result_and_holds_no_key() {
        fn key(x: &u64) -> u64 {
            assert!(*x != 1, "no key for 1");
            *x
        }
        let mut call: Call = KeyedCall::new(std::future::ready, key);
        assert!(started(call.gate(0, 0)).is_some());
        assert!(matches!(call.gate(1, 1), Gated::Panicked(_)));
        call.settled(1);
        call.settled(0);
        assert_eq!(call.known(), (0, 0));
    }
}
