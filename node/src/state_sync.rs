//! State sync, the joining side: a new node asks its peers which state
//! snapshots they hold, keeps the offers certified by validators it trusts
//! (its genesis'), picks the newest, and fetches that snapshot's chunks one
//! at a time from the peers that offered it, in turn, each checked against
//! the certified state root before the next is asked for; then the block
//! the snapshot is of, by block sync. A peer whose offer or chunk does not
//! verify is penalised (dropped and blocked) and never asked again.
//!
//! `StateSync` makes every decision without I/O; `join` drives it over a
//! libp2p swarm of its own before the daemon starts, and installs the
//! result as the node's store. The serving side's answer (`answer`, from
//! any `SnapshotSource`) is here too, so the daemon and the simulation
//! serve alike.

use std::path::Path;
use std::time::{Duration, Instant};

use agora_ledger::snapshot::{Restore, Restored, Snapshot};
use agora_ledger::{Genesis, Store, Validator};
use agora_protocol::snapshot::{
    MAX_SNAPSHOT_OFFERS, SnapshotChunk, SnapshotOffer, SnapshotRefusal, SnapshotRequest, SnapshotResponse,
};
use agora_protocol::sync::{SyncRequest, SyncResponse};
use agora_protocol::{Block, ChainId, CommitCertificate, Hash, Height, Keypair};
use futures::StreamExt;
use libp2p::request_response::{self, Message};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};

use crate::config::NodeConfig;
use crate::error::Error;
use crate::net::{BehaviourEvent, build_swarm};

/// After the first offer arrives, how long the other peers asked have to answer.
pub const OFFER_WAIT: Duration = Duration::from_secs(2);
/// How long a joining node looks for a snapshot before giving up.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a whole state sync may take before giving up.
pub const STATE_SYNC_TIMEOUT: Duration = Duration::from_secs(600);
/// How often peers that had no snapshot are asked again.
pub const ASK_AGAIN: Duration = Duration::from_secs(2);

/// Snapshots offered by other peers that were passed over, remembered at
/// most (for the error when the trusted one never comes).
pub const MAX_PASSED_OVER: usize = 16;

/// Where a serving peer's snapshots are read from.
pub trait SnapshotSource {
    /// The offers of the snapshots kept, newest first.
    fn offers(&self) -> Result<Vec<SnapshotOffer>, Error>;
    /// Chunk `index` of the snapshot at `height`, if kept.
    fn chunk(&self, height: Height, index: u32) -> Result<Option<SnapshotChunk>, Error>;
}

impl SnapshotSource for agora_ledger::store::SnapshotShelf {
    fn offers(&self) -> Result<Vec<SnapshotOffer>, Error> {
        Ok(agora_ledger::store::SnapshotShelf::offers(self)?)
    }
    fn chunk(&self, height: Height, index: u32) -> Result<Option<SnapshotChunk>, Error> {
        Ok(agora_ledger::store::SnapshotShelf::chunk(self, height, index)?)
    }
}

/// Snapshots held in memory, oldest first (the simulation's).
impl SnapshotSource for std::collections::VecDeque<Snapshot> {
    fn offers(&self) -> Result<Vec<SnapshotOffer>, Error> {
        Ok(self.iter().rev().take(MAX_SNAPSHOT_OFFERS).map(|s| s.offer.clone()).collect())
    }
    fn chunk(&self, height: Height, index: u32) -> Result<Option<SnapshotChunk>, Error> {
        let snapshot = self.iter().find(|s| s.offer.header.height == height);
        Ok(snapshot.and_then(|s| s.chunks.get(index as usize).cloned()))
    }
}

/// What a serving peer answers `request` with, from `source`.
pub fn answer<S: SnapshotSource + ?Sized>(source: &S, request: &SnapshotRequest) -> Result<SnapshotResponse, Error> {
    Ok(match request {
        SnapshotRequest::Offers => SnapshotResponse::Offers(source.offers()?),
        SnapshotRequest::Chunk { height, index } => match source.chunk(*height, *index)? {
            Some(chunk) => SnapshotResponse::Chunk(chunk),
            None => SnapshotResponse::Refused(SnapshotRefusal::NotHeld),
        },
    })
}

