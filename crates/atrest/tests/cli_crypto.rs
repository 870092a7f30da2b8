//! `atrest encrypt | decrypt | keygen | bench` end to end, through the real binary; `/dev/zero` as
//! the input of every command that reads a whole file or stdin.

mod cli_common;
use cli_common::atrest_stdin as atrest;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

const KEY: &str = "/registry/secrets/default/s1";

fn config_file(dir: &Path, name: &str, providers: &str) -> PathBuf {
    let path = dir.join(name);
    let yaml = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources:\n      - secrets\n    providers:\n{providers}"
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

fn keyed(provider: &str, name: &str, secret: &[u8]) -> String {
    format!("      - {provider}:\n          keys:\n            - name: {name}\n              secret: {}\n", B64.encode(secret))
}

fn crypto_args<'a>(op: &'a str, config: &'a Path) -> Vec<&'a str> {
    vec![
        op,
        "--config",
        config.to_str().unwrap(),
        "--resource",
        "secrets",
        "--etcd-key",
        KEY,
    ]
}

fn assert_failed(out: &Output, stderr_contains: &str) {
    assert!(!out.status.success(), "expected failure");
    assert!(out.stdout.is_empty(), "nothing on stdout on failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(stderr_contains), "stderr: {stderr}");
}

#[test]
fn round_trip_per_provider() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "aescbc",
            keyed("aescbc", "k1", &[1; 16]),
            "k8s:enc:aescbc:v1:k1:",
        ),
        (
            "aesgcm",
            keyed("aesgcm", "k1", &[2; 24]),
            "k8s:enc:aesgcm:v1:k1:",
        ),
        (
            "secretbox",
            keyed("secretbox", "k1", &[3; 32]),
            "k8s:enc:secretbox:v1:k1:",
        ),
        ("identity", "      - identity: {}\n".to_string(), ""),
    ];
    let plaintext = b"k8s\x00\x0a\x0csome secret bytes\xff\x00";
    for (name, providers, prefix) in cases {
        let config = config_file(dir.path(), &format!("{name}.yaml"), &providers);
        let enc = atrest(&crypto_args("encrypt", &config), plaintext);
        assert!(
            enc.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&enc.stderr)
        );
        assert!(enc.stdout.starts_with(prefix.as_bytes()), "{name}");
        let dec = atrest(&crypto_args("decrypt", &config), &enc.stdout);
        assert!(
            dec.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&dec.stderr)
        );
        assert_eq!(dec.stdout, plaintext, "{name}");
        let stderr = String::from_utf8_lossy(&dec.stderr);
        assert!(
            stderr.contains(&format!("read by {name}")) && stderr.contains("stale: no"),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn decrypt_reports_json_and_staleness() {
    let dir = tempfile::tempdir().unwrap();
    let old = config_file(dir.path(), "old.yaml", &keyed("aesgcm", "old", &[4; 32]));
    let rotated = config_file(
        dir.path(),
        "rotated.yaml",
        &(keyed("aesgcm", "new", &[5; 32]) + &keyed("aesgcm", "old", &[4; 32])),
    );
    let mut args = crypto_args("encrypt", &old);
    args.push("--output-base64");
    let enc = atrest(&args, b"value");
    assert!(enc.status.success());
    let mut args = crypto_args("decrypt", &rotated);
    args.extend(["--input-base64", "-o", "json"]);
    let dec = atrest(&args, &enc.stdout);
    assert!(
        dec.status.success(),
        "{}",
        String::from_utf8_lossy(&dec.stderr)
    );
    // One document on stdout: the report and the plaintext (base64); nothing on stderr.
    let report: serde_json::Value = serde_json::from_slice(&dec.stdout).unwrap();
    assert_eq!(report["plaintext"], "dmFsdWU=");
    assert!(
        dec.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&dec.stderr)
    );
    assert_eq!(report["provider"], "aesgcm");
    assert_eq!(report["provider_index"], 1);
    assert_eq!(report["key_name"], "old");
    assert_eq!(report["stale"], true);
}

#[test]
fn decrypts_a_value_written_by_kube_apiserver() {
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors");
    let line = std::fs::read_to_string(vectors.join("aesgcm.jsonl"))
        .unwrap()
        .lines()
        .nth(5)
        .unwrap()
        .to_string();
    let record: serde_json::Value = serde_json::from_str(&line).unwrap();
    let config = vectors.join(record["config"].as_str().unwrap());
    let args = [
        "decrypt",
        "--config",
        config.to_str().unwrap(),
        "--resource",
        record["resource"].as_str().unwrap(),
        "--etcd-key",
        record["etcd_key"].as_str().unwrap(),
        "--input-base64",
        "--output-base64",
    ];
    let dec = atrest(&args, record["stored_b64"].as_str().unwrap().as_bytes());
    assert!(
        dec.status.success(),
        "{}",
        String::from_utf8_lossy(&dec.stderr)
    );
    assert_eq!(
        String::from_utf8(dec.stdout).unwrap().trim(),
        record["plaintext_b64"].as_str().unwrap()
    );
}

