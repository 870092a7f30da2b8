use super::*;
use atrest_core::config::load_bytes;

const K1: &str = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";

fn current(text: &str) -> EncryptionConfiguration {
    load_bytes(text.as_bytes(), "current.yaml", &LoadOptions::default()).unwrap()
}

fn request(target: Option<Target>, resources: &[&str]) -> PlanRequest {
    PlanRequest {
        target,
        resources: resources.iter().map(|s| s.to_string()).collect(),
        drop_identity: false,
        key_name: "key-20261201".into(),
    }
}

fn model(text: &str) -> ConfigSpec {
    ConfigSpec::from(&current(text))
}

/// The providers of entry `i` as labels.
fn labels(text: &str, i: usize) -> Vec<String> {
    model(text).entries[i]
        .providers
        .iter()
        .flat_map(|p| p.labels())
        .map(|l| l.to_string())
        .collect()
}

/// `small` is `big` with lines removed: returns the lines only in `big`, in order.
fn added_lines(small: &str, big: &str) -> Vec<String> {
    let s: Vec<&str> = small.lines().collect();
    let mut i = 0;
    let mut added = Vec::new();
    for line in big.lines() {
        if i < s.len() && s[i] == line {
            i += 1;
        } else {
            added.push(line.to_string());
        }
    }
    assert_eq!(i, s.len(), "every line of\n{small}\nmust survive in\n{big}");
    added
}

fn simple() -> String {
    format!(
        "# managed by hand\napiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources:\n      - secrets\n    providers:\n      - aescbc:\n          keys:\n            - name: key1\n              secret: {K1}\n      - identity: {{}}\n  - resources:\n      - configmaps\n    providers:\n      - identity: {{}}\n"
    )
}

#[test]
fn new_key_same_provider() {
    let cur = simple();
    let g = generate(
        &cur,
        &current(&cur),
        &request(None, &[]),
        &LoadOptions::default(),
    )
    .unwrap();
    assert!(g.canonical.is_none());
    assert_eq!(
        labels(&g.stage, 0),
        ["aescbc key1", "aescbc key-20261201", "identity"]
    );
    assert_eq!(
        labels(&g.promote, 0),
        ["aescbc key-20261201", "aescbc key1", "identity"]
    );
    assert_eq!(labels(&g.retire, 0), ["aescbc key-20261201", "identity"]);
    assert_eq!(
        labels(&g.retire, 1),
        ["identity"],
        "the configmaps entry is not touched"
    );
    // Stage and promote only add the two lines of the new key; retire only removes key1's.
    let added = added_lines(&cur, &g.stage);
    assert_eq!(added.len(), 2, "{added:?}");
    assert_eq!(added[0], "            - name: key-20261201");
    assert!(added[1].starts_with("              secret: "));
    assert_eq!(added_lines(&cur, &g.promote).len(), 2);
    let removed = added_lines(&g.retire, &g.promote);
    assert_eq!(
        removed,
        [
            "            - name: key1".to_string(),
            format!("              secret: {K1}")
        ]
    );
    assert_eq!(g.entries.len(), 1);
    let e = &g.entries[0];
    assert_eq!(e.from.to_string(), "aescbc key1");
    assert_eq!(e.to.to_string(), "aescbc key-20261201");
    assert_eq!(
        e.retired.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
        ["aescbc key1"]
    );
    assert!(e.identity_kept);
    // The new key is fresh and the same in all three files.
    let key_of = |t: &str| match &model(t).entries[0].providers[0] {
        Prov::Keys { keys, .. } => keys
            .iter()
            .find(|k| k.name == "key-20261201")
            .unwrap()
            .secret
            .clone(),
        _ => panic!(),
    };
    assert_eq!(key_of(&g.stage), key_of(&g.retire));
    assert_ne!(key_of(&g.stage).as_slice(), &[0u8; 32]);
}

