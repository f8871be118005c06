//! The consensus engine: one validator's (or follower's) view of consensus,
//! without I/O. It owns Malachite's consensus state, the ledger state at the
//! tip, the mempool and the blocks proposed at the current height, and turns
//! every input into a list of actions for the node (or the simulator) to carry
//! out. Time is an input: `handle` is given the current time in milliseconds.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use agora_protocol::consensus::{
    CertSig, ConsensusMessage, ProposalBlock, RoundCertKind, Vote as WireVote, VoteCertificate, VoteKind,
};
use agora_protocol::limits::MAX_VALIDATORS;
use agora_protocol::{
    Address, Block, ChainId, CommitCertificate, CommitSig, DecidedBlock, Hash, Height, Keypair, Signed, SignedTx,
    TimestampMs,
};
use malachite_core_consensus::{
    self as mcc, Effect, LocallyProposedValue, ProposedValue, Resumable, Resume, SignedConsensusMsg,
};
use malachite_core_types::{
    CertificateError, CommitSignature, LinearTimeouts, NilOrVal, PolkaCertificate, PolkaSignature, Round,
    RoundCertificate, RoundCertificateType, RoundSignature, SignedMessage, ThresholdParams, Timeout, Timeouts,
    Validity, ValueOrigin, ValuePayload, VoteExtensionPolicy, VoteType,
};

use super::certificate::{CertifiedVote, verify_votes};
use super::context::{
    AgoraContext, BlockValue, ConsensusHeight, ConsensusProposal, ConsensusValidatorSet, ConsensusVote,
    ValidatorAddress, pol_round_of, round_of, select_proposer,
};
use super::mempool::Mempool;
use super::signer::{LastSigned, SignGuard, SignStep};
use super::wal::WalEntry;
use crate::apply::{BlockBuilder, SigCheck, apply_block_pending, finish_block, verify_tx_signatures_where};
use crate::error::Error;
use crate::events::Event;
use crate::state::State;

type McState = mcc::State<AgoraContext>;
type McInput = mcc::Input<AgoraContext>;

/// Proposed blocks kept per height (one per round is normal; more means a
/// faulty proposer or many rounds).
pub const MAX_PENDING_BLOCKS: usize = 32;
/// Proposed blocks for the next height kept until this node gets there: a
/// proposer that committed first must not lose its round to a slower peer.
pub const MAX_FUTURE_BLOCKS: usize = 32;
/// Of those, how many one signer may have queued (a round-0 proposal and a re-proposal).
pub const MAX_FUTURE_BLOCKS_PER_SIGNER: usize = 2;
/// Least time between two sync requests, so a lagging node does not flood peers.
pub const SYNC_REQUEST_INTERVAL_MS: u64 = 500;
/// Malachite's buffer for inputs from future heights, and per height.
pub const INPUT_QUEUE_CAPACITY: usize = 256;
pub const INPUT_QUEUE_PER_HEIGHT: usize = 128;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub timeouts: LinearTimeouts,
    /// A proposed block's time may be at most this far ahead of our clock.
    pub max_block_time_drift_ms: u64,
    /// Whether this node takes part (signs); followers only verify and commit.
    pub is_validator: bool,
    /// Pause between committing a block and starting the next height
    /// (Tendermint's timeout_commit): the block-time floor.
    pub commit_pause: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            timeouts: LinearTimeouts::default(),
            max_block_time_drift_ms: 5_000,
            is_validator: true,
            commit_pause: Duration::from_millis(500),
        }
    }
}

/// A consensus timer, opaque outside this module.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Timer(TimerKind);

