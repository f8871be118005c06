//! The provider's heartbeat signer. Two heartbeats with one sequence number
//! are equivocation (tombstone, 5% burned), so a sequence number must never
//! be signed twice — not after a restart, not after the clock steps back.
//! The highest sequence number that may have been signed is reserved ahead
//! in an fdatasync'd file before any signature; probes are answered from the
//! latest heartbeat, so a prober cannot make the provider sign at will.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// Sequence numbers and the latest heartbeat of this provider.
pub struct HeartbeatSigner {
    path: PathBuf,
    /// The last sequence number handed out.
    last: u64,
    /// Every sequence number ever signed is at most this (durable).
    reserved: u64,
    latest: Option<(Signed<Heartbeat>, Instant)>,
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
        // Anything up to the reservation may have been signed before a crash.
        Ok(HeartbeatSigner { path: path.to_path_buf(), last: reserved, reserved, latest: None })
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
        let seq = next_seq(self.last, now_ms);
        if let Some(reserve) = reservation_for(seq, self.reserved) {
            // Survives a power cut: temp file, fdatasync, rename, directory fsync.
            agora_ledger::durable::write_atomically(&self.path, reserve.to_string().as_bytes())
                .map_err(agora_ledger::Error::from)?;
            self.reserved = reserve;
        }
        self.last = seq;
        let hb = Signed::sign(Heartbeat { seq, height, block_hash }, key, chain)?;
        self.latest = Some((hb.clone(), Instant::now()));
        Ok(hb)
    }

    /// The latest heartbeat, if signed within [`PROBE_ANSWER_MAX_AGE`].
    pub fn recent(&self) -> Option<Signed<Heartbeat>> {
        self.latest.as_ref().filter(|(_, at)| at.elapsed() <= PROBE_ANSWER_MAX_AGE).map(|(hb, _)| hb.clone())
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
        assert!(s.recent().is_none());
        let hb = s.sign(&key(), &chain(), Height(1), Hash([1; 32]), 5).unwrap();
        assert_eq!(s.recent(), Some(hb), "the same signed heartbeat, no new signature");
        assert_eq!(reservation_for(10, 100), None);
        assert_eq!(reservation_for(101, 100), Some(101 + SEQ_RESERVE));
    }
}
