//! Rules the shared vectors do not cover: every V/L rule's text and order, JSON input, line
//! numbers, strict decoding, defaulting, V21 with automatic reload, and secrets never leaking.

use atrest_core::config::{
    load_bytes, load_file, KmsApiVersion, LoadOptions, ProviderConfiguration, Stage,
};

const HEADER: &str = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n";
const KEY32: &str = "BuKuVRejav77hecScfFE/YbVYxgueQD2ecqofr2r1CQ=";

fn opts() -> LoadOptions {
    LoadOptions::default()
}

fn with_gate() -> LoadOptions {
    LoadOptions {
        kms_v1_enabled: true,
        ..LoadOptions::default()
    }
}

fn with_reload() -> LoadOptions {
    LoadOptions {
        automatic_reload: true,
        kms_v1_enabled: true,
    }
}

/// A config with `body` (the `resources:` list items) after the header.
fn doc(body: &str) -> String {
    format!("{HEADER}resources:\n{body}")
}

fn error(yaml: &str, opts: &LoadOptions) -> String {
    match load_bytes(yaml.as_bytes(), "c.yaml", opts) {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.to_string(),
    }
}

fn parse_err(detail: &str) -> String {
    format!("error while parsing file: {detail}")
}

fn resources(list: &str) -> String {
    doc(&format!(
        "  - resources: {list}\n    providers: [{{identity: {{}}}}]\n"
    ))
}

fn kms(fields: &str) -> String {
    doc(&format!(
        "  - resources: [secrets]\n    providers:\n      - kms: {{{fields}}}\n"
    ))
}

#[test]
fn v2_and_v11_empty_lists_are_both_reported() {
    let yaml = doc("  - resources: []\n    providers: []\n");
    assert_eq!(
        error(&yaml, &opts()),
        parse_err("[resources[0].resources: Required value: at least one resources[0].resources is required, resources[0].providers: Required value: at least one resources[0].providers is required]")
    );
}

#[test]
fn v3_and_v4_follow_upstreams_pairwise_scan() {
    let overlap = "using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked";
    assert_eq!(
        error(&resources("['*.', '*.']"), &opts()),
        parse_err(&format!("[resources[0].resources: Invalid value: [\"*.\",\"*.\"]: the same resource cannot be specified multiple times, resources[0].resources: Invalid value: [\"*.\",\"*.\"]: {overlap}]"))
    );
    // `secrets` and `secrets.` parse to the same group/resource.
    assert_eq!(
        error(&resources("[secrets, secrets.]"), &opts()),
        parse_err("resources[0].resources: Invalid value: [\"secrets\",\"secrets.\"]: the same resource cannot be specified multiple times")
    );
    assert_eq!(
        error(
            &resources("[secrets, configmaps, deployments.apps]"),
            &opts()
        ),
        "ok"
    );
}

#[test]
fn v5_to_v10_report_the_first_failing_check_per_string() {
    let cases = [
        ("Secrets", "resource name should not contain capital letters"),
        ("*", "use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources"),
        ("servicenodeportallocations", "resources which do not have REST API/s cannot be encrypted"),
        ("*.events.k8s.io", "'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file"),
        ("deployments.extensions", "'extensions' group has been removed and cannot be used for encryption"),
        ("pods.*", "encrypting the same resource across groups is not supported"),
        // Capital letters win over the events group check.
        ("Events.events.k8s.io", "resource name should not contain capital letters"),
    ];
    for (resource, detail) in cases {
        assert_eq!(
            error(&resources(&format!("['{resource}']")), &opts()),
            parse_err(&format!(
                "resources[0].resources[0]: Invalid value: \"{resource}\": {detail}"
            )),
            "{resource}"
        );
    }
    // Accepted: core events, the empty string, custom resources.
    assert_eq!(
        error(&resources("[events, '', widgets.example.com]"), &opts()),
        "ok"
    );
}

