//! Money as integers.
//!
//! An [`Amount`] is a count of an asset's smallest unit (USDC has 6 decimals, so `1.5` USDC is
//! `1_500_000` base units). Amounts enter as decimal strings (`"100.00"`), are checked against
//! the asset's decimals — a value with more fractional digits than the asset has is an error,
//! never rounded — and leave as decimal strings again. The database stores the base units as
//! canonical decimal text ([`Amount::to_base_units_string`]), so values sort and compare in Rust,
//! never through floating point.

use std::fmt;
use std::str::FromStr;

use alloy_primitives::U256;

/// A non-negative amount of an asset in base units.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(U256);

/// Why a decimal string is not a valid amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// The string is empty.
    #[error("amount is empty")]
    Empty,
    /// The string contains something other than digits and at most one decimal point.
    #[error("amount must be a decimal number such as \"10.50\"")]
    Malformed,
    /// The value has more fractional digits than the asset supports.
    #[error("amount has more than {decimals} decimal places")]
    TooPrecise {
        /// The number of decimals the asset has.
        decimals: u8,
    },
    /// The value does not fit in 256 bits.
    #[error("amount is too large")]
    Overflow,
}

impl Amount {
    /// Zero base units.
    pub const ZERO: Amount = Amount(U256::ZERO);

    /// Wraps a count of base units.
    pub const fn from_base_units(units: U256) -> Self {
        Amount(units)
    }

    /// The count of base units.
    pub const fn base_units(self) -> U256 {
        self.0
    }

    /// Whether this amount is zero.
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// Parses a human decimal string such as `"100.5"` for an asset with `decimals` decimals.
    ///
    /// Accepts digits with at most one `.`; a leading or trailing `.` is allowed (`".5"`,
    /// `"5."`), signs, exponents, whitespace and separators are not.
    ///
    /// # Errors
    /// [`AmountError::TooPrecise`] when the value has more fractional digits than `decimals`
    /// (trailing zeros beyond `decimals` are still rejected, so that `"1.0000001"` and
    /// `"1.0000000"` are treated alike), [`AmountError::Malformed`] for anything that is not a
    /// plain decimal, [`AmountError::Overflow`] past `U256::MAX`.
    pub fn parse_decimal(text: &str, decimals: u8) -> Result<Self, AmountError> {
        if text.is_empty() {
            return Err(AmountError::Empty);
        }
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (text, ""),
        };
        let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && fraction.is_empty()) || !all_digits(whole) || !all_digits(fraction)
        {
            return Err(AmountError::Malformed);
        }
        if fraction.len() > usize::from(decimals) {
            return Err(AmountError::TooPrecise { decimals });
        }
        let mut digits = String::with_capacity(whole.len() + usize::from(decimals));
        digits.push_str(whole);
        digits.push_str(fraction);
        digits.extend(std::iter::repeat_n(
            '0',
            usize::from(decimals) - fraction.len(),
        ));
        let digits = digits.trim_start_matches('0');
        if digits.is_empty() {
            return Ok(Amount::ZERO);
        }
        U256::from_str_radix(digits, 10)
            .map(Amount)
            .map_err(|_| AmountError::Overflow)
    }

    /// Formats the amount as a decimal string with exactly `decimals` fractional digits trimmed
    /// of trailing zeros (`1_500_000` with 6 decimals is `"1.5"`; whole numbers have no point).
    pub fn to_decimal_string(self, decimals: u8) -> String {
        let digits = self.0.to_string();
        let decimals = usize::from(decimals);
        if decimals == 0 {
            return digits;
        }
        let padded = if digits.len() <= decimals {
            format!("{}{digits}", "0".repeat(decimals + 1 - digits.len()))
        } else {
            digits
        };
        let (whole, fraction) = padded.split_at(padded.len() - decimals);
        let fraction = fraction.trim_end_matches('0');
        if fraction.is_empty() {
            whole.to_owned()
        } else {
            format!("{whole}.{fraction}")
        }
    }

    /// Formats with a fixed number of fractional digits (at least `min_fraction_digits`, never
    /// fewer than needed to be exact), e.g. `"100.00"` for a price shown to two places.
    pub fn to_decimal_string_min(self, decimals: u8, min_fraction_digits: u8) -> String {
        let exact = self.to_decimal_string(decimals);
        let min = usize::from(min_fraction_digits.min(decimals));
        if min == 0 {
            return exact;
        }
        let present = exact.split_once('.').map_or(0, |(_, f)| f.len());
        if present >= min {
            return exact;
        }
        let mut out = exact;
        if present == 0 {
            out.push('.');
        }
        out.extend(std::iter::repeat_n('0', min - present));
        out
    }

    /// The canonical database form: base units as a decimal integer without leading zeros.
    pub fn to_base_units_string(self) -> String {
        self.0.to_string()
    }

    /// Parses the canonical database form written by [`Amount::to_base_units_string`].
    ///
    /// # Errors
    /// [`AmountError::Malformed`] unless the text is a canonical decimal integer.
    pub fn from_base_units_str(text: &str) -> Result<Self, AmountError> {
        let canonical = !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && (text == "0" || !text.starts_with('0'));
        if !canonical {
            return Err(AmountError::Malformed);
        }
        U256::from_str_radix(text, 10)
            .map(Amount)
            .map_err(|_| AmountError::Overflow)
    }

    /// Adds two amounts, `None` on overflow.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    /// Subtracts, `None` when `other` is larger.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({})", self.0)
    }
}

