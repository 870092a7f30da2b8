//! The loader's limits are kube-apiserver's: large configs without aliases load however many YAML
//! nodes they have, alias expansion is bounded by go-yaml's budget, characters go-yaml's reader
//! refuses get its text, and only the file size and nesting depth are capped beyond that.

use std::time::Instant;

use atrest_core::config::{load_bytes, load_file, LoadOptions, MAX_CONFIG_BYTES};

const HEADER: &str = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n";
const KEY32: &str = "BuKuVRejav77hecScfFE/YbVYxgueQD2ecqofr2r1CQ=";

fn load(yaml: &str) -> Result<atrest_core::config::EncryptionConfiguration, String> {
    load_bytes(yaml.as_bytes(), "big.yaml", &LoadOptions::default()).map_err(|e| e.to_string())
}

#[test]
fn a_config_with_200k_list_items_and_no_alias_loads() {
    let mut yaml = format!("{HEADER}resources:\n  - resources:\n");
    for i in 0..200_000 {
        yaml.push_str(&format!("      - r{i}.example.com\n"));
    }
    yaml.push_str(&format!(
        "    providers:\n      - aescbc:\n          keys: [{{name: k, secret: {KEY32}}}]\n"
    ));
    let config = load(&yaml).expect("kube-apiserver loads it");
    assert_eq!(config.resources[0].resources.len(), 200_000);
}

#[test]
fn a_200k_key_map_is_judged_by_its_fields_not_refused_as_aliasing() {
    let mut yaml = format!(
        "{HEADER}resources:\n  - resources: [secrets]\n    providers: [{{identity: {{}}}}]\n"
    );
    for i in 0..200_000 {
        yaml.push_str(&format!("    k{i}: v\n"));
    }
    let err = load(&yaml).unwrap_err();
    assert!(!err.contains("aliasing"), "{}", &err[..err.len().min(300)]);
    assert!(
        err.contains(r#"strict decoding error: unknown field "resources[0].k0""#),
        "{}",
        &err[..err.len().min(300)]
    );
}

#[test]
fn aliases_within_go_yamls_budget_load_and_a_bomb_is_refused() {
    // 500 entries sharing one provider list through an alias: most nodes come from aliases, but
    // under go-yaml's 99 % share.
    let mut yaml = format!(
        "{HEADER}resources:\n  - resources: [secrets]\n    providers: &p\n      - aescbc:\n          keys: [{{name: k, secret: {KEY32}}}]\n"
    );
    for i in 0..500 {
        yaml.push_str(&format!(
            "  - resources: [r{i}.example.com]\n    providers: *p\n"
        ));
    }
    let config = load(&yaml).expect("within the alias budget");
    assert_eq!(config.resources.len(), 501);

    let mut bomb = format!("{HEADER}x0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        bomb.push_str(&format!(
            "x{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 10].join(", ")
        ));
    }
    let started = Instant::now();
    let err = load(&bomb).unwrap_err();
    assert_eq!(
        err,
        "error while parsing file: error decoding encryption provider configuration file \"big.yaml\": yaml: document contains excessive aliasing"
    );
    // Bounded work: not 10^12 nodes (a generous bound, only to catch an unbounded expansion).
    assert!(started.elapsed().as_secs() < 30);

    // A syntax error after the bomb wins, as go-yaml parses the whole document first.
    let err = load(&format!("{bomb}y: [unclosed\n")).unwrap_err();
    assert!(err.contains("did not find expected"), "{err}");
}

#[test]
fn forbidden_characters_get_go_yamls_text_with_the_file_named() {
    let good = format!(
        "{HEADER}resources:\n  - resources: [secrets]\n    providers: [{{identity: {{}}}}]\n"
    );
    for bad in ["\0", "\x1b[2J", "\x7f", "\u{9b}"] {
        let yaml = good.replacen("secrets", &format!("sec{bad}rets"), 1);
        assert_eq!(
            load(&yaml).unwrap_err(),
            "error while parsing file: error decoding encryption provider configuration file \"big.yaml\": yaml: control characters are not allowed",
            "{bad:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nul.yaml");
    std::fs::write(&path, format!("{good}\0")).unwrap();
    let err = load_file(&path, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "file \"{}\": yaml: control characters are not allowed",
            path.display()
        )),
        "{err}"
    );
}

#[test]
fn dev_zero_is_cut_at_the_size_cap() {
    let err = load_file(std::path::Path::new("/dev/zero"), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!("error while parsing file: error while loading file: error reading encryption provider configuration file \"/dev/zero\": read /dev/zero: file is larger than {MAX_CONFIG_BYTES} bytes")
    );
}
