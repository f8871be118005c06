//! Gossipsub: versioned topics, unsigned messages identified by their
//! content, validation by the node before forwarding, and peer scoring that
//! graylists senders of invalid messages.
//!
//! Every payload is signed by its author already (transactions, votes,
//! blocks, offers, heartbeats, attestations), and a peer is penalised for
//! what it forwards, not for who wrote it; so gossipsub's own publisher
//! signature is off (`MessageAuthenticity::Anonymous`, as Ethereum's
//! `StrictNoSign`). Gossipsub checked that signature on every copy a node
//! received, before de-duplication: a quarter of all CPU of a 30-node
//! testnet, eight times the node's own checks (docs/performance.md).

use std::collections::HashMap;
use std::time::Duration;

use agora_protocol::codec::Wire;
use agora_protocol::consensus::{ConsensusMessage, ConsensusRepeat};
use agora_protocol::limits::{MAX_LIVENESS_MSG_BYTES, MAX_OFFER_BYTES, MAX_TX_BUNDLE_BYTES};
use agora_protocol::{DecidedBlock, Hash};
use libp2p::gossipsub::{
    self, IdentTopic, MessageAuthenticity, PeerScoreParams, PeerScoreThresholds, TopicScoreParams,
};

/// Consensus votes, proposals, blocks and certificates.
pub const TOPIC_CONSENSUS: &str = "agora/consensus/2";
/// Consensus messages sent again, each with a fresh nonce (`ConsensusRepeat`, see `repeats`).
pub const TOPIC_CONSENSUS_REPEAT: &str = "agora/consensus-repeat/1";
/// Signed transactions on their way to the proposer's mempool, in bundles (`TxBundle`).
pub const TOPIC_TXS: &str = "agora/txs/3";
/// Provider offers.
pub const TOPIC_OFFERS: &str = "agora/offers/2";
/// Provider heartbeats.
pub const TOPIC_HEARTBEATS: &str = "agora/heartbeats/2";
/// Validators' downtime attestations.
pub const TOPIC_ATTESTATIONS: &str = "agora/attestations/2";
/// Decided blocks with their commit certificates (`DecidedBlock`), framed
/// by `decided_frame`: how nodes that do not vote follow the chain.
pub const TOPIC_DECIDED: &str = "agora/decided/1";
/// Every topic: the scoring's. A node subscribes to the consensus topics
/// while it votes or may soon, to the decided topic while it does not vote
/// (`daemon::follow`), and to the rest always.
pub const TOPICS: [&str; 7] = [
    TOPIC_CONSENSUS,
    TOPIC_CONSENSUS_REPEAT,
    TOPIC_TXS,
    TOPIC_OFFERS,
    TOPIC_HEARTBEATS,
    TOPIC_ATTESTATIONS,
    TOPIC_DECIDED,
];
/// The topics every node subscribes to, whatever its role.
pub const ALWAYS_SUBSCRIBED: [&str; 4] = [TOPIC_TXS, TOPIC_OFFERS, TOPIC_HEARTBEATS, TOPIC_ATTESTATIONS];

/// Largest decided-block gossip message: the block hash, then the encoding.
pub const MAX_DECIDED_BYTES: usize = DECIDED_ID_BYTES + DecidedBlock::MAX_BYTES;
/// Largest gossip message: a decided block, or a repeated consensus
/// message carrying a full block.
pub const MAX_GOSSIP_BYTES: usize =
    if MAX_DECIDED_BYTES > ConsensusRepeat::MAX_BYTES { MAX_DECIDED_BYTES } else { ConsensusRepeat::MAX_BYTES };
/// A decided-block message starts with the block's hash, its gossip id: the
/// copies every validator sends of one block (certificates with different
/// signers) are one message, so each node takes the first and drops the
/// rest unread.
pub const DECIDED_ID_BYTES: usize = 32;
/// Framing gossipsub adds around a message's data (topic, protobuf fields),
/// allowed on top of each topic's own limit.
pub const GOSSIP_FRAMING_BYTES: usize = 512;
/// How long message ids are remembered for de-duplication.
pub const DUPLICATE_CACHE_TIME: Duration = Duration::from_secs(120);
/// Score lost per invalid message; one is enough to fall below the graylist threshold.
pub const INVALID_MESSAGE_WEIGHT: f64 = -100.0;
/// How often gossipsub maintains its meshes and gossips message ids
/// (libp2p's default; at 500 ms the extra rounds of control messages took
/// a 100-node testnet on 2 cores from 0.75 down to 0.63 blocks/s).
pub const GOSSIP_HEARTBEAT: Duration = Duration::from_secs(1);

pub fn topic(name: &str) -> IdentTopic {
    IdentTopic::new(name)
}

