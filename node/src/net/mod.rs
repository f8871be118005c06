//! The libp2p stack: TCP + noise + yamux, with identify, ping, kademlia,
//! gossipsub (versioned topics, strict validation, peer scoring) and a
//! request-response protocols for block sync and state sync, composed as one behaviour.

pub mod codec;
pub mod gossip;
pub mod ip_limits;

use std::time::Duration;

use agora_protocol::job::{LeaseRpc, LeaseRpcReply};
use agora_protocol::snapshot::{SnapshotRequest, SnapshotResponse};
use agora_protocol::sync::{SyncRequest, SyncResponse};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    StreamProtocol, Swarm, allow_block_list, connection_limits, gossipsub, identify, kad, noise, ping,
    request_response, tcp, yamux,
};

use crate::error::Error;

/// The block-sync protocol name.
pub const SYNC_PROTOCOL: &str = "/agora/sync/1";
/// The state-sync protocol: snapshot offers and chunks.
pub const SNAPSHOT_PROTOCOL: &str = "/agora/snapshot/1";
/// A snapshot request (an offer list, a chunk of at most 4 MiB) unanswered this long has failed.
pub const SNAPSHOT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The lease protocol: negotiation and logs between a buyer's node and a provider.
pub const LEASE_PROTOCOL: &str = "/agora/lease/1";
/// A lease request or logs request unanswered this long has failed.
pub const LEASE_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Identify's protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/agora/id/1";
/// Kademlia's protocol name: agora's DHT, not the public IPFS one (whose
/// peers would fill the routing table and be dialled for nothing).
pub const KAD_PROTOCOL: &str = "/agora/kad/1.0.0";
/// Connections to one peer at most (one each way, e.g. after a simultaneous dial).
pub const MAX_CONNECTIONS_PER_PEER: u32 = 2;
/// Inbound connections still in their handshake at most: a flood of half-open
/// connections is dropped here, before it costs a noise handshake each.
pub const MAX_PENDING_INCOMING: u32 = 64;
/// Established inbound connections at most.
pub const MAX_ESTABLISHED_INCOMING: u32 = 256;
/// Established connections at most, both ways.
pub const MAX_ESTABLISHED: u32 = 512;
/// Inbound connections from one IP address at most (a local testnet's nodes
/// all come from 127.0.0.1, hence not lower).
pub const MAX_INBOUND_PER_IP: u32 = 32;

/// The identify agent string: who we are, for operators reading peer lists.
pub fn agent_version() -> String {
    format!("agora/{}", env!("CARGO_PKG_VERSION"))
}

/// Whether a failed ping should close the connection: only a timeout means
/// the connection is stuck. A peer that does not speak ping (a js-libp2p
/// node, say) or a failed ping stream is no reason to drop it.
pub fn ping_failure_closes(failure: &ping::Failure) -> bool {
    matches!(failure, ping::Failure::Timeout)
}
/// Addresses kept at most from one peer's identify message.
pub const MAX_ADVERTISED_ADDRS: usize = 8;

/// How far an address reaches: the loopback host, a private network, or the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reach {
    Loopback,
    Private,
    Global,
}

/// The reach of an IP address (link-local and unique-local count as private).
pub fn reach(ip: std::net::IpAddr) -> Reach {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Reach::Loopback,
        IpAddr::V4(v4) if v4.is_private() || v4.is_link_local() => Reach::Private,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => reach(IpAddr::V4(v4)),
            None if v6.is_loopback() => Reach::Loopback,
            None if v6.is_unique_local() || v6.is_unicast_link_local() => Reach::Private,
            None => Reach::Global,
        },
        IpAddr::V4(_) => Reach::Global,
    }
}

/// Whether an address a peer advertised (identify) goes into the routing
/// table: plain TCP over IPv4 or IPv6 (what this node dials), a real host
/// and port, and no nearer than the connection it came over — a peer on the
/// internet may not steer this node's dials at its loopback or private
/// networks; a peer on the same host or network may advertise those.
pub fn dialable(addr: &libp2p::Multiaddr, via: std::net::IpAddr) -> bool {
    use libp2p::multiaddr::Protocol;
    let mut parts = addr.iter();
    let ip = match parts.next() {
        Some(Protocol::Ip4(ip)) => std::net::IpAddr::V4(ip),
        Some(Protocol::Ip6(ip)) => std::net::IpAddr::V6(ip),
        _ => return false,
    };
    if !matches!(parts.next(), Some(Protocol::Tcp(port)) if port != 0) {
        return false;
    }
    if !matches!(parts.next(), None | Some(Protocol::P2p(_))) || parts.next().is_some() {
        return false;
    }
    let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
    if ip.is_unspecified() || ip.is_multicast() || broadcast {
        return false;
    }
    reach(ip) >= reach(via)
}

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
pub type SnapshotCodec = codec::WireCodec<SnapshotRequest, SnapshotResponse>;

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Peers this node refuses to talk to (testnet partitions).
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    /// Per peer, pending and total connection caps.
    pub limits: connection_limits::Behaviour,
    /// Inbound connections per remote IP.
    pub ip_limits: ip_limits::Behaviour,
    pub gossipsub: gossipsub::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub sync: request_response::Behaviour<SyncCodec>,
    pub snapshot: request_response::Behaviour<SnapshotCodec>,
    pub lease: request_response::Behaviour<LeaseCodec>,
}

