//! Shared by the CLI integration tests: runs the `atrest` binary with an environment that cannot
//! pick up the developer's own settings (etcdctl variables, key-store, PKCS#11 and Vault
//! defaults) and never writes to the real state directory.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Write as _;
use std::process::{Command, Output, Stdio};

/// Variables atrest reads as defaults for flags; tests pass what they mean as flags.
const DEFAULTS_FROM_ENV: &[&str] = &[
    "ETCDCTL_ENDPOINTS",
    "ETCDCTL_CACERT",
    "ETCDCTL_CERT",
    "ETCDCTL_KEY",
    "ATREST_KMS_KEY_STORE",
    "ATREST_PKCS11_MODULE",
    "VAULT_ADDR",
];

/// The `atrest` binary under test, with a clean environment.
pub fn atrest_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atrest"));
    for var in DEFAULTS_FROM_ENV {
        cmd.env_remove(var);
    }
    // State (rewrite checkpoints, served-keys files) never goes to the real state directory.
    cmd.env(
        "XDG_STATE_HOME",
        std::env::temp_dir().join("atrest-tests-state"),
    );
    cmd
}

/// Runs `atrest ARGS` with stdin closed.
pub fn atrest<S: AsRef<OsStr>>(args: &[S]) -> Output {
    atrest_cmd()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run atrest")
}

/// Runs `atrest ARGS` with `stdin` on its standard input. A command that exits without reading
/// all of it is not an error here (its exit code and output say what happened).
pub fn atrest_stdin<S: AsRef<OsStr>>(args: &[S], stdin: &[u8]) -> Output {
    let mut child = atrest_cmd()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run atrest");
    let mut input = child.stdin.take().expect("piped stdin");
    if let Err(e) = input.write_all(stdin) {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "writing stdin: {e}"
        );
    }
    drop(input);
    child.wait_with_output().expect("wait for atrest")
}

/// Command output as text (lossy).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
