//! `atrest rotate kek` against a real `atrest kms serve` plugin, a real etcd and two apiserver
//! stand-ins that report the plugin's key ID on `/metrics`: after `atrest kms rotate`, every value
//! ends under the new key ID and the old KEK is reported unused.

mod rotate_common;

use std::sync::Arc;

use atrest_testkit::{ApiserverOptions, ApiserverStandIn, EtcdServer, KmsPlugin};
use rotate_common::*;

#[test]
fn kek_rotation_waits_for_every_apiserver_then_rewrites_old_key_ids() {
    let plugin = KmsPlugin::start(std::path::Path::new(env!("CARGO_BIN_EXE_atrest")), &[]);
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enc.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          apiVersion: v2\n          name: atrest\n          endpoint: {}\n      - identity: {{}}\n",
            plugin.endpoint
        ),
    )
    .unwrap();
    let apiservers: Vec<ApiserverStandIn> = (0..2)
        .map(|i| {
            let mut opts =
                ApiserverOptions::new(config.clone(), etcd.endpoints(), &format!("master-{i}"));
            opts.kms = Arc::new(atrest_kms::client::GrpcKms::new());
            ApiserverStandIn::start(opts)
        })
        .collect();
    seed(apiservers[0].url(), "app", 10);
    let _old = plugin.key_id();

    let new = plugin.rotate_kek();

    let mut args = vec![
        "rotate".to_string(),
        "kek".into(),
        "--provider=atrest".into(),
        format!("--config={}", config.display()),
        format!("--endpoints={}", etcd.endpoint()),
        "--wait-timeout=60s".into(),
        "-o=json".into(),
    ];
    for a in &apiservers {
        args.push(format!("--apiserver={}", a.url()));
    }
    let out = atrest(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["key_id"], new.as_str());
    assert_eq!(v["confirmed_by_metrics"].as_array().unwrap().len(), 2);
    assert_eq!(v["old_key_ids_unused"], true);
    assert_eq!(v["objects_by_key_id"][new.as_str()], 10);
    assert!(v["rewritten"].as_u64().unwrap() >= 10);
    // Reads through both apiservers still work.
    for a in &apiservers {
        let (code, body) =
            atrest_testkit::http(a.url(), "GET", "/api/v1/namespaces/app/secrets", b"").unwrap();
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    }
}
