//! The sample cluster through a real etcd and a real `etcdctl snapshot save`: `snapshot status`
//! equals `status` on the live cluster, every readable object comes back byte for byte, history
//! (`--revision`), deletes and overwrites behave as in etcd, and all three export formats.

mod snapshot_common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;

use atrest_core::config::{load_file, LoadOptions};
use atrest_core::Transformers;
use atrest_store::keymap;
use atrest_store::snapshot::{IndexOptions, OpenOptions, Snapshot};
use atrest_testkit::load::TestClient;
use atrest_testkit::{sample, EtcdServer};
use serde_json::Value;
use snapshot_common::*;

struct Fixture {
    _server_dir: tempfile::TempDir,
    snap: std::path::PathBuf,
    objects: Vec<sample::SampleObject>,
    deleted: BTreeSet<String>,
    /// key -> (new plaintext JSON)
    overwritten: BTreeMap<String, Value>,
    rev_loaded: i64,
    live_status: (i32, Value),
}

fn strip_server_fields(v: &mut Value) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
            "selfLink",
            "ownerReferences",
        ] {
            m.remove(f);
        }
    }
}

fn fixture() -> Fixture {
    let server = EtcdServer::start();
    let client = TestClient::connect(&server);
    let objects = sample::objects();
    let kvs: Vec<(&[u8], &[u8])> = objects
        .iter()
        .map(|o| (o.etcd_key.as_bytes(), o.stored.as_slice()))
        .collect();
    client.put_all(&kvs);
    let rev_loaded = client.revision();

    // Delete one object of each covered resource, and overwrite two widgets (stored as JSON, so a
    // changed plaintext is easy to write with the identity provider the config lists).
    let mut deleted = BTreeSet::new();
    for prefix in [
        "/registry/secrets/",
        "/registry/configmaps/",
        "/registry/example.com/widgets/",
    ] {
        let o = objects
            .iter()
            .find(|o| o.etcd_key.starts_with(prefix) && !o.unreadable)
            .expect("object");
        delete(&client, &o.etcd_key);
        deleted.insert(o.etcd_key.clone());
    }
    let mut overwritten = BTreeMap::new();
    for o in objects
        .iter()
        .filter(|o| {
            o.resource == "widgets.example.com" && !o.unreadable && !deleted.contains(&o.etcd_key)
        })
        .take(2)
    {
        let mut obj: Value = serde_json::from_slice(&o.plaintext).expect("widget JSON");
        obj["spec"]["restoredBy"] = Value::String("snapshot-test".into());
        let bytes = serde_json::to_vec(&obj).expect("json");
        client.put(&o.etcd_key, &bytes);
        client.put(&o.etcd_key, &bytes); // twice: version 3
        overwritten.insert(o.etcd_key.clone(), obj);
    }

    let (code, stdout, stderr) = run(&[
        "status",
        &format!("--endpoints={}", server.endpoint()),
        "--config",
        sample_config("config-before.yaml").to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert!(
        code == 0 || code == 3 || code == 4,
        "live status failed: {stderr}"
    );
    let live_status = (code, json(&stdout));

    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("etcd.snapshot");
    snapshot_save(&server, &snap);
    drop(server); // etcd is gone: everything below reads only the file
    Fixture {
        _server_dir: dir,
        snap,
        objects,
        deleted,
        overwritten,
        rev_loaded,
        live_status,
    }
}

fn transformers(config: &str) -> Transformers {
    let cfg = load_file(&sample_config(config), &LoadOptions::default()).expect("config loads");
    Transformers::build(&cfg, std::sync::Arc::new(atrest_core::kms::NoKms)).expect("transformers")
}

#[test]
fn sample_cluster_snapshot() {
    let f = fixture();
    let snap_path = f.snap.to_str().unwrap();
    let before = sample_config("config-before.yaml");
    let before = before.to_str().unwrap();

    // 1. snapshot status == live status, same exit code.
    let (code, stdout, stderr) = run(&[
        "snapshot", "status", snap_path, "--config", before, "-o", "json",
    ]);
    assert_eq!(code, f.live_status.0, "{stderr}");
    assert_eq!(
        json(&stdout),
        f.live_status.1,
        "snapshot status differs from live status"
    );

    // ... and at the revision before the deletes/overwrites it matches expected-status.json.
    let (_, stdout, stderr) = run(&[
        "snapshot",
        "status",
        snap_path,
        "--config",
        before,
        "-o",
        "json",
        "--revision",
        &f.rev_loaded.to_string(),
    ]);
    let report = json(&stdout);
    let expected = sample::expected_status();
    assert_eq!(report["totals"]["objects"], expected["objects"], "{stderr}");
    let expected_rows = expected["before"]["rows"].as_array().expect("rows");
    for row in expected_rows {
        let found: u64 = report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["resource"] == row["resource"]
                    && r["provider"] == row["provider"]
                    && r["key_name"] == row["key_name"]
                    && r["stale"] == row["stale"]
                    && r["unreadable"] == row["unreadable"]
            })
            .map(|r| r["count"].as_u64().unwrap())
            .sum();
        assert_eq!(found, row["count"].as_u64().unwrap(), "row {row}");
    }

    // 2. Byte-exact plaintext recovery for every object (library level: all 2,000 at the load revision).
    let snapshot = Snapshot::open(&f.snap, OpenOptions::default()).expect("open");
    let t = transformers("config-before.yaml");
    let index = snapshot
        .index(&IndexOptions {
            at_revision: Some(f.rev_loaded),
            key_prefix: b"/registry/".to_vec(),
        })
        .unwrap();
    assert_eq!(index.len(), f.objects.len());
    let by_key: BTreeMap<&str, &sample::SampleObject> =
        f.objects.iter().map(|o| (o.etcd_key.as_str(), o)).collect();
    let mut unreadable = 0;
    for kv in snapshot.latest(&index) {
        let kv = kv.unwrap();
        let key = std::str::from_utf8(&kv.key).unwrap();
        let o = by_key[key];
        assert_eq!(kv.value, o.stored, "{key}: stored bytes");
        let info = keymap::parse_key("/registry", &kv.key).unwrap();
        match t.for_resource(&info.resource).read(&kv.value, &kv.key) {
            Ok(out) => assert_eq!(out.plaintext, o.plaintext, "{key}: plaintext"),
            Err(_) => {
                assert!(o.unreadable, "{key} should decrypt");
                unreadable += 1;
            }
        }
    }
    assert_eq!(
        unreadable,
        f.objects.iter().filter(|o| o.unreadable).count()
    );

    // 3. Newest state: deletes gone, overwrites newest; JSON export with served fields and
    //    everything kept equals object_json (plus resourceVersion) for every kind.
    let (code, stdout, stderr) = run(&[
        "snapshot",
        "export",
        snap_path,
        "--config",
        before,
        "-o",
        "json",
        "--keep-server-fields",
        "--include-recreated",
    ]);
    let n_unreadable = f.objects.iter().filter(|o| o.unreadable).count();
    assert_eq!(code, if n_unreadable > 0 { 4 } else { 0 }, "{stderr}");
    let list = json(&stdout);
    assert_eq!(list["kind"], "List");
    let items = list["items"].as_array().unwrap();
    assert_eq!(
        items.len(),
        f.objects.len() - f.deleted.len() - n_unreadable,
        "{stderr}"
    );
    let mut exported: BTreeMap<String, Value> = BTreeMap::new();
    for item in items {
        let gvk_kind = item["kind"].as_str().unwrap_or_default().to_string();
        let ns = item["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = item["metadata"]["name"].as_str().unwrap();
        let mut item = item.clone();
        let rv = item["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        assert!(
            rv.is_some(),
            "{gvk_kind}/{ns}/{name}: resourceVersion as served"
        );
        exported.insert(format!("{gvk_kind}/{ns}/{name}"), item);
    }
    let mut compared = 0;
    for o in &f.objects {
        let kind = o.gvk.rsplit('/').next().unwrap();
        let ns = o.object_json["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default();
        let name = o.object_json["metadata"]["name"].as_str().unwrap();
        let got = exported.get(&format!("{kind}/{ns}/{name}"));
        if f.deleted.contains(&o.etcd_key) || o.unreadable {
            assert!(got.is_none(), "{} must not be exported", o.etcd_key);
            continue;
        }
        let got = got.unwrap_or_else(|| panic!("{} missing from export", o.etcd_key));
        if let Some(new) = f.overwritten.get(&o.etcd_key) {
            let mut new = new.clone();
            new["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("resourceVersion");
            assert_eq!(*got, new, "{} shows the newest value", o.etcd_key);
            continue;
        }
        // Every kind is decoded completely.
        assert_eq!(*got, o.object_json, "{}", o.etcd_key);
        compared += 1;
    }
    assert!(compared > 1900, "compared {compared}");
    // Unreadable objects are named on stderr with the reason.
    for o in f.objects.iter().filter(|o| o.unreadable) {
        assert!(
            stderr.contains(&o.etcd_key),
            "{} not reported: {stderr}",
            o.etcd_key
        );
    }

    // 3b. The default export restores: dependency order, no server-set fields, what a fresh
    //     cluster re-creates left out and counted per kind.
    let (code, stdout, stderr) = run(&[
        "snapshot", "export", snap_path, "--config", before, "-o", "json",
    ]);
    assert_eq!(code, if n_unreadable > 0 { 4 } else { 0 }, "{stderr}");
    let list = json(&stdout);
    let items = list["items"].as_array().unwrap();
    let kinds: Vec<&str> = items.iter().map(|i| i["kind"].as_str().unwrap()).collect();
    let first_other = kinds.iter().position(|k| *k != "Namespace").unwrap();
    assert!(
        kinds[first_other..].iter().all(|k| *k != "Namespace"),
        "Namespaces first"
    );
    for item in items {
        let what = format!("{} {}", item["kind"], item["metadata"]["name"]);
        assert!(item.get("status").is_none(), "{what}: status removed");
        for f in [
            "uid",
            "resourceVersion",
            "managedFields",
            "ownerReferences",
            "creationTimestamp",
        ] {
            assert!(
                item["metadata"].get(f).is_none(),
                "{what}: metadata.{f} removed"
            );
        }
        assert!(
            !["Event", "Lease", "Node"].contains(&item["kind"].as_str().unwrap()),
            "{what}"
        );
        assert_ne!(
            item["type"], "kubernetes.io/service-account-token",
            "{what}"
        );
    }
    let left_out = f
        .objects
        .iter()
        .filter(|o| !f.deleted.contains(&o.etcd_key) && !o.unreadable)
        .count()
        - items.len();
    assert!(left_out > 0);
    assert!(
        stderr.contains(&format!("left out {left_out} objects"))
            && stderr.contains("--include-recreated"),
        "{stderr}"
    );

    // 4. get: newest value, and the old one with --revision; deleted keys are not found.
    let (key, new) = f.overwritten.iter().next().unwrap();
    let info = keymap::parse_key("/registry", key.as_bytes()).unwrap();
    let name = format!("{}/{}", info.namespace.clone().unwrap(), info.name);
    let gr = info.resource.to_string();
    let (code, stdout, stderr) = run(&[
        "snapshot", "get", snap_path, &gr, &name, "--config", before, "-o", "json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let got = json(&stdout);
    assert_eq!(got["spec"], new["spec"]);
    assert!(
        got["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > f.rev_loaded
    );
    let (code, stdout, stderr) = run(&[
        "snapshot",
        "get",
        snap_path,
        &gr,
        &name,
        "--config",
        before,
        "-o",
        "json",
        "--revision",
        &f.rev_loaded.to_string(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let old = json(&stdout);
    assert!(
        old["spec"].get("restoredBy").is_none(),
        "old revision shows the old value"
    );
    let deleted = f.deleted.iter().next().unwrap();
    let info = keymap::parse_key("/registry", deleted.as_bytes()).unwrap();
    let dname = format!("{}/{}", info.namespace.clone().unwrap(), info.name);
    let (code, _, stderr) = run(&[
        "snapshot",
        "get",
        snap_path,
        &info.resource.to_string(),
        &dname,
        "--config",
        before,
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not found"), "{stderr}");
    let (code, stdout, _) = run(&[
        "snapshot",
        "get",
        snap_path,
        &info.resource.to_string(),
        &dname,
        "--config",
        before,
        "-o",
        "raw",
        "--revision",
        &f.rev_loaded.to_string(),
    ]);
    assert_eq!(code, 0);
    let o = f.objects.iter().find(|o| &o.etcd_key == deleted).unwrap();
    assert_eq!(stdout, o.plaintext, "raw output is the exact plaintext");

    // 5. YAML stream for secrets in one namespace: restore-ready (server fields removed).
    let ns = "kube-system";
    let (code, stdout, stderr) = run(&[
        "snapshot",
        "export",
        snap_path,
        "--config",
        before,
        "--resource",
        "secrets",
        "--namespace",
        ns,
    ]);
    let want: Vec<&sample::SampleObject> = f
        .objects
        .iter()
        .filter(|o| {
            o.resource == "secrets"
                && o.object_json["metadata"]["namespace"] == ns
                && o.object_json["type"] != "kubernetes.io/service-account-token"
                && !f.deleted.contains(&o.etcd_key)
        })
        .collect();
    let failed = want.iter().filter(|o| o.unreadable).count();
    assert_eq!(code, if failed > 0 { 4 } else { 0 }, "{stderr}");
    let text = String::from_utf8(stdout).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("valid YAML stream");
    assert_eq!(docs.len(), want.len() - failed, "{stderr}");
    for doc in &docs {
        for field in [
            "resourceVersion",
            "uid",
            "managedFields",
            "creationTimestamp",
            "ownerReferences",
        ] {
            assert!(
                doc["metadata"][field].is_badvalue(),
                "metadata.{field} is removed for restore"
            );
        }
        assert_eq!(doc["kind"].as_str(), Some("Secret"));
        let name = doc["metadata"]["name"].as_str().unwrap();
        let o = want
            .iter()
            .find(|o| o.object_json["metadata"]["name"] == name)
            .expect("exported secret is expected");
        let mut expect = o.object_json.clone();
        strip_server_fields(&mut expect);
        // Data survives exactly (base64 in both).
        for (k, v) in expect["data"].as_object().into_iter().flatten() {
            assert_eq!(
                doc["data"][k.as_str()].as_str(),
                v.as_str(),
                "{name}.data.{k}"
            );
        }
    }

    // 6. Directory export: one 0600 file per object under <resource>/<ns>/<name>.yaml.
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("restore");
    let (code, _, stderr) = run(&[
        "snapshot",
        "export",
        snap_path,
        "--config",
        before,
        "--resource",
        "configmaps",
        "-o",
        "dir",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(code == 0 || code == 4, "{stderr}");
    let cms: Vec<_> = f
        .objects
        .iter()
        .filter(|o| o.resource == "configmaps" && !o.unreadable && !f.deleted.contains(&o.etcd_key))
        .collect();
    for o in &cms {
        let info = keymap::parse_key("/registry", o.etcd_key.as_bytes()).unwrap();
        let path = dir
            .join("configmaps")
            .join(info.namespace.unwrap())
            .join(format!("{}.yaml", info.name));
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let files = walk(&dir);
    assert_eq!(files, cms.len());
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(&e.path())
            } else {
                1
            }
        })
        .sum()
}
