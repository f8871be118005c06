//! Certified state snapshots for state sync, both sides, pure.
//!
//! Taking one: the committed state's leaves in key-hash order, cut into
//! chunks (`MAX_CHUNK_LEAVES` leaves or `TARGET_CHUNK_BYTES`, whichever
//! comes first), each with the range proof of its last leaf, computed on a
//! tree built from the leaves alone (node hashes do not depend on versions,
//! so its root is the state root) — the live tree is never held still.
//!
//! Restoring one: the offer is verified like any light-client answer (the
//! meta leaf under the header's root, >2/3 of the validators that decided
//! the block signed it, >1/3 of the trusted set among them), then every
//! chunk, in order, is checked with jmt's restore against the header's state
//! root before it is kept. A chunk that fails is refused alone: the restore
//! is rebuilt from the chunks already accepted, so a hostile peer costs a
//! re-verification, never a poisoned state. At the end the restored tree's
//! root must be the header's (a peer that claims fewer chunks than the state
//! has cannot truncate it), and the leaves decode into the state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use agora_protocol::snapshot::{
    MAX_CHUNK_BYTES, MAX_CHUNK_LEAVES, MAX_SNAPSHOT_CHUNKS, SnapshotChunk, SnapshotOffer, TARGET_CHUNK_BYTES,
};
use agora_protocol::{Block, ChainId, Hash, Height};
use jmt::restore::{JellyfishMerkleRestore, StateSnapshotReceiver};
use jmt::storage::{Node, NodeBatch, NodeKey, TreeReader, TreeUpdateBatch, TreeWriter};
use jmt::{KeyHash, RootHash};

use crate::error::Error;
use crate::state::{State, StateData, Validator};
use crate::tree::{Blake3, Jmt, MemNodes, NodeStore, StateKey};

/// A snapshot ready to serve: its offer and its chunks.
pub struct Snapshot {
    pub offer: SnapshotOffer,
    pub chunks: Vec<SnapshotChunk>,
}

/// Bytes a leaf takes in a chunk, roughly (its two byte strings and their lengths).
fn leaf_bytes(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + 16
}

/// Takes the snapshot of `state`, committed by `header` (whose certificate
/// is `certificate`). O(state): run it off the consensus loop, on a copy.
pub fn take(
    state: &State,
    header: agora_protocol::Header,
    certificate: agora_protocol::CommitCertificate,
) -> Result<Snapshot, Error> {
    let data = &state.data;
    if header.height != data.height || certificate.block_hash != header.hash() {
        return Err(Error::Tree("a snapshot's header or certificate is not the state's block".into()));
    }
    let store = MemNodes::default();
    let computed = crate::tree::compute(&store, data, crate::tree::all_keys(data), 0)?;
    if computed.root != header.state_root {
        return Err(Error::Tree(format!("the state's root is not its header's at height {}", header.height)));
    }
    store.write(0, &computed.batch, &computed.keys)?;
    let mut leaves: Vec<(KeyHash, Vec<u8>, Vec<u8>)> = computed
        .keys
        .iter()
        .filter_map(|(hash, key)| {
            let value = computed.batch.node_batch.values().get(&(0, *hash)).cloned().flatten()?;
            Some((*hash, key.clone(), value))
        })
        .collect();
    leaves.sort_by_key(|(hash, _, _)| *hash);
    let (meta, meta_proof) = crate::tree::prove(&store, data, &StateKey::Meta, 0)?;
    let meta = meta.ok_or_else(|| Error::Tree("a state without a meta leaf".into()))?;
    let meta_proof = crate::tree::encode_proof(&meta_proof);
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < leaves.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < leaves.len() && end - start < MAX_CHUNK_LEAVES && (end == start || bytes < TARGET_CHUNK_BYTES) {
            bytes += leaf_bytes(&leaves[end].1, &leaves[end].2);
            end += 1;
        }
        let last = leaves[end - 1].0;
        let reader = crate::tree::WithValue { store: &store, key: last, value: Some(leaves[end - 1].2.clone()) };
        let proof = Jmt::new(&reader).get_range_proof(last, 0).map_err(|e| Error::Tree(e.to_string()))?;
        let chunk = SnapshotChunk {
            height: header.height,
            index: chunks.len() as u32,
            leaves: leaves[start..end].iter().map(|(_, k, v)| (k.clone(), v.clone())).collect(),
            proof: agora_protocol::codec::canonical_bytes(&proof).map_err(|e| Error::Tree(e.to_string()))?,
        };
        let len = agora_protocol::codec::encoded_len(&chunk)?;
        if len > MAX_CHUNK_BYTES {
            return Err(Error::Tree(format!("snapshot chunk {} would be {len} bytes", chunk.index)));
        }
        chunks.push(chunk);
        start = end;
    }
    let offer = SnapshotOffer {
        header,
        certificate,
        meta,
        meta_proof,
        chunks: chunks.len() as u32,
        leaves: leaves.len() as u64,
    };
    Ok(Snapshot { offer, chunks })
}