/// A request the machine wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Snapshot(SnapshotRequest),
    /// The block after `have` (the snapshot's own), by block sync.
    Block(SyncRequest),
}

/// The snapshot being fetched.
struct Fetch<P> {
    restore: Restore,
    /// Peers that offered it and have not failed it.
    holders: Vec<P>,
    turn: usize,
    in_flight: Option<P>,
    block: Option<Block>,
}

/// The decisions of a state sync.
pub struct StateSync<P> {
    chain: ChainId,
    trusted: Vec<Validator>,
    peers: Vec<P>,
    /// Peers asked for their offers and not answered yet.
    asked: Vec<P>,
    /// Peers that have answered with their offers (perhaps none) at least once.
    answered: Vec<P>,
    /// Verified offers, by the peer that made them.
    offers: Vec<(P, SnapshotOffer)>,
    fetch: Option<Fetch<P>>,
    /// Peers caught lying, to drop (taken by the driver) and never ask again.
    penalised: Vec<P>,
    caught: Vec<P>,
    /// A block hash the operator trusts (`--trust-hash`): only the snapshot
    /// of that block is taken, checked against the validators that decided
    /// it instead of the genesis'.
    trust: Option<Hash>,
    /// Snapshots offered that are not the trusted one (height, block hash), for the error.
    passed_over: Vec<(Height, Hash)>,
}

impl<P: Copy + Eq + std::fmt::Debug> StateSync<P> {
    pub fn new(chain: ChainId, trusted: Vec<Validator>) -> StateSync<P> {
        StateSync {
            chain,
            trusted,
            peers: Vec::new(),
            asked: Vec::new(),
            answered: Vec::new(),
            offers: Vec::new(),
            fetch: None,
            penalised: Vec::new(),
            caught: Vec::new(),
            trust: None,
            passed_over: Vec::new(),
        }
    }

    /// Takes only the snapshot of the block `hash`, whatever the genesis
    /// validators (a checkpoint for a chain whose set has moved on).
    pub fn trusting(mut self, hash: Hash) -> StateSync<P> {
        self.trust = Some(hash);
        self
    }

    /// The validators an offer must be signed by: the genesis', or, for
    /// the trusted block, the ones its own state says decided it.
    fn trusted_for(&self, offer: &SnapshotOffer) -> Vec<Validator> {
        match self.trust {
            Some(hash) if offer.header.hash() == hash => {
                agora_ledger::tree::decode_canonical::<agora_ledger::tree::Meta>(&offer.meta)
                    .map(|m| m.last_validators)
                    .unwrap_or_default()
            }
            _ => self.trusted.clone(),
        }
    }

    /// Snapshots offered that were passed over for not being the trusted one.
    pub fn passed_over(&self) -> &[(Height, Hash)] {
        &self.passed_over
    }

    pub fn connected(&mut self, peer: P) {
        if !self.peers.contains(&peer) && !self.caught.contains(&peer) {
            self.peers.push(peer);
        }
    }

    pub fn disconnected(&mut self, peer: &P) {
        self.peers.retain(|p| p != peer);
        self.asked.retain(|p| p != peer);
        self.drop_holder(peer);
    }

    fn drop_holder(&mut self, peer: &P) {
        if let Some(f) = &mut self.fetch {
            f.holders.retain(|p| p != peer);
            if f.in_flight.as_ref() == Some(peer) {
                f.in_flight = None;
            }
        }
    }

    fn penalise(&mut self, peer: P, why: &str) {
        tracing::warn!(?peer, why, "state sync: a peer sent what does not verify; dropping it");
        self.disconnected(&peer);
        self.caught.push(peer);
        self.penalised.push(peer);
    }

    /// Peers to drop and block since the last call.
    pub fn take_penalised(&mut self) -> Vec<P> {
        std::mem::take(&mut self.penalised)
    }

    /// Whether a snapshot is chosen and being fetched.
    pub fn fetching(&self) -> bool {
        self.fetch.is_some()
    }

    /// Whether any verified offer has arrived.
    pub fn has_offers(&self) -> bool {
        !self.offers.is_empty()
    }

    /// Whether every peer asked for its offers has answered.
    pub fn all_answered(&self) -> bool {
        self.asked.is_empty()
    }

