//! How this node hears decisions. A validator, or a node staked enough to
//! become one at the next rotation, takes every vote on the consensus
//! topics. Any other node follows the chain by decided blocks: each
//! validator gossips the block it commits with its certificate on
//! `agora/decided/1`, and a follower checks the certificate against the
//! validators of that height, commits the block and forwards it. Every
//! vote reached every node before; on a network of many full nodes most of
//! their work was votes they had no part in (docs/design/scaling.md).
//!
//! A follower that hears no block for `FOLLOW_STALL` asks a peer for
//! blocks (block sync), which covers a decided block lost or withheld.

use std::time::{Duration, Instant};

use agora_ledger::consensus::{Decided, Input};
use agora_protocol::{Block, CommitCertificate, DecidedBlock};
use libp2p::PeerId;
use libp2p::gossipsub::{self, MessageAcceptance};

use super::{Daemon, now_ms};
use crate::error::Error;
use crate::net::gossip::{
    ALWAYS_SUBSCRIBED, TOPIC_CONSENSUS, TOPIC_CONSENSUS_REPEAT, TOPIC_DECIDED, decided_frame, decided_unframe, topic,
};
use agora_protocol::codec;

/// A follower that committed nothing for this long asks a peer for blocks.
pub const FOLLOW_STALL: Duration = Duration::from_secs(5);

/// Which topics this node takes, and when it last committed.
pub(super) struct Follow {
    /// Subscribed to the consensus topics (votes, proposals, repeats).
    votes: bool,
    /// Subscribed to decided blocks.
    decided: bool,
    last_progress: Instant,
}

impl Follow {
    pub(super) fn new() -> Follow {
        Follow { votes: false, decided: false, last_progress: Instant::now() }
    }
}

impl Daemon {
    /// Subscribes to the topics every node takes, then to those of its role.
    pub(super) fn subscribe_topics(&mut self) -> Result<(), Error> {
        subscribe(&mut self.net.swarm.behaviour_mut().gossipsub, &ALWAYS_SUBSCRIBED, true)?;
        self.update_subscriptions()
    }

    /// After each commit: gossips the block to followers if this node
    /// votes, notes the progress, and takes the topics of its role now.
    pub(super) fn follow_after_commit(&mut self, block: &Block, certificate: &CommitCertificate) -> Result<(), Error> {
        self.publish_decided(block, certificate);
        self.sync.follow.last_progress = Instant::now();
        self.update_subscriptions()
    }

    /// Votes while this node may vote, decided blocks while it does not
    /// vote (a node about to join the set takes both).
    fn update_subscriptions(&mut self) -> Result<(), Error> {
        let me = self.key.address();
        let state = self.store.state();
        let votes = agora_ledger::validators::may_validate(state, &me);
        let decided = !state.is_validator(&me);
        let gossip = &mut self.net.swarm.behaviour_mut().gossipsub;
        let follow = &mut self.sync.follow;
        if votes != follow.votes {
            subscribe(gossip, &[TOPIC_CONSENSUS, TOPIC_CONSENSUS_REPEAT], votes)?;
            tracing::info!(votes, "consensus topics {}", if votes { "joined" } else { "left" });
            follow.votes = votes;
        }
        if decided != follow.decided {
            subscribe(gossip, &[TOPIC_DECIDED], decided)?;
            follow.decided = decided;
        }
        Ok(())
    }

    /// A validator gossips each block it commits to the followers among its
    /// peers (none subscribed: nothing is encoded).
    fn publish_decided(&mut self, block: &Block, certificate: &CommitCertificate) {
        if !self.sync.follow.votes {
            return;
        }
        let decided_topic = topic(TOPIC_DECIDED).hash();
        let gossip = &mut self.net.swarm.behaviour_mut().gossipsub;
        if !gossip.all_peers().any(|(_, topics)| topics.contains(&&decided_topic)) {
            return;
        }
        let decided = DecidedBlock { block: block.clone(), certificate: certificate.clone() };
        match codec::encode(&decided) {
            Ok(encoded) => {
                let data = decided_frame(&certificate.block_hash, &encoded);
                if let Err(e) = gossip.publish(topic(TOPIC_DECIDED), data) {
                    tracing::debug!(error = %e, "decided block not gossiped");
                }
            }
            Err(e) => tracing::warn!(error = %e, "a decided block did not encode; not gossiped"),
        }
    }

