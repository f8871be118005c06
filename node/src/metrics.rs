//! Prometheus metrics of the node, served as text at `GET /metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of gossip counters: topic and verdict.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct GossipLabels {
    pub topic: String,
    pub verdict: String,
}

/// Labels of per-topic counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub height: Gauge,
    pub peers: Gauge,
    pub mempool: Gauge,
    pub mempool_bytes: Gauge,
    /// Transactions waiting to be gossiped (paced, highest fee first).
    pub tx_outbox: Gauge,
    /// Transactions whose push gossip found every peer's send queue full.
    pub tx_gossip_dropped: Counter,
    /// Signatures the double-sign guard refused (each one a lost WAL or a bug).
    pub sign_refused: Counter,
    /// Inbound lease-protocol requests refused over a peer's quota.
    pub lease_rpcs_refused: Counter,
    /// Milliseconds between the last two committed blocks (block time).
    pub block_interval_ms: Gauge<u64, AtomicU64>,
    pub committed_txs: Counter,
    pub gossip: Family<GossipLabels, Counter>,
    /// Bytes of gossip messages received (before any check), by topic.
    pub gossip_bytes: Family<TopicLabels, Counter>,
    /// Offers in the order book.
    pub offers: Gauge,
    /// Offers this provider has gossiped.
    pub offers_announced: Counter,
    pub leases_accepted: Counter,
    pub leases_refused: Counter,
    pub jobs_started: Counter,
    pub heartbeats_sent: Counter,
    pub heartbeats_seen: Counter,
    pub probes_sent: Counter,
    pub probes_failed: Counter,
    /// Sync requests answered empty because the peer was over its quota.
    pub sync_refused: Counter,
    pub attestations_signed: Counter,
    pub attestations_seen: Counter,
    pub slashes_submitted: Counter,
}

impl Metrics {
    /// The metrics, registered under the `agora_` prefix.
    pub fn new() -> (Metrics, Registry) {
        let m = Metrics {
            height: Gauge::default(),
            peers: Gauge::default(),
            mempool: Gauge::default(),
            mempool_bytes: Gauge::default(),
            tx_outbox: Gauge::default(),
            tx_gossip_dropped: Counter::default(),
            sign_refused: Counter::default(),
            lease_rpcs_refused: Counter::default(),
            block_interval_ms: Gauge::default(),
            committed_txs: Counter::default(),
            gossip: Family::default(),
            gossip_bytes: Family::default(),
            offers: Gauge::default(),
            offers_announced: Counter::default(),
            leases_accepted: Counter::default(),
            leases_refused: Counter::default(),
            jobs_started: Counter::default(),
            heartbeats_sent: Counter::default(),
            heartbeats_seen: Counter::default(),
            probes_sent: Counter::default(),
            probes_failed: Counter::default(),
            sync_refused: Counter::default(),
            attestations_signed: Counter::default(),
            attestations_seen: Counter::default(),
            slashes_submitted: Counter::default(),
        };
        let mut r = Registry::with_prefix("agora");
        r.register("height", "Latest committed block height", m.height.clone());
        r.register("peers", "Connected peers", m.peers.clone());
        r.register("mempool_txs", "Transactions waiting in the mempool", m.mempool.clone());
        r.register("mempool_bytes", "Encoded bytes waiting in the mempool", m.mempool_bytes.clone());
        r.register("sign_refused", "Signatures refused by the double-sign guard", m.sign_refused.clone());
        r.register(
            "lease_rpcs_refused",
            "Inbound lease-protocol requests (probes, proposals, logs) refused over the peer's quota",
            m.lease_rpcs_refused.clone(),
        );
        r.register("block_interval_ms", "Time between the last two blocks", m.block_interval_ms.clone());
        r.register("committed_txs", "Transactions committed since start", m.committed_txs.clone());
        r.register("tx_outbox", "Transactions waiting to be gossiped", m.tx_outbox.clone());
        r.register(
            "tx_gossip_dropped",
            "Transactions whose push gossip found every send queue full",
            m.tx_gossip_dropped.clone(),
        );
        r.register("gossip_messages", "Gossip messages received, by topic and verdict", m.gossip.clone());
        r.register("gossip_bytes", "Bytes of gossip messages received, by topic", m.gossip_bytes.clone());
        r.register("offers", "Offers in the order book", m.offers.clone());
        r.register("offers_announced", "Offers this provider has gossiped", m.offers_announced.clone());
        r.register("leases_accepted", "Lease requests this provider accepted", m.leases_accepted.clone());
        r.register("leases_refused", "Lease requests this provider refused", m.leases_refused.clone());
        r.register("jobs_started", "Jobs this provider started", m.jobs_started.clone());
        r.register("heartbeats_sent", "Heartbeats this provider gossiped", m.heartbeats_sent.clone());
        r.register("heartbeats_seen", "Fresh provider heartbeats received", m.heartbeats_seen.clone());
        r.register("probes_sent", "Probes of silent providers sent", m.probes_sent.clone());
        r.register("probes_failed", "Probes that got no valid answer", m.probes_failed.clone());
        r.register("sync_refused", "Sync requests over the peer's quota, answered empty", m.sync_refused.clone());
        r.register("attestations_signed", "Downtime attestations this validator signed", m.attestations_signed.clone());
        r.register("attestations_seen", "Valid downtime attestations received", m.attestations_seen.clone());
        r.register("slashes_submitted", "Slashing transactions this node submitted", m.slashes_submitted.clone());
        (m, r)
    }
}
