//! Criterion benchmark of the call auction's clearing for one GPU class at
//! 10,000 open orders (5,000 bids, 5,000 asks), the target being
//! 50 ms on one core: a book where prices cross in the middle, and a worst
//! case for the allocation, where most bids are too big for most asks.

use agora_ledger::auction::{AskOrder, BidOrder, clear};
use agora_protocol::Amount;
use agora_protocol::rng::SeededRng;
use criterion::{Criterion, criterion_group, criterion_main};

const ORDERS_PER_SIDE: usize = 5_000;

fn book(seed: u64, max_bid_gpus: u64) -> (Vec<BidOrder>, Vec<AskOrder>) {
    let mut rng = SeededRng::new(seed);
    let bids = (0..ORDERS_PER_SIDE)
        .map(|i| BidOrder {
            id: i as u64,
            gpus: 1 + rng.below(max_bid_gpus) as u32,
            hours: 1 + rng.below(24) as u32,
            max_price: Amount(1_000_000 + rng.below(2_000_000)),
            split: rng.below(4) == 0,
            start_hours: 0,
            placed: (rng.below(30), i as u32),
        })
        .collect();
    let asks = (0..ORDERS_PER_SIDE)
        .map(|i| AskOrder {
            id: (ORDERS_PER_SIDE + i) as u64,
            gpus: 1 + rng.below(8) as u32,
            hours: 1 + rng.below(48) as u32,
            min_price: Amount(1_500_000 + rng.below(2_000_000)),
            placed: (rng.below(30), i as u32),
        })
        .collect();
    (bids, asks)
}

fn bench_clearing(c: &mut Criterion) {
    let mut group = c.benchmark_group("clear_10000_orders_one_class");
    group.sample_size(20);
    for (name, max_bid_gpus) in [("crossing_book", 4), ("big_bids_small_hosts", 16)] {
        let (bids, asks) = book(7, max_bid_gpus);
        let c = clear(&bids, &asks);
        eprintln!(
            "{name}: price {:?}, {} fills, {} GPU-hours matched of {} bid / {} asked at the price",
            c.price,
            c.fills.len(),
            c.matched_gpu_hours,
            c.bid_depth,
            c.ask_depth
        );
        group.bench_function(name, |b| b.iter(|| clear(&bids, &asks)));
    }
    group.finish();
}

criterion_group!(benches, bench_clearing);
criterion_main!(benches);
