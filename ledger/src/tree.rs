//! The authenticated state: every entry of the state is a leaf of a Jellyfish
//! Merkle Tree (Penumbra's `jmt`, hashed with blake3), keyed by
//! blake3(namespace, key) and valued by its canonical encoding; the state root
//! in each header is the tree's root at that height. A block's root is
//! computed from the keys the block wrote (the state's undo journal lists
//! them) against the tree of the previous height, so it costs
//! O(changed keys · log n), whatever the size of the state. Derived indexes
//! (open leases by end or provider, orders by owner or class, operators'
//! reverse map) are functions of the entries and stay out of the tree.
//!
//! Tree nodes are versioned by height and immutable. They live in a
//! `NodeStore`: in memory (`MemNodes`: tests, the simulation, benches; nodes
//! replaced more than `TREE_RETENTION` versions ago are pruned) or in sled
//! (`sled_nodes::SledNodes`: flushed every few heights, only the nodes live
//! at the flushed height). Only decided blocks write nodes, so every copy of
//! the state on a node writes the same nodes for a height: writes are
//! idempotent, and a different node under an existing key (a fork of one
//! store, which only a bug can cause) is refused.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use agora_protocol::{Address, Amount, ChainId, GpuClass, Hash, Height, LeaseId, TimestampMs};
use jmt::storage::{LeafNode, Node, NodeKey, TreeReader, TreeUpdateBatch};
use jmt::{KeyHash, OwnedValue, Version};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::journal::Undo;
use crate::params::Params;
use crate::state::{StateData, Validator};

/// Versions (heights) of the tree kept readable; older replaced nodes are
/// pruned. At least twice the store's snapshot interval, so a restart can
/// always replay from the last snapshot.
pub const TREE_RETENTION: u64 = 128;

/// blake3 for the tree's hashes.
pub struct Blake3(blake3::Hasher);

impl jmt::SimpleHasher for Blake3 {
    fn new() -> Self {
        Blake3(blake3::Hasher::new())
    }
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    fn finalize(self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

pub type Jmt<'a, R> = jmt::JellyfishMerkleTree<'a, R, Blake3>;
pub type Proof = jmt::proof::SparseMerkleProof<Blake3>;

/// Where tree nodes live.
pub trait NodeStore: TreeReader + Send + Sync {
    /// Writes a decided height's nodes (idempotent) and prunes what fell out
    /// of the retention window; `keys` are the written keys' preimages
    /// (hash, `StateKey::bytes`), so the state can be rebuilt from the leaves.
    fn write(&self, version: Version, batch: &TreeUpdateBatch, keys: &[(KeyHash, Vec<u8>)]) -> Result<(), Error>;
}

/// The leaf key of one state entry: a namespace tag and the entry's key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StateKey {
    /// Chain id, params, height, time, proposer, supply, burned, validators, next order id.
    Meta,
    Account(Address),
    Provider(Address),
    Lease(LeaseId),
    Unbonding(Height, Address),
    SlashedWindow(Address, Height, Height),
    SlashedEquivocation(Address, u64),
    Operator(Address),
    Order(u64),
    Auction(u64, GpuClass),
    Listing(LeaseId),
    Spot(u64, GpuClass),
}

/// The leaf key of a state key's `bytes`.
fn key_hash(bytes: &[u8]) -> KeyHash {
    KeyHash(Hash::tagged(b"agora/state-key/1", bytes).0)
}

fn canonical<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain owned data into a buffer cannot fail.
    agora_protocol::codec::canonical_bytes(value).unwrap_or_default()
}

impl StateKey {
    /// The key's bytes: a namespace byte, then the key's canonical encoding.
    pub fn bytes(&self) -> Vec<u8> {
        let (tag, key): (u8, Vec<u8>) = match self {
            StateKey::Meta => (0, Vec::new()),
            StateKey::Account(a) => (1, canonical(a)),
            StateKey::Provider(a) => (2, canonical(a)),
            StateKey::Lease(id) => (3, canonical(id)),
            StateKey::Unbonding(h, a) => (4, canonical(&(h, a))),
            StateKey::SlashedWindow(a, s, e) => (5, canonical(&(a, s, e))),
            StateKey::SlashedEquivocation(a, seq) => (6, canonical(&(a, seq))),
            StateKey::Operator(a) => (7, canonical(a)),
            StateKey::Order(id) => (8, canonical(id)),
            StateKey::Auction(n, c) => (9, canonical(&(n, c))),
            StateKey::Listing(id) => (10, canonical(id)),
            StateKey::Spot(n, c) => (11, canonical(&(n, c))),
        };
        let mut out = Vec::with_capacity(1 + key.len());
        out.push(tag);
        out.extend_from_slice(&key);
        out
    }