impl Timer {
    /// Whether this is the pause before the next height (not a round timeout).
    pub fn is_next_height(&self) -> bool {
        matches!(self.0, TimerKind::NextHeight(_))
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum TimerKind {
    /// One of Malachite's round timeouts.
    Consensus(Timeout),
    /// The pause after a commit before the next height starts.
    NextHeight(u64),
}

/// What the engine is told.
#[derive(Clone, Debug)]
pub enum Input {
    /// Start consensus at the height after the ledger's tip.
    Start,
    /// A consensus message from a peer (already size-checked and decoded).
    Message(ConsensusMessage),
    /// A timer set by `Action::ScheduleTimeout` fired.
    TimeoutElapsed(Timer),
    /// A transaction for the mempool.
    Tx(Box<SignedTx>),
    /// Several transactions for the mempool, signature-checked as one batch
    /// (about twice as fast as one by one); invalid ones are dropped.
    Txs(Vec<SignedTx>),
    /// Transactions whose signatures the host already checked (its API, its
    /// gossip validation): queued without checking them again.
    Verified(Vec<crate::consensus::mempool::VerifiedTx>),
    /// A committed block with its certificate, fetched from a peer by block
    /// sync after `Action::SyncNeeded`.
    Synced { block: Box<Block>, certificate: CommitCertificate },
    /// A decided block from gossip whose certificate `Engine::check_decided`
    /// verified: committed without checking the certificate again.
    Decided(CheckedDecided),
    /// A peer showed a later decided height: fetch the blocks in between.
    PeerAhead,
}

/// What a gossiped decided block is to this engine (`Engine::check_decided`).
#[derive(Debug)]
pub enum Decided {
    /// The next block, certified by this height's validators: feed it back
    /// as `Input::Decided`, and forward it.
    Next(CheckedDecided),
    /// At or below the tip, or certified by keys this node does not know
    /// as validators: not forwarded, no penalty.
    Drop,
    /// Past the next height, signed by current validators, every signature
    /// theirs: its power is not checked (the set may change before then)
    /// and it is not forwarded, but peers are ahead (`Input::PeerAhead`).
    Ahead,
    /// A certificate that does not commit the block for the next height, or
    /// a forged signature at any later height.
    Invalid,
}

/// A decided block whose certificate was verified for the height after the
/// engine's tip (only `Engine::check_decided` makes one).
#[derive(Clone, Debug)]
pub struct CheckedDecided(Box<DecidedBlock>);

/// Two different signed votes from one validator for the same height, round
/// and type: evidence for the slashing issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoteEquivocation {
    pub first: Signed<WireVote>,
    pub second: Signed<WireVote>,
}

/// What the engine asks its host to do. Actions must be carried out in order.
#[derive(Clone, Debug)]
pub enum Action {
    Broadcast(ConsensusMessage),
    /// A message sent before, to send again (a vote after a stalled round,
    /// a block streamed again): gossip must make it a new message.
    Rebroadcast(ConsensusMessage),
    ScheduleTimeout {
        timer: Timer,
        after: Duration,
    },
    CancelTimeout(Timer),
    CancelAllTimeouts,
    /// Append to the write-ahead log before any later action. `durable`
    /// (this node's own vote or proposal): on disk before the next action,
    /// in particular the broadcast of what it records; others' entries may
    /// be written lazily (losing them costs a re-gossip, not safety).
    WalAppend {
        height: Height,
        entry: WalEntry,
        durable: bool,
    },
    /// The double-sign guard's new state: must be durable before any later
    /// action (a signature is about to leave).
    PersistSigned(LastSigned),
    /// The guard refused a signature that would conflict with one this node
    /// made before (its WAL was lost): nothing was signed; say so loudly.
    SignRefused(String),
    /// Persist this block with its certificate before acting on anything else;
    /// the WAL entries of this height and below may then be dropped.
    Commit {
        block: Box<Block>,
        certificate: CommitCertificate,
        events: Vec<Event>,
        /// The engine's state after the block, for the store to adopt
        /// (`Store::commit_applied`) instead of applying the block again.
        /// A copy of a persistent state: a pointer per map.
        state: Box<State>,
    },
    /// Consensus decided a block this node never received: fetch it (sync).
    MissingBlock {
        height: Height,
        hash: Hash,
    },
    /// Peers are ahead: fetch committed blocks after `have` from one of them
    /// and feed them back as `Input::Synced`, in height order.
    SyncNeeded {
        have: Height,
    },
    Evidence(VoteEquivocation),
}

/// Blocks proposed at the current height.
#[derive(Default)]
struct Proposed {
    /// By hash.
    blocks: BTreeMap<Hash, Block>,
    /// Whether each of those blocks applies: a re-sent copy (any round, any
    /// relayer) is not validated again.
    validity: BTreeMap<Hash, bool>,
    /// The ledger after each valid block, as its check left it (writes
    /// pending, root computed): committing the decided one adopts it
    /// instead of applying the block again.
    applied: BTreeMap<Hash, (State, Vec<Event>)>,
    /// Signed proposed blocks for the next height, checked once we get there.
    future: VecDeque<Signed<ProposalBlock>>,
    /// The proposer's signature on each (round, block) seen, so a restream
    /// re-sends the proposer's own message instead of signing anything.
    signatures: BTreeMap<(u32, Hash), (Address, Option<u32>, agora_protocol::Signature)>,
}

impl Proposed {
    fn remember(&mut self, signed: &Signed<ProposalBlock>, hash: Hash) {
        if self.signatures.len() < MAX_PENDING_BLOCKS * 4 {
            let key = (signed.body.round, hash);
            self.signatures.entry(key).or_insert((signed.signer, signed.body.pol_round, signed.signature));
        }
    }

    /// The signed message for a (round, block) seen at this height.
    fn signed(&self, round: u32, hash: Hash) -> Option<Signed<ProposalBlock>> {
        let (signer, pol_round, signature) = *self.signatures.get(&(round, hash))?;
        let block = self.blocks.get(&hash)?.clone();
        Some(Signed { body: ProposalBlock { round, pol_round, block }, signer, signature })
    }

    fn clear(&mut self) {
        self.blocks.clear();
        self.validity.clear();
        self.applied.clear();
        self.signatures.clear();
    }
}

/// This validator's key behind its double-sign guard.
struct Signer {
    key: Keypair,
    guard: SignGuard,
    /// Steps this node signed before a restart, found in its WAL: replaying
    /// them re-derives those signatures, which the guard lets through.
    replayed: Vec<LastSigned>,
    /// Rounds this node proposed in before a restart (from its WAL). The
    /// block itself was in memory and is gone; proposing again there would
    /// mean a second, different block for one round, so it does not.
    proposed_before: Vec<(Height, u32)>,
}

impl Signer {
    /// Signs `body` for the step `asked` if the guard allows it; a new step
    /// is handed out to be persisted (`Action::PersistSigned`) ahead of any
    /// action that could carry the signature off the node.
    fn sign<T: agora_protocol::Signable>(
        &mut self,
        body: T,
        asked: LastSigned,
        chain: &ChainId,
        actions: &mut Vec<Action>,
    ) -> Result<Signed<T>, Error> {
        if !self.replayed.contains(&asked) {
            match self.guard.check(asked) {
                Ok(Some(new)) => actions.push(Action::PersistSigned(new)),
                Ok(None) => {}
                Err(conflict) => {
                    let reason = conflict.to_string();
                    actions.push(Action::SignRefused(reason.clone()));
                    return Err(Error::SignRefused(reason));
                }
            }
        }
        Ok(Signed::sign(body, &self.key, chain)?)
    }
}

/// Everything the effect handler needs, split from Malachite's state so both
/// can be borrowed at once.
struct Host {
    chain: ChainId,
    signer: Signer,
    config: EngineConfig,
    ledger: State,
    mempool: Mempool,
    proposed: Proposed,
    /// The certificate of the last committed block, carried by the next block.
    last_commit: Option<CommitCertificate>,
    now_ms: u64,
    /// When this node last asked peers for blocks.
    last_sync_request_ms: Option<u64>,
    actions: Vec<Action>,
    followups: VecDeque<McInput>,
    /// Blocks applied to a copy of the ledger (checks, commits, sync): one
    /// per committed height when each decided block's check is reused.
    blocks_applied: u64,
}

pub struct Engine {
    mc: McState,
    host: Host,
}

/// What to do with a consensus message from gossip (see `Engine::relay`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Relay {
    /// Check its signature, forward it, and feed it to consensus.
    Forward,
    /// From a validator, for a height past the next: not forwarded, but fed
    /// to consensus, which asks peers for the blocks this node is missing.
    Ahead,
    /// Not forwarded, not fed, no penalty (stale, or not from a validator).
    Drop,
}

