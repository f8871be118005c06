//! Block sync, both sides, as decisions without I/O that the daemon and the
//! deterministic simulation drive alike. Fetching: which connected peer to
//! ask next (round robin, one request at a time) and whether to ask again.
//! Serving: which heights a request is answered with and the answer itself,
//! built from any block source within the response size limit (the daemon
//! reads its store on a blocking thread, never on the consensus loop: a sync
//! request is unauthenticated, so it may cost the loop no more than a quota
//! lookup, see [`crate::quota`]).

use agora_ledger::store::BlockReader;
use agora_protocol::block::CommitCertificate;
use agora_protocol::codec;
use agora_protocol::sync::{MAX_SYNC_BLOCKS, MAX_SYNC_RESPONSE_BYTES, SyncRequest, SyncResponse};
use agora_protocol::{Block, Height};

use crate::error::Error;

/// Sync requests of one peer being answered at once, at most.
pub const MAX_SYNC_IN_FLIGHT_PER_PEER: u32 = 2;
/// Sync requests one peer may have answered per second (a catching-up node
/// asks for 16 blocks at a time, far below this).
pub const MAX_SYNC_REQUESTS_PER_PEER_PER_SEC: u32 = 20;
/// Bytes allowed for a certificate next to each block in a response.
pub const SYNC_CERT_ALLOWANCE: usize = 16 * 1024;

/// The heights a request for blocks after `have` (at most `max`, capped at
/// `MAX_SYNC_BLOCKS`) is answered with, given the tip. No value of `have` or
/// `max` may overflow.
pub fn sync_heights(have: u64, max: u32, tip: u64) -> std::ops::RangeInclusive<u64> {
    let end = have.saturating_add(u64::from(max.min(MAX_SYNC_BLOCKS))).min(tip);
    have.saturating_add(1)..=end
}

/// The quota sync requests are served within.
pub fn sync_quota<P: std::hash::Hash + Eq>() -> crate::quota::PeerQuota<P> {
    crate::quota::PeerQuota::new(MAX_SYNC_IN_FLIGHT_PER_PEER, MAX_SYNC_REQUESTS_PER_PEER_PER_SEC)
}

/// Where committed blocks and their certificates are read from to serve sync.
pub trait BlockSource {
    /// The block at `height` and its commit certificate, if held.
    fn committed(&self, height: Height) -> Result<Option<(Block, CommitCertificate)>, Error>;
}

impl BlockSource for BlockReader {
    fn committed(&self, height: Height) -> Result<Option<(Block, CommitCertificate)>, Error> {
        Ok(match (self.block(height)?, self.certificate(height)?) {
            (Some(block), Some(cert)) => Some((block, cert)),
            _ => None,
        })
    }
}

/// Blocks held in memory in height order from height 1 (the simulation's store).
impl BlockSource for [(Block, CommitCertificate)] {
    fn committed(&self, height: Height) -> Result<Option<(Block, CommitCertificate)>, Error> {
        let index = height.0.checked_sub(1).and_then(|i| usize::try_from(i).ok());
        Ok(index.and_then(|i| <[_]>::get(self, i)).cloned())
    }
}

/// Builds the answer to `request` from `source`, whose tip is `tip`: up to
/// `MAX_SYNC_BLOCKS` committed blocks after `have`, within the size limit.
pub fn build_response<S: BlockSource + ?Sized>(
    source: &S,
    request: &SyncRequest,
    tip: u64,
) -> Result<SyncResponse, Error> {
    let mut blocks = Vec::new();
    let mut size = 0usize;
    for h in sync_heights(request.have.0, request.max, tip) {
        let Some((block, cert)) = source.committed(Height(h))? else {
            break;
        };
        let len = codec::encoded_len(&block)? + SYNC_CERT_ALLOWANCE;
        // A block is at most 4 MiB, so the first always fits.
        if !blocks.is_empty() && size + len > MAX_SYNC_RESPONSE_BYTES {
            break;
        }
        size += len;
        blocks.push((block, cert));
    }
    Ok(SyncResponse { blocks })
}

