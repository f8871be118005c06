//! Serving block sync to peers, off the consensus loop: which requests a
//! peer may have answered (a quota of requests in flight and per second,
//! decided without I/O), and building the answer from the store on a
//! blocking thread. A sync request is unauthenticated, so nothing about it
//! may cost the node's loop more than a map lookup.

use std::collections::HashMap;

use agora_ledger::store::BlockReader;
use agora_protocol::Height;
use agora_protocol::codec;
use agora_protocol::sync::{MAX_SYNC_BLOCKS, MAX_SYNC_RESPONSE_BYTES, SyncResponse};
use libp2p::PeerId;

use crate::error::Error;

/// Sync requests of one peer being answered at once, at most.
pub const MAX_SYNC_IN_FLIGHT_PER_PEER: u32 = 2;
/// Sync requests one peer may have answered per second (a catching-up node
/// asks for 16 blocks at a time, far below this).
pub const MAX_SYNC_REQUESTS_PER_PEER_PER_SEC: u32 = 20;
/// Peers tracked at most (each connected peer has an entry while it asks).
pub const MAX_TRACKED_PEERS: usize = 1_024;
/// Bytes allowed for a certificate next to each block in a response.
pub const SYNC_CERT_ALLOWANCE: usize = 16 * 1024;

/// Per-peer request quotas: at most `max_in_flight` requests being served
/// and `max_per_sec` admitted per second, per peer; a request over either is
/// refused at once. Used for block sync and for the lease protocol (probes,
/// proposals, logs).
#[derive(Debug)]
pub struct PeerQuota {
    /// Peer → (requests in flight, the second counted, requests in it).
    peers: HashMap<PeerId, (u32, u64, u32)>,
    max_in_flight: u32,
    max_per_sec: u32,
}

/// Lease-protocol requests (probes, proposals, logs) one peer may make per
/// second: a node relaying many buyers' log follows stays well inside it.
pub const MAX_LEASE_RPCS_PER_PEER_PER_SEC: u32 = 50;

impl Default for PeerQuota {
    /// The block-sync quota.
    fn default() -> Self {
        PeerQuota::new(MAX_SYNC_IN_FLIGHT_PER_PEER, MAX_SYNC_REQUESTS_PER_PEER_PER_SEC)
    }
}

impl PeerQuota {
    pub fn new(max_in_flight: u32, max_per_sec: u32) -> PeerQuota {
        PeerQuota { peers: HashMap::new(), max_in_flight, max_per_sec }
    }

    /// Whether `peer`'s request at `now_ms` is answered; if so it is counted in flight.
    pub fn admit(&mut self, peer: PeerId, now_ms: u64) -> bool {
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
    pub fn done(&mut self, peer: &PeerId) {
        if let Some(e) = self.peers.get_mut(peer) {
            e.0 = e.0.saturating_sub(1);
        }
    }
}

/// The heights a request for blocks after `have` (at most `max`, capped at
/// `MAX_SYNC_BLOCKS`) is answered with, given the tip. No value of `have` or
/// `max` may overflow.
pub fn sync_heights(have: u64, max: u32, tip: u64) -> std::ops::RangeInclusive<u64> {
    let end = have.saturating_add(u64::from(max.min(MAX_SYNC_BLOCKS))).min(tip);
    have.saturating_add(1)..=end
}

/// Builds the answer from the store (on a blocking thread): up to
/// `MAX_SYNC_BLOCKS` committed blocks after `have`, within the size limit.
pub fn build_response(reader: &BlockReader, have: u64, max: u32, tip: u64) -> Result<SyncResponse, Error> {
    let mut blocks = Vec::new();
    let mut size = 0usize;
    for h in sync_heights(have, max, tip) {
        let (Some(block), Some(cert)) = (reader.block(Height(h))?, reader.certificate(Height(h))?) else {
            break;
        };
        let len = codec::encode(&block)?.len() + SYNC_CERT_ALLOWANCE;
        // A block is at most 4 MiB, so the first always fits.
        if !blocks.is_empty() && size + len > MAX_SYNC_RESPONSE_BYTES {
            break;
        }
        size += len;
        blocks.push((block, cert));
    }
    Ok(SyncResponse { blocks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_requests_cannot_overflow_or_ask_for_too_much() {
        assert_eq!(sync_heights(10, 5, 100), 11..=15);
        assert_eq!(sync_heights(98, 5, 100), 99..=100);
        assert!(sync_heights(u64::MAX, u32::MAX, 100).is_empty(), "have at the top serves nothing");
        assert!(sync_heights(100, 5, 100).is_empty());
        assert_eq!(sync_heights(0, u32::MAX, 1_000).count(), MAX_SYNC_BLOCKS as usize);
    }

    #[test]
    fn a_peer_gets_a_few_requests_in_flight_and_a_bounded_rate() {
        let mut q = PeerQuota::default();
        let peer = |seed: &str| {
            let key = crate::identity::libp2p_keypair(&agora_protocol::Keypair::from_seed_phrase(seed)).unwrap();
            key.public().to_peer_id()
        };
        let (a, b) = (peer("a"), peer("b"));
        assert!(q.admit(a, 1_000) && q.admit(a, 1_000));
        assert!(!q.admit(a, 1_000), "a third in flight");
        assert!(q.admit(b, 1_000), "another peer has its own quota");
        for _ in 0..MAX_SYNC_REQUESTS_PER_PEER_PER_SEC {
            q.done(&a);
        }
        let mut answered = 2;
        for _ in 0..100 {
            if q.admit(a, 1_500) {
                answered += 1;
                q.done(&a);
            }
        }
        assert_eq!(answered, MAX_SYNC_REQUESTS_PER_PEER_PER_SEC, "per second, however fast it asks");
        assert!(q.admit(a, 2_000), "the next second starts afresh");
    }
}
