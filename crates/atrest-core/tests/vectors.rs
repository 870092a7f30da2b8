//! Every line of `testdata/vectors/*.jsonl` (written by kube-apiserver v1.36.3's own code) read back
//! through configs loaded with the real loader and the in-process reference KMS.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use atrest_core::config::{self, LoadOptions};
use atrest_core::kms::testing::{InProcessConnector, ReferenceKms};
use atrest_core::providers::kmsv2::{DekSourceType, KmsV2Options};
use atrest_core::{BuildOptions, GroupResource, ProviderKind, Transformers};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::Value;

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors")
}

fn lines(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(vectors_dir().join(file)).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn b64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().unwrap()).unwrap()
}

fn kms_v1_enabled(record: &Value) -> bool {
    record["apiserver_flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x.as_str() == Some("KMSv1=true")))
}

/// The reference plugin with every KEK the KMS records name. Its current key is `refkms-key-1`,
/// except behind the `kmsv2-rot2.sock` endpoint, where Status reports `refkms-key-2` (README).
fn connector() -> InProcessConnector {
    let main = Arc::new(ReferenceKms::default());
    let rot2 = Arc::new(ReferenceKms::generate("refkms-key-2"));
    for file in ["kmsv1.jsonl", "kmsv2.jsonl"] {
        for r in lines(file) {
            let kek: [u8; 32] = b64(&r["kek_b64"]).try_into().unwrap();
            let id = r["kek_key_id"].as_str().unwrap();
            main.add_kek(id, kek);
            rot2.add_kek(id, kek);
        }
    }
    main.set_current_key_id("refkms-key-1");
    InProcessConnector::new(main).with_endpoint("unix:///run/kms/kmsv2-rot2.sock", rot2)
}

/// Configs are loaded once per (config, KMSv1 gate, KMS v2 write mode) and shared, like the
/// apiserver's transformers (so KMS caches behave as in a running process).
struct Env {
    connector: Arc<InProcessConnector>,
    built: HashMap<(String, bool, DekSourceType), Transformers>,
}

impl Env {
    fn new() -> Self {
        Self {
            connector: Arc::new(connector()),
            built: HashMap::new(),
        }
    }

    fn transformers(&mut self, config: &str, kms_v1: bool, mode: DekSourceType) -> Transformers {
        let connector = Arc::clone(&self.connector);
        self.built
            .entry((config.to_string(), kms_v1, mode))
            .or_insert_with(|| {
                let opts = LoadOptions {
                    kms_v1_enabled: kms_v1,
                    ..Default::default()
                };
                let loaded = config::load_file(&vectors_dir().join(config), &opts)
                    .unwrap_or_else(|e| panic!("{config}: {e}"));
                let options = BuildOptions {
                    kms_v2: KmsV2Options {
                        write_type: mode,
                        ..Default::default()
                    },
                };
                Transformers::build_with(&loaded, connector, &options).unwrap()
            })
            .clone()
    }
}

fn kind_name(kind: ProviderKind) -> &'static str {
    kind.config_name()
}

/// Reads every record of `file`; returns how many were checked.
fn check_positive(env: &mut Env, file: &str) -> usize {
    let records = lines(file);
    for (n, r) in records.iter().enumerate() {
        let config = r["config"].as_str().unwrap();
        // AES_GCM_KEY values were written (and recorded as fresh) by a 1.27/1.28-style write state;
        // read them with that state. With 1.29+'s seed state they are stale (checked below).
        let legacy = r["encrypted_dek_source_type"].as_str() == Some("AES_GCM_KEY");
        let mode = if legacy {
            DekSourceType::AesGcmKey
        } else {
            DekSourceType::HkdfSha256XnonceAesGcmSeed
        };
        let t = env.transformers(config, kms_v1_enabled(r), mode);
        let gr = GroupResource::parse(r["resource"].as_str().unwrap());
        let aad = r["etcd_key"].as_str().unwrap().as_bytes();
        let stored = b64(&r["stored_b64"]);
        let out = t
            .for_resource(&gr)
            .read(&stored, aad)
            .unwrap_or_else(|e| panic!("{file}:{} {config}: {e}", n + 1));
        assert_eq!(out.plaintext, b64(&r["plaintext_b64"]), "{file}:{}", n + 1);
        assert_eq!(
            out.stale,
            r["stale"].as_bool().unwrap(),
            "{file}:{} stale",
            n + 1
        );
        let provider = r["selected_provider"]
            .as_str()
            .or(r["provider"].as_str())
            .unwrap();
        assert_eq!(kind_name(out.provider.kind), provider, "{file}:{}", n + 1);
        if let Some(name) = r["key_name"].as_str() {
            assert_eq!(
                out.provider.key_name.as_deref(),
                Some(name),
                "{file}:{}",
                n + 1
            );
        }
        if let Some(name) = r["kms_name"].as_str() {
            assert_eq!(
                out.provider.key_name.as_deref(),
                Some(name),
                "{file}:{}",
                n + 1
            );
        }
        if let Some(key_id) = r["key_id"].as_str() {
            assert_eq!(
                out.provider.key_id.as_deref(),
                Some(key_id),
                "{file}:{}",
                n + 1
            );
        }
        let identified = t.for_resource(&gr).identify(&stored).unwrap().unwrap();
        assert_eq!(
            identified.provider.kind,
            out.provider.kind,
            "{file}:{}",
            n + 1
        );
        if legacy {
            let seed_state = env.transformers(
                config,
                kms_v1_enabled(r),
                DekSourceType::HkdfSha256XnonceAesGcmSeed,
            );
            let again = seed_state.for_resource(&gr).read(&stored, aad).unwrap();
            assert_eq!(again.plaintext, out.plaintext);
            assert!(
                again.stale,
                "{file}:{}: a mode-0 value is stale for a 1.29+ seed write state",
                n + 1
            );
        }
    }
    records.len()
}

