//! Block sync over request-response: a node that is behind asks a peer for
//! committed blocks after a height and gets them with their commit
//! certificates, which it verifies before applying. Decided blocks are also
//! pushed by gossip (`DecidedBlock`), so full nodes follow the chain
//! without receiving every vote.

use serde::{Deserialize, Serialize};

use crate::block::{Block, CommitCertificate};
use crate::codec::Wire;
use crate::ids::Height;
use crate::limits::{MAX_BLOCK_BYTES, MAX_COMMIT_SIGS};

/// Most blocks one response carries.
pub const MAX_SYNC_BLOCKS: u32 = 16;
/// Largest sync response; a peer stops adding blocks before reaching it.
pub const MAX_SYNC_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The requester's tip; blocks from `have + 1` on are wanted.
    pub have: Height,
    pub max: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub blocks: Vec<(Block, CommitCertificate)>,
}

impl Wire for SyncRequest {
    const NAME: &'static str = "sync request";
    const VERSION: u8 = 1;
    const MAX_BYTES: usize = 64;
}

impl Wire for SyncResponse {
    const NAME: &'static str = "sync response";
    const VERSION: u8 = 1;
    const MAX_BYTES: usize = MAX_SYNC_RESPONSE_BYTES;
}

/// A committed block with the certificate that committed it, gossiped on
/// `agora/decided/1` by the validator that proposed it (and by the others
/// if that one stays silent): how full nodes follow the chain. Receivers
/// check the certificate against the validator set of its height.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecidedBlock {
    pub block: Block,
    pub certificate: CommitCertificate,
}

impl DecidedBlock {
    /// A certificate's encoding at most: a signature and an address per
    /// validator, with room for the fixed fields.
    pub const MAX_CERTIFICATE_BYTES: usize = MAX_COMMIT_SIGS * 128 + 256;
}

impl Wire for DecidedBlock {
    const NAME: &'static str = "decided block";
    const VERSION: u8 = 1;
    const MAX_BYTES: usize = MAX_BLOCK_BYTES + DecidedBlock::MAX_CERTIFICATE_BYTES;
}
