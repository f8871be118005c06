//! agora's Malachite `Context`: the types Malachite's Tendermint core is
//! generic over. They wrap the protocol's wire types (votes, proposals,
//! blocks named by hash) so the rest of the code never sees Malachite's.

use std::fmt;

use agora_protocol::consensus::{Proposal as WireProposal, ProposalBlock, Vote as WireVote, VoteKind};
use agora_protocol::{Address, Hash, Height as LedgerHeight, Keypair, Signature, Signed};
use malachite_core_types::{self as mc, LinearTimeouts, NilOrVal, Round, SignedExtension, VoteType, VotingPower};

/// A height as Malachite sees it (same number as the ledger's `Height`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConsensusHeight(pub u64);

impl fmt::Display for ConsensusHeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl mc::Height for ConsensusHeight {
    const ZERO: Self = ConsensusHeight(0);
    const INITIAL: Self = ConsensusHeight(1);

    fn increment_by(&self, n: u64) -> Self {
        ConsensusHeight(self.0.saturating_add(n))
    }
    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(ConsensusHeight)
    }
    fn as_u64(&self) -> u64 {
        self.0
    }
}

impl From<ConsensusHeight> for LedgerHeight {
    fn from(h: ConsensusHeight) -> Self {
        LedgerHeight(h.0)
    }
}

/// A validator's account address, as Malachite's address type.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValidatorAddress(pub Address);

impl fmt::Display for ValidatorAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl mc::Address for ValidatorAddress {}

/// The value consensus decides on: a block, named by its hash. The block
/// itself travels as a `ProposalBlock`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlockValue(pub Hash);

impl mc::Value for BlockValue {
    type Id = Hash;
    fn id(&self) -> Hash {
        self.0
    }
}

/// ed25519 through agora's domain-separated signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ed25519;

impl mc::SigningScheme for Ed25519 {
    type DecodingError = agora_protocol::Error;
    type Signature = Signature;
    type PublicKey = Address;
    type PrivateKey = Keypair;

    fn decode_signature(bytes: &[u8]) -> Result<Signature, Self::DecodingError> {
        fixed_bytes("signature", bytes).map(Signature)
    }
    fn encode_signature(signature: &Signature) -> Vec<u8> {
        signature.0.to_vec()
    }
    fn decode_public_key(bytes: &[u8]) -> Result<Address, Self::DecodingError> {
        fixed_bytes("public key", bytes).map(Address)
    }
    fn encode_public_key(key: &Address) -> Vec<u8> {
        key.0.to_vec()
    }
}

fn fixed_bytes<const N: usize>(what: &'static str, bytes: &[u8]) -> Result<[u8; N], agora_protocol::Error> {
    bytes
        .try_into()
        .map_err(|_| agora_protocol::Error::Invalid { what, reason: format!("{} bytes, expected {N}", bytes.len()) })
}

/// A vote as Malachite handles it: the wire vote plus its voter and the
/// block id in Malachite's `NilOrVal` form (derived, kept for `value()`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsensusVote {
    pub vote: WireVote,
    pub validator: ValidatorAddress,
    value: NilOrVal<Hash>,
}

impl ConsensusVote {
    pub fn new(vote: WireVote, validator: Address) -> ConsensusVote {
        let value = vote.block.map_or(NilOrVal::Nil, NilOrVal::Val);
        ConsensusVote { vote, validator: ValidatorAddress(validator), value }
    }

    /// The signed wire form of this vote.
    pub fn to_wire(&self, signature: Signature) -> Signed<WireVote> {
        Signed { body: self.vote.clone(), signer: self.validator.0, signature }
    }
}

fn round_u32(round: Round) -> u32 {
    // Votes and proposals are only created for defined rounds.
    round.as_u32().unwrap_or(0)
}

/// A wire round number as Malachite's round.
pub fn round_of(r: u32) -> Round {
    Round::new(r)
}

/// An optional wire round (a proof-of-lock round) as Malachite's round.
pub fn pol_round_of(r: Option<u32>) -> Round {
    r.map_or(Round::Nil, Round::new)
}

