//! # atrest-http
//!
//! The HTTP side of atrest's long-running processes — the KMS plugin's `--metrics-listen` and
//! `atrest monitor --listen`: `/metrics` rendered by `prometheus-client` from a [`Registry`],
//! `/healthz` (liveness: the process serves HTTP) and `/readyz` (readiness: whatever the process
//! says through its [`ReadyFn`]). Routing is axum, connections are hyper HTTP/1.1.
//!
//! It is its own crate so the monitor gets the HTTP server without the plugin's gRPC code, and the
//! plugin gets it without etcd. The limits a scrape endpoint needs on a shared host are enforced
//! here once ([`Limits`]): a header read timeout (slow-loris clients), a per-request timeout, a cap
//! on open connections (new connections wait in the kernel backlog while the cap is reached) and a
//! bounded connection lifetime (a keep-alive connection cannot hold a slot forever).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tower_http::timeout::TimeoutLayer;

/// `Content-Type` of the OpenMetrics text format, served when the scraper asks for it.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Limits of the HTTP server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A client must have sent a request's headers within this time (also the keep-alive idle limit).
    pub header_read_timeout: Duration,
    /// A request is answered `408 Request Timeout` if its handler takes longer.
    pub request_timeout: Duration,
    /// Connections served at once; further connections wait until one closes.
    pub max_connections: usize,
    /// A connection is closed after this long, keep-alive or not.
    pub max_connection_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_connections: 32,
            max_connection_age: Duration::from_secs(120),
        }
    }
}

/// Readiness: `Ok` → `200 ok`, `Err(reason)` → `503` with the reason.
pub type ReadyFn = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What the endpoints serve.
#[derive(Clone)]
pub struct Endpoints {
    pub registry: Arc<Registry>,
    pub ready: ReadyFn,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The routes: `GET /metrics`, `/healthz` (also `/livez`), `/readyz`; other paths 404, other
/// methods 405.
pub fn router(endpoints: Endpoints, limits: &Limits) -> Router {
    let registry = Arc::clone(&endpoints.registry);
    let ready = Arc::clone(&endpoints.ready);
    Router::new()
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let registry = Arc::clone(&registry);
                async move { metrics(&registry, &headers) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/livez", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = Arc::clone(&ready);
                async move {
                    match ready() {
                        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
                        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
                    }
                }
            }),
        )
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
}

/// The exposition: OpenMetrics when the `Accept` header asks for it, else Prometheus text 0.0.4.
fn metrics(registry: &Registry, headers: &HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let mut body = String::new();
    let (encoded, content_type) = if openmetrics {
        (
            prometheus_client::encoding::text::encode(&mut body, registry),
            OPENMETRICS_CONTENT_TYPE,
        )
    } else {
        (
            prometheus_client::encoding::prometheus_text::encode(&mut body, registry),
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
    };
    match encoded {
        Ok(()) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n",
        )
            .into_response(),
    }
}

/// Registers `atrest_build_info{component,version} 1` (the workspace version: every atrest crate
/// and binary share it).
pub fn register_build_info(registry: &mut Registry, component: &'static str) {
    registry.register(
        "atrest_build",
        "Which atrest build this process runs (always 1).",
        prometheus_client::metrics::info::Info::new(vec![
            ("component", component),
            ("version", env!("CARGO_PKG_VERSION")),
        ]),
    );
}

/// Binds the TCP listener (port 0 picks a free port; see [`TcpListener::local_addr`]).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// A running server; dropping it stops accepting and closes open connections.
pub struct ServerHandle {
    addr: Option<SocketAddr>,
    task: JoinHandle<()>,
}

impl ServerHandle {
    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves [`router`] on `listener` in a background task (needs a tokio runtime).
pub fn spawn(listener: TcpListener, endpoints: Endpoints, limits: Limits) -> ServerHandle {
    let addr = listener.local_addr().ok();
    let app = router(endpoints, &limits);
    let task = tokio::spawn(accept_loop(listener, app, limits));
    ServerHandle { addr, task }
}

async fn accept_loop(listener: TcpListener, app: Router, limits: Limits) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Wait for a free slot before accepting: at the cap, clients queue in the backlog.
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let stream = loop {
            match listener.accept().await {
                Ok((stream, _)) => break stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::debug!(error = %e, "metrics listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        while connections.try_join_next().is_some() {}
        let service = TowerToHyperService::new(app.clone());
        let limits = limits.clone();
        // Connections live in the JoinSet, so dropping the server (aborting this task) closes them.
        connections.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(limits.max_connection_age, conn).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests;