    pub fn hash(&self) -> KeyHash {
        key_hash(&self.bytes())
    }

    /// The leaf key of a key's `bytes`.
    pub fn hash_of(bytes: &[u8]) -> KeyHash {
        key_hash(bytes)
    }

    /// The keys an undo entry wrote (none for derived indexes).
    pub(crate) fn of_undo(undo: &Undo) -> Option<StateKey> {
        Some(match undo {
            Undo::Account(a, _) => StateKey::Account(*a),
            Undo::Provider(a, _) => StateKey::Provider(*a),
            Undo::Lease(id, _) => StateKey::Lease(*id),
            Undo::Unbonding((h, a), _) => StateKey::Unbonding(*h, *a),
            Undo::SlashedWindow((a, s, e), _) => StateKey::SlashedWindow(*a, *s, *e),
            Undo::SlashedEquivocation((a, seq), _) => StateKey::SlashedEquivocation(*a, *seq),
            Undo::Operator(op, _) => StateKey::Operator(*op),
            Undo::Order(id, _, _) => StateKey::Order(*id),
            Undo::Auction((n, c), _) => StateKey::Auction(*n, c.clone()),
            Undo::Listing(id, _) => StateKey::Listing(*id),
            Undo::Spot((n, c), _) => StateKey::Spot(*n, c.clone()),
            Undo::Burned(_) | Undo::Head(..) | Undo::Validators(_) | Undo::LastValidators(_) => StateKey::Meta,
            Undo::Expiry(..) | Undo::Settled(..) | Undo::OpenByProvider(..) | Undo::OperatorOf(..) => return None,
        })
    }
}

/// The singletons of the state, as one leaf.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    pub chain_id: ChainId,
    pub params: Params,
    pub height: Height,
    pub time_ms: TimestampMs,
    pub proposer: Address,
    pub supply: Amount,
    pub burned: Amount,
    /// The validators for the next height.
    pub validators: Vec<Validator>,
    /// The validators that decided the block at `height`.
    pub last_validators: Vec<Validator>,
    pub next_order_id: u64,
}

/// The leaf value of `key` in `data`: its canonical encoding, None if absent.
pub(crate) fn value_of(data: &StateData, key: &StateKey) -> Option<Vec<u8>> {
    match key {
        StateKey::Meta => Some(canonical(&Meta {
            chain_id: data.chain_id.clone(),
            params: data.params.clone(),
            height: data.height,
            time_ms: data.time_ms,
            proposer: data.proposer,
            supply: data.supply,
            burned: data.burned,
            validators: data.validators.clone(),
            last_validators: data.last_validators.clone(),
            next_order_id: data.book.next_id,
        })),
        StateKey::Account(a) => data.accounts.get(a).map(canonical),
        StateKey::Provider(a) => data.providers.get(a).map(canonical),
        StateKey::Lease(id) => data.leases.get(id).map(canonical),
        StateKey::Unbonding(h, a) => data.unbonding.get(&(*h, *a)).map(canonical),
        StateKey::SlashedWindow(a, s, e) => data.slashed_windows.contains(&(*a, *s, *e)).then(Vec::new),
        StateKey::SlashedEquivocation(a, seq) => data.slashed_equivocations.contains(&(*a, *seq)).then(Vec::new),
        StateKey::Operator(op) => data.operators.get(op).map(canonical),
        StateKey::Order(id) => data.book.orders.get(id).map(canonical),
        StateKey::Auction(n, c) => data.book.results.get(&(*n, c.clone())).map(canonical),
        StateKey::Listing(id) => data.book.listings.get(id).map(canonical),
        StateKey::Spot(n, c) => data.book.spot.get(&(*n, c.clone())).map(canonical),
    }
}