#[test]
fn v12_null_identity_and_empty_element_name_no_provider() {
    let none = "provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity";
    let shown =
        "{\"AESGCM\":null,\"AESCBC\":null,\"Secretbox\":null,\"Identity\":null,\"KMS\":null}";
    for element in ["identity:", "{}", "aescbc: null"] {
        let yaml = doc(&format!(
            "  - resources: [secrets]\n    providers:\n      - {element}\n"
        ));
        assert_eq!(
            error(&yaml, &opts()),
            parse_err(&format!(
                "resources[0].providers[0]: Invalid value: {shown}: {none}"
            )),
            "{element}"
        );
    }
}

#[test]
fn v13_shows_defaulted_kms_and_validates_the_kms_part() {
    let yaml = doc("  - resources: [secrets]\n    providers:\n      - identity: {}\n        kms: {apiVersion: v2, name: k, endpoint: 'tcp://x'}\n");
    assert_eq!(
        error(&yaml, &opts()),
        parse_err("[resources[0].providers[0]: Invalid value: {\"AESGCM\":null,\"AESCBC\":null,\"Secretbox\":null,\"Identity\":{},\"KMS\":{\"APIVersion\":\"v2\",\"Name\":\"k\",\"CacheSize\":null,\"Endpoint\":\"tcp://x\",\"Timeout\":\"3s\"}}: more than one provider specified in a single element, should split into different list elements, resources[0].providers[0].kms.endpoint: Invalid value: \"tcp://x\": unsupported scheme \"tcp\" for KMS provider, only unix is supported]")
    );
}

#[test]
fn v15_and_v16_aggregate_per_key() {
    let yaml = doc("  - resources: [secrets]\n    providers:\n      - aesgcm:\n          keys:\n            - {name: ''}\n            - {name: b, secret: 'AAAA'}\n");
    assert_eq!(
        error(&yaml, &opts()),
        parse_err("[resources[0].providers[0].aesgcm.keys[0].name: Required value: name is a mandatory field for a key, resources[0].providers[0].aesgcm.keys[0].secret: Required value: secret is a mandatory field for a key, resources[0].providers[0].aesgcm.keys[1].secret: Invalid value: \"REDACTED\": secret is not of the expected length, got 3, expected one of [16 24 32]]")
    );
}

#[test]
fn v17_accepts_what_gos_std_encoding_accepts() {
    // Non-zero trailing bits are fine for Go's (non-strict) StdEncoding; missing padding is not.
    let trailing_bits = "BuKuVRejav77hecScfFE/YbVYxgueQD2ecqofr2r1CR=";
    let unpadded = "BuKuVRejav77hecScfFE/YbVYxgueQD2ecqofr2r1CQ";
    let with = |secret: &str| {
        doc(&format!("  - resources: [secrets]\n    providers:\n      - secretbox: {{keys: [{{name: k, secret: '{secret}'}}]}}\n"))
    };
    assert_eq!(error(&with(trailing_bits), &opts()), "ok");
    assert!(error(&with(unpadded), &opts()).ends_with("secrets must be base64 encoded"));
}

#[test]
fn v20_colons_are_allowed_in_v1_names_only() {
    assert_eq!(
        error(
            &kms("name: 'a:b', endpoint: 'unix:///k.sock'"),
            &with_gate()
        ),
        "ok"
    );
}

#[test]
fn v21_duplicate_kms_names_depend_on_version_and_reload() {
    let two = |first: &str, second: &str| {
        doc(&format!(
            "  - resources: [secrets]\n    providers:\n      - kms: {{{first}name: k, endpoint: 'unix:///a.sock'}}\n      - kms: {{{second}name: k, endpoint: 'unix:///b.sock'}}\n"
        ))
    };
    let dup = parse_err("resources[0].providers[1].kms.name: Invalid value: \"k\": duplicate KMS provider name k, names must be unique");
    // Two v1 providers may share a name unless the config is reloaded automatically.
    assert_eq!(error(&two("", ""), &with_gate()), "ok");
    assert_eq!(error(&two("", ""), &with_reload()), dup);
    // A v1 provider may reuse an earlier v2 name without reload, never the other way round.
    assert_eq!(error(&two("apiVersion: v2, ", ""), &with_gate()), "ok");
    assert_eq!(error(&two("", "apiVersion: v2, "), &with_gate()), dup);
    assert_eq!(
        error(&two("apiVersion: v2, ", "apiVersion: v2, "), &opts()),
        dup
    );
}

