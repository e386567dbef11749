//! Stands in for `libp2p` when node/src/wire.rs is compiled into the fuzz targets: libp2p
//! re-exports the `futures` crate, and the stream framing needs nothing else from it, so
//! the targets fuzz the node's real frame reader without building libp2p.

pub use futures;
