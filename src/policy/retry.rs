//! [`Retry`] and [`Backoff`]: when a failed attempt is tried again.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How long to wait before each attempt after the first.
///
/// With [`Retry::jitter`], each delay is drawn from its upper half (between half the
/// delay and the whole delay), the same for the same seed, position and attempt.
///
/// ```
/// use std::time::Duration;
/// use flowgate::Backoff;
///
/// let ms = Duration::from_millis;
/// let backoff = Backoff::exponential(ms(10), ms(50));
/// // Before attempts 2, 3, 4 and 5: 10, 20, 40, then capped at 50 ms.
/// let delays: Vec<_> = (2..=5).map(|attempt| backoff.delay(attempt)).collect();
/// assert_eq!(delays, [ms(10), ms(20), ms(40), ms(50)]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    kind: BackoffKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BackoffKind {
    None,
    Fixed(Duration),
    Exponential { base: Duration, cap: Duration },
}

impl Backoff {
    /// Each retry starts as soon as the failed attempt ended.
    pub fn none() -> Self {
        Backoff {
            kind: BackoffKind::None,
        }
    }

    /// The same `delay` before every retry.
    pub fn fixed(delay: Duration) -> Self {
        Backoff {
            kind: BackoffKind::Fixed(delay),
        }
    }

    /// `base` before the second attempt, doubling before each later one, never more than
    /// `cap`: attempts at 0, 10, 30 and 70 ms (plus the time each attempt ran) for a
    /// `base` of 10 ms and a large cap.
    ///
    /// # Panics
    /// If `base` is zero (naming `base`) or `cap` is below `base` (naming `cap`).
    #[track_caller]
    pub fn exponential(base: Duration, cap: Duration) -> Self {
        if base.is_zero() {
            panic!("flowgate: `Backoff::exponential` needs a `base` above zero");
        }
        if cap < base {
            panic!(
                "flowgate: `Backoff::exponential` needs `cap` ({cap:?}) at least `base` ({base:?})"
            );
        }
        Backoff {
            kind: BackoffKind::Exponential { base, cap },
        }
    }

    /// The delay before attempt `attempt` (2 for the first retry), without jitter.
    /// Zero for the first attempt.
    pub fn delay(&self, attempt: u32) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        match self.kind {
            BackoffKind::None => Duration::ZERO,
            BackoffKind::Fixed(delay) => delay,
            BackoffKind::Exponential { base, cap } => {
                let doublings = attempt - 2;
                if doublings >= 32 {
                    return cap;
                }
                base.checked_mul(1u32 << doublings)
                    .map_or(cap, |delay| delay.min(cap))
            }
        }
    }
}

impl Default for Backoff {
    /// [`Backoff::none`].
    fn default() -> Self {
        Backoff::none()
    }
}

/// The predicate of [`Retry::retry_if`].
type WorthIt<E> = Arc<dyn Fn(&E) -> bool + Send + Sync>;

/// Which failed attempts are tried again, how often and after how long: the policy of
/// [`with_retry`](crate::concurrent::Guarded::with_retry).
///
/// An attempt is retried while attempts are left ([`Retry::attempts`], the first
/// included), the policy's total time is not spent ([`Retry::max_elapsed`]) and the
/// failure is worth it: a timeout or a caught panic always is, the work's own error
/// when [`Retry::retry_if`] says so (every error, unless it is set). An `Err` item from
/// upstream is never retried: there is no attempt to repeat.
///
/// ```
/// use std::time::Duration;
/// use flowgate::{Backoff, Retry};
///
/// #[derive(Debug)]
/// enum ServiceError { Busy, NotFound }
///
/// let retry = Retry::attempts(4)
///     .backoff(Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1)))
///     .jitter(7)
///     .retry_if(|e: &ServiceError| matches!(e, ServiceError::Busy))
///     .max_elapsed(Duration::from_secs(30));
/// assert_eq!(retry.max_attempts(), 4);
/// ```
pub struct Retry<E> {
    attempts: u32,
    backoff: Backoff,
    seed: Option<u64>,
    retry_if: Option<WorthIt<E>>,
    max_elapsed: Option<Duration>,
}

