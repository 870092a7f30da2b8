//! End to end with the `vault` backend against a real OpenBao dev server.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use atrest_core::kms::{DecryptRequest, KmsConnector};
use atrest_kms::backends::vault::{VaultAuth, VaultBackend, VaultConfig};
use atrest_kms::client::GrpcKms;
use atrest_kms::{Endpoint, KeyBackend, Zeroizing};
use serde_json::json;
use support::openbao::OpenBao;

fn config(bao: &OpenBao, auth: VaultAuth) -> VaultConfig {
    VaultConfig {
        addr: bao.addr.clone(),
        mount: "transit".into(),
        key: "k8s".into(),
        namespace: None,
        auth,
        ca_file: None,
        timeout: Duration::from_secs(2),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_round_trip_rotation_and_outage() {
    let bao = OpenBao::start("k8s").await;
    let token = bao.transit_token("k8s", "1h").await;
    let backend = VaultBackend::connect(config(
        &bao,
        VaultAuth::Token(Zeroizing::new(token.clone())),
    ))
    .await
    .unwrap();
    let id1 = backend.current_key_id().unwrap();
    assert!(id1.starts_with("vault-v1-"), "{id1}");

    let dir = tempfile::tempdir().unwrap();
    let sock = support::socket_in(dir.path());
    let mut cfg = support::config(Endpoint::Path(sock.clone()));
    cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = support::start(cfg, Arc::new(backend)).await;
    let metrics = server.metrics_addr().unwrap();
    let kms = GrpcKms::new()
        .connect_v2(
            "vault",
            &format!("unix://{}", sock.display()),
            Duration::from_secs(3),
        )
        .unwrap();
    let kms2 = Arc::clone(&kms);
    let status = move || kms2.status().unwrap();
    assert_eq!(status().healthz, "ok");
    assert_eq!(status().key_id, id1);

    let seed = [11u8; 32];
    let enc1 = kms.encrypt("u", &seed).unwrap();
    assert_eq!(enc1.key_id, id1);
    assert!(enc1.ciphertext.starts_with(b"vault:v1:"));
    let dec = |ct: &[u8], id: &str| {
        kms.decrypt(&DecryptRequest {
            ciphertext: ct.to_vec(),
            uid: "u".into(),
            key_id: id.into(),
            annotations: BTreeMap::new(),
        })
    };
    assert_eq!(dec(&enc1.ciphertext, &id1).unwrap().as_slice(), &seed);
    assert!(dec(&enc1.ciphertext, "vault-v9-nope")
        .unwrap_err()
        .to_string()
        .contains("NotFound"));

    // Server-side rotation is picked up without restart.
    bao.post("transit/keys/k8s/rotate", json!({})).await;
    let (s2, old) = (status.clone(), id1.clone());
    assert!(
        support::eventually(Duration::from_secs(5), move || s2().key_id != old).await,
        "key id follows latest_version"
    );
    let id2 = status().key_id;
    assert!(id2.starts_with("vault-v2-"), "{id2}");
    let enc2 = kms.encrypt("u", &seed).unwrap();
    assert_eq!(enc2.key_id, id2);
    assert!(enc2.ciphertext.starts_with(b"vault:v2:"));
    assert_eq!(
        dec(&enc1.ciphertext, &id1).unwrap().as_slice(),
        &seed,
        "old version still decrypts"
    );
    // A v1 ciphertext presented with the v2 key id is refused.
    assert!(dec(&enc1.ciphertext, &id2).is_err());

    // Outage: seal the server → unhealthy; unseal → healthy again.
    bao.seal().await;
    let s3 = status.clone();
    assert!(
        support::eventually(Duration::from_secs(8), move || s3().healthz != "ok").await,
        "sealed Vault reported unhealthy"
    );
    let (line, body) = support::http_get(metrics, "/readyz").await;
    assert!(line.contains("503"), "{line} {body}");
    assert!(kms.encrypt("u", &seed).is_err());
    bao.unseal().await;
    let s4 = status.clone();
    assert!(
        support::eventually(Duration::from_secs(10), move || s4().healthz == "ok").await,
        "recovers after unseal"
    );
    assert_eq!(dec(&enc2.ciphertext, &id2).unwrap().as_slice(), &seed);

    // Revoked token → unhealthy, with Vault's reason.
    bao.post("auth/token/revoke", json!({ "token": token }))
        .await;
    let s5 = status.clone();
    assert!(support::eventually(Duration::from_secs(8), move || s5().healthz != "ok").await);
    let h = status().healthz;
    assert!(
        h.contains("vault backend unhealthy") && h.contains("403"),
        "{h}"
    );
    drop(server);
}

#[tokio::test]
async fn approle_login_and_clear_errors() {
    let bao = OpenBao::start("k8s").await;
    bao.transit_token("k8s", "1h").await; // creates the `kms` policy
    bao.post("sys/auth/approle", json!({ "type": "approle" }))
        .await;
    bao.post(
        "auth/approle/role/kms",
        json!({ "token_policies": ["kms"], "token_ttl": "20m" }),
    )
    .await;
    let (_, v) = bao
        .request(
            reqwest::Method::GET,
            "auth/approle/role/kms/role-id",
            None,
            support::openbao::ROOT_TOKEN,
        )
        .await;
    let role_id = v["data"]["role_id"].as_str().unwrap().to_string();
    let v = bao.post("auth/approle/role/kms/secret-id", json!({})).await;
    let secret_id = v["data"]["secret_id"].as_str().unwrap().to_string();

    let auth = VaultAuth::AppRole {
        mount: "approle".into(),
        role_id: role_id.clone(),
        secret_id: Zeroizing::new(secret_id),
    };
    let b = VaultBackend::connect(config(&bao, auth)).await.unwrap();
    let w = b.wrap(b"0123456789abcdef0123456789abcdef").await.unwrap();
    assert_eq!(
        b.unwrap(&w.key_id, &w.ciphertext, &BTreeMap::new())
            .await
            .unwrap()
            .as_slice(),
        b"0123456789abcdef0123456789abcdef"
    );
    b.probe().await.unwrap();
    b.refresh().await.unwrap();

    // Wrong secret id, bad token, missing key: each a clear start-up error.
    let bad = VaultAuth::AppRole {
        mount: "approle".into(),
        role_id,
        secret_id: Zeroizing::new("nope".into()),
    };
    let e = VaultBackend::connect(config(&bao, bad))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("auth/approle/login") && e.contains("HTTP"),
        "{e}"
    );
    let e = VaultBackend::connect(config(
        &bao,
        VaultAuth::Token(Zeroizing::new("bogus".into())),
    ))
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("403"), "{e}");
    let mut c = config(
        &bao,
        VaultAuth::Token(Zeroizing::new(support::openbao::ROOT_TOKEN.into())),
    );
    c.key = "missing".into();
    let e = VaultBackend::connect(c).await.err().unwrap().to_string();
    assert!(e.contains("transit/keys/missing"), "{e}");
    // Unreachable address.
    let mut c = config(&bao, VaultAuth::Token(Zeroizing::new("x".into())));
    c.addr = format!("http://127.0.0.1:{}", support::free_port());
    let e = VaultBackend::connect(c).await.err().unwrap().to_string();
    assert!(e.contains("vault"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_ca_file_namespace_and_token_renewal() {
    let mut bao = OpenBao::start_with("k8s", true).await;
    let ca = bao.ca_file.clone().expect("dev CA");

    // Without the CA file the dev certificate is not trusted.
    let mut c = config(
        &bao,
        VaultAuth::Token(Zeroizing::new(support::openbao::ROOT_TOKEN.into())),
    );
    let e = VaultBackend::connect(c.clone())
        .await
        .err()
        .expect("untrusted TLS refused")
        .to_string();
    assert!(e.contains("vault"), "{e}");
    c.ca_file = Some(ca.clone());
    let b = VaultBackend::connect(c).await.unwrap();
    b.probe().await.unwrap();

    // A namespace: same key name, other namespace → other key id.
    bao.use_namespace("team1", "k8s").await;
    let mut c = config(
        &bao,
        VaultAuth::Token(Zeroizing::new(support::openbao::ROOT_TOKEN.into())),
    );
    c.ca_file = Some(ca.clone());
    c.namespace = Some("team1".into());
    let nsb = VaultBackend::connect(c).await.unwrap();
    assert_ne!(nsb.current_key_id().unwrap(), b.current_key_id().unwrap());
    let w = nsb.wrap(b"namespaced").await.unwrap();
    assert_eq!(
        nsb.unwrap(&w.key_id, &w.ciphertext, &BTreeMap::new())
            .await
            .unwrap()
            .as_slice(),
        b"namespaced"
    );

    // A short-lived renewable token keeps working past its TTL thanks to background renewal.
    let token = bao.transit_token("k8s", "4s").await;
    let mut c = config(&bao, VaultAuth::Token(Zeroizing::new(token)));
    c.ca_file = Some(ca);
    c.namespace = Some("team1".into());
    let b = Arc::new(VaultBackend::connect(c).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let sock = support::socket_in(dir.path());
    let server = support::start(support::config(Endpoint::Path(sock.clone())), b.clone()).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    b.probe().await.expect("token renewed before it expired");
    let kms = GrpcKms::new()
        .connect_v2(
            "v",
            &format!("unix://{}", sock.display()),
            Duration::from_secs(3),
        )
        .unwrap();
    assert_eq!(kms.status().unwrap().healthz, "ok");
    drop(server);
}
