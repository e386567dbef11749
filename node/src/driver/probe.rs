//! SWIM's probes as bare UDP datagrams, beside the cores' streams.
//!
//! SWIM probes every member in turn, so a node that carries its pings and acks on QUIC
//! streams ends up with a connection to every member: at N = 100 a connection handshake
//! and path-MTU search (about 20 KB both ways) for each pair whose probes fell more than an
//! idle timeout apart, 43 % of a node's bytes at rest, and 3 600 handshakes in a 100-node
//! join (docs/experiments/compare.md). memberlist, under Serf and Consul, sends its probes as
//! UDP datagrams and keeps TCP for the push-pull; so does a node here. A core names the
//! messages that may travel this way ([`NetCore::probe_role`](super::NetCore::probe_role)):
//! the gossip core's `Ping` and `PingReq` (requests) and `Ack`, `IndirectAck` and `Nack`
//! (answers). Everything else — joins, rumors, member syncs, the DHT — stays on the
//! authenticated streams.
//!
//! **Where a datagram goes.** A node advertises its probe socket in its signed member
//! record, as a multiaddr with no protocol above UDP (`/ip4/10.0.0.2/udp/4711`; see
//! [`probe_addr`]). A request goes to the peer's confirmed address (the one that last
//! answered), or to each address it advertises until one answers; a peer with no probe
//! address is probed on a stream as before, so a node that runs without datagrams
//! (`probe_datagrams = false`) still takes part. An answer goes back the way its request
//! came: by datagram to a request that came by datagram, on a stream otherwise.
//!
//! **What a datagram proves.** Nothing: it has no handshake, and its sender's tag is a
//! claim. The rules make the claim harmless to believe:
//!
//! - A request is taken only from a peer whose signed record names a probe address, and
//!   its answer goes to one of those addresses, never to the datagram's source. A forged
//!   request makes this node send one answer of the same size to that member: no
//!   amplification, and no reflection at an address the member did not sign.
//! - An answer is taken only if it echoes the 64-bit nonce of this node's request to that
//!   peer with that sequence number ([`Nonces`]); the nonces are drawn from a keyed hash
//!   whose key never leaves the process. An attacker off the path cannot make a dead member
//!   look alive; one on the path could, as with memberlist without its keyring, and gains
//!   what cutting the member off would give it. A request's nonce is remembered under the
//!   requester's sequence number, the latest one winning: an ack leaves in the same turn
//!   as its ping, but a relay's answer to an indirect probe leaves later, and a request
//!   forged in the requester's name with the same sequence number in between makes that
//!   answer echo the wrong nonce — the requester then counts the indirect probe as
//!   unanswered, which dropping the packet would have done too.
//! - Nothing a datagram carries is charged to its claimed sender as an offence, and
//!   datagrams have rate buckets of their own, so forged datagrams cannot get an honest
//!   peer banned or eat into its stream budget.
//!
//! Everything here is bounded: [`MAX_DATAGRAM`] bytes a datagram, [`MAX_PROBE_PEERS`]
//! peers with addresses, [`ADDRS_PER_PEER`] addresses each, [`NONCES_KEPT`] nonces per
//! direction.

use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{IpAddr, SocketAddr};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol as AddrProto;
use peerlab_overlay::PeerId;

use crate::wire::{Channel, Datagram, MAX_DATAGRAM};

/// Peers whose probe addresses are kept: the member table's own bound is far below this;
/// beyond it the earliest learned is forgotten (and probed on a stream).
pub(crate) const MAX_PROBE_PEERS: usize = 16_384;

/// Probe addresses kept per peer (a node advertises one per listen address; more are a
/// record padded to make this node send its requests in many directions).
pub(crate) const ADDRS_PER_PEER: usize = 4;

/// Nonces kept per direction (requests sent, requests answered), oldest forgotten first. A
/// node sends about one request a probe period and answers about as many; 4096 outlive any
/// probe by minutes. A forgotten request's answer is dropped (the probe then counts as
/// missed); a forgotten received request is answered on a stream.
pub(crate) const NONCES_KEPT: usize = 4096;

