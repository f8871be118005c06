//! Domain-separated signatures. Every signed object is
//! `ed25519(blake3(len(tag) || tag || len(chain_id) || chain_id || body))`, with a
//! distinct tag per type, so a signature can never be replayed as another type
//! or on another network.

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::codec;
use crate::error::Error;
use crate::ids::{ChainId, Hash};
use crate::keys::{Keypair, Signature};
use crate::zip215::Zip215Error;

/// What a signature is for. The tag is part of the signed digest.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Domain {
    Transaction,
    Offer,
    LeaseRequest,
    LeaseAccept,
    Heartbeat,
    DowntimeAttestation,
    Vote,
    Proposal,
    ProposalBlock,
    LogsRequest,
    RunRequest,
}

impl Domain {
    /// The versioned tag mixed into the digest. Never change an existing tag:
    /// that would invalidate every signature of that type.
    pub const fn tag(self) -> &'static str {
        match self {
            Domain::Transaction => "agora/sig/tx/1",
            Domain::Offer => "agora/sig/offer/1",
            Domain::LeaseRequest => "agora/sig/lease-request/1",
            Domain::LeaseAccept => "agora/sig/lease-accept/1",
            Domain::Heartbeat => "agora/sig/heartbeat/1",
            Domain::DowntimeAttestation => "agora/sig/downtime-attestation/1",
            Domain::Vote => "agora/sig/vote/1",
            Domain::Proposal => "agora/sig/proposal/1",
            Domain::ProposalBlock => "agora/sig/proposal-block/1",
            Domain::LogsRequest => "agora/sig/logs-request/1",
            Domain::RunRequest => "agora/sig/run-request/1",
        }
    }
}

/// A type that is signed as a whole, under one domain.
pub trait Signable: Serialize {
    const DOMAIN: Domain;
}

/// The digest that is signed for `body` under `domain` on `chain`.
pub fn signing_digest(domain: Domain, chain: &ChainId, body: &[u8]) -> Result<[u8; 32], Error> {
    let chain = chain.as_str().as_bytes();
    let mut data = Vec::with_capacity(8 + chain.len() + body.len());
    data.extend_from_slice(&(chain.len() as u64).to_le_bytes());
    data.extend_from_slice(chain);
    data.extend_from_slice(body);
    Ok(Hash::tagged(domain.tag().as_bytes(), &data).0)
}

/// `body` with its signer and signature. The signer is the identity the body
/// speaks for (a transaction's sender, an offer's provider, …).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed<T> {
    pub body: T,
    pub signer: Address,
    pub signature: Signature,
}

impl<T: Signable> Signed<T> {
    /// Signs `body` with `key` for `chain`.
    pub fn sign(body: T, key: &Keypair, chain: &ChainId) -> Result<Signed<T>, Error> {
        let digest = Self::digest_of(&body, chain)?;
        Ok(Signed { signature: key.sign_digest(&digest), signer: key.address(), body })
    }

    fn digest_of(body: &T, chain: &ChainId) -> Result<[u8; 32], Error> {
        signing_digest(T::DOMAIN, chain, &codec::encode_body(body, T::DOMAIN.tag())?)
    }

    /// The digest this signature must cover on `chain`.
    pub fn digest(&self, chain: &ChainId) -> Result<[u8; 32], Error> {
        Self::digest_of(&self.body, chain)
    }

    /// This signature as an item of a batch check (`verify_batch`).
    pub fn batch_item(&self, chain: &ChainId) -> Result<BatchItem, Error> {
        Ok(BatchItem { digest: self.digest(chain)?, signature: self.signature, signer: self.signer })
    }

    /// Checks the signature by ZIP-215's rules (see `zip215`): the same
    /// verdict as inside any batch.
    pub fn verify(&self, chain: &ChainId) -> Result<(), Error> {
        let bad = |reason| Error::BadSignature { domain: T::DOMAIN.tag(), reason };
        crate::zip215::verify(&self.signer.0, &self.digest(chain)?, &self.signature.0).map_err(|e| match e {
            Zip215Error::BadKey => bad("signer is not a valid public key"),
            Zip215Error::SmallOrderKey => bad("signer is a small-order key anyone can sign for"),
            Zip215Error::BadR | Zip215Error::NonCanonicalS | Zip215Error::Mismatch => bad("signature does not match"),
        })
    }
}

/// One item of a batch verification: a digest, its signature and its signer.
pub struct BatchItem {
    pub digest: [u8; 32],
    pub signature: Signature,
    pub signer: Address,
}

/// Verifies many signatures at once (about twice as fast as one by one),
/// by the same ZIP-215 rules as `Signed::verify`, so a signature's verdict
/// never depends on whether or with what it was batched. `Err(i)` names a
/// bad item.
pub fn verify_batch(items: &[BatchItem]) -> Result<(), usize> {
    let batch: Vec<(&[u8; 32], &[u8], &[u8; 64])> =
        items.iter().map(|i| (&i.signer.0, &i.digest[..], &i.signature.0)).collect();
    crate::zip215::verify_batch(&batch)
}
