//! Every built-in kind through a real etcd: the stored bytes of `testdata/decoding` (written by
//! kube-apiserver v1.36.3's codecs) come back from `atrest get` with kubectl-style names exactly as
//! the apiserver serves them; `atrest decode` does the same offline; an unknown name without a
//! group gets a "did you mean". `atrest backup snapshot` streams etcd into an encrypted backup
//! with no plaintext file anywhere, and the decrypted backup is a snapshot etcdctl and atrest read.

mod cli_common;
use cli_common::atrest_stdin;

mod etcd_common;

use std::os::unix::fs::PermissionsExt;

use atrest_testkit::load::TestClient;
use atrest_testkit::EtcdServer;
use base64::Engine;
use etcd_common::*;
use serde_json::Value;

struct Record {
    resource: String,
    namespace: String,
    name: String,
    etcd_key: String,
    case: String,
    stored: Vec<u8>,
    json: Value,
}

fn records() -> Vec<Record> {
    let path = atrest_testkit::workspace_root().join("testdata/decoding/builtin-kinds.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| r[k].as_str().unwrap().to_string();
            let group = s("group");
            Record {
                resource: if group.is_empty() {
                    s("resource")
                } else {
                    format!("{}.{group}", s("resource"))
                },
                namespace: s("namespace"),
                name: s("name"),
                etcd_key: s("etcd_key"),
                case: s("case"),
                stored: base64::engine::general_purpose::STANDARD
                    .decode(s("stored_b64"))
                    .unwrap(),
                json: serde_json::from_str(&s("json")).unwrap(),
            }
        })
        .collect()
}

/// An identity-only config: the vectors are stored unencrypted.
fn identity_config(dir: &std::path::Path) -> String {
    let path = dir.join("identity.yaml");
    std::fs::write(
        &path,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n",
    )
    .unwrap();
    format!("--config={}", path.display())
}

fn with_revision(mut v: Value, rev: i64) -> Value {
    v["metadata"]["resourceVersion"] = Value::String(rev.to_string());
    v
}

