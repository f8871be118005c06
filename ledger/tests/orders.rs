//! The exchange's order rules: a bid escrows its maximum cost, an ask only
//! what the provider has not committed, cancels only outside the binding
//! phase (with the escrow back), amendments in the binding phase only in
//! the other side's favour, open-order limits, owners only; supply stays
//! exact throughout (every block is audited).

use agora_ledger::testkit::chain_id;
use agora_ledger::testkit::{TestChain, sign_tx};
use agora_ledger::{AuctionPhase, Error, Side, SigCheck, State, apply_block, apply_tx};
use agora_protocol::{
    Amount, GpuClass, GpuSpec, Hash, LeaseAccept, LeaseRequest, Signed, SignedTx, TimestampMs, TxKind,
};

const PROVIDER: usize = 4;
const BUYER: usize = 5;
const OTHER: usize = 6;

fn chain() -> TestChain {
    TestChain::new(7, 4, Amount::agr(10_000))
}

fn commit(chain: &TestChain, state: &mut State, txs: Vec<SignedTx>) {
    let n = txs.len();
    let block = chain.next_block(state, txs).unwrap();
    assert_eq!(block.txs.len(), n, "a transaction was rejected by the builder");
    apply_block(state, &block, SigCheck::Verify).unwrap();
    state.audit().unwrap();
}

/// Applies one transaction on a scratch copy: its error, if any.
fn try_tx(chain: &TestChain, state: &State, tx: SignedTx) -> Result<(), Error> {
    let mut scratch = state.fork();
    let block = chain.next_block(&mut scratch.clone(), vec![]).unwrap();
    agora_ledger::apply_block(&mut scratch, &block, SigCheck::Skip).unwrap();
    apply_tx(&mut scratch, &tx, SigCheck::Verify).map(|_| ())
}

fn nonce(state: &State, chain: &TestChain, i: usize) -> u64 {
    state.account(&chain.address(i)).nonce
}

fn class() -> GpuClass {
    GpuClass::parse("H100-80GB-SIM").unwrap()
}

fn bid(chain: &TestChain, state: &State, gpus: u32, hours: u32, agr: u64) -> SignedTx {
    let kind =
        TxKind::PlaceBid { class: class(), gpus, hours, max_price: Amount::agr(agr), split: false, start_hours: 0 };
    sign_tx(&chain.keys[BUYER], nonce(state, chain, BUYER), kind)
}

fn setup_provider(chain: &TestChain, state: &mut State) {
    let key = &chain.keys[PROVIDER];
    let gpus = vec![GpuSpec { model: "H100".into(), vram_mib: 81_920, count: 4, simulated: true }];
    commit(
        chain,
        state,
        vec![
            sign_tx(key, 0, TxKind::Stake { amount: Amount::agr(1_000) }),
            sign_tx(key, 1, TxKind::RegisterProvider { region: "eu".into(), gpus }),
        ],
    );
}

/// Commits empty blocks until the next block falls in `phase`.
fn until_next_block_is(chain: &TestChain, state: &mut State, phase: AuctionPhase) {
    while state.params().market.phase(state.height().0 + 1).1 != phase {
        commit(chain, state, vec![]);
    }
}

#[test]
fn a_bid_escrows_its_maximum_cost_and_a_cancel_returns_it() {
    let chain = chain();
    let mut state = chain.state();
    until_next_block_is(&chain, &mut state, AuctionPhase::Open);
    let before = state.account(&chain.address(BUYER)).balance;
    let tx = bid(&chain, &state, 2, 4, 3);
    commit(&chain, &mut state, vec![tx]);
    let order = state.orders().next().unwrap().clone();
    assert_eq!((order.side, order.owner, order.escrow), (Side::Bid, chain.address(BUYER), Amount::agr(24)));
    let fee = state.params().min_tx_fee;
    assert_eq!(state.account(&chain.address(BUYER)).balance, Amount(before.0 - Amount::agr(24).0 - fee.0));
    // Someone else cannot cancel it; its owner can, outside the binding phase.
    let stranger = sign_tx(&chain.keys[OTHER], 0, TxKind::CancelOrder { order: order.id });
    assert!(matches!(try_tx(&chain, &state, stranger), Err(Error::NotOrderOwner(_))));
    let cancel = sign_tx(&chain.keys[BUYER], nonce(&state, &chain, BUYER), TxKind::CancelOrder { order: order.id });
    commit(&chain, &mut state, vec![cancel]);
    assert!(state.orders().next().is_none());
    assert_eq!(state.account(&chain.address(BUYER)).balance, Amount(before.0 - 2 * fee.0), "the escrow came back");
    // A bid the balance cannot cover is refused.
    let huge = bid(&chain, &state, 64, 720, 1_000);
    assert!(matches!(try_tx(&chain, &state, huge), Err(Error::InsufficientFunds { .. })));
}

