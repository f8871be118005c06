//! The call auction's clearing: a deterministic uniform-price double auction
//! for one GPU class, as a pure function of the open orders. Every node runs
//! it at the clearing block and must reach the same result, so it depends on
//! nothing but its input (never on the order the orders arrived in within a
//! block: every tie is broken by fields of the orders themselves).
//!
//! Quantities are GPU-hours. A bid wants `gpus` GPUs on one host for
//! `hours` hours at no more than `max_price` per GPU-hour; an ask offers
//! `gpus` GPUs of one host for up to `hours` hours at no less than
//! `min_price`. The rules (docs/ledger.md, "Auctions"):
//!
//! 1. **Price.** With D(p) the GPU-hours bid at `max_price ≥ p` and S(p) those
//!    asked at `min_price ≤ p`, the clearing price maximises the tradable
//!    volume min(D, S); among prices that tie, the one with the smallest
//!    imbalance |D − S|; among those, the lowest price range, and within it
//!    the midpoint (rounded down). D and S are constant within that range, so
//!    the same orders take part at any price in it.
//! 2. **Allocation at that price.** Bids with `max_price ≥ p` in priority
//!    order (higher `max_price`, then earlier placement, then order id) are
//!    each filled whole on the first ask, in priority order (lower
//!    `min_price`, then earlier placement, then id), with that many GPUs
//!    free and a long enough window; a bid that allows splitting may be
//!    filled from several asks, all or nothing. A bid that fits nowhere is
//!    not filled. GPUs are indivisible and bids are not partly filled, so the
//!    matched volume may fall short of min(D, S).
//! 3. **Money.** Every matched buyer pays the clearing price (never more
//!    than its bid), every matched provider receives it (never less than its
//!    ask); a bid's escrow (its maximum cost) is paid out exactly into the
//!    cost of its matches and its refund.

use std::cmp::Reverse;

use agora_protocol::Amount;

/// The most orders one side of one class's auction may hold (a params limit
/// keeps the real books far smaller; this bounds the arithmetic).
pub const MAX_ORDERS_PER_SIDE: usize = 100_000;

/// Where an order was placed: the block height and the transaction's index
/// in it. Earlier placement wins ties at equal price.
pub type Placed = (u64, u32);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BidOrder {
    pub id: u64,
    pub gpus: u32,
    pub hours: u32,
    /// Per GPU-hour.
    pub max_price: Amount,
    /// May the GPUs come from several hosts?
    pub split: bool,
    /// Hours after the clearing the contract starts: it must end within the ask's window.
    pub start_hours: u32,
    pub placed: Placed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskOrder {
    pub id: u64,
    pub gpus: u32,
    /// The longest contract the provider sells in this auction.
    pub hours: u32,
    /// Per GPU-hour.
    pub min_price: Amount,
    pub placed: Placed,
}

impl BidOrder {
    pub fn gpu_hours(&self) -> u64 {
        u64::from(self.gpus) * u64::from(self.hours)
    }

    /// What the bid escrows: its maximum cost.
    pub fn max_cost(&self) -> Option<Amount> {
        cost(self.max_price, self.gpus, self.hours)
    }
}

impl AskOrder {
    pub fn gpu_hours(&self) -> u64 {
        u64::from(self.gpus) * u64::from(self.hours)
    }
}

/// `price` per GPU-hour for `gpus` GPUs over `hours` hours (None on overflow).
pub fn cost(price: Amount, gpus: u32, hours: u32) -> Option<Amount> {
    price.0.checked_mul(u64::from(gpus))?.checked_mul(u64::from(hours)).map(Amount)
}

/// Part of a bid filled by one ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    pub bid: u64,
    pub ask: u64,
    pub gpus: u32,
    pub hours: u32,
}

/// An auction's outcome for one class.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Clearing {
    /// None when no bid and ask cross.
    pub price: Option<Amount>,
    /// In bid priority order; a split bid's parts are consecutive.
    pub fills: Vec<Fill>,
    pub matched_gpu_hours: u64,
    /// GPU-hours bid at or above the price (all of them when none).
    pub bid_depth: u64,
    /// GPU-hours asked at or below the price (all of them when none).
    pub ask_depth: u64,
}

impl Clearing {
    /// The bids filled (each once).
    pub fn filled_bids(&self) -> impl Iterator<Item = u64> + '_ {
        let mut last = None;
        self.fills.iter().filter_map(move |f| (last.replace(f.bid) != Some(f.bid)).then_some(f.bid))
    }
}

