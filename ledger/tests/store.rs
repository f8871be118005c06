//! The sled block store: commits survive reopening, reopening from the
//! state tree and a full replay agree (also after old tree nodes were
//! pruned), a foreign genesis is refused, and corruption is reported with the
//! height at fault instead of being ignored.

use agora_ledger::sled_nodes::FLUSH_EVERY_BLOCKS;
use agora_ledger::testkit::{TestChain, transfer};
use agora_ledger::tree::TREE_RETENTION;
use agora_ledger::{Error, Store};
use agora_protocol::{Amount, Height};

fn chain() -> TestChain {
    TestChain::new(4, 1, Amount::agr(1_000))
}

/// Commits `n` blocks of one transfer each.
fn commit_blocks(chain: &TestChain, store: &mut Store, n: u64) {
    for _ in 0..n {
        let nonce = store.state().account(&chain.address(1)).nonce;
        let tx = transfer(&chain.keys[1], nonce, chain.address(2), Amount(7));
        let mut scratch = store.state().clone();
        let block = chain.next_block(&mut scratch, vec![tx]).unwrap();
        store.commit(&block).unwrap();
    }
}

#[test]
fn committed_blocks_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain();
    let root = {
        let mut store = Store::open(dir.path(), &chain.genesis).unwrap();
        commit_blocks(&chain, &mut store, 5);
        store.state().root()
    };
    let store = Store::open(dir.path(), &chain.genesis).unwrap();
    assert_eq!(store.height(), Height(5));
    assert_eq!(store.state().root(), root);
    assert_eq!(store.state().account(&chain.address(2)).balance, Amount(Amount::agr(1_000).0 + 35));
    assert_eq!(store.block(Height(5)).unwrap().unwrap().header.state_root, root);
    assert!(store.block(Height(6)).unwrap().is_none());
}

#[test]
fn reopening_from_the_state_tree_and_a_full_replay_agree() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain();
    let blocks = TREE_RETENTION * 2 + 3;
    let nodes = {
        let mut store = Store::open(dir.path(), &chain.genesis).unwrap();
        commit_blocks(&chain, &mut store, TREE_RETENTION + 3);
        let nodes = store.tree_node_count();
        commit_blocks(&chain, &mut store, TREE_RETENTION);
        // Old versions are pruned: the tree does not grow with every block.
        assert!(store.tree_node_count() < nodes * 3 / 2, "{} nodes, {nodes} before", store.tree_node_count());
        nodes
    };
    let store = Store::open(dir.path(), &chain.genesis).unwrap();
    assert_eq!(store.height(), Height(blocks));
    assert_eq!(store.replay_from_genesis().unwrap(), store.state().root());
    store.state().audit().unwrap();
    assert!(nodes > 0);
}

#[test]
fn a_rejected_block_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain();
    let mut store = Store::open(dir.path(), &chain.genesis).unwrap();
    commit_blocks(&chain, &mut store, 2);
    let root = store.state().root();
    let mut scratch = store.state().clone();
    let mut block = chain.next_block(&mut scratch, vec![]).unwrap();
    block.header.state_root = agora_protocol::Hash([1; 32]);
    assert!(matches!(store.commit(&block), Err(Error::StateRootMismatch { .. })));
    assert_eq!((store.height(), store.state().root()), (Height(2), root));
    // A state copy shares the store's tree, so it holds the database open too.
    drop((store, scratch));
    assert_eq!(Store::open(dir.path(), &chain.genesis).unwrap().height(), Height(2));
}

#[test]
fn a_store_refuses_another_genesis() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain();
    drop(Store::open(dir.path(), &chain.genesis).unwrap());
    let other = TestChain::new(5, 1, Amount::agr(1_000));
    assert!(matches!(Store::open(dir.path(), &other.genesis), Err(Error::GenesisMismatch { .. })));
}

/// Rewrites one raw value in a tree of the store's sled database.
fn tamper(dir: &std::path::Path, tree: &str, height: u64, f: impl Fn(&mut Vec<u8>)) {
    let db = agora_ledger::store::open_sled(dir).unwrap();
    let t = db.open_tree(tree).unwrap();
    let key = height.to_be_bytes();
    let mut v = t.get(key).unwrap().unwrap().to_vec();
    f(&mut v);
    t.insert(key, v).unwrap();
    db.flush().unwrap();
}

