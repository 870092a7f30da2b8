//! The plugin server: `atrest kms serve`.
//!
//! [`start`] binds the socket (see [`listener`]), runs one health check, then serves
//! `v2.KeyManagementService` (and `v1beta1` with [`ServeConfig::v1beta1`]) until [`ServerHandle`]
//! is shut down or dropped. Shutdown is graceful: the listener closes, in-flight calls finish, the
//! socket file is removed.
//!
//! Status answers from the background health state ([`health`]), never with a crypto call.

pub mod guard;
mod health;
pub mod listener;
pub mod metrics;
pub mod v1beta1;
pub mod v2;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::{Code, Status};

use crate::backend::{BackendError, KeyBackend};
use crate::endpoint::Endpoint;
use crate::proto;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub endpoint: Endpoint,
    /// Group owning the socket file (mode becomes 0660); default: none, mode 0600.
    pub socket_group: Option<u32>,
    /// If non-empty, only peers with these uids (SO_PEERCRED) may connect.
    pub allowed_uids: Vec<u32>,
    /// Also serve the deprecated v1beta1 API on the same socket.
    pub v1beta1: bool,
    /// Limit for each backend call (wrap, unwrap, refresh, probe).
    pub call_timeout: Duration,
    /// How often the background loop refreshes keys and probes the backend.
    pub health_interval: Duration,
    /// Prometheus `/metrics`, `/healthz`, `/readyz` on this TCP address.
    pub metrics_listen: Option<SocketAddr>,
    /// Connection cap and per-connection timeouts.
    pub limits: guard::ConnLimits,
    /// Threads serving calls. 1 (the default) runs everything on one thread: a call costs a few
    /// microseconds of CPU, less than waking a second worker thread for it would, so one thread
    /// serves more calls per CPU second. Slow backends (PKCS#11, Vault, AWS) do not hold it: their
    /// calls run on the blocking pool or are asynchronous.
    pub worker_threads: usize,
}

