//! `atrest config check|explain` run as a real binary: verdicts, exit codes, line numbers, and
//! secrets never printed.

mod cli_common;
use cli_common::atrest;

use std::path::Path;
use std::process::Output;

const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0ISE/Pz8=";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path.to_str().unwrap().to_owned()
}

fn vector(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/vectors/configs")
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_valid_file_prints_ok() {
    let out = atrest(&["config", "check", &vector("valid-multi-key-rotation.yaml")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}

#[test]
fn kms_v1_needs_the_feature_gate() {
    let file = vector("invalid-kmsv1-feature-gate-off.yaml");
    let off = atrest(&["config", "check", &file]);
    assert_eq!(off.status.code(), Some(1));
    assert!(
        text(&off).contains("Set --feature-gates=KMSv1=true"),
        "{}",
        text(&off)
    );
    let on = atrest(&[
        "config",
        "check",
        &file,
        "--feature-gates",
        "SomethingElse=false,KMSv1=true",
    ]);
    assert_eq!(on.status.code(), Some(0), "{}", text(&on));
    assert!(
        String::from_utf8_lossy(&on.stderr).contains("SomethingElse=false"),
        "unknown gates are warned about"
    );
    let bad = atrest(&["config", "check", &file, "--feature-gates", "KMSv1"]);
    assert_ne!(bad.status.code(), Some(0));
}

#[test]
fn automatic_reload_makes_kms_names_unique() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "kms.yaml",
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms: {name: k, endpoint: 'unix:///a.sock'}\n      - kms: {name: k, endpoint: 'unix:///b.sock'}\n",
    );
    assert_eq!(
        atrest(&["config", "check", &file, "--feature-gates=KMSv1=true"])
            .status
            .code(),
        Some(0)
    );
    let reload = atrest(&[
        "config",
        "check",
        &file,
        "--feature-gates=KMSv1=true",
        "--automatic-reload",
    ]);
    assert_eq!(reload.status.code(), Some(1));
    assert!(text(&reload).contains("duplicate KMS provider name k, names must be unique"));
}

#[test]
fn a_bad_file_lists_every_error_with_lines_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "bad.yaml",
        &format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [Secrets]\n    providers:\n      - aescbc:\n          keys:\n            - name: k\n              secret: '{SECRET}x'\n        identity: {{}}\n"
        ),
    );
    let out = atrest(&["config", "check", &file]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("error while parsing file: ["), "{all}");
    assert!(all.contains("line 4: resources[0].resources[0]: Invalid value: \"Secrets\": resource name should not contain capital letters"), "{all}");
    assert!(
        all.contains(
            "line 9: resources[0].providers[0].aescbc.keys[0].secret: Invalid value: \"REDACTED\""
        ),
        "{all}"
    );
    assert!(all.contains("more than one provider specified"), "{all}");
    assert!(!all.contains(&SECRET[..16]), "secret leaked: {all}");
}

#[test]
fn a_missing_file_names_the_path() {
    let out = atrest(&["config", "check", "/nonexistent/encryption.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let all = text(&out);
    assert!(all.contains("\"/nonexistent/encryption.yaml\""), "{all}");
    assert!(all.contains("no such file or directory"), "{all}");
}

#[test]
fn explain_shows_write_and_read_order_and_warnings() {
    let out = atrest(&[
        "config",
        "explain",
        &vector("valid-multi-key-rotation.yaml"),
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("resources[0]: secrets, configmaps"), "{all}");
    assert!(
        all.contains("writes: aesgcm \"key2\" (stored with prefix k8s:enc:aesgcm:v1:key2:)"),
        "{all}"
    );
    assert!(
        all.contains("reads:  aesgcm \"key2\" -> aesgcm \"key1\" -> aescbc \"old\" -> identity"),
        "{all}"
    );
    assert!(all.contains("warning [aesgcm-rotation]"), "{all}");
    assert!(
        all.contains("warning [reused-key]"),
        "the aescbc key reuses aesgcm key1's bytes: {all}"
    );
}

#[test]
fn explain_json_reports_masking_and_file_mode_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "masked.yaml",
        &format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: ['*.*']\n    providers: [{{secretbox: {{keys: [{{name: s, secret: '{SECRET}'}}]}}}}]\n  - resources: [secrets]\n    providers: [{{identity: {{}}}}]\n"
        ),
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = atrest(&["config", "explain", &file, "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["loads"], false);
    assert_eq!(
        report["load_error"],
        "error while building transformers: resource \"secrets\" is masked by earlier rule \"*.*\""
    );
    let codes: Vec<&str> = report["entries"][1]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["code"].as_str())
        .collect();
    assert!(
        codes.contains(&"masked") && codes.contains(&"identity-writes"),
        "{codes:?}"
    );
    #[cfg(unix)]
    assert_eq!(report["file_warnings"][0]["code"], "file-mode");
    assert!(!text(&out).contains(&SECRET[..16]));
}