#[test]
fn failures_exit_non_zero_with_empty_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let good = config_file(dir.path(), "good.yaml", &keyed("aesgcm", "k", &[6; 32]));
    let wrong = config_file(dir.path(), "wrong.yaml", &keyed("aesgcm", "k", &[7; 32]));
    let enc = atrest(&crypto_args("encrypt", &good), b"value");
    assert!(enc.status.success());

    assert_failed(
        &atrest(&crypto_args("decrypt", &wrong), &enc.stdout),
        "cipher: message authentication failed",
    );
    assert_failed(
        &atrest(&crypto_args("decrypt", &good), &enc.stdout[..30]),
        "the stored data was shorter than the required size",
    );
    let mut other_key = crypto_args("decrypt", &good);
    other_key[6] = "/registry/secrets/default/other";
    assert_failed(
        &atrest(&other_key, &enc.stdout),
        "cipher: message authentication failed",
    );
    assert_failed(
        &atrest(&crypto_args("decrypt", &good), b"plain"),
        "no matching prefix found",
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources: []\n",
    )
    .unwrap();
    assert_failed(&atrest(&crypto_args("encrypt", &bad), b"value"), "bad.yaml");
    let missing = dir.path().join("missing.yaml");
    assert_failed(
        &atrest(&crypto_args("encrypt", &missing), b"value"),
        "missing.yaml",
    );
    let mut bad_b64 = crypto_args("decrypt", &good);
    bad_b64.push("--input-base64");
    assert_failed(&atrest(&bad_b64, b"%%%"), "base64");
}

#[test]
fn keygen_makes_usable_keys() {
    let out = atrest(&["keygen", "--provider", "aesgcm", "--size", "16"], b"");
    assert!(out.status.success());
    assert_eq!(
        B64.decode(String::from_utf8(out.stdout).unwrap().trim())
            .unwrap()
            .len(),
        16
    );
    let a = atrest(&["keygen", "--provider", "secretbox"], b"").stdout;
    let b = atrest(&["keygen", "--provider", "secretbox"], b"").stdout;
    assert_ne!(a, b);
    assert_failed(
        &atrest(&["keygen", "--provider", "secretbox", "--size", "24"], b""),
        "32 bytes",
    );

    let snippet = atrest(
        &[
            "keygen",
            "--provider",
            "aescbc",
            "--name",
            "fresh",
            "-o",
            "yaml",
        ],
        b"",
    );
    assert!(snippet.status.success());
    let snippet = String::from_utf8(snippet.stdout).unwrap();
    let indented: String = snippet.lines().map(|l| format!("      {l}\n")).collect();
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "gen.yaml", &indented);
    let enc = atrest(&crypto_args("encrypt", &config), b"v");
    assert!(
        enc.status.success(),
        "{}\n{snippet}",
        String::from_utf8_lossy(&enc.stderr)
    );
    assert!(enc.stdout.starts_with(b"k8s:enc:aescbc:v1:fresh:"));
}

