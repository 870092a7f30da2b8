//! Every command that prints a report stops quietly when its reader is gone (`atrest status | head
//! -1`, and `2>&1 | head -1`, where stderr is closed too): the exit code is the one the command
//! gives with a reader (as `ls | head` does), never 101 (a panic), never `error: Broken pipe`, and
//! `snapshot export` does not print one error per remaining object.

mod etcd_common;
mod rotate_common;
mod snapshot_common;

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Output, Stdio};

use atrest_testkit::{sample, EtcdServer, KmsPlugin};
use etcd_common::{atrest_cmd, code, load_sample, stderr};

/// A write end whose reader is already closed: every write fails with EPIPE.
fn closed_pipe() -> OwnedFd {
    let (keep, gone) = UnixStream::pair().expect("socketpair");
    drop(gone);
    keep.into()
}

fn run(args: &[String], stdin: &[u8], closed: Closed) -> Output {
    let mut cmd = atrest_cmd();
    cmd.args(args).stdin(Stdio::piped());
    match closed {
        Closed::Nothing => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        Closed::Stdout => {
            cmd.stdout(Stdio::from(closed_pipe()))
                .stderr(Stdio::piped());
        }
        Closed::Both => {
            let fd = closed_pipe();
            cmd.stdout(Stdio::from(fd.try_clone().unwrap()))
                .stderr(Stdio::from(fd));
        }
    }
    let mut child = cmd.spawn().expect("run atrest");
    {
        use std::io::Write as _;
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin);
    }
    child.wait_with_output().expect("wait")
}

#[derive(Clone, Copy)]
enum Closed {
    Nothing,
    Stdout,
    Both,
}

fn check(args: &[String], stdin: &[u8]) {
    check_each(&|_| args.to_vec(), stdin)
}

/// [`check`] for a command that cannot run twice with the same arguments (`rotate plan --out`):
/// `make(n)` gives the arguments of the n-th of the three runs.
fn check_each(make: &dyn Fn(usize) -> Vec<String>, stdin: &[u8]) {
    let args = make(0);
    let what = args.join(" ");
    let normal = run(&args, stdin, Closed::Nothing);
    let want = code(&normal);
    assert!(
        [0, 3, 4].contains(&want),
        "{what}: exit {want}: {}",
        stderr(&normal)
    );
    assert!(!normal.stdout.is_empty(), "{what} printed nothing");

    let out = run(&make(1), stdin, Closed::Stdout);
    assert_eq!(code(&out), want, "{what} | head: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        !err.contains("Broken pipe") && !err.contains("panicked"),
        "{what} | head: {err}"
    );
    // Errors about objects the command could not handle may remain; none about the output.
    let errors = |text: &str| text.matches("error:").count();
    assert!(
        errors(&err) <= errors(&stderr(&normal)),
        "{what} | head: {err}"
    );

    let out = run(&make(2), stdin, Closed::Both);
    assert_eq!(code(&out), want, "{what} 2>&1 | head");
}

