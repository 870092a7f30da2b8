//! `rewrite` cannot destroy data: a KMS plugin that looks healthy but cannot decrypt (or lies about
//! its key ID) stops the run before the first write; an object etcd refuses is named and skipped
//! while every other object is rewritten; etcd's backend quota is never reached (chunks and
//! compaction), an already raised NOSPACE alarm stops the run before any write. Real etcd, real
//! gRPC plugins on unix sockets. Control characters in etcd keys and plugin key IDs are escaped in
//! every table and log line.

mod etcd_common;

use std::path::Path;

use atrest_testkit::load::TestClient;
use atrest_testkit::{EtcdServer, HostileKms, Misbehaviour, CONTROL_KEY_ID};
use base64::Engine;
use etcd_common::*;

/// Every key/value/revision under `/`, and etcd's revision: equal before and after means etcd was
/// not written at all.
fn dump(client: &TestClient) -> (Vec<(String, Vec<u8>, i64)>, i64) {
    (client.get_prefix("/"), client.revision())
}

fn kms_config(dir: &Path, endpoint: &str) -> String {
    let path = dir.join("kms.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          apiVersion: v2\n          name: vendor-plugin\n          endpoint: {endpoint}\n          timeout: 3s\n      - identity: {{}}\n"
        ),
    )
    .unwrap();
    format!("--config={}", path.display())
}

fn aesgcm_config(dir: &Path) -> String {
    let path = dir.join("aesgcm.yaml");
    let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    std::fs::write(
        &path,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aesgcm:\n          keys:\n            - name: k1\n              secret: {key}\n      - identity: {{}}\n"
        ),
    )
    .unwrap();
    format!("--config={}", path.display())
}

/// `n` plaintext Secrets of `size` bytes (written as kube-apiserver without encryption would).
fn plaintext_secrets(client: &TestClient, n: usize, size: usize) {
    let kvs: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let mut v = format!("k8s\x00secret {i} ").into_bytes();
            v.resize(size, b's');
            (format!("/registry/secrets/ns-{:02}/s-{i:06}", i % 20), v)
        })
        .collect();
    client.put_all(&kvs);
}

fn rewrite_in(
    dir: &Path,
    server: &EtcdServer,
    config: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut a = args(&["rewrite", config]);
    a.extend(server.cli_args());
    a.extend(args(extra));
    atrest_in(dir, &a)
}

