//! Keeping the overlay: neighbours admitted and lost, the degree refilled from the host
//! cache, and Gnutella's Ping/Pong host discovery routed back along the reverse path.

use super::*;

impl Flood {
    /// Accepts an overlay message from `from`: refreshes a neighbour, adopts an unknown peer
    /// if there is room, or refuses it with Bye.
    pub(super) fn admit(&mut self, cx: &mut Cx<'_, Self>, from: PeerId) -> bool {
        if self.neighbours.heard(&from, cx.now()) {
            return true;
        }
        if !self.left && from != self.id && self.neighbours.insert(from, cx.now(), true) {
            self.counters.neighbours_added += 1;
            return true;
        }
        self.counters.refused_peers += 1;
        cx.send(from, Message::Bye);
        false
    }

    pub(super) fn lose(&mut self, cx: &mut Cx<'_, Self>, peer: &PeerId) {
        if self.neighbours.remove(peer) {
            self.counters.neighbours_lost += 1;
            self.refill(cx);
        }
    }

    /// Tops the neighbour set up to `min_degree`: connect to cached hosts, else ping for more.
    pub(super) fn refill(&mut self, cx: &mut Cx<'_, Self>) {
        if self.left {
            return;
        }
        while self.neighbours.len() < self.config.min_degree {
            let Some(host) = self.neighbours.take_host() else {
                break;
            };
            if host == self.id || !self.neighbours.insert(host, cx.now(), false) {
                continue;
            }
            self.counters.neighbours_added += 1;
            // The hello is a TTL-1 Ping: its Pong confirms the connection.
            self.ping(cx, &[host], 1);
        }
        if self.neighbours.len() < self.config.min_degree && !self.neighbours.is_empty() {
            let due = self
                .last_discovery
                .is_none_or(|t| cx.now().saturating_since(t) >= self.config.discovery_interval);
            if due {
                self.last_discovery = Some(cx.now());
                let all: Vec<PeerId> = self.neighbours.peers().collect();
                self.ping(cx, &all, self.config.discovery_ttl);
            }
        }
    }

    /// Sends one new Ping (one GUID) to `to`.
    pub(super) fn ping(&mut self, cx: &mut Cx<'_, Self>, to: &[PeerId], ttl: u8) {
        if to.is_empty() {
            return;
        }
        let guid = Guid::random(cx.rng());
        self.seen.insert(cx.now(), (Family::Ping, guid), None);
        for &p in to {
            cx.send(p, Message::Ping { guid, ttl, hops: 0 });
        }
    }

    pub(super) fn on_tick(&mut self, cx: &mut Cx<'_, Self>) {
        let now = cx.now();
        let gone = self.neighbours.expire(
            now,
            self.config.neighbour_timeout,
            self.config.connect_timeout,
        );
        self.counters.neighbours_lost += gone.len() as u64;
        let quiet = self.neighbours.quiet(now, self.config.keepalive_interval);
        if !quiet.is_empty() {
            self.ping(cx, &quiet, 1);
        }
        let timeout = self.config.park_timeout;
        let before = self.parked.len();
        self.parked
            .retain(|_, p| now.saturating_since(p.since) < timeout);
        self.counters.walkers_dropped += (before - self.parked.len()) as u64;
        self.seen.purge(now);
        self.refill(cx);
        cx.set_timer(self.config.keepalive_interval, Timer::Tick);
    }

    pub(super) fn on_ping(
        &mut self,
        cx: &mut Cx<'_, Self>,
        from: PeerId,
        guid: Guid,
        ttl: u8,
        hops: u8,
    ) {
        let Some(ttl) = self.first_sight(cx.now(), Family::Ping, guid, from, ttl) else {
            return;
        };
        let hops = hops.saturating_add(1);
        cx.send(
            from,
            Message::Pong {
                guid,
                ttl: Self::answer_ttl(hops),
                hops: 0,
                peer: self.id,
                shared: self.index.len() as u32,
            },
        );
        if ttl > 0 {
            for p in self.neighbours.peers().filter(|p| *p != from) {
                cx.send(p, Message::Ping { guid, ttl, hops });
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_pong(
        &mut self,
        cx: &mut Cx<'_, Self>,
        guid: Guid,
        ttl: u8,
        hops: u8,
        peer: PeerId,
        shared: u32,
    ) {
        let Some(ttl) = self.accept_ttl(ttl) else {
            return;
        };
        match self.reverse_path(cx.now(), Family::Ping, guid) {
            None => {}
            Some(None) if peer != self.id && !self.neighbours.contains(&peer) => {
                self.neighbours.add_host(peer);
                self.refill(cx);
            }
            Some(None) => {}
            Some(Some(prev)) => {
                let (ttl, hops) = (ttl - 1, hops.saturating_add(1));
                if ttl == 0 {
                    self.counters.ttl_expired += 1;
                    return;
                }
                cx.send(
                    prev,
                    Message::Pong {
                        guid,
                        ttl,
                        hops,
                        peer,
                        shared,
                    },
                );
            }
        }
    }
}
