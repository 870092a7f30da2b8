//! Messages that say what to do, against real etcd: TLS mismatches name the endpoint and the flag,
//! a wrong `--etcd-prefix` is called out with the prefix the keys fit. (A refused `--resume`:
//! `etcd_failures.rs`.)

mod etcd_common;

use atrest_testkit::EtcdServer;
use etcd_common::*;

#[test]
fn tls_mismatches_say_which_flag() {
    let server = EtcdServer::start_tls();
    let tls = server.tls().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = server.endpoint().rsplit(':').next().unwrap().to_string();
    let quick = ["--dial-timeout=1s", "--command-timeout=2s"];

    // Plain http to a TLS server.
    let plain = format!("http://127.0.0.1:{port}");
    let mut a = args(&["status", &format!("--endpoints={plain}")]);
    a.extend(args(&quick));
    a.push(config_arg("config-before.yaml"));
    let out = atrest_in(dir.path(), &a);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "{plain} is plain http; if the server uses TLS, use https:// endpoints with --cacert (and --cert/--key when it asks for client certificates)"
        )),
        "{}",
        stderr(&out)
    );

    // TLS without a client certificate.
    let mut a = args(&["status", &format!("--endpoints=https://127.0.0.1:{port}")]);
    a.extend(args(&quick));
    a.push(format!("--cacert={}", tls.ca.display()));
    a.push(config_arg("config-before.yaml"));
    let out = atrest_in(dir.path(), &a);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("client certificate")
            && stderr(&out).contains("give --cert and --key"),
        "{}",
        stderr(&out)
    );

    // The wrong CA.
    let mut a = args(&["status", &format!("--endpoints=https://127.0.0.1:{port}")]);
    a.extend(args(&quick));
    a.push(format!("--cacert={}", tls.other_ca.display()));
    a.push(format!("--cert={}", tls.client_cert.display()));
    a.push(format!("--key={}", tls.client_key.display()));
    a.push(config_arg("config-before.yaml"));
    let out = atrest_in(dir.path(), &a);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "the server certificate is not signed by --cacert {}",
            tls.other_ca.display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn wrong_prefix_is_called_out() {
    let server = EtcdServer::start();
    load_sample(&server);
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("--endpoints={}", server.endpoint());

    let out = atrest_in(
        dir.path(),
        &args(&[
            "status",
            &endpoint,
            &config_arg("config-before.yaml"),
            "--etcd-prefix=/",
        ]),
    );
    let err = stderr(&out);
    assert!(
        err.contains("warning: 2000 of 2000 keys under --etcd-prefix / do not map to Kubernetes resources; they look like the layout under --etcd-prefix /registry (256 of 256 sampled keys map there): is --etcd-prefix right?"),
        "{err}"
    );
    let out = atrest_in(
        dir.path(),
        &args(&["status", &endpoint, &config_arg("config-before.yaml")]),
    );
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}