    /// Asks every connected peer never asked for its offers (with `again`:
    /// also those that have answered, for newer snapshots) and not asked now.
    pub fn ask_offers(&mut self, again: bool) -> Vec<(P, Request)> {
        if self.fetch.is_some() {
            return Vec::new();
        }
        let wanted: Vec<P> = self
            .peers
            .iter()
            .copied()
            .filter(|p| !self.asked.contains(p) && (again || !self.answered.contains(p)))
            .collect();
        self.asked.extend(wanted.iter().copied());
        wanted.into_iter().map(|p| (p, Request::Snapshot(SnapshotRequest::Offers))).collect()
    }

    /// A peer's offers: each is verified; one that does not is a lie.
    pub fn offers_from(&mut self, peer: P, offers: Vec<SnapshotOffer>) {
        self.asked.retain(|p| *p != peer);
        if !self.answered.contains(&peer) {
            self.answered.push(peer);
        }
        self.offers.retain(|(p, _)| *p != peer);
        for offer in offers.into_iter().take(MAX_SNAPSHOT_OFFERS) {
            let hash = offer.header.hash();
            if self.trust.is_some_and(|t| t != hash) {
                if !self.passed_over.contains(&(offer.header.height, hash)) && self.passed_over.len() < MAX_PASSED_OVER
                {
                    self.passed_over.push((offer.header.height, hash));
                }
                continue;
            }
            match agora_ledger::snapshot::verify_offer(&offer, &self.chain, &self.trusted_for(&offer)) {
                Ok(_) => self.offers.push((peer, offer)),
                Err(e) => return self.penalise(peer, &format!("offer: {e}")),
            }
        }
    }

    /// The peer did not answer a request.
    pub fn failed(&mut self, peer: P) {
        self.asked.retain(|p| *p != peer);
        if let Some(f) = &mut self.fetch
            && f.in_flight == Some(peer)
        {
            f.in_flight = None;
        }
    }

    /// Picks the newest verified snapshot and the peers that hold it: of
    /// the offers at the newest height, the one the most connected peers
    /// made identically (a peer may pair a certified header with a chunk
    /// count of its own; only the peers that agree on every field fetch
    /// together). False when there is none.
    pub fn choose(&mut self) -> Result<bool, Error> {
        let live: Vec<&(P, SnapshotOffer)> = self.offers.iter().filter(|(p, _)| self.peers.contains(p)).collect();
        let Some(top) = live.iter().map(|(_, o)| o.header.height).max() else { return Ok(false) };
        let holders_of =
            |offer: &SnapshotOffer| -> Vec<P> { live.iter().filter(|(_, o)| o == offer).map(|(p, _)| *p).collect() };
        let Some(best) = live
            .iter()
            .filter(|(_, o)| o.header.height == top)
            .max_by_key(|(_, o)| holders_of(o).len())
            .map(|(_, o)| o.clone())
        else {
            return Ok(false);
        };
        let holders = holders_of(&best);
        tracing::info!(
            height = %best.header.height,
            leaves = best.leaves,
            chunks = best.chunks,
            peers = holders.len(),
            "state sync: fetching a certified snapshot"
        );
        let trusted = self.trusted_for(&best);
        let restore = Restore::new(best, &self.chain, &trusted)?;
        self.fetch = Some(Fetch { restore, holders, turn: 0, in_flight: None, block: None });
        Ok(true)
    }

    /// The next request to send while fetching: the block, then each chunk
    /// in order, to the holders in turn, one at a time.
    pub fn next_request(&mut self) -> Option<(P, Request)> {
        let f = self.fetch.as_mut()?;
        if f.in_flight.is_some() || f.holders.is_empty() {
            return None;
        }
        let height = f.restore.offer().header.height;
        let request = match (&f.block, f.restore.next_chunk()) {
            (None, _) => Request::Block(SyncRequest { have: Height(height.0 - 1), max: 1 }),
            (Some(_), Some(index)) => Request::Snapshot(SnapshotRequest::Chunk { height, index }),
            (Some(_), None) => return None,
        };
        f.turn = (f.turn + 1) % f.holders.len();
        let peer = f.holders[f.turn];
        f.in_flight = Some(peer);
        Some((peer, request))
    }

