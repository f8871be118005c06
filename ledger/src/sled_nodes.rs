//! The state tree's nodes on disk, in the block store's sled database:
//! nodes by key, each entry's values by version (for proofs), and the nodes
//! each height replaced (pruned once they fall out of `TREE_RETENTION`).
//! Reads go through a cache bounded in bytes (two generations: a node read
//! or written goes into the young one; when it is full the old one is
//! dropped and the young one becomes old), so a block's root touches the
//! disk only for cold paths.

use std::collections::HashMap;
use std::sync::Mutex;

use jmt::storage::{LeafNode, Node, NodeKey, TreeReader, TreeUpdateBatch};
use jmt::{KeyHash, OwnedValue, Version};

use crate::error::Error;
use crate::tree::{NodeStore, TREE_RETENTION};

/// Bytes of encoded nodes the cache holds at most (both generations).
pub const NODE_CACHE_BYTES: usize = 64 * 1024 * 1024;

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    agora_protocol::codec::canonical_bytes(value).map_err(|e| Error::Tree(e.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> anyhow::Result<T> {
    let config = bincode::config::standard().with_little_endian().with_fixed_int_encoding();
    Ok(bincode::serde::decode_from_slice(bytes, config)?.0)
}

#[derive(Default)]
struct Cache {
    young: HashMap<NodeKey, Node>,
    old: HashMap<NodeKey, Node>,
    young_bytes: usize,
}

impl Cache {
    fn get(&mut self, key: &NodeKey) -> Option<Node> {
        if let Some(n) = self.young.get(key) {
            return Some(n.clone());
        }
        let n = self.old.remove(key)?;
        self.put(key.clone(), n.clone(), 256);
        Some(n)
    }

    fn put(&mut self, key: NodeKey, node: Node, bytes: usize) {
        if self.young_bytes + bytes > NODE_CACHE_BYTES / 2 {
            self.old = std::mem::take(&mut self.young);
            self.young_bytes = 0;
        }
        self.young_bytes += bytes;
        self.young.insert(key, node);
    }

    fn remove(&mut self, key: &NodeKey) {
        self.young.remove(key);
        self.old.remove(key);
    }
}

pub struct SledNodes {
    nodes: sled::Tree,
    values: sled::Tree,
    stale: sled::Tree,
    /// Key hash → the key's bytes, for rebuilding the state from the leaves.
    keys: sled::Tree,
    cache: Mutex<Cache>,
}

impl SledNodes {
    pub fn open(db: &sled::Db) -> Result<SledNodes, Error> {
        Ok(SledNodes {
            nodes: db.open_tree("tree_nodes")?,
            values: db.open_tree("tree_values")?,
            stale: db.open_tree("tree_stale")?,
            keys: db.open_tree("tree_keys")?,
            cache: Mutex::new(Cache::default()),
        })
    }

    fn cache(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Cache>> {
        self.cache.lock().map_err(|_| anyhow::anyhow!("tree cache lock poisoned"))
    }

    /// Entries in the node table (disk growth and pruning checks).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The state as the tree's leaves have it at `version`.
    pub(crate) fn load(&self, version: Version) -> Result<crate::state::StateData, Error> {
        let mut leaves = Vec::new();
        for entry in self.keys.iter() {
            let (hash, key) = entry?;
            let hash: [u8; 32] =
                hash.as_ref().try_into().map_err(|_| Error::Tree("a key hash is not 32 bytes".into()))?;
            if let Some(value) =
                self.get_value_option(version, KeyHash(hash)).map_err(|e| Error::Tree(e.to_string()))?
            {
                leaves.push((key.to_vec(), value));
            }
        }
        crate::tree::state_from_leaves(leaves)
    }
}

fn value_key(key: &KeyHash, version: Version) -> [u8; 40] {
    let mut out = [0u8; 40];
    out[..32].copy_from_slice(&key.0);
    out[32..].copy_from_slice(&version.to_be_bytes());
    out
}

impl TreeReader for SledNodes {
    fn get_node_option(&self, key: &NodeKey) -> anyhow::Result<Option<Node>> {
        if let Some(n) = self.cache()?.get(key) {
            return Ok(Some(n));
        }
        let Some(bytes) = self.nodes.get(encode(key)?)? else { return Ok(None) };
        let node: Node = decode(&bytes)?;
        self.cache()?.put(key.clone(), node.clone(), bytes.len());
        Ok(Some(node))
    }

    fn get_value_option(&self, max_version: Version, key: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
        let found = self.values.range(value_key(&key, 0)..=value_key(&key, max_version)).next_back().transpose()?;
        Ok(match found {
            Some((_, bytes)) => decode::<Option<OwnedValue>>(&bytes)?,
            None => None,
        })
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        Err(anyhow::anyhow!("restoring a tree is not supported"))
    }
}

impl NodeStore for SledNodes {
    fn write(&self, version: Version, batch: &TreeUpdateBatch, keys: &[(KeyHash, Vec<u8>)]) -> Result<(), Error> {
        let mut preimages = sled::Batch::default();
        for (hash, key) in keys {
            preimages.insert(&hash.0[..], key.as_slice());
        }
        self.keys.apply_batch(preimages)?;
        // The version's root node goes last, in its own write: a version
        // whose root is on disk is whole (opening trusts exactly that).
        let mut nodes = sled::Batch::default();
        let mut root = None;
        {
            let mut cache = self.cache().map_err(|e| Error::Tree(e.to_string()))?;
            for (key, node) in batch.node_batch.nodes() {
                let bytes = encode(node)?;
                cache.put(key.clone(), node.clone(), bytes.len());
                if key.version() == version && key.nibble_path().is_empty() {
                    root = Some((encode(key)?, bytes));
                } else {
                    nodes.insert(encode(key)?, bytes);
                }
            }
        }
        let mut values = sled::Batch::default();
        for ((v, key), value) in batch.node_batch.values() {
            values.insert(&value_key(key, *v)[..], encode(value)?);
        }
        let mut stale = sled::Batch::default();
        for s in &batch.stale_node_index_batch {
            let mut k = s.stale_since_version.to_be_bytes().to_vec();
            k.extend(encode(&s.node_key)?);
            stale.insert(k, &[][..]);
        }
        self.nodes.apply_batch(nodes)?;
        self.values.apply_batch(values)?;
        self.stale.apply_batch(stale)?;
        if let Some((k, v)) = root {
            self.nodes.insert(k, v)?;
        }
        self.prune(version, batch)
    }
}

impl SledNodes {
    /// Drops the nodes replaced at or before `version - TREE_RETENTION`, and
    /// the values of the batch's keys superseded before it.
    fn prune(&self, version: Version, batch: &TreeUpdateBatch) -> Result<(), Error> {
        let Some(oldest) = version.checked_sub(TREE_RETENTION) else { return Ok(()) };
        let mut gone = sled::Batch::default();
        let mut done = sled::Batch::default();
        let mut cache = self.cache().map_err(|e| Error::Tree(e.to_string()))?;
        for entry in self.stale.range(..(oldest + 1).to_be_bytes().to_vec()) {
            let (k, _) = entry?;
            let key: NodeKey = decode(&k[8..]).map_err(|e| Error::Tree(e.to_string()))?;
            cache.remove(&key);
            gone.remove(&k[8..]);
            done.remove(k);
        }
        drop(cache);
        self.nodes.apply_batch(gone)?;
        self.stale.apply_batch(done)?;
        let mut old_values = sled::Batch::default();
        for (_, key) in batch.node_batch.values().keys() {
            // Every version of the key at or below `oldest` but the newest.
            let below: Vec<sled::IVec> =
                self.values.range(value_key(key, 0)..=value_key(key, oldest)).keys().collect::<Result<_, _>>()?;
            for k in below.iter().rev().skip(1) {
                old_values.remove(k.clone());
            }
        }
        self.values.apply_batch(old_values)?;
        Ok(())
    }
}
