//! Items and results on the wire: serde + postcard.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What a worker sends back for one item.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) enum Outcome<U, E> {
    /// The task's result.
    Done(U),
    /// The task's error at the last delivery.
    Failed { deliveries: u32, error: E },
    /// The task panicked at the last delivery.
    Panicked { deliveries: u32, message: String },
    /// The item could not be run: it failed to decode, or its result failed to encode
    /// or was too large.
    Undeliverable { deliveries: u32, message: String },
}

pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    postcard::to_stdvec(value).map_err(|error| error.to_string())
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|error| error.to_string())
}

/// The failure outcome for an item that could not be run, encoded (it holds no user
/// type, so it always encodes).
pub(crate) fn undeliverable(deliveries: u64, message: String) -> Vec<u8> {
    let outcome: Outcome<(), ()> = Outcome::Undeliverable {
        deliveries: clamp(deliveries),
        message,
    };
    encode(&outcome).expect("flowgate: a failure outcome always encodes")
}

pub(crate) fn clamp(deliveries: u64) -> u32 {
    u32::try_from(deliveries).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undeliverable_outcome_decodes_as_any_outcome_type() {
        let bytes = undeliverable(3, "bad".into());
        let outcome: Outcome<Vec<String>, std::collections::HashMap<String, u8>> =
            decode(&bytes).unwrap();
        assert_eq!(
            outcome,
            Outcome::Undeliverable {
                deliveries: 3,
                message: "bad".into()
            }
        );
    }

    #[test]
    fn outcomes_round_trip() {
        let done: Outcome<Vec<u32>, String> = Outcome::Done(vec![1, 2]);
        assert_eq!(
            decode::<Outcome<Vec<u32>, String>>(&encode(&done).unwrap()).unwrap(),
            done
        );
        let failed: Outcome<Vec<u32>, String> = Outcome::Failed {
            deliveries: 2,
            error: "no".into(),
        };
        assert_eq!(
            decode::<Outcome<Vec<u32>, String>>(&encode(&failed).unwrap()).unwrap(),
            failed
        );
        assert!(decode::<Outcome<u8, u8>>(&[0xff, 0xff]).is_err());
    }
}
