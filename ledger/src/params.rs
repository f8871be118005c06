//! Chain parameters, fixed at genesis. Every field is a rule all nodes must
//! agree on, so they live in the state and are covered by the state root.

use agora_protocol::Amount;
use agora_protocol::limits::{MAX_TXS_PER_BLOCK, MAX_VALIDATORS};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// How much shorter than `downtime_window_blocks` a downtime evidence window
/// (the stretch all its attestations share) may be: validators see a silence
/// start and end a few blocks apart, so windows of exactly W each overlap on
/// slightly less. Anything shorter is refused, so one set of attestations
/// cannot be split into many short windows.
pub const EVIDENCE_WINDOW_SLACK_BLOCKS: u64 = 5;

/// The shortest downtime evidence window the ledger accepts for a window length `w`.
pub fn min_evidence_window(w: u64) -> u64 {
    w.saturating_sub(EVIDENCE_WINDOW_SLACK_BLOCKS).max(1)
}

/// Basis points in one whole (100%).
pub const BPS_DENOMINATOR: u64 = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Blocks between Unstake and the tokens returning to the balance.
    pub unbonding_blocks: u64,
    /// Stake a provider needs to register, advertise and take leases.
    pub min_provider_stake: Amount,
    /// Share of stake burned for proven downtime, in basis points.
    pub downtime_slash_bps: u64,
    /// Share of stake burned for equivocation, in basis points.
    pub equivocation_slash_bps: u64,
    /// Blocks a provider stays jailed after a downtime slash before it may unjail.
    pub jail_blocks: u64,
    /// Transactions one block may carry (≤ the protocol's hard limit).
    pub max_txs_per_block: u64,
    /// Blocks per validator-set epoch (used by consensus).
    pub epoch_blocks: u64,
    /// Largest validator set (used by consensus).
    pub max_validators: u64,
    /// Shortest silence a downtime attestation may claim, in blocks: every
    /// attestation of a downtime slash must cover at least this many blocks.
    #[serde(default = "default_downtime_window_blocks")]
    pub downtime_window_blocks: u64,
    /// Oldest evidence (downtime window end, heartbeat or vote height) a slash
    /// may carry, in blocks. Unbonding must last longer, or a misbehaving
    /// staker could unbond its stake before the evidence reaches a block.
    #[serde(default = "default_max_evidence_age_blocks")]
    pub max_evidence_age_blocks: u64,
    /// The smallest fee a transaction may pay (to the block's proposer).
    /// Positive, so that nothing a stranger sends is carried for free.
    #[serde(default = "default_min_tx_fee")]
    pub min_tx_fee: Amount,
    /// The exchange's auction schedule and order limits.
    #[serde(default)]
    pub market: MarketParams,
}

/// The exchange's rules (docs/market.md): every class's call auction runs
/// on the same schedule of `auction_blocks` blocks and clears at the end of
/// the last one; in the last `no_cancel_blocks` (the clearing block among
/// them) orders are binding: no cancels, bids may only rise, asks only fall.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketParams {
    pub auction_blocks: u64,
    pub no_cancel_blocks: u64,
    /// Open orders one account may hold, all classes together.
    pub max_open_orders_per_account: u64,
    /// Open orders in one class's book, bids and asks together.
    pub max_open_orders_per_class: u64,
    /// How long a settled lease stays in the state after it settled (ms of
    /// block time); then it is pruned: the blocks that opened and settled
    /// it remain, the live state holds only what may still change.
    #[serde(default = "default_settled_lease_retention_ms")]
    pub settled_lease_retention_ms: u64,
    /// Auctions whose results and spot trades stay in the state; older
    /// ones are pruned (their clearing blocks remain).
    #[serde(default = "default_auction_retention")]
    pub auction_retention: u64,
}

/// About a day of auctions at a block every 2.5 s and 30 blocks an auction.
pub fn default_auction_retention() -> u64 {
    1_000
}

/// A day: time for buyers and explorers to see how a lease ended.
pub fn default_settled_lease_retention_ms() -> u64 {
    86_400_000
}

impl Default for MarketParams {
    /// Short auctions, as testnets want them (30 blocks, 10 binding).
    fn default() -> Self {
        MarketParams {
            auction_blocks: 30,
            no_cancel_blocks: 10,
            max_open_orders_per_account: 16,
            max_open_orders_per_class: 10_000,
            settled_lease_retention_ms: default_settled_lease_retention_ms(),
            auction_retention: default_auction_retention(),
        }
    }
}

/// Where a block falls in its auction period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuctionPhase {
    /// Orders may be placed, amended and cancelled.
    Open,
    /// Orders are binding: bids may only rise, asks only fall; new orders may still be placed.
    NoCancel,
    /// The period's last block: binding, and the auction clears at its end.
    Clearing,
}

impl MarketParams {
    /// The auction a block at `height` belongs to (numbered from 0) and its phase there.
    pub fn phase(&self, height: u64) -> (u64, AuctionPhase) {
        let index = height.saturating_sub(1);
        let (auction, at) = (index / self.auction_blocks, index % self.auction_blocks);
        let phase = if at + 1 == self.auction_blocks {
            AuctionPhase::Clearing
        } else if at + self.no_cancel_blocks >= self.auction_blocks {
            AuctionPhase::NoCancel
        } else {
            AuctionPhase::Open
        };
        (auction, phase)
    }

