//! Exact arithmetic on Online Boutique's `Money`.
//!
//! [`Money`] mirrors `hipstershop.Money`: an ISO 4217 currency code, whole
//! `units` and `nanos` (10^-9 units). A value is valid when the code is three
//! upper-case ASCII letters, `nanos` lies in `-999_999_999..=999_999_999` and
//! `units` and `nanos` do not have opposite signs (`units == 0` with negative
//! `nanos` is a valid amount between -1 and 0).
//!
//! Every operation computes on the amount in nanos as an `i128`, which holds
//! any `i64` units times 10^9 (and products by any `u32` quantity) without
//! overflow, then checks once that the result fits back into `Money`.
//!
//! Unlike the upstream Go service, nothing here panics on invalid money from a
//! peer (operations validate their operands and return [`MoneyError`]), a
//! quantity of 0 costs nothing, and quantities multiply rather than add up in
//! a loop.
//!
//! [`Money::to_decimal`] and [`Money::from_decimal`] convert to and from
//! [`Decimal`], the type stored in PostgreSQL `numeric(28,9)`: 19 integer
//! digits hold any `i64` and 9 fractional digits hold any `nanos`, so the round
//! trip is exact for every valid `Money`.

use std::fmt;

use rust_decimal::Decimal;

/// Nanos in one unit.
const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// Largest magnitude of `nanos` in a valid `Money`.
const MAX_NANOS: i32 = 999_999_999;

/// Decimal scale of an amount counted in nanos.
const NANOS_SCALE: u32 = 9;

// `to_decimal` packs the amount in nanos into Decimal's 96-bit mantissa
// without a fallible conversion; this holds even for invalid fields
// (any i64 units, any i32 nanos), so it can never lose bits.
const _: () = assert!(
    (i64::MIN as i128).unsigned_abs() * (NANOS_PER_UNIT as u128)
        + (i32::MIN as i128).unsigned_abs()
        < 1u128 << 96
);

/// An amount of money in one currency, as `hipstershop.Money` carries it.
///
/// The fields are public because values arrive from peers over gRPC; call
/// [`Money::validate`] on those before trusting them. Values built with
/// [`Money::new`] or returned by the arithmetic here are always valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Money {
    /// ISO 4217 code: three upper-case ASCII letters such as `USD`.
    pub currency_code: String,
    /// Whole units of the amount.
    pub units: i64,
    /// Billionths of a unit, with the same sign as `units` when both are non-zero.
    pub nanos: i32,
}

/// Why an amount of money was rejected or could not be computed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    /// The currency code is not three upper-case ASCII letters.
    #[error("invalid currency code {0:?}: expected three upper-case letters such as USD")]
    InvalidCurrencyCode(String),
    /// `nanos` is outside `-999_999_999..=999_999_999`.
    #[error("nanos {0} out of range: must be between -999999999 and 999999999")]
    NanosOutOfRange(i32),
    /// `units` and `nanos` have opposite signs.
    #[error("sign of units {units} differs from sign of nanos {nanos}")]
    SignMismatch {
        /// The `units` field received.
        units: i64,
        /// The `nanos` field received.
        nanos: i32,
    },
    /// Two amounts in different currencies were combined.
    #[error("currency mismatch: expected {expected}, found {found}")]
    CurrencyMismatch {
        /// The currency of the left operand (or the one asked for in a sum).
        expected: String,
        /// The other currency.
        found: String,
    },
    /// The result does not fit in `Money` (its units would exceed an `i64`).
    #[error("amount overflow: units of the result do not fit in a signed 64-bit integer")]
    Overflow,
    /// A decimal amount is more precise than nanos.
    #[error("amount {0} has more than 9 fractional digits")]
    TooManyFractionalDigits(Decimal),
}

impl Money {
    /// Builds a `Money`, checking the currency code, the range of `nanos` and
    /// the sign rule.
    pub fn new(
        currency_code: impl Into<String>,
        units: i64,
        nanos: i32,
    ) -> Result<Money, MoneyError> {
        let money = Money {
            currency_code: currency_code.into(),
            units,
            nanos,
        };
        money.validate()?;
        Ok(money)
    }

    /// Zero in the given currency.
    pub fn zero(currency_code: impl Into<String>) -> Result<Money, MoneyError> {
        Money::new(currency_code, 0, 0)
    }

    /// Checks the invariants of a valid `Money`; use it on values from peers.
    pub fn validate(&self) -> Result<(), MoneyError> {
        validate_currency_code(&self.currency_code)?;
        if !(-MAX_NANOS..=MAX_NANOS).contains(&self.nanos) {
            return Err(MoneyError::NanosOutOfRange(self.nanos));
        }
        if (self.units > 0 && self.nanos < 0) || (self.units < 0 && self.nanos > 0) {
            return Err(MoneyError::SignMismatch {
                units: self.units,
                nanos: self.nanos,
            });
        }
        Ok(())
    }