/// What a restarting validator kept on disk: its consensus WAL and the last
/// step its double-sign guard recorded.
#[derive(Clone, Copy, Debug, Default)]
pub struct Recovered<'a> {
    pub wal: &'a [(Height, WalEntry)],
    pub last_signed: Option<&'a LastSigned>,
}

fn validator_set(ledger: &State) -> ConsensusValidatorSet {
    ConsensusValidatorSet::from_state(ledger)
}

impl Engine {
    /// An engine on top of the ledger state `ledger` (the committed tip),
    /// whose block was committed by `last_commit` (none at genesis).
    pub fn new(
        chain: ChainId,
        key: Keypair,
        ledger: State,
        last_commit: Option<CommitCertificate>,
        config: EngineConfig,
    ) -> Engine {
        let height = ConsensusHeight(ledger.height().0 + 1);
        let params = mcc::Params {
            address: ValidatorAddress(key.address()),
            threshold_params: ThresholdParams::default(),
            value_payload: ValuePayload::ProposalAndParts,
            enabled: config.is_validator,
        };
        let mc = McState::new(
            AgoraContext,
            height,
            validator_set(&ledger),
            params,
            INPUT_QUEUE_CAPACITY,
            INPUT_QUEUE_PER_HEIGHT,
        );
        let host = Host {
            chain,
            signer: Signer { key, guard: SignGuard::default(), replayed: Vec::new(), proposed_before: Vec::new() },
            config,
            ledger,
            mempool: Mempool::default(),
            proposed: Proposed::default(),
            last_commit,
            now_ms: 0,
            last_sync_request_ms: None,
            actions: Vec::new(),
            followups: VecDeque::new(),
            blocks_applied: 0,
        };
        Engine { mc, host }
    }

    /// Restarts an engine after a crash: `recovered.wal` holds the entries
    /// logged for the height after the ledger's tip (older ones are ignored).
    /// Replaying them re-derives this node's own votes, which Malachite checks
    /// against the log and re-uses, so nothing is signed twice differently;
    /// `recovered.last_signed` arms the double-sign guard in case the WAL lost
    /// something. Returns the engine and the actions of the replay (timers
    /// and re-broadcasts).
    pub fn restart(
        chain: ChainId,
        key: Keypair,
        ledger: State,
        last_commit: Option<CommitCertificate>,
        config: EngineConfig,
        recovered: Recovered<'_>,
        now_ms: u64,
    ) -> (Engine, Vec<Action>) {
        let wal = recovered.wal;
        let me = key.address();
        let mut engine = Engine::new(chain, key, ledger, last_commit, config);
        engine.host.signer.guard = SignGuard::new(recovered.last_signed.cloned());
        engine.host.signer.replayed =
            wal.iter().filter(|(_, e)| e.signer() == Some(me)).filter_map(|(_, e)| e.signed_step()).collect();
        engine.host.signer.proposed_before = engine
            .host
            .signer
            .replayed
            .iter()
            .filter(|s| s.step == SignStep::Proposal)
            .map(|s| (s.height, s.round))
            .collect();
        let height = engine.host.ledger.height().next();
        let inputs: Vec<McInput> = wal.iter().filter(|(h, _)| *h == height).map(|(_, e)| e.to_input(height)).collect();
        engine.mc.index_wal_entries(inputs.iter());
        let mut start = engine.host.start_height_input();
        if let McInput::StartHeight(_, _, is_restart, _, _) = &mut start {
            *is_restart = true;
        }
        engine.host.now_ms = now_ms;
        engine.host.followups.push_back(start);
        engine.host.followups.extend(inputs);
        engine.run_followups();
        engine.mc.reset_entries_index();
        engine.host.signer.replayed.clear();
        // Entries replayed above were already durable; do not log them twice.
        engine.host.actions.retain(|a| !matches!(a, Action::WalAppend { .. }));
        let actions = std::mem::take(&mut engine.host.actions);
        (engine, actions)
    }

    pub fn ledger(&self) -> &State {
        &self.host.ledger
    }

    /// How many times a whole block was applied (checked, committed, synced).
    pub fn blocks_applied(&self) -> u64 {
        self.host.blocks_applied
    }

    pub fn mempool(&self) -> &Mempool {
        &self.host.mempool
    }

    /// The height consensus is working on.
    pub fn height(&self) -> Height {
        Height(self.mc.height().0)
    }

    /// Whether a consensus message from gossip is relayed: only messages
    /// for this height or the next, signed by current validators (every
    /// voter, for a certificate). A message for a later height from a
    /// validator is not relayed but tells this node it is behind (`Ahead`);
    /// the rest (old heights, strangers' keys) is dropped before any
    /// signature is checked. Validators' sets change only at epochs, so a
    /// message for the next height is judged by the current set.
    pub fn relay(&self, msg: &ConsensusMessage) -> Relay {
        let ledger = &self.host.ledger;
        let by_validators = match msg {
            ConsensusMessage::Vote(v) => ledger.is_validator(&v.signer),
            ConsensusMessage::Proposal(p) => ledger.is_validator(&p.signer),
            ConsensusMessage::Block(b) => ledger.is_validator(&b.signer),
            ConsensusMessage::Certificate(c) => {
                !c.votes.is_empty() && c.votes.iter().all(|s| ledger.is_validator(&s.validator))
            }
        };
        let (h, at) = (self.height().0, msg.height().0);
        match (by_validators, at) {
            (false, _) => Relay::Drop,
            (true, at) if at == h || at == h.saturating_add(1) => Relay::Forward,
            (true, at) if at > h => Relay::Ahead,
            (true, _) => Relay::Drop,
        }
    }

