//! # atrest-core
//!
//! The pure heart of atrest: it reads and writes exactly the bytes kube-apiserver (v1.36) reads and
//! writes for Kubernetes encryption at rest.
//!
//! * [`config`] loads and validates an `EncryptionConfiguration` file with kube-apiserver's rules and
//!   error texts, and matches resources to provider lists (wildcards included).
//! * [`providers`] holds one module per provider (`identity`, `aescbc`, `aesgcm`, `secretbox`,
//!   `kms` v1 and v2): bytes in, bytes out.
//! * [`transformer`] is the read/write algorithm over an ordered provider list: every matching prefix
//!   is tried in order, identity's errors are dropped, and "stale" is computed exactly as upstream.
//! * [`kms`] is the small, synchronous trait through which KMS plugins are reached. The gRPC client
//!   lives in `atrest-kms`; tests use an in-process implementation.
//!
//! This crate does no I/O beyond reading a config file and calling the KMS trait: no tokio, no gRPC,
//! no etcd. Everything above it (plugin, etcd tooling, snapshots, CLI) builds on these types.
#![forbid(unsafe_code)]

mod build;
pub mod config;
pub mod fips;
pub mod kms;
mod list;
mod prefix;
pub mod providers;
pub mod resource;
pub mod transformer;

pub use build::BuildOptions;
pub use config::{EncryptionConfiguration, LoadOptions};
pub use resource::GroupResource;
pub use transformer::{
    FailureKind, KmsOutage, ProviderInfo, ProviderKind, ReadOutcome, ResourceTransformer,
    TransformError, Transformers,
};

/// Loads `path` with kube-apiserver's rules ([`config::load_file`]) and builds every resource's
/// transformer; KMS providers connect through `kms`.
pub fn load_transformers(
    path: &std::path::Path,
    opts: &LoadOptions,
    kms: std::sync::Arc<dyn kms::KmsConnector>,
) -> Result<(EncryptionConfiguration, Transformers), config::ConfigError> {
    let config = config::load_file(path, opts)?;
    let transformers = Transformers::build(&config, kms)?;
    Ok((config, transformers))
}
