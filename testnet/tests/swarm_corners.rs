//! Fast versions of the corners of `peerlab sim swarm --sweep` (docs/experiments/swarm.md):
//! a small flash crowd at the grid's slowest and fastest links and its shortest and
//! longest latency. The swarm core sizes its request queues, unchoke slots, choke rounds
//! and super-seeding reveals from measured rates and round trips; with BEP 3's constants
//! (`--fixed-rules`: a 12-block queue, 4 slots, 10 s rounds) at least one corner falls
//! under its floor (the figures are in the tests' docs).

use peerlab_testnet::experiments::swarm;

/// One corner: a 30-peer flash crowd, one seeder, a 16 MiB file in 256 KiB chunks.
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

corner_test!(slow_links_long_latency, 2.0, 8.0, 150, 0.0);
corner_test!(slow_links_short_latency, 2.0, 8.0, 20, 0.0);
corner_test!(fast_links_long_latency, 20.0, 100.0, 150, 0.0);
corner_test!(fast_links_short_latency, 20.0, 100.0, 20, 0.0);