    pub fn round(&self) -> Round {
        self.mc.round()
    }

    /// Judges a decided block from gossip before it is forwarded: only the
    /// block after the tip can be checked (its certificate against the
    /// validator set that decides it), and only that one is forwarded.
    pub fn check_decided(&self, decided: DecidedBlock) -> Decided {
        let ledger = &self.host.ledger;
        let (next, at) = (ledger.height().next(), decided.block.header.height);
        let signers_known = !decided.certificate.signatures.is_empty()
            && decided.certificate.signatures.len() <= MAX_VALIDATORS
            && decided.certificate.signatures.iter().all(|s| ledger.is_validator(&s.validator));
        if at > next && signers_known {
            // Not checkable against a set yet, but a forged signature is
            // never an honest peer's (each forwarded it only once it applied).
            let certificate = &decided.certificate;
            let genuine = certificate.height == at
                && super::certificate::signatures_valid(&self.host.chain, certificate, decided.block.hash());
            return if genuine { Decided::Ahead } else { Decided::Invalid };
        }
        if at != next {
            return Decided::Drop;
        }
        if !signers_known {
            // Its signers may be a set this node has not caught up with.
            return Decided::Drop;
        }
        let set = validator_set(ledger);
        match super::certificate::verify_commit(&self.host.chain, &set, &decided.certificate, at, decided.block.hash())
        {
            Ok(()) => Decided::Next(CheckedDecided(Box::new(decided))),
            Err(_) => Decided::Invalid,
        }
    }

    /// Feeds one input at time `now_ms`; returns the actions to carry out, in order.
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Action> {
        self.host.now_ms = now_ms;
        match input {
            Input::Start => self.host.followups.push_back(self.host.start_height_input()),
            Input::TimeoutElapsed(Timer(TimerKind::Consensus(t))) => {
                self.host.followups.push_back(McInput::TimeoutElapsed(t))
            }
            Input::TimeoutElapsed(Timer(TimerKind::NextHeight(h))) => {
                if h == self.host.ledger.height().0 + 1 && self.mc.height().0 < h {
                    self.host.followups.push_back(self.host.start_height_input());
                }
            }
            Input::Tx(tx) => {
                // Signature checked here so the pool never holds forgeries.
                if tx.verify(&self.host.chain).is_ok() {
                    let _ = self.host.mempool.add(&self.host.ledger, *tx);
                }
            }
            Input::Txs(txs) => self.host.add_txs(txs),
            Input::Verified(txs) => self.host.add_verified(txs),
            Input::Message(msg) => {
                if msg.height().0 > self.mc.height().0 {
                    self.host.maybe_request_sync();
                }
                if let Some(i) = self.host.on_message(msg, self.mc.height(), self.mc.validator_set()) {
                    self.host.followups.push_back(i);
                }
            }
            Input::Synced { block, certificate } => {
                if let Err(e) = self.host.apply_synced(*block, certificate) {
                    tracing_free_log(&e);
                }
            }
            Input::Decided(CheckedDecided(decided)) => {
                if let Err(e) = self.host.commit_decided(*decided) {
                    tracing_free_log(&e);
                }
            }
            Input::PeerAhead => self.host.maybe_request_sync(),
        }
        self.run_followups();
        self.replay_future_blocks();
        std::mem::take(&mut self.host.actions)
    }

    /// Feeds the blocks that arrived before this node reached their height.
    fn replay_future_blocks(&mut self) {
        let height = self.mc.height();
        self.host.proposed.future.retain(|b| b.body.block.header.height.0 >= height.0);
        if !self.host.proposed.future.iter().any(|b| b.body.block.header.height.0 == height.0) {
            return;
        }
        let (ready, later): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.host.proposed.future)
            .into_iter()
            .partition(|b| b.body.block.header.height.0 == height.0);
        self.host.proposed.future = later;
        for block in ready {
            if let Some(input) = self.host.on_block(block, height, self.mc.validator_set()) {
                self.host.followups.push_back(input);
            }
        }
        self.run_followups();
    }

    fn run_followups(&mut self) {
        while let Some(input) = self.host.followups.pop_front() {
            let host = &mut self.host;
            let result: Result<(), mcc::Error<AgoraContext>> =
                mcc::process!(input: input, state: &mut self.mc, metrics: &(), with: effect => host.on_effect(effect));
            if let Err(e) = result {
                tracing_free_log(&e);
            }
        }
    }
}

/// Malachite reports internal errors (stale inputs and the like) that do not
/// stop consensus; they are dropped here on purpose.
fn tracing_free_log<E: std::fmt::Debug>(_e: &E) {}

impl Host {
    fn start_height_input(&self) -> McInput {
        McInput::StartHeight(
            ConsensusHeight(self.ledger.height().0 + 1),
            validator_set(&self.ledger),
            false,
            None,
            VoteExtensionPolicy::Disabled,
        )
    }

    /// Verifies a batch of transactions at once and queues the valid ones.
    fn add_txs(&mut self, txs: Vec<SignedTx>) {
        self.add_verified(crate::consensus::mempool::verify_all(&self.chain, txs).into_iter().flatten());
    }

    /// Queues transactions whose signatures were checked; what the pool
    /// will not admit is dropped.
    fn add_verified(&mut self, txs: impl IntoIterator<Item = crate::consensus::mempool::VerifiedTx>) {
        for tx in txs {
            let _ = self.mempool.add(&self.ledger, tx.into_inner());
        }
    }

    /// Asks for block sync, at most once per `SYNC_REQUEST_INTERVAL_MS`.
    fn maybe_request_sync(&mut self) {
        let due = self.last_sync_request_ms.is_none_or(|t| self.now_ms >= t + SYNC_REQUEST_INTERVAL_MS);
        if due {
            self.last_sync_request_ms = Some(self.now_ms);
            self.actions.push(Action::SyncNeeded { have: self.ledger.height() });
        }
    }

