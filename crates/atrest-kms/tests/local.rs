//! End to end over a real unix socket with the `local` backend: client → server → key store.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use atrest_core::kms::{DecryptRequest, KmsConnector, KmsError};
use atrest_kms::backends::local::{KeyStore, LocalBackend};
use atrest_kms::client::GrpcKms;
use atrest_kms::proto::{v1beta1 as pb1, v2 as pb2};
use atrest_kms::{Endpoint, KeyBackend};
use tonic::Code;

fn new_store() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("keys");
    KeyStore::init(&store, None).unwrap();
    (dir, store)
}

fn backend(store: &std::path::Path) -> Arc<dyn KeyBackend> {
    Arc::new(LocalBackend::open(store, None).unwrap())
}

fn endpoint_url(path: &std::path::Path) -> String {
    format!("unix://{}", path.display())
}

type V2 = pb2::key_management_service_client::KeyManagementServiceClient<tonic::transport::Channel>;

fn raw_client(ep: &Endpoint) -> V2 {
    V2::new(atrest_kms::client::channel(ep))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_round_trip_through_the_core_client() {
    let (dir, store) = new_store();
    let sock = support::socket_in(dir.path());
    let server = support::start(
        support::config(Endpoint::Path(sock.clone())),
        backend(&store),
    )
    .await;

    // The socket is 0600.
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let kms = GrpcKms::new()
        .connect_v2("p", &endpoint_url(&sock), Duration::from_secs(3))
        .unwrap();
    let status = kms.status().unwrap();
    assert_eq!(status.version, "v2");
    assert_eq!(status.healthz, "ok");
    assert!(status.key_id.starts_with("local-v1-"), "{}", status.key_id);

    let seed = [7u8; 32];
    let enc = kms.encrypt("uid-1", &seed).unwrap();
    assert_eq!(
        enc.key_id, status.key_id,
        "Encrypt returns the key id Status reports"
    );
    assert!(!enc.ciphertext.is_empty() && enc.ciphertext.len() <= 1024);
    assert_ne!(&enc.ciphertext[..], &seed[..]);
    let enc2 = kms.encrypt("uid-2", &seed).unwrap();
    assert_ne!(enc.ciphertext, enc2.ciphertext, "fresh nonce per call");

    let back = kms
        .decrypt(&DecryptRequest {
            ciphertext: enc.ciphertext.clone(),
            uid: "uid-3".into(),
            key_id: enc.key_id.clone(),
            annotations: BTreeMap::new(),
        })
        .unwrap();
    assert_eq!(back.as_slice(), &seed);

    // Same store on "another node" (another backend instance) gives the same key id.
    let other = LocalBackend::open(&store, None).unwrap();
    assert_eq!(other.current_key_id().unwrap(), status.key_id);

    server.shutdown().await.unwrap();
    assert!(!sock.exists(), "graceful shutdown removes the socket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_while_serving_switches_key_id_and_old_values_still_decrypt() {
    let (dir, store) = new_store();
    let sock = support::socket_in(dir.path());
    let mut cfg = support::config(Endpoint::Path(sock.clone()));
    cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = support::start(cfg, backend(&store)).await;
    let metrics = server.metrics_addr().unwrap();
    let kms = GrpcKms::new()
        .connect_v2("p", &endpoint_url(&sock), Duration::from_secs(3))
        .unwrap();

    let old = kms.status().unwrap().key_id;
    let old_ct = kms
        .encrypt("u", b"0123456789abcdef0123456789abcdef")
        .unwrap();

    let version = KeyStore::open(&store, None).unwrap().rotate().unwrap();
    assert_eq!(version, 2);
    let changed = support::eventually(Duration::from_secs(5), || {
        kms.status().map(|s| s.key_id != old).unwrap_or(false)
    })
    .await;
    assert!(
        changed,
        "running plugin picked up the new KEK without restart"
    );
    let new = kms.status().unwrap().key_id;
    assert!(new.starts_with("local-v2-"), "{new}");

    let new_ct = kms
        .encrypt("u", b"0123456789abcdef0123456789abcdef")
        .unwrap();
    assert_eq!(new_ct.key_id, new);
    for ct in [&old_ct, &new_ct] {
        let p = kms
            .decrypt(&DecryptRequest {
                ciphertext: ct.ciphertext.clone(),
                uid: "u".into(),
                key_id: ct.key_id.clone(),
                annotations: BTreeMap::new(),
            })
            .unwrap();
        assert_eq!(p.as_slice(), b"0123456789abcdef0123456789abcdef");
    }

    let (line, body) = support::http_get(metrics, "/metrics").await;
    assert!(line.contains("200"), "{line}");
    assert!(
        body.contains("atrest_kms_key_id_changes_total{backend=\"local\"} 1"),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "atrest_kms_current_key_info{{backend=\"local\",key_id=\"{new}\"}} 1"
        )),
        "{body}"
    );
    assert!(
        body.contains(
            "atrest_kms_requests_total{api=\"v2\",method=\"Encrypt\",backend=\"local\"} 2"
        ),
        "{body}"
    );
    assert!(
        body.contains("atrest_kms_backend_healthy{backend=\"local\"} 1"),
        "{body}"
    );
    assert!(body.contains("atrest_kms_request_duration_seconds_count{api=\"v2\",method=\"Decrypt\",backend=\"local\"} 2"), "{body}");
    let (line, body) = support::http_get(metrics, "/readyz").await;
    assert!(
        line.contains("200") && body.starts_with("ok"),
        "{line} {body}"
    );
    let (line, _) = support::http_get(metrics, "/healthz").await;
    assert!(line.contains("200"), "{line}");
    drop(server);
}

