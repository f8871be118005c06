//! Token amounts: integer micro-AGR with checked arithmetic, parsed from and
//! displayed as decimal AGR. Never a float anywhere near money.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// An amount of AGR in micro-units (1 AGR = 1,000,000 micro-AGR).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(pub u64);

// In JSON an amount is a string of micro-units ("1500000"), so no client
// ever rounds it through a float; in binary it is a plain u64.
impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.collect_str(&self.0) } else { s.serialize_u64(self.0) }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse::<u64>()
                .map(Amount)
                .map_err(|_| serde::de::Error::custom(format!("expected micro-units as a decimal string, got {s:?}")))
        } else {
            u64::deserialize(d).map(Amount)
        }
    }
}

impl Amount {
    pub const ZERO: Amount = Amount(0);
    pub const MAX: Amount = Amount(u64::MAX);
    /// Micro-units per AGR.
    pub const MICROS_PER_AGR: u64 = 1_000_000;
    const DECIMALS: usize = 6;

    /// Whole AGR, in micro-units. Panics only on overflow of a literal.
    pub const fn agr(whole: u64) -> Amount {
        Amount(whole * Self::MICROS_PER_AGR)
    }

    pub const fn micros(self) -> u64 {
        self.0
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// `self × numerator / denominator`, rounded down, computed in 128 bits so
    /// it cannot overflow; `None` if the denominator is zero or the result does
    /// not fit.
    pub fn mul_div_floor(self, numerator: u64, denominator: u64) -> Option<Amount> {
        if denominator == 0 {
            return None;
        }
        let wide = u128::from(self.0) * u128::from(numerator) / u128::from(denominator);
        u64::try_from(wide).ok().map(Amount)
    }
}

impl fmt::Display for Amount {
    /// Decimal AGR without trailing zeros, e.g. `1.5 AGR`, `0.000001 AGR`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / Self::MICROS_PER_AGR;
        let frac = self.0 % Self::MICROS_PER_AGR;
        if frac == 0 {
            write!(f, "{whole} AGR")
        } else {
            let digits = format!("{frac:0width$}", width = Self::DECIMALS);
            write!(f, "{whole}.{} AGR", digits.trim_end_matches('0'))
        }
    }
}

impl FromStr for Amount {
    type Err = Error;

    /// Parses decimal AGR (`12`, `0.5`, `1.000001`, optionally suffixed `AGR`)
    /// or raw micro-units with the suffix `uagr` (`1500000uagr`).
    fn from_str(input: &str) -> Result<Self, Error> {
        let err = |reason: &str| Error::Amount { input: input.to_string(), reason: reason.to_string() };
        let s = input.trim();
        if let Some(micros) = s.strip_suffix("uagr") {
            return micros.trim().parse::<u64>().map(Amount).map_err(|_| err("expected an integer before `uagr`"));
        }
        let s = s.strip_suffix("AGR").or_else(|| s.strip_suffix("agr")).unwrap_or(s).trim();
        let (whole, frac) = match s.split_once('.') {
            Some((w, f)) => (w, f),
            None => (s, ""),
        };
        if whole.is_empty() && frac.is_empty() {
            return Err(err("empty amount"));
        }
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(whole) || !all_digits(frac) {
            return Err(err("expected a decimal number such as 1.5"));
        }
        if frac.len() > Self::DECIMALS {
            return Err(err("more than 6 decimal places (1 uagr is the smallest unit)"));
        }
        let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| err("too large"))? };
        let frac_micros: u64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<width$}", width = Self::DECIMALS).parse().map_err(|_| err("bad fraction"))?
        };
        whole
            .checked_mul(Self::MICROS_PER_AGR)
            .and_then(|m| m.checked_add(frac_micros))
            .map(Amount)
            .ok_or_else(|| err("too large"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_decimal_agr_without_trailing_zeros() {
        assert_eq!(Amount(1_500_000).to_string(), "1.5 AGR");
        assert_eq!(Amount(1).to_string(), "0.000001 AGR");
        assert_eq!(Amount::agr(3).to_string(), "3 AGR");
        assert_eq!(Amount::MAX.to_string(), "18446744073709.551615 AGR");
    }

    #[test]
    fn parses_decimal_and_micro_units() {
        assert_eq!("1.5".parse::<Amount>().unwrap(), Amount(1_500_000));
        assert_eq!("0.000001 AGR".parse::<Amount>().unwrap(), Amount(1));
        assert_eq!(".5".parse::<Amount>().unwrap(), Amount(500_000));
        assert_eq!("42uagr".parse::<Amount>().unwrap(), Amount(42));
        for bad in ["", "1.0000001", "-1", "1e3", "abc", "18446744073710", "1.2.3"] {
            assert!(bad.parse::<Amount>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn display_round_trips_through_parse() {
        for micros in [0, 1, 999_999, 1_000_000, 123_456_789, u64::MAX] {
            let a = Amount(micros);
            assert_eq!(a.to_string().parse::<Amount>().unwrap(), a);
        }
    }

    #[test]
    fn mul_div_floor_is_exact_and_never_overflows() {
        assert_eq!(Amount(10).mul_div_floor(1, 3), Some(Amount(3)));
        assert_eq!(Amount::MAX.mul_div_floor(u64::MAX, u64::MAX), Some(Amount::MAX));
        assert_eq!(Amount::MAX.mul_div_floor(2, 1), None);
        assert_eq!(Amount(1).mul_div_floor(1, 0), None);
    }
}
