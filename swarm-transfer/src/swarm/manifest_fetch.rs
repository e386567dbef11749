//! Fetching the manifest before a download can start.
//!
//! A fetch knows only a content id. It asks [`Config::manifest_fanout`] candidates at once
//! for the manifest (`ManifestRequest`), preferring candidates not asked before, and asks
//! the next ones when all of them failed to answer within [`Config::manifest_timeout`] or
//! answered with a manifest that does not hash to the content id. The first manifest that
//! verifies wins: the store is opened through the [`StoreFactory`] and the transfer becomes
//! active. Meanwhile, peers asking us for the manifest are queued (at most
//! [`Config::max_manifest_waiters`]) and answered once we have it.
//!
//! [`Config::manifest_fanout`]: crate::Config::manifest_fanout
//! [`Config::manifest_timeout`]: crate::Config::manifest_timeout
//! [`Config::max_manifest_waiters`]: crate::Config::max_manifest_waiters

use std::collections::BTreeSet;

use peerlab_overlay::PeerId;

use super::transfer::Transfer;
use super::{Event, ProtocolError, SwarmCx, Timer, send};
use crate::manifest::Manifest;
use crate::storage::{ChunkStore, StoreFactory};
use crate::wire::Body;

/// The manifest requests of a transfer that has no manifest yet.
#[derive(Debug, Default)]
pub(crate) struct ManifestFetch {
    /// Request rounds so far (a timer names the round it belongs to).
    pub(crate) attempt: u32,
    /// Providers asked in the current round and not yet answered.
    pub(crate) asked: Vec<PeerId>,
    /// Providers asked in any round since everyone was last tried.
    pub(crate) tried: BTreeSet<PeerId>,
    /// Peers that asked us for the manifest while we had none.
    pub(crate) waiters: Vec<PeerId>,
}

impl<S: ChunkStore> Transfer<S> {
    /// Starts a round of manifest requests to candidates not tried yet (all of them again
    /// once everyone was tried).
    pub(crate) fn ask_manifest(&mut self, cx: &mut SwarmCx<'_>) {
        let mf = &mut self.manifest_fetch;
        let untried: Vec<PeerId> = self
            .candidates
            .iter()
            .filter(|p| !mf.tried.contains(p))
            .copied()
            .collect();
        let pool = if untried.is_empty() {
            // Everyone was tried once; start over (they may have the manifest by now).
            mf.tried.clear();
            self.candidates.iter().copied().collect()
        } else {
            untried
        };
        let n = self.config.manifest_fanout.max(1).min(pool.len());
        let picks: Vec<PeerId> = cx
            .rng()
            .sample_indices(pool.len(), n)
            .into_iter()
            .map(|i| pool[i])
            .collect();
        mf.attempt += 1;
        mf.asked = picks.clone();
        for &p in &picks {
            mf.tried.insert(p);
            self.stats.manifest_requests = self.stats.manifest_requests.saturating_add(1);
            send(cx, p, self.cid, Body::ManifestRequest);
        }
        if !picks.is_empty() {
            cx.set_timer(
                self.config.manifest_timeout,
                Timer::ManifestTimeout {
                    cid: self.cid,
                    attempt: mf.attempt,
                },
            );
        }
    }

    /// Round `attempt` timed out: if it is still the current one, the next round starts.
    pub(crate) fn on_manifest_timeout(&mut self, cx: &mut SwarmCx<'_>, attempt: u32) {
        if self.active.is_none() && self.manifest_fetch.attempt == attempt {
            self.manifest_fetch.asked.clear();
            self.ask_manifest(cx);
        }
    }

    /// A peer asks for the manifest: answered now, or once we have it.
    pub(crate) fn on_manifest_request(&mut self, cx: &mut SwarmCx<'_>, from: PeerId) {
        let waiters = &mut self.manifest_fetch.waiters;
        if let Some(a) = &self.active {
            send(cx, from, self.cid, Body::Manifest(a.local.manifest.clone()));
        } else if waiters.len() < self.config.max_manifest_waiters && !waiters.contains(&from) {
            waiters.push(from);
        }
    }

    /// A manifest arrived: if it verifies against the content id, the store is opened and
    /// the transfer becomes active.
    pub(crate) fn on_manifest<F: StoreFactory<Store = S>>(
        &mut self,
        cx: &mut SwarmCx<'_>,
        factory: &mut F,
        from: PeerId,
        m: Manifest,
    ) -> Result<(), ProtocolError> {
        if self.active.is_some() {
            return Ok(()); // A late answer to an earlier attempt.
        }
        if let Err(e) = m.verify(&self.cid) {
            let asked = &mut self.manifest_fetch.asked;
            if asked.contains(&from) {
                asked.retain(|p| *p != from);
                if asked.is_empty() {
                    self.ask_manifest(cx);
                }
            }
            return Err(e.into());
        }
        let store = match factory.open(&m) {
            Ok(s) => s,
            Err(e) => {
                cx.emit(Event::StoreFailed {
                    cid: self.cid,
                    error: e.to_string(),
                });
                return Ok(());
            }
        };
        cx.emit(Event::ManifestVerified {
            cid: self.cid,
            from,
            size: m.size(),
            chunks: m.chunk_count(),
        });
        self.candidates.insert(from);
        let complete = store.held().is_complete();
        self.activate(cx, m, store, false);
        if complete {
            self.finish(cx);
        }
        Ok(())
    }

    /// A provider we asked went away: when nobody of the round is left, the next round
    /// starts at once.
    pub(crate) fn manifest_peer_down(&mut self, cx: &mut SwarmCx<'_>, peer: PeerId) {
        let asked = &mut self.manifest_fetch.asked;
        if self.active.is_none() && asked.contains(&peer) {
            asked.retain(|p| *p != peer);
            if asked.is_empty() {
                self.ask_manifest(cx);
            }
        }
    }
}