#[test]
fn in_the_binding_phase_bids_only_rise_asks_only_fall_and_nothing_is_cancelled() {
    let chain = chain();
    let mut state = chain.state();
    setup_provider(&chain, &mut state);
    until_next_block_is(&chain, &mut state, AuctionPhase::Open);
    let ask = TxKind::PlaceAsk { class: class(), gpus: 2, hours: 8, min_price: Amount::agr(2) };
    let txs = vec![bid(&chain, &state, 1, 2, 3), sign_tx(&chain.keys[PROVIDER], 2, ask)];
    commit(&chain, &mut state, txs);
    let (bid_id, ask_id) = (0, 1);
    until_next_block_is(&chain, &mut state, AuctionPhase::NoCancel);
    let buyer = |state: &State, kind| sign_tx(&chain.keys[BUYER], nonce(state, &chain, BUYER), kind);
    let provider = |state: &State, kind| sign_tx(&chain.keys[PROVIDER], nonce(state, &chain, PROVIDER), kind);
    let refused = |r: Result<(), Error>| matches!(r, Err(Error::Order(m)) if m.contains("binding"));
    assert!(refused(try_tx(&chain, &state, buyer(&state, TxKind::CancelOrder { order: bid_id }))));
    let lower = TxKind::AmendOrder { order: bid_id, price: Amount::agr(2) };
    assert!(refused(try_tx(&chain, &state, buyer(&state, lower))));
    let higher_ask = TxKind::AmendOrder { order: ask_id, price: Amount::agr(3) };
    assert!(refused(try_tx(&chain, &state, provider(&state, higher_ask))));
    // Raising the bid takes the extra escrow; lowering the ask is fine.
    let before = state.account(&chain.address(BUYER)).balance;
    let raise = buyer(&state, TxKind::AmendOrder { order: bid_id, price: Amount::agr(5) });
    let lower_ask = provider(&state, TxKind::AmendOrder { order: ask_id, price: Amount::agr(1) });
    commit(&chain, &mut state, vec![raise, lower_ask]);
    assert_eq!(state.order(bid_id).unwrap().escrow, Amount::agr(10));
    let fee = state.params().min_tx_fee;
    assert_eq!(state.account(&chain.address(BUYER)).balance, Amount(before.0 - Amount::agr(4).0 - fee.0));
    assert_eq!(state.order(ask_id).unwrap().price, Amount::agr(1));
}

#[test]
fn a_provider_asks_only_for_registered_uncommitted_gpus_of_that_class() {
    let chain = chain();
    let mut state = chain.state();
    let ask = |state: &State, i: usize, class: &str, gpus: u32| {
        let class = GpuClass::parse(class).unwrap();
        let kind = TxKind::PlaceAsk { class, gpus, hours: 24, min_price: Amount::agr(1) };
        sign_tx(&chain.keys[i], nonce(state, &chain, i), kind)
    };
    assert!(matches!(try_tx(&chain, &state, ask(&state, BUYER, "H100-80GB-SIM", 1)), Err(Error::NotProvider)));
    setup_provider(&chain, &mut state);
    until_next_block_is(&chain, &mut state, AuctionPhase::Open);
    let real = try_tx(&chain, &state, ask(&state, PROVIDER, "H100-80GB", 1));
    assert!(matches!(real, Err(Error::NoCapacity(_))), "simulated GPUs are not the real class: {real:?}");
    let tx = ask(&state, PROVIDER, "H100-80GB-SIM", 3);
    commit(&chain, &mut state, vec![tx]);
    let over = try_tx(&chain, &state, ask(&state, PROVIDER, "H100-80GB-SIM", 2));
    assert!(
        matches!(&over, Err(Error::NoCapacity(m)) if m.contains("3 in open asks and 0 leased out, so 1 free")),
        "{over:?}"
    );
    let tx = ask(&state, PROVIDER, "H100-80GB-SIM", 1);
    commit(&chain, &mut state, vec![tx]);
    assert_eq!(state.orders_of(&chain.address(PROVIDER)).count(), 2);
}

