//! `rewrite` under stress on real etcd: 100,000 objects, concurrent writers, SIGKILL then --resume,
//! a three-member cluster losing a member mid-run.

mod etcd_common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atrest_core::config::{load_bytes, LoadOptions};
use atrest_core::{GroupResource, Transformers};
use atrest_testkit::load::TestClient;
use atrest_testkit::{EtcdCluster, EtcdServer};
use base64::Engine;
use etcd_common::*;

const RESOURCES: [(&str, &str, &str); 3] = [
    ("secrets", "aesgcm", "/registry/secrets"),
    ("configmaps", "secretbox", "/registry/configmaps"),
    (
        "widgets.example.com",
        "aescbc",
        "/registry/example.com/widgets",
    ),
];

/// A config for the three resources; `rotated`: key `new` first (the write key), `old` second.
fn config_yaml(rotated: bool) -> String {
    let b64 = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
    let mut y = String::from(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n",
    );
    for (i, (resource, provider, _)) in RESOURCES.iter().enumerate() {
        let old = format!(
            "            - name: old\n              secret: {}\n",
            b64(i as u8 + 1)
        );
        let new = format!(
            "            - name: new\n              secret: {}\n",
            b64(i as u8 + 11)
        );
        let keys = if rotated { format!("{new}{old}") } else { old };
        y.push_str(&format!(
            "  - resources: [{resource}]\n    providers:\n      - {provider}:\n          keys:\n{keys}      - identity: {{}}\n"
        ));
    }
    y
}

fn transformers(rotated: bool) -> Transformers {
    let cfg = load_bytes(
        config_yaml(rotated).as_bytes(),
        "test.yaml",
        &LoadOptions::default(),
    )
    .unwrap();
    Transformers::build(&cfg, Arc::new(atrest_core::kms::NoKms)).unwrap()
}

fn write_config(dir: &Path) -> String {
    let path = dir.join("after.yaml");
    std::fs::write(&path, config_yaml(true)).unwrap();
    format!("--config={}", path.display())
}

struct Synth {
    key: String,
    resource: GroupResource,
    plaintext: Vec<u8>,
    stored: Vec<u8>,
}

/// `n` objects over three resources, written with the old keys (every 10th in plaintext).
fn synth(n: usize, size: usize) -> Vec<Synth> {
    let before = transformers(false);
    (0..n)
        .map(|i| {
            let (resource, _, path) = RESOURCES[i % 3];
            let gr = GroupResource::parse(resource);
            let key = format!("{path}/ns-{:02}/obj-{i:07}", i % 50);
            let mut plaintext = format!("k8s\x00object {i} ").into_bytes();
            plaintext.resize(size, b'x');
            let stored = if i % 10 == 0 {
                plaintext.clone()
            } else {
                before
                    .for_resource(&gr)
                    .write(&plaintext, key.as_bytes())
                    .unwrap()
            };
            Synth {
                key,
                resource: gr,
                plaintext,
                stored,
            }
        })
        .collect()
}

fn load(client: &TestClient, objects: &[Synth]) {
    let kvs: Vec<(&[u8], &[u8])> = objects
        .iter()
        .map(|o| (o.key.as_bytes(), o.stored.as_slice()))
        .collect();
    client.put_all(&kvs);
}

/// Every object decrypts with the rotated config, is current (not stale), and holds `expected`.
fn assert_all_current(client: &TestClient, objects: &[Synth], expected: &HashMap<String, Vec<u8>>) {
    let after = transformers(true);
    let values: HashMap<String, Vec<u8>> = client
        .get_prefix("/registry/")
        .into_iter()
        .map(|(k, v, _)| (k, v))
        .collect();
    assert_eq!(values.len(), objects.len());
    for o in objects {
        let value = &values[&o.key];
        let read = after
            .for_resource(&o.resource)
            .read(value, o.key.as_bytes())
            .unwrap_or_else(|e| panic!("{}: {e}", o.key));
        assert!(!read.stale, "{} is still stale", o.key);
        assert_eq!(read.provider.key_name.as_deref(), Some("new"), "{}", o.key);
        let want = expected.get(&o.key).unwrap_or(&o.plaintext);
        assert_eq!(&read.plaintext, want, "{} lost its value", o.key);
    }
}

fn rewrite_args(endpoints: &[String], config: &str, extra: &[&str]) -> Vec<String> {
    let mut a = vec![
        "rewrite".to_string(),
        format!("--endpoints={}", endpoints.join(",")),
        config.to_string(),
    ];
    a.extend(args(extra));
    a
}

