//! Random walkers (Lv et al.): one neighbour a step, state kept per walk so a node avoids
//! sending a walk where it already went, and periodic check-backs with the origin, which
//! stops the walk once satisfied.

use super::*;

#[derive(Debug, Clone)]
pub(super) struct Parked {
    pub(super) origin: PeerId,
    pub(super) from: PeerId,
    pub(super) steps_left: u16,
    pub(super) hops: u16,
    pub(super) terms: Vec<String>,
    pub(super) since: Instant,
}

impl Flood {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_walk(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        guid: Guid,
        walker: u16,
        steps_left: u16,
        hops: u16,
        origin: PeerId,
        terms: Vec<String>,
    ) {
        if !self.terms_ok(&terms) {
            return;
        }
        if steps_left == 0 {
            self.counters.ttl_zero += 1;
            return;
        }
        self.counters.walk_steps += 1;
        let steps_left = steps_left.min(self.config.max_walk_steps) - 1;
        let hops = hops.saturating_add(1);
        let route = Some(from);
        if self.seen.insert(cx.now(), (Family::Walk, guid), route) {
            let names = self.index.search(&terms, self.config.max_hit_names);
            if !names.is_empty() {
                self.counters.queries_answered += 1;
                cx.send(origin, Message::WalkHit { guid, hops, names });
            }
        } else {
            self.counters.walk_revisits += 1;
        }
        if steps_left == 0 {
            return;
        }
        let parked = Parked {
            origin,
            from,
            steps_left,
            hops,
            terms,
            since: cx.now(),
        };
        if !hops.is_multiple_of(self.config.walk_check_every) {
            self.step_walker(cx, guid, walker, parked);
        } else if origin == self.id {
            // The walker came home: the origin decides on the spot.
            if self.walk_wanted(&guid) {
                self.step_walker(cx, guid, walker, parked);
            } else {
                self.counters.walkers_dropped += 1;
            }
        } else if self.parked.len() >= self.config.max_parked_walkers {
            self.counters.walkers_dropped += 1;
        } else {
            self.parked.insert((guid, walker), parked);
            cx.send(origin, Message::WalkCheck { guid, walker });
        }
    }

    /// Sends a walker one step on: to a random neighbour other than the one it came from,
    /// preferring neighbours this node has not sent this walk to yet.
    pub(super) fn step_walker(
        &mut self,
        cx: &mut Cx<'_, Self>,
        guid: Guid,
        walker: u16,
        w: Parked,
    ) {
        let mut options: Vec<PeerId> = self.neighbours.peers().filter(|p| *p != w.from).collect();
        if options.is_empty() {
            if self.neighbours.contains(&w.from) {
                options.push(w.from);
            } else {
                self.counters.walkers_dropped += 1;
                return;
            }
        }
        let now = cx.now();
        self.walk_tried.insert(now, guid, Vec::new());
        let next = match self.walk_tried.get_mut(now, &guid) {
            Some(tried) => {
                let fresh: Vec<PeerId> = options
                    .iter()
                    .copied()
                    .filter(|p| !tried.contains(p))
                    .collect();
                let pick = if fresh.is_empty() {
                    tried.clear();
                    options[cx.rng().index(options.len())]
                } else {
                    fresh[cx.rng().index(fresh.len())]
                };
                if tried.len() < self.config.max_degree {
                    tried.push(pick);
                }
                pick
            }
            None => options[cx.rng().index(options.len())],
        };
        cx.send(
            next,
            Message::Walk {
                guid,
                walker,
                steps_left: w.steps_left,
                hops: w.hops,
                origin: w.origin,
                terms: w.terms,
            },
        );
    }

    /// Whether this node runs walk `guid` and still wants more hits.
    pub(super) fn walk_wanted(&self, guid: &Guid) -> bool {
        self.by_guid
            .get(guid)
            .and_then(|r| self.searches.get(r))
            .is_some_and(|s| {
                matches!(s.strategy, Strategy::RandomWalk { .. })
                    && (s.responders.len() as u32) < s.want
            })
    }

    pub(super) fn on_walk_verdict(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        guid: Guid,
        walker: u16,
        go: bool,
    ) {
        let key = (guid, walker);
        match self.parked.get(&key) {
            Some(p) if p.origin == from => {}
            _ => {
                self.counters.walk_unknown += 1;
                return;
            }
        }
        let Some(parked) = self.parked.remove(&key) else {
            return;
        };
        if go {
            self.step_walker(cx, guid, walker, parked);
        } else {
            self.counters.walkers_dropped += 1;
        }
    }
}
