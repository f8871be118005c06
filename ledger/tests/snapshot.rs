//! State sync at the ledger's level (`agora_ledger::snapshot`, `Store::install`):
//! a chain of 10,000 blocks over 12,000 accounts is snapshotted at its tip,
//! restored chunk by chunk into a new sled store, which then follows the
//! chain and reopens with the same root as the node that replayed it all;
//! and every lie a hostile peer could tell in an offer or a chunk is refused
//! without poisoning the restore.

use agora_ledger::snapshot::{self, Restore, Snapshot};
use agora_ledger::testkit::{TestChain, chain_id, transfer};
use agora_ledger::{SigCheck, State, Store, Validator, apply_block};
use agora_protocol::{Amount, Block, ChainId};

/// Accounts in the test chain: enough leaves for several chunks
/// (`AGORA_STATE_SYNC_ACCOUNTS` sets another number, to measure).
fn accounts() -> usize {
    std::env::var("AGORA_STATE_SYNC_ACCOUNTS").ok().and_then(|v| v.parse().ok()).unwrap_or(12_000)
}

fn chain() -> TestChain {
    TestChain::new(accounts(), 4, Amount::agr(1_000))
}

/// Commits `n` more blocks on `state`, a transfer in every tenth; the last block.
fn grow(chain: &TestChain, state: &mut State, n: u64) -> Block {
    let mut last = None;
    for _ in 0..n {
        let h = state.height().0 as usize;
        let txs = if h % 10 == 0 {
            let k = &chain.keys[4 + h % 100];
            vec![transfer(k, state.account(&k.address()).nonce, chain.address(h % accounts()), Amount(1))]
        } else {
            vec![]
        };
        let block = chain.next_block(state, txs).unwrap();
        apply_block(state, &block, SigCheck::Skip).unwrap();
        last = Some(block);
    }
    last.unwrap()
}

fn trusted(chain: &TestChain) -> Vec<Validator> {
    agora_ledger::light::trusted_from_genesis(&chain.genesis).unwrap()
}

fn take(chain: &TestChain, state: &State, block: &Block) -> Snapshot {
    snapshot::take(state, block.header.clone(), chain.certificate(block, 3)).unwrap()
}

fn restore_all(chain: &TestChain, snap: &Snapshot, block: Block) -> agora_ledger::snapshot::Restored {
    let mut r = Restore::new(snap.offer.clone(), &chain_id(), &trusted(chain)).unwrap();
    for c in &snap.chunks {
        r.add(c.clone()).unwrap();
    }
    assert_eq!(r.next_chunk(), None);
    r.finish(block).unwrap()
}

#[test]
fn a_node_joins_at_height_ten_thousand_from_a_snapshot_and_follows_the_chain() {
    let chain = chain();
    let mut state = chain.state();
    let block = grow(&chain, &mut state, 10_000);
    assert_eq!(state.height().0, 10_000);
    let snap = take(&chain, &state, &block);
    assert!(snap.chunks.len() >= 3, "{} chunks", snap.chunks.len());
    assert_eq!(snap.offer.leaves as usize, snap.chunks.iter().map(|c| c.leaves.len()).sum::<usize>());

    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger");
    let started = std::time::Instant::now();
    let restored = restore_all(&chain, &snap, block.clone());
    let verified = started.elapsed();
    let mut store = Store::install(&path, &chain.genesis, restored).unwrap();
    eprintln!(
        "{} leaves in {} chunks: verified in {:?}, installed in {:?} more",
        snap.offer.leaves,
        snap.chunks.len(),
        verified,
        started.elapsed() - verified
    );
    assert_eq!(store.height().0, 10_000);
    assert_eq!(store.base().0, 10_000);
    assert!(store.state() == &state, "the installed state is the replayed one");
    assert_eq!(store.state().root(), state.root());
    assert!(store.block(agora_protocol::Height(9_999)).unwrap().is_none(), "blocks before the snapshot are not held");
    assert_eq!(store.block(agora_protocol::Height(10_000)).unwrap(), Some(block.clone()));
    assert!(store.replay_from_genesis().is_err());

    // It follows the chain past two tree flushes, with the node that replayed it all.
    for _ in 0..70 {
        let h = state.height().0 as usize;
        let k = &chain.keys[4 + h % 1000];
        let txs = vec![transfer(k, state.account(&k.address()).nonce, chain.address(h % accounts()), Amount(3))];
        let next = chain.next_block(&mut state, txs).unwrap();
        apply_block(&mut state, &next, SigCheck::Verify).unwrap();
        let cert = chain.certificate(&next, 3);
        store.commit_certified(&next, &cert).unwrap();
        assert_eq!(store.state().root(), next.header.state_root);
    }
    drop(store);
    let reopened = Store::open(&path, &chain.genesis).unwrap();
    assert_eq!(reopened.height().0, 10_070);
    assert_eq!(reopened.base().0, 10_000);
    assert!(reopened.state() == &state);
    reopened.state().audit().unwrap();
    drop(reopened);
    let again = restore_all(&chain, &snap, block);
    assert!(Store::install(&path, &chain.genesis, again).is_err(), "installed over a store");
}

