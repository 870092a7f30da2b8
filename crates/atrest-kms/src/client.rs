//! A gRPC client for any KMS plugin, implementing [`atrest_core::kms::KmsConnector`].
//!
//! * Transport: tonic over the unix socket the config's `endpoint` names (`unix:///path` or an
//!   abstract `unix:///@name`), `:authority` `localhost` like the apiserver's v2 client.
//! * Deadlines: every RPC gets the provider's `timeout`. Within it, a connection failure (socket
//!   missing, plugin restarting) is retried with a short backoff — gRPC "wait for ready" — instead
//!   of failing fast; an error *answered by the plugin* is returned at once.
//! * Threads: the core traits are synchronous. [`GrpcKms`] owns a small tokio runtime on a
//!   dedicated thread; every call is spawned there and the caller blocks on a channel. So calls are
//!   safe from any thread, including a worker thread of another tokio runtime (where `block_on`
//!   would panic). Blocking a worker of another runtime still stalls that worker for the call's
//!   duration, as any synchronous I/O would; use `spawn_blocking` there if that matters.
//! * v1beta1: `Version` is checked once per client before the first Encrypt/Decrypt (and again
//!   after a failure), as the apiserver's interceptor does.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest_core::kms::{
    DecryptRequest, EncryptResponse, KmsConnector, KmsError, KmsV1Service, KmsV2Service,
    StatusResponse,
};
use hyper_util::rt::TokioIo;
use tonic::transport::Channel;
use tonic::Code;
use zeroize::Zeroizing;

use crate::endpoint::{self, Endpoint};
use crate::proto::{v1beta1 as pb1, v2 as pb2};
use crate::server::code_name;

/// A lazily connecting channel to a plugin socket. Must be called inside a tokio runtime.
pub fn channel(endpoint: &Endpoint) -> Channel {
    let ep = endpoint.clone();
    // The URI is only used for `:authority`; the connector ignores it.
    tonic::transport::Endpoint::from_static("http://localhost").connect_with_connector_lazy(
        tower::service_fn(move |_: tonic::transport::Uri| {
            let ep = ep.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(endpoint::connect(&ep).await?)) }
        }),
    )
}

/// Go's `rpc error: code = X desc = Y` text, as the apiserver prints plugin errors.
fn rpc_error(s: &tonic::Status) -> String {
    format!(
        "rpc error: code = {} desc = {}",
        code_name(s.code()),
        s.message()
    )
}

/// Whether the failure happened in the transport, before the plugin answered (worth retrying until
/// the deadline): tonic attaches the transport error as the source; statuses the plugin sent in its
/// trailers have none.
fn is_connect_failure(s: &tonic::Status) -> bool {
    std::error::Error::source(s).is_some()
}

/// Runs `call` with wait-for-ready retries until `timeout` elapses.
pub(crate) async fn with_deadline<T, F, Fut>(
    endpoint: &str,
    timeout: Duration,
    mut call: F,
) -> Result<T, KmsError>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(20);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(KmsError::Unavailable {
                endpoint: endpoint.to_string(),
                reason: format!("rpc error: code = DeadlineExceeded desc = context deadline exceeded (timeout {timeout:?})"),
            });
        }
        match tokio::time::timeout(remaining, call(remaining)).await {
            Err(_) => continue,
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(s)) if is_connect_failure(&s) => {
                let wait = backoff.min(deadline.saturating_duration_since(Instant::now()));
                if wait.is_zero() {
                    return Err(KmsError::Unavailable {
                        endpoint: endpoint.to_string(),
                        reason: rpc_error(&s),
                    });
                }
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
                if Instant::now() >= deadline {
                    return Err(KmsError::Unavailable {
                        endpoint: endpoint.to_string(),
                        reason: rpc_error(&s),
                    });
                }
            }
            Ok(Err(s)) if s.code() == Code::DeadlineExceeded || s.code() == Code::Cancelled => {
                return Err(KmsError::Unavailable {
                    endpoint: endpoint.to_string(),
                    reason: rpc_error(&s),
                })
            }
            Ok(Err(s)) => return Err(answered_error(endpoint, &s)),
        }
    }
}

