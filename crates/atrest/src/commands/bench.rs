//! `atrest bench`: like `cryptsetup benchmark`, each provider's encrypt and decrypt speed on this
//! machine, through the same transformer path the etcd store uses (prefix list, key list, AAD).
//! KMS providers use the library's in-process reference plugin; KMS v2's seed is unwrapped once
//! before measuring, so no plugin call happens per operation (as in kube-apiserver). KMS v1 calls
//! the (in-process) plugin's Encrypt on every write, exactly as upstream does over gRPC.
//!
//! Rows have `provider`, `op` (`encrypt`, `decrypt`, and `encrypt+decrypt`, their sum: the unit of
//! a side-by-side comparison with kube-apiserver's Go transformers), `size` and `ns_per_op`.

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use atrest_core::config::{
    EncryptionConfiguration, Key, KeysConfiguration, KmsApiVersion, KmsConfiguration,
    ProviderConfiguration, ResourceConfiguration,
};
use atrest_core::kms::testing::{InProcessConnector, ReferenceKms};
use atrest_core::{GroupResource, ResourceTransformer, Transformers};
use serde::Serialize;

use super::report_output::{write_document, OutputFormat};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Measuring time per row (e.g. 300ms, 1s).
    #[arg(long, default_value = "300ms", value_parser = super::common::parse_duration)]
    pub duration: Duration,
    /// Measuring time per row in milliseconds (older spelling of --duration).
    #[arg(long, hide = true, conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub duration_ms: Option<u64>,
}

#[derive(Serialize, Debug)]
pub struct Row {
    pub provider: &'static str,
    pub op: &'static str,
    pub size: usize,
    pub ns_per_op: f64,
    pub mb_per_s: f64,
}

const SIZES: [usize; 2] = [1024, 64 * 1024];
const AAD: &[u8] = b"/registry/secrets/default/bench";

fn keys(secret: &[u8]) -> KeysConfiguration {
    KeysConfiguration {
        keys: vec![Key {
            name: "bench".into(),
            secret: zeroize::Zeroizing::new(secret.to_vec()),
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

/// One transformer per provider, each the only provider for `secrets`.
fn transformers() -> anyhow::Result<Vec<(&'static str, ResourceTransformer)>> {
    let key = atrest_core::providers::generate_key(32)?;
    let providers = [
        ("identity", ProviderConfiguration::Identity),
        ("aescbc", ProviderConfiguration::AesCbc(keys(&key))),
        ("aesgcm", ProviderConfiguration::AesGcm(keys(&key))),
        ("secretbox", ProviderConfiguration::Secretbox(keys(&key))),
        ("kmsv1", kms(KmsApiVersion::V1)),
        ("kmsv2", kms(KmsApiVersion::V2)),
    ];
    let connector = Arc::new(InProcessConnector::new(Arc::new(ReferenceKms::generate(
        "bench-key",
    ))));
    providers
        .into_iter()
        .map(|(name, provider)| {
            let config = EncryptionConfiguration {
                resources: vec![ResourceConfiguration {
                    resources: vec!["secrets".into()],
                    providers: vec![provider],
                }],
                content_hash: String::new(),
            };
            let t = Transformers::build(&config, connector.clone())
                .with_context(|| format!("building {name}"))?;
            Ok((name, t.for_resource(&GroupResource::parse("secrets"))))
        })
        .collect()
}

/// Runs `op` for about `duration` (after a short warm-up) and returns ns per call.
fn measure(duration: Duration, mut op: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let warm_up = Instant::now();
    while warm_up.elapsed() < duration / 10 {
        op()?;
    }
    let (mut iterations, mut batch) = (0u64, 1u64);
    let start = Instant::now();
    while start.elapsed() < duration {
        for _ in 0..batch {
            op()?;
        }
        iterations += batch;
        batch = (batch * 2).min(1024);
    }
    Ok(start.elapsed().as_nanos() as f64 / iterations as f64)
}

pub fn bench(duration: Duration) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (provider, t) in transformers()? {
        for size in SIZES {
            let plaintext = vec![0x6bu8; size];
            let stored = t
                .write(&plaintext, AAD)
                .with_context(|| format!("{provider} write"))?;
            // Establishes KMS state and caches before measuring.
            t.read(&stored, AAD)
                .with_context(|| format!("{provider} read"))?;
            let encrypt = measure(duration, || {
                black_box(t.write(black_box(&plaintext), AAD)?);
                Ok(())
            })?;
            let decrypt = measure(duration, || {
                black_box(t.read(black_box(&stored), AAD)?);
                Ok(())
            })?;
            // One op as kube-apiserver's transformer benchmarks count it: a write and a read back.
            for (op, ns) in [
                ("encrypt", encrypt),
                ("decrypt", decrypt),
                ("encrypt+decrypt", encrypt + decrypt),
            ] {
                rows.push(Row {
                    provider,
                    op,
                    size,
                    ns_per_op: ns,
                    mb_per_s: size as f64 / ns * 1e3,
                });
            }
        }
    }
    Ok(rows)
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let duration = args
        .duration_ms
        .map_or(args.duration, Duration::from_millis);
    let rows = bench(duration)?;
    super::common::emit(ExitCode::SUCCESS, |out| {
        if args.output.is_document() {
            return write_document(args.output, &rows, out);
        }
        writeln!(out, "# Single-threaded, in-memory, through the etcd store's transformer path; MB = 10^6 bytes.")?;
        writeln!(
            out,
            "{:<10} {:<15} {:>7} {:>12} {:>10}",
            "provider", "op", "size", "ns/op", "MB/s"
        )?;
        for r in &rows {
            let size = format!("{} KiB", r.size / 1024);
            writeln!(
                out,
                "{:<10} {:<15} {:>7} {:>12.0} {:>10.1}",
                r.provider, r.op, size, r.ns_per_op, r.mb_per_s
            )?;
        }
        Ok(())
    })
}
