//! Prometheus text metrics and `/healthz`, `/readyz` on a tiny hand-rolled HTTP/1.1 server
//! (`--metrics-listen 127.0.0.1:PORT`). No plaintext or key material is ever exported; key ids are
//! public by design.
//!
//! * `atrest_kms_requests_total{api,method,backend}` and
//!   `atrest_kms_request_errors_total{api,method,backend,code}`
//! * `atrest_kms_request_duration_seconds{api,method,backend}` (histogram)
//! * `atrest_kms_key_id_changes_total{backend}`, `atrest_kms_current_key_info{backend,key_id}`
//! * `atrest_kms_backend_healthy{backend}` (1/0)
//!
//! `/healthz` is liveness (200 while the plugin serves); `/readyz` is 200 only while the backend
//! is healthy (the same state Status reports), else 503 with the reason.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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

const METHODS: [Method; 6] = [
    Method::V2Status,
    Method::V2Encrypt,
    Method::V2Decrypt,
    Method::V1Version,
    Method::V1Encrypt,
    Method::V1Decrypt,
];

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

#[derive(Default)]
struct Series {
    calls: AtomicU64,
    sum_nanos: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
}

/// All counters of one plugin process.
pub struct Metrics {
    backend: &'static str,
    series: [Series; METHODS.len()],
    errors: Mutex<BTreeMap<(Method, &'static str), u64>>,
    key_id_changes: AtomicU64,
    key_id: Mutex<String>,
    healthy: AtomicU64,
}

impl Metrics {
    pub(crate) fn new(backend: &'static str) -> Self {
        Self {
            backend,
            series: Default::default(),
            errors: Mutex::new(BTreeMap::new()),
            key_id_changes: AtomicU64::new(0),
            key_id: Mutex::new(String::new()),
            healthy: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, m: Method, elapsed: Duration, error_code: Option<&'static str>) {
        let s = &self.series[m as usize];
        s.calls.fetch_add(1, Ordering::Relaxed);
        s.sum_nanos.fetch_add(
            elapsed.as_nanos().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            s.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(code) = error_code {
            if let Ok(mut e) = self.errors.lock() {
                *e.entry((m, code)).or_insert(0) += 1;
            }
        }
    }

    pub(crate) fn key_id_changed(&self, _new: &str) {
        self.key_id_changes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_key_id(&self, id: &str) {
        if let Ok(mut k) = self.key_id.lock() {
            if k.as_str() != id {
                *k = id.to_string();
            }
        }
    }

    pub(crate) fn set_healthy(&self, ok: bool) {
        self.healthy.store(u64::from(ok), Ordering::Relaxed);
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let b = self.backend;
        let mut out = String::new();
        let _ = writeln!(out, "# HELP atrest_kms_requests_total gRPC calls handled.\n# TYPE atrest_kms_requests_total counter");
        for m in METHODS {
            let (api, method) = m.labels();
            let n = self.series[m as usize].calls.load(Ordering::Relaxed);
            let _ = writeln!(out, "atrest_kms_requests_total{{api=\"{api}\",method=\"{method}\",backend=\"{b}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP atrest_kms_request_errors_total gRPC calls that returned an error, by gRPC code.\n# TYPE atrest_kms_request_errors_total counter"
        );
        if let Ok(errors) = self.errors.lock() {
            for ((m, code), n) in errors.iter() {
                let (api, method) = m.labels();
                let _ = writeln!(
                    out,
                    "atrest_kms_request_errors_total{{api=\"{api}\",method=\"{method}\",backend=\"{b}\",code=\"{code}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP atrest_kms_request_duration_seconds gRPC call latency.\n# TYPE atrest_kms_request_duration_seconds histogram"
        );
        for m in METHODS {
            let (api, method) = m.labels();
            let s = &self.series[m as usize];
            let mut cum = 0;
            for (i, le) in BUCKETS.iter().enumerate() {
                cum += s.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "atrest_kms_request_duration_seconds_bucket{{api=\"{api}\",method=\"{method}\",backend=\"{b}\",le=\"{le}\"}} {cum}"
                );
            }
            let calls = s.calls.load(Ordering::Relaxed);
            let sum = s.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let l = format!("api=\"{api}\",method=\"{method}\",backend=\"{b}\"");
            let _ = writeln!(
                out,
                "atrest_kms_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {calls}"
            );
            let _ = writeln!(out, "atrest_kms_request_duration_seconds_sum{{{l}}} {sum}");
            let _ = writeln!(
                out,
                "atrest_kms_request_duration_seconds_count{{{l}}} {calls}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP atrest_kms_key_id_changes_total Times the current key id changed while serving.\n# TYPE atrest_kms_key_id_changes_total counter"
        );
        let _ = writeln!(
            out,
            "atrest_kms_key_id_changes_total{{backend=\"{b}\"}} {}",
            self.key_id_changes.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# HELP atrest_kms_current_key_info The key id Status reports.\n# TYPE atrest_kms_current_key_info gauge");
        if let Ok(k) = self.key_id.lock() {
            if !k.is_empty() {
                let _ = writeln!(
                    out,
                    "atrest_kms_current_key_info{{backend=\"{b}\",key_id=\"{}\"}} 1",
                    k.replace(['"', '\\', '\n'], "_")
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP atrest_kms_backend_healthy Whether the last backend probe succeeded.\n# TYPE atrest_kms_backend_healthy gauge"
        );
        let _ = writeln!(
            out,
            "atrest_kms_backend_healthy{{backend=\"{b}\"}} {}",
            self.healthy.load(Ordering::Relaxed)
        );
        out
    }
}

/// Serves `/metrics`, `/healthz`, `/readyz` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<HealthState>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let metrics = Arc::clone(&metrics);
        let health = Arc::clone(&health);
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let line = String::from_utf8_lossy(&buf);
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or("");
            let path = parts.next().unwrap_or("").split('?').next().unwrap_or("");
            let (status, ctype, body) = match (method, path) {
                ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
                ("GET", "/healthz") | ("GET", "/livez") => {
                    ("200 OK", "text/plain", "ok\n".to_string())
                }
                ("GET", "/readyz") => match health.get() {
                    Health::Ok => ("200 OK", "text/plain", "ok\n".to_string()),
                    Health::Failing(r) => (
                        "503 Service Unavailable",
                        "text/plain",
                        format!("backend unhealthy: {r}\n"),
                    ),
                },
                ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
                _ => (
                    "405 Method Not Allowed",
                    "text/plain",
                    "method not allowed\n".to_string(),
                ),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
