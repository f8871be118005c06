//! Consensus messages on the wire: prevotes and precommits, proposals (which
//! name a block by hash) and the proposed block itself, each signed by the
//! validator that sends it under its own domain tag.

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::block::Block;
use crate::codec::Wire;
use crate::ids::{Hash, Height};
use crate::keys::Signature;
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

/// One validator's signed vote inside a certificate (the vote's height and
/// round are the certificate's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertSig {
    pub validator: Address,
    pub kind: VoteKind,
    pub block: Option<Hash>,
    pub signature: Signature,
}

/// Why a round certificate lets a node move to its round.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoundCertKind {
    /// More than 1/3 of power is already in this round.
    Skip,
    /// More than 2/3 of power precommitted in this round.
    Precommit,
}

/// A bundle of votes for one height and round, re-gossiped so that a node
/// that missed the individual votes can still follow (liveness under loss).
/// Each signature is checked as the vote it stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteCertificate {
    pub height: Height,
    pub round: u32,
    /// `Some` for a round certificate; `None` for a polka (prevotes for one block).
    pub round_kind: Option<RoundCertKind>,
    pub votes: Vec<CertSig>,
}

/// Every consensus message, as gossiped on the consensus topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsensusMessage {
    Vote(Signed<Vote>),
    Proposal(Signed<Proposal>),
    Block(Box<Signed<ProposalBlock>>),
    Certificate(VoteCertificate),
}

impl ConsensusMessage {
    pub fn height(&self) -> Height {
        match self {
            ConsensusMessage::Vote(v) => v.body.height,
            ConsensusMessage::Proposal(p) => p.body.height,
            ConsensusMessage::Block(b) => b.body.block.header.height,
            ConsensusMessage::Certificate(c) => c.height,
        }
    }
}

impl Wire for ConsensusMessage {
    const NAME: &'static str = "consensus message";
    const VERSION: u8 = 1;
    const MAX_BYTES: usize = MAX_BLOCK_BYTES + 2048;
}

/// A consensus message sent again (`agora/consensus-repeat/1`): a vote
/// re-sent after a stalled round, a proposal streamed again. Gossip ids are
/// content hashes (gossip messages carry no publisher signature), so the
/// same bytes again would be a duplicate; the sender's fresh `nonce` makes
/// the repeat a new message. Receivers limit how often they forward repeats
/// of one message (anyone can wrap copies).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusRepeat {
    pub nonce: u64,
    pub message: ConsensusMessage,
}

impl Wire for ConsensusRepeat {
    const NAME: &'static str = "consensus repeat";
    const VERSION: u8 = 1;
    const MAX_BYTES: usize = ConsensusMessage::MAX_BYTES + 16;
}