impl StateKey {
    /// The key `bytes` encode (the inverse of `bytes`).
    pub fn from_bytes(bytes: &[u8]) -> Result<StateKey, Error> {
        let (&tag, key) = bytes.split_first().ok_or_else(|| Error::Tree("an empty state key".into()))?;
        Ok(match tag {
            0 => StateKey::Meta,
            1 => StateKey::Account(decode_canonical(key)?),
            2 => StateKey::Provider(decode_canonical(key)?),
            3 => StateKey::Lease(decode_canonical(key)?),
            4 => {
                let (h, a) = decode_canonical(key)?;
                StateKey::Unbonding(h, a)
            }
            5 => {
                let (a, s, e) = decode_canonical(key)?;
                StateKey::SlashedWindow(a, s, e)
            }
            6 => {
                let (a, seq) = decode_canonical(key)?;
                StateKey::SlashedEquivocation(a, seq)
            }
            7 => StateKey::Operator(decode_canonical(key)?),
            8 => StateKey::Order(decode_canonical(key)?),
            9 => {
                let (n, c) = decode_canonical(key)?;
                StateKey::Auction(n, c)
            }
            10 => StateKey::Listing(decode_canonical(key)?),
            11 => {
                let (n, c) = decode_canonical(key)?;
                StateKey::Spot(n, c)
            }
            other => return Err(Error::Tree(format!("unknown state key namespace {other}"))),
        })
    }
}

/// The state whose leaves are `leaves` (key bytes, value), with its derived
/// indexes rebuilt: how a store reopens at a height without a snapshot.
pub(crate) fn state_from_leaves(leaves: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<StateData, Error> {
    let corrupt = |e: Error| Error::Tree(format!("a leaf does not decode: {e}"));
    let mut meta: Option<Meta> = None;
    let mut d = StateData::empty(ChainId::new("unset").map_err(|e| Error::Tree(e.to_string()))?, Params::default());
    for (key, value) in leaves {
        let v = value.as_slice();
        match StateKey::from_bytes(&key).map_err(corrupt)? {
            StateKey::Meta => meta = Some(decode_canonical(v).map_err(corrupt)?),
            StateKey::Account(a) => _ = d.accounts.insert(a, decode_canonical(v).map_err(corrupt)?),
            StateKey::Provider(a) => _ = d.providers.insert(a, decode_canonical(v).map_err(corrupt)?),
            StateKey::Lease(id) => _ = d.leases.insert(id, decode_canonical(v).map_err(corrupt)?),
            StateKey::Unbonding(h, a) => _ = d.unbonding.insert((h, a), decode_canonical(v).map_err(corrupt)?),
            StateKey::SlashedWindow(a, s, e) => _ = d.slashed_windows.insert((a, s, e)),
            StateKey::SlashedEquivocation(a, seq) => _ = d.slashed_equivocations.insert((a, seq)),
            StateKey::Operator(op) => _ = d.operators.insert(op, decode_canonical(v).map_err(corrupt)?),
            StateKey::Order(id) => _ = d.book.orders.insert(id, decode_canonical(v).map_err(corrupt)?),
            StateKey::Auction(n, c) => _ = d.book.results.insert((n, c), decode_canonical(v).map_err(corrupt)?),
            StateKey::Listing(id) => _ = d.book.listings.insert(id, decode_canonical(v).map_err(corrupt)?),
            StateKey::Spot(n, c) => _ = d.book.spot.insert((n, c), decode_canonical(v).map_err(corrupt)?),
        }
    }
    let m = meta.ok_or_else(|| Error::Tree("no meta leaf".into()))?;
    (d.chain_id, d.params, d.height, d.time_ms, d.proposer) = (m.chain_id, m.params, m.height, m.time_ms, m.proposer);
    (d.supply, d.burned, d.validators, d.last_validators) = (m.supply, m.burned, m.validators, m.last_validators);
    d.book.next_id = m.next_order_id;
    for lease in d.leases.values() {
        match lease.status {
            crate::state::LeaseStatus::Open => {
                d.lease_expiry.insert((lease.end_ms, lease.id));
                d.open_by_provider.insert((lease.provider, lease.id));
            }
            crate::state::LeaseStatus::Settled { at_ms, .. } => _ = d.lease_settled.insert((at_ms, lease.id)),
        }
    }
    for order in d.book.orders.values() {
        d.book.by_owner.insert((order.owner, order.id));
        *d.book.per_class.entry(order.class.clone()).or_default() += 1;
    }
    d.operator_of = d.operators.iter().map(|(op, account)| (*account, *op)).collect();
    Ok(d)
}

/// Every key of `data`.
pub(crate) fn all_keys(data: &StateData) -> Vec<StateKey> {
    let mut keys = vec![StateKey::Meta];
    keys.extend(data.accounts.keys().map(|a| StateKey::Account(*a)));
    keys.extend(data.providers.keys().map(|a| StateKey::Provider(*a)));
    keys.extend(data.leases.keys().map(|id| StateKey::Lease(*id)));
    keys.extend(data.unbonding.keys().map(|(h, a)| StateKey::Unbonding(*h, *a)));
    keys.extend(data.slashed_windows.iter().map(|(a, s, e)| StateKey::SlashedWindow(*a, *s, *e)));
    keys.extend(data.slashed_equivocations.iter().map(|(a, seq)| StateKey::SlashedEquivocation(*a, *seq)));
    keys.extend(data.operators.keys().map(|op| StateKey::Operator(*op)));
    keys.extend(data.book.orders.keys().map(|id| StateKey::Order(*id)));
    keys.extend(data.book.results.keys().map(|(n, c)| StateKey::Auction(*n, c.clone())));
    keys.extend(data.book.listings.keys().map(|id| StateKey::Listing(*id)));
    keys.extend(data.book.spot.keys().map(|(n, c)| StateKey::Spot(*n, c.clone())));
    keys
}

fn tree_error(e: impl std::fmt::Display) -> Error {
    Error::Tree(e.to_string())
}

/// Decodes a canonical encoding (a leaf value, a proof), refusing trailing bytes.
pub fn decode_canonical<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let config = bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<{ agora_protocol::limits::MAX_DECODE_BYTES }>();
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, config).map_err(|e| Error::BadProof(format!("decoding: {e}")))?;
    if used != bytes.len() {
        return Err(Error::BadProof("trailing bytes".into()));
    }
    Ok(value)
}