/// The gossipsub behaviour with agora's settings and scoring, keeping a
/// mesh of `mesh` peers per topic (`[net] gossip_mesh`).
pub fn behaviour(mesh: usize) -> Result<gossipsub::Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let config = gossipsub::ConfigBuilder::default()
        // No publisher, sequence number or signature: messages that carry
        // any are refused.
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .validate_messages()
        .max_transmit_size(MAX_GOSSIP_BYTES)
        // Oversized messages on the small-message topics are refused (and
        // their sender penalised) by gossipsub before anything is decoded.
        .max_transmit_size_for_topic(ConsensusMessage::MAX_BYTES + GOSSIP_FRAMING_BYTES, topic(TOPIC_CONSENSUS).hash())
        .max_transmit_size_for_topic(MAX_TX_BUNDLE_BYTES + GOSSIP_FRAMING_BYTES, topic(TOPIC_TXS).hash())
        .max_transmit_size_for_topic(MAX_OFFER_BYTES + GOSSIP_FRAMING_BYTES, topic(TOPIC_OFFERS).hash())
        .max_transmit_size_for_topic(MAX_LIVENESS_MSG_BYTES + GOSSIP_FRAMING_BYTES, topic(TOPIC_HEARTBEATS).hash())
        .max_transmit_size_for_topic(MAX_LIVENESS_MSG_BYTES + GOSSIP_FRAMING_BYTES, topic(TOPIC_ATTESTATIONS).hash())
        .max_transmit_size_for_topic(MAX_DECIDED_BYTES + GOSSIP_FRAMING_BYTES, topic(TOPIC_DECIDED).hash())
        .duplicate_cache_time(DUPLICATE_CACHE_TIME)
        .heartbeat_interval(GOSSIP_HEARTBEAT)
        // gossipsub's ratios for D = 6 (5, 12, 2, 6) kept for other
        // degrees; at D = 4 two outbound peers (half the mesh) made the
        // mesh graft past D: a third of it, at least one.
        .mesh_n(mesh)
        .mesh_n_low(mesh * 5 / 6)
        .mesh_n_high(mesh * 2)
        .mesh_outbound_min((mesh / 3).max(1))
        .gossip_lazy(mesh)
        .message_id_fn(message_id)
        .build()
        .map_err(|e| e.to_string())?;
    let mut behaviour = gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, config)?;
    behaviour.with_peer_score(score_params(), PeerScoreThresholds::default())?;
    Ok(behaviour)
}

/// A hash of the topic and the content: the same transaction, offer or
/// vote arriving from several peers, or published twice, is one message; a
/// consensus message sent again is wrapped with a fresh nonce
/// (`TOPIC_CONSENSUS_REPEAT`) to be a new one.
fn message_id(m: &gossipsub::Message) -> gossipsub::MessageId {
    let mut hasher = blake3::Hasher::new_derive_key("agora gossip id v2");
    hasher.update(m.topic.as_str().as_bytes());
    hasher.update(&[0]);
    // Topics are identity-hashed: the hash is the name (no allocation per message).
    if m.topic.as_str() == TOPIC_DECIDED && m.data.len() >= DECIDED_ID_BYTES {
        // The receiver checks that these bytes are the block's hash.
        hasher.update(&m.data[..DECIDED_ID_BYTES]);
    } else {
        hasher.update(&m.data);
    }
    gossipsub::MessageId::from(hasher.finalize().as_bytes().to_vec())
}

/// A decided block's gossip message: its hash (the gossip id), then its encoding.
pub fn decided_frame(block_hash: &Hash, encoded: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(DECIDED_ID_BYTES + encoded.len());
    data.extend_from_slice(&block_hash.0);
    data.extend_from_slice(encoded);
    data
}

/// The claimed block hash and the encoding of a decided block's message.
pub fn decided_unframe(data: &[u8]) -> Option<(Hash, &[u8])> {
    let (id, encoded) = data.split_at_checked(DECIDED_ID_BYTES)?;
    Some((Hash(id.try_into().ok()?), encoded))
}

/// Scoring that punishes invalid messages hard and nothing else: in small
/// networks, delivery-rate penalties would punish honest but quiet peers.
fn score_params() -> PeerScoreParams {
    let params = TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 0.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: INVALID_MESSAGE_WEIGHT,
        invalid_message_deliveries_decay: 0.9,
        ..TopicScoreParams::default()
    };
    let topics: HashMap<_, _> = TOPICS.iter().map(|t| (topic(t).hash(), params.clone())).collect();
    PeerScoreParams {
        topics,
        // A validator slow to drain its queue under load is not misbehaving:
        // penalising it (libp2p's default) graylists honest validators
        // exactly when the network is busiest, and consensus stalls.
        slow_peer_weight: 0.0,
        // Broken IWANT promises and GRAFT backoff violations also happen to
        // loaded honest peers; only invalid messages count.
        behaviour_penalty_weight: 0.0,
        // Testnets run many nodes on one address.
        ip_colocation_factor_whitelist: [std::net::IpAddr::from([127, 0, 0, 1])].into_iter().collect(),
        ..PeerScoreParams::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic_name: &str, data: &[u8]) -> gossipsub::Message {
        gossipsub::Message { source: None, data: data.to_vec(), sequence_number: None, topic: topic(topic_name).hash() }
    }

    #[test]
    fn ids_are_the_content_on_its_topic() {
        let id = |t: &str, d: &[u8]| message_id(&message(t, d));
        assert_eq!(id(TOPIC_CONSENSUS, b"vote"), id(TOPIC_CONSENSUS, b"vote"), "the same vote twice is one message");
        assert_ne!(id(TOPIC_CONSENSUS, b"vote"), id(TOPIC_CONSENSUS, b"vote2"));
        assert_ne!(id(TOPIC_CONSENSUS, b"vote"), id(TOPIC_OFFERS, b"vote"), "the topic is part of the id");
    }

    #[test]
    fn a_decided_blocks_id_is_its_hash_whatever_certificate_follows() {
        let id = |d: &[u8]| message_id(&message(TOPIC_DECIDED, d));
        let (a, b) = (Hash([1; 32]), Hash([2; 32]));
        assert_eq!(id(&decided_frame(&a, b"cert 1")), id(&decided_frame(&a, b"cert 2")), "one block, one message");
        assert_ne!(id(&decided_frame(&a, b"x")), id(&decided_frame(&b, b"x")));
        assert_eq!(decided_unframe(&decided_frame(&a, b"x")), Some((a, &b"x"[..])));
        assert_eq!(decided_unframe(&[0; 31]), None, "shorter than a hash");
        assert_ne!(id(&[7; 31]), id(&[7; 30]), "a short message is hashed whole");
    }
}
