//! Consensus messages on the wire: prevotes and precommits, proposals (which
//! name a block by hash) and the proposed block itself, each signed by the
//! validator that sends it under its own domain tag.

use serde::{Deserialize, Serialize};

use crate::block::Block;
use crate::codec::Wire;
use crate::ids::{Hash, Height};
use crate::limits::{MAX_BLOCK_BYTES, MAX_CONSENSUS_MSG_BYTES};
use crate::sign::{Domain, Signed};

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum VoteKind {
    Prevote,
    Precommit,
}

/// A Tendermint vote; the signer is the voting validator. `block` is `None`
/// for a nil vote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub kind: VoteKind,
    pub height: Height,
    pub round: u32,
    pub block: Option<Hash>,
}

/// A proposal for a block at a height and round; the signer is the proposer.
/// `pol_round` is the round of the proof-of-lock when re-proposing a block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub height: Height,
    pub round: u32,
    pub block: Hash,
    pub pol_round: Option<u32>,
}

/// The full block a proposal names, sent alongside it; the signer is the
/// proposer of that round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalBlock {
    pub round: u32,
    pub pol_round: Option<u32>,
    pub block: Block,
}

crate::signed_wire_type!(Vote, Domain::Vote, "vote", MAX_CONSENSUS_MSG_BYTES);
crate::signed_wire_type!(Proposal, Domain::Proposal, "proposal", MAX_CONSENSUS_MSG_BYTES);
crate::signed_wire_type!(ProposalBlock, Domain::ProposalBlock, "proposal block", MAX_BLOCK_BYTES + 1024);

/// Every consensus message, as gossiped on the consensus topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsensusMessage {
    Vote(Signed<Vote>),
    Proposal(Signed<Proposal>),
    Block(Box<Signed<ProposalBlock>>),
}

impl ConsensusMessage {
    pub fn height(&self) -> Height {
        match self {
            ConsensusMessage::Vote(v) => v.body.height,
            ConsensusMessage::Proposal(p) => p.body.height,
            ConsensusMessage::Block(b) => b.body.block.header.height,
        }
    }
}

impl Wire for ConsensusMessage {
    const NAME: &'static str = "consensus message";
    const VERSION: u8 = 1;
    const MAX_BYTES: usize = MAX_BLOCK_BYTES + 2048;
}
