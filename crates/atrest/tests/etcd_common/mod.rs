//! Shared by the `etcd_*` integration tests: run the `atrest` binary against a real etcd.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use atrest_testkit::load::TestClient;
use atrest_testkit::sample::{self, SampleObject};
use atrest_testkit::EtcdServer;

pub fn atrest_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atrest"));
    cmd.env_remove("ETCDCTL_ENDPOINTS")
        .env_remove("ETCDCTL_CACERT")
        .env_remove("ETCDCTL_CERT")
        .env_remove("ETCDCTL_KEY")
        // State (rewrite checkpoints) never goes to the real state directory from tests.
        .env(
            "XDG_STATE_HOME",
            std::env::temp_dir().join("atrest-tests-state"),
        );
    cmd
}

/// Runs `atrest` with `args` in `cwd` (state directory `cwd/state`).
pub fn atrest_in(cwd: &Path, args: &[String]) -> Output {
    atrest_cmd()
        .current_dir(cwd)
        .env("XDG_STATE_HOME", cwd.join("state"))
        .args(args)
        .output()
        .expect("run atrest")
}

pub fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

pub fn config_arg(name: &str) -> String {
    format!("--config={}", sample::config(name).display())
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Puts the sample's 2,000 stored values into `server`.
pub fn load_sample(server: &EtcdServer) -> (TestClient, Vec<SampleObject>) {
    let objects = sample::objects();
    let client = TestClient::connect(server);
    let kvs: Vec<(&[u8], &[u8])> = objects
        .iter()
        .map(|o| (o.etcd_key.as_bytes(), o.stored.as_slice()))
        .collect();
    client.put_all(&kvs);
    (client, objects)
}

/// The rows/totals of a status JSON without the fields expected-status.json lacks.
pub fn comparable_status(json: &serde_json::Value) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = json["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let mut r = r.as_object().expect("row").clone();
            r.remove("objects");
            r.remove("key_id");
            // `key` is the name for `key_name`; the expected file only has the latter.
            let key = r.remove("key");
            assert_eq!(
                key.as_ref(),
                r.get("key_name"),
                "`key` must equal `key_name`"
            );
            serde_json::Value::Object(r)
        })
        .collect();
    serde_json::json!({"rows": rows, "totals": json["totals"]})
}