#[tokio::test]
async fn bad_requests_get_grpc_errors_and_the_server_keeps_serving() {
    let (dir, store) = new_store();
    let sock = support::socket_in(dir.path());
    let mut cfg = support::config(Endpoint::Path(sock.clone()));
    cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = support::start(cfg, backend(&store)).await;
    let mut c = raw_client(&Endpoint::Path(sock.clone()));

    let enc = |p: Vec<u8>| pb2::EncryptRequest {
        plaintext: p,
        uid: "u".into(),
    };
    let err = c.encrypt(enc(vec![])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = c.encrypt(enc(vec![1; 100_000])).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange
        ),
        "{err:?}"
    );
    let err = c.encrypt(enc(vec![1; 600])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let good = c.encrypt(enc(vec![9; 32])).await.unwrap().into_inner();
    let dec = |ct: Vec<u8>, key_id: &str| pb2::DecryptRequest {
        ciphertext: ct,
        uid: "u".into(),
        key_id: key_id.into(),
        annotations: Default::default(),
    };
    // unknown key id
    let err = c
        .decrypt(dec(good.ciphertext.clone(), "local-v1-000000"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("unknown key id"),
        "{}",
        err.message()
    );
    // empty key id, empty and oversized ciphertext
    assert_eq!(
        c.decrypt(dec(good.ciphertext.clone(), ""))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        c.decrypt(dec(vec![], &good.key_id))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        c.decrypt(dec(vec![0; 1025], &good.key_id))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    // garbage and tampered ciphertext
    assert_eq!(
        c.decrypt(dec(b"garbage".to_vec(), &good.key_id))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let mut tampered = good.ciphertext.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(
        c.decrypt(dec(tampered, &good.key_id))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    // a real ciphertext under the right key id, but AAD-bound: another key id fails even if known
    // (covered by unknown id above); the good one still works:
    let p = c
        .decrypt(dec(good.ciphertext.clone(), &good.key_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.plaintext, vec![9; 32]);

    // Raw garbage bytes on the socket do not crash the server.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
        let _ = s
            .write_all(b"\x00\x01garbage that is not HTTP/2 at all\r\n\r\n")
            .await;
    }
    // A gRPC frame with an invalid protobuf body.
    let mut raw =
        tonic::client::Grpc::new(atrest_kms::client::channel(&Endpoint::Path(sock.clone())));
    raw.ready().await.unwrap();
    let bad = raw
        .unary::<Vec<u8>, Vec<u8>, _>(
            tonic::Request::new(vec![0xff, 0xff, 0xff, 0xff, 0x0f]),
            "/v2.KeyManagementService/Decrypt".parse().unwrap(),
            RawCodec,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(bad.code(), Code::Internal | Code::InvalidArgument),
        "{bad:?}"
    );

    let status = c.status(pb2::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.healthz, "ok");
    let (_, body) = support::http_get(server.metrics_addr().unwrap(), "/metrics").await;
    assert!(body.contains("code=\"NotFound\"} 1"), "{body}");
    drop(server);
}

/// Sends raw bytes as the gRPC message (to deliver invalid protobuf).
#[derive(Clone, Copy)]
struct RawCodec;
impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}
impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes_like::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}
impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes_like::Buf;
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}
mod bytes_like {
    pub use prost::bytes::{Buf, BufMut};
}

#[test]
fn world_or_group_readable_key_store_is_refused_with_the_path() {
    let (_dir, store) = new_store();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = LocalBackend::open(&store, None)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains(&store.display().to_string()) && err.contains("world-accessible"),
        "{err}"
    );
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o700)).unwrap();
    LocalBackend::open(&store, None).unwrap();

    let key = store.join("kek-00000001.json");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = LocalBackend::open(&store, None)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("kek-00000001.json") && err.contains("group-accessible"),
        "{err}"
    );

    let missing = store.with_file_name("nope");
    let err = LocalBackend::open(&missing, None)
        .err()
        .expect("missing")
        .to_string();
    assert!(
        err.contains("does not exist") && err.contains("atrest kms init"),
        "{err}"
    );
}