/// The fetching side: the connected peers, which to ask next, and the one
/// request in flight (a second is never sent while one is out: answers
/// arrive in order and each extends the chain the next one starts from).
#[derive(Debug)]
pub struct SyncClient<P> {
    peers: Vec<P>,
    next: usize,
    in_flight: Option<P>,
}

impl<P> Default for SyncClient<P> {
    fn default() -> Self {
        SyncClient { peers: Vec::new(), next: 0, in_flight: None }
    }
}

impl<P: Copy + Eq> SyncClient<P> {
    pub fn connected(&mut self, peer: P) {
        if !self.peers.contains(&peer) {
            self.peers.push(peer);
        }
    }

    /// The peer is gone; a request out to it will never be answered.
    pub fn disconnected(&mut self, peer: &P) {
        self.peers.retain(|p| p != peer);
        if self.in_flight.as_ref() == Some(peer) {
            self.in_flight = None;
        }
    }

    pub fn peers(&self) -> &[P] {
        &self.peers
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The request to send for the blocks after `have`, and to whom: the
    /// next peer in turn, so one peer that does not answer cannot hold sync
    /// up. None while a request is out or no peer is connected.
    pub fn request(&mut self, have: Height) -> Option<(P, SyncRequest)> {
        if self.in_flight.is_some() || self.peers.is_empty() {
            return None;
        }
        self.next = (self.next + 1) % self.peers.len();
        let peer = self.peers[self.next];
        self.in_flight = Some(peer);
        Some((peer, SyncRequest { have, max: MAX_SYNC_BLOCKS }))
    }

    /// An answer with `blocks` blocks arrived: whether to ask again at once
    /// (a full answer means the peer has more).
    pub fn answered(&mut self, blocks: usize) -> bool {
        self.in_flight = None;
        blocks as u64 >= u64::from(MAX_SYNC_BLOCKS)
    }

    /// The request failed (timeout, connection lost): the next one goes to another peer.
    pub fn failed(&mut self) {
        self.in_flight = None;
    }
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
    fn sync_asks_one_peer_at_a_time_in_turn() {
        let mut c = SyncClient::default();
        assert!(c.request(Height(0)).is_none(), "no peers");
        c.connected(1u8);
        c.connected(2);
        c.connected(2);
        assert_eq!(c.peers(), &[1, 2]);
        let (first, req) = c.request(Height(7)).unwrap();
        assert_eq!((req.have, req.max), (Height(7), MAX_SYNC_BLOCKS));
        assert!(c.request(Height(7)).is_none(), "one request in flight");
        assert!(!c.answered(3), "a short answer: caught up");
        let (second, _) = c.request(Height(10)).unwrap();
        assert_ne!(first, second, "round robin");
        c.disconnected(&second);
        assert!(!c.in_flight(), "a request to a departed peer is given up");
        assert_eq!(c.request(Height(10)).map(|(p, _)| p), Some(first));
        assert!(c.answered(MAX_SYNC_BLOCKS as usize), "a full answer: ask again");
    }

    #[test]
    fn the_store_and_the_simulation_answer_alike() {
        let chain = agora_ledger::testkit::TestChain::new(2, 1, agora_protocol::Amount::agr(10));
        let tmp = tempfile::tempdir().unwrap();
        let mut store = agora_ledger::Store::open(tmp.path(), &chain.genesis).unwrap();
        let mut blocks = Vec::new();
        for _ in 0..20 {
            let block = chain.next_block(&mut store.state().clone(), vec![]).unwrap();
            let cert = CommitCertificate {
                height: block.header.height,
                round: 0,
                block_hash: block.hash(),
                signatures: vec![],
            };
            store.commit_certified(&block, &cert).unwrap();
            blocks.push((block, cert));
        }
        let req = SyncRequest { have: Height(2), max: 5 };
        let served = build_response(blocks.as_slice(), &req, 20).unwrap();
        let heights: Vec<u64> = served.blocks.iter().map(|(b, _)| b.header.height.0).collect();
        assert_eq!(heights, vec![3, 4, 5, 6, 7]);
        assert_eq!(build_response(&store.reader(), &req, 20).unwrap(), served);
        let past_tip = SyncRequest { have: Height(18), max: 5 };
        assert_eq!(build_response(blocks.as_slice(), &past_tip, 20).unwrap().blocks.len(), 2);
    }
}