#[test]
fn open_orders_are_limited_per_account() {
    let chain = chain();
    let mut state = chain.state();
    until_next_block_is(&chain, &mut state, AuctionPhase::Open);
    let most = state.params().market.max_open_orders_per_account;
    let txs: Vec<SignedTx> = (0..most)
        .map(|i| {
            let kind = TxKind::PlaceBid {
                class: class(),
                gpus: 1,
                hours: 1,
                max_price: Amount(1_000),
                split: false,
                start_hours: 0,
            };
            sign_tx(&chain.keys[BUYER], i, kind)
        })
        .collect();
    commit(&chain, &mut state, txs);
    assert_eq!(state.orders_of(&chain.address(BUYER)).count() as u64, most);
    assert_eq!(state.open_orders_in(&class()), most);
    let one_more = bid(&chain, &state, 1, 1, 1);
    assert!(matches!(try_tx(&chain, &state, one_more), Err(Error::Order(m)) if m.contains("open orders")));
}

#[test]
fn the_clearing_block_turns_crossing_orders_into_leases_at_one_price() {
    let chain = chain();
    let mut state = chain.state();
    setup_provider(&chain, &mut state);
    until_next_block_is(&chain, &mut state, AuctionPhase::Open);
    let place = |state: &State, i: usize, kind| sign_tx(&chain.keys[i], nonce(state, &chain, i), kind);
    let bid_kind = |gpus, hours, max: Amount| TxKind::PlaceBid {
        class: class(),
        gpus,
        hours,
        max_price: max,
        split: false,
        start_hours: 0,
    };
    let ask = TxKind::PlaceAsk { class: class(), gpus: 4, hours: 24, min_price: Amount::agr(2) };
    let txs = vec![place(&state, PROVIDER, ask), place(&state, OTHER, bid_kind(4, 2, Amount::agr(1)))];
    commit(&chain, &mut state, txs);
    let first = place(&state, BUYER, bid_kind(2, 4, Amount::agr(3)));
    commit(&chain, &mut state, vec![first]);
    let second = place(&state, BUYER, bid_kind(2, 2, Amount(2_500_000)));
    commit(&chain, &mut state, vec![second]);
    let (buyer0, other0, provider0) = (
        state.account(&chain.address(BUYER)).balance,
        state.account(&chain.address(OTHER)).balance,
        state.account(&chain.address(PROVIDER)).balance,
    );
    until_next_block_is(&chain, &mut state, AuctionPhase::Clearing);
    commit(&chain, &mut state, vec![]);

    // D = 8 + 4 GPU-hours from 2 up to 2.5 against S = 96: the midpoint 2.25.
    let results: Vec<_> = state.auction_results(0).collect();
    assert_eq!(results.len(), 1);
    let r = results[0];
    assert_eq!((r.price, r.matched_gpu_hours, r.bid_depth, r.ask_depth), (Some(Amount(2_250_000)), 12, 12, 96));
    assert_eq!(r.leases, 2);
    let leases: Vec<_> = state.leases().collect();
    assert_eq!(leases.len(), 2);
    for l in &leases {
        assert_eq!(
            (l.buyer, l.provider, l.price_per_gpu_hour),
            (chain.address(BUYER), chain.address(PROVIDER), Amount(2_250_000))
        );
        assert_eq!(l.escrow.0, l.price_per_gpu_hour.0 * u64::from(l.gpus) * (l.end_ms.0 - l.start_ms.0) / 3_600_000);
    }
    // The buyer paid 2.25 for 8 + 4 GPU-hours (escrows 24 + 10, refunds 6 + 1);
    // the unmatched bid came back whole; the book is empty.
    assert_eq!(state.account(&chain.address(BUYER)).balance, Amount(buyer0.0 + Amount::agr(7).0));
    assert_eq!(state.account(&chain.address(OTHER)).balance, Amount(other0.0 + Amount::agr(8).0));
    assert_eq!(state.account(&chain.address(PROVIDER)).balance, provider0, "paid as the leases run");
    assert!(state.orders().next().is_none());
    // The provider's GPUs are leased out: it may ask only for the rest next time.
    until_next_block_is(&chain, &mut state, AuctionPhase::Open);
    let too_many =
        place(&state, PROVIDER, TxKind::PlaceAsk { class: class(), gpus: 1, hours: 1, min_price: Amount(1) });
    assert!(matches!(try_tx(&chain, &state, too_many), Err(Error::NoCapacity(_))), "4 GPUs, 4 leased");

    // Reserved GPU time is an asset: listed, bought at the asking price
    // (never above the buyer's maximum), given away; refunds follow the holder.
    let lease = state.leases().next().unwrap().id;
    let not_holder = place(&state, OTHER, TxKind::ListLease { lease_id: lease, price: Some(Amount::agr(5)) });
    assert!(matches!(try_tx(&chain, &state, not_holder), Err(Error::NotLeaseParty(_))));
    let list = place(&state, BUYER, TxKind::ListLease { lease_id: lease, price: Some(Amount::agr(5)) });
    commit(&chain, &mut state, vec![list]);
    let cheap = place(&state, OTHER, TxKind::BuyLease { lease_id: lease, max_price: Amount::agr(4) });
    assert!(matches!(try_tx(&chain, &state, cheap), Err(Error::LeaseTerms(_))));
    let (seller0, buyer0) =
        (state.account(&chain.address(BUYER)).balance, state.account(&chain.address(OTHER)).balance);
    let buy = place(&state, OTHER, TxKind::BuyLease { lease_id: lease, max_price: Amount::agr(5) });
    commit(&chain, &mut state, vec![buy]);
    let fee = state.params().min_tx_fee.0;
    assert_eq!(state.lease(&lease).unwrap().buyer, chain.address(OTHER));
    assert_eq!(state.account(&chain.address(BUYER)).balance.0, seller0.0 + Amount::agr(5).0);
    assert_eq!(state.account(&chain.address(OTHER)).balance.0, buyer0.0 - Amount::agr(5).0 - fee);
    assert!(state.listing(&lease).is_none(), "sold: no longer listed");
    // The new holder cancels: the unused escrow comes back to it, not to the first buyer.
    let before = state.account(&chain.address(OTHER)).balance.0;
    let cancel = place(&state, OTHER, TxKind::CancelLease { lease_id: lease });
    commit(&chain, &mut state, vec![cancel]);
    assert!(state.account(&chain.address(OTHER)).balance.0 > before - fee, "the refund went to the holder");
    let gone = place(&state, BUYER, TxKind::TransferLease { lease_id: lease, to: chain.address(OTHER) });
    assert!(matches!(try_tx(&chain, &state, gone), Err(Error::LeaseNotOpen(_))));
}

