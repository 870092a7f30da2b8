//! `atrest decode`: a stored etcd value on stdin → the object kube-apiserver would serve, as YAML
//! or JSON (like etcd-io/auger's `decode`). With `--config` and `--etcd-key` the value is first
//! decrypted exactly as kube-apiserver reads it (the resource comes from the key unless
//! `--resource` names it).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use atrest_core::config::LoadOptions;
use atrest_core::GroupResource;
use atrest_store::{decode, keymap};
use zeroize::Zeroizing;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeFormat {
    Yaml,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct DecodeArgs {
    /// The EncryptionConfiguration to decrypt with first (needs --etcd-key).
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    pub config: Option<PathBuf>,
    /// The resource as the config names it; default: the one the etcd key belongs to.
    #[arg(long, value_name = "RES", requires = "config")]
    pub resource: Option<String>,
    /// The value's full etcd key (authenticated data of aesgcm and kms), e.g.
    /// `/registry/secrets/default/db`.
    #[arg(long, value_name = "KEY")]
    pub etcd_key: Option<String>,
    /// `--etcd-prefix` of the cluster (to find the resource in --etcd-key).
    #[arg(long, default_value = "/registry")]
    pub etcd_prefix: String,
    /// Set `metadata.resourceVersion` to this etcd mod revision, as kube-apiserver serves it.
    #[arg(long, value_name = "REV")]
    pub revision: Option<i64>,
    /// Read stdin as base64 instead of raw bytes.
    #[arg(long)]
    pub input_base64: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = DecodeFormat::Yaml)]
    pub output: DecodeFormat,
}

pub fn run(args: DecodeArgs) -> anyhow::Result<ExitCode> {
    let stored = super::common::read_stdin_value(args.input_base64)?;
    let plaintext = match &args.config {
        None => stored,
        Some(config) => {
            let key = args.etcd_key.as_deref().unwrap_or_default();
            let gr = match &args.resource {
                Some(r) => GroupResource::parse(r),
                None => {
                    keymap::parse_key(&args.etcd_prefix, key.as_bytes())
                        .with_context(|| {
                            format!(
                                "--etcd-key {key} is not an object key under --etcd-prefix {}; give --resource",
                                args.etcd_prefix
                            )
                        })?
                        .resource
                }
            };
            let (_, transformers) =
                super::common::load_transformers(config, &LoadOptions::default())?;
            let outcome = transformers
                .for_resource(&gr)
                .read(&stored, key.as_bytes())
                .with_context(|| format!("decrypting the value of {key} (resource {gr})"))?;
            Zeroizing::new(outcome.plaintext)
        }
    };
    let object = match args.revision {
        Some(rev) => decode::decode_object_at(&plaintext, rev),
        None => decode::decode_object(&plaintext),
    };
    let object = match object {
        Ok(o) => o,
        Err(e) => {
            if decode::media_of(&plaintext) == decode::Media::Unknown && args.config.is_none() {
                bail!("{e} (encrypted? give --config and --etcd-key to decrypt first)");
            }
            bail!("{e}");
        }
    };
    let text = match args.output {
        DecodeFormat::Json => serde_json::to_string_pretty(&object)? + "\n",
        DecodeFormat::Yaml => super::yaml_output::single(&object)?,
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        r => r.context("writing stdout").map(|()| ExitCode::SUCCESS),
    }
}
