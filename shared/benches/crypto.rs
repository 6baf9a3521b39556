//! Benchmark of the encrypted file streams: encrypting and decrypting 8 MiB made of a real
//! photo's bytes (`benches/images/photo-12mp.jpg`, repeated), next to SHA-256 of the same
//! bytes, which every upload already computes. Single-threaded, in memory. Run it with
//! `cargo bench -p shared --bench crypto`; the figures are throughputs, compared as ratios
//! in `docs/benchmarks.md`.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sha2::{Digest, Sha256};
use shared::crypto::{DataKey, DecryptingReader, EncryptingWriter, ciphertext_len};
use shared::model::ImageId;

const LEN: usize = 8 * 1024 * 1024;

fn photo_bytes() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/images/photo-12mp.jpg");
    let photo = std::fs::read(&path).expect("the benchmark photo");
    photo.iter().copied().cycle().take(LEN).collect()
}

fn encrypt(key: &DataKey, image: ImageId, plain: &[u8]) -> Vec<u8> {
    let out = Vec::with_capacity(ciphertext_len(plain.len() as u64) as usize);
    let mut writer = EncryptingWriter::new(out, key, image, "original").unwrap();
    writer.write_all(plain).unwrap();
    writer.finish().unwrap()
}

fn streams(c: &mut Criterion) {
    let plain = photo_bytes();
    let (key, image) = (DataKey::generate(), ImageId::new());
    let sealed = encrypt(&key, image, &plain);
    let mut group = c.benchmark_group("8MiB-photo");
    group.throughput(Throughput::Bytes(LEN as u64)).sample_size(20).measurement_time(Duration::from_secs(8));
    group.bench_function("sha256", |b| b.iter(|| Sha256::digest(std::hint::black_box(&plain))));
    group.bench_function("encrypt", |b| b.iter(|| encrypt(&key, image, std::hint::black_box(&plain))));
    let mut out = Vec::with_capacity(LEN);
    group.bench_function("decrypt", |b| {
        b.iter(|| {
            out.clear();
            let mut reader = DecryptingReader::new(std::hint::black_box(&sealed[..]), &key, image, "original").unwrap();
            reader.read_to_end(&mut out).unwrap();
        })
    });
    group.finish();
    assert_eq!(out, plain);
}

criterion_group!(benches, streams);
criterion_main!(benches);