pub fn encode_proof(proof: &Proof) -> Vec<u8> {
    canonical(proof)
}

pub fn decode_proof(bytes: &[u8]) -> Result<Proof, Error> {
    decode_canonical(bytes)
}

/// Checks that `key` has `value` (None: is absent) under `root`.
pub fn verify_proof(root: Hash, key: &StateKey, value: Option<&[u8]>, proof: &Proof) -> Result<(), Error> {
    proof
        .verify(jmt::RootHash(root.0), key.hash(), value)
        .map_err(|e| Error::BadProof(format!("{key:?} is not proven under root {root}: {e}")))
}

/// A computed version of the tree: its root, its nodes, the written keys' preimages.
pub(crate) struct Computed {
    pub root: Hash,
    pub batch: TreeUpdateBatch,
    pub keys: Vec<(KeyHash, Vec<u8>)>,
}

/// The root and node batch of `data`'s tree at `version`, given the keys
/// written since `version - 1` (whose tree `store` holds). With every key
/// and `version` 0 this builds a tree from nothing.
pub(crate) fn compute(
    store: &dyn NodeStore,
    data: &StateData,
    keys: impl IntoIterator<Item = StateKey>,
    version: Version,
) -> Result<Computed, Error> {
    let (values, preimages) = written(data, keys);
    let (root, batch) = put(store, values, version)?;
    Ok(Computed { root, batch, keys: preimages })
}

type Written = (BTreeMap<KeyHash, Option<OwnedValue>>, Vec<(KeyHash, Vec<u8>)>);

/// The leaves `keys` have in `data`, and the keys' preimages.
fn written(data: &StateData, keys: impl IntoIterator<Item = StateKey>) -> Written {
    let mut values: BTreeMap<KeyHash, Option<OwnedValue>> = BTreeMap::new();
    let mut preimages = Vec::new();
    for key in keys {
        let bytes = key.bytes();
        let hash = key_hash(&bytes);
        values.insert(hash, value_of(data, &key));
        preimages.push((hash, bytes));
    }
    (values, preimages)
}

/// A computed version: (version, digest of the written leaves, result).
type RecentVersion = (Version, [u8; 32], Arc<Computed>);

/// Recent computed versions shared by the copies of a state on one node:
/// the engine checking a proposal, the engine committing it and the store
/// committing it compute the same version from the same leaves, and only
/// the first pays for the tree.
pub const RECENT_VERSIONS: usize = 8;