impl fmt::Display for Amount {
    /// Displays base units; use [`Amount::to_decimal_string`] for human units.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Amount {
    type Err = AmountError;

    /// Parses canonical base units, as stored.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Amount::from_base_units_str(text)
    }
}

impl From<u64> for Amount {
    fn from(units: u64) -> Self {
        Amount(U256::from(units))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str, decimals: u8) -> Result<Amount, AmountError> {
        Amount::parse_decimal(text, decimals)
    }

    #[test]
    fn parses_whole_and_fractional_values_into_base_units() {
        assert_eq!(parse("100.00", 6), Ok(Amount::from(100_000_000)));
        assert_eq!(parse("1.5", 6), Ok(Amount::from(1_500_000)));
        assert_eq!(parse(".5", 6), Ok(Amount::from(500_000)));
        assert_eq!(parse("5.", 6), Ok(Amount::from(5_000_000)));
        assert_eq!(parse("0", 18), Ok(Amount::ZERO));
        assert_eq!(parse("0.000001", 6), Ok(Amount::from(1)));
        assert_eq!(parse("007", 0), Ok(Amount::from(7)));
    }

    #[test]
    fn rejects_more_decimals_than_the_asset_has_instead_of_rounding() {
        assert_eq!(
            parse("1.0000001", 6),
            Err(AmountError::TooPrecise { decimals: 6 })
        );
        assert_eq!(
            parse("1.0000000", 6),
            Err(AmountError::TooPrecise { decimals: 6 })
        );
        assert_eq!(
            parse("1.5", 0),
            Err(AmountError::TooPrecise { decimals: 0 })
        );
    }

    #[test]
    fn rejects_anything_but_plain_decimals() {
        for bad in [
            "-1", "+1", "1e6", " 1", "1 ", "1,000", "1.2.3", ".", "0x10", "１",
        ] {
            assert_eq!(parse(bad, 6), Err(AmountError::Malformed), "{bad:?}");
        }
        assert_eq!(parse("", 6), Err(AmountError::Empty));
    }

    #[test]
    fn rejects_values_past_u256() {
        let too_big = format!("{}0", U256::MAX);
        assert_eq!(parse(&too_big, 0), Err(AmountError::Overflow));
        assert_eq!(parse(&U256::MAX.to_string(), 0), Ok(Amount(U256::MAX)));
    }

    #[test]
    fn formats_without_trailing_zeros_or_with_a_minimum() {
        assert_eq!(Amount::from(1_500_000).to_decimal_string(6), "1.5");
        assert_eq!(Amount::from(100_000_000).to_decimal_string(6), "100");
        assert_eq!(Amount::from(1).to_decimal_string(6), "0.000001");
        assert_eq!(Amount::ZERO.to_decimal_string(6), "0");
        assert_eq!(
            Amount::from(100_000_000).to_decimal_string_min(6, 2),
            "100.00"
        );
        assert_eq!(
            Amount::from(1_234_500).to_decimal_string_min(6, 2),
            "1.2345"
        );
        assert_eq!(Amount::from(7).to_decimal_string(0), "7");
    }