#[test]
fn every_builtin_kind_comes_back_from_get_as_served() {
    let server = EtcdServer::start();
    let client = TestClient::connect(&server);
    let dir = tempfile::tempdir().unwrap();
    let config = identity_config(dir.path());
    let mut failures = Vec::new();
    let recs = records();
    for r in &recs {
        let rev = client.put(&r.etcd_key, &r.stored);
        let mut a = vec!["get".to_string()];
        a.extend(server.cli_args());
        a.push(config.clone());
        if r.name.is_empty() {
            // RangeAllocations: singletons named by their key.
            a.push(format!("--etcd-key={}", r.etcd_key));
        } else {
            a.push(r.resource.clone());
            a.push(if r.namespace.is_empty() {
                r.name.clone()
            } else {
                format!("{}/{}", r.namespace, r.name)
            });
        }
        a.extend(args(&["-o", "json"]));
        let out = atrest_in(dir.path(), &a);
        if code(&out) != 0 {
            failures.push(format!("{} {}: {}", r.etcd_key, r.case, stderr(&out)));
            continue;
        }
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        if got != with_revision(r.json.clone(), rev) {
            failures.push(format!("{} {}: differs", r.etcd_key, r.case));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // A name without its group that is no built-in: the hint names the CRD in etcd.
    let crd = recs
        .iter()
        .find(|r| r.name == "backups.db.example.com")
        .unwrap();
    client.put(&crd.etcd_key, &crd.stored);
    let mut a = vec!["get".to_string()];
    a.extend(server.cli_args());
    a.extend([config.clone(), "backups".into(), "default/b1".into()]);
    let out = atrest_in(dir.path(), &a);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("did you mean backups.db.example.com?"),
        "{}",
        stderr(&out)
    );
    // A namespaced kind by NAME alone, a cluster-scoped one with a namespace: usage errors.
    for (res, name, want) in [
        ("deployments.apps", "web", "is namespaced"),
        ("nodes", "default/n1", "is cluster-scoped"),
    ] {
        let mut a = vec!["get".to_string()];
        a.extend(server.cli_args());
        a.extend([config.clone(), res.into(), name.into()]);
        let out = atrest_in(dir.path(), &a);
        assert_eq!(code(&out), 1);
        assert!(stderr(&out).contains(want), "{}", stderr(&out));
    }
}

#[test]
fn decode_reads_stdin_like_auger() {
    for r in records()
        .iter()
        .filter(|r| r.case.starts_with("randfill-0"))
    {
        let out = atrest_stdin(
            &args(&["decode", "-o", "json", "--revision", "7"]),
            &r.stored,
        );
        assert_eq!(code(&out), 0, "{}: {}", r.etcd_key, stderr(&out));
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(got, with_revision(r.json.clone(), 7), "{}", r.etcd_key);
    }
    // Decrypting first: an aesgcm Secret of the sample cluster (its key is the AAD).
    let o = atrest_testkit::sample::objects()
        .into_iter()
        .find(|o| o.provider == "aesgcm" && o.gvk == "v1/Secret")
        .unwrap();
    let a = vec![
        "decode".to_string(),
        config_arg("config-before.yaml"),
        format!("--etcd-key={}", o.etcd_key),
        "-o".into(),
        "json".into(),
    ];
    let out = atrest_stdin(&a, &o.stored);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got, o.object_json);
    // Without the config the ciphertext is refused with a pointer to --config.
    let out = atrest_stdin(&args(&["decode"]), &o.stored);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("--config"), "{}", stderr(&out));
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn backup_snapshot_streams_etcd_into_an_encrypted_file() {
    let server = EtcdServer::start();
    let client = TestClient::connect(&server);
    let recs = records();
    let secret = recs
        .iter()
        .find(|r| r.case == "secret-opaque-binary")
        .unwrap();
    for r in recs.iter().filter(|r| !r.name.is_empty()) {
        client.put(&r.etcd_key, &r.stored);
    }
    let rev = client.put(&secret.etcd_key, &secret.stored);
    let keys = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let identity = keys.path().join("id.txt");
    let out = atrest_in(
        keys.path(),
        &args(&["backup", "keygen", "-o", identity.to_str().unwrap()]),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let recipient = stdout(&out).trim().to_string();

    let mut a = vec!["backup".to_string(), "snapshot".into()];
    a.extend(server.cli_args());
    a.extend(["-r".into(), recipient, "-o".into(), "etcd.db.age".into()]);
    let out = atrest_cmd()
        .current_dir(work.path())
        .env("TMPDIR", tmp.path())
        .args(&a)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sha256 trailer verified"),
        "{}",
        stderr(&out)
    );
    // Only the encrypted file, 0600; nothing in $TMPDIR.
    assert_eq!(files_in(work.path()), vec!["etcd.db.age".to_string()]);
    assert!(
        files_in(tmp.path()).is_empty(),
        "{:?}",
        files_in(tmp.path())
    );
    let backup = work.path().join("etcd.db.age");
    let meta = std::fs::metadata(&backup).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let sealed = std::fs::read(&backup).unwrap();
    assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
    for needle in [
        &b"db-credentials"[..],
        &b"/registry/secrets"[..],
        b"k8s\x00",
    ] {
        assert!(
            !sealed.windows(needle.len()).any(|w| w == needle),
            "plaintext {:?} in the backup",
            String::from_utf8_lossy(needle)
        );
    }

    // Decrypted, it is an etcd snapshot: sha256 trailer, etcdctl and atrest read it.
    let restored = keys.path().join("restored.db");
    let out = atrest_in(
        keys.path(),
        &args(&[
            "backup",
            "decrypt",
            "--identity",
            identity.to_str().unwrap(),
            "-i",
            backup.to_str().unwrap(),
            "-o",
            restored.to_str().unwrap(),
        ]),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let db = std::fs::read(&restored).unwrap();
    use sha2::Digest;
    let (body, trailer) = db.split_at(db.len() - 32);
    assert_eq!(sha2::Sha256::digest(body).as_slice(), trailer);
    let etcdctl = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "snapshot",
            "status",
            restored.to_str().unwrap(),
            "-w",
            "json",
        ])
        .output()
        .expect("etcdctl on PATH");
    assert!(
        etcdctl.status.success(),
        "{}",
        String::from_utf8_lossy(&etcdctl.stderr)
    );
    let config = identity_config(keys.path());
    let restored_arg = restored.to_str().unwrap().to_string();
    let out = atrest_in(
        keys.path(),
        &[
            "snapshot".into(),
            "status".into(),
            restored_arg.clone(),
            config.clone(),
            "-o".into(),
            "json".into(),
        ],
    );
    // 0: identity is the configured write provider, so every Secret is current.
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["totals"]["objects"].as_u64().unwrap() >= 150,
        "{report}"
    );
    let out = atrest_in(
        keys.path(),
        &[
            "snapshot".into(),
            "get".into(),
            restored_arg,
            "secrets".into(),
            format!("{}/{}", secret.namespace, secret.name),
            config,
            "-o".into(),
            "json".into(),
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got, with_revision(secret.json.clone(), rev));

    // etcd gone: an outage error, and no file.
    drop(server);
    let out = atrest_cmd()
        .current_dir(tmp.path())
        .env("TMPDIR", tmp.path())
        .args(&a)
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("unreachable"), "{}", stderr(&out));
    assert!(files_in(tmp.path()).is_empty());
}
