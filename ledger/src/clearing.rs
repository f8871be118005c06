//! End-of-block work of the exchange: at the last block of each auction
//! period, every class's book is cleared (`auction::clear`) after the
//! block's transactions. Each fill becomes a lease starting at the block's
//! time (the existing lease machinery: escrow, expiry, settlement, slashing
//! refunds); a filled bid's escrow beyond the clearing price is refunded at
//! once; every order of the auction leaves the book (unfilled bids refunded
//! in full); and the result — price, matched GPU-hours, depth on each side —
//! is kept on the ledger as the public price history.

use std::collections::BTreeMap;

use agora_protocol::{Amount, GpuClass, Hash, LeaseId, TimestampMs};
use serde::{Deserialize, Serialize};

use crate::accounts::credit;
use crate::auction::{AskOrder, BidOrder, clear, cost};
use crate::error::Error;
use crate::events::Event;
use crate::params::AuctionPhase;
use crate::state::{Lease, LeaseStatus, Order, Side, State};

/// Milliseconds in a contract hour.
const HOUR_MS: u64 = 3_600_000;

/// One class's auction result, kept on the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuctionResult {
    pub auction: u64,
    pub class: GpuClass,
    pub height: u64,
    /// None when no bid met an ask.
    pub price: Option<Amount>,
    pub matched_gpu_hours: u64,
    pub bid_depth: u64,
    pub ask_depth: u64,
    pub leases: u32,
}

/// The spot market's trades in one class over one auction period (the
/// leases opened at a provider's posted price), so the price index covers
/// both markets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpotTrades {
    /// The auction period the trades fell in.
    pub auction: u64,
    pub class: GpuClass,
    /// The last height a trade was recorded at.
    pub height: u64,
    pub leases: u32,
    /// GPU-seconds leased (GPUs × duration).
    pub gpu_seconds: u64,
    /// Σ price per GPU-hour × GPU-seconds, exact (the average's numerator;
    /// escrows round up, so they would not give the price back).
    pub price_seconds: u128,
    /// The lowest and highest price per GPU-hour traded.
    pub low: Amount,
    pub high: Amount,
}

impl SpotTrades {
    /// The volume-weighted average price per GPU-hour.
    pub fn average_price(&self) -> Option<Amount> {
        let average = self.price_seconds.checked_div(u128::from(self.gpu_seconds))?;
        Some(Amount(u64::try_from(average).unwrap_or(u64::MAX)))
    }
}

/// Adds a spot lease to its period's record.
pub(crate) fn record_spot(state: &mut State, class: GpuClass, gpus: u32, duration_secs: u64, price: Amount) {
    let height = state.height().0;
    let auction = state.params().market.phase(height).0;
    let existing = state.spot_trades(auction).find(|t| t.auction == auction && t.class == class).cloned();
    let mut t = existing.unwrap_or(SpotTrades {
        auction,
        class,
        height,
        leases: 0,
        gpu_seconds: 0,
        price_seconds: 0,
        low: price,
        high: price,
    });
    let seconds = u64::from(gpus).saturating_mul(duration_secs);
    t.height = height;
    t.leases = t.leases.saturating_add(1);
    t.gpu_seconds = t.gpu_seconds.saturating_add(seconds);
    t.price_seconds = t.price_seconds.saturating_add(u128::from(price.0) * u128::from(seconds));
    t.low = t.low.min(price);
    t.high = t.high.max(price);
    state.set_spot_trades(t);
}

/// Clears every class if this block ends an auction period.
pub(crate) fn end_block(state: &mut State) -> Result<Vec<Event>, Error> {
    let height = state.height().0;
    let (auction, phase) = state.params().market.phase(height);
    if phase != AuctionPhase::Clearing {
        return Ok(Vec::new());
    }
    let mut books: BTreeMap<GpuClass, Vec<Order>> = BTreeMap::new();
    for order in state.orders() {
        books.entry(order.class.clone()).or_default().push(order.clone());
    }
    let mut events = Vec::new();
    for (class, orders) in books {
        // A class that cannot clear (an overflow no order should reach)
        // keeps its orders and never stops the chain: every node skips it alike.
        let mark = state.checkpoint();
        match clear_class(state, auction, class.clone(), orders) {
            Ok(cleared) => events.extend(cleared),
            Err(e) => {
                state.rollback(mark);
                events.push(Event::AuctionSkipped { auction, class, reason: e.to_string() });
            }
        }
    }
    Ok(events)
}

