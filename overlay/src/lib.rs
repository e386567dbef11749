//! peerlab's shared foundation.
//!
//! # Layout
//!
//! - [`Id`]: 160-bit ring identifiers with Chord's interval arithmetic and SHA-1 placement.
//! - [`PeerId`]: peer identities (Ed25519 public keys, convertible to libp2p `PeerId`s).
//! - [`Keypair`], [`Signature`]: node key pairs and domain-separated Ed25519 signatures.
//! - [`Instant`], [`Rng`]: protocol time and the seeded random source cores receive.
//! - [`codec`]: the wire codec — version byte + CBOR, size-limited before decoding.
//! - [`Protocol`], [`Context`], [`Output`]: the sans-IO contract every core follows, and the
//!   [`Offence`]s a core reports against peers whose input it rejects.
//! - [`ConfigError`]: the one error every core's `Config::validate` returns.
//! - [`Guid`], [`flood::Index`], [`flood::Neighbours`] and a bounded expiring seen-GUID
//!   routing table: the pieces of the unstructured overlay — 16-byte message ids, the keyword
//!   index of shared names, and the bounded neighbour set with its host cache.
//! - [`flood`]: the unstructured overlay (Ping/Pong) and Gnutella 0.6 search — flooding,
//!   expanding ring and k random walkers — as one sans-IO core.
//!
//! # The sans-IO contract in one example
//!
//! A core implements [`Protocol`]. Here is a complete one that answers every `Ping` with a
//! `Pong` and pings a peer once a second when asked to:
//!
//! ```
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use peerlab_overlay::{Cx, Instant, Message, Outbox, Output, PeerId, Protocol, Context, Rng};
//!
//! #[derive(Clone, Debug, Serialize, Deserialize)]
//! enum Msg { Ping(u64), Pong(u64) }
//! impl Message for Msg {
//!     fn kind(&self) -> &'static str { match self { Msg::Ping(_) => "ping", Msg::Pong(_) => "pong" } }
//! }
//!
//! struct Echo { target: Option<PeerId>, pongs: u64 }
//! impl Protocol for Echo {
//!     type Message = Msg; type Timer = (); type Command = PeerId; type Event = u64;
//!     fn handle_start(&mut self, _cx: &mut Cx<'_, Self>) {}
//!     fn handle_message(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, msg: Msg) {
//!         match msg {
//!             Msg::Ping(n) => cx.send(from, Msg::Pong(n)),
//!             Msg::Pong(n) => { self.pongs += 1; cx.emit(n) }
//!         }
//!     }
//!     fn handle_timer(&mut self, cx: &mut Cx<'_, Self>, _t: ()) {
//!         if let Some(p) = self.target {
//!             let n = cx.rng().next_u64();
//!             cx.send(p, Msg::Ping(n));
//!             cx.set_timer(Duration::from_secs(1), ());
//!         }
//!     }
//!     fn handle_command(&mut self, cx: &mut Cx<'_, Self>, peer: PeerId) {
//!         self.target = Some(peer);
//!         cx.set_timer(Duration::ZERO, ());
//!     }
//!     fn handle_peer_down(&mut self, _cx: &mut Cx<'_, Self>, peer: PeerId) {
//!         if self.target == Some(peer) { self.target = None }
//!     }
//! }
//!
//! // A driver: feed one input, then drain the outbox.
//! let mut core = Echo { target: None, pongs: 0 };
//! let (mut rng, mut out) = (Rng::seed(1), Outbox::new());
//! let other = PeerId::synthetic(2);
//! core.handle_command(&mut Context::new(Instant::ZERO, &mut rng, &mut out), other);
//! let timer = match out.drain().next() { Some(Output::Timer { at, timer }) => { assert_eq!(at, Instant::ZERO); timer } o => panic!("{o:?}") };
//! core.handle_timer(&mut Context::new(Instant::ZERO, &mut rng, &mut out), timer);
//! assert!(matches!(out.drain().next(), Some(Output::Send { to, msg: Msg::Ping(_) }) if to == other));
//! ```

pub mod codec;
mod config;
pub mod flood;
mod guid;
mod id;
mod identity;
mod peer;
mod protocol;
mod rng;
mod time;

pub use codec::CodecError;
pub use config::ConfigError;
pub use flood::Flood;
pub use guid::{GUID_LEN, Guid};
pub use id::{ID_BITS, ID_BYTES, Id};
pub use identity::{Keypair, SIGNATURE_LEN, Signature};
pub use peer::{LIBP2P_PEER_ID_LEN, PeerId};
pub use protocol::{Context, Cx, Message, Offence, Outbox, Output, Protocol};
pub use rng::Rng;
pub use time::Instant;