/// The provider's OpenLease for a spot request of `gpus` simulated H100s by the buyer.
fn spot_lease(chain: &TestChain, state: &State, gpus: u32, request_nonce: u64) -> SignedTx {
    spot_lease_of(chain, state, "H100", gpus, request_nonce)
}

fn spot_lease_of(chain: &TestChain, state: &State, model: &str, gpus: u32, request_nonce: u64) -> SignedTx {
    let body = LeaseRequest {
        provider: chain.address(PROVIDER),
        offer_seq: 1,
        gpu_model: model.into(),
        gpus,
        price_per_gpu_hour: Amount::agr(2),
        duration_secs: 3600,
        job_spec_hash: Hash([7; 32]),
        nonce: request_nonce,
        expires_at_ms: TimestampMs(state.time_ms().0 + 60_000),
    };
    let request = Signed::sign(body, &chain.keys[BUYER], &chain_id()).unwrap();
    let gpu_ids = (0..gpus).map(|i| format!("SIM-H100-{i}")).collect();
    let accept = Signed::sign(
        LeaseAccept { lease_id: request.lease_id().unwrap(), gpu_ids },
        &chain.keys[PROVIDER],
        &chain_id(),
    )
    .unwrap();
    sign_tx(&chain.keys[PROVIDER], nonce(state, chain, PROVIDER), TxKind::OpenLease { request, accept })
}

