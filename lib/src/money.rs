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
