//! Coverage-guided fuzz targets for every decoder of peer input, and the cores behind them.
//!
//! # Layout
//!
//! - [`targets`]: decoders checked on their own — the frame codec ([`targets::codec`]), the
//!   node's stream reader ([`targets::stream_frame`]), its probe datagram reader
//!   ([`targets::datagram`]), manifests, bitfields, and the
//!   signature check signed records go through ([`targets::signature`]).
//! - [`cores`]: one target per protocol — DHT, gossip, flooding, swarm — that reads a
//!   hostile stream the way the node does and hands every message to a real core.
//! - [`harness`]: the small deterministic driver those targets run a core with.
//! - [`check`]: the round-trip property every decoded value must have.
//! - [`seeds`]: the seed corpus, generated deterministically (`fuzz/corpus/`).
//! - `wire`: node/src/wire.rs itself, compiled into this crate. The node crate builds
//!   libp2p, which would make a fuzz build take many minutes; the stream framing only needs
//!   `libp2p::futures`, which `fuzz/libp2p-shim` provides.
//!
//! The binaries in `fuzz_targets/` are one line each, calling their target directly (so each
//! links, and libFuzzer scans the coverage counters of, only the code it fuzzes). `fuzz/run`
//! builds and runs them with libFuzzer on the pinned stable toolchain; see
//! docs/experiments/security.md.

pub mod check;
pub mod cores;
pub mod harness;
pub mod seeds;
pub mod targets;

#[path = "../../node/src/wire.rs"]
#[allow(dead_code)]
pub mod wire;

/// Every target, by the name of its binary.
pub const TARGETS: [&str; 10] = [
    "codec",
    "stream_frame",
    "datagram",
    "dht",
    "gossip",
    "flood",
    "swarm",
    "manifest",
    "bitfield",
    "signature",
];

/// Runs one input through the target `name`.
///
/// # Panics
/// On an unknown name, and wherever the target finds a bug.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "codec" => targets::codec(data),
        "stream_frame" => targets::stream_frame(data),
        "datagram" => targets::datagram(data),
        "dht" => cores::run::<cores::Dht>(data),
        "gossip" => cores::run::<cores::Gossip>(data),
        "flood" => cores::run::<cores::Flood>(data),
        "swarm" => cores::run::<cores::Swarm>(data),
        "manifest" => targets::manifest(data),
        "bitfield" => targets::bitfield(data),
        "signature" => targets::signature(data),
        _ => panic!("unknown fuzz target {name}"),
    }
}
