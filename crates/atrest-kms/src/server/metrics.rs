//! The plugin's Prometheus metrics (`prometheus-client`), served with `/healthz` and `/readyz` by
//! [`atrest_http`] on `--metrics-listen 127.0.0.1:PORT`. No plaintext or key material is ever
//! exported; key ids are public by design.
//!
//! * `atrest_kms_requests_total{api,method,backend}` and
//!   `atrest_kms_request_errors_total{api,method,backend,code}`
//! * `atrest_kms_request_duration_seconds{api,method,backend}` (histogram)
//! * `atrest_kms_key_id_changes_total{backend}`, `atrest_kms_current_key_info{backend,key_id}`
//! * `atrest_kms_backend_healthy{backend}` (1/0) and
//!   `atrest_kms_backend_last_success_timestamp_seconds{backend}` (the last good probe)
//! * `atrest_build_info{component="kms-plugin",version}`
//!
//! Only the API versions being served have series: the v1beta1 methods appear only with
//! `--v1beta1`. The request series of served methods exist from the start (at 0), so `rate()` works
//! from the first scrape.
//!
//! `/healthz` is liveness (200 while the plugin serves); `/readyz` is 200 only while the backend
//! is healthy (the same state Status reports), else 503 with the reason.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::health::{Health, HealthState};

/// The RPCs we count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Method {
    V2Status,
    V2Encrypt,
    V2Decrypt,
    V1Version,
    V1Encrypt,
    V1Decrypt,
}

const V2_METHODS: [Method; 3] = [Method::V2Status, Method::V2Encrypt, Method::V2Decrypt];
const V1_METHODS: [Method; 3] = [Method::V1Version, Method::V1Encrypt, Method::V1Decrypt];

impl Method {
    fn labels(self) -> (&'static str, &'static str) {
        match self {
            Method::V2Status => ("v2", "Status"),
            Method::V2Encrypt => ("v2", "Encrypt"),
            Method::V2Decrypt => ("v2", "Decrypt"),
            Method::V1Version => ("v1beta1", "Version"),
            Method::V1Encrypt => ("v1beta1", "Encrypt"),
            Method::V1Decrypt => ("v1beta1", "Decrypt"),
        }
    }
}

const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    api: &'static str,
    method: &'static str,
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    api: &'static str,
    method: &'static str,
    backend: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    backend: &'static str,
    key_id: String,
}

type HistogramFamily = Family<CallLabels, Histogram, fn() -> Histogram>;

fn new_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// All metrics of one plugin process.
pub struct Metrics {
    backend: &'static str,
    registry: Arc<Registry>,
    requests: Family<CallLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: HistogramFamily,
    key_id_changes: Counter,
    current_key: Family<KeyLabels, Gauge>,
    key_id: Mutex<String>,
    healthy: Gauge,
    last_success: Gauge<f64, AtomicU64>,
}

impl Metrics {
    /// Metrics for `backend`; `v1beta1`: whether that API is served too.
    pub(crate) fn new(backend: &'static str, v1beta1: bool) -> Self {
        let requests = Family::<CallLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = HistogramFamily::new_with_constructor(new_histogram);
        let key_id_changes = Counter::default();
        let current_key = Family::<KeyLabels, Gauge>::default();
        let healthy = Gauge::default();
        let last_success = Gauge::<f64, AtomicU64>::default();

        let mut registry = Registry::default();
        registry.register(
            "atrest_kms_requests",
            "gRPC calls handled.",
            requests.clone(),
        );
        registry.register(
            "atrest_kms_request_errors",
            "gRPC calls that returned an error, by gRPC code.",
            errors.clone(),
        );
        registry.register(
            "atrest_kms_request_duration_seconds",
            "gRPC call latency.",
            duration.clone(),
        );
        registry.register(
            "atrest_kms_current_key_info",
            "The key id Status reports.",
            current_key.clone(),
        );
        atrest_http::register_build_info(&mut registry, "kms-plugin");
        let by_backend = registry.sub_registry_with_label(("backend".into(), backend.into()));
        by_backend.register(
            "atrest_kms_key_id_changes",
            "Times the current key id changed while serving.",
            key_id_changes.clone(),
        );
        by_backend.register(
            "atrest_kms_backend_healthy",
            "Whether the last backend probe succeeded.",
            healthy.clone(),
        );
        by_backend.register(
            "atrest_kms_backend_last_success_timestamp_seconds",
            "When the backend last passed a probe (Unix time).",
            last_success.clone(),
        );

        let served = V2_METHODS
            .iter()
            .chain(if v1beta1 { &V1_METHODS[..] } else { &[] });
        for m in served {
            let labels = Self::call_labels(backend, *m);
            drop(requests.get_or_create(&labels));
            drop(duration.get_or_create(&labels));
        }
        Self {
            backend,
            registry: Arc::new(registry),
            requests,
            errors,
            duration,
            key_id_changes,
            current_key,
            key_id: Mutex::new(String::new()),
            healthy,
            last_success,
        }
    }

