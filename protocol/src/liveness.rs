//! Liveness messages: a provider's signed heartbeat, a validator's signed
//! downtime attestation, and the evidence objects the ledger slashes on.

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::ids::{Hash, Height};
use crate::limits::*;
use crate::sign::{Domain, Signed};

/// "I am up", signed by a provider. Naming a recent block makes it impossible
/// to produce in advance or replay later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Strictly increasing per provider; two different heartbeats with one
    /// sequence number are equivocation.
    pub seq: u64,
    pub height: Height,
    pub block_hash: Hash,
}

crate::signed_wire_type!(Heartbeat, Domain::Heartbeat, "heartbeat", MAX_LIVENESS_MSG_BYTES);

/// "This provider was down over these blocks", signed by a validator after its
/// own probe failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DowntimeAttestation {
    pub provider: Address,
    pub window_start: Height,
    pub window_end: Height,
}

crate::signed_wire_type!(
    DowntimeAttestation,
    Domain::DowntimeAttestation,
    "downtime attestation",
    MAX_LIVENESS_MSG_BYTES
);

/// Attestations from validators for one provider and window; the ledger
/// slashes when their signers hold more than 2/3 of the voting power.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DowntimeEvidence {
    pub provider: Address,
    pub window_start: Height,
    pub window_end: Height,
    /// At most `MAX_VALIDATORS`, each from a distinct validator.
    pub attestations: Vec<Signed<DowntimeAttestation>>,
}

/// Two conflicting statements signed by the same key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EquivocationEvidence {
    /// Two different heartbeats with the same sequence number.
    Heartbeats { first: Signed<Heartbeat>, second: Signed<Heartbeat> },
    /// Two different consensus votes by one validator for the same height,
    /// round and step.
    Votes { first: Signed<crate::consensus::Vote>, second: Signed<crate::consensus::Vote> },
}

impl EquivocationEvidence {
    /// The key that equivocated.
    pub fn offender(&self) -> Address {
        match self {
            EquivocationEvidence::Heartbeats { first, .. } => first.signer,
            EquivocationEvidence::Votes { first, .. } => first.signer,
        }
    }
}