impl<E> Retry<E> {
    /// At most `attempts` attempts per item in all, the first included, with no backoff
    /// (see [`Retry::backoff`]).
    ///
    /// # Panics
    /// If `attempts` is zero, naming `attempts` (one attempt is no retry at all; zero
    /// would never run the work).
    #[track_caller]
    pub fn attempts(attempts: u32) -> Self {
        if attempts == 0 {
            panic!(
                "flowgate: `Retry::attempts` needs `attempts` of at least 1 (the first attempt \
                 included), got 0"
            );
        }
        Retry {
            attempts,
            backoff: Backoff::none(),
            seed: None,
            retry_if: None,
            max_elapsed: None,
        }
    }

    /// Waits `backoff` before each retry, on tokio's clock. While it waits, the item holds
    /// its place in the window but no running slot.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Draws each delay from the upper half of the backoff's (between half of it and all
    /// of it), from `seed`, the item's position and the attempt: the same schedule on
    /// every run with the same seed, whatever the timing. No jitter unless asked.
    pub fn jitter(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Retries the work's own errors only when `worth_it` returns `true`. Timeouts and
    /// caught panics are retried regardless.
    pub fn retry_if(mut self, worth_it: impl Fn(&E) -> bool + Send + Sync + 'static) -> Self {
        self.retry_if = Some(Arc::new(worth_it));
        self
    }

    /// Starts no retry later than `total` after the item's first attempt started (the
    /// retry's backoff included): an item failing past it fails with its last error.
    ///
    /// # Panics
    /// If `total` is zero, naming `max_elapsed`.
    #[track_caller]
    pub fn max_elapsed(mut self, total: Duration) -> Self {
        if total.is_zero() {
            panic!("flowgate: `Retry::max_elapsed` needs a `max_elapsed` above zero");
        }
        self.max_elapsed = Some(total);
        self
    }

    /// The most attempts an item gets, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether a total time is set (then the first attempt's start is read).
    pub(crate) fn has_total_time(&self) -> bool {
        self.max_elapsed.is_some()
    }

    /// Whether the work's own `error` is worth another attempt.
    pub(crate) fn worth_retrying(&self, error: &E) -> bool {
        self.retry_if
            .as_ref()
            .is_none_or(|worth_it| worth_it(error))
    }

    /// After attempt `attempt` of the item at `position` failed (with a failure worth
    /// retrying), `elapsed` after its first attempt started: the delay before the next
    /// attempt, or `None` when the item has had its attempts or its time.
    pub(crate) fn next_delay(
        &self,
        position: u64,
        attempt: u32,
        elapsed: Duration,
    ) -> Option<Duration> {
        if attempt >= self.attempts {
            return None;
        }
        let next = attempt + 1;
        let delay = self.backoff.delay(next);
        let delay = match self.seed {
            Some(seed) => jittered(delay, seed, position, next),
            None => delay,
        };
        match self.max_elapsed {
            Some(total) if elapsed.saturating_add(delay) > total => None,
            _ => Some(delay),
        }
    }
}

impl<E> Clone for Retry<E> {
    fn clone(&self) -> Self {
        Retry {
            attempts: self.attempts,
            backoff: self.backoff,
            seed: self.seed,
            retry_if: self.retry_if.clone(),
            max_elapsed: self.max_elapsed,
        }
    }
}

impl<E> fmt::Debug for Retry<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .field("jitter_seed", &self.seed)
            .field("retry_if", &self.retry_if.as_ref().map(|_| "a predicate"))
            .field("max_elapsed", &self.max_elapsed)
            .finish()
    }
}

