//! The monitor's Prometheus metrics.
//!
//! * `atrest_objects{resource,state,provider,key,key_id}` — objects per bucket; `state` is
//!   `current|stale|unencrypted|not_covered|unreadable|unknown` (see [`crate::counts`]).
//! * `atrest_etcd_up`, `atrest_watch_revision`, `atrest_last_resync_timestamp_seconds`,
//!   `atrest_last_resync_duration_seconds`, `atrest_resyncs_total{reason}`,
//!   `atrest_watch_events_total{type}`
//! * `atrest_config_info{hash}` (the applied file's `sha256:<hex>`),
//!   `atrest_config_reloads_total{status}`, `atrest_config_reload_last_timestamp_seconds{status}`
//! * `atrest_kms_provider_key_id_known{provider,endpoint}`, `atrest_build_info{component,version}`
//!
//! `atrest_objects` is a collector reading the shared counts under a short lock at scrape time;
//! a scan builds its counts aside and swaps them in, so a scrape never waits for a scan.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::counts::Counts;
use crate::kms::{KmsState, KmsStates};

/// The counts and the KMS states they are exported with (swapped together on a rescan).
pub struct Published {
    pub counts: Counts,
    pub kms: Arc<KmsStates>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HashLabels {
    hash: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: &'static str,
}

type F64Gauge = Gauge<f64, AtomicU64>;

/// Unix time now, in seconds.
pub fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Every metric the engine sets.
pub struct MonitorMetrics {
    pub etcd_up: Gauge,
    pub watch_revision: Gauge,
    pub last_resync: F64Gauge,
    pub last_resync_duration: F64Gauge,
    resyncs: Family<ReasonLabels, Counter>,
    events: Family<TypeLabels, Counter>,
    config_info: Family<HashLabels, Gauge>,
    config_hash: Mutex<String>,
    reloads: Family<StatusLabels, Counter>,
    reload_last: Family<StatusLabels, F64Gauge>,
}

impl MonitorMetrics {
    pub fn resync(&self, reason: &'static str) {
        self.resyncs.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn event(&self, kind: &'static str) {
        self.events
            .get_or_create(&TypeLabels { r#type: kind })
            .inc();
    }

    /// Exports `hash` as the applied config (one series).
    pub fn set_config_hash(&self, hash: &str) {
        let Ok(mut current) = self.config_hash.lock() else {
            return;
        };
        if !current.is_empty() {
            self.config_info.remove(&HashLabels {
                hash: current.clone(),
            });
        }
        *current = hash.to_string();
        self.config_info
            .get_or_create(&HashLabels {
                hash: hash.to_string(),
            })
            .set(1);
    }

    /// A reload attempt: `success` or `failure`.
    pub fn reload(&self, status: &'static str) {
        let labels = StatusLabels { status };
        self.reloads.get_or_create(&labels).inc();
        self.reload_last.get_or_create(&labels).set(now_seconds());
    }
}

/// Builds the registry over `published`; returns it with the metrics the engine sets.
pub fn registry(published: Arc<Mutex<Published>>) -> (Registry, Arc<MonitorMetrics>) {
    let metrics = Arc::new(MonitorMetrics {
        etcd_up: Gauge::default(),
        watch_revision: Gauge::default(),
        last_resync: F64Gauge::default(),
        last_resync_duration: F64Gauge::default(),
        resyncs: Family::default(),
        events: Family::default(),
        config_info: Family::default(),
        config_hash: Mutex::new(String::new()),
        reloads: Family::default(),
        reload_last: Family::default(),
    });
    let mut r = Registry::default();
    r.register_collector(Box::new(ObjectsCollector {
        published: Arc::clone(&published),
    }));
    r.register(
        "atrest_etcd_up",
        "Whether etcd answered the monitor's last request (1) or not (0).",
        metrics.etcd_up.clone(),
    );
    r.register(
        "atrest_watch_revision",
        "The etcd revision the gauges are current to.",
        metrics.watch_revision.clone(),
    );
    r.register(
        "atrest_last_resync_timestamp_seconds",
        "When the last full scan finished (Unix time).",
        metrics.last_resync.clone(),
    );
    r.register(
        "atrest_last_resync_duration_seconds",
        "How long the last full scan took.",
        metrics.last_resync_duration.clone(),
    );
    r.register(
        "atrest_resyncs",
        "Full scans, by why they ran (start, periodic, config, kms, compacted, disconnect, drift).",
        metrics.resyncs.clone(),
    );
    r.register(
        "atrest_watch_events",
        "etcd watch events applied, by type (put, delete).",
        metrics.events.clone(),
    );
    r.register(
        "atrest_config_info",
        "The EncryptionConfiguration in use; hash is sha256:<hex> of the file (always 1).",
        metrics.config_info.clone(),
    );
    r.register(
        "atrest_config_reloads",
        "Attempts to apply a changed EncryptionConfiguration, by status (success, failure).",
        metrics.reloads.clone(),
    );
    r.register(
        "atrest_config_reload_last_timestamp_seconds",
        "When a changed EncryptionConfiguration was last applied or refused, by status.",
        metrics.reload_last.clone(),
    );
    r.register_collector(Box::new(KmsCollector { published }));
    atrest_http::register_build_info(&mut r, "monitor");
    (r, metrics)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct ObjectLabels {
    resource: String,
    state: String,
    provider: String,
    key: String,
    key_id: String,
}

struct ObjectsCollector {
    published: Arc<Mutex<Published>>,
}

impl std::fmt::Debug for ObjectsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectsCollector")
    }
}

impl Collector for ObjectsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Copy the (small) series out under the lock, encode after releasing it.
        let series = match self.published.lock() {
            Ok(p) => p.counts.series(&p.kms),
            Err(_) => return Ok(()),
        };
        let mut family = encoder.encode_descriptor(
            "atrest_objects",
            "Objects in etcd by resource, state (current, stale, unencrypted, not_covered, unreadable, unknown), provider, key and KMS key_id.",
            None,
            MetricType::Gauge,
        )?;
        for ([resource, state, provider, key, key_id], n) in series {
            let labels = ObjectLabels {
                resource,
                state,
                provider,
                key,
                key_id,
            };
            ConstGauge::new(n as i64).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KmsLabels {
    provider: String,
    endpoint: String,
}

struct KmsCollector {
    published: Arc<Mutex<Published>>,
}

impl std::fmt::Debug for KmsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KmsCollector")
    }
}

impl Collector for KmsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let kms = match self.published.lock() {
            Ok(p) => Arc::clone(&p.kms),
            Err(_) => return Ok(()),
        };
        let mut family = encoder.encode_descriptor(
            "atrest_kms_provider_key_id_known",
            "Whether each KMS v2 provider of the config said its current key_id in its last Status (1) or not (0: its objects are unknown).",
            None,
            MetricType::Gauge,
        )?;
        for (provider, endpoint, state) in kms.all() {
            let known = i64::from(matches!(state, KmsState::Known(_)));
            ConstGauge::new(known)
                .encode(family.encode_family(&KmsLabels { provider, endpoint })?)?;
        }
        Ok(())
    }
}