#[test]
fn hundred_thousand_objects_status_and_rewrite() {
    let server = EtcdServer::start();
    let client = TestClient::connect(&server);
    let objects = synth(100_000, 256);
    load(&client, &objects);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let endpoint = format!("--endpoints={}", server.endpoint());

    let out = atrest_in(
        dir.path(),
        &args(&["status", &endpoint, &config, "-o", "json"]),
    );
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &json["totals"];
    assert_eq!(
        (
            t["objects"].as_u64(),
            t["stale"].as_u64(),
            t["unencrypted_covered"].as_u64()
        ),
        (Some(100_000), Some(100_000), Some(10_000))
    );
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "{rows:?}"); // per resource: old key + identity
    for row in rows {
        assert!(row["count"].as_u64().unwrap() >= 3333);
    }

    let out = atrest_in(
        dir.path(),
        &rewrite_args(&server.endpoints(), &config, &["-o", "json"]),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["rewritten"], 100_000);
    assert_eq!(summary["plan"].as_array().unwrap().len(), 6);

    let out = atrest_in(
        dir.path(),
        &args(&["status", &endpoint, &config, "-o", "json"]),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["totals"]["current"], 100_000);
    assert_all_current(&client, &objects, &HashMap::new());
}

#[test]
fn concurrent_writers_never_lose_an_update() {
    let server = EtcdServer::start();
    let client = TestClient::connect(&server);
    let objects = synth(6000, 200);
    load(&client, &objects);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());

    // A writer (an apiserver that already has the rotated config) keeps updating 300 objects spread
    // over the key space while the rewrite runs.
    let hot: Vec<(String, GroupResource)> = objects
        .iter()
        .step_by(20)
        .map(|o| (o.key.clone(), o.resource.clone()))
        .collect();
    let last: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (endpoints, opts) = (server.endpoints(), server.connect_options());
        let (last, stop, writes) = (last.clone(), stop.clone(), writes.clone());
        std::thread::spawn(move || {
            let client = TestClient::connect_endpoints(&endpoints, opts);
            let after = transformers(true);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (key, gr) in &hot {
                    n += 1;
                    let plain = format!("k8s\x00writer {key} {n}").into_bytes();
                    let value = after
                        .for_resource(gr)
                        .write(&plain, key.as_bytes())
                        .unwrap();
                    client.put(key, value);
                    last.lock().unwrap().insert(key.clone(), plain);
                    writes.fetch_add(1, Ordering::Relaxed);
                    // Paced so that the hot objects are still being written while the rewrite
                    // runs (it first reads etcd's space figures, ~0.3 s), not all current before.
                    std::thread::sleep(Duration::from_millis(3));
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
            }
        })
    };
    while writes.load(Ordering::Relaxed) < 50 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = atrest_in(
        dir.path(),
        &rewrite_args(
            &server.endpoints(),
            &config,
            &["--rate=3000", "--batch=8", "-o", "json"],
        ),
    );
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        summary["conflicts"].as_u64().unwrap() > 0,
        "no conflicting writes happened: {summary}"
    );
    assert_eq!(summary["unreadable"], 0);
    let expected = last.lock().unwrap().clone();
    assert!(
        expected.len() >= 100,
        "writer only touched {} objects",
        expected.len()
    );
    assert_all_current(&client, &objects, &expected);
}

