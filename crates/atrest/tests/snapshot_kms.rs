//! KMS v2 (and v1) values in a snapshot, decrypted by calling the real `atrest kms serve` plugin
//! named in the config: export recovers every object; with the plugin gone the export stops with
//! one error naming it (exit 1: an outage, not data loss).

mod snapshot_common;

use std::sync::Arc;

use atrest_core::config::{load_file, LoadOptions};
use atrest_core::Transformers;
use atrest_store::keymap;
use atrest_testkit::load::TestClient;
use atrest_testkit::{sample, EtcdServer};
use snapshot_common::*;

#[test]
fn kms_values_in_a_snapshot() {
    let mut plugin = start_kms_plugin();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("kms.yaml");
    let sock = plugin.endpoint.clone();
    std::fs::write(
        &cfg,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          apiVersion: v2\n          name: atrest\n          endpoint: {sock}\n      - identity: {{}}\n  - resources: [configmaps]\n    providers:\n      - kms:\n          name: atrest-v1\n          endpoint: {sock}\n          cachesize: 100\n      - identity: {{}}\n"
        ),
    )
    .unwrap();
    let config = load_file(
        &cfg,
        &LoadOptions {
            kms_v1_enabled: true,
            ..Default::default()
        },
    )
    .expect("config loads");
    let transformers = Transformers::build(&config, Arc::new(atrest_kms::client::GrpcKms::new()))
        .expect("transformers");

    // Write the sample's readable Secrets and ConfigMaps as kube-apiserver would with this config.
    let objects: Vec<sample::SampleObject> = sample::objects()
        .into_iter()
        .filter(|o| !o.unreadable && (o.resource == "secrets" || o.resource == "configmaps"))
        .collect();
    let server = EtcdServer::start();
    let client = TestClient::connect(&server);
    let kvs: Vec<(String, Vec<u8>)> = objects
        .iter()
        .map(|o| {
            let info = keymap::parse_key("/registry", o.etcd_key.as_bytes()).unwrap();
            let stored = transformers
                .for_resource(&info.resource)
                .write(&o.plaintext, o.etcd_key.as_bytes())
                .expect("kms write");
            (o.etcd_key.clone(), stored)
        })
        .collect();
    assert!(kvs
        .iter()
        .filter(|(k, _)| k.starts_with("/registry/secrets/"))
        .all(|(_, v)| v.starts_with(b"k8s:enc:kms:v2:atrest:")));
    assert!(kvs
        .iter()
        .filter(|(k, _)| k.starts_with("/registry/configmaps/"))
        .all(|(_, v)| v.starts_with(b"k8s:enc:kms:v1:atrest-v1:")));
    client.put_all(&kvs);
    let snap = dir.path().join("kms.snapshot");
    snapshot_save(&server, &snap);
    drop(server);
    let (snap_s, cfg_s) = (snap.to_str().unwrap(), cfg.to_str().unwrap());

    // Every object comes back exactly.
    let (code, stdout, stderr) = run(&[
        "snapshot",
        "export",
        snap_s,
        "--config",
        cfg_s,
        "--feature-gates",
        "KMSv1=true",
        "-o",
        "json",
        "--keep-server-fields",
        "--include-recreated",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let list = json(&stdout);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), objects.len());
    for (item, o) in items.iter().zip(&objects) {
        // As served: resourceVersion is the key's mod revision.
        let mut item = item.clone();
        item["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion")
            .expect("resourceVersion");
        assert_eq!(item, o.object_json, "{}", o.etcd_key);
    }
    // The status report (decrypting every value) shows them current under the kms providers.
    let (code, stdout, stderr) = run(&[
        "snapshot",
        "status",
        snap_s,
        "--config",
        cfg_s,
        "--feature-gates",
        "KMSv1=true",
        "--verify",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report = json(&stdout);
    assert_eq!(report["totals"]["current"], objects.len());
    let providers: Vec<&str> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["provider"].as_str().unwrap())
        .collect();
    assert!(
        providers.contains(&"kms v2") && providers.contains(&"kms v1"),
        "{providers:?}"
    );

    // Without the plugin: an outage, not data loss — one error naming the plugin, no objects.
    plugin.stop();
    let (code, stdout, stderr) = run(&[
        "snapshot",
        "export",
        snap_s,
        "--config",
        cfg_s,
        "--feature-gates",
        "KMSv1=true",
        "-o",
        "json",
        "--resource",
        "secrets",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty(), "{}", String::from_utf8_lossy(&stdout));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("at {} is not available", plugin.endpoint))
            && stderr.contains("an outage, not data loss"),
        "{stderr}"
    );
}

#[test]
fn backup_round_trip_through_the_kms_plugin() {
    let plugin = start_kms_plugin();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("snapshot.db");
    let data = bytes(3, 5 * 1024 * 1024 + 123);
    std::fs::write(&input, &data).unwrap();
    let enc = dir.path().join("snapshot.db.age");
    let dec = dir.path().join("restored.db");
    let (code, _, stderr) = backup_encrypt_kms(&plugin.endpoint, &input, &enc);
    assert_eq!(code, 0, "{stderr}");
    let header = std::fs::read(&enc).unwrap();
    assert!(
        String::from_utf8_lossy(&header[..300]).contains("-> atrest-kms "),
        "KMS envelope stanza in the header"
    );
    let (code, _, stderr) = run(&[
        "backup",
        "decrypt",
        "--kms-endpoint",
        &plugin.endpoint,
        "-i",
        enc.to_str().unwrap(),
        "-o",
        dec.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read(&dec).unwrap(), data);
    // Another plugin (another key store) cannot unwrap the file key.
    let other = start_kms_plugin();
    let dec2 = dir.path().join("restored2.db");
    let (code, _, stderr) = run(&[
        "backup",
        "decrypt",
        "--kms-endpoint",
        &other.endpoint,
        "-i",
        enc.to_str().unwrap(),
        "-o",
        dec2.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("KMS plugin"), "{stderr}");
    assert!(!dec2.exists(), "no output on failure");
}