/// Datagrams read in one turn of the driver before it looks at other inputs.
pub(crate) const DATAGRAMS_PER_TURN: usize = 64;

/// What a message is to the datagram path: a request carries a fresh nonce, an answer
/// echoes the nonce of the request it answers. The number is the requester's sequence
/// number, which an answer repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeRole {
    /// Starts an exchange (SWIM's `Ping`, `PingReq`).
    Request(u64),
    /// Answers the request with this sequence number (`Ack`, `IndirectAck`, `Nack`).
    Answer(u64),
}

/// The probe address a multiaddr names: an IP and a UDP port with nothing above them (a
/// trailing `/p2p/<id>` is allowed).
pub(crate) fn probe_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut it = addr.iter().filter(|p| !matches!(p, AddrProto::P2p(_)));
    let ip: IpAddr = match it.next()? {
        AddrProto::Ip4(ip) => ip.into(),
        AddrProto::Ip6(ip) => ip.into(),
        _ => return None,
    };
    let AddrProto::Udp(port) = it.next()? else {
        return None;
    };
    it.next().is_none().then_some(SocketAddr::new(ip, port))
}

/// The IP a multiaddr starts with (a listen address's host).
pub(crate) fn leading_ip(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        AddrProto::Ip4(ip) => Some(ip.into()),
        AddrProto::Ip6(ip) => Some(ip.into()),
        _ => None,
    }
}

/// A peer's tag on the datagram path: the first 8 bytes of its public key.
pub(crate) fn tag(peer: &PeerId) -> [u8; 8] {
    let mut t = [0u8; 8];
    t.copy_from_slice(&peer.public_key()[..8]);
    t
}

/// The multiaddr of a probe address.
pub(crate) fn probe_multiaddr(sa: SocketAddr) -> Multiaddr {
    Multiaddr::from(sa.ip()).with(AddrProto::Udp(sa.port()))
}

/// Nonces of requests, by peer and sequence number, oldest forgotten first.
#[derive(Default)]
struct Nonces {
    map: BTreeMap<(PeerId, u64), u64>,
    order: VecDeque<(PeerId, u64)>,
}

impl Nonces {
    fn insert(&mut self, key: (PeerId, u64), nonce: u64) {
        if self.map.insert(key, nonce).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > NONCES_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    fn get(&self, key: &(PeerId, u64)) -> Option<u64> {
        self.map.get(key).copied()
    }
}

/// A peer's probe addresses.
struct PeerAddrs {
    /// As its signed record lists them.
    advertised: Vec<SocketAddr>,
    /// The one that answered last (always one of `advertised`).
    confirmed: Option<SocketAddr>,
}

/// Why a received datagram was dropped (a metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// From a peer without a signed probe address.
    Unknown,
    /// An answer that echoes no nonce of a request this node sent that peer.
    Nonce,
}

impl Refusal {
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown_peer",
            Refusal::Nonce => "nonce",
        }
    }
}

/// The probe socket and what the datagram path remembers.
pub(crate) struct Probes {
    socket: Option<tokio::net::UdpSocket>,
    me: PeerId,
    peers: BTreeMap<PeerId, PeerAddrs>,
    /// The peers of `peers` by tag (the first 8 bytes of their keys; see
    /// [`Datagram`]): whoever was learned first keeps a tag.
    by_tag: BTreeMap<[u8; 8], PeerId>,
    /// Peers in the order their addresses were first learned (for the bound).
    learned: VecDeque<PeerId>,
    sent: Nonces,
    received: Nonces,
    /// Key of the nonce hash; never sent anywhere.
    key: RandomState,
    counter: u64,
}

impl Probes {
    /// A datagram path that sends and receives nothing: every probe travels on a stream.
    pub(crate) fn off(me: PeerId) -> Probes {
        Probes {
            socket: None,
            me,
            peers: BTreeMap::new(),
            by_tag: BTreeMap::new(),
            learned: VecDeque::new(),
            sent: Nonces::default(),
            received: Nonces::default(),
            key: RandomState::new(),
            counter: 0,
        }
    }

