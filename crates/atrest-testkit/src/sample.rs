//! The sample cluster in `testdata/clusters/sample` (see its README).

use std::io::BufRead;
use std::path::PathBuf;

use base64::Engine;
use serde_json::Value;

/// One line of `objects.jsonl.gz`.
#[derive(Debug, Clone)]
pub struct SampleObject {
    pub etcd_key: String,
    pub resource: String,
    pub covered: bool,
    pub provider: String,
    pub key_name: Option<String>,
    pub unreadable: bool,
    pub gvk: String,
    pub stored: Vec<u8>,
    pub plaintext: Vec<u8>,
    pub object_json: Value,
}

/// `testdata/clusters/sample`.
pub fn dir() -> PathBuf {
    crate::workspace_root().join("testdata/clusters/sample")
}

/// `config-before.yaml` / `config-after.yaml`.
pub fn config(name: &str) -> PathBuf {
    dir().join(name)
}

/// `expected-status.json`.
pub fn expected_status() -> Value {
    let text =
        std::fs::read_to_string(dir().join("expected-status.json")).expect("expected-status.json");
    serde_json::from_str(&text).expect("expected-status.json is JSON")
}

/// All 2,000 objects, sorted by key.
pub fn objects() -> Vec<SampleObject> {
    let path = dir().join("objects.jsonl.gz");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let b64 = base64::engine::general_purpose::STANDARD;
    std::io::BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .map(|line| {
            let o: Value =
                serde_json::from_str(&line.expect("read sample")).expect("sample line is JSON");
            let s = |k: &str| o[k].as_str().map(str::to_string);
            SampleObject {
                etcd_key: s("etcd_key").expect("etcd_key"),
                resource: s("resource").expect("resource"),
                covered: o["covered"].as_bool().expect("covered"),
                provider: s("provider").expect("provider"),
                key_name: s("key_name"),
                unreadable: o["unreadable"].as_bool().unwrap_or(false),
                gvk: s("gvk").expect("gvk"),
                stored: b64
                    .decode(s("stored_b64").expect("stored_b64"))
                    .expect("stored_b64"),
                plaintext: b64
                    .decode(s("plaintext_b64").expect("plaintext_b64"))
                    .expect("plaintext_b64"),
                object_json: o["object_json"].clone(),
            }
        })
        .collect()
}