impl TreeHandle {
    /// `compute` for this handle's store, reusing an identical recent one.
    pub(crate) fn compute(
        &self,
        data: &StateData,
        keys: impl IntoIterator<Item = StateKey>,
        version: Version,
    ) -> Result<Arc<Computed>, Error> {
        let (values, preimages) = written(data, keys);
        let mut h = blake3::Hasher::new();
        h.update(&version.to_le_bytes());
        for (k, v) in &values {
            h.update(&k.0);
            match v {
                Some(v) => h.update(&[1]).update(&(v.len() as u64).to_le_bytes()).update(v),
                None => h.update(&[0]),
            };
        }
        let digest = *h.finalize().as_bytes();
        let lock = || self.recent.lock().map_err(|_| Error::Tree("recent roots lock poisoned".into()));
        if let Some((_, _, c)) = lock()?.iter().find(|(v, d, _)| *v == version && *d == digest) {
            return Ok(c.clone());
        }
        let (root, batch) = put(&*self.store, values, version)?;
        let computed = Arc::new(Computed { root, batch, keys: preimages });
        let mut recent = lock()?;
        recent.push_back((version, digest, computed.clone()));
        while recent.len() > RECENT_VERSIONS {
            recent.pop_front();
        }
        Ok(computed)
    }
}

fn put(
    store: &dyn NodeStore,
    values: BTreeMap<KeyHash, Option<OwnedValue>>,
    version: Version,
) -> Result<(Hash, TreeUpdateBatch), Error> {
    let reader = Reader(store);
    let tree = Jmt::new(&reader);
    // Inserts only (most blocks): jmt's batch insertion builds each changed
    // subtree once instead of a path per key. Deletions need the per-key path.
    if !values.is_empty() && values.values().all(Option::is_some) {
        let set: Vec<(KeyHash, OwnedValue)> = values.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
        let (roots, batch) = tree.batch_put_value_sets(vec![set], None, version).map_err(tree_error)?;
        let root = roots.first().ok_or_else(|| Error::Tree("no root".into()))?;
        return Ok((Hash(root.0), batch));
    }
    let (root, batch) = tree.put_value_set(values, version).map_err(tree_error)?;
    Ok((Hash(root.0), batch))
}

/// The root of `data` computed from nothing, in a throwaway store: what an
/// incremental root must always equal (tests, and checking a snapshot).
pub(crate) fn root_from_scratch(data: &StateData) -> Result<Hash, Error> {
    let store = MemNodes::default();
    Ok(compute(&store, data, all_keys(data), 0)?.root)
}

/// The tree's root at `version`, if the store holds that version.
pub fn root_at(store: &dyn NodeStore, version: Version) -> Result<Option<Hash>, Error> {
    let reader = Reader(store);
    Ok(Jmt::new(&reader).get_root_hash_option(version).map_err(tree_error)?.map(|r| Hash(r.0)))
}

/// `key`'s Merkle proof against `version`'s root, for the state `data` at
/// that version (the value comes from `data`: a store keeps only its newest
/// values).
pub(crate) fn prove(
    store: &dyn NodeStore,
    data: &StateData,
    key: &StateKey,
    version: Version,
) -> Result<(Option<OwnedValue>, Proof), Error> {
    let value = value_of(data, key);
    let reader = WithValue { store, key: key.hash(), value: value.clone() };
    let (_, proof) = Jmt::new(&reader).get_with_proof(key.hash(), version).map_err(tree_error)?;
    Ok((value, proof))
}

/// A reader that answers the one value a proof needs from the state.
pub(crate) struct WithValue<'a> {
    pub store: &'a dyn NodeStore,
    pub key: KeyHash,
    pub value: Option<OwnedValue>,
}

impl TreeReader for WithValue<'_> {
    fn get_node_option(&self, key: &NodeKey) -> anyhow::Result<Option<Node>> {
        self.store.get_node_option(key)
    }
    fn get_value_option(&self, _max_version: Version, key: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
        Ok(if key == self.key { self.value.clone() } else { None })
    }
    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        Err(anyhow::anyhow!("restoring a tree is not supported"))
    }
}

/// A `&dyn NodeStore` as a sized `TreeReader` for jmt.
struct Reader<'a>(&'a dyn NodeStore);

impl TreeReader for Reader<'_> {
    fn get_node_option(&self, key: &NodeKey) -> anyhow::Result<Option<Node>> {
        self.0.get_node_option(key)
    }
    fn get_value_option(&self, max_version: Version, key: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
        self.0.get_value_option(max_version, key)
    }
    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        self.0.get_rightmost_leaf()
    }
}