/// Builds the swarm for `key`, listening nowhere yet, with `net`'s gossip mesh.
pub fn build_swarm(
    key: libp2p::identity::Keypair,
    tuning: &crate::config::NetConfig,
) -> Result<Swarm<Behaviour>, Error> {
    let net = |e: &dyn std::fmt::Display| Error::Network(e.to_string());
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| net(&e))?
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let gossipsub = gossip::behaviour(tuning.gossip_mesh)?;
            let identify = identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public()).with_agent_version(agent_version()),
            );
            let kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
            let kad = kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
            let limits = connection_limits::ConnectionLimits::default()
                .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
                .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
                .with_max_established_incoming(Some(MAX_ESTABLISHED_INCOMING))
                .with_max_established(Some(MAX_ESTABLISHED));
            let sync = request_response::Behaviour::new(
                [(StreamProtocol::new(SYNC_PROTOCOL), request_response::ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(SYNC_REQUEST_TIMEOUT),
            );
            let snapshot = request_response::Behaviour::new(
                [(StreamProtocol::new(SNAPSHOT_PROTOCOL), request_response::ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(SNAPSHOT_REQUEST_TIMEOUT),
            );
            let lease = request_response::Behaviour::new(
                [(StreamProtocol::new(LEASE_PROTOCOL), request_response::ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(LEASE_REQUEST_TIMEOUT),
            );
            Ok(Behaviour {
                blocked: Default::default(),
                limits: connection_limits::Behaviour::new(limits),
                ip_limits: ip_limits::Behaviour::new(MAX_INBOUND_PER_IP),
                lease,
                gossipsub,
                identify,
                ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_INTERVAL).with_timeout(PING_TIMEOUT)),
                kad,
                sync,
                snapshot,
            })
        })
        .map_err(|e| net(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_ping_timeout_closes_a_connection() {
        assert!(ping_failure_closes(&ping::Failure::Timeout));
        assert!(!ping_failure_closes(&ping::Failure::Unsupported));
        let other = ping::Failure::Other { error: Box::new(std::io::Error::other("stream reset")) };
        assert!(!ping_failure_closes(&other));
        assert!(agent_version().starts_with("agora/"));
    }

    #[test]
    fn advertised_addresses_are_kept_only_if_dialable_and_no_nearer_than_the_peer() {
        let a = |s: &str| s.parse::<libp2p::Multiaddr>().unwrap();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let public = ip("203.0.113.7");
        assert!(dialable(&a("/ip4/198.51.100.1/tcp/26656"), public));
        assert!(dialable(&a("/ip6/2001:db8::1/tcp/26656"), public));
        for steer in ["/ip4/127.0.0.1/tcp/22", "/ip4/10.0.0.5/tcp/26656", "/ip4/192.168.1.1/tcp/80", "/ip6/::1/tcp/1"] {
            assert!(!dialable(&a(steer), public), "a public peer steering dials at {steer}");
        }
        for junk in [
            "/ip4/0.0.0.0/tcp/26656",
            "/ip4/224.0.0.1/tcp/26656",
            "/ip4/255.255.255.255/tcp/1",
            "/ip4/198.51.100.1/tcp/0",
            "/ip4/198.51.100.1/udp/26656/quic-v1",
            "/dns4/example.com/tcp/26656",
            "/ip4/198.51.100.1/tcp/26656/ws",
        ] {
            assert!(!dialable(&a(junk), public), "{junk}");
        }
        // Peers on this host (a local testnet) or network may advertise their own ranges.
        assert!(dialable(&a("/ip4/127.0.0.1/tcp/26656"), ip("127.0.0.1")));
        assert!(dialable(&a("/ip4/10.0.0.5/tcp/26656"), ip("10.0.0.9")));
        assert!(!dialable(&a("/ip4/127.0.0.1/tcp/26656"), ip("10.0.0.9")));
    }
}
