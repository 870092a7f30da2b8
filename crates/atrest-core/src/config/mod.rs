//! `EncryptionConfiguration`: the typed model, loading (YAML or JSON, strict), defaulting,
//! validation with kube-apiserver's rules and texts (CONFIG.md §2–§3), and resource matching (§4).
//!
//! OWNER: core-config helper. The model types below are the contract shared with the providers
//! (transformer building) and the CLI; extend them, do not rename them.

use std::time::Duration;

use zeroize::Zeroizing;

/// A loaded, defaulted and validated configuration.
#[derive(Debug, Clone)]
pub struct EncryptionConfiguration {
    pub resources: Vec<ResourceConfiguration>,
    /// `"sha256:" + lowercase hex(SHA-256(raw file bytes))`, as kube-apiserver computes it.
    pub content_hash: String,
}

#[derive(Debug, Clone)]
pub struct ResourceConfiguration {
    /// As written: `secrets`, `deployments.apps`, `*.`, `*.*`, ...
    pub resources: Vec<String>,
    /// Ordered; `[0]` writes.
    pub providers: Vec<ProviderConfiguration>,
}

#[derive(Debug, Clone)]
pub enum ProviderConfiguration {
    AesGcm(KeysConfiguration),
    AesCbc(KeysConfiguration),
    Secretbox(KeysConfiguration),
    Identity,
    Kms(KmsConfiguration),
}

/// `keys:` of aesgcm, aescbc and secretbox. `keys[0]` writes.
#[derive(Debug, Clone)]
pub struct KeysConfiguration {
    pub keys: Vec<Key>,
}

/// One named key. `secret` is the decoded key material (validated length), zeroized on drop.
#[derive(Clone)]
pub struct Key {
    pub name: String,
    pub secret: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .field("secret", &"REDACTED")
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsApiVersion {
    V1,
    V2,
}

#[derive(Debug, Clone)]
pub struct KmsConfiguration {
    pub api_version: KmsApiVersion,
    pub name: String,
    /// The `unix://` URL as written.
    pub endpoint: String,
    /// v1 only (defaulted to 1000); `None` for v2.
    pub cachesize: Option<i32>,
    /// Per-RPC timeout, default 3s.
    pub timeout: Duration,
}

/// kube-apiserver flags that change the verdict.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// `--feature-gates=KMSv1=true`.
    pub kms_v1_enabled: bool,
    /// `--encryption-provider-config-automatic-reload=true` (makes all KMS names unique, V21).
    pub automatic_reload: bool,
}

mod build_rules;
mod decode;
mod defaults;
mod endpoint;
mod error;
mod explain;
mod flags;
mod gotext;
mod json;
mod matching;
mod node;
mod raw;
mod typemeta;
mod validate;
mod yaml;

pub use build_rules::{maskings, Masking};
pub use error::{ConfigError, Problem, Rejection, Stage};
pub use explain::{explain, EntryExplanation, Explanation, Step, Warning};
pub use flags::{parse_feature_gates, FeatureGates};

use raw::RawConfig;

/// Reads, decodes (strictly), defaults and validates a config file, then applies the
/// transformer-building rules (masking, KMSv1 gate): `Ok` exactly when kube-apiserver would load it
/// with these flags.
pub fn load_file(
    path: &std::path::Path,
    opts: &LoadOptions,
) -> Result<EncryptionConfiguration, ConfigError> {
    let shown = path.display().to_string();
    let bytes = read_config(path, &shown)?;
    load_bytes(&bytes, &shown, opts)
}

/// Like [`load_file`] but stops before the transformer-building rules (see [`parse_bytes`]).
pub fn parse_file(
    path: &std::path::Path,
    opts: &LoadOptions,
) -> Result<EncryptionConfiguration, ConfigError> {
    let shown = path.display().to_string();
    let bytes = read_config(path, &shown)?;
    parse_bytes(&bytes, &shown, opts)
}

fn read_config(path: &std::path::Path, shown: &str) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    std::fs::read(path).map(Zeroizing::new).map_err(|err| {
        let reason = format!(
            "error reading encryption provider configuration file {}: {}",
            gotext::quote(shown),
            go_io_error(&err, shown)
        );
        loading_error(reason)
    })
}

/// Like [`load_file`] for bytes already read; `path` is only used in messages.
pub fn load_bytes(
    bytes: &[u8],
    path: &str,
    opts: &LoadOptions,
) -> Result<EncryptionConfiguration, ConfigError> {
    let (config, lines) = parse_with_lines(bytes, path, opts)?;
    build_rules::check(&config, opts, &lines)
        .map_err(|p| ConfigError::Rejected(Rejection::build(p)))?;
    Ok(config)
}