    /// Binds the probe socket at `addr` (port 0: one the OS picks).
    pub(crate) fn bind(me: PeerId, addr: SocketAddr) -> io::Result<Probes> {
        let std = std::net::UdpSocket::bind(addr)?;
        std.set_nonblocking(true)?;
        let socket = tokio::net::UdpSocket::from_std(std)?;
        Ok(Probes {
            socket: Some(socket),
            ..Probes::off(me)
        })
    }

    /// The bound socket's address (`None` when off).
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// The probe addresses to advertise beside `listen`: one per listen IP the socket
    /// serves (each listen IP, when it is bound to the unspecified address of that family).
    pub(crate) fn advertised(&self, listen: &[Multiaddr]) -> Vec<Multiaddr> {
        let Some(local) = self.local_addr() else {
            return Vec::new();
        };
        let mut out: Vec<Multiaddr> = Vec::new();
        for ip in listen.iter().filter_map(leading_ip) {
            let serves = if local.ip().is_unspecified() {
                local.is_ipv4() == ip.is_ipv4() && !ip.is_unspecified()
            } else {
                local.ip() == ip
            };
            let m = probe_multiaddr(SocketAddr::new(ip, local.port()));
            if serves && !out.contains(&m) {
                out.push(m);
            }
        }
        out
    }

