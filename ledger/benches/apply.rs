//! Criterion benchmarks of the ledger: `apply_block` on blocks of 1,000
//! signed transfers with and without signature verification, and the cost of
//! a durable commit (apply + sled write + flush) of empty and full blocks.

use std::time::{Duration, Instant};

use agora_ledger::testkit::{TestChain, transfer};
use agora_ledger::{SigCheck, State, Store, apply_block};
use agora_protocol::{Amount, Block};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const TRANSFERS: usize = 1_000;

/// A chain where each of 1,000 accounts sends one transfer per block, so a
/// block never depends on nonce order inside it.
fn setup() -> (TestChain, State) {
    let chain = TestChain::new(TRANSFERS + 1, 1, Amount::agr(1_000));
    let state = chain.state();
    (chain, state)
}

fn transfers_block(chain: &TestChain, state: &State, count: usize) -> Block {
    let txs = (0..count)
        .map(|i| {
            let from = 1 + i;
            let nonce = state.account(&chain.address(from)).nonce;
            transfer(&chain.keys[from], nonce, chain.address(1 + (i + 1) % TRANSFERS), Amount(1 + i as u64))
        })
        .collect();
    let mut scratch = state.clone();
    chain.next_block(&mut scratch, txs).expect("benchmark block builds")
}

fn bench_apply(c: &mut Criterion) {
    let (chain, state) = setup();
    let block = transfers_block(&chain, &state, TRANSFERS);
    let mut group = c.benchmark_group("apply_block_1000_transfers");
    group.throughput(Throughput::Elements(TRANSFERS as u64));
    group.sample_size(20);
    for (name, sig) in [("verify_signatures", SigCheck::Verify), ("skip_signatures", SigCheck::Skip)] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || state.clone(),
                |mut s| apply_block(&mut s, &block, sig).expect("block applies"),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// Times `Store::commit` only; building each next block is not timed.
fn bench_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_commit_flush");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    for (name, count) in [("empty_block", 0usize), ("block_1000_transfers", TRANSFERS)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (chain, _) = setup();
        let mut store = Store::open(dir.path(), &chain.genesis).expect("open store");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let block = transfers_block(&chain, store.state(), count);
                    let start = Instant::now();
                    store.commit(&block).expect("commit");
                    total += start.elapsed();
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_apply, bench_commit);
criterion_main!(benches);
