//! The state tree on disk, in the block store's sled database. sled's cost
//! is per operation, and the upper levels of the tree (and hot leaves) are
//! rewritten by every block, so heights are kept in memory and written every
//! `FLUSH_EVERY_BLOCKS` in one go: only nodes still live at the flushed
//! height reach the disk, and nodes a flush makes stale are deleted by it.
//! A crash loses at most the heights since the last flush, which the store
//! replays from its blocks. On disk: nodes by version-first key (a flush
//! appends), and the live leaves (key, value) at the flushed height, from
//! which the state is rebuilt when the store opens. Reads go through a cache
//! bounded in bytes (two generations: a node read or written goes into the
//! young one; when it is full the old one is dropped and the young one
//! becomes old).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use jmt::storage::{LeafNode, Node, NodeKey, TreeReader, TreeUpdateBatch};
use jmt::{KeyHash, OwnedValue, Version};

use crate::error::Error;
use crate::tree::NodeStore;

/// Bytes of encoded nodes the cache holds at most (both generations).
pub const NODE_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Heights between two writes of the tree to disk (a restart replays at most this many blocks).
pub const FLUSH_EVERY_BLOCKS: u64 = 32;
/// Heights a replaced node stays readable in memory (the API proves at the
/// height it last saw, at most a block behind).
const KEEP_REPLACED_VERSIONS: u64 = 2;

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
    /// Version (big-endian) ‖ node key → node, as of the last flush.
    nodes: sled::Tree,
    /// Key hash → (key bytes, value) of every live leaf at the last flush.
    current: sled::Tree,
    cache: Mutex<Cache>,
    unflushed: Mutex<Unflushed>,
}

/// A live leaf: its key's bytes and its value.
type Leaf = (Vec<u8>, Vec<u8>);

/// A sled entry, encoded: key and value.
type Entry = (Vec<u8>, Vec<u8>);

/// What was written since the last flush.
#[derive(Default)]
struct Unflushed {
    nodes: HashMap<NodeKey, Node>,
    /// Nodes replaced, by the height that replaced them.
    replaced: BTreeMap<Version, Vec<NodeKey>>,
    /// Persisted nodes replaced since the last flush: deleted by the next.
    replaced_on_disk: Vec<NodeKey>,
    /// Live-leaf changes: key hash → (key, value), or None (deleted).
    current: BTreeMap<KeyHash, Option<Leaf>>,
}

fn node_key(key: &NodeKey) -> Result<Vec<u8>, Error> {
    let mut out = key.version().to_be_bytes().to_vec();
    out.extend(encode(key)?);
    Ok(out)
}

fn lock_error<T>(_: T) -> Error {
    Error::Tree("tree lock poisoned".into())
}

impl SledNodes {
    pub fn open(db: &sled::Db) -> Result<SledNodes, Error> {
        Ok(SledNodes {
            nodes: db.open_tree("tree_nodes")?,
            current: db.open_tree("tree_current")?,
            cache: Mutex::new(Cache::default()),
            unflushed: Mutex::new(Unflushed::default()),
        })
    }

    fn cache(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Cache>> {
        self.cache.lock().map_err(|_| anyhow::anyhow!("tree cache lock poisoned"))
    }

    /// Nodes in the node table on disk (pruning checks, disk growth).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The state as the live leaves of the last flushed height have it (the
    /// caller checks it against that block's root).
    pub(crate) fn load(&self) -> Result<crate::state::StateData, Error> {
        let mut leaves = Vec::new();
        for entry in self.current.iter() {
            let (_, bytes) = entry?;
            leaves.push(decode::<(Vec<u8>, Vec<u8>)>(&bytes).map_err(|e| Error::Tree(e.to_string()))?);
        }
        crate::tree::state_from_leaves(leaves)
    }

    /// Writes everything since the last flush that is live at `version`:
    /// the nodes, then `version`'s root node (a height whose root is on disk
    /// is whole), then the live leaves (atomically), then deletes the
    /// persisted nodes that became stale.
    pub fn flush(&self, version: Version) -> Result<(), Error> {
        let mut u = self.unflushed.lock().map_err(lock_error)?;
        if u.nodes.keys().any(|k| k.version() > version) {
            return Err(Error::Tree(format!("tree nodes above height {version} were written before its flush")));
        }
        let root = self.write_nodes(&u.nodes, version)?;
        let mut current = sled::Batch::default();
        for (hash, leaf) in &u.current {
            match leaf {
                Some(kv) => current.insert(&hash.0[..], encode(kv)?),
                None => current.remove(&hash.0[..]),
            }
        }
        let mut gone = sled::Batch::default();
        for key in &u.replaced_on_disk {
            gone.remove(node_key(key)?);
        }
        if let Some((k, v)) = root {
            self.nodes.insert(k, v)?;
        }
        self.current.apply_batch(current)?;
        self.nodes.apply_batch(gone)?;
        // What stays readable in memory: nodes replaced in the last heights.
        let keep: Vec<NodeKey> = u.replaced.values().flatten().cloned().collect();
        let kept: HashMap<NodeKey, Node> =
            keep.iter().filter_map(|k| u.nodes.get(k).map(|n| (k.clone(), n.clone()))).collect();
        u.replaced_on_disk = keep.iter().filter(|k| kept.contains_key(*k)).cloned().collect();
        u.nodes = kept;
        u.current.clear();
        Ok(())
    }

    /// Writes `nodes` to disk in chunks, each its own sled batch (one batch
    /// holds every version of every page it rewrites until it ends), all
    /// but `version`'s root, which it returns (key, bytes) for the caller
    /// to write last: nodes may land in pieces, since none is read before
    /// its height's root.
    fn write_nodes<'n>(
        &self,
        nodes: impl IntoIterator<Item = (&'n NodeKey, &'n Node)>,
        version: Version,
    ) -> Result<Option<Entry>, Error> {
        let mut root = None;
        let mut chunked = Chunked::new(&self.nodes);
        for (key, node) in nodes {
            let bytes = encode(node)?;
            if key.version() == version && key.nibble_path().is_empty() {
                root = Some((node_key(key)?, bytes));
            } else {
                chunked.insert(node_key(key)?, bytes)?;
            }
        }
        chunked.finish()?;
        Ok(root)
    }

