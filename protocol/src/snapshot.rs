//! State sync over request-response: a new node asks peers which certified
//! state snapshots they hold, verifies an offer against the validators it
//! trusts (the offer carries the block header, its commit certificate and
//! the state's meta leaf with its Merkle proof), then fetches the snapshot's
//! leaves in chunks, each checked with a range proof against the header's
//! state root before the next is asked for.

use serde::{Deserialize, Serialize};

use crate::block::{CommitCertificate, Header};
use crate::codec::Wire;
use crate::ids::Height;

/// Snapshots a node offers at most (the newest).
pub const MAX_SNAPSHOT_OFFERS: usize = 4;
/// Leaves a chunk holds at most.
pub const MAX_CHUNK_LEAVES: usize = 4096;
/// Bytes of leaves a chunk is filled to at most before it is closed (a
/// single leaf is far smaller: see `MAX_CHUNK_BYTES`).
pub const TARGET_CHUNK_BYTES: usize = 1024 * 1024;
/// Largest chunk on the wire.
pub const MAX_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Chunks one snapshot may claim at most (a state of about 4 billion
/// leaves); a claim beyond it is refused before anything is fetched.
pub const MAX_SNAPSHOT_CHUNKS: u32 = 1 << 20;
/// Largest list of offers on the wire (each is a header, a certificate of
/// at most a few hundred signatures and the meta leaf with its proof).
pub const MAX_OFFERS_BYTES: usize = 1024 * 1024;
/// Validator-set transitions one snapshot response carries at most (each
/// a header, a certificate of up to 100 signatures and the meta leaf with
/// its proof: ~20 KB at most, so a response stays far below a chunk's size).
pub const MAX_TRANSITIONS_PER_RESPONSE: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotRequest {
    /// Which snapshots do you hold?
    Offers,
    /// Chunk `index` of the snapshot at `height`.
    Chunk { height: Height, index: u32 },
    /// The light-client transitions (blocks that changed the validator
    /// set) above `after`, ascending: how a node that trusts only its
    /// genesis checks a snapshot decided by a set that has moved on.
    Transitions { after: Height },
}

/// A snapshot a peer holds, with what proves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotOffer {
    /// The header of the block whose state this is.
    pub header: Header,
    /// The header's commit certificate.
    pub certificate: CommitCertificate,
    /// The state's meta leaf (canonical encoding) and its Merkle proof
    /// under `header.state_root`: it names the validators that decided the
    /// block, against which the certificate is checked.
    pub meta: Vec<u8>,
    pub meta_proof: Vec<u8>,
    pub chunks: u32,
    pub leaves: u64,
}

/// One chunk: consecutive leaves in key-hash order, and the range proof
/// that they (with every leaf before them) are the tree's leftmost leaves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub height: Height,
    pub index: u32,
    /// (state key bytes, value), ascending by the key's hash.
    pub leaves: Vec<(Vec<u8>, Vec<u8>)>,
    /// The canonical encoding of the range proof for the chunk's last leaf.
    pub proof: Vec<u8>,
}

/// Why a peer did not answer a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotRefusal {
    /// No such snapshot or chunk here (pruned, or never taken).
    NotHeld,
    /// Over this peer's request quota: ask someone else or later.
    Busy,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotResponse {
    Offers(Vec<SnapshotOffer>),
    Chunk(SnapshotChunk),
    Refused(SnapshotRefusal),
    /// At most `MAX_TRANSITIONS_PER_RESPONSE`, each a canonically encoded
    /// `light::ProofBundle` of the meta leaf; fewer means there are no more.
    Transitions(Vec<Vec<u8>>),
}

impl Wire for SnapshotRequest {
    const NAME: &'static str = "snapshot request";
    const VERSION: u8 = 1;
    const MAX_BYTES: usize = 64;
}

impl Wire for SnapshotResponse {
    const NAME: &'static str = "snapshot response";
    const VERSION: u8 = 1;
    const MAX_BYTES: usize = MAX_CHUNK_BYTES;
}

impl Wire for SnapshotChunk {
    const NAME: &'static str = "snapshot chunk";
    const VERSION: u8 = 1;
    const MAX_BYTES: usize = MAX_CHUNK_BYTES;
}

impl Wire for SnapshotOffer {
    const NAME: &'static str = "snapshot offer";
    const VERSION: u8 = 1;
    const MAX_BYTES: usize = MAX_OFFERS_BYTES;
}