/// The state's handle on its tree: the store, and the last root computed
/// with its batch (a block's root is computed when it is checked and reused
/// when it commits). A copy of the state shares the store and starts with
/// no pending root of its own.
pub struct TreeHandle {
    pub(crate) store: Arc<dyn NodeStore>,
    pub(crate) pending: Mutex<Option<Pending>>,
    /// (version, digest of the written leaves, result), shared by clones.
    recent: Arc<Mutex<std::collections::VecDeque<RecentVersion>>>,
}

impl std::fmt::Debug for TreeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TreeHandle")
    }
}

/// A computed root, valid while the state is at the same write.
pub(crate) struct Pending {
    /// (version, writes ever journaled, journal length) when it was computed.
    pub at: (Version, u64, usize),
    pub computed: Arc<Computed>,
}

impl TreeHandle {
    pub fn new(store: Arc<dyn NodeStore>) -> TreeHandle {
        TreeHandle { store, pending: Mutex::new(None), recent: Arc::default() }
    }
}

impl Clone for TreeHandle {
    fn clone(&self) -> TreeHandle {
        TreeHandle { store: self.store.clone(), pending: Mutex::new(None), recent: self.recent.clone() }
    }
}

/// Tree nodes in memory, with retention pruning.
#[derive(Default)]
pub struct MemNodes {
    inner: RwLock<MemInner>,
}

#[derive(Default)]
struct MemInner {
    nodes: HashMap<NodeKey, Node>,
    /// Nodes replaced at a version, to prune once it leaves the window.
    stale: BTreeMap<Version, BTreeSet<NodeKey>>,
}

impl TreeReader for MemNodes {
    fn get_node_option(&self, key: &NodeKey) -> anyhow::Result<Option<Node>> {
        Ok(self.inner.read().map_err(|_| anyhow::anyhow!("tree lock poisoned"))?.nodes.get(key).cloned())
    }
    /// Values are not kept here: proofs take theirs from the state (`prove`).
    fn get_value_option(&self, _max_version: Version, _key: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
        Ok(None)
    }
    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        Err(anyhow::anyhow!("restoring a tree is not supported"))
    }
}

impl NodeStore for MemNodes {
    fn write(&self, version: Version, batch: &TreeUpdateBatch, _keys: &[(KeyHash, Vec<u8>)]) -> Result<(), Error> {
        let mut inner = self.inner.write().map_err(|_| Error::Tree("tree lock poisoned".into()))?;
        for (key, node) in batch.node_batch.nodes() {
            match inner.nodes.get(key) {
                Some(old) if old != node => return Err(Error::Tree(format!("a different node at {key:?}: a fork"))),
                Some(_) => {}
                None => _ = inner.nodes.insert(key.clone(), node.clone()),
            }
        }
        for stale in &batch.stale_node_index_batch {
            inner.stale.entry(stale.stale_since_version).or_default().insert(stale.node_key.clone());
        }
        // Prune the nodes replaced before the oldest version kept.
        let Some(oldest) = version.checked_sub(TREE_RETENTION) else { return Ok(()) };
        let due: Vec<Version> = inner.stale.range(..=oldest).map(|(v, _)| *v).collect();
        for v in due {
            for key in inner.stale.remove(&v).unwrap_or_default() {
                inner.nodes.remove(&key);
            }
        }
        Ok(())
    }
}

/// A store's copy-on-write fork: reads fall through to the base, writes stay
/// here. What a state copy that will commit other blocks than the original
/// (a test's scratch chain, a what-if) writes to, so neither disturbs the
/// other.
pub struct Overlay {
    own: MemNodes,
    base: Arc<dyn NodeStore>,
}

impl Overlay {
    pub fn new(base: Arc<dyn NodeStore>) -> Overlay {
        Overlay { own: MemNodes::default(), base }
    }
}

impl TreeReader for Overlay {
    fn get_node_option(&self, key: &NodeKey) -> anyhow::Result<Option<Node>> {
        match self.own.get_node_option(key)? {
            Some(n) => Ok(Some(n)),
            None => self.base.get_node_option(key),
        }
    }
    fn get_value_option(&self, _max_version: Version, _key: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
        Ok(None)
    }
    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        Err(anyhow::anyhow!("restoring a tree is not supported"))
    }
}

impl NodeStore for Overlay {
    fn write(&self, version: Version, batch: &TreeUpdateBatch, keys: &[(KeyHash, Vec<u8>)]) -> Result<(), Error> {
        self.own.write(version, batch, keys)
    }
}
