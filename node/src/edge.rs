//! Load shedding at the API edge: how many transactions this node takes
//! from its own clients, and when to tell them to come back.
//!
//! Under overload the chain commits what its blocks hold and no more; every
//! transaction accepted beyond that waits, ages out behind nonce gaps, or is
//! dropped by a peer whose pool is full, and the work spent checking and
//! gossiping it is lost while blocks shrink. So a node takes client
//! transactions only while its pool holds less than `EDGE_MAX_TXS`, a
//! quarter of it: the rest is room for what peers gossip, so a transaction
//! taken at one edge still fits in the other validators' pools, and the
//! queue a client joins is about a block and a half long (a larger mark
//! gave no more throughput and twice the latency, docs/performance.md). Past the mark only
//! a transaction that outbids the cheapest waiting one is taken; the rest
//! get a 503 and a retry hint (the blocks it takes the pool to drain below
//! the mark, at the recent block interval) before any signature is checked.
//! Pure: the daemon feeds it commits and pool sizes; the API reads the
//! published `EdgeGauge`.
//!
//! The mark is fixed rather than derived from the commit rate: the rate
//! measured is what clients asked for, not what the chain can do (after
//! idle blocks it is near zero), and a mark following it refused the first
//! burst after a quiet spell with hints of seconds while the pool was empty.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

pub use agora_ledger::consensus::mempool::EDGE_MAX_TXS;
use agora_protocol::Amount;

/// Blocks the interval and block sizes are measured over.
pub const RATE_WINDOW_BLOCKS: usize = 16;
/// Retry hints are at least this long (a client should not spin)…
pub const MIN_RETRY_MS: u64 = 200;
/// …and at most this long.
pub const MAX_RETRY_MS: u64 = 10_000;
/// The hint while no block interval is known yet (about a block).
pub const UNKNOWN_RATE_RETRY_MS: u64 = 1_000;

/// The daemon's side: the last blocks' times and sizes.
#[derive(Debug, Default)]
pub struct EdgeLoad {
    /// (block time ms, transactions) of the last blocks, oldest first.
    recent: VecDeque<(u64, u64)>,
}

impl EdgeLoad {
    /// Records a committed block.
    pub fn committed(&mut self, time_ms: u64, txs: u64) {
        if self.recent.len() >= RATE_WINDOW_BLOCKS {
            self.recent.pop_front();
        }
        self.recent.push_back((time_ms, txs));
    }

    /// The mean time between the window's blocks, if two are known.
    fn interval_ms(&self) -> Option<u64> {
        let (first, last) = (self.recent.front()?, self.recent.back()?);
        let gaps = self.recent.len() as u64 - 1;
        (gaps > 0).then(|| last.0.saturating_sub(first.0) / gaps)
    }

    /// Pool size past which client transactions must outbid the cheapest.
    pub fn mark(&self) -> usize {
        EDGE_MAX_TXS
    }

    /// How long until a pool of `pool_txs` is below the mark: the blocks
    /// that takes, each taking as many as the largest recent one did, and
    /// at least a mark's worth (a block takes every executable transaction
    /// in the pool; after idle blocks the largest says nothing of that, and
    /// hints of seconds sent clients away from a pool the next block emptied).
    pub fn retry_after_ms(&self, pool_txs: usize) -> u64 {
        let Some(interval) = self.interval_ms() else {
            return UNKNOWN_RATE_RETRY_MS;
        };
        let largest = self.recent.iter().map(|b| b.1).max().unwrap_or(0).max(self.mark() as u64);
        let excess = pool_txs.saturating_sub(self.mark()) as u64 + 1;
        (excess.div_ceil(largest) * interval).clamp(MIN_RETRY_MS, MAX_RETRY_MS)
    }
}

/// What the API reads, lock-free: the pool's size and cheapest fee and the
/// retry hint, as the daemon last published them (the mark is fixed).
#[derive(Debug, Default)]
pub struct EdgeGauge {
    pool_txs: AtomicUsize,
    /// The cheapest fee waiting; u64::MAX when the pool is empty.
    cheapest_fee: AtomicU64,
    retry_after_ms: AtomicU64,
}

/// A client transaction refused at the edge: come back after this long.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Busy {
    pub retry_after_ms: u64,
}

impl EdgeGauge {
    pub fn new() -> EdgeGauge {
        EdgeGauge { cheapest_fee: AtomicU64::new(u64::MAX), ..Default::default() }
    }

    /// Publishes the daemon's view (after every input it handled).
    pub fn publish(&self, load: &EdgeLoad, pool_txs: usize, cheapest_fee: Option<Amount>) {
        self.pool_txs.store(pool_txs, Ordering::Relaxed);
        self.cheapest_fee.store(cheapest_fee.map_or(u64::MAX, |f| f.0), Ordering::Relaxed);
        self.retry_after_ms.store(load.retry_after_ms(pool_txs), Ordering::Relaxed);
    }