#[test]
fn v24_endpoint_parse_errors_use_go_url_texts() {
    assert_eq!(
        error(&kms("apiVersion: v2, name: k, endpoint: \"unix:///a\\x01\""), &opts()),
        parse_err("resources[0].providers[0].kms.endpoint: Invalid value: \"unix:///a\\x01\": invalid endpoint for kms provider, error: parse \"unix:///a\\x01\": net/url: invalid control character in URL")
    );
}

#[test]
fn v26_cachesize_is_refused_for_v2() {
    assert_eq!(
        error(&kms("apiVersion: v2, name: k, endpoint: 'unix:///a.sock', cachesize: 100"), &opts()),
        parse_err("resources[0].providers[0].kms.cachesize: Invalid value: 100: cachesize is not supported in v2")
    );
}

#[test]
fn kms_checks_run_in_upstream_order_and_aggregate() {
    let yaml = kms("apiVersion: v3, name: 'a:b', endpoint: '', timeout: 0s, cachesize: 5");
    assert_eq!(
        error(&yaml, &opts()),
        parse_err("[resources[0].providers[0].kms.name: Invalid value: \"a:b\": invalid KMS provider name a:b, must not contain ':', resources[0].providers[0].kms.timeout: Invalid value: \"0s\": timeout should be a positive value, resources[0].providers[0].kms.endpoint: Invalid value: \"\": endpoint is a mandatory field for a kms, resources[0].providers[0].kms.cachesize: Invalid value: 5: cachesize is not supported in v2, resources[0].providers[0].kms.apiVersion: Invalid value: \"v3\": unsupported apiVersion apiVersion for KMS provider, only v1 and v2 are supported]")
    );
}

#[test]
fn defaults_fill_kms_timeout_api_version_and_v1_cache() {
    let yaml = doc("  - resources: [secrets]\n    providers:\n      - kms: {name: one, endpoint: 'unix:///a.sock'}\n      - kms: {apiVersion: v2, name: two, endpoint: 'unix:///b.sock', timeout: 1m30s}\n");
    let config = load_bytes(yaml.as_bytes(), "c.yaml", &with_gate()).unwrap();
    let kms: Vec<_> = config.resources[0]
        .providers
        .iter()
        .map(|p| match p {
            ProviderConfiguration::Kms(k) => (k.api_version, k.cachesize, k.timeout.as_secs()),
            _ => panic!("not kms"),
        })
        .collect();
    assert_eq!(
        kms,
        vec![
            (KmsApiVersion::V1, Some(1000), 3),
            (KmsApiVersion::V2, None, 90)
        ]
    );
}

#[test]
fn l1_wildcards_mask_later_entries_and_exact_repeats_do_not() {
    let two = |first: &str, second: &str| {
        doc(&format!(
            "  - resources: [{first}]\n    providers: [{{identity: {{}}}}]\n  - resources: [{second}]\n    providers: [{{identity: {{}}}}]\n"
        ))
    };
    let build = |r: &str, w: &str| {
        format!(
            "error while building transformers: resource \"{r}\" is masked by earlier rule \"{w}\""
        )
    };
    assert_eq!(
        error(&two("'*.'", "secrets"), &opts()),
        build("secrets", "*.")
    );
    assert_eq!(error(&two("'*.*'", "'*.*'"), &opts()), build("*.*", "*.*"));
    assert_eq!(
        error(&two("'*.apps'", "'*.apps'"), &opts()),
        build("*.apps", "*.apps")
    );
    assert_eq!(error(&two("'*.*'", "'*.'"), &opts()), build("*.", "*.*"));
    assert_eq!(error(&two("secrets", "secrets"), &opts()), "ok");
    assert_eq!(error(&two("secrets", "'*.'"), &opts()), "ok");
    assert_eq!(error(&two("'*.apps'", "secrets"), &opts()), "ok");
}