    /// Commits a block fetched by sync: it must be the next height and carry
    /// a valid certificate from the validator set of that height. Consensus
    /// then restarts at the following height.
    fn apply_synced(&mut self, block: Block, certificate: CommitCertificate) -> Result<(), Error> {
        let height = self.ledger.height().next();
        if block.header.height != height {
            return Ok(());
        }
        super::certificate::verify_commit(
            &self.chain,
            &validator_set(&self.ledger),
            &certificate,
            height,
            block.hash(),
        )?;
        // Certified like a gossiped decided block, so trusted alike.
        self.commit_decided(DecidedBlock { block, certificate })
    }

    /// Commits a gossiped decided block whose certificate was checked
    /// (`Engine::check_decided`) if it is still the next one; a validator
    /// that checked the block as a proposal adopts that check's result.
    fn commit_decided(&mut self, decided: DecidedBlock) -> Result<(), Error> {
        let DecidedBlock { block, certificate } = decided;
        if block.header.height != self.ledger.height().next() {
            return Ok(());
        }
        let applied = match self.proposed.applied.remove(&block.hash()) {
            Some(checked) => checked,
            // Its certificate is the word of more than 2/3 of the power that
            // they checked these signatures (their header's tx root covers
            // them); the transactions are still executed here.
            None => self.apply_to_copy(&block, SigCheck::Skip)?,
        };
        self.finish_commit(block, certificate, applied)?;
        self.last_sync_request_ms = None;
        Ok(())
    }

    /// Checks a peer message and turns it into a Malachite input.
    fn on_message(
        &mut self,
        msg: ConsensusMessage,
        height: ConsensusHeight,
        set: &ConsensusValidatorSet,
    ) -> Option<McInput> {
        match msg {
            ConsensusMessage::Vote(v) => {
                let vote = ConsensusVote::new(v.body, v.signer);
                Some(McInput::Vote(SignedMessage::new(vote, v.signature)))
            }
            ConsensusMessage::Proposal(p) => {
                let proposal = ConsensusProposal::new(p.body, p.signer);
                Some(McInput::Proposal(SignedMessage::new(proposal, p.signature)))
            }
            ConsensusMessage::Block(b) => self.on_block(*b, height, set),
            ConsensusMessage::Certificate(c) if c.votes.len() <= MAX_VALIDATORS => Some(certificate_input(c)),
            ConsensusMessage::Certificate(_) => None,
        }
    }

    /// A proposed block: from the round's proposer, for the current height,
    /// checked by applying it to the ledger (then rolled back).
    fn on_block(
        &mut self,
        signed: Signed<ProposalBlock>,
        height: ConsensusHeight,
        set: &ConsensusValidatorSet,
    ) -> Option<McInput> {
        let ProposalBlock { round, pol_round, block } = &signed.body;
        if block.header.height.0 == height.0 + 1 {
            // Its proposer is known only once the next validator set is, so
            // only the signature is checked now.
            let queued = self.proposed.future.iter().filter(|b| b.signer == signed.signer).count();
            if self.proposed.future.len() < MAX_FUTURE_BLOCKS
                && queued < MAX_FUTURE_BLOCKS_PER_SIGNER
                && self.ledger.is_validator(&signed.signer)
                && signed.verify(&self.chain).is_ok()
            {
                self.proposed.future.push_back(signed);
            }
            return None;
        }
        if block.header.height.0 != height.0 {
            return None;
        }
        let proposer = select_proposer(set, height.0, i64::from(*round)).public_key;
        // The block must name the validator that signed it as its proposer.
        if signed.signer != proposer || block.header.proposer != signed.signer || signed.verify(&self.chain).is_err() {
            return None;
        }
        let hash = block.hash();
        if !self.proposed.blocks.contains_key(&hash) && self.proposed.blocks.len() >= MAX_PENDING_BLOCKS {
            return None;
        }
        let valid = match self.proposed.validity.get(&hash) {
            Some(v) => *v,
            None => match self.check_block(block) {
                Ok(applied) => {
                    self.proposed.applied.insert(hash, applied);
                    *self.proposed.validity.entry(hash).or_insert(true)
                }
                // Too far ahead of this node's clock is a verdict of the moment, not of the block.
                Err(Error::BlockTooFarAhead) => false,
                Err(_) => *self.proposed.validity.entry(hash).or_insert(false),
            },
        };
        let validity = Validity::from_bool(valid);
        self.proposed.blocks.entry(hash).or_insert_with(|| block.clone());
        self.proposed.remember(&signed, hash);
        Some(McInput::ProposedValue(
            ProposedValue {
                height,
                round: round_of(*round),
                valid_round: pol_round_of(*pol_round),
                proposer: ValidatorAddress(signed.signer),
                value: BlockValue(hash),
                validity,
            },
            ValueOrigin::Consensus,
        ))
    }

    /// A block is valid if its time is not too far ahead of ours, it carries
    /// a valid certificate for its parent, and it applies to the ledger.
    /// Returns the ledger after it (a copy; the engine's own is unchanged).
    fn check_block(&mut self, block: &Block) -> Result<(State, Vec<Event>), Error> {
        if block.header.time_ms.0 > self.now_ms.saturating_add(self.config.max_block_time_drift_ms) {
            return Err(Error::BlockTooFarAhead);
        }
        if let Some(cert) = &block.last_commit {
            // Verified against the set that decided the parent, which differs
            // from the current one right after an epoch rotation.
            let deciders =
                ConsensusValidatorSet::new(self.ledger.last_validators().iter().map(|v| (v.address, v.power)));
            super::certificate::verify_commit(
                &self.chain,
                &deciders,
                cert,
                self.ledger.height(),
                self.ledger.last_block_hash(),
            )?;
        } else if self.ledger.height().0 > 0 {
            return Err(Error::BadCertificate("block lacks its parent's commit certificate".into()));
        }
        // Transactions already in our mempool were verified on entry.
        verify_tx_signatures_where(&self.ledger, &block.txs, |tx| !self.mempool.contains(tx))?;
        self.apply_to_copy(block, SigCheck::Skip)
    }

