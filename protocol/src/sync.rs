//! Block sync over request-response: a node that is behind asks a peer for
//! committed blocks after a height and gets them with their commit
//! certificates, which it verifies before applying.

use serde::{Deserialize, Serialize};

use crate::block::{Block, CommitCertificate};
use crate::codec::Wire;
use crate::ids::Height;

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