fn s(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

#[test]
fn reporting_commands_stop_quietly_on_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let config = sample::config("config-after.yaml");
    let config = config.to_str().unwrap();

    // Offline commands.
    check(&s(&["config", "check", config]), b"");
    check(&s(&["config", "check", config, "-o", "json"]), b"");
    check(&s(&["config", "explain", config]), b"");
    check(&s(&["config", "explain", config, "-o", "yaml"]), b"");
    check(&s(&["bench", "--duration", "1ms"]), b"");
    check(&s(&["keygen", "--provider", "aesgcm"]), b"");
    let aad = "--etcd-key=/registry/secrets/default/s";
    let enc = atrest_cmd()
        .args(["encrypt", "--config", config, "--resource", "secrets", aad])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(b"plaintext")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(enc.status.success(), "{}", stderr(&enc));
    for extra in [&[][..], &["-o", "json"]] {
        let mut a = s(&["decrypt", "--config", config, "--resource", "secrets", aad]);
        a.extend(s(extra));
        check(&a, &enc.stdout);
    }

    // KMS plugin commands.
    let plugin = KmsPlugin::start(Path::new(env!("CARGO_BIN_EXE_atrest")), &[]);
    let ks = plugin.key_store.to_str().unwrap();
    check(&s(&["kms", "list", "--key-store", ks]), b"");
    check(&s(&["kms", "list", "--key-store", ks, "-o", "json"]), b"");
    check(&s(&["kms", "status", "--endpoint", &plugin.endpoint]), b"");
    check(
        &s(&[
            "kms",
            "bench",
            "--endpoint",
            &plugin.endpoint,
            "--duration",
            "100ms",
            "-o",
            "json",
        ]),
        b"",
    );

    // etcd and snapshot commands over the sample cluster.
    let server = EtcdServer::start();
    load_sample(&server);
    let endpoint = format!("--endpoints={}", server.endpoint());
    let cfg = format!("--config={config}");
    check(&s(&["status", &endpoint, &cfg]), b"");
    check(
        &s(&["status", &endpoint, &cfg, "--list", "-o", "json"]),
        b"",
    );
    check(&s(&["rewrite", &endpoint, &cfg, "--dry-run"]), b"");
    check(
        &s(&["rewrite", &endpoint, &cfg, "--dry-run", "-o", "yaml"]),
        b"",
    );
    check(
        &s(&["get", &endpoint, &cfg, "secrets", "argocd/api-env"]),
        b"",
    );
    let snap = dir.path().join("snap.db");
    snapshot_common::snapshot_save(&server, &snap);
    let snap = snap.to_str().unwrap();
    check(&s(&["snapshot", "info", snap]), b"");
    check(&s(&["snapshot", "status", snap, &cfg, "--list"]), b"");
    check(&s(&["snapshot", "status", snap, &cfg, "-o", "yaml"]), b"");
    check(
        &s(&["snapshot", "get", snap, "secrets", "argocd/api-env", &cfg]),
        b"",
    );
    check(&s(&["snapshot", "export", snap, &cfg]), b"");
    check(&s(&["snapshot", "export", snap, &cfg, "-o", "json"]), b"");
}

#[test]
fn rotate_commands_stop_quietly_on_a_closed_pipe() {
    let plugin = KmsPlugin::start(Path::new(env!("CARGO_BIN_EXE_atrest")), &[]);
    let current = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          apiVersion: v2\n          name: atrest\n          endpoint: {}\n      - identity: {{}}\n",
        plugin.endpoint
    );
    let cp = rotate_common::ControlPlane::start_with(2, &current, |o| {
        o.kms = std::sync::Arc::new(atrest_kms::client::GrpcKms::new())
    });
    rotate_common::seed(&cp.urls()[0], "app", 5);
    let endpoint = format!("--endpoints={}", cp.etcd.endpoint());
    let apiservers: Vec<String> = cp
        .urls()
        .iter()
        .map(|u| format!("--apiserver={u}"))
        .collect();
    let with_apiservers = |mut args: Vec<String>| {
        args.extend(apiservers.iter().cloned());
        args
    };

    // KEK rotation with nothing to rotate: every apiserver already uses the plugin's key ID.
    for extra in [&[][..], &["-o", "json"]] {
        let mut a = s(&["rotate", "kek", "--provider=atrest", &endpoint]);
        a.push(format!("--config={}", cp.current.display()));
        a.extend(s(extra));
        check(&with_apiservers(a), b"");
    }

    // A plan per run (a plan directory is never reused).
    let plans = tempfile::tempdir().unwrap();
    for (i, extra) in [&[][..], &["-o", "yaml"]].into_iter().enumerate() {
        check_each(
            &|n| {
                let mut a = s(&["rotate", "plan", "--provider=aesgcm"]);
                a.push(format!("--config={}", cp.current.display()));
                a.push(format!(
                    "--out={}",
                    plans.path().join(format!("p{i}-{n}")).display()
                ));
                a.extend(s(extra));
                a
            },
            b"",
        );
    }

    // Status in progress (exit 3), a finished apply rerun (no-op), status finished (exit 0).
    cp.plan(&["--provider=aesgcm"]);
    let status = |extra: &[&str]| cp.status_args(&s(extra));
    check(&status(&[]), b"");
    let mut apply = cp.apply_args("30s");
    apply.push(format!("--install={}", cp.install_cmd(&[Some(0), Some(0)])));
    let out = rotate_common::atrest(&apply);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    check(&apply, b"");
    apply.push("-o=json".into());
    check(&apply, b"");
    check(&status(&["-o", "json"]), b"");
}