impl mc::Vote<AgoraContext> for ConsensusVote {
    fn height(&self) -> ConsensusHeight {
        ConsensusHeight(self.vote.height.0)
    }
    fn round(&self) -> Round {
        round_of(self.vote.round)
    }
    fn value(&self) -> &NilOrVal<Hash> {
        &self.value
    }
    fn take_value(self) -> NilOrVal<Hash> {
        self.value
    }
    fn vote_type(&self) -> VoteType {
        match self.vote.kind {
            VoteKind::Prevote => VoteType::Prevote,
            VoteKind::Precommit => VoteType::Precommit,
        }
    }
    fn validator_address(&self) -> &ValidatorAddress {
        &self.validator
    }
    fn extension(&self) -> Option<&SignedExtension<AgoraContext>> {
        None
    }
    fn take_extension(&mut self) -> Option<SignedExtension<AgoraContext>> {
        None
    }
    fn extend(self, _extension: SignedExtension<AgoraContext>) -> Self {
        // Vote extensions are disabled for agora (policy `Disabled`).
        self
    }
}

/// A proposal as Malachite handles it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsensusProposal {
    pub proposal: WireProposal,
    pub proposer: ValidatorAddress,
    value: BlockValue,
}

impl ConsensusProposal {
    pub fn new(proposal: WireProposal, proposer: Address) -> ConsensusProposal {
        let value = BlockValue(proposal.block);
        ConsensusProposal { proposal, proposer: ValidatorAddress(proposer), value }
    }

    pub fn to_wire(&self, signature: Signature) -> Signed<WireProposal> {
        Signed { body: self.proposal.clone(), signer: self.proposer.0, signature }
    }
}

impl mc::Proposal<AgoraContext> for ConsensusProposal {
    fn height(&self) -> ConsensusHeight {
        ConsensusHeight(self.proposal.height.0)
    }
    fn round(&self) -> Round {
        round_of(self.proposal.round)
    }
    fn value(&self) -> &BlockValue {
        &self.value
    }
    fn take_value(self) -> BlockValue {
        self.value
    }
    fn pol_round(&self) -> Round {
        pol_round_of(self.proposal.pol_round)
    }
    fn validator_address(&self) -> &ValidatorAddress {
        &self.proposer
    }
}

/// Proposal parts are not streamed through Malachite: the whole block
/// travels as one `ProposalBlock`, which is also the (single) part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockPart(pub Box<ProposalBlock>);

impl mc::ProposalPart<AgoraContext> for BlockPart {
    fn is_first(&self) -> bool {
        true
    }
    fn is_last(&self) -> bool {
        true
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsensusValidator {
    pub address: ValidatorAddress,
    pub public_key: Address,
    pub power: VotingPower,
}

impl mc::Validator<AgoraContext> for ConsensusValidator {
    fn address(&self) -> &ValidatorAddress {
        &self.address
    }
    fn public_key(&self) -> &Address {
        &self.public_key
    }
    fn voting_power(&self) -> VotingPower {
        self.power
    }
}

/// The validators of one height, sorted by address (a canonical order every
/// node agrees on), with their total power.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsensusValidatorSet {
    validators: Vec<ConsensusValidator>,
    total: VotingPower,
}

impl ConsensusValidatorSet {
    /// From (address, power) pairs; zero-power entries are dropped.
    pub fn new(members: impl IntoIterator<Item = (Address, u64)>) -> ConsensusValidatorSet {
        let mut validators: Vec<ConsensusValidator> = members
            .into_iter()
            .filter(|(_, p)| *p > 0)
            .map(|(a, power)| ConsensusValidator { address: ValidatorAddress(a), public_key: a, power })
            .collect();
        validators.sort_by_key(|v| v.address);
        validators.dedup_by_key(|v| v.address);
        let total = validators.iter().map(|v| v.power).fold(0u64, u64::saturating_add);
        ConsensusValidatorSet { validators, total }
    }

    pub fn from_state(state: &crate::State) -> ConsensusValidatorSet {
        ConsensusValidatorSet::new(state.validators().iter().map(|v| (v.address, v.power)))
    }

