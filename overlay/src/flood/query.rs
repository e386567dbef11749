//! Flooded queries: TTL and hop accounting, duplicate suppression by (type, GUID), answers
//! from the local index, and QueryHits that travel back only along their query's path.

use super::*;

impl Flood {
    /// Clamps a TTL from the network; `None` if it is 0 (never forwarded, so never valid).
    pub(super) fn accept_ttl(&mut self, ttl: u8) -> Option<u8> {
        if ttl == 0 {
            self.counters.ttl_zero += 1;
            return None;
        }
        if ttl > MAX_TTL {
            self.counters.ttl_clamped += 1;
            return Some(MAX_TTL);
        }
        Some(ttl)
    }

    pub(super) fn terms_ok(&mut self, terms: &[String]) -> bool {
        let ok = !terms.is_empty()
            && terms.len() <= MAX_TERMS
            && terms
                .iter()
                .all(|t| !t.is_empty() && t.len() <= MAX_TERM_LEN);
        if !ok {
            self.counters.malformed += 1;
        }
        ok
    }

    pub(super) fn names_ok(&mut self, names: &[String]) -> bool {
        let ok = !names.is_empty()
            && names.len() <= MAX_HIT_NAMES
            && names.iter().all(|n| n.len() <= MAX_NAME_LEN);
        if !ok {
            self.counters.malformed += 1;
        }
        ok
    }

    /// TTL for an answer that must travel `hops` hops back: a little slack, clamped.
    /// A flooded Ping or Query from `from`: its TTL is accepted (clamped; 0 refused) and its
    /// (type, GUID) remembered with the neighbour it came from, the reverse path of its
    /// answers. Returns the TTL to forward it with (one less), or `None` for a TTL of 0 or a
    /// duplicate (counted).
    pub(super) fn first_sight(
        &mut self,
        now: Instant,
        family: Family,
        guid: Guid,
        from: PeerId,
        ttl: u8,
    ) -> Option<u8> {
        let ttl = self.accept_ttl(ttl)?;
        if !self.seen.insert(now, (family, guid), Some(from)) {
            match family {
                Family::Ping => self.counters.duplicate_pings += 1,
                Family::Query => self.counters.duplicate_queries += 1,
                Family::Walk => {}
            }
            return None;
        }
        Some(ttl - 1)
    }

    pub(super) fn answer_ttl(hops: u8) -> u8 {
        hops.saturating_add(2).min(MAX_TTL)
    }

    /// Where an answer to (family, guid) goes: `Ok(None)` = here, `Ok(Some(p))` = forward to p.
    pub(super) fn reverse_path(
        &mut self,
        now: Instant,
        family: Family,
        guid: Guid,
    ) -> Option<Option<PeerId>> {
        let route = self.seen.get(now, &(family, guid)).copied();
        match route {
            None => {
                self.counters.unroutable += 1;
                None
            }
            Some(Some(p)) if !self.neighbours.contains(&p) => {
                self.counters.unroutable += 1;
                None
            }
            Some(r) => Some(r),
        }
    }

    pub(super) fn on_query(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        guid: Guid,
        ttl: u8,
        hops: u8,
        terms: Vec<String>,
    ) {
        self.counters.queries_received += 1;
        if !self.terms_ok(&terms) {
            return;
        }
        let Some(ttl) = self.first_sight(cx.now(), Family::Query, guid, from, ttl) else {
            return;
        };
        let hops = hops.saturating_add(1);
        let names = self.index.search(&terms, self.config.max_hit_names);
        if !names.is_empty() {
            self.counters.queries_answered += 1;
            cx.send(
                from,
                Message::QueryHit {
                    guid,
                    ttl: Self::answer_ttl(hops),
                    hops: 0,
                    responder: self.id,
                    names,
                },
            );
        }
        if ttl > 0 {
            let mut forwarded = 0;
            for p in self.neighbours.peers().filter(|p| *p != from) {
                let terms = terms.clone();
                cx.send(
                    p,
                    Message::Query {
                        guid,
                        ttl,
                        hops,
                        terms,
                    },
                );
                forwarded += 1;
            }
            self.counters.queries_forwarded += forwarded;
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_query_hit(
        &mut self,
        cx: &mut Cx<'_, Self>,
        guid: Guid,
        ttl: u8,
        hops: u8,
        responder: PeerId,
        names: Vec<String>,
    ) {
        if !self.names_ok(&names) {
            return;
        }
        let Some(ttl) = self.accept_ttl(ttl) else {
            return;
        };
        match self.reverse_path(cx.now(), Family::Query, guid) {
            None => {}
            Some(None) => {
                let hops = u16::from(hops) + 1;
                self.deliver_hit(cx, guid, responder, names, hops);
            }
            Some(Some(prev)) => {
                let (ttl, hops) = (ttl - 1, hops.saturating_add(1));
                if ttl == 0 {
                    self.counters.ttl_expired += 1;
                    return;
                }
                self.counters.hits_routed += 1;
                cx.send(
                    prev,
                    Message::QueryHit {
                        guid,
                        ttl,
                        hops,
                        responder,
                        names,
                    },
                );
            }
        }
    }

    pub(super) fn deliver_hit(
        &mut self,
        cx: &mut Cx<'_, Self>,
        guid: Guid,
        responder: PeerId,
        names: Vec<String>,
        hops: u16,
    ) {
        let Some(&req) = self.by_guid.get(&guid) else {
            self.counters.late_hits += 1;
            return;
        };
        let Some(search) = self.searches.get_mut(&req) else {
            self.counters.late_hits += 1;
            return;
        };
        if search.responders.len() >= MAX_RESPONDERS || !search.responders.insert(responder) {
            return;
        }
        search.first_hit_hops = Some(search.first_hit_hops.map_or(hops, |h| h.min(hops)));
        let satisfied = search.responders.len() as u32 >= search.want;
        let walk = matches!(search.strategy, Strategy::RandomWalk { .. });
        cx.emit(Event::SearchHit {
            req,
            responder,
            names,
            hops,
        });
        if walk && satisfied {
            self.finish(cx, req);
        }
    }
}
