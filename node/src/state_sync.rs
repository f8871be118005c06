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

use agora_ledger::light::ProofBundle;
use agora_ledger::snapshot::{Restore, Restored, Snapshot};
use agora_ledger::{Genesis, Store, Validator};
use agora_protocol::snapshot::{
    MAX_SNAPSHOT_OFFERS, MAX_TRANSITIONS_PER_RESPONSE, SnapshotChunk, SnapshotOffer, SnapshotRefusal, SnapshotRequest,
    SnapshotResponse,
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
    /// The light-client transitions above `after`, ascending, at most `limit`, encoded.
    fn transitions(&self, after: Height, limit: usize) -> Result<Vec<Vec<u8>>, Error>;
}

impl SnapshotSource for agora_ledger::store::BlockReader {
    fn offers(&self) -> Result<Vec<SnapshotOffer>, Error> {
        Ok(self.snapshots().offers()?)
    }
    fn chunk(&self, height: Height, index: u32) -> Result<Option<SnapshotChunk>, Error> {
        Ok(self.snapshots().chunk(height, index)?)
    }
    fn transitions(&self, after: Height, limit: usize) -> Result<Vec<Vec<u8>>, Error> {
        Ok(agora_ledger::store::BlockReader::transitions(self, after, limit)?.into_iter().map(|(_, b)| b).collect())
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
    /// The simulation's validator set never changes.
    fn transitions(&self, _after: Height, _limit: usize) -> Result<Vec<Vec<u8>>, Error> {
        Ok(Vec::new())
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
        SnapshotRequest::Transitions { after } => {
            SnapshotResponse::Transitions(source.transitions(*after, MAX_TRANSITIONS_PER_RESPONSE)?)
        }
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

/// Validator-set transitions one peer may make a joiner gather, at most
/// (pages of `MAX_TRANSITIONS_PER_RESPONSE`): one per epoch that changed
/// the set; a peer offering more is not followed.
pub const MAX_TRANSITIONS_GATHERED: usize = 4_096;

/// Following the validator set from the genesis for offers its validators
/// do not vouch for: a chain whose set has moved on is decided by other
/// keys, so the offering peer is asked for its validator-set transitions,
/// which are checked from the genesis set on (`light::follow`) up to the
/// offer's height; the set they lead to must then certify the offer.
struct MovedSet<P> {
    /// Offers held until their peer's transitions are followed.
    unverified: Vec<(P, SnapshotOffer)>,
    /// Transitions being gathered, page by page, by peer.
    gathering: Vec<(P, Vec<ProofBundle>)>,
    /// Peers whose transitions did not chain from the genesis (or were too
    /// many): their offers cannot be checked and are passed over.
    unchained: Vec<P>,
    /// For each offer verified this way (by block hash): the validators
    /// that decided it, and the transitions that led to them.
    deciders: Vec<(Hash, Vec<Validator>, Vec<ProofBundle>)>,
    /// Offers dropped because their peer's transitions did not lead from
    /// the genesis to their signers (for the error).
    unfollowable: usize,
    /// Transition pages to ask for.
    outbox: Vec<(P, Request)>,
}

impl<P> Default for MovedSet<P> {
    fn default() -> Self {
        MovedSet {
            unverified: Vec::new(),
            gathering: Vec::new(),
            unchained: Vec::new(),
            deciders: Vec::new(),
            unfollowable: 0,
            outbox: Vec::new(),
        }
    }
}

/// The validators an offer's own state names as the deciders of its block
/// (none if its meta leaf does not decode: then nothing certifies it).
fn own_deciders(offer: &SnapshotOffer) -> Vec<Validator> {
    agora_ledger::tree::decode_canonical::<agora_ledger::tree::Meta>(&offer.meta)
        .map(|m| m.last_validators)
        .unwrap_or_default()
}

/// Whether an offer's certificate is valid for its own deciders: false is
/// a forgery whatever set the joiner trusts.
fn self_certified(offer: &SnapshotOffer, chain: &ChainId) -> bool {
    agora_ledger::snapshot::verify_offer(offer, chain, &own_deciders(offer)).is_ok()
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
    moved: MovedSet<P>,
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
            moved: MovedSet::default(),
        }
    }

    /// Takes only the snapshot of the block `hash`, whatever the genesis
    /// validators (a checkpoint for a chain whose set has moved on).
    pub fn trusting(mut self, hash: Hash) -> StateSync<P> {
        self.trust = Some(hash);
        self
    }

    /// The validators an offer must be signed by: the genesis', or, for
    /// the trusted block, the ones its own state says decided it, or the
    /// ones the genesis led to through its peer's transitions.
    fn trusted_for(&self, offer: &SnapshotOffer) -> Vec<Validator> {
        let hash = offer.header.hash();
        match self.trust {
            Some(trusted) if hash == trusted => own_deciders(offer),
            _ => match self.moved.deciders.iter().find(|(h, _, _)| *h == hash) {
                Some((_, deciders, _)) => deciders.clone(),
                None => self.trusted.clone(),
            },
        }
    }

    /// Offers dropped because their peers' transitions did not lead from
    /// the genesis validators to the offers' signers.
    pub fn unfollowable(&self) -> usize {
        self.moved.unfollowable
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
        self.give_up_transitions(peer);
        self.drop_holder(peer);
    }

    /// Its transitions will not come now: its held offers are dropped (a
    /// later answer with offers asks again).
    fn give_up_transitions(&mut self, peer: &P) {
        let m = &mut self.moved;
        m.gathering.retain(|(p, _)| p != peer);
        m.unverified.retain(|(p, _)| p != peer);
        m.outbox.retain(|(p, _)| p != peer);
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

    /// Whether every peer asked for its offers has answered (its
    /// transitions too, when its offers needed them).
    pub fn all_answered(&self) -> bool {
        self.asked.is_empty() && self.moved.gathering.is_empty()
    }

    /// Asks every connected peer never asked for its offers (with `again`:
    /// also those that have answered, for newer snapshots) and not asked now.
    /// Transition pages due are asked for here too.
    pub fn ask_offers(&mut self, again: bool) -> Vec<(P, Request)> {
        if self.fetch.is_some() {
            return Vec::new();
        }
        let mut requests = std::mem::take(&mut self.moved.outbox);
        let wanted: Vec<P> = self
            .peers
            .iter()
            .copied()
            .filter(|p| !self.asked.contains(p) && (again || !self.answered.contains(p)))
            .collect();
        self.asked.extend(wanted.iter().copied());
        requests.extend(wanted.into_iter().map(|p| (p, Request::Snapshot(SnapshotRequest::Offers))));
        requests
    }

    /// A peer's offers: each is verified; one that does not is a lie.
    pub fn offers_from(&mut self, peer: P, offers: Vec<SnapshotOffer>) {
        self.asked.retain(|p| *p != peer);
        if !self.answered.contains(&peer) {
            self.answered.push(peer);
        }
        self.offers.retain(|(p, _)| *p != peer);
        self.moved.unverified.retain(|(p, _)| *p != peer);
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
                // Not even by the validators its own state says decided it: a forgery.
                Err(e) if !self_certified(&offer, &self.chain) => return self.penalise(peer, &format!("offer: {e}")),
                // Perhaps decided by a set the genesis' has handed over to:
                // judged once its peer's transitions are followed.
                Err(_) if self.trust.is_none() => self.hold(peer, offer),
                Err(e) => return self.penalise(peer, &format!("offer: {e}")),
            }
        }
    }