fn clear_class(state: &mut State, auction: u64, class: GpuClass, orders: Vec<Order>) -> Result<Vec<Event>, Error> {
    let (bids, asks) = auction_book(state, &orders);
    let result = clear(&bids, &asks);
    let by_id: BTreeMap<u64, &Order> = orders.iter().map(|o| (o.id, o)).collect();
    let now = state.time_ms();
    let mut events = Vec::new();
    let mut spent: BTreeMap<u64, Amount> = BTreeMap::new();
    if let Some(price) = result.price {
        for fill in &result.fills {
            let (bid, ask) = (by_id[&fill.bid], by_id[&fill.ask]);
            let escrow = cost(price, fill.gpus, fill.hours).ok_or(Error::Overflow("lease escrow"))?;
            let id = lease_id(auction, fill.bid, fill.ask);
            // A later start holds the GPUs from now (they count as leased) and
            // is paid from its start: settlement before it refunds everything.
            let start_ms =
                now.0.checked_add(u64::from(bid.start_hours) * HOUR_MS).ok_or(Error::Overflow("lease start"))?;
            let end_ms = start_ms.checked_add(u64::from(fill.hours) * HOUR_MS).ok_or(Error::Overflow("lease end"))?;
            state.set_lease(Lease {
                id,
                buyer: bid.owner,
                provider: ask.owner,
                gpu_model: class.to_string(),
                gpus: fill.gpus,
                gpu_ids: Vec::new(),
                price_per_gpu_hour: price,
                escrow,
                job_spec_hash: Hash::ZERO,
                start_ms: TimestampMs(start_ms),
                end_ms: TimestampMs(end_ms),
                status: LeaseStatus::Open,
            });
            state.set_expiry((TimestampMs(end_ms), id), true);
            let total = spent.entry(fill.bid).or_insert(Amount::ZERO);
            *total = total.checked_add(escrow).ok_or(Error::Overflow("bid spend"))?;
            events.push(Event::LeaseOpened { lease_id: id, buyer: bid.owner, provider: ask.owner, escrow });
        }
    }
    // Every order of this auction leaves the book; bids get back what their
    // fills did not use (all of it when unfilled).
    for order in &orders {
        let used = spent.get(&order.id).copied().unwrap_or(Amount::ZERO);
        let refunded = order
            .escrow
            .checked_sub(used)
            .ok_or(Error::Invariant(format!("order {} spent {used} of its {} escrow", order.id, order.escrow)))?;
        credit(state, order.owner, refunded)?;
        state.set_order(order.id, None);
        events.push(Event::OrderClosed { order: order.id, owner: order.owner, filled: used, refunded });
    }
    let record = AuctionResult {
        auction,
        class: class.clone(),
        height: state.height().0,
        price: result.price,
        matched_gpu_hours: result.matched_gpu_hours,
        bid_depth: result.bid_depth,
        ask_depth: result.ask_depth,
        leases: result.fills.len() as u32,
    };
    events.push(Event::AuctionCleared(Box::new(record.clone())));
    state.record_auction(record);
    Ok(events)
}

/// One class's open orders as the clearing function takes them: the bids,
/// and the asks of providers still active (one jailed since it asked sells
/// nothing). Shared by the clearing block and the API's indicative price.
pub fn auction_book<'a>(state: &State, orders: impl IntoIterator<Item = &'a Order>) -> (Vec<BidOrder>, Vec<AskOrder>) {
    let (mut bids, mut asks) = (Vec::new(), Vec::new());
    for o in orders {
        let placed = (o.placed.0, 0);
        match o.side {
            Side::Bid => bids.push(BidOrder {
                id: o.id,
                gpus: o.gpus,
                hours: o.hours,
                max_price: o.price,
                split: o.split,
                start_hours: o.start_hours,
                placed,
            }),
            Side::Ask if state.is_active_provider(&o.owner) => {
                asks.push(AskOrder { id: o.id, gpus: o.gpus, hours: o.hours, min_price: o.price, placed })
            }
            Side::Ask => {}
        }
    }
    (bids, asks)
}

/// An auction lease's id: a hash of the auction and the two orders (unique:
/// a bid has at most one fill per ask).
fn lease_id(auction: u64, bid: u64, ask: u64) -> LeaseId {
    let mut data = Vec::with_capacity(24);
    for n in [auction, bid, ask] {
        data.extend_from_slice(&n.to_le_bytes());
    }
    LeaseId(Hash::tagged(b"agora/auction-lease/1", &data))
}

/// Removes the results and spot trades of auctions more than
/// `market.auction_retention` before the current one (oldest first, at most
/// `lease::MAX_PRUNED_PER_BLOCK` a block): the live state keeps recent
/// prices; the clearing blocks keep every one.
pub(crate) fn prune_old_auctions(state: &mut State) -> usize {
    let market = &state.params().market;
    let (current, _) = market.phase(state.height().next().0);
    let Some(cutoff) = current.checked_sub(market.auction_retention) else { return 0 };
    let limit = crate::lease::MAX_PRUNED_PER_BLOCK;
    let book = &state.data.book;
    let old = |key: &&(u64, GpuClass)| key.0 < cutoff;
    let mut due: std::collections::BTreeSet<(u64, GpuClass)> =
        book.results.keys().take_while(old).take(limit).cloned().collect();
    due.extend(book.spot.keys().take_while(old).take(limit).cloned());
    let due: Vec<(u64, GpuClass)> = due.into_iter().take(limit).collect();
    for (auction, class) in &due {
        state.forget_auction(*auction, class);
    }
    due.len()
}
