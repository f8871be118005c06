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
    /// Version (big-endian) ‖ node key → node: each height's new nodes sort
    /// together at the end, so a commit appends instead of splitting pages
    /// all over the table.
    nodes: sled::Tree,
    /// Version → the keys of the nodes that height replaced (one entry per
    /// height: sled's cost is per operation).
    stale: sled::Tree,
    /// Key hash → (key bytes, value) of every live leaf at the newest
    /// written height: what the state is rebuilt from when the store opens.
    current: sled::Tree,
    cache: Mutex<Cache>,
}

fn node_key(key: &NodeKey) -> Result<Vec<u8>, Error> {
    let mut out = key.version().to_be_bytes().to_vec();
    out.extend(encode(key)?);
    Ok(out)
}

impl SledNodes {
    pub fn open(db: &sled::Db) -> Result<SledNodes, Error> {
        Ok(SledNodes {
            nodes: db.open_tree("tree_nodes")?,
            stale: db.open_tree("tree_stale")?,
            current: db.open_tree("tree_current")?,
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

    /// The state as the leaves of the newest written height have it (the
    /// caller checks it against a header's root).
    pub(crate) fn load(&self) -> Result<crate::state::StateData, Error> {
        let mut leaves = Vec::new();
        for entry in self.current.iter() {
            let (_, bytes) = entry?;
            leaves.push(decode::<(Vec<u8>, Vec<u8>)>(&bytes).map_err(|e| Error::Tree(e.to_string()))?);
        }
        crate::tree::state_from_leaves(leaves)
    }
}

impl TreeReader for SledNodes {
    fn get_node_option(&self, key: &NodeKey) -> anyhow::Result<Option<Node>> {
        if let Some(n) = self.cache()?.get(key) {
            return Ok(Some(n));
        }
        let Some(bytes) = self.nodes.get(node_key(key)?)? else { return Ok(None) };
        let node: Node = decode(&bytes)?;
        self.cache()?.put(key.clone(), node.clone(), bytes.len());
        Ok(Some(node))
    }

    /// The newest value only: proofs take their values from the state they
    /// prove (`tree::prove`), not from here.
    fn get_value_option(&self, _max_version: Version, key: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
        match self.current.get(key.0)? {
            Some(bytes) => Ok(Some(decode::<(Vec<u8>, Vec<u8>)>(&bytes)?.1)),
            None => Ok(None),
        }
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        Err(anyhow::anyhow!("restoring a tree is not supported"))
    }
}

impl NodeStore for SledNodes {
    /// Nodes, then the replaced-node index, then the version's root node,
    /// then the live leaves: a height whose root is on disk has all its
    /// nodes; `current` is, atomically, at that height or the one before.
    fn write(&self, version: Version, batch: &TreeUpdateBatch, keys: &[(KeyHash, Vec<u8>)]) -> Result<(), Error> {
        let mut nodes = sled::Batch::default();
        let mut root = None;
        {
            let mut cache = self.cache().map_err(|e| Error::Tree(e.to_string()))?;
            for (key, node) in batch.node_batch.nodes() {
                let bytes = encode(node)?;
                cache.put(key.clone(), node.clone(), bytes.len());
                if key.version() == version && key.nibble_path().is_empty() {
                    root = Some((node_key(key)?, bytes));
                } else {
                    nodes.insert(node_key(key)?, bytes);
                }
            }
        }
        let mut replaced: std::collections::BTreeMap<Version, Vec<Vec<u8>>> = std::collections::BTreeMap::new();
        for s in &batch.stale_node_index_batch {
            replaced.entry(s.stale_since_version).or_default().push(node_key(&s.node_key)?);
        }
        let mut stale = sled::Batch::default();
        for (v, keys) in &replaced {
            stale.insert(&v.to_be_bytes()[..], encode(keys)?);
        }
        let preimages: std::collections::HashMap<&KeyHash, &Vec<u8>> = keys.iter().map(|(h, k)| (h, k)).collect();
        let mut current = sled::Batch::default();
        for ((_, hash), value) in batch.node_batch.values() {
            match (value, preimages.get(hash)) {
                (Some(v), Some(key)) => current.insert(&hash.0[..], encode(&(key, v))?),
                (None, _) => current.remove(&hash.0[..]),
                (Some(_), None) => return Err(Error::Tree("a written leaf without its key".into())),
            }
        }
        self.nodes.apply_batch(nodes)?;
        self.stale.apply_batch(stale)?;
        if let Some((k, v)) = root {
            self.nodes.insert(k, v)?;
        }
        self.current.apply_batch(current)?;
        self.prune(version)
    }
}

impl SledNodes {
    /// Drops the nodes replaced at or before `version - TREE_RETENTION`.
    fn prune(&self, version: Version) -> Result<(), Error> {
        let Some(oldest) = version.checked_sub(TREE_RETENTION) else { return Ok(()) };
        let mut gone = sled::Batch::default();
        let mut done = sled::Batch::default();
        let mut cache = self.cache().map_err(|e| Error::Tree(e.to_string()))?;
        for entry in self.stale.range(..(oldest + 1).to_be_bytes().to_vec()) {
            let (k, v) = entry?;
            for key in decode::<Vec<Vec<u8>>>(&v).map_err(|e| Error::Tree(e.to_string()))? {
                let node: NodeKey = decode(&key[8..]).map_err(|e| Error::Tree(e.to_string()))?;
                cache.remove(&node);
                gone.remove(key);
            }
            done.remove(k);
        }
        drop(cache);
        self.nodes.apply_batch(gone)?;
        self.stale.apply_batch(done)?;
        Ok(())
    }
}
