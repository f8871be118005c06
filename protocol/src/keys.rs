//! ed25519 key pairs and signatures. The same 32-byte secret is a node's
//! account key and its libp2p identity, so peer ids and accounts are bound.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::address::Address;
use crate::error::Error;

/// An ed25519 signature (64 bytes), encoded as a fixed-size tuple.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..8]))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(64)?;
        for b in &self.0 {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Signature, A::Error> {
                let mut out = [0u8; 64];
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(i, &self))?;
                }
                Ok(Signature(out))
            }
        }
        d.deserialize_tuple(64, V)
    }
}

/// A signing key pair. The secret is zeroed on drop and never printed.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.address())
    }
}

impl Keypair {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Keypair, Error> {
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::fill(secret.as_mut()).map_err(|e| Error::SecretKey(format!("no OS randomness: {e}")))?;
        Ok(Keypair::from_secret(&secret))
    }

    /// The key for a 32-byte secret seed (deterministic: used by tests and by
    /// the testnet's generated genesis).
    pub fn from_secret(secret: &[u8; 32]) -> Keypair {
        Keypair { signing: SigningKey::from_bytes(secret) }
    }

    /// Test and testnet helper: a key derived from a name, never for real funds.
    pub fn from_seed_phrase(phrase: &str) -> Keypair {
        Keypair::from_secret(blake3::hash(phrase.as_bytes()).as_bytes())
    }

    /// The 32 secret bytes, wrapped so they are wiped when dropped.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    pub fn from_secret_hex(s: &str) -> Result<Keypair, Error> {
        let mut secret = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(s.trim(), secret.as_mut())
            .map_err(|e| Error::SecretKey(format!("expected 64 hex digits: {e}")))?;
        Ok(Keypair::from_secret(&secret))
    }

    pub fn address(&self) -> Address {
        Address(self.signing.verifying_key().to_bytes())
    }

    /// Signs a 32-byte digest; callers go through `Signed::sign`, which builds
    /// the domain-separated digest.
    pub(crate) fn sign_digest(&self, digest: &[u8; 32]) -> Signature {
        Signature(self.signing.sign(digest).to_bytes())
    }
}
