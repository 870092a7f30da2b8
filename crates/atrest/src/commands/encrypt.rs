//! `atrest encrypt`: stdin → the exact bytes kube-apiserver would store for a resource and etcd
//! key (the key is the AES-GCM/KMS authenticated data) → stdout.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use atrest_core::config::{parse_feature_gates, FeatureGates, LoadOptions};
use atrest_core::{GroupResource, ResourceTransformer};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use zeroize::Zeroizing;

/// The flags `encrypt` and `decrypt` share.
#[derive(clap::Args, Debug)]
pub struct CryptoArgs {
    /// The EncryptionConfiguration file (as given to --encryption-provider-config).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The resource as written in the config: `secrets`, `deployments.apps`, `widgets.example.com`.
    #[arg(long, value_name = "RES")]
    pub resource: String,
    /// The full etcd key, including the etcd prefix: `/registry/secrets/default/my-secret`.
    #[arg(long, value_name = "KEY")]
    pub etcd_key: String,
    /// kube-apiserver feature gates, e.g. `KMSv1=true` (needed to load KMS v1 providers).
    #[arg(long, value_name = "GATES")]
    pub feature_gates: Vec<String>,
    /// As kube-apiserver's --encryption-provider-config-automatic-reload (stricter KMS names).
    #[arg(long)]
    pub encryption_provider_config_automatic_reload: bool,
    /// Read stdin as base64 instead of raw bytes.
    #[arg(long)]
    pub input_base64: bool,
    /// Write stdout as base64 instead of raw bytes.
    #[arg(long)]
    pub output_base64: bool,
}

impl CryptoArgs {
    /// The transformer for `--resource`, built from `--config`.
    pub fn transformer(&self) -> anyhow::Result<ResourceTransformer> {
        let mut gates = FeatureGates::default();
        for value in &self.feature_gates {
            parse_feature_gates(value, &mut gates)
                .map_err(anyhow::Error::msg)
                .context("parsing --feature-gates")?;
        }
        for unknown in &gates.unknown {
            tracing::warn!("ignoring feature gate {unknown}");
        }
        let opts = LoadOptions {
            kms_v1_enabled: gates.kms_v1.unwrap_or(false),
            automatic_reload: self.encryption_provider_config_automatic_reload,
        };
        let (_, transformers) = super::common::load_transformers(&self.config, &opts)?;
        Ok(transformers.for_resource(&GroupResource::parse(&self.resource)))
    }

    /// All of stdin (bounded, see [`super::common::read_stdin_value`]), base64-decoded if asked.
    pub fn read_input(&self) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        super::common::read_stdin_value(self.input_base64)
    }

    /// Writes the result in one piece (nothing reaches stdout unless the whole operation worked).
    pub fn write_output(&self, bytes: &[u8]) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.output_base64 {
            let text = Zeroizing::new(B64.encode(bytes));
            writeln!(out, "{}", text.as_str())
        } else {
            out.write_all(bytes)
        }
        .and_then(|()| out.flush())
        .context("writing stdout")
    }
}

#[derive(clap::Args, Debug)]
pub struct EncryptArgs {
    #[command(flatten)]
    pub crypto: CryptoArgs,
}

pub fn run(args: EncryptArgs) -> anyhow::Result<ExitCode> {
    let transformer = args.crypto.transformer()?;
    let plaintext = args.crypto.read_input()?;
    let stored = transformer
        .write(&plaintext, args.crypto.etcd_key.as_bytes())
        .with_context(|| {
            format!(
                "encrypting for {} with {}",
                args.crypto.resource,
                describe(&transformer.write_provider())
            )
        })?;
    args.crypto.write_output(&stored)?;
    Ok(ExitCode::SUCCESS)
}

/// `aesgcm key "key1"`, `kms v2 provider "vault" (key ID "k-2")`, `identity`.
pub fn describe(p: &atrest_core::ProviderInfo) -> String {
    use atrest_core::ProviderKind::{KmsV1, KmsV2};
    let mut text = p.kind.to_string();
    match (p.kind, &p.key_name) {
        (KmsV1 | KmsV2, Some(name)) => text.push_str(&format!(" provider {name:?}")),
        (_, Some(name)) => text.push_str(&format!(" key {name:?}")),
        _ => {}
    }
    if let Some(key_id) = &p.key_id {
        text.push_str(&format!(" (key ID {key_id:?})"));
    }
    text
}