#[test]
fn identity_vectors() {
    assert_eq!(check_positive(&mut Env::new(), "identity.jsonl"), 19);
}

#[test]
fn aescbc_vectors() {
    assert_eq!(check_positive(&mut Env::new(), "aescbc.jsonl"), 104);
}

#[test]
fn aesgcm_vectors() {
    assert_eq!(check_positive(&mut Env::new(), "aesgcm.jsonl"), 104);
}

#[test]
fn secretbox_vectors() {
    assert_eq!(check_positive(&mut Env::new(), "secretbox.jsonl"), 54);
}

#[test]
fn kmsv1_vectors() {
    assert_eq!(check_positive(&mut Env::new(), "kmsv1.jsonl"), 17);
}

#[test]
fn kmsv2_vectors() {
    assert_eq!(check_positive(&mut Env::new(), "kmsv2.jsonl"), 102);
}

#[test]
fn selection_vectors() {
    let mut env = Env::new();
    assert_eq!(check_positive(&mut env, "selection.jsonl"), 12);
    for r in lines("selection.jsonl") {
        let t = env.transformers(
            r["config"].as_str().unwrap(),
            false,
            DekSourceType::default(),
        );
        let gr = GroupResource::parse(r["resource"].as_str().unwrap());
        let write = t.for_resource(&gr).write_provider();
        assert_eq!(
            kind_name(write.kind),
            r["selected_provider"].as_str().unwrap(),
            "{gr}"
        );
        assert_eq!(write.key_name.as_deref(), r["key_name"].as_str(), "{gr}");
    }
}

/// The case where upstream panics: atrest returns an error instead.
const UPSTREAM_PANICS: &str = "aescbc-iv-only-16-bytes-PANICS";

#[test]
fn negative_vectors() {
    let mut env = Env::new();
    let records = lines("negative.jsonl");
    let (mut rejected, mut accepted) = (0, 0);
    for r in &records {
        let case = r["case"].as_str().unwrap();
        let config = r["config"].as_str().unwrap();
        if r.get("config_load_error").is_some() {
            let opts = LoadOptions {
                kms_v1_enabled: kms_v1_enabled(r),
                ..Default::default()
            };
            let err = config::load_file(&vectors_dir().join(config), &opts).unwrap_err();
            assert_eq!(err.to_string(), r["error"].as_str().unwrap(), "{case}");
            rejected += 1;
            continue;
        }
        let t = env.transformers(config, kms_v1_enabled(r), DekSourceType::default());
        let gr = GroupResource::parse(r["resource"].as_str().unwrap());
        let result = t.for_resource(&gr).read(
            &b64(&r["stored_b64"]),
            r["etcd_key"].as_str().unwrap().as_bytes(),
        );
        if r["accepted"].as_bool().unwrap() {
            result.unwrap_or_else(|e| panic!("{case}: {e}"));
            accepted += 1;
            continue;
        }
        let err = result.expect_err(case).to_string();
        let expected = if case == UPSTREAM_PANICS {
            "invalid PKCS7 data (empty or not padded)".to_string()
        } else {
            // protobuf-go randomly puts U+00A0 instead of a space after `proto:`.
            r["error"]
                .as_str()
                .unwrap()
                .replace("proto:\u{a0}", "proto: ")
        };
        assert_eq!(err, expected, "{case}");
        rejected += 1;
    }
    assert_eq!((rejected, accepted), (44, 3));
    assert_eq!(records.len(), 47);
}

#[test]
fn two_providers_same_prefix_second_wins_and_is_stale() {
    let mut env = Env::new();
    let r = lines("negative.jsonl")
        .into_iter()
        .find(|r| r["case"] == "aescbc-two-providers-same-prefix-second-ok")
        .unwrap();
    let t = env.transformers(
        r["config"].as_str().unwrap(),
        false,
        DekSourceType::default(),
    );
    let out = t
        .for_resource(&GroupResource::parse("secrets"))
        .read(
            &b64(&r["stored_b64"]),
            r["etcd_key"].as_str().unwrap().as_bytes(),
        )
        .unwrap();
    assert!(out.stale);
    assert_eq!(out.provider.provider_index, 1);
}