#[test]
fn l2_is_checked_before_masking_and_after_validation() {
    let gated = doc("  - resources: ['*.*']\n    providers: [{identity: {}}]\n  - resources: [secrets]\n    providers:\n      - kms: {name: k, endpoint: 'unix:///a.sock'}\n");
    assert!(error(&gated, &opts())
        .starts_with("error while building transformers: KMSv1 is deprecated"));
    assert_eq!(
        error(&gated, &with_gate()),
        "error while building transformers: resource \"secrets\" is masked by earlier rule \"*.*\""
    );
    // A validation error wins over any building error.
    let invalid = doc("  - resources: ['*.*']\n    providers: [{identity: {}}]\n  - resources: [Secrets]\n    providers: [{identity: {}}]\n");
    assert!(
        error(&invalid, &opts()).starts_with("error while parsing file: resources[1].resources[0]")
    );
}

#[test]
fn legacy_type_pair_loads_and_other_pairs_do_not() {
    let legacy = "apiVersion: v1\nkind: EncryptionConfig\nresources:\n  - resources: [secrets]\n    providers: [{identity: {}}]\n";
    assert_eq!(error(legacy, &opts()), "ok");
    let mixed = legacy.replace("EncryptionConfig\n", "EncryptionConfiguration\n");
    assert_eq!(
        error(&mixed, &opts()),
        parse_err("error decoding encryption provider configuration file \"c.yaml\": no kind \"EncryptionConfiguration\" is registered for version \"v1\" in scheme \"pkg/runtime/scheme.go:111\"")
    );
    let admission = "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\n";
    assert_eq!(
        error(admission, &opts()),
        parse_err(
            "got unexpected config type: apiserver.config.k8s.io/v1, Kind=AdmissionConfiguration"
        )
    );
    let no_version = "kind: EncryptionConfiguration\n";
    assert_eq!(
        error(no_version, &opts()),
        parse_err("error decoding encryption provider configuration file \"c.yaml\": Object 'apiVersion' is missing in 'kind: EncryptionConfiguration\n'")
    );
}

#[test]
fn strict_decoding_reports_unknown_fields_and_type_errors() {
    let unknown = format!("{HEADER}metadata: {{name: x}}\nresources:\n  - resources: [secrets]\n    providers: [{{identity: {{}}, kms: null}}]\n    extra: 1\n");
    assert_eq!(
        error(&unknown, &opts()),
        parse_err("error decoding encryption provider configuration file \"c.yaml\": strict decoding error: unknown field \"metadata\", unknown field \"resources[0].extra\"")
    );
    // YAML 1.1: `yes` is a boolean, so it is not a valid key name (as with kube-apiserver).
    let bool_name = doc(&format!("  - resources: [secrets]\n    providers:\n      - aescbc: {{keys: [{{name: yes, secret: '{KEY32}'}}]}}\n"));
    assert_eq!(
        error(&bool_name, &opts()),
        parse_err("error decoding encryption provider configuration file \"c.yaml\": json: cannot unmarshal bool into Go struct field Key.resources.providers.aescbc.keys.name of type string")
    );
    let number_timeout = kms("apiVersion: v2, name: k, endpoint: 'unix:///a.sock', timeout: 5");
    assert_eq!(
        error(&number_timeout, &opts()),
        parse_err("error decoding encryption provider configuration file \"c.yaml\": json: cannot unmarshal number into Go value of type string")
    );
    let big_cache = kms("name: k, endpoint: 'unix:///a.sock', cachesize: 99999999999");
    assert!(error(&big_cache, &with_gate()).ends_with("json: cannot unmarshal number 99999999999 into Go struct field KMSConfiguration.resources.providers.kms.cachesize of type int32"));
}

