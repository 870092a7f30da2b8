//! `atrest audit` on a node laid out in a temp dir (a kubeadm v1.36 manifest wired with
//! `apiserver enable`), against real etcd: TLS with client certificates, TLS without client
//! authentication, plain http; config files with bad modes and owners; a real KMS plugin socket.

mod cli_common;
use cli_common::atrest;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use atrest_testkit::load::TestClient;
use atrest_testkit::{EtcdServer, KmsPlugin};
use serde_json::Value;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A Secrets-only aesgcm config (testdata/kubeadm/enc-aesgcm.yaml).
const AESGCM: &str = include_str!("../../../testdata/kubeadm/enc-aesgcm.yaml");

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

struct Node {
    _dir: tempfile::TempDir,
    manifest: PathBuf,
    enc: PathBuf,
    key_store: PathBuf,
}

impl Node {
    /// kubeadm's manifest with its etcd flags pointing at `etcd` (`tls`: CA, client cert, key),
    /// wired to `config` with `apiserver enable`; a private key store.
    fn new(config: &str, etcd: &str, tls: Option<(&Path, &Path, &Path)>) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let k8s = dir.path().join("etc/kubernetes");
        std::fs::create_dir_all(k8s.join("manifests")).unwrap();
        std::fs::create_dir_all(k8s.join("enc")).unwrap();
        let original = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../testdata/kubeadm/v1.36-kube-apiserver.yaml"),
        )
        .unwrap();
        let mut m = original.replace(
            "--etcd-servers=https://127.0.0.1:2379",
            &format!("--etcd-servers={etcd}"),
        );
        match tls {
            Some((ca, cert, key)) => {
                m = m
                    .replace(
                        "--etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt",
                        &format!("--etcd-cafile={}", ca.display()),
                    )
                    .replace(
                        "--etcd-certfile=/etc/kubernetes/pki/apiserver-etcd-client.crt",
                        &format!("--etcd-certfile={}", cert.display()),
                    )
                    .replace(
                        "--etcd-keyfile=/etc/kubernetes/pki/apiserver-etcd-client.key",
                        &format!("--etcd-keyfile={}", key.display()),
                    );
            }
            None => {
                m = m
                    .lines()
                    .filter(|l| {
                        !l.contains("--etcd-cafile")
                            && !l.contains("--etcd-certfile")
                            && !l.contains("--etcd-keyfile")
                    })
                    .map(|l| format!("{l}\n"))
                    .collect();
            }
        }
        let manifest = k8s.join("manifests/kube-apiserver.yaml");
        std::fs::write(&manifest, m).unwrap();
        chmod(&manifest, 0o600);
        let enc = k8s.join("enc/enc.yaml");
        std::fs::write(&enc, config).unwrap();
        chmod(&enc, 0o600);
        let backups = dir.path().join("backups");
        let out = atrest(&[
            "apiserver",
            "enable",
            "--manifest",
            manifest.to_str().unwrap(),
            "--config",
            enc.to_str().unwrap(),
            "--backup-dir",
            backups.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let key_store = dir.path().join("kms");
        std::fs::create_dir(&key_store).unwrap();
        chmod(&key_store, 0o700);
        std::fs::write(key_store.join("store.json"), "{}").unwrap();
        chmod(&key_store.join("store.json"), 0o600);
        Node {
            _dir: dir,
            manifest,
            enc,
            key_store,
        }
    }

    fn audit(&self, extra: &[&str]) -> (i32, Value) {
        let mut args = vec![
            "audit",
            "--manifest",
            self.manifest.to_str().unwrap(),
            "--key-store",
            self.key_store.to_str().unwrap(),
            "-o",
            "json",
        ];
        args.extend_from_slice(extra);
        let out = atrest(&args);
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "one JSON document ({e}): {}\n{}",
                text(&out.stdout),
                text(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), json)
    }
}

/// The statuses of the checks called `id`.
fn statuses(report: &Value, id: &str) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == id)
        .map(|c| c["status"].as_str().unwrap().to_owned())
        .collect()
}

fn check<'a>(report: &'a Value, id: &str, status: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id && c["status"] == status)
        .unwrap_or_else(|| panic!("no {status} {id} in {report:#}"))
}

