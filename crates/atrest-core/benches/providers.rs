//! Encrypt and decrypt per provider at 1 KiB and 64 KiB, through the resource transformer (the path
//! the etcd store takes). KMS providers use the in-process reference plugin; KMS v2's seed is
//! unwrapped before measuring. Run: `cargo bench -p atrest-core --bench providers`.

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
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1)).sample_size(20);
    targets = providers
}
criterion_main!(benches);
