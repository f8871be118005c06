//! What a block did, as a list of events: the node indexes them for queries
//! and the CLI prints them. Events are outputs only; the state never reads them.

use agora_protocol::{Address, Amount, GpuClass, Height, LeaseId};
use serde::{Deserialize, Serialize};

/// Why a lease's escrow was settled.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SettleReason {
    /// The provider reported the job finished.
    Closed,
    /// A party stopped it early.
    Cancelled,
    /// Its paid time ran out.
    Expired,
    /// Its provider was slashed and jailed.
    ProviderSlashed,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlashReason {
    Downtime { window_start: Height, window_end: Height },
    Equivocation,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    OrderPlaced {
        order: u64,
        owner: Address,
        class: GpuClass,
        side: crate::state::Side,
        price: Amount,
    },
    OrderCancelled {
        order: u64,
        owner: Address,
        refunded: Amount,
    },
    OrderAmended {
        order: u64,
        price: Amount,
    },
    /// An order left the book at its auction's clearing: `filled` went into
    /// leases (bids), `refunded` back to the owner.
    OrderClosed {
        order: u64,
        owner: Address,
        filled: Amount,
        refunded: Amount,
    },
    AuctionCleared(Box<crate::clearing::AuctionResult>),
    /// A lease changed holder (sold for `price`, or given).
    LeaseTransferred {
        lease_id: LeaseId,
        from: Address,
        to: Address,
        price: Option<Amount>,
    },
    LeaseListed {
        lease_id: LeaseId,
        seller: Address,
        price: Option<Amount>,
    },
    /// The holder bought more time: the lease now ends at `end_ms`.
    LeaseExtended {
        lease_id: LeaseId,
        hours: u32,
        cost: Amount,
        end_ms: agora_protocol::TimestampMs,
    },
    /// A class's auction could not clear; its orders stay for the next.
    AuctionSkipped {
        auction: u64,
        class: GpuClass,
        reason: String,
    },
    Transferred {
        from: Address,
        to: Address,
        amount: Amount,
    },
    Staked {
        account: Address,
        amount: Amount,
    },
    UnbondingStarted {
        account: Address,
        amount: Amount,
        release_height: Height,
    },
    UnbondingReleased {
        account: Address,
        amount: Amount,
    },
    ProviderRegistered {
        provider: Address,
    },
    LeaseOpened {
        lease_id: LeaseId,
        buyer: Address,
        provider: Address,
        escrow: Amount,
    },
    LeaseSettled {
        lease_id: LeaseId,
        reason: SettleReason,
        paid: Amount,
        refunded: Amount,
    },
    Slashed {
        account: Address,
        burned: Amount,
        reason: SlashReason,
    },
    Jailed {
        provider: Address,
        until: Option<Height>,
    },
    Unjailed {
        provider: Address,
    },
    /// An account named (or withdrew, `None`) the key that runs its provider node.
    OperatorSet {
        account: Address,
        operator: Option<Address>,
    },
    /// The block's transaction fees, paid to its proposer.
    FeesPaid {
        proposer: Address,
        amount: Amount,
    },
    /// The validator set for the heights after this block: (address, power).
    ValidatorSetChanged {
        validators: Vec<(Address, u64)>,
    },
}
