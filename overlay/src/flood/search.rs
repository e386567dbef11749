//! Searches this node originates: a flood, an expanding ring (TTL doubled until enough
//! hits) or k random walkers, each ended by its deadline or by enough responders.

use super::*;

#[derive(Debug, Clone)]
pub(super) struct Search {
    pub(super) terms: Vec<String>,
    pub(super) strategy: Strategy,
    pub(super) max_ttl: u8,
    pub(super) want: u32,
    pub(super) ring: u8,
    pub(super) ring_ttl: u8,
    pub(super) guids: Vec<Guid>,
    pub(super) responders: BTreeSet<PeerId>,
    pub(super) first_hit_hops: Option<u16>,
}

impl Flood {
    pub(super) fn start_search(
        &mut self,
        cx: &mut Cx<'_, Self>,
        req: u64,
        terms: &str,
        strategy: Strategy,
        ttl: Option<u8>,
        want_hits: u32,
    ) -> Result<(), Error> {
        let mut words: Vec<String> = Vec::new();
        for w in keywords(terms) {
            if w.len() > MAX_TERM_LEN {
                return Err(Error::TermTooLong(w.len()));
            }
            if !words.contains(&w) {
                words.push(w);
            }
        }
        if words.is_empty() {
            return Err(Error::NoTerms);
        }
        if words.len() > MAX_TERMS {
            return Err(Error::TooManyTerms(words.len()));
        }
        let ttl = ttl.unwrap_or(DEFAULT_TTL);
        if ttl == 0 || ttl > MAX_TTL {
            return Err(Error::BadTtl(ttl));
        }
        if let Strategy::RandomWalk { walkers, steps } = strategy {
            if walkers == 0 || walkers > MAX_WALKERS {
                return Err(Error::BadWalkers(walkers));
            }
            if steps == 0 || steps > self.config.max_walk_steps {
                return Err(Error::BadWalkSteps {
                    got: steps,
                    max: self.config.max_walk_steps,
                });
            }
        }
        if self.searches.contains_key(&req) {
            return Err(Error::DuplicateRequest(req));
        }
        if self.searches.len() >= self.config.max_searches {
            return Err(Error::TooManySearches(self.config.max_searches));
        }
        let first_ttl = match strategy {
            Strategy::ExpandingRing => 1,
            _ => ttl,
        };
        self.searches.insert(
            req,
            Search {
                terms: words,
                strategy,
                max_ttl: ttl,
                want: want_hits.max(1),
                ring: 0,
                ring_ttl: first_ttl,
                guids: Vec::new(),
                responders: BTreeSet::new(),
                first_hit_hops: None,
            },
        );
        match strategy {
            Strategy::RandomWalk { walkers, steps } => self.launch_walkers(cx, req, walkers, steps),
            _ => self.launch_ring(cx, req),
        }
        Ok(())
    }

    /// Sends the current ring (or the single flood) of a search with a fresh GUID.
    pub(super) fn launch_ring(&mut self, cx: &mut Cx<'_, Self>, req: u64) {
        let guid = Guid::random(cx.rng());
        let Some(search) = self.searches.get_mut(&req) else {
            return;
        };
        search.guids.push(guid);
        let (ttl, ring, terms) = (search.ring_ttl, search.ring, search.terms.clone());
        self.by_guid.insert(guid, req);
        self.seen.insert(cx.now(), (Family::Query, guid), None);
        let to: Vec<PeerId> = self.neighbours.peers().collect();
        for p in to {
            cx.send(
                p,
                Message::Query {
                    guid,
                    ttl,
                    hops: 0,
                    terms: terms.clone(),
                },
            );
        }
        cx.set_timer(
            self.config.hop_wait * 2 * u32::from(ttl),
            Timer::Deadline { req, ring },
        );
    }

    pub(super) fn launch_walkers(
        &mut self,
        cx: &mut Cx<'_, Self>,
        req: u64,
        walkers: u16,
        steps: u16,
    ) {
        let guid = Guid::random(cx.rng());
        let Some(search) = self.searches.get_mut(&req) else {
            return;
        };
        search.guids.push(guid);
        let terms = search.terms.clone();
        self.by_guid.insert(guid, req);
        self.seen.insert(cx.now(), (Family::Walk, guid), None);
        let mut to: Vec<PeerId> = self.neighbours.peers().collect();
        cx.rng().shuffle(&mut to);
        if !to.is_empty() {
            for w in 0..walkers {
                cx.send(
                    to[usize::from(w) % to.len()],
                    Message::Walk {
                        guid,
                        walker: w,
                        steps_left: steps,
                        hops: 0,
                        origin: self.id,
                        terms: terms.clone(),
                    },
                );
            }
        }
        cx.set_timer(
            self.config.hop_wait * 2 * u32::from(steps),
            Timer::Deadline { req, ring: 0 },
        );
    }

    pub(super) fn on_deadline(&mut self, cx: &mut Cx<'_, Self>, req: u64, ring: u8) {
        let Some(search) = self.searches.get_mut(&req) else {
            return;
        };
        if search.ring != ring {
            return;
        }
        let grow = search.strategy == Strategy::ExpandingRing
            && (search.responders.len() as u32) < search.want
            && search.ring_ttl < search.max_ttl;
        if grow {
            search.ring += 1;
            search.ring_ttl = search.ring_ttl.saturating_mul(2).min(search.max_ttl);
            self.launch_ring(cx, req);
        } else {
            self.finish(cx, req);
        }
    }

    pub(super) fn finish(&mut self, cx: &mut Cx<'_, Self>, req: u64) {
        let Some(search) = self.searches.remove(&req) else {
            return;
        };
        for g in &search.guids {
            self.by_guid.remove(g);
        }
        cx.emit(Event::SearchDone {
            req,
            hits: search.responders.len() as u32,
            first_hit_hops: search.first_hit_hops,
            rings: search.ring + 1,
        });
    }
}