    /// `self + other`; both must be valid and in the same currency.
    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        self.validate()?;
        other.validate()?;
        check_same_currency(&self.currency_code, &other.currency_code)?;
        // Cannot overflow: each operand is below 2^94 in magnitude.
        let total = self.total_nanos() + other.total_nanos();
        Money::from_total_nanos(&self.currency_code, total)
    }

    /// `self * quantity`, computed in one multiplication; quantity 0 gives zero.
    pub fn checked_mul(&self, quantity: u32) -> Result<Money, MoneyError> {
        self.validate()?;
        // Below 2^94 * 2^32 in magnitude, so this never overflows i128;
        // checked anyway so that no arithmetic here can panic.
        let total = self
            .total_nanos()
            .checked_mul(i128::from(quantity))
            .ok_or(MoneyError::Overflow)?;
        Money::from_total_nanos(&self.currency_code, total)
    }

    /// The sum of `items`, all of which must be valid and in `currency_code`.
    ///
    /// No items sum to zero. Only the final result must fit in `Money`: a
    /// running total that leaves the range and comes back is not an error.
    pub fn sum<'a>(
        currency_code: &str,
        items: impl IntoIterator<Item = &'a Money>,
    ) -> Result<Money, MoneyError> {
        validate_currency_code(currency_code)?;
        let mut total: i128 = 0;
        for item in items {
            item.validate()?;
            check_same_currency(currency_code, &item.currency_code)?;
            // Only some 2^33 maximal items could overflow i128.
            total = total
                .checked_add(item.total_nanos())
                .ok_or(MoneyError::Overflow)?;
        }
        Money::from_total_nanos(currency_code, total)
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.units == 0 && self.nanos == 0
    }

    /// Whether the amount is below zero.
    pub fn is_negative(&self) -> bool {
        self.units < 0 || self.nanos < 0
    }

    /// The amount as a [`Decimal`] with scale 9, exactly.
    ///
    /// Never fails, even on invalid fields: the result is then
    /// `units + nanos / 10^9`. The currency is not part of the result.
    pub fn to_decimal(&self) -> Decimal {
        let total = self.total_nanos();
        let magnitude = total.unsigned_abs();
        // The const assertion above guarantees the magnitude fits in 96 bits,
        // so splitting it into three 32-bit words drops nothing.
        Decimal::from_parts(
            magnitude as u32,
            (magnitude >> 32) as u32,
            (magnitude >> 64) as u32,
            total < 0,
            NANOS_SCALE,
        )
    }

    /// Converts a [`Decimal`] amount into `Money` in `currency_code`.
    ///
    /// Trailing fractional zeros do not count, so `1.500000000000` is fine;
    /// any non-zero digit beyond the ninth is an error rather than rounded.
    pub fn from_decimal(
        currency_code: impl Into<String>,
        amount: Decimal,
    ) -> Result<Money, MoneyError> {
        let currency_code = currency_code.into();
        validate_currency_code(&currency_code)?;
        let normalized = amount.normalize();
        let Some(missing_digits) = NANOS_SCALE.checked_sub(normalized.scale()) else {
            return Err(MoneyError::TooManyFractionalDigits(normalized));
        };
        // The mantissa is below 2^96 and the factor at most 10^9 < 2^30.
        let total = normalized
            .mantissa()
            .checked_mul(10i128.pow(missing_digits))
            .ok_or(MoneyError::Overflow)?;
        Money::from_total_nanos(&currency_code, total)
    }

    /// The amount in nanos; exact for any fields, valid or not.
    fn total_nanos(&self) -> i128 {
        i128::from(self.units) * NANOS_PER_UNIT + i128::from(self.nanos)
    }

    /// Splits an amount in nanos into valid `Money`.
    fn from_total_nanos(currency_code: &str, total: i128) -> Result<Money, MoneyError> {
        // `/` and `%` truncate toward zero, so units and nanos both take the
        // sign of `total`, which is exactly the sign rule.
        let units = i64::try_from(total / NANOS_PER_UNIT).map_err(|_| MoneyError::Overflow)?;
        let nanos = i32::try_from(total % NANOS_PER_UNIT).map_err(|_| MoneyError::Overflow)?;
        Ok(Money {
            currency_code: currency_code.to_owned(),
            units,
            nanos,
        })
    }
}

