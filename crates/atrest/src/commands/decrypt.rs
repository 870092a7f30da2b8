//! `atrest decrypt`: an etcd value on stdin → the plaintext kube-apiserver would read → stdout;
//! which provider and key read it, and whether it is stale, on stderr. With `-o json|yaml` stdout
//! holds one document instead: the report and the plaintext (base64).

use std::process::ExitCode;

use anyhow::Context;
use base64::Engine as _;
use serde::Serialize;

use super::encrypt::{describe, CryptoArgs};
use super::report_output::{write_document, OutputFormat};

#[derive(clap::Args, Debug)]
pub struct DecryptArgs {
    #[command(flatten)]
    pub crypto: CryptoArgs,
    /// `text`: plaintext on stdout, report on stderr; `json`/`yaml`: one document on stdout with
    /// the report and the plaintext as base64.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// What `decrypt -o json|yaml` prints.
#[derive(Serialize)]
struct Report<'a> {
    provider: &'static str,
    provider_kind: String,
    provider_index: usize,
    key_name: Option<&'a str>,
    key_index: Option<usize>,
    key_id: Option<&'a str>,
    stale: bool,
    /// The plaintext, base64 (as a Secret's `data`).
    plaintext: &'a str,
}

pub fn run(args: DecryptArgs) -> anyhow::Result<ExitCode> {
    let transformer = args.crypto.transformer()?;
    super::common::check_kms_for(&transformer)?;
    let stored = args.crypto.read_input()?;
    let outcome = transformer
        .read(&stored, args.crypto.etcd_key.as_bytes())
        .map_err(
            |e| match super::common::outage_of(&e, "nothing was printed") {
                Some(outage) => outage,
                None => anyhow::Error::new(e),
            },
        )
        .with_context(|| {
            format!(
                "decrypting the value for {} at {}",
                args.crypto.resource, args.crypto.etcd_key
            )
        })?;
    let p = &outcome.provider;
    let plaintext = zeroize::Zeroizing::new(outcome.plaintext);
    if args.output.is_document() {
        let encoded = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD.encode(plaintext.as_slice()),
        );
        let report = Report {
            provider: p.kind.config_name(),
            provider_kind: p.kind.to_string(),
            provider_index: p.provider_index,
            key_name: p.key_name.as_deref(),
            key_index: p.key_index,
            key_id: p.key_id.as_deref(),
            stale: outcome.stale,
            plaintext: &encoded,
        };
        return super::common::emit(ExitCode::SUCCESS, |out| {
            write_document(args.output, &report, out)
        });
    }
    let stale = if outcome.stale {
        "stale: yes (a no-op update would rewrite it)"
    } else {
        "stale: no"
    };
    note!(
        "read by {} (provider #{}); {stale}",
        describe(p),
        p.provider_index
    );
    args.crypto.write_output(&plaintext)?;
    Ok(ExitCode::SUCCESS)
}
