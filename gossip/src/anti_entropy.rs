//! Anti-entropy: Scuttlebutt reconciliation (van Renesse, Dumitriu, Gough, Renesse,
//! "Efficient Reconciliation and Flow Control for Anti-Entropy Protocols", LADIS 2008).
//!
//! Every [`Config::anti_entropy_period`](crate::Config) a node opens an exchange with one
//! partner by sending its *digest*: per origin, the watermark — the highest version it
//! holds completely ([`Message::Syn`]). Only what differs travels back:
//!
//! - **pull**: the partner answers with the deltas the initiator lacks;
//! - **push**: the partner answers with the rows where it is behind, and the initiator
//!   sends those deltas ([`Message::SynAck`], then [`Message::Delta`]);
//! - **push-pull**: both in the same exchange — `log3 N + O(ln ln N)` rounds to reach
//!   everyone (Karp, Schindelhauer, Shenker, Vöcking, FOCS 2000), against Pittel's
//!   `log2 N + ln N` for push and `log2 N + O(ln ln N)` for pull.
//!
//! A delta row for a partner at watermark `p` carries the origin's entries with versions
//! in `(p, to]` in ascending order, so cutting it at the byte budget keeps a prefix: a newer
//! version is never sent while an older one is left out, and the partner's watermark moves
//! to exactly what it received (§3 of the paper). A digest that does not fit the budget is
//! sent as a random subset of its rows, marked incomplete.

use std::collections::BTreeMap;

use peerlab_overlay::{Cx, Offence, PeerId, Rng};
use serde_bytes::ByteBuf;

use crate::Gossip;
use crate::config::{Activation, Exchange, MAX_VERSION};
use crate::data::Pending;
use crate::message::{Digest, Entry, FRAME_SLACK, MAX_ITEMS, Message, OriginDelta, item_len};
use crate::store::{Rejection, Store};

impl Gossip {
    /// Opens an exchange with one partner (called by the round).
    pub(crate) fn start_exchange(&mut self, cx: &mut Cx<'_, Self>) {
        let Some(partner) = self.partner_peers(cx, 1).first().copied() else {
            return;
        };
        let budget = self.config.max_message_bytes;
        let digest = self.store.digest(budget, cx.rng());
        cx.send(
            partner,
            Message::Syn {
                exchange: self.config.exchange,
                digest,
            },
        );
    }

    /// The opening: answer with the deltas the initiator lacks (pull) and the rows where
    /// this node is behind (push).
    pub(crate) fn on_syn(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        exchange: Exchange,
        mut digest: Digest,
    ) {
        if !self.check_digest(&mut digest) {
            return;
        }
        let budget = self.config.max_message_bytes;
        let request = match exchange {
            Exchange::Pull => Vec::new(),
            Exchange::Push | Exchange::PushPull => {
                let mut r = self.store.behind(&digest);
                let fit = budget / 2 / item_len(&(self.me, MAX_VERSION)).max(1);
                r.truncate(fit);
                r
            }
        };
        let deltas = match exchange {
            Exchange::Push => Vec::new(),
            Exchange::Pull | Exchange::PushPull => {
                let room = budget.saturating_sub(item_len(&request));
                self.store.deltas_for(&digest, room, cx.rng())
            }
        };
        if !deltas.is_empty() || !request.is_empty() {
            cx.send(from, Message::SynAck { deltas, request });
        }
    }

    /// The answer: apply its deltas, then send what the partner asked for.
    pub(crate) fn on_syn_ack(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        deltas: Vec<OriginDelta>,
        request: Vec<(PeerId, u64)>,
    ) {
        self.receive_deltas(cx, deltas);
        if request.is_empty() || self.config.exchange == Exchange::Pull {
            return;
        }
        let mut d = Digest {
            complete: false,
            versions: request,
        };
        if !self.check_digest(&mut d) {
            return;
        }
        let deltas = self
            .store
            .deltas_from(d.versions, self.config.max_message_bytes, cx.rng());
        if !deltas.is_empty() {
            cx.send(from, Message::Delta { deltas });
        }
    }

    /// Validates received delta rows and applies them (now or at the cycle's end).
    pub(crate) fn receive_deltas(&mut self, cx: &mut Cx<'_, Self>, deltas: Vec<OriginDelta>) {
        if deltas.len() > MAX_ITEMS {
            self.rejected.oversized_messages += 1;
            self.offend(Offence::Malformed);
            return;
        }
        for d in deltas {
            if !self.is_member(&d.origin) {
                self.refuse(Rejection::UnknownOrigin);
                continue;
            }
            if let Err(r) = self.store.check_delta(&self.me, &d, &self.config) {
                self.refuse(r);
                continue;
            }
            match self.config.activation {
                Activation::Immediate => self.apply_delta(cx, d),
                Activation::CycleEnd => self.push_pending(Pending::Delta(d)),
            }
        }
    }