/// Checks `offer` on `chain` against the `trusted` validators: it is a
/// certified state of that chain. Returns the state's meta leaf.
pub fn verify_offer(offer: &SnapshotOffer, chain: &ChainId, trusted: &[Validator]) -> Result<crate::tree::Meta, Error> {
    if offer.chunks == 0 || offer.chunks > MAX_SNAPSHOT_CHUNKS {
        return Err(Error::BadProof(format!("a snapshot of {} chunks", offer.chunks)));
    }
    let bundle = crate::light::ProofBundle {
        header: offer.header.clone(),
        certificate: offer.certificate.clone(),
        key: StateKey::Meta.bytes(),
        value: Some(offer.meta.clone()),
        proof: offer.meta_proof.clone(),
        meta: offer.meta.clone(),
        meta_proof: offer.meta_proof.clone(),
    };
    crate::light::verify(&bundle, &StateKey::Meta, chain, trusted)?;
    crate::tree::decode_canonical(&offer.meta)
}

/// Collects the nodes jmt's restore freezes.
#[derive(Default)]
struct Collected(Mutex<BTreeMap<NodeKey, Node>>);

impl TreeWriter for Collected {
    fn write_node_batch(&self, batch: &NodeBatch) -> anyhow::Result<()> {
        let mut nodes = self.0.lock().map_err(|_| anyhow::anyhow!("restore lock poisoned"))?;
        nodes.extend(batch.nodes().iter().map(|(k, n)| (k.clone(), n.clone())));
        Ok(())
    }
}

/// Read back, so the restored tree's root is read where it was built.
impl TreeReader for Collected {
    fn get_node_option(&self, key: &NodeKey) -> anyhow::Result<Option<Node>> {
        Ok(self.0.lock().map_err(|_| anyhow::anyhow!("restore lock poisoned"))?.get(key).cloned())
    }
    fn get_value_option(&self, _max_version: jmt::Version, _key: KeyHash) -> anyhow::Result<Option<jmt::OwnedValue>> {
        Ok(None)
    }
    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, jmt::storage::LeafNode)>> {
        Err(anyhow::anyhow!("restoring a tree is not supported"))
    }
}

/// A snapshot being restored: the verified offer and the chunks accepted so far.
pub struct Restore {
    offer: SnapshotOffer,
    chain: ChainId,
    restore: JellyfishMerkleRestore<Blake3>,
    nodes: Arc<Collected>,
    /// Accepted chunks' leaves, in order, with their key hashes.
    leaves: Vec<(KeyHash, Vec<u8>, Vec<u8>)>,
    /// Where each accepted chunk's leaves start, and its proof (to rebuild the restore).
    accepted: Vec<(usize, Vec<u8>)>,
}

impl Restore {
    /// Starts restoring `offer`, after verifying it (see `verify_offer`).
    pub fn new(offer: SnapshotOffer, chain: &ChainId, trusted: &[Validator]) -> Result<Restore, Error> {
        verify_offer(&offer, chain, trusted)?;
        let nodes = Arc::new(Collected::default());
        let restore = Self::fresh(&offer, nodes.clone())?;
        Ok(Restore { offer, chain: chain.clone(), restore, nodes, leaves: Vec::new(), accepted: Vec::new() })
    }

    fn fresh(offer: &SnapshotOffer, nodes: Arc<Collected>) -> Result<JellyfishMerkleRestore<Blake3>, Error> {
        JellyfishMerkleRestore::new_overwrite(nodes, offer.header.height.0, RootHash(offer.header.state_root.0))
            .map_err(|e| Error::Tree(e.to_string()))
    }

    pub fn offer(&self) -> &SnapshotOffer {
        &self.offer
    }

    /// The index of the chunk wanted next; None when all are in.
    pub fn next_chunk(&self) -> Option<u32> {
        let n = self.accepted.len() as u32;
        (n < self.offer.chunks).then_some(n)
    }

    /// Checks `chunk` (the next one) against the state root and keeps it.
    /// A chunk that fails leaves the restore as it was.
    pub fn add(&mut self, chunk: SnapshotChunk) -> Result<(), Error> {
        let bad = |reason: String| Error::BadProof(format!("snapshot chunk {}: {reason}", chunk.index));
        if Some(chunk.index) != self.next_chunk() || chunk.height != self.offer.header.height {
            return Err(bad(format!(
                "not the chunk wanted ({:?} at height {})",
                self.next_chunk(),
                self.offer.header.height
            )));
        }
        if chunk.leaves.is_empty() || chunk.leaves.len() > MAX_CHUNK_LEAVES {
            return Err(bad(format!("{} leaves", chunk.leaves.len())));
        }
        let proof = crate::tree::decode_canonical(&chunk.proof).map_err(|e| bad(e.to_string()))?;
        let hashed: Vec<(KeyHash, Vec<u8>, Vec<u8>)> =
            chunk.leaves.into_iter().map(|(k, v)| (StateKey::hash_of(&k), k, v)).collect();
        let pairs = hashed.iter().map(|(h, _, v)| (*h, v.clone())).collect();
        if let Err(e) = self.restore.add_chunk(pairs, proof) {
            self.rebuild()?;
            return Err(bad(e.to_string()));
        }
        self.accepted.push((self.leaves.len(), chunk.proof));
        self.leaves.extend(hashed);
        Ok(())
    }

