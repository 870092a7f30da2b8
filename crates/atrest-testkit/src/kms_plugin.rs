//! A real `atrest kms serve` for tests that need a KMS v2 (or v1beta1) plugin socket: a fresh key
//! store (or an OpenBao Transit key) and socket in a temporary directory; dropping it kills the
//! plugin. [`KmsPlugin::stop`] and [`KmsPlugin::restart`] simulate an outage.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct KmsPlugin {
    child: Option<Child>,
    /// `unix:///…/kms.sock`, as a config's `endpoint`.
    pub endpoint: String,
    pub key_store: PathBuf,
    atrest: PathBuf,
    serve_args: Vec<String>,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl KmsPlugin {
    /// Runs `atrest kms init`, then `atrest kms serve` with `extra_args` (e.g. `--v1beta1`) and
    /// waits until the socket accepts connections. `atrest` is the CLI binary under test.
    pub fn start(atrest: &Path, extra_args: &[&str]) -> KmsPlugin {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_store = dir.path().join("ks");
        let ks = key_store.to_str().expect("utf-8 temp path").to_string();
        let out = Command::new(atrest)
            .args(["kms", "init", "--key-store", &ks])
            .output()
            .expect("run atrest kms init");
        assert!(
            out.status.success(),
            "atrest kms init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut args = vec!["--backend".into(), "local".into(), "--key-store".into(), ks];
        args.extend(extra_args.iter().map(|a| a.to_string()));
        Self::serve(atrest, dir, key_store, args)
    }

    /// `atrest kms serve --backend vault` against Transit key `key` at `vault_addr` (token read
    /// from a 0600 file), with `extra_args` (e.g. `--health-interval 1h`).
    pub fn start_vault(
        atrest: &Path,
        vault_addr: &str,
        token: &str,
        key: &str,
        extra_args: &[&str],
    ) -> KmsPlugin {
        use std::os::unix::fs::OpenOptionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let token_file = dir.path().join("token");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&token_file)
            .expect("token file");
        std::io::Write::write_all(&mut f, token.as_bytes()).expect("write token");
        let mut args: Vec<String> = vec![
            "--backend".into(),
            "vault".into(),
            "--vault-addr".into(),
            vault_addr.into(),
            "--vault-key".into(),
            key.into(),
            "--vault-token-file".into(),
            token_file.to_str().expect("utf-8 temp path").into(),
        ];
        args.extend(extra_args.iter().map(|a| a.to_string()));
        Self::serve(atrest, dir, PathBuf::new(), args)
    }

    fn serve(
        atrest: &Path,
        dir: tempfile::TempDir,
        key_store: PathBuf,
        serve_args: Vec<String>,
    ) -> KmsPlugin {
        let sock = dir.path().join("kms.sock");
        let mut plugin = KmsPlugin {
            child: None,
            endpoint: format!("unix://{}", sock.display()),
            key_store,
            atrest: atrest.to_path_buf(),
            serve_args,
            sock,
            _dir: dir,
        };
        plugin.restart();
        plugin
    }

    /// Starts the plugin again (same key store, same socket) after [`stop`](Self::stop), and
    /// waits until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.sock);
        let child = Command::new(&self.atrest)
            .args(["kms", "serve", "--listen", &self.endpoint])
            .args(&self.serve_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn atrest kms serve");
        let child = self.child.insert(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&self.sock).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("atrest kms serve exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "plugin did not listen on {}",
                self.sock.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The key ID the running plugin reports in Status (`atrest kms status -o json`).
    pub fn key_id(&self) -> String {
        let out = Command::new(&self.atrest)
            .args(["kms", "status", "--endpoint", &self.endpoint, "-o", "json"])
            .output()
            .expect("run atrest kms status");
        assert!(
            out.status.success(),
            "atrest kms status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("kms status -o json is JSON");
        doc["key_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no key_id in {doc}"))
            .to_string()
    }

    /// A KEK rotation of the local key store (`atrest kms rotate`); waits until the running
    /// plugin reports the new key ID, and returns it.
    pub fn rotate_kek(&self) -> String {
        let before = self.key_id();
        let out = Command::new(&self.atrest)
            .arg("kms")
            .arg("rotate")
            .arg("--key-store")
            .arg(&self.key_store)
            .output()
            .expect("run atrest kms rotate");
        assert!(
            out.status.success(),
            "atrest kms rotate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.key_id();
            if now != before {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "plugin still reports key {before} after kms rotate"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills the plugin (its socket stays behind, as after a crash).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for KmsPlugin {
    fn drop(&mut self) {
        self.stop();
    }
}