    /// Applies `block` to a copy of the ledger, which it returns with the
    /// block's writes pending and the block's events; the ledger itself is
    /// unchanged. Every whole-block apply of the engine goes through here.
    fn apply_to_copy(&mut self, block: &Block, sig: SigCheck) -> Result<(State, Vec<Event>), Error> {
        let mut applied = self.ledger.clone();
        self.blocks_applied += 1;
        let outcome = apply_block_pending(&mut applied, block, sig)?;
        Ok((applied, outcome.events))
    }

    fn on_effect(&mut self, effect: Effect<AgoraContext>) -> Result<Resume<AgoraContext>, Error> {
        Ok(match effect {
            Effect::CancelAllTimeouts(r) => {
                self.actions.push(Action::CancelAllTimeouts);
                r.resume_with(())
            }
            Effect::CancelTimeout(t, r) => {
                self.actions.push(Action::CancelTimeout(Timer(TimerKind::Consensus(t))));
                r.resume_with(())
            }
            Effect::ScheduleTimeout(t, r) => {
                let after = Timeouts::<AgoraContext>::duration_for(&self.config.timeouts, t);
                self.actions.push(Action::ScheduleTimeout { timer: Timer(TimerKind::Consensus(t)), after });
                r.resume_with(())
            }
            Effect::StartRound(_, _, _, _, r) => r.resume_with(()),
            Effect::PublishConsensusMsg(msg, r) => {
                self.actions.push(Action::Broadcast(match msg {
                    SignedConsensusMsg::Vote(v) => ConsensusMessage::Vote(v.message.to_wire(v.signature)),
                    SignedConsensusMsg::Proposal(p) => ConsensusMessage::Proposal(p.message.to_wire(p.signature)),
                }));
                r.resume_with(())
            }
            Effect::PublishLivenessMsg(msg, r) => {
                self.actions.push(Action::Rebroadcast(match msg {
                    mcc::LivenessMsg::Vote(v) => ConsensusMessage::Vote(v.message.to_wire(v.signature)),
                    mcc::LivenessMsg::PolkaCertificate(c) => ConsensusMessage::Certificate(polka_to_wire(&c)),
                    mcc::LivenessMsg::SkipRoundCertificate(c) => ConsensusMessage::Certificate(round_to_wire(&c)),
                }));
                r.resume_with(())
            }
            Effect::RepublishVote(v, r) => {
                self.actions.push(Action::Rebroadcast(ConsensusMessage::Vote(v.message.to_wire(v.signature))));
                r.resume_with(())
            }
            Effect::RepublishRoundCertificate(c, r) => {
                self.actions.push(Action::Rebroadcast(ConsensusMessage::Certificate(round_to_wire(&c))));
                r.resume_with(())
            }
            Effect::GetValue(height, round, _timeout, r) => {
                self.propose(height, round)?;
                r.resume_with(())
            }
            Effect::RestreamProposal(height, round, valid_round, proposer, value_id, r) => {
                self.restream(height, round, valid_round, proposer.0, value_id)?;
                r.resume_with(())
            }
            Effect::CertVerifiedSyncValue(_, _, r) => r.resume_with(()),
            Effect::CertRejectedSyncValue(_, _, _, r) => r.resume_with(()),
            Effect::Decide(_, _, r) => r.resume_with(()),
            Effect::SignVote(vote, r) => {
                let v = &vote.vote;
                let step = match v.kind {
                    VoteKind::Prevote => SignStep::Prevote,
                    VoteKind::Precommit => SignStep::Precommit,
                };
                let asked = LastSigned { height: v.height, round: v.round, step, value: v.block };
                let signature = self.signer.sign(v.clone(), asked, &self.chain, &mut self.actions)?.signature;
                r.resume_with(SignedMessage::new(vote, signature))
            }
            Effect::SignProposal(proposal, r) => {
                let p = &proposal.proposal;
                let asked =
                    LastSigned { height: p.height, round: p.round, step: SignStep::Proposal, value: Some(p.block) };
                let signature = self.signer.sign(p.clone(), asked, &self.chain, &mut self.actions)?.signature;
                r.resume_with(SignedMessage::new(proposal, signature))
            }
            Effect::VerifySignature(msg, public_key, r) => r.resume_with(self.verify_signature(&msg, &public_key)),
            Effect::VerifyCommitCertificate(cert, set, _, r) => {
                r.resume_with(self.verify_commit_certificate(&cert, &set))
            }
            Effect::VerifyExtendedCommitCertificate(cert, set, _, _, r) => {
                // Vote extensions are disabled, so only the precommits matter.
                r.resume_with(self.verify_commit_certificate(&cert.trim_vote_extensions(), &set))
            }
            Effect::VerifyPolkaCertificate(cert, set, _, r) => {
                let votes = cert.polka_signatures.iter().map(|s| CertifiedVote {
                    validator: s.address.0,
                    kind: VoteKind::Prevote,
                    block: Some(cert.value_id),
                    signature: s.signature,
                });
                r.resume_with(self.verify_certificate(&set, cert.height, cert.round, votes))
            }
            Effect::VerifyRoundCertificate(cert, set, _, r) => {
                let votes = cert.round_signatures.iter().map(|s| CertifiedVote {
                    validator: s.address.0,
                    kind: kind_of(s.vote_type),
                    block: option_of(s.value_id),
                    signature: s.signature,
                });
                r.resume_with(self.verify_certificate(&set, cert.height, cert.round, votes))
            }
            Effect::WalAppend(height, input, r) => {
                if let Some(entry) = WalEntry::from_input(&input) {
                    let durable = entry.signer() == Some(self.signer.key.address());
                    self.actions.push(Action::WalAppend { height: Height(height.0), entry, durable });
                }
                r.resume_with(())
            }
            Effect::ExtendVote(_, _, _, _, r) => r.resume_with(None),
            Effect::VerifyVoteExtension(_, _, _, _, _, _, r) => r.resume_with(Ok(())),
            Effect::Finalize(cert, _, evidence, r) => {
                self.record_evidence(&evidence);
                self.commit(cert)?;
                r.resume_with(())
            }
        })
    }

