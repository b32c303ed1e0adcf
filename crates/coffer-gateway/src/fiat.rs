//! Fiat-priced orders: a static table of exchange rates and exact conversion.
//!
//! A rate says how many units of a fiat currency one token is worth (`USD` per `USDC` = `1`).
//! By default the table holds the stablecoins Coffer knows at 1:1 to USD (USDC, USDT, USDT0,
//! DAI, PYUSD, FDUSD); anything else comes from configuration (`[fiat.rates.EUR] USDC = "0.92"`).
//! The rate is locked when the order is created and recorded with it.
//!
//! **Rounding rule.** The token amount is `fiat_amount / rate`, computed exactly in integers
//! and, when it does not fit the token's decimals, rounded **up** to the token's smallest unit
//! (in the merchant's favour: the customer pays at most one base unit more, never less). The
//! response says so (`rounded_up`), so the rounding is never silent. Fiat amounts have at most
//! two decimals and rates at most eighteen; anything else is refused, never rounded.

use std::collections::BTreeMap;

use alloy::primitives::U256;
use coffer_core::Amount;

/// Decimals a fiat amount may have.
pub const FIAT_DECIMALS: u8 = 2;
/// Decimals a rate may have.
pub const RATE_DECIMALS: u8 = 18;

/// Symbols priced 1:1 to USD unless configured otherwise.
pub const USD_STABLECOINS: [&str; 6] = ["USDC", "USDT", "USDT0", "DAI", "PYUSD", "FDUSD"];

/// What can go wrong converting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FiatError {
    /// The currency is not a 3-letter code.
    #[error("must be a 3-letter currency code such as USD")]
    BadCurrency,
    /// No rate for this pair.
    #[error("no exchange rate from {fiat} to {token} is configured")]
    NoRate {
        /// Fiat code.
        fiat: String,
        /// Token symbol.
        token: String,
    },
    /// The fiat amount is not a positive decimal with at most two decimals.
    #[error("must be a positive decimal string with at most 2 decimals, e.g. \"10.50\"")]
    BadAmount,
    /// The result does not fit.
    #[error("is too large")]
    TooLarge,
}

/// A rate as configured, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate(Amount);

impl Rate {
    /// Parses a positive decimal with at most 18 decimals.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let value = Amount::parse_decimal(text.trim(), RATE_DECIMALS)
            .map_err(|error| format!("{text:?}: {error}"))?;
        if value.is_zero() {
            return Err(format!("{text:?}: must be greater than zero"));
        }
        Ok(Rate(value))
    }

    /// The rate as the shortest decimal text.
    pub fn to_decimal_string(self) -> String {
        self.0.to_decimal_string(RATE_DECIMALS)
    }
}

/// A converted price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// Fiat code, upper case.
    pub fiat_currency: String,
    /// Fiat amount, canonical (`"10.5"` → `"10.50"`).
    pub fiat_amount: String,
    /// The locked rate.
    pub rate: Rate,
    /// The token amount to ask for.
    pub amount: Amount,
    /// Whether the exact quotient had to be rounded up to the token's decimals.
    pub rounded_up: bool,
}

/// The exchange-rate table: fiat code → token symbol → rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiatRates {
    rates: BTreeMap<String, BTreeMap<String, Rate>>,
}

impl Default for FiatRates {
    fn default() -> Self {
        let mut usd = BTreeMap::new();
        for symbol in USD_STABLECOINS {
            usd.insert(
                symbol.to_owned(),
                Rate(Amount::from(1u64).scale(RATE_DECIMALS)),
            );
        }
        let mut rates = BTreeMap::new();
        rates.insert("USD".to_owned(), usd);
        FiatRates { rates }
    }
}

trait Scale {
    fn scale(self, decimals: u8) -> Amount;
}

impl Scale for Amount {
    fn scale(self, decimals: u8) -> Amount {
        Amount::from_base_units(self.base_units() * U256::from(10u64).pow(U256::from(decimals)))
    }
}

