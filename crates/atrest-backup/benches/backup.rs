//! Backup throughput on one core: encrypt and decrypt 64 MiB in memory to an X25519 recipient
//! (the payload cost; scrypt and KMS only change the per-file header work).
//! Run: `cargo bench -p atrest-backup --bench backup`.

use std::time::Duration;

use atrest_backup::{decrypt, encrypt, keys, Identity, Recipient};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let len = 64 << 20;
    let data: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
    let g = keys::generate();
    let recipients = [Recipient::X25519(g.recipient.clone())];
    let identities = [Identity::File(vec![Box::new(g.identity)])];
    let mut cipher = Vec::with_capacity(len + len / 1000 + 1024);
    encrypt(&recipients, &mut &data[..], &mut cipher, &mut |_| {}).expect("encrypt");

    let mut group = c.benchmark_group("backup");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Bytes(len as u64));
    let mut out = Vec::with_capacity(cipher.len());
    group.bench_function("encrypt_64MiB", |b| {
        b.iter(|| {
            out.clear();
            encrypt(&recipients, &mut &data[..], &mut out, &mut |_| {})
                .expect("encrypt")
                .bytes_out
        })
    });
    group.bench_function("decrypt_64MiB", |b| {
        b.iter(|| {
            out.clear();
            decrypt(&identities, &mut &cipher[..], &mut out, &mut |_| {})
                .expect("decrypt")
                .bytes_out
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
