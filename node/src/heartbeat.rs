//! The provider's heartbeat signer. Two heartbeats with one sequence number
//! are equivocation (tombstone, 5% burned), so a sequence number must never
//! be signed twice — not after a restart, not after the clock steps back.
//! The highest sequence number that may have been signed is reserved ahead
//! in an fdatasync'd file before any signature; probes are answered from the
//! latest heartbeat, so a prober cannot make the provider sign at will.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_protocol::{ChainId, Hash, Heartbeat, Height, Keypair, Signed};

use crate::error::Error;

/// How far ahead (in sequence numbers, which follow the clock in ms) a
/// reservation reaches: one fsync a minute at one heartbeat a second.
pub const SEQ_RESERVE: u64 = 60_000;
/// A probe is answered with the latest heartbeat if it is at most this old;
/// otherwise a new one is signed (so probes cause at most one signature per this period).
pub const PROBE_ANSWER_MAX_AGE: Duration = Duration::from_secs(1);

/// The next sequence number after `last`: rising, and following the clock so
/// it keeps rising across restarts.
pub fn next_seq(last: u64, now_ms: u64) -> u64 {
    last.saturating_add(1).max(now_ms)
}

/// The new reservation to make durable before signing `seq`, if the current one does not cover it.
pub fn reservation_for(seq: u64, reserved: u64) -> Option<u64> {
    (seq > reserved).then(|| seq.saturating_add(SEQ_RESERVE))
}

/// The signing rules without I/O, driven alike by the daemon (which
/// reserves in a file) and the simulation (which reserves on its simulated
/// disk): sequence numbers, the reservation to make durable before a
/// signature, and the latest heartbeat for probes.
#[derive(Debug, Default)]
pub struct HeartbeatSeq {
    /// The last sequence number handed out.
    last: u64,
    /// Every sequence number ever signed is at most this (durable).
    reserved: u64,
    /// The latest heartbeat and the time (ms) it was signed.
    latest: Option<(Signed<Heartbeat>, u64)>,
}

impl HeartbeatSeq {
    /// After a start: anything up to the durable reservation may have been
    /// signed before a crash, so numbering resumes above it.
    pub fn recovered(reserved: u64) -> HeartbeatSeq {
        HeartbeatSeq { last: reserved, reserved, latest: None }
    }

    /// Signs a new heartbeat at `height`/`block_hash`; `reserve` must make a
    /// new reservation durable before it returns, and is called before the
    /// signature whenever the current one does not cover the number.
    pub fn sign(
        &mut self,
        key: &Keypair,
        chain: &ChainId,
        (height, block_hash): (Height, Hash),
        now_ms: u64,
        reserve: impl FnOnce(u64) -> Result<(), Error>,
    ) -> Result<Signed<Heartbeat>, Error> {
        let seq = next_seq(self.last, now_ms);
        if let Some(r) = reservation_for(seq, self.reserved) {
            reserve(r)?;
            self.reserved = r;
        }
        self.last = seq;
        let hb = Signed::sign(Heartbeat { seq, height, block_hash }, key, chain)?;
        self.latest = Some((hb.clone(), now_ms));
        Ok(hb)
    }

    /// The latest heartbeat, if signed within [`PROBE_ANSWER_MAX_AGE`] of
    /// `now_ms` (and not after it: a clock stepped back signs anew).
    pub fn recent(&self, now_ms: u64) -> Option<Signed<Heartbeat>> {
        let max_age = PROBE_ANSWER_MAX_AGE.as_millis() as u64;
        self.latest.as_ref().filter(|(_, at)| *at <= now_ms && now_ms - at <= max_age).map(|(hb, _)| hb.clone())
    }
}

/// This provider's heartbeat signer: [`HeartbeatSeq`] reserving in an
/// fdatasync'd file.
pub struct HeartbeatSigner {
    path: PathBuf,
    seq: HeartbeatSeq,
}

