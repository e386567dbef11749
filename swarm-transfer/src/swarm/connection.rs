//! One peer connection of a transfer: BEP 3's four flags, the peer's bitfield, our block
//! requests to it and its requests waiting for our uplink.

use std::borrow::Cow;
use std::collections::VecDeque;

use peerlab_overlay::{Instant, PeerId};

use super::estimate::LinkEstimate;
use super::{SwarmCx, send};
use crate::bitfield::Bitfield;
use crate::manifest::ContentId;
use crate::picker::BlockRef;
use crate::wire::Body;

/// The state of one connected peer within one transfer.
#[derive(Debug)]
pub(crate) struct Connection {
    /// The chunks it announced.
    pub(crate) has: Bitfield,
    /// We choke it (it may not download from us).
    pub(crate) am_choking: bool,
    /// We want something it has.
    pub(crate) am_interested: bool,
    /// It chokes us.
    pub(crate) peer_choking: bool,
    /// It wants something we have.
    pub(crate) peer_interested: bool,
    /// Our block requests to it, with when each was sent.
    pub(crate) outstanding: Vec<(BlockRef, Instant)>,
    /// Whether the peer's bitfield arrived (a connection without one is half-open).
    pub(crate) got_bitfield: bool,
    /// Chunks revealed to this peer while super-seeding and not yet announced by it.
    pub(crate) revealed: Vec<u32>,
    /// Chunks this peer refused (`Reject` while it unchoked us: a super-seeder keeping a
    /// chunk it already sent elsewhere for later). Not asked from it again until it
    /// unchokes us anew; one bit per chunk, so bounded by the file.
    pub(crate) refused: Bitfield,
    /// With [`Config::upload_rate`](crate::Config::upload_rate): its block requests not
    /// yet handed to the driver, as (chunk, block, arrival sequence number), oldest first;
    /// at most [`MAX_QUEUED_REQUESTS`](crate::MAX_QUEUED_REQUESTS).
    pub(crate) queued: VecDeque<(u32, u32, u64)>,
    /// Payload bytes received from it in the current choke round.
    pub(crate) down_round: u64,
    /// Payload bytes sent to it in the current choke round.
    pub(crate) up_round: u64,
    /// When the connection was made.
    pub(crate) connected_at: Instant,
    /// The peer opened the transfer with us (we did not dial it).
    pub(crate) inbound: bool,
    /// It delivered a block we had asked it for, or our choker chose to serve it a whole
    /// chunk's worth of blocks: no longer on probation (see `slots`).
    pub(crate) proven: bool,
    /// Payload bytes we served it since it connected.
    pub(crate) served: u64,
    /// Since when we wait for it to answer any of our outstanding requests (a block or a
    /// `Reject`): set when a request goes out while none was outstanding, and on every
    /// answer. A peer that leaves requests unanswered for
    /// [`Config::request_timeout`](crate::Config::request_timeout) is a staller.
    pub(crate) awaiting_since: Instant,
    /// Requests we withdrew (cancelled, timed out, forgotten at completion), newest last, at
    /// most twice [`Config::pipeline_depth`](crate::Config::pipeline_depth): a block
    /// answering one of them is late, not unsolicited.
    pub(crate) withdrawn: VecDeque<BlockRef>,
    /// Handshakes received on this connection after the one that opened it.
    pub(crate) reopens: u32,
    /// Its round trip and delivery rate as a source of blocks, which size our request
    /// queue to it (see the `estimate` module).
    pub(crate) estimate: LinkEstimate,
    /// While super-seeding: the chunks revealed to it that it has asked us for (a subset
    /// of `revealed`, pruned to it when read).
    pub(crate) revealed_asked: Vec<u32>,
    /// While super-seeding: chunks revealed to it beyond
    /// [`Config::super_seed_reveals`](crate::Config::super_seed_reveals), one more each
    /// time it had asked for every chunk revealed to it (see the `super_seed` module).
    pub(crate) reveal_extra: usize,
}

impl Connection {
    /// A new connection to a peer of a file of `chunks` chunks (`inbound` if the peer
    /// opened it): both sides choking and not interested, nothing known about its chunks.
    pub(crate) fn new(chunks: u32, now: Instant, inbound: bool) -> Connection {
        Connection {
            has: Bitfield::new(chunks),
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            outstanding: Vec::new(),
            got_bitfield: false,
            revealed: Vec::new(),
            refused: Bitfield::new(chunks),
            queued: VecDeque::new(),
            down_round: 0,
            up_round: 0,
            connected_at: now,
            inbound,
            proven: false,
            served: 0,
            awaiting_since: now,
            withdrawn: VecDeque::new(),
            reopens: 0,
            estimate: LinkEstimate::new(),
            revealed_asked: Vec::new(),
            reveal_extra: 0,
        }
    }

    /// Remembers that we withdrew request `r`, keeping the newest `cap`.
    pub(crate) fn withdraw(&mut self, r: BlockRef, cap: usize) {
        if self.withdrawn.len() >= cap {
            self.withdrawn.pop_front();
        }
        self.withdrawn.push_back(r);
    }

    /// Whether `r` is a request we withdrew (forgotten once its late block came).
    pub(crate) fn take_withdrawn(&mut self, r: BlockRef) -> bool {
        match self.withdrawn.iter().position(|w| *w == r) {
            Some(i) => {
                self.withdrawn.remove(i);
                true
            }
            None => false,
        }
    }

    /// What we may ask this peer for: what it has, minus what it refused.
    pub(crate) fn offer(&self) -> Cow<'_, Bitfield> {
        offer(&self.has, &self.refused)
    }

    /// Answers the requests of a peer we now choke that still wait in our upload queue
    /// with `Reject` (they will not be served), so it asks elsewhere at once.
    pub(crate) fn reject_queued(&mut self, cx: &mut SwarmCx<'_>, cid: ContentId, peer: PeerId) {
        for (chunk, block, _) in self.queued.drain(..) {
            send(cx, peer, cid, Body::Reject { chunk, block });
        }
    }
}

/// What a peer holding `has` that refused `refused` may be asked for (a borrow of `has`
/// while it refused nothing, the common case).
pub(crate) fn offer<'a>(has: &'a Bitfield, refused: &Bitfield) -> Cow<'a, Bitfield> {
    if refused.count() == 0 {
        return Cow::Borrowed(has);
    }
    let mut bits = has.clone();
    for c in refused.ones() {
        bits.clear(c);
    }
    Cow::Owned(bits)
}