#[test]
fn json_input_is_decoded_strictly_too() {
    let good = format!("{{\"apiVersion\":\"apiserver.config.k8s.io/v1\",\"kind\":\"EncryptionConfiguration\",\"resources\":[{{\"resources\":[\"secrets\"],\"providers\":[{{\"aesgcm\":{{\"keys\":[{{\"name\":\"k\",\"secret\":\"{KEY32}\"}}]}}}},{{\"identity\":{{}}}}]}}]}}");
    let config = load_bytes(good.as_bytes(), "c.json", &opts()).unwrap();
    assert!(matches!(
        config.resources[0].providers[0],
        ProviderConfiguration::AesGcm(_)
    ));

    let duplicated = "{\"apiVersion\":\"apiserver.config.k8s.io/v1\",\"kind\":\"EncryptionConfiguration\",\"resources\":[{\"resources\":[\"secrets\"],\"resources\":[\"configmaps\"],\"providers\":[{\"identity\":{}}],\"x\":1}]}";
    assert_eq!(
        error(duplicated, &opts()),
        parse_err("error decoding encryption provider configuration file \"c.yaml\": strict decoding error: duplicate field \"resources[0].resources\", unknown field \"resources[0].x\"")
    );
    let broken = "{\"apiVersion\": ";
    assert!(error(broken, &opts()).starts_with(&parse_err("error decoding encryption provider configuration file \"c.yaml\": couldn't get version/kind; json parse error: ")));
    // JSON has no line numbers.
    let err = load_bytes(duplicated.as_bytes(), "c.json", &opts()).unwrap_err();
    assert_eq!(err.line(), None);
}

#[test]
fn yaml_errors_carry_the_line_of_the_problem() {
    let yaml = doc(&format!(
        "  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n            - name: k\n              secret: '{KEY32}'\n            - name: short\n              secret: 'AAAA'\n"
    ));
    let err = load_bytes(yaml.as_bytes(), "c.yaml", &opts()).unwrap_err();
    assert_eq!(err.line(), Some(11));
    let problems = err.problems();
    assert_eq!(
        problems[0].field.as_deref(),
        Some("resources[0].providers[0].aescbc.keys[1].secret")
    );

    let dup = format!("{HEADER}resources:\n  - resources: [secrets]\n    providers: [{{identity: {{}}}}]\n    providers: [{{identity: {{}}}}]\n");
    let err = load_bytes(dup.as_bytes(), "c.yaml", &opts()).unwrap_err();
    assert!(err
        .to_string()
        .ends_with("yaml: unmarshal errors:\n  line 6: key \"providers\" already set in map"));
    assert_eq!(err.line(), Some(6));

    let masked = doc("  - resources: ['*.*']\n    providers: [{identity: {}}]\n  - resources:\n      - secrets\n    providers: [{identity: {}}]\n");
    let err = load_bytes(masked.as_bytes(), "c.yaml", &opts()).unwrap_err();
    assert_eq!((err.stage(), err.line()), (Stage::Build, Some(7)));
}

#[test]
fn secrets_never_appear_in_errors_or_debug_output() {
    let secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0ISE/Pz8=";
    let yaml = doc(&format!(
        "  - resources: [secrets]\n    providers:\n      - aescbc: {{keys: [{{name: k, secret: '{secret}'}}]}}\n        identity: {{}}\n      - aesgcm: {{keys: [{{name: k2, secret: '{secret}x'}}]}}\n"
    ));
    let err = load_bytes(yaml.as_bytes(), "c.yaml", &opts()).unwrap_err();
    let shown = format!("{err} {err:?} {:?}", err.problems());
    assert!(shown.contains("REDACTED"));
    assert!(!shown.contains(&secret[..20]), "{shown}");

    let ok = doc(&format!("  - resources: [secrets]\n    providers:\n      - aescbc: {{keys: [{{name: k, secret: '{KEY32}'}}]}}\n"));
    let config = load_bytes(ok.as_bytes(), "c.yaml", &opts()).unwrap();
    assert!(!format!("{config:?}").contains(&KEY32[..20]));
}