fn encrypt(config: &Path, key: &str, plaintext: &[u8]) -> Vec<u8> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_atrest"))
        .args([
            "encrypt",
            "--config",
            config.to_str().unwrap(),
            "--resource",
            "secrets",
            "--etcd-key",
            key,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(plaintext).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn good_node_passes_and_plaintext_in_etcd_fails() {
    let etcd = EtcdServer::start_tls();
    let t = etcd.tls().unwrap();
    let node = Node::new(
        AESGCM,
        &etcd.endpoint(),
        Some((&t.ca, &t.client_cert, &t.client_key)),
    );
    let client = TestClient::connect(&etcd);
    for i in 0..3 {
        let key = format!("/registry/secrets/default/s{i}");
        client.put(&key, encrypt(&node.enc, &key, b"k8s\x00secret"));
    }
    let (code, report) = node.audit(&[]);
    let failing: Vec<&Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] != "pass")
        .collect();
    assert_eq!(code, 0, "{failing:#?}");
    for id in [
        "flag",
        "config-mounted",
        "config-readable",
        "config-mode",
        "config-owner",
        "secrets-covered",
        "identity-first",
        "aescbc",
        "fips",
        "aesgcm-key-age",
        "key-store",
        "etcd-tls",
        "etcd-client-auth",
        "etcd-encrypted",
    ] {
        assert_eq!(statuses(&report, id), ["pass"], "{id}: {report:#}");
    }
    assert!(check(&report, "etcd-encrypted", "pass")["message"]
        .as_str()
        .unwrap()
        .contains("all 3 objects"));
    assert_eq!(report["summary"]["fail"], 0);

    // A Secret written in plaintext (before encryption was turned on) is a failure with its fix.
    client.put(
        "/registry/secrets/default/plain",
        b"k8s\x00plain".as_slice(),
    );
    let (code, report) = node.audit(&[]);
    assert_eq!(code, 1, "{report:#}");
    let c = check(&report, "etcd-encrypted", "fail");
    assert!(c["message"].as_str().unwrap().contains("secrets: 1"), "{c}");
    assert!(c["fix"].as_str().unwrap().contains("atrest rewrite"), "{c}");

    // The table shows the same, with the fix under the failing check.
    let out = atrest(&[
        "audit",
        "--manifest",
        node.manifest.to_str().unwrap(),
        "--key-store",
        node.key_store.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let table = text(&out.stdout);
    assert!(table.contains("FAIL   etcd-encrypted"), "{table}");
    assert!(table.contains("fix: atrest rewrite"), "{table}");
}

#[test]
fn etcd_without_client_certificate_auth_fails() {
    let etcd = EtcdServer::start_tls_without_client_auth();
    let t = etcd.tls().unwrap();
    let node = Node::new(
        AESGCM,
        &etcd.endpoint(),
        Some((&t.ca, &t.client_cert, &t.client_key)),
    );
    let (code, report) = node.audit(&[]);
    assert_eq!(code, 1, "{report:#}");
    let c = check(&report, "etcd-client-auth", "fail");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("without a certificate"),
        "{c}"
    );
    assert_eq!(statuses(&report, "etcd-tls"), ["pass"]);
    // The data check still runs (nothing stored: nothing stale).
    assert_eq!(statuses(&report, "etcd-encrypted"), ["pass"]);
}

#[test]
fn plain_http_etcd_fails() {
    let etcd = EtcdServer::start();
    let node = Node::new(AESGCM, &etcd.endpoint(), None);
    let (code, report) = node.audit(&[]);
    assert_eq!(code, 1, "{report:#}");
    check(&report, "etcd-tls", "fail");
    check(&report, "etcd-client-auth", "fail");
    // Explicit flags override the manifest's (same server here).
    let endpoint = etcd.endpoint();
    let (_, report) = node.audit(&["--endpoints", &endpoint]);
    check(&report, "etcd-tls", "fail");
}

#[test]
fn config_file_modes_owner_and_providers() {
    let etcd_free = ["--no-etcd"];
    let node = Node::new(AESGCM, "https://127.0.0.1:1", None);
    let (code, report) = node.audit(&etcd_free);
    assert_eq!(code, 0, "{report:#}");

    // An aesgcm config unchanged for 100 days: its write key is that old.
    let touched = Command::new("touch")
        .args(["-d", "100 days ago"])
        .arg(&node.enc)
        .status()
        .unwrap();
    assert!(touched.success());
    let (code, report) = node.audit(&etcd_free);
    assert_eq!(code, 3, "{report:#}");
    check(&report, "aesgcm-key-age", "warn");

    chmod(&node.enc, 0o644);
    let (code, report) = node.audit(&etcd_free);
    assert_eq!(code, 1);
    let c = check(&report, "config-mode", "fail");
    assert!(c["message"].as_str().unwrap().contains("0644"), "{c}");
    assert!(c["fix"].as_str().unwrap().starts_with("chmod 600"), "{c}");

    chmod(&node.enc, 0o600);
    std::os::unix::fs::chown(&node.enc, Some(65534), Some(65534)).expect("tests run as root");
    let (code, report) = node.audit(&etcd_free);
    assert_eq!(code, 1);
    check(&report, "config-owner", "fail");
    std::os::unix::fs::chown(&node.enc, Some(0), Some(0)).unwrap();

    // aescbc kept for reading: a warning only (exit 3).
    std::fs::write(
        &node.enc,
        AESGCM.replace(
            "      - identity: {}\n",
            "      - aescbc:\n          keys:\n            - name: old\n              secret: MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=\n      - identity: {}\n",
        ),
    )
    .unwrap();
    let (code, report) = node.audit(&etcd_free);
    assert_eq!(code, 3, "{report:#}");
    check(&report, "aescbc", "warn");

    // Under FIPS, secretbox fails.
    std::fs::write(
        &node.enc,
        AESGCM.replace("      - aesgcm:\n", "      - secretbox:\n"),
    )
    .unwrap();
    let (code, report) = node.audit(&["--no-etcd", "--fips"]);
    assert_eq!(code, 1);
    check(&report, "fips", "fail");

    // identity first: Secrets are written in plaintext.
    std::fs::write(
        &node.enc,
        "kind: EncryptionConfiguration\napiVersion: apiserver.config.k8s.io/v1\nresources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n",
    )
    .unwrap();
    let (code, report) = node.audit(&etcd_free);
    assert_eq!(code, 1);
    check(&report, "identity-first", "fail");
    check(&report, "secrets-covered", "fail");

    // A key store readable by others.
    std::fs::write(&node.enc, AESGCM).unwrap();
    chmod(&node.key_store.join("store.json"), 0o644);
    let (code, report) = node.audit(&etcd_free);
    assert_eq!(code, 1);
    check(&report, "key-store", "fail");

    // No flag in the manifest at all.
    let m = std::fs::read_to_string(&node.manifest).unwrap();
    let without: String = m
        .lines()
        .filter(|l| !l.contains("--encryption-provider-config"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&node.manifest, without).unwrap();
    let (code, report) = node.audit(&etcd_free);
    assert_eq!(code, 1);
    check(&report, "flag", "fail");
}

#[test]
fn kms_socket_must_be_private_and_mounted() {
    let plugin = KmsPlugin::start(Path::new(env!("CARGO_BIN_EXE_atrest")), &[]);
    let socket = plugin.endpoint.trim_start_matches("unix://").to_owned();
    let config = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          apiVersion: v2\n          name: atrest\n          endpoint: {}\n      - identity: {{}}\n",
        plugin.endpoint
    );
    let node = Node::new(&config, "https://127.0.0.1:1", None);
    let (_, report) = node.audit(&["--no-etcd"]);
    check(&report, "kms-socket", "pass");
    // `apiserver enable` was run without --kms-socket-dir.
    check(&report, "kms-socket-mounted", "fail");

    check(&report, "apiserver-livez", "warn");
    let m = std::fs::read_to_string(&node.manifest).unwrap();
    let excluded = m.replacen(
        "        path: /livez\n",
        "        path: /livez?exclude=kms-providers\n",
        1,
    );
    assert_ne!(m, excluded);
    std::fs::write(&node.manifest, excluded).unwrap();
    let (_, report) = node.audit(&["--no-etcd"]);
    check(&report, "apiserver-livez", "pass");

    chmod(Path::new(&socket), 0o666);
    let (code, report) = node.audit(&["--no-etcd"]);
    assert_eq!(code, 1);
    let c = check(&report, "kms-socket", "fail");
    assert!(c["message"].as_str().unwrap().contains("0666"), "{c}");
    chmod(Path::new(&socket), 0o600);
}
