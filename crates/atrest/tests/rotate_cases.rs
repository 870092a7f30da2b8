//! `rotate apply` / `rotate status` against a real etcd and two apiserver stand-ins: an apiserver
//! that never converges, unreadable values blocking retire, SIGKILL after every milestone, a
//! rerun after completion, and a live apiserver missing from `--apiserver`.

mod rotate_common;

use std::time::Duration;

use rotate_common::*;

fn state_json(cp: &ControlPlane) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(cp.plan_dir().join("state.json")).unwrap()).unwrap()
}

fn status(cp: &ControlPlane) -> std::process::Output {
    atrest(&cp.status_args(&["-o=json".into()]))
}

#[test]
fn an_apiserver_that_never_converges_times_out_with_nothing_half_done() {
    let cp = ControlPlane::start(2, &aescbc_config());
    seed(&cp.urls()[0], "app", 20);
    cp.plan(&[]);
    let mut args = cp.apply_args("3s");
    args.push(format!("--install={}", cp.install_cmd(&[Some(0), None])));
    let out = atrest(&args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("timed out"), "{err}");
    assert!(
        err.contains(cp.apiservers[1].url()),
        "names the lagging apiserver: {err}"
    );
    assert!(err.contains("(CURRENT)"), "says what it reports: {err}");
    assert_eq!(cp.done(), ["stage_installed"]);
    assert_eq!(cp.installed_steps(), ["stage"], "promote never installed");
    for (key, value) in cp.stored_secrets() {
        assert!(
            value.starts_with(b"k8s:enc:aescbc:v1:key1:"),
            "{key} was touched"
        );
    }
    let st = status(&cp);
    assert_eq!(st.status.code(), Some(3), "in progress: {}", stdout(&st));
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["apiservers"][0]["step"], "stage");
    assert_eq!(v["apiservers"][1]["step"], "CURRENT");
    assert_eq!(v["apiservers"][1]["reads_new_key"], false);
}

