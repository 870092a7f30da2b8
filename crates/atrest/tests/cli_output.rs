//! One convention for every command that reports: `-o json|yaml` is one document on stdout
//! (`kms status`, `kms list`, `kms bench`, `snapshot info`), durations take `500ms`/`3s`/`2m` (a bare
//! number is seconds), tables print plain values.

mod cli_common;
use cli_common::atrest;

mod snapshot_common;

use std::path::Path;
use std::process::Output;

use atrest_testkit::KmsPlugin;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {}", text(&out.stdout)))
}

#[test]
fn kms_commands_print_one_document() {
    let plugin = KmsPlugin::start(Path::new(env!("CARGO_BIN_EXE_atrest")), &[]);
    let ks = plugin.key_store.to_str().unwrap();

    let list = json(&atrest(&["kms", "list", "--key-store", ks, "-o", "json"]));
    assert_eq!(list["keys"][0]["version"], 1);
    assert_eq!(list["keys"][0]["role"], "primary");
    let key_id = list["keys"][0]["key_id"].as_str().unwrap().to_string();

    for timeout in ["500ms", "3s", "2"] {
        let status = json(&atrest(&[
            "kms",
            "status",
            "--endpoint",
            &plugin.endpoint,
            "--timeout",
            timeout,
            "-o",
            "json",
        ]));
        assert_eq!(status["key_id"], key_id.as_str());
        assert_eq!(status["healthz"], "ok");
    }
    let out = atrest(&[
        "kms",
        "status",
        "--endpoint",
        &plugin.endpoint,
        "-o",
        "yaml",
    ]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains(&format!("key_id: {key_id}\n")),
        "{}",
        text(&out.stdout)
    );

    let bench = json(&atrest(&[
        "kms",
        "bench",
        "--endpoint",
        &plugin.endpoint,
        "--duration",
        "200ms",
        "-o",
        "json",
    ]));
    let results = bench["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{bench}");
    assert!(
        results.iter().all(|r| r["calls"].as_u64().unwrap() > 0),
        "{bench}"
    );
}

#[test]
fn durations_are_checked_with_one_parser() {
    for (flag, value) in [
        ("--timeout", "5x"),
        ("--timeout", "0s"),
        ("--duration", "soon"),
    ] {
        let sub = if flag == "--duration" {
            "bench"
        } else {
            "status"
        };
        let out = atrest(&[
            "kms",
            sub,
            "--endpoint",
            "unix:///nonexistent.sock",
            flag,
            value,
        ]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("invalid value '{value}' for '{flag} ")),
            "{err}"
        );
    }
    let out = atrest(&["status", "--config", "x.yaml", "--dial-timeout", "1x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("invalid duration unit in \"1x\" (use ms, s, m or h)"));
}

#[test]
fn snapshot_info_table_prints_plain_values() {
    let (_dir, snap) = snapshot_common::make_snapshot(10, 16, &[]);
    let out = atrest(&["snapshot", "info", snap.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(!table.contains('"'), "{table}");
    assert!(table.contains("checksum             verified\n"), "{table}");
    assert!(
        table.contains(&format!("file                 {}\n", snap.display())),
        "{table}"
    );
    let doc = json(&atrest(&[
        "snapshot",
        "info",
        snap.to_str().unwrap(),
        "-o",
        "json",
    ]));
    assert_eq!(doc["checksum"], "verified");
    let out = atrest(&["snapshot", "info", snap.to_str().unwrap(), "-o", "yaml"]);
    assert!(
        text(&out.stdout).contains("checksum: verified\n"),
        "{}",
        text(&out.stdout)
    );
}
