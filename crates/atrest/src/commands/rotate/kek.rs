//! `atrest rotate kek`: a KMS v2 KEK rotation (no config change). After the plugin reports a new
//! key ID, wait until every apiserver uses it — its latest
//! `apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds` sample for the provider
//! carries the new key ID's hash, or, where an apiserver exports no such metric, the documented
//! pick-up time (`--pickup-time`, 3 + N + M minutes, docs/kms.md) — then rewrite exactly the values
//! whose EncryptedObject key ID differs from the plugin's (kube-apiserver's stale rule; the key ID
//! is read without calling the KMS), verify with a scan, and say when the old KEK may be disabled.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use atrest_core::config::{KmsApiVersion, ProviderConfiguration};
use atrest_core::GroupResource;
use atrest_rotate::metrics::id_hash;
use atrest_store::etcd::rewrite::{rewrite, RewriteOptions, Selection};
use atrest_store::etcd::status::NoProgress;
use atrest_store::report::ReportOptions;
use serde::Serialize;

use super::apiserver::{ApiserverArgs, Apiservers};
use crate::commands::common::parse_duration;
use crate::commands::etcd_args::{runtime, ConfigArgs, EtcdArgs};
use crate::commands::report_output::{OutputFormat, Progress};
use crate::commands::terminal_text::escape_control;

#[derive(clap::Args)]
pub struct KekArgs {
    /// The KMS v2 provider (`name` in the config) whose KEK was rotated.
    #[arg(long, value_name = "NAME")]
    pub provider: String,
    /// The config every apiserver runs.
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    pub apiservers: ApiserverArgs,
    /// How long to wait for every apiserver to report the new key ID.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub wait_timeout: Duration,
    /// For apiservers without the key-ID metric: wait this long (3 + N + M minutes, docs/kms.md).
    #[arg(long, default_value = "8m", value_parser = parse_duration)]
    pub pickup_time: Duration,
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Serialize)]
struct KekSummary {
    provider: String,
    key_id: String,
    /// Apiservers that confirmed the key ID through metrics; the others were waited for.
    confirmed_by_metrics: Vec<String>,
    waited_pickup_time: bool,
    rewritten: u64,
    rewrite_revision: i64,
    verified_revision: i64,
    /// Objects of the provider per key ID at the verification (all on `key_id` when done).
    objects_by_key_id: BTreeMap<String, u64>,
    old_key_ids_unused: bool,
}

