//! Properties of the call auction's clearing function, over random books:
//! the price rules on both sides, no ask over-allocated, bids filled whole
//! (or split across hosts only when allowed), exact conservation of funds,
//! a volume-maximising price, and a result that does not depend on the
//! order the orders are listed in.

use std::collections::BTreeMap;

use agora_ledger::auction::{AskOrder, BidOrder, Clearing, clear, cost};
use agora_protocol::Amount;
use proptest::prelude::*;

fn bids() -> impl Strategy<Value = Vec<BidOrder>> {
    prop::collection::vec((1u32..9, 1u32..25, 1u64..40, any::<bool>(), 0u64..5, 0u32..4), 0..40).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (gpus, hours, price, split, height, start))| BidOrder {
                id: i as u64,
                gpus,
                hours,
                max_price: Amount(price * 100_000),
                split,
                // Most start at the clearing, some later.
                start_hours: start.saturating_sub(2) * 6,
                placed: (height, i as u32),
            })
            .collect()
    })
}

fn asks() -> impl Strategy<Value = Vec<AskOrder>> {
    prop::collection::vec((1u32..9, 1u32..49, 1u64..40, 0u64..5), 0..20).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (gpus, hours, price, height))| AskOrder {
                id: 1_000 + i as u64,
                gpus,
                hours,
                min_price: Amount(price * 100_000),
                placed: (height, i as u32),
            })
            .collect()
    })
}

/// D and S at `p`.
fn depth(bids: &[BidOrder], asks: &[AskOrder], p: u64) -> (u64, u64) {
    let d = bids.iter().filter(|b| b.max_price.0 >= p).map(BidOrder::gpu_hours).sum();
    let s = asks.iter().filter(|a| a.min_price.0 <= p).map(AskOrder::gpu_hours).sum();
    (d, s)
}

fn check(bids: &[BidOrder], asks: &[AskOrder], c: &Clearing) -> Result<(), TestCaseError> {
    let by_bid: BTreeMap<u64, &BidOrder> = bids.iter().map(|b| (b.id, b)).collect();
    let by_ask: BTreeMap<u64, &AskOrder> = asks.iter().map(|a| (a.id, a)).collect();
    let Some(price) = c.price else {
        prop_assert!(c.fills.is_empty());
        // Nothing crosses: every bid is below every ask.
        for b in bids {
            prop_assert!(asks.iter().all(|a| a.min_price > b.max_price));
        }
        return Ok(());
    };
    let (d, s) = depth(bids, asks, price.0);
    prop_assert_eq!((c.bid_depth, c.ask_depth), (d, s), "the depths are D and S at the price");
    prop_assert!(c.matched_gpu_hours <= d.min(s));
    // The price maximises min(D, S) over every price that matters.
    let best = bids
        .iter()
        .map(|b| b.max_price.0)
        .chain(asks.iter().map(|a| a.min_price.0))
        .map(|p| {
            let (d, s) = depth(bids, asks, p);
            d.min(s)
        })
        .max()
        .unwrap_or(0);
    prop_assert_eq!(d.min(s), best, "not a volume-maximising price");
    let mut used: BTreeMap<u64, u32> = BTreeMap::new();
    let mut filled: BTreeMap<u64, (u32, usize)> = BTreeMap::new();
    let (mut paid, mut received) = (0u64, 0u64);
    for f in &c.fills {
        let (b, a) = (by_bid[&f.bid], by_ask[&f.ask]);
        prop_assert!(b.max_price >= price, "a buyer pays more than its bid");
        prop_assert!(a.min_price <= price, "a provider receives less than its ask");
        prop_assert_eq!(f.hours, b.hours);
        prop_assert!(b.start_hours + f.hours <= a.hours, "a contract ending after the ask's window");
        *used.entry(f.ask).or_default() += f.gpus;
        let e = filled.entry(f.bid).or_default();
        e.0 += f.gpus;
        e.1 += 1;
        let amount = cost(price, f.gpus, f.hours).unwrap().0;
        paid += amount;
        received += amount;
    }
    for (ask, gpus) in used {
        prop_assert!(gpus <= by_ask[&ask].gpus, "ask {} over-allocated", ask);
    }
    let mut escrowed = 0u64;
    let mut refunded = 0u64;
    for b in bids {
        let escrow = b.max_cost().unwrap().0;
        escrowed += escrow;
        let spent = match filled.get(&b.id) {
            Some(&(gpus, parts)) => {
                prop_assert_eq!(gpus, b.gpus, "bid {} partly filled", b.id);
                prop_assert!(b.split || parts == 1, "bid {} split without allowing it", b.id);
                cost(price, b.gpus, b.hours).unwrap().0
            }
            None => 0,
        };
        prop_assert!(spent <= escrow);
        refunded += escrow - spent;
    }
    prop_assert_eq!(escrowed, paid + refunded, "funds are conserved exactly");
    prop_assert_eq!(paid, received);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn clearing_obeys_the_rules(bids in bids(), asks in asks()) {
        let c = clear(&bids, &asks);
        check(&bids, &asks, &c)?;
    }

    #[test]
    fn clearing_does_not_depend_on_listing_order(bids in bids(), asks in asks(), seed in any::<u64>()) {
        let c = clear(&bids, &asks);
        let (mut b2, mut a2) = (bids.clone(), asks.clone());
        let mut rng = agora_protocol::rng::SeededRng::new(seed);
        for i in (1..b2.len()).rev() {
            b2.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for i in (1..a2.len()).rev() {
            a2.swap(i, rng.below(i as u64 + 1) as usize);
        }
        prop_assert_eq!(clear(&b2, &a2), c);
    }
}