    /// A decided block from gossip: only the next one is checked and, once
    /// committed here, forwarded; a later one asks peers for the gap; a
    /// frame whose id is not its block's hash, or a certificate that does
    /// not commit the block, penalises the sender.
    pub(super) fn on_decided(&mut self, data: &[u8]) -> Result<MessageAcceptance, Error> {
        let Some((id, encoded)) = decided_unframe(data) else { return Ok(MessageAcceptance::Reject) };
        let Ok(decided) = codec::decode::<DecidedBlock>(encoded) else { return Ok(MessageAcceptance::Reject) };
        if decided.certificate.block_hash != id {
            return Ok(MessageAcceptance::Reject);
        }
        let height = decided.block.header.height;
        let input = match self.consensus.engine.check_decided(decided) {
            Decided::Next(checked) => Input::Decided(checked),
            Decided::Ahead => Input::PeerAhead,
            Decided::Drop => return Ok(MessageAcceptance::Ignore),
            Decided::Invalid => return Ok(MessageAcceptance::Reject),
        };
        let ahead = matches!(input, Input::PeerAhead);
        let actions = self.consensus.engine.handle(now_ms(), input);
        self.act(actions)?;
        Ok(if ahead {
            MessageAcceptance::Ignore
        } else if self.store.height() >= height {
            MessageAcceptance::Accept
        } else {
            // Certified, yet it did not apply: its body is not the one its header commits to.
            MessageAcceptance::Reject
        })
    }

    /// Full nodes carry no votes, so a node that votes dials every other
    /// validator it is not connected to (addresses from the DHT's routing
    /// table; one it has none for is looked up). Every `REDIAL_INTERVAL`.
    pub(super) fn dial_validators(&mut self) {
        if !self.sync.follow.votes {
            return;
        }
        let me = self.key.address();
        let peers: Vec<PeerId> = self
            .store
            .state()
            .validators()
            .iter()
            .filter(|v| v.address != me)
            .filter_map(|v| crate::identity::peer_of(&v.address).ok())
            .collect();
        let swarm = &mut self.net.swarm;
        for peer in peers {
            if swarm.is_connected(&peer) || swarm.behaviour().blocked.blocked_peers().contains(&peer) {
                continue;
            }
            if swarm.dial(peer).is_err() {
                swarm.behaviour_mut().kad.get_closest_peers(peer);
            }
        }
    }

    /// On each tick: a follower stuck for `FOLLOW_STALL` asks a peer for blocks.
    pub(super) fn follow_stall_check(&mut self) {
        let follow = &mut self.sync.follow;
        if follow.votes || follow.last_progress.elapsed() < FOLLOW_STALL {
            return;
        }
        follow.last_progress = Instant::now();
        tracing::debug!(height = %self.store.height(), "no decided block lately: asking a peer for blocks");
        self.request_sync(self.store.height());
    }
}

/// Subscribes to `topics` (`on`) or leaves them.
fn subscribe(gossip: &mut gossipsub::Behaviour, topics: &[&str], on: bool) -> Result<(), Error> {
    for t in topics {
        if on {
            gossip.subscribe(&topic(t)).map_err(|e| Error::Network(e.to_string()))?;
        } else {
            gossip.unsubscribe(&topic(t));
        }
    }
    Ok(())
}

/// Whether a gossip message is on the decided topic (the swarm's event
/// routing; topics are identity-hashed, so the hash is the name).
pub(super) fn is_decided(t: &gossipsub::TopicHash) -> bool {
    t.as_str() == TOPIC_DECIDED
}
