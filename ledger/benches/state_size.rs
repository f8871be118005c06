//! Per-block cost against the size of the state: applying, and committing
//! to a store on disk, a block of 100 transfers on chains whose genesis funds
//! 1,000, 100,000 and 1,000,000 accounts. With the state root a Merkle tree
//! updated from the keys a block writes, the cost should depend on the
//! block, not on the accounts (issue 14's target: 1M within 1.5× of 1k).
//! And joining by state sync at each size up to 100,000 accounts: verifying
//! every chunk of a snapshot against its certified root and installing it
//! into a new sled store (1M: minutes a sample, left out).
//! And what a node pays per decided block since it applies it once
//! (`node_commit`), and a copy of the whole state (`copy_state`).
//! `AGORA_BENCH_MAX_ACCOUNTS` caps the sizes (setting up 1M takes minutes).

use std::time::{Duration, Instant};

use agora_ledger::testkit::{BLOCK_INTERVAL_MS, GENESIS_TIME_MS, chain_id, transfer};
use agora_ledger::{Genesis, GenesisAccount, Params, SigCheck, State, Store, apply_block, build_block};
use agora_protocol::{Address, Amount, Block, Hash, Keypair, TimestampMs};
use criterion::{Criterion, criterion_group, criterion_main};

const SENDERS: usize = 100;

struct Chain {
    senders: Vec<Keypair>,
    validator: Keypair,
    genesis: Genesis,
    accounts: usize,
}

fn chain(accounts: usize) -> Chain {
    let key = |name: String| Keypair::from_seed_phrase(&name);
    let validator = key("agora-bench-validator".into());
    let senders: Vec<Keypair> = (0..SENDERS).map(|i| key(format!("agora-bench-sender-{i}"))).collect();
    let mut list =
        vec![GenesisAccount { address: validator.address(), balance: Amount::ZERO, stake: Amount::agr(1_000) }];
    list.extend(senders.iter().map(|k| GenesisAccount {
        address: k.address(),
        balance: Amount::agr(1_000_000),
        stake: Amount::ZERO,
    }));
    // The rest hold a little and have no keys: only their number matters.
    list.extend((list.len()..accounts).map(|i| GenesisAccount {
        address: Address(Hash::tagged(b"agora/bench/account", &(i as u64).to_le_bytes()).0),
        balance: Amount::agr(1),
        stake: Amount::ZERO,
    }));
    let genesis = Genesis {
        chain_id: chain_id(),
        genesis_time_ms: TimestampMs(GENESIS_TIME_MS),
        params: Params::default(),
        accounts: list,
        validators: vec![validator.address()],
    };
    Chain { senders, validator, genesis, accounts }
}

/// The next block: each sender pays a pseudo-random account of the chain.
fn next_block(c: &Chain, state: &State) -> Block {
    let height = state.height().0;
    let txs = c
        .senders
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let n = (height as usize * SENDERS + i) * 7_919 % c.accounts;
            let to = c.genesis.accounts[n].address;
            transfer(k, state.account(&k.address()).nonce, to, Amount(1))
        })
        .collect();
    let time = TimestampMs(state.time_ms().0 + BLOCK_INTERVAL_MS);
    // A fork, not a clone: copies of a state share the tree versions they
    // compute, and the timed apply must compute its own.
    let mut scratch = state.fork();
    build_block(&mut scratch, txs, time, c.validator.address(), None).expect("block builds").0
}

fn sizes() -> Vec<usize> {
    let max = std::env::var("AGORA_BENCH_MAX_ACCOUNTS").ok().and_then(|v| v.parse().ok()).unwrap_or(usize::MAX);
    [1_000, 100_000, 1_000_000].into_iter().filter(|n| *n <= max).collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("block_of_100_transfers");
    group.sample_size(30).measurement_time(Duration::from_secs(10));
    for accounts in sizes() {
        let setup = Instant::now();
        let ch = chain(accounts);
        let mut state = ch.genesis.state().expect("genesis");
        eprintln!("{accounts} accounts: in-memory genesis in {:.1?}", setup.elapsed());
        group.bench_function(format!("apply/{accounts}_accounts"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let block = next_block(&ch, &state);
                    let start = Instant::now();
                    apply_block(&mut state, &block, SigCheck::Skip).expect("applies");
                    total += start.elapsed();
                }
                total
            })
        });
        drop(state);
        let dir = tempfile::tempdir().expect("tempdir");
        let setup = Instant::now();
        let mut store = Store::open(dir.path(), &ch.genesis).expect("store opens");
        eprintln!("{accounts} accounts: store genesis in {:.1?}", setup.elapsed());
        group.bench_function(format!("apply_and_commit/{accounts}_accounts"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let block = next_block(&ch, store.state());
                    let start = Instant::now();
                    store.commit(&block).expect("commits");
                    total += start.elapsed();
                }
                total
            })
        });
        // What a validator's daemon pays per decided block: the block
        // applied once, on a copy of the state its store and API share
        // (so writes copy the B-tree paths they touch), then persisted
        // and adopted by the store without a second apply.
        group.bench_function(format!("node_commit/{accounts}_accounts"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let block = next_block(&ch, store.state());
                    let certificate = agora_ledger::testkit::certify(&block, std::slice::from_ref(&ch.validator));
                    let api = store.state().clone();
                    let start = Instant::now();
                    let mut applied = store.state().clone();
                    apply_block(&mut applied, &block, SigCheck::Skip).expect("applies");
                    store.commit_applied(&block, &certificate, applied).expect("commits");
                    total += start.elapsed();
                    drop(api);
                }
                total
            })
        });
        // A copy of the whole state: what the API's view and a snapshot
        // cost per commit (a clone of every map before they were persistent).
        let state = store.state().clone();
        group.bench_function(format!("copy_state/{accounts}_accounts"), |b| b.iter(|| state.clone()));
        drop(state);
        if accounts <= MAX_STATE_SYNC_BENCH_ACCOUNTS {
            group.sample_size(10);
            bench_state_sync(&mut group, &ch, &mut store);
            group.sample_size(30);
        }
    }
    group.finish();
}

/// Largest state the state-sync bench joins from.
const MAX_STATE_SYNC_BENCH_ACCOUNTS: usize = 100_000;

fn bench_state_sync(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    ch: &Chain,
    store: &mut Store,
) {
    use agora_ledger::snapshot::{Restore, take};
    let block = next_block(ch, store.state());
    store.commit(&block).expect("commits");
    let certificate = agora_ledger::testkit::certify(&block, std::slice::from_ref(&ch.validator));
    let started = Instant::now();
    let snapshot = take(store.state(), block.header.clone(), certificate).expect("snapshot");
    let leaves = snapshot.offer.leaves;
    eprintln!("{leaves} leaves: snapshot taken in {:.1?}, {} chunks", started.elapsed(), snapshot.chunks.len());
    let trusted = agora_ledger::light::trusted_from_genesis(&ch.genesis).expect("trusted set");
    group.bench_function(format!("state_sync_join/{}_accounts", ch.accounts), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("tempdir");
                let start = Instant::now();
                let mut restore = Restore::new(snapshot.offer.clone(), &chain_id(), &trusted).expect("offer verifies");
                for chunk in &snapshot.chunks {
                    restore.add(chunk.clone()).expect("chunk verifies");
                }
                let restored = restore.finish(block.clone()).expect("restore finishes");
                let installed = Store::install(&dir.path().join("ledger"), &ch.genesis, restored).expect("installs");
                total += start.elapsed();
                assert_eq!(installed.state().root(), block.header.state_root);
            }
            total
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
