//! The apiservers' `/metrics` over HTTPS with kubectl's credential flags: `rotate status`,
//! `rotate apply` and `rewrite --apiserver` against stand-ins serving a test CA's certificate, authenticating client
//! certificates and a bearer token (401 otherwise), and what a wrong CA or missing credentials say.

mod rotate_common;

use atrest_testkit::{TlsFiles, TlsServing};
use rotate_common::*;

const TOKEN: &str = "s3cret-metrics-token";

#[test]
fn rotate_over_https_with_client_certificates_tokens_and_a_wrong_ca() {
    let tls = TlsFiles::generate();
    let cp = ControlPlane::start_with(2, &aescbc_config(), |o| {
        o.tls = Some(TlsServing {
            cert: tls.server_cert.clone(),
            key: tls.server_key.clone(),
            client_ca: Some(tls.ca.clone()),
            token: Some(TOKEN.into()),
        })
    });
    assert!(cp.urls().iter().all(|u| u.starts_with("https://")));
    cp.plan(&[]);
    let status = |extra: &[String]| {
        let mut args = cp.status_args(extra);
        args.push("-o=json".into());
        let out = atrest(&args);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("one JSON document: {}", stderr(&out)));
        (out.status.code(), v)
    };
    let ca = format!("--certificate-authority={}", tls.ca.display());

    // CA + client certificate: both apiservers answer, on CURRENT (in progress, exit 3).
    let (code, v) = status(&[
        ca.clone(),
        format!("--client-certificate={}", tls.client_cert.display()),
        format!("--client-key={}", tls.client_key.display()),
    ]);
    assert_eq!(code, Some(3), "{v}");
    for a in v["apiservers"].as_array().unwrap() {
        assert_eq!(a["step"], "CURRENT", "{v}");
    }

    // A bearer token from a kubeconfig (CA by path relative to it).
    let kubeconfig = tls.dir().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: admin\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: ca.pem\ncontexts:\n- name: admin\n  context: {{cluster: c, user: admin}}\nusers:\n- name: admin\n  user:\n    token: {TOKEN}\n",
            cp.urls()[0]
        ),
    )
    .unwrap();
    let (code, v) = status(&[format!("--kubeconfig={}", kubeconfig.display())]);
    assert_eq!(code, Some(3), "{v}");
    assert_eq!(v["apiservers"][1]["step"], "CURRENT", "{v}");

    // No CA but --insecure-skip-tls-verify (and the token): answers too.
    let (code, v) = status(&[
        "--insecure-skip-tls-verify".into(),
        format!("--token={TOKEN}"),
    ]);
    assert_eq!(code, Some(3), "{v}");

    // The right CA but no credentials: 401, blocked, saying which flags authenticate.
    let (code, v) = status(std::slice::from_ref(&ca));
    assert_eq!(code, Some(1), "{v}");
    let why = v["blocked_because"].to_string();
    assert!(why.contains("401") && why.contains("--token"), "{why}");

    // A wrong CA: blocked (exit 1), naming the apiserver and the flag that fixes it.
    let (code, v) = status(&[
        format!("--certificate-authority={}", tls.other_ca.display()),
        format!("--token={TOKEN}"),
    ]);
    assert_eq!(code, Some(1), "{v}");
    let why = v["blocked_because"].to_string();
    for u in cp.urls() {
        assert!(why.contains(&u), "names {u}: {why}");
    }
    assert!(
        why.contains("not trusted") && why.contains("--certificate-authority"),
        "{why}"
    );

    // `rotate apply` refuses the same way before doing anything.
    let mut args = cp.apply_args("10s");
    args.push(format!("--install={}", cp.install_cmd(&[Some(0), Some(0)])));
    args.push(format!(
        "--certificate-authority={}",
        tls.other_ca.display()
    ));
    args.push(format!("--token={TOKEN}"));
    let out = atrest(&args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&cp.urls()[0]) && err.contains("--certificate-authority"),
        "{err}"
    );
    assert!(err.contains("nothing was done"), "{err}");
    assert!(cp.installed_steps().is_empty());

    // `rewrite --apiserver` (the guard) refuses the same way, writing nothing.
    let mut rewrite = vec![
        "rewrite".to_string(),
        format!("--endpoints={}", cp.etcd.endpoint()),
        format!("--config={}", cp.plan_dir().join("promote.yaml").display()),
        format!("--checkpoint={}", cp.dir.path().join("cp.json").display()),
        format!("--certificate-authority={}", tls.other_ca.display()),
        format!("--token={TOKEN}"),
    ];
    rewrite.extend(cp.urls().iter().map(|u| format!("--apiserver={u}")));
    let out = atrest(&rewrite);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&cp.urls()[1]) && err.contains("--certificate-authority"),
        "{err}"
    );

    // With the right CA and the token, apply drives one step: stage is installed and loaded.
    let mut args = cp.apply_args("20s");
    args.push(format!("--install={}", cp.install_cmd(&[Some(0), Some(0)])));
    args.push(ca.clone());
    args.push(format!("--token={TOKEN}"));
    let mut child = spawn(&args);
    wait_until(
        "stage loaded over HTTPS",
        std::time::Duration::from_secs(30),
        || cp.done().contains(&"stage_loaded".to_string()),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let stage = cp.planned_hash("stage");
    assert!(cp.apiservers.iter().all(|a| a.loaded_hash() == stage));
}
