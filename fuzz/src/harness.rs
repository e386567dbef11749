//! A minimal driver for one core under fuzzing: the node under test receives a hostile
//! peer's stream, frame by frame, exactly as the node driver reads and decodes it.
//!
//! The input of a core target *is* the bytes of one inbound stream of that core's channel:
//! `u32` big-endian length, frame, length, frame, … (docs/wire.md). Frames are cut with the
//! node's own reader ([`crate::wire::read_stream_frame`], with the channel's limit) and
//! decoded with the node's codec call (`codec::decode_with_limit` at the channel's limit);
//! a frame that does not decode is skipped, as the driver skips it after the strike. Every
//! decoded message is delivered to the core as coming from [`remote`]; protocol time moves
//! [`FRAME_GAP`] between frames, timers fire when due, and [`SETTLE`] after the last frame
//! lets request timeouts run. All of it is deterministic: an input replays exactly.
//!
//! Beyond "no panic", the driver checks what every core promises about its outputs:
//!
//! - an [`Output::Offence`] raised while handling a message names the sender of that
//!   message, never a peer the message merely mentions (`overlay::Offence`);
//! - every message a core sends encodes within its channel's frame limit, so hostile input
//!   cannot make a node build a frame its peers must refuse.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::pin;
use std::sync::LazyLock;
use std::task::{self, Poll, Waker};
use std::time::Duration;

use peerlab_overlay::{Context, Instant, Keypair, Outbox, Output, PeerId, Protocol, Rng, codec};
use serde::de::DeserializeOwned;

use crate::wire::{Channel, StreamFrame, read_stream_frame};

/// Protocol time between two frames of the hostile stream.
pub const FRAME_GAP: Duration = Duration::from_millis(100);

/// Protocol time that passes after the last frame: longer than the cores' request timeouts
/// (1–2 s by default), so the handling of requests a hostile reply left open runs too.
pub const SETTLE: Duration = Duration::from_secs(5);

/// Most timers fired by one [`Node::advance`]: periodic timers re-arm themselves, and one
/// input must stay a few milliseconds of work for the fuzzer to make progress.
pub const MAX_FIRINGS: usize = 64;

/// Most timers kept pending; later ones are dropped (a bound on the harness, not the core).
pub const MAX_TIMERS: usize = 4096;

/// Most frames taken from one input, for the same reason as [`MAX_FIRINGS`].
pub const MAX_FRAMES: usize = 512;

/// The node under test's key pair (cores that sign what they say take it).
pub fn local_key() -> &'static Keypair {
    // Deriving a synthetic identity is an Ed25519 scalar multiplication: once per process.
    static LOCAL: LazyLock<Keypair> = LazyLock::new(|| Keypair::synthetic(1));
    &LOCAL
}

/// The key pair of the peer the fuzz input comes from.
pub fn remote_key() -> &'static Keypair {
    static REMOTE: LazyLock<Keypair> = LazyLock::new(|| Keypair::synthetic(2));
    &REMOTE
}

/// The node under test.
pub fn local() -> PeerId {
    local_key().peer_id()
}

/// The peer the fuzz input comes from: the sender of every frame.
pub fn remote() -> PeerId {
    remote_key().peer_id()
}

/// Cuts a stream into frames with the node's reader: stops at a clean end, an end inside
/// a frame, or an oversized length prefix (after which the node ends the stream), and after
/// [`MAX_FRAMES`] frames.
pub fn frames(mut stream: &[u8], channel: Channel) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while out.len() < MAX_FRAMES {
        match ready(read_stream_frame(&mut stream, channel.max_frame())) {
            Ok(Some(StreamFrame::Data(frame))) => {
                assert!(frame.len() <= channel.max_frame(), "frame over the limit");
                out.push(frame);
            }
            Ok(Some(StreamFrame::Oversized(len))) => {
                assert!(
                    len > channel.max_frame() as u64,
                    "oversized frame within the limit"
                );
                break;
            }
            Ok(None) | Err(_) => break,
        }
    }
    out
}

/// Encodes frames as one stream (the inverse of [`frames`]).
pub fn stream(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut buf = Vec::new();
    for f in frames {
        crate::wire::write_stream_frame(&mut buf, f);
    }
    buf
}

