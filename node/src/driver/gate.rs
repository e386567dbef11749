//! Who may connect: a cap on connections per IP address.
//!
//! Identities are free — anyone can make as many key pairs as they like, and a ban is per
//! identity — but addresses are not. The gate counts established connections (both
//! directions) and pending inbound ones per remote IP address and refuses a new one from
//! (or to) an address that already holds [`NetConfig::max_connections_per_ip`]: an
//! inbound one before its handshake, an outbound one when it is established. Refusals are
//! counted ([`Gate::denied`]).
//!
//! Loopback addresses are exempt unless [`NetConfig::limit_loopback`] is set: every node of a
//! local testnet (hundreds on one machine) connects from 127.0.0.1, and a peer that can
//! reach a node's loopback address already runs on its host.
//!
//! [`NetConfig::max_connections_per_ip`]: super::NetConfig::max_connections_per_ip
//! [`NetConfig::limit_loopback`]: super::NetConfig::limit_loopback

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol as AddrProto;
use libp2p::swarm::behaviour::ConnectionEstablished;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure, NetworkBehaviour,
    THandler, THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// Default cap on connections per remote IP address: room for a few nodes behind one NAT
/// or on one host, not for a crowd of identities from one machine.
pub(crate) const MAX_CONNECTIONS_PER_IP: u32 = 8;

/// Why the gate refused a connection.
#[derive(Debug, thiserror::Error)]
#[error("{ip} already holds {limit} connections")]
pub(crate) struct TooManyFromIp {
    /// The remote address.
    pub ip: IpAddr,
    /// The cap in force.
    pub limit: u32,
}

/// The IP address of a multiaddr (`None` for addresses without one, e.g. DNS names).
fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        AddrProto::Ip4(ip) => Some(IpAddr::V4(ip)),
        AddrProto::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// Connections per IP address.
#[derive(Debug)]
struct IpCounts {
    limit: u32,
    limit_loopback: bool,
    per_ip: BTreeMap<IpAddr, u32>,
    /// Connections counted, with their address (pending inbound and established).
    conns: BTreeMap<ConnectionId, IpAddr>,
}

impl IpCounts {
    fn new(limit: u32, limit_loopback: bool) -> IpCounts {
        IpCounts {
            limit,
            limit_loopback,
            per_ip: BTreeMap::new(),
            conns: BTreeMap::new(),
        }
    }

    /// Counts connection `id` to or from `ip`, unless `ip` is at the cap.
    fn admit(&mut self, id: ConnectionId, ip: IpAddr) -> Result<(), TooManyFromIp> {
        if self.conns.contains_key(&id) {
            return Ok(());
        }
        let exempt = ip.is_loopback() && !self.limit_loopback;
        let n = self.per_ip.entry(ip).or_default();
        if !exempt && *n >= self.limit {
            let limit = self.limit;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
            return Err(TooManyFromIp { ip, limit });
        }
        *n += 1;
        self.conns.insert(id, ip);
        Ok(())
    }

    /// Connection `id` closed or failed.
    fn release(&mut self, id: ConnectionId) {
        let Some(ip) = self.conns.remove(&id) else {
            return;
        };
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

/// The connection gate.
#[derive(Debug)]
pub(crate) struct Gate {
    counts: IpCounts,
    denied: u64,
}

impl Gate {
    /// A gate allowing `limit` connections per IP address (loopback too if
    /// `limit_loopback`).
    pub(super) fn new(limit: u32, limit_loopback: bool) -> Gate {
        Gate {
            counts: IpCounts::new(limit, limit_loopback),
            denied: 0,
        }
    }

    /// Connections refused so far.
    pub(crate) fn denied(&self) -> u64 {
        self.denied
    }

    fn check(&mut self, id: ConnectionId, addr: &Multiaddr) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip_of(addr) else {
            return Ok(());
        };
        self.counts.admit(id, ip).map_err(|e| {
            self.denied += 1;
            tracing::debug!(%e, "connection refused");
            ConnectionDenied::new(e)
        })
    }
}

impl NetworkBehaviour for Gate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.check(id, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        // Counted while pending.
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        _: PeerId,
        addr: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(id, addr)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.counts.release(connection_id)
            }
            // Counted when admitted; another behaviour may still have refused it, in which
            // case no `ConnectionEstablished` follows and the count is released below.
            FromSwarm::ConnectionEstablished(ConnectionEstablished { .. }) => {}
            FromSwarm::DialFailure(f) => self.counts.release(f.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connections_per_address_are_capped_and_released() {
        let mut c = IpCounts::new(2, false);
        let (a, b) = (ip("203.0.113.7"), ip("198.51.100.1"));
        let id = ConnectionId::new_unchecked;
        assert!(c.admit(id(1), a).is_ok());
        assert!(c.admit(id(2), a).is_ok());
        let e = c.admit(id(3), a).unwrap_err();
        assert_eq!((e.ip, e.limit), (a, 2));
        assert!(
            c.admit(id(4), b).is_ok(),
            "another address has its own count"
        );
        c.release(id(1));
        assert!(
            c.admit(id(5), a).is_ok(),
            "a closed connection frees its slot"
        );
        c.release(id(3));
        assert!(
            c.admit(id(6), a).is_err(),
            "releasing a refused connection frees nothing"
        );
        c.release(id(99));
        assert_eq!(c.per_ip[&a], 2);
    }

    #[test]
    fn loopback_is_exempt_unless_limited() {
        let mut c = IpCounts::new(1, false);
        for i in 0..100 {
            assert!(
                c.admit(ConnectionId::new_unchecked(i), ip("127.0.0.1"))
                    .is_ok()
            );
        }
        assert!(c.admit(ConnectionId::new_unchecked(100), ip("::1")).is_ok());
        let mut c = IpCounts::new(1, true);
        assert!(
            c.admit(ConnectionId::new_unchecked(1), ip("127.0.0.1"))
                .is_ok()
        );
        assert!(
            c.admit(ConnectionId::new_unchecked(2), ip("127.0.0.1"))
                .is_err()
        );
    }

    #[test]
    fn the_gate_refuses_inbound_connections_before_the_handshake() {
        let mut g = Gate::new(1, true);
        let local: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap();
        let remote: Multiaddr = "/ip4/127.0.0.1/udp/50000/quic-v1".parse().unwrap();
        let (c1, c2) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        assert!(
            g.handle_pending_inbound_connection(c1, &local, &remote)
                .is_ok()
        );
        assert!(
            g.handle_pending_inbound_connection(c2, &local, &remote)
                .is_err()
        );
        assert_eq!(g.denied(), 1);
        let out: Multiaddr = "/ip4/127.0.0.1/tcp/4002".parse().unwrap();
        let c3 = ConnectionId::new_unchecked(3);
        assert!(
            g.handle_established_outbound_connection(
                c3,
                PeerId::random(),
                &out,
                Endpoint::Dialer,
                PortUse::New
            )
            .is_err(),
            "outbound connections count against the same address"
        );
        assert_eq!(g.denied(), 2);
    }
}