#[test]
fn bench_json_rows() {
    let out = atrest(&["bench", "-o", "json", "--duration-ms", "2"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    // provider × size × (encrypt, decrypt, encrypt+decrypt)
    assert_eq!(rows.len(), 6 * 2 * 3);
    for row in &rows {
        assert!(row["ns_per_op"].as_f64().unwrap() > 0.0);
        assert!(row["mb_per_s"].as_f64().unwrap() > 0.0);
        assert!([1024, 65536].contains(&row["size"].as_u64().unwrap()));
    }
    for both in rows.iter().filter(|r| r["op"] == "encrypt+decrypt") {
        let ns = |op: &str| {
            rows.iter()
                .find(|r| {
                    r["op"] == op && r["provider"] == both["provider"] && r["size"] == both["size"]
                })
                .unwrap()["ns_per_op"]
                .as_f64()
                .unwrap()
        };
        let sum = ns("encrypt") + ns("decrypt");
        assert!(
            (both["ns_per_op"].as_f64().unwrap() - sum).abs() < 1e-6 * sum,
            "{both}"
        );
    }
    let providers: std::collections::BTreeSet<&str> = rows
        .iter()
        .map(|r| r["provider"].as_str().unwrap())
        .collect();
    assert_eq!(
        providers.into_iter().collect::<Vec<_>>(),
        [
            "aescbc",
            "aesgcm",
            "identity",
            "kmsv1",
            "kmsv2",
            "secretbox"
        ]
    );
}

/// `atrest version` and `--version` say whether the AWS-LC FIPS module is in use (it is exactly
/// in a `--features fips` build).
#[test]
fn version_reports_the_fips_module() {
    let fips = cfg!(feature = "fips");
    let out = atrest(&["version", "-o", "json"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["fips_build"], fips);
    assert_eq!(v["fips_mode"], fips);
    assert_eq!(v["secretbox_writes"], !fips);
    assert!(
        v["crypto_module"].as_str().unwrap().starts_with("AWS-LC"),
        "{v}"
    );

    let out = atrest(&["--version"], b"");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.starts_with(&format!("atrest {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert_eq!(text.contains("(FIPS: AWS-LC FIPS module"), fips, "{text}");
    assert_eq!(text.contains("(not FIPS: AWS-LC"), !fips, "{text}");
    let out = atrest(&["version"], b"");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains(if fips { "fips: yes" } else { "fips: no" }),
        "{text}"
    );
}

/// A FIPS build refuses to write secretbox (with the reason) but reads it, and `config check`
/// still says `ok` (kube-apiserver loads the file) with a note on stderr; a regular build writes
/// secretbox and has no note.
#[test]
fn secretbox_is_read_only_in_fips_builds() {
    let fips = cfg!(feature = "fips");
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        "sb.yaml",
        &keyed("secretbox", "k1", b"abcdefghijklmnopqrstuvwxyz123456"),
    );
    // WIRE-FORMAT.md §8.3's worked example under the key name k1.
    let mut stored = b"k8s:enc:secretbox:v1:k1:".to_vec();
    stored.extend(
        hex::decode("000102030405060708090a0b0c0d0e0f1011121314151617d91339b7d465944ccb12f14f037c0c6a7ecdffa1690602b73c")
            .unwrap(),
    );
    let dec = atrest(&crypto_args("decrypt", &config), &stored);
    assert_eq!(
        dec.stdout,
        b"k8s\x00hello",
        "{}",
        String::from_utf8_lossy(&dec.stderr)
    );

    let enc = atrest(&crypto_args("encrypt", &config), b"k8s\x00new");
    let check = atrest(&["config", "check", config.to_str().unwrap()], b"");
    assert!(check.status.success());
    assert_eq!(check.stdout, b"ok\n");
    let note = String::from_utf8_lossy(&check.stderr);
    if fips {
        assert_failed(&enc, "secretbox writes are refused in this FIPS build");
        assert!(
            note.contains("resources[0]") && note.contains("FIPS build"),
            "{note}"
        );
    } else {
        assert!(
            enc.status.success(),
            "{}",
            String::from_utf8_lossy(&enc.stderr)
        );
        assert!(enc.stdout.starts_with(b"k8s:enc:secretbox:v1:k1:"));
        assert!(!note.contains("FIPS"), "{note}");
    }
}

/// Runs `atrest ARGS` with stdin from `/dev/zero` (a real endless file) under a 1 GiB address
/// space limit: reading without a bound would fail to allocate instead of giving our message.
fn from_dev_zero(args: &[&str]) -> Output {
    let zero = std::fs::File::open("/dev/zero").unwrap();
    Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 1048576 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_atrest"))
        .args(args)
        .stdin(zero)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn dev_zero_inputs_stop_at_the_size_cap_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "c.yaml", &keyed("aescbc", "k1", &[1; 32]));
    let stdin_cap = "stdin is larger than 67108864 bytes";
    for op in ["encrypt", "decrypt"] {
        let out = from_dev_zero(&crypto_args(op, &config));
        assert_eq!(out.status.code(), Some(1), "{op}: {out:?}");
        assert_failed(&out, stdin_cap);
    }
    let out = from_dev_zero(&["decode"]);
    assert_eq!(out.status.code(), Some(1), "decode: {out:?}");
    assert_failed(&out, stdin_cap);
    let out = from_dev_zero(&[
        "decode",
        "--config",
        config.to_str().unwrap(),
        "--etcd-key",
        KEY,
        "--input-base64",
    ]);
    assert_failed(&out, stdin_cap);

    // A backup that is no age file and has no line break: refused at the header bound.
    let key = dir.path().join("backup.key");
    let out = atrest(&["backup", "keygen", "-o", key.to_str().unwrap()], b"");
    assert!(out.status.success(), "{out:?}");
    let out = from_dev_zero(&["backup", "decrypt", "--identity", key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "backup decrypt: {out:?}");
    assert_failed(&out, "decrypting stdin failed");
    assert_failed(&out, "no age header line at the start of the input");

    let out = from_dev_zero(&["config", "check", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(1), "config check: {out:?}");
    // The verdict is the report, on stdout.
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.starts_with("/dev/zero: error while parsing file: error while loading file: error reading encryption provider configuration file \"/dev/zero\": read /dev/zero: file is larger than 67108864 bytes"),
        "{report}"
    );
}
