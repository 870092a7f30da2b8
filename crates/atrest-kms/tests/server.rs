//! Server behaviour with a scripted test backend (any `KeyBackend` plugs in): graceful shutdown
//! finishes in-flight calls, per-call timeouts, and a failing backend turns Status unhealthy at once.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use atrest_kms::proto::v2 as pb;
use atrest_kms::{BackendError, Endpoint, KeyBackend, Wrapped, Zeroizing};
use tonic::Code;

/// XOR "wrapping" with a delay and a failure switch. Test-only: not cryptography.
#[derive(Default)]
struct Scripted {
    delay_ms: AtomicU64,
    broken: AtomicBool,
}

#[async_trait::async_trait]
impl KeyBackend for Scripted {
    fn kind(&self) -> &'static str {
        "scripted"
    }
    fn current_key_id(&self) -> Result<String, BackendError> {
        Ok("scripted-1".into())
    }
    async fn wrap(&self, plaintext: &[u8]) -> Result<Wrapped, BackendError> {
        tokio::time::sleep(Duration::from_millis(self.delay_ms.load(Ordering::SeqCst))).await;
        if self.broken.load(Ordering::SeqCst) {
            return Err(BackendError::Unavailable("scripted outage".into()));
        }
        Ok(Wrapped {
            key_id: "scripted-1".into(),
            ciphertext: plaintext.iter().map(|b| b ^ 0x5a).collect(),
            annotations: BTreeMap::new(),
        })
    }
    async fn unwrap(
        &self,
        key_id: &str,
        ct: &[u8],
        _: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        if key_id != "scripted-1" {
            return Err(BackendError::UnknownKeyId(key_id.into()));
        }
        Ok(Zeroizing::new(ct.iter().map(|b| b ^ 0x5a).collect()))
    }
}

type Client =
    pb::key_management_service_client::KeyManagementServiceClient<tonic::transport::Channel>;

fn enc() -> pb::EncryptRequest {
    pb::EncryptRequest {
        plaintext: vec![1; 32],
        uid: "u".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_calls() {
    let dir = tempfile::tempdir().unwrap();
    let sock = support::socket_in(dir.path());
    let backend = Arc::new(Scripted::default());
    let server = support::start(
        support::config(Endpoint::Path(sock.clone())),
        backend.clone(),
    )
    .await;
    let mut c = Client::new(atrest_kms::client::channel(&Endpoint::Path(sock.clone())));
    c.status(pb::StatusRequest {}).await.unwrap();

    backend.delay_ms.store(400, Ordering::SeqCst);
    let mut c2 = c.clone();
    let in_flight = tokio::spawn(async move { c2.encrypt(enc()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown().await.unwrap();
    let r = in_flight
        .await
        .unwrap()
        .expect("in-flight call finished during shutdown");
    assert_eq!(r.into_inner().ciphertext, vec![1 ^ 0x5a; 32]);
    assert!(!sock.exists(), "socket removed after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_backend_times_out_and_failing_backend_turns_unhealthy_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let sock = support::socket_in(dir.path());
    let backend = Arc::new(Scripted::default());
    let mut cfg = support::config(Endpoint::Path(sock.clone()));
    cfg.call_timeout = Duration::from_millis(300);
    cfg.health_interval = Duration::from_secs(3600); // only data calls change health here
    let server = support::start(cfg, backend.clone()).await;
    let mut c = Client::new(atrest_kms::client::channel(&Endpoint::Path(sock.clone())));
    assert_eq!(
        c.status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .healthz,
        "ok"
    );

    backend.delay_ms.store(1000, Ordering::SeqCst);
    let e = c.encrypt(enc()).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");

    backend.delay_ms.store(0, Ordering::SeqCst);
    backend.broken.store(true, Ordering::SeqCst);
    let e = c.encrypt(enc()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let st = c.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert!(st.healthz.contains("scripted outage"), "{}", st.healthz);
    assert_eq!(
        st.key_id, "scripted-1",
        "key id still reported while unhealthy"
    );
    drop(server);
}
