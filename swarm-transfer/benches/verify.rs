//! Chunk verification throughput: `Manifest::verify_chunk` on a 256 KiB chunk held as
//! sixteen 16 KiB `Bytes` blocks (what the swarm core does for every chunk it receives),
//! beside the blake3 crate hashing the same bytes in one call, and a whole 16 MiB buffer
//! in one call (single-threaded; the crate's SIMD paths are used in every case).

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use peerlab_swarm::{BLOCK_SIZE, DEFAULT_CHUNK_SIZE, Manifest};

fn data(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    peerlab_overlay::Rng::seed(9).fill(&mut v);
    v
}

fn bench(c: &mut Criterion) {
    let chunk = DEFAULT_CHUNK_SIZE as usize;
    let file = Bytes::from(data(4 * chunk));
    let m = Manifest::from_bytes("bench.bin", &file, DEFAULT_CHUNK_SIZE).unwrap();
    let blocks: Vec<Bytes> = (0..chunk / BLOCK_SIZE as usize)
        .map(|b| file.slice(b * BLOCK_SIZE as usize..(b + 1) * BLOCK_SIZE as usize))
        .collect();
    assert!(m.verify_chunk(0, &blocks));

    let mut g = c.benchmark_group("chunk_256KiB");
    g.throughput(Throughput::Bytes(chunk as u64));
    g.bench_function("verify_chunk_16_blocks", |b| {
        b.iter(|| assert!(m.verify_chunk(0, black_box(&blocks))))
    });
    g.bench_function("blake3_hash_one_call", |b| {
        b.iter(|| blake3::hash(black_box(&file[..chunk])))
    });
    g.finish();

    let big = data(16 << 20);
    let mut g = c.benchmark_group("buffer_16MiB");
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("blake3_hash_one_call", |b| {
        b.iter(|| blake3::hash(black_box(&big)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(30);
    targets = bench
}
criterion_main!(benches);