    /// Whether the chosen snapshot can no longer be fetched (every holder gone).
    pub fn stranded(&self) -> bool {
        self.fetch.as_ref().is_some_and(|f| f.holders.is_empty())
    }

    /// A peer's answer to a chunk request.
    pub fn chunk_from(&mut self, peer: P, response: SnapshotResponse) {
        let Some(f) = self.fetch.as_mut().filter(|f| f.in_flight == Some(peer)) else { return };
        f.in_flight = None;
        match response {
            SnapshotResponse::Chunk(chunk) => {
                if let Err(e) = f.restore.add(chunk) {
                    self.penalise(peer, &e.to_string());
                }
            }
            // Pruned since it offered it: it cannot serve this snapshot any more.
            SnapshotResponse::Refused(SnapshotRefusal::NotHeld) => self.drop_holder(&peer),
            SnapshotResponse::Refused(SnapshotRefusal::Busy) => {}
            SnapshotResponse::Offers(_) => self.penalise(peer, "offers where a chunk was asked for"),
        }
    }

    /// A peer's answer to the request for the snapshot's block.
    pub fn block_from(&mut self, peer: P, blocks: Vec<(Block, CommitCertificate)>) {
        let Some(f) = self.fetch.as_mut().filter(|f| f.in_flight == Some(peer)) else { return };
        f.in_flight = None;
        let header = &f.restore.offer().header;
        match blocks.into_iter().next() {
            Some((block, _)) if block.header == *header => f.block = Some(block),
            // A peer that has not kept the block (it joined by state sync later) is no liar.
            None => self.drop_holder(&peer),
            Some(_) => self.penalise(peer, "a block that is not the snapshot's"),
        }
    }

    /// Leaves restored so far, of the snapshot's.
    pub fn progress(&self) -> Option<(u64, u64)> {
        self.fetch.as_ref().map(|f| f.restore.progress())
    }

    pub fn complete(&self) -> bool {
        self.fetch.as_ref().is_some_and(|f| f.block.is_some() && f.restore.next_chunk().is_none())
    }

    /// The restored state, once `complete`.
    pub fn finish(self) -> Result<Restored, Error> {
        let f = self.fetch.ok_or_else(|| Error::StateSync("no snapshot was fetched".into()))?;
        let block = f.block.ok_or_else(|| Error::StateSync("the snapshot's block was not fetched".into()))?;
        Ok(f.restore.finish(block)?)
    }
}

/// Joins the network by state sync when the node's store holds no block:
/// fetches the newest certified snapshot from the bootstrap peers and
/// installs it as the store, which it returns open. A store that holds
/// blocks already is kept (and returned open).
pub async fn join(home: &Path, config: &NodeConfig, key: &Keypair, trust: Option<Hash>) -> Result<Store, Error> {
    let genesis = crate::config::load_genesis(home)?;
    let dir = config.ledger_dir(home);
    if dir.exists() {
        let store = Store::open(&dir, &genesis)?;
        let height = store.height();
        if height.0 > 0 {
            tracing::info!(%height, "the store holds blocks already: state sync skipped");
            return Ok(store);
        }
        drop(store);
        // A store without blocks holds the genesis alone, which the snapshot replaces.
        std::fs::remove_dir_all(&dir).map_err(Error::io(&dir))?;
    }
    let started = Instant::now();
    let restored = fetch(config, key, &genesis, trust).await?;
    let height = restored.height();
    let store = tokio::task::block_in_place(|| Store::install(&dir, &genesis, restored))?;
    tracing::info!(
        %height,
        root = %store.state().root(),
        ms = started.elapsed().as_millis() as u64,
        "state sync: installed the snapshot; following the chain from here"
    );
    Ok(store)
}

