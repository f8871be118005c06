//! Consensus messages sent again (`ConsensusRepeat` on
//! `agora/consensus-repeat/1`). Gossip messages carry no publisher
//! signature and are identified by their content, so a validator re-sending
//! a vote after a stalled round wraps it with a fresh nonce to make it a new
//! message. Anyone can wrap copies of a current vote with fresh nonces, and
//! each would be forwarded by every node; so a node forwards repeats of one
//! message at most once per `REPEAT_INTERVAL_MS` (its first arrival, plain
//! or repeated, counts), and checks a message's signatures only the first
//! time. Pure: the daemon asks for a verdict and records what it forwarded.

use std::collections::{HashMap, VecDeque};

use agora_protocol::Hash;

/// Least time between two forwards of repeats of one message. Validators
/// re-send every few seconds (the rebroadcast timeout); a flood of copies
/// costs the network one forward of the message per interval.
pub const REPEAT_INTERVAL_MS: u64 = 1_000;
/// Messages remembered at most (the oldest are forgotten first): a few
/// heights of votes of the largest validator set.
pub const MAX_REMEMBERED: usize = 4_096;

/// What to do with a repeat of a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Never seen: check it as a new message.
    New,
    /// Checked before and not forwarded for an interval: forward it again
    /// without checking again.
    Again,
    /// Forwarded within the interval: drop it (no penalty: an honest relay
    /// can send a copy that crossed another).
    TooSoon,
}

/// The messages this node checked and forwarded, with when it last forwarded each.
#[derive(Debug, Default)]
pub struct Repeats {
    last: HashMap<Hash, u64>,
    order: VecDeque<Hash>,
}

impl Repeats {
    pub fn verdict(&self, id: &Hash, now_ms: u64) -> Verdict {
        match self.last.get(id) {
            None => Verdict::New,
            Some(&at) if now_ms.saturating_sub(at) >= REPEAT_INTERVAL_MS => Verdict::Again,
            Some(_) => Verdict::TooSoon,
        }
    }

    /// A message (plain or repeated) passed its checks and was forwarded at `now_ms`.
    pub fn forwarded(&mut self, id: Hash, now_ms: u64) {
        if self.last.insert(id, now_ms).is_none() {
            self.order.push_back(id);
            while self.order.len() > MAX_REMEMBERED {
                if let Some(old) = self.order.pop_front() {
                    self.last.remove(&old);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

/// The id a consensus message is remembered by: a hash of its encoding.
pub fn id_of(encoded: &[u8]) -> Hash {
    Hash::tagged(b"agora/consensus-id/1", encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_of_a_message_are_forwarded_once_an_interval_and_checked_once() {
        let mut r = Repeats::default();
        let (a, b) = (id_of(b"vote a"), id_of(b"vote b"));
        assert_eq!(r.verdict(&a, 0), Verdict::New);
        r.forwarded(a, 1_000);
        assert_eq!(r.verdict(&a, 1_001), Verdict::TooSoon, "a copy right after the original");
        assert_eq!(r.verdict(&a, 1_000 + REPEAT_INTERVAL_MS - 1), Verdict::TooSoon);
        assert_eq!(r.verdict(&a, 1_000 + REPEAT_INTERVAL_MS), Verdict::Again, "a repeat an interval later");
        r.forwarded(a, 1_000 + REPEAT_INTERVAL_MS);
        assert_eq!(r.verdict(&a, 1_000 + REPEAT_INTERVAL_MS + 1), Verdict::TooSoon, "the interval starts over");
        assert_eq!(r.verdict(&b, 1_001), Verdict::New, "another message is judged on its own");
        // A flood of copies with fresh nonces, every millisecond for 10 s: forwarded 10 times.
        let mut r = Repeats::default();
        let forwards = (0..10_000u64)
            .filter(|&t| {
                let go = r.verdict(&a, t) != Verdict::TooSoon;
                if go {
                    r.forwarded(a, t);
                }
                go
            })
            .count();
        assert_eq!(forwards as u64, 10_000 / REPEAT_INTERVAL_MS);
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_are_forgotten_first() {
        let mut r = Repeats::default();
        for i in 0..MAX_REMEMBERED as u64 + 10 {
            r.forwarded(id_of(&i.to_le_bytes()), i);
        }
        assert_eq!(r.len(), MAX_REMEMBERED);
        assert_eq!(r.verdict(&id_of(&0u64.to_le_bytes()), 0), Verdict::New, "the oldest forgotten");
        let newest = MAX_REMEMBERED as u64 + 9;
        assert_eq!(r.verdict(&id_of(&newest.to_le_bytes()), newest), Verdict::TooSoon);
    }
}
