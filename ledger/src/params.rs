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
        Ok(())
    }
}