#[test]
fn gpus_in_an_open_ask_cannot_also_be_leased_on_the_spot_market_nor_the_reverse() {
    let chain = chain();
    let mut state = chain.state();
    setup_provider(&chain, &mut state);
    until_next_block_is(&chain, &mut state, AuctionPhase::Open);
    let ask = |state: &State, gpus: u32| {
        let kind = TxKind::PlaceAsk { class: class(), gpus, hours: 24, min_price: Amount::agr(1) };
        sign_tx(&chain.keys[PROVIDER], nonce(state, &chain, PROVIDER), kind)
    };
    // 4 registered: 3 asked leaves 1 for the spot market.
    let three = ask(&state, 3);
    commit(&chain, &mut state, vec![three]);
    let two = try_tx(&chain, &state, spot_lease(&chain, &state, 2, 1));
    assert!(matches!(&two, Err(Error::NoCapacity(m)) if m.contains("so 1 free (asked for 2)")), "{two:?}");
    let one = spot_lease(&chain, &state, 1, 2);
    commit(&chain, &mut state, vec![one]);
    // Now all 4 are promised: neither another spot lease nor another ask fits.
    assert!(matches!(try_tx(&chain, &state, spot_lease(&chain, &state, 1, 3)), Err(Error::NoCapacity(_))));
    assert!(matches!(try_tx(&chain, &state, ask(&state, 1)), Err(Error::NoCapacity(_))));
    let c = agora_ledger::capacity::capacity(&state, &chain.address(PROVIDER), &class());
    assert_eq!((c.registered, c.asked, c.leased, c.free()), (4, 3, 1, 0));
    // Nor can the provider register them away while they are promised.
    let fewer = vec![GpuSpec { model: "H100".into(), vram_mib: 81_920, count: 2, simulated: true }];
    let shrink = TxKind::RegisterProvider { region: "eu".into(), gpus: fewer };
    let shrink = try_tx(&chain, &state, sign_tx(&chain.keys[PROVIDER], nonce(&state, &chain, PROVIDER), shrink));
    assert!(
        matches!(&shrink, Err(Error::NoCapacity(m)) if m.contains("3 are in open asks and 1 leased out")),
        "{shrink:?}"
    );
    // Cancelling the ask frees its GPUs for the spot market again.
    let cancel = sign_tx(&chain.keys[PROVIDER], nonce(&state, &chain, PROVIDER), TxKind::CancelOrder { order: 0 });
    commit(&chain, &mut state, vec![cancel]);
    let three = spot_lease(&chain, &state, 3, 4);
    commit(&chain, &mut state, vec![three]);
    // Both spot leases are in the price index: 4 GPU-hours at 2 AGR.
    let spot: Vec<_> = state.spot_trades(0).filter(|t| t.class == class()).collect();
    let leases: u32 = spot.iter().map(|t| t.leases).sum();
    let seconds: u64 = spot.iter().map(|t| t.gpu_seconds).sum();
    assert_eq!((leases, seconds), (2, 4 * 3600));
    assert!(spot.iter().all(|t| t.average_price() == Some(Amount::agr(2)) && t.low == t.high), "{spot:?}");
    let unregistered = try_tx(&chain, &state, spot_lease_of(&chain, &state, "A100", 1, 5));
    assert!(matches!(&unregistered, Err(Error::LeaseTerms(m)) if m.contains("no A100")), "{unregistered:?}");
}

