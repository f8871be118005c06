//! Deterministic simulation of an agora network: N validators running the
//! real consensus engine and ledger over a simulated network driven by one
//! seed (delays, reordering, loss, duplication), with invariants checked after
//! every step. The same seed always gives the same run, bit for bit.
//!
//! With providers, every validator also runs the node's liveness logic
//! (`agora_node::liveness`): providers heartbeat over the lossy network, go
//! down for short and long outages, validators probe the silent ones, gossip
//! attestations and submit slashes; the run checks that no provider is
//! slashed for less than a window, every long outage is slashed, and none twice.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::Duration;

use agora_ledger::consensus::certificate::verify_commit;
use agora_ledger::consensus::context::ConsensusValidatorSet;
use agora_ledger::consensus::{
    Action, Engine, EngineConfig, Input, LastSigned, LinearTimeouts, Recovered, Relay, Timer, WalEntry,
};
use agora_ledger::testkit::{TestChain, sign_tx, transfer};
use agora_ledger::{Genesis, SigCheck, State, apply_block};
use agora_node::heartbeat::HeartbeatSeq;
use agora_node::liveness::{HeartbeatVerdict, Liveness, Probed};
use agora_node::own_txs::OwnTxs;
use agora_node::quota::PeerQuota;
use agora_node::sync::{BlockSource, SyncClient, build_response, sync_quota};
use agora_protocol::consensus::{ConsensusMessage, VoteKind};
use agora_protocol::rng::SeededRng;
use agora_protocol::{
    Address, Amount, Block, CommitCertificate, DowntimeAttestation, GpuSpec, Hash, Heartbeat, Height, Keypair, Signed,
    SignedTx, TxKind,
};

/// Funded accounts that send the simulated client load, by default.
const CLIENT_ACCOUNTS: usize = 64;
/// Transactions per mempool batch when preloading.
const PRELOAD_BATCH: usize = 256;
/// Blocks per validator-set epoch in simulations.
const SIM_EPOCH_BLOCKS: u64 = 4;

/// What can go wrong on the simulated network, in per-mille probabilities.
#[derive(Clone, Debug)]
pub struct NetworkFaults {
    pub latency_min_ms: u64,
    pub latency_max_ms: u64,
    pub drop_per_mille: u64,
    pub duplicate_per_mille: u64,
}

impl NetworkFaults {
    pub fn none() -> NetworkFaults {
        NetworkFaults { latency_min_ms: 0, latency_max_ms: 0, drop_per_mille: 0, duplicate_per_mille: 0 }
    }

    pub fn lossy() -> NetworkFaults {
        NetworkFaults { latency_min_ms: 5, latency_max_ms: 200, drop_per_mille: 50, duplicate_per_mille: 20 }
    }
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub validators: usize,
    pub faults: NetworkFaults,
    pub load: Load,
    /// Stop once every node has committed this many blocks…
    pub target_height: u64,
    /// …or when simulated time passes this (a liveness failure if reached first).
    pub max_time_ms: u64,
    pub timeouts: LinearTimeouts,
    pub scenario: Scenario,
}

/// The clients' transactions.
#[derive(Clone, Debug)]
pub struct Load {
    /// Transfers the clients submit per simulated second.
    pub txs_per_second: u64,
    /// Funded client accounts.
    pub clients: usize,
    /// Transfers handed to every node's mempool before the start (benchmarks).
    pub preload_txs: usize,
    /// With a preload: stop once all of it is committed on every node.
    pub stop_when_preload_committed: bool,
}

/// What happens to the nodes during a run, besides the network's faults.
#[derive(Clone, Debug, Default)]
pub struct Scenario {
    /// Crash one honest validator and restart it from its store and WAL.
    pub crash_restart: bool,
    /// Cut the network into two sides for a while, then heal it.
    pub partition: bool,
    /// Make the last validator Byzantine: it equivocates and sends garbage.
    pub byzantine: bool,
    /// The Byzantine validator, as proposer, sends two valid blocks (each
    /// with its proposal) to the two halves of the network, and forged
    /// ones (another proposer named, its certificate stripped) to some peers.
    pub equivocating_proposer: bool,
    /// A stake-less peer replays stale messages, signs votes and sends
    /// unpayable transactions (see `Griefer`).
    pub griefing_peer: bool,
    /// Providers whose liveness the validators watch (0: no liveness).
    pub providers: usize,
    /// Every node takes a state snapshot every `SIM_SNAPSHOT_INTERVAL`
    /// blocks, and the crashed validator comes back by state sync (the
    /// node's `StateSync`) from its peers' newest snapshot when one is
    /// newer than its store, instead of replaying its blocks; the
    /// Byzantine validator offers a forged snapshot first. (Tampered chunks
    /// are mounted in `ledger/tests/snapshot.rs` and `node::state_sync`'s tests.)
    pub state_sync: bool,
}

/// Blocks between two state snapshots in the simulation.
pub const SIM_SNAPSHOT_INTERVAL: u64 = 2;

impl SimConfig {
    pub fn new(seed: u64, validators: usize) -> SimConfig {
        let ms = Duration::from_millis;
        SimConfig {
            seed,
            validators,
            faults: NetworkFaults::lossy(),
            load: Load {
                txs_per_second: 20,
                clients: CLIENT_ACCOUNTS,
                preload_txs: 0,
                stop_when_preload_committed: false,
            },
            target_height: 10,
            max_time_ms: 600_000,
            timeouts: LinearTimeouts {
                propose: ms(400),
                propose_delta: ms(100),
                prevote: ms(200),
                prevote_delta: ms(100),
                precommit: ms(200),
                precommit_delta: ms(100),
                rebroadcast: ms(800),
                max_timeout: ms(5_000),
            },
            scenario: Scenario::default(),
        }
    }

    /// Every fault plus liveness: 4 providers, one never down, one down for
    /// less than a window, two down for much longer; the Byzantine validator
    /// also signs false attestations against the honest ones.
    /// (Its Byzantine validator does not equivocate as proposer: rounds it
    /// spoils slow the chain, and the runs are about slashing, not safety.)
    pub fn liveness(seed: u64, validators: usize) -> SimConfig {
        let base = SimConfig::all_faults(seed, validators);
        SimConfig {
            target_height: 20,
            scenario: Scenario {
                providers: LIVENESS_PROVIDERS,
                equivocating_proposer: false,
                griefing_peer: false,
                ..base.scenario
            },
            ..base
        }
    }

    /// Every fault at once: loss, duplication, delays, a crash and restart,
    /// a partition that heals, and one Byzantine validator.
    pub fn all_faults(seed: u64, validators: usize) -> SimConfig {
        SimConfig {
            scenario: Scenario {
                crash_restart: true,
                partition: true,
                byzantine: true,
                equivocating_proposer: true,
                griefing_peer: true,
                providers: 0,
                state_sync: false,
            },
            ..SimConfig::new(seed, validators)
        }
    }
}

/// A broken invariant, with the seed that reproduces it.
#[derive(Debug, thiserror::Error)]
#[error(
    "seed {seed}: {what} (replay: AGORA_SIM_SEED={seed} [AGORA_SIM_VALIDATORS=7] cargo test -p agora-testnet --test sim \
     replay_seed, or for a liveness run AGORA_SIM_LIVENESS_SEED={seed} [AGORA_SIM_VALIDATORS=7] … liveness)"
)]
pub struct SimFailure {
    pub seed: u64,
    pub what: String,
}

/// What a finished run looked like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimReport {
    pub seed: u64,
    pub steps: u64,
    pub sim_time_ms: u64,
    pub min_height: u64,
    pub committed_txs: u64,
    /// Equivocation evidence honest nodes produced against the Byzantine validator.
    pub evidence: u64,
    /// Heights whose deciding validator set differed from the previous height's.
    pub set_changes: u64,
    /// A digest of every commit in order: equal for equal runs.
    pub trace: Hash,
    /// Long outages that lasted past the slashing bound (each was slashed, once).
    pub long_outages_slashed: u64,
    /// Signatures an honest node's double-sign guard refused after a crash
    /// (0 while the WAL keeps every own vote, as it must).
    pub sign_refusals: u64,
    /// Heights at which the Byzantine proposer sent two different valid blocks.
    pub proposals_equivocated: u64,
    /// Messages and transactions the griefing peer threw at the nodes.
    pub griefing: u64,
    /// Consensus deliveries dropped by the relay verdict (stale, strangers).
    pub relay_dropped: u64,
    /// Provider restarts, each with its clock stepped back to its last heartbeat.
    pub provider_restarts: u64,
    /// Blocks the Byzantine proposer forged and sent with a proposal naming them.
    pub blocks_forged: u64,
    /// Auction results on the ledger (every node agrees on each: their state roots do).
    pub auctions: u64,
    /// Leases the auctions made.
    pub auction_leases: u64,
    /// Restarts that joined by state sync from a peer's snapshot.
    pub state_synced: u64,
    /// Peers a joining node caught serving a chunk that did not verify.
    pub snapshot_liars: u64,
}

