//! `config check` / `config explain` on mistakes kube-apiserver loads silently: a resource in two
//! entries, typos in resource names, the file-mode warning only for files with key material,
//! `config check -` (stdin) and `-o json|yaml`.

mod cli_common;
use cli_common::atrest_stdin as atrest;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const KEY: &str = "Y17xpsW4tC5ehXiCUkXtCD5Y9NJj+Mw16zLI4iSjAuo=";

fn write(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn twice() -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets, configmaps]
    providers:
      - aesgcm: {{keys: [{{name: k1, secret: {KEY}}}]}}
  - resources: [secrets]
    providers:
      - identity: {{}}
"
    )
}

#[test]
fn a_resource_in_two_entries() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "twice.yaml", &twice(), 0o600);
    let file = file.to_str().unwrap();
    let want = "warning [duplicate-resource]: secrets is listed in resources[0] and resources[1]: resources[0] wins and writes it (aesgcm key \"k1\"); resources[1] is never used to write secrets, its providers are only tried after resources[0]'s when reading. List secrets in one entry only.";

    let out = atrest(&["config", "check", file], b"");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "ok\n");
    assert_eq!(text(&out.stderr).trim_end(), want);

    let out = atrest(&["config", "explain", file], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("resources[0]: secrets, configmaps\n"),
        "{shown}"
    );
    assert!(
        shown.contains("  reads secrets: aesgcm \"k1\" -> identity (with resources[1])"),
        "{shown}"
    );
    assert!(
        shown.contains(
            "resources[1]: governs nothing; also lists secrets (written by resources[0])"
        ),
        "{shown}"
    );
    // No false "writes plaintext" for entry 1; entry 0 still warns for configmaps' lack of identity.
    assert!(!shown.contains("identity-writes"), "{shown}");
    assert!(
        shown.contains("warning [no-identity]: identity is not listed for configmaps, so objects"),
        "{shown}"
    );
    assert!(shown.contains(want), "{shown}");

    let out = atrest(&["config", "explain", file, "-o", "json"], b"");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["entries"][1]["resources"], serde_json::json!([]));
    assert_eq!(json["entries"][1]["shadowed"][0]["written_by"], 0);
    assert_eq!(
        json["entries"][0]["extended_reads"][0]["from_entries"],
        serde_json::json!([1])
    );
}

#[test]
fn typos_in_resource_names() {
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secret, flunders, flunders.wardle.example.com, deployments.apps]
    providers:
      - aesgcm: {{keys: [{{name: k1, secret: {KEY}}}]}}
      - identity: {{}}
"
    );
    let file = write(dir.path(), "typo.yaml", &body, 0o600);
    let out = atrest(&["config", "check", file.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "warning [unknown-resource]: `secret` is not a built-in resource; did you mean `secrets`?",
            "warning [unknown-resource]: `flunders` has no group: it only matches a core resource of that name, and kube-apiserver has none. Custom resources are named `<plural>.<group>` (e.g. `flunders.example.com`).",
        ],
        "{err}"
    );
}

#[test]
fn file_mode_only_with_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let kms = "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - kms: {apiVersion: v2, name: p, endpoint: unix:///run/kms.sock}
      - identity: {}
";
    let kms = write(dir.path(), "kms.yaml", kms, 0o644);
    for cmd in ["check", "explain"] {
        let out = atrest(&["config", cmd, kms.to_str().unwrap()], b"");
        assert_eq!(out.status.code(), Some(0));
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(!all.contains("file-mode"), "{cmd}: {all}");
    }
    let keys = write(dir.path(), "keys.yaml", &twice(), 0o644);
    let keys = keys.to_str().unwrap();
    let out = atrest(&["config", "check", keys], b"");
    assert!(
        text(&out.stderr).contains(&format!(
            "warning [file-mode]: {keys} is world-readable (mode 644): it holds key material; chmod 600 it."
        )),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_reads_stdin_and_prints_one_document() {
    let out = atrest(&["config", "check", "-"], twice().as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok\n");

    let out = atrest(&["config", "check", "-", "-o", "json"], twice().as_bytes());
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["file"], "<stdin>");
    assert_eq!(json["loads"], true);
    assert_eq!(json["warnings"][0]["code"], "duplicate-resource");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));

    let bad = "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - aesgcm: {keys: [{name: k1, secret: c2hvcnQ=}]}
";
    let out = atrest(&["config", "check", "-", "-o", "yaml"], bad.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let yaml = text(&out.stdout);
    assert!(yaml.contains("loads: false\n"), "{yaml}");
    assert!(yaml.contains("line: 6"), "{yaml}");
    assert!(!yaml.contains("c2hvcnQ"), "secret printed: {yaml}");
}