#[test]
fn a_corrupt_block_is_reported_with_its_height() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain();
    {
        let mut store = Store::open(dir.path(), &chain.genesis).unwrap();
        commit_blocks(&chain, &mut store, 6);
    }
    let len = |dir: &std::path::Path| {
        agora_ledger::store::open_sled(dir)
            .unwrap()
            .open_tree("blocks")
            .unwrap()
            .get(3u64.to_be_bytes())
            .unwrap()
            .unwrap()
            .len()
    };
    let n = len(dir.path());
    // Flip a bit in the middle of block 3 (inside a transfer amount or signature).
    tamper(dir.path(), "blocks", 3, |v| v[n / 2] ^= 0x10);
    let err = Store::open(dir.path(), &chain.genesis).err().expect("corruption must be detected");
    assert!(
        matches!(err, Error::Corrupt { height: Height(3), .. } | Error::Corrupt { height: Height(4), .. }),
        "{err}"
    );
    // Truncated block 3.
    tamper(dir.path(), "blocks", 3, |v| v.truncate(n / 3));
    let err = Store::open(dir.path(), &chain.genesis).err().unwrap();
    assert!(matches!(err, Error::Corrupt { height: Height(3), .. }), "{err}");
}

#[test]
fn a_corrupt_state_leaf_is_reported_with_its_height() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain();
    {
        let mut store = Store::open(dir.path(), &chain.genesis).unwrap();
        commit_blocks(&chain, &mut store, FLUSH_EVERY_BLOCKS + 3);
    }
    // Every live leaf changed by one bit: the state rebuilt from the leaves
    // no longer has the header's root.
    {
        let db = agora_ledger::store::open_sled(dir.path()).unwrap();
        let leaves = db.open_tree("tree_current").unwrap();
        for entry in leaves.iter() {
            let (k, v) = entry.unwrap();
            let mut v = v.to_vec();
            let last = v.len() - 1;
            v[last] ^= 1;
            leaves.insert(k, v).unwrap();
        }
        db.flush().unwrap();
    }
    let err = Store::open(dir.path(), &chain.genesis).err().unwrap();
    assert!(matches!(err, Error::Corrupt { height, .. } if height == Height(FLUSH_EVERY_BLOCKS)), "{err}");
}

#[test]
fn certificates_persist_and_the_wal_file_keeps_what_was_not_committed() {
    use agora_ledger::consensus::{WalEntry, WalFile};
    use agora_protocol::consensus::{Vote, VoteKind};
    use agora_protocol::{CommitCertificate, Hash, Signed};
    let dir = tempfile::tempdir().unwrap();
    let wal_path = dir.path().join("consensus.wal");
    let chain = chain();
    let vote = |h: u64| {
        let body = Vote { kind: VoteKind::Prevote, height: Height(h), round: 0, block: Some(Hash([h as u8; 32])) };
        WalEntry::Vote(Signed::sign(body, &chain.keys[0], &agora_ledger::testkit::chain_id()).unwrap())
    };
    {
        let mut store = Store::open(&dir.path().join("ledger"), &chain.genesis).unwrap();
        let (mut wal, none) = WalFile::open(&wal_path).unwrap();
        assert!(none.is_empty());
        wal.append(Height(1), &vote(1), true).unwrap();
        wal.append(Height(2), &vote(2), false).unwrap();
        let mut scratch = store.state().clone();
        let block = chain.next_block(&mut scratch, vec![]).unwrap();
        let cert = CommitCertificate { height: Height(1), round: 0, block_hash: block.hash(), signatures: vec![] };
        store.commit_certified(&block, &cert).unwrap();
        wal.prune_through(Height(1)).unwrap();
        wal.append(Height(2), &vote(22), true).unwrap();
    }
    // Reopened from the genesis recorded inside the store.
    let store = Store::open_existing(&dir.path().join("ledger")).unwrap();
    assert_eq!(store.height(), Height(1));
    assert_eq!(store.certificate(Height(1)).unwrap().unwrap().height, Height(1));
    assert!(store.certificate(Height(2)).unwrap().is_none());
    let (mut wal, entries) = WalFile::open(&wal_path).unwrap();
    assert_eq!(entries, vec![(Height(2), vote(2)), (Height(2), vote(22))], "height 1's entries went with its commit");
    wal.prune_through(Height(2)).unwrap();
    assert!(WalFile::open(&wal_path).unwrap().1.is_empty());
    assert_eq!(std::fs::metadata(&wal_path).unwrap().len(), 0, "truncated in place");
    assert!(matches!(Store::open_existing(&dir.path().join("nope")), Err(Error::NoStore(_))));
}

#[test]
fn opening_waits_for_a_store_that_is_being_closed() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain();
    let held = Store::open(dir.path(), &chain.genesis).unwrap();
    // Released while the second open is already waiting on the lock, as when a
    // node restarts in place on a busy machine.
    let closer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(held);
    });
    let reopened = Store::open(dir.path(), &chain.genesis).expect("the lock is waited for");
    closer.join().unwrap();
    assert_eq!(reopened.height(), Height(0));
}

