//! Flags shared by the commands that talk to a live etcd, named as etcdctl and kube-apiserver name
//! them, plus the EncryptionConfiguration flags.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use atrest_core::config::{EncryptionConfiguration, LoadOptions};
use atrest_core::Transformers;
use atrest_store::etcd::{EtcdConnection, EtcdSettings};

/// etcd connection flags.
#[derive(clap::Args, Debug, Clone)]
pub struct EtcdArgs {
    /// etcd endpoints, comma-separated or repeated (`https://10.0.0.1:2379`; `host:port` uses https
    /// when --cacert or --cert is given).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379",
        env = "ETCDCTL_ENDPOINTS"
    )]
    pub endpoints: Vec<String>,
    /// CA bundle to verify the etcd server certificates.
    #[arg(long, env = "ETCDCTL_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long, env = "ETCDCTL_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, env = "ETCDCTL_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// kube-apiserver's --etcd-prefix (the key prefix is also the AAD of aesgcm and KMS values).
    #[arg(long, default_value = "/registry")]
    pub etcd_prefix: String,
    /// Time to establish a connection (e.g. 2s, 500ms).
    #[arg(long, default_value = "2s", value_parser = super::common::parse_duration)]
    pub dial_timeout: Duration,
    /// Time for one etcd request (e.g. 5s).
    #[arg(long, default_value = "5s", value_parser = super::common::parse_duration)]
    pub command_timeout: Duration,
}

/// The EncryptionConfiguration flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArgs {
    /// The EncryptionConfiguration file (kube-apiserver's --encryption-provider-config).
    #[arg(long, alias = "encryption-provider-config", value_name = "FILE")]
    pub config: PathBuf,
    /// kube-apiserver feature gates that change how the config loads, e.g. `KMSv1=true`.
    #[arg(long, value_name = "GATES")]
    pub feature_gates: Option<String>,
    /// Load the config as with --encryption-provider-config-automatic-reload=true.
    #[arg(long)]
    pub encryption_provider_config_automatic_reload: bool,
}

impl ConfigArgs {
    pub fn load_options(&self) -> anyhow::Result<LoadOptions> {
        let mut opts = LoadOptions {
            automatic_reload: self.encryption_provider_config_automatic_reload,
            ..Default::default()
        };
        for gate in self
            .feature_gates
            .iter()
            .flat_map(|g| g.split(','))
            .map(str::trim)
            .filter(|g| !g.is_empty())
        {
            let (name, value) = gate
                .split_once('=')
                .with_context(|| format!("--feature-gates: {gate:?} is not NAME=true|false"))?;
            let value: bool = value
                .trim()
                .parse()
                .with_context(|| format!("--feature-gates: {name}={value} is not true or false"))?;
            match name.trim() {
                "KMSv1" => opts.kms_v1_enabled = value,
                other => tracing::debug!(
                    gate = other,
                    "feature gate does not affect encryption config loading"
                ),
            }
        }
        Ok(opts)
    }

    /// Loads and builds the transformers (KMS providers through their plugin sockets).
    pub fn load(&self) -> anyhow::Result<(EncryptionConfiguration, Transformers)> {
        super::common::load_transformers(&self.config, &self.load_options()?)
    }
}

impl EtcdArgs {
    pub fn settings(&self) -> EtcdSettings {
        EtcdSettings {
            endpoints: self
                .endpoints
                .iter()
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect(),
            cacert: self.cacert.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            dial_timeout: self.dial_timeout,
            command_timeout: self.command_timeout,
        }
    }

    /// Connects (and probes) on `rt`.
    pub fn connect(&self, rt: &tokio::runtime::Runtime) -> anyhow::Result<EtcdConnection> {
        Ok(rt.block_on(atrest_store::etcd::connect(&self.settings()))?)
    }
}

/// Whether `--endpoints` (or `ETCDCTL_ENDPOINTS`) was given rather than left at its default: for
/// commands where talking to etcd is optional.
pub fn endpoints_given() -> bool {
    std::env::var_os("ETCDCTL_ENDPOINTS").is_some()
        || std::env::args_os().any(|a| a.to_string_lossy().starts_with("--endpoints"))
}

/// The runtime the etcd commands use.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_gates() {
        let args = |g: &str| ConfigArgs {
            config: "x".into(),
            feature_gates: Some(g.into()),
            encryption_provider_config_automatic_reload: false,
        };
        assert!(args("KMSv1=true").load_options().unwrap().kms_v1_enabled);
        assert!(
            !args("KMSv1=false,Other=true")
                .load_options()
                .unwrap()
                .kms_v1_enabled
        );
        assert!(args("KMSv1").load_options().is_err());
        assert!(args("KMSv1=yes").load_options().is_err());
    }
}
