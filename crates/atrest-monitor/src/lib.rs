//! # atrest-monitor
//!
//! The engine of `atrest monitor`: how much of a live etcd is encrypted, and with what, as
//! Prometheus gauges that follow every write. One scan at one revision (the same scan and
//! classification as `atrest status`, so the totals are the same), then an etcd watch with
//! previous values; memory grows with the number of distinct (resource, state, provider, key)
//! buckets, not with the number of objects. See [`engine`] for when it rescans, [`kms`] for the
//! `unknown` state, [`config`] for reloading the EncryptionConfiguration and [`metrics`] for the
//! exported series. The HTTP endpoints come from `atrest-http`; KMS plugins are reached through
//! whatever [`KmsConnector`] the caller gives (the CLI passes atrest-kms's gRPC client).
#![forbid(unsafe_code)]

pub mod config;
pub mod counts;
mod engine;
pub mod kms;
pub mod metrics;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atrest_core::config::LoadOptions;
use atrest_core::kms::KmsConnector;
use atrest_store::etcd::{EtcdError, EtcdSettings};
use prometheus_client::registry::Registry;

use crate::config::ConfigSource;
use crate::counts::{Classifier, Counts};
use crate::engine::{Engine, Readiness};
use crate::metrics::Published;

/// How to monitor.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    pub etcd: EtcdSettings,
    /// kube-apiserver's `--etcd-prefix`.
    pub etcd_prefix: String,
    /// The EncryptionConfiguration file.
    pub config: PathBuf,
    pub load_options: LoadOptions,
    /// Full rescan interval (heals any drift).
    pub resync: Duration,
    /// How often the config file is read and hashed (kube-apiserver: every minute).
    pub config_poll: Duration,
    /// How often each KMS v2 plugin is asked for its Status.
    pub kms_poll: Duration,
}

impl MonitorOptions {
    /// Defaults: prefix `/registry`, resync 1h, config poll 1m, KMS Status every 10s.
    pub fn new(etcd: EtcdSettings, config: PathBuf) -> Self {
        Self {
            etcd,
            etcd_prefix: "/registry".into(),
            config,
            load_options: LoadOptions::default(),
            resync: Duration::from_secs(3600),
            config_poll: Duration::from_secs(60),
            kms_poll: Duration::from_secs(10),
        }
    }
}

/// Why the monitor cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("{path}: {message}")]
    Config { path: String, message: String },
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("starting the monitor runtime: {0}")]
    Runtime(std::io::Error),
}

/// A running monitor. Dropping it stops the engine (without waiting for it).
pub struct Monitor {
    registry: Arc<Registry>,
    published: Arc<Mutex<Published>>,
    readiness: Arc<Readiness>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    /// Loads the config (an error if it does not load), checks the etcd settings (an error for a
    /// missing certificate file or a cert without key; an unreachable etcd is only logged and
    /// retried), then runs the engine on its own thread with its own runtime.
    pub fn start(
        opts: MonitorOptions,
        connector: Arc<dyn KmsConnector>,
    ) -> Result<Monitor, MonitorError> {
        let source = ConfigSource::new(&opts.config, opts.load_options, connector);
        let loaded = source.load()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("atrest-monitor")
            .enable_all()
            .build()
            .map_err(MonitorError::Runtime)?;
        let first = runtime.block_on(atrest_store::etcd::connect(&opts.etcd));
        let conn = match first {
            Ok(c) => Some(c),
            Err(e @ (EtcdError::Settings(_) | EtcdError::ReadFile { .. })) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "etcd not reachable at start; retrying in the background");
                None
            }
        };

        let published = Arc::new(Mutex::new(Published {
            counts: Counts::default(),
            kms: Arc::clone(&loaded.kms),
        }));
        let (registry, metrics) = metrics::registry(Arc::clone(&published));
        metrics.set_config_hash(&loaded.hash);
        let readiness = Arc::new(Readiness::default());
        let engine = Engine {
            classifier: Classifier::new(loaded.transformers.clone(), &opts.etcd_prefix),
            opts,
            source,
            loaded,
            published: Arc::clone(&published),
            metrics,
            readiness: Arc::clone(&readiness),
            generation: 0,
            failed_hash: None,
        };
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("atrest-monitor".into())
            .spawn(move || runtime.block_on(engine.run(conn, stop_rx)))
            .map_err(MonitorError::Runtime)?;
        Ok(Monitor {
            registry: Arc::new(registry),
            published,
            readiness,
            stop,
            thread: Some(thread),
        })
    }

    /// `/metrics`, and `/readyz` = the first scan has finished.
    pub fn endpoints(&self) -> atrest_http::Endpoints {
        let readiness = Arc::clone(&self.readiness);
        atrest_http::Endpoints {
            registry: Arc::clone(&self.registry),
            ready: Arc::new(move || {
                if readiness.ready.load(Ordering::SeqCst) {
                    return Ok(());
                }
                let why = readiness.last_error.lock().ok().and_then(|e| e.clone());
                Err(match why {
                    Some(e) => format!("waiting for the first scan of etcd ({e})"),
                    None => "waiting for the first scan of etcd".into(),
                })
            }),
        }
    }

    /// Whether the first scan has finished.
    pub fn is_ready(&self) -> bool {
        self.readiness.ready.load(Ordering::SeqCst)
    }

    /// Objects per `state` label right now.
    pub fn objects_by_state(&self) -> BTreeMap<&'static str, u64> {
        match self.published.lock() {
            Ok(p) => p.counts.by_state(&p.kms),
            Err(_) => BTreeMap::new(),
        }
    }

    /// Stops the engine and waits for its thread.
    pub fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