    pub fn validators(&self) -> &[ConsensusValidator] {
        &self.validators
    }
}

impl mc::ValidatorSet<AgoraContext> for ConsensusValidatorSet {
    fn count(&self) -> usize {
        self.validators.len()
    }
    fn total_voting_power(&self) -> VotingPower {
        self.total
    }
    fn get_by_address(&self, address: &ValidatorAddress) -> Option<&ConsensusValidator> {
        self.validators.binary_search_by_key(address, |v| v.address).ok().map(|i| &self.validators[i])
    }
    fn get_by_index(&self, index: usize) -> Option<&ConsensusValidator> {
        self.validators.get(index)
    }
}

/// agora's consensus context. Stateless: everything it decides is a pure
/// function of its arguments.
#[derive(Clone, Debug, Default)]
pub struct AgoraContext;

impl mc::Context for AgoraContext {
    type Address = ValidatorAddress;
    type Height = ConsensusHeight;
    type ProposalPart = BlockPart;
    type Proposal = ConsensusProposal;
    type Validator = ConsensusValidator;
    type ValidatorSet = ConsensusValidatorSet;
    type Timeouts = LinearTimeouts;
    type Value = BlockValue;
    type Vote = ConsensusVote;
    type Extension = ();
    type SigningScheme = Ed25519;

    /// Proposers rotate in proportion to power: a hash of (height, round)
    /// picks a point in [0, total power) and the validator owning it proposes.
    fn select_proposer<'a>(
        &self,
        set: &'a ConsensusValidatorSet,
        height: ConsensusHeight,
        round: Round,
    ) -> &'a ConsensusValidator {
        select_proposer(set, height.0, round.as_i64())
    }

    fn new_proposal(
        &self,
        height: ConsensusHeight,
        round: Round,
        value: BlockValue,
        pol_round: Round,
        address: ValidatorAddress,
    ) -> ConsensusProposal {
        let proposal = WireProposal {
            height: LedgerHeight(height.0),
            round: round_u32(round),
            block: value.0,
            pol_round: pol_round.as_u32(),
        };
        ConsensusProposal::new(proposal, address.0)
    }

    fn new_prevote(
        &self,
        height: ConsensusHeight,
        round: Round,
        value_id: NilOrVal<Hash>,
        address: ValidatorAddress,
    ) -> ConsensusVote {
        new_vote(VoteKind::Prevote, height, round, value_id, address)
    }

    fn new_precommit(
        &self,
        height: ConsensusHeight,
        round: Round,
        value_id: NilOrVal<Hash>,
        address: ValidatorAddress,
    ) -> ConsensusVote {
        new_vote(VoteKind::Precommit, height, round, value_id, address)
    }
}

fn new_vote(
    kind: VoteKind,
    height: ConsensusHeight,
    round: Round,
    value: NilOrVal<Hash>,
    address: ValidatorAddress,
) -> ConsensusVote {
    let block = match value {
        NilOrVal::Nil => None,
        NilOrVal::Val(h) => Some(h),
    };
    ConsensusVote::new(WireVote { kind, height: LedgerHeight(height.0), round: round_u32(round), block }, address.0)
}

/// The proposer of `(height, round)`, deterministic and weighted by power:
/// round 0's is drawn from a hash of the height; each later round moves the
/// draw point on by the golden ratio of the total power, so successive rounds
/// land far apart (a validator holding less than 38% of the power is never
/// proposer twice in a row, so a dead one costs at most one round at a time)
/// while every validator still proposes in proportion to its power.
pub fn select_proposer(set: &ConsensusValidatorSet, height: u64, round: i64) -> &ConsensusValidator {
    let digest = Hash::tagged(b"agora/proposer/1", &height.to_le_bytes());
    let mut point_bytes = [0u8; 8];
    point_bytes.copy_from_slice(&digest.0[..8]);
    let total = set.total.max(1);
    let step = (u128::from(total) * 618_034 / 1_000_000) as u64;
    let rounds = u64::try_from(round.max(0)).unwrap_or(0);
    let start = u128::from(u64::from_le_bytes(point_bytes) % total);
    let point = ((start + u128::from(step) * u128::from(rounds)) % u128::from(total)) as u64;
    let mut acc = 0u64;
    for v in &set.validators {
        acc = acc.saturating_add(v.power);
        if point < acc {
            return v;
        }
    }
    // A non-empty set always contains the point; Malachite never asks with an empty set.
    &set.validators[set.validators.len() - 1]
}
