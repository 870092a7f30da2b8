//! `config::explain`: write provider, read order and the warnings, never any key material.

use atrest_core::config::{explain, load_bytes, parse_bytes, Explanation, LoadOptions};

const HEADER: &str =
    "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n";
const K1: &str = "BuKuVRejav77hecScfFE/YbVYxgueQD2ecqofr2r1CQ=";
const K2: &str = "NqfcD93KODyFdNH7P6AzBrIb/OJADSbsRr8n3fqU/74=";

fn explained(body: &str, opts: &LoadOptions) -> Explanation {
    let yaml = format!("{HEADER}{body}");
    let config = parse_bytes(yaml.as_bytes(), "c.yaml", opts).unwrap();
    explain(&config, opts)
}

fn codes(e: &Explanation, entry: usize) -> Vec<&'static str> {
    e.entries[entry].warnings.iter().map(|w| w.code).collect()
}

#[test]
fn rotation_config_reads_in_provider_then_key_order() {
    let body = format!(
        "  - resources: [secrets]\n    providers:\n      - aesgcm: {{keys: [{{name: new, secret: '{K2}'}}, {{name: old, secret: '{K1}'}}]}}\n      - identity: {{}}\n"
    );
    let e = explained(&body, &LoadOptions::default());
    let entry = &e.entries[0];
    assert_eq!(
        entry.write.prefix.as_deref(),
        Some("k8s:enc:aesgcm:v1:new:")
    );
    let order: Vec<_> = entry
        .read_order
        .iter()
        .map(|s| (s.provider.as_str(), s.name.as_deref()))
        .collect();
    assert_eq!(
        order,
        vec![
            ("aesgcm", Some("new")),
            ("aesgcm", Some("old")),
            ("identity", None)
        ]
    );
    assert_eq!(codes(&e, 0), vec!["identity-reads", "aesgcm-rotation"]);
}

#[test]
fn identity_first_aescbc_and_missing_identity_are_flagged() {
    let body = format!(
        "  - resources: [secrets]\n    providers:\n      - identity: {{}}\n      - aescbc: {{keys: [{{name: a, secret: '{K1}'}}]}}\n  - resources: [configmaps]\n    providers:\n      - aescbc: {{keys: [{{name: b, secret: '{K2}'}}]}}\n"
    );
    let e = explained(&body, &LoadOptions::default());
    assert_eq!(codes(&e, 0), vec!["identity-writes", "aescbc"]);
    assert_eq!(codes(&e, 1), vec!["no-identity", "aescbc"]);
    assert!(e.entries[1].warnings[1].message.contains("padding-oracle"));
    assert!(e.entries[0].warnings[1].message.contains("reading only"));
}

#[test]
fn kms_v1_masking_duplicate_and_colon_names_are_flagged_even_if_the_file_would_not_load() {
    let body = format!(
        "  - resources: ['*.*']\n    providers: [{{identity: {{}}}}]\n  - resources: [secrets]\n    providers:\n      - kms: {{name: 'p:q', endpoint: 'unix:///k.sock'}}\n      - secretbox: {{keys: [{{name: 'x:y', secret: '{K1}'}}, {{name: 'x:y', secret: '{K2}'}}]}}\n"
    );
    let yaml = format!("{HEADER}{body}");
    assert!(load_bytes(yaml.as_bytes(), "c.yaml", &LoadOptions::default()).is_err());
    let e = explained(&body, &LoadOptions::default());
    let c = codes(&e, 1);
    for expected in [
        "no-identity",
        "kms-v1",
        "name-with-colon",
        "duplicate-key-name",
        "masked",
    ] {
        assert!(c.contains(&expected), "{expected} missing from {c:?}");
    }
    let kms_v1 = e.entries[1]
        .warnings
        .iter()
        .find(|w| w.code == "kms-v1")
        .unwrap();
    assert!(kms_v1.message.contains("--feature-gates=KMSv1=true"));
}

#[test]
fn reused_key_material_is_found_without_printing_it() {
    let body = format!(
        "  - resources: [secrets]\n    providers:\n      - aescbc: {{keys: [{{name: a, secret: '{K1}'}}]}}\n  - resources: [configmaps]\n    providers:\n      - aesgcm: {{keys: [{{name: a, secret: '{K1}'}}]}}\n  - resources: [pods]\n    providers:\n      - aescbc: {{keys: [{{name: a, secret: '{K1}'}}, {{name: c, secret: '{K2}'}}]}}\n"
    );
    let e = explained(&body, &LoadOptions::default());
    let reused: Vec<&str> = e
        .warnings
        .iter()
        .filter(|w| w.code == "reused-key")
        .map(|w| w.message.as_str())
        .collect();
    // aescbc "a" twice is the same role (fine); aesgcm "a" with the same bytes is reported twice.
    assert_eq!(reused.len(), 2, "{reused:?}");
    assert!(reused[0].starts_with(
        "resources[0].providers[0].aescbc key \"a\" and resources[1].providers[0].aesgcm key \"a\""
    ));
    let json = serde_json::to_string(&e).unwrap();
    assert!(!json.contains(&K1[..16]) && !json.contains(&K2[..16]));
}
