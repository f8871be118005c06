//! Transactions: what an account asks the ledger to do. Signed by the sender,
//! ordered by the sender's nonce; the ledger crate holds their rules.

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::amount::Amount;
use crate::class::GpuClass;
use crate::codec::{self, Wire};
use crate::error::Error;
use crate::ids::{Hash, LeaseId};
use crate::limits::*;
use crate::liveness::{DowntimeEvidence, EquivocationEvidence};
use crate::market::{GpuSpec, LeaseAccept, LeaseRequest, validate_gpus, validate_region};
use crate::sign::{Domain, Signed};

/// A transaction body; the signer of the enclosing `Signed` is the sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// Must equal the sender's account nonce; stops replay within a chain.
    pub nonce: u64,
    /// Paid by the sender to the proposer of the block that includes the
    /// transaction; at least the chain's `min_tx_fee`. Makes every byte a
    /// stranger asks the network to carry cost something, and orders the
    /// mempool (higher fee first, then arrival).
    pub fee: Amount,
    pub kind: TxKind,
}

/// Every operation the ledger knows. Never reorder or remove variants: the
/// variant index is part of the encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxKind {
    Transfer {
        to: Address,
        amount: Amount,
    },
    Stake {
        amount: Amount,
    },
    /// Moves stake to unbonding; released after the unbonding period.
    Unstake {
        amount: Amount,
    },
    RegisterProvider {
        region: String,
        gpus: Vec<GpuSpec>,
    },
    /// Sent by either party once the provider has countersigned.
    OpenLease {
        request: Signed<LeaseRequest>,
        accept: Signed<LeaseAccept>,
    },
    /// The provider reports the job ended; settles pro-rata.
    CloseLease {
        lease_id: LeaseId,
        exit_code: Option<i32>,
    },
    /// Either party stops the lease early; settles pro-rata.
    CancelLease {
        lease_id: LeaseId,
    },
    SlashDowntime {
        evidence: DowntimeEvidence,
    },
    SlashEquivocation {
        evidence: EquivocationEvidence,
    },
    Unjail,
    /// An account names the key that runs its provider node (or, with
    /// `None`, withdraws it). The operator may sign the provider's offers,
    /// heartbeats and lease answers, register its GPUs and close its leases;
    /// never move its tokens, stake, unjail or change the operator.
    SetOperator {
        operator: Option<Address>,
    },
    /// A buyer's bid in a class's call auction: `gpus` GPUs on one host
    /// (several if `split`) for `hours` hours starting `start_hours` after
    /// the clearing, at no more than `max_price` per GPU-hour. Escrows its
    /// maximum cost until it is filled or cancelled.
    PlaceBid {
        class: GpuClass,
        gpus: u32,
        hours: u32,
        max_price: Amount,
        split: bool,
        start_hours: u32,
    },
    /// A provider's ask (sent by it or its operator): `gpus` GPUs of one
    /// host for up to `hours` hours at no less than `min_price` per GPU-hour.
    PlaceAsk {
        class: GpuClass,
        gpus: u32,
        hours: u32,
        min_price: Amount,
    },
    /// Withdraws an open order (not in an auction's binding phase); a bid's escrow comes back.
    CancelOrder {
        order: u64,
    },
    /// Changes an open order's price (in the binding phase, bids only up and asks only down).
    AmendOrder {
        order: u64,
        price: Amount,
    },
    /// The holder of an open lease (its buyer) gives it to another account,
    /// which then holds the GPU time and receives any refund.
    TransferLease {
        lease_id: LeaseId,
        to: Address,
    },
    /// The holder offers its open lease for sale at `price` (None: withdraws the listing).
    ListLease {
        lease_id: LeaseId,
        price: Option<Amount>,
    },
    /// Buys a listed lease: pays the seller its price (at most `max_price`)
    /// and becomes the holder, in one step.
    BuyLease {
        lease_id: LeaseId,
        max_price: Amount,
    },
    /// The holder buys `hours` more of an open lease at its price, paying
    /// at most `max_cost` (into the escrow) before the paid time runs out.
    ExtendLease {
        lease_id: LeaseId,
        hours: u32,
        max_cost: Amount,
    },
}

impl TxKind {
    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            TxKind::Transfer { .. } => "transfer",
            TxKind::Stake { .. } => "stake",
            TxKind::Unstake { .. } => "unstake",
            TxKind::RegisterProvider { .. } => "register-provider",
            TxKind::OpenLease { .. } => "open-lease",
            TxKind::CloseLease { .. } => "close-lease",
            TxKind::CancelLease { .. } => "cancel-lease",
            TxKind::SlashDowntime { .. } => "slash-downtime",
            TxKind::SlashEquivocation { .. } => "slash-equivocation",
            TxKind::Unjail => "unjail",
            TxKind::SetOperator { .. } => "set-operator",
            TxKind::PlaceBid { .. } => "place-bid",
            TxKind::PlaceAsk { .. } => "place-ask",
            TxKind::CancelOrder { .. } => "cancel-order",
            TxKind::AmendOrder { .. } => "amend-order",
            TxKind::TransferLease { .. } => "transfer-lease",
            TxKind::ListLease { .. } => "list-lease",
            TxKind::BuyLease { .. } => "buy-lease",
            TxKind::ExtendLease { .. } => "extend-lease",
        }
    }
}

