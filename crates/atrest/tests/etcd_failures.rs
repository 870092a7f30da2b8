//! Failure modes against real etcd: unreachable endpoints, TLS (client certificates, wrong CA),
//! configs that cannot decrypt, bad flags. Each fails clearly and writes nothing.

mod etcd_common;

use atrest_testkit::EtcdServer;
use etcd_common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn unreachable_etcd_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("--endpoints=127.0.0.1:{}", free_port());
    for sub in ["status", "rewrite"] {
        let out = atrest_in(
            dir.path(),
            &args(&[
                sub,
                &endpoint,
                "--dial-timeout=300ms",
                "--command-timeout=1s",
                &config_arg("config-after.yaml"),
            ]),
        );
        assert_eq!(code(&out), 1, "{sub}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("etcd unreachable at http://127.0.0.1:"),
            "{sub}: {}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty());
    }
    assert!(!dir.path().join("atrest-rewrite.checkpoint.json").exists());
}

#[test]
fn tls_client_certificates_and_wrong_ca() {
    let server = EtcdServer::start_tls();
    let (client, _objects) = load_sample(&server);
    let tls = server.tls().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("--endpoints={}", server.endpoint());

    // Good certificates: the sample's status.
    let mut a = vec!["status".to_string()];
    a.extend(server.cli_args());
    a.push(config_arg("config-before.yaml"));
    let out = atrest_in(dir.path(), &a);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stdout(&out).contains("2000 objects"), "{}", stdout(&out));

    // `host:port` without a scheme also uses TLS when certificates are given.
    let bare = format!(
        "--endpoints=127.0.0.1:{}",
        server.endpoint().rsplit(':').next().unwrap()
    );
    let certs = [
        format!("--cacert={}", tls.ca.display()),
        format!("--cert={}", tls.client_cert.display()),
        format!("--key={}", tls.client_key.display()),
    ];
    let mut a = args(&["status", &bare]);
    a.extend(certs.iter().cloned());
    a.push(config_arg("config-before.yaml"));
    assert_eq!(code(&atrest_in(dir.path(), &a)), 3);

    let revision = client.revision();
    // Wrong CA: the server certificate does not verify.
    let mut a = args(&[
        "rewrite",
        &endpoint,
        "--dial-timeout=1s",
        "--command-timeout=2s",
    ]);
    a.push(format!("--cacert={}", tls.other_ca.display()));
    a.extend(certs[1..].iter().cloned());
    a.push(config_arg("config-after.yaml"));
    let out = atrest_in(dir.path(), &a);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.contains("etcd unreachable at https://127.0.0.1:"),
        "{err}"
    );
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );

    // No client certificate: the server refuses the handshake.
    let mut a = args(&[
        "rewrite",
        &endpoint,
        "--dial-timeout=1s",
        "--command-timeout=2s",
    ]);
    a.push(certs[0].clone());
    a.push(config_arg("config-after.yaml"));
    let out = atrest_in(dir.path(), &a);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("etcd unreachable"),
        "{}",
        stderr(&out)
    );

    // A certificate file that does not exist.
    let mut a = args(&["status", &endpoint, "--cacert=/nonexistent/ca.pem"]);
    a.push(config_arg("config-after.yaml"));
    let out = atrest_in(dir.path(), &a);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("/nonexistent/ca.pem"),
        "{}",
        stderr(&out)
    );

    assert_eq!(client.revision(), revision, "a failed run wrote to etcd");
}

const WRONG_KEYS: &str = "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - aesgcm:
          keys:
            - name: new
              secret: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
            - name: gcm-2025-03
              secret: AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=
      - identity: {}
";

