//! The libp2p stack: TCP + noise + yamux, with identify, ping, kademlia,
//! gossipsub (versioned topics, strict validation, peer scoring) and a
//! request-response protocol for block sync, composed as one behaviour.

pub mod codec;
pub mod gossip;

use std::time::Duration;

use agora_protocol::job::{LeaseRpc, LeaseRpcReply};
use agora_protocol::sync::{SyncRequest, SyncResponse};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    StreamProtocol, Swarm, allow_block_list, gossipsub, identify, kad, noise, ping, request_response, tcp, yamux,
};

use crate::error::Error;

/// The block-sync protocol name.
pub const SYNC_PROTOCOL: &str = "/agora/sync/1";
/// The lease protocol: negotiation and logs between a buyer's node and a provider.
pub const LEASE_PROTOCOL: &str = "/agora/lease/1";
/// A lease request or logs request unanswered this long has failed.
pub const LEASE_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Identify's protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/agora/id/1";
/// A connection with no traffic is closed after this long.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a peer is pinged.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);
/// A ping unanswered this long means the connection is stuck (a loaded or
/// dead peer, or a multiplexer stalled under two-way back-pressure); the
/// daemon closes it and dials again.
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// A sync request that gets no answer in this time has failed.
pub const SYNC_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

pub type SyncCodec = codec::WireCodec<SyncRequest, SyncResponse>;
pub type LeaseCodec = codec::WireCodec<LeaseRpc, LeaseRpcReply>;

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Peers this node refuses to talk to (testnet partitions).
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub gossipsub: gossipsub::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub sync: request_response::Behaviour<SyncCodec>,
    pub lease: request_response::Behaviour<LeaseCodec>,
}

/// Builds the swarm for `key`, listening nowhere yet.
pub fn build_swarm(key: libp2p::identity::Keypair) -> Result<Swarm<Behaviour>, Error> {
    let net = |e: &dyn std::fmt::Display| Error::Network(e.to_string());
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| net(&e))?
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let gossipsub = gossip::behaviour(key)?;
            let identify = identify::Behaviour::new(identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public()));
            let kad = kad::Behaviour::new(peer_id, kad::store::MemoryStore::new(peer_id));
            let sync = request_response::Behaviour::new(
                [(StreamProtocol::new(SYNC_PROTOCOL), request_response::ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(SYNC_REQUEST_TIMEOUT),
            );
            let lease = request_response::Behaviour::new(
                [(StreamProtocol::new(LEASE_PROTOCOL), request_response::ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(LEASE_REQUEST_TIMEOUT),
            );
            Ok(Behaviour {
                blocked: Default::default(),
                lease,
                gossipsub,
                identify,
                ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_INTERVAL).with_timeout(PING_TIMEOUT)),
                kad,
                sync,
            })
        })
        .map_err(|e| net(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}
