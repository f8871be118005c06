//! The consensus write-ahead log's entries. Malachite asks its host to append
//! every input that changes what this node may sign (votes, proposals,
//! proposed values, certificates, elapsed timeouts) before acting on it; after
//! a crash the entries of the current height are replayed, so the node re-signs
//! exactly what it signed before and never two different votes for one round.

use std::path::Path;
use std::time::Duration;

use agora_protocol::codec::Wire;
use agora_protocol::consensus::{ConsensusMessage, Proposal, Vote, VoteCertificate};
use agora_protocol::limits::MAX_CONSENSUS_MSG_BYTES;
use agora_protocol::{Address, Hash, Height, Signed};
use malachite_core_consensus::{self as mcc, ProposedValue};
use malachite_core_types::{SignedMessage, Timeout, TimeoutKind, Validity, ValueOrigin};
use serde::{Deserialize, Serialize};

use crate::durable::AppendLog;
use crate::error::Error;

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

    /// Who signed the vote or proposal this entry records, if it records one.
    pub fn signer(&self) -> Option<Address> {
        match self {
            WalEntry::Vote(v) => Some(v.signer),
            WalEntry::Proposal(p) => Some(p.signer),
            _ => None,
        }
    }

    /// The step a vote or proposal entry signed, for the double-sign guard.
    pub fn signed_step(&self) -> Option<super::signer::LastSigned> {
        use super::signer::{LastSigned, SignStep};
        match self {
            WalEntry::Vote(v) => Some(LastSigned {
                height: v.body.height,
                round: v.body.round,
                step: match v.body.kind {
                    agora_protocol::consensus::VoteKind::Prevote => SignStep::Prevote,
                    agora_protocol::consensus::VoteKind::Precommit => SignStep::Precommit,
                },
                value: v.body.block,
            }),
            WalEntry::Proposal(p) => Some(LastSigned {
                height: p.body.height,
                round: p.body.round,
                step: SignStep::Proposal,
                value: Some(p.body.block),
            }),
            _ => None,
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

/// The consensus WAL on disk: an append-only file of (height, entry)
/// records. This node's own votes and proposals are appended with fdatasync
/// (which makes every earlier record durable too), others' without: losing
/// them after a power cut costs only a re-gossip, never a second signature.
/// Entries of committed heights are dropped at each commit.
#[derive(Debug)]
pub struct WalFile {
    log: AppendLog,
    /// The records in the file, for rewriting when a commit drops some.
    records: Vec<(Height, Vec<u8>)>,
}

impl WalFile {
    /// Opens (or creates) the WAL; returns it and its entries in append order.
    pub fn open(path: &Path) -> Result<(WalFile, Vec<(Height, WalEntry)>), Error> {
        let (log, raw) = AppendLog::open(path)?;
        let mut records = Vec::with_capacity(raw.len());
        let mut entries = Vec::with_capacity(raw.len());
        for r in raw {
            let (h, body) = r.split_at_checked(8).ok_or_else(|| corrupt(path, "record shorter than its height"))?;
            let height = Height(u64::from_le_bytes(h.try_into().map_err(|_| corrupt(path, "bad height"))?));
            entries.push((height, agora_protocol::codec::decode(body).map_err(|e| corrupt(path, e))?));
            records.push((height, r));
        }
        Ok((WalFile { log, records }, entries))
    }

    /// Appends an entry for `height`; with `durable`, on disk when this returns.
    pub fn append(&mut self, height: Height, entry: &WalEntry, durable: bool) -> Result<(), Error> {
        let mut record = height.0.to_le_bytes().to_vec();
        record.extend_from_slice(&agora_protocol::codec::encode(entry)?);
        self.log.append(&record, durable)?;
        self.records.push((height, record));
        Ok(())
    }

    /// Drops the entries of `height` and below (it has committed).
    pub fn prune_through(&mut self, height: Height) -> Result<(), Error> {
        if self.records.iter().all(|(h, _)| *h > height) {
            return Ok(());
        }
        self.records.retain(|(h, _)| *h > height);
        let keep: Vec<Vec<u8>> = self.records.iter().map(|(_, r)| r.clone()).collect();
        self.log.rewrite(&keep)?;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

fn corrupt(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Durable(crate::durable::DurableError { path: path.display().to_string(), reason: format!("WAL: {reason}") })
}