    /// Holds an offer the genesis validators do not vouch for and asks its
    /// peer for the validator-set transitions since the genesis.
    fn hold(&mut self, peer: P, offer: SnapshotOffer) {
        let m = &mut self.moved;
        if m.unchained.contains(&peer) {
            m.unfollowable += 1;
            return;
        }
        m.unverified.push((peer, offer));
        if !m.gathering.iter().any(|(p, _)| *p == peer) {
            m.gathering.push((peer, Vec::new()));
            m.outbox.push((peer, Request::Snapshot(SnapshotRequest::Transitions { after: Height(0) })));
        }
    }

    /// A page of a peer's validator-set transitions. A full page asks for
    /// the next; the last one follows them from the genesis validators to
    /// each held offer's height and checks the offer against the set they
    /// lead to. Transitions that do not chain from the genesis (a peer that
    /// joined by state sync holds only later ones) drop that peer's held
    /// offers without blame; an offer its own peer's checked transitions
    /// do not vouch for is a lie.
    pub fn transitions_from(&mut self, peer: P, page: Vec<Vec<u8>>) {
        let Some(i) = self.moved.gathering.iter().position(|(p, _)| *p == peer) else { return };
        let full = page.len() >= MAX_TRANSITIONS_PER_RESPONSE;
        let mut decoded = Vec::with_capacity(page.len());
        for bytes in page.iter().take(MAX_TRANSITIONS_PER_RESPONSE) {
            match agora_ledger::tree::decode_canonical::<ProofBundle>(bytes) {
                Ok(bundle) => decoded.push(bundle),
                Err(e) => return self.penalise(peer, &format!("a validator-set transition: {e}")),
            }
        }
        let gathered = &mut self.moved.gathering[i].1;
        gathered.extend(decoded);
        if gathered.len() > MAX_TRANSITIONS_GATHERED {
            self.moved.unfollowable += self.moved.unverified.iter().filter(|(p, _)| *p == peer).count();
            self.moved.unchained.push(peer);
            return self.give_up_transitions(&peer);
        }
        if full {
            let after = gathered.last().map_or(Height(0), |b| b.header.height);
            self.moved.outbox.push((peer, Request::Snapshot(SnapshotRequest::Transitions { after })));
            return;
        }
        let (_, transitions) = self.moved.gathering.swap_remove(i);
        let (mine, others): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.moved.unverified).into_iter().partition(|(p, _)| *p == peer);
        self.moved.unverified = others;
        for (_, offer) in mine {
            let below: Vec<ProofBundle> =
                transitions.iter().filter(|t| t.header.height < offer.header.height).cloned().collect();
            let followed = agora_ledger::light::follow(&below, &self.chain, self.trusted.clone(), Height(0));
            match followed.map(|f| (agora_ledger::snapshot::verify_offer(&offer, &self.chain, &f.validators), f)) {
                Ok((Ok(_), f)) => {
                    self.moved.deciders.push((offer.header.hash(), f.validators, below));
                    self.offers.push((peer, offer));
                }
                // Its transitions chain from the genesis, yet do not lead to the offer's signers.
                Ok((Err(e), f)) if f.taken > 0 => {
                    return self.penalise(peer, &format!("offer after its own transitions: {e}"));
                }
                // None (or not from the genesis on): a peer that joined by
                // state sync holds only later ones. Passed over, no blame.
                _ => {
                    self.moved.unfollowable += 1;
                    if !self.moved.unchained.contains(&peer) {
                        self.moved.unchained.push(peer);
                    }
                }
            }
        }
    }

    /// The peer did not answer a request.
    pub fn failed(&mut self, peer: P) {
        self.asked.retain(|p| *p != peer);
        self.give_up_transitions(&peer);
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
            SnapshotResponse::Offers(_) | SnapshotResponse::Transitions(_) => {
                self.penalise(peer, "offers or transitions where a chunk was asked for")
            }
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

    /// The restored state, once `complete`, and the validator-set
    /// transitions followed to trust it (none when the genesis validators
    /// or a trusted hash vouched for it), for the new store to keep.
    pub fn finish(self) -> Result<(Restored, Vec<ProofBundle>), Error> {
        let f = self.fetch.ok_or_else(|| Error::StateSync("no snapshot was fetched".into()))?;
        let block = f.block.ok_or_else(|| Error::StateSync("the snapshot's block was not fetched".into()))?;
        let hash = block.hash();
        let followed = self.moved.deciders.into_iter().find(|(h, _, _)| *h == hash).map(|(_, _, t)| t);
        Ok((f.restore.finish(block)?, followed.unwrap_or_default()))
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
    let (restored, transitions) = fetch(config, key, &genesis, trust).await?;
    let height = restored.height();
    let store = tokio::task::block_in_place(|| -> Result<Store, Error> {
        let store = Store::install(&dir, &genesis, restored)?;
        store.keep_transitions(&transitions)?;
        Ok(store)
    })?;
    tracing::info!(
        %height,
        root = %store.state().root(),
        ms = started.elapsed().as_millis() as u64,
        "state sync: installed the snapshot; following the chain from here"
    );
    Ok(store)
}

async fn fetch(
    config: &NodeConfig,
    key: &Keypair,
    genesis: &Genesis,
    trust: Option<Hash>,
) -> Result<(Restored, Vec<ProofBundle>), Error> {
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
                if machine.unfollowable() > 0 {
                    return Err(Error::StateSync(format!(
                        "no snapshot within {}s that this genesis leads to: {} offered were signed by validators \
                         the peers' validator-set transitions do not lead to from the genesis (peers that joined \
                         by state sync hold only later ones); pass --trust-hash with a block hash from a node you \
                         trust (GET /v1/snapshots)",
                        DISCOVERY_TIMEOUT.as_secs(),
                        machine.unfollowable()
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
                            SnapshotResponse::Transitions(page) => machine.transitions_from(peer, page),
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
        let (restored, transitions) = m.finish().unwrap();
        assert_eq!((restored.height(), restored.last_block_hash()), (Height(2), block.hash()));
        assert!(transitions.is_empty(), "the genesis validators vouched for it");
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
        assert!(plain.take_penalised().is_empty() && !plain.has_offers(), "held: the set may have moved on");
        let asked = plain.ask_offers(false);
        assert_eq!(asked, vec![(1, Request::Snapshot(SnapshotRequest::Transitions { after: Height(0) }))]);
        plain.transitions_from(1, Vec::new());
        assert!(plain.take_penalised().is_empty() && !plain.has_offers(), "no transition leads there: passed over");
        assert_eq!(plain.unfollowable(), 1, "counted for the error that suggests --trust-hash");

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
        assert_eq!(m.finish().unwrap().0.height(), Height(2));
    }

    #[test]
    fn the_store_and_the_simulation_serve_snapshots_alike() {
        let chain = TestChain::new(10, 4, Amount::agr(10));
        let mut state = chain.state();
        let kept: std::collections::VecDeque<Snapshot> = (0..3).map(|_| grow(&chain, &mut state).1).collect();
        let tmp = tempfile::tempdir().unwrap();
        let reader = Store::open(tmp.path(), &chain.genesis).unwrap().reader();
        for s in &kept {
            reader.snapshots().keep(s).unwrap();
        }
        let in_memory: std::collections::VecDeque<Snapshot> = kept.into_iter().skip(1).collect();
        for request in [
            SnapshotRequest::Offers,
            SnapshotRequest::Chunk { height: Height(3), index: 0 },
            SnapshotRequest::Chunk { height: Height(3), index: 1 },
            SnapshotRequest::Chunk { height: Height(1), index: 0 },
            SnapshotRequest::Transitions { after: Height(0) },
        ] {
            assert_eq!(answer(&reader, &request).unwrap(), answer(&in_memory, &request).unwrap(), "{request:?}");
        }
        let SnapshotResponse::Offers(offers) = answer(&reader, &SnapshotRequest::Offers).unwrap() else { panic!() };
        let heights: Vec<u64> = offers.iter().map(|o| o.header.height.0).collect();
        assert_eq!(heights, vec![3, 2], "the newest two, newest first");
    }

    #[test]
    fn an_offer_decided_by_a_rotated_set_is_trusted_through_its_peers_transitions() {
        use agora_ledger::testkit::{certify, sign_tx};
        use agora_protocol::TxKind;
        let mut chain = TestChain::new(8, 4, Amount::agr(10_000));
        chain.genesis.params.epoch_blocks = 2;
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), &chain.genesis).unwrap();
        let key_of = |a: &agora_protocol::Address| chain.keys.iter().find(|k| k.address() == *a).unwrap().clone();
        // Accounts 4..7 stake and 0..3 unstake: from height 3 on, 4..7 decide.
        let stake = Amount::agr(1_000);
        let rotate = (4..8)
            .map(|i| sign_tx(&chain.keys[i], 0, TxKind::Stake { amount: stake }))
            .chain((0..4).map(|i| sign_tx(&chain.keys[i], 0, TxKind::Unstake { amount: stake })))
            .collect();
        let mut last = None;
        for txs in [rotate, vec![], vec![]] {
            let block = chain.next_block(&mut store.state().clone(), txs).unwrap();
            let deciders: Vec<Keypair> = store.state().validators().iter().map(|v| key_of(&v.address)).collect();
            let cert = certify(&block, &deciders);
            store.commit_certified(&block, &cert).unwrap();
            last = Some((block, cert));
        }
        let (block, cert) = last.unwrap();
        assert!(store.state().is_validator(&chain.address(4)) && !store.state().is_validator(&chain.address(0)));
        let snap = snapshot::take(store.state(), block.header.clone(), cert.clone()).unwrap();
        let reader = store.reader();
        let transitions_after = |after| Request::Snapshot(SnapshotRequest::Transitions { after: Height(after) });
        let Ok(SnapshotResponse::Transitions(page)) =
            answer(&reader, &SnapshotRequest::Transitions { after: Height(0) })
        else {
            panic!("transitions")
        };
        assert_eq!(page.len(), 1, "one change of the set");

        let trusted = agora_ledger::light::trusted_from_genesis(&chain.genesis).unwrap();
        let mut m: StateSync<u8> = StateSync::new(chain_id(), trusted);
        for p in [1, 2, 3] {
            m.connected(p);
        }
        let _ = m.ask_offers(false);
        m.offers_from(1, vec![snap.offer.clone()]);
        m.offers_from(2, vec![snap.offer.clone()]);
        let mut forged = snap.offer.clone();
        forged.certificate.signatures.truncate(1);
        m.offers_from(3, vec![forged]);
        assert_eq!(m.take_penalised(), vec![3], "a certificate its own deciders did not make is a forgery");
        assert!(!m.has_offers() && !m.all_answered(), "held for the transitions, not blamed");
        assert_eq!(m.ask_offers(false), vec![(1, transitions_after(0)), (2, transitions_after(0))]);
        // Peer 2 joined by state sync after the change: it holds none.
        m.transitions_from(2, Vec::new());
        assert!(m.take_penalised().is_empty() && !m.has_offers());
        assert_eq!(m.unfollowable(), 1);
        m.transitions_from(1, page.clone());
        assert!(m.take_penalised().is_empty());
        assert!(m.has_offers() && m.all_answered() && m.choose().unwrap());
        while let Some((p, request)) = m.next_request() {
            assert_eq!(p, 1, "the only holder whose offer was checked");
            match request {
                Request::Block(_) => m.block_from(p, vec![(block.clone(), cert.clone())]),
                Request::Snapshot(SnapshotRequest::Chunk { index, .. }) => {
                    m.chunk_from(p, SnapshotResponse::Chunk(snap.chunks[index as usize].clone()))
                }
                other => panic!("{other:?}"),
            }
        }
        let (restored, followed) = m.finish().unwrap();
        assert_eq!((restored.height(), followed.len()), (Height(3), 1));
        // The new store keeps the transitions it followed and serves them on.
        let joined_dir = tempfile::tempdir().unwrap();
        let joined = Store::install(joined_dir.path(), &chain.genesis, restored).unwrap();
        joined.keep_transitions(&followed).unwrap();
        let request = SnapshotRequest::Transitions { after: Height(0) };
        assert_eq!(answer(&joined.reader(), &request).unwrap(), answer(&reader, &request).unwrap());
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
