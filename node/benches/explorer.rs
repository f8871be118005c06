//! Criterion benchmark of the explorer's heaviest pages at the scale:
//! 1,000 registered providers and 10,000 open leases (10 per provider),
//! rendered server-side from the ledger as `/explorer/providers` and
//! `/explorer/market` do (target: p99 ≤ 50 ms).

use std::collections::BTreeMap;

use agora_ledger::testkit::{TestChain, chain_id, sign_tx};
use agora_ledger::{SigCheck, State, apply_block};
use agora_node::explorer::{market_html, providers_html};
use agora_node::offers::OrderBook;
use agora_protocol::{Amount, GpuSpec, Hash, LeaseAccept, LeaseRequest, Signed, SignedTx, TimestampMs, TxKind};
use criterion::{Criterion, criterion_group, criterion_main};

const VALIDATORS: usize = 4;
const PROVIDERS: usize = 1_000;
const BUYERS: usize = 100;
const LEASES_PER_PROVIDER: usize = 10;
/// Transactions per block while building the state.
const PER_BLOCK: usize = 1_000;

fn commit(chain: &TestChain, state: &mut State, txs: Vec<SignedTx>) {
    for chunk in txs.chunks(PER_BLOCK) {
        let block = chain.next_block(&mut state.clone(), chunk.to_vec()).unwrap();
        assert_eq!(block.txs.len(), chunk.len(), "a setup transaction was refused");
        apply_block(state, &block, SigCheck::Skip).unwrap();
    }
}

/// The ledger with every provider registered (16 simulated H100s each) and
/// the leases open for a day.
fn state() -> State {
    let chain = TestChain::new(VALIDATORS + PROVIDERS + BUYERS, VALIDATORS, Amount::agr(10_000));
    let mut state = chain.state();
    let gpus = vec![GpuSpec { model: "H100".into(), vram_mib: 81_920, count: 16, simulated: true }];
    let providers = VALIDATORS..VALIDATORS + PROVIDERS;
    let setup: Vec<SignedTx> = providers
        .clone()
        .flat_map(|p| {
            let key = &chain.keys[p];
            [
                sign_tx(key, 0, TxKind::Stake { amount: Amount::agr(100) }),
                sign_tx(key, 1, TxKind::RegisterProvider { region: "eu".into(), gpus: gpus.clone() }),
            ]
        })
        .collect();
    commit(&chain, &mut state, setup);
    let mut nonces = vec![0u64; BUYERS];
    let leases: Vec<SignedTx> = providers
        .flat_map(|p| (0..LEASES_PER_PROVIDER).map(move |n| (p, n)))
        .enumerate()
        .map(|(i, (p, n))| {
            let b = i % BUYERS;
            let buyer = &chain.keys[VALIDATORS + PROVIDERS + b];
            let body = LeaseRequest {
                provider: chain.address(p),
                offer_seq: 1,
                gpu_model: "H100".into(),
                gpus: 1,
                price_per_gpu_hour: Amount(1_000),
                duration_secs: 86_400,
                job_spec_hash: Hash([n as u8; 32]),
                nonce: i as u64,
                expires_at_ms: TimestampMs(state.time_ms().0 + 3_600_000),
            };
            let request = Signed::sign(body, buyer, &chain_id()).unwrap();
            let accept = LeaseAccept { lease_id: request.lease_id().unwrap(), gpu_ids: vec![format!("SIM-H100-{n}")] };
            let accept = Signed::sign(accept, &chain.keys[p], &chain_id()).unwrap();
            let tx = sign_tx(buyer, nonces[b], TxKind::OpenLease { request, accept });
            nonces[b] += 1;
            tx
        })
        .collect();
    commit(&chain, &mut state, leases);
    assert_eq!(state.open_leases().count(), PROVIDERS * LEASES_PER_PROVIDER);
    state
}

fn pages(c: &mut Criterion) {
    let state = state();
    let seen: BTreeMap<_, _> = state.providers().map(|(a, _)| (*a, state.height().0)).collect();
    let book = OrderBook::default();
    let mut group = c.benchmark_group("explorer_1000_providers_10000_leases");
    group.sample_size(20);
    group.bench_function("providers_page", |b| {
        b.iter(|| providers_html("agora-test".into(), &state, &seen).unwrap().len())
    });
    group.bench_function("market_page", |b| b.iter(|| market_html("agora-test".into(), &state, &book).unwrap().len()));
    group.finish();
}

criterion_group!(benches, pages);
criterion_main!(benches);
