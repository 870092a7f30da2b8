//! The sample cluster in a real etcd: `status` reproduces expected-status.json, `rewrite` with
//! config-after brings every covered object to the new write keys, `get` returns the API objects.

mod etcd_common;

use std::sync::Arc;

use atrest_core::config::{load_file, LoadOptions};
use atrest_core::Transformers;
use atrest_testkit::sample;
use atrest_testkit::EtcdServer;
use etcd_common::*;

fn transformers(name: &str) -> Transformers {
    let cfg = load_file(&sample::config(name), &LoadOptions::default()).unwrap();
    Transformers::build(&cfg, Arc::new(atrest_core::kms::NoKms)).unwrap()
}

fn cmd(sub: &str, server: &EtcdServer, rest: &[String]) -> Vec<String> {
    let mut a = vec![sub.to_string()];
    a.extend(server.cli_args());
    a.extend(rest.iter().cloned());
    a
}

#[test]
fn status_reproduces_expected_counts_and_rewrite_reaches_the_after_state() {
    let server = EtcdServer::start();
    let (client, objects) = load_sample(&server);
    let expected = sample::expected_status();
    let dir = tempfile::tempdir().unwrap();

    for (which, config) in [
        ("before", "config-before.yaml"),
        ("after", "config-after.yaml"),
    ] {
        for verify in [&[][..], &["--verify"][..]] {
            let mut rest = vec![config_arg(config), "-o".into(), "json".into()];
            rest.extend(args(verify));
            let out = atrest_in(dir.path(), &cmd("status", &server, &rest));
            assert_eq!(code(&out), 3, "{which}: {}", stderr(&out));
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let want = serde_json::json!({"rows": expected[which]["rows"], "totals": expected[which]["totals"]});
            assert_eq!(comparable_status(&json), want, "{which} {verify:?}");
        }
    }

    // Dry run: the plan, nothing written.
    let revision = client.revision();
    let out = atrest_in(
        dir.path(),
        &cmd(
            "rewrite",
            &server,
            &[
                config_arg("config-after.yaml"),
                "--dry-run".into(),
                "-o".into(),
                "json".into(),
            ],
        ),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["rewritten"], 1370);
    assert_eq!(plan["not_selected"], 630);
    assert!(plan["estimate_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(client.revision(), revision, "dry run wrote to etcd");
    assert!(!dir.path().join("atrest-rewrite.checkpoint.json").exists());

    // The rewrite.
    let out = atrest_in(
        dir.path(),
        &cmd(
            "rewrite",
            &server,
            &[config_arg("config-after.yaml"), "-o".into(), "json".into()],
        ),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            summary["rewritten"].as_u64(),
            summary["already_current"].as_u64()
        ),
        (Some(1370), Some(0))
    );

    let after = transformers("config-after.yaml");
    let write_prefix = |resource: &str| match resource {
        "secrets" => "k8s:enc:aesgcm:v1:gcm-2026-01:",
        "configmaps" => "k8s:enc:secretbox:v1:cm-2026-01:",
        "widgets.example.com" => "k8s:enc:aescbc:v1:widgets-2026-01:",
        other => panic!("{other} is not covered"),
    };
    let now: std::collections::HashMap<String, Vec<u8>> = client
        .get_prefix("/registry/")
        .into_iter()
        .map(|(k, v, _)| (k, v))
        .collect();
    assert_eq!(now.len(), 2000);
    for o in &objects {
        let value = &now[&o.etcd_key];
        if o.covered {
            assert!(
                value.starts_with(write_prefix(&o.resource).as_bytes()),
                "{}",
                o.etcd_key
            );
            let gr = atrest_core::GroupResource::parse(&o.resource);
            let read = after
                .for_resource(&gr)
                .read(value, o.etcd_key.as_bytes())
                .unwrap();
            assert_eq!(read.plaintext, o.plaintext, "{}", o.etcd_key);
            assert!(!read.stale);
        } else {
            assert_eq!(value, &o.stored, "uncovered {} was touched", o.etcd_key);
        }
    }

    // Status is now clean; a second rewrite changes nothing.
    let out = atrest_in(
        dir.path(),
        &cmd(
            "status",
            &server,
            &[config_arg("config-after.yaml"), "--verify".into()],
        ),
    );
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("1370 covered (1370 current, 0 stale"),
        "{}",
        stdout(&out)
    );
    let revision = client.revision();
    let out = atrest_in(
        dir.path(),
        &cmd("rewrite", &server, &[config_arg("config-after.yaml")]),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("rewrote 0 of 2000"),
        "{}",
        stdout(&out)
    );
    assert_eq!(client.revision(), revision);
}