#[test]
fn key_files_are_0600_in_a_0700_dir() {
    let (_dir, store) = new_store();
    assert_eq!(
        std::fs::metadata(&store).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for e in std::fs::read_dir(&store).unwrap() {
        let e = e.unwrap();
        assert_eq!(
            e.metadata().unwrap().permissions().mode() & 0o777,
            0o600,
            "{:?}",
            e.path()
        );
    }
    assert!(
        KeyStore::init(&store, None).is_err(),
        "init refuses an existing store"
    );
}

#[tokio::test]
async fn sealed_store_needs_the_right_passphrase() {
    std::env::set_var("ATREST_KMS_SCRYPT_LOG_N", "10");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("sealed");
    KeyStore::init(&store, Some(b"correct horse")).unwrap();
    let raw = std::fs::read_to_string(store.join("kek-00000001.json")).unwrap();
    assert!(
        raw.contains("\"sealed\"") && !raw.contains("\"key\""),
        "{raw}"
    );
    let e = LocalBackend::open(&store, None).err().unwrap().to_string();
    assert!(e.contains("sealed with a passphrase"), "{e}");
    let e = LocalBackend::open(&store, Some(b"wrong"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("wrong passphrase"), "{e}");
    let b = LocalBackend::open(&store, Some(b"correct horse")).unwrap();
    let w = b.wrap(b"seed").await.unwrap();
    assert_eq!(
        b.unwrap(&w.key_id, &w.ciphertext, &BTreeMap::new())
            .await
            .unwrap()
            .as_slice(),
        b"seed"
    );
    KeyStore::open(&store, Some(b"correct horse"))
        .unwrap()
        .rotate()
        .unwrap();
    b.refresh().await.unwrap();
    assert!(b.current_key_id().unwrap().starts_with("local-v2-"));
    // The key id does not depend on sealing: it comes from the KEK itself.
    assert_eq!(
        b.unwrap(&w.key_id, &w.ciphertext, &BTreeMap::new())
            .await
            .unwrap()
            .as_slice(),
        b"seed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_socket_is_replaced_live_one_refused_and_old_ciphertexts_decrypt_after_restart() {
    let (dir, store) = new_store();
    let sock = support::socket_in(dir.path());
    let url = endpoint_url(&sock);

    let server = support::start(
        support::config(Endpoint::Path(sock.clone())),
        backend(&store),
    )
    .await;
    let kms = GrpcKms::new()
        .connect_v2("p", &url, Duration::from_secs(3))
        .unwrap();
    let ct = kms.encrypt("u", &[3; 32]).unwrap();

    // A second server on the same live socket is refused.
    let err = atrest_kms::server::start(
        support::config(Endpoint::Path(sock.clone())),
        backend(&store),
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("already serving"), "{err}");
    server.shutdown().await.unwrap();

    // Simulate kill -9: a socket file with nobody listening.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    // A regular file is never replaced.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"x").unwrap();
    let err = atrest_kms::server::start(
        support::config(Endpoint::Path(file.clone())),
        backend(&store),
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("not a socket"), "{err}");

    let server = support::start(
        support::config(Endpoint::Path(sock.clone())),
        backend(&store),
    )
    .await;
    let back = kms
        .decrypt(&DecryptRequest {
            ciphertext: ct.ciphertext,
            uid: "u".into(),
            key_id: ct.key_id,
            annotations: BTreeMap::new(),
        })
        .unwrap();
    assert_eq!(back.as_slice(), &[3; 32]);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abstract_socket_and_v1beta1() {
    let (_dir, store) = new_store();
    let name = format!("atrest-kms-test-{}", uuid::Uuid::new_v4());
    let mut cfg = support::config(Endpoint::Abstract(name.clone()));
    cfg.v1beta1 = true;
    let server = support::start(cfg, backend(&store)).await;
    let url = format!("unix:///@{name}");

    let kms = GrpcKms::new();
    let v2 = kms.connect_v2("p", &url, Duration::from_secs(3)).unwrap();
    assert_eq!(v2.status().unwrap().healthz, "ok");

    // v1beta1: the apiserver's health check encrypts "ping".
    let v1 = kms.connect_v1("p", &url, Duration::from_secs(3)).unwrap();
    let c = v1.encrypt(b"ping").unwrap();
    assert_eq!(v1.decrypt(&c).unwrap().as_slice(), b"ping");
    let dek = [5u8; 32];
    let c = v1.encrypt(&dek).unwrap();
    assert!(c.len() <= 65535);
    assert_eq!(v1.decrypt(&c).unwrap().as_slice(), &dek);
    match v1.decrypt(b"garbage") {
        Err(KmsError::Rejected(m)) => assert!(m.contains("InvalidArgument"), "{m}"),
        other => panic!("{other:?}"),
    }

    // Version answers v1beta1, wrong version refused.
    let mut raw = pb1::key_management_service_client::KeyManagementServiceClient::new(
        atrest_kms::client::channel(&Endpoint::Abstract(name.clone())),
    );
    let v = raw
        .version(pb1::VersionRequest {
            version: "v1beta1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.version, "v1beta1");
    let e = raw
        .encrypt(pb1::EncryptRequest {
            version: "v2".into(),
            plain: b"x".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // A second server on the same abstract name is refused.
    let err = atrest_kms::server::start(support::config(Endpoint::Abstract(name)), backend(&store))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("already serving"), "{err}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_uid_filters_peers() {
    let (dir, store) = new_store();
    let me = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());

    let sock = dir.path().join("other.sock");
    let mut cfg = support::config(Endpoint::Path(sock.clone()));
    cfg.allowed_uids = vec![me.wrapping_add(4242)];
    let server = support::start(cfg, backend(&store)).await;
    let kms = GrpcKms::new()
        .connect_v2("p", &endpoint_url(&sock), Duration::from_millis(500))
        .unwrap();
    assert!(
        matches!(kms.status(), Err(KmsError::Unavailable { .. })),
        "a peer with another uid is refused"
    );
    drop(server);

    let sock = dir.path().join("me.sock");
    let mut cfg = support::config(Endpoint::Path(sock.clone()));
    cfg.allowed_uids = vec![me];
    let server = support::start(cfg, backend(&store)).await;
    let kms = GrpcKms::new()
        .connect_v2("p", &endpoint_url(&sock), Duration::from_secs(3))
        .unwrap();
    assert_eq!(kms.status().unwrap().healthz, "ok");
    drop(server);
}

/// The synchronous client is safe to call from a current-thread tokio runtime's only thread
/// (where `Runtime::block_on` would panic); the server runs on its own runtime thread here.
#[tokio::test(flavor = "current_thread")]
async fn sync_client_works_inside_a_tokio_test() {
    let (dir, store) = new_store();
    let sock = support::socket_in(dir.path());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sock2 = sock.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server =
                support::start(support::config(Endpoint::Path(sock2)), backend(&store)).await;
            ready_tx.send(()).unwrap();
            let _ = stop_rx.await;
            server.shutdown().await.unwrap();
        });
    });
    ready_rx.recv().unwrap();
    let kms = GrpcKms::new()
        .connect_v2("p", &endpoint_url(&sock), Duration::from_secs(3))
        .unwrap();
    let enc = kms.encrypt("u", &[1; 32]).unwrap();
    assert_eq!(enc.key_id, kms.status().unwrap().key_id);
    // Also from a spawned task on this runtime.
    let kms2 = Arc::clone(&kms);
    let st = tokio::spawn(async move { kms2.status() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.healthz, "ok");
    stop_tx.send(()).unwrap();
    thread.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_waits_for_a_plugin_that_starts_late_and_times_out_cleanly() {
    let (dir, store) = new_store();
    let sock = support::socket_in(dir.path());
    let url = endpoint_url(&sock);
    // No server: fails within the deadline with Unavailable.
    let kms = GrpcKms::new()
        .connect_v2("p", &url, Duration::from_millis(300))
        .unwrap();
    let t = std::time::Instant::now();
    assert!(matches!(kms.status(), Err(KmsError::Unavailable { .. })));
    assert!(t.elapsed() < Duration::from_secs(3));

    // Server appears 300 ms after the call started: wait-for-ready succeeds.
    let kms = GrpcKms::new()
        .connect_v2("p", &url, Duration::from_secs(5))
        .unwrap();
    let store2 = store.clone();
    let sock2 = sock.clone();
    let starter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        support::start(support::config(Endpoint::Path(sock2)), backend(&store2)).await
    });
    let status = tokio::task::spawn_blocking(move || kms.status())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.healthz, "ok");
    drop(starter.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_made_world_readable_while_serving_turns_unhealthy_then_recovers() {
    let (dir, store) = new_store();
    let sock = support::socket_in(dir.path());
    let server = support::start(
        support::config(Endpoint::Path(sock.clone())),
        backend(&store),
    )
    .await;
    let kms = GrpcKms::new()
        .connect_v2("p", &endpoint_url(&sock), Duration::from_secs(3))
        .unwrap();
    assert_eq!(kms.status().unwrap().healthz, "ok");
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o755)).unwrap();
    let k = Arc::clone(&kms);
    assert!(
        support::eventually(Duration::from_secs(5), move || k.status().unwrap().healthz
            != "ok")
        .await
    );
    let h = kms.status().unwrap().healthz;
    assert!(
        h.contains("world-accessible") && h.contains(&store.display().to_string()),
        "{h}"
    );
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o700)).unwrap();
    let k = Arc::clone(&kms);
    assert!(
        support::eventually(Duration::from_secs(5), move || k.status().unwrap().healthz
            == "ok")
        .await
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_group_makes_the_socket_0660_owned_by_that_group() {
    use std::os::unix::fs::MetadataExt;
    let (dir, store) = new_store();
    let gid = std::fs::metadata("/proc/self").unwrap().gid();
    let sock = support::socket_in(dir.path());
    let mut cfg = support::config(Endpoint::Path(sock.clone()));
    cfg.socket_group = Some(gid);
    let server = support::start(cfg, backend(&store)).await;
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), gid);
    assert_eq!(
        atrest_kms::server::listener::resolve_group(&gid.to_string()).unwrap(),
        gid
    );
    assert_eq!(
        atrest_kms::server::listener::resolve_group("root").unwrap(),
        0
    );
    assert!(atrest_kms::server::listener::resolve_group("no-such-group-xyz").is_err());
    drop(server);
}

#[test]
fn symlinked_kek_file_and_store_of_another_user_are_refused_with_the_reason() {
    let (dir, store) = new_store();
    let key = store.join("kek-00000001.json");
    let moved = dir.path().join("elsewhere.json");
    std::fs::rename(&key, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &key).unwrap();
    let err = LocalBackend::open(&store, None)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("kek-00000001.json") && err.contains("is a symlink") && !err.contains("chmod"),
        "{err}"
    );
    std::fs::remove_file(&key).unwrap();
    std::fs::rename(&moved, &key).unwrap();
    LocalBackend::open(&store, None).unwrap();

    // A store owned by another user (here: nobody) is refused, also for root.
    std::os::unix::fs::chown(&store, Some(65534), None).unwrap();
    let err = LocalBackend::open(&store, None)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("owned by uid 65534"), "{err}");
}