impl Transaction {
    /// What the sender's balance must cover for this transaction at least:
    /// the fee plus tokens it moves out of the balance by itself (transfer,
    /// stake, a bid's escrow). Lease escrow and a bid amendment's extra
    /// escrow depend on state and are checked when they apply.
    pub fn upfront_cost(&self) -> u128 {
        let moved = match &self.kind {
            TxKind::Transfer { amount, .. } | TxKind::Stake { amount } => u128::from(amount.0),
            TxKind::PlaceBid { gpus, hours, max_price, .. } => {
                u128::from(max_price.0) * u128::from(*gpus) * u128::from(*hours)
            }
            TxKind::BuyLease { max_price, .. } => u128::from(max_price.0),
            TxKind::ExtendLease { max_cost, .. } => u128::from(max_cost.0),
            _ => 0,
        };
        u128::from(self.fee.0) + moved
    }

    /// Checks that need no state: bounded lists and strings, non-zero amounts.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: &str| Err(Error::Invalid { what: "transaction", reason: reason.to_string() });
        if let TxKind::PlaceBid { hours, start_hours, .. } = &self.kind
            && hours.saturating_add(*start_hours) > MAX_CONTRACT_HOURS
        {
            return invalid("a contract starts and ends within 720 hours of its auction");
        }
        match &self.kind {
            TxKind::Transfer { amount, .. } | TxKind::Stake { amount } | TxKind::Unstake { amount } => {
                if amount.is_zero() {
                    return invalid("amount must be positive");
                }
            }
            TxKind::RegisterProvider { region, gpus } => {
                validate_region(region)?;
                validate_gpus(gpus)?;
            }
            TxKind::OpenLease { request, accept } => {
                request.body.validate()?;
                accept.body.validate()?;
            }
            TxKind::SlashDowntime { evidence } => {
                if evidence.attestations.is_empty() || evidence.attestations.len() > MAX_VALIDATORS {
                    return invalid("downtime evidence must carry 1 to 100 attestations");
                }
                if evidence.window_start > evidence.window_end {
                    return invalid("downtime window ends before it starts");
                }
            }
            TxKind::PlaceBid { gpus, hours, max_price: price, .. }
            | TxKind::PlaceAsk { gpus, hours, min_price: price, .. } => {
                if *gpus == 0 || *gpus > MAX_GPUS_PER_ORDER {
                    return invalid("an order is for 1 to 64 GPUs");
                }
                if *hours == 0 || *hours > MAX_CONTRACT_HOURS {
                    return invalid("an order is for 1 to 720 hours");
                }
                if price.is_zero() {
                    return invalid("an order's price must be positive");
                }
            }
            TxKind::ExtendLease { hours, .. } => {
                if *hours == 0 || *hours > MAX_CONTRACT_HOURS {
                    return invalid("an extension is for 1 to 720 hours");
                }
            }
            TxKind::ListLease { price: Some(price), .. } | TxKind::AmendOrder { price, .. } => {
                if price.is_zero() {
                    return invalid("an order's price must be positive");
                }
            }
            TxKind::CancelOrder { .. }
            | TxKind::TransferLease { .. }
            | TxKind::ListLease { price: None, .. }
            | TxKind::BuyLease { .. }
            | TxKind::CloseLease { .. }
            | TxKind::CancelLease { .. }
            | TxKind::SlashEquivocation { .. }
            | TxKind::SetOperator { .. }
            | TxKind::Unjail => {}
        }
        Ok(())
    }
}

/// A transaction as it travels and as blocks hold it.
pub type SignedTx = Signed<Transaction>;

crate::signed_wire_type!(Transaction, Domain::Transaction, "transaction", MAX_TX_BYTES);

/// Transactions gossiped together (`agora/txs/2`): gossipsub signs and
/// checks each message, so one message per transaction cost every node an
/// Ed25519 check per transaction on top of the transaction's own; a
/// bundle pays that once for up to `MAX_TXS_PER_BUNDLE`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxBundle {
    pub txs: Vec<SignedTx>,
}

impl Wire for TxBundle {
    const NAME: &'static str = "transaction bundle";
    const VERSION: u8 = 1;
    const MAX_BYTES: usize = MAX_TX_BUNDLE_BYTES;
}

impl TxBundle {
    /// Decodes a bundle and checks its count: at least one transaction, at
    /// most `MAX_TXS_PER_BUNDLE`.
    pub fn decode_checked(bytes: &[u8]) -> Result<TxBundle, Error> {
        let bundle: TxBundle = codec::decode(bytes)?;
        if bundle.txs.is_empty() || bundle.txs.len() > MAX_TXS_PER_BUNDLE {
            return Err(Error::Invalid {
                what: "transaction bundle",
                reason: format!("carries 1 to {MAX_TXS_PER_BUNDLE} transactions, not {}", bundle.txs.len()),
            });
        }
        Ok(bundle)
    }
}

impl SignedTx {
    /// The transaction's id: a hash of its full encoding, signature included.
    pub fn hash(&self) -> Result<Hash, Error> {
        Ok(Hash::tagged(b"agora/tx-hash/1", &codec::encode(self)?))
    }
}