fn note(msg: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

pub fn run(args: KekArgs) -> anyhow::Result<ExitCode> {
    let (config, transformers) = args.config.load()?;
    let kms = config
        .resources
        .iter()
        .flat_map(|e| e.providers.iter())
        .find_map(|p| match p {
            ProviderConfiguration::Kms(k) if k.name == args.provider => Some(k.clone()),
            _ => None,
        })
        .with_context(|| {
            format!(
                "{} has no kms provider named {:?}",
                args.config.config.display(),
                args.provider
            )
        })?;
    if kms.api_version != KmsApiVersion::V2 {
        bail!("kms provider {:?} is v1: only KMS v2 reports key IDs; migrate with `rotate plan --provider kms`", kms.name);
    }
    let key_id = crate::commands::kms::connector()
        .connect_v2(&kms.name, &kms.endpoint, kms.timeout)
        .and_then(|s| s.status())
        .with_context(|| {
            format!(
                "asking the plugin of {:?} ({}) for its key ID",
                kms.name, kms.endpoint
            )
        })?
        .key_id;
    let want = id_hash(&key_id);
    note(&format!(
        "plugin {:?} reports key ID {} ({want})",
        kms.name,
        escape_control(&key_id)
    ));
    let apis = Apiservers::new(&args.apiservers)?;
    let rt = runtime()?;

    // Gate: every apiserver's latest Status sample for this provider is the new key ID.
    let started = Instant::now();
    let (confirmed, waited) = loop {
        let answers = rt.block_on(apis.key_ids());
        let mut confirmed = Vec::new();
        let mut without_metric = Vec::new();
        let mut lagging = Vec::new();
        for (url, answer) in apis.urls.iter().zip(answers) {
            match answer {
                Err(e) => lagging.push(format!("{url}: {e}")),
                Ok(samples) => {
                    let latest = samples
                        .iter()
                        .filter(|s| s.provider_name == kms.name)
                        .max_by(|a, b| a.last_seen.total_cmp(&b.last_seen));
                    match latest {
                        None => without_metric.push(url.clone()),
                        Some(s) if s.key_id_hash == want => confirmed.push(url.clone()),
                        Some(s) => lagging.push(format!("{url} last saw {}", s.key_id_hash)),
                    }
                }
            }
        }
        let pickup_done = without_metric.is_empty() || started.elapsed() >= args.pickup_time;
        if lagging.is_empty() && pickup_done {
            break (confirmed, !without_metric.is_empty());
        }
        if started.elapsed() >= args.wait_timeout {
            bail!(
                "timed out after {:?} waiting for every apiserver to use key ID {}: {}; nothing was rewritten",
                args.wait_timeout,
                escape_control(&key_id),
                escape_control(&lagging.join("; "))
            );
        }
        if !without_metric.is_empty() && lagging.is_empty() {
            note(&format!(
                "{} export no key-ID metric for {:?}: waiting the pick-up time ({:?} in total)",
                without_metric.join(", "),
                kms.name,
                args.pickup_time
            ));
        }
        std::thread::sleep(args.poll_interval);
    };

    let conn = args.etcd.connect(&rt)?;
    let resources: Vec<String> = config
        .resources
        .iter()
        .filter(|e| {
            e.providers
                .iter()
                .any(|p| matches!(p, ProviderConfiguration::Kms(k) if k.name == kms.name))
        })
        .flat_map(|e| e.resources.clone())
        .collect();
    let selection = if resources.iter().any(|r| r.contains('*')) {
        Selection::AllCovered
    } else {
        Selection::Only(resources.iter().map(|r| GroupResource::parse(r)).collect())
    };
    let opts = RewriteOptions {
        etcd_prefix: args.etcd.etcd_prefix.clone(),
        selection,
        ..Default::default()
    };
    let progress = Progress::new("rewriting");
    let result = rt.block_on(rewrite(&conn, transformers.clone(), &opts, &progress));
    progress.finish();
    let summary = result
        .context("rewrite stopped; rerun the same command (finished objects stay current)")?;

    let (report, revision) = rt.block_on(atrest_store::etcd::status::status(
        &conn,
        transformers,
        ReportOptions {
            etcd_prefix: args.etcd.etcd_prefix.clone(),
            verify: false,
            list: false,
        },
        &NoProgress,
    ))?;
    let mut by_key: BTreeMap<String, u64> = BTreeMap::new();
    for row in report
        .rows
        .iter()
        .filter(|r| r.provider == "kms v2" && r.key_name.as_deref() == Some(kms.name.as_str()))
    {
        *by_key
            .entry(row.key_id.clone().unwrap_or_default())
            .or_default() += row.count;
    }
    let old: u64 = by_key
        .iter()
        .filter(|(k, _)| **k != key_id)
        .map(|(_, n)| n)
        .sum();
    let out_doc = KekSummary {
        provider: kms.name.clone(),
        key_id: key_id.clone(),
        confirmed_by_metrics: confirmed,
        waited_pickup_time: waited,
        rewritten: summary.rewritten,
        rewrite_revision: summary.revision,
        verified_revision: revision,
        objects_by_key_id: by_key,
        old_key_ids_unused: old == 0,
    };
    // Printed before the verdict below, so that a closed pipe still ends with it.
    crate::commands::common::emit(ExitCode::SUCCESS, |out| match args.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            crate::commands::report_output::write_document(args.output, &out_doc, out)
        }
        OutputFormat::Table => {
            writeln!(
                out,
                "rewrote {} objects to key ID {} (revision {})",
                out_doc.rewritten,
                escape_control(&key_id),
                out_doc.rewrite_revision
            )?;
            for (k, n) in &out_doc.objects_by_key_id {
                writeln!(out, "  {n} objects under key ID {}", escape_control(k))?;
            }
            if old == 0 {
                writeln!(
                    out,
                    "no object uses an older key ID at revision {revision}: the old KEK version may be disabled once etcd has compacted past revision {revision} and no backup taken before it is needed"
                )?;
            }
            Ok(())
        }
    })?;
    if old > 0 {
        bail!("{old} objects still use an older key ID after the rewrite (unreadable or written meanwhile); keep the old KEK and rerun");
    }
    Ok(ExitCode::SUCCESS)
}
