//! Verification of vote certificates: a set of precommit (or prevote)
//! signatures from distinct validators of a height's set, together holding
//! more than 2/3 of its power. Used for commit certificates carried by blocks
//! and block sync, and for the certificates Malachite asks its host to check.

use std::collections::BTreeSet;

use agora_protocol::consensus::{Vote, VoteKind};
use agora_protocol::{Address, ChainId, CommitCertificate, Hash, Height, Signature, Signed};

use super::context::ConsensusValidatorSet;
use crate::error::Error;

/// One signature inside a certificate: who signed which vote.
pub struct CertifiedVote {
    pub validator: Address,
    pub kind: VoteKind,
    pub block: Option<Hash>,
    pub signature: Signature,
}

impl CertifiedVote {
    /// Whether this is its validator's signature of the vote at `(height, round)`.
    fn verify(&self, chain: &ChainId, height: Height, round: u32) -> Result<(), agora_protocol::Error> {
        let vote = Vote { kind: self.kind, height, round, block: self.block };
        Signed { body: vote, signer: self.validator, signature: self.signature }.verify(chain)
    }
}

/// A commit certificate's signatures, as the precommits for `block_hash` they sign.
fn precommits(cert: &CommitCertificate, block_hash: Hash) -> impl Iterator<Item = CertifiedVote> + '_ {
    cert.signatures.iter().map(move |s| CertifiedVote {
        validator: s.validator,
        kind: VoteKind::Precommit,
        block: Some(block_hash),
        signature: s.signature,
    })
}

/// Checks that `votes` for `(height, round)` are valid signatures from
/// distinct validators of `set` holding more than 2/3 of its power.
pub fn verify_votes(
    chain: &ChainId,
    set: &ConsensusValidatorSet,
    height: Height,
    round: u32,
    votes: impl IntoIterator<Item = CertifiedVote>,
) -> Result<(), Error> {
    let total: u64 = set.validators().iter().map(|v| v.power).fold(0, u64::saturating_add);
    let mut seen = BTreeSet::new();
    let mut signed: u64 = 0;
    for v in votes {
        let validator =
            set.validators().iter().find(|x| x.public_key == v.validator).ok_or_else(|| {
                Error::BadCertificate(format!("{} is not a validator at height {height}", v.validator))
            })?;
        if !seen.insert(v.validator) {
            return Err(Error::BadCertificate(format!("{} signed twice", v.validator)));
        }
        v.verify(chain, height, round)
            .map_err(|e| Error::BadCertificate(format!("signature of {}: {e}", v.validator)))?;
        signed = signed.saturating_add(validator.power);
    }
    if u128::from(signed) * 3 <= u128::from(total) * 2 {
        return Err(Error::BadCertificate(format!("signers hold {signed} of {total} voting power")));
    }
    Ok(())
}

/// Whether every signature of `cert` is its signer's precommit for
/// `block_hash`, from distinct signers, whatever set they belong to and
/// whatever power they hold: a certificate for a height whose validators
/// are not known yet can still be told forged.
pub fn signatures_valid(chain: &ChainId, cert: &CommitCertificate, block_hash: Hash) -> bool {
    let mut seen = BTreeSet::new();
    cert.block_hash == block_hash
        && precommits(cert, block_hash)
            .all(|v| seen.insert(v.validator) && v.verify(chain, cert.height, cert.round).is_ok())
}

/// Checks a commit certificate for the block `block_hash` at `height`.
pub fn verify_commit(
    chain: &ChainId,
    set: &ConsensusValidatorSet,
    cert: &CommitCertificate,
    height: Height,
    block_hash: Hash,
) -> Result<(), Error> {
    if cert.height != height || cert.block_hash != block_hash {
        return Err(Error::BadCertificate(format!(
            "certificate is for height {} block {}",
            cert.height, cert.block_hash
        )));
    }
    verify_votes(chain, set, height, cert.round, precommits(cert, block_hash))
}