    /// The height at which auction `auction` clears.
    pub fn clearing_height(&self, auction: u64) -> u64 {
        auction.saturating_add(1).saturating_mul(self.auction_blocks)
    }

    fn validate(&self) -> Result<(), String> {
        if self.auction_blocks < 2 {
            return Err("market.auction_blocks must be at least 2".into());
        }
        if self.no_cancel_blocks == 0 || self.no_cancel_blocks >= self.auction_blocks {
            return Err("market.no_cancel_blocks must be 1 to auction_blocks - 1".into());
        }
        if self.auction_retention == 0 {
            return Err("market.auction_retention must be at least 1".into());
        }
        if self.settled_lease_retention_ms < agora_protocol::limits::MAX_LEASE_REQUEST_TTL_MS {
            return Err(format!(
                "market.settled_lease_retention_ms must be at least {} (a lease request's longest validity)",
                agora_protocol::limits::MAX_LEASE_REQUEST_TTL_MS
            ));
        }
        let most = crate::auction::MAX_ORDERS_PER_SIDE as u64;
        if self.max_open_orders_per_account == 0 || self.max_open_orders_per_class == 0 {
            return Err("market order limits must be positive".into());
        }
        if self.max_open_orders_per_class > most || self.max_open_orders_per_account > self.max_open_orders_per_class {
            return Err(format!(
                "market.max_open_orders_per_class must be at most {most}, and at least max_open_orders_per_account"
            ));
        }
        Ok(())
    }
}

fn default_min_tx_fee() -> Amount {
    DEFAULT_MIN_TX_FEE
}

/// 0.001 AGR: a thousand transactions cost one AGR, negligible to a user.
/// The mempool admits only what the sender's balance can pay, so what it
/// holds gets included and paid for: keeping every mempool full (10,000
/// transactions a block or two) costs an attacker 10 AGR each time, paid to
/// validators.
pub const DEFAULT_MIN_TX_FEE: Amount = Amount(1_000);

fn default_downtime_window_blocks() -> u64 {
    20
}

fn default_max_evidence_age_blocks() -> u64 {
    50
}

impl Default for Params {
    fn default() -> Self {
        Params {
            unbonding_blocks: 100,
            min_provider_stake: Amount::agr(100),
            downtime_slash_bps: 100,
            equivocation_slash_bps: 500,
            jail_blocks: 50,
            max_txs_per_block: MAX_TXS_PER_BLOCK as u64,
            epoch_blocks: 100,
            max_validators: 21,
            downtime_window_blocks: default_downtime_window_blocks(),
            max_evidence_age_blocks: default_max_evidence_age_blocks(),
            min_tx_fee: default_min_tx_fee(),
            market: MarketParams::default(),
        }
    }
}

impl Params {
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |reason: &str| Err(Error::Genesis(format!("params: {reason}")));
        if self.downtime_slash_bps > BPS_DENOMINATOR || self.equivocation_slash_bps > BPS_DENOMINATOR {
            return bad("slash fractions must be at most 10000 basis points");
        }
        if self.max_txs_per_block == 0 || self.max_txs_per_block > MAX_TXS_PER_BLOCK as u64 {
            return bad("max_txs_per_block must be 1 to 5000");
        }
        if self.max_validators == 0 || self.max_validators > MAX_VALIDATORS as u64 {
            return bad("max_validators must be 1 to 100");
        }
        if self.downtime_window_blocks == 0 {
            return bad("downtime_window_blocks must be positive");
        }
        if self.min_tx_fee.is_zero() {
            return bad("min_tx_fee must be positive: a free transaction lets anyone fill every mempool");
        }
        if self.epoch_blocks == 0 {
            return bad("epoch_blocks must be positive");
        }
        if self.max_evidence_age_blocks == 0 || self.unbonding_blocks <= self.max_evidence_age_blocks {
            return bad(
                "unbonding_blocks must exceed max_evidence_age_blocks (> 0): stake must still be there when evidence arrives",
            );
        }
        self.market.validate().map_err(|e| Error::Genesis(format!("params: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auctions_run_open_then_binding_then_clear() {
        let m = MarketParams { auction_blocks: 5, no_cancel_blocks: 2, ..MarketParams::default() };
        let phases: Vec<(u64, AuctionPhase)> = (1..=6).map(|h| m.phase(h)).collect();
        use AuctionPhase::*;
        assert_eq!(
            phases,
            vec![(0, Open), (0, Open), (0, Open), (0, NoCancel), (0, Clearing), (1, Open)],
            "blocks 1-5 are auction 0, clearing at 5"
        );
        assert_eq!(m.clearing_height(0), 5);
        assert_eq!(m.clearing_height(1), 10);
        assert_eq!(m.phase(10), (1, Clearing));
        let mut p = Params::default();
        p.validate().unwrap();
        p.market.no_cancel_blocks = p.market.auction_blocks;
        assert!(p.validate().is_err(), "an auction must have an open phase");
        p.market = MarketParams { auction_blocks: 1, no_cancel_blocks: 1, ..MarketParams::default() };
        assert!(p.validate().is_err());
        p.market = MarketParams { max_open_orders_per_account: 0, ..MarketParams::default() };
        assert!(p.validate().is_err());
    }
}