    /// The published view, read once per request: the daemon publishes
    /// while a request is checked, and a view changing half-way could take
    /// an account's later nonce after refusing its earlier one (a gap the
    /// later one would wait behind, then age out of the pools).
    pub fn view(&self) -> EdgeView {
        EdgeView {
            pool_txs: self.pool_txs.load(Ordering::Relaxed),
            cheapest: Amount(self.cheapest_fee.load(Ordering::Relaxed)),
            busy: Busy { retry_after_ms: self.retry_after_ms.load(Ordering::Relaxed) },
        }
    }
}

/// One reading of the gauge, for one request.
#[derive(Copy, Clone, Debug)]
pub struct EdgeView {
    pool_txs: usize,
    cheapest: Amount,
    busy: Busy,
}

impl EdgeView {
    /// Whether a client transaction paying `fee` is taken, with `taken`
    /// more already taken from the same request: below the mark any is;
    /// past it, only one outbidding the cheapest waiting.
    pub fn admit(&self, taken: usize, fee: Amount) -> Result<(), Busy> {
        if admits(self.pool_txs + taken, self.cheapest, fee) { Ok(()) } else { Err(self.busy) }
    }
}

/// The edge rule itself, shared by the API's early check and the daemon's
/// authoritative one.
pub fn admits(pool_txs: usize, cheapest: Amount, fee: Amount) -> bool {
    pool_txs < EDGE_MAX_TXS || fee > cheapest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_is_the_blocks_it_takes_to_drain_below_the_mark() {
        let mut load = EdgeLoad::default();
        assert_eq!(load.retry_after_ms(EDGE_MAX_TXS + 10), UNKNOWN_RATE_RETRY_MS, "no interval yet");
        load.committed(0, 0);
        assert_eq!(load.retry_after_ms(EDGE_MAX_TXS + 10), UNKNOWN_RATE_RETRY_MS, "one block: no interval");
        // Blocks every 400 ms, the largest of 4,000 (over the mark): 4,000
        // over the mark is one block, 4,001 two.
        let largest = EDGE_MAX_TXS as u64 + 1_500;
        for (i, txs) in [0, largest, 300, 0].into_iter().enumerate() {
            load.committed(400 * (i as u64 + 1), txs);
        }
        assert_eq!(load.mark(), EDGE_MAX_TXS);
        assert_eq!(load.retry_after_ms(EDGE_MAX_TXS + largest as usize - 1), 400);
        assert_eq!(load.retry_after_ms(EDGE_MAX_TXS + largest as usize), 800);
        // Idle blocks: a block is still taken to drain a mark's worth.
        let mut idle = EdgeLoad::default();
        for i in 0..RATE_WINDOW_BLOCKS as u64 + 3 {
            idle.committed(i * 500, 0);
        }
        assert_eq!(idle.retry_after_ms(EDGE_MAX_TXS), 500, "one block of 500 ms");
        assert_eq!(idle.retry_after_ms(3 * EDGE_MAX_TXS), 1_500, "a full pool: three blocks");
        assert_eq!(idle.recent.len(), RATE_WINDOW_BLOCKS, "the window is bounded");
        let mut fast = EdgeLoad::default();
        fast.committed(0, 0);
        fast.committed(50, 0);
        assert_eq!(fast.retry_after_ms(EDGE_MAX_TXS), MIN_RETRY_MS, "one block of 50 ms, raised to the floor");
        let mut slow = EdgeLoad::default();
        slow.committed(0, 0);
        slow.committed(20_000, 0);
        assert_eq!(slow.retry_after_ms(EDGE_MAX_TXS), MAX_RETRY_MS, "a 20 s block, capped");
    }

    #[test]
    fn past_the_mark_only_a_higher_fee_is_taken() {
        let gauge = EdgeGauge::new();
        let mut load = EdgeLoad::default();
        load.committed(0, 0);
        load.committed(500, 1_000);
        let mark = EDGE_MAX_TXS;
        assert!(mark > 1_000, "a block drains at least a mark's worth");
        gauge.publish(&load, mark - 2, Some(Amount(10)));
        let view = gauge.view();
        assert_eq!(view.admit(0, Amount(10)), Ok(()), "below the mark");
        assert_eq!(view.admit(1, Amount(10)), Ok(()), "the request's second, still below");
        assert!(view.admit(2, Amount(10)).is_err(), "the request's third reaches the mark");
        gauge.publish(&load, mark + 1_500, Some(Amount(10)));
        assert!(view.admit(0, Amount(10)).is_ok(), "a view does not change once read");
        let view = gauge.view();
        assert_eq!(view.admit(0, Amount(10)), Err(Busy { retry_after_ms: 500 }), "a block of 500 ms");
        assert_eq!(view.admit(0, Amount(11)), Ok(()), "outbids the cheapest");
        gauge.publish(&load, mark, None);
        assert!(gauge.view().admit(0, Amount(u64::MAX - 1)).is_err(), "nothing to outbid past the mark");
    }
}