#[test]
fn wrong_config_key_leaves_values_alone() {
    let server = EtcdServer::start();
    let (client, objects) = load_sample(&server);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wrong.yaml");
    std::fs::write(&config, WRONG_KEYS).unwrap();
    let config_flag = format!("--config={}", config.display());
    let endpoint = format!("--endpoints={}", server.endpoint());
    let gcm: Vec<_> = objects
        .iter()
        .filter(|o| o.resource == "secrets" && o.provider == "aesgcm")
        .collect();

    // status --verify: the aesgcm values are unreadable (exit 4); plain ones are readable.
    let out = atrest_in(
        dir.path(),
        &args(&["status", &endpoint, &config_flag, "--verify", "-o", "json"]),
    );
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // aesgcm with a wrong key, aescbc/secretbox secrets no configured provider matches, and the
    // encrypted configmaps/widgets this config does not cover (identity cannot read them).
    assert_eq!(json["totals"]["unreadable"], 390 + 156 + 117 + 308 + 90);
    assert!(
        json["unreadable"][0]["error"]
            .as_str()
            .unwrap()
            .contains("message authentication failed")
            || json["unreadable"]
                .as_array()
                .unwrap()
                .iter()
                .any(|u| u["error"]
                    .as_str()
                    .unwrap()
                    .contains("message authentication failed"))
    );

    // rewrite (covered resources only): the plaintext secrets are rewritten; every unreadable value is
    // listed and untouched.
    let out = atrest_in(
        dir.path(),
        &args(&["rewrite", &endpoint, &config_flag, "-o", "json"]),
    );
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["unreadable"], 390 + 156 + 117);
    assert_eq!(summary["rewritten"], 117);
    for o in &gcm {
        assert_eq!(
            client.get(&o.etcd_key).unwrap().0,
            o.stored,
            "{} was written",
            o.etcd_key
        );
    }
}

#[test]
fn bad_flags_and_config_fail_before_touching_etcd() {
    let server = EtcdServer::start();
    let (client, _objects) = load_sample(&server);
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("--endpoints={}", server.endpoint());
    let revision = client.revision();

    let out = atrest_in(
        dir.path(),
        &args(&[
            "rewrite",
            &endpoint,
            &config_arg("config-after.yaml"),
            "--resource=pods",
        ]),
    );
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("--resource pods is not covered by"),
        "{}",
        stderr(&out)
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kind: EncryptionConfiguration\nresources: 3\n").unwrap();
    let out = atrest_in(
        dir.path(),
        &args(&["rewrite", &endpoint, &format!("--config={}", bad.display())]),
    );
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains(&bad.display().to_string()),
        "{}",
        stderr(&out)
    );

    let out = atrest_in(
        dir.path(),
        &args(&[
            "rewrite",
            &endpoint,
            &config_arg("config-after.yaml"),
            "--resume",
        ]),
    );
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("--resume refused: there is no checkpoint"),
        "{}",
        stderr(&out)
    );

    let out = atrest_in(
        dir.path(),
        &args(&[
            "rewrite",
            &endpoint,
            &config_arg("config-after.yaml"),
            "--rate=0",
        ]),
    );
    assert_eq!(code(&out), 1);

    // A checkpoint from another config is refused on --resume.
    let cp = dir.path().join("cp.json");
    let out = atrest_in(
        dir.path(),
        &args(&[
            "rewrite",
            &endpoint,
            &config_arg("config-before.yaml"),
            "--resource=configmaps",
            &format!("--checkpoint={}", cp.display()),
        ]),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let revision_after_first = client.revision();
    assert!(revision_after_first > revision);
    let out = atrest_in(
        dir.path(),
        &args(&[
            "rewrite",
            &endpoint,
            &config_arg("config-after.yaml"),
            "--resource=configmaps",
            "--resume",
            &format!("--checkpoint={}", cp.display()),
        ]),
    );
    assert_eq!(code(&out), 1);
    // One message: what was refused, that nothing was written, what differs, what to do.
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "error: --resume refused, nothing was written: checkpoint {}: was written for the config with hash sha256:",
            cp.display()
        )),
        "{err}"
    );
    assert!(
        err.ends_with("; rerun with the same settings or without --resume\n"),
        "{err}"
    );
    assert_eq!(err.matches("--resume").count(), 2, "{err}");
    assert_eq!(client.revision(), revision_after_first);
}