async fn fetch(config: &NodeConfig, key: &Keypair, genesis: &Genesis, trust: Option<Hash>) -> Result<Restored, Error> {
    if config.bootstrap.is_empty() {
        return Err(Error::StateSync("state sync needs bootstrap peers to fetch from (config: bootstrap)".into()));
    }
    let trusted = agora_ledger::light::trusted_from_genesis(genesis)?;
    let mut machine: StateSync<PeerId> = StateSync::new(genesis.chain_id.clone(), trusted);
    if let Some(hash) = trust {
        machine = machine.trusting(hash);
    }
    let mut swarm = build_swarm(crate::identity::libp2p_keypair(key)?, &config.net)?;
    for addr in &config.bootstrap {
        let ma: Multiaddr = addr.parse().map_err(|e| Error::Network(format!("bootstrap {addr}: {e}")))?;
        if let Err(e) = swarm.dial(ma) {
            tracing::warn!(%addr, error = %e, "state sync: cannot dial a bootstrap peer");
        }
    }
    let started = Instant::now();
    let mut first_offer: Option<Instant> = None;
    let mut last_ask = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        if !machine.fetching() {
            if machine.has_offers() {
                first_offer.get_or_insert_with(Instant::now);
            }
            let waited = first_offer.is_some_and(|t| t.elapsed() >= OFFER_WAIT || machine.all_answered());
            if waited && machine.choose()? {
                continue;
            }
            if started.elapsed() > DISCOVERY_TIMEOUT {
                if let Some(hash) = trust {
                    let offered: Vec<String> =
                        machine.passed_over().iter().map(|(h, b)| format!("{h} ({b})")).collect();
                    return Err(Error::StateSync(format!(
                        "no peer offered the snapshot of the trusted block {hash} within {}s; offered: {}",
                        DISCOVERY_TIMEOUT.as_secs(),
                        if offered.is_empty() { "none".to_string() } else { offered.join(", ") }
                    )));
                }
                return Err(Error::StateSync(format!(
                    "no peer offered a state snapshot within {}s (peers take one every snapshot_interval_blocks)",
                    DISCOVERY_TIMEOUT.as_secs()
                )));
            }
            let again = last_ask.elapsed() >= ASK_AGAIN;
            if again {
                last_ask = Instant::now();
            }
            for (peer, request) in machine.ask_offers(again) {
                send(&mut swarm, peer, request);
            }
        } else {
            if machine.complete() {
                return machine.finish();
            }
            if machine.stranded() {
                return Err(Error::StateSync("every peer holding the chosen snapshot failed or left".into()));
            }
            if let Some((peer, request)) = machine.next_request() {
                send(&mut swarm, peer, request);
            }
        }
        if started.elapsed() > STATE_SYNC_TIMEOUT {
            return Err(Error::StateSync(format!("not done within {}s", STATE_SYNC_TIMEOUT.as_secs())));
        }
        for peer in machine.take_penalised() {
            swarm.behaviour_mut().blocked.block_peer(peer);
        }
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => machine.connected(peer_id),
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => machine.disconnected(&peer_id),
                SwarmEvent::Behaviour(BehaviourEvent::Snapshot(e)) => match e {
                    request_response::Event::Message { peer, message: Message::Response { response, .. }, .. } => {
                        match response {
                            SnapshotResponse::Offers(offers) => machine.offers_from(peer, offers),
                            other => machine.chunk_from(peer, other),
                        }
                        if let Some((done, total)) = machine.progress() {
                            tracing::debug!(done, total, "state sync: leaves restored");
                        }
                    }
                    request_response::Event::OutboundFailure { peer, .. } => machine.failed(peer),
                    _ => {}
                },
                SwarmEvent::Behaviour(BehaviourEvent::Sync(e)) => match e {
                    request_response::Event::Message { peer, message: Message::Response { response, .. }, .. } => {
                        let SyncResponse { blocks } = response;
                        machine.block_from(peer, blocks);
                    }
                    request_response::Event::OutboundFailure { peer, .. } => machine.failed(peer),
                    _ => {}
                },
                _ => {}
            },
            _ = tick.tick() => {}
        }
    }
}

fn send(swarm: &mut libp2p::Swarm<crate::net::Behaviour>, peer: PeerId, request: Request) {
    match request {
        Request::Snapshot(r) => _ = swarm.behaviour_mut().snapshot.send_request(&peer, r),
        Request::Block(r) => _ = swarm.behaviour_mut().sync.send_request(&peer, r),
    }
}