/// Decodes a frame as the node does for `channel`.
pub fn decode<M: DeserializeOwned>(frame: &[u8], channel: Channel) -> Option<M> {
    codec::decode_with_limit(frame, channel.max_frame()).ok()
}

/// Polls a future that cannot wait (it reads from memory) to its end.
pub(crate) fn ready<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = task::Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        // An in-memory reader is always ready; a future that waits is a harness bug.
        Poll::Pending => panic!("in-memory read returned Pending"),
    }
}

/// Messages a step produced: (destination, message).
pub type Sent<P> = Vec<(PeerId, <P as Protocol>::Message)>;

/// One core with its clock, random source, timers and outbox.
pub struct Node<P: Protocol> {
    /// The core.
    pub core: P,
    channel: Channel,
    rng: Rng,
    now: Instant,
    out: Outbox<P::Message, P::Timer, P::Event>,
    timers: BinaryHeap<Pending<P::Timer>>,
    seq: u64,
}

/// A timer waiting for its deadline; the heap pops the earliest, then the first set.
struct Pending<T> {
    at: Instant,
    seq: u64,
    timer: T,
}

impl<T> PartialEq for Pending<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<T> Eq for Pending<T> {}

impl<T> PartialOrd for Pending<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Pending<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl<P: Protocol> Node<P> {
    /// Wraps `core`, which speaks on `channel`, with a random source seeded by `seed`.
    pub fn new(core: P, channel: Channel, seed: u64) -> Node<P> {
        Node {
            core,
            channel,
            rng: Rng::seed(seed),
            now: Instant::ZERO,
            out: Outbox::new(),
            timers: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// Current protocol time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// `handle_start`.
    pub fn start(&mut self) -> Sent<P> {
        let mut cx = Context::new(self.now, &mut self.rng, &mut self.out);
        self.core.handle_start(&mut cx);
        self.collect(None)
    }

    /// `handle_command`.
    pub fn command(&mut self, cmd: P::Command) -> Sent<P> {
        let mut cx = Context::new(self.now, &mut self.rng, &mut self.out);
        self.core.handle_command(&mut cx, cmd);
        self.collect(None)
    }

    /// `handle_message` from `from`.
    pub fn message(&mut self, from: PeerId, msg: P::Message) -> Sent<P> {
        let mut cx = Context::new(self.now, &mut self.rng, &mut self.out);
        self.core.handle_message(&mut cx, from, msg);
        self.collect(Some(from))
    }

    /// Moves protocol time forward by `by`, firing the timers that fall due on the way (in
    /// deadline order, at most [`MAX_FIRINGS`]).
    pub fn advance(&mut self, by: Duration) -> Sent<P> {
        let until = self.now + by;
        let mut sent = Vec::new();
        for _ in 0..MAX_FIRINGS {
            if self.timers.peek().is_none_or(|t| t.at > until) {
                break;
            }
            let Some(Pending { at, timer, .. }) = self.timers.pop() else {
                break;
            };
            self.now = self.now.max(at);
            let mut cx = Context::new(self.now, &mut self.rng, &mut self.out);
            self.core.handle_timer(&mut cx, timer);
            sent.extend(self.collect(None));
        }
        self.now = until;
        sent
    }

    /// Drains the outbox, checking the outputs (module docs).
    fn collect(&mut self, sender: Option<PeerId>) -> Sent<P> {
        let mut sent = Vec::new();
        for output in self.out.drain() {
            match output {
                Output::Send { to, msg } => {
                    // The exact frame length, counted without building the frame.
                    let len = codec::encoded_len(&msg);
                    assert!(
                        len <= self.channel.max_frame(),
                        "the core sent a frame of {len} bytes, over its channel's limit: {msg:?}"
                    );
                    sent.push((to, msg));
                }
                Output::Timer { at, timer } => {
                    if self.timers.len() < MAX_TIMERS {
                        self.timers.push(Pending {
                            at,
                            seq: self.seq,
                            timer,
                        });
                        self.seq += 1;
                    }
                }
                Output::Event(_) => {}
                Output::Offence { peer, offence } => {
                    if let Some(sender) = sender {
                        assert_eq!(
                            peer, sender,
                            "{offence:?} charged to a peer the message only names"
                        );
                    }
                }
            }
        }
        sent
    }
}
