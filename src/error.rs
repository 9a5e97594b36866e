//! [`Error`], the crate's one error type for an item that failed.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// Why an item failed, as an operator with failure policies yields it: the item's
/// position in the input, the attempts made, and the [`Cause`].
///
/// Operators that take a policy ([`with_timeout`](crate::concurrent::Guarded::with_timeout),
/// [`with_retry`](crate::concurrent::Guarded::with_retry),
/// [`keep_going`](crate::concurrent::Guarded::keep_going),
/// [`catch_panics`](crate::concurrent::Guarded::catch_panics)) yield
/// `Result<U, flowgate::Error<E>>`, where `E` is the error of the work (the `Err` of
/// `f`'s result and of the upstream items).
///
/// `Display` names the position and the cause (the user's error's own `Display`
/// included); [`source`](std::error::Error::source) returns the user's error, if that
/// is the cause.
///
/// ```
/// use std::time::Duration;
///
/// let error: flowgate::Error<std::io::Error> = flowgate::Error::timed_out(17, 2, Duration::from_secs(2));
/// assert_eq!(error.position(), 17);
/// assert_eq!(error.attempts(), 2);
/// assert!(error.is_timeout());
/// assert_eq!(error.to_string(), "item 17 timed out after 2s (attempt 2)");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Error<E> {
    // Boxed: a failure is rare, and a result that may hold one stays one word wide.
    inner: Box<Inner<E>>,
}

#[derive(Clone, PartialEq, Eq)]
struct Inner<E> {
    position: u64,
    attempts: u32,
    cause: Cause<E>,
}

/// What made an item fail: see [`Error`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause<E> {
    /// The work's own error: an `Err` returned by `f` (at the last attempt made), or an
    /// `Err` item from upstream (then no attempt was made).
    Failed(E),
    /// The last attempt ran longer than the operator's timeout and was cancelled (or,
    /// on the blocking lane, its late result is discarded).
    TimedOut {
        /// How long the attempt ran before it was given up: the timeout.
        after: Duration,
    },
    /// User code panicked, and the operator catches panics
    /// ([`catch_panics`](crate::concurrent::Guarded::catch_panics)).
    Panicked {
        /// The panic's message, when it was a string (as `panic!` with a message makes
        /// it); otherwise a note that it was not.
        message: String,
    },
    /// The item could not be carried to a remote worker or back (feature `nats`,
    /// [`map_remote`](crate::FlowExt::map_remote)): it or its result failed to encode or
    /// decode, it was over the broker's maximum message size, the broker gave it up
    /// after its last delivery without a result (every worker that took it crashed or
    /// ran out of time), or the broker failed for longer than the coordinator retries.
    Broker {
        /// What went wrong, naming sizes and limits where they matter.
        message: String,
    },
}

impl<E> Error<E> {
    /// The work's own error `error` for the item at `position`, after `attempts`
    /// attempts (0 when the error came from upstream and no attempt was made).
    pub fn failed(position: u64, attempts: u32, error: E) -> Self {
        Error::new(position, attempts, Cause::Failed(error))
    }

    fn new(position: u64, attempts: u32, cause: Cause<E>) -> Self {
        Error {
            inner: Box::new(Inner {
                position,
                attempts,
                cause,
            }),
        }
    }

    /// A timeout of the item at `position`, whose attempt `attempts` ran `after`.
    pub fn timed_out(position: u64, attempts: u32, after: Duration) -> Self {
        Error::new(position, attempts, Cause::TimedOut { after })
    }

    /// A caught panic of the item at `position`, at attempt `attempts`, with its message.
    pub fn panicked(position: u64, attempts: u32, message: impl Into<String>) -> Self {
        let message = message.into();
        Error::new(position, attempts, Cause::Panicked { message })
    }

    /// The item's position in the operator's input, counted from 0 (an upstream `Err`
    /// item takes a position too).
    pub fn position(&self) -> u64 {
        self.inner.position
    }

    /// The attempts made, the first included: 1 without retries, 0 for an error that
    /// came from upstream.
    pub fn attempts(&self) -> u32 {
        self.inner.attempts
    }

    /// What made the item fail.
    pub fn cause(&self) -> &Cause<E> {
        &self.inner.cause
    }

    /// The cause, by value.
    pub fn into_cause(self) -> Cause<E> {
        self.inner.cause
    }

    /// The user's error, if that is the cause.
    pub fn inner(&self) -> Option<&E> {
        match &self.inner.cause {
            Cause::Failed(error) => Some(error),
            _ => None,
        }
    }

    /// The user's error by value, if that is the cause.
    pub fn into_inner(self) -> Option<E> {
        match self.inner.cause {
            Cause::Failed(error) => Some(error),
            _ => None,
        }
    }