/// Clears one class's auction.
pub fn clear(bids: &[BidOrder], asks: &[AskOrder]) -> Clearing {
    let total_bid: u64 = bids.iter().map(BidOrder::gpu_hours).sum();
    let total_ask: u64 = asks.iter().map(AskOrder::gpu_hours).sum();
    let Some((price, bid_depth, ask_depth)) = clearing_price(bids, asks) else {
        return Clearing { bid_depth: total_bid, ask_depth: total_ask, ..Clearing::default() };
    };
    let fills = allocate(bids, asks, price);
    let matched_gpu_hours = fills.iter().map(|f| u64::from(f.gpus) * u64::from(f.hours)).sum();
    Clearing { price: Some(price), fills, matched_gpu_hours, bid_depth, ask_depth }
}

/// The price (rule 1) with D and S there, or None if no bid meets an ask.
fn clearing_price(bids: &[BidOrder], asks: &[AskOrder]) -> Option<(Amount, u64, u64)> {
    // Every limit price is a point where D or S changes. D(p) counts bids
    // with max ≥ p and S(p) asks with min ≤ p, so on the integers both are
    // constant on each limit point and on each open interval between two.
    let mut points: Vec<u64> = bids.iter().map(|b| b.max_price.0).chain(asks.iter().map(|a| a.min_price.0)).collect();
    points.sort_unstable();
    points.dedup();
    let mut by_bid: Vec<(u64, u64)> = bids.iter().map(|b| (b.max_price.0, b.gpu_hours())).collect();
    let mut by_ask: Vec<(u64, u64)> = asks.iter().map(|a| (a.min_price.0, a.gpu_hours())).collect();
    by_bid.sort_unstable();
    by_ask.sort_unstable();
    let mut demand: u64 = by_bid.iter().map(|(_, q)| q).sum();
    let mut supply: u64 = 0;
    let (mut bi, mut ai) = (0, 0);
    let mut best: Option<Segment> = None;
    for (i, &p) in points.iter().enumerate() {
        while bi < by_bid.len() && by_bid[bi].0 < p {
            demand -= by_bid[bi].1;
            bi += 1;
        }
        while ai < by_ask.len() && by_ask[ai].0 <= p {
            supply += by_ask[ai].1;
            ai += 1;
        }
        consider(&mut best, Segment { lo: p, hi: p, demand, supply });
        // Above p and below the next point, bids limited at exactly p are out.
        if let Some(&next) = points.get(i + 1).filter(|&&next| next > p + 1) {
            let at_p: u64 = by_bid[bi..].iter().take_while(|(max, _)| *max == p).map(|(_, q)| q).sum();
            consider(&mut best, Segment { lo: p + 1, hi: next - 1, demand: demand - at_p, supply });
        }
    }
    let best = best?;
    Some((Amount(best.lo + (best.hi - best.lo) / 2), best.demand, best.supply))
}

/// A range of prices over which D and S are constant.
#[derive(Debug, Clone, Copy)]
struct Segment {
    lo: u64,
    hi: u64,
    demand: u64,
    supply: u64,
}

impl Segment {
    fn volume(&self) -> u64 {
        self.demand.min(self.supply)
    }

    /// Larger is better: volume, then a smaller imbalance.
    fn key(&self) -> (u64, Reverse<u64>) {
        (self.volume(), Reverse(self.demand.abs_diff(self.supply)))
    }
}

/// Keeps the better of `best` and `next` (segments come in rising price,
/// so a tie keeps the lower); a next segment with the same D and S right
/// after the best one widens its range.
fn consider(best: &mut Option<Segment>, next: Segment) {
    if next.volume() == 0 {
        return;
    }
    match best {
        Some(b) if (b.demand, b.supply) == (next.demand, next.supply) && b.hi + 1 == next.lo => b.hi = next.hi,
        Some(b) if b.key() >= next.key() => {}
        _ => *best = Some(next),
    }
}