    fn verify_signature(
        &self,
        msg: &SignedMessage<AgoraContext, mcc::ConsensusMsg<AgoraContext>>,
        public_key: &agora_protocol::Address,
    ) -> bool {
        match &msg.message {
            mcc::ConsensusMsg::Vote(v) => {
                v.validator.0 == *public_key && v.to_wire(msg.signature).verify(&self.chain).is_ok()
            }
            mcc::ConsensusMsg::Proposal(p) => {
                p.proposer.0 == *public_key && p.to_wire(msg.signature).verify(&self.chain).is_ok()
            }
        }
    }

    #[allow(clippy::result_large_err)]
    fn verify_commit_certificate(
        &self,
        cert: &malachite_core_types::CommitCertificate<AgoraContext>,
        set: &ConsensusValidatorSet,
    ) -> Result<(), CertificateError<AgoraContext>> {
        let votes = cert.commit_signatures.iter().map(|s| CertifiedVote {
            validator: s.address.0,
            kind: VoteKind::Precommit,
            block: Some(cert.value_id),
            signature: s.signature,
        });
        self.verify_certificate(set, cert.height, cert.round, votes)
    }

    // The error type is Malachite's resume value, not ours to shrink.
    #[allow(clippy::result_large_err)]
    fn verify_certificate(
        &self,
        set: &ConsensusValidatorSet,
        height: ConsensusHeight,
        round: Round,
        votes: impl Iterator<Item = CertifiedVote>,
    ) -> Result<(), CertificateError<AgoraContext>> {
        let Some(round) = round.as_u32() else {
            return Err(CertificateError::NotEnoughVotingPower { signed: 0, total: 0, expected: 1 });
        };
        verify_votes(&self.chain, set, Height(height.0), round, votes).map_err(|_| {
            // Malachite only needs to know the certificate is unusable.
            CertificateError::NotEnoughVotingPower { signed: 0, total: 0, expected: 1 }
        })
    }

    /// Builds a block from the mempool, broadcasts it, and tells consensus.
    fn propose(&mut self, height: ConsensusHeight, round: Round) -> Result<(), Error> {
        if height.0 != self.ledger.height().0 + 1 {
            return Ok(());
        }
        let wire_round = round.as_u32().unwrap_or(0);
        if self.signer.proposed_before.contains(&(Height(height.0), wire_round)) {
            // Our block for this round went out before a restart (peers have
            // it); the round goes on with it, or times out, without a second one.
            return Ok(());
        }
        let time = TimestampMs(self.now_ms.max(self.ledger.time_ms().0 + 1));
        let max = self.ledger.params().max_txs_per_block as usize;
        let candidates = self.mempool.candidates(&self.ledger, max);
        // Built on a copy that is kept as the block leaves it: committed
        // as it is if the block is decided.
        let mut applied = self.ledger.clone();
        let mut builder = BlockBuilder::new(&mut applied, time, self.signer.key.address())?;
        for tx in candidates {
            // Mempool transactions were signature-checked on entry; ones that
            // no longer apply (stale nonce, spent balance) are left out.
            let _ = builder.push_verified(tx);
        }
        let (block, events) = builder.finish_applied(self.last_commit.clone())?;
        let hash = block.hash();
        self.proposed.applied.insert(hash, (applied, events));
        let proposal_block = ProposalBlock { round: wire_round, pol_round: None, block: block.clone() };
        let asked =
            LastSigned { height: Height(height.0), round: wire_round, step: SignStep::Proposal, value: Some(hash) };
        let signed = self.signer.sign(proposal_block, asked, &self.chain, &mut self.actions)?;
        self.proposed.blocks.insert(hash, block);
        self.proposed.remember(&signed, hash);
        self.actions.push(Action::Broadcast(ConsensusMessage::Block(Box::new(signed))));
        self.followups.push_back(McInput::Propose(LocallyProposedValue::new(height, round, BlockValue(hash))));
        Ok(())
    }

    /// Re-sends a proposed block (Malachite asks when it locks on it, so
    /// every validator sees what it saw, and when its proposer re-proposes it
    /// at a later round). The proposer's own signed message is re-sent as it
    /// was; only this node's own re-proposal at a new round is signed, through
    /// the double-sign guard.
    fn restream(
        &mut self,
        height: ConsensusHeight,
        round: Round,
        valid_round: Round,
        proposer: Address,
        hash: Hash,
    ) -> Result<(), Error> {
        let wire_round = round.as_u32().unwrap_or(0);
        if let Some(signed) = self.proposed.signed(wire_round, hash) {
            self.actions.push(Action::Rebroadcast(ConsensusMessage::Block(Box::new(signed))));
            return Ok(());
        }
        let Some(block) = self.proposed.blocks.get(&hash) else {
            return Ok(());
        };
        if block.header.height.0 != height.0 || proposer != self.signer.key.address() {
            return Ok(());
        }
        let body = ProposalBlock { round: wire_round, pol_round: valid_round.as_u32(), block: block.clone() };
        let asked =
            LastSigned { height: Height(height.0), round: wire_round, step: SignStep::Proposal, value: Some(hash) };
        let signed = self.signer.sign(body, asked, &self.chain, &mut self.actions)?;
        self.proposed.remember(&signed, hash);
        self.actions.push(Action::Broadcast(ConsensusMessage::Block(Box::new(signed))));
        Ok(())
    }

