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
mod lint;
mod load;
mod matching;
mod node;
mod raw;
mod typemeta;
mod validate;
mod yaml;
mod yaml_reader;

pub use build_rules::{maskings, Masking};
pub use error::{ConfigError, Problem, Rejection, Stage};
pub use explain::{
    explain, fips_secretbox_message, EntryExplanation, Explanation, ExtendedRead, Shadowed, Step,
    Warning,
};
pub use flags::{parse_feature_gates, FeatureGates};
pub use lint::{holds_key_material, lint};
pub use load::{content_hash, load_bytes, load_file, parse_bytes, parse_file, MAX_CONFIG_BYTES};
