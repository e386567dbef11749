//! Fast versions of the corners of `peerlab sim swarm --sweep` (docs/experiments/swarm.md):
//! a 30-peer flash crowd of a 16 MiB file at the grid's slowest and fastest links (2 / 8
//! and 20 / 100 Mbit/s) and its shortest and longest one-way latency (20 and 150 ms).
//! Each test asserts a floor on the mean efficiency over seeds 1–3, just under what the
//! core measures with its defaults (the chunk size `peerlab share` picks for 16 MiB, 64
//! KiB; request-now interest; the adaptive queue, slots and rounds; scarce chunks served
//! first). With BEP 3's constants and 256 KiB chunks (`--fixed-rules`: a fixed 12-block
//! queue, 4 slots, 10 s rounds, 30 s optimistic unchokes, interest in any chunk we lack,
//! requests served oldest first) every corner falls under its floor, and with the defaults
//! but oldest first (`--oldest-first`) the slow corners do:
//!
//! | corner | defaults, seeds 1 / 2 / 3 (mean) | oldest first (mean) | fixed rules (mean) | floor |
//! |---|---|---|---|---|
//! | 2 / 8, 150 ms | 0.861 / 0.868 / 0.868 (0.866) | 0.817 / 0.833 / 0.829 (0.826) | 0.757 / 0.765 / 0.755 (0.759) | 0.85 |
//! | 2 / 8, 20 ms | 0.908 / 0.905 / 0.908 (0.907) | 0.852 / 0.857 / 0.857 (0.855) | 0.765 / 0.761 / 0.762 (0.763) | 0.89 |
//! | 20 / 100, 150 ms | 0.542 / 0.477 / 0.551 (0.523) | 0.536 / 0.487 / 0.539 (0.521) | 0.468 / 0.498 / 0.523 (0.496) | 0.51 |
//! | 20 / 100, 20 ms | 0.730 / 0.722 / 0.779 (0.744) | 0.732 / 0.719 / 0.769 (0.740) | 0.682 / 0.682 / 0.722 (0.695) | 0.73 |
//!
//! Runs are deterministic (same seed, same report), so the floors do not flicker; a
//! change to the core that moves a corner shows here.

use peerlab_testnet::experiments::swarm;

/// One corner: a 30-peer flash crowd, one seeder, a 16 MiB file (64 KiB chunks, or 256
/// KiB with the fixed rules).
fn corner(upload: f64, download: f64, latency_ms: u64, seed: u64, fixed: bool) -> swarm::Report {
    let p = swarm::Params {
        peers: 30,
        seeders: 1,
        file_mib: 16,
        upload_mbps: upload,
        download_mbps: download,
        latency_ms,
        arrival: swarm::Arrival::Flash,
        fixed_rules: fixed,
        seed,
        ..swarm::Params::default()
    };
    swarm::run(&p).unwrap()
}

/// Mean efficiency over seeds 1–3 at one corner; every honest peer must complete.
fn mean_efficiency(upload: f64, download: f64, latency_ms: u64, fixed: bool) -> f64 {
    let mut sum = 0.0;
    for seed in 1..=3 {
        let r = corner(upload, download, latency_ms, seed, fixed);
        assert_eq!(
            r.honest_peers_completed,
            r.honest_peers,
            "seed {seed}\n{}",
            r.render_table()
        );
        assert_eq!(r.honest_files_verified, r.honest_peers);
        sum += r.efficiency;
    }
    sum / 3.0
}

macro_rules! corner_test {
    ($name:ident, $up:expr, $down:expr, $lat:expr, $floor:expr) => {
        #[test]
        fn $name() {
            let e = mean_efficiency($up, $down, $lat, false);
            assert!(
                e >= $floor,
                "{} / {} Mbit/s, {} ms: mean efficiency {e:.3} < {}",
                $up,
                $down,
                $lat,
                $floor
            );
        }
    };
}

corner_test!(slow_links_long_latency, 2.0, 8.0, 150, 0.85);
corner_test!(slow_links_short_latency, 2.0, 8.0, 20, 0.89);
corner_test!(fast_links_long_latency, 20.0, 100.0, 150, 0.51);
corner_test!(fast_links_short_latency, 20.0, 100.0, 20, 0.73);
