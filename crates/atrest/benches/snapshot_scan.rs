//! Snapshot scan throughput: a real etcd is filled with 100,000 Secrets of ~2 KiB (aesgcm-encrypted
//! with the sample config, as kube-apiserver would store them), `etcdctl snapshot save` writes the
//! file, and we measure
//! * `scan`: both passes of the reader (index the newest revision of every key, then read every
//!   value in key order), and
//! * `status`: the same plus classifying every value (what `atrest snapshot status` does),
//! * `checksum`: the SHA-256 trailer verification alone.
//!
//! Run: `cargo bench -p atrest --bench snapshot_scan` (or `scripts/bench-snapshot`).
//! `ATREST_BENCH_OBJECTS` changes the object count; `ATREST_BENCH_KEEP_SNAPSHOT=FILE` keeps a copy
//! of the generated snapshot (e.g. to time `atrest snapshot status` on it).

use std::sync::Arc;
use std::time::Duration;

use atrest_core::config::{load_file, LoadOptions};
use atrest_core::Transformers;
use atrest_store::report::{ReportOptions, StatusReportBuilder};
use atrest_store::snapshot::{IndexOptions, OpenOptions, Snapshot};
use atrest_testkit::load::TestClient;
use atrest_testkit::{sample, EtcdServer};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn make_snapshot(
    dir: &std::path::Path,
    n: usize,
    transformers: &Transformers,
) -> std::path::PathBuf {
    let server = EtcdServer::start();
    let client = TestClient::connect(&server);
    let gr = atrest_core::GroupResource::new("", "secrets");
    let t = transformers.for_resource(&gr);
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..n {
        let key = format!("/registry/secrets/ns-{:03}/secret-{i:06}", i % 300);
        let mut plain = b"k8s\x00\x0a\x0c\x0a\x02v1\x12\x06Secret".to_vec();
        plain.extend((0..2000).map(|j| ((i * 31 + j * 7) % 251) as u8));
        let stored = t.write(&plain, key.as_bytes()).expect("encrypt");
        batch.push((key, stored));
        if batch.len() == 10_000 {
            client.put_all(&batch);
            batch.clear();
        }
    }
    client.put_all(&batch);
    let path = dir.join("bench.snapshot");
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", server.endpoint()))
        .args(["snapshot", "save"])
        .arg(&path)
        .output()
        .expect("etcdctl (apt-get install etcd-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

fn scan(c: &mut Criterion) {
    let n: usize = std::env::var("ATREST_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let config = load_file(
        &sample::config("config-before.yaml"),
        &LoadOptions::default(),
    )
    .expect("config");
    let transformers =
        Transformers::build(&config, Arc::new(atrest_core::kms::NoKms)).expect("transformers");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = make_snapshot(dir.path(), n, &transformers);
    if let Ok(keep) = std::env::var("ATREST_BENCH_KEEP_SNAPSHOT") {
        std::fs::copy(&path, &keep).expect("copy snapshot");
    }
    let size = std::fs::metadata(&path).expect("snapshot").len();
    eprintln!("snapshot: {n} objects, {:.1} MB", size as f64 / 1e6);
    let no_check = OpenOptions {
        verify_checksum: false,
    };

    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Bytes(size));
    g.bench_function(format!("scan_{n}_objects"), |b| {
        b.iter(|| {
            let snap = Snapshot::open(&path, no_check).expect("open");
            let index = snap
                .index(&IndexOptions {
                    at_revision: None,
                    key_prefix: b"/registry/".to_vec(),
                })
                .expect("index");
            let mut bytes = 0usize;
            for kv in snap.latest(&index) {
                bytes += kv.expect("kv").value.len();
            }
            assert_eq!(index.len(), n);
            bytes
        })
    });
    g.bench_function(format!("status_{n}_objects"), |b| {
        b.iter(|| {
            let snap = Snapshot::open(&path, no_check).expect("open");
            let index = snap
                .index(&IndexOptions {
                    at_revision: None,
                    key_prefix: b"/registry/".to_vec(),
                })
                .expect("index");
            let mut builder =
                StatusReportBuilder::new(transformers.clone(), ReportOptions::default());
            for kv in snap.latest(&index) {
                let kv = kv.expect("kv");
                builder
                    .add(&kv.key, &kv.value)
                    .expect("no KMS in the benchmark");
            }
            builder.finish().totals.objects
        })
    });
    g.bench_function("checksum", |b| {
        b.iter(|| {
            Snapshot::open(&path, OpenOptions::default())
                .expect("open")
                .info()
                .file_size
        })
    });
    g.finish();
}

criterion_group!(benches, scan);
criterion_main!(benches);
