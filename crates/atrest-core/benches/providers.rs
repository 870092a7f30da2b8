//! Encrypt and decrypt per provider at 1 KiB and 64 KiB, through the resource transformer (the path
//! the etcd store takes). KMS providers use the in-process reference plugin; KMS v2's seed is
//! unwrapped before measuring. Run: `cargo bench -p atrest-core --bench providers`.
//!
//! `secretbox-previous` is the pure-Rust secretbox atrest used before libsodium (RustCrypto
//! `crypto_secretbox`, a `getrandom` call per nonce), on the bare cipher without the transformer
//! path: the yardstick for the new provider in the same run (kube-apiserver's Go secretbox measured
//! 1.3× that implementation's speed at 1 KiB and 0.96× at 64 KiB, so "≥ 2× Go" means ≥ 2.6× and
//! ≥ 1.9× this row).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use atrest_core::config::{
    EncryptionConfiguration, Key, KeysConfiguration, KmsApiVersion, KmsConfiguration,
    ProviderConfiguration, ResourceConfiguration,
};
use atrest_core::kms::testing::{InProcessConnector, ReferenceKms};
use atrest_core::{GroupResource, ResourceTransformer, Transformers};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const AAD: &[u8] = b"/registry/secrets/default/bench";

fn keys() -> KeysConfiguration {
    KeysConfiguration {
        keys: vec![Key {
            name: "bench".into(),
            secret: zeroize::Zeroizing::new(vec![0x42; 32]),
        }],
    }
}

fn kms(version: KmsApiVersion) -> ProviderConfiguration {
    ProviderConfiguration::Kms(KmsConfiguration {
        api_version: version,
        name: "bench".into(),
        endpoint: "unix:///in-process".into(),
        cachesize: (version == KmsApiVersion::V1).then_some(1000),
        timeout: Duration::from_secs(3),
    })
}

fn transformer(provider: ProviderConfiguration) -> ResourceTransformer {
    let config = EncryptionConfiguration {
        resources: vec![ResourceConfiguration {
            resources: vec!["secrets".into()],
            providers: vec![provider],
        }],
        content_hash: String::new(),
    };
    let connector = Arc::new(InProcessConnector::new(Arc::new(ReferenceKms::generate(
        "bench-key",
    ))));
    Transformers::build(&config, connector)
        .expect("bench config builds")
        .for_resource(&GroupResource::parse("secrets"))
}

fn providers(c: &mut Criterion) {
    let cases = [
        ("identity", ProviderConfiguration::Identity),
        ("aescbc", ProviderConfiguration::AesCbc(keys())),
        ("aesgcm", ProviderConfiguration::AesGcm(keys())),
        ("secretbox", ProviderConfiguration::Secretbox(keys())),
        ("kmsv1", kms(KmsApiVersion::V1)),
        ("kmsv2", kms(KmsApiVersion::V2)),
    ];
    for (name, provider) in cases {
        let t = transformer(provider);
        let mut group = c.benchmark_group(name);
        for size in [1024usize, 64 * 1024] {
            let plaintext = vec![0x6b; size];
            let stored = t.write(&plaintext, AAD).expect("write");
            t.read(&stored, AAD).expect("read");
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new("encrypt", size), &plaintext, |b, p| {
                b.iter(|| t.write(black_box(p), AAD).expect("write"))
            });
            group.bench_with_input(BenchmarkId::new("decrypt", size), &stored, |b, s| {
                b.iter(|| t.read(black_box(s), AAD).expect("read"))
            });
        }
        group.finish();
    }
    previous_secretbox(c);
}

fn previous_secretbox(c: &mut Criterion) {
    use crypto_secretbox::aead::{AeadInPlace, KeyInit};
    use crypto_secretbox::{Nonce, Tag, XSalsa20Poly1305};
    const PREFIX: &[u8] = b"k8s:enc:secretbox:v1:bench:";
    let cipher = XSalsa20Poly1305::new(&[0x42u8; 32].into());
    let seal = |plaintext: &[u8]| {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).expect("getrandom");
        let mut out = Vec::with_capacity(PREFIX.len() + 40 + plaintext.len());
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(&nonce);
        let tag_at = out.len();
        out.extend_from_slice(&[0u8; 16]);
        out.extend_from_slice(plaintext);
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", &mut out[tag_at + 16..])
            .expect("seal");
        out[tag_at..tag_at + 16].copy_from_slice(&tag);
        out
    };
    let open = |stored: &[u8]| {
        let body = &stored[PREFIX.len()..];
        let mut buf = body[40..].to_vec();
        cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&body[..24]),
                b"",
                &mut buf,
                Tag::from_slice(&body[24..40]),
            )
            .expect("open");
        buf
    };
    let mut group = c.benchmark_group("secretbox-previous");
    for size in [1024usize, 64 * 1024] {
        let plaintext = vec![0x6b; size];
        let stored = seal(&plaintext);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("encrypt", size), &plaintext, |b, p| {
            b.iter(|| seal(black_box(p)))
        });
        group.bench_with_input(BenchmarkId::new("decrypt", size), &stored, |b, s| {
            b.iter(|| open(black_box(s)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1)).sample_size(20);
    targets = providers
}
criterion_main!(benches);
