//! The node daemon's event loop: it owns the swarm, the consensus engine and
//! the ledger store, and only moves bytes and time between them. Gossip is
//! validated here before it is forwarded; engine actions are carried out in
//! order (WAL appends and commits are durable before anything after them).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_ledger::consensus::mempool::{AddError, VerifiedTx};
use agora_ledger::consensus::{Action, Engine, EngineConfig, Input, Recovered, Relay, SignerFile, Timer, WalFile};
use agora_ledger::store::BlockReader;
use agora_ledger::{State, Store};
use agora_protocol::codec;
use agora_protocol::consensus::ConsensusMessage;
use agora_protocol::limits::{MAX_TX_BUNDLE_BYTES, MAX_TXS_PER_BUNDLE};
use agora_protocol::market::Offer;
use agora_protocol::sync::{SyncRequest, SyncResponse};
use agora_protocol::{Address, ChainId, Hash, Height, Keypair, Signed, SignedTx, TxBundle, TxKind};
use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::request_response::{self, Message};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};

mod follow;
mod jobs;
mod leases;
mod liveness;
mod snapshots;

pub use liveness::HEARTBEAT_INTERVAL;

use crate::config::NodeConfig;
use crate::error::Error;
use crate::gossip_txs::Waiting;
use crate::gpu::{Detection, GpuSource};
use crate::net::gossip::{
    TOPIC_ATTESTATIONS, TOPIC_CONSENSUS, TOPIC_CONSENSUS_REPEAT, TOPIC_HEARTBEATS, TOPIC_OFFERS, TOPIC_TXS, topic,
};
use crate::net::{Behaviour, BehaviourEvent, build_swarm};
use crate::offers::OrderBook;
use crate::provider::{Duty, Provider};

/// Commands the HTTP API sends to the loop.
pub enum Command {
    /// A transaction the API checked the signature of.
    SubmitTx { tx: Box<VerifiedTx>, reply: oneshot::Sender<Result<Hash, TxRefusal>> },
    /// Several transactions at once (`POST /v1/txs`), signature-checked as a batch by the API.
    SubmitTxs { txs: Vec<VerifiedTx>, reply: oneshot::Sender<Vec<Result<Hash, TxRefusal>>> },
    /// Send a lease-protocol message to a provider (a buyer's proposal or logs request).
    LeaseRpc { provider: agora_protocol::Address, rpc: Box<agora_protocol::job::LeaseRpc>, reply: leases::RpcReply },
    /// Testnet only: announce this provider's offer now (benchmarks time its propagation).
    Announce { reply: oneshot::Sender<Option<u64>> },
    /// Testnet fault injection: drop all traffic to and from these peers
    /// (replacing the previous set); an empty set heals.
    Partition { block: Vec<PeerId>, reply: oneshot::Sender<()> },
}

/// Capacity of the API → loop command queue.
pub const COMMAND_QUEUE: usize = 256;
/// Consensus messages kept for re-publishing while no peer is subscribed
/// yet (a node's first votes and proposal are signed before its peers
/// connect; lost, they would cost a round).
pub const MAX_UNPUBLISHED: usize = 1024;
/// How often the loop does its periodic duties (offers, order-book expiry).
pub const TICK: Duration = Duration::from_millis(250);
/// How often bootstrap peers that are not connected are dialled again.
pub const REDIAL_INTERVAL: Duration = Duration::from_secs(5);

/// What the API shows; refreshed by the loop after every event.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeStatus {
    pub moniker: String,
    pub peer_id: String,
    pub address: String,
    pub chain_id: String,
    /// The smallest fee a transaction may pay on this chain.
    pub min_tx_fee: agora_protocol::Amount,
    pub height: u64,
    /// The first block this node holds: 1, or the height of the state
    /// snapshot it joined from (it serves no block before it).
    pub earliest_height: u64,
    pub latest_block_hash: String,
    pub state_root: String,
    pub peers: usize,
    pub syncing: bool,
    pub validator: bool,
    pub mempool: usize,
    pub listen: Vec<String>,
    /// `provider` when this node has GPUs to lease, else `non-provider`.
    pub role: String,
    /// How the GPUs were found: nvml, nvidia-smi, simulated or none.
    pub gpu_detection: String,
    pub gpus: Vec<crate::gpu::Gpu>,
    /// Offers in this node's order book.
    pub offers: usize,
}

/// Why a node did not take a transaction: a stable code for callers to
/// match, a sentence for people, and whether trying again later may work
/// (load) or not (the transaction itself is wrong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxRefusal {
    pub code: &'static str,
    pub detail: String,
    pub retryable: bool,
    /// For a refusal under load: when trying again may succeed.
    pub retry_after_ms: Option<u64>,
}

impl TxRefusal {
    pub fn invalid(code: &'static str, detail: impl std::fmt::Display) -> TxRefusal {
        TxRefusal { code, detail: detail.to_string(), retryable: false, retry_after_ms: None }
    }

    /// Refused at the edge: the pool is past what this node takes from
    /// clients (see `edge`), and this fee does not outbid what waits.
    pub fn busy(busy: crate::edge::Busy) -> TxRefusal {
        TxRefusal {
            code: "mempool_busy",
            detail: format!(
                "the node is at capacity: retry in {} ms, or pay a higher fee than the cheapest waiting",
                busy.retry_after_ms
            ),
            retryable: true,
            retry_after_ms: Some(busy.retry_after_ms),
        }
    }

    /// A transaction the ledger refused when tried on the current state.
    pub fn from_ledger(e: &agora_ledger::Error) -> TxRefusal {
        use agora_ledger::Error as E;
        let code = match e {
            E::WrongNonce { .. } => "nonce_used",
            E::FeeTooLow { .. } => "fee_too_low",
            E::InsufficientFunds { .. } => "insufficient_funds",
            E::InsufficientStake { .. } => "insufficient_stake",
            E::BadSignature(_) => "bad_signature",
            E::UnknownOrder(_) => "unknown_order",
            E::NotOrderOwner(_) => "not_order_owner",
            E::Order(_) => "order_refused",
            E::NoCapacity(_) => "no_capacity",
            E::Protocol(_) => "malformed",
            _ => "rejected",
        };
        TxRefusal::invalid(code, e)
    }
}

impl From<AddError> for TxRefusal {
    fn from(e: AddError) -> TxRefusal {
        TxRefusal { code: e.code(), detail: e.to_string(), retryable: e.is_retryable(), retry_after_ms: None }
    }
}

