//! `atrest monitor` against a real etcd: its gauges equal `atrest status -o json` on a
//! 6,000-object cluster and follow puts and deletes (plaintext, old key, new key, other prefixes)
//! within seconds, a compaction past the watch, a config file edited under it, an etcd restart.

mod etcd_common;
mod monitor_common;

use std::time::{Duration, Instant};

use atrest_testkit::load::TestClient;
use atrest_testkit::{sample, EtcdServer};
use monitor_common::*;

/// The sample cluster three times over (the copies under renamed objects): 6,000 objects, plus
/// one value no configured key can read.
fn load_6000(client: &TestClient) -> Vec<sample::SampleObject> {
    let objects = sample::objects();
    let mut kvs: Vec<(String, Vec<u8>)> = Vec::new();
    for copy in ["", "-copy1", "-copy2"] {
        for o in &objects {
            kvs.push((format!("{}{copy}", o.etcd_key), o.stored.clone()));
        }
    }
    kvs.push((
        "/registry/secrets/default/lost-key".into(),
        b"k8s:enc:aesgcm:v1:key-nobody-has:xxxxxxxxxxxxxxxxxxxxxxxxxxxx".to_vec(),
    ));
    client.put_all(&kvs);
    objects
}

fn first<'a>(
    objects: &'a [sample::SampleObject],
    resource: &str,
    provider: &str,
) -> &'a sample::SampleObject {
    objects
        .iter()
        .find(|o| o.resource == resource && o.provider == provider)
        .unwrap_or_else(|| panic!("no {resource} {provider} in the sample"))
}

fn plus(
    states: &std::collections::BTreeMap<String, u64>,
    state: &str,
    n: i64,
) -> std::collections::BTreeMap<String, u64> {
    let mut s = states.clone();
    let v = s.get(state).copied().unwrap_or(0) as i64 + n;
    s.insert(state.to_string(), v as u64);
    s.retain(|_, n| *n > 0);
    s
}

fn wait_states(
    m: &MonitorProcess,
    want: &std::collections::BTreeMap<String, u64>,
    limit: Duration,
    what: &str,
) {
    let mut got = Default::default();
    let ok = eventually(limit, || {
        got = m.metrics().objects_by_state();
        &got == want
    });
    assert!(
        ok,
        "{what}: monitor {got:?}, want {want:?}\n{}",
        m.log_text()
    );
}

#[test]
fn monitor_equals_status_and_follows_writes_compaction_and_config_edits() {
    let server = EtcdServer::start();
    let client = TestClient::connect(&server);
    let objects = load_6000(&client);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enc.yaml");
    std::fs::copy(sample::config("config-before.yaml"), &config).unwrap();
    let etcd = server.cli_args();

    let m = MonitorProcess::start(dir.path(), &etcd, &config);
    let base = assert_matches_status(&m, dir.path(), &etcd, &config, Duration::from_secs(5));
    assert_eq!(base.values().sum::<u64>(), 6001);
    assert_eq!(base.get("unreadable"), Some(&1));
    let metrics = m.metrics();
    assert_eq!(metrics.sample("atrest_etcd_up "), Some(1.0));
    assert!(metrics.sample("atrest_watch_revision ").unwrap() >= client.revision() as f64);
    assert!(
        metrics
            .sample("atrest_last_resync_timestamp_seconds ")
            .unwrap()
            > 1.7e9
    );
    let hash = atrest_core::config::content_hash(&std::fs::read(&config).unwrap());
    assert!(
        metrics.has_line(&format!("atrest_config_info{{hash=\"{hash}\"}} 1")),
        "{}",
        metrics.0
    );
    assert!(metrics
        .0
        .contains("atrest_build_info{component=\"monitor\",version=\""));

    // A plaintext Secret written straight into etcd: unencrypted within 5 s, gone when deleted.
    let secret = first(&objects, "secrets", "identity");
    let plain_key = "/registry/secrets/default/written-past-the-apiserver";
    client.put(plain_key, &secret.plaintext);
    wait_states(
        &m,
        &plus(&base, "unencrypted", 1),
        Duration::from_secs(5),
        "plaintext put",
    );
    assert!(m.metrics().0.lines().any(|l| l.starts_with(
        "atrest_objects{resource=\"secrets\",state=\"unencrypted\",provider=\"identity\",key=\"\""
    )));
    client
        .block_on(client.client().delete(plain_key, None))
        .unwrap();
    wait_states(&m, &base, Duration::from_secs(5), "plaintext delete");

    // Old key (aescbc is not secrets' write provider: stale), new key (current), an overwrite
    // that moves an object from plaintext to the current key, and keys outside the prefix.
    let old = first(&objects, "secrets", "aescbc");
    let new = first(&objects, "secrets", "aesgcm");
    client.put("/registry/secrets/default/old-key", &old.stored);
    client.put("/registry/secrets/default/new-key", &new.stored);
    client.put("/registry/secrets/default/was-plain", &secret.plaintext);
    client.put("/registry/secrets/default/was-plain", &new.stored);
    client.put("/registry-other/secrets/default/x", &secret.plaintext);
    client.put("/other/registry/secrets/default/y", &secret.plaintext);
    let want = plus(&plus(&base, "stale", 1), "current", 2);
    wait_states(&m, &want, Duration::from_secs(5), "old/new key puts");
    assert_matches_status(&m, dir.path(), &etcd, &config, Duration::from_secs(5));

    // Compaction past the watch: freeze the monitor, write more than the connection's flow-control
    // windows hold and more revisions than etcd buffers for one watcher (128 responses), compact to
    // the newest revision, let it go on. etcd cancels the lagging watch as compacted; the monitor
    // must rescan.
    m.signal("STOP");
    for i in 0..600 {
        client.put(
            format!("/registry/secrets/bulk/s-{i:04}"),
            vec![b'p'; 16 << 10],
        );
    }
    let revision = client.revision();
    client
        .block_on(client.client().compact(
            revision,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        ))
        .unwrap();
    m.signal("CONT");
    assert_matches_status(&m, dir.path(), &etcd, &config, Duration::from_secs(20));
    let compacted = eventually(Duration::from_secs(5), || {
        m.metrics()
            .sample("atrest_resyncs_total{reason=\"compacted\"}")
            .unwrap_or(0.0)
            >= 1.0
    });
    assert!(compacted, "no rescan after compaction:\n{}", m.log_text());

    // The config edited under the running monitor (the rotation's promote step): the old
    // keys' objects become stale, and the hash label follows the file.
    std::fs::copy(sample::config("config-after.yaml"), &config).unwrap();
    let after = assert_matches_status(&m, dir.path(), &etcd, &config, Duration::from_secs(10));
    assert!(
        after.get("current") < base.get("current"),
        "{after:?} {base:?}"
    );
    let hash = atrest_core::config::content_hash(&std::fs::read(&config).unwrap());
    let metrics = m.metrics();
    assert!(
        metrics.has_line(&format!("atrest_config_info{{hash=\"{hash}\"}} 1")),
        "{}",
        metrics.0
    );
    assert_eq!(
        metrics.sample("atrest_config_reloads_total{status=\"success\"}"),
        Some(1.0)
    );

    // A broken edit leaves the config in force and counts a failure.
    std::fs::write(&config, "kind: EncryptionConfiguration\nresources: [").unwrap();
    let failed = eventually(Duration::from_secs(10), || {
        m.metrics()
            .sample("atrest_config_reloads_total{status=\"failure\"}")
            .unwrap_or(0.0)
            >= 1.0
    });
    assert!(failed, "{}", m.log_text());
    assert!(m
        .metrics()
        .has_line(&format!("atrest_config_info{{hash=\"{hash}\"}} 1")));
    assert_eq!(m.metrics().objects_by_state(), after);
}

