//! A KMS outage is never reported as a verdict or as data loss: with a real `atrest kms serve`
//! stopped after a KEK rotation, and with OpenBao sealed behind the vault backend, every command
//! that reads through the config exits 1 with one error naming the provider's endpoint, prints no
//! report and changes nothing; with the plugin back, the same commands give the true answer.

mod etcd_common;
mod snapshot_common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use atrest_testkit::load::TestClient;
use atrest_testkit::{EtcdServer, KmsPlugin, OpenBao};
use etcd_common::*;

const SECRETS: usize = 20;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_atrest"))
}

fn put_secrets(client: &TestClient) {
    for i in 0..SECRETS {
        client.put(
            format!("/registry/secrets/default/s{i}"),
            format!(
                r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"s{i}","namespace":"default"}},"data":{{"k":"dg=="}}}}"#
            ),
        );
    }
}

fn kms_config(dir: &Path, endpoint: &str) -> PathBuf {
    let path = dir.join("kms.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - kms: {{apiVersion: v2, name: atrest, endpoint: \"{endpoint}\", timeout: 1s}}
      - identity: {{}}
"
        ),
    )
    .unwrap();
    path
}

/// Runs `atrest` with `parts`, `--endpoints` and `--config` added where the command takes them.
fn run(server: &EtcdServer, config: &Path, parts: &[&str]) -> std::process::Output {
    let mut a = args(parts);
    if parts[0] != "snapshot" {
        a.push(format!("--endpoints={}", server.endpoint()));
    }
    a.push(format!("--config={}", config.display()));
    atrest_in(config.parent().unwrap(), &a)
}

/// The one error an outage gives: exit 1, nothing on stdout, one line naming the endpoint.
fn assert_outage(out: &std::process::Output, endpoint: &str, what: &str, cause: &str) {
    let err = stderr(out);
    assert_eq!(code(out), 1, "{what}: {err}");
    assert!(
        out.stdout.is_empty(),
        "{what} printed a report: {}",
        stdout(out)
    );
    assert_eq!(err.lines().count(), 1, "{what}: one error, got: {err}");
    assert!(
        err.starts_with(&format!(
            "error: KMS provider \"atrest\" at {endpoint} is not available: "
        )),
        "{what}: {err}"
    );
    assert!(err.contains("an outage, not data loss"), "{what}: {err}");
    assert!(err.contains(cause), "{what}: {err}");
}

fn wait_for_exit(server: &EtcdServer, config: &Path, parts: &[&str], want: i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = run(server, config, parts);
        if code(&out) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{parts:?} still exits {}: {}",
            code(&out),
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// etcd with [`SECRETS`] Secrets, rewritten to the plugin's current key.
fn encrypted_cluster(plugin: &KmsPlugin) -> (EtcdServer, TestClient, tempfile::TempDir, PathBuf) {
    let server = EtcdServer::start();
    let client = TestClient::connect(&server);
    put_secrets(&client);
    let dir = tempfile::tempdir().unwrap();
    let config = kms_config(dir.path(), &plugin.endpoint);
    let out = run(&server, &config, &["rewrite", "-o", "json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    (server, client, dir, config)
}

#[test]
fn plugin_stopped_after_a_rotation_stops_every_command() {
    let mut plugin = KmsPlugin::start(bin(), &["--health-interval", "0.2"]);
    let (server, client, dir, config) = encrypted_cluster(&plugin);

    plugin.rotate_kek();
    // The running plugin picks the new KEK up: every Secret is now stale.
    wait_for_exit(&server, &config, &["status"], 3);
    let snap = dir.path().join("snap.db");
    snapshot_common::snapshot_save(&server, &snap);
    let snap = snap.to_str().unwrap();

    plugin.stop();
    let revision = client.revision();
    let cause = "failed to perform status section of the healthz check for KMS Provider atrest";
    for parts in [
        &["status"][..],
        &["status", "--verify"],
        &["status", "-o", "json"],
        &["rewrite"],
        &["rewrite", "--dry-run"],
        &["get", "secrets", "default/s1"],
        &["snapshot", "status", snap],
        &["snapshot", "status", snap, "--verify"],
        &["snapshot", "get", snap, "secrets", "default/s1"],
        &["snapshot", "export", snap],
    ] {
        let out = run(&server, &config, parts);
        assert_outage(&out, &plugin.endpoint, &parts.join(" "), cause);
    }
    assert_eq!(
        client.revision(),
        revision,
        "etcd changed during the outage"
    );

    plugin.restart();
    let out = run(&server, &config, &["status", "-o", "json"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["totals"]["stale"], SECRETS);
    let out = run(&server, &config, &["rewrite", "-o", "json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run(&server, &config, &["status", "--verify"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn sealed_openbao_is_an_outage_not_unreadable_values() {
    let bao = OpenBao::start("atrest");
    // A long health interval: Status keeps answering "ok" while Vault is sealed, so the failure
    // is seen first by Decrypt (the plugin answers, its backend does not).
    let mut plugin = KmsPlugin::start_vault(
        bin(),
        &bao.addr,
        atrest_testkit::openbao::ROOT_TOKEN,
        "atrest",
        &["--health-interval", "3600"],
    );
    let (server, client, _dir, config) = encrypted_cluster(&plugin);
    let out = run(&server, &config, &["status", "--verify"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    bao.seal();
    let revision = client.revision();
    let decrypt = "failed to decrypt DEK, error: rpc error: code = Unavailable";
    let out = run(&server, &config, &["status", "--verify"]);
    assert_outage(&out, &plugin.endpoint, "status --verify", decrypt);
    assert!(stderr(&out).contains("sealed"), "{}", stderr(&out));
    // The failed Decrypt told the plugin its backend is down: Status now says so, and every
    // command stops at its first question.
    let unhealthy = "kmsv2 Provider atrest is not healthy, error: got unexpected healthz status: vault backend unhealthy";
    for parts in [
        &["status"][..],
        &["rewrite"],
        &["get", "secrets", "default/s1"],
    ] {
        let out = run(&server, &config, parts);
        assert_outage(&out, &plugin.endpoint, &parts.join(" "), unhealthy);
    }
    assert_eq!(
        client.revision(),
        revision,
        "etcd changed during the outage"
    );

    bao.unseal();
    plugin.restart();
    let out = run(&server, &config, &["status", "--verify", "-o", "json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["totals"]["current"], SECRETS);
    assert_eq!(json["totals"]["unreadable"], 0);
}