#[test]
fn file_errors_name_the_path_and_hash_covers_raw_bytes() {
    let err = load_file(std::path::Path::new("/nonexistent/enc.yaml"), &opts()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "error while parsing file: error while loading file: error reading encryption provider configuration file \"/nonexistent/enc.yaml\": open /nonexistent/enc.yaml: no such file or directory"
    );
    let dir = std::env::temp_dir();
    let err = load_file(&dir, &opts()).unwrap_err().to_string();
    assert!(
        err.ends_with(&format!("read {}: is a directory", dir.display())),
        "{err}"
    );
    let empty = load_bytes(b"", "/etc/enc.yaml", &opts()).unwrap_err();
    assert_eq!(
        empty.to_string(),
        "error while parsing file: error while loading file: encryption provider configuration file \"/etc/enc.yaml\" is empty"
    );

    let base = resources("[secrets]");
    let with_comment = format!("{base}# trailing comment\n");
    let a = load_bytes(base.as_bytes(), "a", &opts()).unwrap();
    let b = load_bytes(with_comment.as_bytes(), "b", &opts()).unwrap();
    use sha2::Digest as _;
    assert_eq!(
        a.content_hash,
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(base.as_bytes()))
        )
    );
    assert_ne!(a.content_hash, b.content_hash);
}

#[test]
fn the_missing_kind_echo_of_the_file_redacts_secrets() {
    // kube-apiserver quotes the whole file in this error, secret included; atrest redacts it.
    let yaml = format!("resources:\n  - resources: [secrets]\n    providers:\n      - aescbc: {{keys: [{{name: k, secret: '{KEY32}'}}]}}\n");
    let shown = error(&yaml, &opts());
    assert!(
        shown.contains("Object 'Kind' is missing in 'resources:\n"),
        "{shown}"
    );
    assert!(shown.contains("secret: 'REDACTED'"), "{shown}");
    assert!(!shown.contains(&KEY32[..16]), "{shown}");
}

#[test]
fn json_floats_are_not_integers() {
    let json = "{\"apiVersion\":\"apiserver.config.k8s.io/v1\",\"kind\":\"EncryptionConfiguration\",\"resources\":[{\"resources\":[\"secrets\"],\"providers\":[{\"kms\":{\"name\":\"k\",\"endpoint\":\"unix:///a.sock\",\"cachesize\":100.5}}]}]}";
    assert!(error(json, &with_gate()).contains("cannot unmarshal number 100.5 into Go struct field KMSConfiguration.resources.providers.kms.cachesize of type int32"));
    // In YAML, 100.0 is a float that Go's YAML-to-JSON step prints as 100.
    assert_eq!(
        error(
            &kms("name: k, endpoint: 'unix:///a.sock', cachesize: 100.0"),
            &with_gate()
        ),
        "ok"
    );
}

#[test]
fn the_missing_kind_echo_redacts_secrets_written_with_escapes() {
    // JSON may escape `/` as `\/`: the decoded secret then differs from its written form.
    let escaped = KEY32.replace('/', "\\/");
    let json = format!("{{\"resources\":[{{\"resources\":[\"secrets\"],\"providers\":[{{\"aescbc\":{{\"keys\":[{{\"name\":\"k\",\"secret\":\"{escaped}\"}}]}}}}]}}]}}");
    let shown = error(&json, &opts());
    assert!(
        shown.contains("Object 'Kind' is missing in '{\"resources\""),
        "{shown}"
    );
    assert!(shown.contains("\"secret\":\"REDACTED\"}"), "{shown}");
    assert!(!shown.contains(&KEY32[..10]), "{shown}");
}