    fn call_labels(backend: &'static str, m: Method) -> CallLabels {
        let (api, method) = m.labels();
        CallLabels {
            api,
            method,
            backend,
        }
    }

    /// The registry `/metrics` renders.
    pub(crate) fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry)
    }

    pub(crate) fn observe(&self, m: Method, elapsed: Duration, error_code: Option<&'static str>) {
        let labels = Self::call_labels(self.backend, m);
        self.requests.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if let Some(code) = error_code {
            self.errors
                .get_or_create(&ErrorLabels {
                    api: labels.api,
                    method: labels.method,
                    backend: self.backend,
                    code,
                })
                .inc();
        }
    }

    pub(crate) fn key_id_changed(&self, _new: &str) {
        self.key_id_changes.inc();
    }

    /// Exports `id` as the current key id (one series: the previous id's series is removed).
    pub(crate) fn set_key_id(&self, id: &str) {
        let Ok(mut k) = self.key_id.lock() else {
            return;
        };
        if k.as_str() == id {
            return;
        }
        if !k.is_empty() {
            self.current_key.remove(&KeyLabels {
                backend: self.backend,
                key_id: k.clone(),
            });
        }
        *k = id.to_string();
        if !id.is_empty() {
            self.current_key
                .get_or_create(&KeyLabels {
                    backend: self.backend,
                    key_id: id.to_string(),
                })
                .set(1);
        }
    }

    /// Records a probe result: the health gauge, and on success the time of the last success.
    pub(crate) fn set_healthy(&self, ok: bool) {
        self.healthy.set(i64::from(ok));
        if ok {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.last_success.set(now);
        }
    }

    /// The Prometheus text exposition (format 0.0.4), as `/metrics` serves it by default.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The HTTP endpoints of `--metrics-listen`: readiness is the backend's health.
pub(crate) fn endpoints(metrics: &Metrics, health: Arc<HealthState>) -> atrest_http::Endpoints {
    atrest_http::Endpoints {
        registry: metrics.registry(),
        ready: Arc::new(move || match health.get() {
            Health::Ok => Ok(()),
            Health::Failing(r) => Err(format!("backend unhealthy: {r}")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_served_apis_have_series() {
        let v2_only = Metrics::new("local", false).render();
        assert!(
            v2_only.contains(
                "atrest_kms_requests_total{api=\"v2\",method=\"Status\",backend=\"local\"} 0"
            ),
            "{v2_only}"
        );
        assert!(!v2_only.contains("v1beta1"), "{v2_only}");
        let both = Metrics::new("local", true).render();
        assert!(
            both.contains(
                "atrest_kms_requests_total{api=\"v1beta1\",method=\"Encrypt\",backend=\"local\"} 0"
            ),
            "{both}"
        );
    }

    #[test]
    fn key_id_series_follow_the_current_key_and_success_is_timestamped() {
        let m = Metrics::new("vault", false);
        assert!(m
            .render()
            .contains("atrest_kms_backend_last_success_timestamp_seconds{backend=\"vault\"} 0"));
        m.set_key_id("k1");
        m.set_key_id("k\"2");
        m.key_id_changed("k\"2");
        m.set_healthy(true);
        let text = m.render();
        assert!(!text.contains("key_id=\"k1\""), "{text}");
        assert!(
            text.contains("atrest_kms_current_key_info{backend=\"vault\",key_id=\"k\\\"2\"} 1"),
            "{text}"
        );
        assert!(text.contains("atrest_kms_key_id_changes_total{backend=\"vault\"} 1"));
        assert!(text.contains("atrest_kms_backend_healthy{backend=\"vault\"} 1"));
        let line = text
            .lines()
            .find(|l| l.starts_with("atrest_kms_backend_last_success_timestamp_seconds{"))
            .unwrap();
        let ts: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(ts > 1.7e9, "{line}");
        assert!(text.contains("atrest_build_info{component=\"kms-plugin\",version=\""));
        m.observe(
            Method::V2Decrypt,
            Duration::from_millis(2),
            Some("NotFound"),
        );
        assert!(m.render().contains(
            "atrest_kms_request_errors_total{api=\"v2\",method=\"Decrypt\",backend=\"vault\",code=\"NotFound\"} 1"
        ));
    }
}
