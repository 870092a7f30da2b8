//! `atrest decrypt`: an etcd value on stdin → the plaintext kube-apiserver would read → stdout;
//! which provider and key read it, and whether it is stale, on stderr.

use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use super::encrypt::{describe, CryptoArgs};

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReportFormat {
    #[default]
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct DecryptArgs {
    #[command(flatten)]
    pub crypto: CryptoArgs,
    /// Format of the report on stderr.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: ReportFormat,
}

/// What `decrypt` reports on stderr (never the value itself).
#[derive(Serialize)]
struct Report<'a> {
    provider: &'static str,
    provider_kind: String,
    provider_index: usize,
    key_name: Option<&'a str>,
    key_index: Option<usize>,
    key_id: Option<&'a str>,
    stale: bool,
}

pub fn run(args: DecryptArgs) -> anyhow::Result<ExitCode> {
    let transformer = args.crypto.transformer()?;
    let stored = args.crypto.read_input()?;
    let outcome = transformer
        .read(&stored, args.crypto.etcd_key.as_bytes())
        .with_context(|| {
            format!(
                "decrypting the value for {} at {}",
                args.crypto.resource, args.crypto.etcd_key
            )
        })?;
    let p = &outcome.provider;
    match args.output {
        ReportFormat::Json => {
            let report = Report {
                provider: p.kind.config_name(),
                provider_kind: p.kind.to_string(),
                provider_index: p.provider_index,
                key_name: p.key_name.as_deref(),
                key_index: p.key_index,
                key_id: p.key_id.as_deref(),
                stale: outcome.stale,
            };
            eprintln!("{}", serde_json::to_string(&report)?);
        }
        ReportFormat::Text => {
            let stale = if outcome.stale {
                "stale: yes (a no-op update would rewrite it)"
            } else {
                "stale: no"
            };
            eprintln!(
                "read by {} (provider #{}); {stale}",
                describe(p),
                p.provider_index
            );
        }
    }
    let plaintext = zeroize::Zeroizing::new(outcome.plaintext);
    args.crypto.write_output(&plaintext)?;
    Ok(ExitCode::SUCCESS)
}