    #[test]
    fn base_units_text_is_canonical() {
        assert_eq!(
            Amount::from_base_units_str("1500000"),
            Ok(Amount::from(1_500_000))
        );
        assert_eq!(Amount::from_base_units_str("0"), Ok(Amount::ZERO));
        for bad in ["", "01", "1.0", "-1", "00"] {
            assert_eq!(
                Amount::from_base_units_str(bad),
                Err(AmountError::Malformed),
                "{bad:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn decimal_text_round_trips(units in any::<[u64; 4]>(), decimals in 0u8..=30) {
            let amount = Amount(U256::from_limbs(units));
            let text = amount.to_decimal_string(decimals);
            prop_assert_eq!(Amount::parse_decimal(&text, decimals), Ok(amount));
            let padded = amount.to_decimal_string_min(decimals, 2);
            prop_assert_eq!(Amount::parse_decimal(&padded, decimals), Ok(amount));
        }

        #[test]
        fn base_units_text_round_trips(units in any::<[u64; 4]>()) {
            let amount = Amount(U256::from_limbs(units));
            prop_assert_eq!(Amount::from_base_units_str(&amount.to_base_units_string()), Ok(amount));
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,40}", decimals in 0u8..=40) {
            let _ = Amount::parse_decimal(&text, decimals);
        }
    }

    /// Decimal text as a hostile client writes it: long runs of digits (80-digit values and
    /// more), points, signs, exponents, separators, whitespace, NUL and non-ASCII digits.
    fn hostile_decimal() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "0",
            "1",
            "7",
            "9",
            "00000000000000000000",
            "99999999999999999999",
            "12345678901234567890",
            ".",
            "-",
            "+",
            "e",
            "E",
            " ",
            "\t",
            "\0",
            "_",
            ",",
            "\u{ff11}",
            "\u{0661}",
            "0x",
        ]);
        prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
    }

    fn is_plain_decimal(text: &str) -> bool {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        !(whole.is_empty() && fraction.is_empty()) && digits(whole) && digits(fraction)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn hostile_decimal_text_is_an_amount_only_when_it_is_a_plain_decimal(
            text in hostile_decimal(),
            decimals in any::<u8>(),
        ) {
            match Amount::parse_decimal(&text, decimals) {
                Ok(amount) => {
                    prop_assert!(is_plain_decimal(&text), "{text:?} was accepted");
                    let fraction = text.split_once('.').map_or(0, |(_, f)| f.len());
                    prop_assert!(fraction <= usize::from(decimals));
                    // What was accepted formats back to the same value.
                    let shown = amount.to_decimal_string(decimals);
                    prop_assert_eq!(Amount::parse_decimal(&shown, decimals), Ok(amount));
                }
                Err(AmountError::Malformed | AmountError::Empty) => {
                    prop_assert!(!is_plain_decimal(&text), "{text:?} was refused as malformed");
                }
                Err(AmountError::TooPrecise { decimals: said }) => {
                    prop_assert_eq!(said, decimals);
                    prop_assert!(is_plain_decimal(&text));
                }
                Err(AmountError::Overflow) => prop_assert!(is_plain_decimal(&text)),
            }
        }

        #[test]
        fn long_whole_numbers_parse_exactly_or_overflow(
            digits in "[1-9][0-9]{0,89}",
            decimals in 0u8..=80,
        ) {
            let exact = U256::from_str_radix(&digits, 10).ok().and_then(|whole| {
                whole.checked_mul(U256::from(10u64).checked_pow(U256::from(decimals))?)
            });
            match exact {
                Some(units) => {
                    prop_assert_eq!(Amount::parse_decimal(&digits, decimals), Ok(Amount(units)));
                }
                None => {
                    prop_assert_eq!(Amount::parse_decimal(&digits, decimals), Err(AmountError::Overflow));
                }
            }
        }

        #[test]
        fn decimal_text_round_trips_for_every_number_of_decimals(
            units in any::<[u64; 4]>(),
            decimals in any::<u8>(),
            minimum in any::<u8>(),
        ) {
            let amount = Amount(U256::from_limbs(units));
            let text = amount.to_decimal_string(decimals);
            prop_assert_eq!(Amount::parse_decimal(&text, decimals), Ok(amount));
            let padded = amount.to_decimal_string_min(decimals, minimum);
            prop_assert_eq!(Amount::parse_decimal(&padded, decimals), Ok(amount));
        }

        #[test]
        fn base_units_text_is_read_only_in_its_canonical_form(text in hostile_decimal()) {
            if let Ok(amount) = Amount::from_base_units_str(&text) {
                prop_assert_eq!(amount.to_base_units_string(), text);
            }
        }

        #[test]
        fn a_mutated_base_units_text_never_reads_as_the_original_amount(
            units in any::<[u64; 4]>(),
            position in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let amount = Amount(U256::from_limbs(units));
            let text = amount.to_base_units_string();
            let mut bytes = text.clone().into_bytes();
            let at = position.index(bytes.len());
            prop_assume!(bytes[at] != byte);
            bytes[at] = byte;
            let mutated = String::from_utf8_lossy(&bytes);
            prop_assert_ne!(Amount::from_base_units_str(&mutated), Ok(amount));
        }
    }
}
