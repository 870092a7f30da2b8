//! A real `atrest kms serve --backend local` for tests that need a KMS v2 (or v1beta1) plugin
//! socket: a fresh key store and socket in a temporary directory; dropping it kills the plugin.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct KmsPlugin {
    child: Child,
    /// `unix:///…/kms.sock`, as a config's `endpoint`.
    pub endpoint: String,
    pub key_store: PathBuf,
    _dir: tempfile::TempDir,
}

impl KmsPlugin {
    /// Runs `atrest kms init`, then `atrest kms serve` with `extra_args` (e.g. `--v1beta1`) and
    /// waits until the socket accepts connections. `atrest` is the CLI binary under test.
    pub fn start(atrest: &Path, extra_args: &[&str]) -> KmsPlugin {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_store = dir.path().join("ks");
        let sock = dir.path().join("kms.sock");
        let ks = key_store.to_str().expect("utf-8 temp path");
        let out = Command::new(atrest)
            .args(["kms", "init", "--key-store", ks])
            .output()
            .expect("run atrest kms init");
        assert!(
            out.status.success(),
            "atrest kms init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let endpoint = format!("unix://{}", sock.display());
        let child = Command::new(atrest)
            .args([
                "kms",
                "serve",
                "--backend",
                "local",
                "--listen",
                &endpoint,
                "--key-store",
                ks,
            ])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn atrest kms serve");
        let mut plugin = KmsPlugin {
            child,
            endpoint,
            key_store,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if let Ok(Some(status)) = plugin.child.try_wait() {
                panic!("atrest kms serve exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "plugin did not listen on {}",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        plugin
    }

    /// Kills the plugin (its socket stays behind, as after a crash).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for KmsPlugin {
    fn drop(&mut self) {
        self.stop();
    }
}