/// A snapshot at height 50 of the test chain, and its block.
fn small() -> (TestChain, Snapshot, Block) {
    let chain = chain();
    let mut state = chain.state();
    let block = grow(&chain, &mut state, 50);
    let snap = take(&chain, &state, &block);
    (chain, snap, block)
}

#[test]
fn offers_that_are_not_certified_by_trusted_validators_are_refused() {
    let (chain, snap, block) = small();
    let t = trusted(&chain);
    let mut short = snap.offer.clone();
    short.certificate = chain.certificate(&block, 2);
    assert!(Restore::new(short, &chain_id(), &t).is_err(), "2 of 4 validators is not > 2/3");
    let mut strangers = snap.offer.clone();
    strangers.certificate = chain.certificate(&block, 3);
    let outsider: Vec<Validator> = t.iter().filter(|v| v.address == chain.address(3)).cloned().collect();
    assert_eq!(outsider.len(), 1);
    assert!(Restore::new(strangers, &chain_id(), &outsider).is_err(), "signers the client does not trust");
    let other = ChainId::new("agora-other-1").unwrap();
    assert!(Restore::new(snap.offer.clone(), &other, &t).is_err(), "another chain");
    let mut meta = snap.offer.clone();
    let last = meta.meta.len() - 1;
    meta.meta[last] ^= 1;
    assert!(Restore::new(meta, &chain_id(), &t).is_err(), "a meta leaf not under the root");
    let mut huge = snap.offer.clone();
    huge.chunks = u32::MAX;
    assert!(Restore::new(huge, &chain_id(), &t).is_err(), "more chunks than any state has");
    assert!(Restore::new(snap.offer.clone(), &chain_id(), &t).is_ok());
}

#[test]
fn a_bad_chunk_is_refused_alone_and_the_restore_goes_on() {
    let (chain, snap, block) = small();
    let mut r = Restore::new(snap.offer.clone(), &chain_id(), &trusted(&chain)).unwrap();
    assert!(r.add(snap.chunks[1].clone()).is_err(), "out of order");
    r.add(snap.chunks[0].clone()).unwrap();
    let good = snap.chunks[1].clone();
    let mut lies = Vec::new();
    let mut value = good.clone();
    let v = &mut value.leaves[7].1;
    let at = v.len() - 1;
    v[at] ^= 1;
    lies.push(("a changed value", value));
    let mut dropped = good.clone();
    dropped.leaves.remove(5);
    lies.push(("a leaf left out", dropped));
    let mut swapped = good.clone();
    swapped.leaves.swap(3, 4);
    lies.push(("leaves out of order", swapped));
    let mut proof = good.clone();
    proof.proof = snap.chunks[2].proof.clone();
    lies.push(("another chunk's proof", proof));
    let mut key = good.clone();
    key.leaves[2].0 = snap.chunks[0].leaves[0].0.clone();
    lies.push(("another key", key));
    let mut height = good.clone();
    height.height = agora_protocol::Height(49);
    lies.push(("another height", height));
    for (what, lie) in lies {
        assert!(r.add(lie).is_err(), "{what} was accepted");
        assert_eq!(r.next_chunk(), Some(1), "{what} moved the restore");
    }
    for c in &snap.chunks[1..] {
        r.add(c.clone()).unwrap();
    }
    let restored = r.finish(block.clone()).unwrap();
    assert_eq!(restored.height().0, 50);

    // A peer that claims fewer chunks than the state has cannot truncate it.
    let mut truncated = snap.offer.clone();
    truncated.chunks -= 1;
    let mut r = Restore::new(truncated, &chain_id(), &trusted(&chain)).unwrap();
    for c in &snap.chunks[..snap.chunks.len() - 1] {
        r.add(c.clone()).unwrap();
    }
    assert!(r.finish(block.clone()).is_err(), "a truncated state was accepted");

    // The block must be the offer's.
    let mut r = Restore::new(snap.offer.clone(), &chain_id(), &trusted(&chain)).unwrap();
    for c in &snap.chunks {
        r.add(c.clone()).unwrap();
    }
    let mut other = block.clone();
    other.header.time_ms.0 += 1;
    assert!(r.finish(other).is_err(), "another block");
    let mut r = Restore::new(snap.offer.clone(), &chain_id(), &trusted(&chain)).unwrap();
    for c in &snap.chunks {
        r.add(c.clone()).unwrap();
    }
    let mut stuffed = block;
    stuffed.txs.push(transfer(&chain.keys[9], 0, chain.address(1), Amount(1)));
    assert!(r.finish(stuffed).is_err(), "a block whose transactions are not the header's");
}
