//! `atrest monitor` with a KMS v2 write provider behind a real plugin (`atrest kms serve`):
//! stale by key_id after a KEK rotation, and `unknown` — never current — while the plugin is down.

mod etcd_common;
mod monitor_common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use atrest_testkit::load::TestClient;
use atrest_testkit::{EtcdServer, KmsPlugin};
use etcd_common::*;
use monitor_common::*;

fn encrypt(config: &std::path::Path, key: &str, plaintext: &[u8]) -> Vec<u8> {
    let mut child = atrest_cmd()
        .args(["encrypt", "--resource", "secrets", "--etcd-key", key])
        .arg(format!("--config={}", config.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(plaintext).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "encrypt: {}", stderr(&out));
    out.stdout
}

#[test]
fn kms_objects_go_stale_by_key_id_and_unknown_while_the_plugin_is_down() {
    let mut plugin = KmsPlugin::start(std::path::Path::new(env!("CARGO_BIN_EXE_atrest")), &[]);
    let server = EtcdServer::start();
    let client = TestClient::connect(&server);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kms.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          apiVersion: v2\n          name: atrest\n          endpoint: {}\n          timeout: 3s\n      - identity: {{}}\n",
            plugin.endpoint
        ),
    )
    .unwrap();
    for i in 0..3 {
        let key = format!("/registry/secrets/default/kms-{i}");
        let value = encrypt(&config, &key, b"k8s\x00secret payload");
        assert!(value.starts_with(b"k8s:enc:kms:v2:atrest:"));
        client.put(&key, &value);
    }
    client.put("/registry/secrets/default/plain", b"k8s\x00plain");
    let etcd = server.cli_args();

    let m = MonitorProcess::start(dir.path(), &etcd, &config);
    let want = assert_matches_status(&m, dir.path(), &etcd, &config, Duration::from_secs(5));
    assert_eq!(
        want,
        [("current".to_string(), 3), ("unencrypted".to_string(), 1)].into()
    );
    assert!(m.metrics().0.lines().any(|l| l.starts_with(
        "atrest_objects{resource=\"secrets\",state=\"current\",provider=\"kms v2\",key=\"atrest\",key_id=\"local-v1-"
    )));

    // A KEK rotation: the plugin reports a new key_id; the stored values carry the old one.
    plugin.rotate_kek();
    let stale = [("stale".to_string(), 3), ("unencrypted".to_string(), 1)].into();
    let ok = eventually(Duration::from_secs(30), || {
        m.metrics().objects_by_state() == stale
    });
    assert!(ok, "{:?}\n{}", m.metrics().objects_by_state(), m.log_text());
    assert_matches_status(&m, dir.path(), &etcd, &config, Duration::from_secs(5));

    // The plugin stops: its objects are unknown, never guessed; plaintext stays known.
    plugin.stop();
    let unknown = [("unknown".to_string(), 3), ("unencrypted".to_string(), 1)].into();
    let ok = eventually(Duration::from_secs(15), || {
        m.metrics().objects_by_state() == unknown
    });
    assert!(ok, "{:?}\n{}", m.metrics().objects_by_state(), m.log_text());
    let known = m
        .metrics()
        .sample("atrest_kms_provider_key_id_known{provider=\"atrest\"");
    assert_eq!(known, Some(0.0));
}
