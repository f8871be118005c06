//! A cap on inbound connections per remote IP address, so one host cannot
//! take every connection slot by dialling with many identities (libp2p's own
//! connection limits count per peer id and in total, not per address). The
//! decision is a pure function; the behaviour only counts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// The IP address a multiaddr starts with, if any.
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// Whether a new inbound connection from an IP that already has `have` is admitted.
pub fn admit(have: u32, max_per_ip: u32) -> bool {
    have < max_per_ip
}

/// Refused inbound connection: too many from one address.
#[derive(Debug)]
pub struct TooManyFromIp(pub IpAddr);

impl std::fmt::Display for TooManyFromIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "too many connections from {}", self.0)
    }
}

impl std::error::Error for TooManyFromIp {}

pub struct Behaviour {
    max_per_ip: u32,
    /// Established inbound connections per remote IP.
    by_ip: HashMap<IpAddr, u32>,
    /// Which IP each counted connection came from.
    connections: HashMap<ConnectionId, IpAddr>,
}

impl Behaviour {
    pub fn new(max_per_ip: u32) -> Behaviour {
        Behaviour { max_per_ip, by_ip: HashMap::new(), connections: HashMap::new() }
    }

    fn check(&self, remote: &Multiaddr) -> Result<(), ConnectionDenied> {
        match ip_of(remote) {
            Some(ip) if !admit(self.by_ip.get(&ip).copied().unwrap_or(0), self.max_per_ip) => {
                Err(ConnectionDenied::new(TooManyFromIp(ip)))
            }
            _ => Ok(()),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        _id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.check(remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(remote)?;
        if let Some(ip) = ip_of(remote) {
            *self.by_ip.entry(ip).or_default() += 1;
            self.connections.insert(id, ip);
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) = event {
            if let Some(ip) = self.connections.remove(&connection_id) {
                if let Some(n) = self.by_ip.get_mut(&ip) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.by_ip.remove(&ip);
                    }
                }
            }
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_per_address() {
        assert!(admit(0, 2) && admit(1, 2) && !admit(2, 2));
        let a: Multiaddr = "/ip4/10.1.2.3/tcp/4001".parse().unwrap();
        assert_eq!(ip_of(&a), Some("10.1.2.3".parse().unwrap()));
        let b: Multiaddr = "/ip6/::1/tcp/4001".parse().unwrap();
        assert_eq!(ip_of(&b), Some("::1".parse().unwrap()));
        let mut limits = Behaviour::new(1);
        assert!(limits.check(&a).is_ok());
        limits.by_ip.insert(ip_of(&a).unwrap(), 1);
        assert!(limits.check(&a).is_err(), "a second connection from the same address is refused");
        assert!(limits.check(&b).is_ok(), "another address is not");
    }
}
