//! The loader handles hostile input: arbitrary bytes and mutated valid configs never panic, and
//! every error still renders without the secret.

use atrest_core::config::{load_bytes, LoadOptions};
use proptest::prelude::*;

const VALID: &str = "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets, '*.apps']
    providers:
      - aescbc:
          keys:
            - name: key1
              secret: c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0ISE/Pz8=
      - kms: {apiVersion: v2, name: k, endpoint: 'unix:///a.sock', timeout: 3s}
      - identity: {}
  - resources: ['*.*']
    providers: [{secretbox: {keys: [{name: s, secret: &s c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0ISE/Pz8=}]}}]
";

fn check(bytes: &[u8]) {
    for opts in [
        LoadOptions::default(),
        LoadOptions {
            kms_v1_enabled: true,
            automatic_reload: true,
        },
    ] {
        if let Err(err) = load_bytes(bytes, "fuzz.yaml", &opts) {
            // Every failure keeps one of kube-apiserver's two outer forms and a non-empty detail.
            let shown = err.to_string();
            assert!(
                shown.starts_with("error while parsing file: ")
                    || shown.starts_with("error while building transformers: "),
                "{shown}"
            );
            assert!(!err.problems().is_empty());
            if let Some(line) = err.line() {
                assert!(
                    line >= 1 && line <= bytes.len() + 1,
                    "line {line} outside the input"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes);
    }

    #[test]
    fn arbitrary_json_like_text_never_panics(text in "[{}\\[\\]\",:a-z0-9 \n]{0,200}") {
        check(format!("{{{text}").as_bytes());
    }

    #[test]
    fn mutated_valid_yaml_never_panics(
        edits in proptest::collection::vec((0usize..VALID.len(), any::<u8>(), 0u8..3), 1..8)
    ) {
        let mut bytes = VALID.as_bytes().to_vec();
        for (pos, byte, op) in edits {
            let pos = pos.min(bytes.len());
            match op {
                0 => bytes.insert(pos, byte),
                1 if pos < bytes.len() => { bytes.remove(pos); }
                _ if pos < bytes.len() => bytes[pos] = byte,
                _ => {}
            }
        }
        check(&bytes);
    }

    #[test]
    fn structural_characters_in_valid_yaml_never_panic(pos in 0usize..VALID.len(), c in prop::sample::select(vec!['[', ']', '{', '}', ':', '-', '&', '*', '!', '|', '>', '\'', '"', '#', '\t', '\n', '%', '@', '`', '?'])) {
        let mut text = VALID.to_owned();
        let pos = (0..=pos).rev().find(|p| text.is_char_boundary(*p)).unwrap_or(0);
        text.insert(pos, c);
        check(text.as_bytes());
    }
}

#[test]
fn the_unmutated_seed_is_valid() {
    assert!(load_bytes(VALID.as_bytes(), "seed.yaml", &LoadOptions::default()).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Whatever else is wrong with a file, a key's secret never appears in the error.
    #[test]
    fn secrets_never_leak_into_errors(
        secret in "[A-Za-z0-9+/]{12,60}={0,2}",
        resource in prop::sample::select(vec!["secrets", "Secrets", "*", "secrets.*", "*.*"]),
        provider in prop::sample::select(vec!["aescbc", "aesgcm", "secretbox", "aesctr"]),
        header in prop::sample::select(vec![
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n",
            "kind: EncryptionConfiguration\n",
            "apiVersion: v1\nkind: EncryptionConfig\n",
            "",
        ]),
        extra in prop::sample::select(vec!["", "        identity: {}\n", "        kms: {name: k}\n"]),
        quoting in prop::sample::select(vec!["", "'", "\""]),
    ) {
        let yaml = format!(
            "{header}resources:\n  - resources: ['{resource}']\n    providers:\n      - {provider}:\n          keys:\n            - name: k\n              secret: {quoting}{secret}{quoting}\n{extra}"
        );
        for opts in [LoadOptions::default(), LoadOptions { kms_v1_enabled: true, automatic_reload: true }] {
            if let Err(err) = load_bytes(yaml.as_bytes(), "leak.yaml", &opts) {
                let shown = format!("{err} {err:?}");
                prop_assert!(!shown.contains(&secret), "secret leaked: {}", shown);
            }
        }
    }
}
