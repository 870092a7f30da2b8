//! The "done when": a two-apiserver rotation from aescbc to aesgcm where node B receives
//! every config 70 s after node A, `rotate apply` is SIGKILLed once (while waiting for B to load
//! promote) and rerun; it exits 0 with every object under the new key, the old key gone from both
//! configs, both apiservers reporting the final config, and no client read or write through either
//! apiserver failing meanwhile; it then compacts etcd and ends with an encrypted backup verified
//! with the retire config alone. Takes about four minutes (three 70 s waits).

mod rotate_common;

use std::time::Duration;

use rotate_common::*;

#[test]
fn aescbc_to_aesgcm_with_a_node_70s_late_and_a_sigkill() {
    let cp = ControlPlane::start(2, &aescbc_config());
    let urls = cp.urls();
    seed(&urls[0], "app", 100);
    let out = cp.plan(&["--provider=aesgcm"]);
    assert!(
        stdout(&out).contains("aescbc key1 → aesgcm key-"),
        "{}",
        stdout(&out)
    );
    let retire_hash = cp.planned_hash("retire");

    let client = ClientLoop::start(urls.clone(), "app", 100);
    let mut args = cp.apply_args("5m");
    args.push(format!(
        "--install={}",
        cp.install_cmd(&[Some(0), Some(70)])
    ));
    // Ending with compaction and an encrypted backup that needs no escrowed key.
    let (backup, flags) = backup_flags(cp.dir.path(), "after-rotation.db.age");
    args.push("--compact".into());
    args.extend(flags);

    // First run: killed once promote is installed (A has it, B gets it 70 s later).
    let mut first = spawn(&args);
    wait_until("promote installed", Duration::from_secs(150), || {
        cp.done().contains(&"promote_installed".to_string())
    });
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    assert!(
        !cp.done().contains(&"promote_loaded".to_string()),
        "B cannot have loaded promote yet"
    );
    // The rewrite waits for the gate: the seeded objects are still under the old key.
    for (key, value) in cp.stored_secrets() {
        if key.contains("/s-") {
            assert!(
                value.starts_with(b"k8s:enc:aescbc:v1:key1:"),
                "{key} rewritten too early"
            );
        }
    }

    // Rerun: continues with the wait (no reinstall of promote), rewrites, retires.
    let second = atrest_cmd()
        .args(&args)
        .arg("-o=json")
        .output()
        .expect("rerun");
    let failures = client.finish();
    assert_eq!(
        second.status.code(),
        Some(0),
        "rerun failed:\n{}",
        stderr(&second)
    );
    assert!(
        failures.is_empty(),
        "client requests failed during the rotation: {failures:#?}"
    );

    let summary: serde_json::Value =
        serde_json::from_slice(&second.stdout).expect("one JSON document");
    assert_eq!(summary["finished"], true);
    assert_eq!(summary["retired_keys"][0], "aescbc key1");
    assert_eq!(summary["backup"]["verified"], true, "{summary}");
    assert_eq!(
        summary["backup"]["history_under_retired_keys"], 0,
        "compacted first: {summary}"
    );
    assert!(summary["backup"]["objects"].as_u64().unwrap() >= 100);
    assert_eq!(mode(&backup), 0o600);
    assert_eq!(
        cp.installed_steps(),
        ["stage", "promote", "retire"],
        "each config installed once"
    );

    // Every object under the new key; the old key gone from both nodes; both report retire.
    let stored = cp.stored_secrets();
    assert!(stored.len() >= 100);
    for (key, value) in &stored {
        assert!(
            value.starts_with(b"k8s:enc:aesgcm:v1:key-"),
            "{key} not under the new key"
        );
    }
    let retire = std::fs::read(cp.plan_dir().join("retire.yaml")).unwrap();
    assert!(!String::from_utf8_lossy(&retire).contains("key1"));
    for (node, api) in cp.nodes.iter().zip(&cp.apiservers) {
        assert_eq!(
            std::fs::read(node).unwrap(),
            retire,
            "{} has the retire config",
            node.display()
        );
        assert_eq!(api.loaded_hash(), retire_hash);
    }
    let escrow = cp.plan_dir().join("escrow.yaml");
    assert_eq!(mode(&escrow), 0o600);
    assert!(std::fs::read_to_string(&escrow)
        .unwrap()
        .contains("name: key1"));
    // Reads through both apiservers work with the retire config alone.
    for url in &urls {
        let (code, _) =
            atrest_testkit::http(url, "GET", "/api/v1/namespaces/app/secrets", b"").unwrap();
        assert_eq!(code, 200);
    }
}
