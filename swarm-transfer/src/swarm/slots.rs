//! Connection slots: who may take one, and who must give it up.
//!
//! Identities are free, so a transfer's [`Config::max_peers`] slots are what a flood of
//! handshakes from fresh identities would take, starving the peers that deliver. With
//! [`Config::defenses`]:
//!
//! - A peer that delivered a block we asked it for has proven itself, and so has one our
//!   choker chose to serve a whole chunk (a seeder's downloaders never deliver to it; the
//!   choker's few slots and rounds bound how fast identities earn this). A proven peer is
//!   never evicted to make room for another.
//! - Peers that opened the transfer with us (inbound) and have not proven themselves are
//!   newcomers on probation. They hold at most [`INBOUND_NEWCOMER_SHARE_PERCENT`] of the
//!   slots; the rest stays for peers we chose to dial (providers from the DHT or the user)
//!   and for proven peers.
//! - When a newcomer finds no free slot, it may take the slot of the newcomer that has been
//!   on probation longest, once that one had [`PROBATION`] to deliver (peers we unchoke
//!   last, since we are serving them). An inbound newcomer only displaces another inbound
//!   one. Otherwise it is refused with `Close`.
//! - A peer that leaves our requests unanswered (no block, no `Reject`) for
//!   [`Config::request_timeout`] is a staller: evicted with
//!   [`Offence::Stalled`], its requests go elsewhere. Honest peers answer every request:
//!   blocks already on the way, or `Reject`.
//!
//! An evicted peer is told so with `Close`, so it drops the connection too instead of
//! waiting on it.

use std::time::Duration;

use peerlab_overlay::{Offence, PeerId};

use super::transfer::Transfer;
use super::{Config, SwarmCx, send};
use crate::storage::ChunkStore;
use crate::wire::Body;

/// Share of [`Config::max_peers`] that inbound newcomers may hold: half. A flood of
/// handshakes can take these and no more; the other half stays for peers we dialled and
/// proven peers. In a simulated flash crowd whose peers are each told about 20
/// others, a peer receives about 20 handshakes (rarely over 30), so honest swarms stay
/// clear of it.
pub(crate) const INBOUND_NEWCOMER_SHARE_PERCENT: usize = 50;

/// How long a newcomer keeps its slot before a newer one may take it: time for its
/// bitfield, a choke round (10 s) and a first block over a slow link. A flood can then
/// cycle through the newcomers' slots at most once per this period, and never touches a
/// proven peer.
pub(crate) const PROBATION: Duration = Duration::from_secs(30);

/// Handshakes a connected peer may repeat before further ones are an
/// [`Offence::Excess`] and ignored. Each is answered with our bitfield (up to ~3.8 KiB for
/// the largest file, for a frame of ~40 bytes); an honest peer repeats one at most once
/// or twice, when both sides opened the transfer at the same time.
pub(crate) const MAX_REOPENS: u32 = 4;

/// Most inbound newcomers a transfer holds.
fn inbound_newcomer_limit(config: &Config) -> usize {
    config.max_peers * INBOUND_NEWCOMER_SHARE_PERCENT / 100
}

impl<S: ChunkStore> Transfer<S> {
    /// Whether a new connection (`inbound` if the peer opened it) fits without evicting
    /// anyone.
    pub(crate) fn slot_free(&self, inbound: bool) -> bool {
        let Some(a) = &self.active else { return false };
        if a.peers.len() >= self.config.max_peers {
            return false;
        }
        if !self.config.defenses || !inbound {
            return true;
        }
        let newcomers = a.peers.values().filter(|p| p.inbound && !p.proven).count();
        newcomers < inbound_newcomer_limit(&self.config)
    }

    /// Frees a slot for a newcomer (`inbound` if it opened the transfer with us) by evicting
    /// the newcomer on probation longest, past [`PROBATION`]; false if there is none.
    pub(crate) fn make_room(&mut self, cx: &mut SwarmCx<'_>, inbound: bool) -> bool {
        if !self.config.defenses {
            return false;
        }
        let Some(a) = &self.active else { return false };
        let now = cx.now();
        let victim = a
            .peers
            .iter()
            .filter(|(_, p)| !p.proven && (p.inbound || !inbound))
            .filter(|(_, p)| now.saturating_since(p.connected_at) >= PROBATION)
            .min_by_key(|(id, p)| (!p.am_choking, p.connected_at, **id))
            .map(|(id, _)| *id);
        match victim {
            Some(v) => {
                self.evict(cx, v, None);
                true
            }
            None => false,
        }
    }

    /// Drops `peer` from the transfer (reporting `offence`, if any) and tells it with
    /// `Close`; its requests are requestable again.
    pub(crate) fn evict(&mut self, cx: &mut SwarmCx<'_>, peer: PeerId, offence: Option<Offence>) {
        let Some(a) = &mut self.active else { return };
        if !a.peers.contains_key(&peer) {
            return;
        }
        if let Some(o) = offence {
            cx.penalize(peer, o);
        }
        send(cx, peer, self.cid, Body::Close);
        a.disconnect(peer);
        self.stats.evicted += 1;
    }

    /// Evicts every peer that has left our requests unanswered for
    /// [`Config::request_timeout`] ([`Offence::Stalled`]) and re-issues their requests.
    pub(crate) fn evict_stallers(&mut self, cx: &mut SwarmCx<'_>) {
        let Some(a) = &self.active else { return };
        let now = cx.now();
        let timeout = self.config.request_timeout;
        let stallers: Vec<PeerId> = a
            .peers
            .iter()
            .filter(|(_, p)| {
                !p.outstanding.is_empty() && now.saturating_since(p.awaiting_since) >= timeout
            })
            .map(|(id, _)| *id)
            .collect();
        if stallers.is_empty() {
            return;
        }
        for s in stallers {
            self.evict(cx, s, Some(Offence::Stalled));
        }
        let config = &*self.config;
        if let Some(a) = &mut self.active {
            a.reconsider_interest(config, cx, None);
            a.fill_all(config, cx);
        }
    }
}
