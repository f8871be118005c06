//! Small newtypes that give numbers and byte strings their meaning: heights,
//! block-time milliseconds, hashes, lease ids and chain ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::limits::MAX_CHAIN_ID_LEN;

/// A block height; genesis is height 0 and the first block is height 1.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Height(pub u64);

impl Height {
    pub fn next(self) -> Height {
        Height(self.0.saturating_add(1))
    }
}

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Block time in milliseconds since the Unix epoch, as set by the proposer.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimestampMs(pub u64);

/// A blake3 digest.
#[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash(pub [u8; 32]);

crate::human_readable_serde!(Hash, [u8; 32], "a 64-digit hex hash");

impl FromStr for Hash {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Hash::from_hex("hash", s)
    }
}

impl Hash {
    pub const ZERO: Hash = Hash([0; 32]);

    /// blake3 of `tag || data`; the tag keeps hashes of different kinds apart.
    pub fn tagged(tag: &[u8], data: &[u8]) -> Hash {
        let mut h = blake3::Hasher::new();
        h.update(&(tag.len() as u64).to_le_bytes());
        h.update(tag);
        h.update(data);
        Hash(*h.finalize().as_bytes())
    }

    /// blake3 of `tag || canonical(value)`, streamed: no intermediate buffer,
    /// so hashing a large state costs no allocation.
    pub fn of_canonical<T: serde::Serialize>(tag: &[u8], value: &T) -> Result<Hash, Error> {
        let mut h = blake3::Hasher::new();
        h.update(&(tag.len() as u64).to_le_bytes());
        h.update(tag);
        crate::codec::canonical_into(value, &mut h)?;
        Ok(Hash(*h.finalize().as_bytes()))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(what: &'static str, s: &str) -> Result<Hash, Error> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|e| Error::Hex { what, reason: e.to_string() })?;
        Ok(Hash(out))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", &self.to_hex()[..16])
    }
}

/// A lease's identity: the hash of the buyer's signed lease request, so a
/// request can open at most one lease.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LeaseId(pub Hash);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for LeaseId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Hash::from_hex("lease id", s).map(LeaseId)
    }
}

/// The network's name, e.g. `agora-testnet-1`. Part of every signed digest,
/// so a signature from one network is worthless on another.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChainId(String);

impl ChainId {
    pub fn new(s: &str) -> Result<ChainId, Error> {
        let err = |reason: &str| Error::ChainId { input: s.to_string(), reason: reason.to_string() };
        if s.is_empty() || s.len() > MAX_CHAIN_ID_LEN {
            return Err(err("must be 1 to 48 characters"));
        }
        if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(err("only lowercase letters, digits and '-' are allowed"));
        }
        Ok(ChainId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks a decoded chain id, which bypassed `new`.
    pub fn validate(&self) -> Result<(), Error> {
        ChainId::new(&self.0).map(|_| ())
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