fn assert_plugin_refused(kind: Misbehaviour, expect: &str) {
    let server = EtcdServer::start();
    let client = TestClient::connect(&server);
    plaintext_secrets(&client, 300, 200);
    client.put("/registry/configmaps/default/c", b"k8s\x00untouched");
    let plugin = HostileKms::start(kind);
    let dir = tempfile::tempdir().unwrap();
    let config = kms_config(dir.path(), &plugin.endpoint);
    let before = dump(&client);

    let out = rewrite_in(dir.path(), &server, &config, &[]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{kind:?}: {err}\n{}", stdout(&out));
    assert!(err.contains("vendor-plugin"), "names the provider: {err}");
    assert!(err.contains(&plugin.endpoint), "names the endpoint: {err}");
    assert!(err.contains(expect), "{kind:?}: {err}");
    assert!(err.contains("etcd is unchanged"), "{err}");
    assert_eq!(
        dump(&client),
        before,
        "{kind:?}: etcd must be byte-for-byte unchanged"
    );

    // The dry run finds the same fault and also writes nothing.
    let out = rewrite_in(dir.path(), &server, &config, &["--dry-run"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains(&plugin.endpoint), "{}", stderr(&out));
    assert_eq!(dump(&client), before);
}

#[test]
fn write_only_plugin_stops_before_the_first_write() {
    assert_plugin_refused(
        Misbehaviour::WriteOnly,
        "permission denied: this policy may encrypt only",
    );
}

#[test]
fn plugin_with_another_key_id_on_encrypt_stops_before_the_first_write() {
    assert_plugin_refused(Misbehaviour::KeyIdMismatch, "failed to rotate DEK");
}

#[test]
fn plugin_that_unwraps_to_other_bytes_stops_before_the_first_write() {
    assert_plugin_refused(Misbehaviour::WrongUnwrap, "cannot be read back");
}

/// etcd's default --max-request-bytes.
const ETCD_LIMIT: usize = 1536 * 1024;

#[test]
fn object_too_large_after_reencryption_is_named_and_skipped() {
    let server = EtcdServer::start();
    let client = TestClient::connect(&server);
    plaintext_secrets(&client, 3000, 300);
    let big_key = "/registry/secrets/big/just-under-the-limit";
    // A plain Put this size is accepted; encryption adds ~50 bytes and the guarded transaction
    // repeats the key, which no longer fits.
    let mut big = b"k8s\x00".to_vec();
    big.resize(ETCD_LIMIT - big_key.len() - 64, b'b');
    client.put(big_key, &big);
    let dir = tempfile::tempdir().unwrap();
    let config = aesgcm_config(dir.path());

    let out = rewrite_in(dir.path(), &server, &config, &["-o", "json"]);
    assert_eq!(code(&out), 5, "{}\n{}", stderr(&out), stdout(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["rewritten"], 3000, "{summary}");
    assert_eq!(summary["not_written"], 1);
    assert_eq!(summary["not_written_objects"][0]["key"], big_key);
    let why = summary["not_written_objects"][0]["error"].as_str().unwrap();
    assert!(why.contains("--max-request-bytes"), "{why}");
    assert_eq!(client.get(big_key).unwrap().0, big, "left unchanged");

    // With a limit above etcd's own, etcd itself refuses: still named, still per object.
    let fresh = "/registry/secrets/big/second";
    client.put(fresh, &big);
    let out = rewrite_in(
        dir.path(),
        &server,
        &config,
        &["--max-request-bytes", "4000000"],
    );
    let text = stdout(&out);
    assert_eq!(code(&out), 5, "{}\n{text}", stderr(&out));
    assert!(
        text.contains(fresh) && text.contains("etcd refused the write"),
        "{text}"
    );
    assert!(text.contains("request is too large"), "{text}");
    assert_eq!(client.get(fresh).unwrap().0, big);
    // Everything else is current: the status exit code would be 3 only for the two big ones.
    let values = client.get_prefix("/registry/secrets/ns-");
    assert_eq!(values.len(), 3000);
    assert!(values
        .iter()
        .all(|(_, v, _)| v.starts_with(b"k8s:enc:aesgcm:v1:k1:")));
}

#[test]
fn rewrite_larger_than_the_quota_works_in_chunks_and_never_raises_nospace() {
    // 16 MiB quota; ~9 MiB of Secrets: rewriting them all at once would need ~20 MiB.
    let server = EtcdServer::start_with_flags(&["--quota-backend-bytes=16777216"]);
    let client = TestClient::connect(&server);
    plaintext_secrets(&client, 560, 16 * 1024);
    let dir = tempfile::tempdir().unwrap();
    let config = aesgcm_config(dir.path());

    let out = rewrite_in(dir.path(), &server, &config, &["-o", "json"]);
    assert_eq!(code(&out), 0, "{}\n{}", stderr(&out), stdout(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["rewritten"], 560, "{summary}");
    assert!(summary["compactions"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(
        summary["space"]["quota"],
        16 << 20,
        "quota read from etcd: {summary}"
    );
    assert_eq!(client.alarm_count(), 0, "NOSPACE must never be raised");
    let values = client.get_prefix("/registry/secrets/");
    assert!(values
        .iter()
        .all(|(_, v, _)| v.starts_with(b"k8s:enc:aesgcm:v1:k1:")));
}

#[test]
fn rewrite_that_cannot_fit_is_refused_before_the_first_write() {
    let server = EtcdServer::start_with_flags(&["--quota-backend-bytes=16777216"]);
    let client = TestClient::connect(&server);
    plaintext_secrets(&client, 11, 1 << 20);
    let dir = tempfile::tempdir().unwrap();
    let config = aesgcm_config(dir.path());
    let before = dump(&client);

    let out = rewrite_in(dir.path(), &server, &config, &[]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}\n{}", stdout(&out));
    assert!(err.contains("etcd space") && err.contains("quota"), "{err}");
    assert!(err.contains("etcd is unchanged"), "{err}");
    assert_eq!(dump(&client), before);
    assert_eq!(client.alarm_count(), 0);
}

#[test]
fn raised_nospace_alarm_is_reported_and_nothing_is_written() {
    let server = EtcdServer::start_with_flags(&["--quota-backend-bytes=2097152"]);
    let client = TestClient::connect(&server);
    // Fill etcd until it raises its alarm itself.
    let mut kv = client.client().kv_client();
    let mut raised = false;
    for i in 0..200 {
        let r = client.block_on(kv.put(
            format!("/registry/secrets/fill/f{i}"),
            vec![b'f'; 100_000],
            None,
        ));
        if let Err(e) = r {
            assert!(e.to_string().contains("database space exceeded"), "{e}");
            raised = true;
            break;
        }
    }
    assert!(raised, "etcd should have run out of space");
    let dir = tempfile::tempdir().unwrap();
    let config = aesgcm_config(dir.path());
    let before = dump(&client);

    let out = rewrite_in(dir.path(), &server, &config, &[]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(err.contains("NOSPACE alarm is raised"), "{err}");
    assert!(err.contains("etcd is unchanged"), "{err}");
    assert_eq!(dump(&client), before);
}

#[test]
fn wildcard_entries_skip_keys_that_are_not_that_resource() {
    let server = EtcdServer::start();
    let client = TestClient::connect(&server);
    let widget = "/registry/example.com/widgets/default/w1";
    let aggregated = "/registry/wardle.example.com/wardle.example.com/fischers/plainfi";
    let misfiled = "/registry/example.com/gadgets/default/g1";
    client.put(
        widget,
        br#"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w1"}}"#,
    );
    client.put(aggregated, br#"{"apiVersion":"wardle.example.com/v1alpha1","kind":"Fischer","metadata":{"name":"plainfi"}}"#);
    client.put(
        misfiled,
        br#"{"apiVersion":"other.io/v1","kind":"Gadget","metadata":{"name":"g1"}}"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wild.yaml");
    let key = base64::engine::general_purpose::STANDARD.encode([4u8; 32]);
    std::fs::write(
        &path,
        format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: ['*.*']\n    providers:\n      - aesgcm:\n          keys:\n            - name: k1\n              secret: {key}\n      - identity: {{}}\n"),
    )
    .unwrap();
    let config = format!("--config={}", path.display());

    let out = rewrite_in(dir.path(), &server, &config, &["--dry-run"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{}\n{text}", stderr(&out));
    assert!(
        text.contains(aggregated) && text.contains("aggregated apiserver"),
        "{text}"
    );
    assert!(
        text.contains(misfiled) && text.contains("other.io/v1"),
        "{text}"
    );

    let out = rewrite_in(dir.path(), &server, &config, &["-o", "json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (summary["rewritten"].as_u64(), summary["skipped"].as_u64()),
        (Some(1), Some(2)),
        "{summary}"
    );
    assert!(client
        .get(widget)
        .unwrap()
        .0
        .starts_with(b"k8s:enc:aesgcm:v1:k1:"));
    assert!(
        client.get(aggregated).unwrap().0.starts_with(b"{"),
        "left for its own apiserver"
    );
    assert!(client.get(misfiled).unwrap().0.starts_with(b"{"));
}

#[test]
fn unwritable_checkpoint_stops_before_the_first_write_and_completed_one_restarts() {
    let server = EtcdServer::start();
    let client = TestClient::connect(&server);
    plaintext_secrets(&client, 50, 100);
    let dir = tempfile::tempdir().unwrap();
    let config = aesgcm_config(dir.path());
    let before = dump(&client);
    let blocked = dir.path().join("not-a-dir");
    std::fs::write(&blocked, b"").unwrap();
    let cp = format!("--checkpoint={}", blocked.join("cp.json").display());
    let out = rewrite_in(dir.path(), &server, &config, &[&cp]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("etcd is unchanged"),
        "{}",
        stderr(&out)
    );
    assert_eq!(dump(&client), before);

    // Default checkpoint: in the state directory, 0600, path printed; a completed one restarts.
    let out = rewrite_in(dir.path(), &server, &config, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let line = stderr(&out);
    let path = line
        .lines()
        .find_map(|l| l.strip_prefix("checkpoint: "))
        .expect("checkpoint path printed")
        .to_string();
    assert!(
        path.starts_with(&dir.path().join("state/atrest").display().to_string()),
        "{path}"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    plaintext_secrets(&client, 50, 100); // stale again
    let out = rewrite_in(dir.path(), &server, &config, &["--resume", "-o", "json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary["rewritten"], 50,
        "a completed checkpoint starts over: {summary}"
    );
    assert!(summary["resume_note"]
        .as_str()
        .unwrap()
        .contains("completed run"));
}

/// No raw control character (other than the line ends) and no line a crafted key forged.
fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{what}: raw control characters in {text:?}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("  forged row")),
        "{what}: a forged line in {text}"
    );
}

#[test]
fn control_characters_from_etcd_and_the_plugin_are_escaped_in_tables_and_logs() {
    let server = EtcdServer::start();
    let client = TestClient::connect(&server);
    let evil = "/registry/secrets/default/evil\n  forged row\x1b[2J";
    client.put(evil, b"k8s\x00secret evil");
    client.put(
        "/registry/secrets/default/bad\x1b]0;title\x07",
        b"k8s:enc:kms:v2:vendor-plugin:not an EncryptedObject",
    );
    let plugin = HostileKms::start(Misbehaviour::ControlCharacters);
    let dir = tempfile::tempdir().unwrap();
    let config = kms_config(dir.path(), &plugin.endpoint);
    let escaped_key = r"/registry/secrets/default/evil\n  forged row\x1b[2J";
    let escaped_id = r"key_id hostile\n  forged row\x1b[2Jkey";

    // rewrite: the plan table and the unreadable listing. Logs at debug level, stderr a pipe.
    let mut a = args(&["rewrite", &config]);
    a.extend(server.cli_args());
    let out = atrest_cmd()
        .current_dir(dir.path())
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .env("ATREST_LOG", "debug")
        .args(&a)
        .output()
        .unwrap();
    let (text, err) = (stdout(&out), stderr(&out));
    assert!(text.contains("rewrote 1 of 2 objects"), "{text}\n{err}");
    assert!(
        text.contains(r"/registry/secrets/default/bad\x1b]0;title\x07: "),
        "{text}"
    );
    assert_clean("rewrite stdout", &text);
    assert!(err.contains("DEBUG"), "logs were written: {err}");
    assert_clean("rewrite logs", &err);
    assert!(!err.contains('\x1b'), "no colour codes off a terminal");

    // status --list --verify: the KEY column with the plugin's key id, the listed keys, the
    // unreadable value.
    let mut a = args(&["status", "--list", "--verify", &config]);
    a.extend(server.cli_args());
    let out = atrest_in(dir.path(), &a);
    let text = stdout(&out);
    assert_eq!(code(&out), 4, "{text}\n{}", stderr(&out));
    assert!(text.contains(escaped_id), "{text}");
    assert!(text.contains(&format!("    {escaped_key}\n")), "{text}");
    assert!(text.contains(r"bad\x1b]0;title\x07"), "{text}");
    assert_clean("status stdout", &text);
    assert_clean("status stderr", &stderr(&out));

    // JSON stays raw: the format escapes by itself.
    let mut a = args(&["status", "--list", "-o", "json", &config]);
    a.extend(server.cli_args());
    let json: serde_json::Value =
        serde_json::from_slice(&atrest_in(dir.path(), &a).stdout).unwrap();
    let row = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key_id"] == CONTROL_KEY_ID)
        .unwrap_or_else(|| panic!("a row with the raw key id: {json}"));
    assert_eq!(row["objects"][0], evil);
    // Without --verify too, the value that is no EncryptedObject counts as unreadable.
    assert_eq!(json["totals"]["unreadable"], 1, "{json}");
}