#[test]
fn a_pruning_store_keeps_the_newest_blocks_and_an_archive_keeps_all() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain();
    let archive_dir = tempfile::tempdir().unwrap();
    let mut archive = Store::open(archive_dir.path(), &chain.genesis).unwrap();
    let mut store = Store::open(dir.path(), &chain.genesis).unwrap();
    store.set_block_retention(Some(10));
    commit_blocks(&chain, &mut store, 400);
    commit_blocks(&chain, &mut archive, 400);
    // At least MIN_BLOCK_RETENTION are kept, whatever is asked.
    let keep = agora_ledger::store::MIN_BLOCK_RETENTION;
    assert_eq!(store.base(), Height(400 - keep + 1));
    assert!(store.block(Height(400 - keep)).unwrap().is_none());
    assert!(store.reader().block(Height(1)).unwrap().is_none(), "pruned blocks are deleted, not hidden");
    assert!(store.certificate(Height(2)).unwrap().is_none());
    assert!(store.block(Height(400 - keep + 1)).unwrap().is_some());
    assert_eq!(archive.base(), Height(0));
    assert!(archive.block(Height(1)).unwrap().is_some());
    let root = store.state().root();
    assert_eq!(root, archive.state().root());
    drop(store);

    // Reopened, it checks the chain from its base and goes on pruning.
    let mut store = Store::open(dir.path(), &chain.genesis).unwrap();
    assert_eq!((store.height(), store.base(), store.state().root()), (Height(400), Height(400 - keep + 1), root));
    assert!(store.replay_from_genesis().is_err());
    store.set_block_retention(Some(keep));
    commit_blocks(&chain, &mut store, 50);
    assert_eq!(store.base(), Height(450 - keep + 1));
    store.state().audit().unwrap();

    // A long history is pruned a bounded slice per commit.
    let long_dir = tempfile::tempdir().unwrap();
    let mut long = Store::open(long_dir.path(), &chain.genesis).unwrap();
    commit_blocks(&chain, &mut long, 700);
    long.set_block_retention(Some(keep));
    commit_blocks(&chain, &mut long, 1);
    assert_eq!(long.base(), Height(1 + agora_ledger::store::PRUNE_BLOCKS_PER_COMMIT));
    commit_blocks(&chain, &mut long, 3);
    assert_eq!(long.base(), Height(704 - keep + 1));
}

/// The next block of one transfer on top of `state`.
fn next_transfer(chain: &TestChain, state: &agora_ledger::State) -> agora_protocol::Block {
    let nonce = state.account(&chain.address(1)).nonce;
    let tx = transfer(&chain.keys[1], nonce, chain.address(2), Amount(7));
    chain.next_block(&mut state.clone(), vec![tx]).unwrap()
}

#[test]
fn the_store_adopts_the_engines_applied_state_and_its_tree_never_gets_ahead_of_its_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain();
    let mut store = Store::open(dir.path(), &chain.genesis).unwrap();
    // The engine's copy of the state applies each decided block (writing
    // its tree nodes into the store's tree, in memory); the store adopts it.
    let mut engine = store.state().clone();
    for _ in 0..FLUSH_EVERY_BLOCKS - 1 {
        let block = next_transfer(&chain, &engine);
        agora_ledger::apply_block(&mut engine, &block, agora_ledger::SigCheck::Skip).unwrap();
        store.commit_applied(&block, &chain.certificate(&block, 1), engine.clone()).unwrap();
    }
    assert_eq!(store.height(), Height(FLUSH_EVERY_BLOCKS - 1));
    assert_eq!(store.state(), &engine);

    // A state that is not this store's advanced by the block is refused, and nothing changes.
    let block = next_transfer(&chain, &engine);
    let cert = chain.certificate(&block, 1);
    let mut stale = engine.clone();
    assert!(store.commit_applied(&block, &cert, stale.clone()).is_err(), "the state before the block");
    let mut foreign = engine.fork();
    agora_ledger::apply_block(&mut foreign, &block, agora_ledger::SigCheck::Skip).unwrap();
    assert!(store.commit_applied(&block, &cert, foreign).is_err(), "a state on another tree");
    assert_eq!(store.height(), Height(FLUSH_EVERY_BLOCKS - 1));

    // The engine applies the flush height's block, and the process dies
    // before the store persisted it: the tree on disk must not be ahead of
    // the blocks, or the store would not open again.
    agora_ledger::apply_block(&mut stale, &block, agora_ledger::SigCheck::Skip).unwrap();
    store.flush().unwrap();
    // Every copy of the state holds the database through its tree.
    drop((store, stale, engine));
    let mut store = Store::open(dir.path(), &chain.genesis).unwrap();
    assert_eq!(store.height(), Height(FLUSH_EVERY_BLOCKS - 1));
    store.commit(&block).unwrap();
    commit_blocks(&chain, &mut store, 3);
    let root = store.state().root();
    drop(store);
    let store = Store::open(dir.path(), &chain.genesis).unwrap();
    assert_eq!(store.height(), Height(FLUSH_EVERY_BLOCKS + 3));
    assert_eq!(store.state().root(), root);
    assert_eq!(store.replay_from_genesis().unwrap(), root);
}