/// State shared with the API: the status, the ledger state at the tip and a block reader.
#[derive(Clone)]
pub struct Shared {
    pub status: Arc<RwLock<NodeStatus>>,
    pub ledger: Arc<crate::committed::CommittedLedger>,
    pub offers: Arc<RwLock<OrderBook>>,
    /// Per provider, the newest height a heartbeat or probe showed it up at (this node's view).
    pub last_seen: Arc<RwLock<std::collections::BTreeMap<agora_protocol::Address, u64>>>,
    /// Per provider, the heartbeats this node saw per downtime window.
    pub coverage: Arc<RwLock<crate::coverage::Coverage>>,
    pub blocks: BlockReader,
    pub commands: mpsc::Sender<Command>,
    pub metrics: crate::metrics::Metrics,
    /// The mempool's load as the API's early refusals see it.
    pub edge: Arc<crate::edge::EdgeGauge>,
    pub registry: Arc<prometheus_client::registry::Registry>,
    /// The token the fault-injection endpoints need; None: not served (testnets only).
    pub admin_token: Option<String>,
    /// Host headers the API answers to (None: any).
    pub allowed_hosts: Option<Vec<String>>,
}

/// Sync answers built off the loop, queued for sending at most.
pub const SYNC_SERVED_QUEUE: usize = 64;

/// A sync answer built on a blocking thread, to be sent from the loop.
type SyncServed = (PeerId, request_response::ResponseChannel<SyncResponse>, SyncResponse);

/// The serving side of block sync: quotas, and answers coming back from blocking threads.
struct SyncServer {
    quota: crate::quota::PeerQuota<PeerId>,
    served_tx: mpsc::Sender<SyncServed>,
    served_rx: mpsc::Receiver<SyncServed>,
}

impl SyncServer {
    fn new() -> SyncServer {
        let (served_tx, served_rx) = mpsc::channel(SYNC_SERVED_QUEUE);
        SyncServer { quota: crate::sync::sync_quota(), served_tx, served_rx }
    }
}

/// Blocks between full invariant audits of the ledger state in release builds
/// (debug builds audit every block): the audit walks the whole state, so not
/// every block, but a broken supply is caught within this many.
pub const AUDIT_EVERY_BLOCKS: u64 = 100;

fn audit_due(height: u64) -> bool {
    height % AUDIT_EVERY_BLOCKS == 0
}

/// Checks the ledger's invariants (supply conservation, unbonding and expiry
/// indexes); a broken one stops the node with the reason instead of letting
/// it vote on top of a state no honest node has.
fn audit(state: &State) -> Result<(), Error> {
    state.audit().map_err(|e| {
        Error::Halt(format!("the ledger state at height {} broke an invariant: {e}; stopping", state.height()))
    })
}