#[test]
fn local_to_other_local() {
    let cur = simple();
    let g = generate(
        &cur,
        &current(&cur),
        &request(Some(Target::Keys(KeysKind::Aesgcm)), &["secrets"]),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(
        labels(&g.stage, 0),
        ["aescbc key1", "aesgcm key-20261201", "identity"]
    );
    assert_eq!(
        labels(&g.promote, 0),
        ["aesgcm key-20261201", "aescbc key1", "identity"]
    );
    assert_eq!(labels(&g.retire, 0), ["aesgcm key-20261201", "identity"]);
    let added = added_lines(&cur, &g.stage);
    assert_eq!(added[0], "      - aesgcm:");
    assert_eq!(added.len(), 4);
}

#[test]
fn local_to_kms_v2_and_back() {
    let cur = simple();
    let kms = Target::Kms {
        name: "vault".into(),
        endpoint: "unix:///run/kms.sock".into(),
        timeout: Duration::from_secs(3),
    };
    let g = generate(
        &cur,
        &current(&cur),
        &request(Some(kms), &[]),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(
        labels(&g.promote, 0),
        ["kms v2 vault", "aescbc key1", "identity"]
    );
    assert_eq!(labels(&g.retire, 0), ["kms v2 vault", "identity"]);
    assert!(g.retire.contains("endpoint: \"unix:///run/kms.sock\""));
    // kms v2 → local: from the retire config just made.
    let back = generate(
        &g.retire,
        &current(&g.retire),
        &request(Some(Target::Keys(KeysKind::Secretbox)), &[]),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(
        labels(&back.stage, 0),
        ["kms v2 vault", "secretbox key-20261201", "identity"]
    );
    assert_eq!(
        labels(&back.retire, 0),
        ["secretbox key-20261201", "identity"]
    );
    assert_eq!(back.entries[0].retired[0].to_string(), "kms v2 vault");
    // Without --provider a KMS entry is a KEK rotation, not a config change.
    let err = generate(
        &g.retire,
        &current(&g.retire),
        &request(None, &[]),
        &LoadOptions::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("rotate kek"), "{err}");
}

#[test]
fn start_encrypting_plaintext_resources() {
    let cur = simple();
    let g = generate(
        &cur,
        &current(&cur),
        &request(Some(Target::Keys(KeysKind::Secretbox)), &["configmaps"]),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(labels(&g.stage, 1), ["identity", "secretbox key-20261201"]);
    assert_eq!(
        labels(&g.promote, 1),
        ["secretbox key-20261201", "identity"]
    );
    assert_eq!(labels(&g.retire, 1), ["secretbox key-20261201", "identity"]);
    assert_eq!(labels(&g.stage, 0), labels(&cur, 0), "secrets untouched");
    assert_eq!(g.entries[0].from.to_string(), "identity");
    assert!(g.entries[0].retired.is_empty(), "identity stays for reads");
    let mut req = request(Some(Target::Keys(KeysKind::Secretbox)), &["configmaps"]);
    req.drop_identity = true;
    let g = generate(&cur, &current(&cur), &req, &LoadOptions::default()).unwrap();
    assert_eq!(labels(&g.retire, 1), ["secretbox key-20261201"]);
    assert_eq!(g.entries[0].retired[0].to_string(), "identity");
    assert!(!g.entries[0].identity_kept);
}

#[test]
fn several_entries_and_flow_style_fall_back_to_canonical() {
    let cur = format!(
        "{{\"kind\":\"EncryptionConfiguration\",\"apiVersion\":\"apiserver.config.k8s.io/v1\",\"resources\":[{{\"resources\":[\"secrets\"],\"providers\":[{{\"aescbc\":{{\"keys\":[{{\"name\":\"aescbckey\",\"secret\":\"{K1}\"}}]}}}},{{\"identity\":{{}}}}]}},{{\"resources\":[\"configmaps\"],\"providers\":[{{\"secretbox\":{{\"keys\":[{{\"name\":\"k\",\"secret\":\"{K1}\"}}]}}}}]}}]}}"
    );
    let g = generate(
        &cur,
        &current(&cur),
        &request(None, &[]),
        &LoadOptions::default(),
    )
    .unwrap();
    assert!(g.canonical.is_some());
    assert_eq!(g.entries.len(), 2);
    assert_eq!(
        labels(&g.promote, 0),
        ["aescbc key-20261201", "aescbc aescbckey", "identity"]
    );
    assert_eq!(
        labels(&g.promote, 1),
        ["secretbox key-20261201", "secretbox k"]
    );
    assert_eq!(labels(&g.retire, 1), ["secretbox key-20261201"]);
    let k = |t: &str, i: usize| match &model(t).entries[i].providers[0] {
        Prov::Keys { keys, .. } => keys[0].secret.clone(),
        _ => panic!(),
    };
    assert_ne!(k(&g.retire, 0), k(&g.retire, 1), "one fresh key per entry");
}

#[test]
fn bad_requests() {
    let cur = simple();
    let err = generate(
        &cur,
        &current(&cur),
        &request(None, &["pods"]),
        &LoadOptions::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("--resources pods"), "{err}");
    let err = generate(
        &cur,
        &current(&cur),
        &request(None, &["configmaps"]),
        &LoadOptions::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("--provider"), "{err}");
}
