//! The durable block store and state store on sled: the only ledger module
//! that does I/O. A commit writes the block, its certificate and the new tip
//! in one sled transaction, then the state tree's nodes of that height
//! (`sled_nodes`), and flushes before returning: nothing written per block
//! depends on the size of the state. Opening verifies the whole hash chain,
//! rebuilds the state from the tree's leaves at the newest height it holds
//! (checked against that block's state root) and replays the blocks after
//! it; any inconsistency is an error naming the height. sled's flush is not an fsync: a power cut may lose
//! the newest blocks, which peers supply again. What must never be lost (the
//! consensus WAL, the double-sign guard) lives in `durable` files instead.

use std::collections::BTreeMap;
use std::path::Path;

use agora_protocol::codec::{self, Wire};
use agora_protocol::limits::MAX_STATE_SNAPSHOT_BYTES;
use agora_protocol::{Address, Block, CommitCertificate, Hash, Height};
use sled::transaction::ConflictableTransactionError;
use sled::{Transactional, Tree};

use crate::apply::{BlockOutcome, SigCheck, apply_block, apply_block_pending, finish_block};
use crate::error::Error;
use crate::genesis::Genesis;
use crate::state::{State, StateData};

const META_GENESIS: &[u8] = b"genesis_hash";
const META_GENESIS_DOC: &[u8] = b"genesis";
const META_TIP: &[u8] = b"tip_height";
const META_SLASH_INDEX: &[u8] = b"slash_index_v1";
/// The first height whose block the store holds, for a store installed from
/// a state snapshot (absent: 0, the store holds every block).
const META_BASE: &[u8] = b"base_height";

/// Index keys for a block's slash transactions: the offender's account (and
/// the offending key, when an operator key signed) ‖ height ‖ tx index.
fn slash_keys(block: &Block, state: &State) -> Vec<[u8; 44]> {
    let mut keys = Vec::new();
    for (i, tx) in block.txs.iter().enumerate() {
        let offender = match &tx.body.kind {
            agora_protocol::TxKind::SlashDowntime { evidence } => evidence.provider,
            agora_protocol::TxKind::SlashEquivocation { evidence } => evidence.offender(),
            _ => continue,
        };
        let account = state.acting_for(&offender);
        for who in [account, offender].into_iter().take(if account == offender { 1 } else { 2 }) {
            let mut k = [0u8; 44];
            k[..32].copy_from_slice(&who.0);
            k[32..40].copy_from_slice(&block.header.height.0.to_be_bytes());
            k[40..].copy_from_slice(&(i as u32).to_be_bytes());
            keys.push(k);
        }
    }
    keys
}

impl Wire for StateData {
    const NAME: &'static str = "state snapshot";
    const VERSION: u8 = 1;
    const MAX_BYTES: usize = MAX_STATE_SNAPSHOT_BYTES;
}

/// An open ledger database: committed blocks plus the state at the tip.
pub struct Store {
    db: sled::Db,
    meta: Tree,
    blocks: Tree,
    snapshots: Tree,
    certificates: Tree,
    /// Index of slash transactions: offender account ‖ height ‖ tx index.
    slashes: Tree,
    /// Light-client transitions by height (`record_transition`); never pruned.
    transitions: Tree,
    genesis: Genesis,
    state: State,
    /// The first block held (0: all of them); see `META_BASE`.
    base: Height,
    /// Blocks kept behind the tip (None: every block, an archive node).
    retention: Option<u64>,
    /// State snapshots kept for peers joining by state sync.
    shelf: SnapshotShelf,
    /// The state tree's nodes (in this database).
    nodes: std::sync::Arc<crate::sled_nodes::SledNodes>,
}