    /// Starts the restore again from the accepted chunks (after a bad one
    /// left jmt's restore half-way through it).
    fn rebuild(&mut self) -> Result<(), Error> {
        self.nodes = Arc::new(Collected::default());
        self.restore = Self::fresh(&self.offer, self.nodes.clone())?;
        for (i, (start, proof)) in self.accepted.iter().enumerate() {
            let end = self.accepted.get(i + 1).map_or(self.leaves.len(), |(s, _)| *s);
            let pairs = self.leaves[*start..end].iter().map(|(h, _, v)| (*h, v.clone())).collect();
            let proof = crate::tree::decode_canonical(proof)?;
            self.restore
                .add_chunk(pairs, proof)
                .map_err(|e| Error::Tree(format!("re-adding a verified chunk: {e}")))?;
        }
        Ok(())
    }

    /// Leaves accepted so far, of the offer's total.
    pub fn progress(&self) -> (u64, u64) {
        (self.leaves.len() as u64, self.offer.leaves)
    }

    /// Ends the restore once every chunk is in: `block` must be the offer's
    /// block. The restored tree's root must be the header's.
    pub fn finish(self, block: Block) -> Result<Restored, Error> {
        if self.next_chunk().is_some() {
            return Err(Error::BadProof("the snapshot is not complete".into()));
        }
        let header = &self.offer.header;
        if block.header != *header || agora_protocol::block::tx_root(&block.txs)? != header.tx_root {
            return Err(Error::BadProof("the block is not the snapshot's".into()));
        }
        let height = header.height;
        self.restore.finish().map_err(|e| Error::BadProof(format!("finishing the restore: {e}")))?;
        let root = Jmt::new(&*self.nodes).get_root_hash_option(height.0).map_err(|e| Error::Tree(e.to_string()))?;
        if root.map(|r| Hash(r.0)) != Some(header.state_root) {
            return Err(Error::BadProof("the restored tree's root is not the header's (a truncated snapshot?)".into()));
        }
        let nodes = Arc::try_unwrap(self.nodes)
            .map_err(|_| Error::Tree("the restore still holds its nodes".into()))?
            .0
            .into_inner()
            .map_err(|_| Error::Tree("restore lock poisoned".into()))?;
        let mut batch = TreeUpdateBatch::default();
        let mut keys = Vec::with_capacity(self.leaves.len());
        let mut values = BTreeMap::new();
        for (hash, key, value) in &self.leaves {
            values.insert((height.0, *hash), Some(value.clone()));
            keys.push((*hash, key.clone()));
        }
        batch.node_batch = NodeBatch::new(nodes, values);
        let data = crate::tree::state_from_leaves(self.leaves.into_iter().map(|(_, k, v)| (k, v)))
            .map_err(|e| Error::BadProof(e.to_string()))?;
        if data.chain_id != self.chain || data.height != height {
            return Err(Error::BadProof("the restored state names another chain or height".into()));
        }
        Ok(Restored { block, certificate: self.offer.certificate, data, batch, keys })
    }
}

/// A restored, verified state with its block: what a store is installed from.
pub struct Restored {
    pub block: Block,
    pub certificate: agora_protocol::CommitCertificate,
    pub(crate) data: StateData,
    pub(crate) batch: TreeUpdateBatch,
    pub(crate) keys: Vec<(KeyHash, Vec<u8>)>,
}

impl Restored {
    pub fn height(&self) -> Height {
        self.block.header.height
    }

    pub fn last_block_hash(&self) -> Hash {
        self.block.hash()
    }

    /// The restored state over `store`, which receives its tree; with its
    /// block and certificate. (A node installs a `Store` instead; this is
    /// for states kept in memory: the simulation.)
    pub fn into_state(
        self,
        store: Arc<dyn NodeStore>,
    ) -> Result<(State, Block, agora_protocol::CommitCertificate), Error> {
        store.write(self.height().0, &self.batch, &self.keys)?;
        let hash = self.block.hash();
        let state = State::from_data(self.data, hash, crate::tree::TreeHandle::new(store));
        Ok((state, self.block, self.certificate))
    }
}
