//! Account addresses: the 32-byte ed25519 public key, shown as bech32m with the
//! human-readable prefix `agora`. The address *is* the key, so any signature
//! can be checked against it without a lookup.

use std::fmt;
use std::str::FromStr;

use bech32::primitives::decode::CheckedHrpstring;
use bech32::{Bech32m, Hrp};

use crate::error::Error;

/// The human-readable part of every agora address.
pub const ADDRESS_HRP: &str = "agora";

/// An account: the raw ed25519 verifying key bytes.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub [u8; 32]);

crate::human_readable_serde!(Address, [u8; 32], "an agora1… address");

impl Address {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key to verify this address's signatures; fails for byte strings
    /// that are not a valid curve point (possible for decoded input).
    pub fn verifying_key(&self) -> Result<ed25519_dalek::VerifyingKey, Error> {
        ed25519_dalek::VerifyingKey::from_bytes(&self.0)
            .map_err(|_| Error::BadSignature { domain: "address", reason: "not a valid ed25519 public key" })
    }

    fn hrp() -> Hrp {
        // The constant is a valid lowercase HRP; parse cannot fail.
        Hrp::parse_unchecked(ADDRESS_HRP)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        bech32::encode_to_fmt::<Bech32m, _>(f, Self::hrp(), &self.0).map_err(|_| fmt::Error)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        let err = |reason: String| Error::Address { input: input.to_string(), reason };
        let checked = CheckedHrpstring::new::<Bech32m>(input.trim()).map_err(|e| err(describe_bech32(&e)))?;
        if checked.hrp() != Self::hrp() {
            return Err(err(format!("prefix is {:?}, expected {ADDRESS_HRP:?}", checked.hrp().as_str())));
        }
        let bytes: Vec<u8> = checked.byte_iter().collect();
        let raw: [u8; 32] =
            bytes.try_into().map_err(|b: Vec<u8>| err(format!("payload is {} bytes, expected 32", b.len())))?;
        Ok(Address(raw))
    }
}

/// A short human reason for a bech32 failure, naming checksum errors plainly
/// since they are the common typo case.
fn describe_bech32(e: &bech32::primitives::decode::CheckedHrpstringError) -> String {
    use bech32::primitives::decode::CheckedHrpstringError as E;
    match e {
        E::Checksum(_) => "checksum mismatch (typo or truncated address?)".to_string(),
        E::Parse(p) => format!("not bech32: {p}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_has_prefix() {
        let a = Address([7; 32]);
        let s = a.to_string();
        assert!(s.starts_with("agora1"), "{s}");
        assert_eq!(s.parse::<Address>().unwrap(), a);
    }

    #[test]
    fn reports_checksum_errors_clearly() {
        let mut s = Address([7; 32]).to_string();
        let last = s.pop().unwrap();
        s.push(if last == 'q' { 'p' } else { 'q' });
        let e = s.parse::<Address>().unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
    }

    #[test]
    fn rejects_wrong_prefix_and_length() {
        let other = bech32::encode::<Bech32m>(Hrp::parse("cosmos").unwrap(), &[7; 32]).unwrap();
        assert!(other.parse::<Address>().unwrap_err().to_string().contains("prefix"));
        let short = bech32::encode::<Bech32m>(Address::hrp(), &[7; 20]).unwrap();
        assert!(short.parse::<Address>().unwrap_err().to_string().contains("20 bytes"));
        assert!("".parse::<Address>().is_err());
        assert!("agora1".parse::<Address>().is_err());
    }
}
