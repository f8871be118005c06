//! Per-peer request quotas: a decision without I/O, used wherever a peer's
//! unauthenticated requests cost this node work (block sync, the lease
//! protocol: probes, proposals, logs), by the daemon and the simulation.

use std::collections::HashMap;
use std::hash::Hash;

/// Peers tracked at most (each connected peer has an entry while it asks).
pub const MAX_TRACKED_PEERS: usize = 1_024;

/// Per-peer request quotas: at most `max_in_flight` requests being served
/// and `max_per_sec` admitted per second, per peer; a request over either is
/// refused at once. Used for block sync and for the lease protocol (probes,
/// proposals, logs).
#[derive(Debug)]
pub struct PeerQuota<P> {
    /// Peer → (requests in flight, the second counted, requests in it).
    peers: HashMap<P, (u32, u64, u32)>,
    max_in_flight: u32,
    max_per_sec: u32,
}

/// Lease-protocol requests (probes, proposals, logs) one peer may make per
/// second: a node relaying many buyers' log follows stays well inside it.
pub const MAX_LEASE_RPCS_PER_PEER_PER_SEC: u32 = 50;

impl<P: Hash + Eq> PeerQuota<P> {
    /// The lease-protocol quota: answered in the loop, so one in flight.
    pub fn lease() -> PeerQuota<P> {
        PeerQuota::new(1, MAX_LEASE_RPCS_PER_PEER_PER_SEC)
    }

    pub fn new(max_in_flight: u32, max_per_sec: u32) -> PeerQuota<P> {
        PeerQuota { peers: HashMap::new(), max_in_flight, max_per_sec }
    }

    /// Whether `peer`'s request at `now_ms` is answered; if so it is counted in flight.
    pub fn admit(&mut self, peer: P, now_ms: u64) -> bool {
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_TRACKED_PEERS {
            self.peers.retain(|_, (in_flight, _, _)| *in_flight > 0);
            if self.peers.len() >= MAX_TRACKED_PEERS {
                return false;
            }
        }
        let second = now_ms / 1000;
        let entry = self.peers.entry(peer).or_insert((0, second, 0));
        if entry.1 != second {
            (entry.1, entry.2) = (second, 0);
        }
        if entry.0 >= self.max_in_flight || entry.2 >= self.max_per_sec {
            return false;
        }
        entry.0 += 1;
        entry.2 += 1;
        true
    }

    /// `peer`'s admitted request has been answered.
    pub fn done(&mut self, peer: &P) {
        if let Some(e) = self.peers.get_mut(peer) {
            e.0 = e.0.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_a_few_requests_in_flight_and_a_bounded_rate() {
        const PER_SEC: u32 = 20;
        let mut q = PeerQuota::new(2, PER_SEC);
        let (a, b) = ("a", "b");
        assert!(q.admit(a, 1_000) && q.admit(a, 1_000));
        assert!(!q.admit(a, 1_000), "a third in flight");
        assert!(q.admit(b, 1_000), "another peer has its own quota");
        q.done(&a);
        q.done(&a);
        let mut answered = 2;
        for _ in 0..100 {
            if q.admit(a, 1_500) {
                answered += 1;
                q.done(&a);
            }
        }
        assert_eq!(answered, PER_SEC, "per second, however fast it asks");
        assert!(q.admit(a, 2_000), "the next second starts afresh");
    }

    #[test]
    fn strangers_beyond_the_tracked_limit_are_refused_not_remembered() {
        let mut q = PeerQuota::new(1, 10);
        for p in 0..MAX_TRACKED_PEERS {
            assert!(q.admit(p, 0), "peer {p} within the limit");
        }
        assert!(!q.admit(MAX_TRACKED_PEERS, 0), "every tracked peer still in flight: no room");
        q.done(&0);
        assert!(q.admit(MAX_TRACKED_PEERS, 0), "idle entries are dropped to make room");
        assert!(q.peers.len() <= MAX_TRACKED_PEERS);
    }
}
