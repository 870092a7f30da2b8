//! Logs never contain plaintext, seeds or KEKs, even at TRACE level for every crate.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atrest_core::kms::{DecryptRequest, KmsConnector};
use atrest_kms::backends::local::{KeyStore, LocalBackend};
use atrest_kms::client::GrpcKms;
use atrest_kms::Endpoint;
use base64::Engine;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_hold_no_secrets() {
    let capture = Capture::default();
    let c2 = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(move || c2.clone())
        .with_ansi(false)
        .init();

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("keys");
    KeyStore::init(&store, None).unwrap();
    let kek_file = std::fs::read_to_string(store.join("kek-00000001.json")).unwrap();
    let kek_b64 = serde_json::from_str::<serde_json::Value>(&kek_file).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let kek = base64::engine::general_purpose::STANDARD
        .decode(&kek_b64)
        .unwrap();

    let sock = support::socket_in(dir.path());
    let mut cfg = support::config(Endpoint::Path(sock.clone()));
    cfg.v1beta1 = true;
    let server = support::start(cfg, Arc::new(LocalBackend::open(&store, None).unwrap())).await;
    let url = format!("unix://{}", sock.display());
    let kms = GrpcKms::new();
    let v2 = kms.connect_v2("p", &url, Duration::from_secs(3)).unwrap();
    let secret = *b"SEED-MARKER-0123456789-abcdefghi";
    let enc = v2.encrypt("uid-log", &secret).unwrap();
    let back = v2
        .decrypt(&DecryptRequest {
            ciphertext: enc.ciphertext,
            uid: "u".into(),
            key_id: enc.key_id.clone(),
            annotations: BTreeMap::new(),
        })
        .unwrap();
    assert_eq!(back.as_slice(), &secret);
    let v1 = kms.connect_v1("p", &url, Duration::from_secs(3)).unwrap();
    let c = v1.encrypt(b"V1-PLAINTEXT-MARKER").unwrap();
    assert_eq!(v1.decrypt(&c).unwrap().as_slice(), b"V1-PLAINTEXT-MARKER");
    server.shutdown().await.unwrap();

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).to_string();
    assert!(
        logs.contains("uid-log") && logs.contains(&enc.key_id),
        "debug logs do carry uid and key id:\n{logs}"
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    for (what, needle) in [
        ("seed", String::from_utf8_lossy(&secret).to_string()),
        ("seed hex", hex::encode(secret)),
        ("seed base64", b64.encode(secret)),
        ("seed bytes debug", format!("{:?}", &secret[..8])),
        ("v1 plaintext", "V1-PLAINTEXT-MARKER".to_string()),
        ("KEK base64", kek_b64.clone()),
        ("KEK hex", hex::encode(&kek)),
        ("KEK debug", format!("{:?}", &kek[..8])),
    ] {
        assert!(!logs.contains(&needle), "{what} leaked into logs");
    }
}