    /// A whole tree at once — the genesis', or a snapshot's being
    /// installed — written straight to disk in chunks rather than kept for
    /// a flush: held in memory as well, a million-account genesis peaked at
    /// gigabytes more. The leaves go before the root: a store without its
    /// first root is new, and writes it all again (the same nodes and
    /// leaves) when it next opens or installs.
    pub(crate) fn write_through(
        &self,
        version: Version,
        batch: &TreeUpdateBatch,
        keys: &[(KeyHash, Vec<u8>)],
    ) -> Result<(), Error> {
        let root = self.write_nodes(batch.node_batch.nodes(), version)?;
        let preimages: HashMap<&KeyHash, &Vec<u8>> = keys.iter().map(|(h, k)| (h, k)).collect();
        let mut leaves = Chunked::new(&self.current);
        for ((_, hash), value) in batch.node_batch.values() {
            let (Some(v), Some(key)) = (value, preimages.get(hash)) else {
                return Err(Error::Tree("a leaf without its key or value".into()));
            };
            leaves.insert(hash.0.to_vec(), encode(&(key, v))?)?;
        }
        leaves.finish()?;
        let (k, v) = root.ok_or_else(|| Error::Tree(format!("the tree written at {version} has no root")))?;
        self.nodes.insert(k, v)?;
        Ok(())
    }

    /// Flushes at every `FLUSH_EVERY_BLOCKS`th height: called by the store
    /// once that height's block is durable (the genesis is written through).
    pub fn flush_if_due(&self, version: Version) -> Result<(), Error> {
        if version % FLUSH_EVERY_BLOCKS == 0 {
            self.flush(version)?;
        }
        Ok(())
    }
}

/// Entries a flush writes per sled batch.
const FLUSH_CHUNK_ENTRIES: usize = 4_096;

/// Inserts into a sled tree in batches of `FLUSH_CHUNK_ENTRIES`.
struct Chunked<'a> {
    tree: &'a sled::Tree,
    batch: sled::Batch,
    len: usize,
}

impl<'a> Chunked<'a> {
    fn new(tree: &'a sled::Tree) -> Chunked<'a> {
        Chunked { tree, batch: sled::Batch::default(), len: 0 }
    }

    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), Error> {
        self.batch.insert(key, value);
        self.len += 1;
        if self.len == FLUSH_CHUNK_ENTRIES {
            self.tree.apply_batch(std::mem::take(&mut self.batch))?;
            self.len = 0;
        }
        Ok(())
    }

    fn finish(self) -> Result<(), Error> {
        Ok(self.tree.apply_batch(self.batch)?)
    }
}

impl TreeReader for SledNodes {
    fn get_node_option(&self, key: &NodeKey) -> anyhow::Result<Option<Node>> {
        if let Some(n) = self.cache()?.get(key) {
            return Ok(Some(n));
        }
        if let Some(n) = self.unflushed.lock().map_err(|_| anyhow::anyhow!("tree lock poisoned"))?.nodes.get(key) {
            return Ok(Some(n.clone()));
        }
        let Some(bytes) = self.nodes.get(node_key(key)?)? else { return Ok(None) };
        let node: Node = decode(&bytes)?;
        self.cache()?.put(key.clone(), node.clone(), bytes.len());
        Ok(Some(node))
    }