/// `delay` scaled into [delay / 2, delay], by a hash of the seed, the position and the
/// attempt (splitmix64's finaliser: well mixed, no state to keep).
fn jittered(delay: Duration, seed: u64, position: u64, attempt: u32) -> Duration {
    if delay.is_zero() {
        return delay;
    }
    let mut x = seed
        ^ position.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ u64::from(attempt).wrapping_mul(0xD1B5_4A32_D192_ED03);
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    // A fraction in [0, 1) with 53 bits, as `f64` represents exactly.
    let fraction = (x >> 11) as f64 / (1u64 << 53) as f64;
    let nanos = delay.as_nanos() as f64;
    Duration::from_nanos((nanos / 2.0 + nanos / 2.0 * fraction) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn exponential_backoff_doubles_up_to_its_cap() {
        let backoff = Backoff::exponential(10 * MS, 1000 * MS);
        let delays: Vec<_> = (1..=9).map(|a| backoff.delay(a)).collect();
        assert_eq!(
            delays,
            [0, 10, 20, 40, 80, 160, 320, 640, 1000].map(|ms| ms * MS)
        );
        assert_eq!(backoff.delay(u32::MAX), 1000 * MS);
        let huge = Backoff::exponential(Duration::from_secs(u64::MAX / 4), Duration::MAX);
        assert_eq!(huge.delay(40), Duration::MAX);
    }

    #[test]
    fn the_schedule_of_attempts_is_0_10_30_70_ms() {
        let retry = Retry::<()>::attempts(4).backoff(Backoff::exponential(10 * MS, 1000 * MS));
        let mut at = Duration::ZERO;
        let mut starts = vec![at];
        for attempt in 1.. {
            match retry.next_delay(0, attempt, at) {
                Some(delay) => {
                    at += delay;
                    starts.push(at);
                }
                None => break,
            }
        }
        assert_eq!(starts, [0, 10, 30, 70].map(|ms| ms * MS));
    }

    #[test]
    fn jitter_is_the_same_for_the_same_seed_and_within_the_upper_half() {
        let retry = Retry::<()>::attempts(10)
            .backoff(Backoff::fixed(100 * MS))
            .jitter(42);
        let again = retry.clone();
        let other = Retry::<()>::attempts(10)
            .backoff(Backoff::fixed(100 * MS))
            .jitter(43);
        let mut differs = false;
        for position in 0..50 {
            for attempt in 1..10 {
                let delay = retry.next_delay(position, attempt, Duration::ZERO).unwrap();
                assert!(delay >= 50 * MS && delay <= 100 * MS, "{delay:?}");
                assert_eq!(
                    Some(delay),
                    again.next_delay(position, attempt, Duration::ZERO)
                );
                differs |= Some(delay) != other.next_delay(position, attempt, Duration::ZERO);
            }
        }
        assert!(differs, "another seed gives another schedule");
    }

    #[test]
    fn attempts_and_total_time_stop_retries() {
        let retry = Retry::<()>::attempts(3).backoff(Backoff::fixed(10 * MS));
        assert_eq!(retry.next_delay(0, 1, Duration::ZERO), Some(10 * MS));
        assert_eq!(retry.next_delay(0, 2, Duration::ZERO), Some(10 * MS));
        assert_eq!(retry.next_delay(0, 3, Duration::ZERO), None);
        let timed = retry.max_elapsed(25 * MS);
        assert_eq!(timed.next_delay(0, 1, 15 * MS), Some(10 * MS));
        assert_eq!(timed.next_delay(0, 1, 16 * MS), None);
        assert_eq!(
            Retry::<()>::attempts(1).next_delay(0, 1, Duration::ZERO),
            None
        );
    }

    #[test]
    fn retry_if_filters_the_work_s_errors() {
        let retry = Retry::attempts(2).retry_if(|e: &u32| *e < 10);
        assert!(retry.worth_retrying(&3));
        assert!(!retry.worth_retrying(&30));
        assert!(Retry::<u32>::attempts(2).worth_retrying(&30));
        assert!(format!("{retry:?}").contains("a predicate"));
    }

    #[test]
    #[should_panic(expected = "`attempts` of at least 1")]
    fn zero_attempts_panic_naming_attempts() {
        let _ = Retry::<()>::attempts(0);
    }

    #[test]
    #[should_panic(expected = "`max_elapsed` above zero")]
    fn a_zero_total_time_panics_naming_it() {
        let _ = Retry::<()>::attempts(2).max_elapsed(Duration::ZERO);
    }

    #[test]
    #[should_panic(expected = "`base` above zero")]
    fn a_zero_base_panics_naming_it() {
        let _ = Backoff::exponential(Duration::ZERO, MS);
    }

    #[test]
    #[should_panic(expected = "needs `cap`")]
    fn a_cap_below_the_base_panics_naming_it() {
        let _ = Backoff::exponential(10 * MS, MS);
    }
}