/// Decodes, defaults and validates (the "error while parsing file" stage) without the
/// transformer-building rules, so tools can still explain a file that masks resources or needs
/// the KMSv1 gate. Use [`load_bytes`] to decide whether kube-apiserver would load it.
pub fn parse_bytes(
    bytes: &[u8],
    path: &str,
    opts: &LoadOptions,
) -> Result<EncryptionConfiguration, ConfigError> {
    parse_with_lines(bytes, path, opts).map(|(config, _)| config)
}

fn parse_with_lines(
    bytes: &[u8],
    path: &str,
    opts: &LoadOptions,
) -> Result<
    (
        EncryptionConfiguration,
        std::collections::HashMap<String, usize>,
    ),
    ConfigError,
> {
    if bytes.is_empty() {
        return Err(loading_error(format!(
            "encryption provider configuration file {} is empty",
            gotext::quote(path)
        )));
    }
    let mut raw = decode::decode(bytes).map_err(|err| {
        let mut problem = err.problem;
        if !err.unexpected_type {
            problem.message = format!(
                "error decoding encryption provider configuration file {}: {}",
                gotext::quote(path),
                problem.message
            );
        }
        ConfigError::Rejected(Rejection::parse(vec![problem]))
    })?;
    defaults::apply(&mut raw);
    let problems = validate::validate(&raw, opts.automatic_reload);
    if !problems.is_empty() {
        return Err(ConfigError::Rejected(Rejection::parse(problems)));
    }
    let config = into_model(&raw, content_hash(bytes))?;
    Ok((config, std::mem::take(&mut raw.lines)))
}

/// `"sha256:" + lowercase hex(SHA-256(bytes))`, kube-apiserver's content hash of the raw file.
pub fn content_hash(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// F1/F2 are wrapped once more upstream: `error while loading file: …`.
fn loading_error(reason: String) -> ConfigError {
    ConfigError::Rejected(Rejection::parse(vec![Problem::new(format!(
        "error while loading file: {reason}"
    ))]))
}

/// Go's `*PathError` text: `open <path>: no such file or directory`.
fn go_io_error(err: &std::io::Error, path: &str) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error") {
        Some(cut) => &text[..cut],
        None => text.as_str(),
    };
    let mut chars = text.chars();
    let lowered = match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    };
    format!("open {path}: {lowered}")
}

/// The validated raw form → the public model (secrets decoded into zeroizing buffers).
fn into_model(
    raw: &RawConfig,
    content_hash: String,
) -> Result<EncryptionConfiguration, ConfigError> {
    let mut resources = Vec::with_capacity(raw.resources.len());
    for entry in &raw.resources {
        let mut providers = Vec::with_capacity(entry.providers.len());
        for provider in &entry.providers {
            providers.push(provider_model(provider)?);
        }
        resources.push(ResourceConfiguration {
            resources: entry.resources.clone(),
            providers,
        });
    }
    Ok(EncryptionConfiguration {
        resources,
        content_hash,
    })
}

fn provider_model(p: &raw::RawProvider) -> Result<ProviderConfiguration, ConfigError> {
    // Validation guarantees exactly one field; the order mirrors upstream's switch.
    if let Some(kms) = &p.kms {
        let api_version = if kms.api_version == "v2" {
            KmsApiVersion::V2
        } else {
            KmsApiVersion::V1
        };
        let nanos = u64::try_from(kms.timeout.unwrap_or(defaults::DEFAULT_KMS_TIMEOUT_NANOS))
            .unwrap_or_default();
        return Ok(ProviderConfiguration::Kms(KmsConfiguration {
            api_version,
            name: kms.name.clone(),
            endpoint: kms.endpoint.clone(),
            cachesize: kms.cachesize,
            timeout: Duration::from_nanos(nanos),
        }));
    }
    let keys = |k: &raw::RawKeys| -> Result<KeysConfiguration, ConfigError> {
        let mut keys = Vec::new();
        for key in k.keys.as_deref().unwrap_or_default() {
            let secret = validate::decode_secret(&key.secret)
                .ok_or_else(|| ConfigError::Parse("secrets must be base64 encoded".to_owned()))?;
            keys.push(Key {
                name: key.name.clone(),
                secret,
            });
        }
        Ok(KeysConfiguration { keys })
    };
    match (&p.aesgcm, &p.aescbc, &p.secretbox) {
        (Some(k), _, _) => Ok(ProviderConfiguration::AesGcm(keys(k)?)),
        (_, Some(k), _) => Ok(ProviderConfiguration::AesCbc(keys(k)?)),
        (_, _, Some(k)) => Ok(ProviderConfiguration::Secretbox(keys(k)?)),
        _ => Ok(ProviderConfiguration::Identity),
    }
}