/// How long opening waits for the directory lock of a store that was just
/// closed. sled releases its lock only when its background threads let go of
/// the database, which on a busy machine can be well after `drop` returns (a
/// restart in place, a test reopening its store); a store held by a running
/// node still fails, after this wait, with sled's "could not acquire lock".
pub const STORE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens the sled database at `path`, retrying while only its lock is busy.
/// Public for tools and tests that read or tamper with a closed store's raw
/// trees (a plain `sled::open` races the closed store's threads).
pub fn open_sled(path: &Path) -> Result<sled::Db, Error> {
    let deadline = std::time::Instant::now() + STORE_LOCK_WAIT;
    loop {
        match sled::Config::new().path(path).open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

fn key(h: Height) -> [u8; 8] {
    h.0.to_be_bytes()
}

fn corrupt(height: Height, reason: impl Into<String>) -> Error {
    Error::Corrupt { height, reason: reason.into() }
}

impl Store {
    /// Opens (or creates) the store at `path` for `genesis`, verifying the
    /// hash chain and rebuilding the state at the last committed block.
    pub fn open(path: &Path, genesis: &Genesis) -> Result<Store, Error> {
        let db = open_sled(path)?;
        let meta = db.open_tree("meta")?;
        let genesis_hash = genesis.hash();
        match meta.get(META_GENESIS)? {
            Some(stored) if stored.as_ref() != genesis_hash.0 => {
                let stored = Hash(stored.as_ref().try_into().map_err(|_| corrupt(Height(0), "bad genesis hash"))?);
                return Err(Error::GenesisMismatch { stored, given: genesis_hash });
            }
            Some(_) => {}
            None => {
                meta.insert(META_GENESIS_DOC, codec::encode(genesis)?)?;
                meta.insert(META_GENESIS, &genesis_hash.0)?;
                db.flush()?;
            }
        }
        Store::open_db(db, meta, genesis.clone())
    }

    /// Opens an existing store, using the genesis recorded in it.
    pub fn open_existing(path: &Path) -> Result<Store, Error> {
        if !path.exists() {
            return Err(Error::NoStore(path.display().to_string()));
        }
        let db = open_sled(path)?;
        let meta = db.open_tree("meta")?;
        let bytes = meta.get(META_GENESIS_DOC)?.ok_or_else(|| Error::NoStore(path.display().to_string()))?;
        let genesis: Genesis = codec::decode(&bytes).map_err(|e| corrupt(Height(0), format!("genesis: {e}")))?;
        if meta.get(META_GENESIS)?.as_deref() != Some(&genesis.hash().0[..]) {
            return Err(corrupt(Height(0), "stored genesis does not match its hash"));
        }
        Store::open_db(db, meta, genesis)
    }

    fn open_db(db: sled::Db, meta: Tree, genesis: Genesis) -> Result<Store, Error> {
        let nodes = std::sync::Arc::new(crate::sled_nodes::SledNodes::open(&db)?);
        // A new store writes the genesis tree; an existing one is rebuilt
        // from its tree by `recover` (writing the genesis leaves again would
        // overwrite the newer ones).
        let fresh = meta.get(META_TIP)?.is_none() && crate::tree::root_at(&*nodes, 0)?.is_none();
        let state = if fresh {
            // Written straight to disk (`SledNodes::write_through`).
            genesis.state_in(nodes.clone())?
        } else {
            State::from_data(genesis.data()?, genesis.hash(), crate::tree::TreeHandle::new(nodes.clone()))
        };
        let mut store = Store::assemble(db, meta, genesis, nodes, state)?;
        // A new store's state is the genesis it has just written: reading
        // its leaves back and hashing them from scratch twice more took
        // 4.5 of the 11.9 s it took to create at 200,000 accounts.
        if !fresh {
            store.recover()?;
        }
        store.ensure_slash_index()?;
        Ok(store)
    }

    /// The store over `db` with `state` as its state, before any check.
    fn assemble(
        db: sled::Db,
        meta: Tree,
        genesis: Genesis,
        nodes: std::sync::Arc<crate::sled_nodes::SledNodes>,
        state: State,
    ) -> Result<Store, Error> {
        let mut store = Store {
            blocks: db.open_tree("blocks")?,
            snapshots: db.open_tree("snapshots")?,
            certificates: db.open_tree("certificates")?,
            slashes: db.open_tree("slash_index")?,
            transitions: db.open_tree("light_transitions")?,
            state,
            genesis,
            base: Height(0),
            retention: None,
            shelf: SnapshotShelf {
                offers: db.open_tree("state_sync_offers")?,
                chunks: db.open_tree("state_sync_chunks")?,
            },
            db,
            meta,
            nodes,
        };
        store.base = store.read_height(META_BASE)?;
        Ok(store)
    }

    /// Builds the slash index from the stored blocks once (stores written
    /// before it existed); later commits keep it up to date.
    fn ensure_slash_index(&mut self) -> Result<(), Error> {
        if self.meta.get(META_SLASH_INDEX)?.is_some() {
            return Ok(());
        }
        for h in self.base.0 + 1..=self.height().0 {
            let block = self.read_block(Height(h))?;
            for k in slash_keys(&block, &self.state) {
                self.slashes.insert(k, &[])?;
            }
        }
        self.meta.insert(META_SLASH_INDEX, &[1])?;
        self.db.flush()?;
        Ok(())
    }

    fn tip_height(&self) -> Result<Height, Error> {
        self.read_height(META_TIP)
    }

    /// A height recorded in the meta tree (0 when absent).
    fn read_height(&self, name: &[u8]) -> Result<Height, Error> {
        match self.meta.get(name)? {
            None => Ok(Height(0)),
            Some(v) => {
                let raw: [u8; 8] =
                    v.as_ref().try_into().map_err(|_| corrupt(Height(0), "a height record is not 8 bytes"))?;
                Ok(Height(u64::from_be_bytes(raw)))
            }
        }
    }

    /// Verifies the chain up to the recorded tip and rebuilds the state:
    /// from the state tree at the newest height it holds (the tip, or the
    /// block before it if the process died between writing a block and its
    /// tree nodes), then replays what follows.
    fn recover(&mut self) -> Result<(), Error> {
        let tip = self.tip_height()?;
        let headers = self.verify_chain(tip)?;
        if self.snapshots.last()?.is_some() {
            return Err(corrupt(
                tip,
                "this store was written by an older agora (state snapshots, not a Merkle state tree): start from a \
                 new data directory",
            ));
        }
        // The live leaves are at the last height the tree was flushed at
        // (every FLUSH_EVERY_BLOCKS; one flush may have been cut short).
        let data = self.nodes.load().map_err(|e| corrupt(tip, e.to_string()))?;
        let at = data.height;
        if at > tip || at < self.base || at.0 + 2 * crate::sled_nodes::FLUSH_EVERY_BLOCKS < tip.0 {
            return Err(corrupt(tip, format!("the state tree's leaves are at height {at}")));
        }
        let (hash, root) = match headers.get(&at.0) {
            Some(known) => *known,
            // Until recovery replaces it, the state is the genesis'.
            None => (self.genesis.hash(), self.state.root_from_scratch()?),
        };
        let state = State::from_data(data, hash, crate::tree::TreeHandle::new(self.nodes.clone()));
        // The leaves must be the state the header committed to, and the
        // tree must hold that height to build on.
        if state.root_from_scratch()? != root || crate::tree::root_at(&*self.nodes, at.0)? != Some(root) {
            return Err(corrupt(at, "the state tree's leaves do not match the block's state root"));
        }
        self.state = state;
        for h in self.state.height().0 + 1..=tip.0 {
            let block = self.read_block(Height(h))?;
            apply_block(&mut self.state, &block, SigCheck::Skip)
                .map_err(|e| corrupt(Height(h), format!("replay failed: {e}")))?;
            // Its transition may have been lost with the process that committed it.
            self.record_transition(&block, self.certificate(Height(h))?.as_ref())?;
            self.nodes.flush_if_due(h)?;
        }
        Ok(())
    }

    /// Reads the blocks held up to the tip and checks heights, chain id and
    /// parent links (from the genesis, or from the block a snapshot was
    /// installed at, whose certificate was checked then). Returns each
    /// block's (hash, state root) by height.
    fn verify_chain(&self, tip: Height) -> Result<BTreeMap<u64, (Hash, Hash)>, Error> {
        let mut out = BTreeMap::new();
        let mut parent = self.genesis.hash();
        for h in self.base.0.max(1)..=tip.0 {
            let block = self.read_block(Height(h))?;
            let header = &block.header;
            if header.height != Height(h) || header.chain_id != self.genesis.chain_id {
                return Err(corrupt(Height(h), "block header names another height or chain"));
            }
            if header.parent_hash != parent && h != self.base.0 {
                return Err(corrupt(Height(h), "parent hash does not match the previous block"));
            }
            parent = block.hash();
            out.insert(h, (parent, header.state_root));
        }
        if self.blocks.get(key(tip.next()))?.is_some() {
            return Err(corrupt(tip.next(), "block stored beyond the recorded tip"));
        }
        Ok(out)
    }

    /// A block that must exist (at or below the tip): its absence is corruption.
    fn read_block(&self, h: Height) -> Result<Block, Error> {
        self.reader().block(h)?.ok_or_else(|| corrupt(h, "block missing"))
    }

    /// Applies `block` (verifying signatures) and persists it atomically,
    /// flushed to disk before returning. On any error nothing is committed and
    /// the in-memory state is unchanged.
    pub fn commit(&mut self, block: &Block) -> Result<BlockOutcome, Error> {
        self.commit_with(block, None)
    }

    /// Like `commit`, and stores the block's commit certificate with it (for
    /// block sync) and drops the write-ahead log of its height, atomically.
    pub fn commit_certified(&mut self, block: &Block, certificate: &CommitCertificate) -> Result<BlockOutcome, Error> {
        self.commit_with(block, Some(certificate))
    }

    fn commit_with(&mut self, block: &Block, certificate: Option<&CommitCertificate>) -> Result<BlockOutcome, Error> {
        let mark = self.state.checkpoint();
        let result = apply_block_pending(&mut self.state, block, SigCheck::Verify).and_then(|outcome| {
            self.persist(block, certificate)?;
            // A tree write that fails after the block is persisted is redone
            // by the replay at the next start.
            finish_block(&mut self.state, block)?;
            Ok(outcome)
        });
        let outcome = result.inspect_err(|_| self.state.rollback(mark))?;
        self.record_transition(block, certificate)?;
        self.nodes.flush_if_due(block.header.height.0)?;
        self.prune_blocks()?;
        Ok(outcome)
    }

    /// Commits a block the consensus engine decided and has already applied
    /// to its copy of this store's state: `applied` is that copy after the
    /// block (its tree nodes written to this store's tree, in memory). The
    /// block and certificate are persisted, then `applied` becomes the
    /// store's state — the block is not applied a second time — and the
    /// tree goes to disk when due, after the block it belongs to. Refused,
    /// with nothing changed, unless `applied` is this store's state
    /// advanced by exactly this block.
    pub fn commit_applied(
        &mut self,
        block: &Block,
        certificate: &CommitCertificate,
        applied: State,
    ) -> Result<(), Error> {
        let h = block.header.height;
        let mismatch = |what: &str| Error::Tree(format!("the engine's state after block {h} does not follow: {what}"));
        if h != self.height().next() || block.header.parent_hash != self.state.last_block_hash() {
            return Err(mismatch("the block is not the next one on this store"));
        }
        if applied.height() != h || applied.last_block_hash() != block.hash() || !applied.journal.is_empty() {
            return Err(mismatch("it is not the committed state of this block"));
        }
        if !std::sync::Arc::ptr_eq(applied.tree_store(), self.state.tree_store()) {
            return Err(mismatch("its tree is not this store's"));
        }
        if applied.try_root()? != block.header.state_root {
            return Err(mismatch("its root is not the header's"));
        }
        self.persist(block, Some(certificate))?;
        self.state = applied;
        self.record_transition(block, Some(certificate))?;
        self.nodes.flush_if_due(h.0)?;
        self.prune_blocks()
    }

    /// Keeps the light-client transition of the block just committed when
    /// it changed the validator set: its header, certificate (signed by the
    /// set that decided it) and the state's meta leaf (naming the new set)
    /// with its proof — what lets a light client walk from the genesis set
    /// to today's (`light::follow`). Written after the block, so a crash in
    /// between loses it until the restart's replay writes it again (the tree
    /// is flushed after it, and the replay covers every height since the
    /// last flush). Never pruned: one per change, a few KB each.
    fn record_transition(&self, block: &Block, certificate: Option<&CommitCertificate>) -> Result<(), Error> {
        let Some(certificate) = certificate else { return Ok(()) };
        if self.state.validators() == self.state.last_validators() {
            return Ok(());
        }
        let (meta, proof) = self.state.prove(&crate::tree::StateKey::Meta)?;
        let meta = meta.ok_or_else(|| corrupt(block.header.height, "the state has no meta leaf"))?;
        let bundle = crate::light::transition(block.header.clone(), certificate.clone(), meta, &proof);
        self.transitions.insert(key(block.header.height), codec::canonical_bytes(&bundle)?)?;
        Ok(())
    }

    /// Keeps light-client transitions this store did not record itself: a
    /// node that joined by state sync keeps the ones it followed to trust
    /// its snapshot, so it can serve them to the next joiner.
    pub fn keep_transitions(&self, bundles: &[crate::light::ProofBundle]) -> Result<(), Error> {
        for bundle in bundles {
            self.transitions.insert(key(bundle.header.height), codec::canonical_bytes(bundle)?)?;
        }
        self.transitions.flush()?;
        Ok(())
    }

    /// Keeps only the newest `blocks` blocks from now on (at least
    /// `MIN_BLOCK_RETENTION`); None keeps every block (archive).
    pub fn set_block_retention(&mut self, blocks: Option<u64>) {
        self.retention = blocks.map(|b| b.max(MIN_BLOCK_RETENTION));
    }

    /// Deletes the oldest blocks beyond the retention, at most
    /// `PRUNE_BLOCKS_PER_COMMIT` at a time, raising the base in the same
    /// transaction (a crash never leaves a base whose block is gone).
    fn prune_blocks(&mut self) -> Result<(), Error> {
        let Some(keep) = self.retention else { return Ok(()) };
        let tip = self.height().0;
        let first = self.base.0.max(1);
        let wanted = tip.saturating_sub(keep - 1);
        if wanted <= first {
            return Ok(());
        }
        let new_base = wanted.min(first + PRUNE_BLOCKS_PER_COMMIT);
        (&self.meta, &self.blocks, &self.certificates).transaction(|(meta, blocks, certificates)| {
            meta.insert(META_BASE, &key(Height(new_base)))?;
            for h in first..new_base {
                blocks.remove(&key(Height(h)))?;
                certificates.remove(&key(Height(h)))?;
            }
            Ok::<(), ConflictableTransactionError<Error>>(())
        })?;
        self.base = Height(new_base);
        Ok(())
    }

    fn persist(&mut self, block: &Block, certificate: Option<&CommitCertificate>) -> Result<(), Error> {
        let height = block.header.height;
        let block_bytes = codec::encode(block)?;
        let cert_bytes = certificate.map(codec::encode).transpose()?;
        let slash_keys = slash_keys(block, &self.state);
        (&self.meta, &self.blocks, &self.certificates, &self.slashes).transaction(
            |(meta, blocks, certificates, slashes)| {
                blocks.insert(&key(height), block_bytes.as_slice())?;
                for k in &slash_keys {
                    slashes.insert(&k[..], &[][..])?;
                }
                meta.insert(META_TIP, &key(height))?;
                if let Some(cert) = &cert_bytes {
                    certificates.insert(&key(height), cert.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<Error>>(())
            },
        )?;
        self.db.flush()?;
        Ok(())
    }

    /// The commit certificate stored with a block, if it was committed with one.
    pub fn certificate(&self, h: Height) -> Result<Option<CommitCertificate>, Error> {
        self.reader().certificate(h)
    }

    /// Writes everything buffered to disk (commits already are; this is for shutdown).
    pub fn flush(&self) -> Result<(), Error> {
        self.db.flush()?;
        Ok(())
    }

    /// The state snapshots this node keeps for peers joining by state sync.
    pub fn snapshots(&self) -> SnapshotShelf {
        self.shelf.clone()
    }

    /// A cheap, thread-safe handle for reading committed blocks and
    /// certificates from other tasks (the HTTP API, sync responses).
    pub fn reader(&self) -> BlockReader {
        BlockReader {
            blocks: self.blocks.clone(),
            certificates: self.certificates.clone(),
            slashes: self.slashes.clone(),
            transitions: self.transitions.clone(),
            shelf: self.shelf.clone(),
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn height(&self) -> Height {
        self.state.height()
    }

    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The first block this store holds: 0 (every block) unless it was
    /// installed from a state snapshot at that height.
    pub fn base(&self) -> Height {
        self.base
    }

    /// Creates the store at `path` from a restored, verified snapshot of
    /// `genesis`'s chain: the tree and live leaves at the snapshot's height,
    /// its block and certificate. `path` must not hold a store yet. The
    /// state is the restored one (its root was checked by the restore), so
    /// installing does not pay for the from-scratch check of an opening.
    pub fn install(path: &Path, genesis: &Genesis, restored: crate::snapshot::Restored) -> Result<Store, Error> {
        let height = restored.height();
        if restored.data.chain_id != genesis.chain_id {
            return Err(Error::BadProof(format!("the snapshot is of chain {}", restored.data.chain_id)));
        }
        let db = open_sled(path)?;
        let meta = db.open_tree("meta")?;
        if meta.get(META_GENESIS)?.is_some() || meta.get(META_TIP)?.is_some() {
            return Err(corrupt(Height(0), "a snapshot is installed only into a new store"));
        }
        let nodes = std::sync::Arc::new(crate::sled_nodes::SledNodes::open(&db)?);
        // Straight to disk: the restored tree is in memory once already.
        nodes.write_through(height.0, &restored.batch, &restored.keys)?;
        let blocks = db.open_tree("blocks")?;
        let certificates = db.open_tree("certificates")?;
        blocks.insert(key(height), codec::encode(&restored.block)?)?;
        certificates.insert(key(height), codec::encode(&restored.certificate)?)?;
        // The genesis and tip go last: a store cut short before them is
        // still "new" and refuses a second install only by its leftovers.
        meta.insert(META_SLASH_INDEX, &[1])?;
        meta.insert(META_BASE, &key(height))?;
        meta.insert(META_TIP, &key(height))?;
        meta.insert(META_GENESIS_DOC, codec::encode(genesis)?)?;
        meta.insert(META_GENESIS, &genesis.hash().0)?;
        db.flush()?;
        let hash = restored.block.hash();
        let state = State::from_data(restored.data, hash, crate::tree::TreeHandle::new(nodes.clone()));
        if crate::tree::root_at(&*nodes, height.0)? != Some(restored.block.header.state_root) {
            return Err(corrupt(height, "the installed tree is not the snapshot's"));
        }
        Store::assemble(db, meta, genesis.clone(), nodes, state)
    }

    /// Nodes in the state tree on disk (pruning checks, disk growth).
    pub fn tree_node_count(&self) -> usize {
        self.nodes.node_count()
    }

    /// A committed block, if that height exists.
    pub fn block(&self, h: Height) -> Result<Option<Block>, Error> {
        if h.0 == 0 || h > self.height() || h < self.base {
            return Ok(None);
        }
        self.read_block(h).map(Some)
    }

    /// Rebuilds the state from genesis by replaying every stored block,
    /// ignoring snapshots; returns its root. A slow, independent check that
    /// the snapshot path and the replay path agree.
    pub fn replay_from_genesis(&self) -> Result<Hash, Error> {
        if self.base.0 > 0 {
            return Err(corrupt(self.base, "installed from a state snapshot: the blocks before it are not held"));
        }
        let mut state = self.genesis.state()?;
        for h in 1..=self.height().0 {
            let block = self.read_block(Height(h))?;
            apply_block(&mut state, &block, SigCheck::Skip)
                .map_err(|e| corrupt(Height(h), format!("replay failed: {e}")))?;
        }
        Ok(state.root())
    }
}

/// Read access to committed blocks and certificates, shareable across threads.
#[derive(Clone)]
pub struct BlockReader {
    blocks: Tree,
    certificates: Tree,
    slashes: Tree,
    transitions: Tree,
    shelf: SnapshotShelf,
}

impl BlockReader {
    /// The light-client transitions held above height `after`, ascending,
    /// at most `limit`: each a canonically encoded `light::ProofBundle` of
    /// the meta leaf at a height where the validator set changed.
    pub fn transitions(&self, after: Height, limit: usize) -> Result<Vec<(Height, Vec<u8>)>, Error> {
        let from = key(Height(after.0.saturating_add(1)));
        let mut out = Vec::new();
        if after.0 == u64::MAX {
            return Ok(out);
        }
        for entry in self.transitions.range(from..).take(limit) {
            let (k, v) = entry?;
            let raw: [u8; 8] = k.as_ref().try_into().map_err(|_| corrupt(after, "a transition key is not 8 bytes"))?;
            out.push((Height(u64::from_be_bytes(raw)), v.to_vec()));
        }
        Ok(out)
    }

    /// The state snapshots this node serves.
    pub fn snapshots(&self) -> &SnapshotShelf {
        &self.shelf
    }

    /// The block at `h`, if committed.
    pub fn block(&self, h: Height) -> Result<Option<Block>, Error> {
        match self.blocks.get(key(h))? {
            None => Ok(None),
            Some(bytes) => codec::decode(&bytes).map(Some).map_err(|e| corrupt(h, e.to_string())),
        }
    }

    /// Where the slashes of `account` are (height, index of the transaction
    /// in its block), newest first, at most `limit`, at heights ≥ `from`.
    pub fn slashes_of(&self, account: &Address, from: Height, limit: usize) -> Result<Vec<(Height, usize)>, Error> {
        let mut start = [0u8; 44];
        start[..32].copy_from_slice(&account.0);
        start[32..40].copy_from_slice(&from.0.to_be_bytes());
        let mut end = [0xffu8; 44];
        end[..32].copy_from_slice(&account.0);
        let mut out = Vec::new();
        for item in self.slashes.range(start..=end).rev().take(limit) {
            let (k, _) = item?;
            let h = u64::from_be_bytes(k[32..40].try_into().map_err(|_| corrupt(Height(0), "slash index key"))?);
            let i = u32::from_be_bytes(k[40..44].try_into().map_err(|_| corrupt(Height(0), "slash index key"))?);
            out.push((Height(h), i as usize));
        }
        Ok(out)
    }

    /// The certificate stored with block `h`, if any.
    pub fn certificate(&self, h: Height) -> Result<Option<CommitCertificate>, Error> {
        match self.certificates.get(key(h))? {
            None => Ok(None),
            Some(bytes) => codec::decode(&bytes).map(Some).map_err(|e| corrupt(h, format!("certificate: {e}"))),
        }
    }
}

/// Fewest blocks a pruning node keeps: the replay after a restart (up to
/// 64 blocks), catching-up peers and the explorer's recent blocks need them.
pub const MIN_BLOCK_RETENTION: u64 = 100;
/// Blocks deleted at most per commit, so pruning a long history never stalls one.
pub const PRUNE_BLOCKS_PER_COMMIT: u64 = 256;

/// Snapshots kept for state sync (the newest; older ones are deleted when a new one is kept).
pub const SNAPSHOTS_KEPT: usize = 2;

/// The state snapshots a node serves, shareable across threads: each
/// snapshot's offer by height, and its chunks by height ‖ index.
#[derive(Clone)]
pub struct SnapshotShelf {
    offers: Tree,
    chunks: Tree,
}

fn chunk_key(height: Height, index: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&height.0.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

impl SnapshotShelf {
    /// Keeps `snapshot` (its chunks first, then its offer: an offer is
    /// served only once every chunk is there) and deletes all but the
    /// newest `SNAPSHOTS_KEPT`.
    pub fn keep(&self, snapshot: &crate::snapshot::Snapshot) -> Result<(), Error> {
        let height = snapshot.offer.header.height;
        let mut batch = sled::Batch::default();
        for chunk in &snapshot.chunks {
            batch.insert(&chunk_key(height, chunk.index)[..], codec::encode(chunk)?);
        }
        self.chunks.apply_batch(batch)?;
        self.offers.insert(key(height), codec::encode(&snapshot.offer)?)?;
        let heights: Vec<Height> = self.heights()?;
        for old in heights.iter().rev().skip(SNAPSHOTS_KEPT) {
            self.offers.remove(key(*old))?;
            let mut gone = sled::Batch::default();
            for entry in self.chunks.scan_prefix(key(*old)) {
                gone.remove(entry?.0);
            }
            self.chunks.apply_batch(gone)?;
        }
        self.offers.flush()?;
        Ok(())
    }

    /// Heights of the snapshots kept, oldest first.
    fn heights(&self) -> Result<Vec<Height>, Error> {
        let mut out = Vec::new();
        for entry in self.offers.iter() {
            let (k, _) = entry?;
            let raw: [u8; 8] = k.as_ref().try_into().map_err(|_| corrupt(Height(0), "snapshot key"))?;
            out.push(Height(u64::from_be_bytes(raw)));
        }
        Ok(out)
    }

    /// The offers of the snapshots kept, newest first.
    pub fn offers(&self) -> Result<Vec<agora_protocol::snapshot::SnapshotOffer>, Error> {
        let mut out = Vec::new();
        for entry in self.offers.iter().rev().take(agora_protocol::snapshot::MAX_SNAPSHOT_OFFERS) {
            let (k, v) = entry?;
            out.push(codec::decode(&v).map_err(|e| corrupt(Height(0), format!("snapshot offer {k:?}: {e}")))?);
        }
        Ok(out)
    }

    /// Chunk `index` of the snapshot at `height`, if kept.
    pub fn chunk(&self, height: Height, index: u32) -> Result<Option<agora_protocol::snapshot::SnapshotChunk>, Error> {
        match self.chunks.get(chunk_key(height, index))? {
            None => Ok(None),
            Some(v) => codec::decode(&v).map(Some).map_err(|e| corrupt(height, format!("snapshot chunk: {e}"))),
        }
    }
}
