//! Gossipsub: versioned topics, message ids that let validators' own
//! consensus rebroadcasts through but de-duplicate everything else by
//! content, strict signing, validation by the node before forwarding, and
//! peer scoring that graylists senders of invalid messages.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use agora_protocol::Hash;
use agora_protocol::codec::Wire;
use agora_protocol::consensus::ConsensusMessage;
use agora_protocol::limits::{MAX_LIVENESS_MSG_BYTES, MAX_OFFER_BYTES, MAX_TX_BUNDLE_BYTES};
use libp2p::gossipsub::{
    self, IdentTopic, MessageAuthenticity, PeerScoreParams, PeerScoreThresholds, TopicScoreParams,
};

/// Consensus votes, proposals, blocks and certificates.
pub const TOPIC_CONSENSUS: &str = "agora/consensus/1";
/// Signed transactions on their way to the proposer's mempool, in bundles (`TxBundle`).
pub const TOPIC_TXS: &str = "agora/txs/2";
/// Provider offers.
pub const TOPIC_OFFERS: &str = "agora/offers/1";
/// Provider heartbeats.
pub const TOPIC_HEARTBEATS: &str = "agora/heartbeats/1";
/// Validators' downtime attestations.
pub const TOPIC_ATTESTATIONS: &str = "agora/attestations/1";
/// Every topic a node subscribes to.
pub const TOPICS: [&str; 5] = [TOPIC_CONSENSUS, TOPIC_TXS, TOPIC_OFFERS, TOPIC_HEARTBEATS, TOPIC_ATTESTATIONS];

/// Largest gossip message: a consensus message carrying a full block.
pub const MAX_GOSSIP_BYTES: usize = ConsensusMessage::MAX_BYTES;
/// Framing gossipsub adds around a message's data (signature, key, sequence
/// number, topic), allowed on top of each topic's own limit.
pub const GOSSIP_FRAMING_BYTES: usize = 512;
/// How long message ids are remembered for de-duplication.
pub const DUPLICATE_CACHE_TIME: Duration = Duration::from_secs(120);
/// Score lost per invalid message; one is enough to fall below the graylist threshold.
pub const INVALID_MESSAGE_WEIGHT: f64 = -100.0;

pub fn topic(name: &str) -> IdentTopic {
    IdentTopic::new(name)
}

/// The peer ids of the current validators (a validator's peer id is its
/// account key), kept up to date by the daemon after each commit.
pub type ValidatorPeers = Arc<RwLock<HashSet<libp2p::PeerId>>>;

/// The gossipsub behaviour with agora's settings and scoring.
pub fn behaviour(
    key: &libp2p::identity::Keypair,
    validators: ValidatorPeers,
) -> Result<gossipsub::Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(MAX_GOSSIP_BYTES)
        // Oversized messages on the small-message topics are refused (and
        // their sender penalised) by gossipsub before anything is decoded.
        .max_transmit_size_for_topic(MAX_TX_BUNDLE_BYTES + GOSSIP_FRAMING_BYTES, topic(TOPIC_TXS).hash())
        .max_transmit_size_for_topic(MAX_OFFER_BYTES + GOSSIP_FRAMING_BYTES, topic(TOPIC_OFFERS).hash())
        .max_transmit_size_for_topic(MAX_LIVENESS_MSG_BYTES + GOSSIP_FRAMING_BYTES, topic(TOPIC_HEARTBEATS).hash())
        .max_transmit_size_for_topic(MAX_LIVENESS_MSG_BYTES + GOSSIP_FRAMING_BYTES, topic(TOPIC_ATTESTATIONS).hash())
        .duplicate_cache_time(DUPLICATE_CACHE_TIME)
        .heartbeat_interval(Duration::from_millis(500))
        .message_id_fn(move |m| message_id(m, &validators))
        .build()
        .map_err(|e| e.to_string())?;
    let mut behaviour = gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), config)?;
    behaviour.with_peer_score(score_params(), PeerScoreThresholds::default())?;
    Ok(behaviour)
}

/// Consensus messages published by a current validator are identified by
/// publisher and sequence number, so Malachite's rebroadcast of a vote after
/// a stalled round is a new message that reaches a peer which missed it (a
/// content id would make gossipsub drop it as a duplicate, even refuse to
/// publish it, for `DUPLICATE_CACHE_TIME`). Everything else is
/// content-addressed, consensus messages that anyone else publishes
/// included: re-publishing copies of a validator's vote under fresh sequence
/// numbers makes one message, not a flood. A transaction submitted at two
/// nodes is one message too.
fn message_id(m: &gossipsub::Message, validators: &ValidatorPeers) -> gossipsub::MessageId {
    let mut bytes = Vec::with_capacity(48);
    let from_validator = || m.source.is_some_and(|p| validators.read().map(|v| v.contains(&p)).unwrap_or(false));
    if m.topic == topic(TOPIC_CONSENSUS).hash() && from_validator() {
        bytes.extend_from_slice(&m.source.map(|p| p.to_bytes()).unwrap_or_default());
        bytes.extend_from_slice(&m.sequence_number.unwrap_or_default().to_le_bytes());
        return gossipsub::MessageId::from(Hash::tagged(b"agora/gossip-id/consensus/1", &bytes).0.to_vec());
    }
    gossipsub::MessageId::from(Hash::tagged(b"agora/gossip-id/1", &m.data).0.to_vec())
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

    fn message(source: libp2p::PeerId, seqno: u64, data: &[u8]) -> gossipsub::Message {
        gossipsub::Message {
            source: Some(source),
            data: data.to_vec(),
            sequence_number: Some(seqno),
            topic: topic(TOPIC_CONSENSUS).hash(),
        }
    }

    #[test]
    fn only_a_validators_own_consensus_publishes_are_new_by_sequence_number() {
        let validator = libp2p::PeerId::random();
        let stranger = libp2p::PeerId::random();
        let peers: ValidatorPeers = Arc::new(RwLock::new([validator].into_iter().collect()));
        let id = |m: &gossipsub::Message| message_id(m, &peers);
        // A validator's rebroadcast of one vote is a new message (it reaches peers that missed it).
        assert_ne!(id(&message(validator, 1, b"vote")), id(&message(validator, 2, b"vote")));
        // A stranger re-publishing copies under fresh sequence numbers makes one message.
        assert_eq!(id(&message(stranger, 1, b"vote")), id(&message(stranger, 2, b"vote")));
        assert_eq!(id(&message(stranger, 1, b"vote")), id(&message(libp2p::PeerId::random(), 9, b"vote")));
        assert_ne!(id(&message(stranger, 1, b"vote")), id(&message(stranger, 1, b"other")));
        // Other topics are content-addressed whoever publishes.
        let mut tx = message(validator, 1, b"tx");
        tx.topic = topic(TOPIC_TXS).hash();
        let mut tx2 = message(validator, 2, b"tx");
        tx2.topic = topic(TOPIC_TXS).hash();
        assert_eq!(id(&tx), id(&tx2));
    }
}
