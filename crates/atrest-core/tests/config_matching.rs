//! Provider selection (CONFIG.md §4) against kube-apiserver's recorded choices in
//! `testdata/vectors/selection.jsonl`, plus the concatenation rule for repeated exact entries.

use std::path::{Path, PathBuf};

use atrest_core::config::{load_bytes, load_file, LoadOptions, ProviderConfiguration};
use atrest_core::GroupResource;

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors")
}

fn kind_and_key(p: &ProviderConfiguration) -> (&'static str, Option<String>) {
    match p {
        ProviderConfiguration::Identity => ("identity", None),
        ProviderConfiguration::AesCbc(k) => ("aescbc", k.keys.first().map(|k| k.name.clone())),
        ProviderConfiguration::AesGcm(k) => ("aesgcm", k.keys.first().map(|k| k.name.clone())),
        ProviderConfiguration::Secretbox(k) => {
            ("secretbox", k.keys.first().map(|k| k.name.clone()))
        }
        ProviderConfiguration::Kms(k) => ("kms", Some(k.name.clone())),
    }
}

#[test]
fn selection_vectors_pick_the_recorded_write_provider() {
    let text = std::fs::read_to_string(vectors().join("selection.jsonl")).unwrap();
    let mut checked = 0;
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let config = load_file(
            &vectors().join(record["config"].as_str().unwrap()),
            &LoadOptions::default(),
        )
        .unwrap();
        let gr = GroupResource::parse(record["resource"].as_str().unwrap());
        let write = config.write_provider_for(&gr).expect("covered");
        let (kind, key) = kind_and_key(write);
        assert_eq!(kind, record["selected_provider"].as_str().unwrap(), "{gr}");
        assert_eq!(key.as_deref(), record["key_name"].as_str(), "{gr}");
        checked += 1;
    }
    assert!(checked >= 10);
}

const HEADER: &str = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n";

#[test]
fn exact_entries_concatenate_and_beat_wildcards() {
    let yaml = format!(
        "{HEADER}resources:\n  - resources: [secrets]\n    providers: [{{identity: {{}}}}]\n  - resources: [secrets., configmaps]\n    providers:\n      - aescbc: {{keys: [{{name: a, secret: 'BuKuVRejav77hecScfFE/YbVYxgueQD2ecqofr2r1CQ='}}]}}\n  - resources: ['*.']\n    providers:\n      - secretbox: {{keys: [{{name: s, secret: 'BuKuVRejav77hecScfFE/YbVYxgueQD2ecqofr2r1CQ='}}]}}\n"
    );
    let config = load_bytes(yaml.as_bytes(), "c.yaml", &LoadOptions::default()).unwrap();
    let secrets: Vec<_> = config
        .providers_for(&GroupResource::new("", "secrets"))
        .unwrap()
        .into_iter()
        .map(kind_and_key)
        .collect();
    assert_eq!(
        secrets,
        vec![("identity", None), ("aescbc", Some("a".to_owned()))]
    );
    assert_eq!(
        kind_and_key(
            config
                .write_provider_for(&GroupResource::new("", "pods"))
                .unwrap()
        )
        .0,
        "secretbox"
    );
    assert!(!config.covers(&GroupResource::new("apps", "deployments")));
    assert!(config.covers(&GroupResource::new("", "events")));
}