    /// Whether the last attempt timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self.inner.cause, Cause::TimedOut { .. })
    }

    /// A failure to carry the item at `position` to a remote worker or back, after
    /// `attempts` deliveries (see [`Cause::Broker`]).
    pub fn broker(position: u64, attempts: u32, message: impl Into<String>) -> Self {
        let message = message.into();
        Error::new(position, attempts, Cause::Broker { message })
    }

    /// Whether the item could not be carried to a remote worker or back
    /// ([`Cause::Broker`]).
    pub fn is_broker(&self) -> bool {
        matches!(self.inner.cause, Cause::Broker { .. })
    }

    /// Whether user code panicked (a caught panic).
    pub fn is_panic(&self) -> bool {
        matches!(self.inner.cause, Cause::Panicked { .. })
    }

    /// The same failure with the user's error mapped by `f`.
    pub fn map<E2>(self, f: impl FnOnce(E) -> E2) -> Error<E2> {
        let Inner {
            position,
            attempts,
            cause,
        } = *self.inner;
        let cause = match cause {
            Cause::Failed(error) => Cause::Failed(f(error)),
            Cause::TimedOut { after } => Cause::TimedOut { after },
            Cause::Panicked { message } => Cause::Panicked { message },
            Cause::Broker { message } => Cause::Broker { message },
        };
        Error::new(position, attempts, cause)
    }
}

impl<E: fmt::Debug> fmt::Debug for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("position", &self.inner.position)
            .field("attempts", &self.inner.attempts)
            .field("cause", &self.inner.cause)
            .finish()
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let position = self.inner.position;
        let attempts = self.inner.attempts;
        match &self.inner.cause {
            Cause::Failed(error) if attempts == 0 => {
                write!(f, "item {position} failed upstream: {error}")
            }
            Cause::Failed(error) if attempts == 1 => write!(f, "item {position} failed: {error}"),
            Cause::Failed(error) => {
                write!(
                    f,
                    "item {position} failed after {attempts} attempts: {error}"
                )
            }
            Cause::TimedOut { after } => write!(
                f,
                "item {position} timed out after {after:?} (attempt {attempts})"
            ),
            Cause::Panicked { message } => {
                write!(
                    f,
                    "item {position} panicked (attempt {attempts}): {message}"
                )
            }
            Cause::Broker { message } => write!(
                f,
                "item {position} could not go through the broker: {message}"
            ),
        }
    }
}

impl<E: StdError + 'static> StdError for Error<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.inner.cause {
            Cause::Failed(error) => Some(error),
            _ => None,
        }
    }
}

/// The message of a panic payload: its text when it is one (`panic!("...")` gives a
/// `&str` or a `String`), otherwise a note that it was not text.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic whose payload is not text".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Refused;

    impl fmt::Display for Refused {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("connection refused")
        }
    }

    impl StdError for Refused {}

    #[test]
    fn display_names_the_position_and_the_cause() {
        assert_eq!(
            Error::failed(3, 1, Refused).to_string(),
            "item 3 failed: connection refused"
        );
        assert_eq!(
            Error::failed(3, 4, Refused).to_string(),
            "item 3 failed after 4 attempts: connection refused"
        );
        assert_eq!(
            Error::failed(9, 0, Refused).to_string(),
            "item 9 failed upstream: connection refused"
        );
        assert_eq!(
            Error::<Refused>::timed_out(5, 2, Duration::from_millis(250)).to_string(),
            "item 5 timed out after 250ms (attempt 2)"
        );
        assert_eq!(
            Error::<Refused>::panicked(7, 1, "boom").to_string(),
            "item 7 panicked (attempt 1): boom"
        );
    }

    #[test]
    fn source_chains_to_the_user_error_only() {
        let failed = Error::failed(0, 1, Refused);
        let source = failed.source().expect("the user's error is the source");
        assert_eq!(source.to_string(), "connection refused");
        assert!(Error::<Refused>::timed_out(0, 1, Duration::from_secs(1))
            .source()
            .is_none());
        assert!(Error::<Refused>::panicked(0, 1, "x").source().is_none());
    }

    #[test]
    fn accessors_and_map() {
        let error = Error::failed(4, 2, 7u32).map(|n| n * 2);
        assert_eq!(error.inner(), Some(&14));
        assert_eq!(error.position(), 4);
        assert_eq!(error.attempts(), 2);
        assert!(!error.is_timeout() && !error.is_panic());
        assert_eq!(error.clone().into_inner(), Some(14));
        assert_eq!(error.into_cause(), Cause::Failed(14));
        let panicked = Error::<u32>::panicked(1, 1, "p").map(|n| n + 1);
        assert!(panicked.is_panic());
        assert_eq!(panicked.into_inner(), None);
    }

    #[test]
    fn panic_messages_are_read_from_text_payloads() {
        let payload = std::panic::catch_unwind(|| panic!("static text")).unwrap_err();
        assert_eq!(panic_message(payload.as_ref()), "static text");
        let n = 3;
        let payload = std::panic::catch_unwind(|| panic!("formatted {n}")).unwrap_err();
        assert_eq!(panic_message(payload.as_ref()), "formatted 3");
        let payload = std::panic::catch_unwind(|| std::panic::panic_any(5u8)).unwrap_err();
        assert_eq!(
            panic_message(payload.as_ref()),
            "a panic whose payload is not text"
        );
    }
}
