//! Partner selection: whom a node pushes rumors to and reconciles with.
//!
//! The papers pick partners uniformly from all members (Demers et al., PODC 1987; Karp et
//! al., FOCS 2000), and so does this core unless [`Config::partner_view`](crate::Config)
//! sets a partial view. A node that gossips with uniform partners ends up connected to
//! every other member, a full mesh of transport connections; a partial view of `k` members
//! bounds that to about `2k` per node while a rumor still spreads over a random graph of
//! out-degree `k` (the role HyParView's active view plays; Leitão et al., DSN 2007).
//!
//! The view must stay a *uniform* sample of the group however the group grew, or the first
//! members a node heard of would become everyone's partners. Members are offered to it as
//! they come up, by reservoir sampling (Vitter's algorithm R: the `n`-th member offered
//! replaces a random slot with probability `k/n`), and partners that go down are replaced
//! by random members that are up.
//!
//! Probes, indirect probes and the member sync do not use the view: they pick from all
//! members ([`Gossip::random_peers`]).

use peerlab_overlay::{Cx, PeerId};

use crate::Gossip;
use crate::members::View;

/// The partial view and its reservoir count.
#[derive(Debug, Default)]
pub(crate) struct Partners {
    /// At most `config.partner_view` members.
    view: Vec<PeerId>,
    /// Members offered to the view so far (the reservoir's count).
    seen: u64,
}

impl Partners {
    pub(crate) fn peers(&self) -> &[PeerId] {
        &self.view
    }
}

impl Gossip {
    /// `n` distinct random peers other than this node (and other than `except`), from all
    /// members that are up.
    pub(crate) fn random_peers(
        &mut self,
        cx: &mut Cx<'_, Self>,
        n: usize,
        except: Option<PeerId>,
    ) -> Vec<PeerId> {
        let me = self.me;
        let list: &[PeerId] = match &mut self.view {
            View::Swim(t) => t.up(),
            View::Static(v) => v.peers(),
        };
        if list.is_empty() || n == 0 {
            return Vec::new();
        }
        let extra = 1 + usize::from(except.is_some());
        cx.rng()
            .sample_indices(list.len(), (n + extra).min(list.len()))
            .into_iter()
            .map(|i| list[i])
            .filter(|p| *p != me && Some(*p) != except)
            .take(n)
            .collect()
    }

    /// `n` distinct random gossip partners: from the partial view if one is configured,
    /// otherwise from all members that are up.
    pub(crate) fn partner_peers(&mut self, cx: &mut Cx<'_, Self>, n: usize) -> Vec<PeerId> {
        if self.config.partner_view == 0 {
            return self.random_peers(cx, n, None);
        }
        self.refresh_partners(cx);
        let view = &self.partners.view;
        cx.rng()
            .sample_indices(view.len(), n.min(view.len()))
            .into_iter()
            .map(|i| view[i])
            .collect()
    }

    /// Offers a member that came up to the partial view (reservoir sampling, see the module
    /// docs).
    pub(crate) fn offer_partner(&mut self, cx: &mut Cx<'_, Self>, peer: PeerId) {
        let k = self.config.partner_view;
        if k == 0 || peer == self.me {
            return;
        }
        let p = &mut self.partners;
        p.seen += 1;
        if p.view.contains(&peer) {
            return;
        }
        if p.view.len() < k {
            p.view.push(peer);
        } else if cx.rng().below(p.seen) < k as u64 {
            let slot = cx.rng().index(p.view.len());
            p.view[slot] = peer;
        }
    }

    /// Drops partners that are no longer up and tops the view up to `partner_view` with
    /// random members that are.
    fn refresh_partners(&mut self, cx: &mut Cx<'_, Self>) {
        let k = self.config.partner_view;
        let me = self.me;
        let list: &[PeerId] = match &mut self.view {
            View::Swim(t) => t.up(),
            View::Static(v) => v.peers(),
        };
        let partners = &mut self.partners.view;
        partners.retain(|p| list.binary_search(p).is_ok());
        let others = list.len() - usize::from(list.binary_search(&me).is_ok());
        let want = k.min(others);
        let rng = cx.rng();
        while partners.len() < want {
            // Random probes first; a scan when the view covers nearly everyone.
            let mut found = None;
            for _ in 0..8 {
                let c = list[rng.index(list.len())];
                if c != me && !partners.contains(&c) {
                    found = Some(c);
                    break;
                }
            }
            let found = found.or_else(|| {
                list.iter()
                    .copied()
                    .find(|c| *c != me && !partners.contains(c))
            });
            match found {
                Some(c) => partners.push(c),
                None => break,
            }
        }
    }
}