    /// The newest value only: proofs take their values from the state they
    /// prove (`tree::prove`), not from here.
    fn get_value_option(&self, _max_version: Version, key: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
        if let Some(leaf) = self.unflushed.lock().map_err(|_| anyhow::anyhow!("tree lock poisoned"))?.current.get(&key)
        {
            return Ok(leaf.as_ref().map(|(_, v)| v.clone()));
        }
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
    /// Keeps the height in memory (idempotent: every copy of the state
    /// writes the same decided heights). Only the store flushes
    /// (`flush_if_due`), after the block of that height is on disk: a
    /// copy of the state that commits a block first (the consensus engine)
    /// must not put leaves on disk for a height whose block is not there.
    fn write(&self, version: Version, batch: &TreeUpdateBatch, keys: &[(KeyHash, Vec<u8>)]) -> Result<(), Error> {
        if version == 0 {
            return self.write_through(0, batch, keys);
        }
        {
            let mut u = self.unflushed.lock().map_err(lock_error)?;
            let mut cache = self.cache().map_err(|e| Error::Tree(e.to_string()))?;
            for (key, node) in batch.node_batch.nodes() {
                cache.put(key.clone(), node.clone(), 256);
                u.nodes.insert(key.clone(), node.clone());
            }
            for s in &batch.stale_node_index_batch {
                u.replaced.entry(s.stale_since_version).or_default().push(s.node_key.clone());
            }
            let preimages: HashMap<&KeyHash, &Vec<u8>> = keys.iter().map(|(h, k)| (h, k)).collect();
            for ((_, hash), value) in batch.node_batch.values() {
                let leaf = match (value, preimages.get(hash)) {
                    (Some(v), Some(key)) => Some(((*key).clone(), v.clone())),
                    (None, _) => None,
                    (Some(_), None) => return Err(Error::Tree("a written leaf without its key".into())),
                };
                u.current.insert(*hash, leaf);
            }
            // Nodes replaced long enough ago: dropped if never written,
            // deleted from disk at the next flush if they were.
            let due: Vec<Version> =
                u.replaced.range(..=version.saturating_sub(KEEP_REPLACED_VERSIONS)).map(|(v, _)| *v).collect();
            for v in due {
                for key in u.replaced.remove(&v).unwrap_or_default() {
                    cache.remove(&key);
                    if u.nodes.remove(&key).is_none() {
                        u.replaced_on_disk.push(key);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TestChain;
    use agora_protocol::Amount;

    /// A store cut short while writing its genesis — its leaves (more than
    /// one flush chunk of them) on disk, its root not — is new again when it
    /// next opens: it writes the genesis whole, and later opens recover it.
    #[test]
    fn a_genesis_cut_short_before_its_root_is_written_again_whole() {
        let chain = TestChain::new(FLUSH_CHUNK_ENTRIES + 500, 1, Amount::agr(10));
        let dir = tempfile::tempdir().unwrap();
        let root = crate::Store::open(dir.path(), &chain.genesis).unwrap().state().root();
        let root_key = {
            let db = crate::store::open_sled(dir.path()).unwrap();
            let nodes = db.open_tree("tree_nodes").unwrap();
            let is_root = |k: &[u8]| decode::<NodeKey>(&k[8..]).unwrap().nibble_path().is_empty();
            let found: Vec<_> = nodes.scan_prefix(0u64.to_be_bytes()).keys().map(Result::unwrap).collect();
            found.into_iter().find(|k| is_root(k)).expect("the genesis root is on disk").to_vec()
        };
        {
            let db = crate::store::open_sled(dir.path()).unwrap();
            let nodes = db.open_tree("tree_nodes").unwrap();
            assert!(nodes.remove(&root_key).unwrap().is_some(), "the genesis root was on disk");
            assert_eq!(db.open_tree("tree_current").unwrap().len(), FLUSH_CHUNK_ENTRIES + 501);
            db.flush().unwrap();
        }
        let again = crate::Store::open(dir.path(), &chain.genesis).unwrap();
        assert_eq!(again.state().root(), root);
        drop(again);
        let db = crate::store::open_sled(dir.path()).unwrap();
        assert!(db.open_tree("tree_nodes").unwrap().contains_key(&root_key).unwrap(), "the root is written again");
        drop(db);
        // Not new any more: opened by recovery, from its leaves, to the same root.
        assert_eq!(crate::Store::open(dir.path(), &chain.genesis).unwrap().state().root(), root);
    }
}