#[test]
fn monitor_survives_an_etcd_restart_and_is_current_again_within_15_s() {
    let mut server = EtcdServer::start();
    let (client, objects) = etcd_common::load_sample(&server);
    let dir = tempfile::tempdir().unwrap();
    let config = sample::config("config-before.yaml");
    let etcd = server.cli_args();
    let m = MonitorProcess::start(dir.path(), &etcd, &config);
    let base = assert_matches_status(&m, dir.path(), &etcd, &config, Duration::from_secs(5));
    drop(client);

    server.member().stop();
    let down = eventually(Duration::from_secs(20), || {
        m.metrics().sample("atrest_etcd_up ") == Some(0.0)
    });
    assert!(
        down,
        "etcd_up stayed 1 with etcd stopped:\n{}",
        m.log_text()
    );
    // Still serving, and the last counts stay exported while etcd is away.
    assert_eq!(m.metrics().objects_by_state(), base);
    assert!(m.get("/readyz").unwrap().0.contains(" 200 "));

    server.member().restart();
    let restarted = Instant::now();
    let client = TestClient::connect(&server);
    let secret = objects
        .iter()
        .find(|o| o.resource == "secrets" && o.provider == "identity")
        .unwrap();
    // etcd takes a moment to serve again: retry the write until it lands.
    let written = eventually(Duration::from_secs(10), || {
        client
            .block_on(client.client().put(
                "/registry/secrets/default/after-restart",
                secret.plaintext.clone(),
                None,
            ))
            .is_ok()
    });
    assert!(written, "etcd did not come back");
    let want = plus(&base, "unencrypted", 1);
    let left = Duration::from_secs(15).saturating_sub(restarted.elapsed());
    wait_states(&m, &want, left, "after the restart");
    assert!(restarted.elapsed() < Duration::from_secs(15));
    assert_eq!(m.metrics().sample("atrest_etcd_up "), Some(1.0));
    assert_matches_status(&m, dir.path(), &etcd, &config, Duration::from_secs(5));
}

#[test]
fn bad_flags_and_files_exit_1_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = etcd_common::atrest_in(
        dir.path(),
        &etcd_common::args(&[
            "monitor",
            "--endpoints=127.0.0.1:1",
            "--config=/nonexistent/enc.yaml",
            "--listen=127.0.0.1:0",
        ]),
    );
    assert_eq!(etcd_common::code(&out), 1, "{}", etcd_common::stderr(&out));
    assert!(etcd_common::stderr(&out).contains("/nonexistent/enc.yaml"));

    let config = sample::config("config-before.yaml");
    let out = etcd_common::atrest_in(
        dir.path(),
        &etcd_common::args(&[
            "monitor",
            "--endpoints=127.0.0.1:1",
            "--cacert=/nonexistent/ca.crt",
            &format!("--config={}", config.display()),
            "--listen=127.0.0.1:0",
        ]),
    );
    assert_eq!(etcd_common::code(&out), 1, "{}", etcd_common::stderr(&out));
    assert!(etcd_common::stderr(&out).contains("/nonexistent/ca.crt"));

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = etcd_common::atrest_in(
        dir.path(),
        &etcd_common::args(&[
            "monitor",
            "--endpoints=127.0.0.1:1",
            &format!("--config={}", config.display()),
            &format!("--listen={addr}"),
        ]),
    );
    assert_eq!(etcd_common::code(&out), 1, "{}", etcd_common::stderr(&out));
    assert!(etcd_common::stderr(&out).contains(&addr.to_string()));
}
