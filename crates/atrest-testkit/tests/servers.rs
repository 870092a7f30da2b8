//! The testkit's own servers: start, stop, restart; TLS refuses clients without certificates;
//! a missing etcd binary is a loud error.

use atrest_testkit::load::TestClient;
use atrest_testkit::{find_etcd, EtcdCluster, EtcdServer};

#[test]
fn missing_etcd_binary_is_an_error_not_a_skip() {
    let empty = tempfile::tempdir().unwrap();
    let err = find_etcd(None, Some(empty.path().as_os_str().to_owned())).unwrap_err();
    assert!(
        err.contains("etcd binary not found") && err.contains("apt-get install etcd-server"),
        "{err}"
    );
    let err = find_etcd(Some("/nonexistent/etcd".into()), None).unwrap_err();
    assert!(err.contains("ETCD_BIN=/nonexistent/etcd"), "{err}");
}

#[test]
fn server_restart_keeps_data() {
    let mut server = EtcdServer::start();
    let client = TestClient::connect(&server);
    client.put("/k", "v");
    drop(client);
    server.member().stop();
    assert!(!server.member().is_running());
    server.member().restart();
    // Wait for the restarted member to answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ok = std::panic::catch_unwind(|| TestClient::connect(&server).get("/k"))
            .ok()
            .flatten();
        if let Some((value, _)) = ok {
            assert_eq!(value, b"v");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "restarted etcd did not answer"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn tls_requires_a_client_certificate() {
    let server = EtcdServer::start_tls();
    assert!(server.endpoint().starts_with("https://"));
    let client = TestClient::connect(&server);
    client.put("/k", "v");
    assert_eq!(client.get("/k").unwrap().0, b"v");
    let tls = server.tls().unwrap();
    let ca_only = etcd_client::ConnectOptions::new()
        .with_connect_timeout(std::time::Duration::from_secs(1))
        .with_timeout(std::time::Duration::from_secs(2))
        .with_tls(etcd_client::TlsOptions::new().ca_certificate(
            etcd_client::Certificate::from_pem(std::fs::read(&tls.ca).unwrap()),
        ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async {
        let c = etcd_client::Client::connect(server.endpoints(), Some(ca_only)).await?;
        c.kv_client().get("/k", None).await
    });
    assert!(result.is_err(), "a client without certificate was served");
}

#[test]
fn three_members_tolerate_one_down() {
    let mut cluster = EtcdCluster::start(3);
    assert_eq!(cluster.endpoints().len(), 3);
    cluster.members[2].kill();
    let client =
        TestClient::connect_endpoints(&cluster.endpoints()[..2], cluster.connect_options());
    // If the killed member led, the survivors first elect a new leader (longer on a loaded CI
    // machine): the write must succeed within a bounded time, not at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut kv = client.client().kv_client();
    while let Err(e) = client.block_on(kv.put("/k", "v", None)) {
        assert!(std::time::Instant::now() < deadline, "no write quorum: {e}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(client.get("/k").unwrap().0, b"v");
}