impl HeartbeatSigner {
    /// Opens the reservation file (none yet: nothing was ever signed).
    pub fn open(path: &Path) -> Result<HeartbeatSigner, Error> {
        let reserved = match std::fs::read_to_string(path) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| Error::Config {
                path: path.to_path_buf(),
                reason: "the heartbeat sequence file is corrupt; refusing to risk signing a sequence twice".into(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(Error::io(path)(e)),
        };
        Ok(HeartbeatSigner { path: path.to_path_buf(), seq: HeartbeatSeq::recovered(reserved) })
    }

    /// Signs a new heartbeat at `height`/`block_hash`, reserving its sequence number durably first.
    pub fn sign(
        &mut self,
        key: &Keypair,
        chain: &ChainId,
        height: Height,
        block_hash: Hash,
        now_ms: u64,
    ) -> Result<Signed<Heartbeat>, Error> {
        let path = &self.path;
        self.seq.sign(key, chain, (height, block_hash), now_ms, |reserve| {
            // Survives a power cut: temp file, fdatasync, rename, directory fsync.
            agora_ledger::durable::write_atomically(path, reserve.to_string().as_bytes())
                .map_err(|e| Error::from(agora_ledger::Error::from(e)))
        })
    }

    /// The latest heartbeat, if signed within [`PROBE_ANSWER_MAX_AGE`].
    pub fn recent(&self, now_ms: u64) -> Option<Signed<Heartbeat>> {
        self.seq.recent(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Keypair {
        Keypair::from_seed_phrase("provider")
    }

    fn chain() -> ChainId {
        ChainId::new("agora-test-1").unwrap()
    }

    #[test]
    fn no_sequence_is_signed_twice_across_restarts_and_clock_steps() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("heartbeat.seq");
        let mut seen = std::collections::BTreeSet::new();
        let now = 1_800_000_000_000;
        let mut s = HeartbeatSigner::open(&path).unwrap();
        for i in 0..5 {
            let hb = s.sign(&key(), &chain(), Height(i), Hash([0; 32]), now + i * 1000).unwrap();
            assert!(seen.insert(hb.body.seq));
        }
        // A restart with the clock stepped back an hour: the old numbers are behind the reservation.
        drop(s);
        let mut s = HeartbeatSigner::open(&path).unwrap();
        for i in 0..5 {
            let hb = s.sign(&key(), &chain(), Height(i), Hash([0; 32]), now - 3_600_000 + i).unwrap();
            assert!(seen.insert(hb.body.seq), "sequence {} signed twice", hb.body.seq);
        }
        // A crash right after a reservation: the file alone decides, never the memory.
        drop(s);
        let reserved: u64 = std::fs::read_to_string(&path).unwrap().trim().parse().unwrap();
        assert!(seen.iter().all(|s| *s <= reserved), "every signed number was reserved first");
        let mut s = HeartbeatSigner::open(&path).unwrap();
        assert!(s.sign(&key(), &chain(), Height(9), Hash([0; 32]), 0).unwrap().body.seq > reserved);
    }

    #[test]
    fn a_corrupt_sequence_file_stops_the_provider_instead_of_guessing() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("heartbeat.seq");
        std::fs::write(&path, "garbage").unwrap();
        assert!(HeartbeatSigner::open(&path).is_err());
    }

    #[test]
    fn probes_are_answered_from_the_latest_heartbeat() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = HeartbeatSigner::open(&tmp.path().join("heartbeat.seq")).unwrap();
        assert!(s.recent(5).is_none());
        let hb = s.sign(&key(), &chain(), Height(1), Hash([1; 32]), 5).unwrap();
        assert_eq!(s.recent(1_000), Some(hb), "the same signed heartbeat, no new signature");
        assert!(s.recent(1_006).is_none(), "too old: a probe then makes it sign anew");
        assert!(s.recent(4).is_none(), "the clock stepped back");
        assert_eq!(reservation_for(10, 100), None);
        assert_eq!(reservation_for(101, 100), Some(101 + SEQ_RESERVE));
    }
}