/// An error the plugin answered with, classified by its gRPC code: only codes that are about the
/// request's data (`InvalidArgument`, `NotFound`, `DataLoss`, `OutOfRange`) say a ciphertext will not
/// decrypt; everything else (`Unavailable` from a sealed Vault, `Internal`, `Unknown`, permission
/// and precondition failures) says the plugin or its backend is not working: an outage.
fn answered_error(endpoint: &str, s: &tonic::Status) -> KmsError {
    match s.code() {
        Code::InvalidArgument | Code::NotFound | Code::DataLoss | Code::OutOfRange => {
            KmsError::Rejected(rpc_error(s))
        }
        _ => KmsError::Failing {
            endpoint: endpoint.to_string(),
            reason: rpc_error(s),
        },
    }
}

fn request<T>(msg: T, remaining: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(remaining);
    r
}

/// The runtime thread the synchronous calls run on.
struct RuntimeThread {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl RuntimeThread {
    fn start() -> std::io::Result<RuntimeThread> {
        let (htx, hrx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("atrest-kms-client".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = htx.send(Err(e));
                        return;
                    }
                };
                let _ = htx.send(Ok(rt.handle().clone()));
                // Runs spawned calls until the owner is dropped; the runtime is dropped on this thread.
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        let handle = hrx
            .recv()
            .map_err(|_| std::io::Error::other("KMS client runtime thread died"))??;
        Ok(RuntimeThread {
            handle,
            _stop: stop,
        })
    }

    /// Runs `fut` on the runtime thread and blocks the caller until it finishes.
    fn block<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().ok()
    }
}

/// The connector the CLI hands to `Transformers::build`: one runtime thread shared by every
/// connection it opens.
#[derive(Clone, Default)]
pub struct GrpcKms {
    rt: Arc<std::sync::OnceLock<Result<Arc<RuntimeThread>, String>>>,
}

impl GrpcKms {
    pub fn new() -> GrpcKms {
        GrpcKms::default()
    }