    /// Whether `peer` has a signed probe address.
    #[cfg(test)]
    pub(crate) fn knows(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// The peer with a signed probe address whose key starts with `tag`.
    pub(crate) fn peer_of(&self, tag: &[u8; 8]) -> Option<PeerId> {
        self.by_tag.get(tag).copied()
    }

    fn forget(&mut self, peer: &PeerId) {
        if self.peers.remove(peer).is_some() && self.by_tag.get(&tag(peer)) == Some(peer) {
            self.by_tag.remove(&tag(peer));
        }
    }

    /// `peer`'s signed record lists these probe addresses (all of them: an empty list
    /// forgets the peer's).
    pub(crate) fn learn(&mut self, peer: PeerId, mut addrs: Vec<SocketAddr>) {
        if self.socket.is_none() {
            // Off: nothing is sent to these addresses, so nothing is kept.
            return;
        }
        addrs.dedup();
        addrs.truncate(ADDRS_PER_PEER);
        if addrs.is_empty() {
            if self.peers.contains_key(&peer) {
                self.forget(&peer);
                self.learned.retain(|p| *p != peer);
            }
            return;
        }
        match self.peers.get_mut(&peer) {
            Some(p) => {
                if p.confirmed.is_some_and(|c| !addrs.contains(&c)) {
                    p.confirmed = None;
                }
                p.advertised = addrs;
            }
            None => {
                self.peers.insert(
                    peer,
                    PeerAddrs {
                        advertised: addrs,
                        confirmed: None,
                    },
                );
                self.by_tag.entry(tag(&peer)).or_insert(peer);
                self.learned.push_back(peer);
                while self.learned.len() > MAX_PROBE_PEERS {
                    if let Some(old) = self.learned.pop_front() {
                        self.forget(&old);
                    }
                }
            }
        }
    }

    fn fresh_nonce(&mut self) -> u64 {
        self.counter += 1;
        // Never 0, which marks "no nonce" on the wire.
        self.key.hash_one(self.counter).max(1)
    }

    /// The datagrams that carry `frame` (a message in `role` on `ch`) to `to`, with where
    /// each goes; `None` when it must travel on a stream instead (no socket, a peer
    /// without a probe address, an answer to a request that came on a stream, or a frame
    /// too large for a datagram).
    pub(crate) fn outgoing(
        &mut self,
        to: PeerId,
        role: ProbeRole,
        ch: Channel,
        frame: &[u8],
    ) -> Option<Vec<(SocketAddr, Vec<u8>)>> {
        self.socket.as_ref()?;
        let addrs = self.peers.get(&to)?;
        let (token, dests) = match role {
            ProbeRole::Request(seq) => {
                let dests = match addrs.confirmed {
                    Some(c) => vec![c],
                    None => addrs.advertised.clone(),
                };
                let nonce = self.fresh_nonce();
                self.sent.insert((to, seq), nonce);
                (nonce, dests)
            }
            ProbeRole::Answer(seq) => {
                let echo = self.received.get(&(to, seq))?;
                let dest = addrs.confirmed.or(addrs.advertised.first().copied())?;
                (echo, vec![dest])
            }
        };
        let bytes = Datagram {
            from_tag: tag(&self.me),
            to_tag: tag(&to),
            token,
            channel: ch,
            body: frame,
        }
        .to_bytes()?;
        Some(dests.into_iter().map(|d| (d, bytes.clone())).collect())
    }

    /// Whether a datagram is for this node's identity.
    pub(crate) fn is_for_me(&self, d: &Datagram<'_>) -> bool {
        d.to_tag == tag(&self.me)
    }

    /// Admits a datagram from `from` (arrived from `src`) in `role`: a request is
    /// remembered so that its answer echoes its nonce; an answer must echo the nonce of
    /// this node's request, and its source becomes the peer's confirmed address if the
    /// peer advertises it.
    pub(crate) fn admit(
        &mut self,
        from: PeerId,
        role: ProbeRole,
        d: &Datagram<'_>,
        src: SocketAddr,
    ) -> Result<(), Refusal> {
        let Some(addrs) = self.peers.get_mut(&from) else {
            return Err(Refusal::Unknown);
        };
        match role {
            ProbeRole::Request(seq) => {
                self.received.insert((from, seq), d.token);
            }
            ProbeRole::Answer(seq) => {
                if d.token == 0 || self.sent.get(&(from, seq)) != Some(d.token) {
                    return Err(Refusal::Nonce);
                }
                if addrs.advertised.contains(&src) {
                    addrs.confirmed = Some(src);
                }
            }
        }
        Ok(())
    }

    /// Sends one datagram without waiting; `false` if the socket could not take it (a full
    /// send buffer drops it, as the network might).
    pub(crate) fn send_to(&self, dest: SocketAddr, bytes: &[u8]) -> bool {
        match &self.socket {
            Some(s) => s.try_send_to(bytes, dest).is_ok(),
            None => false,
        }
    }

    /// Waits for the next datagram (never, when off). Datagrams longer than
    /// [`MAX_DATAGRAM`] come back with a length above it (the buffer holds one byte more).
    /// A receive error comes back to the driver, which counts it and reads on.
    pub(crate) async fn recv(
        &self,
        buf: &mut [u8; MAX_DATAGRAM + 1],
    ) -> io::Result<(usize, SocketAddr)> {
        match &self.socket {
            Some(s) => s.recv_from(buf).await,
            None => std::future::pending().await,
        }
    }

    /// The next datagram if one is waiting.
    pub(crate) fn try_recv(&self, buf: &mut [u8; MAX_DATAGRAM + 1]) -> Option<(usize, SocketAddr)> {
        self.socket.as_ref()?.try_recv_from(buf).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn probe_addresses_are_bare_udp_multiaddrs() {
        let m: Multiaddr = "/ip4/10.0.0.2/udp/4711".parse().unwrap();
        assert_eq!(probe_addr(&m), Some(addr("10.0.0.2:4711")));
        assert_eq!(probe_multiaddr(addr("10.0.0.2:4711")), m);
        let with_id: Multiaddr =
            "/ip4/10.0.0.2/udp/4711/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
                .parse()
                .unwrap();
        assert_eq!(probe_addr(&with_id), Some(addr("10.0.0.2:4711")));
        for other in [
            "/ip4/10.0.0.2/udp/4711/quic-v1",
            "/ip4/10.0.0.2/tcp/4711",
            "/dns4/example.org/udp/4711",
        ] {
            assert_eq!(probe_addr(&other.parse().unwrap()), None, "{other}");
        }
    }

    fn probes_with_socket(me: PeerId) -> Probes {
        // The tables are kept and `outgoing` produces datagrams only with a socket; nothing
        // is sent.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let _guard = rt.enter();
        Probes::bind(me, addr("127.0.0.1:0")).unwrap()
    }

    #[test]
    fn an_answer_is_taken_only_with_the_nonce_of_the_request() {
        let (me, peer) = (PeerId::synthetic(1), PeerId::synthetic(2));
        let mut p = probes_with_socket(me);
        let ch = Channel::Gossip;
        assert!(p.outgoing(peer, ProbeRole::Request(7), ch, b"x").is_none());
        p.learn(peer, vec![addr("127.0.0.1:9"), addr("127.0.0.2:9")]);
        let out = p
            .outgoing(peer, ProbeRole::Request(7), ch, b"ping")
            .unwrap();
        assert_eq!(
            out.len(),
            2,
            "to every advertised address until one answers"
        );
        let sent = Datagram::parse(&out[0].1).unwrap();
        assert_eq!(sent.to_tag, tag(&peer));
        assert_eq!(sent.from_tag, tag(&me));
        assert_eq!(p.peer_of(&tag(&peer)), Some(peer));
        let answer = |echo| Datagram {
            from_tag: tag(&peer),
            to_tag: [0; 8],
            token: echo,
            channel: ch,
            body: b"ack",
        };
        let src = addr("127.0.0.2:9");
        let forged = answer(sent.token ^ 1);
        assert_eq!(
            p.admit(peer, ProbeRole::Answer(7), &forged, src),
            Err(Refusal::Nonce)
        );
        assert_eq!(
            p.admit(peer, ProbeRole::Answer(8), &answer(sent.token), src),
            Err(Refusal::Nonce),
            "another sequence number"
        );
        assert_eq!(
            p.admit(peer, ProbeRole::Answer(7), &answer(sent.token), src),
            Ok(())
        );
        let next = p
            .outgoing(peer, ProbeRole::Request(9), ch, b"ping")
            .unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].0, src, "the answering address is confirmed");
        let stranger = PeerId::synthetic(3);
        assert_eq!(
            p.admit(stranger, ProbeRole::Answer(7), &answer(sent.token), src),
            Err(Refusal::Unknown)
        );
    }