impl FiatRates {
    /// The default table with `overrides` (fiat → symbol → decimal rate) laid over it.
    ///
    /// # Errors
    /// A message naming the bad entry (`fiat.rates.EUR.USDC: …`).
    pub fn with_overrides(
        overrides: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<FiatRates, String> {
        let mut table = FiatRates::default();
        for (fiat, symbols) in overrides {
            let code = fiat_code(fiat).map_err(|error| format!("fiat.rates.{fiat}: {error}"))?;
            for (symbol, text) in symbols {
                let rate = Rate::parse(text)
                    .map_err(|error| format!("fiat.rates.{fiat}.{symbol}: {error}"))?;
                table
                    .rates
                    .entry(code.clone())
                    .or_default()
                    .insert(symbol.to_ascii_uppercase(), rate);
            }
        }
        Ok(table)
    }

    /// Each fiat currency code with the token symbols it has a rate for (`USD` → `USDC`, …).
    pub fn currencies(&self) -> impl Iterator<Item = (&str, Vec<&str>)> {
        self.rates.iter().map(|(fiat, tokens)| {
            (
                fiat.as_str(),
                tokens.keys().map(String::as_str).collect::<Vec<_>>(),
            )
        })
    }

    /// The rate of `token` in `fiat`.
    pub fn rate(&self, fiat: &str, token: &str) -> Option<Rate> {
        self.rates
            .get(&fiat.to_ascii_uppercase())?
            .get(&token.to_ascii_uppercase())
            .copied()
    }

    /// Converts `fiat_amount` of `fiat` into `token` with `decimals`, rounding up (see the
    /// module docs).
    ///
    /// # Errors
    /// [`FiatError`] for a bad code or amount, a missing rate, or an overflow.
    pub fn convert(
        &self,
        fiat: &str,
        fiat_amount: &str,
        token: &str,
        decimals: u8,
    ) -> Result<Quote, FiatError> {
        let code = fiat_code(fiat).map_err(|_| FiatError::BadCurrency)?;
        let fiat_value = Amount::parse_decimal(fiat_amount.trim(), FIAT_DECIMALS)
            .map_err(|_| FiatError::BadAmount)?;
        if fiat_value.is_zero() {
            return Err(FiatError::BadAmount);
        }
        let rate = self.rate(&code, token).ok_or_else(|| FiatError::NoRate {
            fiat: code.clone(),
            token: token.to_ascii_uppercase(),
        })?;
        // tokens = fiat / rate; in base units:
        // fiat_units/10^2 / (rate_units/10^18) * 10^decimals
        //   = fiat_units * 10^(18 + decimals) / (rate_units * 10^2)
        let ten = U256::from(10u64);
        let numerator = fiat_value
            .base_units()
            .checked_mul(ten.pow(U256::from(u64::from(RATE_DECIMALS) + u64::from(decimals))))
            .ok_or(FiatError::TooLarge)?;
        let denominator = rate
            .0
            .base_units()
            .checked_mul(ten.pow(U256::from(FIAT_DECIMALS)))
            .ok_or(FiatError::TooLarge)?;
        let (quotient, remainder) = numerator.div_rem(denominator);
        let rounded_up = !remainder.is_zero();
        let units = if rounded_up {
            quotient
                .checked_add(U256::from(1u64))
                .ok_or(FiatError::TooLarge)?
        } else {
            quotient
        };
        Ok(Quote {
            fiat_currency: code,
            fiat_amount: fiat_value.to_decimal_string_min(FIAT_DECIMALS, FIAT_DECIMALS),
            rate,
            amount: Amount::from_base_units(units),
            rounded_up,
        })
    }
}

fn fiat_code(text: &str) -> Result<String, FiatError> {
    let code = text.trim().to_ascii_uppercase();
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(code)
    } else {
        Err(FiatError::BadCurrency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> FiatRates {
        let mut overrides = BTreeMap::new();
        overrides.insert(
            "EUR".to_owned(),
            BTreeMap::from([("USDC".to_owned(), "0.9".to_owned())]),
        );
        overrides.insert(
            "usd".to_owned(),
            BTreeMap::from([("ETH".to_owned(), "3000".to_owned())]),
        );
        FiatRates::with_overrides(&overrides).unwrap_or_default()
    }

    #[test]
    fn stablecoins_are_one_to_one_with_usd_by_default() {
        let quote = FiatRates::default().convert("usd", "100", "USDT", 6);
        let quote = quote.unwrap_or_else(|error| unreachable!("{error}"));
        assert_eq!(quote.amount, Amount::from(100_000_000u64));
        assert_eq!(quote.fiat_amount, "100.00");
        assert_eq!(quote.rate.to_decimal_string(), "1");
        assert!(!quote.rounded_up);
    }

    #[test]
    fn an_inexact_quotient_is_rounded_up_to_the_tokens_smallest_unit_and_says_so() {
        // 10 EUR at 0.9 EUR per USDC = 11.111111… USDC → 11.111112 (6 decimals).
        let quote = table().convert("EUR", "10", "USDC", 6);
        let quote = quote.unwrap_or_else(|error| unreachable!("{error}"));
        assert_eq!(quote.amount, Amount::from(11_111_112u64));
        assert!(quote.rounded_up);
        // 100 USD at 3000 USD per ETH = 0.0333… ETH → 33333333333333334 wei.
        let quote = table().convert("USD", "100", "ETH", 18);
        let quote = quote.unwrap_or_else(|error| unreachable!("{error}"));
        assert_eq!(quote.amount.to_base_units_string(), "33333333333333334");
        assert!(quote.rounded_up);
    }

    #[test]
    fn bad_input_is_refused_never_rounded() {
        let rates = FiatRates::default();
        assert_eq!(
            rates.convert("USD", "1.005", "USDC", 6),
            Err(FiatError::BadAmount)
        );
        assert_eq!(
            rates.convert("USD", "0", "USDC", 6),
            Err(FiatError::BadAmount)
        );
        assert_eq!(
            rates.convert("USD", "-1", "USDC", 6),
            Err(FiatError::BadAmount)
        );
        assert_eq!(
            rates.convert("DOLLARS", "1", "USDC", 6),
            Err(FiatError::BadCurrency)
        );
        assert!(matches!(
            rates.convert("EUR", "1", "USDC", 6),
            Err(FiatError::NoRate { .. })
        ));
        let bad = BTreeMap::from([(
            "EUR".to_owned(),
            BTreeMap::from([("USDC".to_owned(), "0".to_owned())]),
        )]);
        assert!(
            FiatRates::with_overrides(&bad).is_err_and(|e| e.starts_with("fiat.rates.EUR.USDC"))
        );
    }
}
