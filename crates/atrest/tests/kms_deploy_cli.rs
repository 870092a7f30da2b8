//! `atrest kms unit` (checked with the real `systemd-analyze verify`) and `atrest kms manifest`.

mod cli_common;
use cli_common::atrest;

use std::process::Command;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Writes the unit as `atrest-kms.service` and runs `systemd-analyze verify` on it.
fn verify(unit: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atrest-kms.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze is installed (Debian `systemd`; scripts/test installs it)");
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}\n{unit}"
    );
    assert!(
        !stderr.contains("atrest-kms.service"),
        "systemd-analyze complains about the unit:\n{stderr}\n{unit}"
    );
}

fn lines(unit: &str) -> Vec<&str> {
    unit.lines().collect()
}

#[test]
fn unit_has_the_sandbox_and_the_exact_exec_start() {
    let bin = env!("CARGO_BIN_EXE_atrest");
    let out = atrest(&[
        "kms",
        "unit",
        "--binary",
        bin,
        "--listen",
        "unix:///run/atrest/kms.sock",
        "--metrics-listen",
        "127.0.0.1:9464",
        "--health-interval",
        "10",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let unit = text(&out.stdout);
    let l = lines(&unit);
    for want in [
        "Before=kubelet.service",
        "Restart=always",
        "RuntimeDirectory=atrest",
        "RuntimeDirectoryMode=0700",
        "StateDirectory=atrest/kms",
        "StateDirectoryMode=0700",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "WantedBy=multi-user.target",
    ] {
        assert!(l.contains(&want), "{want} missing:\n{unit}");
    }
    assert!(
        l.contains(&format!("ExecStart={bin} kms serve --listen unix:///run/atrest/kms.sock --metrics-listen 127.0.0.1:9464 --health-interval 10").as_str()),
        "{unit}"
    );
    assert!(
        !unit.contains("ReadWritePaths="),
        "socket and store are in systemd's own directories: nothing else is writable\n{unit}"
    );
    verify(&unit);
}

#[test]
fn unit_for_other_paths_opens_exactly_those() {
    let bin = env!("CARGO_BIN_EXE_atrest");
    let out = atrest(&[
        "kms",
        "unit",
        "--binary",
        bin,
        "--listen=unix:///srv/kms/atrest.sock",
        "--key-store",
        "/srv/atrest keys",
        "--init",
        "--socket-group",
        "root",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let unit = text(&out.stdout);
    let l = lines(&unit);
    assert!(
        l.contains(&"ReadWritePaths=/srv/kms \"/srv/atrest keys\""),
        "{unit}"
    );
    assert!(!unit.contains("RuntimeDirectory="), "{unit}");
    assert!(!unit.contains("StateDirectory="), "{unit}");
    assert!(l.contains(&"Group=root"), "{unit}");
    assert!(
        l.contains(&format!("ExecStart={bin} kms serve --listen=unix:///srv/kms/atrest.sock --key-store \"/srv/atrest keys\" --init --socket-group root").as_str()),
        "{unit}"
    );
    verify(&unit);

    // The vault backend needs the network before it starts.
    let out = atrest(&[
        "kms",
        "unit",
        "--binary",
        bin,
        "--backend",
        "vault",
        "--vault-addr",
        "https://vault:8200",
        "--vault-key",
        "k8s",
        "--vault-token-file",
        "/etc/atrest/vault-token",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let unit = text(&out.stdout);
    assert!(
        lines(&unit).contains(&"After=network-online.target"),
        "{unit}"
    );
    assert!(
        !unit.contains("StateDirectory="),
        "no local key store: {unit}"
    );
    verify(&unit);
}

#[test]
fn unit_rejects_what_serve_rejects_and_home_paths() {
    let out = atrest(&["kms", "unit", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    let out = atrest(&["kms", "unit", "--backend", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let out = atrest(&["kms", "unit", "--key-store", "/root/keys"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("ProtectHome"),
        "{}",
        text(&out.stderr)
    );
    let out = atrest(&["kms", "unit", "--listen", "tcp://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--listen"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn manifest_is_a_node_critical_static_pod_with_probes_and_mounts() {
    let out = atrest(&[
        "kms",
        "manifest",
        "--image",
        "registry.example/atrest:0.1",
        "--metrics-listen",
        "0.0.0.0:9464",
        "--passphrase-file",
        "/etc/atrest/passphrase",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let y = text(&out.stdout);
    let pod = &yaml_rust2::YamlLoader::load_from_str(&y).unwrap()[0];
    assert_eq!(pod["kind"].as_str(), Some("Pod"));
    assert_eq!(pod["metadata"]["namespace"].as_str(), Some("kube-system"));
    let spec = &pod["spec"];
    assert_eq!(spec["hostNetwork"].as_bool(), Some(true));
    assert_eq!(
        spec["priorityClassName"].as_str(),
        Some("system-node-critical")
    );
    let c = &spec["containers"][0];
    assert_eq!(c["image"].as_str(), Some("registry.example/atrest:0.1"));
    let command: Vec<&str> = c["command"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        command,
        [
            "atrest",
            "kms",
            "serve",
            "--metrics-listen",
            "0.0.0.0:9464",
            "--passphrase-file",
            "/etc/atrest/passphrase"
        ]
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path));
        assert_eq!(get["port"].as_i64(), Some(9464));
        assert_eq!(
            get["host"].as_str(),
            Some("127.0.0.1"),
            "0.0.0.0 is probed on loopback"
        );
    }
    assert!(c["resources"]["requests"]["cpu"].as_str().is_some());
    assert!(c["resources"]["requests"]["memory"].as_str().is_some());
    let volumes = spec["volumes"].as_vec().unwrap();
    let host = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .map(|v| {
                (
                    v["hostPath"]["path"].as_str().unwrap().to_owned(),
                    v["hostPath"]["type"].as_str().unwrap().to_owned(),
                )
            })
    };
    assert_eq!(
        host("kms-socket"),
        Some(("/run/atrest".into(), "DirectoryOrCreate".into()))
    );
    assert_eq!(
        host("key-store"),
        Some(("/var/lib/atrest/kms".into(), "Directory".into()))
    );
    let mounts = c["volumeMounts"].as_vec().unwrap();
    assert!(mounts.iter().any(
        |m| m["mountPath"].as_str() == Some("/etc/atrest/passphrase")
            && m["readOnly"].as_bool() == Some(true)
    ));
    assert!(
        mounts
            .iter()
            .any(|m| m["mountPath"].as_str() == Some("/var/lib/atrest/kms")
                && m["readOnly"].as_bool() == Some(true)),
        "the plugin only reads the store"
    );

    // Probes need the metrics listener.
    let out = atrest(&["kms", "manifest", "--image", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--metrics-listen"),
        "{}",
        text(&out.stderr)
    );
}