    fn record_evidence(&mut self, evidence: &mcc::MisbehaviorEvidence<AgoraContext>) {
        for (_, pairs) in evidence.votes.iter() {
            for (first, second) in pairs {
                self.actions.push(Action::Evidence(VoteEquivocation {
                    first: first.message.to_wire(first.signature),
                    second: second.message.to_wire(second.signature),
                }));
            }
        }
    }

    /// Applies the decided block, hands it out for persistence, and moves
    /// consensus to the next height.
    fn commit(&mut self, cert: malachite_core_types::CommitCertificate<AgoraContext>) -> Result<(), Error> {
        let height = Height(cert.height.0);
        if height != self.ledger.height().next() {
            // Committed already from a gossiped decided block or by sync.
            return Ok(());
        }
        let Some(block) = self.proposed.blocks.get(&cert.value_id).cloned() else {
            // Decided without the block (it was lost, or we restarted): any
            // peer that committed it can send it with its certificate.
            self.actions.push(Action::MissingBlock { height, hash: cert.value_id });
            self.last_sync_request_ms = None;
            self.maybe_request_sync();
            return Ok(());
        };
        let applied = match self.proposed.applied.remove(&cert.value_id) {
            Some(checked) => checked,
            // A block decided without our verdict (or our own, proposed before a restart).
            None => self.apply_to_copy(&block, SigCheck::Skip)?,
        };
        let certificate = CommitCertificate {
            height,
            round: cert.round.as_u32().unwrap_or(0),
            block_hash: cert.value_id,
            signatures: cert
                .commit_signatures
                .iter()
                .map(|s: &CommitSignature<AgoraContext>| CommitSig { validator: s.address.0, signature: s.signature })
                .collect(),
        };
        self.finish_commit(block, certificate, applied)
    }

    /// Adopts the ledger as `block` left it (`applied`: the state with the
    /// block's writes pending, and its events), hands it out for
    /// persistence and starts consensus on the next height.
    fn finish_commit(
        &mut self,
        block: Block,
        certificate: CommitCertificate,
        (mut applied, events): (State, Vec<Event>),
    ) -> Result<(), Error> {
        finish_block(&mut applied, &block)?;
        self.ledger = applied;
        self.last_commit = Some(certificate.clone());
        self.proposed.clear();
        self.mempool.prune(&mut self.ledger);
        let state = Box::new(self.ledger.clone());
        self.actions.push(Action::Commit { block: Box::new(block), certificate, events, state });
        // The next height starts from a timer, never in the same call: a
        // lone validator would otherwise decide height after height forever,
        // and the pause paces blocks and lets late precommits arrive.
        let next = Timer(TimerKind::NextHeight(self.ledger.height().0 + 1));
        self.actions.push(Action::ScheduleTimeout { timer: next, after: self.config.commit_pause });
        Ok(())
    }
}

fn option_of(v: NilOrVal<Hash>) -> Option<Hash> {
    match v {
        NilOrVal::Nil => None,
        NilOrVal::Val(h) => Some(h),
    }
}

fn kind_of(t: VoteType) -> VoteKind {
    match t {
        VoteType::Prevote => VoteKind::Prevote,
        VoteType::Precommit => VoteKind::Precommit,
    }
}

fn vote_type_of(k: VoteKind) -> VoteType {
    match k {
        VoteKind::Prevote => VoteType::Prevote,
        VoteKind::Precommit => VoteType::Precommit,
    }
}

pub(crate) fn polka_to_wire(c: &PolkaCertificate<AgoraContext>) -> VoteCertificate {
    VoteCertificate {
        height: Height(c.height.0),
        round: c.round.as_u32().unwrap_or(0),
        round_kind: None,
        votes: c
            .polka_signatures
            .iter()
            .map(|s| CertSig {
                validator: s.address.0,
                kind: VoteKind::Prevote,
                block: Some(c.value_id),
                signature: s.signature,
            })
            .collect(),
    }
}

pub(crate) fn round_to_wire(c: &RoundCertificate<AgoraContext>) -> VoteCertificate {
    VoteCertificate {
        height: Height(c.height.0),
        round: c.round.as_u32().unwrap_or(0),
        round_kind: Some(match c.cert_type {
            RoundCertificateType::Skip => RoundCertKind::Skip,
            RoundCertificateType::Precommit => RoundCertKind::Precommit,
        }),
        votes: c
            .round_signatures
            .iter()
            .map(|s| CertSig {
                validator: s.address.0,
                kind: kind_of(s.vote_type),
                block: option_of(s.value_id),
                signature: s.signature,
            })
            .collect(),
    }
}

/// A gossiped certificate as Malachite's input; Malachite asks the host to
/// verify it (`VerifyPolkaCertificate` / `VerifyRoundCertificate`) before use.
pub(crate) fn certificate_input(c: VoteCertificate) -> McInput {
    let height = ConsensusHeight(c.height.0);
    let round = round_of(c.round);
    match c.round_kind {
        None => {
            let block = c.votes.first().and_then(|v| v.block).unwrap_or_default();
            McInput::PolkaCertificate(PolkaCertificate {
                height,
                round,
                value_id: block,
                polka_signatures: c
                    .votes
                    .iter()
                    .map(|v| PolkaSignature::new(ValidatorAddress(v.validator), v.signature))
                    .collect(),
            })
        }
        Some(kind) => McInput::RoundCertificate(RoundCertificate {
            height,
            round,
            cert_type: match kind {
                RoundCertKind::Skip => RoundCertificateType::Skip,
                RoundCertKind::Precommit => RoundCertificateType::Precommit,
            },
            round_signatures: c
                .votes
                .iter()
                .map(|v| {
                    RoundSignature::new(
                        vote_type_of(v.kind),
                        v.block.map_or(NilOrVal::Nil, NilOrVal::Val),
                        ValidatorAddress(v.validator),
                        v.signature,
                    )
                })
                .collect(),
        }),
    }
}
