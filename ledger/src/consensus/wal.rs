//! The consensus write-ahead log's entries. Malachite asks its host to append
//! every input that changes what this node may sign (votes, proposals,
//! proposed values, certificates, elapsed timeouts) before acting on it; after
//! a crash the entries of the current height are replayed, so the node re-signs
//! exactly what it signed before and never two different votes for one round.

use std::time::Duration;

use agora_protocol::codec::Wire;
use agora_protocol::consensus::{ConsensusMessage, Proposal, Vote, VoteCertificate};
use agora_protocol::limits::MAX_CONSENSUS_MSG_BYTES;
use agora_protocol::{Address, Hash, Height, Signed};
use malachite_core_consensus::{self as mcc, ProposedValue};
use malachite_core_types::{SignedMessage, Timeout, TimeoutKind, Validity, ValueOrigin};
use serde::{Deserialize, Serialize};

use super::context::{
    AgoraContext, BlockValue, ConsensusHeight, ConsensusProposal, ConsensusVote, ValidatorAddress, pol_round_of,
    round_of,
};

type McInput = mcc::Input<AgoraContext>;

/// A timeout, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalTimeout {
    Propose,
    Prevote,
    Precommit,
    Rebroadcast,
    FinalizeHeight { millis: u64 },
}

/// One write-ahead-log record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalEntry {
    Vote(Signed<Vote>),
    Proposal(Signed<Proposal>),
    ProposedValue { round: u32, valid_round: Option<u32>, proposer: Address, block: Hash, valid: bool, from_sync: bool },
    Certificate(VoteCertificate),
    TimeoutElapsed { round: u32, kind: WalTimeout },
}

impl Wire for WalEntry {
    const NAME: &'static str = "wal entry";
    const VERSION: u8 = 1;
    /// A certificate of up to 100 votes is the largest entry.
    const MAX_BYTES: usize = 100 * 200 + MAX_CONSENSUS_MSG_BYTES;
}

impl WalEntry {
    /// The stored form of a Malachite input; `None` for inputs that are never logged.
    pub(crate) fn from_input(input: &McInput) -> Option<WalEntry> {
        Some(match input {
            McInput::Vote(v) => WalEntry::Vote(v.message.to_wire(v.signature)),
            McInput::Proposal(p) => WalEntry::Proposal(p.message.to_wire(p.signature)),
            McInput::ProposedValue(pv, origin) => WalEntry::ProposedValue {
                round: pv.round.as_u32()?,
                valid_round: pv.valid_round.as_u32(),
                proposer: pv.proposer.0,
                block: pv.value.0,
                valid: pv.validity.is_valid(),
                from_sync: origin.is_sync(),
            },
            McInput::PolkaCertificate(c) => WalEntry::Certificate(super::engine::polka_to_wire(c)),
            McInput::RoundCertificate(c) => WalEntry::Certificate(super::engine::round_to_wire(c)),
            McInput::TimeoutElapsed(t) => WalEntry::TimeoutElapsed {
                round: t.round.as_u32()?,
                kind: match t.kind {
                    TimeoutKind::Propose => WalTimeout::Propose,
                    TimeoutKind::Prevote => WalTimeout::Prevote,
                    TimeoutKind::Precommit => WalTimeout::Precommit,
                    TimeoutKind::Rebroadcast => WalTimeout::Rebroadcast,
                    TimeoutKind::FinalizeHeight(d) => WalTimeout::FinalizeHeight { millis: d.as_millis() as u64 },
                },
            },
            McInput::StartHeight(..) | McInput::Propose(_) | McInput::SyncValueResponse(_) => return None,
        })
    }

    /// The Malachite input to replay for this entry at `height`.
    pub(crate) fn to_input(&self, height: Height) -> McInput {
        match self {
            WalEntry::Vote(v) => {
                McInput::Vote(SignedMessage::new(ConsensusVote::new(v.body.clone(), v.signer), v.signature))
            }
            WalEntry::Proposal(p) => {
                McInput::Proposal(SignedMessage::new(ConsensusProposal::new(p.body.clone(), p.signer), p.signature))
            }
            WalEntry::ProposedValue { round, valid_round, proposer, block, valid, from_sync } => {
                McInput::ProposedValue(
                    ProposedValue {
                        height: ConsensusHeight(height.0),
                        round: round_of(*round),
                        valid_round: pol_round_of(*valid_round),
                        proposer: ValidatorAddress(*proposer),
                        value: BlockValue(*block),
                        validity: Validity::from_bool(*valid),
                    },
                    if *from_sync { ValueOrigin::Sync } else { ValueOrigin::Consensus },
                )
            }
            WalEntry::Certificate(c) => super::engine::certificate_input(c.clone()),
            WalEntry::TimeoutElapsed { round, kind } => McInput::TimeoutElapsed(Timeout::new(
                round_of(*round),
                match kind {
                    WalTimeout::Propose => TimeoutKind::Propose,
                    WalTimeout::Prevote => TimeoutKind::Prevote,
                    WalTimeout::Precommit => TimeoutKind::Precommit,
                    WalTimeout::Rebroadcast => TimeoutKind::Rebroadcast,
                    WalTimeout::FinalizeHeight { millis } => {
                        TimeoutKind::FinalizeHeight(Duration::from_millis(*millis))
                    }
                },
            )),
        }
    }

    /// The consensus message this entry carries, if any (for re-gossip).
    pub fn message(&self) -> Option<ConsensusMessage> {
        match self {
            WalEntry::Vote(v) => Some(ConsensusMessage::Vote(v.clone())),
            WalEntry::Proposal(p) => Some(ConsensusMessage::Proposal(p.clone())),
            _ => None,
        }
    }
}
