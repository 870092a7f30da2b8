//! `atrest rotate plan` through the CLI: the plan directory (0700, files 0600, plan.json without key
//! material), every generated file passing `config check`, each variant of the issue, object counts
//! from etcd, and refusals.

mod rotate_common;

use std::path::Path;

use base64::Engine;
use rotate_common::*;

fn plan(current: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "rotate".to_string(),
        "plan".into(),
        format!("--config={}", current.display()),
        format!("--out={}", out.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    atrest(&args)
}

/// Checks the directory layout and returns (stage, promote, retire) texts.
fn check_dir(dir: &Path) -> [String; 3] {
    assert_eq!(mode(dir), 0o700);
    let mut texts = Vec::new();
    for f in ["stage.yaml", "promote.yaml", "retire.yaml"] {
        let p = dir.join(f);
        assert_eq!(mode(&p), 0o600, "{f}");
        let check = atrest(&["config".into(), "check".into(), p.display().to_string()]);
        assert_eq!(check.status.code(), Some(0), "{f}: {}", stdout(&check));
        texts.push(std::fs::read_to_string(&p).unwrap());
    }
    let plan = std::fs::read_to_string(dir.join("plan.json")).unwrap();
    assert_eq!(mode(&dir.join("plan.json")), 0o600);
    // No key material in the plan: no `secret:` value of any generated file appears in it.
    for t in &texts {
        for line in t.lines().filter_map(|l| l.trim().strip_prefix("secret: ")) {
            assert!(!plan.contains(line), "plan.json holds key material");
            let raw = base64::engine::general_purpose::STANDARD
                .decode(line)
                .unwrap();
            assert!(!plan.contains(&hex(&raw)));
        }
    }
    let [a, b, c]: [String; 3] = texts.try_into().unwrap();
    [a, b, c]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn every_variant_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let current = tmp.path().join("current.yaml");
    std::fs::write(&current, aescbc_config()).unwrap();

    // New key, same provider.
    let out = plan(&current, &tmp.path().join("p1"), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("aescbc key1 → aescbc key-"),
        "{}",
        stdout(&out)
    );
    let [stage, promote, retire] = check_dir(&tmp.path().join("p1"));
    assert!(stage.find("name: key1").unwrap() < stage.find("name: key-").unwrap());
    assert!(promote.find("name: key-").unwrap() < promote.find("name: key1").unwrap());
    assert!(!retire.contains("key1") && retire.contains("identity"));
    // Only the key's two lines differ from CURRENT.
    assert_eq!(stage.lines().count(), aescbc_config().lines().count() + 2);

    // aescbc → secretbox, then secretbox → kms v2, then kms v2 → aesgcm.
    let out = plan(
        &current,
        &tmp.path().join("p2"),
        &["--provider=secretbox", "-o=json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["entries"][0]["to"]["provider"], "secretbox");
    assert_eq!(doc["entries"][0]["retired"][0]["key"], "key1");
    let [_, _, retire2] = check_dir(&tmp.path().join("p2"));
    let second = tmp.path().join("second.yaml");
    std::fs::write(&second, &retire2).unwrap();
    let out = plan(
        &second,
        &tmp.path().join("p3"),
        &[
            "--provider=kms",
            "--kms-name=vault",
            "--kms-endpoint=unix:///run/kms.sock",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let [_, promote3, retire3] = check_dir(&tmp.path().join("p3"));
    assert!(promote3.find("kms:").unwrap() < promote3.find("secretbox:").unwrap());
    assert!(!retire3.contains("secretbox"));
    let third = tmp.path().join("third.yaml");
    std::fs::write(&third, &retire3).unwrap();
    let out = plan(&third, &tmp.path().join("p4"), &["--provider=aesgcm"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let [_, _, retire4] = check_dir(&tmp.path().join("p4"));
    assert!(retire4.contains("aesgcm:") && !retire4.contains("kms:"));

    // Start encrypting a plaintext resource.
    let plain = tmp.path().join("plain.yaml");
    std::fs::write(
        &plain,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources:\n      - configmaps\n    providers:\n      - identity: {}\n",
    )
    .unwrap();
    let out = plan(
        &plain,
        &tmp.path().join("p5"),
        &["--resources=configmaps", "--provider=aesgcm"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let [stage5, promote5, _] = check_dir(&tmp.path().join("p5"));
    assert!(stage5.find("identity").unwrap() < stage5.find("aesgcm").unwrap());
    assert!(promote5.find("aesgcm").unwrap() < promote5.find("identity").unwrap());
}

#[test]
fn refusals_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let current = tmp.path().join("current.yaml");
    std::fs::write(&current, aescbc_config()).unwrap();
    let dir = tmp.path().join("p");
    assert_eq!(plan(&current, &dir, &[]).status.code(), Some(0));
    let before = std::fs::read(dir.join("stage.yaml")).unwrap();
    let again = plan(&current, &dir, &[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("never overwritten"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        std::fs::read(dir.join("stage.yaml")).unwrap(),
        before,
        "the old plan is intact"
    );

    let out = plan(&current, &tmp.path().join("q"), &["--provider=kms"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--kms-name"));
    let out = plan(&current, &tmp.path().join("q"), &["--resources=pods"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--resources pods"),
        "{}",
        stderr(&out)
    );
    assert!(
        !tmp.path().join("q").exists(),
        "nothing created on a refusal"
    );
}

#[test]
fn counts_objects_from_etcd() {
    let cp = ControlPlane::start(1, &aescbc_config());
    seed(cp.apiservers[0].url(), "app", 7);
    let out = cp.plan(&[
        &format!("--endpoints={}", cp.etcd.endpoint()),
        "--provider=aesgcm",
    ]);
    assert!(
        stdout(&out).contains("objects: 7 (7 secrets under aescbc key1)"),
        "{}",
        stdout(&out)
    );
}