/// Blocks per auction in simulations, and the binding tail.
const SIM_AUCTION_BLOCKS: u64 = 6;
const SIM_NO_CANCEL_BLOCKS: u64 = 2;
/// Per mille of client transactions that are bids.
const BID_PER_MILLE: u64 = 100;
/// The longest contract the providers' ask policy offers, in hours.
const SIM_ASK_HOURS: u32 = 4;
/// Providers in a liveness run.
const LIVENESS_PROVIDERS: usize = 4;
/// The downtime window of liveness runs, in blocks.
const SIM_WINDOW_BLOCKS: u64 = 12;
/// Liveness runs use no pause between blocks, like the other runs (with a
/// 200 ms pause, some seeds showed consensus stalls of tens of seconds under
/// the Byzantine validator: to investigate, see docs/design/liveness.md).
const SIM_LIVENESS_COMMIT_PAUSE_MS: u64 = 0;
/// Providers heartbeat this often.
const SIM_HEARTBEAT_MS: u64 = 300;
/// A short outage (never slashable: a window of blocks takes longer, even
/// at the fastest block rate these networks reach).
const SHORT_OUTAGE_MS: (u64, u64) = (200, 600);
/// A long outage (always slashable).
const LONG_OUTAGE_MS: (u64, u64) = (25_000, 35_000);
/// Blocks beyond the window within which a long outage must be slashed.
const SLASH_BOUND_EXTRA_BLOCKS: u64 = 5;
/// After the last outage ends, the run goes on this long before judging.
const LIVENESS_SLACK_MS: u64 = 15_000;

/// How a simulated provider behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outage {
    Never,
    Short,
    Long,
}

struct SimProvider {
    key: Keypair,
    outage: Outage,
    up: bool,
    /// Its heartbeat signer (the daemon's rules) and the reservation on its disk.
    heartbeats: HeartbeatSeq,
    reserved: u64,
    /// The last sequence number it signed.
    last_seq: u64,
    /// How far its clock runs behind the simulation's (stepped back at a restart).
    clock_behind_ms: u64,
    /// The quota it answers validators' probes within.
    probe_quota: PeerQuota<usize>,
    /// Sim time of the outage: (start, end).
    window_ms: (u64, u64),
    /// The chain's height when it went down and came back.
    heights: (u64, u64),
    /// The daemon's automatic ask policy: its idle GPU offered each auction.
    asks: agora_node::provider::AskPolicy,
}

enum Event {
    Deliver {
        to: usize,
        from: usize,
        msg: ConsensusMessage,
    },
    Sync {
        to: usize,
        blocks: Vec<(Block, CommitCertificate)>,
    },
    /// A sync request found its peer gone (crashed, or cut off by a partition).
    SyncFailed {
        to: usize,
    },
    Timer {
        node: usize,
        timer: Timer,
        generation: u64,
    },
    ClientLoad,
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
    Partition {
        side: Vec<bool>,
    },
    Heal,
    HeartbeatTick {
        provider: usize,
    },
    HeartbeatDeliver {
        to: usize,
        hb: Signed<Heartbeat>,
    },
    ProbeResult {
        node: usize,
        provider: usize,
    },
    AttestationDeliver {
        to: usize,
        from: usize,
        att: Signed<DowntimeAttestation>,
    },
    ProviderDown {
        provider: usize,
    },
    ProviderUp {
        provider: usize,
    },
    FalseAttestation,
    Grief,
}

/// A peer that holds no stake and only gets in the way: it replays old
/// consensus messages, signs votes with its own key, and submits
/// transactions it cannot pay for, to random nodes. The nodes judge all of
/// it through the same relay verdict and mempool admission as the daemon.
struct Griefer {
    key: Keypair,
    /// Recently delivered consensus messages, replayed later (stale by then).
    seen: VecDeque<ConsensusMessage>,
    /// What it threw at the nodes.
    sent: u64,
}

/// Consensus messages the griefer keeps for replays.
const GRIEFER_MEMORY: usize = 32;
/// Sim milliseconds between the griefer's rounds.
const GRIEF_EVERY_MS: u64 = 150;

/// A validator's durable files as a power cut leaves them: WAL appends not
/// yet followed by an fdatasync are lost at a crash (the daemon syncs on its
/// own votes and proposals; an fdatasync also persists every earlier append).
#[derive(Default)]
struct SimDisk {
    wal: Vec<(Height, WalEntry)>,
    wal_unsynced: Vec<(Height, WalEntry)>,
    signed: Option<LastSigned>,
}

impl SimDisk {
    fn append(&mut self, height: Height, entry: WalEntry, durable: bool) {
        self.wal_unsynced.push((height, entry));
        if durable {
            self.wal.append(&mut self.wal_unsynced);
        }
    }

    fn crash(&mut self) {
        self.wal_unsynced.clear();
    }

    fn prune_through(&mut self, h: u64) {
        self.wal.retain(|(wh, _)| wh.0 > h);
        self.wal_unsynced.retain(|(wh, _)| wh.0 > h);
    }
}

/// A simulated node's committed blocks: from height 1, or from the height
/// of the snapshot it joined from (with the state it restored there).
#[derive(Default)]
struct SimStore {
    blocks: Vec<(Block, CommitCertificate)>,
    /// The snapshot's state and height, when it joined by state sync.
    from: Option<State>,
}

impl SimStore {
    fn base(&self) -> u64 {
        self.from.as_ref().map_or(0, |s| s.height().0 - 1)
    }

    fn last_certificate(&self) -> Option<CommitCertificate> {
        self.blocks.last().map(|(_, c)| c.clone())
    }
}

impl BlockSource for SimStore {
    fn committed(&self, height: Height) -> Result<Option<(Block, CommitCertificate)>, agora_node::error::Error> {
        let index = height.0.checked_sub(self.base() + 1).and_then(|i| usize::try_from(i).ok());
        Ok(index.and_then(|i| self.blocks.get(i)).cloned())
    }
}

struct SimNode {
    engine: Engine,
    timers: Vec<(Timer, u64)>,
    height: u64,
    /// What this node persisted: its committed blocks with certificates…
    store: SimStore,
    /// The newest state snapshots it took, for peers joining by state sync.
    snapshots: VecDeque<agora_ledger::snapshot::Snapshot>,
    /// …its write-ahead log and double-sign guard state.
    disk: SimDisk,
    /// Its own transactions in flight (in memory: lost at a crash, as in the daemon).
    own_txs: OwnTxs,
    /// Block sync, as the daemon runs it: whom to ask, and the quota it serves peers within.
    sync: SyncClient<usize>,
    sync_quota: PeerQuota<usize>,
    alive: bool,
    liveness: Liveness,
}

/// The simulation, its state split by concern.
pub struct Sim {
    config: SimConfig,
    rng: SeededRng,
    now_ms: u64,
    schedule: Schedule,
    setup: Setup,
    nodes: Vec<SimNode>,
    clients: Vec<(Keypair, u64)>,
    /// Which side of a partition each node is on, while one is in force.
    partition: Option<Vec<bool>>,
    adversaries: Adversaries,
    outages: Outages,
    observed: Observed,
}

/// Pending events, ordered by (time, sequence) so a seed replays exactly.
#[derive(Default)]
struct Schedule {
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    /// Timer generations: a timer rescheduled or cancelled leaves its old event stale.
    generation: u64,
}

/// What every node runs from: the genesis, the engine settings and the validators' keys.
struct Setup {
    genesis: Genesis,
    engine_config: EngineConfig,
    keys: Vec<Keypair>,
}

/// The misbehaving actors of a run.
#[derive(Default)]
struct Adversaries {
    byzantine: Option<usize>,
    /// The Byzantine proposer's second block for each block it proposed
    /// (by the first one's hash), sent to half its peers with a matching
    /// proposal: equivocating proposals.
    equivocated: BTreeMap<Hash, Block>,
    /// Blocks it forged naming another validator as proposer; a commit of
    /// one fails the run. (A stripped certificate keeps the block's hash,
    /// which covers the header only: every commit is checked to carry the
    /// certificate its header commits to instead.)
    forged: BTreeSet<Hash>,
    griefer: Option<Griefer>,
}

/// The providers of a liveness run and when the run may end.
#[derive(Default)]
struct Outages {
    providers: Vec<SimProvider>,
    /// Liveness runs go on until this sim time.
    until_ms: u64,
}