    /// Applies one validated delta row, then moves the watermark over its range.
    pub(crate) fn apply_delta(&mut self, cx: &mut Cx<'_, Self>, d: OriginDelta) {
        for (key, version, value) in d.entries {
            let e = Entry {
                origin: d.origin,
                key,
                version,
                value,
            };
            if let Err(r) = self.store.check_entry(&self.me, &e, &self.config) {
                // One bad row entry spoils the row's completeness claim: apply nothing more.
                self.refuse(r);
                return;
            }
            self.activate_entry(
                cx,
                e.origin,
                &e.key,
                e.version,
                e.value.map(ByteBuf::into_vec),
            );
        }
        self.store.cover(&d.origin, d.from, d.to);
    }

    /// Bounds a received digest and drops its absurd rows; `false` refuses it whole.
    fn check_digest(&mut self, d: &mut Digest) -> bool {
        if d.versions.len() > self.config.max_origins.min(MAX_ITEMS) {
            self.rejected.oversized_messages += 1;
            self.offend(Offence::Malformed);
            return false;
        }
        let before = d.versions.len();
        d.versions.retain(|(_, v)| *v <= MAX_VERSION);
        if d.versions.len() < before {
            self.rejected.absurd_version += (before - d.versions.len()) as u64;
            self.offend(Offence::Malformed);
        }
        true
    }
}

/// Digests and deltas of the store.
impl Store {
    /// This node's digest within `budget` bytes; a random subset if all rows do not fit.
    pub(crate) fn digest(&self, budget: usize, rng: &mut Rng) -> Digest {
        let rows: Vec<(PeerId, u64)> = self
            .origins
            .iter()
            .filter(|(_, o)| o.watermark > 0)
            .map(|(p, o)| (*p, o.watermark))
            .collect();
        let row_len = rows.first().map_or(0, item_len);
        // Rows differ in length only by the version's varint (at most 8 bytes more).
        let per_row = row_len + 8;
        let fit = budget.saturating_sub(FRAME_SLACK) / per_row.max(1);
        if rows.len() <= fit {
            return Digest {
                complete: true,
                versions: rows,
            };
        }
        let mut versions: Vec<_> = rng
            .sample_indices(rows.len(), fit)
            .into_iter()
            .map(|i| rows[i])
            .collect();
        versions.sort();
        Digest {
            complete: false,
            versions,
        }
    }

    /// Deltas bringing a partner with digest `theirs` up to this node's watermarks, within
    /// `budget` bytes. Origins are visited in random order; within an origin the entries
    /// go in ascending version order and are cut as a prefix.
    pub(crate) fn deltas_for(
        &self,
        theirs: &Digest,
        budget: usize,
        rng: &mut Rng,
    ) -> Vec<OriginDelta> {
        let claimed: BTreeMap<PeerId, u64> = theirs.versions.iter().copied().collect();
        let mut behind: Vec<(PeerId, u64)> = Vec::new();
        for (origin, o) in &self.origins {
            let theirs = match claimed.get(origin) {
                Some(v) => *v,
                None if theirs.complete => 0,
                None => continue,
            };
            if o.watermark > theirs {
                behind.push((*origin, theirs));
            }
        }
        self.deltas_from(behind, budget, rng)
    }

    /// Deltas for explicit `(origin, partner's version)` requests.
    pub(crate) fn deltas_from(
        &self,
        mut wanted: Vec<(PeerId, u64)>,
        budget: usize,
        rng: &mut Rng,
    ) -> Vec<OriginDelta> {
        rng.shuffle(&mut wanted);
        let mut room = budget.saturating_sub(FRAME_SLACK);
        let mut out = Vec::new();
        for (origin, from) in wanted {
            let Some(o) = self.origins.get(&origin) else {
                continue;
            };
            if o.watermark <= from {
                continue;
            }
            let mut row = OriginDelta {
                origin,
                from,
                to: o.watermark,
                entries: Vec::new(),
            };
            let header = item_len(&row);
            if header > room {
                break;
            }
            let mut used = header;
            let mut cut = false;
            for (v, key) in o.by_version.range(from + 1..=o.watermark) {
                let e = &o.entries[key];
                let item = (key.clone(), *v, e.value.clone().map(ByteBuf::from));
                let len = item_len(&item);
                if used + len > room {
                    cut = true;
                    break;
                }
                used += len;
                row.entries.push(item);
            }
            if cut {
                // Cover only what was sent: the prefix up to the last included version.
                match row.entries.last() {
                    Some((_, v, _)) => row.to = *v,
                    None => break,
                }
            }
            room -= used;
            out.push(row);
            if cut {
                break;
            }
        }
        out
    }

    /// The rows of this node's digest for the origins where `theirs` is ahead of it.
    pub(crate) fn behind(&self, theirs: &Digest) -> Vec<(PeerId, u64)> {
        theirs
            .versions
            .iter()
            .filter(|(p, v)| *v > self.watermark(p))
            .map(|(p, _)| (*p, self.watermark(p)))
            .collect()
    }
}