#[test]
fn a_contract_that_starts_later_holds_the_gpus_from_the_clearing_and_is_paid_from_its_start() {
    let chain = chain();
    let mut state = chain.state();
    setup_provider(&chain, &mut state);
    until_next_block_is(&chain, &mut state, AuctionPhase::Open);
    let ask = TxKind::PlaceAsk { class: class(), gpus: 4, hours: 4, min_price: Amount::agr(1) };
    let later = |start_hours| TxKind::PlaceBid {
        class: class(),
        gpus: 2,
        hours: 2,
        max_price: Amount::agr(1),
        split: false,
        start_hours,
    };
    // Hours 3 to 5 end after the ask's 4-hour window; hours 2 to 4 fit.
    let txs = vec![
        sign_tx(&chain.keys[PROVIDER], nonce(&state, &chain, PROVIDER), ask),
        sign_tx(&chain.keys[BUYER], nonce(&state, &chain, BUYER), later(3)),
        sign_tx(&chain.keys[OTHER], nonce(&state, &chain, OTHER), later(2)),
    ];
    commit(&chain, &mut state, txs);
    let before = state.account(&chain.address(OTHER)).balance;
    until_next_block_is(&chain, &mut state, AuctionPhase::NoCancel);
    until_next_block_is(&chain, &mut state, AuctionPhase::Open);
    let leases: Vec<_> = state.open_leases().cloned().collect();
    assert_eq!(leases.len(), 1, "only the bid that fits the window: {leases:?}");
    let lease = &leases[0];
    assert_eq!(lease.buyer, chain.address(OTHER));
    let cleared_at = lease.start_ms.0 - 2 * 3_600_000;
    assert!(cleared_at <= state.time_ms().0, "starts two hours after the clearing");
    assert_eq!(lease.end_ms.0 - lease.start_ms.0, 2 * 3_600_000);
    assert_eq!(
        state.account(&chain.address(OTHER)).balance,
        before,
        "paid 4 GPU-hours at 1 AGR: the escrow, no refund"
    );
    // Before its start the GPUs count as leased, and a cancel refunds everything.
    let c = agora_ledger::capacity::capacity(&state, &chain.address(PROVIDER), &class());
    assert_eq!((c.leased, c.free()), (2, 2));
    let cancel = TxKind::CancelLease { lease_id: lease.id };
    let cancel = sign_tx(&chain.keys[OTHER], nonce(&state, &chain, OTHER), cancel);
    commit(&chain, &mut state, vec![cancel]);
    let fee = state.params().min_tx_fee.0;
    assert_eq!(state.account(&chain.address(OTHER)).balance.0, before.0 + Amount::agr(4).0 - fee);
}

#[test]
fn old_auction_results_are_pruned_after_the_retention() {
    let mut chain = chain();
    chain.genesis.params.market.auction_retention = 2;
    let mut state = chain.state();
    setup_provider(&chain, &mut state);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        // An ask alone in each auction: a result without a price each time.
        until_next_block_is(&chain, &mut state, AuctionPhase::Open);
        let ask = TxKind::PlaceAsk { class: class(), gpus: 4, hours: 24, min_price: Amount::agr(2) };
        let ask = sign_tx(&chain.keys[PROVIDER], nonce(&state, &chain, PROVIDER), ask);
        commit(&chain, &mut state, vec![ask]);
        until_next_block_is(&chain, &mut state, AuctionPhase::Clearing);
        commit(&chain, &mut state, vec![]);
        seen.extend(state.auction_results(0).map(|r| r.auction));
    }
    let kept: Vec<u64> = state.auction_results(0).map(|r| r.auction).collect();
    let (current, _) = state.params().market.phase(state.height().0 + 1);
    assert!(seen.len() >= 5, "an auction with a standing ask records a result each time: {seen:?}");
    assert!(!kept.is_empty() && kept.len() < seen.len(), "kept {kept:?} of {seen:?}");
    assert!(kept.iter().all(|a| a + 2 >= current), "kept {kept:?} at auction {current}");
    assert_eq!(state.root(), state.root_from_scratch().unwrap(), "pruning is a deletion in the tree");
}