/// What the checks have seen so far, and the counters of the report.
#[derive(Default)]
struct Observed {
    /// The first block committed at each height, with its state root.
    canonical: BTreeMap<u64, (Hash, Hash)>,
    sets: BTreeMap<u64, ConsensusValidatorSet>,
    trace: blake3::Hasher,
    committed_txs: u64,
    steps: u64,
    /// Every vote an honest node signed, to catch double signing across restarts.
    signed_votes: BTreeMap<(Address, u64, u32, VoteKind), Option<Hash>>,
    evidence: u64,
    /// Signatures honest nodes' double-sign guards refused (after a crash).
    sign_refusals: u64,
    /// Consensus deliveries a node dropped by its relay verdict.
    relay_dropped: u64,
    proposals_equivocated: u64,
    blocks_forged: u64,
    provider_restarts: u64,
    /// Restarts that joined by state sync, and peers caught serving a bad chunk.
    state_synced: u64,
    snapshot_liars: u64,
}

impl Sim {
    pub fn new(config: SimConfig) -> Sim {
        let accounts = config.validators + config.load.clients + config.scenario.providers;
        let mut chain = TestChain::new(accounts, config.validators, Amount::agr(1_000_000));
        // Short epochs, so runs cross several validator-set rotations.
        chain.genesis.params.epoch_blocks = SIM_EPOCH_BLOCKS;
        chain.genesis.params.downtime_window_blocks = SIM_WINDOW_BLOCKS;
        // Short auctions, so every run clears several.
        chain.genesis.params.market.auction_blocks = SIM_AUCTION_BLOCKS;
        chain.genesis.params.market.no_cancel_blocks = SIM_NO_CANCEL_BLOCKS;
        // Providers need a little stake; too little to matter in consensus
        // when epochs make them validators.
        chain.genesis.params.min_provider_stake = Amount::agr(1);
        let first_provider = config.validators + config.load.clients;
        for a in &mut chain.genesis.accounts[first_provider..] {
            a.stake = Amount::agr(1);
        }
        let pause = if config.scenario.providers > 0 { SIM_LIVENESS_COMMIT_PAUSE_MS } else { 0 };
        let engine_config = EngineConfig {
            commit_pause: Duration::from_millis(pause),
            timeouts: config.timeouts,
            ..EngineConfig::default()
        };
        let nodes = (0..config.validators)
            .map(|i| {
                let engine = Engine::new(
                    chain.genesis.chain_id.clone(),
                    chain.keys[i].clone(),
                    chain.state(),
                    None,
                    engine_config.clone(),
                );
                SimNode {
                    engine,
                    timers: Vec::new(),
                    height: 0,
                    store: SimStore::default(),
                    snapshots: VecDeque::new(),
                    disk: SimDisk::default(),
                    own_txs: OwnTxs::default(),
                    sync: SyncClient::default(),
                    sync_quota: sync_quota(),
                    alive: true,
                    liveness: Liveness::new(SIM_WINDOW_BLOCKS, Height(0)),
                }
            })
            .collect();
        let clients = chain.keys[config.validators..first_provider].iter().map(|k| (k.clone(), 0)).collect();
        let providers = chain.keys[first_provider..]
            .iter()
            .enumerate()
            .map(|(i, k)| SimProvider {
                key: k.clone(),
                outage: match i % 4 {
                    0 => Outage::Never,
                    1 => Outage::Short,
                    _ => Outage::Long,
                },
                up: true,
                heartbeats: HeartbeatSeq::default(),
                reserved: 0,
                last_seq: 0,
                clock_behind_ms: 0,
                probe_quota: PeerQuota::lease(),
                window_ms: (0, 0),
                heights: (0, 0),
                asks: agora_node::provider::AskPolicy::new(Amount::agr(1 + i as u64 % 3), SIM_ASK_HOURS),
            })
            .collect();
        let rng = SeededRng::new(config.seed);
        let mut sim = Sim {
            rng,
            now_ms: chain.genesis.genesis_time_ms.0 + 1_000,
            schedule: Schedule::default(),
            setup: Setup { genesis: chain.genesis, engine_config, keys: chain.keys[..config.validators].to_vec() },
            nodes,
            clients,
            partition: None,
            adversaries: Adversaries {
                byzantine: config.scenario.byzantine.then_some(config.validators - 1),
                equivocated: BTreeMap::new(),
                forged: BTreeSet::new(),
                griefer: config.scenario.griefing_peer.then(|| Griefer {
                    key: Keypair::from_seed_phrase("agora-sim-griefer"),
                    seen: VecDeque::new(),
                    sent: 0,
                }),
            },
            outages: Outages { providers, until_ms: 0 },
            observed: Observed::default(),
            config,
        };
        // Every node starts connected to every other, as the daemon dials its bootstrap peers.
        sim.reconnect();
        sim
    }

    /// Registers the providers and plans their heartbeats and outages.
    fn plan_liveness(&mut self) -> Result<(), SimFailure> {
        let gpus = vec![GpuSpec { model: "H100".into(), vram_mib: 81_920, count: 1, simulated: true }];
        let txs: Vec<SignedTx> = self
            .outages
            .providers
            .iter()
            .map(|p| sign_tx(&p.key, 0, TxKind::RegisterProvider { region: "sim".into(), gpus: gpus.clone() }))
            .collect();
        self.gossip_txs(&txs)?;
        let start = self.now_ms;
        for i in 0..self.outages.providers.len() {
            let first = start + self.rng.below(SIM_HEARTBEAT_MS);
            self.push(first, Event::HeartbeatTick { provider: i });
            let (lo, hi) = match self.outages.providers[i].outage {
                Outage::Never => continue,
                Outage::Short => SHORT_OUTAGE_MS,
                Outage::Long => LONG_OUTAGE_MS,
            };
            let at = start + 5_000 + self.rng.below(10_000);
            let lasts = lo + self.rng.below(hi - lo + 1);
            self.outages.providers[i].window_ms = (at, at + lasts);
            self.push(at, Event::ProviderDown { provider: i });
            self.push(at + lasts, Event::ProviderUp { provider: i });
            self.outages.until_ms = self.outages.until_ms.max(at + lasts + LIVENESS_SLACK_MS);
        }
        if self.adversaries.byzantine.is_some() {
            self.push(start + 3_000, Event::FalseAttestation);
        }
        Ok(())
    }

