//! `rewrite` to a KMS v2 write provider through a real plugin socket (`atrest kms serve`):
//! the sample's Secrets move from local keys to KMS v2 (OPERATIONS.md §3.4).

mod etcd_common;

use atrest_testkit::{EtcdServer, KmsPlugin};
use etcd_common::*;

fn start_plugin() -> KmsPlugin {
    KmsPlugin::start(std::path::Path::new(env!("CARGO_BIN_EXE_atrest")), &[])
}

#[test]
fn rewrite_to_kms_v2_through_the_plugin() {
    let plugin = start_plugin();
    let server = EtcdServer::start();
    let (client, objects) = load_sample(&server);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kms.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - kms: {{apiVersion: v2, name: atrest, endpoint: \"{}\"}}
      - aesgcm: {{keys: [{{name: gcm-2025-03, secret: Y17xpsW4tC5ehXiCUkXtCD5Y9NJj+Mw16zLI4iSjAuo=}}]}}
      - aescbc: {{keys: [{{name: cbc-2024-01, secret: PKkQZbc7xWJqIwt8wz/XdvmqiMyHJozkyLoH267TbUI=}}]}}
      - secretbox: {{keys: [{{name: sb-2022-09, secret: q2AEvPCWcExWWax4iPpKIhpA04LV1zw9c3i0Bi9RX44=}}]}}
      - identity: {{}}
",
            plugin.endpoint
        ),
    )
    .unwrap();
    let cfg = format!("--config={}", config.display());
    let endpoint = format!("--endpoints={}", server.endpoint());

    let out = atrest_in(
        dir.path(),
        &args(&[
            "rewrite",
            &endpoint,
            &cfg,
            "--resource=secrets",
            "-o",
            "json",
        ]),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["rewritten"], 780);

    for o in objects.iter().filter(|o| o.resource == "secrets") {
        let (value, _) = client.get(&o.etcd_key).unwrap();
        assert!(
            value.starts_with(b"k8s:enc:kms:v2:atrest:"),
            "{}",
            o.etcd_key
        );
    }
    for o in objects.iter().filter(|o| o.resource != "secrets") {
        assert_eq!(
            client.get(&o.etcd_key).unwrap().0,
            o.stored,
            "{} was touched",
            o.etcd_key
        );
    }

    // status (no Decrypt: provider name and key ID from the EncryptedObject) and status --verify.
    for verify in [false, true] {
        let mut a = args(&["status", &endpoint, &cfg, "-o", "json"]);
        if verify {
            a.push("--verify".into());
        }
        let out = atrest_in(dir.path(), &a);
        // This config covers only secrets: the encrypted configmaps and widgets are unreadable to it.
        assert_eq!(code(&out), 4, "{}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["totals"]["unreadable"], 308 + 90);
        assert_eq!(json["totals"]["current"], 780);
        let row = json["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "secrets")
            .unwrap()
            .clone();
        assert_eq!(
            (
                row["provider"].as_str(),
                row["key_name"].as_str(),
                row["count"].as_u64()
            ),
            (Some("kms v2"), Some("atrest"), Some(780))
        );
        assert!(!row["key_id"].as_str().unwrap().is_empty());
        assert_eq!(row["stale"], false);
    }

    // get decrypts through the plugin.
    let secret = objects.iter().find(|o| o.resource == "secrets").unwrap();
    let out = atrest_in(
        dir.path(),
        &args(&[
            "get",
            &endpoint,
            &cfg,
            &format!("--etcd-key={}", secret.etcd_key),
            "-o",
            "json",
        ]),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut got = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
    // Served with resourceVersion = the key's mod revision.
    got["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion")
        .expect("resourceVersion");
    assert_eq!(got, secret.object_json);

    // KEK rotation: the stored key ID no longer matches the plugin's, so status (without Decrypt)
    // reports the secrets stale, and rewrite moves them to the new key ID.
    let old_key_id = plugin.key_id();
    let new_key_id = plugin.rotate_kek();
    let secrets_rows = |out: &std::process::Output| -> Vec<serde_json::Value> {
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["resource"] == "secrets")
            .cloned()
            .collect()
    };
    let out = atrest_in(
        dir.path(),
        &args(&["status", &endpoint, &cfg, "-o", "json"]),
    );
    let rows = secrets_rows(&out);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0]["key_id"].as_str(), &rows[0]["stale"]),
        (Some(old_key_id.as_str()), &serde_json::json!(true))
    );
    let out = atrest_in(
        dir.path(),
        &args(&[
            "rewrite",
            &endpoint,
            &cfg,
            "--resource=secrets",
            "-o",
            "json",
        ]),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = atrest_in(
        dir.path(),
        &args(&["status", &endpoint, &cfg, "--verify", "-o", "json"]),
    );
    let rows = secrets_rows(&out);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0]["key_id"].as_str(), &rows[0]["stale"]),
        (Some(new_key_id.as_str()), &serde_json::json!(false))
    );
    assert_eq!(rows[0]["count"], 780);
}
