//! Loading a file the way kube-apiserver does: read (F1/F2), decode strictly (F3/F4), default,
//! validate (V-rules, aggregated), convert to the public model, then the transformer-building
//! rules (L1/L2).

use std::time::Duration;

use zeroize::Zeroizing;

use super::raw::{self, RawConfig};
use super::{
    build_rules, decode, defaults, gotext, validate, ConfigError, EncryptionConfiguration, Key,
    KeysConfiguration, KmsApiVersion, KmsConfiguration, LoadOptions, Problem,
    ProviderConfiguration, Rejection, ResourceConfiguration,
};

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

/// Largest config file read: far above any real one (a 200,000-key config is ~15 MB), and
/// `/dev/zero` or a runaway file does not exhaust memory.
pub const MAX_CONFIG_BYTES: u64 = 64 << 20;

fn read_bounded(path: &std::path::Path) -> std::io::Result<Zeroizing<Vec<u8>>> {
    use std::io::Read;
    let mut out = Zeroizing::new(Vec::new());
    std::fs::File::open(path)?
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("file is larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    Ok(out)
}

fn read_config(path: &std::path::Path, shown: &str) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    read_bounded(path).map_err(|err| {
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

/// Field path → 1-based YAML line, kept for the transformer-building rules' messages.
type FieldLines = std::collections::HashMap<String, usize>;

fn parse_with_lines(
    bytes: &[u8],
    path: &str,
    opts: &LoadOptions,
) -> Result<(EncryptionConfiguration, FieldLines), ConfigError> {
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
    // Opening a directory succeeds in Go; reading it is what fails. So does reading past our
    // size cap (InvalidData).
    let operation = if matches!(
        err.kind(),
        std::io::ErrorKind::IsADirectory | std::io::ErrorKind::InvalidData
    ) {
        "read"
    } else {
        "open"
    };
    format!("{operation} {path}: {lowered}")
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