    /// Hands transactions to every live node's mempool (as gossip would).
    fn gossip_txs(&mut self, txs: &[SignedTx]) -> Result<(), SimFailure> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].alive {
                self.feed(i, Input::Txs(txs.to_vec()))?;
            }
        }
        Ok(())
    }

    /// A random live honest node: what a provider's own node would know of the chain.
    fn reference_node(&mut self) -> Option<usize> {
        let live: Vec<usize> =
            (0..self.nodes.len()).filter(|&i| self.nodes[i].alive && Some(i) != self.adversaries.byzantine).collect();
        (!live.is_empty()).then(|| live[self.rng.below(live.len() as u64) as usize])
    }

    fn liveness_step(&mut self, event: Event) -> Result<(), SimFailure> {
        match event {
            Event::HeartbeatTick { provider } => {
                self.push(self.now_ms + SIM_HEARTBEAT_MS, Event::HeartbeatTick { provider });
                if !self.outages.providers[provider].up {
                    return Ok(());
                }
                let Some(hb) = self.sign_heartbeat(provider)? else { return Ok(()) };
                let f = self.config.faults.clone();
                for to in 0..self.nodes.len() {
                    if self.rng.below(1_000) < f.drop_per_mille {
                        continue;
                    }
                    let delay = f.latency_min_ms + self.rng.below(f.latency_max_ms - f.latency_min_ms + 1);
                    self.push(self.now_ms + delay, Event::HeartbeatDeliver { to, hb: hb.clone() });
                }
            }
            Event::HeartbeatDeliver { to, hb } if self.nodes[to].alive => {
                let n = &mut self.nodes[to];
                if let HeartbeatVerdict::Equivocation(_) =
                    n.liveness.heartbeat(&hb, &self.setup.genesis.chain_id, n.engine.ledger())
                {
                    return Err(self.fail(format!("an honest provider was seen equivocating: {}", hb.signer)));
                }
            }
            Event::ProbeResult { node, provider } => {
                if !self.nodes[node].alive {
                    return Ok(());
                }
                let answer = self.answer_probe(provider, node)?;
                let address = self.outages.providers[provider].key.address();
                let n = &mut self.nodes[node];
                if let Probed::Failed(Some(body)) =
                    n.liveness.probe_answered(address, answer.as_ref(), &self.setup.genesis.chain_id, n.engine.ledger())
                {
                    let att = Signed::sign(body, &self.setup.keys[node], &self.setup.genesis.chain_id)
                        .map_err(|e| self.fail(e.to_string()))?;
                    self.spread_attestation(node, att)?;
                }
            }
            Event::AttestationDeliver { to, from, att } if self.nodes[to].alive && self.connected(from, to) => {
                self.take_attestation(to, att)?;
            }
            Event::ProviderDown { provider } => {
                self.outages.providers[provider].up = false;
                self.outages.providers[provider].heights.0 =
                    self.observed.canonical.keys().next_back().copied().unwrap_or(0);
            }
            Event::ProviderUp { provider } => {
                // The provider restarts: its signer keeps only what its disk
                // holds, and its clock has stepped back to the moment of its
                // last heartbeat — a signer that trusted the clock would sign
                // that sequence number again (equivocation, and the run fails).
                let p = &mut self.outages.providers[provider];
                p.up = true;
                p.heights.1 = self.observed.canonical.keys().next_back().copied().unwrap_or(0);
                p.heartbeats = HeartbeatSeq::recovered(p.reserved);
                p.clock_behind_ms = self.now_ms.saturating_sub(p.last_seq);
                self.observed.provider_restarts += 1;
                // It heartbeats at once on start, as the daemon does.
                self.push(self.now_ms, Event::HeartbeatTick { provider });
            }
            Event::FalseAttestation => {
                // The Byzantine validator claims an always-up provider was down.
                self.push(self.now_ms + 1_000, Event::FalseAttestation);
                let Some(b) = self.adversaries.byzantine else { return Ok(()) };
                let Some(honest) = self.outages.providers.iter().position(|p| p.outage == Outage::Never) else {
                    return Ok(());
                };
                let tip = self.nodes[b].engine.ledger().height().0;
                if tip <= SIM_WINDOW_BLOCKS + 2 {
                    return Ok(());
                }
                let body = DowntimeAttestation {
                    provider: self.outages.providers[honest].key.address(),
                    window_start: Height(tip - SIM_WINDOW_BLOCKS - 1),
                    window_end: Height(tip - 1),
                };
                let att = Signed::sign(body, &self.setup.keys[b], &self.setup.genesis.chain_id)
                    .map_err(|e| self.fail(e.to_string()))?;
                for to in (0..self.nodes.len()).filter(|&t| t != b) {
                    self.push(self.now_ms + 10, Event::AttestationDeliver { to, from: b, att: att.clone() });
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A provider signs a heartbeat naming the tip of a live node, by the
    /// daemon's rules (sequence reserved on its disk first); None before any
    /// node is live.
    fn sign_heartbeat(&mut self, provider: usize) -> Result<Option<Signed<Heartbeat>>, SimFailure> {
        let Some(r) = self.reference_node() else { return Ok(None) };
        let ledger = self.nodes[r].engine.ledger();
        let tip = (ledger.height(), ledger.last_block_hash());
        let chain = self.setup.genesis.chain_id.clone();
        let p = &mut self.outages.providers[provider];
        let now = self.now_ms.saturating_sub(p.clock_behind_ms);
        let SimProvider { heartbeats, reserved, key, .. } = p;
        let hb = heartbeats.sign(key, &chain, tip, now, |r| {
            *reserved = r;
            Ok(())
        });
        let hb = hb.map_err(|e| self.fail(e.to_string()))?;
        self.outages.providers[provider].last_seq = hb.body.seq;
        Ok(Some(hb))
    }

    /// A provider's answer to `node`'s probe, as the daemon gives it: none
    /// while down, a refusal over its quota, else its latest heartbeat if
    /// recent or a new one.
    fn answer_probe(&mut self, provider: usize, node: usize) -> Result<Option<Signed<Heartbeat>>, SimFailure> {
        let p = &mut self.outages.providers[provider];
        if !p.up || !p.probe_quota.admit(node, self.now_ms) {
            return Ok(None);
        }
        p.probe_quota.done(&node);
        let now = self.now_ms.saturating_sub(p.clock_behind_ms);
        match p.heartbeats.recent(now) {
            Some(hb) => Ok(Some(hb)),
            None => self.sign_heartbeat(provider),
        }
    }

    /// A validator's own attestation: kept, and gossiped to the others.
    fn spread_attestation(&mut self, node: usize, att: Signed<DowntimeAttestation>) -> Result<(), SimFailure> {
        let f = self.config.faults.clone();
        for to in (0..self.nodes.len()).filter(|&t| t != node) {
            // Attestations are re-gossiped on every failed probe, so one copy
            // may be lost like any message.
            if self.rng.below(1_000) < f.drop_per_mille {
                continue;
            }
            let delay = f.latency_min_ms + self.rng.below(f.latency_max_ms - f.latency_min_ms + 1);
            self.push(self.now_ms + delay, Event::AttestationDeliver { to, from: node, att: att.clone() });
        }
        self.take_attestation(node, att)
    }

    /// A node keeps an attestation; a validator that sees a quorum submits the slash.
    fn take_attestation(&mut self, node: usize, att: Signed<DowntimeAttestation>) -> Result<(), SimFailure> {
        let n = &mut self.nodes[node];
        let Ok(agora_node::liveness::Attested::Kept(Some(evidence))) =
            n.liveness.attestation(att, &self.setup.genesis.chain_id, n.engine.ledger())
        else {
            return Ok(());
        };
        if Some(node) == self.adversaries.byzantine || !n.engine.ledger().is_validator(&self.setup.keys[node].address())
        {
            return Ok(());
        }
        self.submit_slash(node, evidence)
    }

    /// A validator signs a downtime slash at its next free nonce and gossips it.
    fn submit_slash(&mut self, node: usize, evidence: agora_protocol::DowntimeEvidence) -> Result<(), SimFailure> {
        self.submit_own(node, TxKind::SlashDowntime { evidence })
    }

    /// A node signs one of its own transactions at the nonce the daemon's
    /// rules give it (`OwnTxs`) and gossips it.
    fn submit_own(&mut self, node: usize, kind: TxKind) -> Result<(), SimFailure> {
        let n = &mut self.nodes[node];
        let me = self.setup.keys[node].address();
        let nonce = n.own_txs.next_nonce(n.engine.ledger(), &me);
        n.own_txs.sent(nonce, kind.clone(), n.engine.ledger().height());
        let tx = sign_tx(&self.setup.keys[node], nonce, kind);
        self.gossip_txs(&[tx])
    }

    /// After a commit: own transactions stuck for a while are signed again,
    /// as the daemon does.
    fn resend_own(&mut self, node: usize) -> Result<(), SimFailure> {
        let n = &mut self.nodes[node];
        let me = self.setup.keys[node].address();
        let again = n.own_txs.stuck(n.engine.ledger(), &me);
        let height = n.engine.ledger().height();
        let mut txs = Vec::with_capacity(again.len());
        for (nonce, kind) in again {
            n.own_txs.sent(nonce, kind.clone(), height);
            txs.push(sign_tx(&self.setup.keys[node], nonce, kind));
        }
        if txs.is_empty() { Ok(()) } else { self.gossip_txs(&txs) }
    }

    /// After a commit: the node's liveness view moves on, and a live honest
    /// validator probes the providers silent for a window.
    fn liveness_after_commit(&mut self, node: usize, height: Height, hash: Hash) -> Result<(), SimFailure> {
        let n = &mut self.nodes[node];
        n.liveness.on_block(height, hash);
        if self.outages.providers.is_empty() || Some(node) == self.adversaries.byzantine || !n.alive {
            return Ok(());
        }
        if !n.engine.ledger().is_validator(&self.setup.keys[node].address()) {
            return Ok(());
        }
        let ready = n.liveness.due_evidence(n.engine.ledger());
        let due = n.liveness.due_probes(n.engine.ledger());
        for evidence in ready {
            self.submit_slash(node, evidence)?;
        }
        let f = self.config.faults.clone();
        for address in due {
            let Some(provider) = self.outages.providers.iter().position(|p| p.key.address() == address) else {
                continue;
            };
            // A probe is a request over a connection (retransmitted): it is
            // not lost, it fails only if the provider is down when it arrives.
            let delay = 2 * (f.latency_min_ms + self.rng.below(f.latency_max_ms - f.latency_min_ms + 1));
            self.push(self.now_ms + delay, Event::ProbeResult { node, provider });
        }
        Ok(())
    }

    /// The liveness verdicts at the end of a run, from a node at the top height.
    fn judge_liveness(&self) -> Result<u64, SimFailure> {
        let mut slashed_long = 0;
        let Some(top) = self.nodes.iter().max_by_key(|n| n.height) else { return Ok(0) };
        let state = top.engine.ledger();
        for p in &self.outages.providers {
            let slashes = state.provider(&p.key.address()).map_or(0, |r| r.slashes);
            let (start, end) = p.window_ms;
            let blocks = p.heights.1.saturating_sub(p.heights.0);
            match p.outage {
                Outage::Never if slashes > 0 => {
                    return Err(self.fail(format!("an always-up provider was slashed {slashes} time(s)")));
                }
                Outage::Short if slashes > 0 && blocks < SIM_WINDOW_BLOCKS => {
                    return Err(
                        self.fail(format!("a provider down for only {} ms ({blocks} blocks) was slashed", end - start))
                    );
                }
                // The bound: a window of silence, a few blocks to probe and
                // gather attestations, a few to commit the slash.
                Outage::Long if slashes == 0 && blocks >= SIM_WINDOW_BLOCKS + SLASH_BOUND_EXTRA_BLOCKS => {
                    return Err(self
                        .fail(format!("a provider down for {} ms ({blocks} blocks) was never slashed", end - start)));
                }
                _ if slashes > 1 => return Err(self.fail(format!("one outage slashed {slashes} times"))),
                Outage::Long if blocks >= SIM_WINDOW_BLOCKS + SLASH_BOUND_EXTRA_BLOCKS => slashed_long += 1,
                _ => {}
            }
        }
        Ok(slashed_long)
    }

    /// Schedules the configured crash, partition and heal at seeded times.
    fn plan_faults(&mut self) {
        let start = self.now_ms;
        let honest = self.adversaries.byzantine.map_or(self.nodes.len(), |b| b);
        if self.config.scenario.crash_restart {
            let node = self.rng.below(honest as u64) as usize;
            let at = start + 200 + self.rng.below(3_000);
            // Down for long enough that its peers take a snapshot past it, when it is to rejoin by state sync.
            let down_for = if self.config.scenario.state_sync { 6_000 } else { 500 } + self.rng.below(3_000);
            self.push(at, Event::Crash { node });
            self.push(at + down_for, Event::Restart { node });
        }
        if self.config.scenario.partition {
            // Either a minority cut off, or an even split (which halts progress until healed).
            let side: Vec<bool> = (0..self.nodes.len()).map(|_| self.rng.below(2) == 0).collect();
            let at = start + 200 + self.rng.below(3_000);
            let lasts = 500 + self.rng.below(4_000);
            self.push(at, Event::Partition { side });
            self.push(at + lasts, Event::Heal);
        }
    }

    fn fail(&self, what: String) -> SimFailure {
        SimFailure { seed: self.config.seed, what }
    }

    fn push(&mut self, at_ms: u64, event: Event) {
        self.schedule.seq += 1;
        self.schedule.queue.push(Reverse((at_ms, self.schedule.seq)));
        self.schedule.events.insert(self.schedule.seq, event);
    }

    /// Runs until every node reaches the target height or time runs out.
    pub fn run(mut self) -> Result<SimReport, SimFailure> {
        for i in 0..self.nodes.len() {
            self.feed(i, Input::Start)?;
        }
        self.push(self.now_ms, Event::ClientLoad);
        if self.adversaries.griefer.is_some() {
            self.push(self.now_ms + GRIEF_EVERY_MS, Event::Grief);
        }
        self.plan_faults();
        if !self.outages.providers.is_empty() {
            self.plan_liveness()?;
        }
        self.preload()?;
        while !self.done() {
            let Some(Reverse((at, seq))) = self.schedule.queue.pop() else {
                return Err(self.fail("no events left: the network stalled".into()));
            };
            if at > self.start_time() + self.config.max_time_ms {
                let heights: Vec<(u64, String)> =
                    self.nodes.iter().map(|n| (n.height, format!("{}", n.engine.round()))).collect();
                return Err(
                    self.fail(format!("liveness: (height, round) {heights:?} after {} ms", self.config.max_time_ms))
                );
            }
            self.now_ms = self.now_ms.max(at);
            self.observed.steps += 1;
            let event = self.schedule.events.remove(&seq).ok_or_else(|| self.fail("lost event".into()))?;
            self.step(event)?;
        }
        if let Some(g) = &self.adversaries.griefer {
            let griefer = g.key.address();
            if let Some(i) = (0..self.nodes.len()).find(|&i| self.nodes[i].engine.mempool().pending_from(&griefer) > 0)
            {
                return Err(self.fail(format!("node {i}'s mempool kept the griefer's unpayable transactions")));
            }
        }
        let long_outages_slashed = self.judge_liveness()?;
        let (auctions, auction_leases) = self
            .nodes
            .iter()
            .max_by_key(|n| n.height)
            .map(|n| {
                let results: Vec<_> = n.engine.ledger().auction_results(0).collect();
                (results.len() as u64, results.iter().map(|r| u64::from(r.leases)).sum())
            })
            .unwrap_or((0, 0));
        let min_height = self.nodes.iter().map(|n| n.height).min().unwrap_or(0);
        Ok(SimReport {
            seed: self.config.seed,
            steps: self.observed.steps,
            sim_time_ms: self.now_ms - self.start_time(),
            min_height,
            committed_txs: self.observed.committed_txs,
            evidence: self.observed.evidence,
            set_changes: self
                .observed
                .sets
                .values()
                .zip(self.observed.sets.values().skip(1))
                .filter(|(a, b)| a != b)
                .count() as u64,
            trace: Hash(*self.observed.trace.finalize().as_bytes()),
            long_outages_slashed,
            sign_refusals: self.observed.sign_refusals,
            proposals_equivocated: self.observed.proposals_equivocated,
            griefing: self.adversaries.griefer.as_ref().map_or(0, |g| g.sent),
            relay_dropped: self.observed.relay_dropped,
            provider_restarts: self.observed.provider_restarts,
            blocks_forged: self.observed.blocks_forged,
            auctions,
            auction_leases,
            state_synced: self.observed.state_synced,
            snapshot_liars: self.observed.snapshot_liars,
        })
    }

    fn done(&self) -> bool {
        if self.config.load.stop_when_preload_committed {
            let top = self.observed.canonical.keys().next_back().copied().unwrap_or(0);
            return self.observed.committed_txs >= self.config.load.preload_txs as u64
                && self.nodes.iter().all(|n| n.height >= top);
        }
        self.now_ms >= self.outages.until_ms && self.nodes.iter().all(|n| n.height >= self.config.target_height)
    }

    /// Hands `preload_txs` transfers, spread over the clients, to every node,
    /// in batches as a node's gossip layer would.
    fn preload(&mut self) -> Result<(), SimFailure> {
        let txs: Vec<_> = (0..self.config.load.preload_txs)
            .map(|i| {
                let c = i % self.clients.len();
                let to = self.clients[(c + 1) % self.clients.len()].0.address();
                let (key, nonce) = &mut self.clients[c];
                *nonce += 1;
                transfer(key, *nonce - 1, to, Amount(1 + (i as u64 % 1_000)))
            })
            .collect();
        for batch in txs.chunks(PRELOAD_BATCH) {
            for n in 0..self.nodes.len() {
                self.feed(n, Input::Txs(batch.to_vec()))?;
            }
        }
        Ok(())
    }

    fn start_time(&self) -> u64 {
        self.setup.genesis.genesis_time_ms.0 + 1_000
    }

    fn step(&mut self, event: Event) -> Result<(), SimFailure> {
        match event {
            Event::Deliver { to, from, msg } => {
                if !self.nodes[to].alive || !self.connected(from, to) {
                    return Ok(());
                }
                // The daemon's gossip verdict: what it would drop never reaches consensus.
                if self.nodes[to].engine.relay(&msg) == Relay::Drop {
                    self.observed.relay_dropped += 1;
                    return Ok(());
                }
                if let Some(g) = self.adversaries.griefer.as_mut() {
                    if g.seen.len() >= GRIEFER_MEMORY {
                        g.seen.pop_front();
                    }
                    g.seen.push_back(msg.clone());
                }
                self.feed(to, Input::Message(msg))
            }
            Event::Grief => self.grief(),
            Event::Crash { node } => {
                // Everything in memory is lost, and WAL appends not yet synced;
                // the store, the synced WAL and the guard's state survive.
                self.nodes[node].alive = false;
                self.nodes[node].disk.crash();
                self.nodes[node].timers.clear();
                for n in &mut self.nodes {
                    n.sync.disconnected(&node);
                }
                Ok(())
            }
            Event::Restart { node } => self.restart(node),
            Event::Partition { side } => {
                // Connections across the cut close, as a partitioned daemon's do.
                for (a, n) in self.nodes.iter_mut().enumerate() {
                    for b in (0..side.len()).filter(|&b| side[b] != side[a]) {
                        n.sync.disconnected(&b);
                    }
                }
                self.partition = Some(side);
                Ok(())
            }
            Event::Heal => {
                self.partition = None;
                self.reconnect();
                Ok(())
            }
            Event::Timer { node, timer, generation } => {
                let live = self.nodes[node].timers.iter().any(|(t, g)| *t == timer && *g == generation);
                if live {
                    self.nodes[node].timers.retain(|(t, _)| *t != timer);
                    self.feed(node, Input::TimeoutElapsed(timer))?;
                }
                Ok(())
            }
            Event::ClientLoad => self.client_load(),
            e @ (Event::HeartbeatTick { .. }
            | Event::HeartbeatDeliver { .. }
            | Event::ProbeResult { .. }
            | Event::AttestationDeliver { .. }
            | Event::ProviderDown { .. }
            | Event::ProviderUp { .. }
            | Event::FalseAttestation) => self.liveness_step(e),
            Event::Sync { to, blocks } => {
                if !self.nodes[to].alive {
                    return Ok(());
                }
                let full = self.nodes[to].sync.answered(blocks.len());
                for (block, certificate) in blocks {
                    self.feed(to, Input::Synced { block: Box::new(block), certificate })?;
                }
                if full {
                    self.request_sync(to, Height(self.nodes[to].height));
                }
                Ok(())
            }
            Event::SyncFailed { to } => {
                self.nodes[to].sync.failed();
                Ok(())
            }
        }
    }

    /// Every 100 ms each client may send a transfer, to a random node and
    /// gossiped to the others.
    fn client_load(&mut self) -> Result<(), SimFailure> {
        let per_tick = self.config.load.txs_per_second.div_ceil(10) as usize;
        for _ in 0..per_tick {
            let c = self.rng.below(self.clients.len() as u64) as usize;
            let to = self.clients[(c + 1) % self.clients.len()].0.address();
            let (key, nonce) = &mut self.clients[c];
            // Mostly transfers; some small stakes, which change the validator
            // set at the next epoch (with power too small to stall consensus),
            // and some bids in the auctions.
            let tx = if self.rng.below(1_000) < BID_PER_MILLE {
                let kind = TxKind::PlaceBid {
                    class: sim_class(),
                    gpus: 1,
                    hours: 1 + self.rng.below(3) as u32,
                    max_price: Amount::agr(1 + self.rng.below(3)),
                    split: false,
                    start_hours: 0,
                };
                sign_tx(key, *nonce, kind)
            } else if self.rng.below(8) == 0 {
                sign_tx(key, *nonce, TxKind::Stake { amount: Amount(1 + self.rng.below(Amount::agr(5).0)) })
            } else {
                transfer(key, *nonce, to, Amount(1 + self.rng.below(1_000)))
            };
            *nonce += 1;
            for i in 0..self.nodes.len() {
                if self.nodes[i].alive {
                    self.feed(i, Input::Tx(Box::new(tx.clone())))?;
                }
            }
        }
        self.provider_asks()?;
        self.push(self.now_ms + 100, Event::ClientLoad);
        Ok(())
    }

    /// Up providers run the daemon's automatic ask policy: each auction,
    /// their idle GPU is asked for at their floor price.
    fn provider_asks(&mut self) -> Result<(), SimFailure> {
        let Some(r) = self.reference_node() else { return Ok(()) };
        let mut asks = Vec::new();
        for p in self.outages.providers.iter_mut().filter(|p| p.up) {
            let n = &self.nodes[r];
            if let Some(kind) = p.asks.next(n.engine.ledger(), &p.key.address(), |_| 0) {
                let nonce = n.engine.mempool().next_nonce(n.engine.ledger(), &p.key.address());
                asks.push(sign_tx(&p.key, nonce, kind));
            }
        }
        if asks.is_empty() {
            return Ok(());
        }
        self.gossip_txs(&asks)
    }

    fn feed(&mut self, node: usize, input: Input) -> Result<(), SimFailure> {
        let actions = self.nodes[node].engine.handle(self.now_ms, input);
        self.act_all(node, actions)
    }

    fn act_all(&mut self, node: usize, actions: Vec<Action>) -> Result<(), SimFailure> {
        for action in actions {
            self.act(node, action)?;
        }
        Ok(())
    }

    /// Live nodes on the same side of any partition connect again (the
    /// daemon re-dials its bootstrap peers).
    fn reconnect(&mut self) {
        let count = self.nodes.len();
        for a in 0..count {
            for b in (0..count).filter(|&b| b != a) {
                if self.nodes[a].alive && self.nodes[b].alive && self.connected(a, b) {
                    self.nodes[a].sync.connected(b);
                }
            }
        }
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        self.partition.as_ref().is_none_or(|side| side[a] == side[b])
    }

    /// Rebuilds a crashed node from what it persisted: the ledger by replaying
    /// its stored blocks (or, with state sync, from a peer's newer snapshot),
    /// consensus by replaying its WAL.
    fn restart(&mut self, node: usize) -> Result<(), SimFailure> {
        if self.config.scenario.state_sync {
            self.state_sync(node)?;
        }
        let store = &self.nodes[node].store;
        let mut ledger = match &store.from {
            Some(state) => state.clone(),
            None => self.setup.genesis.state().map_err(|e| self.fail(e.to_string()))?,
        };
        let from = ledger.height();
        for (block, _) in store.blocks.iter().filter(|(b, _)| b.header.height > from) {
            apply_block(&mut ledger, block, SigCheck::Skip).map_err(|e| self.fail(format!("restart replay: {e}")))?;
        }
        let last_commit = self.nodes[node].store.last_certificate();
        let (engine, actions) = Engine::restart(
            self.setup.genesis.chain_id.clone(),
            self.setup.keys[node].clone(),
            ledger,
            last_commit,
            self.setup.engine_config.clone(),
            Recovered { wal: &self.nodes[node].disk.wal, last_signed: self.nodes[node].disk.signed.as_ref() },
            self.now_ms,
        );
        self.nodes[node].engine = engine;
        self.nodes[node].own_txs = OwnTxs::default();
        self.nodes[node].sync = SyncClient::default();
        self.nodes[node].sync_quota = sync_quota();
        self.nodes[node].alive = true;
        self.reconnect();
        // Its liveness view was in memory: it watches again from where its store is.
        self.nodes[node].liveness = Liveness::new(SIM_WINDOW_BLOCKS, Height(self.nodes[node].height));
        self.act_all(node, actions)
    }

    /// The restarting node joins by state sync when a connected peer holds a
    /// snapshot newer than its store: the node's own `StateSync` decides
    /// whom to ask for what, peers answer from their snapshots and stores
    /// (the Byzantine validator with a forged offer first), and the node's store
    /// is replaced by the restored state (its WAL and double-sign guard
    /// stay). Answers are immediate: this exercises the decisions and the
    /// verification, not the network's timing.
    fn state_sync(&mut self, node: usize) -> Result<(), SimFailure> {
        use agora_node::state_sync::{Request, StateSync, answer};
        use agora_protocol::snapshot::{SnapshotRequest, SnapshotResponse};
        let genesis = &self.setup.genesis;
        let trusted = agora_ledger::light::trusted_from_genesis(genesis).map_err(|e| self.fail(e.to_string()))?;
        let mut m: StateSync<usize> = StateSync::new(genesis.chain_id.clone(), trusted);
        let own = self.nodes[node].height;
        for p in (0..self.nodes.len()).filter(|&p| p != node && self.nodes[p].alive && self.connected(node, p)) {
            m.connected(p);
        }
        // Offers, then the validator-set transitions an offer the genesis
        // validators do not vouch for makes the node ask its peer for.
        for _ in 0..4 {
            let requests = m.ask_offers(false);
            if requests.is_empty() {
                break;
            }
            for (p, request) in requests {
                let Request::Snapshot(request) = request else { continue };
                match answer(&self.nodes[p].snapshots, &request) {
                    Ok(SnapshotResponse::Offers(mut offers)) => {
                        // The Byzantine validator leads with a forgery: its
                        // newest header with the certificate cut to one signature.
                        if Some(p) == self.adversaries.byzantine
                            && let Some(mut forged) = offers.first().cloned()
                        {
                            forged.certificate.signatures.truncate(1);
                            offers.insert(0, forged);
                        }
                        m.offers_from(p, offers);
                    }
                    Ok(SnapshotResponse::Transitions(page)) => m.transitions_from(p, page),
                    _ => m.failed(p),
                }
            }
        }
        let newer = self.nodes.iter().flat_map(|n| n.snapshots.iter()).any(|s| s.offer.header.height.0 > own);
        if !newer || !m.choose().map_err(|e| self.fail(format!("state sync: {e}")))? {
            return Ok(());
        }
        // Each request is answered once; a bounded loop whatever the peers do.
        for _ in 0..10_000 {
            if m.complete() {
                break;
            }
            let Some((p, request)) = m.next_request() else { break };
            let peer = &self.nodes[p];
            match request {
                Request::Block(r) => {
                    let blocks = build_response(&peer.store, &r, peer.height).map(|r| r.blocks).unwrap_or_default();
                    m.block_from(p, blocks);
                }
                Request::Snapshot(r @ SnapshotRequest::Chunk { .. }) => match answer(&peer.snapshots, &r) {
                    Ok(response) => m.chunk_from(p, response),
                    Err(_) => m.failed(p),
                },
                Request::Snapshot(SnapshotRequest::Offers | SnapshotRequest::Transitions { .. }) => m.failed(p),
            }
            self.observed.snapshot_liars += m.take_penalised().len() as u64;
        }
        self.observed.snapshot_liars += m.take_penalised().len() as u64;
        if !m.complete() {
            // Every holder lied or left: it replays its own blocks instead.
            return Ok(());
        }
        let (restored, _) = m.finish().map_err(|e| self.fail(format!("state sync: {e}")))?;
        let store: std::sync::Arc<dyn agora_ledger::tree::NodeStore> =
            std::sync::Arc::new(agora_ledger::tree::MemNodes::default());
        let (state, block, cert) = restored.into_state(store).map_err(|e| self.fail(e.to_string()))?;
        let h = state.height().0;
        if self.observed.canonical.get(&h).map(|(hash, root)| (*hash, *root)) != Some((block.hash(), state.root())) {
            return Err(self.fail(format!("node {node} restored a state at height {h} that is not the chain's")));
        }
        state.audit().map_err(|e| self.fail(format!("node {node} restored state: {e}")))?;
        let n = &mut self.nodes[node];
        n.store = SimStore { blocks: vec![(block, cert)], from: Some(state) };
        n.height = h;
        n.disk.prune_through(h);
        self.observed.state_synced += 1;
        Ok(())
    }

    fn act(&mut self, node: usize, action: Action) -> Result<(), SimFailure> {
        match action {
            Action::Broadcast(msg) | Action::Rebroadcast(msg) => self.broadcast(node, msg)?,
            Action::ScheduleTimeout { timer, after } => {
                self.schedule.generation += 1;
                let generation = self.schedule.generation;
                let n = &mut self.nodes[node];
                n.timers.retain(|(t, _)| *t != timer);
                n.timers.push((timer, generation));
                self.push(self.now_ms + after.as_millis() as u64, Event::Timer { node, timer, generation });
            }
            Action::CancelTimeout(timer) => self.nodes[node].timers.retain(|(t, _)| *t != timer),
            Action::CancelAllTimeouts => self.nodes[node].timers.clear(),
            Action::Commit { block, certificate, .. } => self.on_commit(node, &block, &certificate)?,
            // The engine asks for sync itself (`SyncNeeded`).
            Action::MissingBlock { .. } => {}
            Action::SyncNeeded { have } => self.request_sync(node, have),
            Action::WalAppend { height, entry, durable } => self.nodes[node].disk.append(height, entry, durable),
            Action::PersistSigned(last) => self.nodes[node].disk.signed = Some(last),
            Action::SignRefused(_) => self.observed.sign_refusals += 1,
            Action::Evidence(e) => {
                if Some(node) != self.adversaries.byzantine
                    && self.adversaries.byzantine.is_some_and(|b| e.first.signer == self.setup.keys[b].address())
                {
                    self.observed.evidence += 1;
                    // One honest node submits it (the first live one), so the
                    // others' nonces are not spent on duplicates that fail.
                    let submitter =
                        (0..self.nodes.len()).find(|&i| self.nodes[i].alive && Some(i) != self.adversaries.byzantine);
                    if submitter != Some(node) {
                        return Ok(());
                    }
                    let evidence = agora_protocol::EquivocationEvidence::Votes { first: e.first, second: e.second };
                    self.submit_own(node, TxKind::SlashEquivocation { evidence })?;
                }
            }
        }
        Ok(())
    }

    /// The node asks the next connected peer in turn for the blocks after
    /// `have` (the daemon's `SyncClient`), and the peer answers as the
    /// daemon serves (its quota, `build_response` from its store). A request
    /// rides a connection, so it is not lost; it fails if the peer is gone.
    fn request_sync(&mut self, node: usize, have: Height) {
        let Some((peer, request)) = self.nodes[node].sync.request(have) else { return };
        let f = self.config.faults.clone();
        let delay = f.latency_min_ms + self.rng.below(f.latency_max_ms - f.latency_min_ms + 1);
        if !self.nodes[peer].alive || !self.connected(node, peer) {
            self.push(self.now_ms + delay, Event::SyncFailed { to: node });
            return;
        }
        let p = &mut self.nodes[peer];
        let blocks = if p.sync_quota.admit(node, self.now_ms) {
            let served = build_response(&p.store, &request, p.height);
            p.sync_quota.done(&node);
            served.map(|r| r.blocks).unwrap_or_default()
        } else {
            Vec::new()
        };
        self.push(self.now_ms + delay, Event::Sync { to: node, blocks });
    }

    fn broadcast(&mut self, from: usize, msg: ConsensusMessage) -> Result<(), SimFailure> {
        if Some(from) == self.adversaries.byzantine {
            self.byzantine_broadcast(from, msg);
            return Ok(());
        }
        if let ConsensusMessage::Vote(v) = &msg {
            let key = (v.signer, v.body.height.0, v.body.round, v.body.kind);
            match self.observed.signed_votes.get(&key) {
                Some(block) if *block != v.body.block => {
                    return Err(self.fail(format!("node {from} signed two different votes for {key:?}")));
                }
                Some(_) => {}
                None => _ = self.observed.signed_votes.insert(key, v.body.block),
            }
        }
        for to in (0..self.nodes.len()).filter(|&t| t != from) {
            self.send(from, to, msg.clone());
        }
        Ok(())
    }

    /// Sends one message over the faulty network: maybe dropped, maybe
    /// duplicated, delayed by a random latency.
    fn send(&mut self, from: usize, to: usize, msg: ConsensusMessage) {
        let f = self.config.faults.clone();
        if self.rng.below(1_000) < f.drop_per_mille {
            return;
        }
        let copies = if self.rng.below(1_000) < f.duplicate_per_mille { 2 } else { 1 };
        for _ in 0..copies {
            let delay = f.latency_min_ms + self.rng.below(f.latency_max_ms - f.latency_min_ms + 1);
            self.push(self.now_ms + delay, Event::Deliver { to, from, msg: msg.clone() });
        }
    }

    /// The Byzantine validator: every vote goes out in two conflicting
    /// versions (half the peers get each), and it sprays garbage: forged
    /// signatures and votes for heights far ahead.
    fn byzantine_broadcast(&mut self, from: usize, msg: ConsensusMessage) {
        let key = self.setup.keys[from].clone();
        let chain = self.setup.genesis.chain_id.clone();
        let second = match &msg {
            ConsensusMessage::Vote(v) => {
                let mut other = v.body.clone();
                other.block = match other.block {
                    Some(_) => None,
                    None => Some(Hash([self.rng.below(256) as u8; 32])),
                };
                Signed::sign(other, &key, &chain).map(ConsensusMessage::Vote).unwrap_or_else(|_| msg.clone())
            }
            // As proposer: a second valid block for the same height and
            // round (a later time), signed and sent to half the peers, with
            // a proposal naming it to the same half.
            ConsensusMessage::Block(b) if self.config.scenario.equivocating_proposer => {
                match self.second_block(from, &b.body.block) {
                    Some(alt) => {
                        let body = agora_protocol::consensus::ProposalBlock { block: alt, ..b.body.clone() };
                        Signed::sign(body, &key, &chain)
                            .map(|s| ConsensusMessage::Block(Box::new(s)))
                            .unwrap_or_else(|_| msg.clone())
                    }
                    None => msg.clone(),
                }
            }
            ConsensusMessage::Proposal(p) => match self.adversaries.equivocated.get(&p.body.block) {
                Some(alt) => {
                    let other = agora_protocol::consensus::Proposal { block: alt.hash(), ..p.body.clone() };
                    Signed::sign(other, &key, &chain).map(ConsensusMessage::Proposal).unwrap_or_else(|_| msg.clone())
                }
                None => msg.clone(),
            },
            _ => msg.clone(),
        };
        // Sometimes, as proposer, also a forged block with its proposal, to every peer.
        let forged = match &msg {
            ConsensusMessage::Block(b) if self.config.scenario.equivocating_proposer && self.rng.below(3) == 0 => {
                self.forge(from, b)
            }
            _ => Vec::new(),
        };
        for to in (0..self.nodes.len()).filter(|&t| t != from) {
            // Even peers get one version, odd peers the other, and every
            // third peer both (so honest nodes can catch it).
            let m = if to % 2 == 0 { msg.clone() } else { second.clone() };
            self.send(from, to, m);
            if to % 3 == 0 && second != msg {
                let m = if to % 2 == 0 { second.clone() } else { msg.clone() };
                self.send(from, to, m);
            }
            if self.rng.below(4) == 0 {
                let garbage = self.garbage(&msg);
                self.send(from, to, garbage);
            }
            for m in &forged {
                self.send(from, to, m.clone());
            }
        }
    }

    /// A block the Byzantine proposer forges for its round, signed with its
    /// key and sent with a proposal naming it: either a valid block (state
    /// root and all) built naming another validator as the header's
    /// proposer, so its fees would go to someone else's account, or its own
    /// block with the previous block's certificate stripped of signatures
    /// (so the header no longer commits to what it carries). Honest nodes
    /// must refuse both; a commit of either fails the run.
    fn forge(&mut self, from: usize, b: &Signed<agora_protocol::consensus::ProposalBlock>) -> Vec<ConsensusMessage> {
        // Only its own proposals (not the blocks of others it restreams).
        if b.body.block.header.proposer != self.setup.keys[from].address() {
            return Vec::new();
        }
        let mut block = b.body.block.clone();
        let renamed = self.rng.below(2) == 0;
        if renamed {
            let others = self.setup.keys.len() as u64 - 1;
            let other = (from + 1 + self.rng.below(others) as usize) % self.setup.keys.len();
            let mut ledger = self.nodes[from].engine.ledger().clone();
            if block.header.height != ledger.height().next() {
                return Vec::new();
            }
            let proposer = self.setup.keys[other].address();
            let built = agora_ledger::BlockBuilder::new(&mut ledger, block.header.time_ms, proposer)
                .and_then(|builder| builder.finish(block.last_commit.clone()));
            let Ok(alt) = built else { return Vec::new() };
            block = alt;
        } else {
            match block.last_commit.as_mut() {
                Some(c) if !c.signatures.is_empty() => c.signatures.truncate(c.signatures.len() / 2),
                _ => return Vec::new(),
            }
        }
        let hash = block.hash();
        let (key, chain) = (&self.setup.keys[from], &self.setup.genesis.chain_id);
        let proposal = agora_protocol::consensus::Proposal {
            height: block.header.height,
            round: b.body.round,
            block: hash,
            pol_round: b.body.pol_round,
        };
        let body = agora_protocol::consensus::ProposalBlock { block, ..b.body.clone() };
        let (Ok(block), Ok(proposal)) = (Signed::sign(body, key, chain), Signed::sign(proposal, key, chain)) else {
            return Vec::new();
        };
        if renamed {
            if self.adversaries.forged.len() >= 1_024 {
                self.adversaries.forged.pop_first();
            }
            self.adversaries.forged.insert(hash);
        }
        self.observed.blocks_forged += 1;
        vec![ConsensusMessage::Block(Box::new(block)), ConsensusMessage::Proposal(proposal)]
    }

    /// One round of the griefer against a random live node: a stale message
    /// replayed, a vote signed with its own (stake-less) key, and transfers
    /// it cannot pay (one at its nonce, others beyond a gap).
    fn grief(&mut self) -> Result<(), SimFailure> {
        let to = self.rng.below(self.nodes.len() as u64) as usize;
        self.push(self.now_ms + GRIEF_EVERY_MS, Event::Grief);
        let Some(g) = self.adversaries.griefer.as_mut() else { return Ok(()) };
        if !self.nodes[to].alive {
            return Ok(());
        }
        let key = g.key.clone();
        let stale =
            if g.seen.is_empty() { None } else { g.seen.get(self.rng.below(g.seen.len() as u64) as usize).cloned() };
        g.sent += 3;
        let height = self.nodes[to].engine.height();
        let vote = agora_protocol::consensus::Vote {
            kind: VoteKind::Prevote,
            height,
            round: 0,
            block: Some(Hash([self.rng.below(256) as u8; 32])),
        };
        let chain = self.setup.genesis.chain_id.clone();
        let forged = Signed::sign(vote, &key, &chain).map_err(|e| self.fail(e.to_string()))?;
        for msg in stale.into_iter().chain(std::iter::once(ConsensusMessage::Vote(forged))) {
            self.push(self.now_ms + 1, Event::Deliver { to, from: to, msg });
        }
        let junk: Vec<SignedTx> =
            [0u64, 3, 7].iter().map(|&nonce| transfer(&key, nonce, self.setup.keys[0].address(), Amount(1))).collect();
        self.feed(to, Input::Txs(junk))
    }

    /// Another valid block for the same height as `block`, built on the
    /// Byzantine node's own ledger one millisecond later; remembered so the
    /// proposal that follows can name it.
    fn second_block(&mut self, from: usize, block: &Block) -> Option<Block> {
        let mut ledger = self.nodes[from].engine.ledger().clone();
        if block.header.height != ledger.height().next() {
            return None;
        }
        let time = agora_protocol::TimestampMs(block.header.time_ms.0 + 1);
        let builder = agora_ledger::BlockBuilder::new(&mut ledger, time, block.header.proposer).ok()?;
        let alt = builder.finish(block.last_commit.clone()).ok()?;
        if self.adversaries.equivocated.len() >= 64 {
            self.adversaries.equivocated.clear();
        }
        self.adversaries.equivocated.insert(block.hash(), alt.clone());
        self.observed.proposals_equivocated += 1;
        Some(alt)
    }

    /// A malformed variant of a message: a broken signature or a height far ahead.
    fn garbage(&mut self, msg: &ConsensusMessage) -> ConsensusMessage {
        let mut m = msg.clone();
        match &mut m {
            ConsensusMessage::Vote(v) => {
                if self.rng.below(2) == 0 {
                    v.signature.0[self.rng.below(64) as usize] ^= 0x40;
                } else {
                    v.body.height = Height(v.body.height.0 + 1_000_000);
                }
            }
            ConsensusMessage::Proposal(p) => p.signature.0[0] ^= 1,
            ConsensusMessage::Block(b) => b.body.block.header.time_ms.0 += 1,
            ConsensusMessage::Certificate(c) => c.votes.truncate(1),
        }
        m
    }

    /// Safety checks on every commit: one block per height across all nodes,
    /// a valid certificate, agreeing state roots, conserved supply.
    fn on_commit(&mut self, node: usize, block: &Block, cert: &CommitCertificate) -> Result<(), SimFailure> {
        let h = block.header.height.0;
        let hash = block.hash();
        if self.adversaries.forged.contains(&hash) {
            return Err(self.fail(format!("node {node} committed a block naming another proposer at height {h}")));
        }
        if agora_protocol::block::last_commit_hash(block.last_commit.as_ref()) != block.header.last_commit_hash {
            return Err(self.fail(format!("node {node} committed a block with a swapped certificate at height {h}")));
        }
        let expected = self.nodes[node].height + 1;
        if h != expected {
            return Err(self.fail(format!("node {node} committed height {h}, expected {expected}")));
        }
        let set = self.validator_set_at(node, h);
        verify_commit(&self.setup.genesis.chain_id, &set, cert, Height(h), hash)
            .map_err(|e| self.fail(format!("node {node} height {h}: invalid certificate: {e}")))?;
        let ledger: &State = self.nodes[node].engine.ledger();
        ledger.audit().map_err(|e| self.fail(format!("node {node} height {h}: {e}")))?;
        let root = ledger.root();
        match self.observed.canonical.get(&h) {
            Some((other, other_root)) if *other != hash || *other_root != root => {
                return Err(
                    self.fail(format!("SAFETY: node {node} committed {hash} at height {h}, another node {other}"))
                );
            }
            Some(_) => {}
            None => {
                self.observed.canonical.insert(h, (hash, root));
                self.observed.committed_txs += block.txs.len() as u64;
                self.observed.trace.update(&h.to_le_bytes());
                self.observed.trace.update(&hash.0);
            }
        }
        let n = &mut self.nodes[node];
        n.height = h;
        n.store.blocks.push((block.clone(), cert.clone()));
        n.disk.prune_through(h);
        if self.config.scenario.state_sync && h % SIM_SNAPSHOT_INTERVAL == 0 {
            let taken = agora_ledger::snapshot::take(n.engine.ledger(), block.header.clone(), cert.clone());
            let snapshot = taken.map_err(|e| self.fail(format!("node {node} cannot take a snapshot at {h}: {e}")))?;
            let n = &mut self.nodes[node];
            n.snapshots.push_back(snapshot);
            while n.snapshots.len() > agora_ledger::store::SNAPSHOTS_KEPT {
                n.snapshots.pop_front();
            }
        }
        self.resend_own(node)?;
        self.liveness_after_commit(node, Height(h), hash)
    }

    /// The validator set that decided height `h`, as recorded by the first
    /// node to commit it (all nodes' states are checked to agree).
    fn validator_set_at(&mut self, node: usize, h: u64) -> ConsensusValidatorSet {
        self.observed
            .sets
            .entry(h)
            .or_insert_with(|| {
                let deciders = self.nodes[node].engine.ledger().last_validators();
                ConsensusValidatorSet::new(deciders.iter().map(|v| (v.address, v.power)))
            })
            .clone()
    }
}

/// The GPU class the simulated providers sell and clients bid for.
fn sim_class() -> agora_protocol::GpuClass {
    // A constant valid key.
    agora_protocol::GpuClass::parse("H100-80GB-SIM").expect("valid class")
}