    fn runtime(&self, endpoint: &str) -> Result<Arc<RuntimeThread>, KmsError> {
        self.rt
            .get_or_init(|| {
                RuntimeThread::start()
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|reason| KmsError::Unavailable {
                endpoint: endpoint.to_string(),
                reason,
            })
    }

    fn open(&self, endpoint: &str) -> Result<(Arc<RuntimeThread>, Channel), KmsError> {
        let ep = Endpoint::parse(endpoint).map_err(|e| KmsError::Unavailable {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?;
        let rt = self.runtime(endpoint)?;
        let ch = rt
            .block(async move { channel(&ep) })
            .ok_or_else(|| KmsError::Unavailable {
                endpoint: endpoint.to_string(),
                reason: "client runtime stopped".into(),
            })?;
        Ok((rt, ch))
    }
}

impl KmsConnector for GrpcKms {
    fn connect_v2(
        &self,
        _name: &str,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<Arc<dyn KmsV2Service>, KmsError> {
        let (rt, channel) = self.open(endpoint)?;
        Ok(Arc::new(V2Client {
            rt,
            channel,
            endpoint: endpoint.to_string(),
            timeout,
        }))
    }

    fn connect_v1(
        &self,
        _name: &str,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<Arc<dyn KmsV1Service>, KmsError> {
        let (rt, channel) = self.open(endpoint)?;
        Ok(Arc::new(V1Client {
            rt,
            channel,
            endpoint: endpoint.to_string(),
            timeout,
            version_ok: Arc::new(AtomicBool::new(false)),
        }))
    }
}

fn stopped(endpoint: &str) -> KmsError {
    KmsError::Unavailable {
        endpoint: endpoint.to_string(),
        reason: "client runtime stopped".into(),
    }
}

/// A KMS v2 connection.
pub struct V2Client {
    rt: Arc<RuntimeThread>,
    channel: Channel,
    endpoint: String,
    timeout: Duration,
}

impl KmsV2Service for V2Client {
    fn status(&self) -> Result<StatusResponse, KmsError> {
        let (ch, ep, t) = (self.channel.clone(), self.endpoint.clone(), self.timeout);
        self.rt
            .block(async move {
                with_deadline(&ep, t, |rem| {
                    let mut c = pb2::key_management_service_client::KeyManagementServiceClient::new(
                        ch.clone(),
                    );
                    async move { c.status(request(pb2::StatusRequest {}, rem)).await }
                })
                .await
            })
            .ok_or_else(|| stopped(&self.endpoint))?
            .map(|r| {
                let r = r.into_inner();
                StatusResponse {
                    version: r.version,
                    healthz: r.healthz,
                    key_id: r.key_id,
                }
            })
    }

    fn encrypt(&self, uid: &str, plaintext: &[u8]) -> Result<EncryptResponse, KmsError> {
        let (ch, ep, t) = (self.channel.clone(), self.endpoint.clone(), self.timeout);
        let msg = pb2::EncryptRequest {
            plaintext: plaintext.to_vec(),
            uid: uid.to_string(),
        };
        let r = self
            .rt
            .block(async move {
                let msg = msg;
                let r = with_deadline(&ep, t, |rem| {
                    let mut c = pb2::key_management_service_client::KeyManagementServiceClient::new(
                        ch.clone(),
                    );
                    let m = msg.clone();
                    async move { c.encrypt(request(m, rem)).await }
                })
                .await;
                let mut msg = msg;
                zeroize::Zeroize::zeroize(&mut msg.plaintext);
                r
            })
            .ok_or_else(|| stopped(&self.endpoint))??
            .into_inner();
        Ok(EncryptResponse {
            ciphertext: r.ciphertext,
            key_id: r.key_id,
            annotations: r.annotations.into_iter().collect(),
        })
    }

    fn decrypt(&self, req: &DecryptRequest) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let (ch, ep, t) = (self.channel.clone(), self.endpoint.clone(), self.timeout);
        let msg = pb2::DecryptRequest {
            ciphertext: req.ciphertext.clone(),
            uid: req.uid.clone(),
            key_id: req.key_id.clone(),
            annotations: req.annotations.clone().into_iter().collect(),
        };
        let r = self
            .rt
            .block(async move {
                with_deadline(&ep, t, |rem| {
                    let mut c = pb2::key_management_service_client::KeyManagementServiceClient::new(
                        ch.clone(),
                    );
                    let m = msg.clone();
                    async move { c.decrypt(request(m, rem)).await }
                })
                .await
            })
            .ok_or_else(|| stopped(&self.endpoint))??;
        Ok(Zeroizing::new(r.into_inner().plaintext))
    }
}

/// A KMS v1beta1 connection.
pub struct V1Client {
    rt: Arc<RuntimeThread>,
    channel: Channel,
    endpoint: String,
    timeout: Duration,
    version_ok: Arc<AtomicBool>,
}

impl V1Client {
    fn call<T: Send + 'static>(
        &self,
        f: impl Fn(
                pb1::key_management_service_client::KeyManagementServiceClient<Channel>,
                Duration,
            ) -> std::pin::Pin<
                Box<dyn Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send>,
            > + Send
            + Sync
            + 'static,
    ) -> Result<T, KmsError> {
        let (ch, ep, t, ok) = (
            self.channel.clone(),
            self.endpoint.clone(),
            self.timeout,
            Arc::clone(&self.version_ok),
        );
        self.rt
            .block(async move {
                // One deadline covers the lazy Version check and the call, like the apiserver.
                let start = Instant::now();
                if !ok.load(Ordering::Acquire) {
                    let v = with_deadline(&ep, t, |rem| {
                        let mut c = pb1::key_management_service_client::KeyManagementServiceClient::new(ch.clone());
                        async move { c.version(request(pb1::VersionRequest { version: "v1beta1".into() }, rem)).await }
                    })
                    .await?
                    .into_inner();
                    if v.version != "v1beta1" {
                        return Err(KmsError::InvalidResponse(format!(
                            "KMS provider api version {} is not supported, only v1beta1 is supported now",
                            v.version
                        )));
                    }
                    ok.store(true, Ordering::Release);
                }
                let left = t.saturating_sub(start.elapsed());
                with_deadline(&ep, left, |rem| {
                    let c = pb1::key_management_service_client::KeyManagementServiceClient::new(ch.clone());
                    f(c, rem)
                })
                .await
                .map(tonic::Response::into_inner)
            })
            .ok_or_else(|| stopped(&self.endpoint))?
    }
}

impl KmsV1Service for V1Client {
    fn encrypt(&self, plain: &[u8]) -> Result<Vec<u8>, KmsError> {
        let plain = Zeroizing::new(plain.to_vec());
        let r = self.call(move |mut c, rem| {
            let m = pb1::EncryptRequest {
                version: "v1beta1".into(),
                plain: plain.to_vec(),
            };
            Box::pin(async move { c.encrypt(request(m, rem)).await })
        })?;
        Ok(r.cipher)
    }

    fn decrypt(&self, cipher: &[u8]) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let cipher = cipher.to_vec();
        let r = self.call(move |mut c, rem| {
            let m = pb1::DecryptRequest {
                version: "v1beta1".into(),
                cipher: cipher.clone(),
            };
            Box::pin(async move { c.decrypt(request(m, rem)).await })
        })?;
        Ok(Zeroizing::new(r.plain))
    }
}
