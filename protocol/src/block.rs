//! Blocks: a header that commits to the parent, the transactions and the
//! post-state, the transactions, and the commit certificate of the parent.

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::codec::{self, Wire};
use crate::error::Error;
use crate::ids::{ChainId, Hash, Height, TimestampMs};
use crate::keys::Signature;
use crate::limits::MAX_BLOCK_BYTES;
use crate::tx::SignedTx;

/// What a block commits to; its hash is the block's identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub chain_id: ChainId,
    pub height: Height,
    /// Proposer's clock, strictly increasing; lease settlement runs on it.
    pub time_ms: TimestampMs,
    pub parent_hash: Hash,
    /// `last_commit_hash` of the block's `last_commit` (the parent's
    /// certificate): the block hash commits to it, so no relayer can swap or
    /// strip the signatures a block carries.
    pub last_commit_hash: Hash,
    /// `tx_root` of the block's transactions.
    pub tx_root: Hash,
    /// The state root after applying this block.
    pub state_root: Hash,
    pub proposer: Address,
}

impl Header {
    pub fn hash(&self) -> Hash {
        // A header is a few fixed fields and a bounded chain id: encoding
        // into a Vec cannot fail.
        let bytes = codec::canonical_bytes(self).unwrap_or_default();
        Hash::tagged(b"agora/block/1", &bytes)
    }
}

/// One validator's precommit signature inside a commit certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitSig {
    pub validator: Address,
    pub signature: Signature,
}

/// Proof that validators with more than 2/3 of the power committed a block.
/// Its verification belongs to the consensus layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitCertificate {
    pub height: Height,
    pub round: u32,
    pub block_hash: Hash,
    pub signatures: Vec<CommitSig>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub header: Header,
    pub txs: Vec<SignedTx>,
    /// The certificate that committed the parent (none for height 1).
    pub last_commit: Option<CommitCertificate>,
}

impl Wire for CommitCertificate {
    const NAME: &'static str = "commit certificate";
    const VERSION: u8 = 1;
    /// 100 validators × (32-byte address + 64-byte signature) plus the header fields.
    const MAX_BYTES: usize = 16 * 1024;
}

impl Wire for Block {
    const NAME: &'static str = "block";
    const VERSION: u8 = 1;
    const MAX_BYTES: usize = MAX_BLOCK_BYTES;
}

impl Block {
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }
}

/// The commitment to a block's `last_commit`: zero for none, else a tagged
/// hash of the certificate's canonical encoding.
pub fn last_commit_hash(cert: Option<&CommitCertificate>) -> Hash {
    match cert {
        None => Hash::ZERO,
        // A certificate is plain bounded data: encoding cannot fail.
        Some(c) => Hash::tagged(b"agora/last-commit/1", &codec::canonical_bytes(c).unwrap_or_default()),
    }
}

/// The commitment to an ordered list of transactions: a hash over their hashes.
pub fn tx_root(txs: &[SignedTx]) -> Result<Hash, Error> {
    let mut data = Vec::with_capacity(txs.len() * 32);
    for tx in txs {
        data.extend_from_slice(&tx.hash()?.0);
    }
    Ok(Hash::tagged(b"agora/tx-root/1", &data))
}