#[test]
fn get_returns_the_api_object() {
    let server = EtcdServer::start();
    let (_client, objects) = load_sample(&server);
    let dir = tempfile::tempdir().unwrap();
    let pick = |gvk: &str, provider: &str| {
        objects
            .iter()
            .find(|o| o.gvk == gvk && o.provider == provider)
            .unwrap()
    };
    for o in [
        pick("v1/Secret", "aesgcm"),
        pick("v1/Secret", "secretbox"),
        pick("v1/Secret", "identity"),
        pick("v1/ConfigMap", "secretbox"),
        pick("example.com/v1/Widget", "aescbc"),
    ] {
        let info = atrest_store::keymap::parse_key("/registry", o.etcd_key.as_bytes()).unwrap();
        let name = format!("{}/{}", info.namespace.unwrap(), info.name);
        let out = atrest_in(
            dir.path(),
            &cmd(
                "get",
                &server,
                &[
                    config_arg("config-before.yaml"),
                    o.resource.clone(),
                    name,
                    "-o".into(),
                    "json".into(),
                ],
            ),
        );
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let mut got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // Served with the key's mod revision, as kube-apiserver does.
        let rv = got["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        assert!(rv.is_some(), "{}", o.etcd_key);
        assert_eq!(got, o.object_json, "{}", o.etcd_key);
        assert!(stderr(&out).contains(&o.etcd_key), "{}", stderr(&out));
    }

    // YAML (default) and raw, by --etcd-key.
    let secret = pick("v1/Secret", "aesgcm");
    let out = atrest_in(
        dir.path(),
        &cmd(
            "get",
            &server,
            &[
                config_arg("config-before.yaml"),
                format!("--etcd-key={}", secret.etcd_key),
            ],
        ),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let yaml = stdout(&out);
    assert!(
        yaml.starts_with("apiVersion: v1\n") && yaml.contains("kind: Secret\n"),
        "{yaml}"
    );
    let name = secret.object_json["metadata"]["name"].as_str().unwrap();
    assert!(yaml.contains(&format!("name: {name}")), "{yaml}");
    let out = atrest_in(
        dir.path(),
        &cmd(
            "get",
            &server,
            &[
                config_arg("config-before.yaml"),
                format!("--etcd-key={}", secret.etcd_key),
                "-o".into(),
                "raw".into(),
            ],
        ),
    );
    assert_eq!(out.stdout, secret.plaintext);

    // Missing key, and a value the config cannot decrypt: errors naming the key, nothing printed.
    let out = atrest_in(
        dir.path(),
        &cmd(
            "get",
            &server,
            &[
                config_arg("config-before.yaml"),
                "secrets".into(),
                "nope/none".into(),
            ],
        ),
    );
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("etcd key /registry/secrets/nope/none not found"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
    let wrong = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        wrong.path(),
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aesgcm:\n          keys:\n            - name: gcm-2025-03\n              secret: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    )
    .unwrap();
    let out = atrest_in(
        dir.path(),
        &cmd(
            "get",
            &server,
            &[
                format!("--config={}", wrong.path().display()),
                format!("--etcd-key={}", secret.etcd_key),
            ],
        ),
    );
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("cannot decrypt etcd key {}", secret.etcd_key)),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());

    // Other built-in kinds are decoded completely; cluster-scoped objects by NAME alone.
    let ns = pick("v1/Namespace", "identity");
    let name = ns.object_json["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let out = atrest_in(
        dir.path(),
        &cmd(
            "get",
            &server,
            &[
                config_arg("config-before.yaml"),
                "namespaces".into(),
                name,
                "-o".into(),
                "json".into(),
            ],
        ),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    got["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion")
        .expect("resourceVersion as served");
    assert_eq!(got, ns.object_json);
}

#[test]
fn status_list_names_objects_in_the_table() {
    let server = EtcdServer::start();
    let (_client, objects) = load_sample(&server);
    let dir = tempfile::tempdir().unwrap();
    let out = atrest_in(
        dir.path(),
        &cmd(
            "status",
            &server,
            &[config_arg("config-before.yaml"), "--list".into()],
        ),
    );
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.starts_with("RESOURCE"), "{table}");
    for o in &objects {
        assert!(
            table.contains(&format!("    {}\n", o.etcd_key)),
            "{} not listed",
            o.etcd_key
        );
    }
    let line = table
        .lines()
        .find(|l| l.starts_with("secrets ") && l.contains("secretbox"))
        .unwrap();
    assert!(
        line.contains("sb-2022-09") && line.contains("stale") && line.trim_end().ends_with("117"),
        "{line}"
    );
}