#[test]
fn unreadable_values_block_retire_until_removed() {
    let cp = ControlPlane::start(2, &aescbc_config());
    seed(&cp.urls()[0], "app", 20);
    // A value written with a key no config of the plan has.
    let ghost = aescbc_config()
        .replace("key1", "ghost")
        .replace(KEY1, "Z2hvc3RnaG9zdGdob3N0Z2hvc3RnaG9zdGdob3N0MTI=");
    let (key, stored) = stored_with(&ghost, "app", "ghost");
    let key = key.as_str();
    let client = atrest_testkit::load::TestClient::connect(&cp.etcd);
    client.put(key, &stored);
    // One more whose etcd key carries a terminal escape: tables and errors show it escaped.
    let (evil, stored_evil) = stored_with(&ghost, "app", "evil\x1b]0;pwned\x07");
    let evil = evil.as_str();
    client.put(evil, &stored_evil);

    cp.plan(&["--provider=secretbox"]);
    let mut args = cp.apply_args("30s");
    args.push(format!("--install={}", cp.install_cmd(&[Some(0), Some(0)])));
    let out = atrest(&args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("retire blocked"), "{err}");
    assert!(
        err.contains("2 secrets under aescbc ghost"),
        "grouped by stored key: {err}"
    );
    assert!(err.contains(key), "{err}");
    assert!(
        !err.contains('\x1b') && err.contains("evil\\x1b]0;pwned\\x07"),
        "escaped: {err}"
    );
    assert_eq!(
        cp.installed_steps(),
        ["stage", "promote"],
        "retire not installed"
    );
    assert!(!cp.done().contains(&"verified".to_string()));
    let st = status(&cp);
    assert_eq!(st.status.code(), Some(1), "blocked: {}", stdout(&st));
    let st = atrest(&cp.status_args(&[]));
    assert_eq!(st.status.code(), Some(1));
    let text = stdout(&st);
    assert!(
        !text.contains('\x1b') && text.contains("evil\\x1b]0;pwned\\x07"),
        "escaped: {text}"
    );

    // Once the objects are gone the same command finishes.
    client.block_on(async {
        let mut c = client.client();
        c.delete(key, None).await.unwrap();
        c.delete(evil, None).await.unwrap();
    });
    let out = atrest(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(cp.installed_steps(), ["stage", "promote", "retire"]);
    for (k, v) in cp.stored_secrets() {
        assert!(v.starts_with(b"k8s:enc:secretbox:v1:key-"), "{k}");
    }
}

#[test]
fn sigkill_after_every_milestone_then_rerun_after_completion() {
    let cp = ControlPlane::start(2, &aescbc_config());
    seed(&cp.urls()[0], "app", 50);
    cp.plan(&[]); // a new aescbc key
    let client = ClientLoop::start(cp.urls(), "app", 50);
    let mut args = cp.apply_args("60s");
    args.push("--compact".into());
    args.push(format!("--install={}", cp.install_cmd(&[Some(0), Some(1)])));
    // The kill right after `finished` lands just before or in the backup (recorded, streaming,
    // verifying).
    let (backup, flags) = backup_flags(cp.dir.path(), "etcd.db.age");
    args.extend(flags);
    let mut kills = 0;
    loop {
        let before = cp.done().len();
        let mut child = spawn(&args);
        // Kill as soon as one more milestone is recorded (or let it end).
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "apply failed after {kills} kills");
                break;
            }
            if cp.done().len() > before {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if cp.done().contains(&"finished".to_string()) {
            break;
        }
        assert!(kills < 20, "no progress: {:?}", cp.done());
    }
    let failures = client.finish();
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(kills >= 5, "killed at most milestones ({kills})");
    // Install ran at most twice per step (a kill between CMD and its record), in order.
    let steps = cp.installed_steps();
    let mut dedup = steps.clone();
    dedup.dedup();
    assert_eq!(dedup, ["stage", "promote", "retire"], "{steps:?}");
    let retire_hash = cp.planned_hash("retire");
    for api in &cp.apiservers {
        assert_eq!(api.loaded_hash(), retire_hash);
    }
    for (k, v) in cp.stored_secrets() {
        assert!(v.starts_with(b"k8s:enc:aescbc:v1:key-"), "{k}");
    }
    let state = state_json(&cp);
    assert!(
        state["compacted_revision"].as_i64().unwrap() > state["rewrite_revision"].as_i64().unwrap()
    );
    assert_eq!(mode(&cp.plan_dir().join("state.json")), 0o600);

    // Whatever the kill interrupted, a FILE is there only as a verified backup or as one the next
    // run replaces; the next run ends with a verified backup.
    let backup_state = || state_json(&cp)["backup"].clone();
    if backup.exists() && backup_state()["verified"] != true {
        assert_eq!(backup_state()["path"], backup.display().to_string());
    }
    let out = atrest(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(backup_state()["verified"], true, "{}", stderr(&out));
    assert_eq!(mode(&backup), 0o600);

    // A finished rotation reruns as a no-op.
    let installs = cp.installed_steps().len();
    let out = atrest(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("already; nothing done"),
        "{}",
        stdout(&out)
    );
    assert_eq!(cp.installed_steps().len(), installs);
    let st = status(&cp);
    assert_eq!(st.status.code(), Some(0), "{}", stdout(&st));
}

#[test]
fn a_live_apiserver_missing_from_the_flags_is_refused() {
    let cp = ControlPlane::start(2, &aescbc_config());
    cp.plan(&[]);
    let mut args = cp.apply_args("10s");
    args.retain(|a| a != &format!("--apiserver={}", cp.apiservers[1].url()));
    args.push(format!("--install={}", cp.install_cmd(&[Some(0), Some(0)])));
    let out = atrest(&args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(cp.apiservers[1].id()),
        "names the unwatched lease: {err}"
    );
    assert!(err.contains("master-1"), "{err}");
    assert!(cp.installed_steps().is_empty(), "nothing installed");
}

#[test]
fn guards_in_rewrite_config_check_and_status() {
    let cp = ControlPlane::start(2, &aescbc_config());
    seed(&cp.urls()[0], "app", 12);
    cp.plan(&["--provider=aesgcm"]);
    let plan = cp.plan_dir();
    let retire = plan.join("retire.yaml");
    let endpoints = format!("--endpoints={}", cp.etcd.endpoint());

    // A candidate that lacks key1: grouped by the key of the stored prefix, not per object.
    let out = atrest(&[
        "config".into(),
        "check".into(),
        retire.display().to_string(),
        endpoints.clone(),
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("12 secrets under aescbc key1: not in this config"),
        "{}",
        stdout(&out)
    );
    let out = atrest(&[
        "status".into(),
        endpoints.clone(),
        format!("--config={}", retire.display()),
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stdout(&out).contains("12 secrets under aescbc key1: not in this config"),
        "{}",
        stdout(&out)
    );
    let out = atrest(&[
        "config".into(),
        "check".into(),
        plan.join("promote.yaml").display().to_string(),
        endpoints.clone(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // rewrite --apiserver refuses while an apiserver has not loaded the config being written.
    std::fs::copy(plan.join("promote.yaml"), &cp.nodes[0]).unwrap();
    let want = cp.planned_hash("promote");
    wait_until("node 0 on promote", Duration::from_secs(20), || {
        cp.apiservers[0].loaded_hash() == want
    });
    let rewrite = |dir: &std::path::Path| {
        let mut args = vec![
            "rewrite".to_string(),
            endpoints.clone(),
            format!("--config={}", plan.join("promote.yaml").display()),
            format!("--checkpoint={}", dir.join("cp.json").display()),
        ];
        for u in cp.urls() {
            args.push(format!("--apiserver={u}"));
        }
        atrest(&args)
    };
    let out = rewrite(cp.dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(cp.apiservers[1].url()),
        "{}",
        stderr(&out)
    );
    for (k, v) in cp.stored_secrets() {
        assert!(
            v.starts_with(b"k8s:enc:aescbc:v1:key1:"),
            "{k} written although refused"
        );
    }
    std::fs::copy(plan.join("promote.yaml"), &cp.nodes[1]).unwrap();
    wait_until("node 1 on promote", Duration::from_secs(20), || {
        cp.apiservers[1].loaded_hash() == want
    });
    let out = rewrite(cp.dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (k, v) in cp.stored_secrets() {
        assert!(v.starts_with(b"k8s:enc:aesgcm:v1:key-"), "{k}");
    }
}

#[test]
fn backup_after_retire_is_encrypted_verified_offline_and_resumable() {
    let cp = ControlPlane::start(2, &aescbc_config());
    seed(&cp.urls()[0], "app", 10);
    cp.plan(&["--provider=aesgcm"]);
    let mut args = cp.apply_args("30s");
    args.push(format!("--install={}", cp.install_cmd(&[Some(0), Some(0)])));
    let out = atrest(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // A value only the retired key1 can read, written behind the apiservers' back: a backup of
    // etcd now would need the escrowed key, so it must not pass as verified.
    let (key, stored) = stored_with(&aescbc_config(), "app", "behind-the-back");
    let key = key.as_str();
    assert!(stored.starts_with(b"k8s:enc:aescbc:v1:key1:"));
    let client = atrest_testkit::load::TestClient::connect(&cp.etcd);
    client.put(key, &stored);

    let file = cp.dir.path().join("etcd.db.age");
    let (identity, recipient) = age_identity(cp.dir.path());
    let mut with_backup = args.clone();
    with_backup.push(format!("--backup={}", file.display()));
    with_backup.push(format!("--recipient={recipient}"));
    // Without a way to open it, the backup could not be verified: refused before anything.
    let out = atrest(&with_backup);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--backup-identity"),
        "{}",
        stderr(&out)
    );
    assert!(!file.exists());
    with_backup.push(format!("--backup-identity={}", identity.display()));
    let out = atrest(&with_backup);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("backup verification failed"), "{err}");
    assert!(err.contains(key), "names the key: {err}");
    assert!(!file.exists(), "an unverified backup is not left behind");
    let entries: Vec<_> = std::fs::read_dir(cp.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !entries.iter().any(|n| n.contains("atrest-backup")),
        "no temp file: {entries:?}"
    );

    // Without that value the backup verifies.
    client.block_on(async {
        let mut c = client.client();
        c.delete(key, None).await.unwrap();
    });
    with_backup.push("-o=json".into());
    let out = atrest(&with_backup);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["no_op"], false);
    assert_eq!(v["backup"]["verified"], true, "{v}");
    assert_eq!(v["backup"]["path"], file.display().to_string());
    assert!(v["backup"]["objects"].as_u64().unwrap() >= 10, "{v}");
    assert_eq!(v["backup"]["recipients"][0], recipient.as_str());
    // Not compacted: the seeded objects' key1 revisions (and the deleted value) are history.
    assert!(
        v["backup"]["history_under_retired_keys"].as_u64().unwrap() >= 11,
        "{v}"
    );
    assert!(
        v["backups_needing_escrow"]
            .as_str()
            .unwrap()
            .contains("needs them only for"),
        "{v}"
    );
    assert_eq!(mode(&file), 0o600);
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"), "encrypted");
    assert!(
        !bytes.windows(17).any(|w| w == b"/registry/secrets"),
        "no etcd key in clear"
    );
    let sha = v["backup"]["sha256"].as_str().unwrap().to_string();
    assert_eq!(sha, atrest_core::config::content_hash(&bytes));
    let st = status(&cp);
    assert_eq!(st.status.code(), Some(0), "{}", stdout(&st));
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["backup"]["sha256"], sha.as_str(), "{st}");

    // Independently: the file decrypts, and the snapshot inside reads with retire.yaml alone.
    let plain = cp.dir.path().join("plain.db");
    let out = atrest(&[
        "backup".into(),
        "decrypt".into(),
        format!("--identity={}", identity.display()),
        format!("--input={}", file.display()),
        format!("--output={}", plain.display()),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = atrest(&[
        "snapshot".into(),
        "status".into(),
        plain.display().to_string(),
        format!("--config={}", cp.plan_dir().join("retire.yaml").display()),
        "--verify".into(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // A rerun after a verified backup is a no-op: FILE is untouched.
    let out = atrest(&with_backup);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["no_op"], true);
    assert_eq!(again["backup"]["sha256"], sha.as_str());
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
    let mut as_text = with_backup.clone();
    as_text.retain(|a| a != "-o=json");
    let out = atrest(&as_text);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("backup {}", file.display())) && text.contains("verified offline"),
        "{text}"
    );
    assert!(text.contains("escrow.yaml"), "{text}");

    // A run that died after FILE appeared but before it was verified: the next run replaces it.
    let state_path = cp.plan_dir().join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    state["backup"]["verified"] = false.into();
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    let out = atrest(&with_backup);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("never verified"), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["backup"]["verified"], true);
    assert_ne!(v["backup"]["sha256"], sha.as_str(), "taken again");

    // Another --backup path takes a new backup; a passphrase backup is verified with the same flag.
    let second = cp.dir.path().join("etcd-2.db.age");
    let pass = cp.dir.path().join("passphrase");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let mut by_passphrase = args.clone();
    by_passphrase.push(format!("--backup={}", second.display()));
    by_passphrase.push(format!("--passphrase-file={}", pass.display()));
    by_passphrase.push("-o=json".into());
    let out = atrest(&by_passphrase);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["backup"]["verified"], true, "{v}");
    assert_eq!(v["backup"]["recipients"][0], "passphrase");
    assert_eq!(mode(&second), 0o600);

    // A file this rotation did not write is never overwritten.
    let foreign = cp.dir.path().join("someone-elses.age");
    std::fs::write(&foreign, b"keep me").unwrap();
    let mut other = args.clone();
    other.push(format!("--backup={}", foreign.display()));
    other.push(format!("--recipient={recipient}"));
    other.push(format!("--backup-identity={}", identity.display()));
    let out = atrest(&other);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("never overwritten"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&foreign).unwrap(), b"keep me");
}
