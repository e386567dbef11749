//! Piece-picking cost over a whole download from one seeder: every chunk equally
//! available, so every chunk start is a tie among all chunks not yet held. Chunks here are
//! one block each (`MIN_CHUNK_SIZE`), so every `pick` starts a chunk — the picker's most
//! expensive rule — and the figure is the cost of starting every chunk of a file of 1 024
//! (256 MiB at the default chunk size) and of `MAX_CHUNKS` (30 000) chunks.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use peerlab_overlay::{PeerId, Rng};
use peerlab_swarm::picker::{Config, Picker};
use peerlab_swarm::{Bitfield, MIN_CHUNK_SIZE, Manifest};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick_every_chunk_one_seeder");
    for chunks in [1024u32, 30_000] {
        let data = vec![5u8; (chunks * MIN_CHUNK_SIZE) as usize];
        let m = Manifest::from_bytes("bench.bin", &data, MIN_CHUNK_SIZE).unwrap();
        assert_eq!(m.chunk_count(), chunks);
        let seeder = Bitfield::full(chunks);
        let from = PeerId::synthetic(1);
        g.throughput(Throughput::Elements(chunks as u64));
        g.bench_function(format!("{chunks}_chunks"), |b| {
            b.iter_batched(
                || {
                    let mut p = Picker::new(Config::default(), Bitfield::new(chunks));
                    p.add_peer(&seeder);
                    (p, Rng::seed(1))
                },
                |(mut p, mut rng)| {
                    while let Some((chunk, _)) = p.pick(&m, from, &seeder, &[], &mut rng) {
                        p.mark_have(black_box(chunk));
                    }
                    assert!(p.is_complete());
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    targets = bench
}
criterion_main!(benches);