impl ServeConfig {
    pub fn new(endpoint: Endpoint) -> Self {
        ServeConfig {
            endpoint,
            socket_group: None,
            allowed_uids: Vec::new(),
            v1beta1: false,
            call_timeout: Duration::from_secs(3),
            health_interval: Duration::from_secs(5),
            metrics_listen: None,
            limits: guard::ConnLimits::default(),
            worker_threads: 1,
        }
    }
}

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("another KMS plugin is already serving on {0}")]
    AlreadyServing(String),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("socket {path}: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    #[error("metrics listener: {0}")]
    Metrics(atrest_http::HttpError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

pub(crate) fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

pub(crate) fn backend_status(e: &BackendError) -> Status {
    match e {
        BackendError::UnknownKeyId(_) => Status::not_found(e.to_string()),
        BackendError::BadCiphertext(_) => Status::invalid_argument(e.to_string()),
        BackendError::Unavailable(_) => Status::unavailable(e.to_string()),
        BackendError::Config(_) => Status::failed_precondition(e.to_string()),
    }
}

/// A running server. Dropping it shuts the server down (without waiting).
pub struct ServerHandle {
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
    metrics_addr: Option<SocketAddr>,
    endpoint: Endpoint,
}

impl ServerHandle {
    /// The bound metrics address (useful with port 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Graceful stop: no new connections, in-flight calls finish, socket file removed.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => t.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }

    /// Waits until the server stops by itself (it only does on error) or `signal` fires.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), ServeError> {
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        tokio::select! {
            r = &mut task => r.unwrap_or(Ok(())),
            () = signal => {
                tracing::info!("shutting down: finishing in-flight calls");
                if let Some(tx) = self.shutdown.take() { let _ = tx.send(()); }
                task.await.unwrap_or(Ok(()))
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Binds, checks the backend once, and starts serving in the background.
pub async fn start(
    mut config: ServeConfig,
    backend: Arc<dyn KeyBackend>,
) -> Result<ServerHandle, ServeError> {
    if let Some(soft) = guard::raise_nofile_limit() {
        // Every connection is a file descriptor; keep some for the key store, HSM, metrics.
        let fit = usize::try_from(soft.saturating_sub(64))
            .unwrap_or(usize::MAX)
            .max(16);
        if fit < config.limits.max_connections {
            tracing::info!(
                open_files = soft,
                max_connections = fit,
                "connection cap lowered to the open-files limit"
            );
            config.limits.max_connections = fit;
        }
    }
    if matches!(config.endpoint, Endpoint::Abstract(_)) && config.allowed_uids.is_empty() {
        // An abstract socket has no file permissions: any local user could connect and decrypt.
        let uid = guard::own_uid();
        tracing::warn!(
            uid,
            "abstract socket without --allowed-uid: only this server's own uid may connect"
        );
        config.allowed_uids = vec![uid];
    }
    if let Some(addr) = config.metrics_listen.filter(|a| !a.ip().is_loopback()) {
        tracing::warn!(%addr, "--metrics-listen is not a loopback address: /metrics, /healthz and /readyz are reachable from the network without authentication");
    }
    let metrics = Arc::new(metrics::Metrics::new(backend.kind(), config.v1beta1));
    let health = Arc::new(health::HealthState::new(Arc::clone(&metrics)));
    health::check(backend.as_ref(), &health, &metrics, config.call_timeout).await;
    if let health::Health::Failing(reason) = health.get() {
        tracing::warn!(%reason, "backend is not healthy at start; serving anyway, Status reports it");
    }

    let bound = listener::bind(&config.endpoint, config.socket_group)?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(atrest_http::bind(addr).await.map_err(ServeError::Metrics)?),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());

    let v2 = v2::V2Service {
        backend: Arc::clone(&backend),
        health: Arc::clone(&health),
        metrics: Arc::clone(&metrics),
        timeout: config.call_timeout,
    };
    let max_msg = 64 * 1024;
    let mut router = tonic::transport::Server::builder()
        .timeout(config.call_timeout + Duration::from_secs(1))
        // Dead peers are found by keepalive pings; silent ones by the guard's deadlines.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(256))
        .add_service(
            proto::v2::key_management_service_server::KeyManagementServiceServer::new(v2)
                .max_decoding_message_size(max_msg),
        );
    if config.v1beta1 {
        let v1 = v1beta1::V1Service {
            backend: Arc::clone(&backend),
            health: Arc::clone(&health),
            metrics: Arc::clone(&metrics),
            timeout: config.call_timeout,
        };
        router = router.add_service(
            proto::v1beta1::key_management_service_server::KeyManagementServiceServer::new(v1)
                .max_decoding_message_size(max_msg),
        );
    }

    let (tx, rx) = oneshot::channel::<()>();
    let incoming = guard::incoming(bound.listener, config.allowed_uids.clone(), config.limits);
    let socket_file = bound.socket_file;
    let endpoint = config.endpoint.clone();
    tracing::info!(
        endpoint = %endpoint,
        backend = backend.kind(),
        key_id = %backend.current_key_id().unwrap_or_default(),
        v1beta1 = config.v1beta1,
        metrics = %metrics_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        "KMS plugin serving"
    );
    let background = {
        let health_task = tokio::spawn(health::run(
            Arc::clone(&backend),
            Arc::clone(&health),
            Arc::clone(&metrics),
            config.health_interval,
            config.call_timeout,
        ));
        let metrics_server = metrics_listener.map(|l| {
            atrest_http::spawn(
                l,
                metrics::endpoints(&metrics, Arc::clone(&health)),
                atrest_http::Limits::default(),
            )
        });
        (health_task, metrics_server)
    };
    let task = tokio::spawn(async move {
        let result = router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            })
            .await;
        background.0.abort();
        drop(background.1);
        if let Some(path) = socket_file {
            let _ = std::fs::remove_file(&path);
        }
        tracing::info!("KMS plugin stopped");
        result.map_err(ServeError::from)
    });
    Ok(ServerHandle {
        shutdown: Some(tx),
        task: Some(task),
        metrics_addr,
        endpoint: config.endpoint,
    })
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn termination_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Why `atrest kms serve` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("cannot start the server runtime: {0}")]
    Runtime(std::io::Error),
}

/// Opens the backend, serves until SIGTERM/SIGINT, then shuts down gracefully. For the CLI.
pub fn run_blocking(
    config: ServeConfig,
    spec: crate::backends::BackendSpec,
) -> Result<(), RunError> {
    let mut builder = if config.worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(config.worker_threads);
        b
    };
    let rt = builder
        .enable_all()
        .thread_name("atrest-kms")
        .build()
        .map_err(RunError::Runtime)?;
    rt.block_on(async move {
        let backend = crate::backends::open(spec).await?;
        let handle = start(config, backend).await?;
        handle.run_until(termination_signal()).await?;
        Ok(())
    })
}
