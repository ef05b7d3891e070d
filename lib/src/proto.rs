//! Generated gRPC code for `proto/`, and conversions to the library's types.
//!
//! - [`hipstershop`]: Online Boutique's wire contract (messages, a client and
//!   a server for every service checkout serves or calls);
//! - [`orders_v1`]: our order-history API, `boutique.orders.v1`;
//! - [`FILE_DESCRIPTOR_SET`]: both files and their imports, encoded, for gRPC
//!   server reflection.
//!
//! `hipstershop::Money` arrives from peers unchecked: convert it with
//! [`Money::try_from`], which validates it, before doing arithmetic.

use crate::money::{Money, MoneyError};

/// Online Boutique's messages and services (package `hipstershop`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod hipstershop {
    tonic::include_proto!("hipstershop");
}

/// Generated code nests by package name; [`orders_v1`] is the short path.
#[allow(missing_docs)]
pub mod boutique {
    /// Package `boutique.orders`.
    pub mod orders {
        /// Our order-history API (package `boutique.orders.v1`).
        #[allow(missing_docs, clippy::all, clippy::pedantic)]
        pub mod v1 {
            tonic::include_proto!("boutique.orders.v1");
        }
    }
}

pub use boutique::orders::v1 as orders_v1;

/// The encoded `FileDescriptorSet` of every proto file (imports included),
/// for `tonic_reflection::server::Builder::register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));

impl TryFrom<hipstershop::Money> for Money {
    type Error = MoneyError;

    /// Accepts only valid money (currency code, nanos range, sign rule), so
    /// a peer's bad amount becomes an error instead of a wrong charge.
    fn try_from(value: hipstershop::Money) -> Result<Money, MoneyError> {
        Money::new(value.currency_code, value.units, value.nanos)
    }
}

impl TryFrom<&hipstershop::Money> for Money {
    type Error = MoneyError;

    /// Like the owned conversion, for a `Money` still inside a message.
    fn try_from(value: &hipstershop::Money) -> Result<Money, MoneyError> {
        Money::new(value.currency_code.clone(), value.units, value.nanos)
    }
}

impl From<Money> for hipstershop::Money {
    fn from(value: Money) -> hipstershop::Money {
        hipstershop::Money {
            currency_code: value.currency_code,
            units: value.units,
            nanos: value.nanos,
        }
    }
}

impl From<&Money> for hipstershop::Money {
    fn from(value: &Money) -> hipstershop::Money {
        hipstershop::Money::from(value.clone())
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    fn wire(code: &str, units: i64, nanos: i32) -> hipstershop::Money {
        hipstershop::Money {
            currency_code: code.to_owned(),
            units,
            nanos,
        }
    }

    #[test]
    fn valid_peer_money_converts_both_ways() {
        for (units, nanos) in [(19, 990_000_000), (0, -500_000_000), (-3, -1), (0, 0)] {
            let money = Money::try_from(wire("EUR", units, nanos)).unwrap();
            assert_eq!(money, Money::new("EUR", units, nanos).unwrap());
            assert_eq!(hipstershop::Money::from(&money), wire("EUR", units, nanos));
            assert_eq!(hipstershop::Money::from(money), wire("EUR", units, nanos));
        }
    }

    #[test]
    fn nanos_out_of_range_is_rejected() {
        for nanos in [1_000_000_000, -1_000_000_000, i32::MAX, i32::MIN] {
            assert_eq!(
                Money::try_from(wire("USD", 0, nanos)),
                Err(MoneyError::NanosOutOfRange(nanos))
            );
        }
    }

    #[test]
    fn sign_mismatch_is_rejected() {
        assert_eq!(
            Money::try_from(&wire("USD", 1, -1)),
            Err(MoneyError::SignMismatch {
                units: 1,
                nanos: -1
            })
        );
        assert_eq!(
            Money::try_from(wire("USD", -5, 990_000_000)),
            Err(MoneyError::SignMismatch {
                units: -5,
                nanos: 990_000_000
            })
        );
    }

    #[test]
    fn bad_currency_code_is_rejected() {
        // An empty code is what a peer sends when it forgets the field.
        for code in ["", "usd", "US", "USDX"] {
            assert_eq!(
                Money::try_from(wire(code, 1, 0)),
                Err(MoneyError::InvalidCurrencyCode(code.to_owned()))
            );
        }
    }

    #[test]
    fn descriptor_set_holds_both_packages_and_imports() {
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let names: Vec<&str> = fds.file.iter().map(|f| f.name()).collect();
        for expected in [
            "hipstershop/demo.proto",
            "orders/v1/orders.proto",
            "google/protobuf/timestamp.proto",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
    }

    #[test]
    fn reflection_accepts_descriptor_set() {
        // build_v1 resolves every symbol; a missing import fails here.
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .build_v1()
            .unwrap();
    }

    #[test]
    fn place_order_request_skips_field_four() {
        // The frontend encodes email as field 5; a renumbering would silently
        // drop it.
        let request = hipstershop::PlaceOrderRequest {
            email: "a@b.c".to_owned(),
            ..Default::default()
        };
        assert_eq!(request.encode_to_vec(), b"\x2a\x05a@b.c");
    }
}
