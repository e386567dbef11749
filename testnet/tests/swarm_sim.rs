//! Swarm transfer in the simulator: small swarms that must complete byte-identical, and
//! swarms with corrupt peers that must be contained.

use peerlab_testnet::experiments::swarm::{Arrival, Params, PickerArg, run};

fn small(peers: usize, bad: usize, seed: u64) -> Params {
    Params {
        peers,
        seeders: 1,
        file_mib: 2,
        chunk_kib: Some(64),
        upload_mbps: 8.0,
        download_mbps: 32.0,
        bad_peers: bad,
        neighbours: 8,
        seed,
        ..Params::default()
    }
}

#[test]
fn small_flash_crowd_completes_byte_identical() {
    let r = run(&small(20, 0, 7)).unwrap();
    assert_eq!(r.honest_peers, 20);
    assert_eq!(r.honest_peers_completed, 20, "{}", r.render_table());
    assert_eq!(r.honest_files_verified, 20);
    assert_eq!(r.corrupt_chunks_rejected, 0);
    assert_eq!(r.honest_peers_banned, 0);
    // Peers traded among themselves: far fewer than N copies left the seeder, and the
    // swarm beat client–server distribution.
    assert!(r.seeder_upload_copies < 10.0, "{}", r.render_table());
    assert!(
        r.completion_secs_max < r.client_server_secs,
        "{}",
        r.render_table()
    );
    assert!(r.completion_secs_max >= r.lower_bound_secs);
}

#[test]
fn fifo_uplink_flash_crowd_still_completes() {
    // The experiment's default tells every core its uplink rate (paced, one chunk at a
    // time); the FIFO hand-over without it must still deliver every file.
    let mut p = small(20, 0, 7);
    p.fifo_upload = true;
    let r = run(&p).unwrap();
    assert_eq!(r.honest_peers_completed, 20, "{}", r.render_table());
    assert_eq!(r.honest_files_verified, 20);
}

#[test]
fn ten_percent_corrupt_peers_are_contained() {
    let r = run(&small(30, 3, 11)).unwrap();
    assert_eq!(r.honest_peers, 27);
    assert_eq!(r.honest_peers_completed, 27, "{}", r.render_table());
    // Every honest file hashes to the original.
    assert_eq!(r.honest_files_verified, 27);
    assert!(
        r.corrupt_chunks_rejected > 0,
        "corrupt peers did serve data"
    );
    // No honest peer was ever blamed: nobody served a corrupt chunk onward.
    assert_eq!(r.honest_peers_banned, 0, "{}", r.render_table());
    assert_eq!(r.bad_peers_banned, 3, "{}", r.render_table());
}

#[test]
fn poisson_arrivals_and_both_pickers() {
    let mut p = small(12, 0, 3);
    p.arrival = Arrival::Poisson;
    p.arrival_rate = 2.0;
    p.picker = PickerArg::Both;
    let r = run(&p).unwrap();
    assert_eq!(r.pickers.len(), 2);
    assert_eq!(r.pickers[0].picker, "rarest");
    assert_eq!(r.pickers[1].picker, "random");
    for run in &r.pickers {
        assert_eq!(run.honest_peers_completed, 12);
    }
}

#[test]
fn same_seed_same_report() {
    let mut a = run(&small(10, 1, 5)).unwrap();
    let mut b = run(&small(10, 1, 5)).unwrap();
    a.wall_seconds = 0.0;
    b.wall_seconds = 0.0;
    // Through JSON: figures that are undefined (NaN) compare equal there.
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
}

#[test]
fn invalid_parameters_are_refused() {
    let mut p = small(10, 0, 1);
    p.chunk_kib = Some(100);
    assert!(run(&p).is_err());
    let mut p = small(10, 10, 1);
    p.bad_peers = 10;
    assert!(run(&p).is_err());
    let mut p = small(10, 0, 1);
    p.upload_mbps = f64::NAN;
    assert!(run(&p).is_err());
}

#[test]
fn both_pickers_report_a_diversity_series() {
    let mut p = small(30, 0, 4);
    p.picker = PickerArg::Both;
    // Slow uplinks so the transfer spans several 5 s samples.
    p.upload_mbps = 0.5;
    let r = run(&p).unwrap();
    assert_eq!(r.pickers.len(), 2);
    for k in &r.pickers {
        assert_eq!(k.honest_peers_completed, 30, "{}", r.render_table());
        assert!(!k.diversity_series.is_empty(), "{}", k.picker);
        for s in &k.diversity_series {
            assert!((0.0..=1.0).contains(&s.interest), "{s:?}");
            assert!((0.01..=0.99).contains(&s.done), "{s:?}");
            assert!(s.copies_cv >= 0.0 && s.rarest_decile_ratio <= 1.0, "{s:?}");
            assert!(s.min_copies as f64 <= s.mean_copies, "{s:?}");
        }
    }
}

#[test]
fn initial_seeding_phase_is_measured_for_both_pickers() {
    let p = Params {
        picker: PickerArg::Both,
        no_super_seed: true,
        ..small(12, 0, 5)
    };
    let r = run(&p).unwrap();
    for run in &r.pickers {
        let i = &run.initial_seeding;
        let first = i.first_copy_secs.expect("every chunk reached a peer");
        assert!(first <= run.completion_secs_max + 1.0, "{first}");
        // Every chunk had to leave the seeder at least once before all were at peers.
        assert!(i.seeder_copies_at_first_copy.unwrap() >= 1.0 - 1e-9);
        assert!(!i.series.is_empty());
        // Nobody leaves, so chunks held only by the seeder never come back.
        for w in i.series.windows(2) {
            assert!(w[1][1] <= w[0][1], "{:?}", i.series);
        }
        assert!((0.0..=1.0).contains(&i.interest_mean));
    }
}
