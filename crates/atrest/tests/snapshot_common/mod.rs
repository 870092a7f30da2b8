//! Helpers shared by the snapshot and backup tests: the `atrest` binary, `etcdctl snapshot save`,
//! deletes through the test client.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use atrest_testkit::load::TestClient;
use atrest_testkit::{EtcdServer, KmsPlugin};

pub fn atrest() -> Command {
    Command::new(env!("CARGO_BIN_EXE_atrest"))
}

/// Runs `atrest ARGS`; returns (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = atrest()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run atrest");
    decode(out)
}

/// `atrest backup encrypt --kms-endpoint ENDPOINT -i INPUT -o OUTPUT`.
pub fn backup_encrypt_kms(endpoint: &str, input: &Path, output: &Path) -> (i32, Vec<u8>, String) {
    run(&[
        "backup",
        "encrypt",
        "--kms-endpoint",
        endpoint,
        "-i",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ])
}

pub fn decode(out: Output) -> (i32, Vec<u8>, String) {
    let code = out.status.code().unwrap_or(-1);
    (
        code,
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `etcdctl snapshot save` (the real tool, which appends the SHA-256 trailer). Fails loudly
/// without etcdctl.
pub fn snapshot_save(server: &EtcdServer, path: &Path) {
    let out = Command::new(std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".into()))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", server.endpoint()))
        .args(["snapshot", "save"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("etcdctl not runnable ({e}): install etcd-client (apt-get install etcd-client) or set ETCDCTL_BIN"));
    assert!(
        out.status.success(),
        "etcdctl snapshot save failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let len = std::fs::metadata(path).expect("snapshot written").len();
    assert_eq!(len % 512, 32, "etcdctl appends a 32-byte SHA-256 trailer");
}

pub fn delete(client: &TestClient, key: &str) -> i64 {
    let mut kv = client.client().kv_client();
    let r = client.block_on(kv.delete(key, None)).expect("delete");
    assert_eq!(r.deleted(), 1, "{key} existed");
    r.header().expect("header").revision()
}

pub fn sample_config(name: &str) -> PathBuf {
    atrest_testkit::sample::config(name)
}

/// Parses a JSON document from stdout.
pub fn json(stdout: &[u8]) -> serde_json::Value {
    serde_json::from_slice(stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(stdout)
        )
    })
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Puts `n` keys `/registry/configmaps/ns-<i % 50>/cm-<i>` with `value_len` bytes each (plus the
/// `extra` pairs), takes a snapshot with etcdctl and stops etcd. Returns the temp dir holding the file.
pub fn make_snapshot(
    n: usize,
    value_len: usize,
    extra: &[(String, Vec<u8>)],
) -> (tempfile::TempDir, PathBuf) {
    let server = EtcdServer::start();
    let client = TestClient::connect(&server);
    let kvs: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            (
                format!("/registry/configmaps/ns-{}/cm-{i:06}", i % 50),
                bytes(i as u64, value_len),
            )
        })
        .collect();
    client.put_all(&kvs);
    client.put_all(extra);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snap.db");
    snapshot_save(&server, &path);
    (dir, path)
}

/// A running `atrest kms serve --backend local` (v2, and v1beta1 on the same socket), killed on drop.
pub fn start_kms_plugin() -> KmsPlugin {
    KmsPlugin::start(Path::new(env!("CARGO_BIN_EXE_atrest")), &["--v1beta1"])
}