    #[test]
    fn answers_echo_the_request_and_go_to_a_signed_address() {
        let (me, peer) = (PeerId::synthetic(1), PeerId::synthetic(2));
        let mut p = probes_with_socket(me);
        let ch = Channel::Gossip;
        p.learn(peer, vec![addr("127.0.0.1:9")]);
        // A request that came on a stream is answered on a stream.
        assert!(p.outgoing(peer, ProbeRole::Answer(5), ch, b"ack").is_none());
        let req = Datagram {
            from_tag: tag(&peer),
            to_tag: [0; 8],
            token: 42,
            channel: ch,
            body: b"ping",
        };
        // Whatever its source, the answer goes to the signed address.
        assert_eq!(
            p.admit(peer, ProbeRole::Request(5), &req, addr("10.9.9.9:1")),
            Ok(())
        );
        let out = p.outgoing(peer, ProbeRole::Answer(5), ch, b"ack").unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, addr("127.0.0.1:9"));
        let d = Datagram::parse(&out[0].1).unwrap();
        assert_eq!(d.token, 42);
    }

    #[test]
    fn tables_stay_within_their_bounds() {
        let me = PeerId::synthetic(0);
        let mut p = probes_with_socket(me);
        let many: Vec<SocketAddr> = (1..=10).map(|i| addr(&format!("127.0.0.1:{i}"))).collect();
        for n in 1..=(MAX_PROBE_PEERS as u64 + 10) {
            p.learn(PeerId::synthetic(n), many.clone());
        }
        assert_eq!(p.peers.len(), MAX_PROBE_PEERS);
        assert_eq!(p.by_tag.len(), MAX_PROBE_PEERS);
        assert!(!p.knows(&PeerId::synthetic(1)), "the earliest is forgotten");
        assert_eq!(p.peer_of(&tag(&PeerId::synthetic(1))), None);
        let last = PeerId::synthetic(MAX_PROBE_PEERS as u64 + 10);
        assert_eq!(p.peers[&last].advertised.len(), ADDRS_PER_PEER);
        p.learn(last, Vec::new());
        assert!(!p.knows(&last));
        assert_eq!(p.peer_of(&tag(&last)), None);
        for seq in 0..(NONCES_KEPT as u64 + 10) {
            p.received.insert((me, seq), seq + 1);
        }
        assert_eq!(p.received.map.len(), NONCES_KEPT);
        assert_eq!(p.received.get(&(me, 0)), None);
    }
}