#[test]
fn sigkill_then_resume_finishes_the_job() {
    let server = EtcdServer::start();
    let client = TestClient::connect(&server);
    let objects = synth(20_000, 200);
    load(&client, &objects);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let cp = dir.path().join("cp.json");
    let cp_flag = format!("--checkpoint={}", cp.display());

    let mut child = atrest_cmd()
        .current_dir(dir.path())
        .args(rewrite_args(
            &server.endpoints(),
            &config,
            &["--rate=4000", "--batch=16", &cp_flag],
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let saved: Option<serde_json::Value> = std::fs::read(&cp)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if saved.is_some_and(|s| s["rewritten"].as_u64().unwrap_or(0) >= 2000) {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "rewrite finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&cp).unwrap()).unwrap();
    assert_eq!(saved["complete"], false);
    let last_key = saved["last_key"].as_str().unwrap().to_string();
    let after = transformers(true);
    let current = |client: &TestClient| {
        client
            .get_prefix("/registry/")
            .iter()
            .filter(|(k, v, _)| {
                let gr = atrest_store::keymap::parse_key("/registry", k.as_bytes())
                    .unwrap()
                    .resource;
                !after.for_resource(&gr).read(v, k.as_bytes()).unwrap().stale
            })
            .count()
    };
    let done = current(&client);
    assert!(
        done > 0 && done < objects.len(),
        "killed run rewrote {done}"
    );

    let out = atrest_in(
        dir.path(),
        &rewrite_args(
            &server.endpoints(),
            &config,
            &["--resume", &cp_flag, "-o", "json"],
        ),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["resumed_after"], last_key.as_str());
    let below = objects
        .iter()
        .filter(|o| o.key.as_str() <= last_key.as_str())
        .count() as u64;
    assert_eq!(
        summary["scanned"].as_u64().unwrap(),
        objects.len() as u64 - below,
        "resume re-read finished keys"
    );
    assert_all_current(&client, &objects, &HashMap::new());
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&cp).unwrap()).unwrap();
    assert_eq!(saved["complete"], true);

    // Resuming a finished run, or running again from scratch, changes nothing.
    let revision = client.revision();
    let out = atrest_in(
        dir.path(),
        &rewrite_args(
            &server.endpoints(),
            &config,
            &["--resume", &cp_flag, "-o", "json"],
        ),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = atrest_in(
        dir.path(),
        &rewrite_args(&server.endpoints(), &config, &[&cp_flag, "-o", "json"]),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            summary["rewritten"].as_u64(),
            summary["already_current"].as_u64()
        ),
        (Some(0), Some(20_000))
    );
    assert_eq!(client.revision(), revision);
}

#[test]
fn three_member_cluster_survives_a_member_stopping_mid_run() {
    let mut cluster = EtcdCluster::start(3);
    let client = TestClient::connect_endpoints(&cluster.endpoints(), cluster.connect_options());
    let objects = synth(12_000, 200);
    load(&client, &objects);
    drop(client);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let child = atrest_cmd()
        .current_dir(dir.path())
        .args(rewrite_args(
            &cluster.endpoints(),
            &config,
            &["--rate=4000", "--batch=16", "-o", "json"],
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    cluster.members[0].stop();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // A transaction whose answer was lost when the member stopped is retried; its guards then fail,
    // and the per-object fallback finds those objects already current.
    let (rewritten, current) = (
        summary["rewritten"].as_u64().unwrap(),
        summary["already_current"].as_u64().unwrap(),
    );
    assert_eq!(rewritten + current, 12_000, "{summary}");
    assert!(rewritten > 6_000, "{summary}");
    // With the member still down, status through all three endpoints works and sees everything current.
    let out = atrest_in(
        dir.path(),
        &args(&[
            "status",
            &format!("--endpoints={}", cluster.endpoints().join(",")),
            &config,
            "-o",
            "json",
        ]),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["totals"]["current"], 12_000);
    let alive: Vec<String> = cluster.endpoints()[1..].to_vec();
    let client = TestClient::connect_endpoints(&alive, cluster.connect_options());
    assert_all_current(&client, &objects, &HashMap::new());
}

#[test]
fn custom_etcd_prefix_is_the_aad() {
    let server = EtcdServer::start();
    let client = TestClient::connect(&server);
    // aesgcm binds values to the full key: written under /cluster-a/registry, read there.
    let before = transformers(false);
    let gr = GroupResource::new("", "secrets");
    let objects: Vec<Synth> = (0..500)
        .map(|i| {
            let key = format!("/cluster-a/registry/secrets/ns/s-{i:04}");
            let plaintext = format!("k8s\x00secret {i}").into_bytes();
            let stored = before
                .for_resource(&gr)
                .write(&plaintext, key.as_bytes())
                .unwrap();
            Synth {
                key,
                resource: gr.clone(),
                plaintext,
                stored,
            }
        })
        .collect();
    load(&client, &objects);
    client.put("/registry/secrets/ns/default-prefix", "k8s\x00untouched");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let endpoint = format!("--endpoints={}", server.endpoint());
    let prefix = "--etcd-prefix=/cluster-a/registry";

    let out = atrest_in(
        dir.path(),
        &args(&[
            "status", &endpoint, &config, prefix, "--verify", "-o", "json",
        ]),
    );
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            json["totals"]["objects"].as_u64(),
            json["totals"]["stale"].as_u64()
        ),
        (Some(500), Some(500))
    );
    let out = atrest_in(
        dir.path(),
        &args(&["rewrite", &endpoint, &config, prefix, "-o", "json"]),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let after = transformers(true);
    for o in &objects {
        let (value, _) = client.get(&o.key).unwrap();
        let read = after
            .for_resource(&gr)
            .read(&value, o.key.as_bytes())
            .unwrap();
        assert_eq!(
            (read.plaintext.as_slice(), read.stale),
            (o.plaintext.as_slice(), false)
        );
    }
    assert_eq!(
        client.get("/registry/secrets/ns/default-prefix").unwrap().0,
        b"k8s\x00untouched"
    );
}