impl fmt::Display for Money {
    /// Shortest exact decimal, then the code: `19.99 USD`, `-0.5 EUR`, `1200 JPY`.
    ///
    /// Invalid values are shown field by field, so logs never present a
    /// misleading amount and escape whatever a peer put in the code.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.validate().is_ok() {
            write!(
                f,
                "{} {}",
                self.to_decimal().normalize(),
                self.currency_code
            )
        } else {
            write!(
                f,
                "invalid money (units {}, nanos {}, currency code {:?})",
                self.units, self.nanos, self.currency_code
            )
        }
    }
}

/// Checks that `code` looks like an ISO 4217 code (three upper-case ASCII letters).
fn validate_currency_code(code: &str) -> Result<(), MoneyError> {
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(MoneyError::InvalidCurrencyCode(code.to_owned()))
    }
}

/// Fails unless both codes are the same currency.
fn check_same_currency(expected: &str, found: &str) -> Result<(), MoneyError> {
    if expected == found {
        Ok(())
    } else {
        Err(MoneyError::CurrencyMismatch {
            expected: expected.to_owned(),
            found: found.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn usd(units: i64, nanos: i32) -> Money {
        Money::new("USD", units, nanos).unwrap()
    }

    fn dec(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    /// A struct literal, as a peer could send it: nothing is checked.
    fn raw(code: &str, units: i64, nanos: i32) -> Money {
        Money {
            currency_code: code.to_owned(),
            units,
            nanos,
        }
    }

    // --- validation -------------------------------------------------------

    #[test]
    fn new_accepts_valid_amounts() {
        for (units, nanos) in [
            (19, 990_000_000),
            (0, 0),
            (0, 500_000_000),
            (0, -500_000_000),
            (-3, -1),
            (5, 0),
            (-5, 0),
            (i64::MAX, 999_999_999),
            (i64::MIN, -999_999_999),
        ] {
            let money = Money::new("USD", units, nanos).unwrap();
            assert_eq!(money, raw("USD", units, nanos));
        }
    }

    #[test]
    fn zero_is_zero_in_its_currency() {
        assert_eq!(Money::zero("EUR").unwrap(), raw("EUR", 0, 0));
        assert_eq!(
            Money::zero("eur"),
            Err(MoneyError::InvalidCurrencyCode("eur".into()))
        );
    }

    #[test]
    fn currency_code_must_be_three_upper_case_ascii_letters() {
        for code in [
            "", "US", "USDD", "usd", "Usd", "U$D", "US1", " USD", "ÜSD", "ÄB",
        ] {
            let expected = MoneyError::InvalidCurrencyCode(code.into());
            assert_eq!(Money::new(code, 1, 0), Err(expected));
            assert_eq!(
                raw(code, 1, 0).validate(),
                Err(MoneyError::InvalidCurrencyCode(code.into()))
            );
        }
        let message = MoneyError::InvalidCurrencyCode("usd".into()).to_string();
        assert!(message.contains("\"usd\""), "{message}");
        assert!(
            message.contains("three upper-case letters such as USD"),
            "{message}"
        );
    }

    #[test]
    fn nanos_must_be_below_one_unit() {
        for nanos in [1_000_000_000, -1_000_000_000, i32::MAX, i32::MIN] {
            assert_eq!(
                Money::new("USD", 0, nanos),
                Err(MoneyError::NanosOutOfRange(nanos))
            );
        }
        assert!(Money::new("USD", 0, 999_999_999).is_ok());
        assert!(Money::new("USD", 0, -999_999_999).is_ok());
        let message = MoneyError::NanosOutOfRange(1_000_000_000).to_string();
        assert!(
            message.contains("nanos 1000000000 out of range"),
            "{message}"
        );
    }

    #[test]
    fn units_and_nanos_must_not_have_opposite_signs() {
        for (units, nanos) in [(1, -1), (-1, 1), (i64::MAX, -999_999_999), (i64::MIN, 1)] {
            assert_eq!(
                Money::new("USD", units, nanos),
                Err(MoneyError::SignMismatch { units, nanos })
            );
        }
        let message = MoneyError::SignMismatch {
            units: 1,
            nanos: -5,
        }
        .to_string();
        assert!(message.contains("sign of units 1"), "{message}");
        assert!(message.contains("nanos -5"), "{message}");
    }

    #[test]
    fn validate_checks_values_built_from_fields() {
        assert_eq!(raw("USD", 1, 5).validate(), Ok(()));
        assert_eq!(
            raw("USD", 1, 1_000_000_000).validate(),
            Err(MoneyError::NanosOutOfRange(1_000_000_000))
        );
        assert_eq!(
            raw("USD", -1, 5).validate(),
            Err(MoneyError::SignMismatch {
                units: -1,
                nanos: 5
            })
        );
    }

    #[test]
    fn predicates() {
        assert!(usd(0, 0).is_zero());
        assert!(!usd(0, 0).is_negative());
        assert!(!usd(0, 1).is_zero());
        assert!(!usd(1, 0).is_zero());
        assert!(usd(0, -1).is_negative());
        assert!(usd(-1, 0).is_negative());
        assert!(!usd(1, 1).is_negative());
    }

    // --- addition ---------------------------------------------------------

    #[test]
    fn add_carries_nanos_into_units() {
        assert_eq!(
            usd(0, 600_000_000).checked_add(&usd(0, 600_000_000)),
            Ok(usd(1, 200_000_000))
        );
        assert_eq!(usd(1, 999_999_999).checked_add(&usd(0, 1)), Ok(usd(2, 0)));
        assert_eq!(
            usd(-1, -999_999_999).checked_add(&usd(0, -1)),
            Ok(usd(-2, 0))
        );
    }

    #[test]
    fn add_of_mixed_signs_keeps_the_sign_rule() {
        assert_eq!(
            usd(1, 200_000_000).checked_add(&usd(0, -500_000_000)),
            Ok(usd(0, 700_000_000))
        );
        assert_eq!(
            usd(-1, -200_000_000).checked_add(&usd(0, 500_000_000)),
            Ok(usd(0, -700_000_000))
        );
        assert_eq!(
            usd(0, 300_000_000).checked_add(&usd(-1, 0)),
            Ok(usd(0, -700_000_000))
        );
        assert_eq!(
            usd(2, 100_000_000).checked_add(&usd(-1, -300_000_000)),
            Ok(usd(0, 800_000_000))
        );
        assert_eq!(usd(5, 5).checked_add(&usd(-5, -5)), Ok(usd(0, 0)));
    }

    #[test]
    fn add_rejects_different_currencies() {
        let err = usd(1, 0)
            .checked_add(&Money::new("EUR", 1, 0).unwrap())
            .unwrap_err();
        assert_eq!(
            err,
            MoneyError::CurrencyMismatch {
                expected: "USD".into(),
                found: "EUR".into()
            }
        );
        let message = err.to_string();
        assert!(
            message.contains("USD") && message.contains("EUR"),
            "{message}"
        );
    }

    #[test]
    fn add_reports_overflow_at_both_ends() {
        let max = usd(i64::MAX, 999_999_999);
        let min = usd(i64::MIN, -999_999_999);
        assert_eq!(max.checked_add(&usd(0, 1)), Err(MoneyError::Overflow));
        assert_eq!(min.checked_add(&usd(0, -1)), Err(MoneyError::Overflow));
        assert_eq!(max.checked_add(&max), Err(MoneyError::Overflow));
        assert_eq!(max.checked_add(&usd(0, -1)), Ok(usd(i64::MAX, 999_999_998)));
        assert_eq!(max.checked_add(&min), Ok(usd(-1, 0)));
        assert!(MoneyError::Overflow.to_string().contains("overflow"));
    }

    #[test]
    fn add_rejects_invalid_operands() {
        let bad = raw("USD", 1, -1);
        let err = Err(MoneyError::SignMismatch {
            units: 1,
            nanos: -1,
        });
        assert_eq!(usd(1, 0).checked_add(&bad), err);
        assert_eq!(bad.checked_add(&usd(1, 0)), err);
        assert_eq!(
            usd(1, 0).checked_add(&raw("usd", 1, 0)),
            Err(MoneyError::InvalidCurrencyCode("usd".into()))
        );
    }

    // --- multiplication ---------------------------------------------------

    #[test]
    fn mul_multiplies_units_and_nanos() {
        assert_eq!(
            usd(19, 990_000_000).checked_mul(3),
            Ok(usd(59, 970_000_000))
        );
        assert_eq!(usd(0, 500_000_000).checked_mul(3), Ok(usd(1, 500_000_000)));
        assert_eq!(usd(0, -750_000_000).checked_mul(4), Ok(usd(-3, 0)));
        assert_eq!(usd(-2, -1).checked_mul(2), Ok(usd(-4, -2)));
        assert_eq!(usd(7, 7).checked_mul(1), Ok(usd(7, 7)));
    }

    #[test]
    fn mul_by_zero_is_zero_not_one() {
        assert_eq!(usd(19, 990_000_000).checked_mul(0), Ok(usd(0, 0)));
        assert_eq!(usd(i64::MIN, -999_999_999).checked_mul(0), Ok(usd(0, 0)));
        let yen = Money::new("JPY", 1200, 0).unwrap();
        assert_eq!(yen.checked_mul(0), Money::zero("JPY"));
    }

    #[test]
    fn mul_by_huge_quantity_is_one_multiplication() {
        // By repeated addition this would take billions of steps.
        assert_eq!(usd(0, 1).checked_mul(u32::MAX), Ok(usd(4, 294_967_295)));
        assert_eq!(usd(1, 0).checked_mul(u32::MAX), Ok(usd(4_294_967_295, 0)));
        assert_eq!(
            usd(-1, -500_000_000).checked_mul(u32::MAX),
            Ok(usd(-6_442_450_942, -500_000_000))
        );
    }

    #[test]
    fn mul_reports_overflow() {
        assert_eq!(usd(i64::MAX, 0).checked_mul(2), Err(MoneyError::Overflow));
        assert_eq!(usd(i64::MIN, 0).checked_mul(2), Err(MoneyError::Overflow));
        assert_eq!(
            usd(i64::MAX, 999_999_999).checked_mul(u32::MAX),
            Err(MoneyError::Overflow)
        );
        // The nanos alone push the result over the edge.
        let half = i64::MAX / 2; // 2 * half == i64::MAX - 1
        assert_eq!(
            usd(half, 999_999_999).checked_mul(2),
            Ok(usd(i64::MAX, 999_999_998))
        );
        assert_eq!(usd(half + 1, 0).checked_mul(2), Err(MoneyError::Overflow));
        assert_eq!(
            usd(i64::MIN / 2, -499_999_999).checked_mul(2),
            Ok(usd(i64::MIN, -999_999_998))
        );
        assert_eq!(
            usd(i64::MIN / 2, -500_000_000).checked_mul(2),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn mul_rejects_invalid_money() {
        assert_eq!(
            raw("USD", 0, i32::MAX).checked_mul(0),
            Err(MoneyError::NanosOutOfRange(i32::MAX))
        );
    }

    // --- sum --------------------------------------------------------------

    #[test]
    fn sum_of_nothing_is_zero() {
        assert_eq!(Money::sum("EUR", []), Money::zero("EUR"));
        assert_eq!(
            Money::sum("euro", []),
            Err(MoneyError::InvalidCurrencyCode("euro".into()))
        );
    }

    #[test]
    fn sum_adds_with_carry() {
        let items = [
            usd(1, 500_000_000),
            usd(2, 600_000_000),
            usd(0, -50_000_000),
        ];
        assert_eq!(Money::sum("USD", &items), Ok(usd(4, 50_000_000)));
        assert_eq!(Money::sum("USD", items.iter()), Ok(usd(4, 50_000_000)));
    }

    #[test]
    fn sum_rejects_other_currencies_and_invalid_items() {
        let items = [usd(1, 0), Money::new("EUR", 1, 0).unwrap()];
        assert_eq!(
            Money::sum("USD", &items),
            Err(MoneyError::CurrencyMismatch {
                expected: "USD".into(),
                found: "EUR".into()
            })
        );
        assert_eq!(
            Money::sum("USD", &[usd(1, 0), raw("USD", 0, -1_000_000_000)]),
            Err(MoneyError::NanosOutOfRange(-1_000_000_000))
        );
    }

    #[test]
    fn sum_judges_overflow_on_the_result_only() {
        let max = usd(i64::MAX, 999_999_999);
        assert_eq!(
            Money::sum("USD", &[max.clone(), usd(0, 1), usd(0, -1)]),
            Ok(max.clone())
        );
        assert_eq!(
            Money::sum("USD", &[max.clone(), usd(0, 1)]),
            Err(MoneyError::Overflow)
        );
    }

    // --- decimal ----------------------------------------------------------

    #[test]
    fn to_decimal_is_exact_with_nine_digits() {
        for (money, text) in [
            (usd(19, 990_000_000), "19.990000000"),
            (usd(0, -500_000_000), "-0.500000000"),
            (usd(-3, -1), "-3.000000001"),
            (usd(0, 0), "0.000000000"),
            (usd(i64::MAX, 999_999_999), "9223372036854775807.999999999"),
            (
                usd(i64::MIN, -999_999_999),
                "-9223372036854775808.999999999",
            ),
        ] {
            let decimal = money.to_decimal();
            assert_eq!(decimal.to_string(), text);
            assert_eq!(decimal.scale(), 9);
        }
    }

    #[test]
    fn from_decimal_accepts_up_to_nine_fractional_digits() {
        for (text, units, nanos) in [
            ("19.99", 19, 990_000_000),
            ("-0.5", 0, -500_000_000),
            ("1200", 1200, 0),
            ("0.000000001", 0, 1),
            ("-0", 0, 0),
            // Trailing zeros are not precision.
            ("1.500000000000000", 1, 500_000_000),
            ("9223372036854775807.999999999", i64::MAX, 999_999_999),
            ("-9223372036854775808.999999999", i64::MIN, -999_999_999),
        ] {
            assert_eq!(
                Money::from_decimal("USD", dec(text)),
                Ok(usd(units, nanos)),
                "{text}"
            );
        }
    }

    #[test]
    fn from_decimal_rejects_sub_nano_digits() {
        for text in [
            "0.0000000001",
            "-1.0000000005",
            "0.0000000000000000000000000001",
        ] {
            assert_eq!(
                Money::from_decimal("USD", dec(text)),
                Err(MoneyError::TooManyFractionalDigits(dec(text))),
                "{text}"
            );
        }
        let message = MoneyError::TooManyFractionalDigits(dec("0.0000000001")).to_string();
        assert!(message.contains("0.0000000001"), "{message}");
        assert!(
            message.contains("more than 9 fractional digits"),
            "{message}"
        );
    }

    #[test]
    fn from_decimal_rejects_units_beyond_i64() {
        for text in [
            "9223372036854775808",
            "-9223372036854775809",
            "79228162514264337593543950335",
            "-79228162514264337593543950335",
        ] {
            assert_eq!(
                Money::from_decimal("USD", dec(text)),
                Err(MoneyError::Overflow),
                "{text}"
            );
        }
    }

    #[test]
    fn from_decimal_checks_the_currency_code() {
        assert_eq!(
            Money::from_decimal("US", dec("1")),
            Err(MoneyError::InvalidCurrencyCode("US".into()))
        );
    }

    // --- display ----------------------------------------------------------

    #[test]
    fn display_is_the_shortest_exact_decimal_then_the_code() {
        for (money, text) in [
            (usd(19, 990_000_000), "19.99 USD"),
            (Money::new("EUR", 0, -500_000_000).unwrap(), "-0.5 EUR"),
            (Money::new("JPY", 1200, 0).unwrap(), "1200 JPY"),
            (usd(0, 0), "0 USD"),
            (usd(0, 1), "0.000000001 USD"),
            (usd(-10, 0), "-10 USD"),
            (
                usd(i64::MIN, -999_999_999),
                "-9223372036854775808.999999999 USD",
            ),
        ] {
            assert_eq!(money.to_string(), text);
        }
    }

    #[test]
    fn display_of_invalid_money_shows_the_fields() {
        assert_eq!(
            raw("us\nd", 1, -5).to_string(),
            "invalid money (units 1, nanos -5, currency code \"us\\nd\")"
        );
    }

    // --- properties against independent references ------------------------

    mod properties {
        use proptest::prelude::*;
        use rust_decimal::prelude::ToPrimitive;

        use super::*;

        const NANOS: i32 = 999_999_999;

        /// Units biased toward the edges of `i64`, where carries overflow.
        fn units() -> impl Strategy<Value = i64> {
            prop_oneof![
                3 => -2_000i64..2_000,
                3 => any::<i64>(),
                1 => Just(0i64),
                1 => (i64::MAX - 3)..=i64::MAX,
                1 => i64::MIN..=(i64::MIN + 3),
            ]
        }

        /// Magnitudes of nanos biased toward 0 and 999_999_999, where carries happen.
        fn nanos_magnitude() -> impl Strategy<Value = i32> {
            prop_oneof![
                3 => 0..=NANOS,
                1 => 0..4,
                1 => (NANOS - 3)..=NANOS,
                1 => prop_oneof![Just(500_000_000), Just(499_999_999), Just(500_000_001)],
            ]
        }

        /// Any valid `Money` in `code`, built field by field (not from a total).
        fn valid_money(code: &'static str) -> impl Strategy<Value = Money> {
            (units(), nanos_magnitude(), any::<bool>()).prop_map(
                move |(units, magnitude, negative)| {
                    let negative = units < 0 || (units == 0 && negative);
                    let nanos = if negative { -magnitude } else { magnitude };
                    raw(code, units, nanos)
                },
            )
        }

        /// Anything a peer could send, valid or not.
        fn any_money() -> impl Strategy<Value = Money> {
            let code = prop_oneof![Just("USD".to_owned()), "[A-Za-z0-9]{0,4}", any::<String>(),];
            let nanos = prop_oneof![any::<i32>(), -1_000_000_002..=1_000_000_002];
            (code, units(), nanos).prop_map(|(code, units, nanos)| raw(&code, units, nanos))
        }

        /// Any `Decimal`: every 96-bit mantissa, every scale.
        fn any_decimal() -> impl Strategy<Value = Decimal> {
            const MAX_MANTISSA: i128 = (1 << 96) - 1;
            let mantissa = prop_oneof![
                -MAX_MANTISSA..=MAX_MANTISSA,
                -10_000_000_000_000i128..10_000_000_000_000,
            ];
            (mantissa, 0..=Decimal::MAX_SCALE)
                .prop_map(|(mantissa, scale)| Decimal::from_i128_with_scale(mantissa, scale))
        }

        /// The amount as a decimal, computed without `to_decimal`.
        fn reference(money: &Money) -> Decimal {
            Decimal::from(money.units) + Decimal::new(i64::from(money.nanos), 9)
        }

        /// What an operation must return for an exact decimal `result`.
        fn expected_from_reference(code: &str, result: Decimal) -> Result<Money, MoneyError> {
            let max = Decimal::from(i64::MAX) + Decimal::new(999_999_999, 9);
            let min = Decimal::from(i64::MIN) - Decimal::new(999_999_999, 9);
            if result > max || result < min {
                return Err(MoneyError::Overflow);
            }
            let nanos = result.fract() * Decimal::from(1_000_000_000);
            assert!(
                nanos.fract().is_zero(),
                "reference {result} is not in whole nanos"
            );
            Ok(raw(
                code,
                result.trunc().to_i64().unwrap(),
                nanos.to_i32().unwrap(),
            ))
        }

        /// The invariants, spelled out rather than through `validate`.
        fn assert_valid(money: &Money) {
            assert_eq!(money.currency_code.len(), 3);
            assert!(money.currency_code.bytes().all(|b| b.is_ascii_uppercase()));
            assert!((-NANOS..=NANOS).contains(&money.nanos), "{money:?}");
            assert!(
                money.units == 0 || money.nanos == 0 || (money.units > 0) == (money.nanos > 0),
                "{money:?}"
            );
        }

        /// Sum on (sum of units, sum of nanos) with floored carries, then
        /// moved to the sign rule: a different route from the code under test.
        fn reference_sum(code: &str, items: &[Money]) -> Result<Money, MoneyError> {
            const BILLION: i128 = 1_000_000_000;
            let units: i128 = items.iter().map(|m| i128::from(m.units)).sum();
            let nanos: i128 = items.iter().map(|m| i128::from(m.nanos)).sum();
            let floor_units = units + nanos.div_euclid(BILLION);
            let fraction = nanos.rem_euclid(BILLION); // 0 <= fraction < BILLION
            let (units, nanos) = if floor_units < 0 && fraction > 0 {
                (floor_units + 1, fraction - BILLION)
            } else {
                (floor_units, fraction)
            };
            let units = i64::try_from(units).map_err(|_| MoneyError::Overflow)?;
            Ok(raw(code, units, i32::try_from(nanos).unwrap()))
        }

        proptest! {
            #[test]
            fn generated_money_is_valid(money in valid_money("USD")) {
                assert_valid(&money);
                prop_assert_eq!(money.validate(), Ok(()));
            }

            #[test]
            fn add_matches_decimal_addition(a in valid_money("USD"), b in valid_money("USD")) {
                let expected = expected_from_reference("USD", reference(&a) + reference(&b));
                let actual = a.checked_add(&b);
                if let Ok(sum) = &actual {
                    assert_valid(sum);
                }
                prop_assert_eq!(actual, expected);
                prop_assert_eq!(a.checked_add(&b), b.checked_add(&a));
            }

            #[test]
            fn add_of_different_currencies_fails(a in valid_money("USD"), b in valid_money("EUR")) {
                prop_assert_eq!(
                    a.checked_add(&b),
                    Err(MoneyError::CurrencyMismatch { expected: "USD".into(), found: "EUR".into() })
                );
            }

            #[test]
            fn mul_matches_decimal_multiplication(
                money in valid_money("USD"),
                quantity in prop_oneof![Just(0u32), Just(1u32), 0..1_000u32, any::<u32>()],
            ) {
                // Beyond Decimal's range the product is far beyond Money's too.
                let expected = match reference(&money).checked_mul(Decimal::from(quantity)) {
                    Some(product) => expected_from_reference("USD", product),
                    None => Err(MoneyError::Overflow),
                };
                let actual = money.checked_mul(quantity);
                if let Ok(product) = &actual {
                    assert_valid(product);
                }
                prop_assert_eq!(actual, expected);
            }

            /// Units within a few of `i64::MAX / quantity` (or MIN), so the
            /// product lands on either side of the limit.
            #[test]
            fn mul_overflows_exactly_at_the_limit(
                quantity in 1..=u32::MAX,
                offset in -2i64..=2,
                magnitude in nanos_magnitude(),
                negative in any::<bool>(),
            ) {
                let limit = if negative { i64::MIN } else { i64::MAX } / i64::from(quantity);
                let units = limit.saturating_add(offset);
                let nanos = if units < 0 || (units == 0 && negative) { -magnitude } else { magnitude };
                let money = raw("USD", units, nanos);
                let expected = match reference(&money).checked_mul(Decimal::from(quantity)) {
                    Some(product) => expected_from_reference("USD", product),
                    None => Err(MoneyError::Overflow),
                };
                prop_assert_eq!(money.checked_mul(quantity), expected);
            }

            #[test]
            fn sum_matches_reference(items in prop::collection::vec(valid_money("USD"), 0..12)) {
                let actual = Money::sum("USD", &items);
                if let Ok(total) = &actual {
                    assert_valid(total);
                }
                prop_assert_eq!(actual, reference_sum("USD", &items));
            }

            #[test]
            fn sum_rejects_any_foreign_item(
                mut items in prop::collection::vec(valid_money("USD"), 0..6),
                foreign in valid_money("EUR"),
                index in any::<prop::sample::Index>(),
            ) {
                let at = index.index(items.len() + 1);
                items.insert(at, foreign);
                prop_assert_eq!(
                    Money::sum("USD", &items),
                    Err(MoneyError::CurrencyMismatch { expected: "USD".into(), found: "EUR".into() })
                );
            }

            #[test]
            fn decimal_round_trip_is_exact(money in valid_money("USD")) {
                let decimal = money.to_decimal();
                prop_assert_eq!(decimal, reference(&money));
                prop_assert_eq!(decimal.scale(), 9);
                prop_assert_eq!(Money::from_decimal("USD", decimal), Ok(money));
            }

            #[test]
            fn from_decimal_ignores_trailing_zeros(
                units in -1_000_000i64..1_000_000,
                magnitude in nanos_magnitude(),
                extra_zeros in 0u32..=10,
            ) {
                let nanos = if units < 0 { -magnitude } else { magnitude };
                let money = raw("USD", units, nanos);
                let mut decimal = money.to_decimal();
                decimal.rescale(9 + extra_zeros);
                prop_assert_eq!(decimal.scale(), 9 + extra_zeros);
                prop_assert_eq!(Money::from_decimal("USD", decimal), Ok(money));
            }

            #[test]
            fn from_decimal_accepts_exactly_the_representable(decimal in any_decimal()) {
                let whole_nanos = decimal.round_dp(9) == decimal;
                let fits = decimal.trunc().to_i64().is_some();
                match Money::from_decimal("USD", decimal) {
                    Ok(money) => {
                        assert_valid(&money);
                        prop_assert!(whole_nanos && fits);
                        prop_assert_eq!(money.to_decimal(), decimal);
                    }
                    Err(MoneyError::TooManyFractionalDigits(shown)) => {
                        prop_assert!(!whole_nanos);
                        prop_assert_eq!(shown, decimal);
                    }
                    Err(MoneyError::Overflow) => prop_assert!(whole_nanos && !fits),
                    Err(other) => prop_assert!(false, "unexpected {other:?}"),
                }
            }

            #[test]
            fn display_is_exact_and_shortest(money in valid_money("USD")) {
                let text = money.to_string();
                let (amount, code) = text.split_once(' ').unwrap();
                prop_assert_eq!(code, "USD");
                prop_assert_eq!(Decimal::from_str(amount).unwrap(), reference(&money));
                if amount.contains('.') {
                    prop_assert!(!amount.ends_with('0'), "{}", text);
                }
            }

            /// Invalid money from a peer is an error, never a panic or a
            /// silently wrong result.
            #[test]
            fn nothing_panics_on_any_input(
                a in any_money(),
                b in any_money(),
                quantity in any::<u32>(),
                decimal in any_decimal(),
            ) {
                let valid = a.validate().is_ok();
                let _ = (a.is_zero(), a.is_negative(), a.to_string());
                prop_assert_eq!(a.to_decimal(), reference(&a));
                let results = [
                    a.checked_add(&b),
                    a.checked_mul(quantity),
                    Money::sum("USD", [&a, &b]),
                    Money::from_decimal(a.currency_code.clone(), decimal),
                    Money::from_decimal(a.currency_code.clone(), a.to_decimal()),
                ];
                for money in results.iter().flatten() {
                    assert_valid(money);
                }
                if !valid {
                    prop_assert!(a.checked_add(&b).is_err());
                    prop_assert!(b.checked_add(&a).is_err());
                    prop_assert!(a.checked_mul(quantity).is_err());
                    prop_assert!(Money::sum("USD", [&a]).is_err());
                    prop_assert!(a.to_string().starts_with("invalid money"));
                }
            }
        }
    }
}