/// Fills bids at `price` (rule 2).
fn allocate(bids: &[BidOrder], asks: &[AskOrder], price: Amount) -> Vec<Fill> {
    let mut bids: Vec<&BidOrder> = bids.iter().filter(|b| b.max_price >= price).collect();
    bids.sort_by_key(|b| (Reverse(b.max_price), b.placed, b.id));
    let mut asks: Vec<&AskOrder> = asks.iter().filter(|a| a.min_price <= price).collect();
    asks.sort_by_key(|a| (a.min_price, a.placed, a.id));
    let mut free: Vec<u32> = asks.iter().map(|a| a.gpus).collect();
    let mut fills = Vec::new();
    for bid in bids {
        // The contract, from its start to its end, must lie in the ask's window.
        let span = bid.start_hours.saturating_add(bid.hours);
        let fits = |i: usize, free: &[u32]| free[i] >= bid.gpus && asks[i].hours >= span;
        if let Some(i) = (0..asks.len()).find(|&i| fits(i, &free)) {
            free[i] -= bid.gpus;
            fills.push(Fill { bid: bid.id, ask: asks[i].id, gpus: bid.gpus, hours: bid.hours });
            continue;
        }
        if !bid.split {
            continue;
        }
        // From several hosts, in ask priority, all or nothing.
        let mut parts = Vec::new();
        let mut wanted = bid.gpus;
        for i in (0..asks.len()).filter(|&i| free[i] > 0 && asks[i].hours >= span) {
            let take = wanted.min(free[i]);
            parts.push((i, take));
            wanted -= take;
            if wanted == 0 {
                break;
            }
        }
        if wanted == 0 {
            for (i, take) in parts {
                free[i] -= take;
                fills.push(Fill { bid: bid.id, ask: asks[i].id, gpus: take, hours: bid.hours });
            }
        }
    }
    fills
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bid(id: u64, gpus: u32, hours: u32, max: u64) -> BidOrder {
        BidOrder { id, gpus, hours, max_price: Amount(max), split: false, start_hours: 0, placed: (1, id as u32) }
    }

    fn ask(id: u64, gpus: u32, hours: u32, min: u64) -> AskOrder {
        AskOrder { id, gpus, hours, min_price: Amount(min), placed: (1, id as u32) }
    }

    #[test]
    fn a_worked_example_clears_at_one_price() {
        // Two providers: 8 GPUs × 24 h at 1.8, 4 GPUs × 8 h at 2.2 (AGR/GPU-hour).
        // Buyers: 2 × 4 h at 2.5, 4 × 10 h at 2.0, 8 × 4 h at 1.5, 2 × 2 h at 2.3.
        let asks = [ask(10, 8, 24, 1_800_000), ask(11, 4, 8, 2_200_000)];
        let bids =
            [bid(1, 2, 4, 2_500_000), bid(2, 4, 10, 2_000_000), bid(3, 8, 4, 1_500_000), bid(4, 2, 2, 2_300_000)];
        let c = clear(&bids, &asks);
        // D/S at 1.8: D = 8+40+4 = 52 ≥ S = 192 → 52; at 2.0: D 52, S 192; at 2.2: D 12, S 224;
        // the volume 52 holds on [1.8, 2.0]: same imbalance, lowest range, midpoint 1.9.
        assert_eq!(c.price, Some(Amount(1_900_000)));
        assert_eq!((c.bid_depth, c.ask_depth), (52, 192));
        let filled: Vec<u64> = c.filled_bids().collect();
        assert_eq!(filled, vec![1, 4, 2], "by max price; the 1.5 bid is below the price");
        assert!(c.fills.iter().all(|f| f.ask == 10), "the cheapest ask has room for all three");
        assert_eq!(c.matched_gpu_hours, 8 + 4 + 40);
    }

    #[test]
    fn nothing_crosses_no_price() {
        let c = clear(&[bid(1, 1, 1, 100)], &[ask(2, 1, 1, 200)]);
        assert_eq!(c, Clearing { bid_depth: 1, ask_depth: 1, ..Clearing::default() });
        assert_eq!(clear(&[], &[]).price, None);
    }

    #[test]
    fn a_bid_is_filled_on_one_host_unless_it_allows_splitting() {
        let asks = [ask(10, 4, 10, 100), ask(11, 4, 10, 100)];
        let whole = clear(&[bid(1, 6, 2, 200)], &asks);
        assert!(whole.fills.is_empty(), "no single host has 6 free GPUs: {whole:?}");
        let mut split = bid(1, 6, 2, 200);
        split.split = true;
        let c = clear(&[split], &asks);
        assert_eq!(c.fills.iter().map(|f| f.gpus).collect::<Vec<_>>(), vec![4, 2]);
        // A window too short for the bid is never used, nor one that ends
        // before a later-starting contract would.
        assert!(clear(&[bid(1, 1, 20, 200)], &asks).fills.is_empty());
        let later = BidOrder { start_hours: 9, ..bid(1, 1, 2, 200) };
        assert!(clear(std::slice::from_ref(&later), &asks).fills.is_empty(), "hours 9 to 11 of a 10-hour window");
        assert_eq!(clear(&[BidOrder { start_hours: 8, ..later }], &asks).fills.len(), 1, "hours 8 to 10 fit");
    }
}