/// The admin endpoints' token, on testnet chains only.
fn admin_token(home: &Path, config: &NodeConfig, chain: &ChainId) -> Result<Option<String>, Error> {
    if !config.testnet_admin {
        return Ok(None);
    }
    if !crate::api_guard::admin_allowed(&chain.to_string()) {
        return Err(Error::Config {
            path: NodeConfig::path(home),
            reason: format!("testnet_admin is for testnets only; chain {chain} is not one"),
        });
    }
    crate::api_guard::admin_token(home).map(Some)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The node's event loop, its state split by concern: each part is owned
/// by one duty (the methods in this module and its submodules), and the
/// decisions inside them are the pure modules the simulation drives too.
pub struct Daemon {
    chain: ChainId,
    key: Keypair,
    store: Store,
    consensus: Consensus,
    net: Net,
    sync: Sync,
    relay: TxRelay,
    provision: Provision,
    lease_rpcs: LeaseRpcs,
    liveness: LivenessDuty,
    shared: Shared,
    commands: mpsc::Receiver<Command>,
}

/// Consensus: the engine, its timers and the files that must survive a power cut.
struct Consensus {
    engine: Engine,
    timers: HashMap<Timer, Instant>,
    /// What must survive a power cut: the consensus WAL and the double-sign guard.
    durable: Durable,
    /// The consensus messages forwarded lately, for the repeat rule.
    repeats: crate::repeats::Repeats,
    /// The nonce of this node's last repeat (ms clock, so a restart never reuses one).
    repeat_nonce: u64,
}

/// The libp2p swarm and the peers to stay connected to.
struct Net {
    swarm: Swarm<Behaviour>,
    /// Peers to stay connected to; dialled again when the connection drops.
    bootstrap: Vec<Multiaddr>,
    last_redial: Instant,
    /// The IP address each connected peer is reached at (bounded by the connection limits).
    remote_ips: HashMap<PeerId, std::net::IpAddr>,
}

/// Block sync: fetching from peers, and serving them off the loop; and
/// state sync's serving side (snapshots).
struct Sync {
    client: crate::sync::SyncClient<PeerId>,
    server: SyncServer,
    snapshots: snapshots::SnapshotServer,
    /// Votes or decided blocks: how this node hears decisions.
    follow: follow::Follow,
}

/// Gossip on its way out: transactions paced highest fee first, consensus
/// messages waiting for a subscribed peer, and this node's own transactions
/// until they commit.
#[derive(Default)]
struct TxRelay {
    outbox: crate::outbox::Outbox<SignedTx>,
    /// Encoded consensus messages whose gossip found no subscribed peer yet.
    unpublished: std::collections::VecDeque<Vec<u8>>,
    /// Own transactions not yet committed, by nonce, with the height they were sent at.
    own_txs: crate::own_txs::OwnTxs,
    /// The commit rate, for the edge's mark and retry hints.
    edge: crate::edge::EdgeLoad,
    /// Gossiped transactions waiting for their batched signature check.
    from_gossip: crate::gossip_txs::Pending<(gossipsub::MessageId, PeerId)>,
}

/// The provider side: its GPUs and offers, its negotiations and its jobs.
struct Provision {
    provider: Option<Provider>,
    /// The provider's negotiation state (None on non-providers).
    market: Option<crate::market::Market>,
    /// The jobs this provider runs and how it runs them.
    jobs: jobs::Jobs,
}

/// The lease protocol's requests: ours awaiting providers' answers, and the
/// per-peer quota on the requests we answer.
struct LeaseRpcs {
    pending: HashMap<libp2p::request_response::OutboundRequestId, leases::RpcReply>,
    /// Per-peer quota on inbound lease-protocol requests (probes, proposals, logs).
    quota: crate::quota::PeerQuota<PeerId>,
}

/// Heartbeats, probes and attestations.
struct LivenessDuty {
    /// The liveness view (pure decisions).
    view: crate::liveness::Liveness,
    /// Probes in flight, by request, to the provider probed.
    pending_probes: HashMap<libp2p::request_response::OutboundRequestId, agora_protocol::Address>,
    last_heartbeat_at: Option<Instant>,
    /// Signs heartbeats with durably reserved sequence numbers; answers probes from the latest.
    heartbeats: crate::heartbeat::HeartbeatSigner,
    /// Vote equivocations already submitted (offender, height, round), bounded.
    reported_votes: std::collections::BTreeSet<(agora_protocol::Address, u64, u32)>,
}

/// The validator's fdatasync'd files (see agora_ledger::durable).
struct Durable {
    wal: WalFile,
    signer: SignerFile,
}

impl Daemon {
    /// Opens the store (or takes `store`, open already when state sync
    /// installed it), restarts consensus from its WAL and starts listening.
    pub fn start(
        home: &Path,
        config: &NodeConfig,
        key: Keypair,
        store: Option<Store>,
    ) -> Result<(Daemon, Shared), Error> {
        let source: GpuSource = config.gpus.parse()?;
        let detection = crate::gpu::detect(&source);
        let provider = if detection.gpus.is_empty() {
            tracing::info!(
                reason = detection.note.as_deref().unwrap_or(""),
                "no GPUs: running as a non-provider (buyer, validator or relay)"
            );
            None
        } else {
            log_gpus(&detection);
            config.check_provider_terms(home)?;
            let resources =
                config.jobs.resources(detection.gpus.len() as u32, jobs::host_cores(), jobs::host_memory_mib());
            let mut provider = Provider::new(
                detection.gpus.clone(),
                config.price(home)?,
                config.region.clone(),
                config.max_lease_secs,
                resources,
            );
            provider.ask_policy = config.ask_policy(home)?;
            Some(provider)
        };
        let (market, jobs) = jobs::provider_jobs(home, config, &key, provider.as_ref())?;
        let seq_path = config.heartbeat_seq_path(home);
        if let Some(dir) = seq_path.parent() {
            std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        }
        let heartbeats = crate::heartbeat::HeartbeatSigner::open(&seq_path)?;
        let genesis = crate::config::load_genesis(home)?;
        let admin_token = admin_token(home, config, &genesis.chain_id)?;
        let mut store = match store {
            Some(store) => store,
            None => Store::open(&config.ledger_dir(home), &genesis)?,
        };
        store.set_block_retention(config.block_retention());
        audit(store.state())?;
        let (wal_file, wal) = WalFile::open(&config.wal_path(home))?;
        let (signer, last_signed) = SignerFile::open(&config.signer_state_path(home))?;
        let last_commit = store.certificate(store.height())?;
        let engine_config = EngineConfig {
            commit_pause: Duration::from_millis(config.commit_pause_ms),
            timeouts: config.timeouts(),
            ..EngineConfig::default()
        };
        let chain = genesis.chain_id.clone();
        let (engine, actions) = Engine::restart(
            chain.clone(),
            key.clone(),
            store.state().clone(),
            last_commit,
            engine_config,
            Recovered { wal: &wal, last_signed: last_signed.as_ref() },
            now_ms(),
        );
        let durable = Durable { wal: wal_file, signer };
        let mut swarm = build_swarm(crate::identity::libp2p_keypair(&key)?, &config.net)?;
        let listen: Multiaddr =
            config.listen.parse().map_err(|e| Error::Network(format!("listen {}: {e}", config.listen)))?;
        swarm.listen_on(listen).map_err(|e| Error::Network(e.to_string()))?;
        let mut bootstrap = Vec::new();
        for addr in &config.bootstrap {
            let ma: Multiaddr = addr.parse().map_err(|e| Error::Network(format!("bootstrap {addr}: {e}")))?;
            bootstrap.push(ma.clone());
            if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = ma.iter().last() {
                swarm.behaviour_mut().kad.add_address(&peer, ma.clone());
            }
            if let Err(e) = swarm.dial(ma) {
                tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
            }
        }
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let status = NodeStatus {
            moniker: config.moniker.clone(),
            peer_id: swarm.local_peer_id().to_string(),
            address: key.address().to_string(),
            chain_id: chain.to_string(),
            min_tx_fee: store.state().params().min_tx_fee,
            height: store.height().0,
            earliest_height: store.base().0.max(1),
            latest_block_hash: store.state().last_block_hash().to_hex(),
            state_root: store.state().root().to_hex(),
            peers: 0,
            syncing: false,
            validator: store.state().is_validator(&key.address()),
            mempool: 0,
            listen: Vec::new(),
            role: if provider.is_some() { "provider" } else { "non-provider" }.into(),
            gpu_detection: detection.method.into(),
            gpus: detection.gpus.clone(),
            offers: 0,
        };
        let (metrics, registry) = crate::metrics::Metrics::new();
        metrics.height.set(store.height().0 as i64);
        let shared = Shared {
            status: Arc::new(RwLock::new(status)),
            ledger: Arc::new(crate::committed::CommittedLedger::new(store.state().clone())),
            offers: Arc::new(RwLock::new(OrderBook::default())),
            last_seen: Arc::default(),
            coverage: Arc::new(RwLock::new(crate::coverage::Coverage::new(
                store.state().params().downtime_window_blocks,
                store.height(),
            ))),
            blocks: store.reader(),
            commands: tx,
            metrics,
            edge: Arc::new(crate::edge::EdgeGauge::new()),
            registry: Arc::new(registry),
            admin_token,
            allowed_hosts: crate::api_guard::allowed_hosts(&config.api),
        };
        let liveness = LivenessDuty {
            view: crate::liveness::Liveness::new(store.state().params().downtime_window_blocks, store.height()),
            pending_probes: HashMap::new(),
            last_heartbeat_at: None,
            heartbeats,
            reported_votes: Default::default(),
        };
        let snapshots = snapshots::SnapshotServer::new(store.reader(), config.snapshot_interval_blocks);
        let mut daemon = Daemon {
            chain,
            key,
            store,
            consensus: Consensus {
                engine,
                timers: HashMap::new(),
                durable,
                repeats: Default::default(),
                repeat_nonce: 0,
            },
            net: Net { swarm, bootstrap, last_redial: Instant::now(), remote_ips: HashMap::new() },
            sync: Sync {
                client: Default::default(),
                server: SyncServer::new(),
                snapshots,
                follow: follow::Follow::new(),
            },
            relay: TxRelay::default(),
            provision: Provision { provider, market, jobs },
            lease_rpcs: LeaseRpcs { pending: HashMap::new(), quota: crate::quota::PeerQuota::lease() },
            liveness,
            shared: shared.clone(),
            commands: rx,
        };
        daemon.subscribe_topics()?;
        daemon.act(actions)?;
        Ok((daemon, shared))
    }

    /// The account this node provides for: the one that named this node's key
    /// its operator on the ledger, else the node's own account.
    fn acting_as(&self) -> Address {
        self.store.state().acting_for(&self.key.address())
    }

    /// The peer that speaks for `account`'s provider node: its operator's, else its own.
    fn provider_peer(&self, account: &Address) -> Result<PeerId, Error> {
        crate::identity::peer_of(&self.store.state().node_key_of(account))
    }

    /// Runs until `shutdown` resolves, then flushes the store.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), Error> {
        // Consensus was started at its height by `Engine::restart` (in
        // `start`): starting it again would re-enter round 0 and, as
        // proposer, sign a second block for it (the guard refuses).
        self.close_orphaned_leases().await?;
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_timer = self.consensus.timers.values().min().copied();
            let sleep = async {
                match next_timer {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let gossip_due = self.relay.from_gossip.deadline_ms();
            let gossip_batch = async move {
                match gossip_due {
                    Some(at) => tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await,
                    None => std::future::pending().await,
                }
            };
            let result = tokio::select! {
                _ = &mut shutdown => break,
                event = self.net.swarm.select_next_some() => self.on_swarm_event(event),
                Some(cmd) = self.commands.recv() => self.on_command(cmd),
                _ = sleep => self.fire_timers(),
                _ = tick.tick() => self.on_tick(),
                _ = gossip_batch => self.check_gossip_txs(),
                Some(ended) = self.provision.jobs.ended_rx.recv() => self.on_job_ended(ended),
                Some((peer, channel, response)) = self.sync.server.served_rx.recv() => {
                    self.on_sync_served(peer, channel, response);
                    Ok(())
                }
                Some((peer, channel, response)) = self.sync.snapshots.served_rx.recv() => {
                    self.on_snapshot_served(peer, channel, response);
                    Ok(())
                }
            };
            // One bad message, request or transaction never ends the node: only a
            // failed store or a broken invariant does, with the reason.
            if let Err(e) = result {
                if e.is_fatal() {
                    tracing::error!(error = %e, "stopping: the node cannot go on safely");
                    return Err(e);
                }
                tracing::warn!(error = %e, "an input failed; the node goes on");
            }
            self.flush_gossip();
            self.publish_status();
        }
        self.stop_all_jobs();
        tracing::info!("shutting down: flushing the ledger store");
        self.store.flush()?;
        Ok(())
    }

    /// Periodic duties: expire offers, and a provider's registration and offers.
    fn on_tick(&mut self) -> Result<(), Error> {
        self.heartbeat_tick()?;
        self.follow_stall_check();
        self.provision.jobs.sweep();
        if self.net.last_redial.elapsed() >= REDIAL_INTERVAL {
            self.net.last_redial = Instant::now();
            self.redial();
            self.dial_validators();
        }
        let now = now_ms();
        let state = self.store.state();
        if let Ok(mut book) = self.shared.offers.write() {
            book.retry_held(state, now);
            book.prune(state, now);
            self.shared.metrics.offers.set(book.len() as i64);
        }
        let me = self.acting_as();
        let Some(duty) = self.provision.provider.as_mut().and_then(|p| p.next(state, &me, now)) else {
            return self.auto_ask();
        };
        match duty {
            Duty::NeedStake { have, need } => tracing::warn!(
                %have,
                %need,
                "stake too low to provide GPUs: stake at least the minimum (agora stake AMOUNT) to register"
            ),
            Duty::Register { region, gpus } => {
                tracing::info!(%region, kinds = gpus.len(), "registering as a provider");
                self.submit_own_tx(TxKind::RegisterProvider { region, gpus })?;
            }
            Duty::Announce(offer) => self.announce(offer, now)?,
        }
        Ok(())
    }

    /// The automatic ask policy's next ask, if one is due.
    fn auto_ask(&mut self) -> Result<(), Error> {
        let me = self.acting_as();
        let state = self.store.state();
        let market = self.provision.market.as_ref();
        let pending = |class: &agora_protocol::GpuClass| market.map_or(0, |m| m.pending_gpus(class));
        let ask = self
            .provision
            .provider
            .as_mut()
            .and_then(|p| p.ask_policy.as_mut())
            .and_then(|a| a.next(state, &me, pending));
        match ask {
            Some(kind) => {
                tracing::info!(?kind, "auto ask: offering idle GPUs in this auction");
                self.submit_own_tx(kind)
            }
            None => Ok(()),
        }
    }

    /// Dials the bootstrap peers this node is not connected to (and has not blocked).
    fn redial(&mut self) {
        for addr in self.net.bootstrap.clone() {
            let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() else { continue };
            let blocked = self.net.swarm.behaviour().blocked.blocked_peers().contains(&peer);
            if !blocked && !self.net.swarm.is_connected(&peer) {
                let _ = self.net.swarm.dial(addr);
            }
        }
    }

    /// Signs, keeps and gossips this provider's offer.
    fn announce(&mut self, offer: Offer, now: u64) -> Result<(), Error> {
        let signed = Signed::sign(offer, &self.key, &self.chain)?;
        if let Ok(mut book) = self.shared.offers.write() {
            if let Err(e) = book.insert(signed.clone(), &self.chain, self.store.state(), now) {
                tracing::warn!(error = %e, "own offer refused by the order book");
            }
        }
        let result = self.net.swarm.behaviour_mut().gossipsub.publish(topic(TOPIC_OFFERS), codec::encode(&signed)?);
        match result {
            Ok(_) => {
                self.shared.metrics.offers_announced.inc();
                tracing::debug!(seq = signed.body.seq, "offer announced");
            }
            Err(e) => {
                tracing::debug!(error = %e, "offer not announced yet");
                if let Some(p) = self.provision.provider.as_mut() {
                    p.announce_failed(now);
                }
            }
        }
        Ok(())
    }

    fn fire_timers(&mut self) -> Result<(), Error> {
        let now = Instant::now();
        let due: Vec<Timer> = self.consensus.timers.iter().filter(|(_, at)| **at <= now).map(|(t, _)| *t).collect();
        for t in due {
            self.consensus.timers.remove(&t);
            let actions = self.consensus.engine.handle(now_ms(), Input::TimeoutElapsed(t));
            self.act(actions)?;
        }
        Ok(())
    }

    /// Carries out engine actions in order.
    fn act(&mut self, actions: Vec<Action>) -> Result<(), Error> {
        for action in actions {
            match action {
                Action::Broadcast(msg) => self.broadcast(msg)?,
                Action::Rebroadcast(msg) => self.rebroadcast(msg)?,
                Action::ScheduleTimeout { timer, after } => {
                    _ = self.consensus.timers.insert(timer, Instant::now() + after)
                }
                Action::CancelTimeout(timer) => _ = self.consensus.timers.remove(&timer),
                Action::CancelAllTimeouts => self.consensus.timers.retain(|t, _| t.is_next_height()),
                Action::WalAppend { height, entry, durable } => self
                    .consensus
                    .durable
                    .wal
                    .append(height, &entry, durable)
                    .map_err(|e| Error::Halt(format!("consensus WAL: {e}")))?,
                Action::PersistSigned(last) => self
                    .consensus
                    .durable
                    .signer
                    .write(&last)
                    .map_err(|e| Error::Halt(format!("double-sign guard state: {e}")))?,
                Action::SignRefused(reason) => {
                    self.shared.metrics.sign_refused.inc();
                    tracing::error!(%reason, "double-sign guard: not signing; following the other validators");
                }
                Action::Commit { block, certificate, events, state } => {
                    let previous_time = self.store.state().time_ms().0;
                    // A decided block that cannot be stored leaves this node behind its own votes.
                    self.store
                        .commit_applied(&block, &certificate, *state)
                        .map_err(|e| Error::Halt(format!("committing a decided block: {e}")))?;
                    self.consensus
                        .durable
                        .wal
                        .prune_through(block.header.height)
                        .map_err(|e| Error::Halt(format!("consensus WAL: {e}")))?;
                    if audit_due(block.header.height.0) {
                        audit(self.store.state())?;
                    }
                    let hash = block.hash();
                    let m = &self.shared.metrics;
                    m.height.set(block.header.height.0 as i64);
                    m.committed_txs.inc_by(block.txs.len() as u64);
                    self.relay.edge.committed(block.header.time_ms.0, block.txs.len() as u64);
                    m.block_interval_ms.set(block.header.time_ms.0.saturating_sub(previous_time));
                    tracing::info!(
                        height = %block.header.height,
                        round = certificate.round,
                        txs = block.txs.len(),
                        %hash,
                        "committed"
                    );
                    self.shared.ledger.publish(self.store.state().clone());
                    if let Ok(mut s) = self.shared.status.write() {
                        s.height = self.store.height().0;
                        s.earliest_height = self.store.base().0.max(1);
                        s.latest_block_hash = self.store.state().last_block_hash().to_hex();
                        s.state_root = block.header.state_root.to_hex();
                    }
                    self.take_snapshot_if_due(&block, &certificate);
                    self.follow_after_commit(&block, &certificate)?;
                    self.liveness_after_commit(block.header.height, hash, block.header.time_ms.0);
                    self.on_lease_events(&events)?;
                    self.resend_own_txs()?;
                }
                Action::SyncNeeded { have } => self.request_sync(have),
                Action::MissingBlock { height, .. } => tracing::info!(%height, "decided a block we lack; syncing"),
                Action::Evidence(e) => self.on_vote_equivocation(e)?,
            }
        }
        Ok(())
    }

    /// Gossips a consensus message, keeping it for later if no peer is
    /// subscribed yet (a vote signed at start would be lost); one this node
    /// already gossiped (the same bytes are the same message) goes out as a
    /// repeat.
    fn broadcast(&mut self, msg: ConsensusMessage) -> Result<(), Error> {
        let data = codec::encode(&msg)?;
        self.consensus.repeats.forwarded(crate::repeats::id_of(&data), now_ms());
        match self.net.swarm.behaviour_mut().gossipsub.publish(topic(TOPIC_CONSENSUS), data.clone()) {
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                if self.relay.unpublished.len() >= MAX_UNPUBLISHED {
                    self.relay.unpublished.pop_front();
                }
                self.relay.unpublished.push_back(data);
            }
            Err(gossipsub::PublishError::Duplicate) => self.rebroadcast(msg)?,
            _ => {}
        }
        Ok(())
    }

    /// Gossips a consensus message again, wrapped with a fresh nonce so it
    /// is a new gossip message (`repeats`). Best effort: a repeat that finds
    /// no peer is dropped (the engine repeats on its own timer).
    fn rebroadcast(&mut self, message: ConsensusMessage) -> Result<(), Error> {
        let now = now_ms();
        self.consensus.repeat_nonce = (self.consensus.repeat_nonce + 1).max(now);
        let repeat = agora_protocol::ConsensusRepeat { nonce: self.consensus.repeat_nonce, message };
        self.consensus.repeats.forwarded(crate::repeats::id_of(&codec::encode(&repeat.message)?), now);
        let data = codec::encode(&repeat)?;
        let _ = self.net.swarm.behaviour_mut().gossipsub.publish(topic(TOPIC_CONSENSUS_REPEAT), data);
        Ok(())
    }

    /// Queues a transaction for gossip (see `outbox`: paced, highest fee first).
    fn gossip_tx(&mut self, fee: agora_protocol::Amount, tx: SignedTx) {
        self.relay.outbox.push(fee, tx);
    }

    /// Publishes the transactions due, in bundles, and the consensus
    /// messages that found no peer before. A bundle that finds no subscribed
    /// peer waits in the outbox (otherwise only this node's proposals could
    /// carry its transactions).
    fn flush_gossip(&mut self) {
        self.shared.metrics.tx_outbox.set(self.relay.outbox.len() as i64);
        if self.sync.client.peers().is_empty() {
            return;
        }
        // A bundle's encoding: version, count, then each transaction without its version byte.
        let room = MAX_TX_BUNDLE_BYTES - 9;
        let size = |tx: &SignedTx| codec::encoded_len(tx).map_or(room, |n| n - 1);
        let due = crate::outbox::bundles(self.relay.outbox.due(now_ms()), MAX_TXS_PER_BUNDLE, room, size);
        let mut due = due.into_iter();
        while let Some(bundle) = due.next() {
            let data = match codec::encode(&TxBundle { txs: bundle.iter().map(|(_, tx)| tx.clone()).collect() }) {
                Ok(data) => data,
                Err(e) => {
                    tracing::warn!(error = %e, "a transaction bundle did not encode; dropped from gossip");
                    continue;
                }
            };
            let rest = || std::iter::once(bundle).chain(due.by_ref()).flatten();
            match self.net.swarm.behaviour_mut().gossipsub.publish(topic(TOPIC_TXS), data) {
                Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                    self.relay.outbox.put_back(rest());
                    break;
                }
                Err(gossipsub::PublishError::AllQueuesFull(_)) => {
                    // Lost to push gossip (gossipsub still offers it to
                    // peers by IHAVE); the rest waits until the queues drain.
                    self.shared.metrics.tx_gossip_dropped.inc();
                    self.relay.outbox.congested(now_ms(), due.by_ref().flatten());
                    break;
                }
                _ => {}
            }
        }
        for _ in 0..self.relay.unpublished.len() {
            let Some(data) = self.relay.unpublished.pop_front() else { break };
            let result = self.net.swarm.behaviour_mut().gossipsub.publish(topic(TOPIC_CONSENSUS), data.clone());
            if let Err(gossipsub::PublishError::NoPeersSubscribedToTopic) = result {
                self.relay.unpublished.push_front(data);
                break;
            }
        }
    }

    fn request_sync(&mut self, have: Height) {
        if let Some((peer, request)) = self.sync.client.request(have) {
            self.net.swarm.behaviour_mut().sync.send_request(&peer, request);
        }
    }

    fn on_command(&mut self, cmd: Command) -> Result<(), Error> {
        match cmd {
            Command::SubmitTx { tx, reply } => {
                let outcome = self.take_client_txs(vec![*tx])?.pop();
                let _ = reply.send(outcome.unwrap_or_else(|| Err(TxRefusal::invalid("internal", "no verdict"))));
            }
            Command::SubmitTxs { txs, reply } => {
                let outcomes = self.take_client_txs(txs)?;
                let _ = reply.send(outcomes);
            }
            Command::LeaseRpc { provider, rpc, reply } => self.lease_rpc(provider, *rpc, reply),
            Command::Announce { reply } => {
                let now = now_ms();
                let me = self.acting_as();
                let duty = self.provision.provider.as_mut().and_then(|p| {
                    p.announce_now();
                    p.next(self.store.state(), &me, now)
                });
                let seq = match duty {
                    Some(Duty::Announce(offer)) => {
                        let seq = offer.seq;
                        self.announce(offer, now)?;
                        Some(seq)
                    }
                    _ => None,
                };
                let _ = reply.send(seq);
            }
            Command::Partition { block, reply } => {
                let blocked = &mut self.net.swarm.behaviour_mut().blocked;
                let old: Vec<PeerId> = blocked.blocked_peers().iter().copied().collect();
                for p in old.iter().filter(|p| !block.contains(p)) {
                    blocked.unblock_peer(*p);
                }
                for p in &block {
                    blocked.block_peer(*p);
                }
                tracing::warn!(blocked = block.len(), "testnet partition: traffic with these peers is dropped");
                if block.is_empty() {
                    self.redial();
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) -> Result<(), Error> {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let labels = crate::metrics::TopicLabels { topic: message.topic.to_string() };
                self.shared.metrics.gossip_bytes.get_or_create(&labels).inc_by(message.data.len() as u64);
                let (acceptance, input) = if message.topic == topic(TOPIC_OFFERS).hash() {
                    (self.on_offer(&message.data), None)
                } else if message.topic == topic(TOPIC_HEARTBEATS).hash() {
                    (self.on_heartbeat_gossip(&message.data)?, None)
                } else if message.topic == topic(TOPIC_ATTESTATIONS).hash() {
                    (self.on_attestation_gossip(&message.data)?, None)
                } else if message.topic == topic(TOPIC_TXS).hash() {
                    match self.first_look_bundle(&message.data) {
                        // Its verdict comes with its batch's (`check_gossip_txs`).
                        Ok((txs, keep)) => {
                            let waiting = Waiting { id: (message_id, propagation_source), txs, keep };
                            if self.relay.from_gossip.push(waiting, now_ms()) {
                                self.check_gossip_txs()?;
                            }
                            return Ok(());
                        }
                        Err(acceptance) => (acceptance, None),
                    }
                } else if message.topic == topic(TOPIC_CONSENSUS_REPEAT).hash() {
                    self.on_repeat(&message.data)
                } else if follow::is_decided(&message.topic) {
                    (self.on_decided(&message.data)?, None)
                } else {
                    let verdict = self.validate_gossip(message.topic.as_str(), &message.data);
                    if verdict.0 == MessageAcceptance::Accept {
                        self.consensus.repeats.forwarded(crate::repeats::id_of(&message.data), now_ms());
                    }
                    verdict
                };
                self.report_gossip(&message.topic, &message_id, &propagation_source, acceptance);
                if let Some(input) = input {
                    let actions = self.consensus.engine.handle(now_ms(), input);
                    self.act(actions)?;
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message { peer, message, .. })) => {
                self.on_sync_message(peer, message)?
            }
            SwarmEvent::Behaviour(BehaviourEvent::Lease(event)) => self.on_lease_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Snapshot(event)) => self.on_snapshot_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::OutboundFailure { .. })) => {
                self.sync.client.failed();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(libp2p::identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                // Only addresses this node should dial, judged against the
                // address the peer came from, and a few of them.
                let Some(via) = self.net.remote_ips.get(&peer_id).copied() else { return Ok(()) };
                let kept = info.listen_addrs.into_iter().filter(|a| crate::net::dialable(a, via));
                for addr in kept.take(crate::net::MAX_ADVERTISED_ADDRS) {
                    self.net.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(libp2p::ping::Event { peer, connection, result: Err(e) })) => {
                if crate::net::ping_failure_closes(&e) {
                    tracing::warn!(%peer, error = %e, "ping timed out: closing the connection to dial again");
                    self.net.swarm.close_connection(connection);
                } else {
                    tracing::debug!(%peer, error = %e, "ping failed; keeping the connection");
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                if let Some(ip) = crate::net::ip_limits::ip_of(endpoint.get_remote_address()) {
                    self.net.remote_ips.insert(peer_id, ip);
                }
                self.sync.client.connected(peer_id)
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                self.net.remote_ips.remove(&peer_id);
                self.sync.client.disconnected(&peer_id)
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if let Ok(mut s) = self.shared.status.write() {
                    s.listen.push(address.to_string());
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks a gossip message before it is forwarded: it must decode within
    /// its size limit and carry a valid signature. Invalid ones are rejected,
    /// which lowers the sender's score.
    fn validate_gossip(&self, topic: &str, data: &[u8]) -> (MessageAcceptance, Option<Input>) {
        match topic {
            TOPIC_CONSENSUS => match codec::decode::<ConsensusMessage>(data) {
                Err(_) => (MessageAcceptance::Reject, None),
                // Relevance first (no signature check for what is dropped anyway).
                Ok(msg) => match self.consensus.engine.relay(&msg) {
                    Relay::Drop => (MessageAcceptance::Ignore, None),
                    Relay::Ahead => (MessageAcceptance::Ignore, Some(Input::Message(msg))),
                    Relay::Forward if consensus_signature_ok(&msg, &self.chain) => {
                        (MessageAcceptance::Accept, Some(Input::Message(msg)))
                    }
                    Relay::Forward => (MessageAcceptance::Reject, None),
                },
            },
            // Offers, heartbeats and attestations are handled before this (see on_swarm_event).
            _ => (MessageAcceptance::Ignore, None),
        }
    }

    /// A repeated consensus message (`repeats`): judged by the relay rules
    /// like a plain one; forwarded at most once an interval per message,
    /// and its signatures checked only the first time this node sees it.
    fn on_repeat(&mut self, data: &[u8]) -> (MessageAcceptance, Option<Input>) {
        let Ok(repeat) = codec::decode::<agora_protocol::ConsensusRepeat>(data) else {
            return (MessageAcceptance::Reject, None);
        };
        let msg = repeat.message;
        match self.consensus.engine.relay(&msg) {
            Relay::Drop => (MessageAcceptance::Ignore, None),
            Relay::Ahead => (MessageAcceptance::Ignore, Some(Input::Message(msg))),
            // Only a message to forward needs its id (its plain encoding, hashed).
            Relay::Forward => {
                let Ok(encoded) = codec::encode(&msg) else { return (MessageAcceptance::Reject, None) };
                self.judge_repeat(msg, crate::repeats::id_of(&encoded), now_ms())
            }
        }
    }

    /// A repeat to forward: at most once an interval per message, its
    /// signatures checked only the first time.
    fn judge_repeat(&mut self, msg: ConsensusMessage, id: Hash, now: u64) -> (MessageAcceptance, Option<Input>) {
        use crate::repeats::Verdict;
        match self.consensus.repeats.verdict(&id, now) {
            Verdict::TooSoon => (MessageAcceptance::Ignore, None),
            Verdict::Again => {
                self.consensus.repeats.forwarded(id, now);
                (MessageAcceptance::Accept, None)
            }
            Verdict::New if consensus_signature_ok(&msg, &self.chain) => {
                self.consensus.repeats.forwarded(id, now);
                (MessageAcceptance::Accept, Some(Input::Message(msg)))
            }
            Verdict::New => (MessageAcceptance::Reject, None),
        }
    }

    /// A gossiped bundle's checks short of its signatures: it must decode
    /// within its size and count limits (else the sender is penalised), and
    /// it is not forwarded when this node would keep none of it (pending
    /// already, nonces used, pool or account quota full): that is load, not
    /// misbehaviour, so no penalty either. Its transactions, and which of
    /// them this node would keep.
    fn first_look_bundle(&self, data: &[u8]) -> Result<(Vec<SignedTx>, Vec<bool>), MessageAcceptance> {
        let bundle = TxBundle::decode_checked(data).map_err(|_| MessageAcceptance::Reject)?;
        let engine = &self.consensus.engine;
        let keep: Vec<bool> = bundle.txs.iter().map(|tx| engine.mempool().check(engine.ledger(), tx).is_ok()).collect();
        if !keep.contains(&true) {
            return Err(MessageAcceptance::Ignore);
        }
        Ok((bundle.txs, keep))
    }

    /// Tells gossipsub a message's verdict (forward, drop, or reject and
    /// penalise its sender) and counts it by topic and verdict.
    fn report_gossip(
        &mut self,
        topic: &gossipsub::TopicHash,
        message_id: &gossipsub::MessageId,
        source: &PeerId,
        acceptance: MessageAcceptance,
    ) {
        let verdict = match acceptance {
            MessageAcceptance::Accept => "accepted",
            MessageAcceptance::Reject => "rejected",
            MessageAcceptance::Ignore => "ignored",
        };
        let labels = crate::metrics::GossipLabels { topic: topic.to_string(), verdict: verdict.into() };
        self.shared.metrics.gossip.get_or_create(&labels).inc();
        let _ =
            self.net.swarm.behaviour_mut().gossipsub.report_message_validation_result(message_id, source, acceptance);
    }

    /// Checks the waiting gossiped bundles' signatures as one batch, tells
    /// gossipsub each bundle's verdict (forward, or reject and penalise) and
    /// hands the valid transactions it keeps to the mempool.
    fn check_gossip_txs(&mut self) -> Result<(), Error> {
        let pending = self.relay.from_gossip.take();
        if pending.is_empty() {
            return Ok(());
        }
        let (verdicts, valid) = crate::gossip_txs::check(&self.chain, pending);
        let txs_topic = topic(TOPIC_TXS).hash();
        for ((message_id, source), ok) in verdicts {
            let acceptance = if ok { MessageAcceptance::Accept } else { MessageAcceptance::Reject };
            self.report_gossip(&txs_topic, &message_id, &source, acceptance);
        }
        let actions = self.consensus.engine.handle(now_ms(), Input::Verified(valid));
        self.act(actions)
    }

    /// An offer enters the order book if it is valid now. Only a malformed or
    /// forged offer penalises the peer: the rest depends on this node's
    /// ledger and clock, which may lag the sender's.
    fn on_offer(&mut self, data: &[u8]) -> MessageAcceptance {
        let Ok(offer) = codec::decode::<Signed<Offer>>(data) else {
            return MessageAcceptance::Reject;
        };
        let Ok(mut book) = self.shared.offers.write() else {
            return MessageAcceptance::Ignore;
        };
        match book.insert_or_hold(offer, &self.chain, self.store.state(), now_ms()) {
            Ok(()) => {
                self.shared.metrics.offers.set(book.len() as i64);
                MessageAcceptance::Accept
            }
            Err(e) if e.is_invalid() => MessageAcceptance::Reject,
            Err(e) => {
                tracing::debug!(error = %e, "offer ignored");
                MessageAcceptance::Ignore
            }
        }
    }

    /// Answers a peer's sync request on a blocking thread, within its quota
    /// (over it, the answer is empty at once: the peer asks again later).
    fn serve_sync(
        &mut self,
        peer: PeerId,
        request: SyncRequest,
        channel: request_response::ResponseChannel<SyncResponse>,
    ) {
        if !self.sync.server.quota.admit(peer, now_ms()) {
            self.shared.metrics.sync_refused.inc();
            let _ = self.net.swarm.behaviour_mut().sync.send_response(channel, SyncResponse { blocks: Vec::new() });
            return;
        }
        let reader = self.store.reader();
        let tip = self.store.height().0;
        let done = self.sync.server.served_tx.clone();
        tokio::task::spawn_blocking(move || {
            let response = crate::sync::build_response(&reader, &request, tip).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read blocks to serve a sync request");
                SyncResponse { blocks: Vec::new() }
            });
            // A blocking thread may wait for room: dropping the answer would leak the peer's slot.
            let _ = done.blocking_send((peer, channel, response));
        });
    }

    /// A sync answer built off the loop: send it and free the peer's slot.
    fn on_sync_served(
        &mut self,
        peer: PeerId,
        channel: request_response::ResponseChannel<SyncResponse>,
        response: SyncResponse,
    ) {
        self.sync.server.quota.done(&peer);
        let _ = self.net.swarm.behaviour_mut().sync.send_response(channel, response);
    }

    fn on_sync_message(&mut self, peer: PeerId, message: Message<SyncRequest, SyncResponse>) -> Result<(), Error> {
        match message {
            Message::Request { request, channel, .. } => self.serve_sync(peer, request, channel),
            Message::Response { response, .. } => {
                let full = self.sync.client.answered(response.blocks.len());
                for (block, certificate) in response.blocks {
                    let actions =
                        self.consensus.engine.handle(now_ms(), Input::Synced { block: Box::new(block), certificate });
                    self.act(actions)?;
                }
                if full {
                    // More to fetch: ask again at once rather than waiting for gossip.
                    self.request_sync(self.store.height());
                }
            }
        }
        Ok(())
    }

    /// Client transactions from the API (signatures checked there): what
    /// the edge or the mempool will not keep is refused now, not gossiped —
    /// under overload the network sheds load at its edge. The checks see
    /// the pool before this batch; the batch counts towards the edge's mark
    /// as it is taken. One verdict per transaction, in order.
    fn take_client_txs(&mut self, txs: Vec<VerifiedTx>) -> Result<Vec<Result<Hash, TxRefusal>>, Error> {
        let mut outcomes = Vec::with_capacity(txs.len());
        let mut keep = Vec::with_capacity(txs.len());
        for tx in txs {
            let signed = tx.tx();
            let checked = self.edge_admits(keep.len(), signed.body.fee).and_then(|()| {
                let engine = &self.consensus.engine;
                engine.mempool().check(engine.ledger(), signed).map_err(TxRefusal::from)
            });
            let outcome = match checked {
                Err(e) => Err(e),
                Ok(()) => match signed.hash() {
                    Ok(hash) => {
                        self.gossip_tx(signed.body.fee, signed.clone());
                        keep.push(tx);
                        Ok(hash)
                    }
                    Err(e) => Err(TxRefusal::invalid("malformed", e)),
                },
            };
            outcomes.push(outcome);
        }
        let actions = self.consensus.engine.handle(now_ms(), Input::Verified(keep));
        self.act(actions)?;
        Ok(outcomes)
    }

    /// The edge rule (see `edge`) for a client transaction paying `fee`,
    /// with `taken` more already taken from the same request.
    fn edge_admits(&self, taken: usize, fee: agora_protocol::Amount) -> Result<(), TxRefusal> {
        let pool = self.consensus.engine.mempool();
        let (len, cheapest) = (pool.len() + taken, pool.cheapest_fee().unwrap_or(agora_protocol::Amount(u64::MAX)));
        if crate::edge::admits(len, cheapest, fee) {
            return Ok(());
        }
        Err(TxRefusal::busy(crate::edge::Busy { retry_after_ms: self.relay.edge.retry_after_ms(len) }))
    }

    fn publish_status(&self) {
        let pool = self.consensus.engine.mempool();
        self.shared.edge.publish(&self.relay.edge, pool.len(), pool.cheapest_fee());
        let peers = self.sync.client.peers().len();
        self.shared.metrics.peers.set(peers as i64);
        self.shared.metrics.mempool.set(self.consensus.engine.mempool().len() as i64);
        self.shared.metrics.mempool_bytes.set(self.consensus.engine.mempool().bytes() as i64);
        if let Ok(mut s) = self.shared.status.write() {
            s.peers = peers;
            s.syncing = self.sync.client.in_flight();
            s.mempool = self.consensus.engine.mempool().len();
            s.offers = self.shared.offers.read().map(|b| b.len()).unwrap_or(0);
        }
    }
}

fn log_gpus(detection: &Detection) {
    for g in &detection.gpus {
        tracing::info!(
            index = g.index,
            id = %g.id,
            model = %g.model,
            vram_mib = g.vram_mib,
            simulated = g.simulated,
            method = detection.method,
            "GPU"
        );
    }
    tracing::info!(gpus = detection.gpus.len(), method = detection.method, "running as a provider");
}

/// The cheap signature check done before forwarding consensus gossip.
fn consensus_signature_ok(msg: &ConsensusMessage, chain: &ChainId) -> bool {
    match msg {
        ConsensusMessage::Vote(v) => v.verify(chain).is_ok(),
        ConsensusMessage::Proposal(p) => p.verify(chain).is_ok(),
        ConsensusMessage::Block(b) => b.verify(chain).is_ok(),
        ConsensusMessage::Certificate(c) => c.votes.len() <= agora_protocol::limits::MAX_VALIDATORS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_is_audited_at_start_and_every_hundred_blocks() {
        assert!(audit_due(AUDIT_EVERY_BLOCKS) && audit_due(3 * AUDIT_EVERY_BLOCKS));
        assert!(!audit_due(AUDIT_EVERY_BLOCKS + 1));
        let chain = agora_ledger::testkit::TestChain::new(2, 1, agora_protocol::Amount::agr(10));
        audit(&chain.state()).expect("a genesis state holds its invariants");
    }
}
