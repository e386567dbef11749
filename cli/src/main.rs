//! The `peerlab` command.
fn main() {}