#[cfg(test)]
mod tests {
    use agora_ledger::snapshot::{self, Snapshot};
    use agora_ledger::testkit::{TestChain, chain_id};
    use agora_ledger::{SigCheck, State, apply_block};
    use agora_protocol::Amount;

    use super::*;

    fn grow(chain: &TestChain, state: &mut State) -> (Block, Snapshot) {
        let block = chain.next_block(state, vec![]).unwrap();
        apply_block(state, &block, SigCheck::Skip).unwrap();
        let snap = snapshot::take(state, block.header.clone(), chain.certificate(&block, 3)).unwrap();
        (block, snap)
    }

    #[test]
    fn a_joining_node_fetches_the_newest_certified_snapshot_in_turn_and_drops_liars() {
        let chain = TestChain::new(6_000, 4, Amount::agr(10));
        let mut state = chain.state();
        let (_, old) = grow(&chain, &mut state);
        let (block, new) = grow(&chain, &mut state);
        assert!(new.chunks.len() >= 2);
        let trusted = agora_ledger::light::trusted_from_genesis(&chain.genesis).unwrap();
        let mut m: StateSync<u8> = StateSync::new(chain_id(), trusted);
        for p in [1, 2, 3, 4] {
            m.connected(p);
        }
        assert_eq!(m.ask_offers(false).len(), 4);
        assert!(m.ask_offers(true).is_empty(), "a peer is asked once at a time");
        m.offers_from(1, vec![old.offer.clone(), new.offer.clone()]);
        m.offers_from(2, vec![new.offer.clone()]);
        assert!(!m.all_answered());
        let mut forged = new.offer.clone();
        forged.certificate = chain.certificate(&block, 2);
        m.offers_from(3, vec![forged]);
        assert_eq!(m.take_penalised(), vec![3], "an offer short of 2/3 of the signatures");
        // A certified header with a chunk count of its own: it verifies, but
        // the peers that agree on every field are the ones fetched from.
        let mut inflated = new.offer.clone();
        inflated.chunks += 1;
        m.offers_from(4, vec![inflated]);
        assert!(m.all_answered() && m.has_offers());
        assert!(m.choose().unwrap());
        assert_eq!(m.progress(), Some((0, new.offer.leaves)));

        let (p, req) = m.next_request().unwrap();
        assert_ne!(p, 4, "the odd offer's peer is not a holder");
        assert_eq!(req, Request::Block(SyncRequest { have: Height(1), max: 1 }), "the newest snapshot's block first");
        assert!(m.next_request().is_none(), "one request at a time");
        m.block_from(p, vec![(block.clone(), chain.certificate(&block, 3))]);

        let (liar, req) = m.next_request().unwrap();
        assert_eq!(req, Request::Snapshot(SnapshotRequest::Chunk { height: Height(2), index: 0 }));
        assert_ne!(liar, 4, "the odd offer's peer is not a holder");
        m.chunk_from(9, SnapshotResponse::Chunk(new.chunks[0].clone()));
        assert_eq!(m.progress(), Some((0, new.offer.leaves)), "an answer nobody was asked for is ignored");
        let mut bad = new.chunks[0].clone();
        bad.leaves[0].1.push(0);
        m.chunk_from(liar, SnapshotResponse::Chunk(bad));
        assert_eq!(m.take_penalised(), vec![liar]);
        while let Some((p, req)) = m.next_request() {
            assert_ne!(p, liar, "a liar is never asked again");
            assert_ne!(p, 4, "the odd offer's peer is not a holder");
            let Request::Snapshot(SnapshotRequest::Chunk { index, .. }) = req else { panic!("{req:?}") };
            m.chunk_from(p, SnapshotResponse::Chunk(new.chunks[index as usize].clone()));
        }
        assert!(m.complete());
        let restored = m.finish().unwrap();
        assert_eq!((restored.height(), restored.last_block_hash()), (Height(2), block.hash()));
    }

