//! The double-sign guard (CometBFT's "private validator state"): the last
//! (height, round, step, value) this validator signed. Before any vote or
//! proposal signature leaves the node, the engine asks the guard; a request
//! that would conflict with what was signed (an earlier height, round or step,
//! or another value at the same step) is refused, and a new one is recorded
//! and handed out to be made durable (`Action::PersistSigned`, written by the
//! daemon with one fdatasync before it broadcasts anything). So even a
//! validator whose consensus WAL was lost (power cut, damaged disk, a copied
//! data directory) cannot sign two different things for one step.

use std::path::Path;

use agora_protocol::codec::{self, Wire};
use agora_protocol::{Hash, Height};
use serde::{Deserialize, Serialize};

use crate::durable::SlotFile;
use crate::error::Error;

/// Steps in the order a round signs them.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SignStep {
    Proposal,
    Prevote,
    Precommit,
}

/// What the validator signed last; persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSigned {
    pub height: Height,
    pub round: u32,
    pub step: SignStep,
    /// The block voted or proposed; `None` for a nil vote.
    pub value: Option<Hash>,
}

impl Wire for LastSigned {
    const NAME: &'static str = "signer state";
    const VERSION: u8 = 1;
    const MAX_BYTES: usize = 128;
}

/// Why a signature was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub asked: LastSigned,
    pub signed: LastSigned,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |s: &LastSigned| {
            let value = s.value.map_or("nil".to_string(), |h| h.to_hex()[..12].to_string());
            format!("{:?} for {value} at height {} round {}", s.step, s.height, s.round)
        };
        write!(
            f,
            "refusing to sign {}: this validator already signed {} (its consensus WAL is missing or damaged)",
            show(&self.asked),
            show(&self.signed)
        )
    }
}

/// The guard: the last signed step, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignGuard {
    last: Option<LastSigned>,
}

impl SignGuard {
    pub fn new(last: Option<LastSigned>) -> SignGuard {
        SignGuard { last }
    }

    pub fn last(&self) -> Option<&LastSigned> {
        self.last.as_ref()
    }

    /// Whether `asked` may be signed. `Ok(Some(_))`: yes, and it is the new
    /// state to persist before the signature is used; `Ok(None)`: yes, it is
    /// exactly what was signed last (signing again yields the same bytes);
    /// `Err`: it would conflict.
    pub fn check(&mut self, asked: LastSigned) -> Result<Option<LastSigned>, Conflict> {
        if let Some(signed) = &self.last {
            let at = |s: &LastSigned| (s.height, s.round, s.step);
            if at(&asked) < at(signed) || (at(&asked) == at(signed) && asked.value != signed.value) {
                return Err(Conflict { asked, signed: signed.clone() });
            }
            if asked == *signed {
                return Ok(None);
            }
        }
        self.last = Some(asked.clone());
        Ok(Some(asked))
    }
}

/// The guard's state on disk: one fdatasync'd write per new signature.
#[derive(Debug)]
pub struct SignerFile {
    slots: SlotFile,
}

impl SignerFile {
    /// Opens (or creates) the file and returns the last signed step in it.
    pub fn open(path: &Path) -> Result<(SignerFile, Option<LastSigned>), Error> {
        let (slots, payload) = SlotFile::open(path)?;
        let last = payload.map(|p| codec::decode::<LastSigned>(&p)).transpose().map_err(|e| {
            Error::SignRefused(format!("{}: unreadable signer state ({e}); refusing to sign", path.display()))
        })?;
        Ok((SignerFile { slots }, last))
    }

    /// Records `last` durably.
    pub fn write(&mut self, last: &LastSigned) -> Result<(), Error> {
        self.slots.write(&codec::encode(last)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: u64, r: u32, step: SignStep, v: Option<u8>) -> LastSigned {
        LastSigned { height: Height(h), round: r, step, value: v.map(|b| Hash([b; 32])) }
    }

    #[test]
    fn the_guard_refuses_going_back_and_a_second_value_for_one_step() {
        let mut g = SignGuard::default();
        assert!(g.check(at(5, 0, SignStep::Proposal, Some(1))).unwrap().is_some());
        assert_eq!(g.check(at(5, 0, SignStep::Proposal, Some(1))), Ok(None), "the same proposal again");
        assert!(g.check(at(5, 0, SignStep::Proposal, Some(2))).is_err(), "another block in the same round");
        assert!(g.check(at(5, 0, SignStep::Prevote, Some(1))).unwrap().is_some());
        assert!(g.check(at(5, 0, SignStep::Prevote, None)).is_err(), "nil after a prevote for a block");
        assert!(g.check(at(5, 0, SignStep::Proposal, Some(1))).is_err(), "back a step");
        assert!(g.check(at(5, 0, SignStep::Precommit, None)).unwrap().is_some());
        assert!(g.check(at(5, 1, SignStep::Prevote, Some(3))).unwrap().is_some(), "a later round may vote anew");
        assert!(g.check(at(5, 0, SignStep::Precommit, None)).is_err(), "back a round");
        assert!(g.check(at(4, 9, SignStep::Precommit, None)).is_err(), "back a height");
        assert!(g.check(at(6, 0, SignStep::Prevote, None)).unwrap().is_some());
        let e = g.check(at(6, 0, SignStep::Prevote, Some(7))).unwrap_err();
        assert!(e.to_string().contains("already signed Prevote for nil at height 6 round 0"), "{e}");
    }

    #[test]
    fn the_signer_file_returns_what_was_written_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signer");
        let (mut f, none) = SignerFile::open(&path).unwrap();
        assert_eq!(none, None);
        f.write(&at(3, 1, SignStep::Prevote, Some(4))).unwrap();
        f.write(&at(3, 1, SignStep::Precommit, None)).unwrap();
        drop(f);
        assert_eq!(SignerFile::open(&path).unwrap().1, Some(at(3, 1, SignStep::Precommit, None)));
    }
}