    #[test]
    fn a_trusted_block_hash_takes_its_snapshot_whatever_the_genesis_validators() {
        let chain = TestChain::new(10, 4, Amount::agr(10));
        let mut state = chain.state();
        let (_, old) = grow(&chain, &mut state);
        let (block, new) = grow(&chain, &mut state);
        // A trusted set that signed nothing here: a chain whose validators all moved on.
        let mut moved_on = agora_ledger::light::trusted_from_genesis(&chain.genesis).unwrap();
        for (i, v) in moved_on.iter_mut().enumerate() {
            v.address = Keypair::from_seed_phrase(&format!("a validator long gone {i}")).address();
        }
        let mut plain: StateSync<u8> = StateSync::new(chain_id(), moved_on.clone());
        plain.connected(1);
        plain.ask_offers(false);
        plain.offers_from(1, vec![new.offer.clone()]);
        assert_eq!(plain.take_penalised(), vec![1], "without a checkpoint, the genesis set decides");

        let mut m: StateSync<u8> = StateSync::new(chain_id(), moved_on).trusting(block.hash());
        m.connected(1);
        m.connected(2);
        m.ask_offers(false);
        m.offers_from(1, vec![old.offer.clone()]);
        assert!(m.take_penalised().is_empty() && !m.has_offers(), "another snapshot is passed over, not punished");
        assert_eq!(m.passed_over(), &[(Height(1), old.offer.header.hash())]);
        let mut forged = new.offer.clone();
        forged.certificate = chain.certificate(&block, 2);
        m.offers_from(2, vec![forged]);
        assert_eq!(m.take_penalised(), vec![2], "the trusted block still needs >2/3 of the validators that decided it");
        m.connected(3);
        m.ask_offers(false);
        m.offers_from(3, vec![old.offer.clone(), new.offer.clone()]);
        assert!(m.choose().unwrap());
        let (p, _) = m.next_request().unwrap();
        m.block_from(p, vec![(block.clone(), chain.certificate(&block, 3))]);
        while let Some((p, Request::Snapshot(SnapshotRequest::Chunk { index, .. }))) = m.next_request() {
            m.chunk_from(p, SnapshotResponse::Chunk(new.chunks[index as usize].clone()));
        }
        assert_eq!(m.finish().unwrap().height(), Height(2));
    }

    #[test]
    fn the_store_and_the_simulation_serve_snapshots_alike() {
        let chain = TestChain::new(10, 4, Amount::agr(10));
        let mut state = chain.state();
        let kept: std::collections::VecDeque<Snapshot> = (0..3).map(|_| grow(&chain, &mut state).1).collect();
        let tmp = tempfile::tempdir().unwrap();
        let shelf = Store::open(tmp.path(), &chain.genesis).unwrap().snapshots();
        for s in &kept {
            shelf.keep(s).unwrap();
        }
        let in_memory: std::collections::VecDeque<Snapshot> = kept.into_iter().skip(1).collect();
        for request in [
            SnapshotRequest::Offers,
            SnapshotRequest::Chunk { height: Height(3), index: 0 },
            SnapshotRequest::Chunk { height: Height(3), index: 1 },
            SnapshotRequest::Chunk { height: Height(1), index: 0 },
        ] {
            assert_eq!(answer(&shelf, &request).unwrap(), answer(&in_memory, &request).unwrap(), "{request:?}");
        }
        let SnapshotResponse::Offers(offers) = answer(&shelf, &SnapshotRequest::Offers).unwrap() else { panic!() };
        let heights: Vec<u64> = offers.iter().map(|o| o.header.height.0).collect();
        assert_eq!(heights, vec![3, 2], "the newest two, newest first");
    }

    #[test]
    fn a_snapshot_whose_holders_all_leave_is_stranded() {
        let chain = TestChain::new(10, 4, Amount::agr(10));
        let mut state = chain.state();
        let (_, snap) = grow(&chain, &mut state);
        let trusted = agora_ledger::light::trusted_from_genesis(&chain.genesis).unwrap();
        let mut m: StateSync<u8> = StateSync::new(chain_id(), trusted);
        m.connected(1);
        m.ask_offers(false);
        m.offers_from(1, vec![snap.offer.clone()]);
        assert!(m.choose().unwrap());
        let (p, _) = m.next_request().unwrap();
        m.block_from(p, vec![]);
        assert!(m.take_penalised().is_empty(), "a peer without the block is no liar");
        assert!(m.stranded() && m.next_request().is_none());
    }
}
